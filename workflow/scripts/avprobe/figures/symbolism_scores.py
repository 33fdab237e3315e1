"""Figure ``symbolism_scores``: per-item symbolism scores, sharp vs round, per model."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
from matplotlib.patches import Patch

from . import style
from .common import (
    CLASS_ORDER, DIRECTION_ORDER, FORM_ORDER, as_list, clean, grid, hide_unused, legend_below,
    ordered, styles_for, wrap,
)
from .style import apply, empty_figure, plt

#: Columns of the per-item symbolism scores table (results/tables/symbolism/<name>.scores.parquet).
SCORE_COLUMNS = ("model", "layer", "direction", "form", "stimulus_id", "label", "score")


#: What each direction scores, and against which anchors (the panel's subtitle).
DIRECTION_TEXT = {"geometric": "pseudowords vs\nshape anchors",
                  "phonetic": "shapes vs\npseudoword anchors"}
#: The score's unit (the y axis).
SCORE_LABEL = "score: mean cos(round anchors)\n− mean cos(sharp anchors)"


def symbolism_scores(scores: pd.DataFrame, models: Mapping | None = None,
                     layers: Mapping[str, str] | None = None, max_points: int = 60,
                     share_y: bool = True) -> plt.Figure:
    """Per-item symbolism scores of sharp vs round stimuli, one panel per model × direction.

    Reads the per-item scores table (``results/tables/symbolism/<name>.scores.parquet``):
    required ``model, direction, form, label, score``; ``layer`` (+ ``layer_index``) when a
    model is scored at several layers — the panel shows ``layers[model]`` if given, else
    ``joint`` if present, else the deepest layer. Within a panel each form (speech, text) gets
    a pair of violins: sharp (vermillion) and round (blue), with medians as white dots.
    Violins of at most ``max_points`` items also show each item as a dot.
    Scores follow the symbolism analysis: a score is an item's mean cosine similarity to the
    round anchors minus its mean cosine similarity to the sharp anchors (shapes for the
    geometric score, pseudowords for the phonetic one), so positive means "round" and sound
    symbolism lifts the round violin above the sharp one. Every panel names its model, its
    layer and what is scored against what. With ``share_y`` (default) all panels share one y
    scale, so models' separations compare directly; without it each panel has its own, and
    the figure says so.
    """
    apply()
    d = clean(scores)
    needed = {"model", "direction", "form", "label", "score"}
    if d.empty or not needed <= set(d.columns):
        missing = sorted(needed - set(d.columns))
        return empty_figure("no rows", "the per-item scores table is empty"
                            if d.empty else f"missing columns {missing}")
    d["score"] = pd.to_numeric(d["score"], errors="coerce")
    d = d[d["score"].notna() & d["label"].isin(CLASS_ORDER)]
    if d.empty:
        return empty_figure("no rows", "no sharp/round rows with a score")
    styles = styles_for(models, d)
    if "layer" in d:
        keep = []
        for m, sub in d.groupby("model"):
            wanted = (layers or {}).get(m)
            names = set(sub["layer"].astype(str))
            if wanted is None or wanted not in names:
                wanted = "joint" if "joint" in names else (
                    sub.sort_values("layer_index")["layer"].iloc[-1])
            keep.append(sub[sub["layer"] == wanted])
        d = pd.concat(keep)
    d["direction"] = d["direction"].astype(str)
    d["form"] = d["form"].astype(str)
    model_names = style.model_order(styles, d["model"])
    directions = ordered(d["direction"], DIRECTION_ORDER)
    panels = [(m, r) for m in model_names for r in directions
              if not d[(d["model"] == m) & (d["direction"] == r)].empty]
    nrows, ncols = grid(len(panels), 4 if len(directions) != 3 else 3)
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, sharey=bool(share_y),
                             figsize=style.figure_size(ncols, nrows, row_height=1.8,
                                                       extra_height=0.35))
    for ax, (m, r) in zip(axes.ravel(), panels):
        s = styles[m]
        sub = d[(d["model"] == m) & (d["direction"] == r)]
        forms = ordered(sub["form"], FORM_ORDER)
        for i, form in enumerate(forms):
            for j, label in enumerate(CLASS_ORDER):
                vals = sub[(sub["form"] == form) & (sub["label"] == label)]["score"].to_numpy()
                if vals.size == 0:
                    continue
                pos = i + (j - 0.5) * 0.42
                color = style.LABEL_COLORS[label]
                if vals.size >= 3 and np.ptp(vals) > 0:
                    parts = ax.violinplot([vals], positions=[pos], widths=0.38,
                                          showextrema=False)
                    for body in parts["bodies"]:
                        body.set_facecolor(style.lighten(color, 0.25))
                        body.set_edgecolor(color)
                        body.set_alpha(0.85)
                        body.set_linewidth(0.6)
                        body.set_linestyle(s.linestyle)
                        body.set_gid(f"violin:{m}:{r}:{form}:{label}")
                    if vals.size <= max_points:  # few items: show each one over the violin
                        jitter = np.random.default_rng(vals.size).uniform(-0.07, 0.07,
                                                                           vals.size)
                        ax.plot(pos + jitter, vals, linestyle="none", marker="o",
                                markersize=1.8, markeredgewidth=0, color="0.15", alpha=0.6,
                                zorder=2.5, gid=f"items:{m}:{r}:{form}:{label}")
                else:
                    ax.plot(np.full(vals.size, pos), vals, linestyle="none", marker="o",
                            markersize=3, color=color, gid=f"points:{m}:{r}:{form}:{label}")
                q1, med, q3 = np.percentile(vals, [25, 50, 75])
                ax.vlines([pos], [q1], [q3], colors="0.15", linewidth=1.6, zorder=3)
                ax.plot([pos], [med], marker="o", markersize=2.6, color="white",
                        markeredgecolor="0.15", markeredgewidth=0.5, zorder=4,
                        gid=f"median:{m}:{r}:{form}:{label}")
        ax.set_xticks(range(len(forms)), forms)
        ax.set_xlim(-0.6, len(forms) - 0.4)
        ax.axhline(0, color="0.75", linewidth=0.6, zorder=0, gid=f"zero:{m}:{r}")
        layer = ""
        if "layer" in sub and sub["layer"].nunique() == 1:
            layer = f" · layer {sub['layer'].iloc[0]}"
        ax.set_title(f"{wrap(s.display, 26)}\n{r} score{layer}", fontsize=7,
                     color="0.35" if s.is_control else "black")
        ax.text(0.5, 0.98, DIRECTION_TEXT.get(r, ""), transform=ax.transAxes, ha="center",
                va="top", fontsize=5.5, color="0.35", linespacing=1.0, gid=f"anchors:{m}:{r}")
        if not share_y:
            ax.yaxis.set_tick_params(labelleft=True)
    for row in axes:
        row[0].set_ylabel(SCORE_LABEL)
    hide_unused(axes, len(panels))
    if share_y:  # headroom for the subtitle, on the shared scale
        lo, hi = axes[0, 0].get_ylim()
        axes[0, 0].set_ylim(lo, hi + 0.18 * (hi - lo))
    handles = [Patch(facecolor=style.lighten(c, 0.25), edgecolor=c, label=lab)
               for lab, c in style.LABEL_COLORS.items()]
    legend_below(fig, handles, ncol=2,
                 title=None if share_y else "y scales differ between panels")
    return fig


def draw(inputs: Mapping, models: Mapping | None = None, **options) -> plt.Figure:
    frames = [pd.read_parquet(p) for p in as_list(inputs.get("tables"))]
    frames = [f for f in frames if not f.empty]
    scores = pd.concat(frames, ignore_index=True, sort=False) if frames else pd.DataFrame(
        columns=list(SCORE_COLUMNS))
    return symbolism_scores(scores, models, **options)
