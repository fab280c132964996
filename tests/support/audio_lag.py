"""How far one audio array is shifted against another, for alignment tests."""

from __future__ import annotations

import numpy as np


def lag_samples(a: np.ndarray, b: np.ndarray, max_lag: int = 800) -> int:
    """The shift of b against a (samples) that matches them best."""
    n = min(len(a), len(b)) - 2 * max_lag
    ref = a[max_lag:max_lag + n]
    scores = [float(np.dot(ref, b[max_lag + k:max_lag + k + n])) for k in range(-max_lag, max_lag + 1)]
    return int(np.argmax(scores)) - max_lag
