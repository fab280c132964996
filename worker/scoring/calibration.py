"""Similarity -> score and peak -> confidence maps, and their fitting and ECE (pure numpy/math)."""

from __future__ import annotations

import math

import numpy as np

from model_store.bundle import Calibration


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def score_from_similarity(best_similarity: float, cal: Calibration) -> float:
    """Mean cosine at the best offset -> P(these lips and this audio belong together) in [0, 1]."""
    return _sigmoid(cal.score_a * best_similarity + cal.score_b)


def confidence_features(margin: float, best: float, n_frames: int) -> np.ndarray:
    return np.array([margin, best, math.log(max(n_frames, 1))], dtype=np.float64)


def confidence_from_peak(margin: float, best: float, n_frames: int, cal: Calibration) -> float:
    """Peak margin, height and support -> P(the offset is right within +/-1 frame) in [0, 1]."""
    x = confidence_features(margin, best, n_frames)
    return _sigmoid(float(np.dot(np.asarray(cal.conf_w), x) + cal.conf_b))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, iters: int = 200) -> tuple[np.ndarray, float]:
    """Logistic regression by Newton's method. x: (N, F), y: (N,) in {0, 1}. Returns (w, b)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    y = np.asarray(y, dtype=np.float64)
    n, f = x.shape
    xb = np.hstack([x, np.ones((n, 1))])
    w = np.zeros(f + 1)
    reg = np.eye(f + 1) * l2
    reg[-1, -1] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ w, -40, 40)))
        g = xb.T @ (p - y) / n + reg @ w
        h = (xb * (p * (1 - p))[:, None]).T @ xb / n + reg
        step = np.linalg.solve(h + 1e-9 * np.eye(f + 1), g)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w[:-1], float(w[-1])


def expected_calibration_error(prob: np.ndarray, y: np.ndarray, n_bins: int = 10) -> float:
    """ECE with equal-width bins: sum over bins of |accuracy - mean prob| weighted by bin share."""
    prob = np.asarray(prob, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if prob.size == 0:
        return float("nan")
    bins = np.minimum((prob * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            ece += m.mean() * abs(y[m].mean() - prob[m].mean())
    return float(ece)


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Area under the ROC curve (probability a positive outranks a negative; ties count half)."""
    pos = np.asarray(pos, dtype=np.float64)
    neg = np.asarray(neg, dtype=np.float64)
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    allv = np.concatenate([pos, neg])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(allv.size)
    sorted_v = allv[order]
    i = 0
    while i < allv.size:
        j = i
        while j + 1 < allv.size and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i: j + 1]] = (i + j) / 2.0 + 1
        i = j + 1
    r_pos = ranks[: pos.size].sum()
    return float((r_pos - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))
