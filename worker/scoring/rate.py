"""Jobs faster than the networks' frame rate are scored on every k-th frame. Pure numpy.

The networks learned lips at 25-30 fps: their video context (7 frames) and the audio each frame
embedding is matched with span 230-280 ms there. Fed 50 or 60 fps frames, the same context covers
half the time, and an audit read a clip's offset 20-43 ms later at 50/60 fps than at 25 (brought
to 25 fps with ``--fps 25``, the same file read as the original). So a job above the trained rates is scored on every k-th frame
(k = round(fps / MODEL_FPS): 50 and 60 fps -> 2, 120 -> 4), offsets on that rate's grid, and the
result is put back on the job's own frames. Frames are taken per group of k session frames
starting at a multiple of k, so that every job of a session reads the same frames and a stream's
feature cache (keyed by the group's first session index) stays valid across jobs.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from worker.scoring.types import FrameSpan, LipSyncScore, ScoreRequest

MODEL_FPS = 30.0  # the highest rate the networks were trained on (25, 29.97, 30)


def decimation(fps: float) -> int:
    """Every how many frames one is scored: 1 below 45 fps, then the k that brings the rate
    nearest 30 (45, 50, 59.94, 60 -> 2; 100, 120 -> 4)."""
    return max(1, int(fps / MODEL_FPS + 0.5))


def read_frame_ms(fps: float) -> float:
    """How long one frame lasts as the networks read a stream at ``fps`` (every k-th frame above
    45 fps): the step of its offsets."""
    return 1000.0 * decimation(fps) / fps


def margin_stretch(fps: float) -> float:
    """How much further than at 25 fps the scorer's search margin reaches at ``fps`` (given in
    40 ms frames: 1 at 25 fps and up, 2 at 12.5 fps; 45 fps is read at 22.5)."""
    return max(1.0, read_frame_ms(fps) / 40.0)


def at_model_rate(req: ScoreRequest) -> ScoreRequest:
    """``req`` (its frames and its context) at the networks' rate (``frames_at_model_rate``)."""
    frames = frames_at_model_rate(req.frames)
    if frames is None or frames is req.frames:
        return req
    context = None if req.context is None else frames_at_model_rate(req.context)
    return dataclasses.replace(req, frames=frames, context=context)


def frames_at_model_rate(fs: FrameSpan) -> FrameSpan | None:
    """``fs`` at fps / k (k = decimation(fps)): one frame per group of k session frames (the
    group of session frames k*g .. k*g + k - 1 stands at k*g), the first of the group that came
    (``present``), so that a feed delivering only every other frame is still read (an audit: the
    even frames lost, the odd ones unused, the job LOW_QUALITY). ``fs`` itself when k is 1,
    None when it holds no group's start."""
    k = decimation(fs.fps)
    first = -fs.frame_start % k  # the span's first frame whose session index is a multiple of k
    if k == 1:
        return fs
    if first >= fs.n_frames:
        return None
    starts = np.arange(first, fs.n_frames, k)
    pick = starts.copy()
    if fs.present is not None:
        came = np.asarray(fs.present, bool)
        for i, p in enumerate(starts):
            group = np.flatnonzero(came[p: min(p + k, fs.n_frames)])
            if group.size:
                pick[i] = p + group[0]

    def keep(a):
        return None if a is None else np.asarray(a)[pick]

    return FrameSpan(fs.frames[pick], fs.fps / k, (fs.frame_start + first) // k, present=keep(fs.present),
                     landmarks=keep(fs.landmarks), occluded=keep(fs.occluded), face_present=keep(fs.face_present))


def on_request_frames(result: LipSyncScore, req: ScoreRequest) -> LipSyncScore:
    """A result scored at_model_rate(req) with the job's own frame span back. Offsets and the
    curve stay in ms on the rate it was read at (one frame there is the offset's resolution)."""
    fs = req.frames
    if result.frame_start == fs.frame_start and result.frame_end == fs.frame_end:
        return result
    return dataclasses.replace(result, frame_start=fs.frame_start, frame_end=fs.frame_end,
                               start_ms=round(1000.0 * fs.frame_start / fs.fps),
                               end_ms=round(1000.0 * fs.frame_end / fs.fps))
