"""Analysis stage: agreement with reference implementations and planted effects.

Reference implementations: sklearn (ROC-AUC), scipy (Kendall's tau), rsatoolbox (RDMs and
RDM comparisons), brute-force full score matrices (retrieval). Planted effects check that a
real signal is found (p < 0.01) and that null data are not (false-positive rate at α = 0.05
within binomial bounds; small permutation counts there, stated per test).
"""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from sklearn.metrics import roc_auc_score

from avprobe import io as avio
from avprobe.analysis import probe, retrieval, rsa, stats, symbolism

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "workflow" / "scripts"


# ----------------------------------------------------------------------------- helpers
def words_frame(n_per_class: int, voices=("v1",), refs: bool = True, rng=None) -> pd.DataFrame:
    rng = rng or np.random.default_rng(0)
    rows = []
    words = [(f"s{i}", "sharp") for i in range(n_per_class)] + [(f"r{i}", "round") for i in range(n_per_class)]
    if refs:
        words += [("kiki", "sharp"), ("bouba", "round")]
    sharp = {w: (1 if l == "sharp" else -1) * float(rng.integers(1, 4)) for w, l in words}
    for w, l in words:
        for v in voices:
            rows.append(dict(stimulus_id=f"{w}_{v}", word=w, voice=v, label=l,
                             is_reference=w in ("kiki", "bouba"), sharpness=sharp[w]))
    return pd.DataFrame(rows)


def planted(frame: pd.DataFrame, dim: int, effect: float, rng, word_noise: float = 0.0) -> np.ndarray:
    """Embeddings with a 'round' direction of size ``effect`` along axis 0 (+ per-word noise)."""
    sign = np.where(frame["label"].to_numpy() == "round", 1.0, -1.0)
    x = rng.normal(size=(len(frame), dim))
    if word_noise and "word" in frame.columns:
        codes = pd.factorize(frame["word"])[0]
        x += word_noise * rng.normal(size=(codes.max() + 1, dim))[codes]
    x[:, 0] += effect * sign
    x[:, 1] += 3.0  # a shared offset, so cosines are not centred at 0
    return x


class _NS(dict):
    __getattr__ = dict.__getitem__


def _snakemake(tmp_path: Path, input: dict, output: dict, params: dict):
    return _NS(input=_NS(input), output=_NS(output), params=_NS(params),
               log=[str(tmp_path / "job.log")], threads=1)


def write_emb(path: Path, layers: list[tuple[str, int, list[str], np.ndarray]]) -> Path:
    avio.write_embeddings([(n, i, (ids, x.astype(np.float32))) for n, i, ids, x in layers], path, {"model": "test"})
    return path


# ----------------------------------------------------------------------------- stats
def test_perm_pvalue_formula_and_sides():
    null = np.array([0.1, 0.2, 0.3, 0.4])
    assert stats.perm_pvalue(0.3, null, "greater") == pytest.approx((1 + 2) / 5)
    assert stats.perm_pvalue(0.3, null, "less") == pytest.approx((1 + 3) / 5)
    assert stats.perm_pvalue(-0.35, null, "two-sided", center=0.0) == pytest.approx((1 + 1) / 5)
    assert stats.perm_pvalue(0.5, [0.5, 0.7, 0.2], "two-sided", center=0.5) == pytest.approx(1.0)
    assert np.isnan(stats.perm_pvalue(np.nan, null))


def test_fdr_bh_matches_definition():
    rng = np.random.default_rng(1)
    p = rng.random(30) ** 2
    p[[3, 7]] = np.nan
    q = stats.fdr_bh(p)
    ok = np.isfinite(p)
    pv = p[ok]
    m = pv.size
    rank = np.array([(pv <= x).sum() for x in pv])
    expected = np.array([min(1.0, min(pv[j] * m / rank[j] for j in range(m) if pv[j] >= x)) for x in pv])
    assert np.allclose(q[ok], expected)
    assert np.isnan(q[[3, 7]]).all()
    assert np.allclose(stats.fdr_bh([0.01, 0.04, 0.03, 0.005]), [0.02, 0.04, 0.04, 0.02])


def test_bootstrap_weights_and_ci():
    rng = np.random.default_rng(2)
    w = stats.bootstrap_weights(rng, 50, 12)
    assert w.shape == (50, 12) and (w.sum(1) == 12).all()
    groups = np.repeat(np.arange(4), 3)
    wg = stats.bootstrap_weights(rng, 50, 12, groups)
    assert (wg.reshape(50, 4, 3) == wg.reshape(50, 4, 3)[:, :, :1]).all()  # a cluster moves as one
    assert (wg.sum(1) == 12).all()
    lo, hi = stats.bootstrap_ci(np.arange(1001.0))
    assert (lo, hi) == pytest.approx((25.0, 975.0))
    src = stats.group_permutations(rng, 20, groups)
    assert (src.reshape(20, 4, 3) // 3 == (src.reshape(20, 4, 3) // 3)[:, :, :1]).all()


# ----------------------------------------------------------------------------- symbolism
def test_auc_and_tau_equal_sklearn_and_scipy_with_ties_and_resamples():
    rng = np.random.default_rng(3)
    s = np.round(rng.normal(size=200), 1)  # many ties
    y = (rng.random(200) < 0.4).astype(float)
    auc, tau = symbolism.auc_tau(s, y)
    assert auc[0] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert tau[0] == pytest.approx(scipy.stats.kendalltau(y, s).statistic, abs=1e-12)
    w = stats.bootstrap_weights(rng, 5, 200)
    auc_b, tau_b = symbolism.auc_tau(s, y[None], w)
    for b in range(5):
        idx = stats.weights_to_indices(w[b])
        assert auc_b[b] == pytest.approx(roc_auc_score(y[idx], s[idx]), abs=1e-12)
        assert tau_b[b] == pytest.approx(scipy.stats.kendalltau(y[idx], s[idx]).statistic, abs=1e-12)


@pytest.mark.parametrize("n_values", [5, 400])  # one-hot path and sort-based path
def test_kendall_batch_equals_scipy_for_shuffles_and_resamples(n_values):
    rng = np.random.default_rng(22)
    x = np.round(rng.normal(size=300), 1)  # ties in x
    y = rng.integers(0, n_values, 300).astype(float)  # ties in y
    src = stats.item_permutations(rng, 6, 300)
    w = stats.bootstrap_weights(rng, 6, 300)
    expected = [scipy.stats.kendalltau(x, y[s]).statistic for s in src]
    assert np.allclose(symbolism.kendall_batch(x, y, src=src), expected, atol=1e-12)
    expected = [scipy.stats.kendalltau(x[i], y[i]).statistic for i in map(stats.weights_to_indices, w)]
    assert np.allclose(symbolism.kendall_batch(x, y, w=w), expected, atol=1e-12)


def test_anchor_scores_are_mean_cosine_differences():
    rng = np.random.default_rng(4)
    items, anchors = rng.normal(size=(5, 6)), rng.normal(size=(8, 6))
    rnd = np.array([1, 1, 0, 0, 1, 0, 0, 1], bool)
    cos = (items / np.linalg.norm(items, axis=1, keepdims=True)) @ (anchors / np.linalg.norm(anchors, axis=1, keepdims=True)).T
    assert np.allclose(symbolism.anchor_scores(items, anchors, rnd), cos[:, rnd].mean(1) - cos[:, ~rnd].mean(1))


def test_symbolism_planted_effect_per_voice_and_delta_p():
    rng = np.random.default_rng(5)
    words = words_frame(30, voices=("us", "gb"), rng=rng)
    images = words_frame(40, refs=False, rng=rng).assign(stimulus_id=lambda d: "img_" + d["stimulus_id"])
    xw = planted(words, 32, 1.5, rng, word_noise=0.5)
    refs = words["is_reference"].to_numpy()
    xw[refs, 0] += np.where(words.loc[refs, "label"] == "round", 4.0, -4.0)  # prototypical kiki/bouba
    rows = pd.DataFrame(symbolism.symbolism_layer(
        words, xw, images, planted(images, 32, 1.5, rng), n_permutations=300, n_bootstrap=200, seed=0))
    for direction in ("geometric", "phonetic"):
        for voice in ("all", "us", "gb"):
            auc = rows.query("metric == 'auc' and direction == @direction and voice == @voice").iloc[0]
            assert auc["value"] > 0.8 and auc["p"] < 0.01 and auc["ci_low"] > 0.5
    geo = rows.query("direction == 'geometric' and voice == 'all'").set_index("metric")
    assert geo.loc["auc", "n"] == 120  # 60 words × 2 voices, references excluded
    assert geo.loc["tau_sharpness", "value"] > 0.3 and geo.loc["tau_sharpness", "p"] < 0.01
    dp = geo.loc["delta_p_kb"]
    assert dp["value"] > 0.8 and dp["p"] < 0.05 and dp["ci_low"] > 0.5  # bouba rounder, kiki sharper
    assert dp["n_references"] == 2 and "low power" in dp["note"]  # one kiki/bouba pair per voice
    assert "delta_p_kb" not in set(rows.query("direction == 'phonetic'")["metric"])


def test_symbolism_null_false_positive_rate():
    """200 null datasets, 199 shuffles each: P(p < .05) must stay within binomial bounds."""
    ps, aucs = [], []
    for seed in range(200):
        rng = np.random.default_rng(1000 + seed)
        words = words_frame(12, refs=False, rng=rng).drop(columns="sharpness")
        images = words_frame(10, refs=False, rng=rng).drop(columns="sharpness")
        rows = symbolism.symbolism_layer(words, rng.normal(size=(len(words), 6)), images,
                                         rng.normal(size=(len(images), 6)),
                                         n_permutations=199, n_bootstrap=0, seed=seed)
        auc = next(r for r in rows if r["metric"] == "auc" and r["direction"] == "geometric")
        ps.append(auc["p"])
        aucs.append(auc["value"])
    assert abs(np.mean(aucs) - 0.5) < 0.02  # null embeddings: AUC ≈ 0.5
    ps = np.array(ps)
    lo, hi = scipy.stats.binom.ppf([0.0005, 0.9995], 200, 0.05)
    assert lo <= (ps < 0.05).sum() <= hi
    assert 0.35 < ps.mean() < 0.65  # roughly uniform


def test_run_symbolism_files_and_entry_script(tmp_path):
    rng = np.random.default_rng(6)
    words = words_frame(20, voices=("a", "b"), rng=rng)
    images = words_frame(15, refs=False, rng=rng).assign(stimulus_id=lambda d: "img_" + d["stimulus_id"])
    words.to_parquet(tmp_path / "w.parquet")
    images.to_parquet(tmp_path / "i.parquet")
    wids, iids = list(words["stimulus_id"]), list(images["stimulus_id"])
    write_emb(tmp_path / "we.parquet", [("0", 0, wids, rng.normal(size=(len(wids), 5))),
                                       ("joint", 1, wids, planted(words, 4, 2.0, rng))])
    write_emb(tmp_path / "ie.parquet", [("0", 0, iids, rng.normal(size=(len(iids), 7))),
                                       ("joint", 1, iids, planted(images, 4, 2.0, rng))])
    sm = _snakemake(tmp_path,
                    dict(words_manifest=str(tmp_path / "w.parquet"), words_embeddings=str(tmp_path / "we.parquet"),
                         images_manifest=str(tmp_path / "i.parquet"), images_embeddings=str(tmp_path / "ie.parquet")),
                    dict(table=str(tmp_path / "sym.parquet"), scores=str(tmp_path / "sym.scores.parquet")),
                    dict(model="m", words="pseudowords", images="shapes", n_permutations=200, n_bootstrap=100, seed=1))
    runpy.run_path(str(SCRIPTS / "symbolism.py"), init_globals={"snakemake": sm})
    t = pd.read_parquet(tmp_path / "sym.parquet")
    assert list(t.columns[:11]) == list(avio.TABLE_COLUMNS)
    assert set(t["layer"]) == {"joint"}  # layer "0" has different widths
    assert set(t["space"]) == {"text_image"}  # no space params: CLIP's joint layer, as before
    assert set(t["form"]) == {"speech"} and set(t["direction"]) == {"geometric", "phonetic"}
    assert set(t["voice"]) == {"all", "a", "b"} and t["p_fdr"].notna().all()
    assert (t["p_fdr"] >= t["p"] - 1e-12).all()
    sc = pd.read_parquet(tmp_path / "sym.scores.parquet")
    assert {"model", "layer", "direction", "form", "stimulus_id", "label", "score"} <= set(sc.columns)
    geo = sc[sc["direction"] == "geometric"]
    assert len(geo) == len(words) and len(sc[sc["direction"] == "phonetic"]) == len(images)
    auc = t.query("metric == 'auc' and direction == 'geometric' and voice == 'all'").iloc[0]["value"]
    g = geo[~geo["is_reference"]]
    assert auc == pytest.approx(roc_auc_score(g["label"] == "round", g["score"]))


def test_run_symbolism_scores_the_declared_space(tmp_path):
    rng = np.random.default_rng(16)
    words = words_frame(10, rng=rng)
    images = words_frame(8, refs=False, rng=rng).assign(stimulus_id=lambda d: "img_" + d["stimulus_id"])
    words.to_parquet(tmp_path / "w.parquet")
    images.to_parquet(tmp_path / "i.parquet")
    wids, iids = list(words["stimulus_id"]), list(images["stimulus_id"])
    write_emb(tmp_path / "we.parquet", [("3", 3, wids, rng.normal(size=(len(wids), 4))),
                                       ("5", 5, wids, rng.normal(size=(len(wids), 6))),
                                       ("audio_image", 9, wids, planted(words, 4, 2.0, rng))])
    write_emb(tmp_path / "ie.parquet", [("3", 3, iids, rng.normal(size=(len(iids), 4))),
                                       ("5", 5, iids, rng.normal(size=(len(iids), 3))),
                                       ("audio_image", 9, iids, planted(images, 4, 2.0, rng))])
    files = [str(tmp_path / f) for f in ("w.parquet", "we.parquet", "i.parquet", "ie.parquet")]
    kw = dict(model="m", words="pseudowords", images="shapes", n_permutations=20, n_bootstrap=0)
    t = symbolism.run_symbolism(*files, **kw, space="audio_image", space_layer="audio_image")
    assert set(zip(t["layer"], t["space"])) == {("audio_image", "audio_image")}
    t = symbolism.run_symbolism(*files, **kw, space="audio_image", space_layer="audio_image", unaligned=True)
    # layer "5" differs in width: skipped; "3" is compared, labelled as not aligned
    assert set(zip(t["layer"], t["space"])) == {("audio_image", "audio_image"), ("3", "unaligned")}
    t = symbolism.run_symbolism(*files, **kw, space=None, space_layer=None, unaligned=True)
    assert set(t["space"]) == {"unaligned"}
    with pytest.raises(KeyError, match=r"'joint'.*we\.parquet"):  # names the file that lacks it
        symbolism.run_symbolism(*files, **kw, space="text_image", space_layer="joint")
    write_emb(tmp_path / "we2.parquet", [("joint", 1, wids, rng.normal(size=(len(wids), 4)))])
    with pytest.raises(KeyError, match=r"'joint'.*ie\.parquet"):
        symbolism.run_symbolism(files[0], str(tmp_path / "we2.parquet"), *files[2:], **kw,
                                space="text_image", space_layer="joint")


# ----------------------------------------------------------------------------- RSA
def test_rdms_equal_rsatoolbox():
    pytest.importorskip("rsatoolbox")
    from rsatoolbox.data import Dataset
    from rsatoolbox.rdm import calc_rdm

    x = np.random.default_rng(7).normal(size=(25, 9))
    cases = {"cosine": (np.hstack([x, -x]), "correlation"),  # documented mapping
             "correlation": (x, "correlation"), "euclidean": (x, "euclidean")}
    for ours, (data, theirs) in cases.items():
        ref = calc_rdm(Dataset(data), method=theirs).get_vectors()[0]
        assert np.abs(rsa.rdm_vector(x, ours) - ref).max() < 1e-10, ours
    # and the cosine distance is what it says
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert np.allclose(rsa.rdm_matrix(x, "cosine"), 1 - xn @ xn.T - np.diag(np.diag(1 - xn @ xn.T)))


@pytest.mark.parametrize("theirs", ["spearman", "corr", "tau-a"])
def test_comparisons_equal_rsatoolbox(theirs):
    pytest.importorskip("rsatoolbox")
    from rsatoolbox.rdm import RDMs, compare

    rng = np.random.default_rng(8)
    x = rng.normal(size=(30, 6))
    a = rsa.rdm_vector(x)
    for b in (rsa.label_reference("l", rng.integers(0, 3, 30)).vector(),  # heavy ties
              rsa.attribute_reference("a", rng.integers(0, 5, 30)).vector(),
              rsa.rdm_vector(rng.normal(size=(30, 4)), "euclidean")):
        expected = compare(RDMs(a[None]), RDMs(b[None]), method=theirs)[0, 0]
        assert abs(rsa.compare_vectors(a, b, theirs) - expected) < 1e-10


def test_human_rdms_kl_and_mode():
    ratings = pd.DataFrame([
        ("s1", "material", "wood", 0.7), ("s1", "material", "metal", 0.3),
        ("s2", "material", "wood", 0.2), ("s2", "material", "metal", 0.8),
        ("s3", "material", "wood", 1.0),
        ("s1", "hollow", "yes", 1.0), ("s2", "hollow", "yes", 1.0), ("s3", "hollow", "no", 1.0),
    ], columns=["stimulus_id", "dimension", "category", "proportion"])
    m = rsa.human_rdms(ratings, ["s1", "s2", "s3"])
    eps = rsa.KL_EPS

    def sym_kl(p, q):
        p, q = (np.array(p) + eps) / (1 + 2 * eps), (np.array(q) + eps) / (1 + 2 * eps)
        return np.sum(p * np.log(p / q)) + np.sum(q * np.log(q / p))

    # categories sort as metal, wood
    assert m["human_kl_material"][0, 1] == pytest.approx(sym_kl([0.3, 0.7], [0.8, 0.2]))
    assert m["human_kl_material"][1, 2] == pytest.approx(sym_kl([0.8, 0.2], [0.0, 1.0]))
    assert np.array_equal(m["human_mode_material"], [[0, 1, 0], [1, 0, 1], [0, 1, 0]])
    assert np.array_equal(m["human_mode_hollow"], [[0, 0, 1], [0, 0, 1], [1, 1, 0]])
    assert np.allclose(m["human_kl_mean"], (m["human_kl_material"] + m["human_kl_hollow"]) / 2)
    with pytest.raises(KeyError):
        rsa.human_rdms(ratings, ["s1", "s4"])


@pytest.mark.parametrize("method", ["spearman", "pearson"])
def test_rsa_permutation_and_bootstrap_are_exact(method):
    """Fast nulls equal recomputation on shuffled references; the weighted bootstrap equals
    recomputation on the explicit resampled pairs (duplicates' self-pairs dropped)."""
    rng = np.random.default_rng(9)
    n = 24
    mv = rsa.rdm_vector(rng.normal(size=(n, 5)))
    t = rsa._transform(mv, method)
    mvec = rsa._centered_unit(t)
    mfull = rsa.square(mvec, n)
    perms = stats.item_permutations(rng, 15, n)
    w = stats.bootstrap_weights(rng, 8, n)
    wt = w.T.astype(float)
    s0 = 0.5 * (wt.sum(0) ** 2 - (wt**2).sum(0))
    refs = [rsa.label_reference("label", rng.integers(0, 2, n)),
            rsa.attribute_reference("attr", rng.integers(0, 40, n)),  # > 16 types: gather path
            rsa.matrix_reference("human", rsa.square(rng.random(n * (n - 1) // 2)))]
    for ref in refs:
        pref = rsa._prepare_ref(ref, method)
        full = ref.matrix()
        explicit = [rsa.compare_vectors(mv, rsa.upper(full[np.ix_(p, p)]), method) for p in perms]
        assert np.allclose(rsa._perm_null_types(mfull, pref, perms), explicit, atol=1e-12)
        assert np.allclose(rsa._perm_null_gather(mfull.ravel()[None], pref, perms)[:, 0], explicit, atol=1e-12)
        boot = rsa._weighted_corr(s0, rsa._quad(mfull, wt), rsa._quad(mfull**2, wt), rsa._quad(pref.full, wt),
                                  rsa._quad(pref.full**2, wt), rsa._quad(mfull * pref.full, wt))
        rt = rsa._transform(ref.vector(), method)  # "rank once": full-sample ranks reused
        for b in range(len(w)):
            q = rsa.resampled_pairs(stats.weights_to_indices(w[b]), n)
            assert boot[b] == pytest.approx(np.corrcoef(t[q], rt[q])[0, 1], abs=1e-10)


def test_rsa_gathered_nulls_same_per_layer_or_stacked(monkeypatch):
    rng = np.random.default_rng(23)
    n = 20
    vecs = {f"L{i}": rsa.rdm_vector(rng.normal(size=(n, 3))) for i in range(3)}
    refs = [rsa.matrix_reference("human", rsa.square(rng.random(n * (n - 1) // 2)))]
    stacked = rsa.rsa_inference(vecs, refs, n_bootstrap=0, n_permutations=50, seed=3)
    monkeypatch.setattr(rsa, "_GATHER_STACK_BYTES", 0)
    per_layer = rsa.rsa_inference(vecs, refs, n_bootstrap=0, n_permutations=50, seed=3)
    assert all(stacked[k]["p"] == per_layer[k]["p"] for k in stacked)


def test_bootstrap_resample_drops_self_pairs():
    rng = np.random.default_rng(10)
    n = 15
    d = rsa.rdm_vector(rng.normal(size=(n, 4)) + 5)  # every true pair has distance > 0
    assert (d > 0).all()
    for _ in range(20):
        sample = rng.integers(0, n, n)
        assert np.unique(sample).size < n  # has duplicates
        q = rsa.resampled_pairs(sample, n)
        assert (d[q] > 0).all()  # no zero-distance self-pair entered the comparison
        counts = np.bincount(sample, minlength=n)
        expected = (counts.sum() ** 2 - (counts**2).sum()) // 2  # Σ_{i<j} w_i w_j
        assert q.size == expected


def _units_frame(n, rng, effect):
    lab = np.array(["sharp", "round"])[rng.integers(0, 2, n)]
    return lab, rng.normal(size=(n, 6)) + effect * (lab == "round")[:, None] * np.r_[1.0, np.zeros(5)]


def test_rsa_planted_and_null():
    rng = np.random.default_rng(11)
    lab, x = _units_frame(60, rng, 3.0)
    ref = rsa.label_reference("label", lab)
    res = rsa.rsa_inference({"L": rsa.rdm_vector(x)}, [ref], n_bootstrap=300, n_permutations=300, seed=0)
    r = res[("L", "label")]
    assert r["value"] > 0.2 and r["p"] < 0.01 and r["ci_low"] > 0
    assert r["value"] == pytest.approx(rsa.compare_vectors(rsa.rdm_vector(x), ref.vector()))
    # null: 150 datasets × 99 shuffles, rejections at α = .05 within binomial bounds
    hits = 0
    for seed in range(150):
        g = np.random.default_rng(500 + seed)
        lab, x = _units_frame(20, g, 0.0)
        res = rsa.rsa_inference({"L": rsa.rdm_vector(x)}, [rsa.label_reference("label", lab)],
                                n_bootstrap=0, n_permutations=99, seed=seed)
        hits += res[("L", "label")]["p"] < 0.05
    lo, hi = scipy.stats.binom.ppf([0.0005, 0.9995], 150, 0.05)
    assert lo <= hits <= hi


def test_partial_rsa_removes_planted_covariate():
    rng = np.random.default_rng(12)
    n = 50
    z = rng.normal(size=(n, 4))  # "spectrogram"
    lab = np.where(z[:, 0] > 0, "round", "sharp")  # label confounded with the covariate
    # the model re-encodes the spectrogram plus label-free features: with (squared) euclidean
    # distances its RDM is an affine function of the covariate RDM plus a label-free part
    model = np.hstack([z, 0.7 * rng.normal(size=(n, 4))])
    mv, cv = rsa.rdm_vector(model, "euclidean"), rsa.rdm_vector(z, "euclidean")
    ref = rsa.label_reference("label", lab)
    res = rsa.partial_residuals(mv, cv)
    assert abs(np.corrcoef(res, cv)[0, 1]) < 1e-10  # OLS residuals are orthogonal to it
    out = rsa.rsa_inference({"raw": mv, "partial": res}, [ref], comparison="pearson",
                            n_bootstrap=0, n_permutations=300, seed=0)
    assert out[("raw", "label")]["value"] > 0.1 and out[("raw", "label")]["p"] < 0.01
    assert abs(out[("partial", "label")]["value"]) < 0.1 and out[("partial", "label")]["p"] > 0.05


def test_run_rsa_averages_words_and_writes_rdms(tmp_path):
    rng = np.random.default_rng(13)
    words = words_frame(15, voices=("a", "b", "c"), rng=rng)
    words.to_parquet(tmp_path / "m.parquet")
    ids = list(words["stimulus_id"])
    x = planted(words, 6, 2.0, rng, word_noise=1.0)
    write_emb(tmp_path / "e.parquet", [("0", 0, ids, rng.normal(size=(len(ids), 6))), ("1", 1, ids, x)])
    write_emb(tmp_path / "c.parquet", [("mel", 0, ids, rng.normal(size=(len(ids), 3)))])
    ratings = pd.DataFrame({"stimulus_id": ids, "dimension": "shape",
                            "category": np.where(words["label"] == "round", "curvy", "spiky"), "proportion": 1.0})
    ratings.to_csv(tmp_path / "ratings.csv", index=False)
    sm = _snakemake(tmp_path,
                    dict(manifest=str(tmp_path / "m.parquet"), embeddings=str(tmp_path / "e.parquet"),
                         covariate=str(tmp_path / "c.parquet"), ratings=str(tmp_path / "ratings.csv")),
                    dict(table=str(tmp_path / "rsa.parquet"), rdms=str(tmp_path / "rdms.npz")),
                    {"set": "pseudowords", "model": "m", "cfg": {"distance": "cosine", "comparison": "spearman"},
                     "n_bootstrap": 200, "n_permutations": 200, "seed": 0})
    runpy.run_path(str(SCRIPTS / "rsa.py"), init_globals={"snakemake": sm})
    t = pd.read_parquet(tmp_path / "rsa.parquet")
    assert (t["n"] == 30).all() and (t["unit"] == "word").all() and (t["n_stimuli"] == 90).all()
    assert {"rsa_label_spearman", "rsa_sharpness_spearman", "rsa_partial_label_spearman",
            "rsa_human_kl_shape_spearman", "rsa_human_mode_mean_spearman"} <= set(t["metric"])
    row = t.query("layer == '1' and metric == 'rsa_label_spearman'").iloc[0]
    assert row["value"] > 0.2 and row["p"] < 0.01 and row["p_fdr"] >= row["p"]
    # the value is the full-data Spearman of the word-averaged RDM
    units = rsa.prepare_units(words)
    ux = rsa.unit_matrix(units, ids, x.astype(np.float32))
    assert row["value"] == pytest.approx(rsa.compare_vectors(rsa.rdm_vector(ux), rsa.label_reference("l", units.frame["label"]).vector()), abs=1e-9)
    sub = rsa.prepare_units(words, max_stimuli=10, seed=1)
    assert len(sub.frame) == 10 and (sub.frame["label"] == "round").sum() == 5 and sub.n_stimuli == 30
    clips = rsa.prepare_units(words, average_by=None)
    assert len(clips.frame) == 90 and clips.unit == "stimulus"
    z = np.load(tmp_path / "rdms.npz")
    assert z["rdms"].shape == (2, 30, 30) and list(z["layers"]) == ["0", "1"]
    assert list(z["label"]) == sorted(z["label"])  # ordered by class
    assert np.allclose(np.diagonal(z["rdms"], axis1=1, axis2=2), 0)


def test_run_rsa_impacts_with_partially_rated_stimuli(tmp_path):
    """Physical-label references for every unit; human references on the rated ones only."""
    rng = np.random.default_rng(24)
    rows = [dict(stimulus_id=f"impact-{m}-{g}-{h}-s{s}", material=m, extension=e, hollowness=h, size=0.1 * s)
            for m in ("wood", "metal", "glass", "plastic", "stone")
            for g, e in (("bar", "1d"), ("plate", "2d"), ("block", "3d"))
            for h in ("solid", "hollow") for s in (1, 2)]
    man = pd.DataFrame(rows)
    man.to_parquet(tmp_path / "m.parquet")
    codes = pd.factorize(man["material"])[0]
    x = rng.normal(size=(len(man), 8)) + 3 * np.eye(8)[codes]  # material is represented
    write_emb(tmp_path / "e.parquet", [("0", 0, list(man["stimulus_id"]), x)])
    cats = {"material": ["wood", "metal", "glass", "plastic", "stone"], "hollowness": ["solid", "hollow"],
            "extension": ["1d", "2d", "3d"]}
    rated = man.sample(25, random_state=0)  # listeners judged only some sounds
    ratings = pd.DataFrame([
        dict(stimulus_id=r.stimulus_id, dimension=d, category=c, proportion=p)
        for r in rated.itertuples() for d, cs in cats.items()
        for c, p in zip(cs, rng.dirichlet([1.0] * len(cs)) * 0.4 + 0.6 * (np.array(cs) == getattr(r, d)))
    ])
    ratings.to_csv(tmp_path / "ratings.csv", index=False)
    t = rsa.run_rsa(tmp_path / "m.parquet", tmp_path / "e.parquet", set_name="impacts", model="m",
                    n_bootstrap=100, n_permutations=200, ratings=tmp_path / "ratings.csv")
    t = t.set_index("metric")
    assert {"rsa_material_spearman", "rsa_hollowness_spearman", "rsa_extension_spearman",
            "rsa_size_spearman"} <= set(t.index)
    assert t.loc["rsa_material_spearman", "n"] == len(man) and t.loc["rsa_material_spearman", "p"] < 0.01
    n_rated = len(set(ratings["stimulus_id"]) & set(man["stimulus_id"]))
    assert 3 <= n_rated < len(man)
    for dim in ("material", "hollowness", "extension"):
        assert t.loc[f"rsa_human_kl_{dim}_spearman", "n"] == n_rated
    assert t.loc["rsa_human_mode_mean_spearman", "n_pairs"] == n_rated * (n_rated - 1) // 2


def test_rsa_tau_a_runs_on_subset():
    rng = np.random.default_rng(14)
    lab, x = _units_frame(40, rng, 3.0)
    ref = rsa.label_reference("label", lab)
    out = rsa.rsa_inference({"L": rsa.rdm_vector(x)}, [ref], comparison="tau-a", n_bootstrap=100,
                            n_permutations=100, seed=0, tau_max_stimuli=25)[("L", "label")]
    assert out["n_inference"] == 25 and out["p"] < 0.05
    assert out["value"] == pytest.approx(rsa.tau_a(rsa.rdm_vector(x), ref.vector()))
    assert out["ci_low"] < out["value"] < out["ci_high"]


# ----------------------------------------------------------------------------- probes
def _probe_data(n, rng, effect, voices=False):
    frame = pd.DataFrame({"label": np.array(["sharp", "round"])[rng.integers(0, 2, n)]})
    if voices:
        frame["voice"] = np.where(np.arange(n) % 2 == 0, "A", "B")
    x = rng.normal(size=(n, 8))
    x[:, 0] += effect * (frame["label"] == "round")
    return frame, x


def test_probe_planted_and_null():
    rng = np.random.default_rng(15)
    frame, x = _probe_data(160, rng, 3.0)
    rows = pd.DataFrame(probe.probe_layer(x, frame, folds=4, cs=[0.1, 1.0], n_bootstrap=200, n_permutations=200))
    acc = rows.query("metric == 'accuracy'").iloc[0]
    assert acc["value"] > 0.85 and acc["p"] < 0.01 and acc["ci_low"] > acc["chance"]
    assert 0.4 < acc["chance"] < 0.6 and acc["n"] == 160
    bal = rows.query("metric == 'balanced_accuracy'").iloc[0]
    assert bal["value"] > 0.85 and bal["p"] < 0.01 and bal["chance"] == 0.5
    frame, x = _probe_data(160, rng, 0.0)
    rows = pd.DataFrame(probe.probe_layer(x, frame, folds=4, cs=[0.1, 1.0], n_bootstrap=100, n_permutations=200))
    assert rows.query("metric == 'accuracy'").iloc[0]["value"] < 0.65


def test_probe_scores_match_sklearn_and_binomial():
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(25)
    y = rng.integers(0, 3, 90)
    pred = np.where(rng.random(90) < 0.6, y, rng.integers(0, 3, 90))
    rows = {r["metric"]: r for r in probe.probe_scores(y, pred, 0.4, n_classes=3, n_bootstrap=50,
                                                        n_permutations=50, rng=rng)}
    assert rows["accuracy"]["value"] == pytest.approx(np.mean(y == pred))
    assert rows["balanced_accuracy"]["value"] == pytest.approx(balanced_accuracy_score(y, pred))
    k = int((y == pred).sum())
    assert rows["accuracy"]["p"] == pytest.approx(scipy.stats.binomtest(k, 90, 0.4, alternative="greater").pvalue)


def test_probe_grouped_folds_keep_words_apart():
    rng = np.random.default_rng(16)
    groups = np.repeat(np.arange(40), 6)
    y = np.repeat(rng.integers(0, 2, 40), 6)
    for tr, te in probe._folds(y, groups, 5, 0):
        assert not set(groups[tr]) & set(groups[te])
    assert sum(len(te) for _, te in probe._folds(y, groups, 5, 0)) == 240


def test_transfer_split_trains_only_on_declared_subset():
    rng = np.random.default_rng(17)
    frame, x = _probe_data(200, rng, 0.0, voices=True)
    sign = np.where(frame["label"] == "round", 1.0, -1.0)
    x[:, 0] = np.where(frame["voice"] == "A", 3.0, -3.0) * sign + 0.3 * rng.normal(size=200)  # reversed in B
    split = {"name": "A_to_B", "train": {"voice": ["A"]}, "test": {"voice": ["B"]}}
    train, test = probe.split_masks(frame, split)
    assert (frame.loc[train, "voice"] == "A").all() and (frame.loc[test, "voice"] == "B").all()
    rows = pd.DataFrame(probe.probe_layer(x, frame, folds=3, cs=[1.0], splits=[split],
                                          n_bootstrap=50, n_permutations=50))
    tr = rows.query("split == 'A_to_B' and metric == 'accuracy'").iloc[0]
    assert tr["n"] == 100 and tr["n_train"] == 100
    assert tr["value"] < 0.1  # learned only A's (reversed) rule; any B row in training would break this
    with pytest.raises(ValueError):
        probe.split_masks(frame, {"name": "bad", "train": {"voice": ["A"]}, "test": {"voice": ["A", "B"]}})


def test_run_probe_entry_script(tmp_path):
    rng = np.random.default_rng(18)
    words = words_frame(20, voices=("a", "b"), rng=rng)
    words.to_parquet(tmp_path / "m.parquet")
    ids = list(words["stimulus_id"])
    write_emb(tmp_path / "e.parquet", [("0", 0, ids, planted(words, 6, 2.0, rng)), ("1", 1, ids, rng.normal(size=(len(ids), 6)))])
    sm = _snakemake(tmp_path, dict(manifest=str(tmp_path / "m.parquet"), embeddings=str(tmp_path / "e.parquet")),
                    dict(table=str(tmp_path / "p.parquet")),
                    {"set": "pseudowords", "model": "m", "seed": 0, "n_bootstrap": 100, "n_permutations": 100,
                     "cfg": {"folds": 3, "C": [0.1, 1.0],
                             "splits": [{"name": "a_to_b", "train": {"voice": ["a"]}, "test": {"voice": ["b"]}}]}})
    runpy.run_path(str(SCRIPTS / "probe.py"), init_globals={"snakemake": sm})
    t = pd.read_parquet(tmp_path / "p.parquet")
    assert set(t["split"]) == {"cv", "a_to_b"} and t["grouped"].all()
    assert (t.query("split == 'cv'")["n"] == 80).all()  # references excluded
    assert t.query("layer == '0' and metric == 'accuracy' and split == 'cv'").iloc[0]["value"] > 0.8


# ----------------------------------------------------------------------------- retrieval
def _brute_recall(q, g, positives, k):
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    s = qn @ gn.T
    top = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.mean([bool(set(top[i]) & set(np.atleast_1d(positives[i]))) for i in range(len(q))])


def test_recall_equals_brute_force_both_directions():
    rng = np.random.default_rng(19)
    g = rng.normal(size=(40, 8))
    img = np.repeat(np.arange(40), 3)
    caps = g[img] + rng.normal(size=(120, 8)) * 1.2
    r = retrieval.recall_at_k(caps, g, img, ks=(1, 5, 10), chunk=7)
    for k in (1, 5, 10):
        assert r[k] == pytest.approx(_brute_recall(caps, g, img, k))
    pos = [np.flatnonzero(img == i) for i in range(40)]
    r = retrieval.recall_at_k(g, caps, pos, ks=(1, 5, 10), chunk=9)
    for k in (1, 5, 10):
        assert r[k] == pytest.approx(_brute_recall(g, caps, pos, k))


def test_recall_ties_are_expected_values_and_chunk_invariant():
    rng = np.random.default_rng(20)
    g = np.ones((10, 4))  # every gallery item identical: every ranking is a tie
    q = rng.normal(size=(6, 4))
    r = retrieval.recall_at_k(q, g, np.arange(6), ks=(1, 5, 10))
    assert r == pytest.approx({1: 0.1, 5: 0.5, 10: 1.0})
    # image → captions with 2 tied positives among 10: P(some positive in top 1) = 2/10
    r = retrieval.recall_at_k(q[:1], g, [np.array([0, 1])], ks=(1, 2))
    assert r[1] == pytest.approx(0.2) and r[2] == pytest.approx(1 - (8 * 7) / (10 * 9))
    # duplicated gallery items: identical results whatever the chunk size
    gal = rng.normal(size=(30, 5))
    gal[10:20] = gal[:10]
    qs = rng.normal(size=(50, 5))
    target = rng.integers(0, 30, 50)
    a = retrieval.recall_at_k(qs, gal, target, chunk=1)
    b = retrieval.recall_at_k(qs, gal, target, chunk=1000)
    assert a == pytest.approx(b)


def test_word_error_rate_known_answers():
    assert retrieval.word_error_rate(["a b c d"], ["a b c d"]) == 0.0
    assert retrieval.word_error_rate(["the cat sat on the mat"], ["the cat sit on mat"]) == pytest.approx(2 / 6)
    assert retrieval.word_error_rate(["a b"], ["x a b y z"]) == pytest.approx(3 / 2)  # insertions
    assert retrieval.word_error_rate(["a b c", "d e"], ["", "d e"]) == pytest.approx(3 / 5)
    assert retrieval.word_error_rate(["It's a Dog."], ["its a dog"]) == pytest.approx(1 / 3)
    assert retrieval.word_error_rate(["Hello, world!"], ["hello world"]) == 0.0
    assert retrieval.edit_distance(list("kitten"), list("sitting")) == 3


def test_run_retrieval_text_and_fusion(tmp_path):
    rng = np.random.default_rng(21)
    n_img = 30
    gm = pd.DataFrame({"stimulus_id": [f"img{i}" for i in range(n_img)]})
    qm = pd.DataFrame({"stimulus_id": [f"cap{i}" for i in range(n_img * 5)],
                       "image_id": [f"img{i // 5}" for i in range(n_img * 5)],
                       "text": ["a red ball"] * (n_img * 5), "asr_text": ["a red bowl"] * (n_img * 5)})
    gm.to_parquet(tmp_path / "g.parquet")
    qm.to_parquet(tmp_path / "q.parquet")
    g = rng.normal(size=(n_img, 8))
    q1 = g[np.arange(n_img * 5) // 5] + rng.normal(size=(n_img * 5, 8))
    q2 = g[np.arange(n_img * 5) // 5] + rng.normal(size=(n_img * 5, 8))
    write_emb(tmp_path / "ge.parquet", [("joint", 3, list(gm["stimulus_id"]), g)])
    write_emb(tmp_path / "q1.parquet", [("joint", 3, list(qm["stimulus_id"]), q1)])
    write_emb(tmp_path / "q2.parquet", [("joint", 3, list(qm["stimulus_id"]), q2)])
    sm = _snakemake(tmp_path,
                    dict(queries_manifest=str(tmp_path / "q.parquet"), queries_embeddings=str(tmp_path / "q1.parquet"),
                         gallery_manifest=str(tmp_path / "g.parquet"), gallery_embeddings=str(tmp_path / "ge.parquet")),
                    dict(table=str(tmp_path / "r.parquet")),
                    dict(name="t", mode="text", model="m", queries="caption_text", gallery="scenes", seed=0))
    runpy.run_path(str(SCRIPTS / "retrieval.py"), init_globals={"snakemake": sm})
    t = pd.read_parquet(tmp_path / "r.parquet")
    assert set(t["direction"]) == {"text→image", "image→text", "asr"}
    r1 = t.query("direction == 'text→image' and metric == 'R@1'").iloc[0]
    assert r1["value"] == pytest.approx(_brute_recall(q1, g, np.arange(n_img * 5) // 5, 1))
    assert r1["n"] == 150 and r1["chance"] == pytest.approx(1 / 30)
    assert t.query("metric == 'wer'").iloc[0]["value"] == pytest.approx(1 / 3)
    fused = retrieval.run_retrieval(tmp_path / "q.parquet", [tmp_path / "q1.parquet", tmp_path / "q2.parquet"],
                                    tmp_path / "g.parquet", tmp_path / "ge.parquet", name="f", mode="fusion",
                                    model="m", queries=["captions", "captions_asr"], gallery="scenes")
    qf = q1 / np.linalg.norm(q1, axis=1, keepdims=True) + q2 / np.linalg.norm(q2, axis=1, keepdims=True)
    f1 = fused.query("direction == 'speech→image' and metric == 'R@1'").iloc[0]
    assert f1["value"] == pytest.approx(_brute_recall(qf, g, np.arange(n_img * 5) // 5, 1))
    assert (fused["mode"] == "fusion").all()
