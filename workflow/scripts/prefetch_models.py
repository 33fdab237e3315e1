"""Entry: download pretrained models on a machine with internet.

Reads snakemake.params.models (the config's models), snakemake.output.resolved, log.
"""

from avprobe.prefetch import prefetch
from avprobe.runtime import job_log

with job_log(snakemake.log[0]):
    prefetch(snakemake.params.models, snakemake.output.resolved)
