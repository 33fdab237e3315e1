"""One function per figure: tidy tables (already read) in, a matplotlib Figure out.

Every function takes the config's ``models`` mapping for display names, colours and kinds
(see :mod:`avprobe.figures.style`), draws one model the same way everywhere, and returns a
figure with an explanatory "no rows" panel instead of raising when its table is empty.
Tables follow ``docs/CONTRACTS.md`` (``avprobe.io.tidy_table``); each function's docstring
lists the columns it reads.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from . import style
from .style import apply, empty_figure, empty_panel, plt

#: Preferred facet orders; values not listed follow, sorted.
DIRECTION_ORDER = ("geometric", "phonetic")
FORM_ORDER = ("speech", "text")
SPLIT_FIRST = ("cv",)
MODE_ORDER = ("end_to_end", "cascade", "text", "fusion")
RETRIEVAL_DIRECTION_ORDER = (
    "speech→image", "image→speech", "text→image", "image→text", "audio→image", "image→audio",
)
CLASS_ORDER = ("sharp", "round")
COMPARISON_LABEL = {"spearman": "Spearman ρ", "pearson": "Pearson r", "kendall": "Kendall τ"}
MODE_LABEL = {"end_to_end": "end-to-end", "cascade": "cascade", "text": "text", "fusion": "fusion"}

#: Columns of the per-item symbolism scores table (results/tables/symbolism/<name>.scores.parquet).
SCORE_COLUMNS = ("model", "layer", "direction", "form", "stimulus_id", "label", "score")


# --------------------------------------------------------------------------------------------
# helpers


def ordered(values: Iterable, preferred: Sequence = ()) -> list:
    """Unique non-null ``values``: those in ``preferred`` first (in that order), then sorted."""
    seen = [v for v in pd.unique(pd.Series(list(values), dtype=object)) if not _isna(v)]
    first = [p for p in preferred if p in seen]
    rest = sorted((v for v in seen if v not in preferred), key=str)
    return first + rest


def _isna(v) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _styles(models: Mapping | None, df: pd.DataFrame | None = None, column: str = "model"):
    extra = [] if df is None or column not in df else df[column].dropna().astype(str).unique()
    return style.model_styles(models, extra)


def _clean(df: pd.DataFrame | None) -> pd.DataFrame:
    """A copy with string model/layer and numeric value columns; None → empty frame."""
    if df is None:
        return pd.DataFrame()
    df = df.copy()
    for col in ("model", "layer", "set", "metric"):
        if col in df:
            df[col] = df[col].astype("string").astype(object).where(df[col].notna(), None)
    for col in ("value", "ci_low", "ci_high", "p", "p_fdr", "layer_index", "n"):
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    if "layer" in df and "layer_index" not in df:
        df["layer_index"] = _fallback_layer_index(df["layer"])
    elif "layer" in df:
        missing = df["layer_index"].isna()
        if missing.any():
            df.loc[missing, "layer_index"] = _fallback_layer_index(df.loc[missing, "layer"])
    return df


def _fallback_layer_index(layers: pd.Series) -> pd.Series:
    def key(v):
        try:
            return float(int(str(v)))
        except ValueError:
            return 1e6 if str(v) == "joint" else 0.0

    return layers.map(key)


def _truthy(v) -> bool:
    """A bool column that may arrive as bool, 0/1, "true"/"false" or missing (→ False)."""
    if _isna(v):
        return False
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes")
    return bool(v)


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    ncols = max(1, min(n, max_cols))
    return int(math.ceil(n / ncols)), ncols


def _wrap(text: str, width: int = 16) -> str:
    return "\n".join(textwrap.wrap(str(text), width)) or str(text)


def _layer_ticks(sub: pd.DataFrame, max_labels: int = 12) -> tuple[list[float], list[str]]:
    """Tick positions (layer_index) and labels (layer names; the index if names disagree)."""
    if sub.empty:
        return [], []
    names = sub.groupby("layer_index")["layer"].agg(lambda s: sorted(set(map(str, s))))
    pos = [float(i) for i in names.index]
    labels = [n[0] if len(n) == 1 else str(int(i)) for i, n in zip(names.index, names)]
    if len(pos) > max_labels:
        step = int(math.ceil(len(pos) / max_labels))
        named = [i for i, lab in enumerate(labels) if not lab.lstrip("-").isdigit()]
        keep = [i for i, lab in enumerate(labels)
                if i in named or ((i % step == 0 or i == len(pos) - 1)
                                  and not any(abs(i - j) < step for j in named))]
        pos = [pos[i] for i in keep]
        labels = [labels[i] for i in keep]
    return pos, labels


def _is_significant(row: pd.Series, columns=("p_fdr", "p")) -> bool:
    for col in columns:
        if col in row and not _isna(row[col]):
            return float(row[col]) < 0.05
    return False


def _legend_below(fig, handles, ncol: int | None = None, title: str | None = None) -> None:
    if not handles:
        return
    ncol = ncol or min(len(handles), 3)
    fig.legend(handles=handles, loc="outside lower center", ncol=ncol, title=title,
               columnspacing=1.2, handletextpad=0.5, borderaxespad=0.2)


def _ci_segments(ax, x, lo, hi, color, gid, linestyle="-", lw=1.0, zorder=2):
    """A vertical CI line from exactly ``lo`` to ``hi`` (skipped when either is missing)."""
    if _isna(lo) or _isna(hi):
        return None
    return ax.vlines([x], [lo], [hi], colors=[color], linestyles=linestyle, linewidth=lw,
                     zorder=zorder, gid=gid)


def _chance_line(ax, y: float, label: str = "chance", gid: str = "chance"):
    return ax.axhline(y, color=style.CHANCE_COLOR, linewidth=0.8, linestyle=style.CHANCE_STYLE,
                      zorder=0.5, label=label, gid=gid)


def _hide_unused(axes: np.ndarray, used: int) -> None:
    for ax in axes.ravel()[used:]:
        ax.set_visible(False)


# --------------------------------------------------------------------------------------------
# symbolism


def symbolism_auc(df: pd.DataFrame, models: Mapping | None = None, metric: str = "auc",
                  chance: float | None = None) -> plt.Figure:
    """ROC-AUC of the sharp/round split per model and layer, speech and text side by side.

    Reads the symbolism table: ``model, layer, layer_index, metric, value, ci_low, ci_high,
    p`` plus ``direction`` (facets, one row each), ``form`` (speech|text: filled vs hollow
    markers side by side) and ``voice`` (only ``"all"``/missing rows are drawn). Vertical
    lines span exactly ``[ci_low, ci_high]``; stars above them mark p < .05/.01/.001; the
    dashed grey line is chance (0.5 for AUC, 0 otherwise).
    """
    apply()
    d = _clean(df)
    if d.empty or "metric" not in d:
        return empty_figure("no rows", "the symbolism tables are empty")
    d = d[d["metric"] == metric]
    if "voice" in d:
        d = d[d["voice"].isna() | (d["voice"].astype(str) == "all")]
    d = d[d["value"].notna()] if "value" in d else d.iloc[0:0]
    if d.empty:
        return empty_figure("no rows", f"no '{metric}' rows in the symbolism tables")
    if chance is None:
        chance = 0.5 if metric == "auc" else 0.0
    if "direction" not in d:
        d = d.assign(direction="score")
    if "form" not in d:
        d = d.assign(form="speech")
    d["direction"] = d["direction"].fillna("score").astype(str)
    d["form"] = d["form"].fillna("speech").astype(str)
    styles = _styles(models, d)
    directions = ordered(d["direction"], DIRECTION_ORDER)
    forms = ordered(d["form"], FORM_ORDER)
    model_names = style.model_order(styles, d["model"])

    # x positions: one slot per (model, layer), models in config order with a gap between.
    slots, groups, x = {}, [], 0.0
    for m in model_names:
        layers = (d[d["model"] == m][["layer", "layer_index"]].drop_duplicates("layer")
                  .sort_values(["layer_index", "layer"]))
        start = x
        for layer in layers["layer"]:
            slots[(m, layer)] = x
            x += 1.0
        groups.append((m, start, x - 1.0))
        x += 0.6
    one_layer_each = all(a == b for _, a, b in groups)
    offsets = {f: (i - (len(forms) - 1) / 2) * (0.32 if len(forms) > 1 else 0.0)
               for i, f in enumerate(forms)}

    n_slots = len(slots)
    width = style.SINGLE if n_slots <= 8 else style.DOUBLE
    fig, axes = plt.subplots(len(directions), 1, squeeze=False, sharex=True, sharey=True,
                             figsize=(width, 1.75 * len(directions) + 0.75))
    lo_all, hi_all = [chance], [chance]
    for ax, direction in zip(axes[:, 0], directions):
        dd = d[d["direction"] == direction]
        _chance_line(ax, chance)
        for m in model_names:
            s = styles[m]
            for form in forms:
                sub = dd[(dd["model"] == m) & (dd["form"] == form)].sort_values("layer_index")
                if sub.empty:
                    continue
                xs = [slots[(m, layer)] + offsets[form] for layer in sub["layer"]]
                if len(sub) > 1:
                    ax.plot(xs, sub["value"], color=s.color, linestyle=s.linestyle,
                            linewidth=0.8, alpha=0.7, zorder=1.5, gid=f"trend:{m}:{form}")
                for xi, (_, r) in zip(xs, sub.iterrows()):
                    _ci_segments(ax, xi, r.get("ci_low"), r.get("ci_high"), s.color,
                                 gid=f"ci:{m}:{r['layer']}:{form}")
                    filled = form == forms[0]
                    ax.plot([xi], [r["value"]], linestyle="none", marker=s.marker,
                            markersize=4, markeredgewidth=0.9, color=s.color,
                            markerfacecolor=s.color if filled else "white", zorder=3,
                            gid=f"point:{m}:{r['layer']}:{form}")
                    top = r.get("ci_high")
                    top = r["value"] if _isna(top) else top
                    lo = r.get("ci_low")
                    lo_all.append(r["value"] if _isna(lo) else lo)
                    hi_all.append(top)
                    mark = style.stars(r.get("p"))
                    if mark:
                        ax.annotate(mark, (xi, top), xytext=(0, 1), textcoords="offset points",
                                    ha="center", va="bottom", fontsize=7, color="0.1",
                                    gid="significance")
        ax.set_title(f"{direction} score" if direction in DIRECTION_ORDER else direction)
        ax.set_ylabel("ROC-AUC" if metric == "auc" else metric)
        for _, a, b in groups[:-1]:
            ax.axvline(b + 0.8, color="0.85", linewidth=0.6, zorder=0)
    span = max(hi_all) - min(lo_all) or 0.1
    axes[0, 0].set_ylim(min(lo_all) - 0.08 * span, max(hi_all) + 0.16 * span)
    bottom = axes[-1, 0]
    if one_layer_each:
        ticks = [a for _, a, _ in groups]
        labels = []
        for m, a, _ in groups:
            layer = next(layer for (mm, layer), pos in slots.items() if mm == m)
            labels.append(f"{_wrap(styles[m].display, 14)}\n[{layer}]")
        layer_names = {layer for (_, layer) in slots}
        if len(layer_names) == 1:  # e.g. every model scored in its joint space
            labels = [_wrap(styles[m].display, 14) for m, _, _ in groups]
            bottom.set_xlabel(f"model (layer: {layer_names.pop()})")
        else:
            bottom.set_xlabel("model [layer]")
        bottom.set_xticks(ticks, labels)
    else:
        ticks = list(slots.values())
        labels = [layer for (_, layer) in slots]
        bottom.set_xticks(ticks, labels)
        if len(labels) > 6:  # only long names (e.g. "joint") turn, numbers stay level
            for tick in bottom.get_xticklabels():
                if len(tick.get_text()) > 3:
                    tick.set_rotation(90)
        bottom.set_xlabel("layer")
        top = axes[0, 0].secondary_xaxis("top")
        top.set_xticks([(a + b) / 2 for _, a, b in groups],
                       [_wrap(styles[m].display, 14) for m, _, _ in groups], fontsize=6.5)
        top.tick_params(length=0)
        top.spines["top"].set_visible(False)
    bottom.set_xlim(-0.7, max(slots.values()) + 0.7)
    # When the ticks name the models, the legend only needs to explain the markers.
    handles = [] if one_layer_each else style.legend_handles(styles, model_names)
    if len(forms) > 1:
        handles += [Line2D([], [], linestyle="none", marker="o", color="0.2",
                           markerfacecolor="0.2" if i == 0 else "white", label=f)
                    for i, f in enumerate(forms)]
    _legend_below(fig, handles, ncol=min(len(handles), 3 if width == style.SINGLE else 5))
    return fig


def symbolism_scores(scores: pd.DataFrame, models: Mapping | None = None,
                     layers: Mapping[str, str] | None = None) -> plt.Figure:
    """Per-item symbolism scores of sharp vs round stimuli, one panel per model × direction.

    Reads the per-item scores table (``results/tables/symbolism/<name>.scores.parquet``):
    required ``model, direction, form, label, score``; ``layer`` (+ ``layer_index``) when a
    model is scored at several layers — the panel shows ``layers[model]`` if given, else
    ``joint`` if present, else the deepest layer. Within a panel each form (speech, text) gets
    a pair of violins: sharp (vermillion) and round (blue), with medians as white dots.
    Scores follow the symbolism analysis: positive means "round" (AUC takes round as the
    positive class), so sound symbolism lifts the round violin above the sharp one.
    """
    apply()
    d = _clean(scores)
    needed = {"model", "direction", "form", "label", "score"}
    if d.empty or not needed <= set(d.columns):
        missing = sorted(needed - set(d.columns))
        return empty_figure("no rows", "the per-item scores table is empty"
                            if d.empty else f"missing columns {missing}")
    d["score"] = pd.to_numeric(d["score"], errors="coerce")
    d = d[d["score"].notna() & d["label"].isin(CLASS_ORDER)]
    if d.empty:
        return empty_figure("no rows", "no sharp/round rows with a score")
    styles = _styles(models, d)
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
    common_layer = (str(d["layer"].iloc[0]) if "layer" in d and d["layer"].nunique() == 1
                    else None)
    model_names = style.model_order(styles, d["model"])
    directions = ordered(d["direction"], DIRECTION_ORDER)
    panels = [(m, r) for m in model_names for r in directions
              if not d[(d["model"] == m) & (d["direction"] == r)].empty]
    nrows, ncols = _grid(len(panels), 4 if len(directions) != 3 else 3)
    fig, axes = plt.subplots(nrows, ncols, squeeze=False,
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
        lo, hi = ax.get_ylim()
        if lo < 0 < hi:
            ax.axhline(0, color="0.75", linewidth=0.6, zorder=0)
        layer = ""
        if "layer" in sub and not common_layer and sub["layer"].nunique() == 1:
            layer = f" [{sub['layer'].iloc[0]}]"
        ax.set_title(f"{_wrap(s.display + layer, 26)}\n{r} score", fontsize=7,
                     color="0.35" if s.is_control else "black")
    for row in axes:
        row[0].set_ylabel("score (higher = rounder)")
    _hide_unused(axes, len(panels))
    handles = [Patch(facecolor=style.lighten(c, 0.25), edgecolor=c, label=lab)
               for lab, c in style.LABEL_COLORS.items()]
    _legend_below(fig, handles, ncol=2,
                  title=f"scores at layer {common_layer}" if common_layer else None)
    return fig


# --------------------------------------------------------------------------------------------
# layerwise curves (RSA, probes)


def _layer_curves(ax, dd: pd.DataFrame, styles, *, sig_columns=("p_fdr", "p")) -> list[str]:
    """Draw one curve + CI band per model on ``ax``; returns the models drawn.

    Baselines (and single-layer models next to multi-layer ones) become horizontal lines with
    a CI band across the panel, since their one layer has no depth to place it at.
    """
    drawn = []
    names = style.model_order(styles, dd["model"])
    n_layers = {m: dd[dd["model"] == m]["layer"].nunique() for m in names}
    any_multi = any(n > 1 for n in n_layers.values())
    for m in names:
        s = styles[m]
        sub = dd[dd["model"] == m].sort_values("layer_index")
        if sub.empty:
            continue
        drawn.append(m)
        horizontal = n_layers[m] == 1 and (s.kind == "baseline" or any_multi)
        if horizontal:
            r = sub.iloc[0]
            ax.axhline(r["value"], color=s.color, linestyle=s.linestyle, linewidth=1.1,
                       zorder=1.8, gid=f"line:{m}")
            if not (_isna(r.get("ci_low")) or _isna(r.get("ci_high"))):
                ax.axhspan(r["ci_low"], r["ci_high"], color=s.color, alpha=0.12, linewidth=0,
                           zorder=1, gid=f"band:{m}")
            continue
        x = sub["layer_index"].to_numpy(float)
        y = sub["value"].to_numpy(float)
        if "ci_low" in sub and "ci_high" in sub and sub[["ci_low", "ci_high"]].notna().all().all():
            ax.fill_between(x, sub["ci_low"], sub["ci_high"], color=s.color, alpha=0.18,
                            linewidth=0, zorder=1, gid=f"band:{m}")
            if len(sub) == 1:
                _ci_segments(ax, x[0], sub["ci_low"].iloc[0], sub["ci_high"].iloc[0],
                             s.color, gid=f"ci:{m}")
        ax.plot(x, y, color=s.color, linestyle=s.linestyle, linewidth=1.1, zorder=2,
                gid=f"line:{m}")
        sig = np.array([_is_significant(r, sig_columns) for _, r in sub.iterrows()])
        ax.plot(x[sig], y[sig], linestyle="none", marker=s.marker, markersize=3.6,
                color=s.color, zorder=3, gid=f"sig:{m}")
        ax.plot(x[~sig], y[~sig], linestyle="none", marker=s.marker, markersize=3.6,
                color=s.color, markerfacecolor="white", zorder=3, gid=f"nonsig:{m}")
    return drawn


def _layer_axis(ax, dd: pd.DataFrame, styles) -> bool:
    """Layer ticks for the models drawn along depth; False when only baselines are there."""
    names = [m for m in dd["model"].unique() if dd[dd["model"] == m]["layer"].nunique() > 1
             or styles[m].kind != "baseline"]
    sub = dd[dd["model"].isin(names)]
    if sub.empty:
        ax.set_xticks([])
        ax.set_xlabel("(single-layer baselines only)", fontsize=6.5, color="0.4")
        return False
    pos, labels = _layer_ticks(sub)
    ax.set_xticks(pos, labels)
    if len(labels) > 5:  # only long names (e.g. "joint") turn, numbers stay level
        for tick in ax.get_xticklabels():
            if len(tick.get_text()) > 3:
                tick.set_rotation(90)
    lo, hi = min(pos), max(pos)
    pad = max(0.4, 0.03 * (hi - lo))
    ax.set_xlim(lo - pad, hi + pad)
    return True


def _facet_layers(d: pd.DataFrame, styles, row_key: str, col_key: str, col_order: Sequence,
                  ylabel: str, title, chance=None, sig_columns=("p_fdr", "p")) -> plt.Figure:
    """Rows = ``row_key`` values (sets), columns = ``col_key`` values; absent panels hidden.

    More than four columns wrap into a plain sequence of panels with full titles instead.
    """
    rows = ordered(d[row_key])
    cols = ordered(d[col_key], col_order)
    present = {(r, c) for r, c in d[[row_key, col_key]].drop_duplicates().itertuples(
        index=False, name=None)}
    grid = len(cols) <= 4
    if grid:
        nrows, ncols = len(rows), len(cols)
        cells = [((r, c), i * ncols + j) for i, r in enumerate(rows) for j, c in enumerate(cols)
                 if (r, c) in present]
    else:
        panels = [(r, c) for r in rows for c in cols if (r, c) in present]
        nrows, ncols = _grid(len(panels), 3)
        cells = [(rc, i) for i, rc in enumerate(panels)]
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, sharey=True,
                             figsize=style.figure_size(ncols, nrows, extra_height=0.45))
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
                _chance_line(ax, y)
        drawn |= set(_layer_curves(ax, dd, styles, sig_columns=sig_columns))
        has_layers = _layer_axis(ax, dd, styles)
        ax.set_title(title(r, c, grid), fontsize=7.5)
        below = i + ncols
        if has_layers and (below >= len(flat) or below not in used):
            ax.set_xlabel("layer")
    for i, r in enumerate(rows if grid else [None] * nrows):
        first = next((flat[i * ncols + j] for j in range(ncols) if i * ncols + j in used), None)
        if first is not None:
            first.set_ylabel(f"{r}\n{ylabel}" if r and len(rows) > 1 else ylabel)
            first.yaxis.set_tick_params(labelleft=True)
    handles = style.legend_handles(styles, drawn)
    if chance is not None:
        handles.append(Line2D([], [], color=style.CHANCE_COLOR, linewidth=0.8,
                              linestyle=style.CHANCE_STYLE, label="chance"))
    _legend_below(fig, handles, ncol=min(len(handles), 2 if ncols <= 2 else 4))
    return fig


def _rsa_rows(df: pd.DataFrame, partial: bool) -> pd.DataFrame:
    d = _clean(df)
    if d.empty or "metric" not in d:
        return d.iloc[0:0] if not d.empty else d
    d = d[d["metric"].astype(str).str.startswith("rsa_") & d["value"].notna()]
    if "partial" in d:
        flag = d["partial"].map(_truthy)
        d = d[flag == partial]
    elif partial:
        d = d.iloc[0:0]
    if "reference" not in d or d["reference"].isna().any():
        parsed = d["metric"].str.split("_").map(lambda t: "_".join(t[1:-1]) or t[-1])
        d = d.assign(reference=d["reference"].fillna(parsed) if "reference" in d else parsed)
    d = d.assign(comparison=d["metric"].str.split("_").str[-1])
    if "set" not in d:
        d = d.assign(set="")
    d["set"] = d["set"].fillna("")
    return d


def rsa_layers(df: pd.DataFrame, models: Mapping | None = None, partial: bool = False
               ) -> plt.Figure:
    """Layerwise RSA with every reference RDM (panel columns) per stimulus set (rows).

    Reads the RSA table: ``set, model, layer, layer_index, metric (rsa_<reference>_<cmp>),
    value, ci_low, ci_high`` plus ``reference`` (else parsed from ``metric``), ``p_fdr``
    (else ``p``) and ``partial`` (rows with ``partial`` true go to the partial figure only).
    One curve per model with its CI band; filled markers: FDR-corrected p < .05, hollow: not.
    Baselines are horizontal lines with their band across the panel.
    """
    apply()
    d = _rsa_rows(df, partial)
    kind = "partial RSA" if partial else "RSA"
    if d.empty:
        return empty_figure("no rows", f"no {kind} rows in the RSA tables")
    styles = _styles(models, d)
    comparisons = ordered(d["comparison"])
    ylabel = ("partial " if partial else "") + "RSA (" + " / ".join(
        COMPARISON_LABEL.get(c, c) for c in comparisons) + ")"
    sets = ordered(d["set"])

    def title(r, c, grid):
        head = f"{c} RDM" + (" (partial)" if partial else "")
        return f"{r} · {head}" if r and len(sets) > 1 and not grid else head

    fig = _facet_layers(d, styles, "set", "reference", ("label",), ylabel, title)
    for ax in fig.axes:
        if ax.get_visible() and ax.get_ylim()[0] < 0 < ax.get_ylim()[1]:
            ax.axhline(0, color="0.8", linewidth=0.5, zorder=0)
    return fig


def rsa_partial(df: pd.DataFrame, models: Mapping | None = None) -> plt.Figure:
    """Partial RSA (rows with ``partial`` true), drawn like :func:`rsa_layers`."""
    return rsa_layers(df, models, partial=True)


def probe_layers(df: pd.DataFrame, models: Mapping | None = None, metric: str = "accuracy"
                 ) -> plt.Figure:
    """Linear-probe accuracy per layer with CI bands; one panel per set (× target) × split.

    Reads the probe table: ``set, model, layer, layer_index, metric, value, ci_low, ci_high,
    p, split`` (+ ``p_fdr``, ``target``, ``chance``). ``metric`` rows are drawn (accuracy by
    default); the dash-dotted line is chance: the rows' ``chance`` column, else the value of
    ``chance`` metric rows, else 0.5 (two classes). Splits: ``cv`` first, then transfer
    splits; several probe targets (e.g. label, voice) get one row of panels each.
    """
    apply()
    d = _clean(df)
    if d.empty or "metric" not in d:
        return empty_figure("no rows", "the probe tables are empty")
    if "split" not in d:
        d = d.assign(split="cv")
    d["split"] = d["split"].fillna("cv").astype(str)
    if "set" not in d:
        d = d.assign(set="")
    d["set"] = d["set"].fillna("").astype(str)
    targets = ordered(d["target"], ("label",)) if "target" in d else []
    if len(targets) > 1:
        d["panel_row"] = d["set"] + " · " + d["target"].fillna("").astype(str)
    else:
        d["panel_row"] = d["set"]
    if "chance" in d:
        d["chance"] = pd.to_numeric(d["chance"], errors="coerce")
    chance_rows = d[(d["metric"] == "chance") & d["value"].notna()]
    rows = d[(d["metric"] == metric) & d["value"].notna()]
    if rows.empty:
        return empty_figure("no rows", f"no '{metric}' rows in the probe tables")
    styles = _styles(models, rows)
    panel_rows = ordered(rows["panel_row"])

    def chance(dd, r, c):
        values = dd["chance"].dropna().to_numpy(float) if "chance" in dd else np.array([])
        if values.size == 0:
            ch = chance_rows[(chance_rows["split"] == c) & (chance_rows["panel_row"] == r)
                             & chance_rows["model"].isin(dd["model"].unique())]
            values = ch["value"].to_numpy(float)
        return sorted(set(np.round(values, 3))) or [0.5]

    def title(r, c, grid):
        head = "cross-validation" if c == "cv" else f"transfer: {c}"
        return f"{r} · {head}" if r and len(panel_rows) > 1 and not grid else head

    label = {"accuracy": "probe accuracy",
             "balanced_accuracy": "balanced accuracy"}.get(metric, metric)
    return _facet_layers(rows, styles, "panel_row", "split", SPLIT_FIRST, label, title,
                         chance=chance, sig_columns=("p_fdr", "p"))


# --------------------------------------------------------------------------------------------
# retrieval


def _retrieval_rows(df: pd.DataFrame, layer: str | None = None) -> pd.DataFrame:
    """R@K rows, one layer per system: ``layer`` if given and present, else ``joint``, else
    the deepest layer (retrieval tables may hold every layer the two towers share)."""
    d = _clean(df)
    if d.empty or "metric" not in d:
        return d.iloc[0:0] if not d.empty else d
    d = d[d["metric"].astype(str).str.fullmatch(r"R@\d+") & d["value"].notna()].copy()
    if d.empty:
        return d
    d["k"] = d["metric"].str[2:].astype(int)
    for col, default in (("mode", ""), ("direction", "all"), ("name", None)):
        if col not in d:
            d[col] = default
    d["mode"] = d["mode"].fillna("").astype(str)
    d["direction"] = d["direction"].fillna("all").astype(str)
    d["name"] = d["name"].fillna(d["model"] + ":" + d["mode"])
    if "layer" in d and d["layer"].nunique() > 1:
        keep = []
        for _, sub in d.groupby("name", sort=False):
            names = set(sub["layer"].dropna())
            chosen = layer if layer in names else "joint" if "joint" in names else (
                sub.sort_values("layer_index")["layer"].iloc[-1])
            keep.append(sub[sub["layer"] == chosen])
        d = pd.concat(keep)
    # Fractions in [0, 1] are shown as percentages; a table already in percent is kept.
    scale = 100.0 if d["value"].max() <= 1.0 else 1.0
    for col in ("value", "ci_low", "ci_high"):
        if col in d:
            d[col] = d[col] * scale
    return d


def _systems(d: pd.DataFrame, styles) -> list[tuple[str, str, str]]:
    """(model, mode, name) in config model order, then mode order."""
    keys = d[["model", "mode", "name"]].drop_duplicates().itertuples(index=False, name=None)
    mode_rank = {m: i for i, m in enumerate(MODE_ORDER)}
    return sorted(keys, key=lambda k: (styles[k[0]].order, mode_rank.get(k[1], 99), k[1], k[2]))


def _system_labels(systems, styles) -> dict:
    base = {k: (styles[k[0]].display, MODE_LABEL.get(k[1], k[1])) for k in systems}
    counts = pd.Series([base[k] for k in systems]).value_counts()
    out = {}
    for k in systems:
        display, mode = base[k]
        out[k] = (display, mode if counts[(display, mode)] == 1 else f"{mode} ({k[2]})")
    return out


def retrieval_recall(df: pd.DataFrame, models: Mapping | None = None,
                     layer: str | None = None) -> plt.Figure:
    """Recall@K (%) as grouped bars: K groups on x, one bar per model × mode, one panel per
    retrieval direction.

    Reads the retrieval table: ``model, metric (R@K), value, ci_low, ci_high, mode,
    direction, name``. Values in [0, 1] are drawn as percentages. A model's modes share its
    colour at decreasing saturation; untrained/baseline systems are grey and hatched. One
    layer per system (``layer``, else ``joint``, else the deepest).
    """
    apply()
    d = _retrieval_rows(df, layer)
    if d.empty:
        return empty_figure("no rows", "no R@K rows in the retrieval tables")
    styles = _styles(models, d)
    systems = _systems(d, styles)
    labels = _system_labels(systems, styles)
    directions = ordered(d["direction"], RETRIEVAL_DIRECTION_ORDER)
    ks = sorted(d["k"].unique())
    per_model_modes = {}
    for k in systems:
        per_model_modes.setdefault(k[0], []).append(k)
    colors = {}
    for m, keys in per_model_modes.items():
        for i, k in enumerate(keys):
            colors[k] = style.lighten(styles[m].color, min(0.6, 0.3 * i))
    nrows, ncols = _grid(len(directions), 2)
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, sharey=True,
                             figsize=style.figure_size(max(ncols, 1 + (len(systems) > 3)),
                                                       nrows, row_height=1.9,
                                                       extra_height=0.3 + 0.15 * len(systems)))
    width = 0.8 / max(len(systems), 1)
    top = 0.0
    for ax, direction in zip(axes.ravel(), directions):
        dd = d[d["direction"] == direction]
        for i, key in enumerate(systems):
            s = styles[key[0]]
            sub = dd[(dd["model"] == key[0]) & (dd["mode"] == key[1]) & (dd["name"] == key[2])]
            for _, r in sub.iterrows():
                x = ks.index(r["k"]) + (i - (len(systems) - 1) / 2) * width
                ax.bar([x], [r["value"]], width=width * 0.92, color=colors[key],
                       hatch=s.hatch, edgecolor="0.15" if s.hatch else colors[key],
                       linewidth=0.4, zorder=2, gid=f"bar:{key[2]}:{direction}:R@{r['k']}")
                _ci_segments(ax, x, r.get("ci_low"), r.get("ci_high"), "0.1",
                             gid=f"ci:{key[2]}:{direction}:R@{r['k']}", lw=0.7, zorder=3)
                top = max(top, r["value"], 0 if _isna(r.get("ci_high")) else r["ci_high"])
        ax.set_xticks(range(len(ks)), [f"R@{k}" for k in ks])
        ax.set_title(direction)
        ax.set_xlim(-0.5, len(ks) - 0.5)
    for row in axes:
        row[0].set_ylabel("recall (%)")
    axes[0, 0].set_ylim(0, min(100.0, top * 1.1) if top > 0 else 1.0)
    _hide_unused(axes, len(directions))
    handles = [Patch(facecolor=colors[k], hatch=styles[k[0]].hatch,
                     edgecolor="0.15" if styles[k[0]].hatch else colors[k],
                     label=f"{labels[k][0]} · {labels[k][1]}" if labels[k][1] else labels[k][0])
               for k in systems]
    _legend_below(fig, handles, ncol=1 if fig.get_figwidth() < 5 else 2)
    return fig


def _fmt(v, digits: int = 1) -> str:
    return "–" if _isna(v) else f"{v:.{digits}f}"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "→": r"$\rightarrow$", "←": r"$\leftarrow$",
}


def _latex_escape(text: str) -> str:
    """Escape LaTeX's special characters in one pass (arrows become math arrows)."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def retrieval_tables(df: pd.DataFrame, models: Mapping | None = None,
                     layer: str | None = None) -> tuple[str, str]:
    """Recall@K (%) tables shaped like BrewCLIP's Table 1: rows = model × mode, columns =
    direction × R@1/R@5/R@10. Returns ``(markdown, latex)``; missing cells are "–".
    """
    d = _retrieval_rows(df, layer)
    if d.empty:
        md = "_No retrieval rows._\n"
        tex = "% no retrieval rows\n"
        return md, tex
    styles = _styles(models, d)
    systems = _systems(d, styles)
    labels = _system_labels(systems, styles)
    directions = ordered(d["direction"], RETRIEVAL_DIRECTION_ORDER)
    ks = sorted(d["k"].unique())
    cells = {}
    for _, r in d.iterrows():
        cells[(r["model"], r["mode"], r["name"], r["direction"], int(r["k"]))] = r["value"]
    columns = [(dr, k) for dr in directions for k in ks]

    header = ["model", "mode"] + [f"{dr} R@{k}" for dr, k in columns]
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join([":--", ":--"] + ["--:"] * len(columns)) + " |"]
    for key in systems:
        vals = [_fmt(cells.get((*key, dr, k))) for dr, k in columns]
        lines.append("| " + " | ".join([labels[key][0], labels[key][1] or "–"] + vals) + " |")
    md = ("Recall@K (%) per retrieval direction; rows are model × mode.\n\n"
          + "\n".join(lines) + "\n")

    ncols = 2 + len(columns)
    tex = [r"% Recall@K (%) -- requires \usepackage{booktabs}",
           r"\begin{tabular}{ll" + "".join("r" * len(ks) for _ in directions) + "}",
           r"\toprule"]
    top = [" ", " "] + [rf"\multicolumn{{{len(ks)}}}{{c}}{{{_latex_escape(dr)}}}"
                        for dr in directions]
    tex.append(" & ".join(top) + r" \\")
    tex.append(" ".join(rf"\cmidrule(lr){{{3 + i * len(ks)}-{2 + (i + 1) * len(ks)}}}"
                        for i in range(len(directions))))
    tex.append(" & ".join(["Model", "Mode"] + [f"R@{k}" for _, k in columns]) + r" \\")
    tex.append(r"\midrule")
    kinds = ordered((styles[k[0]].kind for k in systems), style.KINDS)
    group_title = {"pretrained": "Pretrained", "untrained": "Untrained controls",
                   "baseline": "Baselines"}
    for gi, kind in enumerate(kinds):
        if len(kinds) > 1:
            if gi:
                tex.append(r"\midrule")
            tex.append(rf"\multicolumn{{{ncols}}}{{l}}{{\emph{{{group_title[kind]}}}}} \\")
        for key in systems:
            if styles[key[0]].kind != kind:
                continue
            vals = [_fmt(cells.get((*key, dr, k))) for dr, k in columns]
            row = [_latex_escape(labels[key][0]), _latex_escape(labels[key][1] or "–")] + vals
            tex.append(" & ".join(row) + r" \\")
    tex += [r"\bottomrule", r"\end{tabular}"]
    return md, "\n".join(tex) + "\n"


# --------------------------------------------------------------------------------------------
# RDM heatmaps


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
                 percentile: bool = True) -> plt.Figure:
    """RDMs of chosen layers, stimuli grouped by class with the class boundaries marked.

    ``rdms``: one mapping per RDM file with ``set``, ``model``, ``labels`` (class per stimulus,
    in the matrices' order) and ``rdms`` (layer name → square matrix; may load lazily, only the
    drawn layers are read). Rows are files, columns the ``layers`` asked for (default: first,
    middle and last). Values are shown as percentiles of each RDM (``percentile=True``) on one
    colour scale; matrices bigger than ``max_size`` are block-averaged for display.
    """
    apply()
    rdms = [r for r in (rdms or []) if r is not None and len(list(r.get("rdms", {}) or {})) > 0]
    if not rdms:
        return empty_figure("no rows", "no RDM files")
    styles = _styles(models, pd.DataFrame({"model": [str(r.get("model", "")) for r in rdms]}))
    rdms = sorted(rdms, key=lambda r: (styles[str(r.get("model", ""))].order,
                                       str(r.get("set", ""))))
    chosen = []
    for r in rdms:
        names = list(r["rdms"].keys())
        chosen.append([x for x in layers if x in names] if layers else default_rdm_layers(names))
    ncols = max(1, max(len(c) for c in chosen))
    nrows = len(rdms)
    width = style.SINGLE if ncols <= 2 else style.DOUBLE
    panel = (width - 0.9) / ncols
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
                ax.set_ylabel(f"{_wrap(s.display, 20)}\n{r.get('set', '')}", fontsize=7)
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


# --------------------------------------------------------------------------------------------
# stimulus montage


def _pick_evenly(df: pd.DataFrame, n: int, by: str | None) -> pd.DataFrame:
    if df.empty:
        return df
    df = df.sort_values([by, "stimulus_id"] if by and by in df else ["stimulus_id"])
    idx = sorted(set(np.linspace(0, len(df) - 1, min(n, len(df))).round().astype(int)))
    return df.iloc[idx]


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
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
                    if "sharpness" in r and not _isna(r["sharpness"]):
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
