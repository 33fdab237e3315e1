"""Impact sounds with known physical answers, and the listeners' ratings schema."""

from __future__ import annotations

import hashlib
import math
import runpy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from avprobe.io import read_manifest, resolve_stimulus_path
from avprobe.sets import IMPACT_LABELS, SET_MODALITY
from avprobe.stimuli import impacts

ROOT = Path(__file__).resolve().parents[1]
IMPACTS_CFG = yaml.safe_load((ROOT / "config.yaml").read_text())["stimuli"]["impacts"]
EXAMPLE_RATINGS = ROOT / "resources" / "stimuli" / "impact_ratings_example.csv"
SMALL_CFG = {**IMPACTS_CFG, "materials": ["wood", "metal"], "geometries": ["bar", "block"], "sizes": [0.1, 0.3]}
RATE = 16000


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def spectrum(x: np.ndarray, rate: int = RATE) -> tuple[np.ndarray, np.ndarray]:
    n = 1 << int(np.ceil(np.log2(x.size * 8)))
    return np.fft.rfftfreq(n, 1 / rate), np.abs(np.fft.rfft(x * np.hanning(x.size), n))


def peak_near(x: np.ndarray, f: float, width: float = 0.1) -> float:
    """Frequency of the largest spectral peak within ±width·f of f."""
    freqs, mag = spectrum(x)
    band = (freqs > f * (1 - width)) & (freqs < f * (1 + width))
    return float(freqs[band][np.argmax(mag[band])])


def band_decay_time(x: np.ndarray, f: float, rate: int = RATE, frame: int = 1024, hop: int = 64) -> float:
    """T60 of the component at f from its envelope: the STFT magnitude at f frame by frame
    (a windowed exponential decays at its own rate), a straight line through it in dB from
    3 to 30 dB below its maximum."""
    window = np.hanning(frame)
    n_fft = 8 * frame
    k = int(round(f * n_fft / rate))
    starts = np.arange(0, x.size - frame, hop)
    mag = np.array([np.abs(np.fft.rfft(x[s : s + frame] * window, n_fft)[k - 2 : k + 3]).max() for s in starts])
    db = 20 * np.log10(mag / mag.max() + 1e-12)
    t = starts / rate
    after = np.arange(mag.size) >= np.argmax(mag)
    fit = after & (db < -3) & (db > -30)
    slope = np.polyfit(t[fit], db[fit], 1)[0]  # dB per second
    return -60.0 / slope


@pytest.fixture(scope="module")
def plan() -> pd.DataFrame:
    return impacts.impact_plan(IMPACTS_CFG, seed=0)


@pytest.fixture(scope="module")
def settings() -> dict:
    return impacts._settings(IMPACTS_CFG)


def render(plan, settings, stimulus_id):
    row = plan.set_index("stimulus_id").loc[stimulus_id].to_dict()
    return row, impacts.render_impact(row, settings)[0]


# --- physics: mode ratios -------------------------------------------------------------------


def test_free_free_beam_ratios_are_the_textbook_values():
    roots = impacts.beam_roots(5)
    assert roots[:4] == pytest.approx([4.73004, 7.85320, 10.99561, 14.13717], abs=1e-5)
    assert impacts.mode_ratios("bar", 5) == pytest.approx([1.0, 2.7565, 5.4039, 8.9330, 13.3443], abs=1e-4)
    for beta in roots:  # each is a root of the free-free frequency equation
        assert math.cos(beta) * math.cosh(beta) == pytest.approx(1.0, abs=1e-6)


def test_plate_and_block_ratios_and_mode_density_grow_with_dimension():
    plate = impacts.mode_ratios("plate", 5)
    assert plate[:3] == pytest.approx([1.0, (4 + 1.69) / 2.69, (1 + 4 * 1.69) / 2.69])  # (1,1), (2,1), (1,2)
    block = impacts.mode_ratios("block", 5)
    assert block[:3] == pytest.approx([1.0, 1 / 0.8, 1 / 0.65])  # (1,0,0), (0,1,0), (0,0,1)
    below = {g: sum(r < 4.0 for r in impacts.mode_ratios(g, 200)) for g in impacts.GEOMETRIES}
    # 1D bending: f ∝ n², 2D: constant density, 3D volume: density ∝ f²
    assert below["bar"] == 2 and below["bar"] < below["plate"] < below["block"]


def test_contact_spectrum_of_a_half_sine_pulse():
    tau = 1e-3
    assert impacts.contact_gain(np.array([0.0]), tau)[0] == pytest.approx(1.0)
    assert impacts.contact_gain(np.array([1.5 / tau]), tau)[0] == pytest.approx(0.0, abs=1e-12)  # first zero
    assert impacts.contact_gain(np.array([0.5 / tau]), tau)[0] == pytest.approx(math.pi / 4)  # removable singularity
    f = np.linspace(0, 1.4 / tau, 50)
    assert np.all(np.diff(impacts.contact_gain(f, tau)) < 0)
    # a softer (longer) contact leaves less energy in high modes: wood's 0.8 ms vs metal's 0.3 ms
    wood, metal = (impacts.MATERIALS[m].contact_time for m in ("wood", "metal"))
    assert impacts.contact_gain(np.array([1000.0]), wood)[0] < impacts.contact_gain(np.array([1000.0]), metal)[0]


# --- the plan ---------------------------------------------------------------------------------


def test_default_plan_is_240_sounds_balanced_over_the_factors(plan):
    assert len(plan) == 240 and plan["stimulus_id"].is_unique
    cells = plan.groupby(["material", "geometry", "hollow"]).size()
    assert len(cells) == 5 * 3 * 2 and (cells == 8).all()
    assert plan["material"].value_counts().eq(48).all() and plan["size"].value_counts().eq(30).all()
    # the first 30 rows are every combination once, at the smallest size (the example ratings' set)
    head = plan.head(30)
    assert len(head.groupby(["material", "geometry", "hollow"])) == 30 and (head["size_index"] == 1).all()
    assert plan["stimulus_id"].iloc[0] == "impact-wood-bar-solid-s1"
    assert set(plan["extension"]) == {"1d", "2d", "3d"} and set(plan["hollowness"]) == {"hollow", "solid"}
    assert SET_MODALITY["impacts"] == "audio" and set(IMPACT_LABELS) <= set(plan.columns)


def test_size_and_material_set_the_fundamental(plan):
    metal_bars = plan[(plan["material"] == "metal") & (plan["geometry"] == "bar") & ~plan["hollow"]]
    assert (metal_bars["f0"] * metal_bars["size"]).round(6).nunique() == 1  # f0 ∝ 1/size
    # at one size f0 ∝ wave speed √(E/ρ): plastic rings far lower than steel
    one = plan[(plan["size_index"] == 1) & (plan["geometry"] == "bar") & ~plan["hollow"]].set_index("material")
    assert one.loc["plastic", "f0"] / one.loc["metal", "f0"] == pytest.approx(
        math.sqrt(3.2e9 / 1190) / math.sqrt(200e9 / 7850)
    )
    # designed decay: damping a + b f² orders the materials metal > glass > stone > wood, plastic
    t60 = plan[(plan["size_index"] == 4) & ~plan["hollow"]].groupby("material")["decay_time"].first()
    assert t60["metal"] > t60["glass"] > t60["stone"] > t60["wood"]
    assert t60["stone"] > t60["plastic"]


# --- the signal: measured against the design -----------------------------------------------


def test_measured_f0_matches_the_design_for_every_default_sound(plan, settings):
    errors = []
    for row in plan.to_dict("records"):
        clip, _ = impacts.render_impact(row, settings)
        errors.append(abs(peak_near(clip, row["f0"]) / row["f0"] - 1))
    assert max(errors) < 0.03, max(errors)
    assert np.median(errors) < 0.003


def test_size_scaling_and_beam_overtones_are_in_the_signal(plan, settings):
    small, x_small = render(plan, settings, "impact-metal-bar-solid-s1")
    large, x_large = render(plan, settings, "impact-metal-bar-solid-s8")
    f_small, f_large = spectrum(x_small), spectrum(x_large)
    measured_small = f_small[0][np.argmax(f_small[1])]  # a solid metal bar: the fundamental dominates
    measured_large = f_large[0][np.argmax(f_large[1])]
    assert measured_small / measured_large == pytest.approx(large["size"] / small["size"], rel=0.01)
    # the free-free beam's second mode, 2.7565 × f0, is there
    second = peak_near(x_large, 2.7565 * large["f0"], width=0.03)
    assert second / large["f0"] == pytest.approx(2.7565, rel=0.005)


def test_decay_measured_from_the_envelope_wood_shorter_than_metal(plan, settings):
    measured = {}
    for material in ("wood", "metal", "glass", "stone", "plastic"):
        row, x = render(plan, settings, f"impact-{material}-plate-solid-s6")
        measured[material] = band_decay_time(x, row["f0"])
        # the fundamental's T60 in the signal is the design's a + b f0² (metal's is longer than
        # the 1.5 s clip, and still measured from the slope)
        assert measured[material] == pytest.approx(row["decay_time"], rel=0.05), material
    assert measured["plastic"] < measured["wood"] < measured["stone"] < measured["glass"] < measured["metal"]
    # and the whole sound, not just one mode: the time for the broadband envelope to fall 40 dB
    def fall_time(x):
        env = np.sqrt(np.convolve(x.astype(np.float64) ** 2, np.ones(160) / 160, mode="same"))
        return np.flatnonzero(env > env.max() * 0.01)[-1] / RATE

    wood = render(plan, settings, "impact-wood-bar-solid-s4")[1]
    metal = render(plan, settings, "impact-metal-bar-solid-s4")[1]
    assert fall_time(wood) < 0.5 * fall_time(metal)


def test_hollow_objects_have_air_cavity_modes_and_more_damping(plan, settings):
    solid = plan.set_index("stimulus_id").loc["impact-glass-bar-solid-s5"].to_dict()
    hollow = plan.set_index("stimulus_id").loc["impact-glass-bar-hollow-s5"].to_dict()
    assert solid["f0"] == hollow["f0"] and hollow["decay_time"] < solid["decay_time"]
    solid_modes, hollow_modes = impacts.modes(solid, RATE), impacts.modes(hollow, RATE)
    assert len(hollow_modes) > len(solid_modes) and set(hollow_modes["kind"]) == {"structure", "cavity"}
    # the open air column of a tube of length L: c_air / 2L, present in the signal
    column = impacts.C_AIR / (2 * hollow["size"])
    assert hollow_modes.loc[hollow_modes["kind"] == "cavity", "frequency"].min() == pytest.approx(column)
    x = impacts.render_impact(hollow, settings)[0]
    assert peak_near(x, column, width=0.02) == pytest.approx(column, rel=0.005)


# --- files, manifest, QC, reproducibility ------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The small config synthesised twice, and once with another seed."""
    out = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        root = tmp_path_factory.mktemp(name)
        manifest = impacts.synthesize_impacts(SMALL_CFG, seed, root / "manifest.parquet", root / "audio")
        out[name] = (root, manifest)
    return out


def test_synthesized_set_files_manifest_and_qc(built):
    root, manifest = built["a"]
    assert len(manifest) == 2 * 2 * 2 * 2
    for col in ("stimulus_id", "path", "material", "geometry", "hollow", "size", "f0", "decay_time",
                "sample_rate", "duration", "extension", "hollowness"):  # fmt: skip
        assert col in manifest.columns, col
    assert read_manifest(root / "manifest.parquet")["stimulus_id"].tolist() == manifest["stimulus_id"].tolist()
    for row in manifest.itertuples():
        path = resolve_stimulus_path(root / "manifest.parquet", row.path)
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "FLOAT")
        x, _ = sf.read(path, dtype="float32")
        assert x.size / RATE == pytest.approx(row.duration) and 0.05 < row.duration <= 1.5
        assert np.abs(x).max() <= 10 ** (-1 / 20) + 1e-6  # the peak limit
        if not row.peak_limited:
            assert 20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2))) == pytest.approx(-26.0, abs=0.01)
    qc = pd.read_parquet(root / "qc.parquet")
    assert qc["stimulus_id"].tolist() == manifest["stimulus_id"].tolist()
    assert (qc["n_clipped"] == 0).all() and (qc["leading_silence"] < 0.01).all()
    # silence below −60 dB re peak, the trim threshold: only the 10 ms fade is left at the end
    assert (qc["silence_db"] == -60.0).all() and (qc["trailing_silence"] <= 0.0105).all()
    assert (qc["flags"] == "").all()


def test_impacts_are_byte_identical_on_a_rerun_and_seeded(built):
    (a, ma), (b, _), (c, _) = built["a"], built["b"], built["c"]
    for rel in ma["path"]:
        assert sha(a / rel) == sha(b / rel), rel
    assert sha(a / "manifest.parquet") == sha(b / "manifest.parquet")
    assert sha(a / "qc.parquet") == sha(b / "qc.parquet")
    changed = [rel for rel in ma["path"] if sha(a / rel) != sha(c / rel)]
    assert changed  # another seed: other strike positions, other amplitudes


def test_entry_script_runs_with_the_rule_params(tmp_path):
    sm = SimpleNamespace(
        params=SimpleNamespace(cfg={**SMALL_CFG, "materials": ["glass"], "sizes": [0.2]}, seed=0),
        output=SimpleNamespace(manifest=str(tmp_path / "impacts/manifest.parquet"),
                               directory=str(tmp_path / "impacts/audio")),  # fmt: skip
        log=[str(tmp_path / "impacts.log")], threads=1,
    )  # fmt: skip
    runpy.run_path(str(ROOT / "workflow/scripts/synthesize_impacts.py"), init_globals={"snakemake": sm})
    assert len(read_manifest(tmp_path / "impacts/manifest.parquet")) == 4
    assert (tmp_path / "impacts/qc.parquet").is_file()
    assert "sounds/s" in (tmp_path / "impacts.log").read_text()


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="materials"):
        impacts.impact_plan({**IMPACTS_CFG, "materials": ["jelly"]})
    with pytest.raises(ValueError, match="unknown keys"):
        impacts.impact_plan({**IMPACTS_CFG, "colour": "red"})
    with pytest.raises(ValueError, match="sizes"):
        impacts.impact_plan({**IMPACTS_CFG, "sizes": [0.0]})


# --- ratings ------------------------------------------------------------------------------------


def good_ratings() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "stimulus_id": ["s1", "s1", "s1", "s1", "s2", "s2"],
            "dimension": ["material", "material", "hollowness", "hollowness", "material", "material"],
            "category": ["wood", "metal", "hollow", "solid", "wood", "metal"],
            "proportion": [0.25, 0.75, 1.0, 0.0, 0.5, 0.5],
        }
    )


def test_example_ratings_file_is_valid_synthetic_and_up_to_date(plan):
    ratings = impacts.validate_ratings(EXAMPLE_RATINGS, stimulus_ids=plan["stimulus_id"],
                                       categories={"material": list(impacts.MATERIALS)})  # fmt: skip
    assert set(ratings["stimulus_id"]) == set(plan["stimulus_id"].head(30))
    assert set(ratings["dimension"]) == set(IMPACT_LABELS)
    assert ratings["source"].str.contains("SYNTHETIC").all()
    regenerated = impacts.example_ratings(plan.head(30), n_listeners=17, seed=0)
    pd.testing.assert_frame_equal(pd.read_csv(EXAMPLE_RATINGS), regenerated, check_exact=False, rtol=1e-12)
    # simulated listeners mostly answer the physical truth: the modal answer matches it often
    modes = ratings.loc[ratings.groupby(["stimulus_id", "dimension"])["proportion"].idxmax()]
    truth = plan.set_index("stimulus_id")
    hits = [truth.loc[r.stimulus_id, impacts.RATING_DIMENSIONS[r.dimension]] == r.category for r in modes.itertuples()]
    assert np.mean(hits) > 0.6


def test_example_ratings_give_human_rdms_in_the_rsa_module():
    rsa = pytest.importorskip("avprobe.analysis.rsa")
    ratings = impacts.read_ratings(EXAMPLE_RATINGS)
    ids = sorted(ratings["stimulus_id"].unique())
    mats = rsa.human_rdms(ratings, ids)
    for dimension in IMPACT_LABELS:
        kl = mats[f"human_kl_{dimension}"]
        assert kl.shape == (30, 30) and np.allclose(kl, kl.T) and (np.diag(kl) == 0).all()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.drop(columns="proportion"), r"missing \['proportion'\]"),
        (lambda r: r.iloc[:0], "no rows"),
        (lambda r: r.assign(proportion=[0.25, 0.75, 1.0, 0.0, 0.5, 1.5]), r"in \[0, 1\]"),
        (lambda r: r.assign(proportion=[0.25, 0.75, 1.0, 0.0, 0.5, "half"]), r"in \[0, 1\]"),
        (lambda r: r.assign(proportion=[0.25, 0.70, 1.0, 0.0, 0.5, 0.5]), r"sum to 1.*s1/material: 0\.95"),
        (lambda r: pd.concat([r, r.iloc[[0]]]), "appear once"),
        (lambda r: r.assign(category=["wood", None, "hollow", "solid", "wood", "metal"]), "empty fields"),
        (lambda r: r.assign(dimension=["material", "material", "hollowness", "hollowness", " ", " "]), "empty dimension"),
    ],
)
def test_ratings_validation_names_the_problem(mutate, message):
    impacts.validate_ratings(good_ratings())
    with pytest.raises(impacts.RatingsError, match=message):
        impacts.validate_ratings(mutate(good_ratings()))


def test_ratings_validation_against_the_set_and_files(tmp_path):
    with pytest.raises(impacts.RatingsError, match=r"not in the stimulus set, e.g. \['s2'\]"):
        impacts.validate_ratings(good_ratings(), stimulus_ids=["s1"])
    with pytest.raises(impacts.RatingsError, match="unknown categories"):
        impacts.validate_ratings(good_ratings(), categories={"material": ["wood", "glass"]})
    path = tmp_path / "ratings.tsv"
    good_ratings().to_csv(path, sep="\t", index=False)
    assert len(impacts.validate_ratings(path)) == 6
    good_ratings().to_parquet(tmp_path / "ratings.parquet")
    assert len(impacts.validate_ratings(tmp_path / "ratings.parquet")) == 6
    with pytest.raises(impacts.RatingsError, match="does not exist"):
        impacts.validate_ratings(tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    good_ratings().assign(proportion=[0.25, 0.7, 1.0, 0.0, 0.5, 0.5]).to_csv(bad, index=False)
    with pytest.raises(impacts.RatingsError, match=str(bad)):  # the message names the file
        impacts.validate_ratings(bad)


def test_per_rater_ratings_validate_per_rater():
    one = good_ratings()
    raters = pd.concat([one.assign(rater="a"), one.assign(rater="b")], ignore_index=True)
    assert len(impacts.validate_ratings(raters)) == 12
    with pytest.raises(impacts.RatingsError, match="rater × stimulus_id × dimension × category must appear once"):
        impacts.validate_ratings(pd.concat([raters, raters.iloc[[0]]]))
    skewed = raters.copy()
    skewed.loc[0, "proportion"] = 0.5
    with pytest.raises(impacts.RatingsError, match=r"per rater × stimulus_id × dimension.*a/s1/material"):
        impacts.validate_ratings(skewed)


def test_the_rsa_job_refuses_a_bad_ratings_file(tmp_path):
    """A ratings table that does not fit the set stops the RSA job with the schema's message,
    instead of being renormalised or silently ignored."""
    rsa = pytest.importorskip("avprobe.analysis.rsa")
    from avprobe.io import write_embeddings

    ids = [f"s{i}" for i in range(12)]
    manifest = pd.DataFrame({"stimulus_id": ids, "label": ["sharp", "round"] * 6,
                             "material": ["wood", "metal", "glass"] * 4})
    manifest.to_parquet(tmp_path / "m.parquet")
    rng = np.random.default_rng(0)
    write_embeddings([("0", 0, (ids, rng.normal(size=(12, 4)).astype(np.float32)))], tmp_path / "e.parquet",
                     {"model": "m"})
    ratings = pd.DataFrame({"stimulus_id": ids + ["ghost"], "dimension": "material",
                            "category": "wood", "proportion": 1.0})
    ratings.to_csv(tmp_path / "r.csv", index=False)
    with pytest.raises(impacts.RatingsError, match=r"not in the stimulus set, e.g. \['ghost'\]"):
        rsa.run_rsa(tmp_path / "m.parquet", tmp_path / "e.parquet", tmp_path / "t.parquet", tmp_path / "r.npz",
                    set_name="impacts", model="m", n_bootstrap=10, n_permutations=10,
                    ratings=tmp_path / "r.csv")
