"""Speech recognition with Whisper, for the ASR → text-encoder cascade (seed 003, BrewCLIP).

``transcribe(spec, model_dir, waveforms)`` loads ``WhisperForConditionalGeneration`` from
``model_dir`` (a built or prefetched folder) or ``spec['source']`` (hub id), and decodes greedily
(``num_beams`` 1 unless the spec says otherwise). Spec keys used: ``source``, ``revision``,
``language`` and ``task`` (passed to ``generate`` only when set, for multilingual checkpoints),
``batch_size`` (default 8), ``max_new_tokens`` (default 128), ``num_beams``, ``dtype``.
"""

from __future__ import annotations

import logging
from typing import Mapping, Sequence

from .base import hf_load, prepare_audio, resolve_dtype, select_device, torch_dtype

log = logging.getLogger("avprobe")


class WhisperASR:
    """A loaded Whisper recogniser; ``__call__(waveforms) -> list[str]``."""

    def __init__(self, spec: Mapping, model_dir=None, device: str = "auto", name: str | None = None):
        from transformers import AutoConfig, AutoFeatureExtractor, AutoTokenizer, WhisperForConditionalGeneration

        from .hf import _dtype_kwargs, resolve_source

        self.spec = dict(spec)
        self.name = name or str(spec.get("source"))
        source, local = resolve_source(self.name, self.spec, model_dir)
        revision = None if local else self.spec.get("revision")
        self.device = select_device(device)
        self.dtype = resolve_dtype(self.spec.get("dtype"), self.device)
        self.config = hf_load(AutoConfig, self.name, source, revision)
        self.model = hf_load(WhisperForConditionalGeneration, self.name, source, revision,
                             **_dtype_kwargs(self.dtype)).to(self.device).eval()
        self.feature_extractor = hf_load(AutoFeatureExtractor, self.name, source, revision)
        self.tokenizer = hf_load(AutoTokenizer, self.name, source, revision)
        self.sample_rate = int(self.feature_extractor.sampling_rate)

    def generate_ids(self, waveforms: Sequence):
        """Token ids (``(B, T)`` tensor, decoder prompt included) for one batch."""
        import torch

        waves = prepare_audio(waveforms, self.sample_rate)
        batch = self.feature_extractor(waves, sampling_rate=self.sample_rate,
                                       return_attention_mask=True, return_tensors="pt")
        kwargs = {"max_new_tokens": int(self.spec.get("max_new_tokens", 128)),
                  "num_beams": int(self.spec.get("num_beams", 1)), "do_sample": False,
                  "return_dict_in_generate": True}
        for key in ("language", "task"):
            if self.spec.get(key):
                kwargs[key] = self.spec[key]
        features = batch["input_features"].to(self.device, torch_dtype(self.dtype))
        with torch.inference_mode():
            out = self.model.generate(features, attention_mask=batch["attention_mask"].to(self.device),
                                      **kwargs)
        return out.sequences if hasattr(out, "sequences") else out

    def __call__(self, waveforms: Sequence) -> list[str]:
        size = int(self.spec.get("batch_size", 8))
        texts: list[str] = []
        waveforms = list(waveforms)
        for start in range(0, len(waveforms), size):
            ids = self.generate_ids(waveforms[start:start + size])
            texts.extend(t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True))
        return texts


def transcribe(spec: Mapping, model_dir, waveforms: Sequence, device: str = "auto") -> list[str]:
    """Transcribe waveforms (1-D float32 arrays at 16 kHz, or ``(waveform, rate)`` tuples)."""
    waveforms = list(waveforms)
    if not waveforms:
        return []
    return WhisperASR(spec, model_dir, device)(waveforms)


__all__ = ["WhisperASR", "transcribe"]
