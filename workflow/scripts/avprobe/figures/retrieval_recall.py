"""Figure ``retrieval_recall``: Recall@K both directions per model and mode, with chance, and
the same numbers as Markdown/LaTeX tables (rows model × mode, columns direction × R@K)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from . import style
from .common import (
    MODE_LABEL, MODE_ORDER, RETRIEVAL_DIRECTION_ORDER, chance_handle, ci_segments, clean, grid,
    hide_unused, isna, legend_below, ordered, read_tables, styles_for,
)
from .style import apply, empty_figure, plt


#: What a mode's query side really is (legend), so "speech" in cascade mode reads as the
#: transcripts it is.
MODE_QUERY = {"end_to_end": "spoken captions", "cascade": "ASR transcripts of the speech",
              "text": "written captions", "fusion": "speech + transcripts"}


def retrieval_rows(df: pd.DataFrame, layer: str | None = None) -> pd.DataFrame:
    """R@K rows, one layer per system: ``layer`` if given and present, else ``joint``, else
    the deepest layer (retrieval tables may hold every layer the two towers share)."""
    d = clean(df)
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
    for col in ("value", "ci_low", "ci_high", "chance"):
        if col in d:
            d[col] = d[col] * scale
    return d


def systems_of(d: pd.DataFrame, styles) -> list[tuple[str, str, str]]:
    """(model, mode, name) in config model order, then mode order."""
    keys = d[["model", "mode", "name"]].drop_duplicates().itertuples(index=False, name=None)
    mode_rank = {m: i for i, m in enumerate(MODE_ORDER)}
    return sorted(keys, key=lambda k: (styles[k[0]].order, mode_rank.get(k[1], 99), k[1], k[2]))


def system_labels(systems, styles) -> dict:
    base = {k: (styles[k[0]].display, MODE_LABEL.get(k[1], k[1])) for k in systems}
    counts = pd.Series([base[k] for k in systems]).value_counts()
    out = {}
    for k in systems:
        display, mode = base[k]
        out[k] = (display, mode if counts[(display, mode)] == 1 else f"{mode} ({k[2]})")
    return out


def retrieval_recall(df: pd.DataFrame, models: Mapping | None = None,
                     layer: str | None = None, chance: bool = True) -> plt.Figure:
    """Recall@K (%) as grouped bars: K groups on x, one bar per model × mode, one panel per
    retrieval direction.

    Reads the retrieval table: ``model, metric (R@K), value, ci_low, ci_high, mode,
    direction, name`` (+ ``chance``: R@K of a random ranking, K / gallery size). Values in
    [0, 1] are drawn as percentages. A model's modes share its colour at decreasing
    saturation; untrained/baseline systems are grey and hatched. One layer per system
    (``layer``, else ``joint``, else the deepest). With ``chance``, a dash-dotted line over
    each K group marks chance (one per bar when the systems' galleries differ).
    """
    apply()
    d = retrieval_rows(df, layer)
    if d.empty:
        return empty_figure("no rows", "no R@K rows in the retrieval tables")
    styles = styles_for(models, d)
    systems = systems_of(d, styles)
    labels = system_labels(systems, styles)
    directions = ordered(d["direction"], RETRIEVAL_DIRECTION_ORDER)
    ks = sorted(d["k"].unique())
    per_model_modes = {}
    for k in systems:
        per_model_modes.setdefault(k[0], []).append(k)
    colors = {}
    for m, keys in per_model_modes.items():
        for i, k in enumerate(keys):
            colors[k] = style.lighten(styles[m].color, min(0.6, 0.3 * i))
    # Modes of one model are also told apart without colour: every further mode gets a hatch.
    mode_hatch = {}
    for m, keys in per_model_modes.items():
        for i, k in enumerate(keys):
            mode_hatch[k] = styles[m].hatch or ("", "\\\\\\\\", "xxxx", "----")[min(i, 3)]
    nrows, ncols = grid(len(directions), 2)
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, sharey=True,
                             figsize=style.figure_size(max(ncols, 1 + (len(systems) > 3)),
                                                       nrows, row_height=1.9,
                                                       extra_height=0.45 + 0.15 * len(systems)))
    top = 0.0
    has_chance = any_flat = cascade_speech = False
    for ax, direction in zip(axes.ravel(), directions):
        dd = d[d["direction"] == direction]
        # Only the systems with rows in this panel get a slot, centred on each K.
        here = [key for key in systems
                if ((dd["model"] == key[0]) & (dd["mode"] == key[1]) & (dd["name"] == key[2])).any()]
        width = 0.8 / max(len(here), 1)
        slot = {key: (i - (len(here) - 1) / 2) * width for i, key in enumerate(here)}
        for key in here:
            s = styles[key[0]]
            sub = dd[(dd["model"] == key[0]) & (dd["mode"] == key[1]) & (dd["name"] == key[2])]
            for _, r in sub.iterrows():
                x = ks.index(r["k"]) + slot[key]
                hatch = mode_hatch[key]
                ax.bar([x], [r["value"]], width=width * 0.92, color=colors[key],
                       hatch=hatch, edgecolor="0.15" if hatch else colors[key],
                       linewidth=0.4, zorder=2, gid=f"bar:{key[2]}:{direction}:R@{r['k']}")
                lo, hi = r.get("ci_low"), r.get("ci_high")
                ci_segments(ax, x, lo, hi, "0.1",
                            gid=f"ci:{key[2]}:{direction}:R@{r['k']}", lw=0.7, zorder=3)
                if not (isna(lo) or isna(hi)):
                    # caps, so a CI of zero width (every query tied: e.g. identical
                    # transcripts from an untrained recogniser) is still drawn and seen
                    flat = abs(hi - lo) < 1e-9
                    any_flat |= flat
                    ax.hlines([lo, hi], x - width * 0.25, x + width * 0.25, colors="0.1",
                              linewidth=1.4 if flat else 0.7, zorder=4.5 if flat else 3.1,
                              gid=f"cap:{key[2]}:{direction}:R@{r['k']}")
                top = max(top, r["value"], 0 if isna(r.get("ci_high")) else r["ci_high"])
        if chance and "chance" in dd and dd["chance"].notna().any():
            has_chance = True
            for k in ks:
                at_k = dd[(dd["k"] == k) & dd["chance"].notna()]
                values = sorted(set(at_k["chance"].round(6)))
                if len(values) == 1:
                    spans = [(k, values[0], ks.index(k) - 0.45, ks.index(k) + 0.45)]
                else:
                    spans = []
                    for key in here:
                        one = at_k[(at_k["name"] == key[2]) & (at_k["model"] == key[0])]
                        if one.empty:
                            continue
                        x = ks.index(k) + slot[key]
                        spans.append((k, float(one["chance"].iloc[0]), x - width / 2,
                                      x + width / 2))
                for kk, y, x0, x1 in spans:
                    ax.hlines([y], [x0], [x1], colors=[style.CHANCE_COLOR], linewidth=0.9,
                              linestyles=[style.CHANCE_STYLE], zorder=4,
                              gid=f"chance:{direction}:R@{kk}")
                    top = max(top, y)
        ax.set_xticks(range(len(ks)), [f"R@{k}" for k in ks])
        ax.set_title(direction)
        # In cascade mode the "speech" side is the recogniser's transcripts of the speech.
        cascade_speech |= "cascade" in set(dd["mode"]) and "speech" in direction
        ax.set_xlim(-0.5, len(ks) - 0.5)
    for row in axes:
        row[0].set_ylabel("recall (%)")
    axes[0, 0].set_ylim(0, min(100.0, top * 1.1) if top > 0 else 1.0)
    hide_unused(axes, len(directions))
    handles = [Patch(facecolor=colors[k], hatch=mode_hatch[k],
                     edgecolor="0.15" if mode_hatch[k] else colors[k],
                     label=(f"{labels[k][0]} · {labels[k][1]}" if labels[k][1] else labels[k][0])
                     + (f" ({MODE_QUERY[k[1]]})" if k[1] in MODE_QUERY else ""))
               for k in systems]
    handles.append(Line2D([], [], color="0.1", linewidth=0.7, marker="_", markersize=5,
                          label="95% CI (bootstrap over queries)"
                          + ("; a lone thick cap: zero width, every query tied" if any_flat else "")))
    if has_chance:
        handles.append(chance_handle("chance (random ranking)"))
    legend_below(fig, handles, ncol=1 if fig.get_figwidth() < 5 else 2)
    if cascade_speech:
        fig.suptitle("speech: the spoken captions; in cascade mode, their ASR transcripts",
                     fontsize=7, color="0.2")
    return fig


def _fmt(v, digits: int = 1) -> str:
    return "–" if isna(v) else f"{v:.{digits}f}"


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
    d = retrieval_rows(df, layer)
    if d.empty:
        md = "_No retrieval rows._\n"
        tex = "% no retrieval rows\n"
        return md, tex
    styles = styles_for(models, d)
    systems = systems_of(d, styles)
    labels = system_labels(systems, styles)
    directions = ordered(d["direction"], RETRIEVAL_DIRECTION_ORDER)
    ks = sorted(d["k"].unique())
    cells = {}
    for _, r in d.iterrows():
        cells[(r["model"], r["mode"], r["name"], r["direction"], int(r["k"]))] = r["value"]
    columns = [(dr, k) for dr in directions for k in ks]
    chance_row = None
    if "chance" in d and d["chance"].notna().any():
        per_cell = d.groupby(["direction", "k"])["chance"].agg(lambda s: sorted(set(s.dropna())))
        if all(len(v) == 1 for v in per_cell):  # one gallery per direction: one chance row
            chance_row = {(dr, int(k)): v[0] for (dr, k), v in per_cell.items()}

    header = ["model", "mode"] + [f"{dr} R@{k}" for dr, k in columns]
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join([":--", ":--"] + ["--:"] * len(columns)) + " |"]
    for key in systems:
        vals = [_fmt(cells.get((*key, dr, k))) for dr, k in columns]
        lines.append("| " + " | ".join([labels[key][0], labels[key][1] or "–"] + vals) + " |")
    if chance_row:
        vals = [_fmt(chance_row.get((dr, int(k)))) for dr, k in columns]
        lines.append("| " + " | ".join(["_chance_", "random ranking"] + vals) + " |")
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
    if chance_row:
        vals = [_fmt(chance_row.get((dr, int(k)))) for dr, k in columns]
        tex.append(r"\midrule")
        tex.append(" & ".join([r"\emph{Chance}", "random ranking"] + vals) + r" \\")
    tex += [r"\bottomrule", r"\end{tabular}"]
    return md, "\n".join(tex) + "\n"


def draw(inputs: Mapping, models: Mapping | None = None, **options) -> plt.Figure:
    return retrieval_recall(read_tables(inputs.get("tables")), models, **options)


def write_extras(inputs: Mapping, outputs: Mapping, models: Mapping | None = None,
                 **options) -> None:
    """The Markdown and LaTeX Recall@K tables (``outputs`` keys ``markdown``, ``latex``)."""
    from ..io import atomic_path

    if not (outputs.get("markdown") or outputs.get("latex")):
        return
    md, tex = retrieval_tables(read_tables(inputs.get("tables")), models,
                               layer=options.get("layer"))
    for path, text in ((outputs.get("markdown"), md), (outputs.get("latex"), tex)):
        if path:
            with atomic_path(path) as tmp:
                Path(tmp).write_text(text, encoding="utf-8")
