"""Reliability under bad input and faults (issue 8): every case asserts the behaviour and message.

* config errors fail ``snakemake -n`` before any job, naming the key and the allowed values;
* unusable clips and images are quarantined (rejected table, log line) or fail fast;
* models: offline weights → one line naming the model and the fix; layer out of range → count;
* analyses: mismatched ids, empty classes, constant layers → clear errors, quarantined ids dropped;
* faults: a SIGKILLed run resumes to the same bytes as an uninterrupted run; writers are atomic;
* provenance: every output's sha256, the config hash and package versions.

The workflow runs are on tests/data/reliability_config.yaml (two baselines, a few stimuli per set):
one uninterrupted run (module fixture) and one that is killed mid-extraction and resumed.
"""

from __future__ import annotations

import ast
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

sf = pytest.importorskip("soundfile")

from avprobe import io, plan, validate  # noqa: E402
from avprobe.extract import extract_embeddings  # noqa: E402
from avprobe.provenance import PACKAGES, provenance_table, sha256_file  # noqa: E402
from workflow_cli import ROOT, SNAKEMAKE, run_snakemake  # noqa: E402
from workflow_cli import copy_workflow as copy_workflow_as  # noqa: E402

CONFIG = ROOT / "tests" / "data" / "reliability_config.yaml"
LOGMEL = {"family": "logmel", "kind": "baseline", "towers": ["audio"], "n_mels": 16, "sample_rate": 16000}
PIXELS = {"family": "pixels", "kind": "baseline", "towers": ["image"], "size": 8}


# ------------------------------------------------------------------------------------ helpers
def snakemake(*args: str, cwd: Path = ROOT, check: bool = True, timeout: int = 600):
    return run_snakemake(*args, cwd=cwd, check=check, timeout=timeout)


def copy_workflow(dest: Path) -> Path:
    """A scratch copy of the workflow whose config.yaml is the reliability config."""
    return copy_workflow_as(dest, CONFIG.read_text())


def last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def file_rows(provenance: pd.DataFrame) -> pd.DataFrame:
    return provenance[~provenance["category"].isin(["package", "config"])].set_index("path")


def visible_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    """One uninterrupted run of the reliability config."""
    work = copy_workflow(tmp_path_factory.mktemp("run_a"))
    snakemake("--cores", "2", cwd=work)
    return work


@pytest.fixture
def run_a_copy(run_a, tmp_path):
    """A private copy of the finished run (results and .snakemake metadata), to break things in."""
    work = tmp_path / "work"
    shutil.copytree(run_a, work, symlinks=True)
    return work


# ------------------------------------------------------------------------------------ 1. config
@pytest.mark.parametrize(
    "override, expected",
    [
        # unknown family: one line naming the key, the closest family and the others
        ("models: {x: {family: hf-audio, towers: [audio]}}",
         ["config models.x.family: 'hf-audio' is not allowed (did you mean 'hf_audio'?)", "'whisper_encoder'"]),
        # wrong type
        ("models: {logmel: {batch_size: big}}",
         ["config models.logmel.batch_size: 'big' is not of type 'integer'"]),
        # missing key
        ("models: {x: {family: pixels}}", ["config models.x: 'towers' is a required property"]),
        # a new top-level switch with a wrong value
        ("on_bad_input: skip", ["config on_bad_input: 'skip' is not allowed", "['quarantine', 'fail']"]),
        # unknown layer name of a baseline, and an index past its layers
        ("models: {pixels: {layers: [rgb, hue]}}",
         ["models.pixels.layers: unknown layer 'hue' for family 'pixels'", "['grey', 'rgb']"]),
        ("models: {logmel: {layers: [5]}}",
         ["models.logmel.layers: index 5 is out of range; family 'logmel' has 2 layers ['mean', 'meanstd']"]),
        # unknown layer name of a transformer family: indices or its named layers
        ("models: {clip-untrained: {layers: [0, final]}}",
         ["models.clip-untrained.layers: unknown layer 'final' for family 'clip'", "selected by index",
          "['joint']"]),
        # a typo'd key would otherwise be ignored silently
        ("models: {logmel: {layer: [mean]}}",
         ["models.logmel: unknown key 'layer' (did you mean 'layers'?)", "'batch_size'"]),
    ],
    ids=["family", "type", "missing", "on_bad_input", "layer-name", "layer-index", "hf-layer-name", "typo"],
)
def test_bad_config_fails_dry_run_naming_key_and_allowed_values(tmp_path, override, expected):
    bad = tmp_path / "bad.yaml"
    bad.write_text(override + "\n")
    proc = snakemake("-n", "--configfile", str(bad), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    for text in expected:
        assert text in out, f"{text!r} not in:\n{out}"
    assert "Job stats" not in out  # nothing was planned, let alone run


# ------------------------------------------------------------------------------------ 2. stimuli
def _tone(seconds: float, rate: int, channels: int = 1, f0: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = (0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


@pytest.fixture
def audio_set(tmp_path):
    """A pseudowords manifest: three good clips and one of each kind of bad clip."""
    root = tmp_path / "pseudowords"
    (root / "audio").mkdir(parents=True)
    rows = []

    def add(sid, writer=None, rate=16000, manifest_rate=None, rel=None):
        rel = rel or f"audio/{sid}.wav"
        if writer is not None:
            writer(root / rel)
        rows.append({"stimulus_id": sid, "path": rel, "label": ["sharp", "round"][len(rows) % 2],
                     "sample_rate": manifest_rate or rate})

    for i in range(3):
        add(f"good{i}", lambda p, i=i: sf.write(p, _tone(0.4, 16000, f0=200 + 50 * i), 16000, subtype="FLOAT"))
    # a 22.05 kHz clip whose manifest says so is fine: the model resamples it
    add("good_22k", lambda p: sf.write(p, _tone(0.4, 22050), 22050, subtype="FLOAT"), rate=22050)

    def truncated(p):
        sf.write(p, _tone(0.5, 16000), 16000, subtype="FLOAT")
        os.truncate(p, p.stat().st_size - 6000)

    def with_value(value):
        def write(p):
            x = _tone(0.4, 16000)
            x[100:110] = value
            sf.write(p, x, 16000, subtype="FLOAT")
        return write

    add("truncated", truncated)
    add("empty", lambda p: p.write_bytes(b""))
    add("no_samples", lambda p: sf.write(p, np.zeros(0, np.float32), 16000, subtype="FLOAT"))
    add("nan", with_value(np.nan))
    add("inf", with_value(np.inf))
    add("stereo", lambda p: sf.write(p, _tone(0.4, 16000, channels=2), 16000, subtype="FLOAT"))
    add("rate_mismatch", lambda p: sf.write(p, _tone(0.4, 22050), 22050, subtype="FLOAT"), manifest_rate=16000)
    add("garbage", lambda p: p.write_bytes(b"this is not a wav file at all" * 20))
    add("missing", None)
    manifest = root / "manifest.parquet"
    pd.DataFrame(rows).to_parquet(manifest, index=False)
    return manifest


AUDIO_REJECTED = {
    "truncated": ("truncated", "truncated WAV: the data chunk declares 32000 bytes but the file holds 26000"),
    "empty": ("empty", "empty file (0 bytes)"),
    "no_samples": ("no_samples", "no samples (0 frames)"),
    "nan": ("non_finite", "10 of 6400 samples are NaN or Inf"),
    "inf": ("non_finite", "10 of 6400 samples are NaN or Inf"),
    "stereo": ("channels", "2 channels, mono expected (set `multichannel_audio: downmix`"),
    "rate_mismatch": ("sample_rate", "sample rate 22050 Hz in the file but 16000 Hz in the manifest's sample_rate column"),
    "garbage": ("unreadable", "unreadable audio: Error opening"),
    "missing": ("missing", "no file "),
}


def test_bad_clips_are_quarantined_and_the_rest_embedded(audio_set, tmp_path, caplog):
    out = tmp_path / "emb" / "pseudowords" / "logmel.parquet"
    rejected_file = validate.rejected_path(out)
    caplog.set_level("INFO", logger="avprobe")
    summary = extract_embeddings(audio_set, "pseudowords", "logmel", LOGMEL, out, rejected_path=rejected_file,
                                 multichannel_audio="quarantine")
    assert rejected_file == tmp_path / "emb" / "pseudowords" / "rejected" / "logmel.parquet"
    rejected = pd.read_parquet(rejected_file)
    assert list(rejected.columns) == ["stimulus_id", "path", "check", "reason"]
    got = {r.stimulus_id: (r.check, r.reason) for r in rejected.itertuples()}
    assert set(got) == set(AUDIO_REJECTED)
    for sid, (check, reason) in AUDIO_REJECTED.items():
        assert got[sid][0] == check, (sid, got[sid])
        assert reason in got[sid][1], (sid, got[sid])
    assert rejected.set_index("stimulus_id").loc["missing", "path"] == "audio/missing.wav"
    # the rest of the set is embedded, in manifest order
    ids, x = io.read_layer(out, "mean")
    assert ids == ["good0", "good1", "good2", "good_22k"] and np.isfinite(x).all()
    assert summary["n_items"] == 4 and summary["n_rejected"] == len(AUDIO_REJECTED)
    assert f"quarantined {len(AUDIO_REJECTED)} of 13 stimuli of pseudowords" in caplog.text
    assert "4 items in" in caplog.text and f"; {len(AUDIO_REJECTED)} rejected" in caplog.text


def test_on_bad_input_fail_stops_naming_every_bad_clip(audio_set, tmp_path):
    out = tmp_path / "logmel.parquet"
    with pytest.raises(validate.BadInputError) as err:
        extract_embeddings(audio_set, "pseudowords", "logmel", LOGMEL, out, rejected_path=tmp_path / "r.parquet",
                           on_bad_input="fail", multichannel_audio="quarantine")
    msg = str(err.value)
    assert f"{len(AUDIO_REJECTED)} of 13 stimuli are unusable (on_bad_input: fail)" in msg
    assert "truncated (audio/truncated.wav): truncated WAV" in msg and "nan (audio/nan.wav): 10 of 6400" in msg
    assert not out.exists() and not (tmp_path / "r.parquet").exists()


def test_downmix_switch_keeps_stereo_clips(audio_set, tmp_path):
    df = io.read_manifest(audio_set)
    kept, rejected = validate.screen_stimuli(df, "audio", audio_set, multichannel_audio="downmix")
    assert "stereo" in set(kept["stimulus_id"]) and "stereo" not in set(rejected["stimulus_id"])
    assert len(rejected) == len(AUDIO_REJECTED) - 1


def test_a_set_with_no_usable_stimulus_fails(audio_set, tmp_path):
    df = io.read_manifest(audio_set)
    bad = df[df["stimulus_id"].isin(["empty", "nan"])]
    with pytest.raises(validate.BadInputError, match="every one of the 2 stimuli is unusable"):
        validate.screen_stimuli(bad, "audio", audio_set)


@pytest.fixture
def image_set(tmp_path):
    from PIL import Image

    root = tmp_path / "shapes"
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []

    def add(sid, make):
        rel = f"images/{sid}.png"
        make(root / rel)
        rows.append({"stimulus_id": sid, "path": rel, "label": ["sharp", "round"][len(rows) % 2]})

    noise = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    add("rgb", lambda p: Image.fromarray(noise).save(p))
    add("rgba", lambda p: Image.fromarray(np.dstack([noise, noise[:, :, :1]])).save(p))
    add("grey", lambda p: Image.fromarray(noise[:, :, 0]).save(p))
    add("palette", lambda p: Image.fromarray(noise).convert("P", palette=Image.Palette.ADAPTIVE).save(p))

    def truncated(p):
        Image.fromarray(noise).save(p)
        os.truncate(p, p.stat().st_size // 2)

    add("truncated", truncated)
    add("garbage", lambda p: p.write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes()))
    add("empty", lambda p: p.write_bytes(b""))
    add("deep", lambda p: Image.fromarray((noise[:, :, 0].astype(np.uint16) * 257)).save(p))
    manifest = root / "manifest.parquet"
    pd.DataFrame(rows).to_parquet(manifest, index=False)
    return manifest


def test_bad_images_are_quarantined_convertible_modes_kept(image_set, tmp_path, caplog):
    out = tmp_path / "shapes" / "pixels.parquet"
    caplog.set_level("INFO", logger="avprobe")
    extract_embeddings(image_set, "shapes", "pixels", PIXELS, out, rejected_path=validate.rejected_path(out))
    rejected = pd.read_parquet(validate.rejected_path(out)).set_index("stimulus_id")
    assert dict(rejected["check"]) == {"truncated": "unreadable", "garbage": "unreadable", "empty": "empty",
                                       "deep": "mode"}
    assert "unreadable image: image file is truncated" in rejected.loc["truncated", "reason"]
    assert "unreadable image: cannot identify image file" in rejected.loc["garbage", "reason"]
    assert "has no faithful 8-bit RGB conversion" in rejected.loc["deep", "reason"]
    ids, _ = io.read_layer(out, "rgb")
    assert ids == ["rgb", "rgba", "grey", "palette"]  # palette, greyscale and RGBA are converted
    assert "quarantined 4 of 8 stimuli of shapes" in caplog.text


def test_empty_text_is_quarantined(tmp_path):
    df = pd.DataFrame({"stimulus_id": ["a", "b", "c"], "text": ["kiki", "  ", None]})
    kept, rejected = validate.screen_stimuli(df, "text", tmp_path / "manifest.parquet")
    assert kept["stimulus_id"].tolist() == ["a"]
    assert rejected[["stimulus_id", "check"]].values.tolist() == [["b", "empty_text"], ["c", "empty_text"]]


def test_workflow_quarantines_a_corrupt_clip_and_analyses_go_on(run_a_copy):
    work = run_a_copy
    manifest = pd.read_parquet(work / "results/stimuli/pseudowords/manifest.parquet")
    victim = manifest[~manifest["is_reference"]].iloc[0]
    clip = work / "results/stimuli/pseudowords" / victim["path"]
    os.truncate(clip, clip.stat().st_size - 2000)
    targets = ["results/tables/rsa/pseudowords/logmel.parquet", "results/tables/probe/pseudowords/logmel.parquet"]
    snakemake("--cores", "2", "--forcerun", "extract_embeddings", "--", *targets, cwd=work)

    rejected = pd.read_parquet(work / "results/embeddings/pseudowords/rejected/logmel.parquet")
    assert rejected["stimulus_id"].tolist() == [victim["stimulus_id"]]
    assert rejected["check"].tolist() == ["truncated"]
    log = (work / "logs/embeddings/pseudowords/logmel.log").read_text()
    assert f"quarantined 1 of {len(manifest)} stimuli of pseudowords" in log and "; 1 rejected" in log
    ids, _ = io.read_layer(work / "results/embeddings/pseudowords/logmel.parquet", "mean")
    assert len(ids) == len(manifest) - 1 and victim["stimulus_id"] not in ids
    assert "1 quarantined stimuli" in (work / "logs/analysis/rsa/pseudowords/logmel.log").read_text()
    for target in targets:
        table = pd.read_parquet(work / target)
        assert len(table) and table["value"].notna().all()
    rsa = pd.read_parquet(work / targets[0])
    assert (rsa["n"] == (~manifest["is_reference"]).sum() - 1).all()

    # the switch: fail fast, the reason in the job log's last line
    proc = snakemake("--cores", "1", "--forcerun", "extract_embeddings", "--config", "on_bad_input=fail", "--",
                     "results/embeddings/pseudowords/logmel.parquet", cwd=work, check=False)
    assert proc.returncode != 0
    line = last_line(work / "logs/embeddings/pseudowords/logmel.log")
    assert line.startswith("avprobe.validate.BadInputError: pseudowords")
    assert f"1 of {len(manifest)} stimuli are unusable (on_bad_input: fail): {victim['stimulus_id']}" in line
    assert "truncated WAV" in line


# ------------------------------------------------------------------------------------ 3. models
def test_offline_hub_model_fails_with_one_line_naming_model_and_fix(run_a_copy):
    work = run_a_copy
    (work / "ghost.yaml").write_text(
        "models: {ghost: {family: hf_text, kind: pretrained, source: avprobe-test/no-such-model, towers: [text]}}\n")
    target = "results/embeddings/pseudoword_text/ghost.parquet"
    # without a cache the prefetch job stops first
    proc = snakemake("--cores", "1", "--configfile", "ghost.yaml", "--", target, cwd=work, check=False)
    assert proc.returncode != 0
    log_text = (work / "logs/models/prefetch_ghost.log").read_text()
    assert "Traceback" not in log_text and "Traceback" not in proc.stdout + proc.stderr
    line = last_line(work / "logs/models/prefetch_ghost.log")
    assert "could not download model 'ghost' (avprobe-test/no-such-model@main)" in line
    assert "Run prefetch_models on a machine with internet access" in line
    # only the model asked for is fetched (the config's other hub models are not touched)
    assert not list((work / "logs/models").glob("prefetch_models.log"))
    # prefetched elsewhere, but not in this machine's cache: the extraction job says so
    (work / "results/models/prefetched").mkdir(parents=True, exist_ok=True)
    (work / "results/models/prefetched/ghost.json").write_text('{"ghost": {"source": "avprobe-test/no-such-model"}}')
    proc = snakemake("--cores", "1", "--configfile", "ghost.yaml", "--", target, cwd=work, check=False)
    assert proc.returncode != 0
    line = last_line(work / "logs/embeddings/pseudoword_text/ghost.log")
    assert line.startswith("avprobe.models.base.ModelUnavailableError: model 'ghost': cannot load "
                           "'avprobe-test/no-such-model'")
    assert "Fix: run the `prefetch_models` rule once on a machine with internet, or set HF_HOME" in line
    assert not (work / target).exists()


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    pytest.importorskip("torch")
    from avprobe.models.build import build_untrained

    return build_untrained(ROOT / "resources/model_configs/clip-tiny", tmp_path_factory.mktemp("clip") / "clip", 0)


def test_layer_out_of_range_names_the_models_layer_count(clip_dir, tmp_path):
    manifest = tmp_path / "pseudoword_text" / "manifest.parquet"
    manifest.parent.mkdir()
    pd.DataFrame({"stimulus_id": ["a", "b"], "text": ["kiki", "bouba"]}).to_parquet(manifest)
    spec = {"family": "clip", "kind": "untrained", "towers": ["text", "image"], "layers": [0, 99]}
    with pytest.raises(ValueError) as err:
        extract_embeddings(manifest, "pseudoword_text", "clip-untrained", spec, tmp_path / "x.parquet",
                           model_dir=clip_dir)
    assert str(err.value).startswith(
        "model 'clip-untrained': layers [0, 99] do not fit its text tower, which has 5 numbered layers "
        "(indices 0..4 or -5..-1) and the named layers ['joint'] [layer index 99 out of range")
    assert "Fix models.clip-untrained.layers in the config." in str(err.value)
    # a baseline (also checked when the workflow is parsed): its layers are all named
    from avprobe.extract import _select_layers
    from avprobe.models import load_model

    with pytest.raises(ValueError, match=r"its image tower, which has 2 layers \['grey', 'rgb'\] \(indices 0..1\)"):
        _select_layers(load_model("pixels", PIXELS), "pixels", "image", [3])


# ------------------------------------------------------------------------------------ 4. analyses
def _write_set(root: Path, ids, labels, x_by_layer, *, extra=None, reference=None) -> tuple[Path, Path]:
    root.mkdir(parents=True, exist_ok=True)
    man = pd.DataFrame({"stimulus_id": ids, "label": labels, "word": ids,
                        "is_reference": reference if reference is not None else [False] * len(ids),
                        **(extra or {})})
    manifest = root / "manifest.parquet"
    man.to_parquet(manifest, index=False)
    emb = root / "model.parquet"
    layers = [(name, k, (list(layer_ids), x)) for k, (name, (layer_ids, x)) in enumerate(x_by_layer.items())]
    io.write_embeddings(layers, emb, {"model": "m"})
    return manifest, emb


@pytest.fixture
def labelled(tmp_path):
    rng = np.random.default_rng(1)
    ids = [f"s{i}" for i in range(12)]
    labels = ["sharp", "round"] * 6
    return tmp_path, ids, labels, rng


def _rsa(manifest, emb):
    from avprobe.analysis.rsa import run_rsa

    return run_rsa(manifest, emb, set_name="s", model="m", n_bootstrap=10, n_permutations=9)


def _probe(manifest, emb):
    from avprobe.analysis.probe import run_probe

    return run_probe(manifest, emb, set_name="s", model="m", cfg={"folds": 2, "C": [1.0]}, n_bootstrap=10,
                     n_permutations=9)


def test_analyses_reject_embeddings_of_unknown_stimuli(labelled):
    root, ids, labels, rng = labelled
    x = rng.normal(size=(13, 4))
    manifest, emb = _write_set(root, ids, labels, {"0": (ids + ["stranger"], x)})
    for run in (_rsa, _probe):
        with pytest.raises(validate.BadInputError, match=r"1 embedded stimuli are not in the manifest, e\.g\. "
                                                          r"'stranger'; the embeddings are stale or from another set"):
            run(manifest, emb)


def test_analyses_reject_stimuli_missing_from_embeddings_unless_quarantined(labelled):
    root, ids, labels, rng = labelled
    x = rng.normal(size=(11, 4))
    manifest, emb = _write_set(root, ids, labels, {"0": (ids[:11], x), "1": (ids[:11], x ** 2)})
    for run in (_rsa, _probe):
        with pytest.raises(validate.BadInputError, match=r"1 manifest stimuli have no embedding and are not in the "
                                                          r"rejected table .*rejected/model\.parquet, e\.g\. 's11'"):
            run(manifest, emb)
    # quarantined by the extraction: dropped, and the tables are complete
    validate.write_rejected(pd.DataFrame({"stimulus_id": ["s11"], "path": ["a/s11.wav"], "check": ["empty"],
                                          "reason": ["empty file (0 bytes)"]}), validate.rejected_path(emb))
    rsa, probe = _rsa(manifest, emb), _probe(manifest, emb)
    assert (rsa["n"] == 11).all() and rsa["value"].notna().all() and set(rsa["layer"]) == {"0", "1"}
    assert (probe["n"] == 11).all() and probe["value"].notna().all()


def test_analyses_reject_a_class_with_no_members(labelled):
    root, ids, labels, rng = labelled
    # the only 'round' stimuli are reference words: no round member is left to analyse
    reference = [lab == "round" for lab in labels]
    manifest, emb = _write_set(root, ids, labels, {"0": (ids, rng.normal(size=(12, 4)))}, reference=reference)
    for run in (_rsa, _probe):
        with pytest.raises(validate.BadInputError, match=r"class 'round' of column 'label' has no members "
                                                          r"\(counts: \{'sharp': 6, 'round': 0\}"):
            run(manifest, emb)


def test_analyses_reject_constant_embeddings(labelled):
    root, ids, labels, rng = labelled
    manifest, emb = _write_set(root, ids, labels, {"0": (ids, rng.normal(size=(12, 4))),
                                                   "1": (ids, np.ones((12, 4)))})
    for run in (_rsa, _probe):
        with pytest.raises(validate.BadInputError, match=r"layer '1' is constant — all 12 embeddings are identical"):
            run(manifest, emb)


def test_symbolism_and_retrieval_validate_both_inputs(tmp_path):
    from avprobe.analysis.retrieval import run_retrieval
    from avprobe.analysis.symbolism import run_symbolism

    rng = np.random.default_rng(2)
    words = [f"w{i}" for i in range(8)]
    shapes = [f"i{i}" for i in range(6)]
    wm, we = _write_set(tmp_path / "words", words, ["sharp", "round"] * 4, {"joint": (words, rng.normal(size=(8, 4)))})
    im, ie = _write_set(tmp_path / "shapes", shapes, ["sharp"] * 6, {"joint": (shapes, rng.normal(size=(6, 4)))})
    with pytest.raises(validate.BadInputError, match=r"shapes/manifest\.parquet: class 'round' of column 'label'"):
        run_symbolism(wm, we, im, ie, model="m", words="pseudoword_text", images="shapes", n_permutations=9,
                      n_bootstrap=5, space="text_image", space_layer="joint")
    # retrieval: a gallery image without an embedding that nobody quarantined
    caps = [f"c{i}" for i in range(6)]
    qm, qe = _write_set(tmp_path / "caps", caps, ["sharp"] * 6, {"joint": (caps, rng.normal(size=(6, 4)))},
                        extra={"image_id": shapes})
    gm, ge = _write_set(tmp_path / "gallery", shapes, ["sharp"] * 6, {"joint": (shapes[:5], rng.normal(size=(5, 4)))})
    with pytest.raises(validate.BadInputError, match=r"1 manifest stimuli have no embedding .* e\.g\. 'i5'"):
        run_retrieval(qm, qe, gm, ge, name="r", mode="text", model="m", queries="caption_text", gallery="scenes",
                      n_bootstrap=5)


# ------------------------------------------------------------------------------------ 5. faults
def test_atomic_path_leaves_nothing_that_looks_complete(tmp_path):
    """SIGKILL inside a writer leaves only a hidden temporary file; an exception leaves nothing."""
    target = tmp_path / "out" / "table.parquet"
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT / 'workflow' / 'scripts')!r})
        from avprobe.io import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(b"PAR1" + b"x" * 100000)
                fh.flush()
                print("writing", flush=True)
                time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not target.exists()
    leftovers = list(target.parent.iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".table.parquet.") and leftovers[0].name.endswith(".tmp")
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash")
    # the next writer removed the killed one's leftover; its own went with the exception
    assert not target.exists() and len(list(target.parent.iterdir())) == 0
    io.write_parquet(pd.DataFrame({"a": [1, 2]}), target)
    assert pd.read_parquet(target)["a"].tolist() == [1, 2]
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600


#: Writers that make their own temporary name and rename (not through io.atomic_path).
ATOMIC_BY_HAND = {
    ("avprobe/figures/style.py", "_atomic_savefig"),  # mkstemp + os.replace
    ("avprobe/models/build.py", "write_marker"),  # called inside staged_folder only
    ("avprobe/runtime.py", "_log_file"),  # job logs, written as the job runs
}


#: Context managers under which writes are safe: a temporary file renamed when complete, or a
#: temporary folder moved in with config.json last (avprobe.models.build.staged_folder).
PROTECTING = {"atomic_path", "staged_folder"}


def _unprotected_writes(path: Path) -> list[tuple[str, int, str]]:
    def name(f):
        return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None

    def mode(call, pos):
        node = call.args[pos] if len(call.args) > pos else next((k.value for k in call.keywords if k.arg == "mode"), None)
        return node.value if isinstance(node, ast.Constant) else ""

    def writes(call):
        n = name(call.func)
        if isinstance(call.func, ast.Attribute) and n in {
                "to_parquet", "to_csv", "savefig", "save", "write_text", "write_bytes", "write_table", "savez",
                "savez_compressed", "save_pretrained", "to_json"}:
            return True
        if n == "write" and isinstance(call.func, ast.Attribute) and name(call.func.value) in ("sf", "soundfile"):
            return True
        if n in ("open", "SoundFile"):
            return any(c in str(mode(call, 1)) for c in "wax")
        return n == "ParquetWriter"

    found, stack, funcs = [], [], []

    class Visitor(ast.NodeVisitor):
        def visit_FunctionDef(self, node):
            funcs.append(node.name)
            self.generic_visit(node)
            funcs.pop()

        visit_AsyncFunctionDef = visit_FunctionDef

        def visit_With(self, node):
            for item in node.items:
                self.visit(item)
            stack.append(any(isinstance(i.context_expr, ast.Call) and name(i.context_expr.func) in PROTECTING
                             for i in node.items))
            for stmt in node.body:
                self.visit(stmt)
            stack.pop()

        def visit_Call(self, node):
            if writes(node) and not any(stack):
                found.append((funcs[-1] if funcs else "<module>", node.lineno, ast.unparse(node)[:70]))
            self.generic_visit(node)

    Visitor().visit(ast.parse(path.read_text()))
    return found


def test_every_writer_goes_through_a_temporary_name():
    scripts = ROOT / "workflow" / "scripts"
    offenders = []
    for path in sorted(scripts.rglob("*.py")):
        rel = path.relative_to(scripts).as_posix()
        for func, line, code in _unprotected_writes(path):
            if (rel, func) not in ATOMIC_BY_HAND:
                offenders.append(f"{rel}:{line} in {func}: {code}")
    assert not offenders, "writes outside `with io.atomic_path(...)`:\n" + "\n".join(offenders)


def test_killed_run_resumes_to_the_bytes_of_an_uninterrupted_run(run_a, tmp_path):
    """SIGKILL the whole snakemake process group while an extraction job runs, resume, compare."""
    work = copy_workflow(tmp_path / "run_b")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with open(tmp_path / "killed.log", "w") as out:
        proc = subprocess.Popen([SNAKEMAKE, "--cores", "2"], cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        deadline = time.monotonic() + 400
        started = []
        while not started and time.monotonic() < deadline and proc.poll() is None:
            started = sorted((work / "logs" / "embeddings").glob("*/*.log"))
            time.sleep(0.02)
        assert started, "no extraction job started"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    for _ in range(100):  # every process of the group is gone
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("processes of the killed run survive")
    job = started[0]
    killed_output = work / "results/embeddings" / job.parent.name / f"{job.stem}.parquet"
    assert not killed_output.exists(), "the extraction finished before the kill; the test proves nothing"
    assert list((work / ".snakemake" / "incomplete").iterdir()), "snakemake recorded no running job"
    # nothing visible is partial: every Parquet, WAV and PNG under results/ opens
    for f in visible_files(work / "results"):
        if f.suffix == ".parquet":
            pq.read_metadata(f)
        elif f.suffix == ".wav":
            sf.info(str(f))
        elif f.suffix == ".png":
            from PIL import Image

            with Image.open(f) as img:
                img.load()
    # a SIGKILLed snakemake leaves its lock; snakemake names the fix
    proc = snakemake("--cores", "2", "--rerun-incomplete", cwd=work, check=False)
    assert proc.returncode != 0 and "--unlock" in proc.stdout + proc.stderr
    snakemake("--unlock", cwd=work)
    snakemake("--cores", "2", "--rerun-incomplete", cwd=work)
    assert killed_output.exists()

    # the resumed run and the uninterrupted one: same files, same bytes
    a = file_rows(pd.read_parquet(run_a / plan.PROVENANCE))
    b = file_rows(pd.read_parquet(work / plan.PROVENANCE))
    assert sorted(a.index) == sorted(b.index)
    differ = [p for p in a.index if a.loc[p, "sha256"] != b.loc[p, "sha256"]]
    assert not differ, f"files differ between the runs: {differ}"
    assert set(a["category"]) >= {"stimuli", "embeddings", "rejected", "tables", "figures"}
    for table in sorted((run_a / "results/tables").rglob("*.parquet")):  # and, read back, equal tables
        pd.testing.assert_frame_equal(pd.read_parquet(table), pd.read_parquet(work / table.relative_to(run_a)))
    config_a = pd.read_parquet(run_a / plan.PROVENANCE).query("category == 'config'")["sha256"].tolist()
    config_b = pd.read_parquet(work / plan.PROVENANCE).query("category == 'config'")["sha256"].tolist()
    assert config_a == config_b and len(config_a[0]) == 16


# ------------------------------------------------------------------------------------ 6. provenance
def test_provenance_lists_every_output_with_hashes_and_versions(run_a):
    table = pd.read_parquet(run_a / plan.PROVENANCE)
    files = file_rows(table)
    on_disk = {f.relative_to(run_a).as_posix() for f in visible_files(run_a / "results")} - {plan.PROVENANCE}
    assert set(files.index) == on_disk
    for path in sorted(on_disk)[::7]:
        assert files.loc[path, "sha256"] == sha256_file(run_a / path)
        assert files.loc[path, "bytes"] == (run_a / path).stat().st_size
    for rel in ("results/embeddings/pseudowords/logmel.parquet", "results/embeddings/shapes/pixels.parquet"):
        assert files.loc[rel, "category"] == "embeddings" and files.loc[rel, "n_rejected"] == 0
        assert files.loc[rel, "n_rows"] == pq.read_metadata(run_a / rel).num_rows
    assert files.loc["results/embeddings/pseudowords/rejected/logmel.parquet", "category"] == "rejected"
    assert (table["config_hash"] == table.loc[table["category"] == "config", "sha256"].iloc[0]).all()
    packages = table[(table["category"] == "package") & (table["source"] == "job")].set_index("path")["version"]
    for pkg in ("torch", "transformers", "numpy", "pandas", "scikit-learn", "snakemake", "espeakng-loader",
                "python"):
        assert pkg in packages.index and isinstance(packages[pkg], str), pkg
    assert set(PACKAGES) <= set(packages.index)
    workflow = table[(table["category"] == "package") & (table["source"] == "workflow")]
    assert "snakemake" in set(workflow["path"])
    log = (run_a / "logs/analysis/provenance.log").read_text()
    assert "0 stimuli quarantined in all" in log


def test_provenance_reports_rejected_counts(tmp_path):
    emb = tmp_path / "results/embeddings/pseudowords/m.parquet"
    io.write_embeddings([("0", 0, (["a", "b"], np.eye(2, dtype=np.float32)))], emb, {"versions": {"torch": "9"}})
    validate.write_rejected(pd.DataFrame({"stimulus_id": ["c"], "path": ["c.wav"], "check": ["empty"],
                                          "reason": ["empty file (0 bytes)"]}), validate.rejected_path(emb))
    stim = tmp_path / "results/stimuli/pseudowords"
    (stim / "audio").mkdir(parents=True)
    (stim / "audio/a.wav").write_bytes(b"RIFF")
    (stim / "audio/.a.wav.123.tmp").write_bytes(b"partial")  # a killed writer's leftover: not listed
    table = provenance_table([emb, validate.rejected_path(emb)], config_hash="0123456789abcdef")
    files = file_rows(table)
    assert files.loc[str(emb), "n_rejected"] == 1 and files.loc[str(emb), "n_rows"] == 2
    assert files.loc[str(validate.rejected_path(emb)), "n_rejected"] == 1
    assert files.loc[str(stim / "audio/a.wav"), "sha256"] == hashlib.sha256(b"RIFF").hexdigest()
    assert not any(".tmp" in p for p in files.index)
    extraction = table[(table["category"] == "package") & (table["source"] == "extraction")]
    assert extraction.set_index("path")["version"].to_dict() == {"torch": "9"}


def test_long_jobs_report_progress_on_the_console_not_only_in_their_log():
    import io as stdio

    from avprobe.runtime import Progress

    console = stdio.StringIO()
    with Progress(10, "hubert/pseudowords", unit="clip", interval=0.0, console=console) as bar:
        for _ in range(10):
            bar.update()
    lines = console.getvalue().splitlines()
    assert lines[0].startswith("[avprobe] hubert/pseudowords: 1/10 clips (10 %),") and "s left" in lines[0]
    assert len(lines) == 10 and lines[-1].startswith("[avprobe] hubert/pseudowords: done, 10 clips in")
    quiet = stdio.StringIO()
    with Progress(3, "short", interval=3600.0, console=quiet) as bar:
        bar.update(3)
    assert quiet.getvalue() == ""  # a short job stays quiet on the console
