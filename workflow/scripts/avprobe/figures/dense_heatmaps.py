"""Figure ``dense_heatmaps``: the image regions a word or a phrase lights up (seed 002).

Per model (one ``<model>.examples.npz`` of the ``dense_maps`` job): the reference words
*kiki* and *bouba* (written or spoken) over sharp and round shapes, and object phrases (text)
or spoken words of the captions over scenes with the named objects' outline; the title gives
the model's localisation scores from its table (for the unit shown). By default each image is
shown untouched and each map beside it (with the outline of the shape or the named object) on
one colour scale per model, in cosine similarity.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from . import style
from .common import as_list, read_tables
from .style import apply, empty_figure, plt

CMAP = "inferno"
#: Parameters of :func:`dense_heatmaps` that are not config options (set from the inputs).
NOT_OPTIONS = ("table",)


def _normalised(m: np.ndarray) -> np.ndarray:
    """Min–max per map (``shared_scale: false``): each map spans the whole colour range."""
    m = np.asarray(m, dtype=np.float64)
    lo, hi = np.nanmin(m), np.nanmax(m)
    return np.zeros_like(m) if not np.isfinite(hi - lo) or hi - lo <= 0 else (m - lo) / (hi - lo)


def _bare(ax, w: int, h: int) -> None:
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _shape_mask(image: np.ndarray) -> np.ndarray:
    """The figure pixels of a shape image: those that differ from the corner (background)."""
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 2:
        img = img[..., None]
    bg = np.median(np.stack([img[0, 0], img[0, -1], img[-1, 0], img[-1, -1]]), axis=0)
    scale = 255.0 if img.max() > 1.5 else 1.0
    return (np.abs(img - bg).max(axis=-1) / scale) > 0.1


def _draw_map(ax, image: np.ndarray, m: np.ndarray, norm, overlay: bool, alpha: float,
              outline: np.ndarray | None, gid: str) -> None:
    """The map of one query over one image.

    ``overlay`` false (default): the map alone, the image's outline (``outline`` mask) drawn
    over it, so no colour of the stimulus is changed (the image itself is in its own row).
    ``overlay`` true: the map blended over the image with opacity ``alpha``.
    """
    h, w = image.shape[:2]
    values = m if norm is not None else _normalised(m)
    vmin, vmax = (norm.vmin, norm.vmax) if norm is not None else (0, 1)
    if overlay:
        ax.imshow(image, extent=(0, w, h, 0))
    ax.imshow(values, cmap=CMAP, alpha=alpha if overlay else 1.0, vmin=vmin, vmax=vmax,
              extent=(0, w, h, 0), interpolation="bilinear", gid=gid)
    if not overlay and outline is not None and outline.shape[:2] == (h, w) and outline.any():
        ax.contour(outline.astype(float), levels=[0.5], colors="white", linewidths=0.7)
    _bare(ax, w, h)


def _draw_image(ax, image: np.ndarray, gid: str) -> None:
    h, w = image.shape[:2]
    ax.imshow(image, extent=(0, w, h, 0), gid=gid)
    _bare(ax, w, h)
    for spine in ax.spines.values():  # a thin frame: white backgrounds meet the page
        spine.set_visible(True)
        spine.set_color("0.8")
        spine.set_linewidth(0.5)


def _scores_line(table: pd.DataFrame, model: str, unit: str | None = None) -> str:
    if table.empty or "model" not in table:
        return ""
    rows = table[table["model"] == model]
    if unit is not None and "query_unit" in rows:
        rows = rows[rows["query_unit"].fillna("phrase") == unit]
    rows = rows.set_index("metric")
    parts = []
    for metric, label in (("pointing_game", "pointing game"), ("localisation_auc", "patch AUC")):
        if metric not in rows.index:
            continue
        r = rows.loc[metric]
        p = float(r.get("p"))
        p_text = "p < .001" if p < 0.001 else f"p = {p:.3f}".replace("0.", ".", 1)
        parts.append(f"{label} {r['value']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}] vs "
                     f"{r['chance']:.2f} with phrases swapped, {p_text}")
    return "\n".join(parts)


def dense_heatmaps(examples: Sequence[Mapping], models: Mapping | None = None, *,
                   table: pd.DataFrame | None = None, overlay: bool = False,
                   shared_scale: bool = True, alpha: float = 0.55,
                   max_columns: int = 4) -> plt.Figure:
    """One block per model: the shapes, the maps of *kiki* and *bouba* over them, then scenes
    and the maps of object phrases (or spoken words) over them.

    ``examples``: the loaded ``.npz`` files of the ``dense_maps`` jobs; ``table``: their tidy
    tables (scores in the block titles). ``overlay`` false (default): each image in its own
    row, untouched, and each map beside it with the shape's (or the named object's) outline in
    white, so the map never tints the stimulus; true: the map blended over the image with
    opacity ``alpha``. ``shared_scale`` true (default): all maps of one model share one colour
    scale in cosine similarity (its colour bar), so a brighter patch is a higher similarity
    across queries and images; false: each map from its own minimum to its maximum.
    """
    apply()
    examples = [e for e in examples if e is not None]
    if not examples:
        return empty_figure("no dense maps", "no model in analysis.dense.models")
    table = pd.DataFrame() if table is None else table
    styles = style.model_styles(models, [str(e["model"]) for e in examples])
    ncols = max(1, min(max_columns, max(max(len(e["shape_ids"]), len(e["scene_ids"])) for e in examples)))
    cell = style.DOUBLE / (ncols + 0.35)
    image_rows = 0 if overlay else 2  # a row of shapes and a row of scenes
    block_rows = [len(e["word_text"]) + 1 + image_rows for e in examples]
    heights = [r * cell * (0.8 if not overlay else 1.0) + 0.55 for r in block_rows]
    fig = plt.figure(figsize=(style.DOUBLE, sum(heights)))
    blocks = fig.subfigures(len(examples), 1, height_ratios=heights, squeeze=False)[:, 0]
    for block, e in zip(blocks, examples):
        model = str(e["model"])
        name = styles[model].display if model in styles else model
        query_form = str(e["query_form"]) if "query_form" in e else "text"
        unit = str(e["query_unit"]) if "query_unit" in e else "phrase"
        what = "object phrases on scenes" if query_form == "text" else f"spoken captions on scenes (per {unit})"
        scores = _scores_line(table, model, unit)
        block.suptitle(f"{name} — {what}:\n{scores}" if scores else name, fontsize=7.5, x=0.01, ha="left")
        n_words = len(e["word_text"])
        nrows = n_words + 1 + image_rows
        axes = block.subplots(nrows, ncols, squeeze=False)
        form = str(e["word_form"])
        n_shapes = min(ncols, len(e["shape_ids"]))
        first = {}
        for k, image_index in enumerate(e["query_image"]):
            first.setdefault(int(image_index), k)
        picks = [first[i] for i in sorted(first)][:ncols]
        shown = [np.asarray(e["word_maps"])[:, :n_shapes].ravel()]
        shown += [np.asarray(e["query_maps"][k]).ravel() for k in picks]
        values = np.concatenate(shown) if shown else np.zeros(1)
        norm = None
        if shared_scale and np.isfinite(values).any():
            lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
            norm = plt.Normalize(lo, hi if hi > lo else lo + 1e-6)
        r0 = 0 if overlay else 1  # first row of word maps
        for j in range(ncols):
            for i in range(nrows):
                if j >= (n_shapes if i < r0 + n_words else len(picks)):
                    axes[i, j].axis("off")
        for j in range(n_shapes):
            image = e["shape_images"][j]
            label = str(e["shape_labels"][j])
            if not overlay:
                _draw_image(axes[0, j], image, gid=f"image:{model}:shape:{j}")
            outline = _shape_mask(image)
            for i, word in enumerate(e["word_text"]):
                _draw_map(axes[r0 + i, j], image, e["word_maps"][i, j], norm, overlay, alpha,
                          outline, gid=f"map:{model}:{word}:{j}")
            axes[0, j].set_title(f"{label} shape", fontsize=7, color=style.LABEL_COLORS.get(label, "k"))
        if not overlay:
            axes[0, 0].set_ylabel("shape", fontsize=7)
        for i, word in enumerate(e["word_text"]):
            axes[r0 + i, 0].set_ylabel(f"“{word}” ({form})", fontsize=7)
        q_img = nrows - 2 if not overlay else None
        for j, k in enumerate(picks):
            image = e["scene_images"][int(e["query_image"][k])]
            mask = np.asarray(e["query_masks"][k], dtype=float)
            ok = mask.shape[:2] == image.shape[:2] and mask.any()
            if q_img is not None:
                ax = axes[q_img, j]
                _draw_image(ax, image, gid=f"image:{model}:scene:{j}")
                if ok:
                    ax.contour(mask, levels=[0.5], colors="white", linewidths=0.8, linestyles="--")
            ax = axes[nrows - 1, j]
            _draw_map(ax, image, e["query_maps"][k], norm, overlay, alpha, None,
                      gid=f"map:{model}:query:{j}")
            if ok:
                ax.contour(mask, levels=[0.5], colors="white", linewidths=0.8, linestyles="--")
            verdict = "hit" if e["query_hit"][k] >= 0.5 else "miss"
            (axes[q_img, j] if q_img is not None else ax).set_title(
                f"“{e['query_text'][k]}”\n{verdict}, AUC {e['query_auc'][k]:.2f}", fontsize=6.5)
        if picks:
            if q_img is not None:
                axes[q_img, 0].set_ylabel("scene", fontsize=7)
            axes[nrows - 1, 0].set_ylabel("object phrase (text)" if query_form == "text"
                                          else f"spoken {unit}", fontsize=7)
        map_axes = [ax for ax in axes.ravel() if ax.get_visible() and ax.axison]
        if norm is not None:
            mappable = plt.cm.ScalarMappable(cmap=CMAP, norm=norm)
            bar = block.colorbar(mappable, ax=map_axes, fraction=0.025, pad=0.01)
            bar.set_label("cosine similarity\n(one scale for this model)", fontsize=6.5)
        else:
            mappable = plt.cm.ScalarMappable(cmap=CMAP, norm=plt.Normalize(0, 1))
            bar = block.colorbar(mappable, ax=map_axes, fraction=0.025, pad=0.01, ticks=[0, 1])
            bar.ax.set_yticklabels(["min", "max"])
            bar.set_label("similarity (min–max per map)", fontsize=6.5)
        bar.ax.tick_params(labelsize=6)
        bar.ax.set_gid(f"colorbar:{model}")
    return fig


def draw(inputs: Mapping, models: Mapping | None = None, **options) -> plt.Figure:
    examples = []
    for path in as_list(inputs.get("examples")):
        with np.load(Path(path)) as z:
            examples.append({k: z[k] for k in z.files})
    table = read_tables(inputs.get("tables")) if inputs.get("tables") else None
    return dense_heatmaps(examples, models, table=table, **options)
