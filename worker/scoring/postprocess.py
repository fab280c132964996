"""Turning a peak into a LipSyncScore: labels, direction, silence and data-quality rules.

Partly silent windows: a window is SILENCE (score null, confidence 0) when fewer than
``min_voiced_fraction`` of its frames have audio above ``silence_rms``; otherwise it is scored over
all its frames, since a closed mouth during a pause is evidence of alignment too, and its
confidence is scaled by the voiced fraction over one half, up to 1 (less speech, less evidence;
a window half voiced or more has speech enough to read its timing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from model_store.features import frame_rms
from worker.scoring.offsets import OffsetGrid, Peak
from worker.scoring.types import Direction, Label, LipSyncScore, ScoreRequest


@dataclass(frozen=True)
class ScorerConfig:
    min_offset_ms: float = -200.0
    max_offset_ms: float = 200.0
    step_frames: int = 1
    silence_rms: float = 0.005  # about -46 dBFS
    min_voiced_fraction: float = 0.2
    min_valid_fraction: float = 0.5  # of a job's frames needed per offset (ROI present, audio there)
    min_face_fraction: float = 0.5
    occluded_fraction_label: float = 0.5
    in_sync_tolerance_frames: float = 1.0
    peak_neighbourhood_frames: int = 2
    min_direction_confidence: float = 0.05
    # below this score the lips most likely do not go with this audio at all (score: P(they
    # belong together)); the best offset of two unrelated signals has no direction to act on
    min_direction_score: float = 0.25
    cache_frames: int = 300  # per-session past kept: 10 s at 30 fps
    max_frames_per_pass: int = 256
    cuda_graphs: bool = True  # only on a CUDA device
    cpu_jit: bool = True  # TorchScript-frozen encoders on the CPU
    # telephone-band jobs go to the bundle's narrowband/ companion, where it has one (routed.py)
    narrowband: bool = True


def _fraction(arr: np.ndarray | None, default: float) -> float:
    if arr is None:
        return default
    a = np.asarray(arr, dtype=bool)
    return float(a.mean()) if a.size else default


def silence_verdict(req: ScoreRequest, cfg: ScorerConfig, rms: np.ndarray | None = None) -> Label | None:
    """SILENCE or NO_FACE when a job carries no usable evidence, else None. ``rms``: the job's
    per-frame audio RMS if the caller has it already."""
    fs = req.frames
    # missing first: a frame whose ROI never arrived or could not be read has no face flag
    # either, and the controller must hear "lost references", not "nobody on screen"
    if _fraction(fs.present, 1.0) < cfg.min_face_fraction:
        return Label.LOW_QUALITY  # most ROIs missing (lost references)
    if _fraction(fs.face_present, 1.0) < cfg.min_face_fraction:
        return Label.NO_FACE
    au = req.audio
    if au.present is not None:
        # so is audio that never arrived (zero-filled): under most of the job's frames it is
        # lost input, not the speaker falling silent. Share of each frame's samples that came:
        # the mean square of the 0/1 mask is its RMS squared
        came = frame_rms(np.asarray(au.present, np.float32), au.sample_rate, au.start_ms(), fs.frame_start,
                         fs.n_frames, fs.fps) ** 2
        if (np.nan_to_num(came, nan=0.0) >= 0.5).mean() < cfg.min_face_fraction:
            return Label.LOW_QUALITY
    if rms is None:
        rms = frame_rms(au.samples, au.sample_rate, au.start_ms(), fs.frame_start, fs.n_frames, fs.fps)
    voiced = np.nan_to_num(rms, nan=0.0) >= cfg.silence_rms
    if voiced.mean() < cfg.min_voiced_fraction:
        return Label.SILENCE
    return None


def _span(req: ScoreRequest) -> tuple[int, int]:
    fs = req.frames
    return round(1000.0 * fs.frame_start / fs.fps), round(1000.0 * fs.frame_end / fs.fps)


def _occluded(req: ScoreRequest, cfg: ScorerConfig) -> bool:
    return _fraction(req.frames.occluded, 0.0) >= cfg.occluded_fraction_label


def null_result(req: ScoreRequest, scorer: str, label: Label, cfg: ScorerConfig) -> LipSyncScore:
    start_ms, end_ms = _span(req)
    return LipSyncScore(
        kind=req.kind, frame_start=req.frames.frame_start, frame_end=req.frames.frame_end,
        start_ms=start_ms, end_ms=end_ms, score=None, offset_ms=None, margin=None, confidence=0.0,
        direction=Direction.UNKNOWN, label=label, scorer=scorer, occluded=_occluded(req, cfg),
        voiced_fraction=0.0 if label == Label.SILENCE else 1.0,
    )


# offset_ms is published rounded to 0.1 ms: at 29.97 fps one frame (33.367 ms) reads 33.4 ms, and
# without this slack a one-frame offset would be called AUDIO_LAGS while the contract says IN_SYNC
ROUNDING_SLACK_MS = 0.05


def direction_for(offset_ms: float, frame_ms: float, confidence: float, cfg: ScorerConfig,
                  score: float | None = None) -> Direction:
    """IN_SYNC within ``in_sync_tolerance_frames`` frames (``offset_ms`` raw or rounded to 0.1 ms),
    else the sign's direction; UNKNOWN below ``min_direction_confidence`` or, when a score is
    given, below ``min_direction_score``."""
    if confidence < cfg.min_direction_confidence:
        return Direction.UNKNOWN
    if score is not None and score < cfg.min_direction_score:
        return Direction.UNKNOWN
    if abs(offset_ms) <= cfg.in_sync_tolerance_frames * frame_ms + ROUNDING_SLACK_MS:
        return Direction.IN_SYNC
    return Direction.AUDIO_LAGS if offset_ms > 0 else Direction.AUDIO_LEADS


def build_result(req: ScoreRequest, scorer: str, peak: Peak | None, grid: OffsetGrid,
                 curve: torch.Tensor, score: float | None, confidence: float | None,
                 voiced_fraction: float, cfg: ScorerConfig, confidence_cap: float = 1.0) -> LipSyncScore:
    if peak is None or score is None or confidence is None:
        return null_result(req, scorer, Label.LOW_QUALITY, cfg)
    frame_ms = 1000.0 / req.frames.fps
    occluded = _occluded(req, cfg)
    # less speech or more occlusion: less evidence
    occ_frac = _fraction(req.frames.occluded, 0.0)
    conf = confidence * min(1.0, voiced_fraction / 0.5) * (1.0 - 0.5 * occ_frac)
    conf = float(min(max(conf, 0.0), confidence_cap))
    offset_ms = round(peak.offset_frames * frame_ms, 1)
    start_ms, end_ms = _span(req)
    offsets_ms = tuple(round(k * frame_ms, 1) for k in grid.offsets.tolist())
    return LipSyncScore(
        kind=req.kind, frame_start=req.frames.frame_start, frame_end=req.frames.frame_end,
        start_ms=start_ms, end_ms=end_ms, score=float(score), offset_ms=offset_ms,
        margin=float(peak.margin), confidence=conf,
        direction=direction_for(offset_ms, frame_ms, conf, cfg, float(score)),
        label=Label.OCCLUDED if occluded else Label.OK, scorer=scorer, occluded=occluded,
        curve_offsets_ms=offsets_ms,
        curve=tuple(float(x) if math.isfinite(float(x)) else float("nan") for x in curve.tolist()),
        voiced_fraction=voiced_fraction, similarity=float(peak.best),
    )
