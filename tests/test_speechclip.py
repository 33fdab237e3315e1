"""SpeechCLIP (avprobe/models/speechclip.py): what the contract test cannot check.

* the checkpoint-layout round trip: a random checkpoint written in the original Lightning key
  layout loads through exactly the path a downloaded file takes (``hf://`` → the Hugging Face
  cache → remap → strict load), and the branch holds the written tensors; a renamed key, a wrong
  width, a wrong variant or a wrong companion fails with a message naming it;
* a checkpoint pickled with the original's own classes (avssl's ``OrderedNamespace``, a Lightning
  callback) loads without them, and its config is read;
* the speech embedding equals a hand-written forward of the branch (plain tensor algebra) on a
  tiny example, for both variants; the image and text space layers equal CLIP's own
  ``get_image_features`` / ``get_text_features``.

The original key names listed below were written down from the original code (atosystem/SpeechCLIP,
``avssl/model/kwClip.py`` and the modules it builds), not generated from this package's table.
"""

from __future__ import annotations

import json
import shutil
import sys
import types
from collections import OrderedDict

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

from avprobe import plan, prefetch  # noqa: E402
from avprobe.models import load_model  # noqa: E402
from avprobe.models.speechclip import (  # noqa: E402
    CHECKPOINT_FILE,
    MASKED_CODES,
    CheckpointLayoutError,
    build_untrained,
    original_key,
    read_checkpoint,
)
from model_inputs import CONFIGS, clips, images  # noqa: E402

TOL = 1e-5

# KW_ParallelBranch: cls, self_att (TransformerEncoder → .model = nn.TransformerEncoder), linear_proj
PARALLEL_KEYS = [
    "audio_encoder.weightedsum_layer.weights",
    "parallel_branch.cls",
    "parallel_branch.self_att.model.layers.0.self_attn.in_proj_weight",
    "parallel_branch.self_att.model.layers.0.self_attn.in_proj_bias",
    "parallel_branch.self_att.model.layers.0.self_attn.out_proj.weight",
    "parallel_branch.self_att.model.layers.0.self_attn.out_proj.bias",
    "parallel_branch.self_att.model.layers.0.linear1.weight",
    "parallel_branch.self_att.model.layers.0.linear1.bias",
    "parallel_branch.self_att.model.layers.0.linear2.weight",
    "parallel_branch.self_att.model.layers.0.linear2.bias",
    "parallel_branch.self_att.model.layers.0.norm1.weight",
    "parallel_branch.self_att.model.layers.0.norm1.bias",
    "parallel_branch.self_att.model.layers.0.norm2.weight",
    "parallel_branch.self_att.model.layers.0.norm2.bias",
    "parallel_branch.self_att.model.norm.weight",
    "parallel_branch.self_att.model.norm.bias",
    "parallel_branch.linear_proj.weight",
    "parallel_branch.linear_proj.bias",
]
# KW_CascadedBranch: cls, self_att (MultiheadAttentionAndNorm), linear_proj, bn_layer, vector_quantizer
CASCADED_KEYS = [
    "audio_encoder.weightedsum_layer.weights",
    "cascaded_branch.cls",
    "cascaded_branch.self_att.multihead_attn_layer.in_proj_weight",
    "cascaded_branch.self_att.multihead_attn_layer.in_proj_bias",
    "cascaded_branch.self_att.multihead_attn_layer.out_proj.weight",
    "cascaded_branch.self_att.multihead_attn_layer.out_proj.bias",
    "cascaded_branch.self_att.attentionBlock_Norm.weight",
    "cascaded_branch.self_att.attentionBlock_Norm.bias",
    "cascaded_branch.linear_proj.weight",
    "cascaded_branch.linear_proj.bias",
    "cascaded_branch.bn_layer.bn_layer.weight",
    "cascaded_branch.bn_layer.bn_layer.bias",
    "cascaded_branch.bn_layer.bn_layer.running_mean",
    "cascaded_branch.bn_layer.bn_layer.running_var",
    "cascaded_branch.bn_layer.bn_layer.num_batches_tracked",
    "cascaded_branch.vector_quantizer.curr_temp",
    "clip.model.token_embedding.weight",
]
HUB_FILE = "base/flickr/parallel/epoch_131-step_15443-val_recall_mean_1_36.0100.ckpt"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("speechclip")
    return {v: build_untrained(CONFIGS / f"speechclip-tiny-{v}", root / v, seed=0) for v in ("parallel", "cascaded")}


def _load(folder, **spec):
    return load_model("sc", {"family": "speechclip", "towers": ["audio", "text", "image"], "kind": "untrained",
                             **spec}, model_dir=folder, device="cpu")


def _pretrained(ckpt_source, folder, **spec):
    """The path of a downloaded checkpoint: source is a file (or hf:// id), companions are folders."""
    return load_model("sc", {"family": "speechclip", "towers": ["audio", "text", "image"], "kind": "pretrained",
                             "source": str(ckpt_source), "hubert": str(folder / "hubert"),
                             "clip": str(folder / "clip"), **spec}, device="cpu")


def _copy_with(folder, tmp_path, edit):
    """A copy of a built control whose checkpoint's state_dict was changed by ``edit``."""
    dest = tmp_path / "edited"
    shutil.copytree(folder, dest)
    ckpt = torch.load(dest / CHECKPOINT_FILE, weights_only=True)
    edit(ckpt["state_dict"])
    torch.save(ckpt, dest / CHECKPOINT_FILE)
    return dest


# ---------------------------------------------------------------------------------------------
# The checkpoint-layout round trip
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant,keys", [("parallel", PARALLEL_KEYS), ("cascaded", CASCADED_KEYS)])
def test_written_checkpoint_has_the_original_layout(built, variant, keys):
    ckpt = torch.load(built[variant] / CHECKPOINT_FILE, weights_only=True)
    assert set(ckpt) >= {"state_dict", "hyper_parameters", "epoch", "global_step"}
    state = ckpt["state_dict"]
    branch = {k for k in state if not k.startswith(("clip.", "cascaded_branch.clip.", "audio_encoder.encoder.",
                                                     "criterion."))}
    assert "clip.original_text_emb_weight" in state  # ClipModel keeps the full table as a parameter
    assert branch | {"clip.model.token_embedding.weight"} >= set(keys)
    assert branch == set(keys) - {"clip.model.token_embedding.weight"}
    cfg = json.loads((built[variant] / "config.json").read_text())
    assert cfg["variant"] == variant and (built[variant] / "hubert" / "config.json").is_file()


def _hub_cache(tmp_path, ckpt_file):
    """A Hugging Face cache holding ``speechclip/models`` at one commit, as prefetch leaves it."""
    commit = "0" * 40
    repo = tmp_path / "hub" / "models--speechclip--models"
    target = repo / "snapshots" / commit / HUB_FILE
    target.parent.mkdir(parents=True)
    shutil.copyfile(ckpt_file, target)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return tmp_path / "hub"


@pytest.mark.parametrize("variant,keys", [("parallel", PARALLEL_KEYS), ("cascaded", CASCADED_KEYS)])
def test_round_trip_through_the_download_path(built, tmp_path, monkeypatch, variant, keys):
    import huggingface_hub

    folder = built[variant]
    cache = _hub_cache(tmp_path, folder / CHECKPOINT_FILE)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    adapter = _pretrained(f"hf://speechclip/models/{HUB_FILE}", folder, variant=variant)
    assert adapter.checkpoint_path.is_relative_to(cache)
    state = torch.load(folder / CHECKPOINT_FILE, weights_only=True)["state_dict"]
    mine = adapter.branch.state_dict()
    for key in keys:
        ours = next(k for k in mine if original_key(k, variant) == key)
        assert torch.equal(mine[ours], state[key].to(mine[ours].dtype)), key
    prov = adapter.provenance()
    assert prov["variant"] == variant and prov["kind"] == "pretrained"
    assert set(prov["frozen_check"]) == {"clip.model.text_projection", "clip.model.visual.proj",
                                         "audio_encoder.encoder.encoder.layers.0.fc1.weight"}
    # the same embeddings as the control loaded from its folder
    wave = clips()[0]
    a = adapter.embed("audio", [wave])
    b = _load(folder).embed("audio", [wave])
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_a_renamed_key_is_named_in_the_error(built, tmp_path):
    def rename(state):
        state["parallel_branch.linear_projection.weight"] = state.pop("parallel_branch.linear_proj.weight")

    folder = _copy_with(built["parallel"], tmp_path, rename)
    with pytest.raises(CheckpointLayoutError) as err:
        _pretrained(folder / CHECKPOINT_FILE, folder)
    assert "parallel_branch.linear_proj.weight" in str(err.value)  # missing
    assert "parallel_branch.linear_projection.weight" in str(err.value)  # unexpected


def test_a_wrong_width_points_to_the_large_companions(built, tmp_path):
    def widen(state):
        state["parallel_branch.cls"] = torch.zeros(1, 1, 1024)

    folder = _copy_with(built["parallel"], tmp_path, widen)
    with pytest.raises(CheckpointLayoutError, match="parallel_branch.cls.*hubert-large-ll60k"):
        _pretrained(folder / CHECKPOINT_FILE, folder)


def test_variant_and_companions_are_checked(built, tmp_path):
    with pytest.raises(CheckpointLayoutError, match="variant 'cascaded'.*parallel"):
        _pretrained(built["parallel"] / CHECKPOINT_FILE, built["parallel"], variant="cascaded")

    def other_clip(state):
        state["clip.model.visual.proj"] = state["clip.model.visual.proj"] + 1.0

    folder = _copy_with(built["parallel"], tmp_path, other_clip)
    with pytest.raises(CheckpointLayoutError, match="visual.proj.*differs from the companion clip"):
        _pretrained(folder / CHECKPOINT_FILE, folder)


def test_a_file_pickled_with_the_original_classes_loads_without_them(built, tmp_path):
    """The released files pickle avssl's OrderedNamespace (the config) and may pickle Lightning
    callback classes; neither package is installed, and nothing of theirs may run."""
    names = ["avssl", "avssl.base", "avssl.base.ordered_namespace"]
    mods = {n: types.ModuleType(n) for n in names}

    class OrderedNamespace:  # the original's storage: one OrderedDict in `_odict`
        def __init__(self, **kw):
            object.__setattr__(self, "_odict", OrderedDict(kw))

    class ModelCheckpoint:
        pass

    for cls in (OrderedNamespace, ModelCheckpoint):
        cls.__module__, cls.__qualname__ = names[-1], cls.__name__
        setattr(mods[names[-1]], cls.__name__, cls)
    ckpt = torch.load(built["parallel"] / CHECKPOINT_FILE, weights_only=True)
    args = OrderedNamespace(n_layers=1, d_model=32, nhead=4, dim_feedforward=64, activation="gelu",
                            layer_norm_eps=1e-5, norm_first=False)
    config = OrderedNamespace(
        model_settings=OrderedNamespace(parallel_branch=OrderedNamespace(transformer_type="TransformerEncoder",
                                                                         transformer_args=args)),
        audio_encoder=OrderedNamespace(name="hubert", feat_select_idx="weighted_sum", normalize_hiddenstates=False))
    ckpt["hyper_parameters"] = {"config": config}
    ckpt["callbacks"] = {ModelCheckpoint: {"best_model_score": torch.tensor(36.01)}}
    path = tmp_path / "orig.ckpt"
    sys.modules.update(mods)
    try:
        torch.save(ckpt, path)
    finally:
        for n in names:
            sys.modules.pop(n, None)
    state, original = read_checkpoint(path)
    assert set(state) == set(ckpt["state_dict"])
    assert original["model_settings"]["parallel_branch"]["transformer_args"]["nhead"] == 4
    assert original["audio_encoder"]["name"] == "hubert"
    adapter = _pretrained(path, built["parallel"])
    assert adapter.settings.nhead == 4 and adapter.settings.normalize_waveform is False


def test_untrained_control_says_so_whatever_the_spec_claims(built):
    adapter = _load(built["cascaded"], kind="pretrained")
    assert adapter.kind == "untrained" and adapter.provenance()["kind"] == "untrained"


def test_build_is_deterministic(built, tmp_path):
    again = build_untrained(CONFIGS / "speechclip-tiny-parallel", tmp_path / "again", seed=0)
    a = torch.load(again / CHECKPOINT_FILE, weights_only=True)["state_dict"]
    b = torch.load(built["parallel"] / CHECKPOINT_FILE, weights_only=True)["state_dict"]
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------------------
# The speech embedding against a hand-written forward of the branch
# ---------------------------------------------------------------------------------------------


def _hubert_layers(folder, wave, normalize):
    """fairseq's layer_results from the transformers HuBERT, one clip alone (no padding)."""
    hubert = transformers.HubertModel.from_pretrained(folder / "hubert").eval()
    x = torch.from_numpy(wave)[None]
    if normalize:
        x = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-5)
    with torch.no_grad():
        return hubert(x, output_hidden_states=True).hidden_states


def _weighted(state, layers, normalize):
    w = torch.softmax(state["audio_encoder.weightedsum_layer.weights"], 0)
    if normalize:
        layers = [(h - h.mean(-1, keepdim=True)) / torch.sqrt(h.var(-1, unbiased=False, keepdim=True) + 1e-5)
                  for h in layers]
    return sum(w[i] * h for i, h in enumerate(layers))[0]  # (T, D)


def _ln(x, w, b, eps=1e-5):
    return (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + eps) * w + b


def _attention(x, prefix, state, heads):
    """Multi-head self-attention of nn.MultiheadAttention's packed weights on one sequence (L, D)."""
    d = x.shape[-1]
    q, k, v = (x @ state[prefix + "in_proj_weight"].T + state[prefix + "in_proj_bias"]).split(d, -1)
    split = lambda t: t.reshape(len(x), heads, d // heads).transpose(0, 1)  # noqa: E731
    att = torch.softmax(split(q) @ split(k).transpose(1, 2) / (d // heads) ** 0.5, -1) @ split(v)
    att = att.transpose(0, 1).reshape(len(x), d)
    return att @ state[prefix + "out_proj.weight"].T + state[prefix + "out_proj.bias"]


def test_parallel_speech_embedding_equals_a_hand_written_forward(built):
    folder = built["parallel"]
    state = torch.load(folder / CHECKPOINT_FILE, weights_only=True)["state_dict"]
    wave = clips()[0]
    feats = _weighted(state, _hubert_layers(folder, wave, False), False)
    p = "parallel_branch.self_att.model."
    x = torch.cat([state["parallel_branch.cls"][0], feats])  # (1 + T, D)
    layer = p + "layers.0."
    x = _ln(x + _attention(x, layer + "self_attn.", state, heads=4),
            state[layer + "norm1.weight"], state[layer + "norm1.bias"])
    ff = torch.nn.functional.gelu(x @ state[layer + "linear1.weight"].T + state[layer + "linear1.bias"])
    x = _ln(x + ff @ state[layer + "linear2.weight"].T + state[layer + "linear2.bias"],
            state[layer + "norm2.weight"], state[layer + "norm2.bias"])
    frames = x[1:].mean(0)
    x = _ln(x, state[p + "norm.weight"], state[p + "norm.bias"])
    joint = x[0] @ state["parallel_branch.linear_proj.weight"].T + state["parallel_branch.linear_proj.bias"]
    got = _load(folder).embed("audio", [wave])
    np.testing.assert_allclose(got["joint"][0], joint.numpy(), atol=TOL, rtol=TOL)
    np.testing.assert_allclose(got["weighted_sum"][0], feats.mean(0).numpy(), atol=TOL, rtol=TOL)
    np.testing.assert_allclose(got["3"][0], frames.numpy(), atol=TOL, rtol=TOL)  # the branch layer


def test_cascaded_speech_embedding_equals_a_hand_written_forward(built):
    folder = built["cascaded"]
    state = torch.load(folder / CHECKPOINT_FILE, weights_only=True)["state_dict"]
    wave = clips()[1]
    feats = _weighted(state, _hubert_layers(folder, wave, True), True)
    c = "cascaded_branch."
    kw_n = state[c + "cls"].shape[1]
    x = torch.cat([state[c + "cls"][0], feats])
    x = _ln(x + _attention(x, c + "self_att.multihead_attn_layer.", state, heads=1),
            state[c + "self_att.attentionBlock_Norm.weight"], state[c + "self_att.attentionBlock_Norm.bias"])
    kw = x[:kw_n] @ state[c + "linear_proj.weight"].T + state[c + "linear_proj.bias"]  # (K, E)
    bn = c + "bn_layer.bn_layer."
    e = kw.shape[1]
    for k in range(kw_n):  # feature d*K + k of the one BatchNorm1d(E*K) is keyword k's dimension d
        idx = torch.arange(e) * kw_n + k
        kw[k] = ((kw[k] - state[bn + "running_mean"][idx]) / torch.sqrt(state[bn + "running_var"][idx] + 1e-5)
                 * state[bn + "weight"][idx] + state[bn + "bias"][idx])
    book = state["clip.model.token_embedding.weight"]
    cos = torch.nn.functional.cosine_similarity(kw[:, None, :], book[None], dim=-1)
    cos[:, list(MASKED_CODES)] = -float("inf")
    keywords = book[cos.argmax(-1)]
    # CLIP's text encoder on <sot> kw_1..kw_K <eot> padded to 77 with code 0, as the original did
    clip = transformers.CLIPModel.from_pretrained(folder / "clip").eval()
    emb = clip.text_model.embeddings
    seq = book[0].expand(77, -1).clone()
    seq[0], seq[1:kw_n + 1], seq[kw_n + 1] = book[2], keywords, book[3]  # rows 2, 3: start/end of text
    h = (seq + emb.position_embedding.weight[:77])[None]
    causal = torch.full((77, 77), -float("inf")).triu(1)[None, None]
    with torch.no_grad():
        for layer in clip.text_model.encoder.layers:
            h = layer(h, causal)
            h = h[0] if isinstance(h, tuple) else h
        joint = clip.text_projection(clip.text_model.final_layer_norm(h)[0, kw_n + 1])
    got = _load(folder).embed("audio", [wave])
    np.testing.assert_allclose(got["joint"][0], joint.numpy(), atol=TOL, rtol=TOL)
    np.testing.assert_allclose(got["3"][0], x[kw_n:].mean(0).numpy(), atol=TOL, rtol=TOL)


def test_image_and_text_space_layers_are_clips_own(built):
    folder = built["parallel"]
    clip = transformers.CLIPModel.from_pretrained(folder / "clip").eval()
    proc = transformers.AutoImageProcessor.from_pretrained(folder / "clip")
    tok = transformers.AutoTokenizer.from_pretrained(folder / "clip")
    adapter = _load(folder)
    imgs, texts = images(), ["kiki", "bouba", "a round shape"]
    got_i, got_t = adapter.embed("image", imgs)["joint"], adapter.embed("text", texts)["joint"]
    with torch.no_grad():
        for i, img in enumerate(imgs):
            out = clip.get_image_features(**proc(images=img, return_tensors="pt"))
            out = out if torch.is_tensor(out) else out.pooler_output
            np.testing.assert_allclose(got_i[i], out[0].numpy(), atol=TOL, rtol=TOL)
        for i, text in enumerate(texts):
            out = clip.get_text_features(**tok([text], return_tensors="pt"))
            out = out if torch.is_tensor(out) else out.pooler_output
            np.testing.assert_allclose(got_t[i], out[0].numpy(), atol=TOL, rtol=TOL)


# ---------------------------------------------------------------------------------------------
# Planning and prefetch
# ---------------------------------------------------------------------------------------------


def test_speech_text_and_images_share_one_space():
    cfg = {"models": {"sc": {"family": "speechclip", "towers": ["audio", "text", "image"]}}, "analysis": {}}
    for towers in ({"audio", "image"}, {"text", "image"}, {"audio", "text"}):
        space = plan.resolve_space(cfg, "sc", towers, "here")
        assert space.name == "audio_text_image" and space.layer == "joint"


def test_prefetch_fetches_the_file_and_the_named_companions():
    models = {"sc-large": {"family": "speechclip", "kind": "pretrained",
                           "source": "hf://speechclip/models/large/flickr/parallel/x.ckpt",
                           "hubert": "facebook/hubert-large-ll60k", "clip": "openai/clip-vit-large-patch14"},
              "sc-base": {"family": "speechclip", "kind": "pretrained",
                          "source": f"hf://speechclip/models/{HUB_FILE}"}}
    got = prefetch.pretrained_sources(models)
    assert got["sc-large"]["weights"] == "checkpoint"
    assert got["sc-large"]["companions"] == {"hubert": "facebook/hubert-large-ll60k",
                                             "clip": "openai/clip-vit-large-patch14"}
    assert got["sc-base"]["companions"] == {"hubert": "facebook/hubert-base-ls960",
                                            "clip": "openai/clip-vit-base-patch32"}
