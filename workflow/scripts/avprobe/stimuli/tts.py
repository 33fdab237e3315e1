"""Offline text-to-speech engines behind one small interface.

``ENGINES`` maps an engine name (a voice's ``engine`` in the config) to a class with
``native_sample_rate``, ``input_modes`` and ``synthesize(voice, spoken, mode) -> Utterance``.
:func:`get_engine` gives one engine per name and process.

The espeak-ng engine drives the library's C API through ctypes, with the library and data
that the ``espeakng-loader`` package bundles, so it needs no system install. The C calls run
in a small helper process (:mod:`avprobe.stimuli.espeak_native`, which explains why): the
same input gives the same samples, byte for byte, in any order and in any worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from avprobe.stimuli import espeak_native

INPUT_MODES = ("text", "phonemes")


@dataclass(frozen=True)
class Voice:
    """One configured voice: ``{id, engine, voice, variant}`` plus optional ``rate``/``pitch``."""

    id: str
    engine: str
    voice: str
    variant: str | None = None
    rate: int | None = None
    pitch: int | None = None

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
    """Raw engine output: int16 mono samples at the engine's native rate."""

    samples: np.ndarray
    sample_rate: int
    #: The phonemes the engine actually spoke, in IPA (from its phoneme events).
    phonemes: str


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
        return Utterance(samples=samples, sample_rate=self.native_sample_rate, phonemes=header["phonemes"])


#: Engine name (a voice's ``engine``) → engine class. piper can join later.
ENGINES = {"espeak": EspeakEngine}

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
