"""Layerwise curves with CI bands, faceted into panels (shared by the RSA and probe figures).

Where a layer sits on the x axis (:func:`place_layers`) depends on its *name* in its own model,
never on its position in a list merged across models, so models of different depths (MiniLM
layers 0–6 next to CLIP-tiny's 0–4 and ``joint``) keep every layer where its name says:

* ``layer_axis="name"`` (default): numbered layers at their number, shared by all models;
  named layers (``joint``, the shared-space projection) after the deepest numbered layer of
  any model, past a gap and a thin separator; a named layer that its models put before their
  numbered ones (e.g. ``embeddings``) goes before 0.
* ``layer_axis="depth"``: each model's numbered layers at ``layer / last layer`` (0 = first,
  1 = last), so models of different depths are compared at the same relative depth; named
  layers after 1 (or before 0), labelled by name.
"""

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


LAYER_AXES = ("name", "depth")
#: Gap (in x units) between the numbered layers and named ones such as ``joint``.
NAME_GAP = 1.5
DEPTH_GAP = 0.25


def _number(name) -> float | None:
    try:
        return float(int(str(name)))
    except ValueError:
        return None


def place_layers(d: pd.DataFrame, layer_axis: str = "name") -> pd.DataFrame:
    """``d`` with a column ``x``: where each row's layer sits on the x axis (module docstring).

    Rows are placed by their model's own layer names; ``layer_index`` only orders a model's
    named layers (before or after its numbered ones) and is never compared across models.
    """
    if layer_axis not in LAYER_AXES:
        raise ValueError(f"layer_axis must be one of {', '.join(LAYER_AXES)}, not {layer_axis!r}")
    d = d.copy()
    if d.empty:
        d["x"] = pd.Series(dtype=float)
        return d
    d["_num"] = pd.to_numeric(d["layer"].map(_number), errors="coerce")
    # Per model: is a named layer before (True) or after (False) the model's numbered layers?
    before = {}
    for m, sub in d.groupby("model"):
        idx = sub.drop_duplicates("layer").set_index("layer")["layer_index"]
        nums = sub[sub["_num"].notna()]
        first = nums["layer_index"].min() if not nums.empty else np.inf
        for name, i in idx.items():
            if _number(name) is None:
                before[(m, name)] = bool(i < first)
    # Named layers are ordered by how far each model puts them from its numbered layers
    # (averaged over the models that have them): SpeechCLIP's weighted_sum before its joint.
    offset = {}
    for m, sub in d.groupby("model"):
        nums = sub[sub["_num"].notna()]["layer_index"]
        lo, hi = (nums.min(), nums.max()) if not nums.empty else (np.inf, -np.inf)
        for name, i in sub.drop_duplicates("layer").set_index("layer")["layer_index"].items():
            if _number(name) is None:
                gap = i - hi if np.isfinite(hi) else i
                offset.setdefault(name, []).append(i - lo if before[(m, name)] else gap)
    pre = sorted({n for (m, n), b in before.items() if b},
                 key=lambda n: (np.mean(offset[n]), str(n)))
    post = sorted({n for (m, n), b in before.items() if not b} - set(pre),
                  key=lambda n: (np.mean(offset[n]), str(n)))
    if layer_axis == "name":
        top = d["_num"].max() if d["_num"].notna().any() else -NAME_GAP
        pos = {n: -NAME_GAP - (len(pre) - 1 - i) for i, n in enumerate(pre)}
        pos.update({n: top + NAME_GAP + i for i, n in enumerate(post)})
        d["x"] = [r if r == r else pos[n] for r, n in zip(d["_num"], d["layer"])]
    else:
        # Depth is relative to the tower that embedded the set: one model's audio and text
        # towers (SpeechCLIP) have different numbers of layers.
        keys = ["model", "set"] if "set" in d else ["model"]
        last = d[d["_num"].notna()].groupby(keys)["_num"].agg(["min", "max"])
        xs = []
        for key, n, r in zip(d[keys].itertuples(index=False, name=None), d["layer"], d["_num"]):
            if r == r:
                lo, hi = last.loc[key if len(keys) > 1 else key[0], ["min", "max"]]
                xs.append(0.0 if hi <= lo else (r - lo) / (hi - lo))
            elif n in pre:
                xs.append(-DEPTH_GAP * (len(pre) - pre.index(n)))
            else:
                xs.append(1.0 + DEPTH_GAP * (post.index(n) + 1))
        d["x"] = xs
    return d.drop(columns="_num")


def layer_curves(ax, dd: pd.DataFrame, styles, *, sig_columns=("p_fdr", "p")) -> list[str]:
    """Draw one curve + CI band per model on ``ax``; returns the models drawn.

    Baselines (and single-layer models next to multi-layer ones) become horizontal reference
    lines (:func:`reference_lines`).
    """
    drawn = []
    names = style.model_order(styles, dd["model"])
    n_layers = {m: dd[dd["model"] == m]["layer"].nunique() for m in names}
    any_multi = any(n > 1 for m, n in n_layers.items() if styles[m].kind != "baseline")
    if "x" not in dd:
        dd = place_layers(dd)
    for m in names:
        s = styles[m]
        sub = dd[dd["model"] == m].sort_values("x")
        if sub.empty:
            continue
        drawn.append(m)
        if is_reference_line(styles, m, n_layers[m], any_multi):
            reference_lines(ax, sub.drop_duplicates("layer"), s)
            continue
        x = sub["x"].to_numpy(float)
        y = sub["value"].to_numpy(float)
        # The curve runs through the numbered layers; a named layer (joint) is its own point
        # with its CI, joined by a thin dotted link, so no line crosses the depths (of other
        # models) between the model's last numbered layer and it.
        numbered = sub["layer"].map(_number).notna().to_numpy().copy()
        if not numbered.any() or numbered.all():
            numbered[:] = True
        cur = sub[numbered]
        has_ci = "ci_low" in sub and "ci_high" in sub
        if has_ci and cur[["ci_low", "ci_high"]].notna().all().all():
            ax.fill_between(x[numbered], cur["ci_low"], cur["ci_high"], color=s.color,
                            alpha=0.18, linewidth=0, zorder=1, gid=f"band:{m}")
            if len(cur) == 1:
                ci_segments(ax, x[numbered][0], cur["ci_low"].iloc[0], cur["ci_high"].iloc[0],
                            s.color, gid=f"ci:{m}")
        ax.plot(x[numbered], y[numbered], color=s.color, linestyle=s.linestyle, linewidth=1.1,
                zorder=2, gid=f"line:{m}")
        for xi, yi, (_, r) in zip(x[~numbered], y[~numbered], sub[~numbered].iterrows()):
            j = int(np.argmin(np.abs(x[numbered] - xi)))
            ax.plot([x[numbered][j], xi], [y[numbered][j], yi], color=s.color, linestyle=":",
                    linewidth=0.6, alpha=0.8, zorder=1.9, gid=f"link:{m}:{r['layer']}")
            if has_ci:
                ci_segments(ax, xi, r["ci_low"], r["ci_high"], s.color,
                            gid=f"ci:{m}:{r['layer']}")
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
        reference_marks(ax, r["value"], s)
        if has_ci.iloc[0]:
            ax.axhspan(r["ci_low"], r["ci_high"], color=s.color, alpha=0.10, linewidth=0,
                       zorder=1, gid=f"band:{m}")
        return
    rows = rows.assign(_ci=has_ci).sort_values("value", ascending=False)
    trans = ax.get_yaxis_transform()
    for i, (_, r) in enumerate(rows.iterrows()):
        ax.axhline(r["value"], color=s.color, linestyle=s.linestyle, linewidth=1.1, zorder=1.8,
                   gid=f"line:{m}")
        reference_marks(ax, r["value"], s)
        x = 0.985 - 0.02 * i
        if r["_ci"]:
            ax.vlines([x], [r["ci_low"]], [r["ci_high"]], colors=[s.color], linewidth=1.0,
                      transform=trans, zorder=1.9, gid=f"ci:{m}")
        above = i == 0  # the highest line is named above it, the others below
        ax.annotate(str(r["layer"]), xy=(0.96 - 0.02 * (len(rows) - 1), r["value"]),
                    xycoords=trans, xytext=(0, 1.5 if above else -1.5),
                    textcoords="offset points", ha="right", va="bottom" if above else "top",
                    fontsize=5.5, color=s.color, gid=f"line-label:{m}")


def reference_marks(ax, y: float, s) -> None:
    """The baseline's marker at a few points along its reference line (tells baselines apart
    where their greys and dot patterns are hard to see)."""
    ax.plot([0.1, 0.5, 0.9], [y] * 3, linestyle="none", marker=s.marker, markersize=3,
            color=s.color, markerfacecolor="white", markeredgewidth=0.7,
            transform=ax.get_yaxis_transform(), zorder=1.85, gid=f"marks:{s.name}")


def layer_axis(ax, dd: pd.DataFrame, styles, layer_axis: str = "name") -> bool:
    """Layer ticks for the models drawn along depth; False when only reference lines are there.

    Ticks sit at each layer's ``x`` (:func:`place_layers`) and carry the layer's name; on a
    relative-depth axis, at 0, ½ and 1 plus the named layers. A thin line separates named
    layers (``joint``) from the numbered ones."""
    names = [m for m in dd["model"].unique() if styles[m].kind != "baseline"]
    multi = [m for m in names if dd[dd["model"] == m]["layer"].nunique() > 1]
    sub = dd[dd["model"].isin(multi or names)]
    if sub.empty:
        ax.set_xticks([])
        ax.set_xlabel("(baselines only)", fontsize=6.5, color="0.4")
        return False
    if "x" not in sub:
        sub = place_layers(sub, layer_axis)
    numbered = sub["layer"].map(_number).notna()
    named = sub[~numbered].drop_duplicates("layer")
    if layer_axis == "depth" and numbered.any():
        pos = [0.0, 0.5, 1.0] + [float(v) for v in named["x"]]
        labels = ["first", "½", "last"] + [str(n) for n in named["layer"]]
    else:
        pos, labels = layer_ticks(sub.assign(layer_index=sub["x"]))
    ax.set_xticks(pos, labels)
    if len(labels) > 5 or len(named) > 1:  # only long names (e.g. "joint") turn
        for tick in ax.get_xticklabels():
            if len(tick.get_text()) > 3 and tick.get_text() not in ("first", "last"):
                tick.set_rotation(90)
    if numbered.any() and not named.empty:
        num_x = sub[numbered]["x"]
        lo, hi = num_x.min(), num_x.max()
        after, before = named["x"][named["x"] > hi], named["x"][named["x"] < lo]
        # one thin line between the numbered layers and the named ones on each side
        for edge, xs, sign in ((hi, after, 1), (lo, before, -1)):
            if len(xs):
                near = xs.min() if sign > 0 else xs.max()
                ax.axvline((near + edge) / 2, color="0.82", linewidth=0.5, zorder=0.3,
                           gid="named-layers")
    lo, hi = min(pos), max(pos)
    pad = max(0.4 if layer_axis == "name" else 0.06, 0.03 * (hi - lo))
    ax.set_xlim(lo - pad, hi + pad)
    return True


def facet_layers(d: pd.DataFrame, styles, row_key: str, col_key: str, col_order: Sequence,
                 ylabel: str, title: Callable, chance: Callable | None = None,
                 sig_columns=("p_fdr", "p"), sig_label: str | None = None,
                 layer_axis: str = "name", nonsig_label: str = "n.s.",
                 max_columns: int = 3) -> plt.Figure:
    """Rows = ``row_key`` values (sets), columns = ``col_key`` values; absent panels hidden.

    More than four columns, or a grid of one or two columns that would be taller than three
    rows (not a paper figure), wrap into a plain sequence of panels with full titles instead,
    ``max_columns`` per row. ``fig.panels`` maps each ``(row, column)`` value pair to its axes.
    ``layer_axis``: where layers sit (:func:`place_layers`).
    """
    if "x" not in d:
        d = place_layers(d, layer_axis)
    rows = ordered(d[row_key])
    cols = ordered(d[col_key], col_order)
    present = {(r, c) for r, c in d[[row_key, col_key]].drop_duplicates().itertuples(
        index=False, name=None)}
    is_grid = len(cols) <= 4 and not (len(cols) < max_columns and len(rows) > 3)
    if is_grid:
        nrows, ncols = len(rows), len(cols)
        cells = [((r, c), i * ncols + j) for i, r in enumerate(rows) for j, c in enumerate(cols)
                 if (r, c) in present]
    else:
        panels = [(r, c) for r in rows for c in cols if (r, c) in present]
        nrows, ncols = grid(len(panels), max_columns)
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
        has_layers = _layer_axis(ax, dd, styles, layer_axis)
        ax.set_title(title(r, c, is_grid and not row_titles), fontsize=7.5)
        below = i + ncols
        if has_layers and (below >= len(flat) or below not in used):
            ax.set_xlabel("layer" if layer_axis == "name" else "relative depth")
    fig.panels = {rc: flat[i] for rc, i in cells}
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
        handles += significance_handles(sig_label, nonsig_label)
    legend_below(fig, handles, ncol=min(len(handles), 2 if ncols <= 2 else 4))
    return fig


def significance_handles(label: str, nonsig_label: str = "n.s.") -> list:
    """Legend entries explaining filled (significant) and hollow (not) markers."""
    from matplotlib.lines import Line2D

    return [
        Line2D([], [], linestyle="none", marker="o", markersize=3.6, color="0.3",
               label=label.replace(" (H1", " < .05 (H1") if " (H1" in label else f"{label} < .05"),
        Line2D([], [], linestyle="none", marker="o", markersize=3.6, color="0.3",
               markerfacecolor="white", label=nonsig_label),
    ]


_layer_axis = layer_axis  # facet_layers' parameter of the same name shadows the function
