"""Entry: the provenance table of a run (avprobe.provenance).

snakemake.input.outputs             every output of the run (targets, figure PNGs, rejected tables…)
snakemake.params.config_hash        hash of the whole validated config
snakemake.params.workflow_versions  versions of the process running Snakemake
snakemake.output.table              results/provenance.parquet
snakemake.config, snakemake.log[0]
"""

from avprobe.provenance import write_provenance
from avprobe.runtime import job_log

with job_log(snakemake.log[0]):  # noqa: F821
    write_provenance(
        list(snakemake.input.outputs),  # noqa: F821
        snakemake.output.table,  # noqa: F821
        config=dict(snakemake.config),  # noqa: F821
        config_hash=snakemake.params.config_hash,  # noqa: F821
        workflow_versions=dict(snakemake.params.workflow_versions),  # noqa: F821
    )
