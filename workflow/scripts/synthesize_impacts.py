"""Synthesise the ``impacts`` set: modal-synthesis impact sounds with physical labels.

snakemake.params.cfg         config["stimuli"]["impacts"]
snakemake.params.seed        int; sound i draws its mode amplitudes with seed + i
snakemake.output.manifest    results/stimuli/impacts/manifest.parquet (qc.parquet is written beside it)
snakemake.output.directory   directory() for the WAV files, e.g. results/stimuli/impacts/audio
snakemake.log[0]             the job log (optional)
"""

from avprobe.runtime import job_log
from avprobe.stimuli.impacts import synthesize_impacts

sm = snakemake  # noqa: F821 - injected by Snakemake

with job_log(sm.log[0] if sm.log else None, sm.threads):
    synthesize_impacts(sm.params.cfg, sm.params.seed, sm.output.manifest, sm.output.directory)
