"""EmbeddingGemma 2 (transformers ``embedding_gemma2``: ``EmbeddingGemma2Model``): one network
that embeds text, images and audio in a single space.

A *joint* model in seed 000's sense: an image's or a clip's encoder output enters the bidirectional
Gemma text backbone as soft tokens between ``<start_of_image>``/``<end_of_image>`` (or the audio
pair), so every modality reaches the space through the same backbone. The embedding is the
backbone's last hidden state (already projected per token by ``embedding_projection`` to
``text_config.embedding_dim``) mean-pooled over the attention mask, which is what the model
class's docstring says it is made for (SentenceTransformers' mean pooling; its final
L2 normalisation is left to the analyses, as for every family). The inputs are built as
``EmbeddingGemma2Processor`` builds them for a lone item (no text: ``<bos>`` + the modality's
placeholders + ``<eos>``; the number of audio placeholders is the processor's
``compute_sscp`` of the feature mask); the processor itself is not used because it cannot be
built without torchvision (its video processor), and ``tests/test_embedding_gemma2.py`` checks
the two agree where torchvision imports.

Layers (``"0".."N"``, pooled mask-aware, then ``joint``):

* audio: the audio tower's hidden states (``"0".."A"``; frames after its subsampling, padding
  masked), then the backbone's states over the audio prompt (``"A+1".."A+1+L"``);
* image: the vision tower's states over its patches (``"0".."V-1"``, padding patches masked) and
  its pooled soft tokens (``"V"``), then the backbone's states over the image prompt;
* text: the backbone's states (``"0".."L"``; the last is after the final norm and projection).

The three pairs of towers are declared as three spaces (``audio_text``, ``text_image``,
``audio_image``) that share the one layer ``joint``, since they are one space.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from .base import JOINT, hf_load, pool
from .hf import HFAdapter, resolve_source


def _ragged_pool(chunks, how: str):
    """Pool a list of ``(T_i, D)`` tensors (one item each) → ``(B, D)``."""
    import torch

    width = max(int(c.shape[0]) for c in chunks)
    padded = torch.zeros(len(chunks), width, chunks[0].shape[-1], dtype=chunks[0].dtype)
    mask = torch.zeros(len(chunks), width, dtype=torch.bool)
    for i, c in enumerate(chunks):
        padded[i, : c.shape[0]] = c
        mask[i, : c.shape[0]] = True
    return pool(padded, mask, how)


class EmbeddingGemma2Adapter(HFAdapter):
    """EmbeddingGemma 2: audio, image and text into one space through one backbone."""

    family = "embedding_gemma2"
    natural_towers = ("audio", "image", "text")

    def __init__(self, name: str, spec: Mapping, model_dir=None, device: str = "auto") -> None:
        from transformers import AutoConfig

        source, local = resolve_source(name, spec, model_dir)
        config = hf_load(AutoConfig, name, source, None if local else spec.get("revision"))
        if getattr(config, "model_type", None) != "embedding_gemma2":
            raise ValueError(f"model {name!r}: {source!r} is a {config.model_type!r} model, not embedding_gemma2")
        # a checkpoint may come without a vision or an audio tower
        self.natural_towers = tuple(t for t, sub in (("audio", config.audio_config), ("image", config.vision_config),
                                                     ("text", True)) if sub is not None)
        super().__init__(name, spec, model_dir=model_dir, device=device)

    def load_processors(self, source, revision):
        self.tokenizer = self._load("AutoTokenizer", source, revision)
        if "audio" in self.towers:
            self.feature_extractor = self._load("AutoFeatureExtractor", source, revision)
        if "image" in self.towers:
            self.image_processor = self._load("AutoImageProcessor", source, revision)

    def input_sample_rate(self, tower="audio"):
        return int(self.feature_extractor.sampling_rate) if "audio" in self.towers else None

    def _n_backbone(self) -> int:
        return self.config.text_config.num_hidden_layers + 1

    def layers(self, tower):
        self.check_tower(tower)
        n = self._n_backbone()
        if tower == "audio":
            n += self.config.audio_config.num_hidden_layers + 1
        elif tower == "image":
            n += self.config.vision_config.num_hidden_layers + 1
        return self._numbered(n - 1) + [JOINT]

    def provenance(self) -> dict:
        out = super().provenance()
        if "image" in self.towers:
            out["image_processor"] = type(self.image_processor).__name__
        return out

    # -- inputs, as EmbeddingGemma2Processor builds them for a lone item ---------------------------
    def _prompt_ids(self, texts: list[str]):
        enc = self.tokenizer(texts, padding=True, return_attention_mask=True, return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    def audio_inputs(self, waves) -> dict:
        from transformers import EmbeddingGemma2Processor

        feats = self.feature_extractor(waves, sampling_rate=self.input_sample_rate(), padding="longest",
                                       return_tensors="pt")
        tok = self.tokenizer
        counts = [int(EmbeddingGemma2Processor.compute_sscp(m.numpy())) for m in feats["input_features_mask"]]
        ids, mask = self._prompt_ids([tok.boa_token + tok.audio_token * n + tok.eoa_token for n in counts])
        return {"input_ids": ids, "attention_mask": mask, "input_features": feats["input_features"],
                "input_features_mask": feats["input_features_mask"]}

    def image_inputs(self, images) -> dict:
        batch = self.image_processor(images=list(images), return_tensors="pt")
        tok = self.tokenizer
        counts = [int(n) for n in batch["num_soft_tokens_per_image"]]
        ids, mask = self._prompt_ids([tok.boi_token + tok.image_token * n + tok.eoi_token for n in counts])
        return {"input_ids": ids, "attention_mask": mask, "pixel_values": batch["pixel_values"],
                "image_position_ids": batch["image_position_ids"], "num_soft_tokens": counts}

    def text_inputs(self, texts) -> dict:
        ids, mask = self._prompt_ids(list(texts))
        return {"input_ids": ids, "attention_mask": mask}

    # -- embedding --------------------------------------------------------------------------------
    def _embed(self, tower, items, names):
        import torch

        how = self.pooling(tower)
        model = self.model
        inputs = {"audio": self.audio_inputs, "image": self.image_inputs, "text": self.text_inputs}[tower](items)
        counts = inputs.pop("num_soft_tokens", None)
        inputs = self._to_device(inputs, float_keys=("input_features", "pixel_values"))
        pooled: list = []
        with torch.inference_mode():
            if tower == "audio":
                enc = model.get_audio_features(inputs["input_features"], inputs["input_features_mask"],
                                               output_hidden_states=True)
                pooled += [pool(h, enc.attention_mask, how) for h in enc.hidden_states]
            elif tower == "image":
                enc = model.get_image_features(inputs["pixel_values"], inputs["image_position_ids"],
                                               output_hidden_states=True)
                patches = (inputs["image_position_ids"] != -1).all(dim=-1)
                pooled += [pool(h, patches, how) for h in enc.hidden_states[:-1]]
                # the last state is the pooled soft tokens of all images, concatenated
                pooled.append(_ragged_pool(torch.split(enc.hidden_states[-1], counts), how))
            out = model(**inputs, output_hidden_states=True)
            mask = inputs["attention_mask"].bool()
            pooled += [pool(h, mask, how) for h in out.hidden_states]
            joint = pool(out.last_hidden_state, mask, "mean")  # the model's sentence embedding
        result = {}
        for name in names:
            result[name] = (joint if name == JOINT else pooled[int(name)]).float().cpu().numpy()
        return result


def reference_joint(adapter: EmbeddingGemma2Adapter, tower: str, items) -> dict[str, np.ndarray]:
    """``joint`` from the model's own ``forward``, one item at a time (no padding): the mean of
    its last hidden state over the prompt."""
    import torch

    rows = []
    build = {"audio": adapter.audio_inputs, "image": adapter.image_inputs, "text": adapter.text_inputs}[tower]
    for item in adapter._prepare(tower, list(items)):
        inputs = build([item])
        inputs.pop("num_soft_tokens", None)
        with torch.inference_mode():
            out = adapter.model(**inputs)
        rows.append(out.last_hidden_state[0].mean(0).float().cpu().numpy())
    return {JOINT: np.stack(rows)}
