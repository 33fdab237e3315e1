"""Build a seeded untrained control model from an architecture config folder.

snakemake.params.source: the config folder (resources/model_configs/<x>)
snakemake.params.family: the model's family; its registry entry names the builder
snakemake.params.seed:   the init seed
snakemake.output.config: <out_dir>/config.json (the model is written into its folder)
"""

from pathlib import Path

from avprobe.models.registry import builder_for
from avprobe.runtime import job_log

with job_log(snakemake.log[0] if snakemake.log else None, snakemake.threads):  # noqa: F821
    builder_for(snakemake.params.family)(  # noqa: F821
        snakemake.params.source,  # noqa: F821
        Path(snakemake.output.config).parent,  # noqa: F821
        int(snakemake.params.seed),  # noqa: F821
    )
