"""Word boundaries of synthesised speech on the timeline of the finished clip.

The TTS engine reports when it speaks each word (espeak's word events,
:attr:`avprobe.stimuli.tts.Utterance.words`) on its own timeline; post-processing
(:func:`avprobe.stimuli.audio.postprocess`) resamples, trims the silent ends and scales the
clip. :func:`clip_word_times` finds where the finished clip starts inside the resampled engine
output (the peak of their cross-correlation, so it does not depend on how trimming decides) and
moves the words onto the clip's timeline. The captions manifest keeps them as JSON in the
``word_times`` column: ``[{"word", "start", "end"}, ...]`` in seconds from the clip's start
(``[]`` when the engine reports no words, e.g. piper).
"""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np


def clip_offset(clip: np.ndarray, reference: np.ndarray) -> int:
    """The sample offset at which ``clip`` (a scaled, possibly faded excerpt) best matches
    ``reference`` (normalised cross-correlation; 0 when the clip is not shorter)."""
    from scipy.signal import correlate

    clip = np.asarray(clip, np.float64)
    reference = np.asarray(reference, np.float64)
    if clip.size == 0 or reference.size <= clip.size:
        return 0
    corr = correlate(reference, clip, mode="valid", method="fft")
    energy = np.convolve(reference ** 2, np.ones(clip.size), mode="valid")
    score = corr / np.sqrt(np.maximum(energy, 1e-20))
    return int(np.argmax(score))


def clip_word_times(words: Sequence, clip: np.ndarray, reference: np.ndarray, rate: int) -> list[dict]:
    """Engine word times ``(word, start_s, end_s)`` (engine timeline; ``reference`` is the
    engine output resampled to ``rate``) → ``[{"word", "start", "end"}]`` on the clip's
    timeline, clipped to the clip; words that fall wholly outside it are left out."""
    if not words:
        return []
    offset = clip_offset(clip, reference) / float(rate)
    duration = len(clip) / float(rate)
    out = []
    for word, start, end in words:
        s, e = max(0.0, float(start) - offset), min(duration, float(end) - offset)
        if e > s and str(word).strip():
            out.append({"word": str(word), "start": round(s, 4), "end": round(e, 4)})
    return out


def to_json(times: list[dict]) -> str:
    return json.dumps(times, separators=(",", ":"))


def from_json(value) -> list[dict]:
    """The ``word_times`` column of a manifest row (missing or empty → ``[]``)."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value == "":
        return []
    return list(json.loads(value))
