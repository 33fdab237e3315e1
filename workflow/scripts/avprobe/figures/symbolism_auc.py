"""Figure ``symbolism_auc``: sound-symbolism AUC per model and layer, speech vs text."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from . import style
from .common import (
    DIRECTION_ORDER, FORM_ORDER, chance_handle, chance_line, ci_segments, clean, isna,
    legend_below, ordered, p_value, read_tables, styles_for, wrap,
)
from .style import apply, empty_figure, plt

NULL_COLOR = "0.88"
#: How each form's markers are filled, the same in every figure whichever forms are present:
#: speech filled, text hollow, cascade (speech → ASR → text) half-filled.
FORM_FILL = {"speech": "full", "text": "none", "cascade": "bottom"}
#: What a value above / below chance means (positive class: round).
#: Written outside the panel's right edge, beside the chance line, so no marker hides them.
SIDE_TEXT = ("↑ round–round", "↓ reversed")
METRIC_LABEL = {"auc": "ROC-AUC", "tau_label": "Kendall τ (label)",
                "tau_sharpness": "Kendall τ (sharpness)", "delta_p_kb": "ΔP kiki/bouba"}


def _is_pooled(voice) -> bool:
    return isna(voice) or str(voice) in ("all", "")


def symbolism_auc(df: pd.DataFrame, models: Mapping | None = None, metric: str = "auc",
                  chance: float | None = None, voices: bool = True) -> plt.Figure:
    """ROC-AUC of the sharp/round split per model and layer, speech and text side by side.

    Reads the symbolism table: ``model, layer, layer_index, metric, value, ci_low, ci_high,
    p`` (+ ``p_fdr``, ``null_low``, ``null_high``) plus ``direction`` (facets, one row each),
    ``form`` (speech filled, text hollow, cascade half-filled: :data:`FORM_FILL`, fixed
    whichever forms are present; side by side) and ``voice``: the pooled
    rows (``"all"``/missing) are the markers with CIs; with ``voices`` true, each single
    voice's value is a small pale dot to the right of its pooled marker (the spread across
    voices). Vertical lines span exactly ``[ci_low, ci_high]``; a wide pale bar behind each
    marker spans ``[null_low, null_high]``, the central 95% of the cross-modal null (anchor
    labels shuffled: the symbolism module docstring). Stars above the CIs mark the primary
    p < .05/.01/.001 (FDR-corrected ``p_fdr`` when the table has it, else ``p``; never
    ``p_item_label``, which does not test the cross-modal claim); the dash-dotted line is
    chance (0.5 for AUC, 0 otherwise). Beside the chance line, outside the panel, the figure
    says which side is which: above chance, round items score rounder (round words with round
    shapes, "round–round"); below, the reverse.
    """
    apply()
    d = clean(df)
    if d.empty or "metric" not in d:
        return empty_figure("no rows", "the symbolism tables are empty")
    d = d[d["metric"] == metric]
    d = d[d["value"].notna()] if "value" in d else d.iloc[0:0]
    if "voice" in d:
        pooled = d["voice"].map(_is_pooled)
        per_voice = d[~pooled] if voices else d.iloc[0:0]
        d = d[pooled]
    else:
        per_voice = d.iloc[0:0]
    if d.empty:
        return empty_figure("no rows", f"no '{metric}' rows in the symbolism tables")
    if chance is None:
        chance = 0.5 if metric == "auc" else 0.0
    if "direction" not in d:
        d = d.assign(direction="score")
        per_voice = per_voice.assign(direction="score")
    if "form" not in d:
        d = d.assign(form="speech")
        per_voice = per_voice.assign(form="speech")
    for frame in (d, per_voice):
        frame["direction"] = frame["direction"].fillna("score").astype(str)
        frame["form"] = frame["form"].fillna("speech").astype(str)
    styles = styles_for(models, d)
    directions = ordered(d["direction"], DIRECTION_ORDER)
    forms = ordered(d["form"], FORM_ORDER)
    model_names = style.model_order(styles, d["model"])
    sig_cols = ("p_fdr", "p") if "p_fdr" in d and d["p_fdr"].notna().any() else ("p",)

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
    offsets = {f: (i - (len(forms) - 1) / 2) * (0.34 if len(forms) > 1 else 0.0)
               for i, f in enumerate(forms)}
    voice_dx = 0.13 if len(forms) > 1 else 0.18

    n_slots = len(slots)
    width = style.SINGLE if n_slots <= 8 else style.DOUBLE
    fig, axes = plt.subplots(len(directions), 1, squeeze=False, sharex=True, sharey=True,
                             figsize=(width, 1.75 * len(directions) + 0.85))
    lo_all, hi_all = [chance], [chance]
    any_voice = any_star = any_null = False
    for ax, direction in zip(axes[:, 0], directions):
        dd = d[d["direction"] == direction]
        vv = per_voice[per_voice["direction"] == direction]
        chance_line(ax, chance)
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
                    n_lo, n_hi = r.get("null_low"), r.get("null_high")
                    if not (isna(n_lo) or isna(n_hi)):
                        any_null = True
                        ax.vlines([xi], [n_lo], [n_hi], colors=[NULL_COLOR], linewidth=5.0,
                                  zorder=1.2, gid=f"null:{m}:{r['layer']}:{form}")
                        lo_all.append(n_lo)
                        hi_all.append(n_hi)
                    ci_segments(ax, xi, r.get("ci_low"), r.get("ci_high"), s.color,
                                gid=f"ci:{m}:{r['layer']}:{form}")
                    ax.plot([xi], [r["value"]], linestyle="none", marker=s.marker,
                            markersize=4, markeredgewidth=0.9, color=s.color,
                            **form_marker(form, s.color), zorder=3,
                            gid=f"point:{m}:{r['layer']}:{form}")
                    top = r.get("ci_high")
                    top = r["value"] if isna(top) else top
                    lo = r.get("ci_low")
                    lo_all.append(r["value"] if isna(lo) else lo)
                    hi_all.append(top)
                    mark = style.stars(p_value(r, sig_cols))
                    if mark:
                        any_star = True
                        ax.annotate(mark, (xi, top), xytext=(0, 1), textcoords="offset points",
                                    ha="center", va="bottom", fontsize=7, color="0.1",
                                    gid="significance")
                    one = vv[(vv["model"] == m) & (vv["form"] == form)
                             & (vv["layer"] == r["layer"])]
                    if not one.empty:
                        any_voice = True
                        vals = one["value"].to_numpy(float)
                        ax.plot(np.full(vals.size, xi + voice_dx), vals, linestyle="none",
                                marker="o", markersize=1.8, markeredgewidth=0,
                                color=style.lighten(s.color, 0.35), alpha=0.9, zorder=2.5,
                                gid=f"voice:{m}:{r['layer']}:{form}")
                        lo_all.append(float(vals.min()))
                        hi_all.append(float(vals.max()))
        ax.set_title(f"{direction} score" if direction in DIRECTION_ORDER else direction)
        ax.set_ylabel(METRIC_LABEL.get(metric, metric) + " (round = 1)"
                      if metric == "auc" else METRIC_LABEL.get(metric, metric))
        trans = ax.get_yaxis_transform()
        for text, va, dy, gid in ((SIDE_TEXT[0], "bottom", 2, "side:above"),
                                  (SIDE_TEXT[1], "top", -2, "side:below")):
            ax.annotate(text, xy=(1.0, chance), xycoords=trans, xytext=(3, dy),
                        textcoords="offset points", ha="left", va=va, fontsize=5.5,
                        color="0.3", annotation_clip=False, gid=gid)
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
            labels.append(f"{wrap(styles[m].display, 14)}\n[{layer}]")
        layer_names = {layer for (_, layer) in slots}
        if len(layer_names) == 1:  # e.g. every model scored in its joint space
            labels = [wrap(styles[m].display, 14) for m, _, _ in groups]
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
        if len(groups) > 1:
            top = axes[0, 0].secondary_xaxis("top")
            top.set_xticks([(a + b) / 2 for _, a, b in groups],
                           [wrap(styles[m].display, 18) for m, _, _ in groups], fontsize=6.5)
            top.tick_params(length=0)
            top.spines["top"].set_visible(False)
    bottom.set_xlim(-0.7, max(slots.values()) + 0.7)
    # When the ticks name the models, the legend only needs to explain the markers.
    handles = [] if one_layer_each and len(groups) > 1 else style.legend_handles(
        styles, model_names)
    if len(forms) > 1 or forms != ["speech"]:  # say how each form is filled
        handles += [Line2D([], [], linestyle="none", marker="o", color="0.2",
                           **form_marker(f, "0.2"), label=f) for f in forms]
    if any_voice:
        handles.append(Line2D([], [], linestyle="none", marker="o", markersize=2.2,
                              markeredgewidth=0, color="0.55", label="single voices"))
    handles.append(chance_handle(f"chance ({chance:g})"))
    if any_null:
        handles.append(Patch(color=NULL_COLOR, label="95% of null (anchor labels shuffled)"))
    if any_star:
        p_name = "p (FDR)" if sig_cols[0] == "p_fdr" else "p"
        handles.append(Line2D([], [], linestyle="none",
                              label=f"*, **, ***: {p_name} < .05, .01, .001"))
    legend_below(fig, handles, ncol=min(len(handles), 2 if width == style.SINGLE else 4))
    return fig


def form_marker(form: str, color) -> dict:
    """Marker fill of a form (:data:`FORM_FILL`; other forms hollow)."""
    fill = FORM_FILL.get(form, "none")
    if fill == "full":
        return {"fillstyle": "full", "markerfacecolor": color}
    if fill == "none":
        return {"fillstyle": "full", "markerfacecolor": "white"}
    return {"fillstyle": fill, "markerfacecolor": color, "markerfacecoloralt": "white"}


def draw(inputs: Mapping, models: Mapping | None = None, **options) -> plt.Figure:
    return symbolism_auc(read_tables(inputs.get("tables")), models, **options)
