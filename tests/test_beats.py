"""BEATs: the Kaldi filterbank front end against kaldi-native-fbank, the network against the
original's formulation of its attention (fairseq layout, the alpha=32 rescaling, the gate computed
from a (B, H, T, d) view), and the released checkpoint layout loaded through the same path a
downloaded file takes (an https URL pinned by sha256, or hf://, via checkpoints.locate)."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from avprobe.models import ModelUnavailableError, checkpoints, load_model  # noqa: E402
from avprobe.models import beats  # noqa: E402
from model_inputs import CONFIGS, clips  # noqa: E402

EPS_LOG = float(np.log(np.float64(np.finfo(np.float32).eps)))


def _knf(wave, num_bins, frame_length_ms=25.0):
    knf = pytest.importorskip("kaldi_native_fbank")
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.samp_freq = 16000
    opts.frame_opts.frame_length_ms = frame_length_ms
    opts.mel_opts.num_bins = num_bins
    fb = knf.OnlineFbank(opts)
    fb.accept_waveform(16000, np.asarray(wave, np.float32).tolist())
    fb.input_finished()
    return np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)])


def _wave(n=12345, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(n)) * 2 ** 15


@pytest.mark.parametrize("bins,frame_ms", [(23, 25.0), (80, 25.0), (128, 50.0)])
def test_fbank_equals_kaldi_native_fbank(bins, frame_ms):
    """Kaldi's own implementation (float32) and ours (float64) agree to 3e-4 in log energy,
    including 128 bins where kaldi-native-fbank accepts them (a 50 ms frame: 1024-point FFT)."""
    wave = _wave()
    ref = _knf(wave, bins, frame_ms)
    ours = beats.kaldi_fbank(wave, num_mel_bins=bins, frame_length_ms=frame_ms)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 3e-4


def test_beats_fbank_keeps_the_empty_band_that_kaldi_refuses():
    """At 128 bins, 25 ms, 16 kHz the 4th band holds no FFT bin: Kaldi (and kaldi-native-fbank)
    refuse the configuration, torchaudio (BEATs' front end) outputs log(eps) there; so do we."""
    knf = pytest.importorskip("kaldi_native_fbank")
    with pytest.raises(Exception, match="num_mel_bins too large"):
        _knf(_wave(), 128)
    banks = beats.kaldi_mel_banks(128, 512, 16000)
    assert banks.shape == (257, 128) and not banks[-1].any()  # Nyquist bin unused
    assert list(np.flatnonzero(banks.sum(0) == 0)) == [3]
    fb = beats.kaldi_fbank(_wave())
    assert fb.shape == (1 + (12345 - 400) // 160, 128)
    assert np.allclose(fb[:, 3], EPS_LOG) and (fb[:, np.r_[0:3, 4:128]] > EPS_LOG).all()
    del knf


def test_fbank_hand_computed_properties():
    """A tone peaks in the band whose centre (Kaldi mel) is nearest; frames follow snip_edges;
    BEATs' normalisation uses its fixed statistics on the int16-scaled waveform."""
    t = np.arange(16000) / 16000
    tone = np.sin(2 * np.pi * 1000.0 * t)
    fb = beats.kaldi_fbank(tone * 2 ** 15)
    lo, hi = beats.kaldi_mel(20.0), beats.kaldi_mel(8000.0)
    centres = lo + (hi - lo) / 129 * np.arange(1, 129)
    expected = int(np.argmin(np.abs(centres - beats.kaldi_mel(1000.0))))
    assert abs(int(np.bincount(fb.argmax(1)).argmax()) - expected) <= 1
    assert beats.kaldi_fbank(np.zeros(399)).shape == (0, 128)
    assert beats.kaldi_fbank(np.ones(400 + 160 * 7)).shape == (8, 128)
    norm = beats.beats_fbank(tone)
    assert np.allclose(norm, (fb - 15.41663) / (2 * 6.55582), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# The network against the original's formulation
# ---------------------------------------------------------------------------------------------


def _buckets_original(q_len, k_len, num_buckets, max_distance):
    """Bidirectional relative-position buckets in the original's order of operations."""
    context = torch.arange(q_len, dtype=torch.long)[:, None]
    memory = torch.arange(k_len, dtype=torch.long)[None, :]
    rel = memory - context
    num_buckets //= 2
    out = (rel > 0).to(torch.long) * num_buckets
    rel = torch.abs(rel)
    max_exact = num_buckets // 2
    small = rel < max_exact
    with np.errstate(all="ignore"):
        large = max_exact + (torch.log(rel.float() / max_exact) / math.log(max_distance / max_exact)
                             * (num_buckets - max_exact)).to(torch.long)
    large = torch.min(large, torch.full_like(large, num_buckets - 1))
    return out + torch.where(small, rel, large)


def _reference_hidden(model, cfg, fbank):
    """Hidden states computed as the original code lays them out: (T, B, C), heads folded into
    the batch, q scaled by 1/(sqrt(d) * 32), scores shifted by their row max and multiplied by 32,
    the gate from the query view times 32 * sqrt(d), the bias repeated per batch item."""
    F = torch.nn.functional
    enc = model.encoder
    x = F.conv2d(fbank.unsqueeze(1), model.patch_embedding.weight, model.patch_embedding.bias, stride=model.patch)
    x = x.reshape(x.shape[0], x.shape[1], -1).transpose(1, 2)
    x = model.layer_norm(x)
    if model.post_extract_proj is not None:
        x = model.post_extract_proj(x)
    pc = enc.pos_conv[0]
    weight = torch._weight_norm(pc.weight_v, pc.weight_g, 2)
    conv = F.conv1d(x.transpose(1, 2), weight, pc.bias, padding=pc.kernel // 2, groups=pc.groups)
    conv = F.gelu(conv[:, :, :-1] if pc.kernel % 2 == 0 else conv)
    x = enc.layer_norm(x + conv.transpose(1, 2))
    hidden = [x]
    x = x.transpose(0, 1)
    t, b, c = x.shape
    h = cfg["encoder_attention_heads"]
    d = c // h
    scaling, alpha = d ** -0.5, 32
    table = enc.layers[0].self_attn.relative_attention_bias
    bias = table(_buckets_original(t, t, cfg["num_buckets"], cfg["max_distance"])).permute([2, 0, 1])
    bias = bias.unsqueeze(0).repeat(b, 1, 1, 1).view(b * h, t, t)
    dn = (2.0 * cfg["encoder_layers"]) ** 0.25
    for layer in enc.layers:
        att = layer.self_attn
        residual = x
        q = att.q_proj(x) * scaling / alpha
        k, v = att.k_proj(x), att.v_proj(x)
        q = q.contiguous().view(t, b * h, d).transpose(0, 1)
        k = k.contiguous().view(t, b * h, d).transpose(0, 1)
        v = v.contiguous().view(t, b * h, d).transpose(0, 1)
        w = torch.bmm(q, k.transpose(1, 2))
        w = (w - w.max(dim=-1, keepdim=True)[0]) * alpha
        query = q.view(b, h, t, d) * alpha / scaling
        ga, gb = torch.sigmoid(att.grep_linear(query).view(b, h, t, 2, 4).sum(-1)).chunk(2, dim=-1)
        gate = ga * (gb * att.grep_a - 1.0) + 2.0
        w = w + (gate.view(b * h, t, 1) * bias).view(w.size())
        a = torch.bmm(F.softmax(w, dim=-1), v).transpose(0, 1).contiguous().view(t, b, c)
        x = layer.self_attn_layer_norm(residual * dn + att.out_proj(a))
        residual = x
        x = layer.fc2(F.gelu(layer.fc1(x)))
        x = layer.final_layer_norm(residual * dn + x)
        hidden.append(x.transpose(0, 1))
    return hidden


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return beats.build_untrained(CONFIGS / "beats-tiny", tmp_path_factory.mktemp("beats") / "tiny", seed=0)


def test_hidden_states_equal_the_original_formulation(tiny):
    cfg, state = beats.read_checkpoint(tiny / "BEATs.pt")
    model = beats._build_network(cfg)
    beats.load_state(model, state, cfg["encoder_layers"])
    model.eval()
    short, long = clips()
    fbank = torch.from_numpy(np.stack([beats.beats_fbank(long[:24000]), beats.beats_fbank(long[6000:30000])]))
    with torch.no_grad():
        ours, logits = model(fbank)
        ref = _reference_hidden(model, cfg, fbank)
    assert len(ours) == cfg["encoder_layers"] + 1 == len(ref)
    assert ours[0].shape == (2, (fbank.shape[1] // 16) * 8, cfg["encoder_embed_dim"])
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert torch.allclose(a, b, atol=2e-5, rtol=1e-4), (i, float((a - b).abs().max()))
    assert torch.allclose(logits, model.predictor(ref[-1]).mean(1), atol=1e-5)
    assert torch.equal(beats.relative_buckets(50, 50, 32, 64), _buckets_original(50, 50, 32, 64))
    assert torch.equal(beats.relative_buckets(900, 900, 320, 800), _buckets_original(900, 900, 320, 800))


# ---------------------------------------------------------------------------------------------
# The released checkpoint layout, through the path a download takes
# ---------------------------------------------------------------------------------------------


RELEASED_KEYS = {  # parameter names of a released BEATs checkpoint (fine-tuned, 3 layers here)
    "patch_embedding.weight", "layer_norm.weight", "layer_norm.bias", "post_extract_proj.weight",
    "post_extract_proj.bias", "encoder.pos_conv.0.weight_g", "encoder.pos_conv.0.weight_v",
    "encoder.pos_conv.0.bias", "encoder.layer_norm.weight", "encoder.layer_norm.bias",
    "predictor.weight", "predictor.bias",
} | {f"encoder.layers.{i}.{k}" for i in range(3) for k in (
    "self_attn.k_proj.weight", "self_attn.k_proj.bias", "self_attn.v_proj.weight", "self_attn.v_proj.bias",
    "self_attn.q_proj.weight", "self_attn.q_proj.bias", "self_attn.out_proj.weight", "self_attn.out_proj.bias",
    "self_attn.relative_attention_bias.weight", "self_attn.grep_linear.weight", "self_attn.grep_linear.bias",
    "self_attn.grep_a", "self_attn_layer_norm.weight", "self_attn_layer_norm.bias", "fc1.weight", "fc1.bias",
    "fc2.weight", "fc2.bias", "final_layer_norm.weight", "final_layer_norm.bias")}


def test_control_is_written_in_the_released_layout(tiny):
    blob = torch.load(tiny / "BEATs.pt", weights_only=True)
    assert set(blob) == {"cfg", "model"} and set(blob["model"]) == RELEASED_KEYS
    assert blob["cfg"]["encoder_layers"] == 3 and blob["cfg"]["finetuned_model"] is True
    assert json.loads((tiny / "avprobe_build.json").read_text())["kind"] == "untrained"


def _released(tiny, tmp_path, *, cfg_only_non_default=False, drop=None):
    """A random checkpoint as Microsoft releases it (a plain dict, torch.save), with a known hash."""
    blob = torch.load(tiny / "BEATs.pt", weights_only=True)
    if drop:
        blob["model"].pop(drop)
    path = tmp_path / "BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt"
    torch.save({"cfg": dict(blob["cfg"]), "model": blob["model"]}, path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_released_checkpoint_loads_from_a_pinned_url(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("AVPROBE_CHECKPOINTS", str(tmp_path / "cache"))
    path, sha = _released(tiny, tmp_path)
    url = "https://example.org/share/BEATs/BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt?sv=1"
    spec = {"family": "beats", "towers": ["audio"], "source": url, "sha256": sha}
    with pytest.raises(ModelUnavailableError, match="prefetch_models"):
        load_model("beats", spec, device="cpu")  # not fetched yet: one line naming the fix
    cached = checkpoints.url_cache_path(url, sha)  # where prefetch_models puts it
    cached.parent.mkdir(parents=True)
    cached.write_bytes(path.read_bytes())
    adapter = load_model("beats", spec, device="cpu")
    control = load_model("ctrl", {"family": "beats", "towers": ["audio"], "kind": "untrained"},
                         model_dir=tiny, device="cpu")
    items = list(clips())
    got, want = adapter.embed("audio", items), control.embed("audio", items)
    assert list(got) == ["0", "1", "2", "3", "logits"]
    for layer in got:
        assert np.array_equal(got[layer], want[layer]), layer
    prov = adapter.provenance()
    assert prov["kind"] == "pretrained" and control.provenance()["kind"] == "untrained"
    assert prov["checkpoint"]["sha256"] == sha and prov["revision"] == "sha256:" + sha[:16]
    assert prov["licence"].startswith("MIT")


def test_released_checkpoint_loads_from_the_hub_cache(tiny, tmp_path, monkeypatch):
    """``hf://owner/repo/file``: read from the Hugging Face cache layout, offline."""
    path, sha = _released(tiny, tmp_path)
    hub = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hub / "models--someone--beats-checkpoints"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (snap / "BEATs_iter3.pt").write_bytes(path.read_bytes())
    spec = {"family": "beats", "towers": ["audio"], "source": "hf://someone/beats-checkpoints/BEATs_iter3.pt"}
    adapter = load_model("beats", spec, device="cpu")
    assert adapter.checkpoint_sha256 == sha
    with pytest.raises(ModelUnavailableError, match="pins"):
        load_model("beats", {**spec, "sha256": "0" * 64}, device="cpu")


def test_a_checkpoint_that_does_not_match_its_cfg_is_refused(tiny, tmp_path):
    path, _ = _released(tiny, tmp_path, drop="encoder.layers.1.self_attn.grep_a")
    with pytest.raises(ValueError, match="missing.*grep_a"):
        load_model("beats", {"family": "beats", "source": str(path)}, device="cpu")
    with pytest.raises(ValueError, match="not a BEATs checkpoint"):
        torch.save({"model": {}}, tmp_path / "bare.pt")
        load_model("beats", {"family": "beats", "source": str(tmp_path / "bare.pt")}, device="cpu")
