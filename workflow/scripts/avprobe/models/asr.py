"""Speech recognition with Whisper, for the ASR → text-encoder cascade (seed 003, BrewCLIP).

``transcribe(spec, model_dir, waveforms)`` loads ``WhisperForConditionalGeneration`` from
``model_dir`` (a built or prefetched folder) or ``spec['source']`` (hub id), and decodes greedily
(``num_beams`` 1 unless the spec says otherwise). Spec keys used: ``source``, ``revision``,
``language`` and ``task`` (passed to ``generate`` only when set, for multilingual checkpoints),
``batch_size`` (default 8), ``max_new_tokens`` (default 128, capped by the decoder's
``max_target_positions``), ``num_beams``, ``dtype``. Transcripts are decoded without the
decoder prompt and special tokens (``<|startoftranscript|>`` and the like, also when a small
tokenizer does not mark them special).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Mapping, Sequence

from .base import hf_load, prepare_audio, resolve_dtype, select_device, torch_dtype

log = logging.getLogger("avprobe")

#: Whisper's control tokens look like <|...|>; none of them is part of a transcript.
_CONTROL_TOKEN = re.compile(r"^<\|.*\|>$")
#: Decoder prompt tokens at most: <|startoftranscript|> <|lang|> <|task|> <|notimestamps|>.
_PROMPT_TOKENS = 4


class WhisperASR:
    """A loaded Whisper recogniser; ``__call__(waveforms) -> list[str]``."""

    def __init__(self, spec: Mapping, model_dir=None, device: str = "auto", name: str | None = None):
        from transformers import AutoConfig, AutoFeatureExtractor, AutoTokenizer, WhisperForConditionalGeneration

        from .hf import _dtype_kwargs, resolve_source

        self.spec = dict(spec)
        self.name = name or str(spec.get("source"))
        source, local = resolve_source(self.name, self.spec, model_dir)
        self.source, self.local = source, local
        revision = None if local else self.spec.get("revision")
        self.device = select_device(device)
        self.dtype = resolve_dtype(self.spec.get("dtype"), self.device)
        self.config = hf_load(AutoConfig, self.name, source, revision)
        self.model = hf_load(WhisperForConditionalGeneration, self.name, source, revision,
                             **_dtype_kwargs(self.dtype)).to(self.device).eval()
        self.feature_extractor = hf_load(AutoFeatureExtractor, self.name, source, revision)
        self.tokenizer = hf_load(AutoTokenizer, self.name, source, revision)
        self.sample_rate = int(self.feature_extractor.sampling_rate)
        vocab = self.tokenizer.get_vocab()
        self.control_ids = set(self.tokenizer.all_special_ids) | {
            i for tok, i in vocab.items() if _CONTROL_TOKEN.match(tok)}
        requested = int(self.spec.get("max_new_tokens", 128))
        limit = int(getattr(self.config, "max_target_positions", requested + _PROMPT_TOKENS)) - _PROMPT_TOKENS
        self.max_new_tokens = max(1, min(requested, limit))
        if self.max_new_tokens < requested:
            log.info("%s: max_new_tokens %d capped at %d by the decoder's %d positions", self.name,
                     requested, self.max_new_tokens, limit + _PROMPT_TOKENS)

    def provenance(self) -> dict:
        """Which recogniser made the transcripts (stored with the transcript manifest)."""
        from .base import package_versions, weights_fingerprint
        from .build import BUILD_MARKER

        source = str(self.source)
        kind = self.spec.get("kind") or "pretrained"
        if self.local and (Path(source) / BUILD_MARKER).is_file():
            kind = "untrained"
        commit = getattr(self.config, "_commit_hash", None)
        return {"asr_model": self.name, "source": source, "kind": kind,
                "revision": commit or (weights_fingerprint(source) if self.local else self.spec.get("revision")),
                "dtype": self.dtype, "device": self.device, "max_new_tokens": self.max_new_tokens,
                "num_beams": int(self.spec.get("num_beams", 1)), "language": self.spec.get("language"),
                "task": self.spec.get("task"), "versions": package_versions()}

    def decode(self, ids) -> list[str]:
        """Transcripts of generated ids, control tokens (prompt, special) dropped."""
        rows = [[int(t) for t in row if int(t) not in self.control_ids] for row in ids.tolist()]
        return [t.strip() for t in self.tokenizer.batch_decode(rows, skip_special_tokens=True)]

    def generate_ids(self, waveforms: Sequence):
        """Token ids (``(B, T)`` tensor, decoder prompt included) for one batch."""
        import torch

        waves = prepare_audio(waveforms, self.sample_rate)
        limit = int(self.feature_extractor.n_samples)
        if any(len(w) > limit for w in waves):
            log.warning("%s: clips longer than %.1f s are cut to Whisper's window", self.name,
                        limit / self.sample_rate)
        batch = self.feature_extractor(waves, sampling_rate=self.sample_rate,
                                       return_attention_mask=True, return_tensors="pt")
        # Short-form decoding: one generate pass per clip (a clip fits the window). Whisper's
        # long-form loop would otherwise re-decode when it reads tokens as timestamps, which a
        # small test vocabulary's letters are.
        kwargs = {"max_new_tokens": self.max_new_tokens,
                  "num_beams": int(self.spec.get("num_beams", 1)), "do_sample": False,
                  "return_dict_in_generate": True, "force_unique_generate_call": True}
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
            texts.extend(self.decode(ids))
        return texts


def transcribe(spec: Mapping, model_dir, waveforms: Sequence, device: str = "auto") -> list[str]:
    """Transcribe waveforms (1-D float32 arrays at 16 kHz, or ``(waveform, rate)`` tuples)."""
    waveforms = list(waveforms)
    if not waveforms:
        return []
    return WhisperASR(spec, model_dir, device)(waveforms)


__all__ = ["WhisperASR", "transcribe"]
