"""Hugging Face transformers families.

Every family loads with ``from_pretrained(source)``, where ``source`` is a hub id (cached by the
``prefetch_models`` rule), a local folder, or the folder of a seeded untrained control built by
:func:`avprobe.models.build.build_untrained`. Layers ``"0".."N"`` are the model's own
``hidden_states`` (``"0"`` = embedding output), pooled mask-aware; two-tower models add
``"joint"``, the projected embedding of ``get_text_features`` / ``get_image_features`` /
``get_audio_features``.

| family | towers | layers per tower |
| --- | --- | --- |
| hf_audio (HuBERT, wav2vec 2.0, WavLM, data2vec-audio) | audio | 0..N |
| whisper_encoder | audio | 0..N (encoder) |
| ast | audio | 0..N |
| clap | audio, text | 0..N, joint (audio: one per Swin stage + input) |
| clip, siglip | text, image | 0..N, joint |
| hf_image (DINOv2, ViT, ...) | image | 0..N |
| hf_text (BERT-like) | text | 0..N |
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Mapping

import numpy as np

from .base import (
    JOINT,
    Adapter,
    hf_load,
    join_groups,
    length_groups,
    lengths_to_mask,
    numpy_seed,
    receptive_field,
    pool,
    resolve_dtype,
    select_device,
    torch_dtype,
    weights_fingerprint,
)
from .build import BUILD_MARKER

log = logging.getLogger("avprobe")


def resolve_source(name: str, spec: Mapping, model_dir=None) -> tuple[str, bool]:
    """Where to load from: ``(path_or_hub_id, is_local_folder)``."""
    if model_dir is not None:
        path = Path(model_dir)
        if path.is_file():  # the built model's config.json
            path = path.parent
        if not path.is_dir():
            raise FileNotFoundError(f"model {name!r}: model_dir {str(model_dir)!r} is not a folder")
        return str(path), True
    if spec.get("kind") == "untrained":
        raise ValueError(
            f"model {name!r} is an untrained control: build it from {spec.get('source')!r} with "
            f"the build_untrained_model rule and pass its folder as model_dir"
        )
    source = spec.get("source")
    if not source:
        raise ValueError(f"model {name!r}: the spec has no 'source' (hub id or folder)")
    return str(source), Path(source).is_dir()


def _dtype_kwargs(dtype: str) -> dict:
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    return {key: torch_dtype(dtype)}


def _features(output, fallback):
    """``(joint, hidden_states)`` from a ``get_*_features`` call.

    transformers ≥ 5 returns a model output whose ``pooler_output`` is the projected embedding
    and which carries ``hidden_states``; older releases return the bare tensor, and then the
    tower is run again by ``fallback()`` for its hidden states.
    """
    import torch

    if torch.is_tensor(output):
        return output, fallback().hidden_states
    return output.pooler_output, output.hidden_states


class HFAdapter(Adapter):
    """Shared loading: config, model, processors; device, dtype and provenance."""

    auto_model = "AutoModel"

    def __init__(self, name: str, spec: Mapping, model_dir=None, device: str = "auto") -> None:
        import transformers
        from transformers import AutoConfig

        source, local = resolve_source(name, spec, model_dir)
        dev = select_device(device)
        dtype = resolve_dtype(spec.get("dtype"), dev)
        kind = spec.get("kind") or "pretrained"
        marker = Path(source) / BUILD_MARKER if local else None
        if marker is not None and marker.is_file():
            built = json.loads(marker.read_text())
            if spec.get("kind") and kind != built.get("kind", "untrained"):
                log.warning("model %s: spec says kind %r but %s was built untrained", name, kind, source)
            kind = built.get("kind", "untrained")
        super().__init__(name, spec, kind=kind, device=dev, dtype=dtype, source=source)
        self.local = local
        revision = None if local else spec.get("revision")
        self.requested_revision = revision
        self.config = hf_load(AutoConfig, name, source, revision)
        model_cls = getattr(transformers, self.auto_model)
        self.model = hf_load(model_cls, name, source, revision, **_dtype_kwargs(dtype))
        self.model.to(dev).eval()
        commit = getattr(self.config, "_commit_hash", None)
        self.revision = commit or (weights_fingerprint(source) if local else revision)
        self.load_processors(source, revision)

    def load_processors(self, source: str, revision: str | None) -> None:
        """Load the feature extractor / tokenizer / image processor a family needs."""

    def _load(self, loader_name: str, source: str, revision: str | None):
        import transformers

        return hf_load(getattr(transformers, loader_name), self.name, source, revision)

    def _image_batch(self, items):
        """The image processor's batch for HxWx3 arrays, channels-last stated explicitly: left to
        guess, processors read a 1x1, 3x1 or 1xN image as channels-first."""
        return self.image_processor(images=items, return_tensors="pt", input_data_format="channels_last")

    def _to_device(self, batch: Mapping, float_keys=("input_values", "input_features", "pixel_values")):
        out = {}
        for k, v in batch.items():
            if not hasattr(v, "to"):
                continue
            v = v.to(self.device)
            if k in float_keys and v.is_floating_point():
                v = v.to(torch_dtype(self.dtype))
            out[k] = v
        return out

    def provenance(self) -> dict:
        out = super().provenance()
        out["requested_revision"] = self.requested_revision
        out["architecture"] = type(self.model).__name__
        out["model_type"] = getattr(self.config, "model_type", None)
        return out

    @staticmethod
    def _numbered(n_hidden: int) -> list[str]:
        return [str(i) for i in range(n_hidden + 1)]

    @staticmethod
    def _collect(hidden_states, names, mask, how, extra=None) -> dict[str, np.ndarray]:
        out = {}
        for name in names:
            if name == JOINT:
                out[name] = extra.float().cpu().numpy()
            else:
                out[name] = pool(hidden_states[int(name)], mask, how).cpu().numpy()
        return out


# ---------------------------------------------------------------------------------------------
# Audio
# ---------------------------------------------------------------------------------------------

#: Encoders whose outputs on valid frames do not depend on padding when the attention mask is
#: passed (zeroed padded frames before a single positional convolution, masked attention).
_PADDING_SAFE = {"hubert", "wav2vec2", "wavlm"}


class HFAudioAdapter(HFAdapter):
    """HuBERT, wav2vec 2.0, WavLM, data2vec-audio: layers ``0..N`` of ``hidden_states``.

    Pooling counts only the frames of the real signal: the frame mask comes from the sample
    lengths through the model's ``_get_feat_extract_output_lengths``. Models that must not see
    an attention mask or whose group-norm feature encoder normalises over padding too
    (``feat_extract_norm: group``: wav2vec2-base, hubert-base, wavlm-base) and models whose positional
    convolution stack leaks padding (data2vec-audio) are run on batches of equal-length clips
    only, so every clip's embedding is the one it gets alone. ``spec['pad_batches']`` overrides.
    """

    family = "hf_audio"
    natural_towers = ("audio",)

    def load_processors(self, source, revision):
        self.feature_extractor = self._load("AutoFeatureExtractor", source, revision)
        safe = (getattr(self.feature_extractor, "return_attention_mask", False)
                and getattr(self.config, "feat_extract_norm", "layer") == "layer"
                and getattr(self.config, "model_type", "") in _PADDING_SAFE)
        self.pad_batches = bool(self.spec.get("pad_batches", safe))
        self.pass_mask = bool(getattr(self.feature_extractor, "return_attention_mask", False))

    def input_sample_rate(self, tower="audio"):
        return int(self.feature_extractor.sampling_rate)

    def min_input_samples(self, tower="audio"):
        return receptive_field(self.config.conv_kernel, self.config.conv_stride)

    #: These encoders have no window of their own (attention over every frame: memory grows
    #: with the square of the clip length), so one is set: ``max_input_seconds``, default 30 s.
    DEFAULT_MAX_INPUT_SECONDS = 30.0

    def input_window_samples(self, tower="audio"):
        seconds = float(self.spec.get("max_input_seconds") or self.DEFAULT_MAX_INPUT_SECONDS)
        return max(int(round(seconds * self.input_sample_rate())), 1)

    def layers(self, tower):
        self.check_tower(tower)
        return self._numbered(self.config.num_hidden_layers)

    def _groups(self, waves):
        return length_groups(waves, self.pad_batches)

    def _embed(self, tower, items, names):
        import torch

        how = self.pooling(tower)
        parts = []
        for idx in self._groups(items):
            waves = [items[i] for i in idx]
            batch = self.feature_extractor(waves, sampling_rate=self.input_sample_rate(), padding=True,
                                           return_attention_mask=True, return_tensors="pt")
            lengths = torch.tensor([len(w) for w in waves])
            inputs = {"input_values": batch["input_values"]}
            if self.pass_mask:
                inputs["attention_mask"] = batch["attention_mask"]
            inputs = self._to_device(inputs)
            with torch.inference_mode(), warnings.catch_warnings():
                # WavLM mixes a boolean padding mask with a float position bias inside torch
                warnings.filterwarnings("ignore", message=".*mismatched key_padding_mask.*")
                hs = self.model(**inputs, output_hidden_states=True).hidden_states
                frames = self.model._get_feat_extract_output_lengths(lengths)
                mask = lengths_to_mask(frames, hs[0].shape[1])
                parts.append((idx, self._collect(hs, names, mask, how)))
        return join_groups(parts, names, len(items))


class WhisperEncoderAdapter(HFAdapter):
    """Whisper's encoder. The feature extractor pads every clip to the model's window (30 s for
    the released models); pooling counts only the encoder frames of the real signal,
    ``(mel_frames - 1) // 2 + 1`` (``_get_feat_extract_output_lengths``)."""

    family = "whisper_encoder"
    natural_towers = ("audio",)

    def load_processors(self, source, revision):
        self.feature_extractor = self._load("AutoFeatureExtractor", source, revision)
        self.encoder = self.model.get_encoder()

    def input_sample_rate(self, tower="audio"):
        return int(self.feature_extractor.sampling_rate)

    def min_input_samples(self, tower="audio"):
        return int(self.feature_extractor.n_fft)  # one STFT window

    def native_window_samples(self, tower="audio"):
        return int(self.feature_extractor.n_samples)  # 30 s for the released checkpoints

    def layers(self, tower):
        self.check_tower(tower)
        return self._numbered(self.config.encoder_layers)

    def _embed(self, tower, items, names):
        import torch

        batch = self.feature_extractor(items, sampling_rate=self.input_sample_rate(),
                                       return_attention_mask=True, return_tensors="pt")
        frames = batch["attention_mask"].sum(-1)
        inputs = self._to_device({"input_features": batch["input_features"]})
        with torch.inference_mode():
            hs = self.encoder(**inputs, output_hidden_states=True).hidden_states
            lengths = self.model._get_feat_extract_output_lengths(frames)
            mask = lengths_to_mask(lengths, hs[0].shape[1])
            return self._collect(hs, names, mask, self.pooling(tower))


class ASTAdapter(HFAdapter):
    """Audio Spectrogram Transformer: fixed-length fbank input (padded/cut by the extractor),
    tokens = [CLS, distillation, patches...]; ``pooling: cls`` takes the CLS token."""

    family = "ast"
    natural_towers = ("audio",)
    #: Kaldi fbank frames: 25 ms windows every 10 ms.
    FRAME_S, HOP_S = 0.025, 0.010

    def load_processors(self, source, revision):
        self.feature_extractor = self._load("AutoFeatureExtractor", source, revision)

    def input_sample_rate(self, tower="audio"):
        return int(self.feature_extractor.sampling_rate)

    def min_input_samples(self, tower="audio"):
        return int(round(self.FRAME_S * self.input_sample_rate()))  # one fbank frame

    def native_window_samples(self, tower="audio"):
        """``max_length`` fbank frames: (max_length - 1) hops plus one frame."""
        rate = self.input_sample_rate()
        return (int(self.feature_extractor.max_length) - 1) * int(round(self.HOP_S * rate)) + \
            int(round(self.FRAME_S * rate))

    def layers(self, tower):
        self.check_tower(tower)
        return self._numbered(self.config.num_hidden_layers)

    def _embed(self, tower, items, names):
        import torch

        batch = self.feature_extractor(items, sampling_rate=self.input_sample_rate(), return_tensors="pt")
        inputs = self._to_device({"input_values": batch["input_values"]})
        with torch.inference_mode():
            hs = self.model(**inputs, output_hidden_states=True).hidden_states
            return self._collect(hs, names, None, self.pooling(tower))


# ---------------------------------------------------------------------------------------------
# Text and image towers
# ---------------------------------------------------------------------------------------------


class _TextMixin:
    """Tokenise with right padding; keep the mask for pooling."""

    pad_to_max = False  # SigLIP was trained on max-length padding without a mask
    model_takes_mask = True

    def _text_max_length(self, text_config) -> int:
        limits = [getattr(text_config, "max_position_embeddings", None),
                  getattr(self.tokenizer, "model_max_length", None)]
        limits = [int(x) for x in limits if x is not None and int(x) < 1_000_000]
        if getattr(text_config, "model_type", "") in ("roberta", "clap_text_model", "xlm-roberta"):
            limits = [x - 2 if x == getattr(text_config, "max_position_embeddings", None) else x
                      for x in limits]  # RoBERTa positions start after the padding index
        return min(limits) if limits else 512

    def _tokenize(self, texts, text_config):
        max_len = self._text_max_length(text_config)
        batch = self.tokenizer(texts, padding="max_length" if self.pad_to_max else True,
                               truncation=True, max_length=max_len, return_attention_mask=True,
                               return_tensors="pt")
        mask = batch["attention_mask"].bool()
        inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        if not self.model_takes_mask:
            inputs.pop("attention_mask", None)
        return self._to_device(inputs), mask


class HFTextAdapter(_TextMixin, HFAdapter):
    """BERT-like text encoders: layers ``0..N``, masked mean by default."""

    family = "hf_text"
    natural_towers = ("text",)

    def load_processors(self, source, revision):
        self.tokenizer = self._load("AutoTokenizer", source, revision)

    def layers(self, tower):
        self.check_tower(tower)
        return self._numbered(self.config.num_hidden_layers)

    def _embed(self, tower, items, names):
        import torch

        inputs, mask = self._tokenize(items, self.config)
        with torch.inference_mode():
            hs = self.model(**inputs, output_hidden_states=True).hidden_states
            return self._collect(hs, names, mask, self.pooling(tower))


class HFImageAdapter(HFAdapter):
    """Image encoders (DINOv2, ViT, ...): layers ``0..N``; ``pooling: cls`` for the CLS token."""

    family = "hf_image"
    natural_towers = ("image",)

    def load_processors(self, source, revision):
        self.image_processor = self._load("AutoImageProcessor", source, revision)

    def layers(self, tower):
        self.check_tower(tower)
        return self._numbered(self.config.num_hidden_layers)

    def _embed(self, tower, items, names):
        import torch

        batch = self._image_batch(items)
        inputs = self._to_device({"pixel_values": batch["pixel_values"]})
        with torch.inference_mode():
            hs = self.model(**inputs, output_hidden_states=True).hidden_states
            return self._collect(hs, names, None, self.pooling(tower))


class CLIPAdapter(_TextMixin, HFAdapter):
    """CLIP: text and image towers, ``0..N`` plus ``joint`` (the projected embedding)."""

    family = "clip"
    natural_towers = ("text", "image")

    def load_processors(self, source, revision):
        if "text" in self.towers:
            self.tokenizer = self._load("AutoTokenizer", source, revision)
        if "image" in self.towers:
            self.image_processor = self._load("AutoImageProcessor", source, revision)

    def layers(self, tower):
        self.check_tower(tower)
        cfg = self.config.text_config if tower == "text" else self.config.vision_config
        return self._numbered(cfg.num_hidden_layers) + [JOINT]

    def _embed(self, tower, items, names):
        import torch

        how = self.pooling(tower)
        with torch.inference_mode():
            if tower == "text":
                inputs, mask = self._tokenize(items, self.config.text_config)
                out = self.model.get_text_features(**inputs, output_hidden_states=True)
                joint, hs = _features(out, lambda: self.model.text_model(**inputs, output_hidden_states=True))
            else:
                batch = self._image_batch(items)
                inputs = self._to_device({"pixel_values": batch["pixel_values"]})
                out = self.model.get_image_features(**inputs, output_hidden_states=True)
                joint, hs = _features(out, lambda: self.model.vision_model(**inputs, output_hidden_states=True))
                mask = None
            return self._collect(hs, names, mask, how, joint)

    # The joint embedding is the projection of one token (image: CLS after post_layernorm;
    # text: EOS of the final layer norm), so projecting every token the same way puts patches
    # and words in the shared space. CLIP never trained these tokens to align, so its maps are
    # coarse; that is the finding seed 002 reports, not a defect of the readout.
    supports_dense = True

    def _dense(self, tower, items):
        import torch

        with torch.inference_mode():
            if tower == "image":
                batch = self._image_batch(items)
                inputs = self._to_device({"pixel_values": batch["pixel_values"]})
                vision = self.model.vision_model
                hidden = vision(**inputs).last_hidden_state
                tokens = self.model.visual_projection(vision.post_layernorm(hidden))[:, 1:]
                tokens = tokens.float().cpu().numpy()
                rows = self.config.vision_config.image_size // self.config.vision_config.patch_size
                return [t.reshape(rows, tokens.shape[1] // rows, -1) for t in tokens]
            inputs, mask = self._tokenize(items, self.config.text_config)
            hidden = self.model.text_model(**inputs).last_hidden_state
            tokens = self.model.text_projection(hidden).float().cpu().numpy()
            return [t[m] for t, m in zip(tokens, mask.cpu().numpy())]


class SigLIPAdapter(CLIPAdapter):
    """SigLIP: like CLIP, but text is padded to the maximum length and the model sees no mask
    (as it was trained); pooling still counts only the real tokens."""

    family = "siglip"
    pad_to_max = True
    model_takes_mask = False
    # The image embedding comes from an attention-pooling head, not a per-token projection.
    supports_dense = False


class CLAPAdapter(_TextMixin, HFAdapter):
    """CLAP: audio (HTSAT, one layer per Swin stage + input) and text (RoBERTa) towers plus
    ``joint`` (``get_audio_features`` / ``get_text_features``, L2-normalised by the model).

    The feature extractor repeat-pads each clip to its window, so no audio mask is needed; long
    clips are cut at a random offset (``rand_trunc``), so each clip is processed alone under a
    fixed NumPy seed to keep embeddings deterministic and batch-independent.
    """

    family = "clap"
    natural_towers = ("audio", "text")

    def load_processors(self, source, revision):
        if "audio" in self.towers:
            self.feature_extractor = self._load("AutoFeatureExtractor", source, revision)
            if self._pooling.get("audio") in ("cls", "last"):
                raise ValueError(f"model {self.name!r}: CLAP's audio tower has no CLS token; "
                                 "use pooling mean or max")
        if "text" in self.towers:
            self.tokenizer = self._load("AutoTokenizer", source, revision)

    def input_sample_rate(self, tower="audio"):
        return int(self.feature_extractor.sampling_rate) if "audio" in self.towers else None

    def min_input_samples(self, tower="audio"):
        return int(self.feature_extractor.fft_window_size) if "audio" in self.towers else None

    def native_window_samples(self, tower="audio"):
        return int(self.feature_extractor.nb_max_samples) if "audio" in self.towers else None

    def layers(self, tower):
        self.check_tower(tower)
        if tower == "text":
            return self._numbered(self.config.text_config.num_hidden_layers) + [JOINT]
        return self._numbered(len(self.config.audio_config.depths)) + [JOINT]

    def _audio_inputs(self, waves):
        """Features one clip at a time (batch-independent), and each clip's own ``is_longer``:
        called on a batch in which no clip is longer than the window, the fusion extractor
        flags one clip at random as longer — alone, every clip."""
        import torch

        feats, longer = [], []
        for w in waves:
            with numpy_seed(0):
                b = self.feature_extractor([w], sampling_rate=self.input_sample_rate(), return_tensors="pt")
            feats.append(b["input_features"])
            longer.append(len(w) > int(self.feature_extractor.nb_max_samples))
        flags = torch.tensor(longer, dtype=torch.bool).reshape(-1, 1)
        return self._to_device({"input_features": torch.cat(feats), "is_longer": flags})

    def _embed(self, tower, items, names):
        import torch

        how = self.pooling(tower)
        with torch.inference_mode():
            if tower == "text":
                inputs, mask = self._tokenize(items, self.config.text_config)
                out = self.model.get_text_features(**inputs, output_hidden_states=True)
                joint, hs = _features(out, lambda: self.model.text_model(**inputs, output_hidden_states=True))
            else:
                inputs = self._audio_inputs(items)
                out = self.model.get_audio_features(**inputs, output_hidden_states=True)
                joint, hs = _features(out, lambda: self.model.audio_model(**inputs, output_hidden_states=True))
                mask = None
            return self._collect(hs, names, mask, how, joint)


def reference_joint(adapter: HFAdapter, tower: str, items) -> dict[str, np.ndarray]:
    """The ``joint`` layer computed with the model's own ``get_*_features``, one item at a time
    (no padding, no batching): the contract tests' reference for the adapter's shared space."""
    import torch

    model = adapter.model
    rows = []
    for item in adapter._prepare(tower, list(items)):
        with torch.inference_mode():
            if tower == "text":
                kw = {"padding": "max_length", "max_length": adapter._text_max_length(adapter.config.text_config)} \
                    if adapter.pad_to_max else {}
                enc = adapter.tokenizer([item], return_tensors="pt", **kw)
                enc = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}
                if not adapter.model_takes_mask:
                    enc.pop("attention_mask", None)
                out = model.get_text_features(**enc)
            elif tower == "image":
                out = model.get_image_features(**adapter.image_processor(images=item, return_tensors="pt"))
            else:
                with numpy_seed(0):
                    enc = adapter.feature_extractor([item], sampling_rate=adapter.input_sample_rate(),
                                                    return_tensors="pt")
                out = model.get_audio_features(input_features=enc["input_features"], is_longer=enc["is_longer"])
        out = out if torch.is_tensor(out) else out.pooler_output
        rows.append(out[0].float().cpu().numpy())
    return {JOINT: np.stack(rows)}
