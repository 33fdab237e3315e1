"""Quality control of audio sets: one row per clip, written beside the set's manifest.

``results/stimuli/<set>/qc.parquet`` has, per clip: ``stimulus_id``, ``duration`` (s),
``sample_rate``, ``peak`` and ``rms`` (linear, full scale = 1), ``rms_dbfs``, ``n_clipped``
(samples with ``|x| >= clip_level``, 0.999 by default: float WAVs can exceed 1.0, so this
counts both hard clipping and samples at full scale), ``leading_silence`` and
``trailing_silence`` (s before the first / after the last sample louder than ``silence_db``
relative to the clip's peak, written in the ``silence_db`` column; an all-zero clip has
both equal to its duration), ``channels``, ``subtype``, and ``flags``: a ``;``-separated
list of ``clipped``, ``silent``, ``leading_silence``, ``trailing_silence`` (more than
``max_silence`` s, 0.25 by default), ``too_short`` (< ``min_duration`` s, 0.05 by default);
empty when the clip is clean.

The silence threshold is relative to the peak, like the trimming of synthesised clips,
and each set uses its own trim threshold: −40 dB for speech (the TTS default, and for
corpora), −60 dB for impacts, whose slow decays are sound, not silence. Silence in QC is
thus exactly what trimming would remove.

Synthesised sets (pseudowords, captions, impacts) write their table as they are built;
:func:`write_audio_qc` does it for any audio manifest, e.g. a real corpus.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import soundfile as sf

from avprobe.io import read_manifest, resolve_stimulus_path, write_parquet

log = logging.getLogger(__name__)

QC_COLUMNS = (
    "stimulus_id",
    "duration",
    "sample_rate",
    "channels",
    "subtype",
    "peak",
    "rms",
    "rms_dbfs",
    "n_clipped",
    "leading_silence",
    "trailing_silence",
    "silence_db",
    "flags",
)


@dataclass(frozen=True)
class QcSettings:
    clip_level: float = 0.999
    #: dB relative to the clip's peak
    silence_db: float = -40.0
    max_silence: float = 0.25
    min_duration: float = 0.05

    @classmethod
    def from_config(cls, cfg: Mapping | None) -> "QcSettings":
        cfg = cfg or {}
        return cls(**{k: cfg[k] for k in cls.__dataclass_fields__ if k in cfg})


def clip_qc(x: np.ndarray, sample_rate: int, settings: QcSettings = QcSettings()) -> dict:
    """QC measurements of one clip (mono, or channels in columns: the loudest channel counts)."""
    x = np.asarray(x, dtype=np.float64)
    mono = np.max(np.abs(x), axis=1) if x.ndim == 2 else np.abs(x)
    n = mono.size
    duration = n / float(sample_rate)
    rms = float(np.sqrt(np.mean(x**2))) if n else 0.0
    peak = float(mono.max()) if n else 0.0
    loud = np.flatnonzero(mono > peak * 10.0 ** (settings.silence_db / 20.0)) if peak > 0 else mono[:0]
    if loud.size:
        leading = loud[0] / float(sample_rate)
        trailing = (n - 1 - loud[-1]) / float(sample_rate)
    else:
        leading = trailing = duration
    n_clipped = int(np.count_nonzero(mono >= settings.clip_level))
    flags = []
    if n_clipped:
        flags.append("clipped")
    if not loud.size:
        flags.append("silent")
    else:
        if leading > settings.max_silence:
            flags.append("leading_silence")
        if trailing > settings.max_silence:
            flags.append("trailing_silence")
    if duration < settings.min_duration:
        flags.append("too_short")
    return {
        "duration": duration,
        "sample_rate": int(sample_rate),
        "peak": peak,
        "rms": rms,
        "rms_dbfs": float(20 * np.log10(rms)) if rms > 0 else float("-inf"),
        "n_clipped": n_clipped,
        "leading_silence": float(leading),
        "trailing_silence": float(trailing),
        "silence_db": float(settings.silence_db),
        "flags": ";".join(flags),
    }


def file_qc(path: str | os.PathLike, settings: QcSettings = QcSettings()) -> dict:
    """QC of one audio file (read as float, channels kept). A file that cannot be read (empty,
    not audio) gets NaN measurements and the flag ``unreadable``; extraction quarantines it."""
    try:
        info = sf.info(str(path))
        x, rate = sf.read(str(path), dtype="float64", always_2d=True)
    except Exception as err:  # libsndfile: "Format not recognised", "Error in WAV file", …
        log.warning("qc: %s is not readable audio (%s)", path, str(err).strip().splitlines()[0] if str(err).strip()
                    else type(err).__name__)
        return {"duration": float("nan"), "sample_rate": float("nan"), "peak": float("nan"), "rms": float("nan"),
                "rms_dbfs": float("nan"), "n_clipped": 0, "leading_silence": float("nan"),
                "trailing_silence": float("nan"), "silence_db": float(settings.silence_db), "flags": "unreadable",
                "channels": 0, "subtype": ""}
    return {**clip_qc(x, rate, settings), "channels": int(info.channels), "subtype": info.subtype}


def audio_qc(manifest_path: str | os.PathLike, settings: QcSettings = QcSettings()) -> pd.DataFrame:
    """The QC table of every clip of an audio manifest, in manifest order."""
    manifest = read_manifest(manifest_path)
    rows = []
    for stimulus_id, rel in zip(manifest["stimulus_id"], manifest["path"]):
        rows.append({"stimulus_id": stimulus_id, **file_qc(resolve_stimulus_path(manifest_path, rel), settings)})
    return pd.DataFrame(rows, columns=list(QC_COLUMNS))


def qc_path(manifest_path: str | os.PathLike) -> Path:
    """Where a set's QC table lives: ``qc.parquet`` beside its manifest."""
    return Path(manifest_path).with_name("qc.parquet")


def write_audio_qc(
    manifest_path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    settings: QcSettings = QcSettings(),
) -> pd.DataFrame:
    """Compute and write the QC table of an audio set; log a summary of what it flags."""
    table = audio_qc(manifest_path, settings)
    out = qc_path(manifest_path) if out is None else Path(out)
    write_parquet(table, out)
    flagged = table["flags"].str.len() > 0
    counts = pd.Series([f for flags in table.loc[flagged, "flags"] for f in flags.split(";")]).value_counts()
    log.info(
        "qc: %d clips, %d flagged %s, %.2f–%.2f s, %d clipped samples in all → %s",
        len(table), int(flagged.sum()), counts.to_dict(), table["duration"].min() if len(table) else 0.0,
        table["duration"].max() if len(table) else 0.0, int(table["n_clipped"].sum()), out,
    )  # fmt: skip
    return table
