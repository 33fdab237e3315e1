"""Listeners' ratings tables (seed 001's human judgements): reading and the schema check.

Used by the RSA job (human reference RDMs, noise ceilings) and by the impacts stage; see
:func:`validate_ratings` for the schema.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

RATING_COLUMNS = ("stimulus_id", "dimension", "category", "proportion")


class RatingsError(ValueError):
    """A ratings table that does not follow the schema (module docstring)."""


def read_ratings(path: str | os.PathLike) -> pd.DataFrame:
    """A ratings table from CSV, TSV or Parquet."""
    path = Path(path)
    if not path.is_file():
        raise RatingsError(f"ratings file {str(path)!r} does not exist")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")


def _examples(frame: pd.DataFrame, n: int = 3) -> str:
    return "; ".join(", ".join(f"{k}={v!r}" for k, v in r.items()) for r in frame.head(n).to_dict("records"))


def validate_ratings(
    ratings: pd.DataFrame | str | os.PathLike,
    stimulus_ids: Sequence[str] | None = None,
    categories: Mapping[str, Sequence[str]] | None = None,
    tolerance: float = 1e-3,
) -> pd.DataFrame:
    """Check a listeners' ratings table; return it with clean types, or raise RatingsError.

    Schema: one row per stimulus × dimension × category with ``stimulus_id`` (str),
    ``dimension`` (str, e.g. material), ``category`` (str, e.g. wood) and ``proportion`` (the
    share of listeners who answered that category, in [0, 1]); each stimulus × dimension's
    proportions sum to 1 (± ``tolerance``). With a ``rater`` column the rows are per rater:
    one row per rater × stimulus × dimension × category, summing to 1 per rater × stimulus ×
    dimension. Extra columns are kept. Optional checks: every
    ``stimulus_id`` is in ``stimulus_ids`` (e.g. the impacts manifest's), and the categories
    of a dimension are among ``categories[dimension]``.
    """
    source = ""
    if not isinstance(ratings, pd.DataFrame):
        source = f"{ratings}: "
        ratings = read_ratings(ratings)
    missing = [c for c in RATING_COLUMNS if c not in ratings.columns]
    if missing:
        raise RatingsError(
            f"{source}ratings need the columns {list(RATING_COLUMNS)}; missing {missing} "
            f"(found {list(ratings.columns)})"
        )
    if ratings.empty:
        raise RatingsError(f"{source}the ratings table has no rows")
    nulls = ratings[list(RATING_COLUMNS)].isna()
    if nulls.any().any():
        bad = ratings[nulls.any(axis=1)]
        raise RatingsError(f"{source}{len(bad)} ratings rows have empty fields, e.g. {_examples(bad[list(RATING_COLUMNS)])}")
    out = ratings.copy()
    for col in ("stimulus_id", "dimension", "category"):
        out[col] = out[col].astype(str).str.strip()
        empty = out[out[col] == ""]
        if len(empty):
            raise RatingsError(f"{source}{len(empty)} rows have an empty {col}")
    proportion = pd.to_numeric(out["proportion"], errors="coerce")
    bad = out[proportion.isna() | ~np.isfinite(proportion.fillna(0)) | (proportion < 0) | (proportion > 1)]
    if len(bad):
        raise RatingsError(
            f"{source}proportion must be a number in [0, 1]; {len(bad)} rows are not, "
            f"e.g. {_examples(bad[list(RATING_COLUMNS)])}"
        )
    out["proportion"] = proportion.astype(float)
    per = ["stimulus_id", "dimension"]
    if "rater" in out.columns:
        if out["rater"].isna().any():
            raise RatingsError(f"{source}{int(out['rater'].isna().sum())} rows have an empty rater")
        out["rater"] = out["rater"].astype(str).str.strip()
        per = ["rater"] + per
    what = " × ".join(per)
    dup = out[out.duplicated(per + ["category"], keep=False)]
    if len(dup):
        raise RatingsError(
            f"{source}each {what} × category must appear once; {len(dup)} rows repeat one, "
            f"e.g. {_examples(dup[per + ['category', 'proportion']])}"
        )
    sums = out.groupby(per, sort=True)["proportion"].sum()
    off = sums[(sums - 1.0).abs() > tolerance]
    if len(off):
        shown = ", ".join(f"{'/'.join(map(str, key))}: {total:.4g}" for key, total in off.head(5).items())
        raise RatingsError(
            f"{source}proportions must sum to 1 per {what}; {len(off)} do not ({shown})"
        )
    if stimulus_ids is not None:
        unknown = sorted(set(out["stimulus_id"]) - {str(s) for s in stimulus_ids})
        if unknown:
            raise RatingsError(
                f"{source}{len(unknown)} rated stimulus ids are not in the stimulus set, e.g. {unknown[:5]}"
            )
    if categories is not None:
        for dimension, part in out.groupby("dimension"):
            if dimension in categories:
                extra = sorted(set(part["category"]) - set(categories[dimension]))
                if extra:
                    raise RatingsError(
                        f"{source}dimension {dimension!r} has unknown categories {extra}; "
                        f"known: {list(categories[dimension])}"
                    )
    return out
