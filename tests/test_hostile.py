"""Hostile inputs (issue 15): each kind of bad input is quarantined, refused with a clear error,
or handled, never turned into a silent wrong value."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
sf = pytest.importorskip("soundfile")

from avprobe import io  # noqa: E402
from avprobe.extract import extract_embeddings  # noqa: E402
from avprobe.models.build import build_untrained  # noqa: E402
from avprobe.validate import BadInputError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "resources" / "model_configs"
RATE = 16000


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("built")
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = build_untrained(CONFIGS / name, root / name, seed=0)
        return cache[name]
    return get


def noise(n, seed=0, amp=0.1):
    return (amp * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def write_set(root: Path, clips: dict, rates: dict | None = None) -> Path:
    """An audio manifest of ``{stimulus_id: waveform}`` (float WAVs), labels alternating."""
    (root / "wav").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (sid, wave) in enumerate(clips.items()):
        rate = (rates or {}).get(sid, RATE)
        sf.write(root / "wav" / f"{sid}.wav", np.asarray(wave, np.float32), rate, subtype="FLOAT")
        rows.append({"stimulus_id": sid, "path": f"wav/{sid}.wav", "label": ["sharp", "round"][i % 2]})
    pd.DataFrame(rows).to_parquet(root / "manifest.parquet", index=False)
    return root / "manifest.parquet"


HUBERT = {"family": "hf_audio", "kind": "untrained", "towers": ["audio"], "batch_size": 4}


# ------------------------------------------------------------------ kind 1: degenerate audio
def test_hubert_receptive_field_comes_from_its_config(built):
    from avprobe.models import load_model
    from avprobe.models.base import receptive_field

    adapter = load_model("h", HUBERT, model_dir=built("hubert-tiny"))
    # hubert-tiny: kernels 10, 8, 4, 4; strides 5, 4, 4, 4 → (((4-1)*4+4-1)*4+8-1)*5+10
    assert adapter.min_input_samples() == 345
    assert receptive_field([10, 3, 3, 3, 3, 2, 2], [5, 2, 2, 2, 2, 2, 2]) == 400  # wav2vec2/HuBERT base
    lengths = adapter.model._get_feat_extract_output_lengths(torch.tensor([344, 345]))
    assert lengths.tolist() == [0, 1]


def test_degenerate_clips_are_quarantined_with_the_check_named(built, tmp_path):
    clips = {
        "ok1": noise(RATE, 1), "ok2": noise(RATE // 2, 2), "ok3": noise(RATE, 3),
        "short300": noise(300, 4),          # batched with 1 s clips: was an all-zero vector
        "one": noise(1, 5), "ten": noise(10, 6), "edge344": noise(344, 7),
        "silence": np.zeros(RATE, np.float32),
        "dc": np.full(RATE, 0.25, np.float32),     # a constant offset is no signal either
        "huge": np.full(RATE, 1e30, np.float32) * np.sign(noise(RATE, 8)),
        "big": noise(RATE, 9, amp=1e7),
        "nan": np.where(np.arange(RATE) == 5, np.nan, noise(RATE, 10)).astype(np.float32),
        "low_rate": noise(20, 11),           # a header claiming 2 Hz
        "slow": noise(10, 12),               # 10 samples at 8 kHz → 20 samples at 16 kHz
    }
    manifest = write_set(tmp_path / "set", clips, rates={"low_rate": 2, "slow": 8000})
    out, rej = tmp_path / "emb.parquet", tmp_path / "rejected.parquet"
    summary = extract_embeddings(manifest, "pseudowords", "h", HUBERT, out, model_dir=built("hubert-tiny"),
                                 rejected_path=rej)
    table = pd.read_parquet(rej).set_index("stimulus_id")
    expected = {"short300": "too_short", "one": "too_short", "ten": "too_short", "edge344": "too_short",
                "slow": "too_short", "silence": "silent", "dc": "silent", "huge": "overflow",
                "big": "overflow", "nan": "non_finite", "low_rate": "sample_rate"}
    assert table["check"].to_dict() == expected
    assert "300 samples at 16000 Hz" in table.loc["short300", "reason"]
    assert "needs at least 345" in table.loc["short300", "reason"]
    assert "digital silence" in table.loc["silence", "reason"]
    assert "constant offset" in table.loc["dc", "reason"]
    assert summary["n_items"] == 3 and summary["n_rejected"] == len(expected)
    for name, _ in io.embedding_layers(out):
        ids, x = io.read_layer(out, name)
        assert ids == ["ok1", "ok2", "ok3"]
        assert np.isfinite(x).all() and np.abs(x).sum(1).min() > 0
    # the clip at 345 samples is long enough, and embedded
    manifest = write_set(tmp_path / "edge", {"a": noise(345, 1), "b": noise(RATE, 2)})
    extract_embeddings(manifest, "pseudowords", "h", HUBERT, tmp_path / "e.parquet", model_dir=built("hubert-tiny"))
    ids, x = io.read_layer(tmp_path / "e.parquet", "4")
    assert ids == ["a", "b"] and np.abs(x).sum(1).min() > 0


def test_degenerate_clips_fail_the_job_under_on_bad_input_fail(built, tmp_path):
    manifest = write_set(tmp_path / "set", {"ok": noise(RATE), "short": noise(300)})
    with pytest.raises(BadInputError, match=r"short \(wav/short.wav\): too short for model 'h': 300 samples"):
        extract_embeddings(manifest, "pseudowords", "h", HUBERT, tmp_path / "e.parquet",
                           model_dir=built("hubert-tiny"), on_bad_input="fail")


def test_a_zero_or_non_finite_embedding_is_never_stored(built, tmp_path, monkeypatch):
    """Whatever slips past the input checks: the vector is checked before it is written."""
    from avprobe.models.hf import HFAudioAdapter

    manifest = write_set(tmp_path / "set", {"a": noise(RATE, 1), "b": noise(RATE, 2), "c": noise(RATE, 3)})
    real = HFAudioAdapter._embed

    def broken(self, tower, items, names):
        out = real(self, tower, items, names)
        for i, w in enumerate(items):
            if abs(float(w[0]) - float(noise(RATE, 2)[0])) < 1e-9:
                out["2"][i] = 0.0
            if abs(float(w[0]) - float(noise(RATE, 3)[0])) < 1e-9:
                out["3"][i, 0] = np.nan
        return out

    monkeypatch.setattr(HFAudioAdapter, "_embed", broken)
    rej = tmp_path / "rej.parquet"
    extract_embeddings(manifest, "pseudowords", "h", HUBERT, tmp_path / "e.parquet",
                       model_dir=built("hubert-tiny"), rejected_path=rej)
    table = pd.read_parquet(rej).set_index("stimulus_id")
    assert table["check"].to_dict() == {"b": "degenerate_embedding", "c": "degenerate_embedding"}
    assert "all-zero embedding in layer 2" in table.loc["b", "reason"]
    assert "non-finite embedding in layer 3" in table.loc["c", "reason"]
    assert io.read_layer(tmp_path / "e.parquet", "0")[0] == ["a"]


# ------------------------------------------------------------------ kind 2: degenerate RDM rows
@pytest.mark.parametrize("distance, bad_row", [("cosine", np.zeros(6)), ("correlation", np.full(6, 0.7)),
                                               ("correlation", np.zeros(6))])
def test_degenerate_rows_give_nan_distances_like_rsatoolbox_and_scipy(distance, bad_row):
    from scipy.spatial.distance import pdist

    from avprobe.analysis.rsa import rdm_matrix, upper

    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 6))
    x[2] = bad_row
    ours = upper(rdm_matrix(x, distance))
    assert np.isnan(ours).sum() == 4  # row 2 against the four others, never 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        theirs = pdist(x, distance)
    ok = ~np.isnan(ours)
    np.testing.assert_allclose(ours[ok], theirs[ok], atol=1e-12)
    if bad_row.any():
        # a constant 0.7 minus its mean leaves 1e-16 rounding residue, which scipy and rsatoolbox
        # turn into a distance of 1.0 (the silent value of the issue); ours is NaN, exactly
        return
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    rsatoolbox = pytest.importorskip("rsatoolbox")
    data = x if distance == "correlation" else np.concatenate([x, -x], axis=1)  # cosine as documented
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = rsatoolbox.rdm.calc_rdm(rsatoolbox.data.Dataset(data), method="correlation").dissimilarities[0]
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))


def _labelled_embeddings(tmp_path, x):
    ids = [f"s{i}" for i in range(len(x))]
    man = pd.DataFrame({"stimulus_id": ids, "label": ["sharp", "round"] * (len(x) // 2)})
    man.to_parquet(tmp_path / "manifest.parquet", index=False)
    io.write_embeddings([("0", 0, (ids, x.astype(np.float32)))], tmp_path / "emb.parquet", {})
    return tmp_path / "manifest.parquet", tmp_path / "emb.parquet"


def test_rsa_refuses_a_zero_row_naming_the_stimulus(tmp_path):
    from avprobe.analysis.rsa import run_rsa

    x = np.random.default_rng(0).normal(size=(8, 5))
    x[3] = 0.0
    manifest, emb = _labelled_embeddings(tmp_path, x)
    with pytest.raises(BadInputError, match=r"layer '0' has 1 all-zero embeddings \('s3'\)"):
        run_rsa(manifest, emb, set_name="shapes", model="m", n_bootstrap=10, n_permutations=10)


def test_rsa_refuses_a_constant_row_under_correlation_naming_the_stimulus(tmp_path):
    from avprobe.analysis.rsa import run_rsa

    x = np.random.default_rng(0).normal(size=(8, 5))
    x[5] = 2.5
    manifest, emb = _labelled_embeddings(tmp_path, x)
    with pytest.raises(BadInputError, match=r"layer '0'.*1 constant embedding\(s\) \('s5'\) have no correlation"):
        run_rsa(manifest, emb, set_name="shapes", model="m", cfg={"distance": "correlation"},
                n_bootstrap=10, n_permutations=10)
    # cosine is defined for a constant (non-zero) row: the analysis runs, every value finite
    table = run_rsa(manifest, emb, set_name="shapes", model="m", n_bootstrap=10, n_permutations=10)
    assert len(table) and np.isfinite(table["value"]).all()


# ------------------------------------------------------------------ kind 6: silent empty results
def _unlabelled(tmp_path, extra=None):
    x = np.random.default_rng(1).normal(size=(8, 5))
    manifest, emb = _labelled_embeddings(tmp_path, x)
    man = pd.read_parquet(manifest).drop(columns="label")
    for k, v in (extra or {}).items():
        man[k] = v
    man.to_parquet(manifest, index=False)
    return manifest, emb


def test_rsa_without_a_label_column_names_the_set_and_column(tmp_path):
    from avprobe.analysis.rsa import run_rsa

    manifest, emb = _unlabelled(tmp_path)
    with pytest.raises(BadInputError, match=r"set 'shapes' \(.*manifest.parquet\): the manifest has no column "
                                            r"'label' \(no reference RDM"):
        run_rsa(manifest, emb, tmp_path / "out.parquet", set_name="shapes", model="m",
                n_bootstrap=10, n_permutations=10)
    assert not (tmp_path / "out.parquet").exists()
    # a reference column that never varies is no reference either
    manifest, emb = _unlabelled(tmp_path, {"material": "wood"})
    with pytest.raises(BadInputError, match="no reference RDM — the columns"):
        run_rsa(manifest, emb, set_name="shapes", model="m", n_bootstrap=10, n_permutations=10)


def test_probe_without_a_label_column_names_the_set_and_column(tmp_path):
    from avprobe.analysis.probe import run_probe

    manifest, emb = _unlabelled(tmp_path)
    with pytest.raises(BadInputError, match=r"set 'shapes' \(.*\): the manifest has no column 'label'"):
        run_probe(manifest, emb, tmp_path / "out.parquet", set_name="shapes", model="m",
                  n_bootstrap=10, n_permutations=10)
    assert not (tmp_path / "out.parquet").exists()
    manifest, emb = _unlabelled(tmp_path, {"material": ["wood", "metal"] * 4})
    with pytest.raises(BadInputError, match=r"no column 'colour' \(a target in probe.targets\)"):
        run_probe(manifest, emb, set_name="impacts", model="m", cfg={"targets": ["colour"]},
                  n_bootstrap=10, n_permutations=10)
    # a target with one class only: no result, said so
    manifest, emb = _unlabelled(tmp_path, {"material": "wood"})
    with pytest.raises(BadInputError, match=r"no probe result — every target column \['material'\]"):
        run_probe(manifest, emb, set_name="shapes", model="m", n_bootstrap=10, n_permutations=10)


def test_symbolism_without_a_label_column_names_the_set_and_column(tmp_path):
    from avprobe.analysis.symbolism import run_symbolism

    (tmp_path / "w").mkdir()
    (tmp_path / "i").mkdir()
    wm, we = _labelled_embeddings(tmp_path / "w", np.random.default_rng(2).normal(size=(8, 5)))
    im, ie = _unlabelled(tmp_path / "i")
    with pytest.raises(BadInputError, match=r"set 'shapes' \(.*\): the manifest has no column 'label'"):
        run_symbolism(wm, we, im, ie, model="m", words="pseudoword_text", images="shapes",
                      space="text_image", space_layer="joint", n_permutations=10, n_bootstrap=10)


# ------------------------------------------------------------------ kind 4: images read wrongly
CLIP = {"family": "clip", "kind": "untrained", "towers": ["text", "image"], "batch_size": 4}


def _displayed(h=40, w=24):
    """An asymmetric picture: which way up it is read matters."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([yy * 255 // h, xx * 255 // w, (yy < h // 4) * 255], axis=2).astype(np.uint8)


@pytest.mark.parametrize("orientation, inverse", [(6, "ROTATE_90"), (8, "ROTATE_270"), (3, "ROTATE_180"),
                                                  (2, "FLIP_LEFT_RIGHT")])
def test_exif_orientation_is_applied_at_read_time(tmp_path, orientation, inverse):
    from PIL import Image

    from avprobe.extract import load_image

    shown = _displayed()
    stored = Image.fromarray(shown).transpose(getattr(Image.Transpose, inverse))
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(tmp_path / "photo.png", exif=exif)
    np.testing.assert_array_equal(load_image(tmp_path / "photo.png"), shown)
    stored.save(tmp_path / "photo.jpg", exif=exif, quality=100)
    got = load_image(tmp_path / "photo.jpg")
    assert got.shape == shown.shape and np.abs(got.astype(int) - shown).mean() < 3


def test_a_rotated_photo_embeds_as_displayed(built, tmp_path):
    from PIL import Image

    shown = _displayed(48, 32)
    (tmp_path / "png").mkdir()
    Image.fromarray(shown).save(tmp_path / "png" / "plain.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(shown).transpose(Image.Transpose.ROTATE_90).save(tmp_path / "png" / "rotated.png", exif=exif)
    pd.DataFrame({"stimulus_id": ["plain", "rotated"], "path": ["png/plain.png", "png/rotated.png"],
                  "label": ["sharp", "round"]}).to_parquet(tmp_path / "manifest.parquet", index=False)
    out = tmp_path / "e.parquet"
    extract_embeddings(tmp_path / "manifest.parquet", "shapes", "c", CLIP, out, model_dir=built("clip-tiny"))
    for name, _ in io.embedding_layers(out):
        _, x = io.read_layer(out, name)
        np.testing.assert_array_equal(x[0], x[1])


@pytest.mark.parametrize("config", ["clip-tiny", "vit-tiny", "dinov2-tiny", "siglip-tiny"])
@pytest.mark.parametrize("shape", [(1, 1), (3, 1), (1, 3), (1, 4800), (4, 3)])
def test_image_processors_are_told_channels_last(built, config, shape):
    """The pixel values of an HxWx3 array equal those of the same picture as a PIL image
    (unambiguous), for every image family; guessed, 3xN arrays were read channels-first."""
    from PIL import Image

    from avprobe.models import load_model

    family = {"clip-tiny": "clip", "siglip-tiny": "siglip"}.get(config, "hf_image")
    spec = {"family": family, "kind": "untrained", "towers": ["image"]}
    adapter = load_model("m", spec, model_dir=built(config))
    arr = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    ours = adapter._image_batch([arr])["pixel_values"]
    truth = adapter.image_processor(images=[Image.fromarray(arr)], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(ours, truth, rtol=0, atol=1e-6)


def test_tiny_and_strip_images_are_quarantined(built, tmp_path):
    from PIL import Image

    sizes = {"p1x1": (1, 1), "p3x1": (3, 1), "p1x4800": (1, 4800), "p8x8": (8, 8), "p15x40": (15, 40),
             "strip": (16, 2000), "ok16": (16, 16), "ok_wide": (20, 300), "ok": (64, 48)}
    (tmp_path / "png").mkdir()
    rng = np.random.default_rng(0)
    for sid, (h, w) in sizes.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / "png" / f"{sid}.png")
    pd.DataFrame({"stimulus_id": list(sizes), "path": [f"png/{s}.png" for s in sizes],
                  "label": ["sharp", "round"] * 4 + ["sharp"]}).to_parquet(tmp_path / "manifest.parquet", index=False)
    rej = tmp_path / "rej.parquet"
    out = tmp_path / "e.parquet"
    extract_embeddings(tmp_path / "manifest.parquet", "shapes", "c", CLIP, out, model_dir=built("clip-tiny"),
                       rejected_path=rej)
    table = pd.read_parquet(rej).set_index("stimulus_id")
    assert table["check"].to_dict() == {s: "too_small" for s in ("p1x1", "p3x1", "p1x4800", "p8x8", "p15x40",
                                                                "strip")}
    assert "1x3 pixels: a side is below min_image_size = 16 px" in table.loc["p3x1", "reason"]
    assert "aspect ratio 125:1" in table.loc["strip", "reason"]
    assert io.read_layer(out, "joint")[0] == ["ok16", "ok_wide", "ok"]
    # the threshold is the config's
    extract_embeddings(tmp_path / "manifest.parquet", "shapes", "c", CLIP, out, model_dir=built("clip-tiny"),
                       rejected_path=rej, min_image_size=8)
    assert set(pd.read_parquet(rej)["stimulus_id"]) == {"p1x1", "p3x1", "p1x4800", "strip"}


# ------------------------------------------------------------------ kind 3: longer than the window
AST = {"family": "ast", "kind": "untrained", "towers": ["audio"], "batch_size": 4}


def test_each_audio_family_declares_its_window(built):
    from avprobe.models import load_model

    ast = load_model("a", AST, model_dir=built("ast-tiny"))
    assert ast.native_window_samples() == 63 * 160 + 400  # max_length 64 fbank frames
    fe = ast.feature_extractor
    frames = fe([noise(ast.input_window_samples())], sampling_rate=RATE, return_tensors="np")
    assert frames["input_values"].shape[1] == 64
    hub = load_model("h", HUBERT, model_dir=built("hubert-tiny"))
    assert hub.input_window_samples() == 30 * RATE
    assert load_model("h", {**HUBERT, "max_input_seconds": 2}, model_dir=built("hubert-tiny")).input_window_samples() == 2 * RATE
    clap = load_model("c", {"family": "clap", "kind": "untrained", "towers": ["audio"]}, model_dir=built("clap-tiny"))
    assert clap.input_window_samples() == 32000  # max_length_s 2
    whisper = load_model("w", {"family": "whisper_encoder", "kind": "untrained", "towers": ["audio"]},
                         model_dir=built("whisper-tiny-random"))
    assert whisper.input_window_samples() == whisper.feature_extractor.n_samples
    # a cap can only shorten a native window
    assert load_model("a", {**AST, "max_input_seconds": 100}, model_dir=built("ast-tiny")).input_window_samples() == 10480


def test_a_clip_longer_than_asts_window_is_logged_counted_truncated_or_chunked(built, tmp_path, caplog):
    from avprobe.models import load_model

    window = 10480
    long = noise(3 * window, 1)
    manifest = write_set(tmp_path / "set", {"long": long, "short": noise(window // 2, 2)})
    out = tmp_path / "t.parquet"
    with caplog.at_level(logging.INFO, logger="avprobe"):
        extract_embeddings(manifest, "pseudowords", "a", AST, out, model_dir=built("ast-tiny"))
    assert "1 of 2 clips of pseudowords are longer than a's 0.66 s input window (truncate): long" in caplog.text
    meta = io.embeddings_metadata(out)
    assert meta["n_long_inputs"] == 1 and meta["long_input_ids"] == ["long"] and meta["long_inputs"] == "truncate"
    assert meta["input_window_s"] == pytest.approx(window / RATE)
    adapter = load_model("a", AST, model_dir=built("ast-tiny"))
    first = adapter.embed("audio", [long[:window]], layers=["2"])["2"][0]
    np.testing.assert_array_equal(io.read_layer(out, "2")[1][0], first)
    # chunked: the length-weighted mean of the three windows
    out = tmp_path / "c.parquet"
    extract_embeddings(manifest, "pseudowords", "a", {**AST, "long_inputs": "chunk"}, out, model_dir=built("ast-tiny"))
    parts = adapter.embed("audio", [long[i * window:(i + 1) * window] for i in range(3)], layers=["2"])["2"]
    np.testing.assert_allclose(io.read_layer(out, "2")[1][0], parts.mean(0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(parts.mean(0), first, atol=1e-3)


def test_memory_is_bounded_by_batch_times_window(built, tmp_path, monkeypatch):
    """A 10-minute clip: the model never sees more than batch_size clips of one window."""
    from avprobe.models.hf import HFAudioAdapter

    seen = []
    real = HFAudioAdapter._embed

    def spy(self, tower, items, names):
        seen.append((len(items), max(len(w) for w in items)))
        return real(self, tower, items, names)

    monkeypatch.setattr(HFAudioAdapter, "_embed", spy)
    clips = {"ten_minutes": noise(600 * RATE, 1, amp=0.05), "a": noise(RATE, 2), "b": noise(RATE, 3)}
    manifest = write_set(tmp_path / "set", clips)
    spec = {**HUBERT, "batch_size": 2, "max_input_seconds": 4, "long_inputs": "chunk"}
    out = tmp_path / "e.parquet"
    extract_embeddings(manifest, "pseudowords", "h", spec, out, model_dir=built("hubert-tiny"))
    assert max(n for n, _ in seen) <= 2 and max(s for _, s in seen) == 4 * RATE
    assert sum(n for n, _ in seen) == 2 + 150  # two 1 s clips, 150 windows of 4 s
    assert io.embeddings_metadata(out)["n_long_inputs"] == 1
    ids, x = io.read_layer(out, "4")
    assert ids == list(clips) and np.isfinite(x).all()


def test_absurd_durations_are_quarantined_before_reading(built, tmp_path):
    # a header claiming 1 Hz (16000 samples = 4.4 hours once resampled), and a clip over the limit
    manifest = write_set(tmp_path / "set", {"one_hz": noise(16000, 1), "long": noise(3 * RATE, 2),
                                            "ok": noise(RATE, 3), "ok2": noise(RATE, 4)}, rates={"one_hz": 1})
    rej = tmp_path / "rej.parquet"
    extract_embeddings(manifest, "pseudowords", "h", HUBERT, tmp_path / "e.parquet", model_dir=built("hubert-tiny"),
                       rejected_path=rej, max_audio_seconds=2.5)
    table = pd.read_parquet(rej).set_index("stimulus_id")
    assert table["check"].to_dict() == {"one_hz": "sample_rate", "long": "too_long"}
    assert "sample rate 1 Hz in the header is below 4000 Hz" in table.loc["one_hz", "reason"]
    assert "3.0 s long, above max_audio_seconds = 2.5 s" in table.loc["long", "reason"]
    # a plausible rate whose header still claims hours: too_long at the default limit (600 s)
    manifest = write_set(tmp_path / "set2", {"hours": noise(8000, 1), "ok": noise(RATE, 2)}, rates={"hours": 4000})
    sf.write(tmp_path / "set2" / "wav" / "hours.wav", noise(4000 * 601, 5), 4000, subtype="PCM_16")
    extract_embeddings(manifest, "pseudowords", "h", HUBERT, tmp_path / "e2.parquet", model_dir=built("hubert-tiny"),
                       rejected_path=rej)
    assert pd.read_parquet(rej)["check"].tolist() == ["too_long"]


@pytest.fixture(scope="module")
def fused_clap(tmp_path_factory):
    """clap-tiny with fusion on (enable_fusion, truncation: fusion), built untrained."""
    import json
    import shutil

    root = tmp_path_factory.mktemp("fused")
    cfg = root / "config"
    shutil.copytree(CONFIGS / "clap-tiny", cfg)
    config = json.loads((cfg / "config.json").read_text())
    config["audio_config"]["enable_fusion"] = True
    config["audio_config"]["fusion_type"] = "aff_2d"
    (cfg / "config.json").write_text(json.dumps(config))
    pre = json.loads((cfg / "preprocessor_config.json").read_text())
    pre["truncation"] = "fusion"
    (cfg / "preprocessor_config.json").write_text(json.dumps(pre))
    return build_untrained(cfg, root / "built", seed=0)


def test_fused_clap_flags_only_longer_clips_as_longer(fused_clap):
    from avprobe.models import load_model

    spec = {"family": "clap", "kind": "untrained", "towers": ["audio"], "long_inputs": "chunk"}
    adapter = load_model("f", spec, model_dir=fused_clap)
    assert adapter.model.config.audio_config.enable_fusion
    # the bug: alone, a short clip is flagged as longer by the fusion extractor
    raw = adapter.feature_extractor([noise(RATE, 1)], sampling_rate=RATE, return_tensors="pt")
    assert raw["is_longer"].tolist() == [[True]]
    short, long = noise(RATE, 1), noise(3 * 32000, 2)
    inputs = adapter._audio_inputs([short, noise(RATE // 2, 3), noise(32000, 4)])
    assert inputs["is_longer"].tolist() == [[False], [False], [False]]
    # the joint embedding of a short clip is the model's with is_longer False
    mine = adapter.embed("audio", [short], layers=["joint"])["joint"][0]
    feats = adapter.feature_extractor([short], sampling_rate=RATE, return_tensors="pt")["input_features"]
    with torch.inference_mode():
        out = adapter.model.get_audio_features(input_features=feats, is_longer=torch.tensor([[False]]))
    want = (out if torch.is_tensor(out) else out.pooler_output)[0].numpy()
    np.testing.assert_allclose(mine, want, rtol=1e-5, atol=1e-6)
    with torch.inference_mode():
        out = adapter.model.get_audio_features(input_features=feats, is_longer=torch.tensor([[True]]))
    wrong = (out if torch.is_tensor(out) else out.pooler_output)[0].numpy()
    assert not np.allclose(mine, wrong, atol=1e-4)
    # batch-independent; a clip longer than the window is chunked before the extractor sees it
    both = adapter.embed("audio", [short, long], layers=["joint"])["joint"]
    np.testing.assert_allclose(both[0], mine, rtol=1e-5, atol=1e-6)  # BLAS: batch of 2 vs 1
    assert np.isfinite(both[1]).all()


# ------------------------------------------------------------------ kind 5: corpus import
from test_stimuli import flickr8k  # noqa: E402,F401  (the fixture: a two-image Flickr8k)


def test_a_zero_byte_or_non_audio_wav_in_a_corpus_is_named_and_quarantined(tmp_path, flickr8k, caplog):  # noqa: F811
    from avprobe.stimuli import corpora

    wavs = Path(flickr8k["wav_dir"])
    (wavs / "1000268201_693b08cb0e_0.wav").write_bytes(b"")
    (wavs / "997722733_0cb5439472_1.wav").write_text("<html>404 Not Found</html>\n")
    with caplog.at_level(logging.WARNING):
        assert corpora.check_corpus_config({"stimuli": {"corpora": {"flickr8k": flickr8k}}})["flickr8k"]["captions"] == 4
    assert "stimuli.corpora.flickr8k.wav_dir: " + str(wavs / "1000268201_693b08cb0e_0.wav") in caplog.text
    res = tmp_path / "results"
    out = {k: res / v / "manifest.parquet" for k, v in corpora.corpus_set_names("flickr8k").items()}
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        _, captions, _ = corpora.import_corpus("flickr8k", flickr8k, out["images"], out["captions"], out["caption_text"])
    assert "stimuli.corpora.flickr8k.wav_dir: 2 of 4 caption files are not readable audio" in caplog.text
    assert "997722733_0cb5439472_1.wav" in caplog.text
    assert captions["sample_rate"].isna().tolist() == [True, False, False, True]
    qc = pd.read_parquet(out["captions"].with_name("qc.parquet"))
    assert qc["flags"].tolist()[0] == "unreadable" and qc["flags"].tolist()[3] == "unreadable"
    # extraction quarantines exactly those two, naming why
    rej = tmp_path / "rej.parquet"
    spec = {"family": "logmel", "kind": "baseline", "towers": ["audio"], "n_mels": 16}
    extract_embeddings(out["captions"], "flickr8k_captions", "logmel", spec, tmp_path / "e.parquet", rejected_path=rej)
    table = pd.read_parquet(rej).set_index("stimulus_id")
    assert table["check"].to_dict() == {"1000268201_693b08cb0e-c0": "empty", "997722733_0cb5439472-c1": "unreadable"}
    assert table.loc["997722733_0cb5439472-c1", "reason"].startswith("unreadable audio: Error opening")


# ------------------------------------------------------------------ kind 7: network and weights
_HANGING_HUB = r'''
import os, socket, sys, threading, time
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(50)
accepted = []
threading.Thread(target=lambda: [accepted.append(srv.accept()) for _ in iter(int, 1)], daemon=True).start()
os.environ["HF_ENDPOINT"] = "http://127.0.0.1:%d" % srv.getsockname()[1]
sys.path.insert(0, sys.argv[1])
from avprobe.prefetch import prefetch
start = time.time()
try:
    prefetch({"speech": {"source": "org/model", "kind": "pretrained"}}, sys.argv[2], timeout=1, attempts=2)
except RuntimeError as err:
    print("ERROR", err)
print("SECONDS %.1f CONNECTIONS %d" % (time.time() - start, len(accepted)))
'''


def test_a_hub_that_never_answers_fails_prefetch_in_bounded_time(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                                                            "HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT")}
    env["HF_HOME"] = str(tmp_path / "hf")
    proc = subprocess.run([sys.executable, "-c", _HANGING_HUB, str(ROOT / "workflow" / "scripts"),
                           str(tmp_path / "resolved.json")], env=env, capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("ERROR")]
    assert len(lines) == 1, proc.stdout + proc.stderr
    assert lines[0].startswith("ERROR could not download model 'speech' (org/model@main) from http://127.0.0.1:")
    assert "after 2 tries with a 1 s timeout" in lines[0] and "Run prefetch_models on a machine with internet" in lines[0]
    seconds = float(proc.stdout.split("SECONDS ")[1].split()[0])
    assert seconds < 60
    assert not (tmp_path / "resolved.json").exists()


def test_a_local_folder_without_weights_is_reported_when_the_dag_is_built(built, tmp_path):
    import shutil

    from avprobe import plan

    folder = tmp_path / "hubert"
    shutil.copytree(built("hubert-tiny"), folder)
    assert plan.missing_weights(folder) == []
    (folder / "model.safetensors").unlink()
    spec = {"family": "hf_audio", "kind": "pretrained", "source": str(folder), "towers": ["audio"]}
    with pytest.raises(plan.ConfigError, match=r"models.speech: the local folder '.*hubert' has no weights: missing "
                                               r"model.safetensors or model.safetensors.index.json or pytorch_model.bin"):
        plan.check_local_weights("speech", spec)
    # a sharded checkpoint with a shard missing names the shard
    (folder / "model.safetensors.index.json").write_text(
        '{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}')
    (folder / "model-00001-of-00002.safetensors").write_bytes(b"x")
    assert plan.missing_weights(folder) == ["model-00002-of-00002.safetensors"]
    # through the workflow: a dry run stops before planning anything
    from test_reliability import snakemake

    bad = tmp_path / "bad.yaml"
    (folder / "model.safetensors.index.json").unlink()
    bad.write_text(f"models: {{speech: {{family: hf_audio, source: '{folder}', towers: [audio]}}}}\n")
    proc = snakemake("-n", "--configfile", str(bad), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "models.speech: the local folder" in out and "has no weights" in out, out
    assert "Job stats" not in out


# ------------------------------------------------------------------ kind 8: recovery after damage
def _embeddings_file(tmp_path):
    ids = [f"s{i}" for i in range(8)]
    x = np.random.default_rng(0).normal(size=(8, 64)).astype(np.float32)
    path = tmp_path / "results" / "embeddings" / "shapes" / "m.parquet"
    io.write_embeddings([("0", 0, (ids, x)), ("1", 1, (ids, -x))], path, {"model": "m"})
    man = tmp_path / "manifest.parquet"
    pd.DataFrame({"stimulus_id": ids, "label": ["sharp", "round"] * 4}).to_parquet(man, index=False)
    return path, man


@pytest.mark.parametrize("damage", ["half", "tail", "empty", "garbage"])
def test_a_damaged_embeddings_file_is_named_with_the_command_that_rebuilds_it(tmp_path, damage):
    from avprobe.analysis.rsa import run_rsa

    path, man = _embeddings_file(tmp_path)
    data = path.read_bytes()
    path.write_bytes({"half": data[:len(data) // 2], "tail": data[:-9], "empty": b"",
                      "garbage": b"PAR1" + b"\0" * 4000}[damage])
    expected = (rf"{path}: damaged or truncated file \(.*\)\. Rebuild it: rm '{path}' && "
                rf"snakemake --cores 1 '{path}'")
    for read in (lambda: io.read_layer(path, "0"), lambda: io.embedding_layers(path),
                 lambda: io.embeddings_metadata(path),
                 lambda: run_rsa(man, path, set_name="shapes", model="m", n_bootstrap=5, n_permutations=5)):
        with pytest.raises(io.DamagedFileError, match=expected):
            read()
    with pytest.raises(FileNotFoundError):  # a missing file is not "damaged"
        io.read_layer(tmp_path / "nothing.parquet", "0")


def test_a_damaged_manifest_is_named_too(tmp_path):
    _, man = _embeddings_file(tmp_path)
    man.write_bytes(man.read_bytes()[:100])
    with pytest.raises(io.DamagedFileError, match=rf"{man}: damaged or truncated file"):
        io.read_manifest(man)


def _varied_clips(n=9):
    rng = np.random.default_rng(5)
    return {f"c{i}": noise(int(rng.integers(RATE // 4, 2 * RATE)), i) for i in range(n)}


@pytest.mark.parametrize("n_shards", [2, 3])
def test_a_resumed_sharded_extraction_is_byte_identical_to_an_unsharded_one(built, tmp_path, n_shards):
    """Batches of 3 padded clips (hubert-tiny pads): shards used to batch clips differently at
    their boundaries (≤ 6e-8 apart); now a shard takes whole batches of the same plan."""
    import pyarrow.parquet as pq

    from avprobe.extract import merge_shards

    manifest = write_set(tmp_path / "set", _varied_clips())
    spec = {**HUBERT, "batch_size": 3, "max_input_seconds": 1.2}  # some clips are truncated too
    whole = tmp_path / "whole.parquet"
    extract_embeddings(manifest, "pseudowords", "h", spec, whole, model_dir=built("hubert-tiny"))
    folder = tmp_path / "h.shards"
    folder.mkdir()
    # a writer killed mid-way left its temporary file; the resumed run writes every shard again
    (folder / ".1-of-{}.parquet.x1y2.tmp".format(n_shards)).write_bytes(b"PAR1 half a file")
    paths = []
    for k in range(1, n_shards + 1):
        path = folder / f"{k}-of-{n_shards}.parquet"
        extract_embeddings(manifest, "pseudowords", "h", {**spec, "shards": n_shards}, path,
                           model_dir=built("hubert-tiny"), shard=(k, n_shards))
        paths.append(path)
    merged = tmp_path / "merged.parquet"
    merge_shards(paths, merged, manifest_path=manifest)
    a, b = pq.read_table(whole), pq.read_table(merged)
    assert a.column("stimulus_id").to_pylist() == b.column("stimulus_id").to_pylist()
    assert a.column("embedding").equals(b.column("embedding"))  # every bit
    meta_a, meta_b = io.embeddings_metadata(whole), io.embeddings_metadata(merged)
    assert meta_a["n_long_inputs"] > 0
    for key in ("n_items", "n_long_inputs", "long_input_ids", "input_window_s", "config_hash"):
        assert meta_a[key] == meta_b[key], key
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


def test_shards_take_whole_batches_and_say_when_there_are_too_few(built, tmp_path):
    from avprobe.extract import plan_batches

    manifest = write_set(tmp_path / "set", _varied_clips(5))
    df = io.read_manifest(manifest)
    batches = plan_batches(df, "audio", manifest, 2)
    assert [len(b) for b in batches] == [2, 2, 1]
    assert sorted(np.concatenate(batches).tolist()) == list(range(5))
    with pytest.raises(ValueError, match=r"5 stimuli make 3 batches of 2, which cannot be split into 4 shards of "
                                         r"whole batches; lower `shards` \(or `batch_size`\)"):
        extract_embeddings(manifest, "pseudowords", "h", {**HUBERT, "batch_size": 2, "shards": 4},
                           tmp_path / "x.parquet", model_dir=built("hubert-tiny"), shard=(1, 4))


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparent_pixels_are_read_on_white_as_displayed(tmp_path, mode):
    """A black disc on a transparent background (colour 0 under alpha 0): convert("RGB") alone
    gives a black square."""
    from PIL import Image, ImageDraw

    from avprobe.extract import load_image

    opaque = Image.new("RGB", (40, 40), "white")
    ImageDraw.Draw(opaque).ellipse((8, 8, 31, 31), fill="black")
    rgba = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).ellipse((8, 8, 31, 31), fill=(0, 0, 0, 255))
    img = rgba if mode == "RGBA" else rgba.convert("LA") if mode == "LA" else rgba.convert("P")
    if mode == "P":  # palette with a transparent index, as GIFs and small PNGs store it
        img = Image.new("P", (40, 40), 0)
        img.putpalette([0, 0, 0, 0, 0, 0])
        ImageDraw.Draw(img).ellipse((8, 8, 31, 31), fill=1)
        img.info["transparency"] = 0
    img.save(tmp_path / "disc.png", transparency=0) if mode == "P" else img.save(tmp_path / "disc.png")
    np.testing.assert_array_equal(load_image(tmp_path / "disc.png"), np.asarray(opaque))


def test_loading_a_weightless_local_folder_says_what_it_lacks(built, tmp_path):
    import shutil

    from avprobe.models import load_model
    from avprobe.models.base import ModelUnavailableError

    folder = tmp_path / "hubert"
    shutil.copytree(built("hubert-tiny"), folder)
    (folder / "model.safetensors").unlink()
    # a user's own checkpoint folder, not one the workflow built (those name build_untrained_model)
    for record in ("avprobe_build.json", "avprobe_files.json"):
        (folder / record).unlink(missing_ok=True)
    spec = {"family": "hf_audio", "kind": "pretrained", "source": str(folder), "towers": ["audio"]}
    with pytest.raises(ModelUnavailableError, match=r"the local folder '.*hubert' cannot be loaded .* it holds "
                                                    r"\[.*'config.json'.*\]\. A checkpoint folder needs") as info:
        load_model("speech", spec)
    assert "not a local folder" not in str(info.value)


_RSS = r'''
import resource, sys
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(1)
from avprobe.extract import extract_embeddings
from avprobe import io
extract_embeddings(sys.argv[2], "pseudowords", "h", {"family": "hf_audio", "kind": "untrained", "towers": ["audio"]},
                   sys.argv[3], model_dir=sys.argv[4])
print("META", io.embeddings_metadata(sys.argv[3])["n_long_inputs"])
print("RSS_MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
'''


def test_a_ten_minute_clip_stays_within_memory_by_default(built, tmp_path):
    """The issue's case: 10 minutes through the tiny HuBERT took 9.4 GB; now its first 30 s."""
    import subprocess
    import sys

    manifest = write_set(tmp_path / "set", {"ten_minutes": noise(600 * RATE, 1, amp=0.05), "a": noise(RATE, 2)})
    proc = subprocess.run([sys.executable, "-c", _RSS, str(ROOT / "workflow" / "scripts"), str(manifest),
                           str(tmp_path / "e.parquet"), str(built("hubert-tiny"))],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "META 1" in proc.stdout
    rss = float(proc.stdout.split("RSS_MB ")[1].split()[0])
    assert rss < 2000, rss  # torch itself is a few hundred MB; the clip's attention would be ~9 GB
