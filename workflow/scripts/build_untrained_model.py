"""Build a seeded untrained control model from an architecture config folder.

snakemake.params.source: the config folder (resources/model_configs/<x>)
snakemake.params.family: the model's family; its registry entry names the builder
snakemake.params.seed:   the init seed
snakemake.output.model:  results/models/<model>/ (the whole folder is the rule's output; its
                         files are recorded in avprobe_files.json, see avprobe.models.folder)
"""

from pathlib import Path

from avprobe.models.folder import record_files
from avprobe.models.registry import builder_for
from avprobe.runtime import job_log

with job_log(snakemake.log[0] if snakemake.log else None, snakemake.threads):  # noqa: F821
    out_dir = Path(snakemake.output.model)  # noqa: F821
    builder_for(snakemake.params.family)(  # noqa: F821
        snakemake.params.source,  # noqa: F821
        out_dir,
        int(snakemake.params.seed),  # noqa: F821
    )
    record_files(out_dir)
