"""Latency summaries shared by the benchmarks (`sync-scorer bench`, `loadtest`)."""

from __future__ import annotations

import numpy as np


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100, linear interpolation) of ``values``; None when there are none."""
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))
