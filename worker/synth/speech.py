"""Undelayed speech on a timeline: espeak phrases, pauses, phoneme segments, 16 kHz audio.

The timeline is the video timeline in ms. Speech is laid out from ``start_ms`` (before the clip,
so the first frames already show talking and a negative audio offset has real speech to pull in)
to past the clip's end.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import gcd

import numpy as np
from scipy.signal import resample_poly

from worker.synth import espeak
from worker.synth.text import Voice, random_phrase

STOPS = frozenset({"p", "b", "t", "d", "k", "g", "tS", "dZ", "t#", "d#", "t2"})


@dataclass(frozen=True)
class Speech:
    """audio: float32 (N,) at sample_rate; audio[0] is at timeline time start_ms.
    phonemes: (start_ms, end_ms, phoneme) speech segments on the timeline (pauses left out)."""

    audio: np.ndarray
    sample_rate: int
    start_ms: float
    phonemes: list[tuple[float, float, str]]


def _envelope_db(pcm: np.ndarray, sample_rate: int, hop_ms: float = 1.0, win_ms: float = 4.0) -> np.ndarray:
    """Short-time level in dBFS every ``hop_ms`` (centred windows of ``win_ms``)."""
    x = pcm.astype(np.float64) / 32768.0
    hop = max(1, round(sample_rate * hop_ms / 1000))
    win = max(hop, round(sample_rate * win_ms / 1000))
    c = np.concatenate([[0.0], np.cumsum(x * x)])
    centres = np.arange(0, len(x), hop)
    lo = np.clip(centres - win // 2, 0, len(x))
    hi = np.clip(centres + win // 2, 0, len(x))
    power = (c[hi] - c[lo]) / np.maximum(hi - lo, 1)
    return 10 * np.log10(power + 1e-12)


def utterance_segments(utt: espeak.Utterance) -> list[tuple[float, float, str]]:
    """Phoneme segments (start_ms, end_ms, phoneme) of one utterance, times from its pcm start.

    espeak reports a stop consonant at its release burst; its silent closure sits at the end of
    the preceding segment. The lips close during that closure, so the stop's segment is moved back
    to where the preceding sound fades (found in the audio, at most 150 ms back); an utterance-
    initial stop gets a 60 ms closure before its burst. Zero-length segments are dropped.
    """
    events = utt.phonemes
    segs: list[list] = []
    for i, (t_ms, ph) in enumerate(events):
        end = events[i + 1][0] if i + 1 < len(events) else utt.end_ms
        if ph.startswith("_"):
            continue
        segs.append([t_ms, end, ph])
    if not segs:
        return []
    env = _envelope_db(utt.pcm, utt.sample_rate)
    for i in range(1, len(segs)):
        start, _, ph = segs[i]
        prev = segs[i - 1]
        if ph not in STOPS or prev[1] < start - 0.5:
            continue
        lo = int(prev[0] + 20)
        hi = int(start) - 3
        if hi <= lo or hi >= len(env):
            continue
        threshold = env[int(prev[0]):hi].max() - 15.0
        j = hi
        while j > max(lo, hi - 150) and env[j] < threshold:
            j -= 1
        if j < hi:
            prev[1] = float(j)
            segs[i][0] = float(j)
    # A stop that opens the utterance has its closure in the silence before it: the lips close
    # ahead of the burst (about 60 ms, a typical closure).
    if segs[0][2] in STOPS:
        segs[0][0] -= 60.0
    return [(float(a), float(b), str(p)) for a, b, p in segs if b - a >= 1.0]


def build_speech(rng: np.random.Generator, voice: Voice, start_ms: float, end_ms: float,
                 sample_rate: int, silence_gaps: bool) -> Speech:
    """Phrases with pauses from ``start_ms`` until past ``end_ms``.

    Pauses between phrases: 60-300 ms normally; with ``silence_gaps`` 0.4-1.5 s. Phrases are drawn
    and spoken in batches (each batch from espeak's pristine state), so the result depends only on
    the generator's state, never on what was synthesized before.
    """
    src_rate = 0
    pieces: list[tuple[int, np.ndarray]] = []  # (offset in source samples, pcm)
    phonemes: list[tuple[float, float, str]] = []
    cursor_ms = start_ms - float(rng.uniform(0, 300))
    # Enough words for the span at this speaking rate, with room to spare; rarely a second batch.
    words_per_ms = voice.rate_wpm / 60_000.0
    while cursor_ms < end_ms:
        want_words = int((end_ms - cursor_ms) * words_per_ms * 1.3) + 6
        texts, gaps, n_words = [], [], 0
        while n_words < want_words:
            texts.append(random_phrase(rng))
            gaps.append(rng.uniform(400, 1500) if silence_gaps else rng.uniform(60, 300))
            n_words += texts[-1].count(" ") + 1
        for utt, gap_ms in zip(espeak.synthesize_many(texts, voice.name, voice.rate_wpm, voice.pitch,
                                                      voice.pitch_range), gaps):
            src_rate = utt.sample_rate
            offset = round((cursor_ms - start_ms) * src_rate / 1000)
            at_ms = start_ms + offset * 1000.0 / src_rate
            pieces.append((offset, utt.pcm))
            phonemes.extend((at_ms + a, at_ms + b, p) for a, b, p in utterance_segments(utt))
            cursor_ms = at_ms + utt.end_ms + gap_ms
            if cursor_ms >= end_ms:
                break
    total = max(o + len(p) for o, p in pieces)
    src = np.zeros(total, dtype=np.float64)
    for o, p in pieces:
        if o < 0:
            p, o = p[-o:], 0
        src[o:o + len(p)] += p / 32768.0
    g = gcd(sample_rate, src_rate)
    audio = resample_poly(src, sample_rate // g, src_rate // g)  # Kaiser-windowed polyphase FIR
    peak = np.abs(audio).max()
    if peak > 0:
        audio *= rng.uniform(0.3, 0.9) / peak
    return Speech(audio=audio.astype(np.float32), sample_rate=sample_rate, start_ms=start_ms,
                  phonemes=phonemes)
