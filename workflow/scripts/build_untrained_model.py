"""Build a seeded untrained control model from an architecture config folder.

snakemake.params.source: the config folder (resources/model_configs/<x>)
snakemake.params.seed:   the init seed
snakemake.output.config: <out_dir>/config.json (the model is written into its folder)
"""

from pathlib import Path

from avprobe.models.build import build_untrained
from avprobe.runtime import job_log

with job_log(snakemake.log[0] if snakemake.log else None, snakemake.threads):  # noqa: F821
    build_untrained(
        snakemake.params.source,  # noqa: F821
        Path(snakemake.output.config).parent,  # noqa: F821
        int(snakemake.params.seed),  # noqa: F821
    )
