"""Chunked band-limited resampling whose pieces add up to the whole stream's (pure numpy).

A session's audio arrives in chunks at the producer's rate. Resampled one chunk at a time with
the rest of the stream taken as zeros (torchaudio on each chunk, before), every chunk edge was a
click: 48 kHz audio in 20 ms chunks came out 34 dB from the same audio resampled whole, peak
errors 0.2 on speech peaking at 0.8, and the scores of a real clip moved by up to 0.05 with the
producer's chunk size (a helper's worker probe).

Resampling is linear: the whole stream's output is the sum of every chunk's own contribution,
each computed with the rest of the stream as zeros. A chunk's contribution reaches a few output
samples past each of its edges (the kernel's half-width, ``lowpass_filter_width`` zero crossings:
6 samples at 16 kHz), so ``chunk_contribution`` returns the chunk's own span (its *core*: the
output samples between its edges on the output clock) and the two *spills* beside it, which the
session's buffer adds to its neighbours' cores (windowing.buffers.AudioBuffer). Where both
neighbours arrive, the sum equals resampling the stream whole; where one never does, the stream
there is silence, as it is read.

Outputs are on one clock for the whole session, output ``j`` at ``j / target`` s, whatever
sample a chunk starts at (a 44.1 kHz chunk of 1024 samples starts between two 16 kHz samples):
the kernel is torchaudio's ``sinc_interp_hann`` (lowpass_filter_width 6, rolloff 0.99), in one
row per output phase, so a stream resampled whole here equals ``torchaudio.functional.resample``.
"""

from __future__ import annotations

import functools
import math

import numpy as np

LOWPASS_FILTER_WIDTH = 6  # zero crossings of the sinc on each side (torchaudio's default)
ROLLOFF = 0.99  # the cut-off as a share of the lower rate's Nyquist (torchaudio's default)


@functools.lru_cache(maxsize=16)
def _kernel(rate: int, target: int) -> tuple[np.ndarray, int, int, int]:
    """(table, width, up, down): ``table[p, k]`` weighs input ``floor(j * down / up) - width + k``
    for an output ``j`` with ``j % up == p``; up / down = target / rate in lowest terms."""
    g = math.gcd(rate, target)
    down, up = rate // g, target // g
    base = min(down, up) * ROLLOFF
    width = math.ceil(LOWPASS_FILTER_WIDTH * down / base)
    p = np.arange(up, dtype=np.float64)[:, None]
    k = np.arange(2 * width + 2, dtype=np.float64)[None, :]
    frac = (p * down % up) / up  # where output j falls between two input samples
    t = np.clip((k - width - frac) / down * base, -LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH)
    window = np.cos(t * math.pi / LOWPASS_FILTER_WIDTH / 2) ** 2
    sinc = np.where(t == 0, 1.0, np.sin(t * math.pi) / np.where(t == 0, 1.0, t * math.pi))
    return (sinc * window * (base / down)).astype(np.float64), width, up, down


def core_start(start_sample: int, rate: int, target: int) -> int:
    """The first output sample a chunk starting at input ``start_sample`` owns (its core starts
    there; the next chunk's core starts where this one's ends: contiguous chunks tile)."""
    return (2 * start_sample * target + rate) // (2 * rate)  # the nearest, in integers (exact at any size)


def chunk_contribution(samples: np.ndarray, start_sample: int, rate: int,
                       target: int) -> tuple[np.ndarray, int, tuple[tuple[int, np.ndarray], ...]]:
    """A chunk of ``samples`` (mono float32) starting at input sample ``start_sample``, resampled
    from ``rate`` to ``target``: (core, core_start, spills), the core its own output samples,
    each spill (output start, samples) what it adds to the output samples beside them."""
    table, width, up, down = _kernel(rate, target)
    x = np.asarray(samples, dtype=np.float64)
    n = x.shape[0]
    c0, c1 = core_start(start_sample, rate, target), core_start(start_sample + n, rate, target)
    # every output whose taps may reach the chunk (generous: those that do not are dropped below)
    j0 = max(0, (start_sample - width - 2) * up // down)
    j1 = (start_sample + n + width + 1) * up // down + 1
    j = np.arange(j0, j1 + 1, dtype=np.int64)
    idx = (j * down // up - width)[:, None] + np.arange(table.shape[1])[None, :] - start_sample
    inside = (idx >= 0) & (idx < n)
    y = (table[j % up] * np.where(inside, x[np.clip(idx, 0, max(0, n - 1))], 0.0)).sum(axis=1)
    reached = inside.any(axis=1)
    j, y = j[reached], y[reached].astype(np.float32)
    if j.shape[0] == 0:
        return np.zeros(c1 - c0, np.float32), c0, ()
    first = int(j[0])  # j is contiguous: the taps slide one input at a time at most
    core = np.zeros(c1 - c0, np.float32)
    lo, hi = max(c0, first), min(c1, first + y.shape[0])
    if hi > lo:
        core[lo - c0: hi - c0] = y[lo - first: hi - first]
    spills = []
    if first < c0:
        spills.append((first, y[: c0 - first].copy()))
    if first + y.shape[0] > c1:
        spills.append((c1, y[c1 - first:].copy()))
    return core, c0, tuple(spills)
