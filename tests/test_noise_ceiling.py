"""RSA noise ceiling from per-rater human ratings (``rsa`` module docstring, Human ratings).

Reference implementation: ``rsatoolbox.inference.boot_noise_ceiling`` (one RDM per rater).
Planted: raters = one true RDM + independent noise.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from avprobe import io as avio
from avprobe.analysis import rsa

CATS = {"material": ["wood", "metal", "glass", "plastic", "stone"], "hollowness": ["solid", "hollow"],
        "extension": ["1d", "2d", "3d"]}


def impacts_manifest() -> pd.DataFrame:
    rows = [dict(stimulus_id=f"impact-{m}-{g}-{h}-s{s}", material=m, extension=e, hollowness=h, size=0.1 * s)
            for m in CATS["material"]
            for g, e in (("bar", "1d"), ("plate", "2d"), ("block", "3d"))
            for h in ("solid", "hollow") for s in (1, 2)]
    return pd.DataFrame(rows)


def rater_table(man: pd.DataFrame, n_raters: int, accuracy: float, rng, skip: int = 0) -> pd.DataFrame:
    """One-hot per-rater answers: the true category with probability ``accuracy``, else a random
    one. Rater r0 skips the first ``skip`` stimuli (so they are outside the ceiling units)."""
    rows = []
    for k in range(n_raters):
        for i, r in enumerate(man.itertuples()):
            if k == 0 and i < skip:
                continue
            for d, cs in CATS.items():
                truth = getattr(r, d)
                pick = truth if rng.random() < accuracy else cs[rng.integers(len(cs))]
                rows += [dict(rater=f"r{k}", stimulus_id=r.stimulus_id, dimension=d, category=c,
                              proportion=float(c == pick)) for c in cs]
    return pd.DataFrame(rows)


def rsatoolbox_ceiling(vecs: np.ndarray, method: str) -> tuple[float, float]:
    from rsatoolbox.inference import boot_noise_ceiling
    from rsatoolbox.rdm import RDMs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Noise ceiling for tau based on averaged ranks!"
        lo, hi = boot_noise_ceiling(RDMs(vecs), method=method, rdm_descriptor="index")
    return float(lo), float(hi)


# ----------------------------------------------------------------------------- rsatoolbox
@pytest.mark.parametrize("theirs", ["spearman", "corr", "tau-a"])
def test_noise_ceiling_equals_rsatoolbox(theirs):
    pytest.importorskip("rsatoolbox")
    rng = np.random.default_rng(3)
    # continuous RDMs with ties, 2 and 6 raters
    true = rsa.rdm_vector(rng.normal(size=(20, 4)))
    for r in (2, 6):
        vecs = true + 0.3 * rng.normal(size=(r, true.size))
        vecs[0] = np.round(vecs[0], 1)
        ours = rsa.noise_ceiling(vecs, theirs)
        assert np.abs(np.subtract(ours, rsatoolbox_ceiling(vecs, theirs))).max() < 1e-6
    # the per-rater human RDMs (KL, mode: heavy ties) that run_rsa uses
    man = impacts_manifest()
    ratings = rater_table(man, 5, 0.6, rng, skip=4)
    units = rsa.prepare_units(man, average_by=None)
    ceilings = rsa.human_noise_ceilings(ratings, units, theirs)
    idx = rsa.ceiling_units(ratings, units)
    assert idx.size == len(man) - 4
    uids = list(units.frame["unit_id"].to_numpy()[idx])
    mats = rsa.rater_rdms(ratings, uids)
    assert list(mats) == [f"r{k}" for k in range(5)]
    assert set(ceilings) == set(mats["r0"]) == {f"human_{k}_{d}" for k in ("kl", "mode")
                                                for d in (*CATS, "mean")}
    worst = 0.0
    for name, c in ceilings.items():
        vecs = np.stack([rsa.upper(m[name]) for m in mats.values()])
        assert np.ptp(vecs, axis=1).min() > 0 and c["n_raters"] == 5 and c["n_units"] == idx.size
        expected = rsatoolbox_ceiling(vecs, theirs)
        worst = max(worst, abs(c["noise_ceiling_low"] - expected[0]), abs(c["noise_ceiling_high"] - expected[1]))
    assert worst < 1e-6


@pytest.mark.parametrize("theirs", ["spearman", "corr", "tau-a"])
def test_value_raters_equals_rsatoolbox_eval_fixed(theirs):
    """value_raters = rsatoolbox eval_fixed(ModelFixed(model RDM), per-rater RDMs) mean, for
    plain and partial (residual) model RDMs restricted to the ceiling units."""
    pytest.importorskip("rsatoolbox")
    from rsatoolbox.inference import eval_fixed
    from rsatoolbox.model import ModelFixed
    from rsatoolbox.rdm import RDMs

    rng = np.random.default_rng(7)
    man = impacts_manifest()
    units = rsa.prepare_units(man, average_by=None)
    ratings = rater_table(man, 5, 0.6, rng, skip=4)
    idx, per_ref = rsa.human_rater_vectors(ratings, units)
    assert idx.size == len(man) - 4 and set(per_ref) == set(rsa.human_noise_ceilings(ratings, units))
    codes = pd.factorize(man["material"])[0]
    full = rsa.rdm_vector(rng.normal(size=(len(man), 6)) + 2 * np.eye(6)[codes % 6])
    cov = rsa.rdm_vector(rng.normal(size=(len(man), 3)))
    pairs = rsa.resampled_pairs(idx, len(man))
    worst = 0.0
    for model in (full[pairs], rsa.partial_residuals(full, cov)[pairs]):
        for name, vecs in per_ref.items():
            ours = rsa.rater_scores(model, vecs, theirs)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = eval_fixed(ModelFixed("m", RDMs(model[None])), RDMs(vecs), method=theirs)
            worst = max(worst, abs(ours - float(np.mean(res.evaluations))))
            # eval_fixed's own noise ceiling is ours too
            assert np.allclose(np.ravel(res.noise_ceiling), rsa.noise_ceiling(vecs, theirs), atol=1e-6)
    assert worst < 1e-6, worst


def test_pool_and_rater_rdms_definitions():
    v = np.array([[1.0, 2.0, 2.0, 5.0], [4.0, 3.0, 2.0, 1.0]])
    assert np.allclose(rsa.pool_rdms(v, "spearman"), [2.5, 2.75, 2.25, 2.5])  # mean of midranks
    z = (v - v.mean(1, keepdims=True)) / v.std(1, keepdims=True)
    assert np.allclose(rsa.pool_rdms(v, "pearson"), z.mean(0))
    assert np.isnan(rsa.noise_ceiling(v[:1], "spearman")).all()
    # one rater who never chose a category still gets the table's categories (same smoothing)
    ratings = pd.DataFrame([
        ("a", "s1", "material", "wood", 1.0), ("a", "s2", "material", "wood", 1.0),
        ("a", "s3", "material", "metal", 1.0),
        ("b", "s1", "material", "glass", 1.0), ("b", "s2", "material", "wood", 1.0),
        ("b", "s3", "material", "metal", 1.0),
    ], columns=["rater", "stimulus_id", "dimension", "category", "proportion"])
    per = rsa.rater_rdms(ratings, ["s1", "s2", "s3"])
    assert per["a"]["human_kl_material"][0, 2] == pytest.approx(per["b"]["human_kl_material"][1, 2])
    # the aggregate is the mean of the raters' distributions
    agg = rsa.aggregate_ratings(ratings).set_index(["stimulus_id", "category"])["proportion"]
    assert agg[("s1", "wood")] == 0.5 and agg[("s1", "glass")] == 0.5 and agg[("s3", "metal")] == 1.0
    assert agg[("s2", "glass")] == 0.0


# ----------------------------------------------------------------------------- planted
@pytest.mark.parametrize("method", ["spearman", "pearson", "tau-a"])
def test_noise_ceiling_planted(method):
    """Raters = true RDM + noise: low <= high, both rise as noise falls, and the true RDM's
    mean score against the single raters (``value_raters``, the quantity the ceiling bounds)
    lies in between (at most 0.02 above), while its ``value`` against the rater average may
    exceed the upper bound."""
    rng = np.random.default_rng(11)
    true = rsa.rdm_vector(rng.normal(size=(30, 5)))
    sd = true.std()
    prev = (-np.inf, -np.inf)
    for noise in (2.0, 1.0, 0.5, 0.2):
        vecs = true + noise * sd * rng.normal(size=(12, true.size))
        lo, hi = rsa.noise_ceiling(vecs, method)
        assert lo <= hi and lo > prev[0] and hi > prev[1]
        prev = (lo, hi)
        truth = rsa.rater_scores(true, vecs, method)
        assert truth == pytest.approx(np.mean([rsa.compare_vectors(true, v, method) for v in vecs]), abs=1e-12)
        assert lo <= truth <= hi + 0.02, (noise, lo, truth, hi)
        # the table's value compares with the (less noisy) aggregate: it can exceed the ceiling
        assert rsa.compare_vectors(true, vecs.mean(0), method) > hi
        # a model of pure noise scores far below the lower bound
        junk = rng.normal(size=true.size)
        assert np.mean([rsa.compare_vectors(junk, v, method) for v in vecs]) < lo - 0.1


# ----------------------------------------------------------------------------- run_rsa
def _write(tmp_path, man, x):
    man.to_parquet(tmp_path / "m.parquet")
    avio.write_embeddings([("0", 0, (list(man["stimulus_id"]), x.astype(np.float32)))], tmp_path / "e.parquet",
                          {"model": "test"})


def test_run_rsa_per_rater_ceilings_and_aggregate_equivalence(tmp_path):
    rng = np.random.default_rng(24)
    man = impacts_manifest()
    codes = pd.factorize(man["material"])[0]
    _write(tmp_path, man, rng.normal(size=(len(man), 8)) + 3 * np.eye(8)[codes])
    ratings = rater_table(man, 6, 0.7, rng, skip=3)
    ratings.to_csv(tmp_path / "raters.csv", index=False)
    # the same data aggregated by hand: share of raters per category, no rater column
    agg = (ratings.groupby(["stimulus_id", "dimension", "category"], sort=False)["proportion"].sum()
           / ratings.groupby(["stimulus_id", "dimension", "category"], sort=False)["rater"].nunique()).rename(
        "proportion").reset_index()
    agg.to_csv(tmp_path / "agg.csv", index=False)
    kw = dict(set_name="impacts", model="m", n_bootstrap=50, n_permutations=50)
    t = rsa.run_rsa(tmp_path / "m.parquet", tmp_path / "e.parquet", ratings=tmp_path / "raters.csv", **kw)
    t0 = rsa.run_rsa(tmp_path / "m.parquet", tmp_path / "e.parquet", ratings=tmp_path / "agg.csv", **kw)
    human = t["reference"].str.startswith("human_")
    assert human.sum() == 8 and (~human).sum() > 0
    h = t[human]
    assert np.isfinite(h[["noise_ceiling_low", "noise_ceiling_high"]]).all().all()
    assert (h["noise_ceiling_low"] <= h["noise_ceiling_high"]).all() and (h["n_raters"] == 6).all()
    assert t.loc[~human, ["noise_ceiling_low", "noise_ceiling_high", "n_raters"]].isna().all().all()
    # human references: every rated unit (n), aggregated over raters = the hand-aggregated table
    assert (h["n"] == len(man)).all()
    assert np.allclose(h["value"].to_numpy(), t0.loc[human, "value"].to_numpy(), atol=1e-12)
    assert t0[["noise_ceiling_low", "noise_ceiling_high", "n_raters", "value_raters"]].isna().all().all()
    assert np.isfinite(h["value_raters"]).all() and t.loc[~human, "value_raters"].isna().all()
    # without a rater column the human values are those of the aggregate RDMs, as before
    units = rsa.prepare_units(man, average_by=None)
    idx, refs = rsa.human_references(agg, units)
    mats = rsa.human_rdms(agg, list(units.frame["unit_id"].to_numpy()[idx]))
    for ref in refs:
        assert np.array_equal(ref.vector(), rsa.upper(mats[ref.name]))
    row = t0.set_index("reference").loc["human_kl_material"]
    model = rsa.rdm_vector(rsa.unit_matrix(units, *avio.read_layer(tmp_path / "e.parquet", "0")))
    expected = rsa.compare_vectors(model[rsa.resampled_pairs(idx, len(man))], rsa.upper(mats["human_kl_material"]))
    assert row["value"] == pytest.approx(expected, abs=1e-12)
    # value_raters: the model on the ceiling units (3 skipped) against each rater, averaged
    cidx = rsa.ceiling_units(ratings, units)
    assert cidx.size == len(man) - 3
    per = rsa.rater_rdms(ratings, list(units.frame["unit_id"].to_numpy()[cidx]))
    sub = model[rsa.resampled_pairs(cidx, len(man))]
    scores = [rsa.compare_vectors(sub, rsa.upper(m["human_kl_material"])) for m in per.values()]
    row = t.set_index("reference").loc["human_kl_material"]
    assert row["value_raters"] == pytest.approx(np.mean(scores), abs=1e-12)


def test_run_rsa_partial_value_raters_use_full_fit_residuals(tmp_path):
    rng = np.random.default_rng(31)
    man = impacts_manifest()
    codes = pd.factorize(man["material"])[0]
    x = rng.normal(size=(len(man), 8)) + 3 * np.eye(8)[codes]
    _write(tmp_path, man, x)
    cov = rng.normal(size=(len(man), 4)) + x[:, :4]
    avio.write_embeddings([("0", 0, (list(man["stimulus_id"]), cov.astype(np.float32)))],
                          tmp_path / "c.parquet", {"model": "cov"})
    ratings = rater_table(man, 4, 0.7, rng, skip=5)
    ratings.to_csv(tmp_path / "raters.csv", index=False)
    t = rsa.run_rsa(tmp_path / "m.parquet", tmp_path / "e.parquet", ratings=tmp_path / "raters.csv",
                    covariate=tmp_path / "c.parquet", set_name="impacts", model="m", n_bootstrap=20,
                    n_permutations=20)
    row = t[(t["reference"] == "human_mode_mean") & t["partial"]].iloc[0]
    units = rsa.prepare_units(man, average_by=None)
    idx, per_ref = rsa.human_rater_vectors(ratings, units)
    model, covariate = (rsa.rdm_vector(rsa.unit_matrix(units, *avio.read_layer(tmp_path / f, "0")))
                        for f in ("e.parquet", "c.parquet"))  # float32 as stored
    resid = rsa.partial_residuals(model, covariate)[rsa.resampled_pairs(idx, len(man))]
    assert row["value_raters"] == pytest.approx(rsa.rater_scores(resid, per_ref["human_mode_mean"]), abs=1e-9)
    assert row["value_raters"] != pytest.approx(
        t[(t["reference"] == "human_mode_mean") & ~t["partial"]]["value_raters"].iloc[0], abs=1e-6)


def test_rsa_figure_draws_ceiling_band():
    from avprobe.figures import rsa_layers

    rows = []
    for ref, ceil in (("label", (np.nan, np.nan)), ("human_kl_mean", (0.4, 0.6))):
        for li in range(3):
            rows.append(dict(analysis="rsa", set="impacts", model="m", layer=str(li), layer_index=li,
                             metric=f"rsa_{ref}_spearman", value=0.1 * li, ci_low=0.0, ci_high=0.3, p=0.01,
                             n=60, p_fdr=0.02, reference=ref, partial=False, noise_ceiling_low=ceil[0],
                             noise_ceiling_high=ceil[1], n_raters=6 if ref.startswith("human") else np.nan,
                             value_raters=0.05 * li if ref.startswith("human") else np.nan))
    fig = rsa_layers.rsa_layers(avio.tidy_table(rows), references=["label", "human_kl_mean"])
    bands = [a for a in fig.findobj() if (a.get_gid() or "").startswith("ceiling:")]
    assert [b.get_gid() for b in bands] == ["ceiling:impacts:human_kl_mean"]
    assert bands[0].axes.get_title() == "human_kl_mean RDM"
    assert (bands[0].get_y(), bands[0].get_y() + bands[0].get_height()) == pytest.approx((0.4, 0.6))
    texts = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert "noise ceiling (vs single raters)" in texts and "model vs single raters" in texts
    dotted = [a for a in fig.findobj() if a.get_gid() == "raters:m"]
    assert len(dotted) == 1 and dotted[0].axes is bands[0].axes and dotted[0].get_linestyle() == ":"
    assert list(dotted[0].get_ydata()) == pytest.approx([0.0, 0.05, 0.1])
    assert dotted[0].get_markerfacecolor() == "white"
    value = [a for a in bands[0].axes.get_lines() if a.get_gid() == "line:m"]
    assert len(value) == 1 and list(value[0].get_ydata()) == pytest.approx([0.0, 0.1, 0.2])


def test_constant_rater_rdm_is_left_out_and_too_few_units_give_nan():
    rng = np.random.default_rng(5)
    man = impacts_manifest()
    units = rsa.prepare_units(man, average_by=None)
    ratings = rater_table(man, 4, 0.7, rng)
    same = (ratings["rater"] == "r1") & (ratings["dimension"] == "hollowness")
    ratings.loc[same, "proportion"] = (ratings.loc[same, "category"] == "solid").astype(float)
    c = rsa.human_noise_ceilings(ratings, units)
    assert c["human_kl_hollowness"]["n_raters"] == 3 and c["human_kl_material"]["n_raters"] == 4
    assert np.isfinite(c["human_kl_hollowness"]["noise_ceiling_low"])
    # a rater who rated only two stimuli leaves < 3 ceiling units: NaN, with the reference names
    few = pd.concat([ratings, rater_table(man.head(2), 1, 1.0, rng).assign(rater="late")])
    c = rsa.human_noise_ceilings(few, units)
    assert len(c) == 8 and all(np.isnan(v["noise_ceiling_low"]) for v in c.values())
    assert rsa.human_noise_ceilings(ratings.drop(columns="rater"), units) == {}
