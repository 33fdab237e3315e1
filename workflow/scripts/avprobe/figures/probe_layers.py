"""Figure ``probe_layers``: linear-probe accuracy per layer, with transfer splits and chance."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from .common import SPLIT_FIRST, clean, ordered, read_tables, styles_for
from .layers import facet_layers
from .style import apply, empty_figure, plt

METRIC_LABEL = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy"}

#: Sets whose sharp/round label is spelled out in the stimulus itself: written pseudowords are
#: made of the sharp or the round letter inventory, so any layer of a text model decodes the
#: label from the letters alone (1.0 at every layer is expected, not a finding).
SPELLED_LABEL_SETS = {
    "pseudoword_text": "1.0 at every layer: the label is\nspelled out in the letters",
}
#: A model "sits at 1.0" when every layer's value is at least this.
CEILING = 0.99


def probe_layers(df: pd.DataFrame, models: Mapping | None = None,
                 metric: str = "balanced_accuracy", targets: list[str] | None = None,
                 sets: list[str] | None = None, layer_axis: str = "name") -> plt.Figure:
    """Linear-probe accuracy per layer with CI bands; one panel per set (× target) × split.

    Reads the probe table: ``set, model, layer, layer_index, metric, value, ci_low, ci_high,
    p, split`` (+ ``p_fdr``, ``target``, ``chance``). ``metric`` rows are drawn (balanced
    accuracy by default, as in the summary); the dash-dotted line is chance: the rows'
    ``chance`` column, else the value of ``chance`` metric rows, else 0.5 (two classes).
    Splits: ``cv`` first, then transfer splits; several probe targets (e.g. label, voice) get
    one row of panels each. A grid that would be a tall single column wraps into up to three
    panel columns (:func:`.layers.facet_layers`). Panels of a set whose label is spelled out
    in the stimulus (:data:`SPELLED_LABEL_SETS`) say so where a model sits at 1.0 on every
    layer. ``targets`` / ``sets`` keep only
    those probe targets / stimulus sets (in that order); ``layer_axis``: :mod:`.layers`.
    """
    apply()
    d = clean(df)
    if d.empty or "metric" not in d:
        return empty_figure("no rows", "the probe tables are empty")
    if "split" not in d:
        d = d.assign(split="cv")
    d["split"] = d["split"].fillna("cv").astype(str)
    if "set" not in d:
        d = d.assign(set="")
    d["set"] = d["set"].fillna("").astype(str)
    if sets:
        d = d[d["set"].isin(sets)]
    if targets and "target" in d:
        d = d[d["target"].isin(targets)]
    target_names = ordered(d["target"], tuple(targets or ("label",))) if "target" in d else []
    if len(target_names) > 1:
        d["panel_row"] = d["set"] + " · " + d["target"].fillna("").astype(str)
    else:
        d["panel_row"] = d["set"]
    chance_rows = d[(d["metric"] == "chance") & d["value"].notna()]
    rows = d[(d["metric"] == metric) & d["value"].notna()]
    if rows.empty:
        return empty_figure("no rows", f"no '{metric}' rows in the probe tables")
    styles = styles_for(models, rows)
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

    sig = "p (FDR)" if "p_fdr" in rows and rows["p_fdr"].notna().any() else "p"
    fig = facet_layers(rows, styles, "panel_row", "split", SPLIT_FIRST,
                       METRIC_LABEL.get(metric, metric), title, chance=chance,
                       sig_columns=("p_fdr", "p"), sig_label=sig, layer_axis=layer_axis)
    set_of = dict(zip(rows["panel_row"], rows["set"]))
    for (r, c), ax in getattr(fig, "panels", {}).items():
        note = SPELLED_LABEL_SETS.get(set_of.get(r))
        dd = rows[(rows["panel_row"] == r) & (rows["split"] == c)]
        at_ceiling = [m for m, sub in dd.groupby("model")
                      if styles[m].kind != "baseline" and (sub["value"] >= CEILING).all()]
        if note and at_ceiling:  # said where the figure shows it, naming no model that is not
            ax.text(0.03, 0.04, note, transform=ax.transAxes, ha="left", va="bottom",
                    fontsize=5.5, color="0.3", gid=f"note:spelled:{r}:{c}")
    return fig


def draw(inputs: Mapping, models: Mapping | None = None, **options) -> plt.Figure:
    return probe_layers(read_tables(inputs.get("tables")), models, **options)
