"""EmbeddingGemma 2 (family ``embedding_gemma2``) beyond the contract test: the inputs are the
processor's, the layers are the towers' and the backbone's own states, provenance.

Runs on the tiny random ``embedding-gemma2-tiny``; the comparison with ``EmbeddingGemma2Processor``
needs torchvision (its video processor) and skips without it.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

from avprobe.models import load_model  # noqa: E402
from avprobe.models.registry import FAMILIES  # noqa: E402
from model_inputs import CONFIGS, Builder, clips, images  # noqa: E402

TOL = 1e-5


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    folder = Builder(tmp_path_factory.mktemp("eg2"))("embedding-gemma2-tiny", FAMILIES["embedding_gemma2"].build_function())
    return load_model("eg2", {"family": "embedding_gemma2"}, model_dir=folder, device="cpu")


def _close(a, b, what):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (what, a.shape, b.shape)
    assert float(np.abs(a - b).max()) <= TOL * max(1.0, float(np.abs(b).max())), what


def test_layers_and_provenance(adapter):
    assert adapter.layers("text") == ["0", "1", "2", "joint"]
    assert adapter.layers("audio") == [str(i) for i in range(6)] + ["joint"]
    assert adapter.layers("image") == [str(i) for i in range(6)] + ["joint"]
    prov = adapter.provenance()
    assert prov["kind"] == "untrained" and prov["architecture"] == "EmbeddingGemma2Model"


def test_audio_layers_are_the_towers_then_the_backbones(adapter):
    wave = clips()[0]
    ours = adapter.embed("audio", [wave])
    inputs = adapter.audio_inputs([wave])
    with torch.inference_mode():
        enc = adapter.model.get_audio_features(inputs["input_features"], inputs["input_features_mask"],
                                               output_hidden_states=True)
        out = adapter.model(**inputs, output_hidden_states=True)
    for i, h in enumerate(enc.hidden_states):
        _close(ours[str(i)][0], h[0].mean(0), f"audio tower state {i}")
    k = len(enc.hidden_states)
    for j, h in enumerate(out.hidden_states):
        _close(ours[str(k + j)][0], h[0].mean(0), f"backbone state {j}")
    _close(ours["joint"][0], out.last_hidden_state[0].mean(0), "joint")
    # the prompt holds one soft token per audio frame the tower keeps
    assert int((inputs["input_ids"] == adapter.config.audio_token_id).sum()) == int(enc.attention_mask.sum())


def test_image_prompt_has_one_placeholder_per_soft_token(adapter):
    for img in images():
        inputs = adapter.image_inputs([img])
        n = int((inputs["input_ids"] == adapter.config.image_token_id).sum())
        assert n == inputs["num_soft_tokens"][0] > 0


def test_inputs_equal_the_processors(adapter):
    """Where torchvision imports, EmbeddingGemma2Processor builds the same prompts and features."""
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - a CUDA torchvision on a CPU torch raises RuntimeError
        pytest.skip("EmbeddingGemma2Processor needs torchvision (its video processor)")
    proc = transformers.AutoProcessor.from_pretrained(CONFIGS / "embedding-gemma2-tiny")
    wave, img = clips()[0], images()[1]
    theirs = proc(audio=[wave], return_tensors="pt")
    ours = adapter.audio_inputs([wave])
    for key in ("input_ids", "attention_mask", "input_features", "input_features_mask"):
        assert torch.equal(theirs[key], ours[key]), key
    theirs = proc(images=[img], return_tensors="pt")
    ours = adapter.image_inputs([img])
    assert torch.equal(theirs["input_ids"], ours["input_ids"])
    theirs = proc(text=["kiki"], return_tensors="pt")
    assert torch.equal(theirs["input_ids"], adapter.text_inputs(["kiki"])["input_ids"])
