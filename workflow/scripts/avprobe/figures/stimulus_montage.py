"""Figure ``stimulus_montage``: example shapes per class and kiki/bouba spectrograms per voice."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from . import style
from .common import CLASS_ORDER, isna
from .style import apply, empty_panel, plt

#: Parameters of :func:`stimulus_montage` that are not config options (the manifests' folders).
NOT_OPTIONS = ("shapes_root", "pseudowords_root")


def _pick_evenly(df: pd.DataFrame, n: int, by: str | None) -> pd.DataFrame:
    if df.empty:
        return df
    df = df.sort_values([by, "stimulus_id"] if by and by in df else ["stimulus_id"])
    idx = sorted(set(np.linspace(0, len(df) - 1, min(n, len(df))).round().astype(int)))
    return df.iloc[idx]


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps

    with Image.open(path) as img:  # as displayed (avprobe.extract.displayed_rgb): EXIF, alpha on white
        img = ImageOps.exif_transpose(img)
        if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
            rgba = img.convert("RGBA")
            img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        return np.asarray(img.convert("RGB"))


def _read_audio(path: Path) -> tuple[np.ndarray, int]:
    try:
        import soundfile as sf

        wav, sr = sf.read(str(path), dtype="float32", always_2d=False)
    except ImportError:  # pragma: no cover - soundfile is in every env that writes audio
        from scipy.io import wavfile

        sr, wav = wavfile.read(str(path))
        wav = wav.astype(np.float32)
        if np.issubdtype(wav.dtype, np.integer):
            wav /= np.iinfo(wav.dtype).max
    if wav.ndim > 1:
        wav = wav.mean(axis=1)
    return np.asarray(wav, dtype=np.float32), int(sr)


def spectrogram_db(wav: np.ndarray, sr: int, win_ms: float = 25.0, hop_ms: float = 5.0
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(freqs_hz, times_s, power_db)`` of a Hann-window STFT (scipy)."""
    from scipy.signal import spectrogram

    nperseg = max(16, int(sr * win_ms / 1000))
    hop = max(1, int(sr * hop_ms / 1000))
    if wav.size < nperseg:
        wav = np.pad(wav, (0, nperseg - wav.size))
    f, t, sxx = spectrogram(wav, fs=sr, window="hann", nperseg=nperseg,
                            noverlap=nperseg - hop, scaling="spectrum", mode="psd")
    return f, t, 10 * np.log10(sxx + 1e-12)


def stimulus_montage(shapes: pd.DataFrame | None, pseudowords: pd.DataFrame | None, *,
                     shapes_root: str | Path = ".", pseudowords_root: str | Path = ".",
                     n_per_class: int = 6, words: Sequence[str] = ("kiki", "bouba"),
                     max_voices: int = 6, dynamic_range_db: float = 70.0) -> plt.Figure:
    """Example shapes (sharp row, round row) and spectrograms of the reference words per voice.

    ``shapes``: the shapes manifest (``stimulus_id, path, label``, optional ``sharpness``):
    ``n_per_class`` images per class, spread evenly over the sharpness ranking.
    ``pseudowords``: the pseudowords manifest (``stimulus_id, path, word, voice``): one row per
    reference word (``words``), one column per voice (first ``max_voices`` in manifest order).
    ``*_root``: the manifests' folders; manifest ``path`` values are relative to them.
    """
    apply()
    shapes = pd.DataFrame() if shapes is None else shapes
    pseudowords = pd.DataFrame() if pseudowords is None else pseudowords
    shapes_root, pseudowords_root = Path(shapes_root), Path(pseudowords_root)

    picks = {}
    if {"path", "label"} <= set(shapes.columns) and not shapes.empty:
        for label in CLASS_ORDER:
            sub = shapes[shapes["label"] == label]
            by = "sharpness" if "sharpness" in sub else None
            pick = _pick_evenly(sub, n_per_class, by)
            # most prototypical first: sharpest sharp shape, roundest round shape
            picks[label] = pick.iloc[::-1] if label == "sharp" and by else pick
    n_img = max([len(p) for p in picks.values()] + [0])

    refs = pd.DataFrame()
    if {"path", "word"} <= set(pseudowords.columns) and not pseudowords.empty:
        pw = pseudowords.assign(_w=pseudowords["word"].astype(str).str.lower())
        refs = pw[pw["_w"].isin([w.lower() for w in words])]
        if "voice" not in refs:
            refs = refs.assign(voice="")
    voices = list(pd.unique(refs["voice"].astype(str)))[:max_voices] if not refs.empty else []
    ref_words = [w for w in words if not refs.empty and (refs["_w"] == w.lower()).any()]

    ncols_img = max(n_img, 1)
    ncols_spec = max(len(voices), 1)
    width = style.DOUBLE
    img_h = 2 * (width / max(ncols_img, 4)) * 0.9 + 0.3 if n_img else 0.8
    spec_h = len(words) * 1.0 + 0.6 if voices and ref_words else 0.8
    fig = plt.figure(figsize=(width, img_h + spec_h))
    top, bottom = fig.subfigures(2, 1, height_ratios=[img_h, spec_h], hspace=0.02)

    has_sharpness = "sharpness" in shapes.columns
    top.suptitle("shapes" + (" (sharpness score below each)" if has_sharpness and n_img else ""),
                 fontsize=8, x=0.01, ha="left")
    if n_img == 0:
        ax = top.subplots()
        empty_panel(ax, "no rows", "no sharp/round shapes in the shapes manifest")
    else:
        axes = top.subplots(2, ncols_img, squeeze=False)
        for i, label in enumerate(CLASS_ORDER):
            rows = picks.get(label, pd.DataFrame())
            for j in range(ncols_img):
                ax = axes[i, j]
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if j < len(rows):
                    r = rows.iloc[j]
                    ax.imshow(_read_image(shapes_root / str(r["path"])), gid=f"shape:{label}")
                    if "sharpness" in r and not isna(r["sharpness"]):
                        ax.set_xlabel(f"{float(r['sharpness']):.2f}", fontsize=6, labelpad=1,
                                      color="0.4")
            axes[i, 0].set_ylabel(label, color=style.LABEL_COLORS[label], fontsize=8)

    bottom.suptitle("reference pseudowords (spectrograms)", fontsize=8, x=0.01, ha="left")
    if not voices or not ref_words:
        ax = bottom.subplots()
        empty_panel(ax, "no rows",
                    f"no reference words ({', '.join(words)}) in the pseudowords manifest")
        return fig
    specs, vmax = {}, -np.inf
    for w in ref_words:
        for v in voices:
            sub = refs[(refs["_w"] == w.lower()) & (refs["voice"].astype(str) == v)]
            if sub.empty:
                continue
            wav, sr = _read_audio(pseudowords_root / str(sub.iloc[0]["path"]))
            f, t, db = spectrogram_db(wav, sr)
            specs[(w, v)] = (f, t, db)
            vmax = max(vmax, float(np.max(db)))
    axes = bottom.subplots(len(ref_words), ncols_spec, squeeze=False, sharex=True, sharey=True)
    im = None
    tmax = max((t[-1] if len(t) else 0.0) for _, t, _ in specs.values()) if specs else 1.0
    for i, w in enumerate(ref_words):
        for j, v in enumerate(voices):
            ax = axes[i, j]
            if (w, v) not in specs:
                empty_panel(ax, "missing")
                continue
            f, t, db = specs[(w, v)]
            im = ax.pcolormesh(t, f / 1000.0, db, shading="auto", cmap="magma",
                               vmin=vmax - dynamic_range_db, vmax=vmax, rasterized=True,
                               gid=f"spectrogram:{w}:{v}")
            ax.set_xlim(0, tmax)
            if i == 0:
                ax.set_title(v, fontsize=7)
            if i == len(ref_words) - 1:
                ax.set_xlabel("time (s)")
            if j == 0:
                label = "sharp" if w.lower() == "kiki" else "round" if w.lower() == "bouba" else None
                ax.set_ylabel(f"{w}\nkHz", color=style.LABEL_COLORS.get(label, "black"))
    if im is not None:
        cb = bottom.colorbar(im, ax=axes, shrink=0.9, aspect=15, pad=0.01)
        cb.set_label("power (dB)")
        cb.outline.set_visible(False)
    return fig


def draw(inputs: Mapping, models: Mapping | None = None, **options) -> plt.Figure:
    from ..io import read_manifest

    shapes, words = inputs.get("shapes"), inputs.get("pseudowords")
    return stimulus_montage(
        read_manifest(shapes) if shapes else None,
        read_manifest(words) if words else None,
        shapes_root=Path(shapes).parent if shapes else ".",
        pseudowords_root=Path(words).parent if words else ".",
        **options,
    )
