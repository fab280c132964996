"""Shifted and mismatched audio for the real-footage protocol. Pure numpy.

Sign (CONTRACT.md): a positive shift delays the audio (it lags the video), so a scorer must then
report about +shift ms; a negative shift advances it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def shift_audio(audio: np.ndarray, shift_ms: float, sample_rate: int) -> np.ndarray:
    """``audio`` delayed by ``shift_ms`` (> 0) or advanced (< 0), same length: samples slide
    right (delay) or left (advance); the uncovered end is filled with zeros (silence)."""
    x = np.asarray(audio, dtype=np.float32)
    k = round(shift_ms * sample_rate / 1000.0)
    out = np.zeros_like(x)
    if k == 0:
        out[:] = x
    elif abs(k) < x.shape[0]:
        if k > 0:
            out[k:] = x[:-k]
        else:
            out[:k] = x[-k:]
    return out


def fit_length(audio: np.ndarray, n_samples: int) -> np.ndarray:
    """``audio`` repeated end to end (if shorter) and cut to ``n_samples``: another clip's audio
    covering this clip's whole video for the mismatched control."""
    x = np.asarray(audio, dtype=np.float32)
    if x.shape[0] == 0:
        raise ValueError("cannot fit empty audio")
    reps = -(-n_samples // x.shape[0])
    return np.tile(x, reps)[:n_samples]


def mismatched_partners(names: Sequence[str], group_of: Callable[[str], str]) -> dict[str, str]:
    """For each clip (sorted by name), the clip half the list away whose speaker group differs
    (the next one after that if the group is the same). Deterministic."""
    order = sorted(names)
    n = len(order)
    if n < 2:
        return {}
    out: dict[str, str] = {}
    for i, name in enumerate(order):
        for step in range(n // 2, n // 2 + n):
            j = (i + step) % n
            if j != i and group_of(order[j]) != group_of(name):
                out[name] = order[j]
                break
    return out
