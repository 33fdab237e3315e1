"""Speech vs text vs cascade: one model's sound symbolism in each form of the words (seed 000).

Seed 000 (Tseng et al. 2024) asks whether an audio-visual model links kiki/bouba to shapes when it
*hears* the pseudowords, compared with when it reads them, and whether models trained on speech
differ from the rest. The symbolism entries of one model (:mod:`avprobe.analysis.symbolism`) give
per-item geometric scores for each form of the words:

* ``speech`` — the spoken pseudowords (``pseudowords``) through the audio tower;
* ``text`` — their spelling (``pseudoword_text``) through the text tower;
* ``cascade`` — the recogniser's transcripts of the spoken words (``pseudoword_asr``) through the
  text tower (BrewCLIP's pipeline, seed 003, applied to seed 000).

For comparability every form is reduced to **one score per word**: the mean geometric score over
its voices (speech, cascade) or templates (text), in the layer of the entry's shared space (a
model may score speech and text in different spaces, e.g. PE-AV's audio_image and text_image:
each AUC is a property of its own scores, so the forms still compare). Then

* ``auc_words`` — ROC-AUC of the word scores for the label (round = 1), per model × space × form
  (× voice for the spoken forms: that voice's clips only).
* ``auc_diff`` — AUC(form) − AUC(form_b) for each pair of forms of one model, on the words both
  forms scored. Per voice too, speech or cascade of one voice against text.

CIs come from a **joint** percentile bootstrap over words *and* anchors: each replicate resamples
the words (one resample shared by both forms of a difference: paired) and uses the words'
scores under one resample of the anchor shapes, with the direction rebuilt
(:func:`avprobe.analysis.symbolism.anchor_bootstrap_scores`; the same anchor resample for both
forms, since they share the anchor set). Resampling words alone would treat the direction as
fixed, and an untrained network's AUC away from 0.5 is mostly that direction's accident (its
cross-modal null in the symbolism table is wide): with anchors resampled, a difference whose CI
excludes 0 does not come from one lucky draw of anchors.

p-values test the cross-modal claim, as in the symbolism tables: the anchor shapes' labels are
shuffled and the direction rebuilt (the same shuffles for every form, drawn from the config
seed), so ``p`` of ``auc_words`` asks whether the form's words line up with the shapes' sharp/
round axis beyond what a label-free direction gives, and ``p`` of ``auc_diff`` whether the two
forms differ *in that alignment* beyond what two label-free directions give — a difference that
an untrained network's geometry produces with any direction is not significant (two-sided).

Each row names ``architecture`` (``coordinated`` / ``joint``, from the family registry) and
``kind`` (``untrained`` controls are labelled), so models can be grouped as seed 000 groups them.
"""

from __future__ import annotations

import itertools
import logging
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..sets import WORD_FORMS
from . import stats
from .symbolism import auc_tau

log = logging.getLogger("avprobe")

FORMS = WORD_FORMS
FORM_ORDER = tuple(WORD_FORMS.values())


def word_scores(scores: pd.DataFrame, layer: str, voice: str | None = None) -> pd.Series:
    """Mean geometric score per word (index: word; reference words left out).

    ``scores`` is a symbolism scores table (columns ``layer, direction, word, label, score`` and
    optionally ``voice``, ``is_reference``). Raises ValueError when the layer has no geometric rows.
    """
    d = scores[(scores["layer"].astype(str) == str(layer)) & (scores["direction"] == "geometric")]
    if "is_reference" in d:
        d = d[~d["is_reference"].fillna(False).astype(bool)]
    if voice is not None:
        d = d[d["voice"].astype(str) == voice]
    if d.empty:
        raise ValueError(f"no geometric scores in layer {layer!r}" + (f" for voice {voice!r}" if voice else ""))
    return d.groupby("word", sort=True)["score"].mean()


def _labels(scores: pd.DataFrame) -> pd.Series:
    return scores.drop_duplicates("word").set_index("word")["label"]


def rows_auc(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ROC-AUC of each row of scores ``x`` (B, n) for the 0/1 labels ``y`` (B, n) (ties count
    one half: the Mann–Whitney statistic on mid-ranks, as ``sklearn.metrics.roc_auc_score``)."""
    import scipy.stats

    ranks = scipy.stats.rankdata(x, axis=1)
    n1 = y.sum(1)
    n0 = y.shape[1] - n1
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((ranks * y).sum(1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def _joint_replicates(x: pd.Series, boot: pd.DataFrame | None, y: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """AUC of each replicate: words resampled by ``idx`` (B, n), scores of anchor resample b."""
    if boot is None:  # no anchor resamples: words alone (the direction held fixed)
        scores = np.broadcast_to(x.to_numpy(), idx.shape)
    else:
        scores = boot.reindex(x.index).to_numpy().T[: idx.shape[0]]  # (B, n)
    rows = np.arange(idx.shape[0])[:, None]
    return rows_auc(np.asarray(scores)[rows, idx], y[idx])


def _auc_with_ci(s: pd.Series, boot: pd.DataFrame | None, labels: pd.Series, rng,
                 n_bootstrap: int) -> tuple[float, float, float]:
    y = (labels.reindex(s.index) == "round").to_numpy(float)
    auc = float(auc_tau(s.to_numpy(), y)[0][0])
    if not n_bootstrap:
        return auc, np.nan, np.nan
    idx = rng.integers(0, len(s), (_n_reps(boot, n_bootstrap), len(s)))
    lo, hi = stats.bootstrap_ci(_joint_replicates(s, boot, y, idx))
    return auc, lo, hi


def _n_reps(boot: pd.DataFrame | None, n_bootstrap: int) -> int:
    return n_bootstrap if boot is None else min(n_bootstrap, boot.shape[1])


def null_p(observed: float, null: np.ndarray, center: float) -> float:
    """Two-sided permutation p: share of the null at least as far from ``center`` (+1 smoothing)."""
    null = null[np.isfinite(null)]
    if not null.size:
        return np.nan
    return float((1 + np.sum(np.abs(null - center) >= abs(observed - center) - 1e-12)) / (1 + null.size))


def word_auc_null(s: pd.Series, null: pd.DataFrame | None, labels: pd.Series) -> np.ndarray | None:
    """AUC of the words under each anchor-label shuffle (None without shuffles)."""
    if null is None:
        return None
    y = (labels.reindex(s.index) == "round").to_numpy(float)
    x = null.reindex(s.index).to_numpy().T  # (P, n)
    return rows_auc(x, np.broadcast_to(y, x.shape))


def paired_auc_difference(a: pd.Series, b: pd.Series, labels: pd.Series, rng, n_bootstrap: int,
                          a_boot: pd.DataFrame | None = None,
                          b_boot: pd.DataFrame | None = None) -> tuple[float, float, float, int]:
    """AUC(a) − AUC(b) on the words both score, with a paired percentile-bootstrap CI.

    ``a``, ``b``: scores per word (index: word); ``labels``: ``round`` / ``sharp`` per word;
    ``a_boot``, ``b_boot``: optional per-word scores under the same anchor resamples (index:
    word, one column per resample). Each replicate resamples the words once for both forms and
    takes replicate b of each form's anchor resamples; without them only the words are
    resampled. Returns ``(difference, ci_low, ci_high, n_words)``. Raises ValueError with fewer
    than one word of each class in common.
    """
    common = a.index.intersection(b.index).sort_values()
    y = (labels.reindex(common) == "round").to_numpy(float)
    if y.sum() < 1 or (1 - y).sum() < 1:
        raise ValueError("the two forms share no words of both classes")
    xa, xb = a.reindex(common), b.reindex(common)
    diff = float(auc_tau(xa.to_numpy(), y)[0][0] - auc_tau(xb.to_numpy(), y)[0][0])
    if not n_bootstrap:
        return diff, np.nan, np.nan, len(common)
    n_reps = min(_n_reps(a_boot, n_bootstrap), _n_reps(b_boot, n_bootstrap))
    idx = rng.integers(0, len(common), (n_reps, len(common)))
    boot = _joint_replicates(xa, a_boot, y, idx) - _joint_replicates(xb, b_boot, y, idx)
    lo, hi = stats.bootstrap_ci(boot)
    return diff, lo, hi, len(common)


def word_boot(npz: Mapping | None, voice: str | None = None, key: str = "scores") -> pd.DataFrame | None:
    """Per-word mean scores under each anchor resample (``key="scores"``) or anchor-label
    shuffle (``key="null"``) (index: word; columns: replicates) from a symbolism job's
    ``.anchor_boot.npz``; None without one."""
    if npz is None or key not in npz:
        return None
    keep = ~np.asarray(npz["is_reference"], dtype=bool)
    if voice is not None and "voice" in npz:
        keep &= np.asarray(npz["voice"]).astype(str) == voice
    frame = pd.DataFrame(np.asarray(npz[key], dtype=np.float64)[keep])
    return frame.groupby(np.asarray(npz["word"]).astype(str)[keep]).mean()


def compare_forms(entries: Sequence[Mapping], n_bootstrap: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The forms table (``analysis = "symbolism_forms"``) from the symbolism entries' scores.

    ``entries``: one mapping per symbolism entry with ``model, words, images, space, space_layer,
    architecture, kind`` and ``scores`` (its scores table, a DataFrame). Entries scored in no
    shared space (``space`` None: an unaligned request) are left out. Rows: the standard columns
    (``set`` = the words set, or ``a|b`` for a difference; ``layer`` = the space layer, ``space``
    the form's space; a difference between forms in two spaces names both, ``a|b``) plus
    ``form``, ``form_b``, ``voice`` (``all`` or a voice id), ``space``, ``images``,
    ``architecture``, ``kind``.
    """
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    groups: dict[tuple, dict[str, Mapping]] = {}
    for e in entries:
        if e.get("space") is None or e["words"] not in FORMS:
            continue
        # one model's forms may sit in different spaces (PE-AV: speech in audio_image, text in
        # text_image); each AUC is a property of its own per-word scores, so they compare
        groups.setdefault((e["model"], e["images"]), {})[FORMS[e["words"]]] = e
    for (model, images), forms in groups.items():
        some = next(iter(forms.values()))
        base = dict(analysis="symbolism_forms", model=model, images=images, layer_index=-1,
                    architecture=some.get("architecture"), kind=some.get("kind"))
        per_form: dict[tuple[str, str], pd.Series] = {}
        labels = pd.concat([_labels(e["scores"]) for e in forms.values()])
        labels = labels[~labels.index.duplicated()]
        for form in FORM_ORDER:
            if form not in forms:
                continue
            e = forms[form]
            voices = ["all"]
            if form != "text" and "voice" in e["scores"]:
                voices += sorted(e["scores"]["voice"].dropna().astype(str).unique())
            for voice in voices:
                s = word_scores(e["scores"], e["space_layer"], None if voice == "all" else voice)
                boot = word_boot(e.get("anchor_boot"), None if voice == "all" else voice)
                null = word_auc_null(s, word_boot(e.get("anchor_boot"), None if voice == "all" else voice, "null"),
                                     labels)
                per_form[form, voice] = (s, boot, null)
                auc, lo, hi = _auc_with_ci(s, boot, labels, rng, n_bootstrap)
                rows.append(dict(base, set=e["words"], space=e["space"], layer=e["space_layer"], metric="auc_words",
                                 value=auc, ci_low=lo, ci_high=hi, n=len(s), form=form, form_b=None, voice=voice,
                                 p=np.nan if null is None else null_p(auc, null, 0.5)))
        for fa, fb in itertools.combinations([f for f in FORM_ORDER if f in forms], 2):
            # text has no voices: each voice of the other form is compared with all of the text
            have = {f: {v for g, v in per_form if g == f} for f in (fa, fb)}
            voices = sorted((have[fa] if fa != "text" else have[fb]) & (have[fb] if fb != "text" else have[fa]),
                            key=lambda v: (v != "all", v))
            for voice in voices:
                a = per_form.get((fa, voice if fa != "text" else "all"))
                b = per_form.get((fb, voice if fb != "text" else "all"))
                if a is None or b is None:
                    continue
                diff, lo, hi, n = paired_auc_difference(a[0], b[0], labels, rng, n_bootstrap, a[1], b[1])
                # same shuffles for both forms (one seed): the null of the difference, per shuffle
                p = np.nan
                if a[2] is not None and b[2] is not None and len(a[0]) == len(b[0]) == n:
                    p = null_p(diff, a[2] - b[2], 0.0)
                pair = lambda key: "|".join(dict.fromkeys(str(forms[f][key]) for f in (fa, fb)))  # noqa: E731
                rows.append(dict(base, set=f"{forms[fa]['words']}|{forms[fb]['words']}", space=pair("space"),
                                 layer=pair("space_layer"), metric="auc_diff", value=diff, ci_low=lo, ci_high=hi,
                                 n=n, form=fa, form_b=fb, voice=voice, p=p))
    cols = ["analysis", "set", "model", "layer", "layer_index", "metric", "value", "ci_low", "ci_high", "p", "n",
            "form", "form_b", "voice", "space", "images", "architecture", "kind"]
    return pd.DataFrame(rows, columns=cols)


def run_symbolism_forms(entries: Sequence[Mapping], score_paths: Sequence[str], output: str,
                        n_bootstrap: int = 1000, seed: int = 0,
                        anchor_boot_paths: Sequence[str] | None = None) -> pd.DataFrame:
    """Read each entry's scores table (``score_paths``) and anchor resamples
    (``anchor_boot_paths``), in the order of ``entries``; compare the forms; write ``output``."""
    from ..io import write_parquet

    if len(entries) != len(score_paths) or (anchor_boot_paths is not None and len(anchor_boot_paths) != len(entries)):
        raise ValueError(f"{len(entries)} entries but {len(score_paths)} score tables")
    boots = [dict(np.load(p, allow_pickle=False)) for p in anchor_boot_paths] if anchor_boot_paths else [None] * len(entries)
    loaded = [dict(e, scores=pd.read_parquet(p), anchor_boot=b) for e, p, b in zip(entries, score_paths, boots)]
    df = compare_forms(loaded, n_bootstrap=n_bootstrap, seed=seed)
    write_parquet(df, output)
    log.info("symbolism forms: %d rows (%d models)", len(df), df["model"].nunique() if len(df) else 0)
    return df
