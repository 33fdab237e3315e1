"""Embedding extraction end to end on tiny manifests (audio, image, text)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
sf = pytest.importorskip("soundfile")

from avprobe import io  # noqa: E402
from avprobe.extract import extract_embeddings  # noqa: E402
from avprobe.models import load_model  # noqa: E402
from avprobe.models.build import build_untrained  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "resources" / "model_configs"
SCRIPTS = ROOT / "workflow" / "scripts"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("built")
    return {c: build_untrained(CONFIGS / c, root / c, seed=0) for c in ("hubert-tiny", "clip-tiny")}


@pytest.fixture(scope="module")
def stimuli(tmp_path_factory):
    """Manifests for an audio, an image and a text set; lengths deliberately out of order."""
    from PIL import Image

    root = tmp_path_factory.mktemp("stimuli")
    rng = np.random.default_rng(0)
    # audio: five clips, lengths not sorted, one at 22.05 kHz and one in stereo
    (root / "pseudowords" / "wav").mkdir(parents=True)
    rows = []
    for i, (dur, rate) in enumerate([(0.9, 16000), (0.3, 16000), (1.4, 22050), (0.5, 16000), (0.7, 16000)]):
        n = int(dur * rate)
        wave = (0.2 * np.sin(2 * np.pi * (200 + 100 * i) * np.arange(n) / rate)
                + 0.02 * rng.standard_normal(n)).astype(np.float32)
        if i == 4:
            wave = np.stack([wave, wave], axis=1)
        rel = f"wav/w{i}.wav"
        sf.write(root / "pseudowords" / rel, wave, rate, subtype="FLOAT")
        rows.append({"stimulus_id": f"w{i}", "path": rel, "word": f"w{i}", "label": ["sharp", "round"][i % 2],
                     "sample_rate": rate, "duration": dur})
    pd.DataFrame(rows).to_parquet(root / "pseudowords" / "manifest.parquet", index=False)
    # images
    (root / "shapes" / "png").mkdir(parents=True)
    rows = []
    for i in range(3):
        arr = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
        rel = f"png/s{i}.png"
        Image.fromarray(arr).save(root / "shapes" / rel)
        rows.append({"stimulus_id": f"s{i}", "path": rel, "label": ["sharp", "round", "sharp"][i]})
    pd.DataFrame(rows).to_parquet(root / "shapes" / "manifest.parquet", index=False)
    # text
    texts = ["a dog runs across the long green field", "kiki", "bouba", "a red round ball"]
    rows = [{"stimulus_id": f"t{i}", "word": t, "text": t} for i, t in enumerate(texts)]
    (root / "pseudoword_text").mkdir()
    pd.DataFrame(rows).to_parquet(root / "pseudoword_text" / "manifest.parquet", index=False)
    return root


def single_item_reference(adapter, tower, items, layer):
    return np.concatenate([adapter.embed(tower, [x], layers=[layer])[layer] for x in items])


def test_extract_audio_untrained(models, stimuli, tmp_path):
    manifest = stimuli / "pseudowords" / "manifest.parquet"
    spec = {"family": "hf_audio", "display": "HuBERT-tiny (untrained)", "kind": "untrained",
            "source": "resources/model_configs/hubert-tiny", "towers": ["audio"], "batch_size": 2}
    out = tmp_path / "emb" / "hubert.parquet"
    summary = extract_embeddings(manifest, "pseudowords", "hubert-untrained", spec, out,
                                 model_dir=models["hubert-tiny"], threads=1)
    layers = [str(k) for k in range(5)]
    assert summary["n_items"] == 5 and summary["layers"] == layers
    # rows = stimuli × layers; one row group per layer, read from the footer
    pf = pq.ParquetFile(out)
    assert pf.metadata.num_rows == 5 * 5 and pf.num_row_groups == 5
    assert io.embedding_layers(out) == [(name, k) for k, name in enumerate(layers)]
    ids, mat = io.read_layer(out, "3")
    assert ids == ["w0", "w1", "w2", "w3", "w4"]  # manifest order, though batches were by length
    assert mat.shape == (5, 64) and mat.dtype == np.float32
    # each clip's row is what the model gives it alone
    from avprobe.extract import load_audio

    adapter = load_model("hubert-untrained", spec, model_dir=models["hubert-tiny"], device="cpu")
    items = [load_audio(manifest.parent / f"wav/w{i}.wav") for i in range(5)]
    np.testing.assert_allclose(mat, single_item_reference(adapter, "audio", items, "3"), atol=1e-5)
    meta = io.embeddings_metadata(out)
    for key in ("model", "model_id", "source", "revision", "kind", "family", "tower", "dtype",
                "device", "pooling", "versions", "config_hash"):
        assert key in meta, key
    assert meta["model"] == "hubert-untrained" and meta["kind"] == "untrained"
    assert meta["tower"] == "audio" and meta["pooling"] == "mean" and meta["family"] == "hf_audio"
    assert meta["revision"].startswith("local:") and meta["dtype"] == "float32"
    assert meta["config_hash"] == io.hash_config(spec)
    assert meta["versions"]["transformers"] == transformers.__version__


def test_extract_two_towers_and_layer_selection(models, stimuli, tmp_path):
    spec = {"family": "clip", "kind": "untrained", "towers": ["text", "image"], "batch_size": 2,
            "layers": [0, -1, "joint"]}
    out_img = tmp_path / "shapes.parquet"
    extract_embeddings(stimuli / "shapes" / "manifest.parquet", "shapes", "clip-untrained", spec,
                       out_img, model_dir=models["clip-tiny"])
    assert io.embedding_layers(out_img) == [("0", 0), ("4", 4), ("joint", 5)]
    ids, joint = io.read_layer(out_img, "joint")
    assert ids == ["s0", "s1", "s2"] and joint.shape == (3, 32)
    assert io.read_layer(out_img, "4")[1].shape == (3, 64)  # hidden and joint widths differ
    out_txt = tmp_path / "text.parquet"
    extract_embeddings(stimuli / "pseudoword_text" / "manifest.parquet", "pseudoword_text",
                       "clip-untrained", spec, out_txt, model_dir=models["clip-tiny"])
    ids, mat = io.read_layer(out_txt, "4")
    adapter = load_model("clip-untrained", spec, model_dir=models["clip-tiny"], device="cpu")
    texts = pd.read_parquet(stimuli / "pseudoword_text" / "manifest.parquet")["text"].tolist()
    assert ids == ["t0", "t1", "t2", "t3"]
    np.testing.assert_allclose(mat, single_item_reference(adapter, "text", texts, "4"), atol=1e-5)
    assert io.embeddings_metadata(out_txt)["tower"] == "text"


def test_extract_baselines(stimuli, tmp_path):
    out = tmp_path / "logmel.parquet"
    extract_embeddings(stimuli / "pseudowords" / "manifest.parquet", "pseudowords", "logmel",
                       {"family": "logmel", "kind": "baseline", "n_mels": 32, "sample_rate": 16000},
                       out)
    assert io.embedding_layers(out) == [("mean", 0), ("meanstd", 1)]
    assert io.read_layer(out, "meanstd")[1].shape == (5, 64)
    assert io.embeddings_metadata(out)["kind"] == "baseline"
    out = tmp_path / "pixels.parquet"
    extract_embeddings(stimuli / "shapes" / "manifest.parquet", "shapes", "pixels",
                       {"family": "pixels", "kind": "baseline", "size": 4}, out)
    assert io.read_layer(out, "rgb")[1].shape == (3, 48)


def test_extract_rejects_a_missing_tower(stimuli, tmp_path):
    with pytest.raises(ValueError, match="no 'audio' tower"):
        extract_embeddings(stimuli / "pseudowords" / "manifest.parquet", "pseudowords", "pixels",
                           {"family": "pixels"}, tmp_path / "x.parquet")
    assert not (tmp_path / "x.parquet").exists()


def test_extract_with_a_plugin_family(stimuli, tmp_path, monkeypatch):
    (tmp_path / "avprobe_extract_plugin.py").write_text(
        "import numpy as np\n"
        "from avprobe.models.base import Adapter\n"
        "class Length(Adapter):\n"
        "    family = 'length'\n"
        "    natural_towers = ('text',)\n"
        "    def layers(self, tower):\n"
        "        return ['n']\n"
        "    def _embed(self, tower, items, layers):\n"
        "        return {'n': np.array([[len(t), t.count(' ')] for t in items], float)}\n"
        "def load(name, spec, model_dir, device):\n"
        "    return Length(name, spec, kind='baseline')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "len.parquet"
    extract_embeddings(stimuli / "pseudoword_text" / "manifest.parquet", "pseudoword_text", "len",
                       {"family": "avprobe_extract_plugin:load"}, out)
    ids, mat = io.read_layer(out, "n")
    assert mat[ids.index("t1")].tolist() == [4.0, 0.0]
    sys.modules.pop("avprobe_extract_plugin", None)


class _Named(SimpleNamespace):
    def get(self, key, default=None):
        return getattr(self, key, default)


def test_entry_scripts(stimuli, tmp_path):
    """The thin entry scripts read exactly their snakemake keys and write their outputs."""
    build_log, extract_log = tmp_path / "logs" / "build.log", tmp_path / "logs" / "extract.log"
    model_config = tmp_path / "models" / "hubert-untrained" / "config.json"
    snakemake = SimpleNamespace(
        input=_Named(), output=_Named(model=str(model_config.parent)),
        params=_Named(source=str(CONFIGS / "hubert-tiny"), family="hf_audio", seed=0),
        log=[str(build_log)], threads=1,
    )
    runpy.run_path(str(SCRIPTS / "build_untrained_model.py"), init_globals={"snakemake": snakemake})
    assert model_config.exists() and (model_config.parent / "model.safetensors").exists()
    spec = {"family": "hf_audio", "kind": "untrained", "source": "resources/model_configs/hubert-tiny",
            "towers": ["audio"], "batch_size": 4}
    out = tmp_path / "embeddings" / "pseudowords" / "hubert-untrained.parquet"
    snakemake = SimpleNamespace(
        input=_Named(manifest=str(stimuli / "pseudowords" / "manifest.parquet"),
                     model_dir=str(model_config.parent)),
        output=_Named(embeddings=str(out)),
        params=_Named(set="pseudowords", model="hubert-untrained", spec=spec),
        log=[str(extract_log)], threads=1,
    )
    runpy.run_path(str(SCRIPTS / "extract_embeddings.py"), init_globals={"snakemake": snakemake})
    assert pq.ParquetFile(out).num_row_groups == 5
    assert io.embeddings_metadata(out)["model_dir"] == str(model_config.parent)
    text = extract_log.read_text()
    assert "5 items in" in text and "items/s)" in text


# ------------------------------------------------------------------------------------------------
# Sharded extraction (big corpora) and float16 storage
# ------------------------------------------------------------------------------------------------


def _table(path):
    """(rows, embeddings): the id/layer columns, and every row's vector (widths may differ by layer)."""
    df = pq.read_table(path).to_pandas()
    return df[["stimulus_id", "layer", "layer_index"]], [np.asarray(e, np.float32) for e in df["embedding"]]


def _assert_same_vectors(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_shard_bounds_cover_the_manifest_once_in_order():
    from avprobe.extract import shard_bounds

    for n_items in (3, 10, 25_000):
        for n in range(1, min(n_items, 7) + 1):
            bounds = [shard_bounds(n_items, k, n) for k in range(1, n + 1)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n_items
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1
    with pytest.raises(ValueError, match="lower `shards`"):
        shard_bounds(2, 1, 3)
    with pytest.raises(ValueError, match="count from 1"):
        shard_bounds(10, 0, 3)


@pytest.mark.parametrize(
    "set_name, model, spec, built, n_shards",
    [
        ("pseudowords", "hubert-untrained", {"family": "hf_audio", "kind": "untrained", "towers": ["audio"],
                                             "batch_size": 1}, "hubert-tiny", 2),
        ("pseudoword_text", "clip-untrained", {"family": "clip", "kind": "untrained", "towers": ["text", "image"],
                                               "batch_size": 1}, "clip-tiny", 3),
        ("shapes", "pixels", {"family": "pixels", "kind": "baseline", "size": 4, "batch_size": 1}, None, 3),
    ],
)
def test_sharded_extraction_equals_unsharded(models, stimuli, tmp_path, set_name, model, spec, built, n_shards):
    """N shard jobs merged = one unsharded job: same rows, same order, same values (bit for bit,
    since batch_size 1 gives every item the same computation either way)."""
    from avprobe.extract import merge_shards

    manifest = stimuli / set_name / "manifest.parquet"
    model_dir = models[built] if built else None
    whole = tmp_path / f"{model}.parquet"
    extract_embeddings(manifest, set_name, model, spec, whole, model_dir=model_dir)
    sharded = {**spec, "shards": n_shards}
    paths = []
    for k in range(1, n_shards + 1):
        path = tmp_path / f"{model}.shards" / f"{k}-of-{n_shards}.parquet"
        summary = extract_embeddings(manifest, set_name, model, sharded, path, model_dir=model_dir,
                                     shard=(k, n_shards))
        assert 1 <= summary["n_items"] < len(pd.read_parquet(manifest))
        paths.append(path)
    merged = tmp_path / "merged.parquet"
    merge_shards(paths, merged, manifest_path=manifest)
    (rows_a, emb_a), (rows_b, emb_b) = _table(whole), _table(merged)
    pd.testing.assert_frame_equal(rows_a, rows_b)
    _assert_same_vectors(emb_a, emb_b)
    assert io.embedding_layers(whole) == io.embedding_layers(merged)
    assert pq.ParquetFile(merged).num_row_groups == pq.ParquetFile(whole).num_row_groups
    meta_a, meta_b = io.embeddings_metadata(whole), io.embeddings_metadata(merged)
    assert meta_b["shards"] == n_shards and "shard" not in meta_b
    for key in ("config_hash", "revision", "n_items", "layers", "storage_dtype", "kind"):
        assert meta_a[key] == meta_b[key], key
    # a shard from another config, or shards out of order, are refused
    with pytest.raises(ValueError, match="expected shard 1"):
        merge_shards(paths[::-1], tmp_path / "bad.parquet")
    assert not (tmp_path / "bad.parquet").exists()


def test_float16_storage_halves_the_bytes_and_reads_as_float32(models, stimuli, tmp_path):
    # io level: a realistic width, so the embedding bytes dominate the file
    rng = np.random.default_rng(0)
    ids = [f"s{i}" for i in range(400)]
    x = rng.normal(size=(400, 256)).astype(np.float32)
    sizes = {}
    for dtype in ("float32", "float16"):
        path = tmp_path / f"{dtype}.parquet"
        io.write_embeddings([("0", 0, (ids, x)), ("1", 1, (ids, -x))], path, {}, dtype=dtype)
        sizes[dtype] = path.stat().st_size
        got_ids, got = io.read_layer(path, "1")
        assert got_ids == ids and got.dtype == np.float32
        np.testing.assert_allclose(got, -x, rtol=1e-3, atol=1e-4)  # float16: 11-bit mantissa
    assert sizes["float16"] < 0.6 * sizes["float32"]
    with pytest.raises(ValueError, match="overflow float16"):
        io.write_embeddings([("0", 0, (["a"], np.array([[1e6]], np.float32)))], tmp_path / "o.parquet", {},
                            dtype="float16")
    # through extraction: storage_dtype in the spec, recorded in the metadata
    spec = {"family": "clip", "kind": "untrained", "towers": ["text", "image"], "batch_size": 2}
    manifest = stimuli / "pseudoword_text" / "manifest.parquet"
    full, half = tmp_path / "full.parquet", tmp_path / "half.parquet"
    extract_embeddings(manifest, "pseudoword_text", "clip-untrained", spec, full, model_dir=models["clip-tiny"])
    extract_embeddings(manifest, "pseudoword_text", "clip-untrained", {**spec, "storage_dtype": "float16"}, half,
                       model_dir=models["clip-tiny"])
    assert io.embeddings_metadata(half)["storage_dtype"] == "float16"
    assert io.embeddings_metadata(full)["storage_dtype"] == "float32"
    assert pq.read_schema(half).field("embedding").type.value_type == "halffloat"
    for name, _ in io.embedding_layers(full):
        ids_f, a = io.read_layer(full, name)
        ids_h, b = io.read_layer(half, name)
        assert ids_f == ids_h and b.dtype == np.float32
        np.testing.assert_allclose(b, a, rtol=2e-3, atol=1e-3 * np.abs(a).max())
    with pytest.raises(ValueError, match="storage_dtype"):
        extract_embeddings(manifest, "pseudoword_text", "clip-untrained", {**spec, "storage_dtype": "int8"},
                           tmp_path / "x.parquet", model_dir=models["clip-tiny"])


def test_sharded_workflow_resumes_and_merges(stimuli, tmp_path):
    """The real rules: shards are separate jobs; a rerun runs only the missing shards; the merge
    writes what the unsharded rule writes, and the shard files are then removed."""
    import shutil

    from test_workflow import copy_workflow, planned_rules, run_snakemake

    (tmp_path / "wf").mkdir()
    work = copy_workflow(tmp_path / "wf")
    shapes = work / "results" / "stimuli" / "shapes"
    shutil.copytree(stimuli / "shapes" / "png", shapes / "images" / "png")
    pd.read_parquet(stimuli / "shapes" / "manifest.parquet").assign(
        path=lambda d: "images/" + d["path"]).to_parquet(shapes / "manifest.parquet", index=False)
    (work / "shards.yaml").write_text("models:\n  pixels: {shards: 2, batch_size: 1}\n")  # 3 images: 3 batches
    args = ("--cores", "1", "--rerun-triggers", "mtime", "--configfile", "shards.yaml")
    target = "results/embeddings/shapes/pixels.parquet"
    shard1 = work / "results/embeddings/shapes/pixels.shards/1-of-2.parquet"
    shard2 = work / "results/embeddings/shapes/pixels.shards/2-of-2.parquet"
    # an interrupted run: only the first shard got written
    run_snakemake("results/embeddings/shapes/pixels.shards/1-of-2.parquet", *args, cwd=work)
    assert shard1.exists() and not shard2.exists()
    plan_out = run_snakemake(target, "-n", *args, cwd=work).stdout
    assert planned_rules(plan_out) == {"extract_embedding_shard", "merge_embedding_shards"}
    assert "2-of-2.parquet" in plan_out and "output: results/embeddings/shapes/pixels.shards/1-of-2" not in plan_out
    run_snakemake(target, *args, cwd=work)
    merged = work / target
    assert merged.exists() and not shard1.exists() and not shard2.exists()  # temp shards removed
    assert (work / "results/embeddings/shapes/rejected/pixels.parquet").exists()
    assert io.embeddings_metadata(merged)["shards"] == 2
    # the same file as the unsharded rule writes
    sharded_rows, sharded_emb = _table(merged)
    shutil.move(merged, tmp_path / "sharded.parquet")
    run_snakemake(target, "--cores", "1", "--rerun-triggers", "mtime", cwd=work)
    assert "shards" not in io.embeddings_metadata(merged)
    rows, emb = _table(merged)
    pd.testing.assert_frame_equal(rows, sharded_rows)
    _assert_same_vectors(emb, sharded_emb)
    # N = 1 plans exactly the one extraction job
    assert planned_rules(run_snakemake(target, "-n", "-f", "--cores", "1", cwd=work).stdout) == {"extract_embeddings"}
