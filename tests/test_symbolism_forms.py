"""Speech vs text vs cascade: per-word AUCs and paired differences against known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from avprobe.analysis.symbolism_forms import compare_forms, paired_auc_difference, word_scores


def _scores(words, labels, score_of, voices=None, layer="joint"):
    rows = []
    for w, lab in zip(words, labels):
        for v in voices or [None]:
            rows.append({"layer": layer, "direction": "geometric", "word": w, "label": lab, "is_reference": False,
                         "voice": v, "score": score_of(w, lab, v)})
    rows.append({"layer": layer, "direction": "geometric", "word": "kiki", "label": "sharp", "is_reference": True,
                 "voice": (voices or [None])[0], "score": 99.0})
    rows.append({"layer": layer, "direction": "phonetic", "word": None, "label": "round", "is_reference": False,
                 "voice": None, "score": 5.0})
    return pd.DataFrame(rows)


def _entry(words, scores, model="m"):
    return {"model": model, "words": words, "images": "shapes", "space": "text_image", "space_layer": "joint",
            "architecture": "coordinated", "kind": "untrained", "scores": scores}


rng = np.random.default_rng(0)
WORDS = [f"w{i}" for i in range(60)]
LABELS = ["round" if i % 2 else "sharp" for i in range(60)]
NOISE = {w: rng.normal() for w in WORDS}


def test_word_scores_average_voices_and_drop_references():
    df = _scores(WORDS[:4], LABELS[:4], lambda w, lab, v: {"a": 1.0, "b": 3.0}[v], voices=["a", "b"])
    s = word_scores(df, "joint")
    assert s.to_dict() == {w: 2.0 for w in WORDS[:4]}
    assert word_scores(df, "joint", voice="b").to_dict() == {w: 3.0 for w in WORDS[:4]}
    with pytest.raises(ValueError, match="no geometric scores in layer '3'"):
        word_scores(df, "3")


def test_aucs_equal_sklearn_and_planted_difference_is_found():
    speech = _scores(WORDS, LABELS, lambda w, lab, v: (1.5 if lab == "round" else 0.0) + NOISE[w] + 0.1 * (v == "a"),
                     voices=["a", "b"])
    text = _scores(WORDS, LABELS, lambda w, lab, v: NOISE[w])
    out = compare_forms([_entry("pseudowords", speech), _entry("pseudoword_text", text)], n_bootstrap=500, seed=0)
    y = np.array([lab == "round" for lab in LABELS], float)
    auc_speech = roc_auc_score(y, [(1.5 if lab == "round" else 0.0) + NOISE[w] + 0.05 for w, lab in zip(WORDS, LABELS)])
    auc_text = roc_auc_score(y, [NOISE[w] for w in WORDS])
    row = out[(out.metric == "auc_words") & (out.form == "speech") & (out.voice == "all")].iloc[0]
    assert row.value == pytest.approx(auc_speech) and row.n == 60
    assert out[(out.metric == "auc_words") & (out.form == "text")].iloc[0].value == pytest.approx(auc_text)
    diff = out[(out.metric == "auc_diff") & (out.voice == "all")].iloc[0]
    assert (diff.form, diff.form_b) == ("speech", "text")
    assert diff.value == pytest.approx(auc_speech - auc_text)
    assert diff.ci_low > 0  # the planted advantage of speech is found
    # one difference per voice too, each voice of speech against all of text
    assert set(out[out.metric == "auc_diff"].voice) == {"all", "a", "b"}
    assert set(out.architecture) == {"coordinated"} and set(out.kind) == {"untrained"}


def test_paired_difference_of_identical_forms_is_exactly_zero():
    s = pd.Series(NOISE)
    labels = pd.Series(dict(zip(WORDS, LABELS)))
    diff, lo, hi, n = paired_auc_difference(s, s, labels, np.random.default_rng(1), 200)
    assert (diff, lo, hi, n) == (0.0, 0.0, 0.0, 60)


def test_null_difference_ci_covers_zero_at_the_nominal_rate():
    """Two forms with the same true effect: the paired 95% CI covers 0 in most of 40 draws."""
    labels = pd.Series(dict(zip(WORDS, LABELS)))
    y = np.array([lab == "round" for lab in LABELS])
    covered = 0
    for seed in range(40):
        r = np.random.default_rng(seed)
        base = 0.8 * y + r.normal(size=60)
        a = pd.Series(base + 0.7 * r.normal(size=60), index=WORDS)
        b = pd.Series(base + 0.7 * r.normal(size=60), index=WORDS)
        _, lo, hi, _ = paired_auc_difference(a, b, labels, r, 300)
        covered += lo <= 0 <= hi
    assert covered >= 34  # Binomial(40, 0.95): P(X < 34) < 0.01


def test_unaligned_entries_are_left_out():
    text = _scores(WORDS, LABELS, lambda w, lab, v: NOISE[w])
    e = _entry("pseudoword_text", text)
    assert compare_forms([{**e, "space": None}], n_bootstrap=0).empty


def test_forms_in_two_spaces_of_one_model_are_compared_and_both_spaces_named():
    speech = _scores(WORDS, LABELS, lambda w, lab, v: NOISE[w], voices=["a"])
    text = _scores(WORDS, LABELS, lambda w, lab, v: NOISE[w])
    out = compare_forms([{**_entry("pseudowords", speech), "space": "audio_image"},
                         {**_entry("pseudoword_text", text), "space": "text_image"}], n_bootstrap=0)
    assert set(out[out.metric == "auc_words"].space) == {"audio_image", "text_image"}
    assert set(out[out.metric == "auc_diff"].space) == {"audio_image|text_image"}
