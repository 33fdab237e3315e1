"""Convert the cascade's Whisper checkpoint to CTranslate2 format (asr.backend: ctranslate2).

snakemake.input.model_dir:         optional; the folder of a built untrained recogniser
snakemake.params.model / .spec:    the asr.model name and its config['models'] entry (source)
snakemake.output.model:            results/models/<asr.model>-ct2/model.bin (folder with tokenizer.json)
snakemake.log[0]
"""

from pathlib import Path

from avprobe.extract import model_dir_from_config
from avprobe.models.ct2_whisper import convert_transformers_whisper
from avprobe.models.hf import resolve_source
from avprobe.runtime import job_log

sm = snakemake  # noqa: F821 - injected by Snakemake

with job_log(sm.log[0] if sm.log else None, 1):
    model_dir = model_dir_from_config(getattr(sm.input, "model_dir", None))
    source, _ = resolve_source(sm.params.model, dict(sm.params.spec), model_dir)
    convert_transformers_whisper(source, Path(sm.output.model).parent)
