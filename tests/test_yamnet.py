"""YAMNet: the TensorFlow-defined log-mel front end (hand-computed properties), TF ``SAME``
padding, the layers against the network's own per-patch outputs, the release file's bare state
dict loaded through a pinned URL, and (when the package is importable) equality with the MIT torch
port's own ``YAMNet`` module."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from avprobe.models import ModelUnavailableError, checkpoints, load_model  # noqa: E402
from avprobe.models import yamnet  # noqa: E402
from model_inputs import CONFIGS, clips  # noqa: E402


def test_mel_matrix_follows_tensorflow_definition():
    w = yamnet.mel_weights()
    assert w.shape == (257, 64) and not w[0].any()
    freqs = np.arange(257) * 8000 / 256
    assert not w[freqs <= 125.0].any() and not w[freqs >= 7500.0].any()  # edges are exclusive
    assert (w.max(0) > 0).all()
    edges = np.linspace(yamnet.htk_mel(125.0), yamnet.htk_mel(7500.0), 66)
    mel = yamnet.htk_mel(freqs)
    for band in (0, 20, 63):  # the heaviest bin of a band is the one nearest its centre in mel
        nearest = int(np.argmin(np.abs(mel - edges[band + 1])))
        assert int(np.argmax(w[:, band])) == nearest
        # a triangle: 1 at the centre, linear in mel to 0 at both edges
        i = nearest
        expected = min((mel[i] - edges[band]) / (edges[band + 1] - edges[band]),
                       (edges[band + 2] - mel[i]) / (edges[band + 2] - edges[band + 1]))
        assert w[i, band] == pytest.approx(expected)


@pytest.mark.parametrize("n,hop,patches", [(1, 0.48, 1), (15600, 0.48, 1), (15601, 0.48, 2), (16000, 0.48, 2),
                                           (23280, 0.48, 2), (23281, 0.48, 3), (16000, 0.96, 2)])
def test_padding_gives_whole_patches(n, hop, patches):
    assert yamnet.log_mel_patches(np.zeros(n), hop).shape == (patches, 96, 64)


def test_log_mel_hand_computed():
    assert np.allclose(yamnet.log_mel(np.zeros(15600)), np.log(0.001))
    t = np.arange(15600) / 16000
    spec = yamnet.log_mel(np.sin(2 * np.pi * 1000.0 * t))
    assert spec.shape == (96, 64)
    edges = np.linspace(yamnet.htk_mel(125.0), yamnet.htk_mel(7500.0), 66)
    expected = int(np.argmin(np.abs(edges[1:-1] - yamnet.htk_mel(1000.0))))
    assert abs(int(np.bincount(spec.argmax(1)).argmax()) - expected) <= 1
    # magnitude (not power) of a periodic-Hann windowed unit tone: ~ sum(window) / 2 = 100
    frame = np.sin(2 * np.pi * 1000.0 * t[:400]) * (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400))
    assert np.abs(np.fft.rfft(frame, 512)).max() == pytest.approx(100.0, rel=0.05)


def test_same_padding_matches_tensorflow():
    """TF SAME: stride 1 pads 1 on each side of a 3x3; stride 2 on an even size pads only the end."""
    net = yamnet._build_network([4] * 14, 3).eval()
    block = net.layer1.fused  # conv 3x3 stride 2
    x = torch.randn(2, 1, 96, 64)
    with torch.no_grad():
        got = block.conv(torch.nn.functional.pad(x, [0, 1, 0, 1]))
        want = torch.nn.functional.conv2d(x, block.conv.weight, stride=2, padding=0)
        assert got.shape == (2, 4, 48, 32) and want.shape == (2, 4, 47, 31)
        assert torch.allclose(block(x), torch.relu(block.bn(got)))
        odd = torch.randn(1, 1, 7, 5)  # odd sizes, stride 2: total padding 2, split evenly
        assert torch.allclose(block(odd), torch.relu(block.bn(block.conv(torch.nn.functional.pad(odd, [1, 1, 1, 1])))))
        sep = net.layer2.depthwise_conv  # stride 1
        y = torch.randn(1, 4, 9, 6)
        ref = torch.nn.functional.conv2d(y, sep.conv.weight, padding=1, groups=4)
        assert torch.allclose(sep(y), torch.relu(sep.bn(ref)))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return yamnet.build_untrained(CONFIGS / "yamnet-tiny", tmp_path_factory.mktemp("yamnet") / "tiny", seed=0)


def test_layers_are_the_networks_own_outputs(tiny):
    adapter = load_model("y", {"family": "yamnet", "towers": ["audio"], "kind": "untrained"}, model_dir=tiny, device="cpu")
    assert adapter.layers("audio") == [str(i) for i in range(15)] + ["logits"]
    wave = clips()[1]  # 30000 samples: 3 patches
    got = adapter.embed("audio", [wave])
    patches = torch.from_numpy(yamnet.log_mel_patches(wave))
    assert patches.shape[0] == 3
    with torch.no_grad():
        blocks, logits = adapter.model(patches)
    assert np.allclose(got["0"][0], patches.mean((0, 1)).numpy(), atol=1e-6)
    for i in range(1, 15):
        assert np.allclose(got[str(i)][0], blocks[i - 1].mean((0, 2, 3)).numpy(), atol=1e-6), i
    embedding = blocks[-1].mean((2, 3))  # YAMNet's per-patch 1024-d embedding (32 here)
    assert np.allclose(got["14"][0], embedding.mean(0).numpy(), atol=1e-6)
    assert np.allclose(got["logits"][0], adapter.model.classifier(embedding).mean(0).detach().numpy(), atol=1e-5)
    assert adapter.provenance()["kind"] == "untrained"


def test_release_file_loads_from_a_pinned_url(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("AVPROBE_CHECKPOINTS", str(tmp_path / "cache"))
    state = torch.load(tiny / "yamnet.pth", weights_only=True)
    assert "layer1.fused.conv.weight" in state and "layer14.pointwise_conv.bn.running_var" in state
    assert "classifier.weight" in state and len(state) == 6 + 13 * 12 + 2  # conv + 5 bn entries per conv
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}  # some exports drop it
    release = tmp_path / "yamnet.pth"
    torch.save(state, release)
    sha = hashlib.sha256(release.read_bytes()).hexdigest()
    url = "https://github.com/w-hc/torch_audioset/releases/download/v0.1/yamnet.pth"
    spec = {"family": "yamnet", "towers": ["audio"], "source": url, "sha256": sha}
    with pytest.raises(ModelUnavailableError, match="prefetch_models"):
        load_model("yamnet", spec, device="cpu")
    cached = checkpoints.url_cache_path(url, sha)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(release.read_bytes())
    adapter = load_model("yamnet", spec, device="cpu")
    control = load_model("c", {"family": "yamnet", "kind": "untrained"}, model_dir=tiny, device="cpu")
    items = list(clips())
    got, want = adapter.embed("audio", items), control.embed("audio", items)
    for layer in got:
        assert np.array_equal(got[layer], want[layer]), layer
    assert adapter.provenance()["checkpoint"]["sha256"] == sha
    broken = dict(state)
    broken.pop("layer7.depthwise_conv.bn.running_mean")
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="missing.*layer7"):
        load_model("yamnet", {"family": "yamnet", "source": str(tmp_path / "broken.pth")}, device="cpu")


def _port_module():
    """The torch port's model.py, imported with a stand-in torchaudio (its package __init__
    imports the torchaudio-based input processing, which the network does not use)."""
    spec = importlib.util.find_spec("torch_vggish_yamnet")
    if spec is None:
        pytest.skip("torch-vggish-yamnet is not installed (optional: pip install --no-deps torch-vggish-yamnet)")
    if importlib.util.find_spec("torchaudio") is None:
        fake = types.ModuleType("torchaudio")
        fake.transforms = types.ModuleType("torchaudio.transforms")
        fake.transforms.MelSpectrogram = type("MelSpectrogram", (), {})
        sys.modules.setdefault("torchaudio", fake)
        sys.modules.setdefault("torchaudio.transforms", fake.transforms)
    from torch_vggish_yamnet.yamnet import model

    return model


def test_network_equals_the_torch_port():
    port = _port_module().YAMNet().eval()
    torch.manual_seed(0)
    state = {k: (torch.rand_like(v) + 0.5 if "running_var" in k else torch.randn_like(v) * 0.1)
             if v.is_floating_point() else v for k, v in port.state_dict().items()}
    port.load_state_dict(state)
    ours = yamnet._build_network(*yamnet.architecture_of(state)).eval()
    ours.load_state_dict(state)
    x = torch.randn(3, 96, 64)
    with torch.no_grad():
        embedding, logits = port(x.unsqueeze(1))
        blocks, our_logits = ours(x)
    assert torch.equal(embedding.flatten(1), blocks[-1].mean((2, 3)))
    assert torch.equal(logits, our_logits)
