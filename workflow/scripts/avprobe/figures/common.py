"""Helpers shared by the figure modules (facet orders, table cleaning, legends, CI lines).

Every figure lives in its own module ``avprobe/figures/<figure>.py``; rules/figures.smk
declares that module and the package modules it imports (this one, :mod:`.style`, ...) as the
figure job's inputs, so editing a helper here reruns the figures that use it, and editing one
figure's module reruns only that figure.
"""

from __future__ import annotations

import math
import textwrap
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from . import style

#: Preferred facet orders; values not listed follow, sorted.
DIRECTION_ORDER = ("geometric", "phonetic")
FORM_ORDER = ("speech", "text", "cascade")
SPLIT_FIRST = ("cv",)
MODE_ORDER = ("end_to_end", "cascade", "text", "fusion")
RETRIEVAL_DIRECTION_ORDER = (
    "speech→image", "image→speech", "text→image", "image→text", "audio→image", "image→audio",
)
CLASS_ORDER = ("sharp", "round")
COMPARISON_LABEL = {"spearman": "Spearman ρ", "pearson": "Pearson r", "kendall": "Kendall τ",
                    "taua": "Kendall τ-a"}
MODE_LABEL = {"end_to_end": "end-to-end", "cascade": "cascade", "text": "text",
              "fusion": "fusion"}


def ordered(values: Iterable, preferred: Sequence = ()) -> list:
    """Unique non-null ``values``: those in ``preferred`` first (in that order), then sorted."""
    seen = [v for v in pd.unique(pd.Series(list(values), dtype=object)) if not isna(v)]
    first = [p for p in preferred if p in seen]
    rest = sorted((v for v in seen if v not in preferred), key=str)
    return first + rest


def isna(v) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def styles_for(models: Mapping | None, df: pd.DataFrame | None = None, column: str = "model"):
    """:func:`style.model_styles` for the config's models plus any other model in ``df``."""
    extra = [] if df is None or column not in df else df[column].dropna().astype(str).unique()
    return style.model_styles(models, extra)


def clean(df: pd.DataFrame | None) -> pd.DataFrame:
    """A copy with string model/layer and numeric value columns; None → empty frame."""
    if df is None:
        return pd.DataFrame()
    df = df.copy()
    for col in ("model", "layer", "set", "metric"):
        if col in df:
            df[col] = df[col].astype("string").astype(object).where(df[col].notna(), None)
    for col in ("value", "ci_low", "ci_high", "null_low", "null_high", "p", "p_fdr",
                "layer_index", "n", "chance"):
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    if "layer" in df and "layer_index" not in df:
        df["layer_index"] = fallback_layer_index(df["layer"])
    elif "layer" in df:
        missing = df["layer_index"].isna()
        if missing.any():
            df.loc[missing, "layer_index"] = fallback_layer_index(df.loc[missing, "layer"])
    return df


def fallback_layer_index(layers: pd.Series) -> pd.Series:
    def key(v):
        try:
            return float(int(str(v)))
        except ValueError:
            return 1e6 if str(v) == "joint" else 0.0

    return layers.map(key)


def truthy(v) -> bool:
    """A bool column that may arrive as bool, 0/1, "true"/"false" or missing (→ False)."""
    if isna(v):
        return False
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes")
    return bool(v)


def grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    ncols = max(1, min(n, max_cols))
    return int(math.ceil(n / ncols)), ncols


def wrap(text: str, width: int = 16) -> str:
    return "\n".join(textwrap.wrap(str(text), width)) or str(text)


def layer_ticks(sub: pd.DataFrame, max_labels: int = 12) -> tuple[list[float], list[str]]:
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


def p_value(row: pd.Series, columns=("p_fdr", "p")):
    """The first present p value of ``columns`` (FDR-corrected first), else None."""
    for col in columns:
        if col in row and not isna(row[col]):
            return float(row[col])
    return None


def is_significant(row: pd.Series, columns=("p_fdr", "p")) -> bool:
    p = p_value(row, columns)
    return p is not None and p < 0.05


def legend_below(fig, handles, ncol: int | None = None, title: str | None = None) -> None:
    if not handles:
        return
    ncol = ncol or min(len(handles), 3)
    fig.legend(handles=handles, loc="outside lower center", ncol=ncol, title=title,
               columnspacing=1.2, handletextpad=0.5, borderaxespad=0.2)


def ci_segments(ax, x, lo, hi, color, gid, linestyle="-", lw=1.0, zorder=2):
    """A vertical CI line from exactly ``lo`` to ``hi`` (skipped when either is missing)."""
    if isna(lo) or isna(hi):
        return None
    return ax.vlines([x], [lo], [hi], colors=[color], linestyles=linestyle, linewidth=lw,
                     zorder=zorder, gid=gid)


def chance_line(ax, y: float, label: str = "chance", gid: str = "chance"):
    return ax.axhline(y, color=style.CHANCE_COLOR, linewidth=0.8, linestyle=style.CHANCE_STYLE,
                      zorder=0.5, label=label, gid=gid)


def chance_handle(label: str = "chance"):
    from matplotlib.lines import Line2D

    return Line2D([], [], color=style.CHANCE_COLOR, linewidth=0.8, linestyle=style.CHANCE_STYLE,
                  label=label)


def hide_unused(axes: np.ndarray, used: int) -> None:
    for ax in axes.ravel()[used:]:
        ax.set_visible(False)


def as_list(paths) -> list[str]:
    """A path or an iterable of paths (None → empty) as a list of strings."""
    import os

    if paths is None:
        return []
    if isinstance(paths, (str, os.PathLike)):
        return [str(paths)]
    return [str(p) for p in paths]


def read_tables(paths) -> pd.DataFrame:
    """Concatenate tidy tables (extra columns may differ between files); none → empty."""
    from ..io import TABLE_COLUMNS

    frames = [pd.read_parquet(p) for p in as_list(paths)]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=list(TABLE_COLUMNS))
    return pd.concat(frames, ignore_index=True, sort=False)
