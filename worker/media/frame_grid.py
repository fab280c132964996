"""Which decoded frame fills each slot of a constant-rate grid, for variable-rate video.

ffmpeg's fps filter fills a slot with the last frame shown at or before it (what a player
shows). On a recording that lost frames, a slot whose own frame was dropped then holds an older
mouth: an audit's 25 fps file with a third of its frames dropped at random read the audio 30-47
ms early, the video being late by the staleness of those repeats. Here a slot takes the decoded
frame nearest to it in time, so a gap is filled half by the frame before it and half by the
frame after; a slot exactly midway (one frame dropped) goes to each side in turn, so runs of
single drops are not read early or late on average (read faster than the stream's own rate,
where every other slot is midway, to the earlier frame: even holds).

Nearest is right for jitter and for a frame or two lost, not for a long stretch without frames
(a variable-rate file that lost a second of them, a probe: its slots all held the frames either
side of the hole, and a 1-s window over it read a confident +160 ms). ``missing_slots`` lists the
slots whose nearest frame is further away than a bound: they still get that frame (the pipe
stays one frame per slot), but a caller should not score them.

Pure logic: timestamps in, counts out. ``worker.media.decode`` feeds it the frames' own times
(ffmpeg's showinfo) in decoding order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

# timestamps print to the microsecond: closer than this to the midpoint is a tie
TIE_S = 1e-6
# missing_slots' hold is exceeded by more than a millisecond container clock's rounding (Matroska, FLV)
HOLD_SLACK_S = 1e-3


class NearestFrameGrid:
    """Slots at ``i / rate`` seconds (i = 0, 1, ...), each given the frame nearest in time.

    ``push(pts_s)`` for each decoded frame in order returns how many more slots the frame before
    it fills (None: this frame is not later than the one before it, and is skipped);
    ``finish()`` returns how many slots the last frame fills. Slots before the first frame get
    the first frame (as the fps filter repeats it); the grid ends with the last frame's own
    slot."""

    def __init__(self, rate: Fraction | float, alternate_ties: bool = True) -> None:
        self.rate = Fraction(rate)
        if self.rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        # read faster than the stream's own rate (--fps 50 on 25 fps), every other slot is a tie:
        # taken in turn they held frames 2, 1, 3, 1, 3 slots (a review); the earlier frame each
        # time holds every frame alike, half a slot early, as the fps filter did
        self.alternate_ties = alternate_ties
        self._next_slot = 0
        self._prev_s: float | None = None
        self._ties = 0

    @property
    def slots_filled(self) -> int:
        return self._next_slot

    def _slot_s(self, i: int) -> float:
        return float(i / self.rate)

    def push(self, pts_s: float) -> int | None:
        if not math.isfinite(pts_s):
            raise ValueError(f"frame time must be finite, got {pts_s}")
        prev = self._prev_s
        if prev is None:
            self._prev_s = pts_s
            return 0
        if pts_s <= prev + TIE_S:
            return None
        mid = 0.5 * (prev + pts_s)
        start = self._next_slot
        i = start
        while True:
            t = self._slot_s(i)
            if t < mid - TIE_S:
                i += 1
                continue
            if abs(t - mid) <= TIE_S:
                self._ties += 1
                if self._ties % 2 or not self.alternate_ties:  # odd ties to the earlier frame
                    i += 1
            break
        self._next_slot = i
        self._prev_s = pts_s
        return i - start

    def finish(self) -> int:
        """Slots the last frame fills: up to and including the slot nearest to it, the earlier
        one on a tie, so the grid does not reach past the stream (at least one slot in all, so
        a one-frame stream gives one frame)."""
        if self._prev_s is None:
            return 0
        last_slot = max(0, math.ceil(self._prev_s * float(self.rate) - 0.5 - TIE_S * float(self.rate)))
        n = max(0, last_slot + 1 - self._next_slot)
        if self._next_slot + n == 0:
            n = 1
        self._next_slot += n
        return n


def _add_far_slots(missing: list[tuple[int, int]], before_s: float, after_s: float, rate: float,
                   hold_s: float) -> None:
    """Append to ``missing`` the slots between two frames (times in s; -inf: none before) that
    are further than ``hold_s`` from both, joined to the run before when they touch it."""
    hold = hold_s + HOLD_SLACK_S
    # slots i with before_s + hold < i / rate < after_s - hold
    lo = 0 if before_s == -math.inf else max(0, math.floor((before_s + hold) * rate) + 1)
    hi = math.ceil((after_s - hold) * rate)  # first slot not before after_s - hold
    if hi > lo:
        if missing and missing[-1][1] >= lo:  # runs that touch are one
            lo = missing.pop()[0]
        missing.append((lo, hi))


def missing_slots(times_s: Sequence[float], rate: Fraction | float, hold_s: float) -> list[tuple[int, int]]:
    """The slots (at ``i / rate`` s) further than ``hold_s`` from every frame (pure), slots before
    the first frame included, from all the frames' times (increasing, s), as half-open ranges
    [start, stop) in order."""
    if not hold_s >= 0:
        raise ValueError(f"hold_s must be >= 0, got {hold_s}")
    t = np.asarray(times_s, np.float64)
    missing: list[tuple[int, int]] = []
    if t.shape[0] == 0:
        return missing
    rate_f = float(rate)
    _add_far_slots(missing, -math.inf, float(t[0]), rate_f, hold_s)
    for i in np.flatnonzero(np.diff(t) > 2 * hold_s).tolist():  # only a gap this wide has any
        _add_far_slots(missing, float(t[i]), float(t[i + 1]), rate_f, hold_s)
    return missing


def median_spacing_s(times_s: Sequence[float]) -> float:
    """The median time between consecutive frames (s; 0.0 for fewer than two) (pure): the
    stream's own frame period, whatever rate its header claims."""
    t = np.asarray(times_s, np.float64)
    return float(np.median(np.diff(t))) if t.shape[0] >= 2 else 0.0
