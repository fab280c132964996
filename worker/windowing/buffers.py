"""Per-session stores: audio samples by sample index, ROI frames by frame index.

Both accept events in any order and answer "is [a, b) complete?" and "give me [a, b) with the
gaps filled and counted". Pure numpy, no clock.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np


class IntervalSet:
    """A union of half-open integer intervals [a, b), kept merged and sorted."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def add(self, a: int, b: int) -> int:
        """Add [a, b); returns how many of its points were new."""
        if b <= a:
            return 0
        before = self.length()
        i = bisect.bisect_left(self._ends, a)  # first interval that ends at or after a
        j = bisect.bisect_right(self._starts, b)  # intervals [i, j) touch [a, b)
        if i < j:
            a = min(a, self._starts[i])
            b = max(b, self._ends[j - 1])
        self._starts[i:j] = [a]
        self._ends[i:j] = [b]
        return self.length() - before

    def covered(self, a: int, b: int) -> int:
        """How many points of [a, b) are in the set."""
        if b <= a:
            return 0
        total = 0
        i = bisect.bisect_right(self._ends, a)
        while i < len(self._starts) and self._starts[i] < b:
            total += min(b, self._ends[i]) - max(a, self._starts[i])
            i += 1
        return total

    def contains(self, a: int, b: int) -> bool:
        return self.covered(a, b) == max(0, b - a)

    def first_at_or_after(self, x: int) -> int | None:
        """The smallest point of the set >= x, or None."""
        i = bisect.bisect_right(self._ends, x)  # first interval that ends after x
        return max(x, self._starts[i]) if i < len(self._starts) else None

    def remove_before(self, x: int) -> None:
        while self._starts and self._ends[0] <= x:
            self._starts.pop(0)
            self._ends.pop(0)
        if self._starts and self._starts[0] < x:
            self._starts[0] = x

    def length(self) -> int:
        return sum(e - s for s, e in zip(self._starts, self._ends))

    @property
    def lo(self) -> int | None:
        return self._starts[0] if self._starts else None

    @property
    def hi(self) -> int | None:
        return self._ends[-1] if self._ends else None

    def __repr__(self) -> str:
        return "IntervalSet(" + ", ".join(f"[{s},{e})" for s, e in zip(self._starts, self._ends)) + ")"


class AudioBuffer:
    """Mono float32 audio of one session, stored as the chunks that arrived.

    A chunk that adds no new samples (a replayed or duplicated chunk) is ignored. Overlapping
    chunks keep the samples that arrived first.
    """

    def __init__(self) -> None:
        # (start sample, samples, caller's info), sorted by start sample
        self._chunks: list[tuple[int, np.ndarray, object]] = []
        self.coverage = IntervalSet()
        self._longest = 0  # longest chunk, samples: bounds how far back an overlap can start

    def add(self, start_sample: int, samples: np.ndarray, info: object = None) -> bool:
        """Store a chunk; False when every one of its samples was already there."""
        end = start_sample + int(samples.shape[0])
        if self.coverage.add(start_sample, end) == 0:
            return False
        bisect.insort(self._chunks, (start_sample, samples, info), key=lambda c: c[0])
        self._longest = max(self._longest, int(samples.shape[0]))
        return True

    def _first_overlapping(self, a: int) -> int:
        return bisect.bisect_right(self._chunks, a - self._longest, key=lambda c: c[0])

    def infos(self, a: int, b: int) -> list[object]:
        """The info of every stored chunk that overlaps [a, b)."""
        out = []
        for start, samples, info in self._chunks[self._first_overlapping(a):]:
            if start >= b:
                break
            if start + samples.shape[0] > a:
                out.append(info)
        return out

    def extract(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """Samples [a, b) as float32 (b - a,), zeros where nothing arrived; and (b - a,) bool, True
        where something did."""
        out = np.zeros(max(0, b - a), dtype=np.float32)
        filled = np.zeros(out.shape[0], dtype=bool)
        i = self._first_overlapping(a)
        while i < len(self._chunks):
            start, samples, _ = self._chunks[i]
            if start >= b:
                break
            end = start + samples.shape[0]
            lo, hi = max(a, start), min(b, end)
            if lo < hi:
                dst = slice(lo - a, hi - a)
                take = ~filled[dst]  # earliest-arrived samples win on overlap
                out[dst][take] = samples[lo - start: hi - start][take]
                filled[dst] = True
            i += 1
        return out, filled

    def drop_before(self, sample: int) -> list[object]:
        """Forget the leading chunks that end at or before ``sample``; returns their infos.

        Called on every event, so it only looks at the front of the list (chunks arrive roughly in
        order; one hiding behind a longer earlier chunk goes on a later call)."""
        n = 0
        while n < len(self._chunks) and self._chunks[n][0] + self._chunks[n][1].shape[0] <= sample:
            n += 1
        if n == 0:
            return []
        dropped, self._chunks = self._chunks[:n], self._chunks[n:]
        self.coverage.remove_before(sample)
        return [c[2] for c in dropped]

    @property
    def end_sample(self) -> int | None:
        return self.coverage.hi

    def __len__(self) -> int:
        return len(self._chunks)


@dataclass(frozen=True)
class FrameSlot:
    """What arrived for one frame index. pixels None: no ROI (no face, or an unresolved ref)."""

    pixels: np.ndarray | None
    face_present: bool
    occluded: bool
    landmarks: np.ndarray | None
    resolved: bool  # False: the reference could not be read (the frame counts as missing)


def stack_rois(slots: list[FrameSlot | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                       np.ndarray | None]:
    """Frames of one job -> (frames, present, face_present, occluded, landmarks).

    frames: uint8 (T, H, W) or (T, H, W, 3), shaped like the first frame with pixels (RGB turns
    gray when the job mixes formats; other sizes are resized by nearest neighbour). Frames with no
    pixels are zeros. present[t]: the frame arrived and its ROI was read (a frame with no face
    is present with face_present False). landmarks: (T, L, 2) only when every frame has L of them.
    """
    n = len(slots)
    with_px = [s.pixels for s in slots if s is not None and s.pixels is not None]
    if with_px:
        gray = any(p.ndim == 2 for p in with_px)
        ref = _to_gray(with_px[0]) if gray else with_px[0]
        shape = ref.shape
    else:
        shape = (8, 8)  # nothing to look at: the scorer will label the job NO_FACE
        gray = True
    frames = np.zeros((n, *shape), dtype=np.uint8)
    present = np.zeros(n, dtype=bool)
    face = np.zeros(n, dtype=bool)
    occluded = np.zeros(n, dtype=bool)
    marks: list[np.ndarray | None] = []
    for t, slot in enumerate(slots):
        if slot is None:
            marks.append(None)
            continue
        present[t] = slot.resolved
        face[t] = slot.face_present and slot.pixels is not None
        occluded[t] = slot.occluded
        marks.append(slot.landmarks)
        if slot.pixels is not None:
            px = _to_gray(slot.pixels) if gray else slot.pixels
            frames[t] = px if px.shape == shape else _resize_nearest(px, shape[0], shape[1])
    landmarks = None
    if (marks and all(m is not None for m in marks)
            and len({m.shape for m in marks}) == 1):  # type: ignore[union-attr]
        landmarks = np.stack(marks).astype(np.float32)  # type: ignore[arg-type]
    return frames, present, face, occluded, landmarks


def _to_gray(px: np.ndarray) -> np.ndarray:
    if px.ndim == 2:
        return px
    f = px.astype(np.float32)
    return np.clip(0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2] + 0.5, 0, 255).astype(np.uint8)


def _resize_nearest(px: np.ndarray, height: int, width: int) -> np.ndarray:
    rows = (np.arange(height) * px.shape[0] // height).clip(0, px.shape[0] - 1)
    cols = (np.arange(width) * px.shape[1] // width).clip(0, px.shape[1] - 1)
    return px[rows][:, cols]
