"""Spoken stimulus sets: pseudoword clips (word × voice) and spoken scene captions.

Each set is built in two steps. A *plan* (one row per clip: id, file name, voice, what to
say) is computed from the manifests and the config alone, so counts can be checked without
synthesising anything. :func:`synthesize_plan` then renders the plan, in parallel over
worker processes, and writes the manifest.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from pathlib import Path
from typing import Mapping

import pandas as pd

from avprobe.io import read_manifest, write_parquet
from avprobe.stimuli.audio import Postprocessing, clip_stats, postprocess, write_wav
from avprobe.stimuli.manifests import with_manifest_paths
from avprobe.stimuli.pseudowords import INVENTORY_COLUMNS, espeak_phonemes, tts_ipa
from avprobe.stimuli.qc import QcSettings, write_audio_qc
from avprobe.stimuli.tts import ENGINES, INPUT_MODES, Voice, check_voice, get_engine
from avprobe.stimuli.word_times import clip_word_times, to_json

log = logging.getLogger(__name__)

def _voices(tts_cfg: Mapping) -> list[Voice]:
    voices = [check_voice(Voice.from_config(v)) for v in tts_cfg["voices"]]
    ids = [v.id for v in voices]
    if len(set(ids)) != len(ids):
        raise ValueError(f"voice ids must be unique, got {ids}")
    return voices


def _voice_columns(voice: Voice, mode: str, spoken: str) -> dict:
    """How a clip is made; kept in the manifest for provenance."""
    return {
        "voice": voice.id,
        "engine": voice.engine,
        "engine_voice": voice.engine_voice,
        "input": mode,
        "spoken": spoken,
    }


def _word_table(source: str | os.PathLike | pd.DataFrame) -> pd.DataFrame:
    """One row per word from an inventory DataFrame or a ``pseudoword_text`` manifest."""
    if isinstance(source, pd.DataFrame):
        words = source
    else:
        words = read_manifest(source)
    words = words.drop_duplicates("word").reset_index(drop=True)
    if "espeak" not in words.columns:
        words = words.assign(espeak=[espeak_phonemes(w) for w in words["word"]])
    return words


def phoneme_input(record: Mapping, engine: str) -> str:
    """A word's phoneme input for ``engine``, in the engine's alphabet: espeak mnemonics
    (``[[b'u:bA:]]``) for espeak, the same phonemes in IPA (``[[bˈuːbɑː]]``) for piper."""
    alphabet = ENGINES[engine].phoneme_alphabet
    if alphabet == "espeak":
        return record["espeak"]
    if alphabet == "ipa":
        return "[[" + tts_ipa(record["word"]) + "]]"
    raise ValueError(f"engine {engine!r}: unknown phoneme alphabet {alphabet!r}")


def pseudoword_clip_plan(source: str | os.PathLike | pd.DataFrame, tts_cfg: Mapping) -> pd.DataFrame:
    """One row per word × voice (references included), ordered word-major.

    ``stimulus_id`` and the file name are ``<word>-<voice_id>``. With ``input: phonemes``
    the engine gets the word's phonemes in its own alphabet (:func:`phoneme_input`), with
    ``input: text`` its spelling.
    """
    mode = tts_cfg.get("input", "phonemes")
    if mode not in INPUT_MODES:
        raise ValueError(f"tts.input must be one of {INPUT_MODES}, got {mode!r}")
    voices = _voices(tts_cfg)
    rows = []
    for record in _word_table(source).to_dict("records"):
        for voice in voices:
            spoken = phoneme_input(record, voice.engine) if mode == "phonemes" else record["word"]
            stimulus_id = f"{record['word']}-{voice.id}"
            rows.append(
                {
                    "stimulus_id": stimulus_id,
                    "file": f"{stimulus_id}.wav",
                    **{k: record[k] for k in INVENTORY_COLUMNS if k in record},
                    **_voice_columns(voice, mode, spoken),
                }
            )
    return pd.DataFrame(rows)


def caption_clip_plan(source: str | os.PathLike | pd.DataFrame, tts_cfg: Mapping) -> pd.DataFrame:
    """One row per caption; the voice rotates through the configured voices by row.

    Captions are always spoken from text (they are English sentences, not pseudowords), and
    keep the ``caption_text`` stimulus ids, so the two forms of a caption pair up by id.
    """
    captions = source if isinstance(source, pd.DataFrame) else read_manifest(source)
    voices = _voices(tts_cfg)
    rows = []
    for i, record in enumerate(captions.to_dict("records")):
        voice = voices[i % len(voices)]
        rows.append(
            {
                "stimulus_id": record["stimulus_id"],
                "file": f"{record['stimulus_id']}.wav",
                "image_id": record["image_id"],
                "text": record["text"],
                **_voice_columns(voice, "text", record["text"]),
            }
        )
    return pd.DataFrame(rows)


# --- rendering ---------------------------------------------------------------------------

_worker_settings: dict = {}


def _init_worker(tts_cfg: Mapping, out_dir: str) -> None:
    """Runs once in each worker process."""
    _worker_settings["post"] = Postprocessing.from_config(tts_cfg)
    _worker_settings["voices"] = {v.id: v for v in _voices(tts_cfg)}
    _worker_settings["out_dir"] = Path(out_dir)


def _render_clip(row: Mapping) -> dict:
    """Synthesise, post-process and write one clip; return its measurements."""
    post: Postprocessing = _worker_settings["post"]
    voice: Voice = _worker_settings["voices"][row["voice"]]
    engine = get_engine(voice.engine)  # created once per process
    utterance = engine.synthesize(voice, row["spoken"], row["input"])
    clip, processing = postprocess(utterance.samples, utterance.sample_rate, post)
    write_wav(_worker_settings["out_dir"] / row["file"], clip, post.sample_rate)
    return {
        "stimulus_id": row["stimulus_id"],
        "sample_rate": post.sample_rate,
        **clip_stats(clip, post.sample_rate),
        "spoken_ipa": utterance.phonemes,
        "native_sample_rate": utterance.sample_rate,
        "native_duration": utterance.samples.size / utterance.sample_rate,
        **processing,
        # word boundaries on the clip's timeline (dense maps per word); "[]" without word events
        "word_times": to_json(_word_times(utterance, clip, post.sample_rate)),
    }


def _word_times(utterance, clip, rate: int) -> list[dict]:
    if not utterance.words:
        return []
    from avprobe.stimuli.audio import resample, to_float32

    return clip_word_times(utterance.words, clip, resample(to_float32(utterance.samples), utterance.sample_rate, rate),
                           rate)


def _progress(total: int, desc: str):
    from ..runtime import Progress

    return Progress(total, desc, unit="clip")


def synthesize_plan(
    plan: pd.DataFrame,
    tts_cfg: Mapping,
    out_manifest: str | os.PathLike,
    out_dir: str | os.PathLike,
    threads: int = 1,
    desc: str = "clips",
) -> pd.DataFrame:
    """Render every clip of ``plan`` into ``out_dir`` and write the manifest, and its QC
    table (``qc.parquet`` beside the manifest, :mod:`avprobe.stimuli.qc`).

    ``path`` in the manifest is relative to the manifest's folder. With ``threads > 1`` the
    clips are shared among that many forked worker processes, each with its own engine;
    the output does not depend on the number of workers.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = plan.to_dict("records")
    threads = max(1, min(int(threads or 1), len(rows) or 1))
    start = time.perf_counter()
    stats = []
    with _progress(len(rows), desc) as bar:
        if threads == 1:
            _init_worker(tts_cfg, str(out_dir))
            for row in rows:
                stats.append(_render_clip(row))
                bar.update()
        else:
            # fork, not spawn: spawn re-imports __main__, which under Snakemake is the job script.
            context = multiprocessing.get_context("fork")
            chunk = max(1, min(16, len(rows) // (threads * 8)))
            with context.Pool(threads, _init_worker, (tts_cfg, str(out_dir))) as pool:
                for result in pool.imap(_render_clip, rows, chunksize=chunk):
                    stats.append(result)
                    bar.update()
    elapsed = time.perf_counter() - start

    manifest = plan.merge(pd.DataFrame(stats), on="stimulus_id", how="left", validate="1:1")
    manifest = with_manifest_paths(manifest, out_dir, out_manifest)
    write_parquet(manifest, out_manifest)
    write_audio_qc(out_manifest, settings=QcSettings(silence_db=Postprocessing.from_config(tts_cfg).trim_threshold_db))

    limited = int(manifest["peak_limited"].sum())
    if limited:
        log.warning("%d of %d clips hit the peak limit and are below the target RMS", limited, len(manifest))
    log.info(
        "%s: %d clips in %.1f s (%.1f clips/s, %d worker(s)) → %s",
        desc, len(manifest), elapsed, len(manifest) / max(elapsed, 1e-9), threads, out_manifest,
    )  # fmt: skip
    return manifest


def synthesize_pseudowords(
    source: str | os.PathLike | pd.DataFrame,
    tts_cfg: Mapping,
    out_manifest: str | os.PathLike,
    out_dir: str | os.PathLike,
    threads: int = 1,
) -> pd.DataFrame:
    """The ``pseudowords`` set: every word (references included) × every configured voice.

    ``source`` is the ``pseudoword_text`` manifest (or an inventory DataFrame); ``tts_cfg``
    is the ``stimuli.tts`` config section.
    """
    plan = pseudoword_clip_plan(source, tts_cfg)
    return synthesize_plan(plan, tts_cfg, out_manifest, out_dir, threads, desc="pseudowords")


def speak_captions(
    caption_text_manifest: str | os.PathLike | pd.DataFrame,
    tts_cfg: Mapping,
    out_manifest: str | os.PathLike,
    out_dir: str | os.PathLike,
    threads: int = 1,
) -> pd.DataFrame:
    """The ``captions`` set: each ``caption_text`` caption spoken once, voices in rotation."""
    plan = caption_clip_plan(caption_text_manifest, tts_cfg)
    return synthesize_plan(plan, tts_cfg, out_manifest, out_dir, threads, desc="captions")
