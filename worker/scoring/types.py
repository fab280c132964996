"""Typed inputs and outputs of the scoring core (the seed's ScoreBlock/ScoreWindow as plain Python).

Everything here is plain data: no torch, no I/O. Time is on the session timeline: frames by
``frame_index`` at ``fps``, audio by sample index at ``sample_rate``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np


class Direction(str, enum.Enum):
    IN_SYNC = "IN_SYNC"
    AUDIO_LEADS = "AUDIO_LEADS"  # offset_ms < 0: the sound comes before the mouth
    AUDIO_LAGS = "AUDIO_LAGS"  # offset_ms > 0: the sound comes after the mouth
    UNKNOWN = "UNKNOWN"


class Label(str, enum.Enum):
    OK = "OK"
    SILENCE = "SILENCE"
    OCCLUDED = "OCCLUDED"
    NO_FACE = "NO_FACE"
    LOW_QUALITY = "LOW_QUALITY"


class Kind(str, enum.Enum):
    BLOCK = "BLOCK"
    WINDOW = "WINDOW"


class ScoringInputError(ValueError):
    """Input that cannot be scored (empty, wrong dtype, NaN, mismatched lengths)."""


class ScoringCancelled(Exception):
    """Scoring stopped because its caller no longer wants the answer (gone, past its deadline)."""


@dataclass(frozen=True)
class AudioSpan:
    """Mono audio on the session timeline.

    samples: float32 in [-1, 1], shape (n_samples,). ``start_sample`` is the session sample index
    of ``samples[0]`` at ``sample_rate``. ``present``: see below.
    """

    samples: np.ndarray
    sample_rate: int
    start_sample: int = 0
    # optional (n_samples,) bool: False where nothing arrived (zero-filled by the join); such
    # audio is lost input, not silence
    present: np.ndarray | None = None

    @property
    def end_sample(self) -> int:
        return self.start_sample + int(self.samples.shape[0])

    def start_ms(self) -> float:
        return 1000.0 * self.start_sample / self.sample_rate


@dataclass(frozen=True)
class FrameSpan:
    """Consecutive mouth-ROI frames on the session timeline.

    frames: uint8, (T, H, W) GRAY8 or (T, H, W, 3) RGB24, any H and W. ``frame_start`` is the
    session frame index of ``frames[0]``.
    present: optional (T,) bool; False marks a frame whose ROI was missing (it is not scored).
    landmarks: optional (T, L, 2) float, normalised x, y of mouth landmarks (the heuristic's input).
    occluded: optional (T,) bool from face-track.
    """

    frames: np.ndarray
    fps: float
    frame_start: int = 0
    present: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    occluded: np.ndarray | None = None
    face_present: np.ndarray | None = None

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def frame_end(self) -> int:
        return self.frame_start + self.n_frames


@dataclass(frozen=True)
class ScoreRequest:
    """One job: frames plus audio that covers them and the offset-search margin.

    ``context``: optional frames right before the job (ending at its first frame), for the
    scorer's causal video context. A stream that scored them already has them; one that did not
    (a worker that took the session over, a lone request) reads them from here, so the job's
    verdict does not depend on which worker scored it."""

    kind: Kind
    frames: FrameSpan
    audio: AudioSpan
    session_id: str = ""
    context: FrameSpan | None = None


@dataclass(frozen=True)
class LipSyncScore:
    """Result of scoring one block or window.

    offset_ms > 0: audio lags (is late); < 0: audio leads. score in [0, 1] (None for silence or no
    data); margin = best minus best similarity outside the winner's neighbourhood; confidence in
    [0, 1].
    """

    kind: Kind
    frame_start: int
    frame_end: int
    start_ms: int
    end_ms: int
    score: float | None
    offset_ms: float | None
    margin: float | None
    confidence: float
    direction: Direction
    label: Label
    scorer: str
    occluded: bool = False
    # similarity per searched offset (for diagnostics and clip aggregation); offsets in ms.
    curve_offsets_ms: tuple[float, ...] = field(default=(), repr=False)
    curve: tuple[float, ...] = field(default=(), repr=False)
    voiced_fraction: float = 1.0
    # the peak height the score was mapped from (the smoothed curve's, see offsets.smooth_curve):
    # what a calibration must be fitted on; not published
    similarity: float | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {
            "kind": self.kind.value,
            "frame_start": self.frame_start,
            "frame_end": self.frame_end,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "score": self.score,
            "offset_ms": self.offset_ms,
            "margin": self.margin,
            "confidence": self.confidence,
            "direction": self.direction.value,
            "label": self.label.value,
            "occluded": self.occluded,
            "scorer": self.scorer,
        }
