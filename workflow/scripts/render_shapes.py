"""Draw the sharp/round ``shapes`` image set.

snakemake.params.cfg         config["stimuli"]["shapes"]
snakemake.params.seed        int; image i is drawn with seed + i
snakemake.output.manifest    results/stimuli/shapes/manifest.parquet
snakemake.output.directory   directory() for the PNG files, e.g. results/stimuli/shapes/images
snakemake.log[0]             the job log (optional)
"""

from avprobe.runtime import job_log
from avprobe.stimuli.shapes import render_shapes

sm = snakemake  # noqa: F821 - injected by Snakemake

with job_log(sm.log[0] if sm.log else None, sm.threads):
    render_shapes(sm.params.cfg, sm.params.seed, sm.output.manifest, sm.output.directory)
