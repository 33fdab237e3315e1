"""PE-AV: Meta's Perception Encoder audio-visual (transformers ``pe_audio_video``, ``pe_audio``,
``pe_video``; hub ``facebook/pe-av-small|base|large``; Apache-2.0).

Three towers, each with its own trunk, and contrastive heads that put pairs of them in shared
spaces. Definitions follow transformers 5.24's ``PeAudioVideoModel.forward`` (the logits it
computes are the spaces):

| space | audio / image layer | text layer |
| --- | --- | --- |
| ``audio_text`` | ``audio_head(audio CLS)`` | ``text_audio_head(text CLS)`` |
| ``text_image`` | ``video_head(frame-sequence CLS)`` | ``text_video_head(text CLS)`` |
| ``audio_image`` | ``audio_head`` / ``video_head`` (``logits_audio_video``) | – |

So the audio tower's ``audio_text`` and ``audio_image`` layers hold the same vector (one audio
head serves both spaces), as do the image tower's ``text_image`` and ``audio_image``; the text
tower has two different heads. The fused audio+video and audio+text embeddings
(``audio_video_head``, ``*_plus_text_head``) need two inputs at once and are not tower layers.

Hidden layers (``"0".."N"``, pooled mask-aware; ``pooling: cls`` takes the CLS token the heads read):

* text: ModernBERT's ``hidden_states`` (``"0"`` = embeddings; the last is after its final norm,
  the state the text heads read at position 0);
* audio: the DAC codec front end (frozen in training) feeds a transformer over 25 frames a second
  (48 kHz / hop 1920) with a CLS token in front; ``"0".."N-1"`` are its ``hidden_states`` and
  ``"N"`` is its output (final norm and output projection) with the CLS put back in front
  (transformers' last hidden state drops the CLS, which becomes ``pooler_output``);
* image: an image is a one-frame video. ``"0".."K"`` are the frame encoder's token states (timm's
  PE-core ViT: ``"0"`` after its pre-norm, then each of its K blocks; prefix token first), then
  ``"K+1".."K+1+M"`` the PE-AV frame-sequence transformer's states as for audio (its input is the
  normalised ViT output projected, behind a CLS token).

transformers 5.24's single-tower helpers cannot be called: ``PeAudioModel.get_text_audio_embeds``
raises TypeError (it reads ``hidden_states`` without asking for them), and
``PeAudioVideoModel.get_text_audio_embeds`` / ``get_text_video_embeds`` / ``get_video_embeds``
raise AttributeError (``PeVideoModel``'s helpers are defined inside its ``__init__``). This adapter
therefore applies the heads itself, exactly as ``forward`` does, and the contract test's
reference (:func:`reference_spaces`) runs ``forward`` itself; ``tests/test_pe_av.py`` watches the
helpers.

A ``PeAudioModel`` folder (``pe_audio``) has the audio and text towers and the ``audio_text``
space only; a ``PeVideoModel`` folder (``pe_video``) the image and text towers and ``text_image``.
The image tower needs ``timm`` (the frame encoder) and ``torchvision`` (the video processor).

The codec's convolutions see a batch's zero padding through their biases, so clips are run in
groups of equal length: every clip's embedding is the one it gets alone.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from .base import hf_load, join_groups, length_groups, pool
from .hf import HFAdapter, _TextMixin, resolve_source

#: model_type of the loaded folder → its towers.
TOWERS_OF = {
    "pe_audio_video": ("audio", "image", "text"),
    "pe_audio": ("audio", "text"),
    "pe_video": ("image", "text"),
}


def _family():
    from .registry import FAMILIES

    return FAMILIES["pe_av"]


class PEAVAdapter(_TextMixin, HFAdapter):
    """PE-AV towers audio, image, text (see the module docstring for layers and spaces)."""

    family = "pe_av"
    natural_towers = ("audio", "image", "text")

    def __init__(self, name: str, spec: Mapping, model_dir=None, device: str = "auto") -> None:
        from transformers import AutoConfig

        source, local = resolve_source(name, spec, model_dir)
        config = hf_load(AutoConfig, name, source, None if local else spec.get("revision"))
        kind = getattr(config, "model_type", None)
        if kind not in TOWERS_OF:
            raise ValueError(f"model {name!r}: {source!r} is a {kind!r} model, not PE-AV "
                             f"(one of {sorted(TOWERS_OF)})")
        # the towers this checkpoint has; Adapter.__init__ refuses any other
        self.natural_towers = TOWERS_OF[kind]
        try:
            super().__init__(name, spec, model_dir=model_dir, device=device)
        except ImportError as err:
            if kind == "pe_audio":
                raise
            raise ImportError(
                f"model {name!r}: a {kind} checkpoint builds its video tower with timm, and its video "
                "processor needs torchvision, whichever towers are configured: install timm and the "
                f"torchvision build that matches torch ({err})") from err

    # -- parts of the model, whichever of the three classes was loaded ---------------------------
    def _audio_model(self):
        return self.model.audio_model if self.config.model_type == "pe_audio_video" else self.model

    def _video_model(self):
        return self.model.video_model if self.config.model_type == "pe_audio_video" else self.model

    def load_processors(self, source, revision):
        if "text" in self.towers:
            self.tokenizer = self._load("AutoTokenizer", source, revision)
        if "audio" in self.towers:
            self.feature_extractor = self._load("AutoFeatureExtractor", source, revision)
        if "image" in self.towers:
            self.video_processor = self._load("AutoVideoProcessor", source, revision)

    def input_sample_rate(self, tower="audio"):
        return int(self.feature_extractor.sampling_rate) if "audio" in self.towers else None

    # -- layers ---------------------------------------------------------------------------------
    def space_layers(self, tower: str) -> list[str]:
        """This tower's space layers, for the spaces whose towers are all configured."""
        return [s.layer for s in _family().spaces if tower in s.towers and set(s.towers) <= set(self.towers)]

    def _n_hidden(self, tower: str) -> int:
        cfg = self.config
        if tower == "text":
            return cfg.text_config.num_hidden_layers + 1
        if tower == "audio":
            sub = cfg.audio_video_config.audio_config if cfg.model_type == "pe_audio_video" else cfg.audio_config
            return sub.num_hidden_layers + 1
        sub = cfg.audio_video_config.video_config if cfg.model_type == "pe_audio_video" else cfg.video_config
        return len(self._vit().blocks) + 1 + sub.num_hidden_layers + 1

    def layers(self, tower):
        self.check_tower(tower)
        return self._numbered(self._n_hidden(tower) - 1) + self.space_layers(tower)

    def _vit(self):
        """timm's frame encoder (PE-core ViT) inside the video tower."""
        return self._video_model().video_encoder.embedder.vision_model.timm_model

    # -- forward passes: (hidden states, mask, {space layer: projection}) ----------------------------
    def _text(self, items):
        inputs, mask = self._tokenize(items, self.config.text_config)
        text_model = self.model.text_model
        hs = text_model(**inputs, output_hidden_states=True, return_dict=True).hidden_states
        cls = hs[-1][:, 0]  # what forward() projects: the last hidden state at [CLS]
        heads = {"audio_text": lambda: self._audio_model().text_audio_head(cls),
                 "text_image": lambda: self._video_model().text_video_head(cls)}
        return list(hs), mask, {layer: heads[layer]() for layer in self.space_layers("text")}

    @staticmethod
    def _with_cls(out):
        """The encoder output with its CLS back in front: ``(B, 1 + T, D)``."""
        import torch

        return torch.cat([out.pooler_output[:, None], out.last_hidden_state], dim=1)

    def _audio(self, waves):
        import torch

        batch = self.feature_extractor(waves, sampling_rate=self.input_sample_rate(), return_tensors="pt")
        inputs = self._to_device({"input_values": batch["input_values"], "padding_mask": batch["padding_mask"]})
        model = self._audio_model()
        out = model.audio_encoder(**inputs, output_hidden_states=True, return_dict=True)
        hs = list(out.hidden_states[:-1]) + [self._with_cls(out)]
        frames = out.output_mask.bool()
        mask = torch.cat([torch.ones_like(frames[:, :1]), frames], dim=1)
        joint = model.audio_head(out.pooler_output)
        return hs, mask, {layer: joint for layer in self.space_layers("audio")}

    def _image(self, images):
        import torch

        batch = self.video_processor(videos=[img[None] for img in images], return_tensors="pt")
        pixels = self._to_device({"pixel_values_videos": batch["pixel_values_videos"]},
                                 float_keys=("pixel_values_videos",))["pixel_values_videos"]
        vit = self._vit()
        captured: list = []
        hooks = [vit.norm_pre.register_forward_hook(lambda m, i, o: captured.append(o))]
        hooks += [blk.register_forward_hook(lambda m, i, o: captured.append(o)) for blk in vit.blocks]
        try:
            model = self._video_model()
            out = model.video_encoder(pixel_values_videos=pixels, output_hidden_states=True, return_dict=True)
        finally:
            for h in hooks:
                h.remove()
        # one frame per image: (B * 1, tokens, C) is already (B, tokens, C)
        hs = captured + list(out.hidden_states[:-1]) + [self._with_cls(out)]
        joint = model.video_head(out.pooler_output)
        return hs, None, {layer: joint for layer in self.space_layers("image")}

    def _embed(self, tower, items, names):
        import torch

        how = self.pooling(tower)
        with torch.inference_mode():
            if tower == "text":
                hs, mask, spaces = self._text(items)
                return self._pooled(hs, mask, spaces, names, how)
            if tower == "image":
                hs, mask, spaces = self._image(items)
                return self._pooled(hs, mask, spaces, names, how)
            # audio: groups of equal length (the codec's convolutions see padding)
            parts = []
            for idx in length_groups(items, pad_batches=False):
                hs, mask, spaces = self._audio([items[i] for i in idx])
                parts.append((idx, self._pooled(hs, mask, spaces, names, how)))
        return join_groups(parts, names, len(items))

    @staticmethod
    def _pooled(hs, mask, spaces, names, how):
        out = {}
        for name in names:
            if name in spaces:
                out[name] = spaces[name].float().cpu().numpy()
            else:
                out[name] = pool(hs[int(name)], mask, how).cpu().numpy()
        return out

    def provenance(self) -> dict:
        out = super().provenance()
        out["spaces"] = {t: self.space_layers(t) for t in self.towers}
        return out


# ---------------------------------------------------------------------------------------------
# The contract test's reference: the spaces computed by the model's own forward()
# ---------------------------------------------------------------------------------------------

#: forward() output field → (tower, space layer). PeAudioVideoModel.forward with all three
#: inputs returns every one of them; PeAudioModel.forward the audio–text pair.
_FIELDS = {
    "audio_embeds": ("audio", ("audio_text", "audio_image")),
    "video_embeds": ("image", ("text_image", "audio_image")),
    "text_audio_embeds": ("text", ("audio_text",)),
    "text_video_embeds": ("text", ("text_image",)),
}


def reference_spaces(adapter: PEAVAdapter, tower: str, items) -> dict[str, np.ndarray]:
    """Each space layer of ``tower`` from the model's own ``forward``, one item at a time.

    ``forward`` needs two modalities (``PeAudioVideoModel``: all three, since its text–video path
    fails in transformers 5.24), so each item goes in beside fixed companions of the other
    modalities: a second of noise, a grey image, the word "a". The companions do not enter the
    tower's own embedding. ``PeVideoModel`` folders are not covered (its ``forward`` is the one
    that fails).
    """
    import torch

    model = adapter.model
    kind = adapter.config.model_type
    if kind == "pe_video":
        raise NotImplementedError("PeVideoModel.forward fails in transformers 5.24; no reference")
    rows: dict[str, list] = {layer: [] for layer in adapter.space_layers(tower)}
    rng = np.random.default_rng(0)
    companion = {"audio": [(0.1 * rng.standard_normal(adapter.input_sample_rate())).astype(np.float32)],
                 "image": [np.full((32, 32, 3), 128, np.uint8)], "text": ["a"]}
    for item in adapter._prepare(tower, list(items)):
        given = dict(companion, **{tower: [item]})
        kw = {}
        enc = adapter.tokenizer(given["text"], return_tensors="pt")
        kw.update(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        fe = adapter.feature_extractor(given["audio"], sampling_rate=adapter.input_sample_rate(), return_tensors="pt")
        kw.update(input_values=fe["input_values"], padding_mask=fe["padding_mask"])
        if kind == "pe_audio_video":
            vp = adapter.video_processor(videos=[given["image"][0][None]], return_tensors="pt")
            kw.update(pixel_values_videos=vp["pixel_values_videos"])
        with torch.inference_mode():
            out = model(**{k: v.to(adapter.device) for k, v in kw.items()})
        for field, (t, layers) in _FIELDS.items():
            if t != tower:
                continue
            for layer in layers:
                if layer in rows:
                    rows[layer].append(getattr(out, field)[0].float().cpu().numpy())
    return {layer: np.stack(v) for layer, v in rows.items()}
