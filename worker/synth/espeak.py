"""espeak-ng speech with phoneme timing, bit-exact per request.

Synthesis runs in a small helper process (``_espeak_zygote.py``) that initialises libespeak-ng
once and forks a fresh child per request: libespeak-ng carries waveform state from one call to the
next, so in-process synthesis of the same text differs sample by sample with history. The helper
is started lazily, once per Python process (a forked training worker starts its own).

Timing: libespeak-ng is initialised with espeakINITIALIZE_PHONEME_EVENTS in synchronous mode; each
espeakEVENT_PHONEME carries ``audio_position`` (whole ms from the start of that synthesis call) and,
in 1.51, ``sample`` (the sample index); the sample index is used when the two agree.
``tests/unit/test_synth.py`` checks these times against the audio.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading
from dataclasses import dataclass

import numpy as np

_EVENT_END = 5
_EVENT_MSG_TERMINATED = 6
_EVENT_PHONEME = 7


class EspeakError(RuntimeError):
    """libespeak-ng is missing or refused a request."""


@dataclass(frozen=True)
class Utterance:
    """One synthesized utterance.

    pcm: int16 (n_samples,) at ``sample_rate`` (22050 Hz for espeak-ng).
    phonemes: (start_ms, phoneme) in espeak's ASCII phoneme mnemonics, in order, times from the
    start of ``pcm``; each lasts until the next one starts (the last until ``end_ms``). Pauses
    are phonemes starting with ``_``.
    end_ms: time of espeak's end-of-message event.
    """

    pcm: np.ndarray
    sample_rate: int
    phonemes: list[tuple[float, str]]
    end_ms: float


class _Helper:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._pid: int | None = None

    def _start(self) -> subprocess.Popen:
        if self._proc is not None and self._pid == os.getpid() and self._proc.poll() is None:
            return self._proc
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_espeak_zygote.py")
        proc = subprocess.Popen([sys.executable, "-S", "-E", script], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        if proc.stdout.readline() != b"READY\n":
            proc.kill()
            raise EspeakError("espeak-ng helper process did not start")
        self._proc, self._pid = proc, os.getpid()
        return proc

    def request(self, req: dict) -> tuple[dict, bytes]:
        with self._lock:
            proc = self._start()
            payload = json.dumps(req).encode()
            try:
                proc.stdin.write(struct.pack(">I", len(payload)) + payload)
                proc.stdin.flush()
                head = json.loads(self._read(proc))
                pcm = self._read(proc) if head.get("ok") else b""
            except (OSError, ValueError, EspeakError) as exc:
                proc.kill()
                self._proc = None
                raise EspeakError(f"espeak-ng helper failed: {exc}") from exc
        if not head.get("ok"):
            raise EspeakError(head.get("error", "unknown espeak-ng error"))
        return head, pcm

    @staticmethod
    def _read(proc: subprocess.Popen) -> bytes:
        raw = proc.stdout.read(4)
        if len(raw) < 4:
            raise EspeakError("espeak-ng helper closed its output")
        (n,) = struct.unpack(">I", raw)
        data = proc.stdout.read(n)
        if len(data) < n:
            raise EspeakError("espeak-ng helper sent a short message")
        return data


_HELPER = _Helper()


def synthesize_many(texts: list[str], voice: str = "en-us", rate_wpm: int = 170, pitch: int = 50,
                    pitch_range: int = 50) -> list[Utterance]:
    """Speak each text with one voice, in order, starting from espeak's pristine state.

    The result depends only on the arguments (bit-exact), not on earlier calls.
    """
    if not texts:
        return []
    head, pcm_bytes = _HELPER.request({"texts": list(texts), "voice": voice, "rate": int(rate_wpm),
                                       "pitch": int(pitch), "range": int(pitch_range)})
    sample_rate = int(head["sample_rate"])
    pcm_all = np.frombuffer(pcm_bytes, dtype="<i2")
    out, pos = [], 0
    for utt in head["utterances"]:
        n = int(utt["n_samples"])
        pcm = pcm_all[pos:pos + n].astype(np.int16)
        pos += n

        def when_ms(pos_ms: int, sample: int) -> float:
            exact = sample * 1000.0 / sample_rate
            return exact if abs(exact - pos_ms) <= 1.5 else float(pos_ms)

        events = utt["events"]
        phonemes = [(when_ms(p, s), name) for kind, p, s, name in events if kind == _EVENT_PHONEME and name]
        ends = [when_ms(p, s) for kind, p, s, _ in events if kind in (_EVENT_END, _EVENT_MSG_TERMINATED)]
        end_ms = max(ends) if ends else n * 1000.0 / sample_rate
        out.append(Utterance(pcm=pcm, sample_rate=sample_rate, phonemes=phonemes, end_ms=end_ms))
    return out


def synthesize(text: str, voice: str = "en-us", rate_wpm: int = 170, pitch: int = 50,
               pitch_range: int = 50) -> Utterance:
    """Speak one text (see ``synthesize_many``)."""
    return synthesize_many([text], voice, rate_wpm, pitch, pitch_range)[0]
