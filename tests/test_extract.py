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
        input=_Named(), output=_Named(config=str(model_config)),
        params=_Named(source=str(CONFIGS / "hubert-tiny"), seed=0),
        log=[str(build_log)], threads=1,
    )
    runpy.run_path(str(SCRIPTS / "build_untrained_model.py"), init_globals={"snakemake": snakemake})
    assert model_config.exists() and (model_config.parent / "model.safetensors").exists()
    spec = {"family": "hf_audio", "kind": "untrained", "source": "resources/model_configs/hubert-tiny",
            "towers": ["audio"], "batch_size": 4}
    out = tmp_path / "embeddings" / "pseudowords" / "hubert-untrained.parquet"
    snakemake = SimpleNamespace(
        input=_Named(manifest=str(stimuli / "pseudowords" / "manifest.parquet"),
                     model_dir_config=str(model_config)),
        output=_Named(embeddings=str(out)),
        params=_Named(set="pseudowords", model="hubert-untrained", spec=spec),
        log=[str(extract_log)], threads=1,
    )
    runpy.run_path(str(SCRIPTS / "extract_embeddings.py"), init_globals={"snakemake": snakemake})
    assert pq.ParquetFile(out).num_row_groups == 5
    assert io.embeddings_metadata(out)["model_dir"] == str(model_config.parent)
    text = extract_log.read_text()
    assert "5 items in" in text and "items/s)" in text
