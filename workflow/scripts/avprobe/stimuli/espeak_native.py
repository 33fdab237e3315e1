"""The espeak-ng C API through ctypes, and the helper process that synthesises with it.

This file imports nothing but the standard library, because it runs as its own small
process (``python espeak_native.py LIBRARY DATA``), started by
:class:`avprobe.stimuli.tts.EspeakEngine`.

Why a helper process that forks once per utterance: libespeak-ng keeps state that no API
call resets. The phase of its pitch "flutter" oscillator is a static variable that
advances with every sample synthesised (``espeak_Terminate``/``espeak_Initialize`` leave it
alone), so the same word comes out different depending on what was said before it. The
helper initialises espeak once and never synthesises itself; each request is synthesised in
a fresh fork, so every utterance starts from the same state and depends on its input
only, whatever the order or the worker. The fork is cheap because the helper is small,
and a crash inside the C library kills only that fork.

Protocol on stdin/stdout, every frame a 4-byte little-endian length and a payload:
startup ``{"sample_rate", "voices"}`` (or ``{"error"}``); then per request
``{"voice", "spoken", "phonemes", "rate", "pitch"}`` in, and ``{"ok", "phonemes"|"error"}``
plus one frame of int16 little-endian samples out.
"""

from __future__ import annotations

import ctypes
import json
import os
import struct
import sys

# --- speak_lib.h / espeak_ng.h constants -------------------------------------------------

AUDIO_OUTPUT_SYNCHRONOUS = 2  # like RETRIEVAL (audio comes to our callback), but blocking
INITIALIZE_PHONEME_EVENTS = 0x0001
INITIALIZE_PHONEME_IPA = 0x0002  # phoneme events name phonemes in IPA
INITIALIZE_DONT_EXIT = 0x8000  # report missing data instead of calling exit()
CHARS_UTF8 = 1
PHONEMES = 0x100  # text inside [[ ]] is read as phoneme mnemonics
POS_CHARACTER = 1
EVENT_LIST_TERMINATED = 0
EVENT_WORD = 1
EVENT_END = 5
EVENT_PHONEME = 7
PARAM_RATE = 1
PARAM_PITCH = 3


class EspeakEvent(ctypes.Structure):
    """``espeak_EVENT``; ``id`` is a union, read here only as the 8-byte phoneme name."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


class EspeakVoice(ctypes.Structure):
    """``espeak_VOICE``; ``languages`` holds (priority byte, NUL-terminated tag) pairs."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.POINTER(ctypes.c_ubyte)),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(EspeakEvent)
)


def _languages(voice: EspeakVoice) -> list[list]:
    out, i, raw = [], 0, voice.languages
    while raw[i] != 0:
        priority = raw[i]
        i += 1
        start = i
        while raw[i] != 0:
            i += 1
        out.append([priority, bytes(raw[start:i]).decode()])
        i += 1
    return out


class EspeakLibrary:
    """libespeak-ng, initialised for synchronous retrieval with IPA phoneme events."""

    def __init__(self, library_path: str, data_path: str):
        self._chunks: list[bytes] = []
        self._phonemes: list[str] = []
        self._words: list[list] = []
        # Kept on the instance: ctypes callbacks must outlive every call that may use them.
        self._callback = SYNTH_CALLBACK(self._on_audio)
        self.lib = lib = ctypes.CDLL(library_path)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [SYNTH_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = ctypes.c_int
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(EspeakVoice))
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        lib.espeak_Synth.restype = ctypes.c_int
        options = INITIALIZE_PHONEME_EVENTS | INITIALIZE_PHONEME_IPA | INITIALIZE_DONT_EXIT
        rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), options)
        if rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed with data at {data_path}")
        self.sample_rate = int(rate)
        lib.espeak_SetSynthCallback(self._callback)

    def voices(self) -> list[dict]:
        array = self.lib.espeak_ListVoices(None)
        out, i = [], 0
        while array[i]:
            v = array[i].contents
            out.append(
                {"name": v.name.decode(), "identifier": v.identifier.decode(), "languages": _languages(v)}
            )
            i += 1
        return out

    def _on_audio(self, wav, n_samples, events) -> int:
        if wav and n_samples > 0:
            self._chunks.append(ctypes.string_at(wav, 2 * n_samples))
        i = 0
        while events[i].type != EVENT_LIST_TERMINATED:
            if events[i].type == EVENT_PHONEME:
                self._phonemes.append(events[i].id.decode("utf-8", "replace"))
            elif events[i].type in (EVENT_WORD, EVENT_END):
                # [kind, 1-based character position, length in characters, time in ms]
                e = events[i]
                self._words.append(["word" if e.type == EVENT_WORD else "end", e.text_position, e.length,
                                    e.audio_position])
            i += 1
        return 0  # 0 = go on

    def speak(self, voice: str, spoken: str, phonemes: bool, rate=None, pitch=None) -> tuple[bytes, str]:
        """Synthesise in this process: int16 samples and the IPA phonemes spoken (the word and
        clause-end events of the last call are in ``self._words``)."""
        lib = self.lib
        self._chunks, self._phonemes, self._words = [], [], []
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise RuntimeError(f"espeak_SetVoiceByName({voice!r}) failed")
        if rate is not None:
            lib.espeak_SetParameter(PARAM_RATE, int(rate), 0)
        if pitch is not None:
            lib.espeak_SetParameter(PARAM_PITCH, int(pitch), 0)
        lib.espeak_ng_SetRandSeed(0)  # the noise source of fricatives and breath
        flags = CHARS_UTF8 | (PHONEMES if phonemes else 0)
        text = spoken.encode("utf-8") + b"\0"
        status = lib.espeak_Synth(text, len(text), 0, POS_CHARACTER, 0, flags, None, None)
        if status != 0:
            raise RuntimeError(f"espeak_Synth returned {status} for {spoken!r}")
        return b"".join(self._chunks), "".join(self._phonemes)


# --- framing -----------------------------------------------------------------------------


def write_frame(fd: int, payload: bytes) -> None:
    view = memoryview(struct.pack("<I", len(payload)) + payload)
    while view:
        view = view[os.write(fd, view) :]


def read_exactly(fd: int, n: int) -> bytes:
    parts, left = [], n
    while left:
        chunk = os.read(fd, left)
        if not chunk:
            raise EOFError("pipe closed")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def read_frame(fd: int) -> bytes:
    (n,) = struct.unpack("<I", read_exactly(fd, 4))
    return read_exactly(fd, n)


def _read_to_end(fd: int) -> bytes:
    parts = []
    while chunk := os.read(fd, 1 << 16):
        parts.append(chunk)
    return b"".join(parts)


def _error(message: str) -> bytes:
    return json.dumps({"ok": False, "error": message}).encode()


def _answer(engine: EspeakLibrary, request: dict) -> tuple[bytes, bytes]:
    """Synthesise one request in a fresh fork; return (header, audio) frames."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: synthesise once, send the result, exit without any cleanup
        code = 1
        try:
            os.close(read_fd)
            audio, phonemes = engine.speak(
                request["voice"], request["spoken"], request["phonemes"], request.get("rate"), request.get("pitch")
            )
            write_frame(write_fd, json.dumps({"ok": True, "phonemes": phonemes, "words": engine._words}).encode())
            write_frame(write_fd, audio)
            code = 0
        except BaseException as error:  # noqa: BLE001 - reported to the client
            try:
                write_frame(write_fd, _error(repr(error)))
                write_frame(write_fd, b"")
            except BaseException:  # noqa: BLE001
                pass
        finally:
            os._exit(code)
    os.close(write_fd)
    try:
        data = _read_to_end(read_fd)
    finally:
        os.close(read_fd)
        _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return _error(f"the synthesis process died with signal {os.WTERMSIG(status)}"), b""
    try:
        (n_header,) = struct.unpack("<I", data[:4])
        header = data[4 : 4 + n_header]
        (n_audio,) = struct.unpack("<I", data[4 + n_header : 8 + n_header])
        return header, data[8 + n_header : 8 + n_header + n_audio]
    except struct.error:
        return _error("the synthesis process sent no answer"), b""


def serve(library_path: str, data_path: str, in_fd: int = 0, out_fd: int = 1) -> None:
    """Answer requests until the client closes our stdin."""
    try:
        engine = EspeakLibrary(library_path, data_path)
        write_frame(out_fd, json.dumps({"sample_rate": engine.sample_rate, "voices": engine.voices()}).encode())
    except Exception as error:  # noqa: BLE001 - reported to the client
        write_frame(out_fd, json.dumps({"error": repr(error)}).encode())
        return
    while True:
        try:
            request = json.loads(read_frame(in_fd))
        except EOFError:
            return
        header, audio = _answer(engine, request)
        write_frame(out_fd, header)
        write_frame(out_fd, audio)


if __name__ == "__main__":
    # Answers go to a private copy of stdout; fd 1 then points at stderr, so that anything
    # the C library prints cannot corrupt the protocol.
    answers = os.dup(1)
    os.dup2(2, 1)
    serve(sys.argv[1], sys.argv[2], in_fd=0, out_fd=answers)
