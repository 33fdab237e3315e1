"""Write the ``shape_adjectives`` text-anchor set (adjective prompts labelled round / sharp).

snakemake.params.cfg       config["stimuli"]["shape_adjectives"]
snakemake.output.manifest  results/stimuli/shape_adjectives/manifest.parquet
snakemake.log[0]           the job log
"""

from avprobe.runtime import job_log
from avprobe.stimuli.anchors import make_shape_adjectives

sm = snakemake  # noqa: F821 - injected by Snakemake

with job_log(sm.log[0] if sm.log else None, sm.threads):
    make_shape_adjectives(sm.params.cfg, sm.output.manifest)
