"""Layerwise curves with CI bands, faceted into panels (shared by the RSA and probe figures)."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd

from . import style
from .common import (
    chance_handle, chance_line, ci_segments, grid, is_significant, layer_ticks,
    legend_below, ordered,
)
from .style import plt


def is_reference_line(styles, model: str, n_layers: int, any_multi: bool) -> bool:
    """Baselines are always reference lines: they have no depth to place along the layer axis.
    So is a single-layer model drawn next to models with several layers."""
    return styles[model].kind == "baseline" or (n_layers == 1 and any_multi)


def layer_curves(ax, dd: pd.DataFrame, styles, *, sig_columns=("p_fdr", "p")) -> list[str]:
    """Draw one curve + CI band per model on ``ax``; returns the models drawn.

    Baselines (and single-layer models next to multi-layer ones) become horizontal reference
    lines (:func:`reference_lines`).
    """
    drawn = []
    names = style.model_order(styles, dd["model"])
    n_layers = {m: dd[dd["model"] == m]["layer"].nunique() for m in names}
    any_multi = any(n > 1 for m, n in n_layers.items() if styles[m].kind != "baseline")
    for m in names:
        s = styles[m]
        sub = dd[dd["model"] == m].sort_values("layer_index")
        if sub.empty:
            continue
        drawn.append(m)
        if is_reference_line(styles, m, n_layers[m], any_multi):
            reference_lines(ax, sub.drop_duplicates("layer"), s)
            continue
        x = sub["layer_index"].to_numpy(float)
        y = sub["value"].to_numpy(float)
        if "ci_low" in sub and "ci_high" in sub and sub[["ci_low", "ci_high"]].notna().all().all():
            ax.fill_between(x, sub["ci_low"], sub["ci_high"], color=s.color, alpha=0.18,
                            linewidth=0, zorder=1, gid=f"band:{m}")
            if len(sub) == 1:
                ci_segments(ax, x[0], sub["ci_low"].iloc[0], sub["ci_high"].iloc[0],
                            s.color, gid=f"ci:{m}")
        ax.plot(x, y, color=s.color, linestyle=s.linestyle, linewidth=1.1, zorder=2,
                gid=f"line:{m}")
        sig = np.array([is_significant(r, sig_columns) for _, r in sub.iterrows()])
        ax.plot(x[sig], y[sig], linestyle="none", marker=s.marker, markersize=3.6,
                color=s.color, zorder=3, gid=f"sig:{m}")
        ax.plot(x[~sig], y[~sig], linestyle="none", marker=s.marker, markersize=3.6,
                color=s.color, markerfacecolor="white", zorder=3, gid=f"nonsig:{m}")
    return drawn


def reference_lines(ax, rows: pd.DataFrame, s) -> None:
    """One model's horizontal reference line(s) across ``ax``, with their 95% CIs.

    One layer: a line and its CI as a pale band across the panel. Several layers (e.g. log-mel
    ``mean`` and ``meanstd``): one line per layer, named at the panel's right edge, each CI a
    short bar at that edge (overlapping bands would hide each other).
    """
    has_ci = rows[["ci_low", "ci_high"]].notna().all(axis=1) if {"ci_low", "ci_high"} <= set(
        rows.columns) else pd.Series(False, index=rows.index)
    m = s.name
    if len(rows) == 1:
        r = rows.iloc[0]
        ax.axhline(r["value"], color=s.color, linestyle=s.linestyle, linewidth=1.1, zorder=1.8,
                   gid=f"line:{m}")
        if has_ci.iloc[0]:
            ax.axhspan(r["ci_low"], r["ci_high"], color=s.color, alpha=0.10, linewidth=0,
                       zorder=1, gid=f"band:{m}")
        return
    rows = rows.assign(_ci=has_ci).sort_values("value", ascending=False)
    trans = ax.get_yaxis_transform()
    for i, (_, r) in enumerate(rows.iterrows()):
        ax.axhline(r["value"], color=s.color, linestyle=s.linestyle, linewidth=1.1, zorder=1.8,
                   gid=f"line:{m}")
        x = 0.985 - 0.02 * i
        if r["_ci"]:
            ax.vlines([x], [r["ci_low"]], [r["ci_high"]], colors=[s.color], linewidth=1.0,
                      transform=trans, zorder=1.9, gid=f"ci:{m}")
        above = i == 0  # the highest line is named above it, the others below
        ax.annotate(str(r["layer"]), xy=(0.96 - 0.02 * (len(rows) - 1), r["value"]),
                    xycoords=trans, xytext=(0, 1.5 if above else -1.5),
                    textcoords="offset points", ha="right", va="bottom" if above else "top",
                    fontsize=5.5, color=s.color, gid=f"line-label:{m}")


def layer_axis(ax, dd: pd.DataFrame, styles) -> bool:
    """Layer ticks for the models drawn along depth; False when only reference lines are there."""
    names = [m for m in dd["model"].unique() if styles[m].kind != "baseline"]
    multi = [m for m in names if dd[dd["model"] == m]["layer"].nunique() > 1]
    sub = dd[dd["model"].isin(multi or names)]
    if sub.empty:
        ax.set_xticks([])
        ax.set_xlabel("(baselines only)", fontsize=6.5, color="0.4")
        return False
    pos, labels = layer_ticks(sub)
    ax.set_xticks(pos, labels)
    if len(labels) > 5:  # only long names (e.g. "joint") turn, numbers stay level
        for tick in ax.get_xticklabels():
            if len(tick.get_text()) > 3:
                tick.set_rotation(90)
    lo, hi = min(pos), max(pos)
    pad = max(0.4, 0.03 * (hi - lo))
    ax.set_xlim(lo - pad, hi + pad)
    return True


def facet_layers(d: pd.DataFrame, styles, row_key: str, col_key: str, col_order: Sequence,
                 ylabel: str, title: Callable, chance: Callable | None = None,
                 sig_columns=("p_fdr", "p"), sig_label: str | None = None) -> plt.Figure:
    """Rows = ``row_key`` values (sets), columns = ``col_key`` values; absent panels hidden.

    More than four columns wrap into a plain sequence of panels with full titles instead.
    """
    rows = ordered(d[row_key])
    cols = ordered(d[col_key], col_order)
    present = {(r, c) for r, c in d[[row_key, col_key]].drop_duplicates().itertuples(
        index=False, name=None)}
    is_grid = len(cols) <= 4
    if is_grid:
        nrows, ncols = len(rows), len(cols)
        cells = [((r, c), i * ncols + j) for i, r in enumerate(rows) for j, c in enumerate(cols)
                 if (r, c) in present]
    else:
        panels = [(r, c) for r in rows for c in cols if (r, c) in present]
        nrows, ncols = grid(len(panels), 3)
        cells = [(rc, i) for i, rc in enumerate(panels)]
    # One column of panels: each panel's title names its row, the y label only the measure.
    row_titles = is_grid and ncols == 1 and nrows > 1
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, sharey=True,
                             figsize=style.figure_size(ncols, nrows, extra_height=0.55))
    flat = axes.ravel()
    used = {i for _, i in cells}
    for i, ax in enumerate(flat):
        if i not in used:
            ax.set_visible(False)
    drawn = set()
    for (r, c), i in cells:
        ax = flat[i]
        dd = d[(d[row_key] == r) & (d[col_key] == c)]
        if chance is not None:
            for y in chance(dd, r, c):
                chance_line(ax, y)
        drawn |= set(layer_curves(ax, dd, styles, sig_columns=sig_columns))
        has_layers = layer_axis(ax, dd, styles)
        ax.set_title(title(r, c, is_grid and not row_titles), fontsize=7.5)
        below = i + ncols
        if has_layers and (below >= len(flat) or below not in used):
            ax.set_xlabel("layer")
    for i, r in enumerate(rows if is_grid else [None] * nrows):
        first = next((flat[i * ncols + j] for j in range(ncols) if i * ncols + j in used), None)
        if first is not None:
            first.set_ylabel(f"{r}\n{ylabel}" if r and len(rows) > 1 and not row_titles
                             else ylabel)
            first.yaxis.set_tick_params(labelleft=True)
    handles = style.legend_handles(styles, drawn)
    if chance is not None:
        handles.append(chance_handle())
    if sig_label:
        handles += significance_handles(sig_label)
    legend_below(fig, handles, ncol=min(len(handles), 2 if ncols <= 2 else 4))
    return fig


def significance_handles(label: str) -> list:
    """Legend entries explaining filled (significant) and hollow (not) markers."""
    from matplotlib.lines import Line2D

    return [
        Line2D([], [], linestyle="none", marker="o", markersize=3.6, color="0.3",
               label=f"{label} < .05"),
        Line2D([], [], linestyle="none", marker="o", markersize=3.6, color="0.3",
               markerfacecolor="white", label="n.s."),
    ]
