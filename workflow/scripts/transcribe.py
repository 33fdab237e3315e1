"""Transcribe a spoken caption set with a Whisper recogniser (seed 003's cascade).

snakemake.input.manifest:          results/stimuli/<spoken set>/manifest.parquet (e.g. captions)
snakemake.input.model_dir:         optional; the folder of a built untrained recogniser
snakemake.params.model / .spec:    the asr.model name and its config['models'] entry
snakemake.params.backend / .ct2:   asr.backend (transformers | ctranslate2) and asr.ctranslate2
snakemake.input.ct2_model:         with backend ctranslate2, model.bin of the converted checkpoint
snakemake.output.manifest:         results/stimuli/<transcript set>/manifest.parquet (caption_asr)
snakemake.threads, snakemake.log[0]
"""

from pathlib import Path

from avprobe.cascade import transcribe_set
from avprobe.extract import model_dir_from_config
from avprobe.runtime import job_log

with job_log(snakemake.log[0] if snakemake.log else None, snakemake.threads):  # noqa: F821
    transcribe_set(
        snakemake.input.manifest,  # noqa: F821
        snakemake.output.manifest,  # noqa: F821
        snakemake.params.model,  # noqa: F821
        dict(snakemake.params.spec),  # noqa: F821
        model_dir=model_dir_from_config(getattr(snakemake.input, "model_dir", None)),  # noqa: F821
        threads=snakemake.threads,  # noqa: F821
        backend=getattr(snakemake.params, "backend", "transformers"),  # noqa: F821
        ct2_dir=Path(snakemake.input.ct2_model).parent if hasattr(snakemake.input, "ct2_model") else None,  # noqa: F821
        ct2_cfg=dict(getattr(snakemake.params, "ct2", {}) or {}),  # noqa: F821
    )
