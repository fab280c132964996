"""Input checks: bad input gets a clear ScoringInputError, never a silent wrong answer."""

from __future__ import annotations

import numpy as np

from worker.scoring.types import ScoreRequest, ScoringInputError

# The smallest ROI side the scorer reads. The ROI resolver (worker/refs/pixels.py) refuses smaller
# frames where they are read: a job's frames are brought to its first frame's size, so one tiny
# frame let through made its whole BLOCK and WINDOW unscorable.
MIN_ROI_SIDE_PX = 8


def validate_request(req: ScoreRequest, sample_rate: int) -> None:
    fs, au = req.frames, req.audio
    f = fs.frames
    if not isinstance(f, np.ndarray):
        raise ScoringInputError(f"frames must be a numpy array, got {type(f).__name__}")
    if f.dtype != np.uint8:
        raise ScoringInputError(f"frames must be uint8 GRAY8/RGB24, got dtype {f.dtype}")
    if not (f.ndim == 3 or (f.ndim == 4 and f.shape[-1] == 3)):
        raise ScoringInputError(f"frames must be (T,H,W) or (T,H,W,3), got shape {f.shape}")
    if f.shape[0] == 0:
        raise ScoringInputError("no frames to score")
    if f.shape[1] < MIN_ROI_SIDE_PX or f.shape[2] < MIN_ROI_SIDE_PX:
        raise ScoringInputError(f"ROI of {f.shape[1]}x{f.shape[2]} is too small "
                                f"(min {MIN_ROI_SIDE_PX}x{MIN_ROI_SIDE_PX})")
    if not (np.isfinite(fs.fps) and 1.0 <= fs.fps <= 240.0):
        raise ScoringInputError(f"fps must be in [1, 240], got {fs.fps}")
    for name in ("present", "occluded", "face_present"):
        arr = getattr(fs, name)
        if arr is not None and np.asarray(arr).shape != (f.shape[0],):
            raise ScoringInputError(f"{name} must have shape ({f.shape[0]},), got {np.asarray(arr).shape}")
    if fs.landmarks is not None:
        lm = np.asarray(fs.landmarks)
        if lm.ndim != 3 or lm.shape[0] != f.shape[0] or lm.shape[2] != 2:
            raise ScoringInputError(f"landmarks must be (T, L, 2) with T={f.shape[0]}, got {lm.shape}")
    s = au.samples
    if not isinstance(s, np.ndarray):
        raise ScoringInputError(f"audio samples must be a numpy array, got {type(s).__name__}")
    if s.ndim != 1:
        raise ScoringInputError(f"audio must be mono (n_samples,), got shape {s.shape}")
    if s.dtype not in (np.float32, np.float64):
        raise ScoringInputError(f"audio must be float32/float64 in [-1, 1], got dtype {s.dtype}")
    if s.shape[0] == 0:
        raise ScoringInputError("empty audio")
    if not np.isfinite(s).all():
        raise ScoringInputError("audio contains NaN or infinite samples")
    ctx = req.context
    if ctx is not None and (ctx.frame_end != fs.frame_start or abs(ctx.fps - fs.fps) > 1e-6
                            or not isinstance(ctx.frames, np.ndarray) or ctx.frames.dtype != np.uint8
                            or ctx.frames.ndim not in (3, 4)
                            or min(np.shape(ctx.frames)[1:3], default=0) < MIN_ROI_SIDE_PX):
        raise ScoringInputError(f"context frames must be uint8 ROIs of at least {MIN_ROI_SIDE_PX}x{MIN_ROI_SIDE_PX} "
                                "that end where the job starts, at its fps")
    if au.present is not None and np.shape(au.present) != s.shape:
        raise ScoringInputError(f"audio present must have shape {s.shape}, got {np.shape(au.present)}")
    if au.sample_rate != sample_rate:
        raise ScoringInputError(f"audio must be {sample_rate} Hz, got {au.sample_rate}")
    # the audio must at least overlap the frames' time span
    f0_ms = 1000.0 * fs.frame_start / fs.fps
    f1_ms = 1000.0 * fs.frame_end / fs.fps
    a0_ms = au.start_ms()
    a1_ms = 1000.0 * au.end_sample / au.sample_rate
    if a1_ms <= f0_ms or a0_ms >= f1_ms:
        raise ScoringInputError(
            f"audio [{a0_ms:.0f}, {a1_ms:.0f}) ms does not overlap frames [{f0_ms:.0f}, {f1_ms:.0f}) ms"
        )
