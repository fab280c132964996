"""Statistics for the evaluations. Pure functions on plain numbers: no torch, no I/O.

Conventions
- An offset estimate is *within +/-1 frame* of the truth when ``|est - true| <= frame_ms + 0.5``
  (``frame_ms = 1000 / fps``). The 0.5 ms slack is there because estimates are reported rounded
  to 0.1 ms (33.4 ms for one frame at 29.97 fps) and must not fail by rounding alone.
- A missing estimate (``None``) is never within tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

ROUNDING_SLACK_MS = 0.5


def within_frames(est_ms: float | None, true_ms: float, frame_ms: float, tol_frames: float = 1.0) -> bool:
    """True when the estimate is within ``tol_frames`` frames of ``true_ms`` (see module doc)."""
    if est_ms is None or not math.isfinite(est_ms):
        return False
    return abs(est_ms - true_ms) <= tol_frames * frame_ms + ROUNDING_SLACK_MS


def rate(hits: int, n: int) -> float | None:
    return None if n == 0 else hits / n


def tally(flags: Iterable[bool]) -> dict:
    """{"n", "hits", "rate"} of a sequence of booleans."""
    f = [bool(x) for x in flags]
    hits = sum(f)
    return {"n": len(f), "hits": hits, "rate": _round(rate(hits, len(f)))}


def auc(pos: Sequence[float], neg: Sequence[float]) -> float | None:
    """Area under the ROC curve = P(a random positive scores above a random negative), ties
    counting one half (Mann-Whitney U / (n_pos * n_neg)). None when either side is empty."""
    from worker.scoring.calibration import auc as _auc

    p = np.asarray([x for x in pos if x is not None and math.isfinite(x)], dtype=np.float64)
    n = np.asarray([x for x in neg if x is not None and math.isfinite(x)], dtype=np.float64)
    if p.size == 0 or n.size == 0:
        return None
    return _auc(p, n)


def ece(probs: Sequence[float], outcomes: Sequence[bool], n_bins: int = 10) -> dict | None:
    """Expected calibration error with ``n_bins`` equal-width bins on [0, 1]:
    sum over bins of (bin share) * |mean predicted - observed frequency|.
    Returns {"ece", "n", "bins": [[lo, hi, n, mean_p, freq], ...]} or None when empty."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(outcomes, dtype=np.float64)
    if p.size == 0:
        return None
    if p.shape != y.shape:
        raise ValueError(f"probs and outcomes differ in length: {p.size} vs {y.size}")
    idx = np.minimum((np.clip(p, 0.0, 1.0) * n_bins).astype(int), n_bins - 1)
    total = 0.0
    bins = []
    for b in range(n_bins):
        m = idx == b
        if not m.any():
            continue
        mean_p, freq = float(p[m].mean()), float(y[m].mean())
        total += m.mean() * abs(mean_p - freq)
        bins.append([b / n_bins, (b + 1) / n_bins, int(m.sum()), round(mean_p, 4), round(freq, 4)])
    return {"ece": round(float(total), 4), "n": int(p.size), "bins": bins}


def p_in_sync(offset_ms: float | None, confidence: float, frame_ms: float) -> float:
    """The in-sync statistic read from a LipSyncSignal (used for the in-sync vs out-of-sync AUC).

    The signal says "in sync" when its offset is within +/-1 frame of 0 (direction IN_SYNC), and
    ``confidence`` is its P(the offset is right). So
        P(in sync) = (1 + confidence) / 2   when |offset_ms| <= 1 frame,
                     (1 - confidence) / 2   otherwise,
                     1 / 2                  when there is no offset (silence, no face).
    It is monotone in what a consumer sees: a confident in-sync verdict ranks highest, a
    confident out-of-sync verdict lowest."""
    if offset_ms is None or not math.isfinite(offset_ms):
        return 0.5
    c = min(max(float(confidence), 0.0), 1.0)
    return (1.0 + c) / 2.0 if within_frames(offset_ms, 0.0, frame_ms) else (1.0 - c) / 2.0


def describe(values: Iterable[float | None]) -> dict:
    """n, mean, median, p10, p90 of the non-null values."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"n": 0}
    return {"n": int(v.size), "mean": _round(v.mean()), "median": _round(np.median(v)),
            "p10": _round(np.percentile(v, 10)), "p90": _round(np.percentile(v, 90))}


def _round(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)
