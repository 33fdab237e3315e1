"""ImageBind (optional, CC-BY-NC-SA): its preprocessing without torchvision/torchaudio, the text
tower's causal end-of-text readout, the released state-dict layout (with the depth, thermal and
IMU entries a real file has) loaded through a pinned URL, and the licence in provenance."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from avprobe.models import checkpoints, load_model  # noqa: E402
from avprobe.models import imagebind as ib  # noqa: E402
from avprobe.models.beats import kaldi_fbank  # noqa: E402
from model_inputs import CONFIGS, clips  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return ib.build_untrained(CONFIGS / "imagebind-tiny", tmp_path_factory.mktemp("imagebind") / "tiny", seed=0)


@pytest.fixture(scope="module")
def adapter(tiny):
    return load_model("ib", {"family": "imagebind", "kind": "untrained"}, model_dir=tiny, device="cpu")


def test_image_preprocessing_resizes_the_short_side_and_centre_crops():
    flat = np.full((224, 224, 3), 128, np.uint8)
    x = ib.image_tensor(flat)
    assert x.shape == (3, 224, 224)
    assert np.allclose(x[:, 0, 0], (128 / 255 - ib.IMAGE_MEAN) / ib.IMAGE_STD, atol=1e-6)
    tall = np.zeros((120, 90, 3), np.uint8)  # resized to 224 x 298, rows 37..260 kept
    tall[:, :, 0] = np.arange(120)[:, None] * 2
    y = ib.image_tensor(tall)
    assert y.shape == (3, 224, 224)
    red = y[0] * ib.IMAGE_STD[0] + ib.IMAGE_MEAN[0]
    assert red[:, 100].argmin() == 0 and red[:, 100].argmax() == 223  # a vertical ramp, cropped evenly
    assert abs(red[112, 100] - 119 / 255) < 0.03  # the centre row keeps the centre value (~row 60 of 120)


def test_hann_fbank_equals_kaldi_native_fbank():
    knf = pytest.importorskip("kaldi_native_fbank")
    rng = np.random.default_rng(2)
    wave = rng.standard_normal(16000) * 0.1
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = "hanning"
    opts.mel_opts.num_bins = 80
    fb = knf.OnlineFbank(opts)
    fb.accept_waveform(16000, wave.astype(np.float32).tolist())
    fb.input_finished()
    ref = np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)])
    assert np.abs(kaldi_fbank(wave, num_mel_bins=80, window="hanning") - ref).max() < 3e-4


def test_audio_clips_are_evenly_spaced_2s_windows():
    short = clips()[0]  # 0.44 s: one window, repeated three times, zero-padded to 204 frames
    x = ib.audio_clips(short)
    assert x.shape == (3, 1, 128, 204)
    assert np.array_equal(x[0], x[1]) and np.array_equal(x[0], x[2])
    frames = 1 + (len(short) - 400) // 160
    assert np.allclose(x[0, 0, :, frames:], (0 - ib.AUDIO_MEAN) / ib.AUDIO_STD)
    rng = np.random.default_rng(3)
    long = rng.standard_normal(5 * 16000) * 0.1  # starts at 0, 1.5 and 3 s
    y = ib.audio_clips(long)
    third = long[48000:80000]
    fbank = kaldi_fbank(third - third.mean(), window="hanning").T  # 198 frames, zero-padded to 204
    assert fbank.shape == (128, 198)
    want = (np.pad(fbank, ((0, 0), (0, 6))) - ib.AUDIO_MEAN) / ib.AUDIO_STD
    assert np.allclose(y[2, 0], want, atol=1e-5)


def test_text_reads_the_end_of_text_token_and_ignores_what_follows(adapter):
    ids, lengths = adapter.tokens(["kiki", "bouba"])
    assert ids.shape == (2, 77) and lengths.tolist() == [6, 7]  # start + letters + end
    with torch.no_grad():
        z = adapter.model("text", ids, lengths - 1)
        changed = ids.clone()
        changed[:, 10:] = 3  # tokens after the end-of-text token: causal attention never sees them
        assert torch.allclose(adapter.model("text", changed, lengths - 1), z, atol=1e-6)
    got = adapter.embed("text", ["kiki", "bouba"])
    assert np.allclose(got["joint"], z.numpy(), atol=1e-6)
    scale = float(adapter.model.modality_postprocessors["text"][1].log_logit_scale.detach().exp())
    assert np.allclose(np.linalg.norm(got["joint"], axis=1), scale, rtol=1e-5)


def test_audio_joint_is_the_mean_of_its_clips_scaled_unit_vectors(adapter):
    got = adapter.embed("audio", list(clips()))["joint"]
    assert np.allclose(np.linalg.norm(got[0]), 20.0, rtol=1e-5)  # three equal clips: norm kept


def _released(tiny, tmp_path):
    """The control's weights as Meta's file holds them, plus entries of the towers not read here."""
    state = torch.load(tiny / "imagebind.pth", weights_only=True)
    state["modality_trunks.depth.blocks.0.norm_1.weight"] = torch.ones(4)
    state["modality_preprocessors.imu.cls_token"] = torch.zeros(1, 1, 4)
    path = tmp_path / "imagebind_huge.pth"
    torch.save(state, path)
    return state, path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_released_layout_loads_from_a_pinned_url(tiny, adapter, tmp_path, monkeypatch):
    state, path, sha = _released(tiny, tmp_path)
    for key in ("modality_preprocessors.vision.rgbt_stem.proj.1.weight", "modality_preprocessors.text.mask",
                "modality_preprocessors.audio.rgbt_stem.norm_layer.weight",
                "modality_trunks.vision.pre_transformer_layer.0.weight",
                "modality_trunks.audio.blocks.0.attn.bias_k", "modality_trunks.text.blocks.1.attn.in_proj_weight",
                "modality_heads.vision.2.weight", "modality_heads.text.proj.1.weight",
                "modality_postprocessors.text.1.log_logit_scale", "modality_postprocessors.audio.1.log_logit_scale"):
        assert key in state, key
    assert state["modality_preprocessors.vision.rgbt_stem.proj.1.weight"].shape[1:] == (3, 2, 14, 14)
    assert state["modality_preprocessors.audio.pos_embedding_helper.pos_embed"].shape[1] == 1 + 12 * 19
    monkeypatch.setenv("AVPROBE_CHECKPOINTS", str(tmp_path / "cache"))
    url = "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth"
    cached = checkpoints.url_cache_path(url, sha)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(path.read_bytes())
    # the tokenizer of the tiny control stands in for CLIP's (a real run prefetches it)
    spec = {"family": "imagebind", "source": url, "sha256": sha, "tokenizer": str(tiny)}
    with pytest.raises(ValueError, match="architecture"):
        load_model("ib", spec, device="cpu")  # imagebind_huge's widths are not the tiny file's
    monkeypatch.setattr(ib, "HUGE", {**ib.HUGE, **{k: v for k, v in adapter.cfg.items() if k in ib.HUGE}})
    pretrained = load_model("ib", spec, device="cpu")
    for tower, items in (("image", [np.zeros((50, 60, 3), np.uint8)]), ("audio", [clips()[1]]), ("text", ["bouba"])):
        a, b = pretrained.embed(tower, items), adapter.embed(tower, items)
        for layer in a:
            assert np.array_equal(a[layer], b[layer]), (tower, layer)
    prov = pretrained.provenance()
    assert prov["kind"] == "pretrained" and "CC-BY-NC-SA" in prov["licence"]
    assert adapter.provenance()["kind"] == "untrained"


def test_not_a_default_dependency():
    import yaml

    from workflow_cli import ROOT

    for name in ("config.yaml", "config/paper.yaml", "config/seed001.yaml"):
        models = yaml.safe_load((ROOT / name).read_text()).get("models", {})
        assert all(m.get("family") != "imagebind" for m in models.values()), name
