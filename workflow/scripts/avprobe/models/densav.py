"""DenseAV (Hamilton et al. 2024, seed 002): dense audio-frame × image-patch similarity.

Rebuilt here from the paper's description over transformers' ``HubertModel`` (the audio
backbone) and ``ViTModel`` (a DINO ViT with patch 8), plus the two *aligners* that map each
backbone's dense features into one shared space of ``code_dim`` channels, split into ``K``
heads. The released weights are loaded from their own key layout (the PyTorch Lightning module
``LitAVAligner`` of github.com/mhamilton723/DenseAV, saved with huggingface_hub's mixin as
``model.safetensors`` beside a ``config.json`` of its constructor arguments) through
:func:`remap_original`; nothing of the original code is imported or copied.

Architecture (what the released checkpoints use, from the repository's default config):

* **image**: DINO ViT-S/8 (384 channels, 12 blocks, 6 heads, LayerNorm eps 1e-4; the paper's
  text says DINO, the code builds ``dino_vits8``), the last block's normalised patch tokens,
  with LoRA deltas (rank ``image_lora_rank``, alpha 32) on every block's fused ``qkv``. The
  *image aligner* is a channel LayerNorm (eps 1e-4) then a 1×1 convolution to ``code_dim``.
  LoRA deltas are merged at load: ``W = W0 + (alpha / r) · B A`` (exact at inference, where
  LoRA's dropout is off), then the fused ``qkv`` is split into transformers' q, k, v.
* **audio**: HuBERT-large (``facebook/hubert-large-ls960-ft`` architecture, LayerNorm eps
  1e-4, fine-tuned in full), 16 kHz waveform normalised to zero mean and unit variance, last
  hidden state at 50 frames/s. The *audio aligner* (``audio_sa_3_3_pool_2``): channel
  LayerNorm, a learned time pooling (convolution of width 3, stride 3) to ``code_dim``, a
  second one, then one self-attention block (6 heads) over the frames with a learned audio
  "CLS" token in front (projected by the first pooling's linear layer; dropped afterwards).
  Output: ``frames ≈ floor((floor((T - 3) / 3 + 1) - 3) / 3 + 1)`` for ``T`` HuBERT frames,
  one per 180 ms.
* **similarity volume**: ``s[t, r, c, k] = <a_k(t), v_k(r, c)>`` (inner products per head,
  no normalisation), aggregated as the paper's training objective does: **max over heads**,
  **max over image space**, then **mean over audio time** (:func:`aggregate_volume`).

Layers per tower: the backbone's hidden states ``"0".."N"`` (mask-aware mean over frames or
tokens), then ``joint``: the aligned dense features pooled (mean by default) — a pooled
embedding of the shared space for symbolism and retrieval. Dense features
(:meth:`DenseAVAdapter.dense`): audio ``(frames, code_dim)``, image ``(rows, cols, code_dim)``
(28 × 28 for a 224-pixel input); their volume and aggregation are
:meth:`DenseAVAdapter.similarity_volume` / :func:`aggregate_volume`.

Checkpoints (``weights: checkpoint``): ``source: hf://mhamilton723/DenseAV-<variant>/model.safetensors``
(variants ``sound``, ``language``, ``sound-language``; the file names are inferred from the
mixin's conventions and must be checked on the hub). A ``config.json`` beside the weights (in
the same folder or hub repository, when cached) supplies the constructor arguments; without
it the repository's defaults are used and ``heads`` (the spec key, ``sim_agg_heads``: 1 for
sound and language, 2 for sound-language) must be right. Untrained controls are written by
:func:`build_untrained` *in the original layout* and loaded through the same remap.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from .base import (
    JOINT,
    Adapter,
    pool,
    resolve_dtype,
    select_device,
    torch_dtype,
)
from .build import BUILD_MARKER, staged_folder, write_marker
from .checkpoints import sha256_of

log = logging.getLogger("avprobe")

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
SAMPLE_RATE = 16000
IMAGE_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: LoRA's alpha in the original training code (its LoraConfig); the scale is alpha / rank.
LORA_ALPHA = 32.0
#: Heads of the self-attention block of the audio aligner (fixed in the original code).
ALIGNER_ATTENTION_HEADS = 6
ALIGNER_EPS = 1e-4

#: The constructor arguments that matter at inference, with the repository's defaults
#: (denseav/configs/av_align.yaml); a checkpoint's config.json overrides them.
DEFAULT_HPARAMS = {
    "code_dim": 384,
    "image_model_type": "dino8",
    "image_model_token_type": "token",
    "image_aligner_type": "image_linear",
    "audio_model_type": "hubert",
    "audio_aligner_type": "audio_sa_3_3_pool_2",
    "audio_lora": False,
    "audio_lora_rank": 8,
    "image_lora": True,
    "image_lora_rank": 8,
    "learn_audio_cls": True,
    "sim_agg_type": "misa",
    "sim_agg_heads": 1,
    "sim_use_cls": False,
    "nonneg_sim": False,
    "norm_vectors": False,
    "head_agg": "max_elementwise",
}

#: Backbone architectures by the original ``*_model_type``: transformers config arguments.
BACKBONES = {
    "dino8": {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6, "intermediate_size": 1536,
              "patch_size": 8, "image_size": IMAGE_SIZE, "layer_norm_eps": 1e-4, "qkv_bias": True,
              "hidden_act": "gelu"},
    "dino16": {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6, "intermediate_size": 1536,
               "patch_size": 16, "image_size": IMAGE_SIZE, "layer_norm_eps": 1e-4, "qkv_bias": True,
               "hidden_act": "gelu"},
    # facebook/hubert-large-ls960-ft, with DenseAV's layer_norm_eps
    "hubert": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
               "conv_dim": [512] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_stride": [5, 2, 2, 2, 2, 2, 2],
               "conv_bias": True, "feat_extract_norm": "layer", "do_stable_layer_norm": True,
               "num_conv_pos_embeddings": 128, "num_conv_pos_embedding_groups": 16, "feat_proj_layer_norm": True,
               "hidden_act": "gelu", "layer_norm_eps": 1e-4, "mask_time_prob": 0.075, "vocab_size": 32},
}
#: Inference-time dropout is off; these keep a built model's config free of training noise.
_NO_DROPOUT = {"hidden_dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0, "feat_proj_dropout": 0.0,
               "layerdrop": 0.0, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}

# The original layout's prefixes: a PEFT-wrapped module sits under ``base_model.model``.
_IMAGE_PREFIXES = ("image_model.base_model.model.model.", "image_model.model.")
_AUDIO_PREFIXES = ("audio_model.base_model.model.model.", "audio_model.model.")
#: PEFT ≥ 0.7 keeps a wrapped layer's own weight under ``base_layer``; 0.5 (the original
#: requirement) keeps it in place. Both are read.
_BASE_LAYER = ".base_layer"


class CheckpointLayoutError(KeyError):
    """A checkpoint whose keys do not follow DenseAV's layout (the message names the key)."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


# ---------------------------------------------------------------------------------------------
# Hyperparameters and backbones
# ---------------------------------------------------------------------------------------------


def read_hparams(config_path: str | os.PathLike | None, heads: int | None = None) -> dict:
    """The constructor arguments of a checkpoint: its config.json over :data:`DEFAULT_HPARAMS`;
    ``heads`` (the spec key) sets ``sim_agg_heads`` and must agree with a config that has it."""
    hp = dict(DEFAULT_HPARAMS)
    saved = {}
    if config_path is not None and Path(config_path).is_file():
        saved = json.loads(Path(config_path).read_text())
        hp.update({k: v for k, v in saved.items() if k in DEFAULT_HPARAMS or k == "avprobe_backbones"})
    if heads is not None:
        if "sim_agg_heads" in saved and int(saved["sim_agg_heads"]) != int(heads):
            raise ValueError(f"DenseAV: spec says heads: {heads}, the checkpoint's config.json says "
                             f"sim_agg_heads: {saved['sim_agg_heads']}")
        hp["sim_agg_heads"] = int(heads)
    for key, allowed in (("image_aligner_type", ("image_linear",)), ("audio_aligner_type", ("audio_sa_3_3_pool_2",)),
                         ("image_model_token_type", ("token",)), ("head_agg", ("max_elementwise", "max")),
                         ("sim_agg_type", ("misa",))):
        if hp[key] not in allowed:
            raise ValueError(f"DenseAV: {key} {hp[key]!r} is not supported here (supported: {list(allowed)}; the "
                             "released checkpoints use these)")
    if hp["code_dim"] % hp["sim_agg_heads"]:
        raise ValueError(f"DenseAV: code_dim {hp['code_dim']} is not divisible by {hp['sim_agg_heads']} heads")
    return hp


def backbone_configs(hp: Mapping):
    """``(HubertConfig, ViTConfig)`` for the checkpoint's backbones (``avprobe_backbones`` in a
    built control's config.json overrides the presets of :data:`BACKBONES`)."""
    from transformers import HubertConfig, ViTConfig

    override = hp.get("avprobe_backbones") or {}
    out = []
    for tower, key, cls in (("audio", "audio_model_type", HubertConfig), ("image", "image_model_type", ViTConfig)):
        args = override.get(tower)
        if args is None:
            if hp[key] not in BACKBONES:
                raise ValueError(f"DenseAV: {key} {hp[key]!r} has no backbone preset (known: {sorted(BACKBONES)})")
            args = BACKBONES[hp[key]]
        out.append(cls(**{**args, **_NO_DROPOUT}))
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------


def _modules():
    """The torch modules, defined lazily so that importing this file needs no torch."""
    import torch
    import torch.nn.functional as F
    from torch import nn
    from transformers import HubertModel, ViTModel

    class AttentionBlock(nn.Module):
        """Pre-norm transformer block (fused qkv, GELU MLP of 4×) over ``(B, N, C)``; channels are
        zero-padded in front to a multiple of the head count, and the padding dropped after."""

        def __init__(self, dim: int, heads: int = ALIGNER_ATTENTION_HEADS):
            super().__init__()
            self.dim, self.heads = dim, heads
            self.pad = (-dim) % heads
            width = dim + self.pad
            self.norm1 = nn.LayerNorm(width, eps=ALIGNER_EPS)
            self.qkv = nn.Linear(width, 3 * width)
            self.proj = nn.Linear(width, width)
            self.norm2 = nn.LayerNorm(width, eps=ALIGNER_EPS)
            self.fc1 = nn.Linear(width, 4 * width)
            self.fc2 = nn.Linear(4 * width, width)

        def forward(self, x):
            x = F.pad(x, (self.pad, 0))
            b, n, c = x.shape
            q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
            attn = ((q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5).softmax(-1)
            x = x + self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))
            x = x + self.fc2(F.gelu(self.fc1(self.norm2(x))))
            return x[..., self.pad:]

    class AudioAligner(nn.Module):
        """``(B, T, C_in)`` HuBERT frames + a learned CLS → ``(B, T', code_dim)`` (T' ≈ T / 9)."""

        def __init__(self, in_dim: int, code_dim: int, learn_cls: bool):
            super().__init__()
            self.norm = nn.LayerNorm(in_dim, eps=ALIGNER_EPS)
            self.pool1 = nn.Conv1d(in_dim, code_dim, kernel_size=3, stride=3)
            self.pool1_cls = nn.Linear(in_dim, code_dim)
            self.pool2 = nn.Conv1d(code_dim, code_dim, kernel_size=3, stride=3)
            self.attention = AttentionBlock(code_dim)
            self.cls = nn.Parameter(torch.zeros(in_dim)) if learn_cls else None

        def forward(self, x):
            x = self.norm(x)  # frequency average: HuBERT has one "frequency" row, a no-op
            x = self.pool2(self.pool1(x.transpose(1, 2))).transpose(1, 2)
            if self.cls is None:
                return self.attention(x)
            cls = self.pool1_cls(self.norm(self.cls)).expand(x.shape[0], 1, -1)
            return self.attention(torch.cat([cls, x], dim=1))[:, 1:]

    class ImageAligner(nn.Module):
        """``(B, h, w, C_in)`` patch tokens → ``(B, h, w, code_dim)``: LayerNorm then linear."""

        def __init__(self, in_dim: int, code_dim: int):
            super().__init__()
            self.norm = nn.LayerNorm(in_dim, eps=ALIGNER_EPS)
            self.proj = nn.Linear(in_dim, code_dim)
            self.cls_proj = nn.Linear(in_dim, code_dim)  # the CLS path; unused (sim_use_cls false)

        def forward(self, x):
            return self.proj(self.norm(x))

    class DenseAVNet(nn.Module):
        def __init__(self, hp: Mapping):
            super().__init__()
            audio_cfg, image_cfg = backbone_configs(hp)
            self.audio = HubertModel(audio_cfg)
            self.image = ViTModel(image_cfg, add_pooling_layer=False)
            self.audio_aligner = AudioAligner(audio_cfg.hidden_size, hp["code_dim"], bool(hp["learn_audio_cls"]))
            self.image_aligner = ImageAligner(image_cfg.hidden_size, hp["code_dim"])
            # the contrastive loss's temperature (log); kept so that every original key has a home
            self.register_buffer("calibration_log_w", torch.zeros(1))
            self.patch_size = int(image_cfg.patch_size)

    return DenseAVNet


def build_network(hp: Mapping):
    return _modules()(hp)


# ---------------------------------------------------------------------------------------------
# The key remap: original layout → this network
# ---------------------------------------------------------------------------------------------


def _vit_names(target_keys) -> dict[str, str]:
    """transformers' ViT parameter names of block ``{i}`` (5.x names, else 4.x names)."""
    if any(k.startswith("layers.") for k in target_keys):
        return {"q": "layers.{i}.attention.q_proj", "k": "layers.{i}.attention.k_proj",
                "v": "layers.{i}.attention.v_proj", "proj": "layers.{i}.attention.o_proj",
                "norm1": "layers.{i}.layernorm_before", "norm2": "layers.{i}.layernorm_after",
                "fc1": "layers.{i}.mlp.fc1", "fc2": "layers.{i}.mlp.fc2", "norm": "layernorm"}
    return {"q": "encoder.layer.{i}.attention.attention.query", "k": "encoder.layer.{i}.attention.attention.key",
            "v": "encoder.layer.{i}.attention.attention.value", "proj": "encoder.layer.{i}.attention.output.dense",
            "norm1": "encoder.layer.{i}.layernorm_before", "norm2": "encoder.layer.{i}.layernorm_after",
            "fc1": "encoder.layer.{i}.intermediate.dense", "fc2": "encoder.layer.{i}.output.dense",
            "norm": "layernorm"}


_POS_CONV = {  # weight norm of HuBERT's positional convolution: old names ↔ parametrizations
    "encoder.pos_conv_embed.conv.weight_g": "encoder.pos_conv_embed.conv.parametrizations.weight.original0",
    "encoder.pos_conv_embed.conv.weight_v": "encoder.pos_conv_embed.conv.parametrizations.weight.original1",
}


class _Reader:
    """Takes keys out of an original state dict, so that leftovers can be reported."""

    def __init__(self, state: Mapping):
        self.state = dict(state)
        self.used: set[str] = set()

    def has(self, key: str) -> bool:
        return key in self.state

    def take(self, key: str, what: str):
        if key not in self.state:
            raise CheckpointLayoutError(f"DenseAV checkpoint: missing key {key!r} ({what}); is this a DenseAV "
                                        "LitAVAligner checkpoint, and its config.json the one it was trained with?")
        self.used.add(key)
        return self.state[key]

    def prefix(self, candidates, what: str) -> str:
        for p in candidates:
            if any(k.startswith(p) for k in self.state):
                return p
        raise CheckpointLayoutError(f"DenseAV checkpoint: no {what} keys (expected a prefix among {list(candidates)})")

    def linear(self, base: str, lora: bool, rank_scale: float | None, what: str):
        """Weight (LoRA merged) and bias of a possibly PEFT-wrapped linear layer ``base``."""
        inner = base + _BASE_LAYER if self.has(base + _BASE_LAYER + ".weight") else base
        weight = self.take(inner + ".weight", what).clone()
        bias = self.take(inner + ".bias", what) if self.has(inner + ".bias") else None
        a_key, b_key = base + ".lora_A.default.weight", base + ".lora_B.default.weight"
        if lora:
            a, b = self.take(a_key, what + " LoRA A"), self.take(b_key, what + " LoRA B")
            scale = LORA_ALPHA / a.shape[0] if rank_scale is None else rank_scale
            weight = weight + scale * (b.double() @ a.double()).to(weight.dtype)
        elif self.has(a_key):
            raise CheckpointLayoutError(f"DenseAV checkpoint: LoRA key {a_key!r} present but the config says no LoRA "
                                        f"for {what}")
        return weight, bias


def remap_original(state: Mapping, hp: Mapping, target_keys) -> dict:
    """Map a DenseAV ``LitAVAligner`` state dict (original keys) onto :class:`DenseAVNet`'s keys.

    LoRA deltas are merged into their layers; DINO's fused ``qkv`` is split into q, k, v.
    Raises :class:`CheckpointLayoutError` naming the first missing key, or every leftover key
    the layout does not know.
    """
    import torch

    r = _Reader(state)
    target_keys = list(target_keys)
    out: dict = {}

    # -- image backbone (DINO ViT) -----------------------------------------------------------
    p = r.prefix(_IMAGE_PREFIXES, "image backbone")
    lora = bool(hp["image_lora"])
    names = _vit_names([k[len("image."):] for k in target_keys if k.startswith("image.")])
    out["image.embeddings.cls_token"] = r.take(p + "cls_token", "CLS token")
    out["image.embeddings.position_embeddings"] = r.take(p + "pos_embed", "position embedding")
    out["image.embeddings.patch_embeddings.projection.weight"] = r.take(p + "patch_embed.proj.weight", "patch embedding")
    out["image.embeddings.patch_embeddings.projection.bias"] = r.take(p + "patch_embed.proj.bias", "patch embedding")
    n_blocks = len({k[len(p):].split(".")[1] for k in state if k.startswith(p + "blocks.")})
    for i in range(n_blocks):
        blk = f"{p}blocks.{i}."
        t = {k: "image." + v.format(i=i) for k, v in names.items()}
        w, b = r.linear(blk + "attn.qkv", lora, None, f"image block {i} qkv")
        for part, wp, bp in zip("qkv", w.chunk(3, 0), b.chunk(3, 0)):
            out[t[part] + ".weight"], out[t[part] + ".bias"] = wp.contiguous(), bp.contiguous()
        for ours, theirs in (("proj", "attn.proj"), ("norm1", "norm1"), ("norm2", "norm2"),
                             ("fc1", "mlp.fc1"), ("fc2", "mlp.fc2")):
            out[t[ours] + ".weight"] = r.take(blk + theirs + ".weight", f"image block {i} {theirs}")
            out[t[ours] + ".bias"] = r.take(blk + theirs + ".bias", f"image block {i} {theirs}")
    out["image.layernorm.weight"] = r.take(p + "norm.weight", "image final norm")
    out["image.layernorm.bias"] = r.take(p + "norm.bias", "image final norm")

    # -- audio backbone (HuBERT: transformers' own names under a prefix) ----------------------
    p = r.prefix(_AUDIO_PREFIXES, "audio backbone")
    audio_targets = [k[len("audio."):] for k in target_keys if k.startswith("audio.")]
    inverse_pos = {v: k for k, v in _POS_CONV.items()}
    for key in audio_targets:
        theirs = key
        if not r.has(p + theirs) and key in inverse_pos and r.has(p + inverse_pos[key]):
            theirs = inverse_pos[key]  # a checkpoint from transformers < 4.43 (weight_g / weight_v)
        elif not r.has(p + theirs) and key in _POS_CONV and r.has(p + _POS_CONV[key]):
            theirs = _POS_CONV[key]
        if key.endswith((".weight", ".bias")) and key.split(".")[-2] in ("q_proj", "k_proj", "v_proj") and (
                hp["audio_lora"] or r.has(p + key.rsplit(".", 1)[0] + _BASE_LAYER + ".weight")):
            base = p + key.rsplit(".", 1)[0]
            w, b = r.linear(base, bool(hp["audio_lora"]), None, f"audio {key}")
            out["audio." + key] = w if key.endswith(".weight") else b
            continue
        if key == "masked_spec_embed" and not r.has(p + theirs):
            continue  # only trained with time masking; unused at inference
        out["audio." + key] = r.take(p + theirs, f"HuBERT {key}")

    # -- aligners ------------------------------------------------------------------------------
    a = "audio_aligner.mod_list."
    out["audio_aligner.norm.weight"] = r.take(a + "1.norm.weight", "audio aligner channel norm")
    out["audio_aligner.norm.bias"] = r.take(a + "1.norm.bias", "audio aligner channel norm")
    out["audio_aligner.pool1.weight"] = r.take(a + "2.layer.weight", "audio aligner time pool 1")[:, :, 0, :]
    out["audio_aligner.pool1.bias"] = r.take(a + "2.layer.bias", "audio aligner time pool 1")
    out["audio_aligner.pool1_cls.weight"] = r.take(a + "2.cls_layer.weight", "audio aligner CLS layer")
    out["audio_aligner.pool1_cls.bias"] = r.take(a + "2.cls_layer.bias", "audio aligner CLS layer")
    out["audio_aligner.pool2.weight"] = r.take(a + "3.layer.weight", "audio aligner time pool 2")[:, :, 0, :]
    out["audio_aligner.pool2.bias"] = r.take(a + "3.layer.bias", "audio aligner time pool 2")
    for ours, theirs in (("norm1", "norm1"), ("qkv", "attn.qkv"), ("proj", "attn.proj"), ("norm2", "norm2"),
                         ("fc1", "mlp.fc1"), ("fc2", "mlp.fc2")):
        for leaf in ("weight", "bias"):
            out[f"audio_aligner.attention.{ours}.{leaf}"] = r.take(f"{a}4.block.{theirs}.{leaf}",
                                                                   "audio aligner self-attention")
    if hp["learn_audio_cls"]:
        out["audio_aligner.cls"] = r.take("audio_cls", "learned audio CLS token")
    out["image_aligner.norm.weight"] = r.take("image_aligner.norm.norm.weight", "image aligner channel norm")
    out["image_aligner.norm.bias"] = r.take("image_aligner.norm.norm.bias", "image aligner channel norm")
    out["image_aligner.proj.weight"] = r.take("image_aligner.layer.weight", "image aligner projection")[:, :, 0, 0]
    out["image_aligner.proj.bias"] = r.take("image_aligner.layer.bias", "image aligner projection")
    out["image_aligner.cls_proj.weight"] = r.take("image_aligner.cls_layer.weight", "image aligner CLS layer")
    out["image_aligner.cls_proj.bias"] = r.take("image_aligner.cls_layer.bias", "image aligner CLS layer")
    out["calibration_log_w"] = r.take("sim_cal.w", "similarity calibration").reshape(1)
    # the calibration's bias exists only for non-NCE losses; nothing at inference reads it
    for optional in ("sim_cal.b",):
        if r.has(optional):
            r.take(optional, "similarity calibration bias")

    leftover = sorted(set(state) - r.used)
    if leftover:
        shown = ", ".join(repr(k) for k in leftover[:8]) + (" …" if len(leftover) > 8 else "")
        raise CheckpointLayoutError(f"DenseAV checkpoint: {len(leftover)} key(s) not in DenseAV's layout: {shown}")
    missing = sorted(set(target_keys) - set(out) - {"audio.masked_spec_embed"})
    if missing:
        raise CheckpointLayoutError(f"DenseAV checkpoint: nothing maps onto {missing[:8]}")
    return {k: (v if torch.is_tensor(v) else torch.as_tensor(v)) for k, v in out.items()}


def to_original(net, hp: Mapping, seed: int = 0) -> dict:
    """The inverse map, for controls and tests: :class:`DenseAVNet` weights in the original layout
    (PEFT ≥ 0.7 names; LoRA A and B random, and the base weight such that base + (α/r)·BA
    equals the network's merged weight)."""
    import torch

    g = torch.Generator().manual_seed(int(seed) + 1)
    sd = {k: v.detach().clone() for k, v in net.state_dict().items()}
    names = _vit_names([k[len("image."):] for k in sd if k.startswith("image.")])
    pi = _IMAGE_PREFIXES[0] if hp["image_lora"] else _IMAGE_PREFIXES[1]
    pa = _AUDIO_PREFIXES[0] if hp["audio_lora"] else _AUDIO_PREFIXES[1]
    out = {pi + "cls_token": sd.pop("image.embeddings.cls_token"),
           pi + "pos_embed": sd.pop("image.embeddings.position_embeddings"),
           pi + "patch_embed.proj.weight": sd.pop("image.embeddings.patch_embeddings.projection.weight"),
           pi + "patch_embed.proj.bias": sd.pop("image.embeddings.patch_embeddings.projection.bias"),
           pi + "norm.weight": sd.pop("image.layernorm.weight"), pi + "norm.bias": sd.pop("image.layernorm.bias")}

    def lora_split(base_key: str, weight, enabled: bool, rank: int):
        if not enabled:
            return {base_key + ".weight": weight}
        a = torch.randn(rank, weight.shape[1], generator=g) * 0.02
        b = torch.randn(weight.shape[0], rank, generator=g) * 0.02
        base = weight - (LORA_ALPHA / rank) * (b.double() @ a.double()).to(weight.dtype)
        return {base_key + _BASE_LAYER + ".weight": base, base_key + ".lora_A.default.weight": a,
                base_key + ".lora_B.default.weight": b}

    i = 0
    while f"image.{names['q'].format(i=i)}.weight" in sd:
        t = {k: "image." + v.format(i=i) for k, v in names.items()}
        w = torch.cat([sd.pop(t[x] + ".weight") for x in "qkv"], 0)
        b = torch.cat([sd.pop(t[x] + ".bias") for x in "qkv"], 0)
        blk = f"{pi}blocks.{i}."
        out.update(lora_split(blk + "attn.qkv", w, hp["image_lora"], int(hp["image_lora_rank"])))
        out[blk + "attn.qkv" + (_BASE_LAYER if hp["image_lora"] else "") + ".bias"] = b
        for ours, theirs in (("proj", "attn.proj"), ("norm1", "norm1"), ("norm2", "norm2"),
                             ("fc1", "mlp.fc1"), ("fc2", "mlp.fc2")):
            out[blk + theirs + ".weight"] = sd.pop(t[ours] + ".weight")
            out[blk + theirs + ".bias"] = sd.pop(t[ours] + ".bias")
        i += 1
    for key in [k for k in sd if k.startswith("audio.")]:
        inner = key[len("audio."):]
        value = sd.pop(key)
        layer = inner.rsplit(".", 1)[0]
        if hp["audio_lora"] and layer.split(".")[-1] in ("q_proj", "k_proj", "v_proj"):
            if inner.endswith(".weight"):
                out.update(lora_split(pa + layer, value, True, int(hp["audio_lora_rank"])))
            else:
                out[pa + layer + _BASE_LAYER + ".bias"] = value
        else:
            out[pa + inner] = value
    a = "audio_aligner.mod_list."
    out[a + "1.norm.weight"] = sd.pop("audio_aligner.norm.weight")
    out[a + "1.norm.bias"] = sd.pop("audio_aligner.norm.bias")
    out[a + "2.layer.weight"] = sd.pop("audio_aligner.pool1.weight")[:, :, None, :]
    out[a + "2.layer.bias"] = sd.pop("audio_aligner.pool1.bias")
    out[a + "2.cls_layer.weight"] = sd.pop("audio_aligner.pool1_cls.weight")
    out[a + "2.cls_layer.bias"] = sd.pop("audio_aligner.pool1_cls.bias")
    out[a + "3.layer.weight"] = sd.pop("audio_aligner.pool2.weight")[:, :, None, :]
    out[a + "3.layer.bias"] = sd.pop("audio_aligner.pool2.bias")
    for ours, theirs in (("norm1", "norm1"), ("qkv", "attn.qkv"), ("proj", "attn.proj"), ("norm2", "norm2"),
                         ("fc1", "mlp.fc1"), ("fc2", "mlp.fc2")):
        for leaf in ("weight", "bias"):
            out[f"{a}4.block.{theirs}.{leaf}"] = sd.pop(f"audio_aligner.attention.{ours}.{leaf}")
    if "audio_aligner.cls" in sd:
        out["audio_cls"] = sd.pop("audio_aligner.cls")
    out["image_aligner.norm.norm.weight"] = sd.pop("image_aligner.norm.weight")
    out["image_aligner.norm.norm.bias"] = sd.pop("image_aligner.norm.bias")
    out["image_aligner.layer.weight"] = sd.pop("image_aligner.proj.weight")[:, :, None, None]
    out["image_aligner.layer.bias"] = sd.pop("image_aligner.proj.bias")
    out["image_aligner.cls_layer.weight"] = sd.pop("image_aligner.cls_proj.weight")
    out["image_aligner.cls_layer.bias"] = sd.pop("image_aligner.cls_proj.bias")
    out["sim_cal.w"] = sd.pop("calibration_log_w")
    if sd:
        raise RuntimeError(f"to_original: unmapped network keys {sorted(sd)[:8]}")
    return {k: v.contiguous() for k, v in out.items()}


def load_network(weights: str | os.PathLike, hp: Mapping):
    """Build the network and load an original-layout ``.safetensors`` file into it."""
    from safetensors.torch import load_file

    net = build_network(hp)
    state = load_file(str(weights))
    target = net.state_dict()
    mapped = remap_original(state, hp, target.keys())
    for key, value in mapped.items():
        if tuple(value.shape) != tuple(target[key].shape):
            raise CheckpointLayoutError(f"DenseAV checkpoint: {key} has shape {tuple(value.shape)}, the architecture "
                                        f"(config {hp.get('image_model_type')}/{hp.get('audio_model_type')}, "
                                        f"code_dim {hp['code_dim']}) needs {tuple(target[key].shape)}")
    # HuBERT's mask embedding is used only in training; a checkpoint may leave it out
    net.load_state_dict(mapped, strict=set(mapped) == set(target))
    return net.float().eval()


# ---------------------------------------------------------------------------------------------
# Untrained controls
# ---------------------------------------------------------------------------------------------


def build_untrained(config_dir: str | os.PathLike, out_dir: str | os.PathLike, seed: int) -> Path:
    """A seeded random DenseAV written in the **original** key layout (``model.safetensors``
    + the constructor arguments as ``config.json``, written last), so it loads through exactly
    the remap a downloaded checkpoint takes. ``config_dir/config.json``: DenseAV constructor
    arguments plus ``avprobe_backbones`` (transformers config arguments of the tiny backbones).
    """
    import hashlib

    import torch
    from safetensors.torch import save_file

    config_dir, out_dir = Path(config_dir), Path(out_dir)
    config = json.loads((config_dir / CONFIG_FILE).read_text())
    hp = read_hparams(config_dir / CONFIG_FILE)
    torch.manual_seed(int(seed))
    net = build_network(hp)
    with torch.no_grad():  # LayerNorms start at identity; perturb them so the remap is tested
        for name, param in net.named_parameters():
            if "norm" in name or name.endswith("cls") or "cls_token" in name:
                param.add_(0.05 * torch.randn_like(param))
    state = to_original(net, hp, seed)
    with staged_folder(out_dir) as tmp:
        save_file(state, str(tmp / WEIGHTS_FILE))
        write_marker(tmp, {"kind": "untrained", "source": str(config_dir), "seed": int(seed),
                           "architecture": "DenseAV", "n_parameters": int(sum(p.numel() for p in net.parameters())),
                           "weights_sha256": hashlib.sha256((tmp / WEIGHTS_FILE).read_bytes()).hexdigest(),
                           "layout": "original (LitAVAligner state dict)", "torch": torch.__version__})
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return out_dir


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def image_tensor(image: np.ndarray):
    """HxWx3 uint8 → ``(3, 224, 224)`` float: shorter side resized to 224 (bilinear), centre
    crop, ImageNet mean/std (the original evaluation transform)."""
    import torch
    from PIL import Image

    img = Image.fromarray(image)
    w, h = img.size
    scale = IMAGE_SIZE / min(w, h)
    size = (max(IMAGE_SIZE, round(w * scale)), max(IMAGE_SIZE, round(h * scale)))
    img = img.resize(size, Image.Resampling.BILINEAR)
    left, top = (size[0] - IMAGE_SIZE) // 2, (size[1] - IMAGE_SIZE) // 2
    img = img.crop((left, top, left + IMAGE_SIZE, top + IMAGE_SIZE))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


def normalise_wave(wave: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance (HuBERT-large's feature extractor, ``do_normalize``)."""
    wave = np.asarray(wave, dtype=np.float64)
    return ((wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Similarity volume
# ---------------------------------------------------------------------------------------------


def similarity_volume(audio: np.ndarray, image: np.ndarray, heads: int) -> np.ndarray:
    """``(T, rows, cols, K)`` inner products per head of ``(T, D)`` audio frames and a
    ``(rows, cols, D)`` patch grid; head ``k`` is channels ``[k D/K, (k+1) D/K)``."""
    audio, image = np.asarray(audio, np.float64), np.asarray(image, np.float64)
    t, d = audio.shape
    r, c, d2 = image.shape
    if d != d2 or d % heads:
        raise ValueError(f"audio ({t}, {d}) and image ({r}, {c}, {d2}) features must share a width divisible by {heads}")
    a = audio.reshape(t, heads, d // heads)
    v = image.reshape(r, c, heads, d // heads)
    return np.einsum("tkc,rwkc->trwk", a, v).astype(np.float32)


def aggregate_volume(volume: np.ndarray) -> float:
    """DenseAV's score of one (audio, image) pair: max over heads, max over image space, then
    the mean over audio frames (the ``max_elementwise`` head aggregation and ``misa`` pooling)."""
    v = np.asarray(volume, np.float64)
    return float(v.max(axis=3).max(axis=(1, 2)).mean())


# ---------------------------------------------------------------------------------------------
# The adapter
# ---------------------------------------------------------------------------------------------


def _sibling_config(name: str, source: str, revision: str | None) -> Path | None:
    """The config.json beside a checkpoint file (local folder, or the hub cache), if present."""
    from .checkpoints import kind_of

    kind = kind_of(source)
    if kind == "local":
        path = Path(source).parent / CONFIG_FILE
        return path if path.is_file() else None
    if kind == "hub":
        try:
            from huggingface_hub import hf_hub_download

            from .checkpoints import _split_hub

            repo, filename = _split_hub(source)
            folder = filename.rpartition("/")[0]
            return Path(hf_hub_download(repo, f"{folder}/{CONFIG_FILE}" if folder else CONFIG_FILE,
                                        revision=revision or "main", local_files_only=True))
        except Exception:  # not cached: the defaults and the spec's `heads` apply
            return None
    return None


class DenseAVAdapter(Adapter):
    """DenseAV's audio (HuBERT) and image (DINO ViT) towers and their shared dense space."""

    family = "densav"
    natural_towers = ("audio", "image")
    supports_dense = True

    def __init__(self, name: str, spec: Mapping, model_dir=None, device: str = "auto") -> None:
        import torch

        from . import checkpoints

        dev = select_device(device)
        dtype = resolve_dtype(spec.get("dtype"), dev)
        kind = spec.get("kind") or "pretrained"
        heads = spec.get("heads")
        if model_dir is not None:
            folder = Path(model_dir)
            folder = folder.parent if folder.is_file() else folder
            weights, config = folder / WEIGHTS_FILE, folder / CONFIG_FILE
            marker = folder / BUILD_MARKER
            if marker.is_file():
                kind = json.loads(marker.read_text()).get("kind", "untrained")
            source = str(folder)
            if not weights.is_file():
                raise FileNotFoundError(f"model {name!r}: {folder} has no {WEIGHTS_FILE}")
        else:
            if spec.get("kind") == "untrained":
                raise ValueError(f"model {name!r} is an untrained control: build it with the build_untrained_model "
                                 "rule and pass its folder as model_dir")
            source = spec.get("source")
            if not source:
                raise ValueError(f"model {name!r}: a DenseAV entry needs `source` (hf://mhamilton723/DenseAV-<variant>/"
                                 f"{WEIGHTS_FILE} or a local file)")
            weights = checkpoints.locate(name, str(source), spec.get("revision"), spec.get("sha256"))
            config = _sibling_config(name, str(source), spec.get("revision"))
            if config is None:
                log.warning("model %s: no config.json beside %s; using DenseAV's default arguments with %s head(s)",
                            name, source, heads or 1)
        super().__init__(name, spec, kind=kind, device=dev, dtype=dtype, source=str(source))
        self.hparams = read_hparams(config, heads)
        self.heads = int(self.hparams["sim_agg_heads"])
        self.weights_path = Path(weights)
        self.net = load_network(weights, self.hparams).to(dev)
        if dtype != "float32":
            self.net.to(torch_dtype(dtype))
        self.revision = "sha256:" + sha256_of(weights)[:16]
        self.requested_revision = spec.get("revision")

    # -- layers ----------------------------------------------------------------------------------
    def input_sample_rate(self, tower="audio"):
        return SAMPLE_RATE

    def layers(self, tower):
        self.check_tower(tower)
        cfg = self.net.audio.config if tower == "audio" else self.net.image.config
        return [str(i) for i in range(cfg.num_hidden_layers + 1)] + [JOINT]

    def provenance(self) -> dict:
        out = super().provenance()
        out.update(requested_revision=self.requested_revision, architecture="DenseAV (HubertModel + ViTModel + aligners)",
                   model_type="densav", heads=self.heads, code_dim=int(self.hparams["code_dim"]),
                   licence="MIT")
        return out

    # -- forward -----------------------------------------------------------------------------------
    def _audio_groups(self, waves):
        groups: dict[int, list[int]] = {}
        for i, w in enumerate(waves):
            groups.setdefault(len(w), []).append(i)
        return list(groups.values())

    def _forward_audio(self, waves: list[np.ndarray], hidden: bool):
        """Per item: (hidden states list of (T, C) or None, aligned (T', D)). Clips of equal
        length run together (no padding: the original runs HuBERT without a mask)."""
        import torch

        out = [None] * len(waves)
        for idx in self._audio_groups(waves):
            x = torch.from_numpy(np.stack([normalise_wave(waves[i]) for i in idx])).to(self.device)
            x = x.to(torch_dtype(self.dtype))
            with torch.inference_mode():
                res = self.net.audio(x, output_hidden_states=hidden)
                if res.last_hidden_state.shape[1] < 9:
                    raise ValueError(f"model {self.name!r}: a clip of {x.shape[1] / SAMPLE_RATE:.3f} s is too short "
                                     "for DenseAV's audio aligner (9 HuBERT frames, about 0.2 s, at least)")
                aligned = self.net.audio_aligner(res.last_hidden_state).float().cpu().numpy()
                hs = [h.float().cpu().numpy() for h in res.hidden_states] if hidden else None
            for j, i in enumerate(idx):
                out[i] = ([h[j] for h in hs] if hidden else None, aligned[j])
        return out

    def _forward_image(self, images: list[np.ndarray], hidden: bool):
        import torch

        x = torch.stack([image_tensor(im) for im in images]).to(self.device).to(torch_dtype(self.dtype))
        with torch.inference_mode():
            res = self.net.image(pixel_values=x, output_hidden_states=hidden)
            tokens = res.last_hidden_state[:, 1:]
            side = IMAGE_SIZE // self.net.patch_size
            grid = tokens.reshape(len(images), side, side, -1)
            aligned = self.net.image_aligner(grid).float().cpu().numpy()
            hs = [h.float().cpu().numpy() for h in res.hidden_states] if hidden else None
        return hs, aligned

    def _embed(self, tower, items, names):
        import torch

        how = self.pooling(tower)
        hidden = any(n != JOINT for n in names)
        out = {}
        if tower == "audio":
            results = self._forward_audio(items, hidden)
            for n in names:
                rows = []
                for hs, aligned in results:
                    x = aligned if n == JOINT else hs[int(n)]
                    rows.append(pool(torch.from_numpy(x)[None], None, how)[0].numpy())
                out[n] = np.stack(rows)
            return out
        hs, aligned = self._forward_image(items, hidden)
        for n in names:
            x = aligned.reshape(len(items), -1, aligned.shape[-1]) if n == JOINT else hs[int(n)]
            out[n] = pool(torch.from_numpy(np.ascontiguousarray(x)), None, how).numpy()
        return out

    def _dense(self, tower, items):
        if tower == "audio":
            return [aligned for _, aligned in self._forward_audio(items, False)]
        _, aligned = self._forward_image(items, False)
        return list(aligned)

    # -- the model's own score -------------------------------------------------------------------
    #: Inner products per head (not cosine), as DenseAV compares features.
    dense_similarity = "dot"

    @property
    def dense_heads(self) -> int:
        return self.heads

    def similarity_volume(self, audio_item, image_item) -> np.ndarray:
        """``(frames, rows, cols, heads)`` similarity volume of one clip and one image."""
        a = self.dense("audio", [audio_item])[0]
        v = self.dense("image", [image_item])[0]
        return similarity_volume(a, v, self.heads)

    def score(self, audio_item, image_item) -> float:
        """DenseAV's aggregated similarity of one clip and one image (:func:`aggregate_volume`)."""
        return aggregate_volume(self.similarity_volume(audio_item, image_item))


# ---------------------------------------------------------------------------------------------
# The contract test's reference: the original layout, computed directly
# ---------------------------------------------------------------------------------------------


def reference_joint(adapter: DenseAVAdapter, tower: str, items) -> dict[str, np.ndarray]:
    """The ``joint`` layer computed one item at a time **from the original-layout tensors** of
    the checkpoint file, with plain torch operations: DINO's fused-qkv blocks with the LoRA
    delta applied unmerged (``x A^T B^T α/r``), and the aligners' convolutions as written in the
    original layout. Only HuBERT itself is transformers' (DenseAV wraps the same class). Mean
    pooling."""
    import torch
    import torch.nn.functional as F
    from safetensors.torch import load_file
    from transformers import HubertModel

    sd = load_file(str(adapter.weights_path))
    hp = adapter.hparams
    rows = []
    for item in adapter._prepare(tower, list(items)):
        with torch.inference_mode():
            if tower == "image":
                p = next(pre for pre in _IMAGE_PREFIXES if pre + "cls_token" in sd)
                x = image_tensor(item)[None]
                w = sd[p + "patch_embed.proj.weight"]
                ps = w.shape[-1]
                x = F.conv2d(x, w, sd[p + "patch_embed.proj.bias"], stride=ps).flatten(2).transpose(1, 2)
                x = torch.cat([sd[p + "cls_token"], x], 1) + sd[p + "pos_embed"]
                c = x.shape[-1]
                heads = adapter.net.image.config.num_attention_heads
                eps = adapter.net.image.config.layer_norm_eps
                i = 0
                while f"{p}blocks.{i}.norm1.weight" in sd:
                    b = f"{p}blocks.{i}."
                    h = F.layer_norm(x, (c,), sd[b + "norm1.weight"], sd[b + "norm1.bias"], eps)
                    qw = sd.get(b + "attn.qkv.base_layer.weight", sd.get(b + "attn.qkv.weight"))
                    qb = sd.get(b + "attn.qkv.base_layer.bias", sd.get(b + "attn.qkv.bias"))
                    qkv = F.linear(h, qw, qb)
                    if b + "attn.qkv.lora_A.default.weight" in sd:
                        la, lb = sd[b + "attn.qkv.lora_A.default.weight"], sd[b + "attn.qkv.lora_B.default.weight"]
                        qkv = qkv + (h @ la.T @ lb.T) * (LORA_ALPHA / la.shape[0])
                    n = x.shape[1]
                    q, k, v = qkv.reshape(1, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
                    attn = ((q @ k.transpose(-2, -1)) * (c // heads) ** -0.5).softmax(-1)
                    x = x + F.linear((attn @ v).transpose(1, 2).reshape(1, n, c), sd[b + "attn.proj.weight"],
                                     sd[b + "attn.proj.bias"])
                    h = F.layer_norm(x, (c,), sd[b + "norm2.weight"], sd[b + "norm2.bias"], eps)
                    x = x + F.linear(F.gelu(F.linear(h, sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"])),
                                     sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"])
                    i += 1
                x = F.layer_norm(x, (c,), sd[p + "norm.weight"], sd[p + "norm.bias"], eps)
                side = IMAGE_SIZE // ps
                patches = x[:, 1:].transpose(1, 2).reshape(1, c, side, side)  # (B, C, h, w) as the original
                normed = F.layer_norm(patches.permute(0, 2, 3, 1), (c,), sd["image_aligner.norm.norm.weight"],
                                      sd["image_aligner.norm.norm.bias"], ALIGNER_EPS).permute(0, 3, 1, 2)
                feats = F.conv2d(normed, sd["image_aligner.layer.weight"], sd["image_aligner.layer.bias"])
                rows.append(feats.mean(dim=(2, 3))[0].numpy())
            else:
                p = next(pre for pre in _AUDIO_PREFIXES if any(k.startswith(pre) for k in sd))
                hubert = HubertModel(adapter.net.audio.config)
                own = {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}
                hubert.load_state_dict(own, strict=False)
                hubert.eval()
                feats = hubert(torch.from_numpy(normalise_wave(item))[None]).last_hidden_state
                x = feats.permute(0, 2, 1).unsqueeze(2)  # (B, C, F=1, T), the original's layout
                cls = sd["audio_cls"][None] if "audio_cls" in sd else None
                a = "audio_aligner.mod_list."
                x = x.mean(2, keepdim=True)
                cin = x.shape[1]
                x = F.layer_norm(x.permute(0, 2, 3, 1), (cin,), sd[a + "1.norm.weight"], sd[a + "1.norm.bias"],
                                 ALIGNER_EPS).permute(0, 3, 1, 2)
                if cls is not None:
                    cls = F.layer_norm(cls, (cin,), sd[a + "1.norm.weight"], sd[a + "1.norm.bias"], ALIGNER_EPS)
                    cls = F.linear(cls, sd[a + "2.cls_layer.weight"], sd[a + "2.cls_layer.bias"])
                x = F.conv2d(x, sd[a + "2.layer.weight"], sd[a + "2.layer.bias"], stride=(1, 3))
                x = F.conv2d(x, sd[a + "3.layer.weight"], sd[a + "3.layer.bias"], stride=(1, 3))
                b, c, _, t = x.shape
                pad = (-c) % ALIGNER_ATTENTION_HEADS
                tokens = F.pad(x, [0, 0, 0, 0, pad, 0]).reshape(b, c + pad, t).permute(0, 2, 1)
                if cls is not None:
                    tokens = torch.cat([F.pad(cls, [pad, 0])[:, None], tokens], 1)
                w = c + pad
                blk = a + "4.block."
                h = F.layer_norm(tokens, (w,), sd[blk + "norm1.weight"], sd[blk + "norm1.bias"], ALIGNER_EPS)
                n = tokens.shape[1]
                nh = ALIGNER_ATTENTION_HEADS
                q, k, v = F.linear(h, sd[blk + "attn.qkv.weight"], sd[blk + "attn.qkv.bias"]) \
                    .reshape(1, n, 3, nh, w // nh).permute(2, 0, 3, 1, 4)
                attn = ((q @ k.transpose(-2, -1)) * (w // nh) ** -0.5).softmax(-1)
                tokens = tokens + F.linear((attn @ v).transpose(1, 2).reshape(1, n, w), sd[blk + "attn.proj.weight"],
                                           sd[blk + "attn.proj.bias"])
                h = F.layer_norm(tokens, (w,), sd[blk + "norm2.weight"], sd[blk + "norm2.bias"], ALIGNER_EPS)
                tokens = tokens + F.linear(F.gelu(F.linear(h, sd[blk + "mlp.fc1.weight"], sd[blk + "mlp.fc1.bias"])),
                                           sd[blk + "mlp.fc2.weight"], sd[blk + "mlp.fc2.bias"])
                if cls is not None:
                    tokens = tokens[:, 1:]
                rows.append(tokens[0, :, pad:].mean(0).numpy())
    return {JOINT: np.stack(rows).astype(np.float32)}
