"""Linear probes per layer (seed 001, Bost et al., experiment 2).

For every layer and every target column (default: those of ``label``, ``material``,
``hollowness``, ``extension`` the manifest has):

* features are standardised (``StandardScaler`` fit on the training rows only) and an
  L2-regularised multinomial logistic regression (sklearn ``LogisticRegression``, solver
  lbfgs) is trained; the inverse regularisation ``C`` is chosen from ``cfg["C"]`` by an inner
  cross-validation on the training rows (``inner_folds``, default 3; accuracy, ties → the
  smaller C). The C path is fitted with warm starts, smallest C first.
* ``split = "cv"``: stratified k-fold (``folds``, default 5) over the whole set, predictions
  pooled over the held-out folds. When a set repeats a ``word`` (one word × six voices) the
  folds are **grouped by word** (StratifiedGroupKFold, inner folds too), so a word is never
  in the training and test rows at once. ``groups: null`` in cfg turns this off.
* transfer splits (``cfg["splits"]``): ``[{name, train: {col: [values]}, test: {col: [values]},
  targets?}]`` — train on the rows matching every ``train`` condition, test on the rows matching
  every ``test`` condition (all other rows when ``test`` is absent). Overlap is an error. A split
  runs only for the targets it lists (default all), never for a target it conditions on, and
  only on sets that have its columns (seed 001's hollow → solid split of the material probe
  leaves the pseudowords alone).
  ``C`` is still chosen by inner CV inside the training rows.

Metrics (``metric`` column) over the pooled test predictions:

* ``accuracy`` — ``chance`` is the accuracy of always predicting the training rows' majority
  class (the seed's "most common category"); p = exact one-sided binomial test of the number
  of correct test predictions against ``chance`` (assumes independent test items).
* ``balanced_accuracy`` — mean per-class recall (sklearn), ``chance = 1/K``; p = one-sided
  permutation test shuffling the true labels against the fixed predictions (whole words at
  a time when the label is constant within words), ``n_permutations`` shuffles.
* CIs: percentile bootstrap over test items (``n_bootstrap``; clusters = words when grouped).
* ``p_fdr``: Benjamini–Hochberg across layers, per (target, split, metric).

Extra columns: target, split, chance, n_train, C (the most often chosen C), n_features,
grouped (bool), p_fdr. ``n`` is the number of test predictions.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.preprocessing import StandardScaler

from .. import io as avio
from .. import validate
from ..sets import IMPACT_LABELS
from . import stats

log = logging.getLogger("avprobe")

DEFAULT_CS = (0.01, 0.1, 1.0, 10.0)
#: Default targets: every one of these columns the manifest has (sharp/round label and
#: seed 001's physical labels of the impacts set).
DEFAULT_TARGETS = ("label", *IMPACT_LABELS)


# ----------------------------------------------------------------------------- fitting
def _folds(y: np.ndarray, groups: np.ndarray | None, k: int, seed: int):
    """Stratified (group) k-fold splits, with k reduced to what the smallest class allows."""
    if groups is None:
        min_class = np.bincount(y).min()
        k = int(min(k, min_class))
        if k < 2:
            return []
        return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
    per_class = [np.unique(groups[y == c]).size for c in np.unique(y)]
    k = int(min(k, min(per_class)))
    if k < 2:
        return []
    uniq, first, codes = np.unique(groups, return_index=True, return_inverse=True)
    if np.array_equal(y, y[first][codes]):
        # label constant within groups: stratify the groups themselves (exact and fast)
        g_splits = StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(uniq.size), y[first])
        return [(np.flatnonzero(np.isin(codes, gtr)), np.flatnonzero(np.isin(codes, gte))) for gtr, gte in g_splits]
    return list(StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, groups))


def _new_lr(c: float, seed: int, warm: bool = False) -> LogisticRegression:
    return LogisticRegression(C=c, solver="lbfgs", max_iter=1000, warm_start=warm, random_state=seed)


def _fit(x: np.ndarray, y: np.ndarray, c: float, seed: int) -> tuple[StandardScaler, LogisticRegression]:
    scaler = StandardScaler().fit(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = _new_lr(c, seed).fit(scaler.transform(x), y)
    return scaler, clf


def select_c(
    x: np.ndarray,
    y: np.ndarray,
    cs: Sequence[float],
    *,
    groups: np.ndarray | None = None,
    inner_folds: int = 3,
    seed: int = 0,
) -> float:
    """C with the best mean inner-CV accuracy (ties → smaller C); scaler refit per inner fold."""
    cs = sorted(float(c) for c in cs)
    if len(cs) == 1:
        return cs[0]
    splits = _folds(y, groups, inner_folds, seed)
    if not splits:
        return cs[len(cs) // 2]
    acc = np.zeros(len(cs))
    for tr, va in splits:
        if np.unique(y[tr]).size < 2:
            continue
        scaler = StandardScaler().fit(x[tr])
        xtr, xva = scaler.transform(x[tr]), scaler.transform(x[va])
        clf = _new_lr(cs[0], seed, warm=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for i, c in enumerate(cs):  # warm start along the regularisation path
                clf.set_params(C=c)
                clf.fit(xtr, y[tr])
                acc[i] += np.mean(clf.predict(xva) == y[va])
    return cs[int(np.argmax(acc))]


def fit_predict(
    x: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    cs: Sequence[float],
    *,
    groups: np.ndarray | None = None,
    inner_folds: int = 3,
    seed: int = 0,
) -> tuple[np.ndarray, float, int]:
    """Fit on the rows ``train`` (indices), predict the rows ``test``.

    Returns (predictions for ``test``, chosen C, majority class of the training rows).
    Nothing about the test rows (features, labels, scaling) reaches the fit.
    """
    xtr, ytr = x[train], y[train]
    gtr = None if groups is None else groups[train]
    majority = int(np.bincount(ytr).argmax())
    if np.unique(ytr).size < 2:
        return np.full(len(test), majority), float("nan"), majority
    c = select_c(xtr, ytr, cs, groups=gtr, inner_folds=inner_folds, seed=seed)
    scaler, clf = _fit(xtr, ytr, c, seed)
    return clf.predict(scaler.transform(x[test])), c, majority


def split_masks(frame: pd.DataFrame, split: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """Boolean train/test masks of a transfer split ``{name, train: {col: [v]}, test: {...}}``."""

    def match(conds: Mapping) -> np.ndarray:
        mask = np.ones(len(frame), dtype=bool)
        for col, vals in conds.items():
            if col not in frame.columns:
                raise KeyError(f"split {split.get('name')!r}: no column {col!r}")
            vals = vals if isinstance(vals, (list, tuple, set)) else [vals]
            mask &= frame[col].astype(str).isin([str(v) for v in vals]).to_numpy()
        return mask

    if not split.get("train"):
        raise ValueError(f"split {split.get('name')!r} needs a non-empty 'train' condition")
    train = match(split["train"])
    test = match(split["test"]) if split.get("test") else ~train
    if (train & test).any():
        raise ValueError(f"split {split.get('name')!r}: {int((train & test).sum())} rows are in train and test")
    return train, test


def _split_applies(split: Mapping, frame: pd.DataFrame, target: str) -> bool:
    """A transfer split runs for a target when the split lists it (``targets``, default every
    target), does not condition on the target itself, and the set has every column it conditions
    on (a split over the impacts' ``hollowness`` does not apply to the pseudowords)."""
    if split.get("targets") and target not in split["targets"]:
        return False
    columns = set(split.get("train") or {}) | set(split.get("test") or {})
    if target in columns:
        return False
    missing = columns - set(frame.columns)
    if missing:
        log.info("probe: split %s needs columns %s this set lacks; skipped", split.get("name"), sorted(missing))
        return False
    return True


# ----------------------------------------------------------------------------- scoring
def _balanced(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """Balanced accuracy of (B, n) label rows against fixed predictions (n,)."""
    y_true = np.atleast_2d(y_true)
    recalls = []
    for c in range(k):
        is_c = y_true == c
        den = is_c.sum(1)
        num = (is_c & (y_pred == c)[None, :]).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            recalls.append(np.where(den > 0, num / np.maximum(den, 1), np.nan))
    return np.nanmean(np.stack(recalls, 1), axis=1)


def probe_scores(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    chance: float,
    *,
    n_classes: int,
    groups: np.ndarray | None = None,
    n_bootstrap: int = 1000,
    n_permutations: int = 1000,
    rng: np.random.Generator,
) -> list[dict]:
    """accuracy and balanced_accuracy rows (value, CI, p, chance) of pooled test predictions."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    n = y_true.size
    correct = (y_true == y_pred).astype(float)
    w = stats.bootstrap_weights(rng, n_bootstrap, n, groups).astype(float)
    acc = float(correct.mean())
    boot_acc = (w @ correct) / w.sum(1)
    rows = [dict(metric="accuracy", value=acc, ci=stats.bootstrap_ci(boot_acc),
                 p=stats.binomial_pvalue(int(correct.sum()), n, chance), n=n, chance=chance)]
    present = np.unique(y_true)
    onehot = (y_true[:, None] == present[None, :]).astype(float)
    bal = float(_balanced(y_true, y_pred, n_classes)[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        boot_bal = np.nanmean((w @ (onehot * correct[:, None])) / (w @ onehot), axis=1)
    homogeneous = groups is not None and pd.Series(y_true).groupby(groups).nunique().max() == 1
    src = (stats.group_permutations(rng, n_permutations, groups) if homogeneous
           else stats.item_permutations(rng, n_permutations, n))
    null = _balanced(y_true[src], y_pred, n_classes)
    rows.append(dict(metric="balanced_accuracy", value=bal, ci=stats.bootstrap_ci(boot_bal),
                     p=stats.perm_pvalue(bal, null, "greater"), n=n, chance=1.0 / present.size))
    return rows


# ----------------------------------------------------------------------------- layer → rows
def probe_layer(
    x: np.ndarray,
    frame: pd.DataFrame,
    *,
    targets: Sequence[str] = ("label",),
    folds: int = 5,
    cs: Sequence[float] = DEFAULT_CS,
    inner_folds: int = 3,
    splits: Sequence[Mapping] = (),
    groups: np.ndarray | None = None,
    n_bootstrap: int = 1000,
    n_permutations: int = 1000,
    seed: int = 0,
) -> list[dict]:
    """Rows for one layer: every target × (``cv`` + every transfer split) × metric."""
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=np.float64)
    rows: list[dict] = []
    for target in targets:
        if target not in frame.columns:
            log.info("probe: no column %r, target skipped", target)
            continue
        ok = frame[target].notna().to_numpy()
        classes, y_all = np.unique(frame.loc[ok, target].astype(str), return_inverse=True)
        if classes.size < 2:
            continue
        y = np.full(len(frame), -1)
        y[ok] = y_all
        k = classes.size
        # cross-validated -------------------------------------------------------------------
        idx = np.flatnonzero(ok)
        g = None if groups is None else groups[idx]
        pred = np.full(idx.size, -1)
        chance_hits = np.zeros(idx.size)
        chosen = []
        for tr, te in _folds(y[idx], g, folds, seed):
            p_te, c, maj = fit_predict(x[idx], y[idx], tr, te, cs, groups=g, inner_folds=inner_folds, seed=seed)
            pred[te] = p_te
            chance_hits[te] = y[idx][te] == maj
            chosen.append(c)
        tested = pred >= 0
        if tested.any():
            rs = probe_scores(y[idx][tested], pred[tested], float(chance_hits[tested].mean()), n_classes=k,
                              groups=None if g is None else g[tested], n_bootstrap=n_bootstrap,
                              n_permutations=n_permutations, rng=rng)
            for r in rs:
                r.update(target=target, split="cv", n_train=int(round(idx.size * (1 - 1 / max(len(chosen), 1)))),
                         C=_modal(chosen))
            rows.extend(rs)
        # transfer splits -------------------------------------------------------------------
        for split in splits:
            if not _split_applies(split, frame, target):
                continue
            train_m, test_m = split_masks(frame, split)
            tr, te = np.flatnonzero(train_m & ok), np.flatnonzero(test_m & ok)
            if tr.size == 0 or te.size == 0:
                log.warning("probe: split %s has %d train and %d test rows; skipped", split.get("name"), tr.size, te.size)
                continue
            if np.unique(y[tr]).size < 2:
                log.warning("probe: split %s trains on one class of %r; skipped", split.get("name"), target)
                continue
            p_te, c, maj = fit_predict(x, y, tr, te, cs, groups=groups, inner_folds=inner_folds, seed=seed)
            rs = probe_scores(y[te], p_te, float(np.mean(y[te] == maj)), n_classes=k,
                              groups=None if groups is None else groups[te], n_bootstrap=n_bootstrap,
                              n_permutations=n_permutations, rng=rng)
            for r in rs:
                r.update(target=target, split=str(split.get("name", "transfer")), n_train=int(tr.size), C=c)
            rows.extend(rs)
    for r in rows:
        lo, hi = r.pop("ci")
        r.update(ci_low=lo, ci_high=hi, n_features=int(x.shape[1]), grouped=groups is not None)
    return rows


def _modal(values: Sequence[float]) -> float:
    vals = [v for v in values if np.isfinite(v)]
    if not vals:
        return float("nan")
    uniq, counts = np.unique(vals, return_counts=True)
    return float(uniq[np.argmax(counts)])


def _groups(frame: pd.DataFrame, setting) -> np.ndarray | None:
    if setting is None or setting is False:
        return None
    col = "word" if setting in ("auto", True) else str(setting)
    if col not in frame.columns:
        if setting != "auto":
            raise KeyError(f"probe.groups: manifest has no column {col!r}")
        return None
    if setting == "auto" and not frame[col].duplicated().any():
        return None
    return pd.factorize(frame[col])[0]


def run_probe(
    manifest: str | Path,
    embeddings: str | Path,
    output: str | Path | None = None,
    *,
    set_name: str,
    model: str,
    cfg: Mapping | None = None,
    seed: int = 0,
    n_bootstrap: int | None = None,
    n_permutations: int | None = None,
) -> pd.DataFrame:
    """Probe every layer of one embeddings file; write the tidy table (``analysis = "probe"``).

    ``cfg`` keys (all optional): folds (5), C ([0.01, 0.1, 1, 10]), inner_folds (3),
    targets (every column of label, material, hollowness, extension present), splits ([]),
    groups ("auto": ``word`` when words repeat; null = none; or a column name), n_bootstrap
    (1000), n_permutations (1000), include_reference (false).
    """
    cfg = dict(cfg or {})
    man = validate.analysis_manifest(avio.read_manifest(manifest), embeddings, manifest_path=manifest,
                                     classes="label")
    if not cfg.get("include_reference", False) and "is_reference" in man.columns:
        man = man[~man["is_reference"].fillna(False).astype(bool)]
    targets = cfg.get("targets") or [t for t in DEFAULT_TARGETS if t in man.columns]
    if cfg.get("targets"):
        validate.require_columns(man, targets, set_name=set_name, manifest_path=manifest,
                                 why="a target in probe.targets")
    elif not targets:
        validate.require_columns(man, DEFAULT_TARGETS[:1], set_name=set_name, manifest_path=manifest,
                                 why=f"the sharp/round class; a probe needs one of {list(DEFAULT_TARGETS)}")
    man = man.assign(stimulus_id=man["stimulus_id"].astype(str)).set_index("stimulus_id")
    n_boot = int(n_bootstrap if n_bootstrap is not None else cfg.get("n_bootstrap", 1000))
    n_perm = int(n_permutations if n_permutations is not None else cfg.get("n_permutations", 1000))
    rows = []
    for name, index, ids, x in validate.checked_layers(embeddings):
        ids = pd.Index([str(i) for i in ids])
        keep = ids.isin(man.index)
        frame = man.loc[ids[keep]].reset_index()
        log.info("probe %s/%s layer %s: %d rows × %d features", set_name, model, name, len(frame), x.shape[1])
        layer_rows = probe_layer(
            x[keep], frame,
            targets=targets,
            folds=int(cfg.get("folds", 5)),
            cs=cfg.get("C", DEFAULT_CS), inner_folds=int(cfg.get("inner_folds", 3)),
            splits=cfg.get("splits") or [], groups=_groups(frame, cfg.get("groups", "auto")),
            n_bootstrap=n_boot, n_permutations=n_perm, seed=int(seed),
        )
        for r in layer_rows:
            r.update(analysis="probe", set=set_name, model=model, layer=name, layer_index=index)
        rows.extend(layer_rows)
    if not rows:
        raise validate.BadInputError(
            f"set {set_name!r} ({manifest}): no probe result — every target column {targets} has fewer than "
            "two classes among the embedded stimuli; nothing to probe")
    table = avio.tidy_table(rows)
    table = stats.add_fdr(table, ["target", "split", "metric"])
    if output is not None:
        avio.write_parquet(table, output)
    return table
