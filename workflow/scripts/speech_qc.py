"""Speech QC, step 2: the per-voice table (and the bar that excludes voices) from the clip table.

snakemake.input.clips:                    results/tables/speech_qc/clips.parquet
snakemake.params.voices / .max_wer:       config stimuli.tts.voices, stimuli.tts.qc.max_wer
snakemake.output.voices / .markdown / .html:  see avprobe.stimuli.intelligibility
snakemake.log[0]
"""

from avprobe.runtime import job_log
from avprobe.stimuli.intelligibility import write_voice_tables

sm = snakemake  # noqa: F821 - injected by Snakemake

with job_log(sm.log[0] if sm.log else None, 1):
    write_voice_tables(
        sm.input.clips,
        [dict(v) for v in sm.params.voices],
        sm.params.max_wer,
        sm.output.voices,
        out_markdown=sm.output.markdown,
        out_html=sm.output.html,
    )
