"""SpeechCLIP (Shih et al., *SpeechCLIP: Integrating Speech with Pre-Trained Vision and Language
Model*, IEEE SLT 2022; code github.com/atosystem/SpeechCLIP, BSD-3-Clause), rebuilt over
transformers' ``HubertModel`` and ``CLIPModel``.

The model
---------
A frozen HuBERT, a learnable softmax-weighted sum of its hidden layers, a small trained *speech
branch*, and a frozen CLIP whose image tower encodes images and whose joint space the branch is
trained into (contrastively against the images of spoken captions):

* **parallel**: ``[CLS] + frames`` → a post-norm ``nn.TransformerEncoder`` (1 layer, 8 heads,
  GELU, a final LayerNorm) → the CLS output → a linear projection into CLIP's space.
* **cascaded**: ``8 keyword slots + frames`` → one multi-head attention block with a residual
  LayerNorm (1 head) → the keyword slots → a linear map to CLIP's token-embedding width → a
  BatchNorm over the 8×E keyword features → cosine similarity with a (reduced) CLIP token
  vocabulary → hard argmax (special codes masked) → the chosen token embeddings fed between
  ``<|startoftext|>`` and ``<|endoftext|>`` through CLIP's own text encoder, read at the EOT.

base = HuBERT base (``hubert_base_ls960``, 12 layers, 768) + CLIP ViT-B/32; large = HuBERT large
(``hubert_large_ll60k``, 24 layers, 1024) + CLIP ViT-L/14. Every tower lands in CLIP's joint space,
so the family declares **one** space of three towers (``audio_text_image``, layer ``joint``).

Where the layout comes from
---------------------------
Read (not copied) from the public repository atosystem/SpeechCLIP at commit 839cd2b:
``avssl/model/kwClip.py`` (``KWClip_GeneralTransformer``, ``KW_ParallelBranch``,
``KW_CascadedBranch``), ``avssl/module/kw_modules/TransformerModels.py`` (``TransformerEncoder``
wraps ``nn.TransformerEncoder`` as ``.model``; ``MultiheadAttentionAndNorm``),
``avssl/module/speech_encoder_plus.py`` (``FairseqSpeechEncoder_Hubert``: the weighted sum over
``layer_results`` = the input of the first transformer layer and the output of every layer;
``round(len/320)`` frames; the waveform layer-normed when the fairseq task says so),
``avssl/module/weighted_sum.py``, ``avssl/module/speechclip_c_modules/kw_bn.py``
(``Kw_BatchNorm``, ``eachKw`` + ``parallel``: one ``BatchNorm1d(E*K)`` over features ordered
``d*K + k``), ``.../my_vector_quantizer.py`` (``SimpleVectorQuantizer``: in eval a hard argmax with
codes 0, 2, 3 masked), ``avssl/module/clip_official.py`` (``encode_keywords``; the reduced
vocabulary whose rows 0, 2, 3 are CLIP ids 0, ``<|startoftext|>``, ``<|endoftext|>``, as the
``avssl/data/*_stat/text_clip_vocab_usage_byfreq`` files list them), the YAML configs under
``config/speechCLIP/`` and ``download_ckpts.sh`` (the checkpoint file names in the hub repo
``speechclip/models``). The Lightning ``state_dict`` keys reproduced here (:data:`REMAP`) are
those module paths; nothing was checked against a downloaded checkpoint (no hub here), so the
first real load is the test of this table — it fails loudly (missing/unexpected keys named)
rather than silently.

Which keys are used
-------------------
Only the trained branch (plus the reduced token table, the cascaded branch's codebook) is read
from the checkpoint. The frozen copies of HuBERT (``audio_encoder.encoder.*``, fairseq layout)
and CLIP (``clip.model.*``, OpenAI layout, and its alias ``cascaded_branch.clip.model.*``) are
loaded instead from the companion transformers repositories (spec keys ``hubert`` and ``clip``);
a few of the frozen tensors found in the file are compared with the companions (a mismatch
raises: the wrong companions were named). The loss's buffers (``criterion.*``) are skipped.

Layers
------
audio: ``"0".."L"`` the HuBERT layers the weighted sum reads (fairseq's ``layer_results``), then
the speech branch's transformer layer(s) over the frames (CLS / keyword positions left out; as the
original ``feature_extractor_s3prl`` appends them), pooled over valid frames; ``joint`` (the
branch's output in CLIP's space, before the L2 normalisation every analysis applies);
``weighted_sum`` (the branch's input, pooled). text, image: CLIP's hidden states ``"0".."N"`` and
``joint`` (``get_text_features`` / ``get_image_features``), exactly as family ``clip``.

Clips are run through HuBERT alone (or in batches of equal length) unless its feature encoder is
layer-normed (large), where padding with an attention mask leaves the valid frames unchanged;
so every clip gets the embedding it gets alone (the original padded batches, which changes
group-normed HuBERT base's features with the batch).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from .base import JOINT, Adapter, hf_load, join_groups, length_groups, lengths_to_mask, pool, select_device
from .build import BUILD_MARKER
from .checkpoints import sha256_of

log = logging.getLogger("avprobe")

WEIGHTED_SUM = "weighted_sum"
VARIANTS = ("parallel", "cascaded")
SAMPLE_RATE = 16000
#: HuBERT's frame hop in samples (the original's ``MODEL_DOWNSAMPLE_RATE``).
HOP = 320
#: Codes of the reduced vocabulary the quantizer never picks (``prob_msk=[0, 2, 3]``: CLIP id 0,
#: the padding of the original's zero-filled token rows, and the start/end-of-text tokens).
MASKED_CODES = (0, 2, 3)
#: The checkpoint file's name inside the built control's folder.
CHECKPOINT_FILE = "speechclip.ckpt"
#: Companion transformers repositories (spec key → default, SpeechCLIP base).
DEFAULT_HUBERT = "facebook/hubert-base-ls960"
DEFAULT_CLIP = "openai/clip-vit-base-patch32"
LARGE_HINT = ("a large SpeechCLIP needs hubert: facebook/hubert-large-ll60k and "
              "clip: openai/clip-vit-large-patch14 in the model entry")


class CheckpointLayoutError(ValueError):
    """A checkpoint whose keys or shapes do not match SpeechCLIP's original layout."""


# ---------------------------------------------------------------------------------------------
# Settings: the original YAML's model_settings, with the released checkpoints' values as defaults
# ---------------------------------------------------------------------------------------------


@dataclass
class Settings:
    """What shapes the speech branch beyond the tensor sizes.

    Defaults are the values of the original ``config/speechCLIP/model_{base,large}/spchclp_*.yaml``
    (the configs of the released checkpoints): 1 layer / 8 heads / FF 4×width for parallel,
    1 head / 8 keywords for cascaded, eps 1e-5, GELU, post-norm. The two audio switches differ
    between sizes: ``normalize_waveform`` is the fairseq task's ``normalize`` of the HuBERT
    checkpoint (False for hubert_base_ls960, True for hubert_large_ll60k) and
    ``normalize_hiddenstates`` the YAML's ``audio_encoder.normalize_hiddenstates`` (False for
    base, True for large: each layer is layer-normed, without affine, before the weighted sum).
    """

    variant: str
    nhead: int
    n_layers: int = 1
    dim_feedforward: int | None = None  # None: 4 × width
    activation: str = "gelu"
    layer_norm_eps: float = 1e-5
    keywords: int = 8
    normalize_waveform: bool = False
    normalize_hiddenstates: bool = False
    sources: dict = field(default_factory=dict)

    @classmethod
    def defaults(cls, variant: str, large: bool) -> "Settings":
        if variant not in VARIANTS:
            raise ValueError(f"SpeechCLIP variant {variant!r} is not one of {VARIANTS}")
        return cls(variant=variant, nhead=8 if variant == "parallel" else 1,
                   normalize_waveform=large, normalize_hiddenstates=large,
                   sources={"defaults": "large" if large else "base"})

    def update_from_original(self, config: Mapping | None) -> None:
        """Take what the checkpoint's own ``hyper_parameters['config']`` says (nested like the
        original YAML); refuse settings this rebuild does not implement."""
        if not config:
            return
        ms = _get(config, "model_settings") or {}
        branch = _get(ms, f"{self.variant}_branch") or {}
        args = _get(branch, "transformer_args") or {}
        for key, kind in (("nhead", int), ("n_layers", int), ("dim_feedforward", int), ("activation", str),
                          ("layer_norm_eps", float)):
            if _get(args, key) is not None:
                setattr(self, key, kind(_get(args, key)))
        if _get(args, "norm_first"):
            raise CheckpointLayoutError("SpeechCLIP: norm_first transformer branches are not implemented")
        if self.activation not in ("gelu", "relu"):
            raise CheckpointLayoutError(f"SpeechCLIP: branch activation {self.activation!r} is not implemented")
        expected = {"parallel": "TransformerEncoder", "cascaded": "MultiheadAttentionAndNorm"}[self.variant]
        kind = _get(branch, "transformer_type")
        if kind is not None and kind != expected:
            raise CheckpointLayoutError(f"SpeechCLIP {self.variant}: transformer_type {kind!r} is not "
                                        f"implemented (only {expected!r}, the released checkpoints')")
        if self.variant == "cascaded":
            kw = _get(branch, "keyword") or {}
            if _get(kw, "number") is not None:
                self.keywords = int(_get(kw, "number"))
            bn = _get(kw, "batchnorms") or {}
            if bn and (_get(bn, "type") != "eachKw" or not _get(bn, "parallel")):
                raise CheckpointLayoutError("SpeechCLIP cascaded: only keyword batchnorms of type eachKw with "
                                            "parallel: true are implemented")
            if _get(kw, "kw_projection") is not None:
                raise CheckpointLayoutError("SpeechCLIP cascaded: an MLP kw_projection is not implemented")
            vq = _get(_get(branch, "vq") or {}, "type")
            if vq is not None and vq != "SimpleVectorQuantizer":
                raise CheckpointLayoutError(f"SpeechCLIP cascaded: quantizer {vq!r} is not implemented")
        audio = _get(config, "audio_encoder") or {}
        if _get(audio, "feat_select_idx") not in (None, "weighted_sum"):
            raise CheckpointLayoutError("SpeechCLIP: only the weighted_sum feature selection is implemented")
        if _get(audio, "normalize_hiddenstates") is not None:
            self.normalize_hiddenstates = bool(_get(audio, "normalize_hiddenstates"))
            if self.normalize_hiddenstates and (_get(audio, "normalize_type") or "s3prl") != "s3prl":
                raise CheckpointLayoutError("SpeechCLIP: only normalize_type s3prl is implemented")
        name = _get(audio, "name")
        # The fairseq task config of each HuBERT checkpoint (not stored in SpeechCLIP's file).
        if name in ("hubert", "hubert_base"):
            self.normalize_waveform = False
        elif name == "hubert_large_ll60k":
            self.normalize_waveform = True
        self.sources["checkpoint_config"] = True


def _large_like(hubert_config) -> bool:
    """fairseq's HuBERT large/xlarge (layer-normed feature encoder, pre-norm layers) were trained
    on normalised waveforms, base (group norm) on raw ones; SpeechCLIP large also normalised the
    layers before its weighted sum. Used where the checkpoint's own config does not say."""
    return getattr(hubert_config, "feat_extract_norm", "group") == "layer"


def _get(obj, key):
    if isinstance(obj, Mapping):
        return obj.get(key)
    return None


# ---------------------------------------------------------------------------------------------
# Reading a Lightning checkpoint without the original code
# ---------------------------------------------------------------------------------------------


class _Stub:
    """Stands in for a class the checkpoint pickled that is not importable here (avssl's
    ``OrderedNamespace``, Lightning callbacks): it only records what it was given."""

    def __init__(self, *args, **kwargs):
        self._args, self._kwargs, self._state = args, kwargs, None

    def __setstate__(self, state):
        self._state = state


def _plain(obj):
    """Stubs and containers → plain dicts/lists (``OrderedNamespace`` keeps its fields in
    ``_odict``)."""
    if isinstance(obj, _Stub):
        state = getattr(obj, "_state", None)  # unset when the pickle built it without state
        if isinstance(state, Mapping) and "_odict" in state:
            return _plain(state["_odict"])
        if isinstance(state, Mapping):
            return _plain(dict(state))
        return None
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def read_checkpoint(path) -> tuple[dict, dict | None]:
    """``(state_dict, original_config | None)`` of a SpeechCLIP Lightning checkpoint.

    Loads with ``weights_only=True``: every global the file pickles beyond tensors and plain
    containers (the original's ``OrderedNamespace`` config, Lightning callback classes) is
    mapped to an inert stub, so nothing from the file is executed and the original package is
    not needed. Raises CheckpointLayoutError for a file with no ``state_dict``.
    """
    import torch
    from torch.serialization import get_unsafe_globals_in_checkpoint, safe_globals

    path = str(path)
    try:
        names = get_unsafe_globals_in_checkpoint(path)
    except Exception as err:  # not a zip-format torch file
        raise CheckpointLayoutError(
            f"{path}: not a PyTorch (zip) checkpoint file ({type(err).__name__}: {err})") from err
    stubs = [(type(n.rsplit(".", 1)[-1], (_Stub,), {}), n) for n in names]
    with safe_globals(stubs):
        # mmap: the frozen HuBERT and CLIP in the file (GBs for large) are paged in only if read
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("state_dict"), Mapping):
        raise CheckpointLayoutError(f"{path}: no 'state_dict' in the file; a SpeechCLIP checkpoint is a "
                                    "PyTorch Lightning .ckpt (see hf://speechclip/models)")
    hp = ckpt.get("hyper_parameters")
    config = _plain(hp.get("config")) if isinstance(hp, Mapping) else None
    return dict(ckpt["state_dict"]), config if isinstance(config, Mapping) else None


# ---------------------------------------------------------------------------------------------
# The key remap: original Lightning state_dict key → key of :class:`SpeechBranch` here
# ---------------------------------------------------------------------------------------------

#: ``variant → [(original key or prefix, our key or prefix)]``; a prefix ends with ".".
REMAP: dict[str, list[tuple[str, str]]] = {
    "parallel": [
        ("audio_encoder.weightedsum_layer.weights", "layer_weights"),
        ("parallel_branch.cls", "cls"),
        ("parallel_branch.self_att.model.", "encoder."),  # nn.TransformerEncoder: layers.<i>.*, norm.*
        ("parallel_branch.linear_proj.", "proj."),
    ],
    "cascaded": [
        ("audio_encoder.weightedsum_layer.weights", "layer_weights"),
        ("cascaded_branch.cls", "cls"),
        ("cascaded_branch.self_att.multihead_attn_layer.", "attn."),
        ("cascaded_branch.self_att.attentionBlock_Norm.", "norm."),
        ("cascaded_branch.linear_proj.", "proj."),
        ("cascaded_branch.bn_layer.bn_layer.", "bn."),
        ("cascaded_branch.vector_quantizer.curr_temp", "vq_temperature"),
        # the reduced CLIP token table (rows = the vocabulary file's ids): the codebook
        ("clip.model.token_embedding.weight", "codebook"),
    ],
}
#: Frozen copies (loaded from the companion repositories instead) and training-only state: the
#: fairseq HuBERT, everything of the original's ``ClipModel`` (``clip.model.*``, and
#: ``clip.original_text_emb_weight``: the full token table it keeps as a registered parameter
#: after swapping in the reduced one), its alias under the cascaded branch, the loss's state.
SKIPPED_PREFIXES = ("audio_encoder.encoder.", "clip.", "cascaded_branch.clip.", "criterion.")
#: Frozen tensors compared with the companions: original key → (companion, its key, transpose).
FROZEN_CHECKS = {
    "clip.model.text_projection": ("clip", "text_projection.weight", True),
    "clip.model.visual.proj": ("clip", "visual_projection.weight", True),
    "audio_encoder.encoder.encoder.layers.0.fc1.weight":
        ("hubert", "encoder.layers.0.feed_forward.intermediate_dense.weight", False),
}


def remap_state_dict(state: Mapping, variant: str) -> tuple[dict, list[str], list[str]]:
    """``(ours, unexpected, skipped)``: the branch's tensors under our keys, the original keys
    that are neither the branch nor a known frozen/training-only part, and those skipped."""
    table = REMAP[variant]
    ours, unexpected, skipped = {}, [], []
    for key, value in state.items():
        for theirs, mine in table:
            if key == theirs or (theirs.endswith(".") and key.startswith(theirs)):
                ours[mine + key[len(theirs):]] = value
                break
        else:
            (skipped if key.startswith(SKIPPED_PREFIXES) else unexpected).append(key)
    return ours, unexpected, skipped


def original_key(ours: str, variant: str) -> str:
    """The inverse of :func:`remap_state_dict` for one key (used by the builder)."""
    for theirs, mine in REMAP[variant]:
        if ours == mine or (mine.endswith(".") and ours.startswith(mine)):
            return theirs + ours[len(mine):]
    raise KeyError(ours)


def infer_variant(state: Mapping) -> str:
    has = {v for v in VARIANTS if f"{v}_branch.cls" in state}
    if len(has) != 1:
        raise CheckpointLayoutError("cannot tell the SpeechCLIP variant from the checkpoint: expected exactly "
                                    "one of 'parallel_branch.cls' / 'cascaded_branch.cls', found "
                                    f"{sorted(has) or 'none'}")
    return has.pop()


# ---------------------------------------------------------------------------------------------
# The speech branch (torch modules; built lazily so that importing this module needs no torch)
# ---------------------------------------------------------------------------------------------


def _modules():
    import torch
    import torch.nn.functional as F
    from torch import nn

    class SpeechBranch(nn.Module):
        """The trained part: layer weights + the parallel or cascaded branch.

        Shapes: ``width`` = HuBERT's hidden size (the branch's d_model), ``n_hidden`` = HuBERT's
        layers + 1, ``out_dim`` (parallel) = CLIP's joint width, ``text_dim`` (cascaded) = CLIP's
        token-embedding width, ``vocab`` = rows of the reduced token table.
        """

        def __init__(self, s: Settings, width: int, n_hidden: int, out_dim: int, text_dim: int, vocab: int):
            super().__init__()
            self.settings = s
            self.layer_weights = nn.Parameter(torch.zeros(n_hidden))
            ff = s.dim_feedforward or 4 * width
            if s.variant == "parallel":
                self.cls = nn.Parameter(torch.randn(1, 1, width))
                layer = nn.TransformerEncoderLayer(width, s.nhead, ff, dropout=0.1, activation=s.activation,
                                                   layer_norm_eps=s.layer_norm_eps, batch_first=True,
                                                   norm_first=False)
                self.encoder = nn.TransformerEncoder(layer, s.n_layers, nn.LayerNorm(width, eps=1e-5),
                                                     enable_nested_tensor=False)
                self.proj = nn.Linear(width, out_dim)
            else:
                k = s.keywords
                self.cls = nn.Parameter(torch.randn(1, k, width))
                self.attn = nn.MultiheadAttention(width, s.nhead, dropout=0.1, batch_first=True)
                self.norm = nn.LayerNorm(width, eps=s.layer_norm_eps)
                self.proj = nn.Linear(width, text_dim)
                self.bn = nn.BatchNorm1d(text_dim * k)
                self.register_buffer("vq_temperature", torch.tensor([0.1]))
                self.register_buffer("codebook", torch.zeros(vocab, text_dim))

        @property
        def n_layers(self) -> int:
            return self.settings.n_layers if self.settings.variant == "parallel" else 1

        def layer_sum(self, layers):
            """Softmax-weighted sum of HuBERT's ``L+1`` layers (each (B, T, D)) → (B, T, D)."""
            x = torch.stack(list(layers), 0)
            if self.settings.normalize_hiddenstates:
                x = F.layer_norm(x, (x.shape[-1],))
            w = torch.softmax(self.layer_weights, 0).to(x.dtype)
            return (w.view(-1, 1, 1, 1) * x).sum(0)

        def forward(self, feats, frame_mask):
            """``feats`` (B, T, D) weighted sum, ``frame_mask`` (B, T) valid frames →
            ``{"joint" (B, out_dim) [parallel] | "keywords" (B, K, E), "codes" (B, K) [cascaded],
            "frames": [(B, T, D) per branch layer]}``."""
            b = feats.shape[0]
            n = self.cls.shape[1]
            src = torch.cat([self.cls.expand(b, -1, -1).to(feats.dtype), feats], 1)
            pad = torch.cat([torch.zeros(b, n, dtype=torch.bool, device=feats.device), ~frame_mask.bool()], 1)
            if self.settings.variant == "parallel":
                h, frames = src, []
                for layer in self.encoder.layers:
                    h = layer(h, src_key_padding_mask=pad)
                    frames.append(h[:, n:])
                h = self.encoder.norm(h)
                return {JOINT: self.proj(h[:, 0]), "frames": frames}
            att = self.attn(src, src, src, key_padding_mask=pad, need_weights=False)[0]
            h = self.norm(att + src)
            kw = self.proj(h[:, :n])  # (B, K, E)
            e = kw.shape[-1]
            # Kw_BatchNorm(eachKw, parallel): one BatchNorm1d over features ordered d*K + k
            kw = self.bn(kw.transpose(1, 2).reshape(b, e * n)).reshape(b, e, n).transpose(1, 2)
            # cosine similarity with every code (F.cosine_similarity clamps each norm at 1e-8)
            unit = kw / kw.norm(dim=-1, keepdim=True).clamp_min(1e-8)
            book = self.codebook / self.codebook.norm(dim=-1, keepdim=True).clamp_min(1e-8)
            cos = unit @ book.T
            cos[..., list(MASKED_CODES)] = float("-inf")
            codes = cos.argmax(-1)
            return {"keywords": self.codebook[codes], "codes": codes, "frames": [h[:, n:]]}

    return SpeechBranch


def new_branch(settings: Settings, width: int, n_hidden: int, out_dim: int, text_dim: int, vocab: int):
    return _modules()(settings, width, n_hidden, out_dim, text_dim, vocab)


@contextlib.contextmanager
def _layer_results(hubert):
    """Collect fairseq's ``layer_results`` from a transformers HuBERT: the input of the first
    transformer layer (after the positional convolution, and the encoder LayerNorm in the
    post-norm base model) and each layer's output (before the final LayerNorm of the pre-norm
    large model). Hooks, so it does not depend on how a transformers release assembles
    ``hidden_states``."""
    got: list = []
    layers = hubert.encoder.layers

    def first(_module, args):
        got.append(args[0])

    def each(_module, _args, out):
        got.append(out[0] if isinstance(out, tuple) else out)

    handles = [layers[0].register_forward_pre_hook(first)] + [lay.register_forward_hook(each) for lay in layers]
    try:
        yield got
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def _token_override(clip_model, keywords):
    """Replace positions 1..K of CLIP's token embeddings by ``keywords`` (B, K, E)."""
    import torch

    k = keywords.shape[1]

    def hook(_module, _args, out):
        return torch.cat([out[:, :1], keywords.to(out.dtype), out[:, k + 1:]], 1)

    handle = clip_model.text_model.embeddings.token_embedding.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def encode_keywords(clip_model, keywords, bos: int, eos: int):
    """The original's ``ClipModel.encode_keywords`` through transformers' CLIP: the sequence
    ``<|startoftext|> kw_1 … kw_K <|endoftext|>`` (token embeddings replaced by the keyword
    vectors) through ``get_text_features``, read at the EOT. The original padded to 77 tokens; the
    causal mask makes the EOT's output independent of what follows it. (B, K, E) → (B, D)."""
    import torch

    b, k, _ = keywords.shape
    ids = torch.full((b, k + 2), int(bos), dtype=torch.long, device=keywords.device)
    ids[:, -1] = int(eos)
    with _token_override(clip_model, keywords):
        out = clip_model.get_text_features(input_ids=ids)
    return out if torch.is_tensor(out) else out.pooler_output


# ---------------------------------------------------------------------------------------------
# The adapter
# ---------------------------------------------------------------------------------------------


class SpeechCLIPAdapter(Adapter):
    """SpeechCLIP: towers audio (speech), text and image, all in CLIP's joint space.

    ``spec`` keys: ``variant`` (parallel | cascaded; default: what the checkpoint holds, which it
    must match), ``hubert`` / ``clip`` (companion transformers repositories or folders; default
    the base ones, ``facebook/hubert-base-ls960`` and ``openai/clip-vit-base-patch32``),
    ``source`` (the checkpoint: ``hf://speechclip/models/<file>``, an https URL + ``sha256``, or a
    local file), ``pad_batches``. A built control's folder (``model_dir``) holds
    ``speechclip.ckpt`` and the tiny ``hubert/`` and ``clip/`` folders its config.json names.
    """

    family = "speechclip"
    natural_towers = ("audio", "text", "image")

    def __init__(self, name: str, spec: Mapping, model_dir=None, device: str = "auto") -> None:
        import transformers

        from . import checkpoints
        from .hf import CLIPAdapter, _dtype_kwargs

        spec = dict(spec)
        dev = select_device(device)
        local_cfg: dict = {}
        kind = spec.get("kind") or "pretrained"
        if model_dir is not None:
            folder = Path(model_dir)
            folder = folder.parent if folder.is_file() else folder
            local_cfg = json.loads((folder / "config.json").read_text())
            ckpt_path = folder / local_cfg.get("checkpoint", CHECKPOINT_FILE)
            hubert_src, clip_src = str(folder / local_cfg["hubert"]), str(folder / local_cfg["clip"])
            marker = folder / BUILD_MARKER
            if marker.is_file():
                kind = json.loads(marker.read_text()).get("kind", "untrained")
            revision = None
        else:
            if kind == "untrained":
                raise ValueError(f"model {name!r} is an untrained control: build it from {spec.get('source')!r} "
                                 "with the build_untrained_model rule and pass its folder as model_dir")
            if not spec.get("source"):
                raise ValueError(f"model {name!r}: the spec has no 'source' (the SpeechCLIP checkpoint file, "
                                 "e.g. hf://speechclip/models/base/flickr/parallel/<file>.ckpt)")
            ckpt_path = checkpoints.locate(name, str(spec["source"]), spec.get("revision"), spec.get("sha256"))
            hubert_src = str(spec.get("hubert") or DEFAULT_HUBERT)
            clip_src = str(spec.get("clip") or DEFAULT_CLIP)
            revision = spec.get("revision")
        # float32 only: the argmax of the cascaded quantizer should not flip with the precision.
        if str(spec.get("dtype") or "float32") not in ("float32", "fp32"):
            log.warning("model %s: SpeechCLIP runs in float32 (dtype %s ignored)", name, spec.get("dtype"))
        super().__init__(name, spec, kind=kind, device=dev, dtype="float32",
                         source=str(spec.get("source") or model_dir), revision=revision)
        self.checkpoint_path = Path(ckpt_path)
        self.companions = {"hubert": hubert_src, "clip": clip_src}

        # frozen CLIP: the clip family's adapter (tokenizer, image processor, hidden states, joint)
        clip_spec = {"family": "clip", "towers": ["text", "image"], "source": clip_src,
                     "kind": kind if model_dir is not None else "pretrained", "pooling": spec.get("pooling")}
        clip_spec = {k: v for k, v in clip_spec.items() if v is not None}
        self.clip = CLIPAdapter(f"{name}/clip", clip_spec, model_dir=clip_src if Path(clip_src).is_dir() else None,
                                device=dev)
        # frozen HuBERT
        self.hubert_config = hf_load(transformers.AutoConfig, name, hubert_src, None)
        self.hubert = hf_load(transformers.HubertModel, name, hubert_src, None, **_dtype_kwargs("float32"))
        self.hubert.to(dev).eval()
        self.hubert_revision = getattr(self.hubert_config, "_commit_hash", None)

        state, original = read_checkpoint(self.checkpoint_path)
        variant = infer_variant(state)
        wanted = spec.get("variant") or local_cfg.get("variant")
        if wanted and wanted != variant:
            raise CheckpointLayoutError(f"model {name!r}: variant {wanted!r} was asked for but "
                                        f"{self.checkpoint_path} holds a {variant} SpeechCLIP")
        width = int(self.hubert_config.hidden_size)
        settings = Settings.defaults(variant, large=_large_like(self.hubert_config))
        settings.update_from_original(original)
        for key in ("normalize_waveform", "normalize_hiddenstates"):
            if key in local_cfg:
                setattr(settings, key, bool(local_cfg[key]))
                settings.sources[key] = "config.json"
        self.settings = settings
        clip_cfg = self.clip.config
        n_hidden = int(self.hubert_config.num_hidden_layers) + 1
        codebook = state.get("clip.model.token_embedding.weight")
        vocab = int(codebook.shape[0]) if codebook is not None else 0
        self.branch = new_branch(settings, width, n_hidden, int(clip_cfg.projection_dim),
                                 int(clip_cfg.text_config.hidden_size), vocab)
        self.frozen_check = load_branch(self.branch, state, variant, name=name, hubert=self.hubert,
                                        clip=self.clip.model, companions=self.companions)
        self.branch.to(dev).eval()
        self.variant = variant
        self.ckpt_sha256 = sha256_of(self.checkpoint_path)
        if variant == "cascaded":
            tok = self.clip.tokenizer
            self.bos = tok.bos_token_id if tok.bos_token_id is not None else clip_cfg.text_config.bos_token_id
            self.eos = tok.eos_token_id if tok.eos_token_id is not None else clip_cfg.text_config.eos_token_id
        safe = getattr(self.hubert_config, "feat_extract_norm", "group") == "layer"
        self.pad_batches = bool(spec.get("pad_batches", safe))

    # -- layers ---------------------------------------------------------------------------------
    def input_sample_rate(self, tower="audio"):
        return SAMPLE_RATE

    def layers(self, tower):
        self.check_tower(tower)
        if tower != "audio":
            return self.clip.layers(tower)
        n = int(self.hubert_config.num_hidden_layers) + 1 + self.branch.n_layers
        return [str(i) for i in range(n)] + [JOINT, WEIGHTED_SUM]

    # -- audio ----------------------------------------------------------------------------------
    def _groups(self, waves):
        return length_groups(waves, self.pad_batches)

    def speech_forward(self, waves):
        """One padded batch of waveforms (16 kHz, 1-D float32) through HuBERT and the branch.

        Returns ``(layer_results, frame_mask, weighted, branch_out)``: the L+1 HuBERT layers
        (B, T, D), the valid-frame mask (B, T), the weighted sum (B, T, D) and the branch's dict.
        """
        import torch
        import torch.nn.functional as F

        lengths = torch.tensor([len(w) for w in waves])
        x = torch.zeros(len(waves), int(lengths.max()))
        for i, w in enumerate(waves):
            t = torch.from_numpy(np.asarray(w, np.float32))
            if self.settings.normalize_waveform:  # fairseq: F.layer_norm over the whole clip
                t = F.layer_norm(t, t.shape)
            x[i, : len(t)] = t
        mask = lengths_to_mask(lengths, x.shape[1]).long()
        padded = bool((lengths != lengths.max()).any())
        with _layer_results(self.hubert) as results:
            self.hubert(x.to(self.device), attention_mask=mask.to(self.device) if padded else None)
        frames = self.hubert._get_feat_extract_output_lengths(lengths)
        # the original's round(len / 320), clamped to the frames HuBERT computed for the clip
        frames = torch.minimum(torch.round(lengths.double() / HOP).long(), frames)
        frame_mask = lengths_to_mask(frames, results[0].shape[1]).to(self.device)
        weighted = self.branch.layer_sum(results)
        return results, frame_mask, weighted, self.branch(weighted, frame_mask)

    def speech_joint(self, branch_out):
        """The branch's output in CLIP's space (B, D): the parallel projection, or the cascaded
        keywords through CLIP's text encoder."""
        if self.variant == "parallel":
            return branch_out[JOINT]
        return encode_keywords(self.clip.model, branch_out["keywords"], self.bos, self.eos)

    def _embed_audio(self, waves, names):
        import torch

        how = self.pooling("audio")
        n_hub = int(self.hubert_config.num_hidden_layers) + 1
        parts = []
        for idx in self._groups(waves):
            with torch.inference_mode():
                results, fmask, weighted, branch = self.speech_forward([waves[i] for i in idx])
                res = {}
                for nm in names:
                    if nm == JOINT:
                        res[nm] = self.speech_joint(branch).float().cpu().numpy()
                    elif nm == WEIGHTED_SUM:
                        res[nm] = pool(weighted, fmask, how).cpu().numpy()
                    else:
                        i = int(nm)
                        h = results[i] if i < n_hub else branch["frames"][i - n_hub]
                        res[nm] = pool(h, fmask, how).cpu().numpy()
            parts.append((idx, res))
        return join_groups(parts, names, len(waves))

    def _embed(self, tower, items, names):
        if tower == "audio":
            return self._embed_audio(items, names)
        return self.clip._embed(tower, items, names)

    def provenance(self) -> dict:
        out = super().provenance()
        out.update({
            "architecture": f"SpeechCLIP-{self.variant}",
            "variant": self.variant,
            "checkpoint": str(self.checkpoint_path),
            "checkpoint_sha256": self.ckpt_sha256,
            "companions": {"hubert": self.companions["hubert"], "hubert_revision": self.hubert_revision,
                           "clip": self.companions["clip"], "clip_revision": self.clip.revision},
            "settings": {k: v for k, v in asdict(self.settings).items()},
            "frozen_check": self.frozen_check,
        })
        return out


def load_branch(branch, state: Mapping, variant: str, *, name: str = "speechclip", hubert=None, clip=None,
                companions: Mapping | None = None) -> dict:
    """Load the original checkpoint's branch into ``branch`` (strict); return the frozen check.

    Raises CheckpointLayoutError naming missing keys (the module needs them), unexpected keys
    (the file has them and they are neither the branch nor a known frozen part), shape
    mismatches (with the companion hint for base vs large) and frozen tensors that differ from
    the companions'.
    """
    ours, unexpected, _skipped = remap_state_dict(state, variant)
    expected = branch.state_dict()
    missing = sorted(k for k in expected if k not in ours)
    extra = sorted(k for k in ours if k not in expected)
    if missing or unexpected or extra:
        miss = [original_key(k, variant) for k in missing]
        raise CheckpointLayoutError(
            f"model {name!r}: the checkpoint does not have SpeechCLIP-{variant}'s original key layout: "
            f"missing keys {miss[:12]}{' …' if len(miss) > 12 else ''}; unexpected keys "
            f"{(unexpected + [original_key(k, variant) for k in extra])[:12]}")
    for key, value in ours.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise CheckpointLayoutError(
                f"model {name!r}: checkpoint tensor {original_key(key, variant)!r} has shape {tuple(value.shape)} "
                f"but the branch built for the companions {dict(companions or {})} needs "
                f"{tuple(expected[key].shape)}; {LARGE_HINT} (and the base ones for a base SpeechCLIP)")
    branch.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ours.items()}, strict=True)
    return check_frozen(state, {"hubert": hubert, "clip": clip}, name)


def check_frozen(state: Mapping, models: Mapping, name: str) -> dict:
    """Compare the frozen tensors the file holds with the companions' (max abs difference)."""
    out = {}
    for key, (which, theirs, transpose) in FROZEN_CHECKS.items():
        model = models.get(which)
        if key not in state or model is None:
            continue
        mine = dict(model.named_parameters()).get(theirs)
        if mine is None:
            continue
        ref = state[key].float()
        ref = ref.T if transpose else ref
        if tuple(ref.shape) != tuple(mine.shape):
            raise CheckpointLayoutError(f"model {name!r}: the checkpoint's frozen {key!r} has shape "
                                        f"{tuple(ref.shape)}, the companion {which}'s {theirs!r} "
                                        f"{tuple(mine.shape)}: wrong companion; {LARGE_HINT}")
        diff = float((ref - mine.detach().float().cpu()).abs().max())
        scale = max(1.0, float(ref.abs().max()))
        if diff > 1e-3 * scale:
            raise CheckpointLayoutError(f"model {name!r}: the checkpoint's frozen {key!r} differs from the companion "
                                        f"{which}'s {theirs!r} (max abs difference {diff:.3g}): the companion is not "
                                        "the model SpeechCLIP was trained on")
        out[key] = diff
    return out


# ---------------------------------------------------------------------------------------------
# Reference (contract test) and the untrained-control builder
# ---------------------------------------------------------------------------------------------


def reference_joint(adapter: SpeechCLIPAdapter, tower: str, items) -> dict[str, np.ndarray]:
    """The ``joint`` layer one item at a time: CLIP's own ``get_*_features`` for text and images
    (:func:`avprobe.models.hf.reference_joint`); for speech, HuBERT's own ``hidden_states``
    (transformers ≥ 5 returns fairseq's ``layer_results`` there), the weighted sum and the branch,
    one clip alone and unpadded."""
    import torch

    from .hf import reference_joint as clip_reference

    if tower != "audio":
        return clip_reference(adapter.clip, tower, items)
    rows = []
    for wave in adapter._prepare(tower, list(items)):
        t = torch.from_numpy(wave)[None].to(adapter.device)
        if adapter.settings.normalize_waveform:
            t = torch.nn.functional.layer_norm(t, t.shape[1:])
        with torch.inference_mode():
            hs = adapter.hubert(t, output_hidden_states=True).hidden_states
            mask = torch.ones(1, hs[0].shape[1], dtype=torch.bool, device=adapter.device)
            branch = adapter.branch(adapter.branch.layer_sum(hs), mask)
            rows.append(adapter.speech_joint(branch)[0].float().cpu().numpy())
    return {JOINT: np.stack(rows)}


def build_untrained(config_dir, out_dir, seed: int) -> Path:
    """A seeded *untrained* SpeechCLIP control, written as a downloaded one would be used.

    ``config_dir/config.json`` names the variant, the tiny ``hubert``/``clip`` architecture
    folders (built here with :func:`avprobe.models.build.build_untrained`), the reduced vocabulary
    (CLIP token ids, ordered like the original's vocabulary files: row 0 = id 0's analogue, rows
    2 and 3 = start/end of text) and ``original_config`` (the original YAML's nested layout,
    stored as the checkpoint's ``hyper_parameters['config']``). The branch is initialised as the
    original initialises it (CLS ~ N(0, 1), torch's default layers, layer weights 0, keyword
    BatchNorm scale/shift = the token table's std/mean), and saved in the original Lightning
    ``state_dict`` layout together with a few frozen tensors (the reduced token table, CLIP's
    projections, one HuBERT weight, the full token table the original keeps beside the reduced
    one) that the adapter skips or checks against the companions. Files: the
    tiny ``hubert/`` and ``clip/`` folders, ``speechclip.ckpt``, ``avprobe_build.json`` (kind
    untrained), and ``config.json`` last.
    """
    import torch
    import transformers

    from .build import build_untrained as build_hf
    from .build import staged_folder, write_marker

    config_dir, out_dir = Path(config_dir), Path(out_dir)
    cfg = json.loads((config_dir / "config.json").read_text())
    if cfg.get("model_type") != "speechclip":
        raise ValueError(f"{config_dir}: config.json is not a SpeechCLIP architecture config (model_type speechclip)")
    variant = cfg["variant"]
    with staged_folder(out_dir) as tmp:
        build_hf(config_dir / cfg["hubert"], tmp / "hubert", seed)
        build_hf(config_dir / cfg["clip"], tmp / "clip", seed + 1)
        hubert = transformers.HubertModel.from_pretrained(tmp / "hubert")
        clip = transformers.CLIPModel.from_pretrained(tmp / "clip")
        table = clip.text_model.embeddings.token_embedding.weight.detach()
        ids = cfg.get("vocabulary") or list(range(table.shape[0]))
        reduced = table[torch.tensor(ids)].clone()
        original = cfg.get("original_config") or {}
        s = Settings.defaults(variant, large=_large_like(hubert.config))
        s.update_from_original(original)
        for key in ("normalize_waveform", "normalize_hiddenstates"):
            if key in cfg:
                setattr(s, key, bool(cfg[key]))
        torch.manual_seed(int(seed) + 2)
        branch = new_branch(s, hubert.config.hidden_size, hubert.config.num_hidden_layers + 1,
                            clip.config.projection_dim, clip.config.text_config.hidden_size, len(ids))
        if variant == "cascaded":
            with torch.no_grad():  # Kw_BatchNorm.init_bn: scale = std, shift = mean of the token table
                branch.bn.weight.copy_(reduced.std(0).repeat(s.keywords))
                branch.bn.bias.copy_(reduced.mean(0).repeat(s.keywords))
                branch.codebook.copy_(reduced)
        state = OrderedDict((original_key(k, variant), v.detach().clone()) for k, v in branch.state_dict().items())
        # frozen parts the real file also holds (a sample; the adapter loads them from companions)
        state["clip.model.token_embedding.weight"] = reduced
        state["clip.original_text_emb_weight"] = table.clone()
        if variant == "cascaded":
            state["cascaded_branch.clip.model.token_embedding.weight"] = reduced.clone()
            state["cascaded_branch.clip.original_text_emb_weight"] = table.clone()
        state["clip.model.text_projection"] = clip.text_projection.weight.detach().T.contiguous()
        state["clip.model.visual.proj"] = clip.visual_projection.weight.detach().T.contiguous()
        state["audio_encoder.encoder.encoder.layers.0.fc1.weight"] = \
            hubert.encoder.layers[0].feed_forward.intermediate_dense.weight.detach().clone()
        eye = torch.eye(8, dtype=torch.bool)  # MaskedContrastiveLoss's buffers (256 × 256 in the original)
        state.update({"criterion.eye_mat": eye, "criterion.neg_eye_mat": ~eye, "criterion.eye_mat_fl": eye.float()})
        hparams = {"config": {**original, "model_settings": {
            **(original.get("model_settings") or {}),
            "parallel_objective_weight": 1.0 if variant == "parallel" else 0.0,
            "cascaded_objective_weight": 1.0 if variant == "cascaded" else 0.0}}}
        torch.save({"epoch": 0, "global_step": 0, "pytorch-lightning_version": "untrained (avprobe)",
                    "state_dict": state, "hyper_parameters": hparams}, tmp / CHECKPOINT_FILE)
        marker = {
            "kind": "untrained", "source": str(config_dir), "seed": int(seed),
            "architecture": f"SpeechCLIP-{variant}",
            "n_parameters": int(sum(p.numel() for p in branch.parameters())),
            "checkpoint_sha256": sha256_of(tmp / CHECKPOINT_FILE),
            "config_sha256": hashlib.sha256((config_dir / "config.json").read_bytes()).hexdigest(),
            "torch": torch.__version__, "transformers": transformers.__version__,
        }
        write_marker(tmp, marker)
        local = {"model_type": "speechclip", "variant": variant, "checkpoint": CHECKPOINT_FILE,
                 "hubert": "hubert", "clip": "clip",
                 **{k: cfg[k] for k in ("normalize_waveform", "normalize_hiddenstates") if k in cfg}}
        (tmp / "config.json").write_text(json.dumps(local, indent=2, sort_keys=True) + "\n")
    log.info("built untrained SpeechCLIP-%s (seed %d) from %s into %s", variant, seed, config_dir, out_dir)
    return out_dir

