"""Plain data flowing into and out of the windowing: decoded events in, scoring jobs out.

Time: ``*_ms`` on the session timeline unless named ``*_wall_ms`` (Unix ms, processing time).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from worker.scoring.types import Kind, ScoreRequest

# bytes per sample of an AudioChunk's encodings (schemas/AudioChunk.avsc), per channel
BYTES_PER_SAMPLE = {"PCM_S16LE": 2, "F32LE": 4}


@dataclass(frozen=True, order=True)
class Source:
    """Where an input event came from, for offset commits and dead letters."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Arrival:
    """When an event reached the worker and when its producer sent it (both Unix ms)."""

    received_wall_ms: int
    produced_wall_ms: int | None = None


@dataclass(frozen=True)
class FrameEvent:
    """One video frame of a session.

    pixels: uint8 (H, W) GRAY8 or (H, W, 3) RGB24, or None when the ROI is missing: either
    ``face_present`` is False (face-track found no face) or the reference could not be resolved
    (``ref_error`` says why). landmarks: (L, 2) normalised x, y, or None.
    """

    session_id: str
    frame_index: int
    fps: float
    pixels: np.ndarray | None
    source: Source
    arrival: Arrival
    face_present: bool = True
    occluded: bool = False
    landmarks: np.ndarray | None = None
    ref_error: str | None = None


@dataclass(frozen=True)
class AudioEvent:
    """A chunk of mono audio: samples float32 in [-1, 1], shape (n,), starting at ``start_sample``.

    ``spill``: (start sample, samples) pieces the chunk adds to the samples just outside it, where
    it was resampled from another rate (windowing.resample: its neighbours' own samples plus
    these are the stream resampled whole)."""

    session_id: str
    start_sample: int
    sample_rate: int
    samples: np.ndarray
    source: Source
    arrival: Arrival
    spill: tuple[tuple[int, np.ndarray], ...] = ()


class Stream(str, enum.Enum):
    VIDEO = "video"
    AUDIO = "audio"


@dataclass(frozen=True)
class EndEvent:
    """An end-of-session marker on one stream: nothing more of that stream follows."""

    session_id: str
    stream: Stream
    source: Source
    arrival: Arrival


class DueReason(str, enum.Enum):
    COMPLETE = "complete"  # every frame and the needed audio arrived
    LATENESS = "lateness"  # event time passed the job's end + allowed lateness
    ENDED = "ended"  # the session ended (marker, idle timeout, eviction)


@dataclass(frozen=True)
class Job:
    """One BLOCK or WINDOW to score, with what it was built from.

    ``frames_missing``: frames of [frame_start, frame_end) that never arrived or whose reference
    failed (present=False). ``audio_missing_ms``: needed audio (from the session start on) that
    never arrived, zero-filled. ``newest_*_wall_ms``: the newest input event it depends on.
    ``keep_from_frame``: no later job of the session starts before this frame (scorer caches may
    forget earlier frames).
    """

    session_id: str
    kind: Kind
    frame_start: int
    frame_end: int
    start_ms: int
    end_ms: int
    request: ScoreRequest
    frames_missing: int
    audio_missing_ms: int
    reason: DueReason
    newest_received_wall_ms: int
    newest_produced_wall_ms: int | None
    keep_from_frame: int
    partition: int = -1
    sources: tuple[Source, ...] = field(default=(), repr=False)

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.session_id, self.kind.value, self.frame_start)
