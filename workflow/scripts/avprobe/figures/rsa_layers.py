"""Figure ``rsa_layers``: layerwise RSA curves per model against each reference RDM."""

from __future__ import annotations

from typing import Mapping

import pandas as pd

from . import style
from .common import (COMPARISON_LABEL, clean, legend_below, ordered, read_tables, styles_for,
                     truthy)
from .layers import facet_layers, is_reference_line, place_layers
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


def covariate_names(d: pd.DataFrame, styles: Mapping) -> list[str]:
    """Display names of the covariate models regressed out (the ``covariate`` column holds
    the covariate's embeddings file, ``results/embeddings/<set>/<model>.parquet``)."""
    if "covariate" not in d:
        return []
    from pathlib import PurePath

    out = []
    for path in d["covariate"].dropna().astype(str).unique():
        if not path:
            continue
        name = PurePath(path).stem
        display = styles[name].display if name in styles else name
        if display not in out:
            out.append(display)
    return out


def rsa_layers(df: pd.DataFrame, models: Mapping | None = None, partial: bool = False,
               references: list[str] | None = None, sets: list[str] | None = None,
               layer_axis: str = "name") -> plt.Figure:
    """Layerwise RSA with every reference RDM (panel columns) per stimulus set (rows).

    Reads the RSA table: ``set, model, layer, layer_index, metric (rsa_<reference>_<cmp>),
    value, ci_low, ci_high`` plus ``reference`` (else parsed from ``metric``), ``p_fdr``
    (else ``p``) and ``partial`` (rows with ``partial`` true go to the partial figure only).
    One curve per model with its CI band; filled markers: FDR-corrected p < .05, hollow: not.
    Baselines are horizontal reference lines with their band across the panel. A grey band
    spans the noise ceiling (``noise_ceiling_low``–``noise_ceiling_high``) of a panel whose
    rows give one finite ceiling (human references rated per rater). The ceiling bounds a
    model's mean score against the single raters, not ``value`` (which uses the rater-averaged
    reference and may exceed it), so those panels also show ``value_raters`` as a thin dotted
    line with small hollow markers in the model's colour.
    ``references`` / ``sets`` keep only those reference RDMs / stimulus sets (in that order).
    ``layer_axis``: ``name`` places each model's layers by name (numbers at their number,
    ``joint`` after the deepest numbered layer of any model); ``depth`` on a relative-depth
    axis (layer / last layer), for models of very different depths (:mod:`.layers`).
    Partial RSA names the covariate regressed out (the ``covariate`` column: the covariate
    model's embeddings file) in each panel title, and says that the permutation test is
    one-sided: a negative value is n.s. even when its CI excludes 0.
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
    d = place_layers(d, layer_axis)
    comparisons = ordered(d["comparison"])
    ylabel = ("partial " if partial else "") + "RSA (" + " / ".join(
        COMPARISON_LABEL.get(c, c) for c in comparisons) + ")"
    set_names = ordered(d["set"], sets or ())

    covariates = covariate_names(d, styles) if partial else []

    def title(r, c, grid):
        # partial: the figure's title names what was regressed out, for every panel
        head = f"{c} RDM"
        return f"{r} · {head}" if r and len(set_names) > 1 and not grid else head

    sig = "p (FDR)" if "p_fdr" in d and d["p_fdr"].notna().any() else "p"
    if partial:
        sig = f"one-sided {sig} (H1: > 0)"
    nonsig = "n.s. (so is every value < 0)" if partial else "n.s."
    fig = facet_layers(d, styles, "set", "reference", tuple(references or ("label",)), ylabel,
                       title, sig_label=sig, layer_axis=layer_axis, nonsig_label=nonsig)
    if partial:
        what = (f"the RDM of {' / '.join(covariates)} regressed out of each model's RDM"
                if covariates else "a covariate RDM regressed out of each model's RDM")
        fig.suptitle(f"Partial RSA: {what}", fontsize=7.5, gid="covariate")
    ceiling_bands(fig, d, tuple(references or ("label",)), styles)
    for ax in fig.axes:
        if ax.get_visible() and ax.get_ylim()[0] < 0 < ax.get_ylim()[1]:
            ax.axhline(0, color="0.8", linewidth=0.5, zorder=0)
    return fig


def ceiling_bands(fig: plt.Figure, d: pd.DataFrame, col_order: tuple, styles: Mapping | None = None
                  ) -> None:
    """Grey noise-ceiling band per (set, reference) panel laid out by ``facet_layers``, with
    every model's ``value_raters`` (the score on the ceiling's scale, :func:`rater_curves`)."""
    if not {"noise_ceiling_low", "noise_ceiling_high"} <= set(d.columns):
        return
    lo = pd.to_numeric(d["noise_ceiling_low"], errors="coerce")
    hi = pd.to_numeric(d["noise_ceiling_high"], errors="coerce")
    if not (lo.notna() & hi.notna()).any():
        return
    where = getattr(fig, "panels", {})  # (set, reference) → axes, laid out by facet_layers
    ncols = max((ax.get_subplotspec().get_geometry()[1] for ax in where.values()), default=1)
    if "x" not in d:
        d = place_layers(d)
    drawn, raters = False, False
    for (r, c), ax in where.items():
        sel = (d["set"] == r) & (d["reference"] == c)
        pairs = {(round(a, 9), round(b, 9)) for a, b in zip(lo[sel], hi[sel]) if pd.notna(a) and pd.notna(b)}
        if len(pairs) != 1:  # none, or several comparisons / ceilings
            continue
        a, b = pairs.pop()
        ax.axhspan(a, b, color="0.88", linewidth=0, zorder=0.2, gid=f"ceiling:{r}:{c}")
        drawn = True
        if styles is not None:
            raters |= rater_curves(ax, d[sel], styles)
    if drawn and fig.legends:
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch

        old = fig.legends.pop()
        handles = list(old.legend_handles) + [Patch(color="0.88", label="noise ceiling (vs single raters)")]
        if raters:
            handles.append(Line2D([], [], color="0.3", linestyle=":", linewidth=0.7, marker="o",
                                  markersize=2.4, markerfacecolor="white", label="model vs single raters"))
        legend_below(fig, handles, ncol=min(len(handles), 2 if ncols <= 2 else 4))


def rater_curves(ax, dd: pd.DataFrame, styles) -> bool:
    """Each model's ``value_raters`` on ``ax``: a thin dotted line with small hollow markers
    along the layers, or a thin dotted reference line where ``value`` is one (baselines).
    Returns whether anything was drawn."""
    if "value_raters" not in dd:
        return False
    dd = dd.assign(value_raters=pd.to_numeric(dd["value_raters"], errors="coerce"))
    names = style.model_order(styles, dd["model"])
    n_layers = {m: dd[dd["model"] == m]["layer"].nunique() for m in names}
    any_multi = any(n > 1 for m, n in n_layers.items() if styles[m].kind != "baseline")
    drawn = False
    for m in names:
        s = styles[m]
        sub = dd[(dd["model"] == m) & dd["value_raters"].notna()].sort_values("x")
        if sub.empty:
            continue
        drawn = True
        if is_reference_line(styles, m, n_layers[m], any_multi):
            for y in sub.drop_duplicates("layer")["value_raters"]:
                ax.axhline(y, color=s.color, linestyle=":", linewidth=0.7, zorder=1.7, gid=f"raters:{m}")
            continue
        ax.plot(sub["x"].to_numpy(float), sub["value_raters"].to_numpy(float), color=s.color,
                linestyle=":", linewidth=0.7, marker=s.marker, markersize=2.4, markerfacecolor="white",
                markeredgewidth=0.6, zorder=1.9, gid=f"raters:{m}")
    return drawn


def draw(inputs: Mapping, models: Mapping | None = None, **options) -> plt.Figure:
    return rsa_layers(read_tables(inputs.get("tables")), models, **options)
