"""Post-processing shared by every synthesised clip, whatever the engine.

All speech goes through :func:`postprocess`: resample to the study rate, trim silence (keeping
a margin of quiet before the first and after the last sound), fade both ends in and out, and
normalise loudness. Engines differ in rate, padding and level; after this step a clip's
duration and loudness say something about the word, not about the engine.

Onsets are what sound symbolism lives in (the /b/ of *bouba*, the /k/ of *kiki*), so trimming
must never cut into them. Three rules guarantee that, and ``tests/test_stimuli.py`` checks
them on synthetic words with known bursts:

* the silence threshold is low (−50 dB re the clip's peak, on single samples: a 2 ms burst or
  the low murmur of a voiced closure counts as sound, not as silence);
* ``trim_margin_ms`` of signal (or of zeros, when the engine gave less) is kept before the first
  and after the last sample above it;
* the fades (``fade_ms``, raised cosine, first and last sample exactly 0, so no click) lie
  inside those margins, which must be at least as long: they only ever touch the quiet part.

Loudness normalisation is one gain for the whole clip, so it cannot remove a burst either.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from avprobe.io import atomic_path

#: libsndfile command that turns the PEAK chunk of float WAVs on or off. That chunk holds
#: the write time, so leaving it on would make two identical syntheses differ byte-wise.
_SFC_SET_ADD_PEAK_CHUNK = 0x1050


@dataclass(frozen=True)
class Postprocessing:
    """How clips are post-processed; defaults suit short, clean TTS speech."""

    sample_rate: int = 16000
    target_rms_dbfs: float = -20.0
    #: Samples quieter than this, relative to the clip's peak, count as silence at the ends.
    #: Low enough that a weak release burst or voicing murmur before a vowel counts as sound.
    trim_threshold_db: float = -50.0
    #: Kept (zero-padded if the engine gave less) before the first and after the last sample
    #: above the threshold, so onsets and releases are never clipped.
    trim_margin_ms: float = 50.0
    #: Raised-cosine fade-in and fade-out at the ends, inside the margins (so ≤ trim_margin_ms):
    #: the clip starts and ends on 0 and never clicks.
    fade_ms: float = 10.0
    #: The loudness gain never lifts the peak above this level.
    peak_limit_dbfs: float = -1.0

    @classmethod
    def from_config(cls, tts_cfg: dict) -> "Postprocessing":
        """Read the ``stimuli.tts`` section; keys it lacks keep their defaults."""
        keys = cls.__dataclass_fields__
        return cls(**{k: tts_cfg[k] for k in keys if k in tts_cfg})

    def __post_init__(self):
        if self.fade_ms > self.trim_margin_ms:
            # A fade longer than the margin would attenuate the onset itself.
            raise ValueError(f"tts.fade_ms ({self.fade_ms}) must not exceed tts.trim_margin_ms ({self.trim_margin_ms})")


def dbfs(amplitude: float) -> float:
    """Amplitude relative to full scale (1.0) in dB; silence is -inf."""
    return float(20.0 * np.log10(amplitude)) if amplitude > 0 else float("-inf")


def to_float32(samples: np.ndarray) -> np.ndarray:
    """Integer PCM (int16 or int32) or float samples → float32 in [-1, 1]."""
    samples = np.asarray(samples)
    if np.issubdtype(samples.dtype, np.integer):
        scale = float(np.iinfo(samples.dtype).max) + 1.0
        return (samples.astype(np.float64) / scale).astype(np.float32)
    return samples.astype(np.float32, copy=False)


def resample(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Band-limited resampling with soxr's high-quality preset."""
    x = np.asarray(x, dtype=np.float32)
    if from_rate == to_rate:
        return x.copy()
    return soxr.resample(x, from_rate, to_rate, quality="HQ").astype(np.float32, copy=False)


def trim_silence(
    x: np.ndarray, sample_rate: int, threshold_db: float = -40.0, margin_ms: float = 20.0, pad: bool = False
) -> np.ndarray:
    """Cut leading and trailing samples quieter than ``threshold_db`` below the peak.

    The threshold is relative to the peak so that it works at any level; ``margin_ms`` of
    the quiet part is kept at each end so that soft onsets (h, s) survive. With ``pad``, an
    end with less than ``margin_ms`` of quiet gets zeros added up to the margin, so a sound at
    the very first or last sample still gets its margin (and room for a fade).
    Input and output: 1-D float arrays; an all-zero input gives an empty array.
    """
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak == 0.0:
        return x[:0].copy()
    loud = np.flatnonzero(np.abs(x) >= peak * 10.0 ** (threshold_db / 20.0))
    margin = int(round(margin_ms * sample_rate / 1000.0))
    start = max(int(loud[0]) - margin, 0)
    stop = min(int(loud[-1]) + 1 + margin, x.size)
    out = x[start:stop].copy()
    if pad:
        lead = margin - (int(loud[0]) - start)
        tail = margin - (stop - 1 - int(loud[-1]))
        if lead > 0 or tail > 0:
            out = np.concatenate([np.zeros(max(lead, 0), out.dtype), out, np.zeros(max(tail, 0), out.dtype)])
    return out


def apply_fades(x: np.ndarray, sample_rate: int, fade_ms: float) -> np.ndarray:
    """Raised-cosine fade-in and fade-out of ``fade_ms`` each; the first and last samples
    become exactly 0 (a clip that starts or ends on a non-zero sample clicks when played).
    Returns a new float32 array of the same shape (1-D)."""
    x = np.asarray(x, dtype=np.float32).copy()
    n = min(int(round(fade_ms * sample_rate / 1000.0)), x.size // 2)
    if n < 1:
        if x.size:
            x[0] = x[-1] = 0.0
        return x
    # 0 at the clip's edge, rising to just below 1 where the fade meets the untouched signal.
    ramp = (0.5 - 0.5 * np.cos(np.pi * np.arange(n) / n)).astype(np.float32)
    x[:n] *= ramp
    x[-n:] *= ramp[::-1]
    return x


def normalise_loudness(
    x: np.ndarray, target_rms_dbfs: float = -20.0, peak_limit_dbfs: float = -1.0
) -> tuple[np.ndarray, float, bool]:
    """Scale to ``target_rms_dbfs`` RMS, unless that would push the peak past the limit.

    Returns ``(scaled, gain_db, peak_limited)``. When the peak limit wins, the clip is
    quieter than the target (and ``peak_limited`` says so) instead of clipping.
    """
    x64 = np.asarray(x, dtype=np.float64)
    rms = float(np.sqrt(np.mean(x64**2))) if x64.size else 0.0
    if rms == 0.0:
        raise ValueError("cannot normalise a silent clip")
    gain = 10.0 ** (target_rms_dbfs / 20.0) / rms
    peak_limit = 10.0 ** (peak_limit_dbfs / 20.0)
    peak = float(np.max(np.abs(x64)))
    limited = peak * gain > peak_limit
    if limited:
        gain = peak_limit / peak
    return (x64 * gain).astype(np.float32), dbfs(gain), bool(limited)


def postprocess(samples: np.ndarray, native_rate: int, settings: Postprocessing) -> tuple[np.ndarray, dict]:
    """Engine output → study clip: float32 mono at the study rate, trimmed with margins,
    faded in and out, normalised.

    Returns the clip and a dict of what was done (gain_db, peak_limited) for the manifest.
    Raises ValueError for non-mono input or an engine that produced silence.
    """
    x = to_float32(samples)
    if x.ndim != 1:
        raise ValueError(f"expected mono samples, got shape {x.shape}")
    x = resample(x, native_rate, settings.sample_rate)
    x = trim_silence(x, settings.sample_rate, settings.trim_threshold_db, settings.trim_margin_ms, pad=True)
    if x.size == 0:
        raise ValueError("the engine produced silence")
    x = apply_fades(x, settings.sample_rate, settings.fade_ms)
    x, gain_db, limited = normalise_loudness(x, settings.target_rms_dbfs, settings.peak_limit_dbfs)
    return x, {"gain_db": gain_db, "peak_limited": limited}


def write_wav(path: str | os.PathLike, x: np.ndarray, sample_rate: int) -> None:
    """Write mono float32 WAV atomically, with byte-identical output for identical input."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"expected mono samples, got shape {x.shape}")
    with atomic_path(path) as tmp:
        with sf.SoundFile(
            tmp, "w", samplerate=int(sample_rate), channels=1, format="WAV", subtype="FLOAT"
        ) as handle:
            # Must precede the first write (libsndfile docs): drop the time-stamped PEAK chunk.
            sf._snd.sf_command(handle._file, _SFC_SET_ADD_PEAK_CHUNK, sf._ffi.NULL, 0)
            handle.write(x)


def clip_stats(x: np.ndarray, sample_rate: int) -> dict:
    """Duration in seconds, absolute peak and RMS (linear, full scale = 1), RMS in dBFS."""
    x64 = np.asarray(x, dtype=np.float64)
    rms = float(np.sqrt(np.mean(x64**2))) if x64.size else 0.0
    return {
        "duration": x64.size / float(sample_rate),
        "peak": float(np.max(np.abs(x64))) if x64.size else 0.0,
        "rms": rms,
        "rms_dbfs": dbfs(rms),
    }
