"""YAMNet (Plakal & Ellis 2020, tensorflow/models ``research/audioset/yamnet``, Apache-2.0): a
MobileNet-v1 AudioSet classifier, written here in plain torch, reading the MIT torch port's
weights (``yamnet.pth``, a release file of github w-hc/torch_audioset, also what the package
``torch-vggish-yamnet`` downloads).

Why not the package's ``model.py``: importing it runs ``torch_vggish_yamnet/yamnet/__init__.py``,
which imports the package's input processing, which imports torchaudio (absent here; installing
the package would pull torchaudio and with it another torch). The network is 30 lines, so it is
written here with the port's parameter names, and the front end follows the TensorFlow original.

Checkpoint layout (the release file is a bare state dict)::

    layer1.fused.conv.weight          (32, 1, 3, 3)       + layer1.fused.bn.{weight,bias,running_mean,running_var,num_batches_tracked}
    layer<i>.depthwise_conv.conv.weight (C, 1, 3, 3)      + .depthwise_conv.bn.*      i = 2..14
    layer<i>.pointwise_conv.conv.weight (C', C, 1, 1)     + .pointwise_conv.bn.*
    classifier.{weight,bias}          (521, 1024), (521,)

Widths are read from the file; strides are YAMNet's (2 at blocks 1, 3, 5, 7, 13). Convolutions
use TensorFlow's ``SAME`` padding (the extra row/column, if any, on the bottom/right), batch norm
eps 1e-4, ReLU after every norm.

Front end (:func:`log_mel_patches`, YAMNet's ``features.py``): the 16 kHz waveform zero-padded
so that it fills a whole number of patches (:func:`pad_waveform`), magnitude STFT (25 ms periodic
Hann windows every 10 ms, 512-point FFT, no centring), 64 mel bands 125-7500 Hz (TensorFlow's
``linear_to_mel_weight_matrix``: HTK mel, slopes in mel, the DC bin unused), ``log(mel + 0.001)``,
then 0.96 s patches (96 frames x 64 bands) every ``patch_hop_seconds`` (YAMNet's 0.48 s).

Layers: ``"0"`` (the log-mel patches: the mean log-mel per band), ``"1".."14"`` (each block's
output, ReLU'd, pooled over patches, time and frequency; ``"14"`` is YAMNet's 1024-d embedding,
seed 001's layers 1-14) and ``logits`` (the 521 AudioSet logits of each patch, averaged over
patches, before the sigmoid; seed 001's "layer 15").
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from .base import pool
from .ptcheckpoint import CheckpointAdapter, load_torch_file, write_control

SAMPLE_RATE = 16000
WINDOW, HOP, FFT = 400, 160, 512          # 25 ms, 10 ms, next power of two
N_MELS, MEL_MIN, MEL_MAX = 64, 125.0, 7500.0
LOG_OFFSET = 0.001
PATCH_FRAMES = 96                          # 0.96 s
PATCH_HOP_SECONDS = 0.48
#: YAMNet's blocks: (stride, filters); block 1 is a full conv, 2..14 depthwise-separable.
BLOCKS = ((2, 32), (1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512), (1, 512), (1, 512),
          (1, 512), (1, 512), (1, 512), (2, 1024), (1, 1024))
N_CLASSES = 521
BN_EPS = 1e-4


# ---------------------------------------------------------------------------------------------
# Front end (numpy, float64)
# ---------------------------------------------------------------------------------------------


def htk_mel(f):
    """HTK mel scale as TensorFlow writes it: ``1127 ln(1 + f / 700)``."""
    return 1127.0 * np.log1p(np.asarray(f, dtype=np.float64) / 700.0)


def mel_weights(num_mel_bins: int = N_MELS, num_spectrogram_bins: int = FFT // 2 + 1,
                sample_rate: float = SAMPLE_RATE, lower: float = MEL_MIN, upper: float = MEL_MAX) -> np.ndarray:
    """``(num_spectrogram_bins, num_mel_bins)``: tf.signal.linear_to_mel_weight_matrix (bands
    equally spaced in mel, triangles with slopes in mel, row 0 (DC) zero)."""
    freqs = np.linspace(0.0, sample_rate / 2.0, num_spectrogram_bins)[1:]
    mel = htk_mel(freqs)[:, None]
    edges = np.linspace(htk_mel(lower), htk_mel(upper), num_mel_bins + 2)
    left, centre, right = edges[:-2], edges[1:-1], edges[2:]
    w = np.maximum(0.0, np.minimum((mel - left) / (centre - left), (right - mel) / (right - centre)))
    return np.vstack([np.zeros((1, num_mel_bins)), w])


def pad_waveform(wave: np.ndarray, patch_hop_seconds: float = PATCH_HOP_SECONDS) -> np.ndarray:
    """Zero-pad at the end to one whole patch (15600 samples), plus a whole number of patch hops
    for any samples beyond it (YAMNet's ``pad_waveform``)."""
    first = WINDOW + (PATCH_FRAMES - 1) * HOP
    hop = int(round(patch_hop_seconds * SAMPLE_RATE))
    n = max(len(wave), first)
    n = first + math.ceil((n - first) / hop) * hop
    return np.pad(wave, (0, n - len(wave)))


def log_mel(wave: np.ndarray) -> np.ndarray:
    """``(frames, 64)`` log mel magnitude spectrogram, frames = 1 + (N - 400) // 160."""
    wave = np.asarray(wave, dtype=np.float64)
    n_frames = 1 + (len(wave) - WINDOW) // HOP
    index = np.arange(WINDOW)[None, :] + HOP * np.arange(n_frames)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WINDOW) / WINDOW)  # periodic Hann
    magnitude = np.abs(np.fft.rfft(wave[index] * window, n=FFT, axis=1))
    return np.log(magnitude @ mel_weights() + LOG_OFFSET)


def log_mel_patches(wave: np.ndarray, patch_hop_seconds: float = PATCH_HOP_SECONDS) -> np.ndarray:
    """``(patches, 96, 64)`` float32 log-mel patches of one 16 kHz waveform in [-1, 1]."""
    spec = log_mel(pad_waveform(np.asarray(wave, np.float64), patch_hop_seconds))
    hop = int(round(patch_hop_seconds * SAMPLE_RATE / HOP))
    n = 1 + (len(spec) - PATCH_FRAMES) // hop
    index = np.arange(PATCH_FRAMES)[None, :] + hop * np.arange(n)[:, None]
    return spec[index].astype(np.float32)


# ---------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------


def _build_network(filters: list[int], n_classes: int):
    import torch  # noqa: F401
    from torch import nn
    from torch.nn import functional as F

    if len(filters) != len(BLOCKS):
        raise ValueError(f"YAMNet has {len(BLOCKS)} blocks, got {len(filters)} widths")

    class ConvBN(nn.Module):
        """Conv (TF SAME padding, no bias) → BatchNorm(eps 1e-4) → ReLU; keys ``conv``, ``bn``."""

        def __init__(self, cin, cout, kernel, stride, groups=1):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, groups=groups, bias=False)
            self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)
            self.stride, self.kernel = stride, kernel

        def forward(self, x):
            pads = []
            for size in (x.shape[3], x.shape[2]):  # F.pad order: last dim first
                out = -(-size // self.stride)
                total = max(0, (out - 1) * self.stride + self.kernel - size)
                pads += [total // 2, total - total // 2]
            return F.relu(self.bn(self.conv(F.pad(x, pads))))

    class Full(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.fused = ConvBN(cin, cout, 3, stride)

        def forward(self, x):
            return self.fused(x)

    class Separable(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.depthwise_conv = ConvBN(cin, cin, 3, stride, groups=cin)
            self.pointwise_conv = ConvBN(cin, cout, 1, 1)

        def forward(self, x):
            return self.pointwise_conv(self.depthwise_conv(x))

    class YAMNet(nn.Module):
        def __init__(self):
            super().__init__()
            cin = 1
            for i, ((stride, _), cout) in enumerate(zip(BLOCKS, filters), start=1):
                self.add_module(f"layer{i}", (Full if i == 1 else Separable)(cin, cout, stride))
                cin = cout
            self.classifier = nn.Linear(cin, n_classes)

        def forward(self, patches):
            """``(P, 96, 64)`` → block outputs [(P, C_i, h_i, w_i)] * 14, logits (P, classes)."""
            x = patches.unsqueeze(1)
            blocks = []
            for i in range(1, len(BLOCKS) + 1):
                x = getattr(self, f"layer{i}")(x)
                blocks.append(x)
            return blocks, self.classifier(x.mean(dim=(2, 3)))

    return YAMNet()


def architecture_of(state: Mapping) -> tuple[list[int], int]:
    """Block widths and class count read from a state dict in the release layout."""
    try:
        filters = [int(state["layer1.fused.conv.weight"].shape[0])]
        filters += [int(state[f"layer{i}.pointwise_conv.conv.weight"].shape[0]) for i in range(2, len(BLOCKS) + 1)]
        classes = int(state["classifier.weight"].shape[0])
    except KeyError as err:
        raise ValueError(f"not a YAMNet state dict in the torch port's layout (no {err})") from None
    return filters, classes


def read_checkpoint(path):
    """``(network, state)`` of a ``yamnet.pth`` file, loaded strictly (``num_batches_tracked``,
    which some exports drop, may be missing)."""
    state = load_torch_file(path)
    if isinstance(state, Mapping) and "model" in state and not any(k.startswith("layer1.") for k in state):
        state = state["model"]
    state = dict(state)
    net = _build_network(*architecture_of(state))
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{path}: YAMNet state dict mismatch: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
    return net


def build_untrained(config_dir, out_dir, seed: int):
    """A seeded random YAMNet from ``config_dir/config.json`` (``filters``: 14 widths,
    ``num_classes``), written as the release file's bare state dict ``yamnet.pth``. Batch-norm
    statistics are drawn too (running mean N(0, 0.1), variance U(0.5, 1.5)) so the control
    exercises every parameter of the layout."""
    import json
    from pathlib import Path

    import torch

    cfg = json.loads((Path(config_dir) / "config.json").read_text())
    torch.manual_seed(int(seed))
    net = _build_network(list(cfg.get("filters", [f for _, f in BLOCKS])), int(cfg.get("num_classes", N_CLASSES)))
    with torch.no_grad():
        for name, buf in net.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0.0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
    n = sum(p.numel() for p in net.parameters())
    return write_control(config_dir, out_dir, seed, "yamnet.pth", net.state_dict(), "YAMNet", n)


class YAMNetAdapter(CheckpointAdapter):
    family = "yamnet"
    natural_towers = ("audio",)
    licence = "MIT (torch port, github w-hc/torch_audioset); original model Apache-2.0 (tensorflow/models)"

    def __init__(self, name: str, spec: Mapping, model_dir=None, device: str = "auto") -> None:
        import torch

        super().__init__(name, spec, model_dir=model_dir, device=device)
        self.patch_hop = float(spec.get("patch_hop_seconds", PATCH_HOP_SECONDS))
        if not 0.01 <= self.patch_hop:
            raise ValueError(f"model {name!r}: patch_hop_seconds must be >= 0.01, got {self.patch_hop}")
        self.model = read_checkpoint(self.checkpoint_path).to(self.device).eval()
        self._torch = torch

    def input_sample_rate(self, tower="audio"):
        return SAMPLE_RATE

    def layers(self, tower):
        self.check_tower(tower)
        return [str(i) for i in range(len(BLOCKS) + 1)] + ["logits"]

    def _embed(self, tower, items, layers):
        torch = self._torch
        how = self.pooling(tower)
        patches = [log_mel_patches(w, self.patch_hop) for w in items]
        counts = [len(p) for p in patches]
        x = torch.from_numpy(np.concatenate(patches)).to(self.device)
        with torch.inference_mode():  # patches are independent: one forward for the whole batch
            blocks, logits = self.model(x)
        starts = np.cumsum([0] + counts)
        out = {}
        for name in layers:
            rows = []
            for s, e in zip(starts[:-1], starts[1:]):
                if name == "logits":
                    rows.append(logits[s:e].mean(0))
                    continue
                feat = x[s:e] if name == "0" else blocks[int(name) - 1][s:e].flatten(2).transpose(1, 2)
                # one token per patch position: (patches * positions, channels), then pool
                rows.append(pool(feat.reshape(1, -1, feat.shape[-1]), None, how)[0])
            out[name] = torch.stack(rows).float().cpu().numpy()
        return out

    def provenance(self) -> dict:
        out = super().provenance()
        out["architecture"] = "YAMNet"
        out["patch_hop_seconds"] = self.patch_hop
        return out
