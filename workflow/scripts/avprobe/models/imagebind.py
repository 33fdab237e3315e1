"""ImageBind (Girdhar et al. 2023, facebookresearch/ImageBind; code and weights **CC-BY-NC-SA 4.0,
non-commercial**): its audio, image and text towers, written here in plain torch, reading the
released ``imagebind_huge.pth`` (a bare state dict). An optional family: nothing in the default
study uses it, and it needs no package beyond ``requirements.txt`` (the package
``imagebind-unofficial`` pulls torchvision, torchaudio and pytorchvideo; none is used here).

Towers and the checkpoint's parameter names (``M`` = vision | text | audio; depth, thermal and IMU
keys in the file are ignored)::

    modality_preprocessors.vision.rgbt_stem.proj.1.weight      (D, 3, 2, 14, 14)  Conv3d, no bias
    modality_preprocessors.{vision,audio}.cls_token            (1, 1, D)
    modality_preprocessors.{vision,audio}.pos_embedding_helper.pos_embed   (1, 1 + patches, D)
    modality_preprocessors.audio.rgbt_stem.proj.weight         (D, 1, 16, 16)     Conv2d stride 10
    modality_preprocessors.audio.rgbt_stem.norm_layer.{weight,bias}
    modality_preprocessors.text.{token_embedding.weight, pos_embed (1, 77, D), mask (77, 77)}
    modality_trunks.vision.pre_transformer_layer.0.{weight,bias}           LayerNorm (vision only)
    modality_trunks.M.blocks.<i>.attn.{in_proj_weight,in_proj_bias,out_proj.*}  (+ bias_k, bias_v: audio)
    modality_trunks.M.blocks.<i>.{norm_1,norm_2,mlp.fc1,mlp.fc2}.*
    modality_heads.{vision,audio}.{0 (LayerNorm), 2 (Linear, no bias)}   CLS token
    modality_heads.text.proj.{0 (LayerNorm), 1 (Linear, no bias)}         EOT token
    modality_postprocessors.{text,audio}.1.log_logit_scale

Blocks are pre-LN transformer blocks (LayerNorm eps 1e-6, ``nn.MultiheadAttention``, GELU MLP x4);
the text tower is causal; the audio tower's attention has a learned extra key/value
(``add_bias_kv``).

Preprocessing (ImageBind's ``data.py``, here without torchvision/torchaudio):

* image: shorter side resized to 224 (PIL bicubic), centre crop 224, CLIP's mean/std; the image
  is repeated into a 2-frame video for the Conv3d stem;
* audio: 16 kHz; three 2 s clips evenly spaced (starts ``i * max(0, T - 2) / 2``, pytorchvideo's
  ConstantClipsPerVideoSampler), each mean-removed, a Kaldi fbank (128 bins, 25/10 ms, Hann window,
  :func:`avprobe.models.beats.kaldi_fbank`) zero-padded or cut to 204 frames, normalised with
  mean -4.268 and std 9.138;
* text: CLIP's BPE tokenizer (``tokenizer``: a hub id or folder with tokenizer files; default
  ``openai/clip-vit-base-patch32``, the same vocabulary as ImageBind's ``bpe_simple_vocab_16e6``),
  77 tokens.

Layers per tower: ``"0"`` (the tokens entering the first block), ``"1".."N"`` (block outputs),
pooled over tokens (text: up to its end-of-text token; audio: then averaged over the three clips),
and ``joint``: ImageBind's own output in its shared space (head, L2 normalisation, the tower's
logit scale: 20 for audio, the learned one for text, 1 for images; audio averaged over clips
after that, as ImageBind's ``forward`` does).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping

import numpy as np

from .base import JOINT, lengths_to_mask, pool
from .beats import kaldi_fbank
from .ptcheckpoint import CheckpointAdapter, load_torch_file, write_control

LICENCE = "CC-BY-NC-SA 4.0 (non-commercial; facebookresearch/ImageBind code and weights)"
#: imagebind_huge's architecture; a control's config.json overrides it.
HUGE = {
    "vision_embed_dim": 1280, "vision_num_blocks": 32, "vision_num_heads": 16,
    "text_embed_dim": 1024, "text_num_blocks": 24, "text_num_heads": 16,
    "audio_embed_dim": 768, "audio_num_blocks": 12, "audio_num_heads": 12,
    "out_embed_dim": 1024, "vocab_size": 49408, "context_length": 77,
}
IMAGE_SIZE, VIDEO_FRAMES, PATCH = 224, 2, 14
IMAGE_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
IMAGE_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
SAMPLE_RATE, N_MELS, TARGET_FRAMES = 16000, 128, 204
AUDIO_KERNEL, AUDIO_STRIDE = 16, 10
CLIP_SECONDS, CLIPS = 2.0, 3
AUDIO_MEAN, AUDIO_STD = -4.268, 9.138
AUDIO_SCALE = 20.0
DEFAULT_TOKENIZER = "openai/clip-vit-base-patch32"
TOWER_KEY = {"image": "vision", "text": "text", "audio": "audio"}


# ---------------------------------------------------------------------------------------------
# Preprocessing
# ---------------------------------------------------------------------------------------------


def image_tensor(image: np.ndarray) -> np.ndarray:
    """``(3, 224, 224)`` float32: torchvision's Resize(224, bicubic) + CenterCrop(224) on a PIL
    image (long side ``int(224 * long / short)``, crop offsets rounded), then CLIP's mean/std."""
    from PIL import Image

    img = Image.fromarray(np.asarray(image, np.uint8))
    w, h = img.size
    if w <= h:
        size = (IMAGE_SIZE, int(IMAGE_SIZE * h / w))
    else:
        size = (int(IMAGE_SIZE * w / h), IMAGE_SIZE)
    img = img.resize(size, Image.BICUBIC)
    w, h = img.size
    top, left = int(round((h - IMAGE_SIZE) / 2.0)), int(round((w - IMAGE_SIZE) / 2.0))
    arr = np.asarray(img, np.float32)[top:top + IMAGE_SIZE, left:left + IMAGE_SIZE] / 255.0
    return ((arr - IMAGE_MEAN) / IMAGE_STD).transpose(2, 0, 1).astype(np.float32)


def audio_clips(wave: np.ndarray) -> np.ndarray:
    """``(3, 1, 128, 204)`` float32 normalised fbank clips of one 16 kHz waveform in [-1, 1]."""
    wave = np.asarray(wave, np.float64)
    duration = len(wave) / SAMPLE_RATE
    spacing = max(duration - CLIP_SECONDS, 0.0) / (CLIPS - 1)
    out = []
    for i in range(CLIPS):
        start = i * spacing
        clip = wave[int(start * SAMPLE_RATE):int((start + CLIP_SECONDS) * SAMPLE_RATE)]
        fbank = kaldi_fbank(clip - clip.mean(), window="hanning").T  # (128, frames)
        fbank = fbank[:, :TARGET_FRAMES]
        fbank = np.pad(fbank, ((0, 0), (0, TARGET_FRAMES - fbank.shape[1])))
        out.append(((fbank - AUDIO_MEAN) / AUDIO_STD)[None])
    return np.stack(out).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------


def _build_network(cfg: Mapping):
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Block(nn.Module):
        def __init__(self, dim, heads, bias_kv):
            super().__init__()
            self.attn = nn.MultiheadAttention(dim, heads, bias=True, add_bias_kv=bias_kv, batch_first=True)
            self.norm_1 = nn.LayerNorm(dim, eps=1e-6)
            self.mlp = nn.Module()
            self.mlp.fc1, self.mlp.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
            self.norm_2 = nn.LayerNorm(dim, eps=1e-6)

        def forward(self, x, mask=None):
            h = self.norm_1(x)
            x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
            return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm_2(x))))

    class Trunk(nn.Module):
        def __init__(self, dim, n, heads, bias_kv, pre_ln):
            super().__init__()
            if pre_ln:
                self.pre_transformer_layer = nn.ModuleList([nn.LayerNorm(dim, eps=1e-6)])
            self.blocks = nn.ModuleList([Block(dim, heads, bias_kv) for _ in range(n)])

        def forward(self, x, mask=None):
            """(B, L, D) → hidden states [(B, L, D)] * (blocks + 1)."""
            if hasattr(self, "pre_transformer_layer"):
                x = self.pre_transformer_layer[0](x)
            hidden = [x]
            for block in self.blocks:
                x = block(x, mask)
                hidden.append(x)
            return hidden

    class Stem(nn.Module):
        def __init__(self, proj, norm=None):
            super().__init__()
            self.proj = proj
            if norm is not None:
                self.norm_layer = norm

    class PatchPre(nn.Module):
        """CLS token + patches + learned positions (``rgbt_stem`` is the original's name)."""

        def __init__(self, stem, dim, n_patches):
            super().__init__()
            self.rgbt_stem = stem
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
            self.pos_embedding_helper = nn.Module()
            self.pos_embedding_helper.pos_embed = nn.Parameter(torch.zeros(1, 1 + n_patches, dim))

        def forward(self, x):
            x = self.rgbt_stem.proj(x).flatten(2).transpose(1, 2)
            if hasattr(self.rgbt_stem, "norm_layer"):
                x = self.rgbt_stem.norm_layer(x)
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
            return x + self.pos_embedding_helper.pos_embed

    class TextPre(nn.Module):
        def __init__(self, dim):
            super().__init__()
            n = int(cfg["context_length"])
            self.token_embedding = nn.Embedding(int(cfg["vocab_size"]), dim)
            self.pos_embed = nn.Parameter(torch.zeros(1, n, dim))
            self.register_buffer("mask", torch.full((n, n), float("-inf")).triu(1))

        def forward(self, ids):
            return self.token_embedding(ids) + self.pos_embed

    class Scale(nn.Module):
        def __init__(self, learnable, init):
            super().__init__()
            value = torch.tensor(math.log(init))
            if learnable:
                self.log_logit_scale = nn.Parameter(value)
            else:
                self.register_buffer("log_logit_scale", value)

        def forward(self, x):
            return self.log_logit_scale.exp().clamp(max=100.0) * x

    class ImageBind(nn.Module):
        def __init__(self):
            super().__init__()
            dv, dt, da, out = (int(cfg[k]) for k in ("vision_embed_dim", "text_embed_dim", "audio_embed_dim",
                                                     "out_embed_dim"))
            grid = IMAGE_SIZE // PATCH
            conv3d = nn.Conv3d(3, dv, kernel_size=(VIDEO_FRAMES, PATCH, PATCH), stride=(VIDEO_FRAMES, PATCH, PATCH),
                               bias=False)
            f_patches = (N_MELS - AUDIO_KERNEL) // AUDIO_STRIDE + 1
            t_patches = (TARGET_FRAMES - AUDIO_KERNEL) // AUDIO_STRIDE + 1
            self.modality_preprocessors = nn.ModuleDict({
                # proj.0 is the original's parameter-free PadIm2Video; an Identity keeps the index
                "vision": PatchPre(Stem(nn.Sequential(nn.Identity(), conv3d)), dv, grid * grid),
                "text": TextPre(dt),
                "audio": PatchPre(Stem(nn.Conv2d(1, da, AUDIO_KERNEL, stride=AUDIO_STRIDE, bias=False),
                                       nn.LayerNorm(da)), da, f_patches * t_patches),
            })
            self.modality_trunks = nn.ModuleDict({
                "vision": Trunk(dv, int(cfg["vision_num_blocks"]), int(cfg["vision_num_heads"]), False, True),
                "text": Trunk(dt, int(cfg["text_num_blocks"]), int(cfg["text_num_heads"]), False, False),
                "audio": Trunk(da, int(cfg["audio_num_blocks"]), int(cfg["audio_num_heads"]), True, False),
            })
            text_head = nn.Module()
            text_head.proj = nn.Sequential(nn.LayerNorm(dt, eps=1e-6), nn.Linear(dt, out, bias=False))
            self.modality_heads = nn.ModuleDict({
                # index 1 is the original's parameter-free SelectElement(0)
                "vision": nn.Sequential(nn.LayerNorm(dv, eps=1e-6), nn.Identity(), nn.Linear(dv, out, bias=False)),
                "text": text_head,
                "audio": nn.Sequential(nn.LayerNorm(da, eps=1e-6), nn.Identity(), nn.Linear(da, out, bias=False)),
            })
            self.modality_postprocessors = nn.ModuleDict({
                "text": nn.Sequential(nn.Identity(), Scale(True, 1 / 0.07)),
                "audio": nn.Sequential(nn.Identity(), Scale(False, AUDIO_SCALE)),
            })

        def hidden(self, key, x):
            """Preprocessed input → hidden states of one tower (text: token ids (B, 77))."""
            pre = self.modality_preprocessors[key]
            if key == "vision":
                x = x.unsqueeze(2).repeat(1, 1, VIDEO_FRAMES, 1, 1)  # an image as a 2-frame video
            tokens = pre(x)
            mask = pre.mask if key == "text" else None
            return self.modality_trunks[key](tokens, mask)

        def project(self, key, last, eos=None):
            """The head and postprocessor on the last hidden state: ImageBind's output."""
            if key == "text":
                z = self.modality_heads["text"].proj(last[torch.arange(last.shape[0]), eos])
            else:
                head = self.modality_heads[key]
                z = head[2](head[0](last)[:, 0])
            z = F.normalize(z, dim=-1)
            if key in self.modality_postprocessors:
                z = self.modality_postprocessors[key][1](z)
            return z

        def forward(self, key, x, eos=None):
            """ImageBind's ``forward`` for one tower (audio ``x``: (B, clips, 1, 128, 204),
            averaged over clips after the postprocessor)."""
            if key == "audio":
                b, s = x.shape[:2]
                z = self.project(key, self.hidden(key, x.reshape(b * s, *x.shape[2:]))[-1])
                return z.reshape(b, s, -1).mean(1)
            return self.project(key, self.hidden(key, x)[-1], eos)

    return ImageBind()


def read_checkpoint(path, cfg: Mapping):
    """The network of ``cfg`` with the vision, text and audio weights of a released state dict
    (strict for those towers; the depth, thermal and IMU entries are left out)."""
    state = load_torch_file(path)
    if isinstance(state, Mapping) and "model" in state and "modality_trunks.vision.blocks.0.norm_1.weight" not in state:
        state = state["model"]
    keep = ("vision", "text", "audio")
    state = {k: v for k, v in state.items() if len(k.split(".")) > 1 and k.split(".")[1] in keep}
    widths = {  # checked before building, so a wrong architecture fails fast and small
        "modality_preprocessors.vision.cls_token": ("vision_embed_dim", -1),
        "modality_preprocessors.text.token_embedding.weight": ("text_embed_dim", -1),
        "modality_preprocessors.audio.cls_token": ("audio_embed_dim", -1),
        "modality_heads.vision.2.weight": ("out_embed_dim", 0),
    }
    for key, (name, axis) in widths.items():
        if key in state and int(state[key].shape[axis]) != int(cfg[name]):
            raise ValueError(f"{path}: not an ImageBind state dict for this architecture: {key} has "
                             f"{name} {int(state[key].shape[axis])}, the architecture {cfg[name]}")
    net = _build_network(cfg)
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"{path}: not an ImageBind state dict for this architecture: "
                         f"{str(err).splitlines()[1:3]}") from None
    if missing or unexpected:
        raise ValueError(f"{path}: not an ImageBind state dict for this architecture: missing "
                         f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    return net


def build_untrained(config_dir, out_dir, seed: int):
    """A seeded random ImageBind (the three towers) from ``config_dir/config.json`` (keys of
    :data:`HUGE`), written as a bare state dict ``imagebind.pth``; the tokenizer files of
    ``config_dir`` are copied beside it. Positions, tokens and CLS drawn N(0, 0.02)."""
    import shutil

    import torch

    config_dir = Path(config_dir)
    cfg = {**HUGE, **json.loads((config_dir / "config.json").read_text())}
    torch.manual_seed(int(seed))
    net = _build_network(cfg)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(("cls_token", "pos_embed", "token_embedding.weight", "bias_k", "bias_v")):
                p.normal_(0.0, 0.02)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for item in sorted(config_dir.iterdir()):
        if item.is_file() and item.name.startswith("tokenizer"):
            shutil.copyfile(item, Path(out_dir) / item.name)
    n = sum(p.numel() for p in net.parameters())
    return write_control(config_dir, out_dir, seed, "imagebind.pth", net.state_dict(), "ImageBind", n)


class ImageBindAdapter(CheckpointAdapter):
    family = "imagebind"
    natural_towers = ("audio", "image", "text")
    licence = LICENCE

    def __init__(self, name: str, spec: Mapping, model_dir=None, device: str = "auto") -> None:
        import torch
        from transformers import AutoTokenizer

        from .base import hf_load

        super().__init__(name, spec, model_dir=model_dir, device=device)
        self.cfg = {**HUGE, **{k: v for k, v in (self.control_config or {}).items() if k in HUGE}}
        self.model = read_checkpoint(self.checkpoint_path, self.cfg).to(self.device).eval()
        self.tokenizer = None
        if "text" in self.towers:
            source = spec.get("tokenizer") or (str(model_dir) if model_dir is not None else DEFAULT_TOKENIZER)
            self.tokenizer = hf_load(AutoTokenizer, name, source, None)
        self._torch = torch

    def input_sample_rate(self, tower="audio"):
        return SAMPLE_RATE

    def layers(self, tower):
        self.check_tower(tower)
        n = int(self.cfg[f"{TOWER_KEY[tower]}_num_blocks"])
        return [str(i) for i in range(n + 1)] + [JOINT]

    def tokens(self, texts: list[str]):
        """``(ids (B, 77), valid lengths (B,))``: padded to the context, the end-of-text token
        last among the valid ones (the EOS the text head reads is at ``length - 1``)."""
        n = int(self.cfg["context_length"])
        enc = self.tokenizer(list(texts), padding="max_length", max_length=n, truncation=True, return_tensors="pt")
        return enc["input_ids"].to(self.device), enc["attention_mask"].sum(1).to(self.device)

    def inputs(self, tower, items):
        torch = self._torch
        if tower == "image":
            return torch.from_numpy(np.stack([image_tensor(x) for x in items])).to(self.device)
        if tower == "audio":
            return torch.from_numpy(np.stack([audio_clips(x) for x in items])).to(self.device)
        return self.tokens(items)

    def _embed(self, tower, items, layers):
        torch = self._torch
        key, how = TOWER_KEY[tower], self.pooling(tower)
        x = self.inputs(tower, items)
        out = {}
        with torch.inference_mode():
            if tower == "text":
                ids, lengths = x
                hidden = self.model.hidden(key, ids)
                mask = lengths_to_mask(lengths, ids.shape[1])
                clips = 1
                joint = self.model.project(key, hidden[-1], lengths - 1)
            elif tower == "audio":
                b, clips = x.shape[:2]
                hidden = self.model.hidden(key, x.reshape(b * clips, *x.shape[2:]))
                mask = None
                joint = self.model.project(key, hidden[-1]).reshape(b, clips, -1).mean(1)
            else:
                hidden, mask, clips = self.model.hidden(key, x), None, 1
                joint = self.model.project(key, hidden[-1])
            for name in layers:
                if name == JOINT:
                    out[name] = joint.float().cpu().numpy()
                    continue
                pooled = pool(hidden[int(name)], mask, how)
                out[name] = pooled.reshape(-1, clips, pooled.shape[-1]).mean(1).float().cpu().numpy()
        return out

    def provenance(self) -> dict:
        out = super().provenance()
        out["architecture"] = "ImageBind (audio, image, text towers)"
        out["tokenizer"] = None if self.tokenizer is None else getattr(self.tokenizer, "name_or_path", None)
        return out


def reference_joint(adapter: ImageBindAdapter, tower: str, items) -> dict[str, np.ndarray]:
    """``joint`` with the network's own ``forward`` (ImageBind's: head, normalisation, scale,
    audio clips averaged), one item at a time: the contract test's reference."""
    import torch

    key = TOWER_KEY[tower]
    rows = []
    for item in adapter._prepare(tower, list(items)):
        with torch.inference_mode():
            if tower == "text":
                ids, lengths = adapter.tokens([item])
                z = adapter.model(key, ids, lengths - 1)
            else:
                z = adapter.model(key, adapter.inputs(tower, [item]))
        rows.append(z[0].float().cpu().numpy())
    return {JOINT: np.stack(rows)}
