"""Thin ctypes binding to libespeak-ng: synthesize text, get 16-bit PCM plus phoneme events.

Only this module touches the shared library. libespeak-ng keeps global state, so every call goes
through one process-wide lock, and the library is (re)initialised lazily per process id (a forked
training worker gets its own initialisation).

Timing: in AUDIO_OUTPUT_SYNCHRONOUS mode each espeakEVENT_PHONEME event carries
``audio_position`` (ms from the start of this synthesis call); ``sample`` is not used because its
meaning differs between espeak versions. ``tests/unit/test_synth.py`` checks these times against
the audio energy.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from dataclasses import dataclass

import numpy as np

# espeak_AUDIO_OUTPUT, espeak_EVENT_TYPE, options and parameters from speak_lib.h (stable ABI).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_END = 5
_EVENT_MSG_TERMINATED = 6
_EVENT_PHONEME = 7
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_PARAM_PITCH = 3
_PARAM_RANGE = 4
_PARAM_WORDGAP = 7


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))


class EspeakError(RuntimeError):
    """libespeak-ng is missing or refused a call."""


@dataclass(frozen=True)
class Utterance:
    """One synthesized utterance.

    pcm: int16 (n_samples,) at ``sample_rate`` (22050 Hz for espeak-ng).
    phonemes: (start_ms, phoneme) in espeak's ASCII phoneme mnemonics, in order, times from the
    start of ``pcm``; each phoneme lasts until the next one starts (the last until ``end_ms``).
    end_ms: time of the final event (end of speech, before espeak's trailing silence if any).
    """

    pcm: np.ndarray
    sample_rate: int
    phonemes: list[tuple[float, str]]
    end_ms: float


class _Engine:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._lib: ctypes.CDLL | None = None
        self._sample_rate = 0
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, str]] = []
        self._cb = _CALLBACK(self._on_synth)  # keep a reference: the library holds a raw pointer

    def _on_synth(self, wav, n_samples, events) -> int:  # called from inside espeak_Synth
        if n_samples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            name = ev.id.string.decode("ascii", "replace") if ev.type == _EVENT_PHONEME else ""
            self._events.append((ev.type, ev.audio_position, name))
            i += 1
        return 0  # 0 = continue synthesis

    def _ensure(self) -> ctypes.CDLL:
        if self._lib is not None and self._pid == os.getpid():
            return self._lib
        path = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            raise EspeakError(f"cannot load libespeak-ng ({path}): install espeak-ng/libespeak-ng1") from exc
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None,
                                     _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed ({rate})")
        lib.espeak_SetSynthCallback(self._cb)
        self._lib, self._pid, self._sample_rate = lib, os.getpid(), rate
        return lib

    def synth(self, text: str, voice: str, rate_wpm: int, pitch: int, pitch_range: int) -> Utterance:
        with self._lock:
            lib = self._ensure()
            if lib.espeak_SetVoiceByName(voice.encode("ascii")) != 0:
                raise EspeakError(f"espeak-ng has no voice {voice!r}")
            for param, value in ((_PARAM_RATE, rate_wpm), (_PARAM_PITCH, pitch),
                                 (_PARAM_RANGE, pitch_range), (_PARAM_VOLUME, 100)):
                lib.espeak_SetParameter(param, int(value), 0)
            self._chunks, self._events = [], []
            data = text.encode("utf-8") + b"\0"
            err = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if err != 0:
                raise EspeakError(f"espeak_Synth failed ({err})")
            lib.espeak_Synchronize()
            chunks, events = self._chunks, self._events
            self._chunks, self._events = [], []
            sample_rate = self._sample_rate
        pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
        phonemes = [(float(pos), name) for kind, pos, name in events if kind == _EVENT_PHONEME and name]
        ends = [float(pos) for kind, pos, _ in events if kind in (_EVENT_END, _EVENT_MSG_TERMINATED)]
        end_ms = max(ends) if ends else len(pcm) * 1000.0 / sample_rate
        return Utterance(pcm=pcm, sample_rate=sample_rate, phonemes=phonemes, end_ms=end_ms)


_ENGINE = _Engine()


def synthesize(text: str, voice: str = "en-us", rate_wpm: int = 170, pitch: int = 50,
               pitch_range: int = 50) -> Utterance:
    """Speak ``text`` with espeak-ng; returns PCM and phoneme start times (ms)."""
    return _ENGINE.synth(text, voice, rate_wpm, pitch, pitch_range)
