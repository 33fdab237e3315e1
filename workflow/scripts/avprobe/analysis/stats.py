"""Shared statistics: permutation p-values, bootstrap resampling and CIs, BH-FDR.

Conventions used by every analysis module:

* **Permutation p-value** (Phipson & Smyth 2010): ``p = (1 + #{null >= obs}) / (1 + n_perm)``,
  so a p-value is never 0 and is valid (never anti-conservative) for any number of shuffles.
  ``alternative="greater"`` counts ``null >= obs``; ``"less"`` counts ``null <= obs``;
  ``"two-sided"`` counts ``|null - center| >= |obs - center|`` where ``center`` is the
  statistic's value under no effect (0.5 for ROC-AUC, 0 for correlations).
  Comparisons allow a relative tolerance of 1e-10, so a null replicate that equals the
  observed value up to rounding counts as "at least as extreme".
* **Bootstrap**: resampling with replacement is expressed as integer *multiplicities*
  ``w`` (one row per replicate, one column per item: how many times the item was drawn).
  With ``groups`` the clusters are resampled (a cluster's items all get the cluster's count),
  which is what repeated measures (one word spoken by six voices) need.
  Percentile 95% CI = 2.5th and 97.5th percentiles of the finite replicates.
* **FDR**: Benjamini–Hochberg step-up adjusted p-values (NaNs pass through untouched).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.stats

TOL = 1e-10


def perm_pvalue(
    observed: float,
    null: np.ndarray,
    alternative: str = "two-sided",
    center: float = 0.0,
) -> float:
    """Monte-Carlo permutation p-value ``(1 + #{at least as extreme}) / (1 + n_perm)``.

    NaN replicates (a shuffle where the statistic is undefined) are dropped from the count
    and from ``n_perm``. Returns NaN when ``observed`` is NaN or no replicate is finite.
    """
    null = np.asarray(null, dtype=float).ravel()
    null = null[np.isfinite(null)]
    if not np.isfinite(observed) or null.size == 0:
        return float("nan")
    tol = TOL * max(1.0, abs(observed), abs(center))
    if alternative == "greater":
        extreme = null >= observed - tol
    elif alternative == "less":
        extreme = null <= observed + tol
    elif alternative == "two-sided":
        extreme = np.abs(null - center) >= abs(observed - center) - tol
    else:
        raise ValueError(f"alternative must be greater, less or two-sided, not {alternative!r}")
    return float((1 + extreme.sum()) / (1 + null.size))


def perm_pvalues(observed: np.ndarray, null: np.ndarray, alternative: str = "two-sided",
                 center: float = 0.0) -> np.ndarray:
    """:func:`perm_pvalue` for many statistics at once: ``null`` is (n_perm, n_stats)."""
    observed = np.atleast_1d(np.asarray(observed, dtype=float))
    null = np.asarray(null, dtype=float).reshape(-1, observed.size)
    return np.array([perm_pvalue(o, null[:, i], alternative, center) for i, o in enumerate(observed)])


def bootstrap_ci(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the finite replicates (NaN, NaN when none)."""
    rep = np.asarray(replicates, dtype=float).ravel()
    rep = rep[np.isfinite(rep)]
    if rep.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(rep, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def bootstrap_weights(
    rng: np.random.Generator,
    n_boot: int,
    n: int,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Multiplicities of ``n`` items in ``n_boot`` bootstrap resamples, shape (n_boot, n).

    Without ``groups`` each row is a multinomial draw of ``n`` items with equal probability
    (the counts of ``rng.integers(0, n, n)``). With ``groups`` (an integer or string label per
    item) the distinct groups are resampled with replacement and every item of a group gets
    its group's count (cluster bootstrap).
    """
    if groups is None:
        return _draw_counts(rng, n_boot, n)
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    n_groups = int(codes.max()) + 1 if codes.size else 0
    return _draw_counts(rng, n_boot, n_groups)[:, codes]


def _draw_counts(rng: np.random.Generator, n_boot: int, n: int) -> np.ndarray:
    """Counts of each of ``n`` items among ``n`` uniform draws with replacement, per row."""
    if n_boot == 0 or n == 0:
        return np.zeros((n_boot, n), dtype=np.int64)
    draws = rng.integers(0, n, size=(n_boot, n)) + (np.arange(n_boot) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(np.int64)


def weights_to_indices(w: np.ndarray) -> np.ndarray:
    """Expand one row of multiplicities into the resampled item indices (sorted)."""
    return np.repeat(np.arange(w.size), w)


def group_permutations(
    rng: np.random.Generator,
    n_perm: int,
    groups: np.ndarray,
) -> np.ndarray:
    """Item-level index maps for ``n_perm`` shuffles of whole groups, shape (n_perm, n).

    Returns ``src`` such that item ``i`` takes the attribute of item ``src[b, i]`` in
    shuffle ``b``: the groups' attributes are permuted among groups, so items of one group
    keep a common (shuffled) attribute. Groups must be attribute-homogeneous for this to be a
    label shuffle; with one item per group it is an ordinary permutation.
    """
    groups = np.asarray(groups)
    uniq, first, codes = np.unique(groups, return_index=True, return_inverse=True)
    n_groups = uniq.size
    perms = rng.permuted(np.tile(np.arange(n_groups), (n_perm, 1)), axis=1)
    # group g takes the attribute of group perms[b, g]; its representative item is `first`.
    return first[perms][:, codes]


def item_permutations(rng: np.random.Generator, n_perm: int, n: int) -> np.ndarray:
    """``n_perm`` independent permutations of ``range(n)``, shape (n_perm, n)."""
    return rng.permuted(np.tile(np.arange(n), (n_perm, 1)), axis=1)


def fdr_bh(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values; NaNs stay NaN and do not count as tests."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if m == 0:
        return out
    pv = p[ok]
    order = np.argsort(pv, kind="mergesort")
    ranked = pv[order] * m / np.arange(1, m + 1)
    adj = np.minimum.accumulate(ranked[::-1])[::-1]
    res = np.empty(m)
    res[order] = np.clip(adj, 0.0, 1.0)
    out[ok] = res
    return out


def add_fdr(df, family: Sequence[str], p_col: str = "p", out_col: str = "p_fdr"):
    """Add BH-FDR adjusted p-values to a table, one family per combination of ``family``."""
    df = df.copy()
    df[out_col] = np.nan
    if df.empty:
        return df
    keys = [c for c in family if c in df.columns]
    if not keys:
        df[out_col] = fdr_bh(df[p_col].to_numpy(dtype=float))
        return df
    family_id = df.groupby(keys, dropna=False, sort=False).ngroup().to_numpy()
    p = df[p_col].to_numpy(dtype=float)
    q = np.full(p.shape, np.nan)
    for f in np.unique(family_id):
        sel = family_id == f
        q[sel] = fdr_bh(p[sel])
    df[out_col] = q
    return df


def binomial_pvalue(k: int, n: int, p0: float) -> float:
    """Exact one-sided binomial test of ``k`` successes in ``n`` against rate ``p0`` (greater)."""
    if n <= 0 or not np.isfinite(p0):
        return float("nan")
    p0 = float(np.clip(p0, 0.0, 1.0))
    return float(scipy.stats.binomtest(int(k), int(n), p0, alternative="greater").pvalue)


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Vectors along the last axis scaled to unit L2 norm (float64); all-zero ones stay zero."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def midranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (1-based), ties get the mean of their positions (``scipy rankdata``)."""
    return scipy.stats.rankdata(np.asarray(x, dtype=float), method="average")
