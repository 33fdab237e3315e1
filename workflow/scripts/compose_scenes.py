"""Draw the ``scenes`` image set and write its ``caption_text`` captions.

snakemake.params.cfg           config["stimuli"]["scenes"]
snakemake.params.seed          int; scene i is composed with seed + i
snakemake.output.manifest      results/stimuli/scenes/manifest.parquet
snakemake.output.directory     directory() for the PNG files, e.g. results/stimuli/scenes/images
snakemake.output.caption_text  results/stimuli/caption_text/manifest.parquet
snakemake.log[0]               the job log (optional)
"""

from avprobe.runtime import job_log
from avprobe.stimuli.scenes import compose_scenes

sm = snakemake  # noqa: F821 - injected by Snakemake

with job_log(sm.log[0] if sm.log else None, sm.threads):
    compose_scenes(
        sm.params.cfg, sm.params.seed, sm.output.directory, sm.output.manifest, sm.output.caption_text
    )
