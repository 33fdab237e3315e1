"""Figure ``symbolism_forms``: one model's sound symbolism heard, read, and heard-then-read."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from . import style
from .common import FORM_ORDER, chance_handle, chance_line, ci_segments, clean, legend_below, read_tables, styles_for, wrap
from .style import apply, empty_figure, plt

#: Seed 000's grouping of models, left to right.
ARCHITECTURE_ORDER = ("coordinated", "joint", "single", "baseline", "unknown")
FORM_MARKERS = {"speech": "o", "text": "s", "cascade": "D"}


def symbolism_forms(df: pd.DataFrame, models: Mapping | None = None, voices: bool = True) -> plt.Figure:
    """Left: per-word ROC-AUC of each form (speech, text, cascade) per model, models grouped by
    architecture (coordinated, then joint); right: the paired differences between forms.

    Reads the ``symbolism_forms`` table (:mod:`avprobe.analysis.symbolism_forms`): ``auc_words``
    rows (``form``, ``voice``) and ``auc_diff`` rows (``form`` − ``form_b``). Lines are 95%
    bootstrap CIs over words and anchors (paired for differences); stars mark the cross-modal
    permutation ``p`` < .05/.01/.001; with ``voices``, each single voice's AUC is a small pale
    dot beside its pooled marker.
    """
    apply()
    d = clean(df)
    if d.empty or "metric" not in d:
        return empty_figure("no rows", "no model was scored in two forms of the words")
    aucs = d[d["metric"] == "auc_words"]
    diffs = d[(d["metric"] == "auc_diff") & (d["voice"].astype(str) == "all")]
    styles = styles_for(models, d)
    arch = d.drop_duplicates("model").set_index("model")["architecture"].fillna("unknown").astype(str)
    names = sorted(style.model_order(styles, d["model"]),
                   key=lambda m: ARCHITECTURE_ORDER.index(arch.get(m, "unknown"))
                   if arch.get(m, "unknown") in ARCHITECTURE_ORDER else len(ARCHITECTURE_ORDER))
    x = {m: i for i, m in enumerate(names)}
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(style.DOUBLE, 2.6), gridspec_kw={"width_ratios": [3, 2]})
    forms = [f for f in FORM_ORDER if f in set(aucs["form"])]
    dx = {f: (i - (len(forms) - 1) / 2) * 0.22 for i, f in enumerate(forms)}
    chance_line(ax, 0.5)
    for m in names:
        s = styles[m]
        for f in forms:
            sub = aucs[(aucs["model"] == m) & (aucs["form"] == f)]
            pooled = sub[sub["voice"].astype(str) == "all"]
            for _, r in pooled.iterrows():
                xi = x[m] + dx[f]
                ci_segments(ax, xi, r["ci_low"], r["ci_high"], s.color, gid=f"ci:{m}:{f}")
                ax.plot([xi], [r["value"]], linestyle="none", marker=FORM_MARKERS.get(f, "o"), markersize=4.5,
                        color=s.color, markerfacecolor=s.color if f == "speech" else "white", zorder=3,
                        gid=f"point:{m}:{f}")
                mark = style.stars(r.get("p"))
                if mark:
                    ax.annotate(mark, (xi, r["ci_high"]), xytext=(0, 1), textcoords="offset points", ha="center",
                                va="bottom", fontsize=7, gid="significance")
            single = sub[sub["voice"].astype(str) != "all"]
            if voices and not single.empty:
                vals = single["value"].to_numpy(float)
                ax.plot(np.full(vals.size, x[m] + dx[f] + 0.08), vals, linestyle="none", marker="o",
                        markersize=1.8, markeredgewidth=0, color=style.lighten(s.color, 0.35),
                        gid=f"voice:{m}:{f}")
    ax.set_xticks(list(x.values()), [wrap(styles[m].display, 14) for m in names])
    ax.set_ylabel("ROC-AUC over words\n(> 0.5: round words ↔ round shapes)")
    ax.set_title("each form of the words")
    previous = None
    for m in names:  # a thin line and a label between architecture groups
        if previous is not None and arch.get(m) != arch.get(previous):
            ax.axvline(x[m] - 0.5, color="0.7", linewidth=0.6)
        previous = m
    for a in dict.fromkeys(arch.get(m, "unknown") for m in names):
        members = [x[m] for m in names if arch.get(m, "unknown") == a]
        # inside the axes, under the title: the group label must not collide with it
        ax.annotate(a, ((min(members) + max(members)) / 2, 0.98), xycoords=("data", "axes fraction"),
                    ha="center", va="top", fontsize=6.5, color="0.35", gid=f"architecture:{a}")
    ax.set_xlim(-0.6, len(names) - 0.4)
    pairs = list(dict.fromkeys(zip(diffs["form"], diffs["form_b"])))
    rows = [(m, p) for m in names for p in pairs if not diffs[(diffs["model"] == m)
                                                                 & (diffs["form"] == p[0]) & (diffs["form_b"] == p[1])].empty]
    bx.axvline(0, color=style.CHANCE_COLOR, linestyle=style.CHANCE_STYLE, linewidth=0.8)
    for i, (m, (fa, fb)) in enumerate(rows):
        r = diffs[(diffs["model"] == m) & (diffs["form"] == fa) & (diffs["form_b"] == fb)].iloc[0]
        s = styles[m]
        bx.plot([r["ci_low"], r["ci_high"]], [i, i], color=s.color, linewidth=1.0, gid=f"diffci:{m}:{fa}:{fb}")
        bx.plot([r["value"]], [i], marker="o", color=s.color, linestyle="none", markersize=4, gid=f"diff:{m}:{fa}:{fb}")
        mark = style.stars(r.get("p"))
        if mark:
            bx.annotate(mark, (r["ci_high"], i), xytext=(3, 0), textcoords="offset points", va="center",
                        fontsize=7, gid="significance")
    bx.set_yticks(range(len(rows)), [f"{wrap(styles[m].display, 16)}: {fa} − {fb}" for m, (fa, fb) in rows],
                  fontsize=6.5)
    bx.invert_yaxis()
    bx.set_xlabel("difference in AUC (paired bootstrap CI;\nstars: cross-modal permutation p)")
    bx.set_title("differences between forms")
    handles = [Line2D([], [], linestyle="none", marker=FORM_MARKERS.get(f, "o"), color="0.2",
                      markerfacecolor="0.2" if f == "speech" else "white", label=f) for f in forms]
    if voices and (aucs["voice"].astype(str) != "all").any():
        handles.append(Line2D([], [], linestyle="none", marker="o", markersize=2.2, markeredgewidth=0,
                              color="0.55", label="single voices"))
    handles.append(chance_handle("chance (0.5)"))
    handles.append(Line2D([], [], linestyle="none", label="*, **, ***: p < .05, .01, .001 (shapes' labels shuffled)"))
    handles += style.legend_handles(styles, names)
    legend_below(fig, handles, ncol=4)
    return fig


def draw(inputs: Mapping, models: Mapping | None = None, **options) -> plt.Figure:
    return symbolism_forms(read_tables(inputs.get("tables")), models, **options)
