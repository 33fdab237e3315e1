"""Speech QC with a real recogniser: is each voice understood, and do pseudoword onsets survive?

A real Whisper (by default Whisper base, CTranslate2, from the package index; see
:mod:`avprobe.models.ct2_whisper`) transcribes the spoken clips of the ``captions`` and
``pseudowords`` sets (all of them, or a seeded sample per voice: ``stimuli.tts.qc``), and two
jobs write two tables: rule ``speech_qc_transcribe`` (:func:`transcribe_clips`, the costly part)
the clip table, rule ``speech_qc`` (:func:`write_voice_tables`, instant) the voice table, so a
new bar re-judges the voices without transcribing again:

``results/tables/speech_qc/clips.parquet``, one row per transcribed clip (:data:`CLIP_COLUMNS`):

| column | |
| --- | --- |
| set | ``captions`` or ``pseudowords`` |
| stimulus_id, voice | the clip and its voice id |
| reference | captions: the caption spoken; pseudowords: the word's spelling (``bobabo``) |
| transcript | what the recogniser heard, as it wrote it |
| n_words, word_errors, wer | captions: reference words, word edits (substitutions + deletions + insertions) after :func:`normalize_words`, their ratio; NaN for pseudowords |
| cer | pseudowords: character error rate of the transcript's letters (lower-cased, spaces and punctuation dropped) against the spelling; NaN for captions |
| onset, onset_heard | pseudowords: the word's first consonant, and the first letter of the transcript ('' when empty) |
| onset_survives | pseudowords: the transcript starts with a spelling of that consonant (:data:`ONSET_SPELLINGS`: *kiki* heard as "Kiki" or "Ciqui" keeps its /k/; "Iki" or "Giki" does not) |
| empty | the transcript has no letters |

``results/tables/speech_qc/voices.parquet`` (and ``voices.md``, ``voices.html`` for the report),
one row per configured voice (:data:`VOICE_COLUMNS`): ``caption_wer`` is the corpus WER over the
voice's transcribed captions (total edits / total reference words), ``pseudoword_cer`` the mean
CER, ``onset_survival`` the share of pseudoword clips whose onset survives, ``bouba_heard`` /
``kiki_heard`` what the reference words became, and ``excluded`` / ``reason`` whether the voice
fails the bar ``max_wer`` (``stimuli.tts.qc.max_wer``; none by default).

What an excluded voice does (:func:`excluded_voices`): its clips are *quarantined* by every
embedding job of a spoken set (``pseudowords``, ``captions`` and the cascade's transcripts),
with check ``voice_qc`` and the voice's WER as the reason, exactly like an unreadable file: the
analyses never see them, ``results/embeddings/<set>/rejected/<model>.parquet`` lists every clip,
the job log warns, and ``summary.md`` counts them under "Quarantined stimuli". The stimuli
themselves stay on disk and in the manifests, so lowering the bar reruns only the embeddings.

Normalisation (:func:`normalize_words`) follows the spirit of Whisper's own English text
normaliser (OpenAI, ``whisper/normalizers/english.py``), reduced to what the captions need:
lower case, punctuation dropped (:func:`avprobe.analysis.retrieval.normalize_text`), digits
0–20 written as words ("1" → "one"), a few contractions spelled out ("there's" → "there is"),
and American spellings mapped to the British ones the captions use ("center" → "centre",
"gray" → "grey", "color" → "colour"). A recogniser is not
penalised for writing the same word another way.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from avprobe.analysis.retrieval import edit_distance, normalize_text
from avprobe.io import atomic_path, read_manifest, resolve_stimulus_path, write_parquet

log = logging.getLogger("avprobe")

CLIP_COLUMNS = (
    "set", "stimulus_id", "voice", "reference", "transcript", "n_words", "word_errors", "wer",
    "cer", "onset", "onset_heard", "onset_survives", "empty",
)  # fmt: skip
VOICE_COLUMNS = (
    "voice", "engine", "engine_voice", "n_captions", "caption_wer", "n_pseudowords", "pseudoword_cer",
    "onset_survival", "n_empty", "kiki_heard", "bouba_heard", "excluded", "reason",
)  # fmt: skip

_NUMBERS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
            "fifteen sixteen seventeen eighteen nineteen twenty").split()
#: Digits → words, spellings → the captions' (British) spellings.
WORD_MAP = {**{str(i): w for i, w in enumerate(_NUMBERS)},
            "center": "centre", "centered": "centred", "gray": "grey", "color": "colour", "colors": "colours"}

#: A pseudoword's first letter → the letters an English transcript may start with and still have
#: heard that consonant. x is the velar fricative /x/ (avprobe.stimuli.pseudowords), which
#: English spells as h, k, c(h) or x.
ONSET_SPELLINGS = {
    "b": "b", "d": "d", "g": "g", "k": "kcq", "t": "t", "p": "p", "s": "sc", "l": "l", "h": "h",
    "m": "m", "n": "n", "x": "xhkc",
}  # fmt: skip

_LETTERS = re.compile(r"[^a-z]")


#: Contractions Whisper writes for what the captions spell out ("There's one star").
CONTRACTIONS = {"there's": "there is", "it's": "it is", "that's": "that is", "here's": "here is",
                "what's": "what is", "there're": "there are", "they're": "they are"}


def normalize_words(text: str) -> list[str]:
    """Caption or transcript → comparable words (see the module docstring)."""
    words = " ".join(CONTRACTIONS.get(w, w) for w in normalize_text(text).split())
    return [WORD_MAP.get(w, w) for w in words.split()]


def letters(text: str) -> str:
    """Lower-case ASCII letters only: ``"Boba-Bo."`` → ``"bobabo"``."""
    return _LETTERS.sub("", str(text).lower())


def char_error_rate(reference: str, transcript: str) -> float:
    """Character edits / reference characters, on :func:`letters` of each (NaN for an empty
    reference). ``char_error_rate("bobabo", "Boba Bo.")`` is 0."""
    ref = letters(reference)
    return edit_distance(list(ref), list(letters(transcript))) / len(ref) if ref else float("nan")


def onset_survives(word: str, transcript: str) -> bool:
    """Does the transcript start with a spelling of the word's first consonant?"""
    heard = letters(transcript)[:1]
    first = letters(word)[:1]
    return bool(heard) and heard in ONSET_SPELLINGS.get(first, first)


def qc_sample(manifest: pd.DataFrame, per_voice: int | None, seed: int,
              always: Sequence[str] = ()) -> pd.DataFrame:
    """The clips to transcribe: all (``per_voice`` None), or per voice ``per_voice`` clips drawn
    with ``seed`` plus every clip whose ``word`` is in ``always`` (the reference words). Rows keep
    the manifest's order."""
    if per_voice is None or manifest.empty:
        return manifest
    keep = pd.Series(False, index=manifest.index)
    if len(always) and "word" in manifest.columns:
        keep |= manifest["word"].isin(list(always))
    rng = np.random.default_rng(seed)
    for _, rows in manifest[~keep].groupby("voice", sort=True):
        n = min(int(per_voice), len(rows))
        keep[rng.choice(rows.index.to_numpy(), size=n, replace=False)] = True
    return manifest[keep]


def score_clips(set_name: str, rows: pd.DataFrame, transcripts: Sequence[str]) -> pd.DataFrame:
    """Per-clip QC rows (:data:`CLIP_COLUMNS`) of one set from its transcripts."""
    out = []
    for rec, hyp in zip(rows.to_dict("records"), transcripts, strict=True):
        row = dict.fromkeys(CLIP_COLUMNS, np.nan)
        row.update(set=set_name, stimulus_id=str(rec["stimulus_id"]), voice=str(rec.get("voice", "")),
                   transcript=hyp, empty=not letters(hyp), onset="", onset_heard="", onset_survives=np.nan)
        if set_name == "pseudowords":
            word = str(rec["word"])
            row.update(reference=word, cer=char_error_rate(word, hyp), onset=letters(word)[:1],
                       onset_heard=letters(hyp)[:1], onset_survives=onset_survives(word, hyp))
        else:
            ref, words = str(rec["text"]), normalize_words(rec["text"])
            errors = edit_distance(words, normalize_words(hyp))
            row.update(reference=ref, n_words=len(words), word_errors=errors,
                       wer=errors / len(words) if words else np.nan)
        out.append(row)
    table = pd.DataFrame(out, columns=list(CLIP_COLUMNS))
    table["onset_survives"] = table["onset_survives"].astype("boolean")
    return table


def voice_table(clips: pd.DataFrame, voices: Sequence[Mapping], max_wer: float | None = None) -> pd.DataFrame:
    """One row per configured voice (config order; :data:`VOICE_COLUMNS`); a voice whose
    caption WER exceeds ``max_wer`` is ``excluded``, and so is one with no caption clip to judge
    when a bar is set (it cannot show it passes)."""
    rows = []
    for voice in voices:
        vid = str(voice["id"])
        mine = clips[clips["voice"] == vid]
        caps, words = mine[mine["set"] == "captions"], mine[mine["set"] == "pseudowords"]
        n_words = caps["n_words"].sum()
        wer = float(caps["word_errors"].sum() / n_words) if n_words else float("nan")
        heard = {ref: "; ".join(words.loc[words["reference"] == ref, "transcript"].astype(str))
                 for ref in ("kiki", "bouba")}
        excluded, reason = False, ""
        if max_wer is not None:
            if np.isnan(wer):
                excluded, reason = True, f"no caption clip transcribed, so no WER to hold against max_wer {max_wer:g}"
            elif wer > max_wer:
                excluded, reason = True, f"caption WER {wer:.3f} > max_wer {max_wer:g} ({len(caps)} captions)"
        rows.append({
            "voice": vid, "engine": str(voice.get("engine", "")),
            "engine_voice": str(voice.get("voice", "")) + (f"+{voice['variant']}" if voice.get("variant") else ""),
            "n_captions": len(caps), "caption_wer": wer, "n_pseudowords": len(words),
            "pseudoword_cer": float(words["cer"].mean()) if len(words) else float("nan"),
            "onset_survival": float(words["onset_survives"].astype(float).mean()) if len(words) else float("nan"),
            "n_empty": int(mine["empty"].sum()), "kiki_heard": heard["kiki"], "bouba_heard": heard["bouba"],
            "excluded": excluded, "reason": reason,
        })
    return pd.DataFrame(rows, columns=list(VOICE_COLUMNS))


def _fmt(value, digits: int = 3) -> str:
    return "—" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def voices_markdown(voices: pd.DataFrame, meta: Mapping | None = None) -> str:
    """The per-voice table as markdown (for summary.md and the report)."""
    lines = ["| voice | engine | captions | caption WER | pseudowords | pseudoword CER | onset kept | "
             "*kiki* heard as | *bouba* heard as | excluded |", "|" + "---|" * 10]
    for r in voices.to_dict("records"):
        lines.append(
            f"| {r['voice']} | {r['engine']} {r['engine_voice']} | {r['n_captions']} | {_fmt(r['caption_wer'])} | "
            f"{r['n_pseudowords']} | {_fmt(r['pseudoword_cer'])} | {_fmt(r['onset_survival'], 2)} | "
            f"{r['kiki_heard'] or '—'} | {r['bouba_heard'] or '—'} | {r['reason'] or 'no'} |")
    if meta:
        lines += ["", f"Recogniser: {meta.get('recogniser', '')}; clips per voice: {meta.get('sample', '')}."]
    return "\n".join(lines) + "\n"


def _load_clips(manifest_path, rows: pd.DataFrame) -> list[np.ndarray]:
    import soundfile as sf

    from avprobe.stimuli.audio import resample

    waves = []
    for rel in rows["path"]:
        x, rate = sf.read(str(resolve_stimulus_path(manifest_path, rel)), dtype="float32", always_2d=True)
        waves.append(resample(x.mean(axis=1), int(rate), 16000))
    return waves


def transcribe_clips(
    manifests: Mapping[str, str | os.PathLike],
    model_dir: str | os.PathLike,
    qc_cfg: Mapping,
    seed: int,
    out_clips: str | os.PathLike,
    threads: int = 1,
) -> pd.DataFrame:
    """Transcribe the sampled clips of each spoken set in ``manifests`` (``{"captions": path,
    "pseudowords": path}``) and write the clip table (module docstring; rule ``speech_qc_transcribe``).

    ``qc_cfg`` is ``stimuli.tts.qc``: ``captions_per_voice`` / ``pseudowords_per_voice`` (None =
    every clip) and the recogniser settings of
    :meth:`avprobe.models.ct2_whisper.CT2Whisper.from_config`. The recogniser and the sample are
    described in the file's Parquet metadata (key ``avprobe``; no timings, so reruns write the
    same bytes).
    """
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from avprobe.io import EMBEDDINGS_META_KEY
    from avprobe.models.ct2_whisper import CT2Whisper
    from avprobe.runtime import limit_threads

    limit_threads(threads)
    asr = CT2Whisper.from_config(model_dir, qc_cfg, threads=threads)
    per_voice = {"captions": qc_cfg.get("captions_per_voice"), "pseudowords": qc_cfg.get("pseudowords_per_voice")}
    tables, n_total, start = [], 0, time.perf_counter()
    for set_name, path in manifests.items():
        manifest = read_manifest(path).reset_index(drop=True)
        always = ("kiki", "bouba") if set_name == "pseudowords" else ()
        rows = qc_sample(manifest, per_voice.get(set_name), seed, always)
        log.info("speech QC: transcribing %d of %d %s clips", len(rows), len(manifest), set_name)
        transcripts = asr(_load_clips(path, rows))
        tables.append(score_clips(set_name, rows, transcripts))
        n_total += len(rows)
    seconds = time.perf_counter() - start
    clips = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=list(CLIP_COLUMNS))
    meta = {"recogniser": _describe(asr), "provenance": asr.provenance(), "seed": int(seed),
            "sample": ", ".join(f"{k} {'all' if v is None else v}" for k, v in per_voice.items())
            + " (+ kiki, bouba)"}
    table = pa.Table.from_pandas(clips, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           EMBEDDINGS_META_KEY: json.dumps(meta, default=str).encode()})
    with atomic_path(out_clips) as tmp:
        pq.write_table(table, tmp)
    rate = n_total / seconds if seconds > 0 else float("inf")
    log.info("speech QC: %d clips in %.1f s (%.2f clips/s, %d thread(s))", n_total, seconds, rate, threads)
    return clips


def write_voice_tables(
    clips_path: str | os.PathLike,
    voices: Sequence[Mapping],
    max_wer: float | None,
    out_voices: str | os.PathLike,
    out_markdown: str | os.PathLike | None = None,
    out_html: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """The per-voice table from the clip table, with the bar ``max_wer`` (rule ``speech_qc``:
    its own job, so changing the bar transcribes nothing again); logs each voice and warns of
    every excluded one."""
    from avprobe.io import embeddings_metadata

    clips = pd.read_parquet(clips_path)
    meta = embeddings_metadata(clips_path)
    table = voice_table(clips, voices, None if max_wer is None else float(max_wer))
    write_parquet(table, out_voices)
    if out_markdown is not None:
        with atomic_path(out_markdown) as tmp:
            Path(tmp).write_text(voices_markdown(table, meta))
    if out_html is not None:
        with atomic_path(out_html) as tmp:
            Path(tmp).write_text(_html(table, clips, meta))
    for r in table.to_dict("records"):
        log.info("voice %s: caption WER %s, pseudoword CER %s, onset kept %s, bouba → %r",
                 r["voice"], _fmt(r["caption_wer"]), _fmt(r["pseudoword_cer"]), _fmt(r["onset_survival"], 2),
                 r["bouba_heard"])
    for r in table[table["excluded"]].to_dict("records"):
        log.warning("voice %s is EXCLUDED from the analyses: %s; its clips are quarantined by every "
                    "embedding job of a spoken set (check voice_qc)", r["voice"], r["reason"])
    return table


def _describe(asr) -> str:
    prov = asr.provenance()
    source = prov.get("source") or {}
    what = source.get("model") or source.get("from") or prov["model_dir"]
    return (f"{what} via CTranslate2 {prov.get('ctranslate2')} ({prov['compute_type']}, "
            f"{prov['window_s']:g} s window, beam {prov['beam_size']})")


def _html(voices: pd.DataFrame, clips: pd.DataFrame, meta: Mapping) -> str:
    """A self-contained page: the voice table, then every transcribed clip."""
    import html

    shown = clips[["set", "voice", "stimulus_id", "reference", "transcript", "wer", "cer", "onset_survives"]]
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Speech QC</title>"
        "<style>body{font-family:sans-serif} table{border-collapse:collapse} td,th{border:1px solid #ccc;"
        "padding:2px 6px;font-size:90%}</style></head><body><h2>Speech QC: per voice</h2>"
        f"<p>{html.escape(meta.get('recogniser', ''))}; clips per voice: {html.escape(meta.get('sample', ''))}.</p>"
        + voices.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="—")
        + "<h2>Per clip</h2>" + shown.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="—")
        + "</body></html>\n"
    )


def excluded_voices(voices_table: str | os.PathLike | None) -> dict[str, str]:
    """``{voice id: reason}`` of the voices the QC excluded (empty without a table)."""
    if voices_table is None or not Path(voices_table).is_file():
        return {}
    table = pd.read_parquet(voices_table)
    return {str(r["voice"]): str(r["reason"]) for r in table[table["excluded"]].to_dict("records")}


def quarantine_voices(df: pd.DataFrame, excluded: Mapping[str, str], manifest_path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a spoken set's manifest rows into (kept, quarantined) by voice: the rejected rows
    have the columns of :data:`avprobe.validate.REJECTED_COLUMNS`, check ``voice_qc``."""
    from avprobe.validate import REJECTED_COLUMNS

    if not excluded or "voice" not in df.columns:
        return df, pd.DataFrame(columns=list(REJECTED_COLUMNS))
    drop = df["voice"].astype(str).isin(list(excluded))
    rejected = pd.DataFrame({
        "stimulus_id": df.loc[drop, "stimulus_id"].astype(str),
        "path": df.loc[drop, "path"].astype(str) if "path" in df else "",
        "check": "voice_qc",
        "reason": [f"voice {v} excluded by speech QC: {excluded[v]}" for v in df.loc[drop, "voice"].astype(str)],
    }, columns=list(REJECTED_COLUMNS)).astype(str)
    if drop.any():
        log.warning("quarantined %d stimuli of %s spoken by voices the speech QC excluded: %s",
                    int(drop.sum()), manifest_path, ", ".join(f"{v} ({r})" for v, r in excluded.items()))
    return df[~drop].reset_index(drop=True), rejected
