"""Baselines with no learned weights: a log-mel spectrogram and raw pixels.

``logmel`` (audio): power STFT (periodic Hann window, ``n_fft`` 400 = 25 ms, hop 160 = 10 ms at
16 kHz), an HTK-scale triangular mel filterbank (``n_mels`` bands from ``fmin`` to ``fmax``),
``log(mel + 1e-10)``. Layers: ``mean`` (mean over frames, ``n_mels`` values) and ``meanstd``
(mean and standard deviation over frames, ``2 * n_mels``).

``pixels`` (image): the image resized to ``size`` x ``size`` with PIL (box filter), scaled to
[0, 1] and flattened. Layers: ``grey`` (luminance, ``size**2``) and ``rgb`` (``3 * size**2``).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from .base import Adapter


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
    """``(n_fft // 2 + 1, n_mels)`` triangular filters, equally spaced on the HTK mel scale,
    each peaking at 1 on its centre frequency (no area normalisation)."""
    fmax = sample_rate / 2.0 if fmax is None else float(fmax)
    if not 0 <= fmin < fmax <= sample_rate / 2.0:
        raise ValueError(f"need 0 <= fmin < fmax <= {sample_rate / 2}, got {fmin}, {fmax}")
    freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    up = (freqs[:, None] - lower[None, :]) / (centre - lower)[None, :]
    down = (upper[None, :] - freqs[:, None]) / (upper - centre)[None, :]
    return np.maximum(0.0, np.minimum(up, down))


def log_mel(wave: np.ndarray, sample_rate: int, n_mels: int = 64, n_fft: int = 400,
            hop: int = 160, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """``(frames, n_mels)`` natural-log mel power spectrogram of a 1-D waveform."""
    wave = np.asarray(wave, dtype=np.float64)
    if len(wave) < n_fft:
        wave = np.pad(wave, (0, n_fft - len(wave)))
    n_frames = 1 + (len(wave) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    spec = np.abs(np.fft.rfft(wave[idx] * window, n=n_fft, axis=1)) ** 2
    mel = spec @ mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax)
    return np.log(mel + 1e-10)


class LogMelAdapter(Adapter):
    family = "logmel"
    natural_towers = ("audio",)

    def __init__(self, name: str, spec: Mapping, model_dir=None, device: str = "auto") -> None:
        super().__init__(name, spec, kind=spec.get("kind") or "baseline", device="cpu",
                         dtype="float32", source=spec.get("source"), revision="builtin")
        self.rate = int(spec.get("sample_rate", 16000))
        self.params = dict(
            n_mels=int(spec.get("n_mels", 64)),
            n_fft=int(spec.get("n_fft", round(0.025 * self.rate))),
            hop=int(spec.get("hop_length", round(0.010 * self.rate))),
            fmin=float(spec.get("fmin", 0.0)),
            fmax=None if spec.get("fmax") is None else float(spec["fmax"]),
        )

    def input_sample_rate(self, tower="audio"):
        return self.rate

    def min_input_samples(self, tower="audio"):
        return self.params["n_fft"]  # one STFT frame

    def layers(self, tower):
        self.check_tower(tower)
        return ["mean", "meanstd"]

    def _embed(self, tower, items, names):
        mats = [log_mel(w, self.rate, **self.params) for w in items]
        mean = np.stack([m.mean(axis=0) for m in mats])
        std = np.stack([m.std(axis=0) for m in mats])
        return {"mean": mean, "meanstd": np.concatenate([mean, std], axis=1)}

    def provenance(self):
        out = super().provenance()
        out["params"] = {"sample_rate": self.rate, **self.params}
        return out


class PixelsAdapter(Adapter):
    family = "pixels"
    natural_towers = ("image",)

    def __init__(self, name: str, spec: Mapping, model_dir=None, device: str = "auto") -> None:
        super().__init__(name, spec, kind=spec.get("kind") or "baseline", device="cpu",
                         dtype="float32", source=spec.get("source"), revision="builtin")
        self.size = int(spec.get("size", 32))

    def layers(self, tower):
        self.check_tower(tower)
        return ["grey", "rgb"]

    def _embed(self, tower, items, names):
        from PIL import Image

        rgb, grey = [], []
        for arr in items:
            img = Image.fromarray(arr).convert("RGB").resize((self.size, self.size), Image.Resampling.BOX)
            rgb.append(np.asarray(img, dtype=np.float32).reshape(-1) / 255.0)
            grey.append(np.asarray(img.convert("L"), dtype=np.float32).reshape(-1) / 255.0)
        return {"grey": np.stack(grey), "rgb": np.stack(rgb)}

    def provenance(self):
        out = super().provenance()
        out["params"] = {"size": self.size, "resample": "box"}
        return out
