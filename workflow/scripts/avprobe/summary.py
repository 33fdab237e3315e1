"""A short markdown digest of every analysis table, for the report and for a quick look."""

from __future__ import annotations

import os
from typing import Iterable, Mapping

import pandas as pd

from .io import atomic_path


def _read(paths: Iterable[str]) -> pd.DataFrame:
    frames = [pd.read_parquet(p) for p in paths]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _display(models: Mapping[str, dict], name: str) -> str:
    spec = models.get(name, {})
    return spec.get("display", name)


def _fmt(value: float, digits: int = 3) -> str:
    return "—" if pd.isna(value) else f"{value:.{digits}f}"


def _ci(row: pd.Series) -> str:
    if pd.isna(row.get("ci_low")) or pd.isna(row.get("ci_high")):
        return "—"
    return f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]"


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def best_rows(df: pd.DataFrame, metric: str, by: list[str]) -> pd.DataFrame:
    """For each group, the layer with the highest value of ``metric``."""
    sub = df[df["metric"] == metric]
    if sub.empty:
        return sub
    idx = sub.groupby(by, dropna=False)["value"].idxmax()
    return sub.loc[idx].sort_values(by)


def shared_space_layer(rows: pd.DataFrame) -> str:
    """``joint`` when the model has a projection into a shared space, else its deepest layer."""
    layers = rows.drop_duplicates("layer").sort_values("layer_index")["layer"].astype(str)
    return "joint" if "joint" in set(layers) else layers.iloc[-1]


def summarize(
    tables: Mapping[str, Iterable[str]],
    models: Mapping[str, dict],
    out_path: str | os.PathLike,
) -> str:
    """Write a markdown digest: best layer per model for each analysis, with CI and p."""
    lines = ["# avprobe results summary", ""]
    kinds = sorted({spec.get("kind", "pretrained") for spec in models.values()})
    if "untrained" in kinds:
        lines += [
            "Models marked *(untrained)* are seeded random-initialisation controls, "
            "not pretrained networks.",
            "",
        ]

    sym = _read(tables.get("symbolism", []))
    lines += ["## Sound symbolism (ROC-AUC, round = 1; chance 0.5)", ""]
    if sym.empty:
        lines += ["No sound-symbolism analysis configured.", ""]
    else:
        sym = sym[sym.get("voice", "all").astype(str) == "all"] if "voice" in sym else sym
        best = best_rows(sym, "auc", ["model", "form", "direction"])
        rows = [
            [_display(models, r["model"]), str(r.get("form", "")), str(r.get("direction", "")),
             str(r["layer"]), _fmt(r["value"]), _ci(r), _fmt(r["p"], 4), str(int(r["n"]))]
            for _, r in best.iterrows()
        ]
        lines += _markdown_table(
            ["model", "form", "direction", "best layer", "AUC", "95% CI", "p", "n"], rows
        ) + [""]

    for analysis, metric_filter, title in (
        ("rsa", None, "Layerwise RSA (best layer per model and reference)"),
        ("probe", "balanced_accuracy", "Linear probes, sharp vs round (best layer)"),
    ):
        df = _read(tables.get(analysis, []))
        lines += [f"## {title}", ""]
        if df.empty:
            lines += ["No rows.", ""]
            continue
        if metric_filter is None:
            if "partial" in df.columns:
                df = df[~df["partial"].fillna(False).astype(bool)]
            metrics = sorted(df["metric"].unique())
        else:
            metrics = [metric_filter]
        rows = []
        for metric in metrics:
            best = best_rows(df, metric, ["set", "model"])
            for _, r in best.iterrows():
                rows.append([
                    str(r["set"]), _display(models, r["model"]), metric, str(r["layer"]),
                    _fmt(r["value"]), _ci(r), _fmt(r["p"], 4), str(int(r["n"])),
                ])
        lines += _markdown_table(
            ["set", "model", "metric", "best layer", "value", "95% CI", "p", "n"], rows
        ) + [""]

    ret = _read(tables.get("retrieval", []))
    lines += ["## Retrieval (Recall@k, %; the shared-space layer of each system)", ""]
    if ret.empty:
        lines += ["No retrieval analysis configured.", ""]
    else:
        rows = []
        recall = ret[ret["metric"].astype(str).str.startswith("R@")]
        for (name, mode, direction), sub in recall.groupby(["name", "mode", "direction"], sort=True):
            sub = sub[sub["layer"] == shared_space_layer(sub)]
            values = {r["metric"]: _fmt(100 * r["value"], 1) for _, r in sub.iterrows()}
            first = sub.iloc[0]
            rows.append([
                _display(models, first["model"]), str(mode), str(direction), str(first["layer"]),
                values.get("R@1", "—"), values.get("R@5", "—"), values.get("R@10", "—"),
                str(int(first["n"])),
            ])
        lines += _markdown_table(
            ["model", "mode", "direction", "layer", "R@1", "R@5", "R@10", "queries"], rows
        ) + [""]
        wer = ret[ret["metric"] == "wer"]
        for _, r in wer.drop_duplicates("name").iterrows():
            lines += [f"Word error rate of the transcripts ({r['name']}): {_fmt(100 * r['value'], 1)}%", ""]

    text = "\n".join(lines)
    with atomic_path(out_path) as tmp:
        tmp.write_text(text)
    return text
