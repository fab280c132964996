"""espeak-ng synthesis server, run as its own small process (no imports from this package).

Why a separate process that forks per request: libespeak-ng keeps waveform state (pitch phase,
flutter index, noise generator) in C statics from one synthesis call to the next, so the same text
comes out different sample by sample depending on what was spoken before. A child forked from a
process that has initialised espeak but never spoken always starts from the same state, which makes
the audio bit-exact per request.

Protocol on stdin/stdout, every message a 4-byte big-endian length then the payload:
  request:  JSON {"texts": [...], "voice": str, "rate": int, "pitch": int, "range": int}
  response: JSON {"ok": true, "sample_rate": int, "utterances": [{"n_samples": int,
            "events": [[type, audio_position_ms, sample, phoneme], ...]}, ...]}
            followed by one more message: the int16 little-endian PCM of all utterances in order;
            or JSON {"ok": false, "error": str}.
"""

import ctypes
import ctypes.util
import json
import os
import struct
import sys

AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_PHONEME_EVENTS = 0x0001
INITIALIZE_DONT_EXIT = 0x8000
EVENT_LIST_TERMINATED = 0
EVENT_PHONEME = 7
POS_CHARACTER = 1
CHARS_UTF8 = 1
PARAM_RATE, PARAM_VOLUME, PARAM_PITCH, PARAM_RANGE = 1, 2, 3, 4


class EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class Event(ctypes.Structure):  # espeak_EVENT from speak_lib.h
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", EventId)]


CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(Event))
_pcm = []
_events = []


def _on_synth(wav, n_samples, events):
    if n_samples > 0 and wav:
        _pcm.append(ctypes.string_at(wav, n_samples * 2))
    i = 0
    while events[i].type != EVENT_LIST_TERMINATED:
        ev = events[i]
        name = ev.id.string.decode("ascii", "replace") if ev.type == EVENT_PHONEME else ""
        _events.append([ev.type, ev.audio_position, ev.sample, name])
        i += 1
    return 0


_cb = CALLBACK(_on_synth)


def _read(stream):
    head = stream.read(4)
    if len(head) < 4:
        return None
    (n,) = struct.unpack(">I", head)
    return stream.read(n)


def _write(stream, payload: bytes) -> None:
    stream.write(struct.pack(">I", len(payload)) + payload)


def _serve(lib, sample_rate: int, req: dict, out) -> None:
    if lib.espeak_SetVoiceByName(req["voice"].encode("ascii")) != 0:
        raise RuntimeError(f"espeak-ng has no voice {req['voice']!r}")
    for param, key in ((PARAM_RATE, "rate"), (PARAM_PITCH, "pitch"), (PARAM_RANGE, "range")):
        lib.espeak_SetParameter(param, int(req[key]), 0)
    lib.espeak_SetParameter(PARAM_VOLUME, 100, 0)
    utterances, pcm = [], []
    for text in req["texts"]:
        _pcm.clear()
        _events.clear()
        data = text.encode("utf-8") + b"\0"
        err = lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
        if err != 0:
            raise RuntimeError(f"espeak_Synth failed ({err})")
        lib.espeak_Synchronize()
        raw = b"".join(_pcm)
        pcm.append(raw)
        utterances.append({"n_samples": len(raw) // 2, "events": list(_events)})
    _write(out, json.dumps({"ok": True, "sample_rate": sample_rate, "utterances": utterances}).encode())
    _write(out, b"".join(pcm))


def main() -> int:
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1")
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        sample_rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, None,
                                            INITIALIZE_PHONEME_EVENTS | INITIALIZE_DONT_EXIT)
        if sample_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({sample_rate})")
        lib.espeak_SetSynthCallback(_cb)
    except Exception as exc:  # noqa: BLE001 - report any failure once, then answer every request with the error
        lib, sample_rate, init_error = None, 0, f"cannot initialise libespeak-ng: {exc}"
    else:
        init_error = None
    out.write(b"READY\n")
    out.flush()
    while True:
        msg = _read(inp)
        if msg is None:
            return 0
        if init_error is not None:
            _write(out, json.dumps({"ok": False, "error": init_error}).encode())
            out.flush()
            continue
        pid = os.fork()
        if pid == 0:  # child: speak from the pristine state, answer, vanish
            code = 0
            try:
                _serve(lib, sample_rate, json.loads(msg), out)
            except Exception as exc:  # noqa: BLE001 - the parent gets every failure as a message
                _write(out, json.dumps({"ok": False, "error": str(exc)}).encode())
                code = 1
            out.flush()
            os._exit(code)
        os.waitpid(pid, 0)


if __name__ == "__main__":
    sys.exit(main())
