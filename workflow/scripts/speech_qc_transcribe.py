"""Speech QC, step 1: a real recogniser transcribes (a seeded sample of) the spoken clips.

snakemake.input.pseudowords / .captions:  the spoken sets' manifests
snakemake.input.model:                    model.bin of a CTranslate2 Whisper folder
snakemake.params.qc / .seed:              config stimuli.tts.qc (without max_wer), seed
snakemake.output.clips:                   results/tables/speech_qc/clips.parquet
snakemake.threads, snakemake.log[0]
"""

from pathlib import Path

from avprobe.runtime import job_log
from avprobe.stimuli.intelligibility import transcribe_clips

sm = snakemake  # noqa: F821 - injected by Snakemake

with job_log(sm.log[0] if sm.log else None, sm.threads):
    transcribe_clips(
        {"captions": sm.input.captions, "pseudowords": sm.input.pseudowords},
        Path(sm.input.model).parent,
        dict(sm.params.qc),
        int(sm.params.seed),
        sm.output.clips,
        threads=sm.threads,
    )
