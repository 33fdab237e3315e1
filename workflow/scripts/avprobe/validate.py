"""Input checks: stimuli are quarantined before extraction, analysis inputs fail loudly.

Extraction (:func:`screen_stimuli`)
    Every stimulus of a set is checked before the model is loaded. A clip or image that cannot
    be used is *quarantined*: it is left out of the embeddings and listed, with the reason, in
    ``results/embeddings/<set>/rejected/<model>.parquet`` (columns :data:`REJECTED_COLUMNS`);
    the run goes on with the rest and the job log says how many were rejected. With
    ``on_bad_input: fail`` (top-level config key) the job stops at the first bad set instead,
    naming every bad stimulus and its reason.

    ==========  ======================================================  =================
    modality    rejected when                                           ``check``
    ==========  ======================================================  =================
    all         the file is missing or has 0 bytes                      missing, empty
    audio       a WAV whose data chunk is shorter than its header says  truncated
    audio       libsndfile cannot open or decode it                     unreadable
    audio       it has no samples                                       no_samples
    audio       NaN or Inf samples                                      non_finite
    audio       more than one channel (unless ``multichannel_audio:     channels
                downmix``, which averages the channels)
    audio       its rate differs from the manifest's ``sample_rate``,   sample_rate
                or is below :data:`MIN_SAMPLE_RATE` (a bogus header)
    audio       longer than ``max_audio_seconds`` (config, default      too_long
                600 s; read from the header, before any sample is)
    audio       every sample equal (digital silence, or a constant      silent
                offset): no signal for a model to embed
    audio       a sample beyond ±:data:`MAX_ABS_SAMPLE` (float audio    overflow
                is nominally within ±1; int16-scaled floats reach
                32768): normalisation overflows float32
    audio       shorter than the model's receptive field / analysis     too_short
                window (:meth:`Adapter.min_input_samples`, checked
                once the model is loaded)
    image       PIL cannot identify it, or decoding fails (truncated)   unreadable
    image       a side shorter than ``min_image_size`` (config,         too_small
                default 16 px) or an aspect ratio above
                :data:`MAX_ASPECT_RATIO`
    image       a mode with no faithful 8-bit RGB conversion            mode
                (``I``, ``I;16``, ``F``…); palette, greyscale, RGBA,
                CMYK are converted
    text        empty or missing text                                   empty_text
    ==========  ======================================================  =================

    A different sample rate *between* a clip and the model is not an error: adapters resample.

    After the model has run, a stimulus whose embedding is non-finite or exactly zero in any
    layer is quarantined too (``degenerate_embedding``): such a vector is never stored.

Analyses (:func:`analysis_manifest`, :func:`checked_layers`, :func:`read_checked_layer`)
    An embeddings file and its manifest must hold the same stimuli, except the ones the
    extraction quarantined (listed in the rejected table beside the embeddings), which are
    dropped from the analysis with a log line. Anything else is an error naming the files and
    an example id, as are a sharp/round class with no members and a layer whose embeddings are
    constant (every distance 0 → NaN correlations) or not finite.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from . import io

log = logging.getLogger("avprobe")

#: Columns of a rejected table, one row per quarantined stimulus.
REJECTED_COLUMNS = ("stimulus_id", "path", "check", "reason")
ON_BAD_INPUT = ("quarantine", "fail")
MULTICHANNEL = ("quarantine", "downmix")
#: PIL modes that convert to 8-bit RGB without losing their meaning.
CONVERTIBLE_MODES = {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"}
#: Below this rate a header is taken to be bogus (the lowest real rates are 8 kHz telephony).
MIN_SAMPLE_RATE = 4000
#: Longest clip (seconds, from the header) extracted unless the config's max_audio_seconds says otherwise.
MAX_AUDIO_SECONDS = 600.0
#: Largest sample magnitude kept: float audio is nominally within ±1 (int16-scaled floats reach
#: 32768); beyond this, feature-extractor normalisation overflows float32.
MAX_ABS_SAMPLE = 1e6
#: Smallest image side (pixels) kept unless the config's min_image_size says otherwise.
MIN_IMAGE_SIZE = 16
#: Largest width/height (or height/width) ratio kept: a 1×4800 strip resized to a processor's
#: shortest side would be hundreds of megabytes and says nothing about the image.
MAX_ASPECT_RATIO = 20.0
#: How many bad stimuli an error message lists before "…".
_SHOW = 10


class BadInputError(ValueError):
    """A stimulus, manifest or embeddings file that an analysis cannot use."""


# --------------------------------------------------------------------------- stimuli → reasons
def _riff_truncation(path: Path, size: int) -> str | None:
    """The reason a RIFF/WAVE file is truncated, or None (also for files that are not WAV).

    libsndfile reads a truncated WAV without complaint (it shortens the clip to the bytes that
    are there), so the data chunk's declared length is checked against the file's size.
    """
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos = 12
        while pos + 8 <= size:
            fh.seek(pos)
            chunk = fh.read(8)
            cid, clen = chunk[:4], int.from_bytes(chunk[4:8], "little")
            if cid == b"data":
                avail = size - pos - 8
                if clen != 0xFFFFFFFF and clen > avail:  # 0xFFFFFFFF: length unknown (streamed)
                    return f"truncated WAV: the data chunk declares {clen} bytes but the file holds {avail}"
                return None
            pos += 8 + clen + (clen & 1)
        return "truncated WAV: the file ends before its data chunk"


def audio_problem(path: str | os.PathLike, expected_rate: int | None = None,
                  multichannel: str = "quarantine",
                  max_seconds: float | None = MAX_AUDIO_SECONDS) -> tuple[str, str] | None:
    """``(check, reason)`` when the clip at ``path`` cannot be used, else None."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        return "missing", f"no file {path}"
    size = path.stat().st_size
    if size == 0:
        return "empty", "empty file (0 bytes)"
    reason = _riff_truncation(path, size)
    if reason:
        return "truncated", reason
    try:
        info = sf.info(str(path))
    except Exception as err:  # libsndfile: "Format not recognised", "unsupported encoding"…
        return "unreadable", f"unreadable audio: {_first_line(err)}"
    if info.frames <= 0:
        return "no_samples", "no samples (0 frames)"
    if info.channels != 1 and multichannel != "downmix":
        return "channels", (f"{info.channels} channels, mono expected (set `multichannel_audio: downmix` "
                            "to average the channels instead)")
    if expected_rate is not None and int(info.samplerate) != int(expected_rate):
        return "sample_rate", (f"sample rate {info.samplerate} Hz in the file but {int(expected_rate)} Hz "
                               "in the manifest's sample_rate column")
    if int(info.samplerate) < MIN_SAMPLE_RATE:
        return "sample_rate", (f"sample rate {info.samplerate} Hz in the header is below {MIN_SAMPLE_RATE} Hz: "
                               "a bogus header (resampling would stretch the clip)")
    seconds = info.frames / float(info.samplerate)
    if max_seconds is not None and seconds > float(max_seconds):
        return "too_long", (f"{seconds:.1f} s long, above max_audio_seconds = {float(max_seconds):g} s "
                            "(raise max_audio_seconds in the config to embed it)")
    try:
        wave, _ = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:
        return "unreadable", f"unreadable audio: {_first_line(err)}"
    if wave.size == 0:
        return "no_samples", "no samples (0 frames)"
    bad = int(np.count_nonzero(~np.isfinite(wave)))
    if bad:
        return "non_finite", f"{bad} of {wave.size} samples are NaN or Inf"
    peak = float(np.abs(wave).max())
    if peak > MAX_ABS_SAMPLE:
        return "overflow", (f"peak sample magnitude {peak:.3g} is above {MAX_ABS_SAMPLE:g} (float audio is "
                            "nominally within ±1): normalising it overflows float32")
    if wave.shape[0] > 1 and float(np.ptp(wave)) == 0.0:  # one sample is too short, not silent
        level = float(wave.flat[0])
        return "silent", ("digital silence (every sample is 0)" if level == 0.0 else
                          f"no signal: every sample equals {level:.6g} (a constant offset)")
    return None


def too_short_problem(n_frames: int, rate: int, min_samples: int | None, model_rate: int | None,
                      model: str = "the model") -> tuple[str, str] | None:
    """``("too_short", reason)`` when a clip of ``n_frames`` at ``rate`` Hz has fewer than
    ``min_samples`` samples once resampled to ``model_rate`` (the model's receptive field or
    analysis window), else None."""
    if not min_samples:
        return None
    n = int(n_frames) if not model_rate or int(model_rate) == int(rate) else \
        int(np.floor(int(n_frames) * int(model_rate) / float(rate)))
    if n < int(min_samples):
        at = f" at {int(model_rate)} Hz" if model_rate else ""
        return "too_short", (f"too short for {model}: {n} samples{at}, its receptive field / analysis window "
                             f"needs at least {int(min_samples)}")
    return None


def image_problem(path: str | os.PathLike, min_size: int | None = MIN_IMAGE_SIZE) -> tuple[str, str] | None:
    """``(check, reason)`` when the image at ``path`` cannot be used, else None."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        return "missing", f"no file {path}"
    if path.stat().st_size == 0:
        return "empty", "empty file (0 bytes)"
    try:
        with Image.open(path) as img:
            mode = img.mode
            img.load()  # decodes every byte: a truncated or corrupt file fails here
            width, height = img.size
    except Exception as err:  # UnidentifiedImageError, OSError("image file is truncated"), …
        return "unreadable", f"unreadable image: {_first_line(err)}"
    if mode not in CONVERTIBLE_MODES:
        return "mode", (f"image mode {mode!r} has no faithful 8-bit RGB conversion "
                        "(convert it to RGB or greyscale first)")
    if width == 0 or height == 0:
        return "empty", f"empty image ({width}x{height})"
    if min_size and min(width, height) < int(min_size):
        return "too_small", (f"{width}x{height} pixels: a side is below min_image_size = {int(min_size)} px "
                             "(processors would read so small an image wrongly)")
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        return "too_small", (f"{width}x{height} pixels: aspect ratio {ratio:.0f}:1 is above "
                             f"{MAX_ASPECT_RATIO:g}:1 (a strip, not an image)")
    return None


def text_problem(text) -> tuple[str, str] | None:
    if text is None or (isinstance(text, float) and np.isnan(text)) or not str(text).strip():
        return "empty_text", "empty or missing text"
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# --------------------------------------------------------------------------- quarantine
def screen_stimuli(
    df: pd.DataFrame,
    modality: str,
    manifest_path: str | os.PathLike,
    *,
    on_bad_input: str = "quarantine",
    multichannel_audio: str = "quarantine",
    what: str = "",
    max_audio_seconds: float | None = MAX_AUDIO_SECONDS,
    min_image_size: int | None = MIN_IMAGE_SIZE,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a manifest into ``(usable rows, rejected table)``; see the module docstring.

    Raises :class:`BadInputError` when ``on_bad_input == "fail"`` and any stimulus is bad, or
    when no stimulus is left.
    """
    if on_bad_input not in ON_BAD_INPUT:
        raise ValueError(f"on_bad_input must be one of {list(ON_BAD_INPUT)}, not {on_bad_input!r}")
    if multichannel_audio not in MULTICHANNEL:
        raise ValueError(f"multichannel_audio must be one of {list(MULTICHANNEL)}, not {multichannel_audio!r}")
    what = what or str(manifest_path)
    has_rate = modality == "audio" and "sample_rate" in df.columns
    rows = []
    for i, rec in enumerate(df.to_dict("records")):
        rel = rec.get("path")
        if modality == "text":
            problem = text_problem(rec.get("text"))
        elif rel is None or (isinstance(rel, float) and np.isnan(rel)) or not str(rel):
            problem = ("missing", "no path in the manifest")
        else:
            full = io.resolve_stimulus_path(manifest_path, str(rel))
            if modality == "audio":
                rate = rec.get("sample_rate") if has_rate else None
                rate = None if rate is None or pd.isna(rate) else int(rate)
                problem = audio_problem(full, rate, multichannel_audio, max_audio_seconds)
            elif modality == "image":
                problem = image_problem(full, min_image_size)
            else:
                raise ValueError(f"unknown modality {modality!r}")
        if problem:
            rows.append((i, str(rec["stimulus_id"]), "" if rel is None else str(rel), *problem))
    return quarantine(df, rows, on_bad_input=on_bad_input, what=what)


def quarantine(df: pd.DataFrame, rows: list, *, on_bad_input: str = "quarantine", what: str = "",
               stage: str = "input check") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``df`` by ``rows`` = ``[(position, stimulus_id, path, check, reason), …]`` into
    ``(usable rows, rejected table)``; log them, or raise under ``on_bad_input: fail`` or when
    nothing is left."""
    rejected = pd.DataFrame([r[1:] for r in rows], columns=list(REJECTED_COLUMNS)).astype(str)
    if rows:
        listing = "; ".join(f"{r[1]} ({r[2]}): {r[4]}" for r in rows[:_SHOW])
        more = f"; … and {len(rows) - _SHOW} more" if len(rows) > _SHOW else ""
        if on_bad_input == "fail":
            raise BadInputError(f"{what}: {len(rows)} of {len(df)} stimuli are unusable "
                                f"(on_bad_input: fail): {listing}{more}")
        log.warning("quarantined %d of %d stimuli of %s: %s%s", len(rows), len(df), what, listing, more)
        if len(rows) == len(df):
            raise BadInputError(f"{what}: every one of the {len(df)} stimuli is unusable: {listing}{more}")
    else:
        log.info("%s: all %d stimuli of %s are usable (0 quarantined)", stage, len(df), what)
    keep = np.ones(len(df), dtype=bool)
    keep[[r[0] for r in rows]] = False
    return df[keep].reset_index(drop=True), rejected


def rejected_path(embeddings_path: str | os.PathLike) -> Path:
    """``<set>/rejected/<model>.parquet`` for the embeddings ``<set>/<model>.parquet`` (a
    subfolder, so that ``results/embeddings/*/*.parquet`` still lists embeddings only)."""
    p = Path(embeddings_path)
    return p.parent / "rejected" / p.name


def write_rejected(rejected: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a rejected table (always, even empty, so the file is a dependable output)."""
    table = pd.DataFrame({c: rejected[c].astype(str) if c in rejected else pd.Series([], dtype=str)
                          for c in REJECTED_COLUMNS})
    io.write_parquet(table.reset_index(drop=True), path)


def read_rejected(embeddings_path: str | os.PathLike) -> pd.DataFrame:
    """The rejected table beside an embeddings file (empty when there is none)."""
    p = rejected_path(embeddings_path)
    if not p.is_file():
        return pd.DataFrame(columns=list(REJECTED_COLUMNS))
    return io.read_parquet(p)


# --------------------------------------------------------------------------- analysis inputs
def _examples(values) -> str:
    values = list(values)
    shown = ", ".join(repr(v) for v in values[:3])
    return shown + (", …" if len(values) > 3 else "")


def embedded_ids(embeddings_path: str | os.PathLike) -> list[str]:
    """The stimulus ids of an embeddings file; every layer must hold the same ids, once each."""
    table = io.read_parquet(embeddings_path, columns=["stimulus_id", "layer"])
    if table.empty:
        raise BadInputError(f"{embeddings_path}: the embeddings file has no rows")
    table["stimulus_id"] = table["stimulus_id"].astype(str)
    first = None
    for layer, ids in table.groupby("layer", sort=False)["stimulus_id"]:
        dup = ids[ids.duplicated()]
        if len(dup):
            raise BadInputError(f"{embeddings_path}: layer {layer!r} holds stimulus ids more than once, "
                                f"e.g. {_examples(dup.unique())}")
        if first is None:
            first = (layer, ids.tolist())
        elif set(ids) != set(first[1]):
            raise BadInputError(f"{embeddings_path}: layers {first[0]!r} and {layer!r} hold different "
                                "stimuli; the file is inconsistent, rerun its extraction")
    return first[1]


def analysis_manifest(
    manifest: pd.DataFrame,
    embeddings_path: str | os.PathLike,
    *,
    manifest_path: str | os.PathLike | None = None,
    classes: str | None = None,
) -> pd.DataFrame:
    """The manifest rows an analysis can use, after checking them against the embeddings.

    * an embedded id that the manifest lacks → :class:`BadInputError` (stale or foreign file);
    * a manifest id with no embedding: dropped (with a log line) when the extraction
      quarantined it — it is in the rejected table beside the embeddings — else an error;
    * ``classes`` (a column, e.g. ``"label"``): when the manifest has it, the non-reference
      rows must have members of both ``sharp`` and ``round`` after the drops.
    """
    where = f"{embeddings_path} vs {manifest_path or 'its manifest'}"
    if manifest.empty:
        raise BadInputError(f"{manifest_path or 'manifest'}: the manifest has no stimuli")
    m = manifest.assign(stimulus_id=manifest["stimulus_id"].astype(str))
    ids = embedded_ids(embeddings_path)
    in_manifest = set(m["stimulus_id"])
    extra = [i for i in ids if i not in in_manifest]
    if extra:
        raise BadInputError(f"{where}: {len(extra)} embedded stimuli are not in the manifest, e.g. "
                            f"{_examples(extra)}; the embeddings are stale or from another set — "
                            "rerun their extraction")
    embedded = set(ids)
    missing = m.loc[~m["stimulus_id"].isin(embedded), "stimulus_id"].tolist()
    if missing:
        rejected = set(read_rejected(embeddings_path)["stimulus_id"].astype(str))
        unexplained = [i for i in missing if i not in rejected]
        if unexplained:
            raise BadInputError(f"{where}: {len(unexplained)} manifest stimuli have no embedding and are not "
                                f"in the rejected table {rejected_path(embeddings_path)}, e.g. "
                                f"{_examples(unexplained)}; the embeddings are stale — rerun their extraction")
        log.warning("%d quarantined stimuli (listed in %s) are left out of this analysis: %s",
                    len(missing), rejected_path(embeddings_path), _examples(missing))
        m = m[m["stimulus_id"].isin(embedded)]
    if classes and classes in m.columns:
        require_classes(m, classes, what=str(manifest_path or embeddings_path))
    return m.reset_index(drop=True)


def require_columns(frame: pd.DataFrame, columns, *, set_name: str, manifest_path=None, why: str = "") -> None:
    """Raise naming the set, its manifest and the first missing column of ``columns``."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        where = f" ({manifest_path})" if manifest_path else ""
        raise BadInputError(
            f"set {set_name!r}{where}: the manifest has no column {missing[0]!r}"
            f"{' (' + why + ')' if why else ''}; its columns are {list(map(str, frame.columns))}. "
            f"Rebuild the set's manifest with that column, or leave the set out of this analysis")


def require_classes(frame: pd.DataFrame, column: str = "label", classes=io.LABELS, what: str = "") -> None:
    """Every one of ``classes`` must have members among the non-reference rows."""
    rows = frame
    if "is_reference" in rows.columns:
        rows = rows[~rows["is_reference"].fillna(False).astype(bool)]
    counts = rows[column].astype(str).value_counts()
    empty = [c for c in classes if counts.get(c, 0) == 0]
    if empty:
        raise BadInputError(
            f"{what}: class {empty[0]!r} of column {column!r} has no members "
            f"(counts: {({c: int(counts.get(c, 0)) for c in classes})}, references and quarantined stimuli "
            f"excluded); a {'/'.join(classes)} analysis needs every class"
        )


def check_layer(name: str, x: np.ndarray, path: str | os.PathLike, ids=None) -> np.ndarray:
    """Raise on an empty, non-finite or constant layer (all its embeddings identical), or on an
    all-zero embedding (no direction: cosine similarity, L2 normalisation and RDMs are
    undefined for it), naming the stimuli when ``ids`` are given."""
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise BadInputError(f"{path}: layer {name!r} is empty (shape {x.shape})")
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.flatnonzero(bad.any(1))
        which = f" ({_examples([ids[i] for i in rows])})" if ids is not None else ""
        raise BadInputError(f"{path}: layer {name!r} has {rows.size} embeddings with NaN or Inf{which}; "
                            "rerun the extraction, which quarantines them")
    zero = np.flatnonzero(~x.any(axis=1))
    if zero.size:
        which = f" ({_examples([ids[i] for i in zero])})" if ids is not None else ""
        raise BadInputError(f"{path}: layer {name!r} has {zero.size} all-zero embeddings{which}: no direction, "
                            "so cosine similarities and RDMs are undefined; rerun the extraction, which "
                            "quarantines them (degenerate_embedding)")
    if x.shape[0] > 1 and not np.ptp(x, axis=0).any():
        raise BadInputError(
            f"{path}: layer {name!r} is constant — all {x.shape[0]} embeddings are identical, so every "
            "distance is 0 and correlations and probes are undefined. Check the stimuli, or leave the "
            "layer out with the model's `layers` setting"
        )
    return x


def checked_layers(path: str | os.PathLike) -> Iterator[tuple[str, int, list[str], np.ndarray]]:
    """:func:`avprobe.io.read_all_layers`, each layer checked by :func:`check_layer`."""
    for name, index, ids, x in io.read_all_layers(path):
        yield name, index, ids, check_layer(name, x, path, ids)


def read_checked_layer(path: str | os.PathLike, layer: str) -> tuple[list[str], np.ndarray]:
    """:func:`avprobe.io.read_layer`, checked by :func:`check_layer`."""
    ids, x = io.read_layer(path, layer)
    return ids, check_layer(layer, x, path, ids)
