"""Turning a clip into the input records face-track and the audio path would publish.

Used by ``run-demo``, ``loadtest`` and the integration tests. ``session_records`` is pure: it
lists a session's RoiRef and AudioChunk records in media-time order (the order a live session
produces them), with end-of-session markers on both topics. ``expected_jobs`` says which BLOCK
and WINDOW signals the worker must emit for such a session.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from worker.scoring.types import Kind
from worker.windowing.timeline import JobGrid

AUDIO, ROI = "audio", "roi"


@dataclass(frozen=True)
class TimedRecord:
    """One record to send: at ``due_ms`` (media time of the data's end: when a live source could
    send it), to the ``stream`` topic (AUDIO or ROI)."""

    due_ms: float
    stream: str
    record: dict


def to_gray(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) RGB24 or (T, H, W) GRAY8 uint8 -> (T, H, W) GRAY8."""
    if frames.ndim == 3:
        return frames
    f = frames.astype(np.float32)
    return np.clip(0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2] + 0.5, 0, 255).astype(np.uint8)


def session_records(session_id: str, frames: np.ndarray, audio: np.ndarray, fps: float,
                    sample_rate: int = 16_000, chunk_ms: int = 40, gray: bool = True,
                    end_markers: bool = True) -> list[TimedRecord]:
    """All records of one session in media-time order.

    frames: uint8 (T, H, W) or (T, H, W, 3), sent inline (GRAY8 when ``gray``, else RGB24).
    audio: float32 mono in [-1, 1] at ``sample_rate``, sent as PCM_S16LE chunks of ``chunk_ms``.
    A frame is due at its end (index + 1) / fps; a chunk at its last sample.
    """
    if gray:
        frames = to_gray(frames)
    fmt = "GRAY8" if frames.ndim == 3 else "RGB24"
    out: list[TimedRecord] = []
    for i, px in enumerate(frames):
        out.append(TimedRecord(1000.0 * (i + 1) / fps, ROI, {
            "session_id": session_id, "frame_index": i, "pts_ms": round(1000.0 * i / fps), "fps": float(fps),
            "roi": {"width": int(px.shape[1]), "height": int(px.shape[0]), "format": fmt,
                    "data": np.ascontiguousarray(px).tobytes()},
            "mouth_landmarks": None, "occluded": False, "face_confidence": 1.0,
            "end_of_session": False, "produced_at_ms": None,
        }))
    pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
    step = max(1, sample_rate * chunk_ms // 1000)
    for seq, start in enumerate(range(0, pcm.shape[0], step)):
        piece = pcm[start:start + step]
        out.append(TimedRecord(1000.0 * (start + piece.shape[0]) / sample_rate, AUDIO, {
            "session_id": session_id, "seq": seq, "start_sample": start, "sample_rate": sample_rate,
            "channels": 1, "encoding": "PCM_S16LE", "data": piece.tobytes(), "end_of_session": False,
            "produced_at_ms": None,
        }))
    if end_markers:
        end_ms = max(1000.0 * frames.shape[0] / fps, 1000.0 * pcm.shape[0] / sample_rate)
        n_chunks = math.ceil(pcm.shape[0] / step)
        out.append(TimedRecord(end_ms, ROI, {
            "session_id": session_id, "frame_index": int(frames.shape[0]), "pts_ms": round(end_ms),
            "fps": float(fps), "roi": None, "mouth_landmarks": None, "occluded": False,
            "face_confidence": None, "end_of_session": True, "produced_at_ms": None}))
        out.append(TimedRecord(end_ms, AUDIO, {
            "session_id": session_id, "seq": n_chunks, "start_sample": int(pcm.shape[0]),
            "sample_rate": sample_rate, "channels": 1, "encoding": "PCM_S16LE", "data": b"",
            "end_of_session": True, "produced_at_ms": None}))
    out.sort(key=lambda r: (r.due_ms, r.stream != ROI))
    return out


def expected_jobs(n_frames: int, fps: float, block_frames: int, window_ms: int,
                  window_hop_ms: int) -> list[tuple[Kind, int, int]]:
    """(kind, frame_start, frame_end) of every signal a complete session of n_frames must get."""
    grid = JobGrid.for_fps(block_frames, window_ms, window_hop_ms, fps)
    out = []
    for kind in (Kind.BLOCK, Kind.WINDOW):
        start = 0
        while start + grid.length(kind) <= n_frames:
            out.append((kind, start, start + grid.length(kind)))
            start += grid.step(kind)
    return out


def merge_sessions(sessions: list[list[TimedRecord]], start_offsets_ms: list[float] | None = None
                   ) -> Iterator[tuple[float, int, TimedRecord]]:
    """Interleave several sessions' records by due time: (due_ms, session index, record)."""
    offsets = start_offsets_ms or [0.0] * len(sessions)
    merged = [(rec.due_ms + offsets[i], i, rec) for i, recs in enumerate(sessions) for rec in recs]
    merged.sort(key=lambda x: (x[0], x[1]))
    yield from merged
