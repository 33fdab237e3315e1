"""Figure ``rsa_layers``: layerwise RSA curves per model against each reference RDM."""

from __future__ import annotations

from typing import Mapping

import pandas as pd

from .common import COMPARISON_LABEL, clean, ordered, read_tables, styles_for, truthy
from .layers import facet_layers
from .style import apply, empty_figure, plt

#: Parameters of :func:`rsa_layers` that are not config options (rsa_partial sets it).
NOT_OPTIONS = ("partial",)


def rsa_rows(df: pd.DataFrame, partial: bool) -> pd.DataFrame:
    """The RSA rows of ``df`` (plain or partial), with ``reference``, ``comparison``, ``set``."""
    d = clean(df)
    if d.empty or "metric" not in d:
        return d.iloc[0:0] if not d.empty else d
    d = d[d["metric"].astype(str).str.startswith("rsa_") & d["value"].notna()]
    if "partial" in d:
        flag = d["partial"].map(truthy)
        d = d[flag == partial]
    else:
        is_partial = d["metric"].str.startswith("rsa_partial_")
        d = d[is_partial == partial]
    parsed = d["metric"].str.replace(r"^rsa_(partial_)?", "", regex=True).str.split("_").map(
        lambda t: "_".join(t[:-1]) or t[-1])
    if "reference" not in d:
        d = d.assign(reference=parsed)
    elif d["reference"].isna().any():
        d = d.assign(reference=d["reference"].fillna(parsed))
    d = d.assign(comparison=d["metric"].str.split("_").str[-1])
    if "set" not in d:
        d = d.assign(set="")
    d["set"] = d["set"].fillna("")
    return d


def rsa_layers(df: pd.DataFrame, models: Mapping | None = None, partial: bool = False,
               references: list[str] | None = None, sets: list[str] | None = None
               ) -> plt.Figure:
    """Layerwise RSA with every reference RDM (panel columns) per stimulus set (rows).

    Reads the RSA table: ``set, model, layer, layer_index, metric (rsa_<reference>_<cmp>),
    value, ci_low, ci_high`` plus ``reference`` (else parsed from ``metric``), ``p_fdr``
    (else ``p``) and ``partial`` (rows with ``partial`` true go to the partial figure only).
    One curve per model with its CI band; filled markers: FDR-corrected p < .05, hollow: not.
    Baselines are horizontal reference lines with their band across the panel.
    ``references`` / ``sets`` keep only those reference RDMs / stimulus sets (in that order).
    """
    apply()
    d = rsa_rows(df, partial)
    kind = "partial RSA" if partial else "RSA"
    if references:
        d = d[d["reference"].isin(references)]
    if sets:
        d = d[d["set"].isin(sets)]
    if d.empty:
        return empty_figure("no rows", f"no {kind} rows in the RSA tables")
    styles = styles_for(models, d)
    comparisons = ordered(d["comparison"])
    ylabel = ("partial " if partial else "") + "RSA (" + " / ".join(
        COMPARISON_LABEL.get(c, c) for c in comparisons) + ")"
    set_names = ordered(d["set"], sets or ())

    def title(r, c, grid):
        head = f"{c} RDM" + (" (partial)" if partial else "")
        return f"{r} · {head}" if r and len(set_names) > 1 and not grid else head

    sig = "p (FDR)" if "p_fdr" in d and d["p_fdr"].notna().any() else "p"
    fig = facet_layers(d, styles, "set", "reference", tuple(references or ("label",)), ylabel,
                       title, sig_label=sig)
    for ax in fig.axes:
        if ax.get_visible() and ax.get_ylim()[0] < 0 < ax.get_ylim()[1]:
            ax.axhline(0, color="0.8", linewidth=0.5, zorder=0)
    return fig


def draw(inputs: Mapping, models: Mapping | None = None, **options) -> plt.Figure:
    return rsa_layers(read_tables(inputs.get("tables")), models, **options)
