"""Unit conversions and the job grid on the session timeline.

Blocks start at multiples of ``block_frames``; windows at multiples of ``hop_frames``. The grid is
absolute (frame 0 of the session), so a restarted worker emits the same jobs, and so the same
signal ids, as the one before it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from worker.scoring.types import Kind


def frame_ms(frame_index: int, fps: float) -> float:
    """Start of frame ``frame_index`` on the session timeline, ms."""
    return 1000.0 * frame_index / fps


def sample_ms(sample_index: int, sample_rate: int) -> float:
    return 1000.0 * sample_index / sample_rate


def ms_to_sample_floor(ms: float, sample_rate: int) -> int:
    return math.floor(ms * sample_rate / 1000.0 + 1e-9)


def ms_to_sample_ceil(ms: float, sample_rate: int) -> int:
    return math.ceil(ms * sample_rate / 1000.0 - 1e-9)


@dataclass(frozen=True)
class JobGrid:
    """Job lengths in frames for one frame rate."""

    block_frames: int
    window_frames: int
    hop_frames: int

    @staticmethod
    def for_fps(block_frames: int, window_ms: int, window_hop_ms: int, fps: float) -> JobGrid:
        if not (fps > 0 and math.isfinite(fps)):
            raise ValueError(f"fps must be positive, got {fps}")
        window = max(1, round(window_ms * fps / 1000.0))
        hop = max(1, round(window_hop_ms * fps / 1000.0))
        return JobGrid(block_frames, window, hop)

    def length(self, kind: Kind) -> int:
        return self.block_frames if kind is Kind.BLOCK else self.window_frames

    def step(self, kind: Kind) -> int:
        return self.block_frames if kind is Kind.BLOCK else self.hop_frames

    def first_start_at_or_after(self, kind: Kind, frame_index: int) -> int:
        """The first job start of ``kind`` >= frame_index."""
        step = self.step(kind)
        return -(-frame_index // step) * step

    def first_start_covering_or_after(self, kind: Kind, frame_index: int) -> int:
        """The first job start of ``kind`` whose job contains frame_index or starts after it."""
        step, length = self.step(kind), self.length(kind)
        # smallest k*step with k*step + length > frame_index
        k = max(0, (frame_index - length) // step + 1)
        return k * step


def audio_need_ms(frame_start: int, frame_end: int, fps: float, margin_ms: float) -> tuple[float, float]:
    """Audio a job needs: its frames' time span plus ``margin_ms`` on each side, ms."""
    return frame_ms(frame_start, fps) - margin_ms, frame_ms(frame_end, fps) + margin_ms


def audio_need_samples(frame_start: int, frame_end: int, fps: float, margin_ms: float,
                       sample_rate: int) -> tuple[int, int]:
    """``audio_need_ms`` as sample indices [start, end); the start may be negative (before the
    session began: nothing can arrive there)."""
    lo_ms, hi_ms = audio_need_ms(frame_start, frame_end, fps, margin_ms)
    return ms_to_sample_floor(lo_ms, sample_rate), ms_to_sample_ceil(hi_ms, sample_rate)
