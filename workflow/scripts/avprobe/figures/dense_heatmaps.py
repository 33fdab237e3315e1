"""Figure ``dense_heatmaps``: the image regions a word or a phrase lights up (seed 002).

Per model (one ``<model>.examples.npz`` of the ``dense_maps`` job): the reference words
*kiki* and *bouba* (written or spoken) over sharp and round shapes, and object phrases (text)
or spoken words of the captions over scenes with the named objects' outline; the title gives
the model's localisation scores from its table (for the unit shown).
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
    """Min–max per map: cosine maps of different models and queries span different ranges."""
    m = np.asarray(m, dtype=np.float64)
    lo, hi = np.nanmin(m), np.nanmax(m)
    return np.zeros_like(m) if not np.isfinite(hi - lo) or hi - lo <= 0 else (m - lo) / (hi - lo)


def _overlay(ax, image: np.ndarray, m: np.ndarray, alpha: float) -> None:
    h, w = image.shape[:2]
    ax.imshow(image, extent=(0, w, h, 0))
    ax.imshow(_normalised(m), cmap=CMAP, alpha=alpha, vmin=0, vmax=1, extent=(0, w, h, 0),
              interpolation="bilinear")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


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
                   table: pd.DataFrame | None = None, alpha: float = 0.55,
                   max_columns: int = 4) -> plt.Figure:
    """One block per model: rows *kiki*, *bouba* over shapes, then object phrases over scenes.

    ``examples``: the loaded ``.npz`` files of the ``dense_maps`` jobs; ``table``: their tidy
    tables (scores in the block titles); ``alpha``: opacity of the heat map over the image.
    """
    apply()
    examples = [e for e in examples if e is not None]
    if not examples:
        return empty_figure("no dense maps", "no model in analysis.dense.models")
    table = pd.DataFrame() if table is None else table
    styles = style.model_styles(models, [str(e["model"]) for e in examples])
    ncols = max(1, min(max_columns, max(max(len(e["shape_ids"]), len(e["scene_ids"])) for e in examples)))
    cell = style.DOUBLE / (ncols + 0.35)
    block_rows = [len(e["word_text"]) + 1 for e in examples]
    fig = plt.figure(figsize=(style.DOUBLE, sum(r * cell + 0.55 for r in block_rows)))
    blocks = fig.subfigures(len(examples), 1, height_ratios=[r * cell + 0.55 for r in block_rows],
                            squeeze=False)[:, 0]
    for block, e in zip(blocks, examples):
        model = str(e["model"])
        name = styles[model].display if model in styles else model
        query_form = str(e["query_form"]) if "query_form" in e else "text"
        unit = str(e["query_unit"]) if "query_unit" in e else "phrase"
        what = "object phrases on scenes" if query_form == "text" else f"spoken captions on scenes (per {unit})"
        scores = _scores_line(table, model, unit)
        block.suptitle(f"{name} — {what}:\n{scores}" if scores else name, fontsize=7.5, x=0.01, ha="left")
        nrows = len(e["word_text"]) + 1
        axes = block.subplots(nrows, ncols, squeeze=False)
        form = str(e["word_form"])
        for i, word in enumerate(e["word_text"]):
            for j in range(ncols):
                ax = axes[i, j]
                if j >= len(e["shape_ids"]):
                    ax.axis("off")
                    continue
                _overlay(ax, e["shape_images"][j], e["word_maps"][i, j], alpha)
                if i == 0:
                    ax.set_title(f"{e['shape_labels'][j]} shape", fontsize=7,
                                 color=style.LABEL_COLORS.get(str(e["shape_labels"][j]), "k"))
                if j == 0:
                    ax.set_ylabel(f"“{word}” ({form})", fontsize=7)
        first = {}
        for k, image_index in enumerate(e["query_image"]):
            first.setdefault(int(image_index), k)
        picks = [first[i] for i in sorted(first)][:ncols]
        for j in range(ncols):
            ax = axes[nrows - 1, j]
            if j >= len(picks):
                ax.axis("off")
                continue
            k = picks[j]
            image = e["scene_images"][int(e["query_image"][k])]
            _overlay(ax, image, e["query_maps"][k], alpha)
            mask = np.asarray(e["query_masks"][k], dtype=float)
            if mask.shape[:2] == image.shape[:2] and mask.any():
                ax.contour(mask, levels=[0.5], colors="white", linewidths=0.8, linestyles="--")
            verdict = "hit" if e["query_hit"][k] >= 0.5 else "miss"
            ax.set_title(f"“{e['query_text'][k]}”\n{verdict}, AUC {e['query_auc'][k]:.2f}", fontsize=6.5)
            if j == 0:
                ax.set_ylabel("object phrase (text)" if query_form == "text" else f"spoken {unit}", fontsize=7)
        mappable = plt.cm.ScalarMappable(cmap=CMAP, norm=plt.Normalize(0, 1))
        bar = block.colorbar(mappable, ax=axes, fraction=0.025, pad=0.01, ticks=[0, 1])
        bar.ax.set_yticklabels(["min", "max"])
        bar.set_label("similarity (min–max per map)", fontsize=6.5)
    return fig


def draw(inputs: Mapping, models: Mapping | None = None, **options) -> plt.Figure:
    examples = []
    for path in as_list(inputs.get("examples")):
        with np.load(Path(path)) as z:
            examples.append({k: z[k] for k in z.files})
    table = read_tables(inputs.get("tables")) if inputs.get("tables") else None
    return dense_heatmaps(examples, models, table=table, **options)
