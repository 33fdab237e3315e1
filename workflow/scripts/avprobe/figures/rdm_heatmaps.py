"""Figure ``rdm_heatmaps``: RDMs of chosen layers, stimuli ordered by class."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from . import style
from .common import CLASS_ORDER, as_list, ordered, styles_for, wrap
from .style import apply, empty_figure, empty_panel, plt


def class_order(labels: Sequence) -> tuple[np.ndarray, list[int], list[str]]:
    """Stable order grouping stimuli by class (sharp, round, then others sorted).

    Returns ``(order, boundaries, classes)``: ``order`` indexes the original stimuli,
    ``boundaries`` are the positions (in the ordered matrix) where a new class starts.
    """
    labels = np.asarray([str(v) for v in labels])
    classes = ordered(labels, CLASS_ORDER)
    order = np.concatenate([np.flatnonzero(labels == c) for c in classes]) if classes else (
        np.arange(0))
    sizes = [int((labels == c).sum()) for c in classes]
    boundaries = list(np.cumsum(sizes)[:-1].astype(int))
    return order.astype(int), boundaries, classes


def _block_mean(mat: np.ndarray, max_size: int) -> tuple[np.ndarray, float]:
    n = mat.shape[0]
    if n <= max_size:
        return mat, 1.0
    edges = np.linspace(0, n, max_size + 1).round().astype(int)
    starts = edges[:-1]
    counts = np.diff(edges)
    rows = np.add.reduceat(mat, starts, axis=0) / counts[:, None]
    both = np.add.reduceat(rows, starts, axis=1) / counts[None, :]
    return both, max_size / n


def _percentile(mat: np.ndarray) -> np.ndarray:
    flat = mat.ravel()
    ok = np.isfinite(flat)
    out = np.full(flat.shape, np.nan)
    if ok.any():
        ranks = pd.Series(flat[ok]).rank(method="average").to_numpy()
        out[ok] = 100.0 * (ranks - 1) / max(ok.sum() - 1, 1)
    return out.reshape(mat.shape)


def _layer_sort_key(name: str, position: int):
    try:
        return (0, int(name), position)
    except ValueError:
        return (2 if name == "joint" else 1, 0, position)


def default_rdm_layers(names: Sequence[str], n: int = 3) -> list[str]:
    """First, middle and last layer (in depth order) — or all of them when there are few."""
    names = [str(x) for x in names]
    ranked = [x for _, x in sorted((_layer_sort_key(x, i), x) for i, x in enumerate(names))]
    if len(ranked) <= n:
        return ranked
    idx = sorted(set(np.linspace(0, len(ranked) - 1, n).round().astype(int)))
    return [ranked[i] for i in idx]


def rdm_heatmaps(rdms: Sequence[Mapping], models: Mapping | None = None,
                 layers: Sequence[str] | None = None, max_size: int = 300,
                 percentile: bool = True, sets: Sequence[str] | None = None,
                 only_models: Sequence[str] | None = None, max_height: float = 8.5
                 ) -> plt.Figure:
    """RDMs of chosen layers, stimuli grouped by class with the class boundaries marked.

    ``rdms``: one mapping per RDM file with ``set``, ``model``, ``labels`` (class per stimulus,
    in the matrices' order) and ``rdms`` (layer name → square matrix; may load lazily, only the
    drawn layers are read). Rows are files, grouped by stimulus set (models in config order
    within a set); columns the ``layers`` asked for (default: first, middle and last). Values
    are shown as percentiles of each RDM (``percentile=True``) on one colour scale; matrices
    bigger than ``max_size`` are block-averaged for display. ``sets`` / ``only_models`` keep
    only those files; panels shrink so that the figure is at most ``max_height`` inches tall.
    """
    apply()
    rdms = [r for r in (rdms or []) if r is not None and len(list(r.get("rdms", {}) or {})) > 0]
    if sets:
        rdms = [r for r in rdms if str(r.get("set", "")) in sets]
    if only_models:
        rdms = [r for r in rdms if str(r.get("model", "")) in only_models]
    if not rdms:
        return empty_figure("no rows", "no RDM files")
    styles = styles_for(models, pd.DataFrame({"model": [str(r.get("model", "")) for r in rdms]}))
    set_rank = {s: i for i, s in enumerate(sets or ())}
    rdms = sorted(rdms, key=lambda r: (set_rank.get(str(r.get("set", "")), len(set_rank)),
                                       str(r.get("set", "")),
                                       styles[str(r.get("model", ""))].order))
    chosen = []
    for r in rdms:
        names = list(r["rdms"].keys())
        chosen.append([x for x in layers if x in names] if layers else default_rdm_layers(names))
    ncols = max(1, max(len(c) for c in chosen))
    nrows = len(rdms)
    width = style.SINGLE if ncols <= 2 else style.DOUBLE
    panel = min((width - 0.9) / ncols, (max_height - 0.2) / nrows - 0.35)
    width = min(width, panel * ncols + 0.9)
    fig, axes = plt.subplots(nrows, ncols, squeeze=False,
                             figsize=(width, nrows * (panel + 0.35) + 0.2))
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.85")
    im = None
    for row, (r, names) in enumerate(zip(rdms, chosen)):
        model = str(r.get("model", ""))
        labels = np.asarray(r.get("labels", []))
        for col in range(ncols):
            ax = axes[row, col]
            if col >= len(names):
                ax.set_visible(False)
                continue
            mat = np.asarray(r["rdms"][names[col]], dtype=np.float32)
            if mat.ndim != 2 or mat.shape[0] != mat.shape[1] or mat.shape[0] == 0:
                empty_panel(ax, "no rows", f"layer {names[col]}: not a square matrix")
                continue
            if labels.shape[0] == mat.shape[0]:
                order, bounds, classes = class_order(labels)
            else:
                order, bounds, classes = np.arange(mat.shape[0]), [], []
            mat = mat[np.ix_(order, order)]
            shown, scale = _block_mean(mat, max_size)
            if percentile:
                shown = _percentile(shown)
                vmin, vmax = 0.0, 100.0
            else:
                vmin, vmax = np.nanmin(shown), np.nanmax(shown)
            n = shown.shape[0]
            im = ax.imshow(shown, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest",
                           extent=(0, n, n, 0), gid=f"rdm:{model}:{r.get('set', '')}:{names[col]}")
            for b in bounds:
                pos = b * scale
                ax.axhline(pos, color="white", linewidth=0.9, gid="class-boundary")
                ax.axvline(pos, color="white", linewidth=0.9, gid="class-boundary")
            edges = [0] + [b * scale for b in bounds] + [n]
            centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
            if classes:
                ax.set_xticks(centers, classes)
                ax.set_yticks(centers, classes if col == 0 else [""] * len(classes),
                              rotation=90, va="center")
            else:
                ax.set_xticks([])
                ax.set_yticks([])
            ax.tick_params(length=0, pad=1.5)
            for spine in ax.spines.values():
                spine.set_visible(False)
            ax.set_title(f"layer {names[col]}", fontsize=7)
            if col == 0:
                s = styles[model]
                ax.set_ylabel(f"{wrap(s.display, 20)}\n{r.get('set', '')}", fontsize=7)
    if im is not None:
        cb = fig.colorbar(im, ax=axes, shrink=min(0.8, 0.25 + 0.3 / nrows) if nrows > 1 else 0.8,
                          aspect=25, pad=0.02)
        distance = {str(r.get("distance")) for r in rdms if r.get("distance")}
        kind = f"{distance.pop()} dissimilarity" if len(distance) == 1 else "dissimilarity"
        cb.set_label(f"{kind} (percentile)" if percentile else kind)
        cb.outline.set_visible(False)
    return fig


def read_rdms(path: str | Path) -> dict:
    """Open ``results/tables/rsa/<set>/<model>.rdms.npz`` for :func:`rdm_heatmaps`.

    Two layouts are read:

    * stacked (what ``avprobe.analysis.rsa`` writes): ``rdms`` (L, m, m), ``layers`` (L names),
      ``label`` or ``labels`` (m classes), optional ``layer_index``, ``distance``, ``set``,
      ``model``;
    * one key per layer: ``<layer>`` → (m, m), plus ``labels`` (or ``label``); read lazily.

    Set and model come from the file's ``set``/``model`` entries, else from the path.
    """
    path = Path(path)
    npz = np.load(path, allow_pickle=False)
    files = set(npz.files)
    labels = npz["labels"] if "labels" in files else npz["label"] if "label" in files else (
        np.array([]))
    meta = {"labels", "label", "stimulus_ids", "ids", "unit_id", "set", "model", "layers",
            "layer_index", "distance", "rdms"}
    if "rdms" in files and npz["rdms"].ndim == 3:
        stack = npz["rdms"]
        names = ([str(x) for x in npz["layers"]] if "layers" in files
                 else [str(i) for i in range(stack.shape[0])])
        layers = {n: stack[i] for i, n in enumerate(names[: stack.shape[0]])}
    else:
        names = [k for k in npz.files if k not in meta and npz[k].ndim == 2]
        if "layers" in files:  # an explicit layer order, when the writer stores one
            explicit = [str(x) for x in npz["layers"]]
            names = [x for x in explicit if x in names] + [x for x in names if x not in explicit]
        layers = _LazyLayers(npz, names)
    stem = path.name[: -len(".rdms.npz")] if path.name.endswith(".rdms.npz") else path.stem
    return {
        "set": str(npz["set"]) if "set" in files else path.parent.name,
        "model": str(npz["model"]) if "model" in files else stem,
        "labels": labels,
        "distance": str(npz["distance"]) if "distance" in files else None,
        "rdms": layers,
    }


class _LazyLayers(Mapping):
    def __init__(self, npz, names):
        self._npz, self._names = npz, list(names)

    def __getitem__(self, key):
        if key not in self._names:
            raise KeyError(key)
        return self._npz[key]

    def __iter__(self):
        return iter(self._names)

    def __len__(self):
        return len(self._names)


def draw(inputs: Mapping, models: Mapping | None = None, **options) -> plt.Figure:
    return rdm_heatmaps([read_rdms(p) for p in as_list(inputs.get("rdms"))], models, **options)
