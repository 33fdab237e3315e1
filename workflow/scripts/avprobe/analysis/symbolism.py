"""Zero-shot sound symbolism (kiki–bouba) in a shared audio/text–image space (seed 000).

Words (``pseudowords`` audio clips or ``pseudoword_text``) and images (``shapes``) are
embedded by ONE model into one space: the shared space the model declares for these two
towers (``space``, e.g. ``text_image``, held by layer ``space_layer``, e.g. ``joint``), plus,
when asked (``unaligned``), every other layer name present in both embedding files with the
same width (hidden layers of two towers, not trained to be aligned: ``space =
"unaligned"``). Embeddings are L2-normalised and compared by cosine similarity.

Scores (names follow ``shared/reference/facts.md`` and Alper & Averbuch-Elor: a score is
named after its *anchors*):

* ``direction = "geometric"`` — each **word** is scored against the **image** anchors:
  mean cosine to round shapes − mean cosine to sharp shapes (``scored = "words"``).
* ``direction = "phonetic"`` — each **image** is scored against the **word** anchors:
  mean cosine to round pseudowords − mean cosine to sharp pseudowords (``scored = "images"``).
  Reference words (kiki, bouba) are never anchors and never scored items.

A positive score means "round". Metrics per direction (``metric`` column):

* ``auc`` — ROC-AUC of the score for the label (round = 1); equals
  ``sklearn.metrics.roc_auc_score``. Chance 0.5.
* ``tau_label`` — Kendall's tau-b between the label (round = 1) and the score; equals
  ``scipy.stats.kendalltau``.
* ``tau_sharpness`` — Kendall's tau-b between the score and ``-sharpness`` of the scored items
  (roundness positive), when the scored set has a ``sharpness`` column.
* ``delta_p_kb`` (geometric only) — share of pseudowords whose score is below *bouba*'s minus
  the share below *kiki*'s. Each word is compared with the reference clips of its own voice
  (or template) when the words set has one; a reference with several rows in a group is
  averaged. +1 = perfectly kiki–bouba-like, 0 = none, negative = reversed.

Inference (all seeded, vectorised). The claim of seed 000 is cross-modal: the sharp/round
axis of one modality lines up with the other's. Each p-value tests one stated hypothesis:

* ``p`` (primary, and ``p_fdr``) of every metric — auc, tau_label, tau_sharpness,
  delta_p_kb — H0: "the anchors' labels carry no information about the scored items'
  sharp/round axis". Null: the *anchors'* labels are shuffled (``n_permutations``) and the
  score direction rebuilt each time (round centroid − sharp centroid), so every shuffle
  rescores all items along a direction of the anchor cloud that has no sharp/round meaning;
  the scored items keep their labels. Two-sided around 0.5 (auc) / 0 (the others).
  ``null_low``/``null_high``: the central 95% of that null, so chance is a band, not a line.
  Why this null: shuffling the *scored items'* labels with the direction fixed tests only
  whether scores differ between classes, which any direction passes once the items form two
  clusters (untrained networks do); that is the lesson recorded in
  ``shared/reference/facts.md`` ("Inference for cross-modal scores"). Breaking the link
  between the modalities is what the cross-modal claim needs, and a score built from anchor
  centroids (Alper & Averbuch-Elor's definition) is rebuilt exactly by relabelling the
  anchors. Checked in ``tests/test_symbolism_null.py``: unaligned planted data and
  random-network controls are rejected at the nominal rate, aligned planted data are found.
* ``p_item_label`` (auc, tau_label, tau_sharpness) — H0: "given this fixed direction, scores
  do not differ between round and sharp items" (for tau_sharpness: "do not follow the
  items' sharpness"). Null: the scored items' labels (sharpness values) are shuffled. Kept
  as a diagnostic; it is NOT evidence of a shared axis. ``tau_label`` is a fixed monotone
  function of the AUC under label shuffles, so both share one null.
* Repeated measures: anchor labels are shuffled **per word** when the anchor words repeat
  (one word spoken by several voices, or several text templates), and so are the scored
  items' labels, sharpness and bootstrap resamples (cluster permutation / cluster
  bootstrap), so the voices of one word are never independent evidence.
* CIs: percentile bootstrap over scored items (``n_bootstrap``), direction fixed: the
  uncertainty of the value for these anchors. A CI that excludes 0.5 is therefore not a
  test of the cross-modal claim; ``p`` is. For ``delta_p_kb`` the anchor images are
  resampled too (each resample rebuilds the direction), since the statistic hinges on where
  two reference words fall along that direction.
* ``delta_p_kb`` rests on one *kiki* and one *bouba* per voice/template (``n_references``
  pairs): its power is low whatever the effect, its CI cannot include the references' own
  variability, and a non-significant value is no evidence of absence (``note`` column).
* ``p_fdr``: Benjamini–Hochberg of ``p`` across layers × directions × voices, per metric.

Per-voice breakdown: when the words set has a ``voice`` column every metric is also
reported per voice (``voice`` column; the pooled result has ``voice = "all"``). For the
phonetic direction a voice row uses only that voice's clips as anchors.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats

from .. import io as avio
from .. import validate
from ..sets import SET_MODALITY, WORD_FORMS
from . import stats

log = logging.getLogger("avprobe")

ROUND, SHARP = "round", "sharp"


# ----------------------------------------------------------------------------- scores
def anchor_scores(items: np.ndarray, anchors: np.ndarray, anchor_round: np.ndarray) -> np.ndarray:
    """Mean cosine of each item to the round anchors minus mean cosine to the sharp anchors.

    ``items`` and ``anchors`` are raw embeddings (normalised here). Using class centroids of
    the normalised anchors is exact: mean_j cos(x, a_j) = x̂ · mean_j â_j.
    """
    anchor_round = np.asarray(anchor_round, dtype=bool)
    if anchor_round.all() or not anchor_round.any():
        raise ValueError("anchors need both round and sharp items")
    a = stats.l2_normalize(anchors)
    direction = a[anchor_round].mean(0) - a[~anchor_round].mean(0)
    return stats.l2_normalize(items) @ direction


def _sorted_ties(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort order of ``scores`` and the start index of every run of equal values."""
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    return order, starts


def auc_tau(scores: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """ROC-AUC and Kendall tau-b of binary labels vs scores, batched and weighted.

    ``y`` is (n,) or (B, n) of 0/1 (1 = round); ``w`` is None or (B, n) multiplicities
    (a bootstrap resample: item i appears ``w[b, i]`` times). Returns two (B,) arrays.
    Ties in the score count one half (AUC) and zero (tau); duplicated items are ties in both
    variables, exactly as if the resampled vectors were passed to sklearn / scipy.
    """
    scores = np.asarray(scores, dtype=np.float64)
    n = scores.size
    y = np.atleast_2d(np.asarray(y, dtype=np.float64))
    if w is None:
        w = np.ones((y.shape[0], n))
    w = np.atleast_2d(np.asarray(w, dtype=np.float64))
    if w.shape[0] == 0 or y.shape[0] == 0:
        return np.zeros(0), np.zeros(0)
    b = max(y.shape[0], w.shape[0])
    order, starts = _sorted_ties(scores)
    ys, ws = y[:, order], w[:, order]
    wpos = np.broadcast_to(ws * ys, (b, n))
    wneg = np.broadcast_to(ws * (1.0 - ys), (b, n))
    pos_g = np.add.reduceat(wpos, starts, axis=1)
    neg_g = np.add.reduceat(wneg, starts, axis=1)
    below = np.cumsum(neg_g, axis=1) - neg_g
    u = (pos_g * (below + 0.5 * neg_g)).sum(1)
    n1, n0 = pos_g.sum(1), neg_g.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = u / (n1 * n0)
        big_n = n1 + n0
        n_pairs = big_n * (big_n - 1) / 2
        tx = n1 * (n1 - 1) / 2 + n0 * (n0 - 1) / 2
        tot_g = pos_g + neg_g
        ty = (tot_g * (tot_g - 1) / 2).sum(1)
        tau = (2 * u - n1 * n0) / np.sqrt((n_pairs - tx) * (n_pairs - ty))
    return auc, tau


def _row_sort(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row sort order of a (B, n) array, and for every sorted position the first and the
    last position of its run of equal values (ties)."""
    b, n = scores.shape
    order = np.argsort(scores, axis=1)
    ss = np.take_along_axis(scores, order, 1)
    idx = np.arange(n)
    start = np.ones((b, n), dtype=bool)
    start[:, 1:] = ss[:, 1:] != ss[:, :-1]
    end = np.ones((b, n), dtype=bool)
    end[:, :-1] = start[:, 1:]
    first = np.maximum.accumulate(np.where(start, idx, 0), axis=1)
    last = (n - 1) - np.maximum.accumulate(np.where(end[:, ::-1], idx, 0), axis=1)[:, ::-1]
    return order, first, last


def auc_tau_rows(scores: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC-AUC and Kendall tau-b of one label vector vs each row of ``scores``.

    ``scores`` (B, n), e.g. the scored items under B rebuilt anchor directions; ``y`` (n,) of
    0/1 (1 = round). Returns two (B,) arrays, equal row by row to :func:`auc_tau` (and so to
    sklearn / scipy): U counts the negatives below each positive, ties one half.
    """
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    y = np.asarray(y, dtype=np.float64)
    b, n = s.shape
    if b == 0:
        return np.zeros(0), np.zeros(0)
    order, first, last = _row_sort(s)
    ys = y[order]
    neg = np.cumsum(1.0 - ys, axis=1)
    below = np.take_along_axis(neg, first, 1) - (1.0 - np.take_along_axis(ys, first, 1))
    tied = np.take_along_axis(neg, last, 1) - below
    u = (ys * (below + 0.5 * tied)).sum(1)
    n1 = y.sum()
    n0 = n - n1
    n_pairs = n * (n - 1) / 2
    tx = n1 * (n1 - 1) / 2 + n0 * (n0 - 1) / 2
    ty = (np.arange(n) - first).sum(1)  # pairs tied in the score
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = u / (n1 * n0)
        tau = (2 * u - n1 * n0) / np.sqrt((n_pairs - tx) * (n_pairs - ty))
    return auc, tau


def kendall(x: np.ndarray, y: np.ndarray) -> float:
    """scipy's Kendall tau-b (NaN when a variable is constant)."""
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(scipy.stats.kendalltau(x, y).statistic)


#: Above this many distinct values of the second variable, Kendall replicates use sorting.
MAX_TYPES_VECTORISED = 64


def _tie_pairs(sorted_rows: np.ndarray) -> np.ndarray:
    """Number of pairs of equal values in each row of a row-wise sorted (B, n) array."""
    b, n = sorted_rows.shape
    idx = np.arange(n)
    start = np.ones((b, n), dtype=bool)
    start[:, 1:] = sorted_rows[:, 1:] != sorted_rows[:, :-1]
    first = np.maximum.accumulate(np.where(start, idx, 0), axis=1)
    return (idx - first).sum(1)


def _inversions(r: np.ndarray) -> np.ndarray:
    """Pairs i < j with r[i] > r[j] in each row of a (B, n) array of non-negative ints.

    Bottom-up merge counting, vectorised over rows and runs: at each level every element of a
    right run is located in its sorted left run with one global ``searchsorted`` (runs are
    made globally sorted by adding run offsets). O(B · n log² n), no loop over elements.
    """
    b, n = r.shape
    if n < 2:
        return np.zeros(b, dtype=np.int64)
    size = 1 << (n - 1).bit_length()
    big = int(r.max()) + 2
    cur = np.full((b, size), big - 1, dtype=np.int64)  # padding sorts last, adds no inversion
    cur[:, :n] = r
    inv = np.zeros(b, dtype=np.int64)
    run = 1
    while run < size:
        n_pairs = size // (2 * run)
        runs = cur.reshape(b, n_pairs, 2, run)
        off = (np.arange(b * n_pairs, dtype=np.int64) * big).reshape(b, n_pairs, 1)
        left = (runs[:, :, 0, :] + off).ravel()
        pos = np.searchsorted(left, (runs[:, :, 1, :] + off).ravel(), side="right")
        not_greater = pos.reshape(b, n_pairs, run) - (np.arange(b * n_pairs) * run).reshape(b, n_pairs, 1)
        inv += (run - not_greater).reshape(b, -1).sum(1)
        cur = np.sort(runs.reshape(b, n_pairs, 2 * run), axis=2).reshape(b, size)
        run *= 2
    return inv


def kendall_rows(xr: np.ndarray, yr: np.ndarray) -> np.ndarray:
    """Kendall tau-b of each row pair of two (B, n) integer-coded arrays (scipy's formula)."""
    xr = np.asarray(xr, dtype=np.int64)
    yr = np.asarray(yr, dtype=np.int64)
    b, n = xr.shape
    ky = int(yr.max()) + 1 if yr.size else 1
    key = xr * ky + yr
    order = np.argsort(key, axis=1, kind="stable")
    xs = np.take_along_axis(xr, order, 1)
    ys = np.take_along_axis(yr, order, 1)
    dis = _inversions(ys)
    tot = n * (n - 1) // 2
    xtie = _tie_pairs(xs)
    ytie = _tie_pairs(np.sort(yr, axis=1))
    ntie = _tie_pairs(np.take_along_axis(key, order, 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (tot - xtie - ytie + ntie - 2 * dis) / np.sqrt((tot - xtie).astype(float) * (tot - ytie))


def kendall_batch(
    x: np.ndarray,
    y: np.ndarray,
    src: np.ndarray | None = None,
    w: np.ndarray | None = None,
    chunk: int = 64,
) -> np.ndarray:
    """Kendall tau-b of ``x`` against many versions of ``y``, vectorised.

    Either ``src`` (B, n): replicate b pairs ``x[i]`` with ``y[src[b, i]]`` (a shuffle), or
    ``w`` (B, n): item i appears ``w[b, i]`` times (a bootstrap resample; duplicates are ties
    in both variables, as when scipy gets the expanded vectors). Cost O(B · n · K) for K
    distinct values of ``y`` (weighted one-hot cumulative counts); above
    ``MAX_TYPES_VECTORISED`` values, sort-based :func:`kendall_rows` (O(B · n log² n)).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = x.size
    if src is None and w is None:
        src = np.arange(n)[None, :]
    b_total = len(src) if src is not None else len(w)
    values, types = np.unique(y, return_inverse=True)
    k = values.size
    if b_total == 0:
        return np.zeros(0)
    if k > MAX_TYPES_VECTORISED:
        if src is not None:
            xi = np.broadcast_to(np.arange(n), (b_total, n))
            yi = np.asarray(src)
        else:
            w = np.asarray(w, dtype=np.int64)
            xi = yi = np.repeat(np.tile(np.arange(n), b_total), w.ravel()).reshape(b_total, -1)
        _, x_codes = np.unique(x, return_inverse=True)
        out = np.empty(b_total)
        for s in range(0, b_total, chunk):
            out[s : s + chunk] = kendall_rows(x_codes[xi[s : s + chunk]], types[yi[s : s + chunk]])
        return out
    order, starts = _sorted_ties(x)
    group = np.cumsum(np.r_[False, np.diff(x[order]) != 0])  # score-tie group of each sorted item
    sgn = np.sign(values[:, None] - values[None, :])  # sign(v_row − v_col)
    eye = np.eye(k)
    out = np.empty(b_total)
    for s in range(0, b_total, chunk):
        if src is not None:
            t = types[src[s : s + chunk]][:, order]  # (Bc, n) type of the item at sorted position
            ww = np.ones(t.shape)
        else:
            ww = np.asarray(w[s : s + chunk], dtype=np.float64)[:, order]
            t = np.broadcast_to(types[order], ww.shape)
        h = eye[t] * ww[:, :, None]  # (Bc, n, K) weighted one-hot
        per_group = np.add.reduceat(h, starts, axis=1)  # (Bc, G, K)
        before = np.cumsum(per_group, axis=1) - per_group  # weight of each type in lower score groups
        a = before @ sgn.T  # (Bc, G, K): Σ_l before[l] · sign(v_k − v_l)
        picked = np.take_along_axis(a[:, group, :], t[:, :, None], axis=2)[:, :, 0]
        c_minus_d = (ww * picked).sum(1)
        big_n = ww.sum(1)
        n0 = big_n * (big_n - 1) / 2
        gw = per_group.sum(2)
        tx = (gw * (gw - 1) / 2).sum(1)
        vk = h.sum(1)
        ty = (vk * (vk - 1) / 2).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[s : s + chunk] = c_minus_d / np.sqrt((n0 - tx) * (n0 - ty))
    return out


def kendall_score_rows(scores: np.ndarray, y: np.ndarray, chunk: int = 64) -> np.ndarray:
    """Kendall tau-b of each row of ``scores`` (B, n) against one vector ``y`` (n,).

    Equal row by row to ``scipy.stats.kendalltau(scores[b], y)``. With at most
    ``MAX_TYPES_VECTORISED`` distinct values of ``y``: each row sorted once, then weighted
    one-hot counts of the ``y`` values in lower score-tie groups (O(B · n · K)); otherwise
    sort-based :func:`kendall_rows` (O(B · n log² n)).
    """
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    b, n = s.shape
    out = np.empty(b)
    values, types = np.unique(np.asarray(y, dtype=np.float64), return_inverse=True)
    k = values.size
    if k > MAX_TYPES_VECTORISED:
        for start in range(0, b, chunk):
            rows = s[start : start + chunk]
            codes = scipy.stats.rankdata(rows, method="dense", axis=1).astype(np.int64) - 1
            out[start : start + chunk] = kendall_rows(np.broadcast_to(types, codes.shape), codes)
        return out
    sgn = np.sign(values[:, None] - values[None, :])  # sign(v_row − v_col)
    eye = np.eye(k)
    n0 = n * (n - 1) / 2
    counts = np.bincount(types, minlength=k)
    ty = (counts * (counts - 1) / 2).sum()
    for start in range(0, b, chunk):
        order, first, _ = _row_sort(s[start : start + chunk])
        t = types[order]
        h = eye[t]  # (Bc, n, K)
        before = np.take_along_axis(np.cumsum(h, axis=1) - h, first[:, :, None], 1)  # lower score groups
        c_minus_d = (before * sgn[t]).sum((1, 2))
        tx = (np.arange(n) - first).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + chunk] = c_minus_d / np.sqrt((n0 - tx) * (n0 - ty))
    return out


def anchor_directions(anchors: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Score directions (round centroid − sharp centroid) for many labelings of the anchors.

    ``anchors`` (n_a, d) L2-normalised embeddings; ``labels`` (B, n_a) booleans (True =
    round), e.g. shuffled anchor labels. Returns (d, B); a labeling without both classes gives
    a NaN column (its replicate is then dropped from the p-value). Item scores under labeling
    b are ``items_n @ out[:, b]``, exactly :func:`anchor_scores` with ``labels[b]``.
    """
    yr = np.atleast_2d(np.asarray(labels, dtype=bool))
    n_r = yr.sum(1, keepdims=True)
    n_s = (~yr).sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        weights = yr / np.where(n_r > 0, n_r, np.nan) - (~yr) / np.where(n_s > 0, n_s, np.nan)
    return anchors.T @ weights.T


def delta_p_kb(
    scores: np.ndarray,
    groups: np.ndarray,
    bouba: dict,
    kiki: dict,
    w: np.ndarray | None = None,
) -> np.ndarray:
    """ΔP_kb = P(score < bouba's) − P(score < kiki's), each word vs its group's references.

    ``scores`` (n,) or (n, B) for many score vectors at once; ``bouba``/``kiki`` map a group to
    the reference score (scalar, or (B,) when scores are batched). ``w`` (B, n) bootstrap
    multiplicities. Words of groups that lack a reference are left out. Returns (B,).
    """
    s = np.asarray(scores, dtype=np.float64)
    s = s if s.ndim == 2 else s[:, None]
    groups = np.asarray(groups)
    keys = [g for g in bouba if g in kiki]
    keep = np.isin(groups, keys)
    if not keep.any():
        return np.full(1 if w is None else len(w), np.nan)
    codes = pd.Index(keys).get_indexer(groups[keep])
    width = s.shape[1]
    bo = np.stack([np.broadcast_to(np.asarray(bouba[g], dtype=float), (width,)) for g in keys])
    ki = np.stack([np.broadcast_to(np.asarray(kiki[g], dtype=float), (width,)) for g in keys])
    sk = s[keep]
    diff = (sk < bo[codes]).astype(float) - (sk < ki[codes]).astype(float)  # (n_keep, B or 1)
    if w is None:
        return diff.mean(0)
    wk = np.asarray(w, dtype=float)[:, keep]  # (Bw, n_keep)
    if width == 1:
        return (wk @ diff[:, 0]) / wk.sum(1)
    return (wk * diff.T).sum(1) / wk.sum(1)


# ----------------------------------------------------------------------------- one direction
def _cluster_codes(frame: pd.DataFrame) -> np.ndarray | None:
    """Word identity when words repeat (voices/templates): the unit for shuffles/resamples."""
    if "word" in frame.columns and frame["word"].duplicated().any():
        return pd.factorize(frame["word"])[0]
    return None


def _null_summary(observed: float, null: np.ndarray, center: float) -> dict:
    """Primary p-value of a cross-modal statistic and the central 95% of its null."""
    lo, hi = stats.bootstrap_ci(null)  # percentiles of the replicates, the same rule
    return dict(p=stats.perm_pvalue(observed, null, "two-sided", center), null_low=lo, null_high=hi)


def _item_rows(
    scores: np.ndarray,
    frame: pd.DataFrame,
    null_scores: np.ndarray,
    rng: np.random.Generator,
    n_permutations: int,
    n_bootstrap: int,
) -> list[dict]:
    """auc, tau_label, tau_sharpness of one score vector over its scored items.

    ``null_scores`` (n, B): the same items scored along directions rebuilt from shuffled
    anchor labels (the primary null, ``p``); the item-label shuffle gives ``p_item_label``.
    """
    y = (frame["label"].to_numpy() == ROUND).astype(float)
    n = y.size
    clusters = _cluster_codes(frame)
    groups = clusters if clusters is not None else np.arange(n)
    rows = []
    if y.min() == y.max():
        return rows
    null_rows = np.asarray(null_scores, dtype=np.float64).T
    null_rows = null_rows[np.isfinite(null_rows).all(1)]
    auc, tau = (v[0] for v in auc_tau(scores, y))
    anchor_auc, anchor_tau = auc_tau_rows(null_rows, y)
    src = stats.group_permutations(rng, n_permutations, groups)
    item_auc, item_tau = auc_tau(scores, y[src])
    w = stats.bootstrap_weights(rng, n_bootstrap, n, clusters)
    boot_auc, boot_tau = auc_tau(scores, y[None, :], w)
    rows.append(dict(metric="auc", value=auc, ci=stats.bootstrap_ci(boot_auc), n=n,
                     **_null_summary(auc, anchor_auc, 0.5),
                     p_item_label=stats.perm_pvalue(auc, item_auc, "two-sided", 0.5)))
    rows.append(dict(metric="tau_label", value=tau, ci=stats.bootstrap_ci(boot_tau), n=n,
                     **_null_summary(tau, anchor_tau, 0.0),
                     p_item_label=stats.perm_pvalue(tau, item_tau, "two-sided", 0.0)))
    if "sharpness" in frame.columns and frame["sharpness"].notna().all():
        roundness = -frame["sharpness"].to_numpy(dtype=float)
        obs = kendall(scores, roundness)
        if np.isfinite(obs):
            anchor_null = kendall_score_rows(null_rows, roundness)
            item_null = kendall_batch(scores, roundness, src=src)
            boot = kendall_batch(scores, roundness, w=w)
            rows.append(dict(metric="tau_sharpness", value=obs, ci=stats.bootstrap_ci(boot), n=n,
                             **_null_summary(obs, anchor_null, 0.0),
                             p_item_label=stats.perm_pvalue(obs, item_null, "two-sided", 0.0)))
    return rows


def anchor_permutations(
    rng: np.random.Generator, n_permutations: int, frame: pd.DataFrame
) -> np.ndarray:
    """Shuffled labels (True = round) of an anchor set, (n_permutations, n_anchors).

    Labels move per word when words repeat (voices/templates: :func:`_cluster_codes`), so
    every voice of one word keeps one shuffled label; otherwise per item.
    """
    labels = frame["label"].to_numpy() == ROUND
    clusters = _cluster_codes(frame)
    groups = clusters if clusters is not None else np.arange(len(frame))
    return labels[stats.group_permutations(rng, n_permutations, groups)]


def _reference_scores(scores: np.ndarray, frame: pd.DataFrame, group_col: str | None) -> tuple[dict, dict]:
    """Group → mean score of that group's bouba (round reference) and kiki (sharp reference)."""
    ref = frame["is_reference"].to_numpy(dtype=bool)
    lab = frame["label"].to_numpy()
    grp = frame[group_col].to_numpy() if group_col else np.zeros(len(frame), dtype=int)
    bouba, kiki = {}, {}
    for g in pd.unique(grp):
        m = ref & (grp == g)
        if (m & (lab == ROUND)).any():
            bouba[g] = scores[m & (lab == ROUND)].mean(axis=0)
        if (m & (lab == SHARP)).any():
            kiki[g] = scores[m & (lab == SHARP)].mean(axis=0)
    return bouba, kiki


def symbolism_layer(
    words: pd.DataFrame,
    word_emb: np.ndarray,
    images: pd.DataFrame,
    image_emb: np.ndarray,
    *,
    n_permutations: int = 1000,
    n_bootstrap: int = 1000,
    seed: int = 0,
    scores_out: list | None = None,
) -> list[dict]:
    """All metrics of one layer. ``words``/``images`` are manifests aligned row-for-row with
    the embeddings (columns label, is_reference [words], sharpness, voice, word optional).

    Returns rows with keys metric, value, ci_low, ci_high, p, null_low, null_high,
    p_item_label, n, direction, scored, voice, n_anchors (+ n_references, note for
    ``delta_p_kb``); the module docstring says which hypothesis each p-value tests.
    When ``scores_out`` is a list, the pooled (``voice = "all"``) per-item scores are appended
    to it as DataFrames (columns of :data:`SCORE_COLUMNS` that exist).
    """
    rng = np.random.default_rng(seed)
    words = words.reset_index(drop=True)
    images = images.reset_index(drop=True)
    if "is_reference" not in words.columns:
        words = words.assign(is_reference=False)
    is_ref = words["is_reference"].fillna(False).to_numpy(dtype=bool)
    img_round = images["label"].to_numpy() == ROUND
    voice_col = "voice" if "voice" in words.columns else None
    group_col = voice_col or ("template" if "template" in words.columns else None)
    breakdown = [("all", np.ones(len(words), dtype=bool))]
    if voice_col:
        breakdown += [(str(v), (words[voice_col] == v).to_numpy()) for v in sorted(words[voice_col].unique())]

    img_n = stats.l2_normalize(image_emb)
    word_n = stats.l2_normalize(word_emb)
    # The image anchors are the same for every voice row: one set of shuffled image labels,
    # hence one null score matrix (all words × n_permutations), sliced per voice.
    geo_dir = anchor_directions(img_n, img_round[None, :])[:, 0]
    geo_null = word_n @ anchor_directions(img_n, anchor_permutations(rng, n_permutations, images))
    out: list[dict] = []

    def emit(rows, direction, scored, voice, n_anchors):
        for r in rows:
            lo, hi = r.pop("ci")
            out.append(dict(r, ci_low=lo, ci_high=hi, direction=direction, scored=scored,
                            voice=voice, n_anchors=n_anchors))

    for voice, in_group in breakdown:
        scored = in_group & ~is_ref
        if not scored.any():
            continue
        # geometric: words scored against the image anchors --------------------------------
        s_all = word_n[in_group] @ geo_dir
        null_all = geo_null[in_group]
        wframe = words[in_group].reset_index(drop=True)
        wref = wframe["is_reference"].fillna(False).to_numpy(dtype=bool)
        s_words = s_all[~wref]
        frame = wframe[~wref].reset_index(drop=True)
        rows = _item_rows(s_words, frame, null_all[~wref], rng, n_permutations, n_bootstrap)
        grp = frame[group_col].to_numpy() if group_col else np.zeros(len(frame), dtype=int)
        bouba, kiki = _reference_scores(s_all, wframe, group_col)
        dp = delta_p_kb(s_words, grp, bouba, kiki)[0]
        if np.isfinite(dp):
            b_null, k_null = _reference_scores(null_all, wframe, group_col)
            null = delta_p_kb(null_all[~wref], grp, b_null, k_null)
            # bootstrap: resample the scored words (per word) AND the anchor images
            w = stats.bootstrap_weights(rng, n_bootstrap, len(frame), _cluster_codes(frame))
            wi = stats.bootstrap_weights(rng, n_bootstrap, len(images)).astype(float)
            wr, ws = wi * img_round, wi * ~img_round
            d_boot = (wr @ img_n) / wr.sum(1, keepdims=True) - (ws @ img_n) / ws.sum(1, keepdims=True)
            s_boot = word_n[in_group] @ d_boot.T  # (n_group_words, B)
            b_boot, k_boot = _reference_scores(s_boot, wframe, group_col)
            boot = delta_p_kb(s_boot[~wref], grp, b_boot, k_boot, w)
            n_refs = sum(g in kiki for g in bouba)
            rows.append(dict(metric="delta_p_kb", value=dp, ci=stats.bootstrap_ci(boot),
                             n=len(frame), **_null_summary(dp, null, 0.0), p_item_label=np.nan,
                             n_references=n_refs, note=DELTA_P_NOTE.format(n=n_refs)))
        emit(rows, "geometric", "words", voice, int(len(images)))
        if scores_out is not None and voice == "all":
            scores_out.append(_score_frame(wframe, s_all, "geometric", "words"))
        # phonetic: images scored against this group's word anchors -------------------------
        anchors = words[scored]
        anchor_round = anchors["label"].to_numpy() == ROUND
        if anchor_round.all() or not anchor_round.any():
            continue
        s_img = img_n @ anchor_directions(word_n[scored], anchor_round[None, :])[:, 0]
        null = img_n @ anchor_directions(word_n[scored], anchor_permutations(rng, n_permutations, anchors))
        rows = _item_rows(s_img, images, null, rng, n_permutations, n_bootstrap)
        emit(rows, "phonetic", "images", voice, int(scored.sum()))
        if scores_out is not None and voice == "all":
            scores_out.append(_score_frame(images, s_img, "phonetic", "images"))
    return out


#: ``note`` of every ``delta_p_kb`` row: the statistic's power, stated where it is read.
DELTA_P_NOTE = ("rests on {n} kiki/bouba reference pair(s): low power; the CI (anchors and words "
                "resampled) cannot include the references' own sampling variability, and a "
                "non-significant value is no evidence of absence")


#: Columns of the per-item scores table (``<name>.scores.parquet``), those present.
SCORE_COLUMNS = ("model", "layer", "layer_index", "direction", "scored", "form", "stimulus_id",
                 "word", "voice", "label", "is_reference", "sharpness", "score")


def _score_frame(frame: pd.DataFrame, scores: np.ndarray, direction: str, scored: str) -> pd.DataFrame:
    cols = [c for c in ("stimulus_id", "word", "voice", "label", "is_reference", "sharpness") if c in frame.columns]
    out = frame[cols].reset_index(drop=True).copy()
    out["score"] = np.asarray(scores, dtype=float)
    out["direction"] = direction
    out["scored"] = scored
    return out


# ----------------------------------------------------------------------------- files → table
def layers_to_score(
    words_embeddings: str | Path,
    images_embeddings: str | Path,
    space: str | None,
    space_layer: str | None,
    unaligned: bool = False,
) -> list[tuple[str, int, str]]:
    """``(layer, layer_index, space)`` of every layer scored.

    The declared shared space comes first: ``space_layer`` of both files, labelled ``space``
    (default: the layer's name). With ``unaligned``, every other layer name present in both
    files follows, in the words file's order, with ``space = "unaligned"`` (widths are
    checked when read). Raises ``KeyError`` naming the file and the layer when
    ``space_layer`` is missing from a file.
    """
    w_layers = avio.embedding_layers(words_embeddings)
    i_layers = dict(avio.embedding_layers(images_embeddings))
    out = []
    if space_layer is not None:
        for path, names in ((words_embeddings, dict(w_layers)), (images_embeddings, i_layers)):
            if space_layer not in names:
                raise KeyError(f"symbolism: the shared-space layer {space_layer!r} (space "
                               f"{space or space_layer!r}) is not in {path}; its layers: "
                               f"{', '.join(names) or 'none'}")
        out.append((space_layer, dict(w_layers)[space_layer], space or space_layer))
    if unaligned:
        out += [(n, i, "unaligned") for n, i in w_layers if n in i_layers and n != space_layer]
    return out


def _aligned(manifest: pd.DataFrame, ids: list[str]) -> pd.DataFrame:
    m = manifest.assign(stimulus_id=manifest["stimulus_id"].astype(str)).set_index("stimulus_id")
    ids = pd.Index([str(i) for i in ids])
    missing = ids[~ids.isin(m.index)]
    if len(missing):
        raise KeyError(f"{len(missing)} embedded stimuli are missing from the manifest, e.g. {missing[0]!r}")
    return m.loc[ids].reset_index()


#: Seed offset of the anchor resamples of :func:`anchor_bootstrap_scores`: it depends only on the
#: config seed, so every entry scored against the same anchor set draws the same resamples
#: (a paired comparison of two entries then resamples the anchors once for both).
ANCHOR_BOOT_SEED = 104729


def anchor_bootstrap_scores(word_emb: np.ndarray, image_emb: np.ndarray, image_round: np.ndarray,
                            n_boot: int, seed: int) -> np.ndarray:
    """Geometric scores of every word under ``n_boot`` resamples of the anchor images.

    Each resample draws the round and the sharp anchors with replacement within their class
    (so both classes stay represented) and rebuilds the direction; ``(n_words, n_boot)``
    float32. The draws depend only on ``seed`` and the anchors' labels, so two entries with the
    same anchors (e.g. speech and text forms) share them. This is the anchor half of the joint
    bootstrap that :mod:`avprobe.analysis.symbolism_forms` uses: a difference between two forms
    carries the uncertainty of the direction, which an untrained network's AUC mostly is.
    """
    rng = np.random.default_rng([int(seed), ANCHOR_BOOT_SEED])
    image_round = np.asarray(image_round, dtype=bool)
    a = stats.l2_normalize(np.asarray(image_emb, dtype=np.float64))
    r_idx, s_idx = np.flatnonzero(image_round), np.flatnonzero(~image_round)
    pick_r = r_idx[rng.integers(0, r_idx.size, (n_boot, r_idx.size))]
    pick_s = s_idx[rng.integers(0, s_idx.size, (n_boot, s_idx.size))]
    directions = a[pick_r].mean(1) - a[pick_s].mean(1)  # (B, D)
    return (stats.l2_normalize(np.asarray(word_emb, dtype=np.float64)) @ directions.T).astype(np.float32)


def run_symbolism(
    words_manifest: str | Path,
    words_embeddings: str | Path,
    images_manifest: str | Path,
    images_embeddings: str | Path,
    output: str | Path | None = None,
    scores_output: str | Path | None = None,
    anchor_boot_output: str | Path | None = None,
    *,
    model: str,
    words: str,
    images: str,
    n_permutations: int = 1000,
    n_bootstrap: int = 1000,
    seed: int = 0,
    space: str | None,
    space_layer: str | None,
    unaligned: bool = False,
) -> pd.DataFrame:
    """Score the model's shared space (and optionally its other layers); write the tidy
    table (``analysis = "symbolism"``).

    ``space``/``space_layer``: the shared space the model declares for these two towers (e.g.
    ``text_image`` held by layer ``joint``; :func:`layers_to_score`). ``space_layer = None``
    means the model declares none: only ``unaligned`` layers are scored, if asked for.
    ``unaligned``: also score every other layer present in both files with equal widths
    (``space = "unaligned"``; hidden layers of two towers, not trained to be aligned).

    Columns: the standard ones (``set`` = the words set) plus form (speech | text | cascade, :data:`avprobe.sets.WORD_FORMS`), direction
    (geometric | phonetic), scored (words | images), voice ("all" or a voice id), images
    (the image set), space (the space name, or ``unaligned``), n_anchors, null_low,
    null_high, p_item_label, n_references, note, p_fdr (module docstring).

    ``anchor_boot_output`` (optional): an ``.npz`` with the geometric scores of every word of the
    space layer under resampled anchors (``scores``, :func:`anchor_bootstrap_scores`) and under
    shuffled anchor labels (``null``, drawn from the config seed alone), for the forms comparison.

    ``scores_output`` (optional): the per-item scores behind the pooled rows, for figures —
    columns model, layer, layer_index, direction, scored, form, stimulus_id, word, voice,
    label, is_reference, sharpness, score (those the manifests have). Positive = round.
    """
    wm = avio.read_manifest(words_manifest)
    im = avio.read_manifest(images_manifest)
    why = "the sharp/round class that sound symbolism scores"
    validate.require_columns(wm, ["label"], set_name=words, manifest_path=words_manifest, why=why)
    validate.require_columns(im, ["label"], set_name=images, manifest_path=images_manifest, why=why)
    wm = validate.analysis_manifest(wm, words_embeddings, manifest_path=words_manifest, classes="label")
    im = validate.analysis_manifest(im, images_embeddings, manifest_path=images_manifest, classes="label")
    modality = SET_MODALITY.get(words)
    form = WORD_FORMS.get(words) or ("speech" if modality == "audio" else "text" if modality == "text" else (
        "text" if "path" not in wm.columns else "speech"))
    rows = []
    score_frames: list[pd.DataFrame] = []
    layers = layers_to_score(words_embeddings, images_embeddings, space, space_layer, unaligned)
    for name, index, layer_space in layers:
        w_ids, w_x = validate.read_checked_layer(words_embeddings, name)
        i_ids, i_x = validate.read_checked_layer(images_embeddings, name)
        if w_x.shape[1] != i_x.shape[1]:
            if layer_space != "unaligned":
                raise ValueError(f"symbolism: the shared-space layer {name!r} has width "
                                 f"{w_x.shape[1]} in {words_embeddings} but {i_x.shape[1]} in "
                                 f"{images_embeddings}")
            log.info("symbolism: layer %s skipped (widths %d vs %d)", name, w_x.shape[1], i_x.shape[1])
            continue
        log.info("symbolism %s %s×%s layer %s: %d words, %d images", model, words, images, name,
                 len(w_ids), len(i_ids))
        layer_scores: list[pd.DataFrame] = []
        layer_rows = symbolism_layer(
            _aligned(wm, w_ids), w_x, _aligned(im, i_ids), i_x,
            n_permutations=n_permutations, n_bootstrap=n_bootstrap,
            seed=int(seed) + 7919 * int(index), scores_out=layer_scores,
        )
        for f in layer_scores:
            score_frames.append(f.assign(model=model, layer=name, layer_index=index, form=form))
        if anchor_boot_output is not None and layer_space != "unaligned":
            wa, ia = _aligned(wm, w_ids), _aligned(im, i_ids)
            boot = anchor_bootstrap_scores(w_x, i_x, ia["label"].to_numpy() == ROUND, max(n_bootstrap, 1), seed)
            # the cross-modal null, drawn from the config seed alone: entries with the same anchors
            # share these label permutations, so a difference between two forms has a null too
            perm = anchor_permutations(np.random.default_rng([int(seed), ANCHOR_BOOT_SEED, 1]),
                                       max(n_permutations, 1), ia)
            null = stats.l2_normalize(w_x.astype(np.float64)) @ anchor_directions(stats.l2_normalize(
                i_x.astype(np.float64)), perm)
            # fixed-width strings: an .npz of object arrays would need pickle to read back
            cols = {c: wa[c].astype(str).to_numpy().astype("U") for c in ("stimulus_id", "word", "voice", "label")
                    if c in wa}
            ref = wa["is_reference"].fillna(False).to_numpy(dtype=bool) if "is_reference" in wa else np.zeros(len(wa), bool)
            with avio.atomic_path(anchor_boot_output) as tmp:
                with open(tmp, "wb") as fh:
                    np.savez_compressed(fh, scores=boot.astype(np.float16), null=null.astype(np.float16),
                                        is_reference=ref, layer=np.asarray(name), **cols)
        for r in layer_rows:
            r.update(analysis="symbolism", set=words, model=model, layer=name, layer_index=index,
                     form=form, images=images, space=layer_space)
        rows.extend(layer_rows)
    if not layers:
        log.warning("symbolism: no layer to score in %s and %s (space_layer=%r, unaligned=%s)",
                    words_embeddings, images_embeddings, space_layer, unaligned)
    table = avio.tidy_table(rows)
    table = stats.add_fdr(table, ["metric"])
    if output is not None:
        avio.write_parquet(table, output)
    if scores_output is not None:
        scores = pd.concat(score_frames, ignore_index=True) if score_frames else pd.DataFrame(columns=list(SCORE_COLUMNS))
        scores = scores[[c for c in SCORE_COLUMNS if c in scores.columns]]
        avio.write_parquet(scores, scores_output)
    return table
