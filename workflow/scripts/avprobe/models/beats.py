"""BEATs (Chen et al. 2022, "BEATs: Audio Pre-Training with Acoustic Tokenizers", arXiv:2212.09058):
a self-supervised audio transformer, written here in plain torch from the paper and the released
architecture (microsoft/unilm ``beats/``, MIT), reading the released ``.pt`` checkpoints.

Checkpoint layout (as released): ``{"cfg": {...}, "model": state_dict}`` where ``cfg`` holds the
architecture (keys of :data:`CFG_DEFAULTS`) and the state dict uses the original parameter names::

    patch_embedding.weight              (embed_dim, 1, P, P)  [+ .bias when conv_bias]
    layer_norm.{weight,bias}            (embed_dim,)            LayerNorm of the patch embeddings
    post_extract_proj.{weight,bias}     (D, embed_dim)          when embed_dim != D
    encoder.pos_conv.0.{weight_g,weight_v,bias}                 weight-normed (dim=2) grouped conv
    encoder.layer_norm.{weight,bias}
    encoder.layers.<i>.self_attn.{q,k,v,out}_proj.{weight,bias}
    encoder.layers.<i>.self_attn.relative_attention_bias.weight (num_buckets, H)  (shared: layer 0's)
    encoder.layers.<i>.self_attn.grep_linear.{weight,bias}, .grep_a   (gated relative position)
    encoder.layers.<i>.{self_attn_layer_norm,final_layer_norm,fc1,fc2}.{weight,bias}
    predictor.{weight,bias}             (classes, D)            fine-tuned checkpoints only

Front end (:func:`kaldi_fbank`, BEATs' ``preprocess``): the 16 kHz waveform scaled by 2**15, a
Kaldi filterbank (128 mel bins, 25 ms Povey windows every 10 ms, pre-emphasis 0.97, DC removal,
power spectrum, no dither, ``snip_edges``), normalised with BEATs' fixed statistics
``(fbank - 15.41663) / (2 * 6.55582)``. The network: 16x16 patches of the (frames, 128) fbank
(time-major, 8 frequency patches per time step), LayerNorm, a projection, a convolutional
relative position embedding, then ``encoder_layers`` transformer layers (post-LN with DeepNorm
residual scaling in the released models) whose attention adds a bucketed relative-position bias,
gated per query by the query itself (``gru_rel_pos``, as in WavLM).

Layers: ``"0"`` (the encoder input after the positional convolution and LayerNorm), ``"1".."N"``
(each transformer layer's output), and ``logits`` (fine-tuned checkpoints only: the AudioSet
classifier on every patch, averaged over patches, before the sigmoid, as BEATs' own forward).
Pooling is over patches (mean by default).

Each clip runs alone: a patch straddles a clip's end, so padding a batch would change the last
patches' values (BEATs' padding mask cannot undo that); clips shorter than one patch (16
frames, 2800 samples) are zero-padded to it.

Why not a package's fbank: ``kaldi-native-fbank`` (Kaldi's own check) refuses 128 mel bins at
16 kHz with a 512-point FFT, because the lowest bands contain no FFT bin; torchaudio's
``compliance.kaldi.fbank`` (which BEATs calls) keeps such bands at ``log(eps)``. This module
does the same and is tested against ``kaldi-native-fbank`` where that accepts the configuration
(tests/test_beats.py).
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from .base import pool
from .ptcheckpoint import CheckpointAdapter, load_torch_file, write_control

#: BEATs' fbank normalisation (BEATs.extract_features defaults).
FBANK_MEAN = 15.41663
FBANK_STD = 6.55582
SAMPLE_RATE = 16000
N_MELS = 128

#: BEATsConfig's defaults; a checkpoint's ``cfg`` overrides them (released ones set every key).
CFG_DEFAULTS = {
    "input_patch_size": 16, "embed_dim": 512, "conv_bias": False,
    "encoder_layers": 12, "encoder_embed_dim": 768, "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12, "activation_fn": "gelu",
    "layer_norm_first": False, "deep_norm": False,
    "conv_pos": 128, "conv_pos_groups": 16,
    "relative_position_embedding": False, "num_buckets": 320, "max_distance": 1280, "gru_rel_pos": False,
    "finetuned_model": False, "predictor_class": 527,
}


# ---------------------------------------------------------------------------------------------
# Front end: Kaldi filterbank (numpy, float64)
# ---------------------------------------------------------------------------------------------


def kaldi_mel(f):
    """Kaldi's mel scale: ``1127 ln(1 + f / 700)``."""
    return 1127.0 * np.log1p(np.asarray(f, dtype=np.float64) / 700.0)


def kaldi_mel_banks(num_bins: int, padded: int, sample_rate: float, low_freq: float = 20.0,
                    high_freq: float = 0.0) -> np.ndarray:
    """``(padded // 2 + 1, num_bins)`` triangular weights, Kaldi's MelBanks: bands equally spaced
    on :func:`kaldi_mel` between ``low_freq`` and ``high_freq`` (``<= 0``: relative to Nyquist),
    slopes in the mel domain, the Nyquist bin unused. A band containing no FFT bin stays zero
    (Kaldi refuses such a configuration; torchaudio, hence BEATs, accepts it)."""
    nyquist = 0.5 * sample_rate
    high = high_freq if high_freq > 0 else nyquist + high_freq
    if not 0.0 <= low_freq < high <= nyquist:
        raise ValueError(f"need 0 <= low_freq < high_freq <= {nyquist}, got {low_freq}, {high}")
    n_fft_bins = padded // 2
    mel_lo, mel_hi = kaldi_mel(low_freq), kaldi_mel(high)
    delta = (mel_hi - mel_lo) / (num_bins + 1)
    left = mel_lo + delta * np.arange(num_bins)
    centre, right = left + delta, left + 2 * delta
    mel = kaldi_mel(np.arange(n_fft_bins) * sample_rate / padded)[:, None]
    up = (mel - left) / (centre - left)
    down = (right - mel) / (right - centre)
    weights = np.where((mel > left) & (mel < right), np.where(mel <= centre, up, down), 0.0)
    return np.vstack([weights, np.zeros((1, num_bins))])


def kaldi_fbank(wave: np.ndarray, sample_rate: int = SAMPLE_RATE, num_mel_bins: int = N_MELS,
                frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0, preemphasis: float = 0.97,
                low_freq: float = 20.0, high_freq: float = 0.0, window: str = "povey") -> np.ndarray:
    """Kaldi ``compute-fbank-feats`` defaults without dither: ``(frames, num_mel_bins)`` log mel
    energies (natural log, floored at float32 eps) of a 1-D waveform in Kaldi's units (int16 range).

    Frames: ``1 + (N - L) // S`` (``snip_edges``; none if N < L), L = 25 ms, S = 10 ms; each frame
    has its mean removed, is pre-emphasised (``x[i] - 0.97 x[i-1]``, ``x[0] - 0.97 x[0]``),
    multiplied by the Povey window ``(0.5 - 0.5 cos(2 pi n / (L - 1)))**0.85`` (``window="hanning"``:
    the same without the power, Kaldi's and torchaudio's symmetric Hann), zero-padded to the
    next power of two; power spectrum; :func:`kaldi_mel_banks`.
    """
    if window not in ("povey", "hanning"):
        raise ValueError(f"window {window!r} is not povey or hanning")
    wave = np.asarray(wave, dtype=np.float64)
    length = int(round(sample_rate * frame_length_ms / 1000.0))
    shift = int(round(sample_rate * frame_shift_ms / 1000.0))
    padded = 1 << (length - 1).bit_length()
    n_frames = 0 if len(wave) < length else 1 + (len(wave) - length) // shift
    if n_frames == 0:
        return np.zeros((0, num_mel_bins), np.float64)
    index = np.arange(length)[None, :] + shift * np.arange(n_frames)[:, None]
    frames = wave[index]
    frames = frames - frames.mean(axis=1, keepdims=True)
    previous = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    frames = frames - preemphasis * previous
    taper = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(length) / (length - 1))
    window = taper ** 0.85 if window == "povey" else taper
    power = np.abs(np.fft.rfft(frames * window, n=padded, axis=1)) ** 2
    energies = power @ kaldi_mel_banks(num_mel_bins, padded, sample_rate, low_freq, high_freq)
    return np.log(np.maximum(energies, np.finfo(np.float32).eps))


def beats_fbank(wave: np.ndarray) -> np.ndarray:
    """BEATs' ``preprocess`` of one 16 kHz waveform in [-1, 1]: ``(frames, 128)`` float32."""
    fbank = kaldi_fbank(np.asarray(wave, np.float64) * 2 ** 15)
    return ((fbank - FBANK_MEAN) / (2 * FBANK_STD)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------


def relative_buckets(query_len: int, key_len: int, num_buckets: int, max_distance: int):
    """``(query_len, key_len)`` bucket of each offset ``key - query`` (T5/WavLM bidirectional
    buckets: half the buckets per sign; exact below ``num_buckets // 4``, logarithmic up to
    ``max_distance``, clipped)."""
    import torch

    rel = torch.arange(key_len)[None, :] - torch.arange(query_len)[:, None]
    half = num_buckets // 2
    buckets = (rel > 0).long() * half
    rel = rel.abs()
    exact = half // 2
    scaled = torch.log(rel.clamp(min=1).float() / exact) / math.log(max_distance / exact) * (half - exact)
    large = torch.clamp(exact + scaled.long(), max=half - 1)
    return buckets + torch.where(rel < exact, rel, large)


def _build_network(cfg: Mapping):
    import torch
    from torch import nn
    from torch.nn import functional as F

    activations = {"gelu": lambda x: F.gelu(x.float()).type_as(x), "relu": F.relu}
    if cfg["activation_fn"] not in activations:
        raise ValueError(f"BEATs activation_fn {cfg['activation_fn']!r} is not supported "
                         f"(one of {sorted(activations)})")
    act = activations[cfg["activation_fn"]]
    dim, heads = int(cfg["encoder_embed_dim"]), int(cfg["encoder_attention_heads"])
    n_layers = int(cfg["encoder_layers"])
    alpha = (2.0 * n_layers) ** 0.25 if cfg["deep_norm"] else 1.0

    class Attention(nn.Module):
        def __init__(self, first: bool):
            super().__init__()
            self.head_dim = dim // heads
            for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
                setattr(self, proj, nn.Linear(dim, dim))
            if cfg["relative_position_embedding"] and first:
                self.relative_attention_bias = nn.Embedding(int(cfg["num_buckets"]), heads)
            if cfg["gru_rel_pos"]:
                self.grep_linear = nn.Linear(self.head_dim, 8)
                self.grep_a = nn.Parameter(torch.ones(1, heads, 1, 1))

        def forward(self, x, bias):  # x (B, T, D); bias (H, T, T) or None
            b, t, _ = x.shape
            q, k, v = (getattr(self, p)(x).view(b, t, heads, self.head_dim).transpose(1, 2)
                       for p in ("q_proj", "k_proj", "v_proj"))
            scores = (q * self.head_dim ** -0.5) @ k.transpose(-1, -2)  # (B, H, T, T)
            if bias is not None:
                if cfg["gru_rel_pos"]:
                    # each query scales the position bias of its row: a*(b*grep_a - 1) + 2, with
                    # a, b sigmoid gates from the unscaled query (WavLM's gated relative position)
                    gates = torch.sigmoid(self.grep_linear(q).view(b, heads, t, 2, 4).sum(-1))
                    gate_a, gate_b = gates[..., :1], gates[..., 1:]
                    bias = (gate_a * (gate_b * self.grep_a - 1.0) + 2.0) * bias
                scores = scores + bias
            out = scores.softmax(-1) @ v
            return self.out_proj(out.transpose(1, 2).reshape(b, t, dim))

    class Layer(nn.Module):
        def __init__(self, first: bool):
            super().__init__()
            self.self_attn = Attention(first)
            self.self_attn_layer_norm = nn.LayerNorm(dim)
            self.fc1 = nn.Linear(dim, int(cfg["encoder_ffn_embed_dim"]))
            self.fc2 = nn.Linear(int(cfg["encoder_ffn_embed_dim"]), dim)
            self.final_layer_norm = nn.LayerNorm(dim)

        def forward(self, x, bias):
            if cfg["layer_norm_first"]:
                x = x + self.self_attn(self.self_attn_layer_norm(x), bias)
                return x + self.fc2(act(self.fc1(self.final_layer_norm(x))))
            x = self.self_attn_layer_norm(x * alpha + self.self_attn(x, bias))
            return self.final_layer_norm(x * alpha + self.fc2(act(self.fc1(x))))

    class PosConv(nn.Module):
        """Grouped conv with the old ``weight_norm(dim=2)`` parameters: weight = g * v / |v|,
        the norm taken over output and input channels for each kernel position."""

        def __init__(self):
            super().__init__()
            k, groups = int(cfg["conv_pos"]), int(cfg["conv_pos_groups"])
            self.kernel, self.groups = k, groups
            self.weight_v = nn.Parameter(torch.empty(dim, dim // groups, k))
            self.weight_g = nn.Parameter(torch.ones(1, 1, k))
            self.bias = nn.Parameter(torch.zeros(dim))

        def forward(self, x):  # (B, D, T)
            norm = self.weight_v.norm(dim=(0, 1), keepdim=True)
            y = F.conv1d(x, self.weight_g * self.weight_v / norm, self.bias,
                         padding=self.kernel // 2, groups=self.groups)
            if self.kernel % 2 == 0:  # SamePad: an even kernel gives one frame too many
                y = y[:, :, :-1]
            return F.gelu(y)

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            # a one-element list so the keys read ``pos_conv.0.*`` as in the released checkpoints
            # (there the conv is the first module of an nn.Sequential)
            self.pos_conv = nn.ModuleList([PosConv()])
            self.layers = nn.ModuleList([Layer(i == 0) for i in range(n_layers)])
            self.layer_norm = nn.LayerNorm(dim)

        def forward(self, x):
            """``x`` (B, T, D) → hidden states [(B, T, D)] * (layers + 1)."""
            x = x + self.pos_conv[0](x.transpose(1, 2)).transpose(1, 2)
            if not cfg["layer_norm_first"]:
                x = self.layer_norm(x)
            bias = None
            if cfg["relative_position_embedding"]:
                # one bias for every layer, from layer 0's table (the released model shares it)
                buckets = relative_buckets(x.shape[1], x.shape[1], int(cfg["num_buckets"]), int(cfg["max_distance"]))
                bias = self.layers[0].self_attn.relative_attention_bias(buckets.to(x.device)).permute(2, 0, 1)
            hidden = [x]
            for layer in self.layers:
                x = layer(x, bias)
                hidden.append(x)
            if cfg["layer_norm_first"]:  # pre-LN: the encoder's final norm belongs to its output
                hidden[-1] = self.layer_norm(hidden[-1])
            return hidden

    class BEATs(nn.Module):
        def __init__(self):
            super().__init__()
            embed, patch = int(cfg["embed_dim"]), int(cfg["input_patch_size"])
            if N_MELS % patch:
                raise ValueError(f"BEATs input_patch_size {patch} must divide the {N_MELS} mel bins")
            self.patch = patch
            self.patch_embedding = nn.Conv2d(1, embed, kernel_size=patch, stride=patch, bias=bool(cfg["conv_bias"]))
            self.layer_norm = nn.LayerNorm(embed)
            self.post_extract_proj = nn.Linear(embed, dim) if embed != dim else None
            self.encoder = Encoder()
            self.predictor = nn.Linear(dim, int(cfg["predictor_class"])) if cfg["finetuned_model"] else None

        def forward(self, fbank):
            """``fbank`` (B, frames, 128) normalised → (hidden states, logits or None)."""
            x = self.patch_embedding(fbank.unsqueeze(1))  # (B, E, frames // P, 128 // P)
            x = self.layer_norm(x.flatten(2).transpose(1, 2))  # (B, patches, E), time-major
            if self.post_extract_proj is not None:
                x = self.post_extract_proj(x)
            hidden = self.encoder(x)
            logits = self.predictor(hidden[-1]).mean(1) if self.predictor is not None else None
            return hidden, logits

    return BEATs()


def load_state(model, state: Mapping, n_layers: int) -> None:
    """Load a released state dict strictly; the relative-position table of layers 1.. (a shared
    module the original saves under every layer) must equal layer 0's and is dropped."""
    import torch

    state = dict(state)
    shared = "encoder.layers.0.self_attn.relative_attention_bias.weight"
    for i in range(1, n_layers):
        key = f"encoder.layers.{i}.self_attn.relative_attention_bias.weight"
        if key in state:
            if shared in state and not torch.equal(state[key], state[shared]):
                raise ValueError(f"BEATs checkpoint: {key} differs from layer 0's shared table")
            del state[key]
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"BEATs checkpoint does not match its cfg: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")


def read_checkpoint(path) -> tuple[dict, dict]:
    """``(cfg with defaults filled in, state dict)`` of a released BEATs ``.pt`` file."""
    blob = load_torch_file(path)
    if not isinstance(blob, Mapping) or "cfg" not in blob or "model" not in blob:
        raise ValueError(f"{path}: not a BEATs checkpoint (expected a dict with 'cfg' and 'model')")
    cfg = {**CFG_DEFAULTS, **dict(blob["cfg"])}
    return cfg, dict(blob["model"])


def checkpoint_state(model) -> dict:
    """The state dict in the released layout (layer 0's relative-position table under every layer)."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    shared = "encoder.layers.0.self_attn.relative_attention_bias.weight"
    if shared in state:
        n = len(model.encoder.layers)
        for i in range(1, n):
            state[f"encoder.layers.{i}.self_attn.relative_attention_bias.weight"] = state[shared].clone()
    return state


def build_untrained(config_dir, out_dir, seed: int):
    """A seeded random BEATs from ``config_dir/config.json`` (a ``cfg`` dict), written as a
    released checkpoint ``BEATs.pt`` = ``{"cfg", "model"}`` (see :mod:`.ptcheckpoint`)."""
    import json
    from pathlib import Path

    import torch

    cfg = {**CFG_DEFAULTS, **json.loads((Path(config_dir) / "config.json").read_text())}
    torch.manual_seed(int(seed))
    model = _build_network(cfg)
    with torch.no_grad():  # BERT-like init (the original's init_bert_params): N(0, 0.02), zero biases
        for name, p in model.named_parameters():
            if name.endswith("grep_a") or "layer_norm" in name or name.endswith("weight_g"):
                continue
            if name.endswith("bias") and p.dim() == 1:
                p.zero_()
            else:
                p.normal_(0.0, 0.02)
    payload = {"cfg": cfg, "model": checkpoint_state(model)}
    n = sum(p.numel() for p in model.parameters())
    return write_control(config_dir, out_dir, seed, "BEATs.pt", payload, "BEATs", n)


class BEATsAdapter(CheckpointAdapter):
    family = "beats"
    natural_towers = ("audio",)
    licence = "MIT (microsoft/unilm beats)"

    def __init__(self, name: str, spec: Mapping, model_dir=None, device: str = "auto") -> None:
        import torch

        super().__init__(name, spec, model_dir=model_dir, device=device)
        self.cfg, state = read_checkpoint(self.checkpoint_path)
        self.model = _build_network(self.cfg)
        load_state(self.model, state, int(self.cfg["encoder_layers"]))
        self.model.to(self.device).eval()
        self._torch = torch

    def input_sample_rate(self, tower="audio"):
        return SAMPLE_RATE

    def layers(self, tower):
        self.check_tower(tower)
        names = [str(i) for i in range(int(self.cfg["encoder_layers"]) + 1)]
        return names + (["logits"] if self.model.predictor is not None else [])

    def features(self, wave: np.ndarray):
        """``(hidden states [(1, patches, D)], logits (1, classes) or None)`` of one clip."""
        torch = self._torch
        minimum = int(0.025 * SAMPLE_RATE) + (self.model.patch - 1) * int(0.010 * SAMPLE_RATE)
        if len(wave) < minimum:  # fewer than one patch of frames: pad with silence
            wave = np.pad(wave, (0, minimum - len(wave)))
        fbank = torch.from_numpy(beats_fbank(wave))[None].to(self.device)
        with torch.inference_mode():
            return self.model(fbank)

    def _embed(self, tower, items, layers):
        how = self.pooling(tower)
        out = {n: [] for n in layers}
        for wave in items:
            hidden, logits = self.features(wave)
            for n in layers:
                x = logits if n == "logits" else pool(hidden[int(n)], None, how)
                out[n].append(x.float().cpu().numpy()[0])
        return {n: np.stack(v) for n, v in out.items()}

    def provenance(self) -> dict:
        out = super().provenance()
        out["architecture"] = "BEATs"
        out["cfg"] = {k: self.cfg[k] for k in sorted(CFG_DEFAULTS)}
        return out
