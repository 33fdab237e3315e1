"""Synthesise a spoken stimulus set with the configured TTS voices.

snakemake.params.kind        "pseudowords" (every word × voice) or "captions" (one clip per caption)
snakemake.params.cfg         config["stimuli"]["tts"]
snakemake.input.manifest     pseudoword_text manifest (kind pseudowords) or caption_text manifest (captions)
snakemake.output.manifest    results/stimuli/<kind>/manifest.parquet
snakemake.output.directory   directory() for the WAV files, e.g. results/stimuli/<kind>/audio
snakemake.threads            worker processes
snakemake.log[0]             the job log (optional)
"""

from avprobe.runtime import job_log
from avprobe.stimuli.speech import speak_captions, synthesize_pseudowords

SYNTHESIZERS = {"pseudowords": synthesize_pseudowords, "captions": speak_captions}
sm = snakemake  # noqa: F821 - injected by Snakemake

with job_log(sm.log[0] if sm.log else None, sm.threads):
    SYNTHESIZERS[sm.params.kind](
        sm.input.manifest, sm.params.cfg, sm.output.manifest, sm.output.directory, sm.threads
    )
