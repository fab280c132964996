"""Per-session stores: audio samples by sample index, ROI frames by frame index.

Both accept events in any order and answer "is [a, b) complete?" and "give me [a, b) with the
gaps filled and counted". Pure numpy, no clock.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
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

    def gaps(self, a: int, b: int) -> list[tuple[int, int]]:
        """The parts of [a, b) not in the set, in order."""
        out = []
        i = bisect.bisect_right(self._ends, a)  # first interval that ends after a
        while a < b:
            if i == len(self._starts) or self._starts[i] >= b:
                out.append((a, b))
                break
            if self._starts[i] > a:
                out.append((a, self._starts[i]))
            a = self._ends[i]
            i += 1
        return out

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
    """Mono float32 audio of one session, stored as pieces of the chunks that arrived.

    Only the samples a chunk adds are stored (the samples that arrived first win on overlap): the
    pieces never overlap, so what is held is bounded by the media span, not by how many
    overlapping chunks came (each whole chunk kept for one new sample held 307 MB for 8 s of
    media in a review). A chunk that adds no new samples (a replayed or duplicated one) is ignored.

    A chunk resampled from another rate comes with its spills (windowing.resample): what it adds
    to the few samples beside it. They are kept where the chunk is stored whole (a chunk that
    overlaps what arrived before is its new part only, with nothing to add) and added, in
    ``extract``, to the samples that arrived there: contiguous chunks then read as the stream
    resampled whole, and where a neighbour never came the audio is silence, as it is read.
    """

    def __init__(self) -> None:
        # (start sample, samples, caller's info), sorted by start sample; disjoint, so also by end
        self._chunks: list[tuple[int, np.ndarray, object]] = []
        self.coverage = IntervalSet()  # exactly the samples of the stored pieces
        # pieces still stored per chunk (by its info's id): a chunk is reported dropped only once
        # none is left, since the caller then lets its record go
        self._pieces_left: dict[int, int] = {}
        self._spills: list[tuple[int, np.ndarray]] = []  # (start sample, samples), by start
        # the longest spill kept: 6-7 samples from 8-48 kHz to 16 kHz; 128 from 1 kHz. A job's
        # samples are whole once this many past them have arrived too (the next chunk's spill)
        self.longest_spill_samples = 0

    def add(self, start_sample: int, samples: np.ndarray, info: object = None,
            spill: tuple[tuple[int, np.ndarray], ...] = ()) -> bool:
        """Store a chunk's new samples (and its ``spill``, where all of them are new); False when
        every one of them was already there."""
        end = start_sample + int(samples.shape[0])
        gaps = self.coverage.gaps(start_sample, end)
        if not gaps:
            return False
        if gaps == [(start_sample, end)]:
            for s, piece in spill:
                bisect.insort(self._spills, (s, piece), key=lambda p: p[0])
                self.longest_spill_samples = max(self.longest_spill_samples, piece.shape[0])
        self.coverage.add(start_sample, end)
        for a, b in gaps:
            # a slice would keep the whole chunk alive: copy the new part unless it is all of it
            piece = samples if (a, b) == (start_sample, end) else samples[a - start_sample: b - start_sample].copy()
            bisect.insort(self._chunks, (a, piece, info), key=lambda c: c[0])
        self._pieces_left[id(info)] = self._pieces_left.get(id(info), 0) + len(gaps)
        return True

    def _overlapping(self, a: int, b: int) -> Iterator[tuple[int, np.ndarray, object]]:
        """The stored pieces that overlap [a, b), in order."""
        # the pieces are disjoint and sorted, so their ends are sorted too
        i = bisect.bisect_right(self._chunks, a, key=lambda c: c[0] + c[1].shape[0])
        while i < len(self._chunks) and self._chunks[i][0] < b:
            yield self._chunks[i]
            i += 1

    def infos(self, a: int, b: int) -> list[object]:
        """The info of every stored chunk that overlaps [a, b) (once each)."""
        out: dict[int, object] = {}
        for _, _, info in self._overlapping(a, b):
            out.setdefault(id(info), info)
        return list(out.values())

    def extract(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """Samples [a, b) as float32 (b - a,), zeros where nothing arrived; and (b - a,) bool, True
        where something did."""
        out = np.zeros(max(0, b - a), dtype=np.float32)
        filled = np.zeros(out.shape[0], dtype=bool)
        for start, samples, _ in self._overlapping(a, b):
            lo, hi = max(a, start), min(b, start + samples.shape[0])
            out[lo - a: hi - a] = samples[lo - start: hi - start]
            filled[lo - a: hi - a] = True
        if self._spills:
            # spills reach a few samples: only those starting up to the longest one before a reach it
            i = bisect.bisect_left(self._spills, a - self.longest_spill_samples, key=lambda p: p[0])
            while i < len(self._spills) and self._spills[i][0] < b:
                start, piece = self._spills[i]
                lo, hi = max(a, start), min(b, start + piece.shape[0])
                if hi > lo:
                    out[lo - a: hi - a] += np.where(filled[lo - a: hi - a], piece[lo - start: hi - start], 0.0)
                i += 1
        return out, filled

    def drop_before(self, sample: int) -> list[object]:
        """Forget the leading pieces that end at or before ``sample``; returns the infos of the
        chunks none of whose pieces is left. A piece across ``sample`` stays whole (a job just
        after the cut may read its samples before it), and so does its coverage."""
        n = 0
        while n < len(self._chunks) and self._chunks[n][0] + self._chunks[n][1].shape[0] <= sample:
            n += 1
        if n == 0:
            return []
        dropped, self._chunks = self._chunks[:n], self._chunks[n:]
        self._spills = [p for p in self._spills if p[0] + p[1].shape[0] > sample]
        self.coverage.remove_before(self._chunks[0][0] if self._chunks else sample)
        return [info for _, _, info in dropped if self._last_piece_gone(info)]

    def _last_piece_gone(self, info: object) -> bool:
        left = self._pieces_left[id(info)] - 1
        if left > 0:
            self._pieces_left[id(info)] = left
            return False
        del self._pieces_left[id(info)]
        return True

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
