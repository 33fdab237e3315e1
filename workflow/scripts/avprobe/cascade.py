"""The speech → ASR → text-tower cascade of seed 003 (BrewCLIP): transcribing a spoken set.

:func:`transcribe_set` runs a Whisper recogniser (:class:`avprobe.models.asr.WhisperASR`) over
every clip of a spoken caption set (``captions``) (or, with ``asr.backend: ctranslate2``, the
same checkpoint converted to CTranslate2: :mod:`avprobe.models.ct2_whisper`) and writes a *text* set (``caption_asr``,
see :data:`avprobe.sets.ASR_SETS`) whose manifest has, per clip:

| column | |
| --- | --- |
| stimulus_id | the spoken clip's id (so the same id as in ``captions`` and ``caption_text``) |
| text | the transcript: what a text tower embeds |
| asr_text | the transcript again: the hypothesis column the retrieval WER row reads |
| reference_text | what was said (a caption's text, or a pseudoword's spelling): the WER reference |
| asr_model | the ``models`` entry that transcribed it |
| … | the spoken set's label columns: ``image_id`` (captions); ``word``, ``label``, ``voice``, … (pseudowords) |

The same function transcribes the spoken pseudowords into ``pseudoword_asr``: the cascade as a
model of sound symbolism (speech → recogniser → the text tower of a text–image model).

The manifest's Parquet metadata (key ``avprobe``) records the recogniser's source, resolved
revision, kind (an *untrained* recogniser's transcripts are a control: noise, WER ≈ 100 %),
dtype, device and decoding settings. Extraction then embeds the transcript set like any
other text set, and retrieval ``mode: cascade`` queries with it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import io
from .runtime import limit_threads

log = logging.getLogger("avprobe")

#: Columns of a transcript manifest, in order (then the spoken set's label columns).
ASR_COLUMNS = ("stimulus_id", "text", "asr_text", "reference_text", "asr_model")
#: What was said, in order of preference: a caption's text, else a pseudoword's spelling.
REFERENCE_SOURCES = ("text", "word")
#: Columns of the spoken manifest that describe the audio file, not the stimulus.
NOT_CARRIED = ("path", "file", "spoken", "input", "engine", "engine_voice")


def transcribe_set(
    manifest_path: str | os.PathLike,
    out_path: str | os.PathLike,
    model_name: str,
    spec: Mapping,
    model_dir: str | os.PathLike | None = None,
    device: str = "auto",
    threads: int = 1,
    backend: str = "transformers",
    ct2_dir: str | os.PathLike | None = None,
    ct2_cfg: Mapping | None = None,
) -> pd.DataFrame:
    """Transcribe every clip of a spoken set; write (and return) the transcript manifest.

    ``backend`` ``transformers`` decodes with :class:`avprobe.models.asr.WhisperASR`
    (``generate``); ``ctranslate2`` with :class:`avprobe.models.ct2_whisper.CT2Whisper` on
    ``ct2_dir``, the same checkpoint converted (rule ``convert_asr_model``), with the settings
    ``ct2_cfg`` (config ``asr.ctranslate2``). The model's ``max_new_tokens``, ``batch_size`` and
    ``language`` apply to both.
    """
    from .runtime import Progress

    from .extract import load_audio

    limit_threads(threads)
    df = io.read_manifest(manifest_path).reset_index(drop=True)
    reference = next((c for c in REFERENCE_SOURCES if c in df.columns), None)
    if "path" not in df.columns or reference is None:
        raise ValueError(f"{manifest_path}: a spoken set's manifest needs a 'path' column and what was "
                         f"said (one of {list(REFERENCE_SOURCES)})")
    batch = max(int(spec.get("batch_size") or 8), 1)
    if backend == "ctranslate2":
        from .models.ct2_whisper import CT2Whisper

        if ct2_dir is None:
            raise ValueError("asr.backend ctranslate2 needs the converted model folder (ct2_dir)")
        settings = {**dict(ct2_cfg or {}), "batch_size": batch, "language": spec.get("language"),
                    "max_new_tokens": int(spec.get("max_new_tokens", 128))}
        asr = CT2Whisper.from_config(ct2_dir, settings, threads=threads)
        meta = {"asr_model": model_name, "kind": spec.get("kind") or "pretrained", **asr.provenance()}
        log.info("transcribing %d clips of %s with %s (%s) through CTranslate2 (%s), batch %d, max %d new tokens",
                 len(df), manifest_path, model_name, meta["kind"], ct2_dir, batch, asr.max_new_tokens)
    elif backend == "transformers":
        from .models.asr import WhisperASR

        asr = WhisperASR(spec, model_dir, device=device, name=model_name)
        limit_threads(threads)  # torch is imported now
        meta = asr.provenance()
        log.info("transcribing %d clips of %s with %s (%s, %s) on %s, batch %d, max %d new tokens",
                 len(df), manifest_path, model_name, meta["kind"], asr.source, asr.device,
                 batch, asr.max_new_tokens)
    else:
        raise ValueError(f"asr.backend must be transformers or ctranslate2, not {backend!r}")
    texts: list[str] = []
    start = time.perf_counter()
    bar = Progress(len(df), f"{model_name}/asr", unit="clip")
    for lo in range(0, len(df), batch):
        rows = df.iloc[lo:lo + batch]
        waves = [load_audio(io.resolve_stimulus_path(manifest_path, p)) for p in rows["path"]]
        texts.extend(asr(waves))
        bar.update(len(rows))
    bar.close()
    seconds = time.perf_counter() - start

    out = pd.DataFrame({
        "stimulus_id": df["stimulus_id"].astype(str),
        "text": texts,
        "asr_text": texts,
        "reference_text": df[reference].astype(str),
        "asr_model": model_name,
    })
    # the spoken set's labels travel with its transcripts (image_id for retrieval; word, label,
    # voice, sharpness, is_reference for sound symbolism), so analyses read them as from any set
    for col in df.columns:
        if col not in out.columns and col not in NOT_CARRIED:
            out[col] = df[col].astype(str).to_numpy() if col == "image_id" else df[col].to_numpy()
    from .analysis.retrieval import word_error_rate

    wer = word_error_rate(out["reference_text"], out["asr_text"])
    empty = int((out["text"].str.strip() == "").sum())
    if empty:
        log.warning("%d of %d transcripts are empty; text extraction quarantines them", empty, len(out))
    # No timings in the file: a rerun must write the same bytes (they go to the log).
    meta.update(source_manifest=str(manifest_path), n_items=len(out), wer=wer, n_empty=empty,
                config_hash=io.hash_config(dict(spec)))
    table = pa.Table.from_pandas(out, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           io.EMBEDDINGS_META_KEY: json.dumps(meta, default=str).encode()})
    with io.atomic_path(out_path) as tmp:
        pq.write_table(table, tmp)
    rate = len(out) / seconds if seconds > 0 else float("inf")
    log.info("%d clips in %.1f s (%.1f clips/s); corpus WER %.3f", len(out), seconds, rate, wer)
    return out
