"""DenseAV (family densav): the original checkpoint layout, the remap, the similarity volume and
speech-prompted dense maps on a tiny random model (what the contract test cannot check)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
from safetensors.torch import load_file, save_file  # noqa: E402

from avprobe.models import densav, load_model  # noqa: E402
from avprobe.models.base import ModelUnavailableError  # noqa: E402
from model_inputs import CONFIGS, clips, images  # noqa: E402

TINY = CONFIGS / "densav-tiny"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return densav.build_untrained(TINY, tmp_path_factory.mktemp("densav") / "tiny", seed=0)


def _load(folder, **spec):
    return load_model("dav", {"family": "densav", "towers": ["audio", "image"], "kind": "untrained", **spec},
                      model_dir=folder, device="cpu")


def test_random_checkpoint_in_the_original_layout_round_trips(built):
    """Every tensor of the file lands where the original module would use it: backbones and
    aligners equal, LoRA merged (W0 + α/r · B A) and DINO's fused qkv split into q, k, v."""
    sd = load_file(str(built / densav.WEIGHTS_FILE))
    hp = densav.read_hparams(built / densav.CONFIG_FILE)
    # the original layout, as LitAVAligner (PEFT-wrapped DINO, HuBERT under .model) names it
    p = "image_model.base_model.model.model."
    assert {p + "cls_token", p + "pos_embed", p + "blocks.0.attn.qkv.lora_A.default.weight", "audio_cls",
            "audio_model.model.encoder.layers.0.attention.q_proj.weight", "audio_aligner.mod_list.2.cls_layer.weight",
            "audio_aligner.mod_list.4.block.attn.qkv.weight", "image_aligner.layer.weight", "sim_cal.w"} <= set(sd)
    net = _load(built).net.state_dict()
    assert torch.equal(net["image.embeddings.cls_token"], sd[p + "cls_token"])
    assert torch.equal(net["image.embeddings.position_embeddings"], sd[p + "pos_embed"])
    for key, value in sd.items():
        if key.startswith("audio_model.model."):
            assert torch.equal(net["audio." + key[len("audio_model.model."):]], value), key
    scale = densav.LORA_ALPHA / hp["image_lora_rank"]
    for i in range(2):
        b = f"{p}blocks.{i}.attn.qkv."
        merged = sd[b + "base_layer.weight"] + scale * sd[b + "lora_B.default.weight"] @ sd[b + "lora_A.default.weight"]
        assert sd[b + "lora_B.default.weight"].abs().max() > 0  # the delta is not a no-op
        q, k, v = merged.chunk(3, 0)
        for name, part in zip(("q_proj", "k_proj", "v_proj"), (q, k, v)):
            assert torch.allclose(net[f"image.layers.{i}.attention.{name}.weight"], part, atol=1e-6)
        assert torch.equal(net[f"image.layers.{i}.attention.q_proj.bias"], sd[b + "base_layer.bias"].chunk(3)[0])
        assert torch.equal(net[f"image.layers.{i}.mlp.fc1.weight"], sd[f"{p}blocks.{i}.mlp.fc1.weight"])
    assert torch.equal(net["audio_aligner.pool1.weight"], sd["audio_aligner.mod_list.2.layer.weight"][:, :, 0, :])
    assert torch.equal(net["audio_aligner.attention.qkv.weight"], sd["audio_aligner.mod_list.4.block.attn.qkv.weight"])
    assert torch.equal(net["audio_aligner.cls"], sd["audio_cls"])
    assert torch.equal(net["image_aligner.proj.weight"], sd["image_aligner.layer.weight"][:, :, 0, 0])
    assert torch.equal(net["image_aligner.norm.weight"], sd["image_aligner.norm.norm.weight"])


def _variant(built, tmp_path, edit):
    folder = tmp_path / "variant"
    shutil.copytree(built, folder)
    sd = load_file(str(built / densav.WEIGHTS_FILE))
    save_file(edit(dict(sd)), str(folder / densav.WEIGHTS_FILE))
    return folder


def test_a_renamed_or_extra_key_is_named_in_the_error(built, tmp_path):
    def rename(sd):
        sd["image_aligner.layr.weight"] = sd.pop("image_aligner.layer.weight")
        return sd

    with pytest.raises(densav.CheckpointLayoutError, match=r"missing key 'image_aligner\.layer\.weight'"):
        _load(_variant(built, tmp_path, rename))
    shutil.rmtree(tmp_path / "variant")

    def extra(sd):
        sd["audio_aligner.mod_list.5.layer.weight"] = torch.zeros(1)
        return sd

    with pytest.raises(densav.CheckpointLayoutError, match=r"'audio_aligner\.mod_list\.5\.layer\.weight'"):
        _load(_variant(built, tmp_path, extra))


def test_older_peft_and_transformers_key_names_load_the_same(built, tmp_path):
    """PEFT 0.5 (the original requirement) keeps a LoRA layer's weight in place; transformers
    before 4.43 names HuBERT's weight-normed positional convolution weight_g / weight_v."""
    def old_names(sd):
        out = {}
        for k, v in sd.items():
            k = k.replace(".qkv.base_layer.", ".qkv.")
            k = k.replace("pos_conv_embed.conv.parametrizations.weight.original0", "pos_conv_embed.conv.weight_g")
            k = k.replace("pos_conv_embed.conv.parametrizations.weight.original1", "pos_conv_embed.conv.weight_v")
            out[k] = v
        assert "audio_model.model.encoder.pos_conv_embed.conv.weight_g" in out
        return out

    a, b = _load(built), _load(_variant(built, tmp_path, old_names))
    for tower in ("audio", "image"):
        items = clips()[:1] if tower == "audio" else images()[:1]
        x, y = a.embed(tower, items), b.embed(tower, items)
        for layer in x:
            np.testing.assert_array_equal(x[layer], y[layer])


def test_hidden_layers_are_the_backbones_own_and_joint_pools_the_dense_features(built):
    adapter = _load(built)
    assert adapter.layers("audio") == ["0", "1", "2", "joint"] and adapter.layers("image") == ["0", "1", "2", "joint"]
    wave = clips()[1]
    out = adapter.embed("audio", [wave])
    own = adapter.net.audio(torch.from_numpy(densav.normalise_wave(wave))[None], output_hidden_states=True)
    for i in range(3):
        np.testing.assert_allclose(out[str(i)][0], own.hidden_states[i][0].mean(0).detach().numpy(), rtol=1e-5, atol=1e-6)
    frames = adapter.dense("audio", [wave])[0]
    t = own.last_hidden_state.shape[1]
    assert frames.shape == ((((t - 3) // 3 + 1) - 3) // 3 + 1, 12)
    np.testing.assert_allclose(out["joint"][0], frames.mean(0), rtol=1e-5, atol=1e-6)
    image = images()[0]
    grid = adapter.dense("image", [image])[0]
    assert grid.shape == (7, 7, 12)  # 224 / patch 32
    np.testing.assert_allclose(adapter.embed("image", [image])["joint"][0], grid.reshape(-1, 12).mean(0),
                               rtol=1e-5, atol=1e-6)


def test_similarity_volume_and_its_aggregation(built):
    adapter = _load(built)
    assert adapter.heads == 2 and adapter.dense_heads == 2 and adapter.dense_similarity == "dot"
    wave, image = clips()[1], images()[0]
    vol = adapter.similarity_volume(wave, image)
    a, v = adapter.dense("audio", [wave])[0], adapter.dense("image", [image])[0]
    assert vol.shape == (len(a), 7, 7, 2)
    assert vol[1, 3, 4, 1] == pytest.approx(float(a[1, 6:] @ v[3, 4, 6:]), rel=1e-5)
    expected = np.mean([max(vol[t, :, :, k].max() for k in range(2)) for t in range(len(a))])
    assert adapter.score(wave, image) == pytest.approx(expected, rel=1e-6)
    from avprobe.analysis import dense

    np.testing.assert_allclose(dense.dense_volume(a, v, 2, "dot"), vol, rtol=1e-5, atol=1e-6)


def test_a_checkpoint_file_loads_through_the_download_path(built, tmp_path):
    """``source`` a file (what checkpoints.locate returns for a downloaded hub file), with its
    config.json beside it: the same model as the built folder; ``heads`` must agree."""
    spec = {"family": "densav", "towers": ["audio", "image"], "source": str(built / densav.WEIGHTS_FILE)}
    pretrained = load_model("dav", spec, device="cpu")
    assert pretrained.kind == "pretrained" and pretrained.revision.startswith("sha256:")
    np.testing.assert_array_equal(pretrained.embed("image", images()[:1])["joint"],
                                  _load(built).embed("image", images()[:1])["joint"])
    with pytest.raises(ValueError, match="heads"):
        load_model("dav", {**spec, "heads": 1}, device="cpu")
    assert _load(built).provenance()["kind"] == "untrained"


def test_an_uncached_hub_file_fails_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelUnavailableError, match="prefetch_models"):
        load_model("dav", {"family": "densav", "towers": ["audio", "image"],
                           "source": "hf://mhamilton723/DenseAV-sound/model.safetensors"}, device="cpu")


def test_the_dense_job_makes_speech_prompted_maps_with_a_tiny_denseav(built, tmp_path):
    """Spoken captions (espeak, with word times) against scenes: rows per unit, maps per word."""
    from avprobe.analysis import dense
    from avprobe.stimuli.scenes import compose_scenes
    from avprobe.stimuli.shapes import render_shapes
    from avprobe.stimuli.speech import speak_captions, synthesize_pseudowords

    d = tmp_path
    compose_scenes({"images": 4, "captions_per_image": 2, "size": 64}, 3, d / "scenes", d / "scenes.parquet",
                   d / "caption_text.parquet")
    render_shapes({"per_class": 2, "size": 64}, 3, d / "shapes.parquet", d / "shapes")
    tts = {"voices": [{"id": "us_m1", "engine": "espeak", "voice": "en-us", "variant": "m1"}], "sample_rate": 16000}
    speak_captions(d / "caption_text.parquet", tts, d / "captions.parquet", d / "captions")
    words = pd.DataFrame({"word": ["kiki", "bouba"], "is_reference": True, "label": ["sharp", "round"],
                          "espeak": ["[[k'iki]]", "[[b'u:ba]]"]})
    synthesize_pseudowords(words, {**tts, "input": "phonemes"}, d / "pseudowords.parquet", d / "pw")
    captions = pd.read_parquet(d / "captions.parquet")
    assert all(json.loads(w) for w in captions["word_times"])
    table = dense.run_dense(d / "scenes.parquet", d / "shapes.parquet", d / "pseudowords.parquet", d / "t.parquet",
                            d / "e.npz", model="dav", spec={"family": "densav", "towers": ["audio", "image"],
                                                            "kind": "untrained"},
                            model_dir=built, cfg={"examples": 2}, words_set="pseudowords", query="speech",
                            captions_manifest=d / "captions.parquet", n_bootstrap=20, n_permutations=20, seed=0,
                            device="cpu")
    assert set(table["query_form"]) == {"speech"} and "word" in set(table["query_unit"])
    assert set(table["metric"]) == {"pointing_game", "localisation_auc"} and (table["grid"] == "7x7").all()
    assert (table["kind"] == "untrained").all() and table["value"].notna().all()
    z = np.load(d / "e.npz")
    assert str(z["query_unit"]) == "word" and z["query_maps"].shape[1:] == (7, 7) and len(z["query_maps"]) > 0
    assert np.isfinite(z["query_maps"]).all() and z["word_maps"].shape == (2, 2, 7, 7)
