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
  (× voice for the spoken forms: that voice's clips only); CI: percentile bootstrap over words.
* ``auc_diff`` — AUC(form) − AUC(form_b) for each pair of forms of one model and space, on the
  words both forms scored; CI: **paired** bootstrap over words (one resample of words serves both
  AUCs, so the difference's CI accounts for the words' shared difficulty). Per voice too, speech
  or cascade of one voice against text.

No p-value is reported here: the per-form p-values (each form's cross-modal null) are in the
symbolism tables; a difference is read from its paired CI (excluding 0 or not).

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


def _auc_with_ci(s: pd.Series, y: pd.Series, rng, n_bootstrap: int) -> tuple[float, float, float]:
    yy = (y.reindex(s.index) == "round").to_numpy(float)
    auc = float(auc_tau(s.to_numpy(), yy)[0][0])
    w = stats.bootstrap_weights(rng, n_bootstrap, len(s)).astype(float)
    boot = auc_tau(s.to_numpy(), np.broadcast_to(yy, w.shape), w)[0] if n_bootstrap else np.zeros(0)
    lo, hi = stats.bootstrap_ci(boot) if n_bootstrap else (np.nan, np.nan)
    return auc, lo, hi


def paired_auc_difference(a: pd.Series, b: pd.Series, labels: pd.Series, rng,
                          n_bootstrap: int) -> tuple[float, float, float, int]:
    """AUC(a) − AUC(b) on the words both score, with a paired percentile-bootstrap CI over words.

    ``a``, ``b``: scores per word (index: word); ``labels``: ``round`` / ``sharp`` per word.
    Returns ``(difference, ci_low, ci_high, n_words)``. Raises ValueError with fewer than one
    word of each class in common.
    """
    common = a.index.intersection(b.index).sort_values()
    y = (labels.reindex(common) == "round").to_numpy(float)
    if y.sum() < 1 or (1 - y).sum() < 1:
        raise ValueError("the two forms share no words of both classes")
    xa, xb = a.reindex(common).to_numpy(), b.reindex(common).to_numpy()
    diff = float(auc_tau(xa, y)[0][0] - auc_tau(xb, y)[0][0])
    if not n_bootstrap:
        return diff, np.nan, np.nan, len(common)
    w = stats.bootstrap_weights(rng, n_bootstrap, len(common)).astype(float)
    yb = np.broadcast_to(y, w.shape)
    boot = auc_tau(xa, yb, w)[0] - auc_tau(xb, yb, w)[0]
    lo, hi = stats.bootstrap_ci(boot)
    return diff, lo, hi, len(common)


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
        base = dict(analysis="symbolism_forms", model=model, images=images, layer_index=-1, p=np.nan,
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
                per_form[form, voice] = s
                auc, lo, hi = _auc_with_ci(s, labels, rng, n_bootstrap)
                rows.append(dict(base, set=e["words"], space=e["space"], layer=e["space_layer"], metric="auc_words",
                                 value=auc, ci_low=lo, ci_high=hi, n=len(s), form=form, form_b=None, voice=voice))
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
                diff, lo, hi, n = paired_auc_difference(a, b, labels, rng, n_bootstrap)
                pair = lambda key: "|".join(dict.fromkeys(str(forms[f][key]) for f in (fa, fb)))  # noqa: E731
                rows.append(dict(base, set=f"{forms[fa]['words']}|{forms[fb]['words']}", space=pair("space"),
                                 layer=pair("space_layer"), metric="auc_diff", value=diff, ci_low=lo, ci_high=hi,
                                 n=n, form=fa, form_b=fb, voice=voice))
    cols = ["analysis", "set", "model", "layer", "layer_index", "metric", "value", "ci_low", "ci_high", "p", "n",
            "form", "form_b", "voice", "space", "images", "architecture", "kind"]
    return pd.DataFrame(rows, columns=cols)


def run_symbolism_forms(entries: Sequence[Mapping], score_paths: Sequence[str], output: str,
                        n_bootstrap: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Read each entry's scores table (``score_paths``, in the order of ``entries``), compare
    the forms and write the table to ``output``."""
    from ..io import write_parquet

    if len(entries) != len(score_paths):
        raise ValueError(f"{len(entries)} entries but {len(score_paths)} score tables")
    loaded = [dict(e, scores=pd.read_parquet(p)) for e, p in zip(entries, score_paths)]
    df = compare_forms(loaded, n_bootstrap=n_bootstrap, seed=seed)
    write_parquet(df, output)
    log.info("symbolism forms: %d rows (%d models)", len(df), df["model"].nunique() if len(df) else 0)
    return df
