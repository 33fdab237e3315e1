"""Layerwise representational similarity analysis (seed 001, Bost et al., experiment 1).

Pipeline for one (set, model) embeddings file:

1. **Units.** Reference words (``is_reference``) are dropped. When a set repeats a ``word``
   (pseudowords: one word × six voices) the clips of a word are averaged into one unit by
   default (``average_by: auto``), because the word — not the clip — is the exchangeable unit:
   shuffling or resampling clips would treat a word's six voices as independent evidence,
   and same-word pairs (always same label, acoustically close) would inflate the label RSA.
   ``average_by: null`` keeps clips; ``max_stimuli`` draws a label-stratified random subset.
   The table says what was used: ``n`` = units in the RDM, ``unit`` (word | stimulus),
   ``n_stimuli`` = embedded rows behind them, ``n_pairs``.
2. **RDM per layer** (upper triangle, row-major, as ``rsatoolbox``):

   ============  ===============================================  =============================
   distance      definition                                       rsatoolbox equivalent
   ============  ===============================================  =============================
   cosine        1 − x·y / (|x||y|)                               ``calc_rdm(Dataset([X, −X]),
                                                                   'correlation')`` (exact: the
                                                                   rows of [X, −X] have mean 0)
   correlation   1 − Pearson r of the two patterns                ``calc_rdm(ds, 'correlation')``
   euclidean     squared Euclidean distance / n_channels          ``calc_rdm(ds, 'euclidean')``
   ============  ===============================================  =============================

   ``euclidean`` follows rsatoolbox (squared, per channel), so Pearson comparisons agree.
   A degenerate row — all zeros under ``cosine``, constant under ``correlation`` — has no
   defined distance: :func:`rdm_matrix` gives NaN for its pairs, as rsatoolbox and scipy do
   for a zero row (for a constant non-zero row they give 1.0 ± rounding, because subtracting
   the mean leaves 1e-16 residue; the test here is exact: ``ptp == 0``), never a silent 1.0;
   :func:`run_rsa` stops with an error naming the stimuli.
3. **Reference RDMs** (``reference`` column), each used when the manifest has the column and
   it varies: categorical ``labels`` (default ``label``, ``material``, ``hollowness``,
   ``extension``: 0 same class, 1 different); continuous ``attributes`` (default
   ``sharpness``, ``size``: |a_i − a_j|); ``human_*`` from ratings (below), computed on the
   units that have ratings on every dimension (their rows' ``n`` says how many).
4. **Comparison** (``comparison`` column): ``spearman`` (default), ``pearson`` (rsatoolbox
   ``corr``), ``tau-a`` — equal to ``rsatoolbox.rdm.compare`` with 'spearman', 'corr', 'tau-a'.
5. **Partial RSA** (``partial = True``, metric ``rsa_partial_<ref>_<cmp>``): when a covariate
   embeddings file is given (e.g. the log-mel baseline of the same set = spectrogram distance),
   its RDM (same distance) is regressed out of the model RDM by least squares on the upper
   triangles (``d_model = a + b·d_cov + e``) and the residuals ``e`` are compared.
6. **Inference.**

   * 95% CI: bootstrap over units (``n_bootstrap``): units are resampled with replacement; a
     resampled RDM contains every pair (i, j) of distinct units with multiplicity w_i·w_j,
     and the pairs of a unit with its own duplicate are **dropped** (never a distance of 0).
     This is computed exactly, for all resamples at once, as weighted sums of upper-triangle
     entries (quadratic forms ``wᵀ M w`` → one matrix product per layer).
     For ``spearman`` the ranks of the full-sample RDMs are computed once and reused in every
     resample ("rank once"): a replicate is the weighted Pearson correlation of the
     full-sample rank vectors over the resampled pairs, not a re-ranking of each resample.
     For ``pearson`` replicates are exact.
   * p-value: permutation test (``n_permutations``) shuffling the unit labels of the
     reference RDM (Mantel / QAP test), one-sided (H1: model dissimilarity increases with
     reference dissimilarity). The same shuffles are used for every layer. These nulls are
     exact — ranks of a shuffled reference are the shuffled ranks — and computed by matrix
     products (references with few distinct unit types) or by gathering shuffled matrices.
   * ``tau-a`` has no such shortcut: its p and CI use at most ``tau_max_stimuli`` units
     (default 100) drawn at random, recomputing tau-a per replicate (``n_inference`` says
     so): p tests the subset's tau-a against shuffles of the subset; the CI adds the subset's
     bootstrap deviations, scaled by sqrt(n_inference / n), to the full-sample value.
   * ``p_fdr``: Benjamini–Hochberg across layers, per (reference, comparison, partial).

Human ratings (``ratings`` file, Parquet or CSV) — schema, one row per stimulus × dimension
× response category: ``stimulus_id, dimension, category, proportion`` (the share of
participants choosing ``category`` for that stimulus on that ``dimension``; missing
categories count 0; each stimulus × dimension is renormalised to sum to 1). Per dimension:

* ``human_kl_<dimension>``: symmetric KL divergence KL(p‖q) + KL(q‖p) between the two
  stimuli's response distributions, after additive smoothing p ← (p + ε)/(1 + Cε), ε = 1e-3
  (KL is infinite for a category one stimulus never received).
* ``human_mode_<dimension>``: 0 when the two distributions have the same mode (ties → first
  category in sorted order), 1 otherwise.
* ``human_kl_mean`` / ``human_mode_mean``: the average over dimensions.

With averaged units a unit's distribution is the mean of its stimuli's distributions.

**Per-rater ratings** (optional ``rater`` column): each row is then one rater's response
distribution for a stimulus × dimension (typically one-hot: proportion 1 for the chosen
category), renormalised per rater × stimulus × dimension. The ``human_*`` references above
are computed from the mean over raters (per stimulus × dimension, the average of the
distributions of the raters who rated it; missing categories count 0). Without a ``rater``
column nothing changes.

**Noise ceiling** (Nili et al. 2014; ``noise_ceiling_low``, ``noise_ceiling_high``,
``n_raters`` columns of the ``human_*`` rows, partial rows included; NaN for other references,
without a ``rater`` column, or with fewer than 2 raters). Every rater gets the same RDMs
(``human_kl_<dim>``, ``human_mode_<dim>``, the means; the categories of a dimension are those
of the whole table) on the **ceiling units**: the units rated by every rater on every
dimension (fewer than 3 → NaN; these may be fewer than the references' ``n``). Raters whose
RDM is constant on these units are left out of that reference's ceiling (a correlation with
a constant is undefined); ``n_raters`` counts the raters used. With R raters' RDM vectors
d_1…d_R and the run's comparison ``compare``:

* upper bound = mean_r compare(d_r, pool(d_1…d_R));
* lower bound = mean_r compare(d_r, pool(d_s, s ≠ r)) (leave one rater out);
* pool = the average of the raters' RDM vectors after the comparison's transform, as
  ``rsatoolbox.util.inference_util.pool_rdm``: their ranks for ``spearman`` and ``tau-a``,
  their z-scores (population sd) for ``pearson`` (``corr``).

This equals ``rsatoolbox.inference.boot_noise_ceiling(rdms, method, rdm_descriptor='index')``
(one RDM per rater).

**Scale.** The ceiling bounds a model's *mean score against the single raters*, not ``value``.
``value`` compares the model with the aggregate (mean-distribution) reference, which is less
noisy than one rater, so a good model's ``value`` can exceed the upper bound (planted: 12
raters = true RDM + noise of 0.5 sd, spearman: the true RDM's value 0.99, ceiling 0.89–0.91,
value_raters 0.90). The score on the ceiling's scale is the ``value_raters`` column (rows with
a finite ceiling, else NaN):

* value_raters = mean_r compare(m, d_r) over the raters used in the ceiling, m = the model RDM
  restricted to the ceiling units, with the run's comparison — equal to the mean
  ``evaluations`` of ``rsatoolbox.inference.eval_fixed(ModelFixed(m), rdms, method)``;
* partial rows use the same residual model RDM as their ``value``: residuals of the fit on all
  units (as for every ``human_*`` row), restricted to the ceiling units' pairs — not a refit on
  the ceiling units.

Performance (one core, 1000 bootstraps + 1000 permutations, references label + sharpness):
3888 pseudoword clips averaged to 648 words (~210k pairs) take ~0.65 s per layer (~9 s for
7 layers + their 7 partial-RSA residual "layers"); keeping all 3888 clips (7.6M pairs) takes
~17 s per layer. rsatoolbox is used only by the tests.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd
import scipy.sparse
import scipy.stats

from .. import io as avio
from .. import validate
from ..ratings import RATING_COLUMNS, validate_ratings
from ..sets import IMPACT_LABELS
from . import stats

log = logging.getLogger("avprobe")

DISTANCES = ("cosine", "correlation", "euclidean")
_COMPARISONS = {
    "spearman": "spearman",
    "pearson": "pearson",
    "corr": "pearson",
    "tau-a": "tau_a",
    "tau_a": "tau_a",
    "kendall_tau_a": "tau_a",
}
KL_EPS = 1e-3
#: Above this many distinct unit types a permutation null is gathered, not multiplied.
_MAX_TYPES_GEMM = 16
#: Gathered nulls are computed for all layers at once while their matrices fit in this.
_GATHER_STACK_BYTES = 5e8


def normalize_comparison(method: str) -> str:
    """Canonical comparison name: spearman | pearson | tau_a."""
    try:
        return _COMPARISONS[str(method).lower()]
    except KeyError:
        raise ValueError(f"comparison must be one of {sorted(_COMPARISONS)}, not {method!r}") from None


# ----------------------------------------------------------------------------- RDMs
def degenerate_rows(x: np.ndarray, distance: str = "cosine") -> np.ndarray:
    """Rows whose distance to anything is undefined: an all-zero row under ``cosine`` (no
    direction), a constant row under ``correlation`` (no variance). ``euclidean`` has none."""
    x = np.asarray(x, dtype=np.float64)
    if distance == "cosine":
        return ~(np.abs(x) > 0).any(axis=1)
    if distance == "correlation":
        return np.ptp(x, axis=1) == 0 if x.shape[1] else np.ones(len(x), dtype=bool)
    return np.zeros(len(x), dtype=bool)


def rdm_matrix(x: np.ndarray, distance: str = "cosine") -> np.ndarray:
    """Full symmetric (n, n) float64 dissimilarity matrix with a zero diagonal.

    A degenerate row (:func:`degenerate_rows`) has NaN distance to every other row, as in
    ``scipy.spatial.distance.pdist`` and ``rsatoolbox.rdm.calc_rdm`` (never a silent 1.0);
    :func:`run_rsa` refuses such a layer with an error naming the stimuli.
    """
    x = np.asarray(x, dtype=np.float64)
    if distance == "cosine":
        xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)
        d = 1.0 - xn @ xn.T
    elif distance == "correlation":
        xc = x - x.mean(1, keepdims=True)
        xc /= np.maximum(np.linalg.norm(xc, axis=1, keepdims=True), 1e-300)
        d = 1.0 - xc @ xc.T
    elif distance == "euclidean":
        sq = np.einsum("ij,ij->i", x, x)
        d = (sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)) / x.shape[1]
        np.maximum(d, 0.0, out=d)
    else:
        raise ValueError(f"distance must be one of {DISTANCES}, not {distance!r}")
    d = 0.5 * (d + d.T)
    bad = degenerate_rows(x, distance)
    if bad.any():
        d[bad, :] = np.nan
        d[:, bad] = np.nan
    np.fill_diagonal(d, 0.0)
    return d


def check_rdm_rows(x: np.ndarray, distance: str, unit_ids, what: str) -> None:
    """Raise :class:`avprobe.validate.BadInputError` naming the units whose rows make the RDM
    undefined (:func:`degenerate_rows`)."""
    bad = np.flatnonzero(degenerate_rows(x, distance))
    if bad.size:
        kind = "all-zero" if distance == "cosine" else "constant"
        names = ", ".join(repr(str(unit_ids[i])) for i in bad[:5]) + (", …" if bad.size > 5 else "")
        raise validate.BadInputError(
            f"{what}: {bad.size} {kind} embedding(s) ({names}) have no {distance} distance to anything "
            f"(rsatoolbox and scipy give NaN); quarantine or drop these stimuli, or use another "
            f"rsa.distance (euclidean is defined for them)")


def upper(m: np.ndarray) -> np.ndarray:
    """Upper triangle (k = 1) in row-major order, like rsatoolbox's RDM vectors."""
    return m[np.triu_indices(m.shape[0], 1)]


def square(v: np.ndarray, n: int | None = None, diagonal: float = 0.0) -> np.ndarray:
    """Inverse of :func:`upper`: the symmetric matrix of an upper-triangle vector."""
    v = np.asarray(v, dtype=np.float64)
    if n is None:
        n = int(round((1 + np.sqrt(1 + 8 * v.size)) / 2))
    m = np.zeros((n, n))
    iu = np.triu_indices(n, 1)
    m[iu] = v
    m += m.T
    if diagonal:
        np.fill_diagonal(m, diagonal)
    return m


def rdm_vector(x: np.ndarray, distance: str = "cosine") -> np.ndarray:
    """Upper-triangle RDM vector of the rows of ``x``."""
    return upper(rdm_matrix(x, distance))


def pair_index(i: np.ndarray, j: np.ndarray, n: int) -> np.ndarray:
    """Position of pair (i, j), i ≠ j, in the upper-triangle vector of an n × n RDM."""
    i, j = np.minimum(i, j), np.maximum(i, j)
    return i * n - i * (i + 1) // 2 + (j - i - 1)


def resampled_pairs(sample: np.ndarray, n: int) -> np.ndarray:
    """Upper-triangle positions of the RDM of a resample (unit indices, with duplicates).

    Every pair of positions a < b of the resample becomes pair (sample[a], sample[b]);
    a pair of a unit with its own duplicate has no dissimilarity and is **dropped**.
    """
    sample = np.asarray(sample)
    a, b = np.triu_indices(sample.size, 1)
    i, j = sample[a], sample[b]
    keep = i != j
    return pair_index(i[keep], j[keep], n)


# ----------------------------------------------------------------------------- comparisons
def _centered_unit(v: np.ndarray) -> np.ndarray | None:
    c = v - v.mean()
    norm = np.linalg.norm(c)
    return None if norm == 0 or not np.isfinite(norm) else c / norm


def tau_a(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-a = (concordant − discordant) / (n(n−1)/2), ties not corrected.

    Computed from scipy's tau-b: C − D = tau_b · sqrt((n0 − t_a)(n0 − t_b)).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    n = a.size
    tot = n * (n - 1) / 2
    if tot == 0:
        return float("nan")

    def ties(v):
        _, c = np.unique(v, return_counts=True)
        return float((c * (c - 1) / 2).sum())

    ta, tb = ties(a), ties(b)
    if ta == tot or tb == tot:
        return 0.0
    tau_b = scipy.stats.kendalltau(a, b).statistic
    return float(np.clip(tau_b * np.sqrt((tot - ta) * (tot - tb)) / tot, -1.0, 1.0))


def compare_vectors(a: np.ndarray, b: np.ndarray, method: str = "spearman") -> float:
    """Similarity of two RDM vectors, as ``rsatoolbox.rdm.compare`` (spearman, corr, tau-a)."""
    method = normalize_comparison(method)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if method == "tau_a":
        return tau_a(a, b)
    if method == "spearman":
        a, b = stats.midranks(a), stats.midranks(b)
    ca, cb = _centered_unit(a), _centered_unit(b)
    if ca is None or cb is None:
        return float("nan")
    return float(ca @ cb)


# ----------------------------------------------------------------------------- references
@dataclass
class Reference:
    """A reference RDM with ``R[i, j] = values[types[i], types[j]]`` (i ≠ j).

    ``types`` groups units that are interchangeable for this reference (a class, an attribute
    value, or one type per unit); few types make permutation nulls a matrix product.
    """

    name: str
    kind: str  # categorical | attribute | human
    types: np.ndarray
    values: np.ndarray
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def n(self) -> int:
        return int(self.types.size)

    def vector(self) -> np.ndarray:
        if "vector" not in self._cache:
            iu = np.triu_indices(self.n, 1)
            self._cache["vector"] = self.values[self.types[iu[0]], self.types[iu[1]]].astype(np.float64)
        return self._cache["vector"]

    def matrix(self) -> np.ndarray:
        m = self.values[np.ix_(self.types, self.types)].astype(np.float64)
        np.fill_diagonal(m, 0.0)
        return m

    def subset(self, idx: np.ndarray) -> "Reference":
        return Reference(self.name, self.kind, self.types[idx], self.values)

    def is_constant(self) -> bool:
        v = self.vector()
        return v.size == 0 or np.ptp(v) == 0


def label_reference(name: str, labels: Iterable) -> Reference:
    """0 for units of the same class, 1 for different classes."""
    _, codes = np.unique(np.asarray(list(labels), dtype=object).astype(str), return_inverse=True)
    k = int(codes.max()) + 1 if codes.size else 0
    return Reference(name, "categorical", codes.astype(np.intp), 1.0 - np.eye(k))


def attribute_reference(name: str, values: Iterable[float]) -> Reference:
    """|a_i − a_j| of a continuous attribute."""
    v = np.asarray(list(values), dtype=np.float64)
    uniq, codes = np.unique(v, return_inverse=True)
    return Reference(name, "attribute", codes.astype(np.intp), np.abs(uniq[:, None] - uniq[None, :]))


def matrix_reference(name: str, matrix: np.ndarray, kind: str = "human") -> Reference:
    """An arbitrary symmetric reference RDM (one type per unit)."""
    m = np.asarray(matrix, dtype=np.float64)
    return Reference(name, kind, np.arange(m.shape[0], dtype=np.intp), m)


def _check_ratings(ratings: pd.DataFrame) -> None:
    if not set(RATING_COLUMNS) <= set(ratings.columns):
        raise ValueError(f"ratings need columns {sorted(RATING_COLUMNS)}, found {sorted(ratings.columns)}")


def rating_categories(ratings: pd.DataFrame) -> dict[str, list[str]]:
    """The response categories of every dimension (sorted, as the columns of :func:`human_rdms`)."""
    return {d: sorted(part.unique()) for d, part in ratings.groupby("dimension", sort=True)["category"]}


def aggregate_ratings(ratings: pd.DataFrame) -> pd.DataFrame:
    """Mean over raters of the per-rater response distributions (module docstring).

    Without a ``rater`` column the table is returned unchanged. With one, every rater ×
    stimulus × dimension distribution is renormalised to sum to 1 (all-zero ones are dropped)
    and averaged over the raters who rated that stimulus × dimension; the result has one row
    per stimulus × dimension × category of the dimension.
    """
    _check_ratings(ratings)
    if "rater" not in ratings.columns:
        return ratings
    r = ratings.assign(stimulus_id=ratings["stimulus_id"].astype(str), rater=ratings["rater"].astype(str))
    parts = []
    for dim, part in r.groupby("dimension", sort=True):
        table = part.pivot_table(index=["stimulus_id", "rater"], columns="category", values="proportion",
                                 aggfunc="sum", fill_value=0.0)
        table = table.div(table.sum(axis=1).replace(0, np.nan), axis=0).dropna(how="any")
        mean = table.groupby(level="stimulus_id").mean()
        mean.columns.name = "category"
        long = mean.stack().rename("proportion").reset_index()
        long.insert(1, "dimension", dim)
        parts.append(long)
    if not parts:
        return pd.DataFrame(columns=list(RATING_COLUMNS))
    return pd.concat(parts, ignore_index=True)[list(RATING_COLUMNS)]


def human_rdms(ratings: pd.DataFrame, unit_stimuli: Mapping[str, list[str]] | list[str],
               categories: Mapping[str, list[str]] | None = None) -> dict[str, np.ndarray]:
    """Human dissimilarity matrices from categorical rating distributions (module docstring).

    ``unit_stimuli``: a list of stimulus ids (one per unit) or, for averaged units, a mapping
    unit → its stimulus ids (a unit's distribution is the mean of its stimuli's). Returns
    ``{"human_kl_<dim>", "human_mode_<dim>", ..., "human_kl_mean", "human_mode_mean"}``;
    raises KeyError when a unit has no rating on some dimension. A ``rater`` column is
    averaged out first (:func:`aggregate_ratings`). ``categories`` (dimension → categories)
    fixes the response categories of a dimension (default: those present in ``ratings``),
    e.g. for one rater who never chose some category.
    """
    _check_ratings(ratings)
    ratings = aggregate_ratings(ratings)
    if isinstance(unit_stimuli, Mapping):
        units = list(unit_stimuli)
        members = unit_stimuli
    else:
        units = [str(s) for s in unit_stimuli]
        members = {u: [u] for u in units}
    stim_unit = pd.Series({s: u for u, ss in members.items() for s in ss}, dtype=object)
    r = ratings.assign(stimulus_id=ratings["stimulus_id"].astype(str))
    r = r[r["stimulus_id"].isin(stim_unit.index)]
    out: dict[str, np.ndarray] = {}
    kls, modes = [], []
    for dim, part in r.groupby("dimension", sort=True):
        table = part.pivot_table(index="stimulus_id", columns="category", values="proportion",
                                 aggfunc="sum", fill_value=0.0)
        if categories is not None and dim in categories:
            table = table.reindex(columns=sorted(categories[dim]), fill_value=0.0)
        table = table.div(table.sum(axis=1).replace(0, np.nan), axis=0)
        table["unit"] = stim_unit.loc[table.index].to_numpy()
        per_unit = table.groupby("unit").mean()
        missing = [u for u in units if u not in per_unit.index]
        if missing:
            raise KeyError(f"ratings: no '{dim}' rating for {len(missing)} units, e.g. {missing[0]!r}")
        p = per_unit.loc[units].to_numpy(dtype=np.float64)
        c = p.shape[1]
        ps = (p + KL_EPS) / (1.0 + c * KL_EPS)
        lg = np.log(ps)
        a = np.einsum("ij,ij->i", ps, lg)
        cross = ps @ lg.T
        kl = a[:, None] + a[None, :] - cross - cross.T  # KL(p‖q) + KL(q‖p)
        kl = np.maximum(0.5 * (kl + kl.T), 0.0)
        np.fill_diagonal(kl, 0.0)
        mode = p.argmax(1)
        mm = (mode[:, None] != mode[None, :]).astype(np.float64)
        out[f"human_kl_{dim}"] = kl
        out[f"human_mode_{dim}"] = mm
        kls.append(kl)
        modes.append(mm)
    if kls:
        out["human_kl_mean"] = np.mean(kls, axis=0)
        out["human_mode_mean"] = np.mean(modes, axis=0)
    return out


def partial_residuals(model: np.ndarray, covariate: np.ndarray) -> np.ndarray:
    """Residuals of the least-squares fit ``model ≈ a + b · covariate`` (upper triangles)."""
    model = np.asarray(model, dtype=np.float64)
    design = np.column_stack([np.ones_like(model), np.asarray(covariate, dtype=np.float64)])
    coef, *_ = np.linalg.lstsq(design, model, rcond=None)
    return model - design @ coef


# ----------------------------------------------------------------------------- inference engine
def _transform(v: np.ndarray, method: str) -> np.ndarray:
    return stats.midranks(v) if method == "spearman" else np.asarray(v, dtype=np.float64)


@dataclass
class _PreparedRef:
    ref: Reference
    vec: np.ndarray  # centred, unit-norm transformed reference vector
    gvals: np.ndarray  # (K, K) the same values by type pair
    full: np.ndarray  # (n, n) centred, unit-norm, zero diagonal
    s_r: np.ndarray | None = None  # bootstrap sums Σ W r̂, Σ W r̂²
    s_rr: np.ndarray | None = None


def _prepare_ref(ref: Reference, method: str) -> _PreparedRef | None:
    raw = ref.vector()
    t = _transform(raw, method)
    mean = t.mean()
    c = t - mean
    norm = np.linalg.norm(c)
    if norm == 0 or not np.isfinite(norm):
        return None
    vec = c / norm
    # type-pair values on the same (transformed, centred, scaled) scale
    if method == "spearman":
        uniq, inv = np.unique(raw, return_inverse=True)
        val_rank = np.bincount(inv, weights=t) / np.bincount(inv)
        pos = np.clip(np.searchsorted(uniq, ref.values), 0, uniq.size - 1)
        g = np.where(uniq[pos] == ref.values, val_rank[pos], mean)
    else:
        g = ref.values.astype(np.float64)
    gvals = (g - mean) / norm
    full = gvals[np.ix_(ref.types, ref.types)]
    np.fill_diagonal(full, 0.0)
    return _PreparedRef(ref, vec, gvals, full)


def _quad(m: np.ndarray, wt: np.ndarray) -> np.ndarray:
    """0.5 · w_bᵀ m w_b for every column w_b of ``wt`` (n, B): Σ_{i<j} w_i w_j m_ij."""
    return 0.5 * np.einsum("ib,ib->b", m @ wt, wt)


def _weighted_corr(s0, s_m, s_mm, s_r, s_rr, s_mr) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        mm, mr_ = s_m / s0, s_r / s0
        cov = s_mr / s0 - mm * mr_
        var_m = s_mm / s0 - mm**2
        var_r = s_rr / s0 - mr_**2
        return cov / np.sqrt(var_m * var_r)


def _perm_null_types(mfull: np.ndarray, pref: _PreparedRef, perms: np.ndarray, chunk: int = 128) -> np.ndarray:
    """Σ_{i<j} m̂_ij r̂(π_i, π_j) for every shuffle π, via one-hot type matrices (few types)."""
    n = mfull.shape[0]
    k = pref.gvals.shape[0]
    out = np.empty(len(perms))
    eye = np.eye(k)[:, : k - 1]  # the last type's column is 1 − Σ others: one product fewer
    rowsum = mfull.sum(1)
    for s in range(0, len(perms), chunk):
        tp = pref.ref.types[perms[s : s + chunk]].T  # (n, Bc) type of each unit after shuffle
        bc = tp.shape[1]
        y = np.empty((n, bc, k))
        if k > 1:
            y[:, :, : k - 1] = (mfull @ eye[tp].reshape(n, -1)).reshape(n, bc, k - 1)  # Σ_j m_ij [t_j = l]
        y[:, :, k - 1] = rowsum[:, None] - y[:, :, : k - 1].sum(2)
        h = pref.gvals[tp]  # (n, Bc, K): ĝ(t_i, l)
        out[s : s + chunk] = 0.5 * np.einsum("ibl,ibl->b", y, h)
    return out


def _perm_null_gather(mflats: np.ndarray, pref: _PreparedRef, perms: np.ndarray, chunk: int = 32) -> np.ndarray:
    """Same as :func:`_perm_null_types` for many layers at once, gathering shuffled matrices.

    ``mflats`` is (L, n²): the layers' full centred matrices, flattened. Returns (B, L).
    """
    n = pref.full.shape[0]
    out = np.empty((len(perms), mflats.shape[0]))
    buf = np.empty((min(chunk, len(perms)), n * n))
    for s in range(0, len(perms), chunk):
        block = perms[s : s + chunk]
        for k, p in enumerate(block):
            buf[k] = pref.full.take(p, 0).take(p, 1).ravel()
        out[s : s + len(block)] = 0.5 * (buf[: len(block)] @ mflats.T)
    return out


def rsa_inference(
    model_vectors: Mapping[object, np.ndarray],
    references: list[Reference],
    *,
    comparison: str = "spearman",
    n_bootstrap: int = 1000,
    n_permutations: int = 1000,
    seed: int = 0,
    tau_max_stimuli: int = 100,
) -> dict[tuple[object, str], dict]:
    """Compare every model RDM vector with every reference: value, 95% CI, permutation p.

    ``model_vectors`` maps a key (e.g. layer name) to an upper-triangle RDM vector over the
    same ``n`` units as the references. Returns ``{(key, ref.name): {value, ci_low, ci_high,
    p, n_inference}}``. Shuffles and resamples are shared by all keys and references.
    """
    method = normalize_comparison(comparison)
    rng = np.random.default_rng(seed)
    if not references:
        return {}
    n = references[0].n
    if method == "tau_a":
        return _tau_a_inference(model_vectors, references, rng, n_bootstrap, n_permutations, tau_max_stimuli)
    perms = stats.item_permutations(rng, n_permutations, n) if n_permutations else np.empty((0, n), int)
    weights = stats.bootstrap_weights(rng, n_bootstrap, n) if n_bootstrap else np.empty((0, n), int)

    prepared = {r.name: _prepare_ref(r, method) for r in references}
    wt = weights.T.astype(np.float64)  # (n, B)
    s1 = wt.sum(0)
    s0 = 0.5 * (s1**2 - (wt**2).sum(0))
    for pref in prepared.values():
        if pref is not None and len(weights):
            pref.s_r = _quad(pref.full, wt)
            pref.s_rr = _quad(pref.full**2, wt)

    results: dict[tuple[object, str], dict] = {}
    gather_refs = [p for p in prepared.values() if p is not None and p.gvals.shape[0] > _MAX_TYPES_GEMM]
    keys = list(model_vectors)
    # gathered nulls are shared by all layers when their matrices fit in ~0.5 GB, else per layer
    keep_flats = bool(gather_refs) and len(perms) > 0 and len(keys) * n * n * 8 <= _GATHER_STACK_BYTES
    per_layer_gather = bool(gather_refs) and len(perms) > 0 and not keep_flats
    flats: list[np.ndarray] = []
    for key in keys:
        t = _transform(model_vectors[key], method)
        mvec = _centered_unit(t)
        if mvec is None:
            for name in prepared:
                results[(key, name)] = dict(value=np.nan, ci_low=np.nan, ci_high=np.nan, p=np.nan, n_inference=n)
            if keep_flats:
                flats.append(np.zeros(n * n))
            continue
        mfull = square(mvec, n)
        if len(weights):
            s_m = _quad(mfull, wt)
            s_mm = _quad(mfull**2, wt)
        for name, pref in prepared.items():
            if pref is None:
                results[(key, name)] = dict(value=np.nan, ci_low=np.nan, ci_high=np.nan, p=np.nan, n_inference=n)
                continue
            value = float(mvec @ pref.vec)
            lo = hi = p = np.nan
            if len(weights):
                boot = _weighted_corr(s0, s_m, s_mm, pref.s_r, pref.s_rr, _quad(mfull * pref.full, wt))
                lo, hi = stats.bootstrap_ci(boot)
            if len(perms) and pref.gvals.shape[0] <= _MAX_TYPES_GEMM:
                p = stats.perm_pvalue(value, _perm_null_types(mfull, pref, perms), "greater")
            results[(key, name)] = dict(value=value, ci_low=lo, ci_high=hi, p=p, n_inference=n)
        if keep_flats:
            flats.append(mfull.ravel())
        if per_layer_gather:
            for pref in gather_refs:
                res = results[(key, pref.ref.name)]
                null = _perm_null_gather(mfull.ravel()[None], pref, perms)[:, 0]
                res["p"] = stats.perm_pvalue(res["value"], null, "greater")
    if keep_flats:
        mflats = np.stack(flats)
        layer_chunk = max(1, int(2e8 // (8 * n * n)))
        for pref in gather_refs:
            for s in range(0, len(keys), layer_chunk):
                null = _perm_null_gather(mflats[s : s + layer_chunk], pref, perms)
                for j, key in enumerate(keys[s : s + layer_chunk]):
                    res = results[(key, pref.ref.name)]
                    if np.isfinite(res["value"]):
                        res["p"] = stats.perm_pvalue(res["value"], null[:, j], "greater")
    return results


def _tau_a_inference(model_vectors, references, rng, n_bootstrap, n_permutations, max_units):
    """tau-a inference on a random subset of ``max_units`` units (no linear shortcut exists).

    p: permutation test of the subset's tau-a against shuffles of the subset (a valid test
    with ``n_inference`` units). CI: the subset's bootstrap deviations θ*−θ̂_sub, scaled by
    sqrt(m/n) (tau-a is a U-statistic of the units: its sd shrinks as 1/sqrt(n)) and added to
    the full-sample estimate. Both are exact when ``n <= max_units``.
    """
    n = references[0].n
    results = {}
    sub = np.sort(rng.choice(n, size=min(n, max_units), replace=False))
    m = sub.size
    scale = np.sqrt(m / n)
    perms = stats.item_permutations(rng, n_permutations, m)
    boot_pairs = [resampled_pairs(sub[stats.weights_to_indices(w)], n)
                  for w in stats.bootstrap_weights(rng, n_bootstrap, m)]
    sub_pairs = resampled_pairs(sub, n)
    a, b = np.triu_indices(m, 1)
    for key, vec in model_vectors.items():
        vec = np.asarray(vec, dtype=np.float64)
        msub = vec[sub_pairs]
        for ref in references:
            rvec = ref.vector()
            value = tau_a(vec, rvec)
            sub_value = tau_a(msub, rvec[sub_pairs])
            if ref.is_constant() or np.ptp(vec) == 0 or not np.isfinite(sub_value):
                results[(key, ref.name)] = dict(value=np.nan if ref.is_constant() else value, ci_low=np.nan,
                                                ci_high=np.nan, p=np.nan, n_inference=m)
                continue
            t = ref.types[sub]
            null = np.array([tau_a(msub, ref.values[t[p][a], t[p][b]]) for p in perms])
            boot = np.array([tau_a(vec[q], rvec[q]) for q in boot_pairs])
            lo, hi = stats.bootstrap_ci(value + scale * (boot - sub_value))
            results[(key, ref.name)] = dict(value=value, ci_low=lo, ci_high=hi,
                                            p=stats.perm_pvalue(sub_value, null, "greater"), n_inference=m)
    return results


# ----------------------------------------------------------------------------- units
@dataclass
class Units:
    """The units of an RSA run: one row per RDM row/column."""

    frame: pd.DataFrame  # one row per unit: unit_id, label, attributes…
    unit: str  # "word" | "stimulus"
    members: dict  # unit_id → list of stimulus ids
    n_stimuli: int


def prepare_units(
    manifest: pd.DataFrame,
    average_by: str | None = "auto",
    max_stimuli: int | None = None,
    seed: int = 0,
) -> Units:
    """Drop reference words, optionally average clips per ``average_by`` and subsample.

    Categorical columns that vary inside a unit (e.g. ``voice`` inside a word) become NaN.
    """
    m = manifest.copy()
    m["stimulus_id"] = m["stimulus_id"].astype(str)
    if "is_reference" in m.columns:
        m = m[~m["is_reference"].fillna(False).astype(bool)]
    if average_by == "auto":
        average_by = "word" if "word" in m.columns and m["word"].duplicated().any() else None
    if average_by:
        if average_by not in m.columns:
            raise KeyError(f"average_by: manifest has no column {average_by!r}")
        key = m[average_by].astype(str)
        rows = []
        for col in m.columns:
            if col == "stimulus_id":
                continue
            g = m.groupby(key, sort=True)[col]
            if pd.api.types.is_numeric_dtype(m[col]) and not pd.api.types.is_bool_dtype(m[col]):
                rows.append(g.mean().rename(col))
            else:
                first = g.first()
                rows.append(first.where(g.nunique(dropna=False) == 1).rename(col))
        frame = pd.concat(rows, axis=1)
        frame.index.name = "unit_id"
        frame = frame.reset_index()
        members = m.groupby(key, sort=True)["stimulus_id"].apply(list).to_dict()
        unit = str(average_by)
    else:
        frame = m.sort_values("stimulus_id").rename(columns={"stimulus_id": "unit_id"}).reset_index(drop=True)
        members = {u: [u] for u in frame["unit_id"]}
        unit = "stimulus"
    n_stimuli = int(len(m))
    if max_stimuli and len(frame) > int(max_stimuli):
        rng = np.random.default_rng(seed)
        strata = frame["label"].astype(str) if "label" in frame.columns else pd.Series("all", index=frame.index)
        share = int(max_stimuli) / len(frame)
        pick = []
        for _, idx in strata.groupby(strata).groups.items():
            k = max(1, int(round(share * len(idx))))
            pick.extend(rng.choice(np.asarray(idx), size=min(k, len(idx)), replace=False))
        frame = frame.loc[sorted(pick)].reset_index(drop=True)
        members = {u: members[u] for u in frame["unit_id"]}
        n_stimuli = int(sum(len(v) for v in members.values()))
    return Units(frame, unit, members, n_stimuli)


def unit_matrix(units: Units, ids: list[str], x: np.ndarray) -> np.ndarray:
    """The units' embeddings: mean of each unit's member rows of ``x`` (rows keyed by ``ids``)."""
    unit_ids = units.frame["unit_id"].tolist()
    sizes = np.array([len(units.members[u]) for u in unit_ids])
    stim = np.concatenate([np.asarray(units.members[u], dtype=object) for u in unit_ids]) if unit_ids else np.array([], dtype=object)
    cols = pd.Index([str(i) for i in ids]).get_indexer(stim.astype(str))
    if (cols < 0).any():
        raise KeyError(f"{int((cols < 0).sum())} unit stimuli are missing from the embeddings, "
                       f"e.g. {stim[np.flatnonzero(cols < 0)[0]]!r}")
    rows = np.repeat(np.arange(len(unit_ids)), sizes)
    avg = scipy.sparse.csr_matrix((1.0 / sizes[rows], (rows, cols)), shape=(len(unit_ids), len(ids)))
    return np.asarray(avg @ np.asarray(x, dtype=np.float64))


#: Default categorical references: the sharp/round label and seed 001's physical labels.
DEFAULT_LABELS = ("label", *IMPACT_LABELS)
#: Default continuous references (used when the manifest has them and they vary).
DEFAULT_ATTRIBUTES = ("sharpness", "size")


def build_references(
    units: Units,
    labels: Iterable[str] = DEFAULT_LABELS,
    attributes: Iterable[str] = DEFAULT_ATTRIBUTES,
) -> list[Reference]:
    """Label and attribute reference RDMs available for these units (columns that are
    missing, constant or vary inside a unit are skipped with a log line)."""
    f = units.frame
    refs: list[Reference] = []
    for col in labels:
        if col in f.columns and f[col].notna().all() and f[col].nunique() > 1:
            refs.append(label_reference(col, f[col]))
        elif col in f.columns:
            log.info("rsa: reference %s skipped (constant or varies within %s units)", col, units.unit)
    for col in attributes:
        if col in f.columns and pd.api.types.is_numeric_dtype(f[col]) and f[col].notna().all() and f[col].nunique() > 1:
            refs.append(attribute_reference(col, f[col]))
    return refs


def rated_units(ratings: pd.DataFrame, units: Units) -> np.ndarray:
    """Indices of the units with a rating on every dimension (from any of their stimuli)."""
    r = ratings.assign(stimulus_id=ratings["stimulus_id"].astype(str))
    dims = r["dimension"].unique()
    ok = np.ones(len(units.frame), dtype=bool)
    for d in dims:
        have = set(r.loc[r["dimension"] == d, "stimulus_id"])
        ok &= np.array([any(s in have for s in units.members[u]) for u in units.frame["unit_id"]])
    return np.flatnonzero(ok)


def human_references(ratings: pd.DataFrame, units: Units) -> tuple[np.ndarray, list[Reference]]:
    """Human reference RDMs on the rated units: (their unit indices, references)."""
    idx = rated_units(ratings, units)
    if idx.size < 3:
        log.warning("rsa: only %d units have ratings on every dimension; human references skipped", idx.size)
        return idx, []
    uids = units.frame["unit_id"].to_numpy()[idx]
    mats = human_rdms(ratings, {u: units.members[u] for u in uids})
    return idx, [matrix_reference(name, m) for name, m in mats.items()]


# ----------------------------------------------------------------------------- noise ceiling
def pool_rdms(vectors: np.ndarray, comparison: str = "spearman") -> np.ndarray:
    """The pooled RDM of the rows of ``vectors`` (R, P), as rsatoolbox's ``pool_rdm``:
    the mean of their ranks (spearman, tau-a) or of their z-scores (pearson)."""
    method = normalize_comparison(comparison)
    v = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
    if method == "pearson":
        c = v - v.mean(1, keepdims=True)
        return (c / c.std(1, keepdims=True)).mean(0)
    return np.mean([stats.midranks(x) for x in v], axis=0)


def noise_ceiling(vectors: np.ndarray, comparison: str = "spearman") -> tuple[float, float]:
    """(lower, upper) noise ceiling of the raters' RDM vectors ``vectors`` (R, P), module
    docstring; equal to ``rsatoolbox.inference.boot_noise_ceiling`` with one RDM per rater.
    NaN for fewer than 2 raters."""
    method = normalize_comparison(comparison)
    v = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
    r = v.shape[0]
    if r < 2:
        return float("nan"), float("nan")
    allpool = pool_rdms(v, method)
    keep = np.ones(r, dtype=bool)
    low, high = [], []
    for i in range(r):
        keep[i] = False
        low.append(compare_vectors(v[i], pool_rdms(v[keep], method), method))
        high.append(compare_vectors(v[i], allpool, method))
        keep[i] = True
    return float(np.mean(low)), float(np.mean(high))


def ceiling_units(ratings: pd.DataFrame, units: Units) -> np.ndarray:
    """Indices of the units rated by every rater on every dimension of ``ratings``."""
    r = ratings.assign(stimulus_id=ratings["stimulus_id"].astype(str), rater=ratings["rater"].astype(str))
    r = r[r["proportion"] > 0]
    have = set(zip(r["rater"], r["dimension"], r["stimulus_id"]))
    ok = np.ones(len(units.frame), dtype=bool)
    for rater in r["rater"].unique():
        for d in r["dimension"].unique():
            ok &= np.array([any((rater, d, s) in have for s in units.members[u]) for u in units.frame["unit_id"]])
    return np.flatnonzero(ok)


def rater_rdms(ratings: pd.DataFrame, unit_stimuli: Mapping[str, list[str]] | list[str]
               ) -> dict[str, dict[str, np.ndarray]]:
    """``{rater: human_rdms(that rater's ratings)}`` (sorted by rater), every rater with the
    categories of the whole table; raises KeyError when a rater did not rate some unit."""
    _check_ratings(ratings)
    r = ratings.assign(rater=ratings["rater"].astype(str))
    cats = rating_categories(r)
    return {rater: human_rdms(part.drop(columns="rater"), unit_stimuli, categories=cats)
            for rater, part in r.groupby("rater", sort=True)}


def human_rater_vectors(ratings: pd.DataFrame, units: Units) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The raters' RDMs behind the noise ceilings: ``(ceiling unit indices, {reference: (R, P)
    upper-triangle vectors of the raters used})``, raters with a constant RDM on the ceiling
    units left out (module docstring). ``{}`` without a ``rater`` column, with fewer than 2
    raters or fewer than 3 ceiling units."""
    _check_ratings(ratings)
    if "rater" not in ratings.columns:
        return np.zeros(0, dtype=np.intp), {}
    r = ratings.assign(rater=ratings["rater"].astype(str))
    idx = ceiling_units(r, units)
    if idx.size < 3 or r["rater"].nunique() < 2:
        return idx, {}
    uids = units.frame["unit_id"].to_numpy()[idx]
    per_rater = list(rater_rdms(r, {u: units.members[u] for u in uids}).values())
    out = {}
    for name in per_rater[0]:
        vecs = np.stack([upper(m[name]) for m in per_rater])
        out[name] = vecs[np.ptp(vecs, axis=1) > 0]  # a constant RDM has no correlation
    return idx, out


def human_noise_ceilings(ratings: pd.DataFrame, units: Units, comparison: str = "spearman",
                         rater_vectors: tuple[np.ndarray, dict[str, np.ndarray]] | None = None
                         ) -> dict[str, dict]:
    """Noise ceiling of every ``human_*`` reference from per-rater ratings (module docstring).

    Returns ``{reference: {noise_ceiling_low, noise_ceiling_high, n_raters, n_units}}``;
    empty without a ``rater`` column. The per-rater RDMs are computed on the units rated by
    every rater on every dimension (:func:`ceiling_units`); ``rater_vectors`` = the output of
    :func:`human_rater_vectors` when already computed."""
    _check_ratings(ratings)
    if "rater" not in ratings.columns:
        return {}
    method = normalize_comparison(comparison)
    r = ratings.assign(rater=ratings["rater"].astype(str))
    raters = sorted(r["rater"].unique())
    idx, per_ref = rater_vectors if rater_vectors is not None else human_rater_vectors(r, units)
    nan = dict(noise_ceiling_low=np.nan, noise_ceiling_high=np.nan, n_raters=len(raters), n_units=int(idx.size))
    if idx.size < 3 or len(raters) < 2:
        log.warning("rsa: noise ceiling needs >= 2 raters and >= 3 units rated by all of them "
                    "(%d raters, %d units)", len(raters), idx.size)
        dims = sorted(r["dimension"].unique())
        names = [f"human_{k}_{d}" for d in dims for k in ("kl", "mode")] + ["human_kl_mean", "human_mode_mean"]
        return {name: dict(nan) for name in names}
    out = {}
    for name, vecs in per_ref.items():
        low, high = noise_ceiling(vecs, method)
        out[name] = dict(noise_ceiling_low=low, noise_ceiling_high=high, n_raters=int(len(vecs)),
                         n_units=int(idx.size))
    log.info("rsa: noise ceilings from %d raters on %d units: %s", len(raters), idx.size,
             {k: (round(v["noise_ceiling_low"], 3), round(v["noise_ceiling_high"], 3)) for k, v in out.items()})
    return out


def _unit_rows(v: np.ndarray, method: str) -> np.ndarray:
    """Rows of ``v`` (K, P) transformed for ``method`` (ranks for spearman), centred and scaled
    to unit norm, so a Pearson correlation is a dot product; constant rows become NaN."""
    v = np.atleast_2d(np.asarray(v, dtype=np.float64))
    if method == "spearman":
        v = np.stack([stats.midranks(x) for x in v])
    c = v - v.mean(1, keepdims=True)
    norm = np.linalg.norm(c, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, c / norm, np.nan)


def rater_scores(models: np.ndarray, rater_vectors: np.ndarray, comparison: str = "spearman") -> np.ndarray:
    """mean_r compare(model, rater_vectors[r]) for every row of ``models`` (K, P) or one vector
    (P,): the model's score on the noise ceiling's scale (``value_raters``), as rsatoolbox's
    ``eval_fixed`` averages ``compare(model, data)`` over the data RDMs. NaN without raters."""
    method = normalize_comparison(comparison)
    single = np.ndim(models) == 1
    m = np.atleast_2d(np.asarray(models, dtype=np.float64))
    d = np.atleast_2d(np.asarray(rater_vectors, dtype=np.float64))
    if d.shape[0] == 0 or d.shape[1] == 0:
        out = np.full(m.shape[0], np.nan)
    elif method == "tau_a":
        out = np.array([np.mean([tau_a(x, y) for y in d]) for x in m])
    else:
        out = (_unit_rows(m, method) @ _unit_rows(d, method).T).mean(1)
    return float(out[0]) if single else out


# ----------------------------------------------------------------------------- files → table
def save_rdms(
    path: str | Path,
    layers: list[tuple[str, int, np.ndarray]],
    units: pd.DataFrame,
    *,
    distance: str = "cosine",
    max_stimuli: int = 200,
    seed: int = 0,
    meta: Mapping[str, object] | None = None,
) -> None:
    """Write a small ``.npz`` of layer RDMs for figures (they never read embeddings).

    At most ``max_stimuli`` units, drawn at random with equal numbers per ``label`` when
    possible, ordered by label then unit id. Arrays: ``rdms`` (L, m, m) float32, ``layers``,
    ``layer_index``, ``unit_id``, ``label``, ``distance`` and the ``meta`` strings.
    """
    rng = np.random.default_rng(seed)
    f = units.reset_index(drop=True)
    lab = f["label"].astype(str) if "label" in f.columns else pd.Series("", index=f.index)
    classes = sorted(lab.unique())
    per = max(1, max_stimuli // max(1, len(classes)))
    pick = []
    for c in classes:
        idx = np.flatnonzero(lab.to_numpy() == c)
        pick.extend(rng.choice(idx, size=min(per, idx.size), replace=False))
    pick = np.array(sorted(pick, key=lambda i: (lab.iloc[i], str(f["unit_id"].iloc[i]))), dtype=int)
    rdms = np.stack([rdm_matrix(x[pick], distance).astype(np.float32) for _, _, x in layers]) if layers else np.zeros((0, 0, 0), np.float32)
    extra = {k: np.asarray(str(v)) for k, v in (meta or {}).items()}
    with avio.atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(
                fh,
                rdms=rdms,
                layers=np.array([n for n, _, _ in layers], dtype=str),
                layer_index=np.array([i for _, i, _ in layers], dtype=int),
                unit_id=np.array([str(u) for u in f["unit_id"]], dtype=str)[pick],
                label=np.array([str(v) for v in lab], dtype=str)[pick],
                distance=np.asarray(distance),
                **extra,
            )


def _read_ratings(path, stimulus_ids=None) -> pd.DataFrame | None:
    """The ratings table, checked against the schema (:func:`avprobe.ratings.validate_ratings`)
    and, when given, against the set's stimulus ids."""
    if path is None or (isinstance(path, (list, tuple)) and not path):
        return None
    return validate_ratings(path, stimulus_ids=stimulus_ids)


def run_rsa(
    manifest: str | Path,
    embeddings: str | Path,
    output: str | Path | None = None,
    rdms_output: str | Path | None = None,
    *,
    set_name: str,
    model: str,
    cfg: Mapping | None = None,
    n_bootstrap: int = 1000,
    n_permutations: int = 1000,
    seed: int = 0,
    ratings: str | Path | None = None,
    covariate: str | Path | None = None,
) -> pd.DataFrame:
    """RSA of every layer of one embeddings file against every available reference.

    ``cfg`` keys (all optional): distance (cosine), comparison (spearman), labels
    ([label, material, hollowness, extension]), attributes ([sharpness, size]), average_by
    (auto), max_stimuli (null), ratings (path), covariate_layer (the covariate file's last
    layer), rdm_layers (null = all), rdm_max_stimuli (200), tau_max_stimuli (100).
    References whose column is absent or constant are skipped. Human references use the
    units rated on every dimension (their own ``n``).

    Table columns: the standard ones (metric ``rsa_<reference>_<comparison>`` or
    ``rsa_partial_<reference>_<comparison>``) plus reference, comparison, distance, partial,
    unit, n_stimuli, n_pairs, n_inference, covariate, noise_ceiling_low, noise_ceiling_high,
    n_raters, value_raters (``human_*`` rows with a per-rater ratings table; else NaN; the
    model's mean score against the single raters, on the ceiling's scale), p_fdr.
    """
    cfg = dict(cfg or {})
    distance = cfg.get("distance", "cosine")
    if distance not in DISTANCES:
        raise ValueError(f"rsa.distance must be one of {DISTANCES}, not {distance!r}")
    method = normalize_comparison(cfg.get("comparison", "spearman"))
    cmp_name = {"spearman": "spearman", "pearson": "pearson", "tau_a": "taua"}[method]
    ratings = ratings or cfg.get("ratings")
    man = validate.analysis_manifest(avio.read_manifest(manifest), embeddings, manifest_path=manifest,
                                     classes="label")
    units = prepare_units(man, cfg.get("average_by", "auto"), cfg.get("max_stimuli"), seed)
    n = len(units.frame)
    groups: list[tuple[np.ndarray | None, list[Reference]]] = [
        (None, build_references(units, cfg.get("labels", DEFAULT_LABELS), cfg.get("attributes", DEFAULT_ATTRIBUTES)))
    ]
    if not groups[0][1] and not ratings:
        labels = list(cfg.get("labels", DEFAULT_LABELS)) + list(cfg.get("attributes", DEFAULT_ATTRIBUTES))
        if not any(c in man.columns for c in labels):
            validate.require_columns(man, labels[:1], set_name=set_name, manifest_path=manifest,
                                     why=f"no reference RDM: RSA needs a varying column among {labels}, or ratings")
        raise validate.BadInputError(
            f"set {set_name!r} ({manifest}): no reference RDM — the columns {labels} are missing, constant or "
            f"vary within {units.unit} units, and there are no ratings; RSA would write no rows")
    table_ratings = _read_ratings(ratings, stimulus_ids=man["stimulus_id"])
    ceilings: dict[str, dict] = {}
    rater_vecs: tuple[np.ndarray, dict[str, np.ndarray]] = (np.zeros(0, dtype=np.intp), {})
    if table_ratings is not None:
        groups.append(human_references(table_ratings, units))
        if "rater" in table_ratings.columns:
            rater_vecs = human_rater_vectors(table_ratings, units)
        ceilings = human_noise_ceilings(table_ratings, units, method, rater_vectors=rater_vecs)
    log.info("rsa %s/%s: %d %s units from %d stimuli, references %s", set_name, model, n, units.unit,
             units.n_stimuli, [r.name for _, refs in groups for r in refs])

    cov_vec = None
    if covariate:
        cov_layers = avio.embedding_layers(covariate)
        cov_layer = cfg.get("covariate_layer") or cov_layers[-1][0]
        ids, x = avio.read_layer(covariate, cov_layer)
        cov_x = unit_matrix(units, ids, x)
        check_rdm_rows(cov_x, distance, units.frame["unit_id"].tolist(),
                       f"{covariate}, layer {cov_layer!r} (covariate)")
        cov_vec = rdm_vector(cov_x, distance)

    vectors: dict[tuple[str, bool], np.ndarray] = {}
    layer_info: dict[str, int] = {}
    rdm_layers = cfg.get("rdm_layers")
    saved: list[tuple[str, int, np.ndarray]] = []
    for name, index, ids, x in validate.checked_layers(embeddings):
        ux = unit_matrix(units, ids, x)
        check_rdm_rows(ux, distance, units.frame["unit_id"].tolist(), f"{embeddings}, layer {name!r}")
        vec = rdm_vector(ux, distance)
        vectors[(name, False)] = vec
        if cov_vec is not None:
            vectors[(name, True)] = partial_residuals(vec, cov_vec)
        layer_info[name] = index
        if rdm_layers is None or name in rdm_layers:
            saved.append((name, index, ux))
    value_raters: dict[tuple[tuple[str, bool], str], float] = {}
    finite = [k for k, c in ceilings.items() if np.isfinite(c["noise_ceiling_low"]) and k in rater_vecs[1]]
    if finite:  # model RDMs (partial: residuals of the fit on all units) on the ceiling units
        keys = list(vectors)
        sub = np.stack([vectors[k][resampled_pairs(rater_vecs[0], n)] for k in keys])
        for ref_name in finite:
            for k, v in zip(keys, rater_scores(sub, rater_vecs[1][ref_name], method)):
                value_raters[(k, ref_name)] = float(v)
    rows = []
    for subset, refs in groups:
        if not refs:
            continue
        if subset is None:
            vecs, n_used = vectors, n
        else:  # the same RDMs restricted to the rated units (residuals from the full fit)
            pairs = resampled_pairs(subset, n)
            vecs, n_used = {k: v[pairs] for k, v in vectors.items()}, int(subset.size)
        results = rsa_inference(vecs, refs, comparison=method, n_bootstrap=n_bootstrap,
                                n_permutations=n_permutations, seed=seed,
                                tau_max_stimuli=int(cfg.get("tau_max_stimuli", 100)))
        for name, partial in vecs:
            for ref in refs:
                res = results[((name, partial), ref.name)]
                rows.append(dict(
                    analysis="rsa", set=set_name, model=model, layer=name, layer_index=layer_info[name],
                    metric=f"rsa_{'partial_' if partial else ''}{ref.name}_{cmp_name}",
                    value=res["value"], ci_low=res["ci_low"], ci_high=res["ci_high"], p=res["p"], n=n_used,
                    reference=ref.name, comparison=cmp_name, distance=distance, partial=partial,
                    unit=units.unit, n_stimuli=units.n_stimuli, n_pairs=n_used * (n_used - 1) // 2,
                    n_inference=res["n_inference"], covariate=str(covariate) if partial else "",
                    noise_ceiling_low=ceilings.get(ref.name, {}).get("noise_ceiling_low", np.nan),
                    noise_ceiling_high=ceilings.get(ref.name, {}).get("noise_ceiling_high", np.nan),
                    n_raters=ceilings.get(ref.name, {}).get("n_raters", np.nan),
                    value_raters=value_raters.get(((name, partial), ref.name), np.nan),
                ))
    table = avio.tidy_table(rows)
    table = stats.add_fdr(table, ["reference", "comparison", "partial"])
    if output is not None:
        avio.write_parquet(table, output)
    if rdms_output is not None:
        save_rdms(rdms_output, saved, units.frame, distance=distance,
                  max_stimuli=int(cfg.get("rdm_max_stimuli", 200)), seed=seed,
                  meta=dict(set=set_name, model=model, unit=units.unit))
    return table
