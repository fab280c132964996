"""Fallback scorer when no model can be used: mouth openness against the audio energy envelope.

Openness per frame comes from lip landmarks when the frames carry them (vertical over horizontal
extent of the mouth points), else from the pixels (share of dark pixels in the mouth's centre: an
open mouth shows its dark interior). Normalised cross-correlation with the log-energy envelope over
the same offsets as the model. Confidence is capped at 0.3: this is "better than nothing".
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from model_store.features import frame_rms, frames_to_gray
from worker.scoring.offsets import OffsetGrid, own_time_pairs, pick_peak
from worker.scoring.postprocess import ScorerConfig, build_result, null_result, silence_verdict
from worker.scoring.rate import at_model_rate, on_request_frames
from worker.scoring.types import LipSyncScore, ScoreRequest
from worker.scoring.validate import validate_request

HEURISTIC_VERSION = "1.0"
CONFIDENCE_CAP = 0.3
log = logging.getLogger(__name__)


def openness_from_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """(T, L, 2) normalised mouth points -> (T,) height / width of the mouth."""
    lm = np.asarray(landmarks, dtype=np.float64)
    width = lm[..., 0].max(axis=1) - lm[..., 0].min(axis=1)
    height = lm[..., 1].max(axis=1) - lm[..., 1].min(axis=1)
    return height / np.maximum(width, 1e-6)


def openness_from_pixels(frames: np.ndarray) -> np.ndarray:
    """(T, H, W[, 3]) uint8 mouth ROIs -> (T,) share of dark pixels in the central region."""
    gray = torch.from_numpy(frames_to_gray(frames)).unsqueeze(1)
    gray = F.interpolate(gray, size=(48, 48), mode="area")[:, 0]
    centre = gray[:, 12:36, 12:36]
    mean = gray.mean(dim=(1, 2), keepdim=True)
    std = gray.std(dim=(1, 2), keepdim=True)
    dark = (centre < mean - 0.8 * std).float().mean(dim=(1, 2))
    return dark.numpy().astype(np.float64)


def _znorm(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    v = x[mask]
    if v.size < 2:
        return np.zeros_like(x)
    return (x - v.mean()) / (v.std() + 1e-9)


class HeuristicScorer:
    """Implements the Scorer protocol without a model. ``reason`` says why it is in use."""

    def __init__(self, config: ScorerConfig | None = None, reason: str = "", sample_rate: int = 16000) -> None:
        self.config = config or ScorerConfig()
        self.reason = reason
        self.sample_rate = sample_rate
        if reason:
            log.error("LIP-SYNC MODEL UNAVAILABLE, using heuristic@%s (confidence capped at %.1f): %s",
                      HEURISTIC_VERSION, CONFIDENCE_CAP, reason)

    @property
    def name(self) -> str:
        return f"heuristic@{HEURISTIC_VERSION}"

    @property
    def search_margin_ms(self) -> float:
        return max(abs(self.config.min_offset_ms), abs(self.config.max_offset_ms)) + 40.0

    def new_stream(self) -> _NoCache:
        return _NoCache()

    def score(self, request: ScoreRequest, stream: object | None = None) -> LipSyncScore:
        validate_request(request, self.sample_rate)
        # on the models' frame grid too (rate.py), so a clip's windows read alike whichever scores them
        return on_request_frames(self._score(at_model_rate(request)), request)

    def _score(self, request: ScoreRequest) -> LipSyncScore:
        cfg = self.config
        verdict = silence_verdict(request, cfg)
        if verdict is not None:
            return null_result(request, self.name, verdict, cfg)
        fs, au = request.frames, request.audio
        grid = OffsetGrid.from_ms(cfg.min_offset_ms, cfg.max_offset_ms, fs.fps, cfg.step_frames)
        if fs.landmarks is not None:
            openness = openness_from_landmarks(fs.landmarks)
        else:
            openness = openness_from_pixels(fs.frames)
        frame_ok = np.ones(fs.n_frames, dtype=bool)
        for m in (fs.present, fs.face_present):
            if m is not None:
                frame_ok &= np.asarray(m, dtype=bool)
        first = fs.frame_start - grid.pad_before
        n_audio = grid.n_audio(fs.n_frames)
        rms = frame_rms(au.samples, au.sample_rate, au.start_ms(), first, n_audio, fs.fps)
        audio_ok = np.isfinite(rms)
        env = np.log(np.nan_to_num(rms, nan=0.0) + 1e-4)
        curve = []
        min_pairs = max(3, int(cfg.min_valid_fraction * fs.n_frames))
        own_time_ok = own_time_pairs(frame_ok, audio_ok, grid) >= min_pairs
        for k in grid.offsets.tolist():
            a = env[grid.pad_before + k: grid.pad_before + k + fs.n_frames]
            m = frame_ok & audio_ok[grid.pad_before + k: grid.pad_before + k + fs.n_frames]
            if not own_time_ok or m.sum() < min_pairs:
                curve.append(float("nan"))
                continue
            o, e = _znorm(openness, m), _znorm(a, m)
            curve.append(float((o[m] * e[m]).mean()))
        curve_t = torch.tensor(curve, dtype=torch.float64)
        peak = pick_peak(curve_t, grid, cfg.peak_neighbourhood_frames)
        rms_core = frame_rms(au.samples, au.sample_rate, au.start_ms(), fs.frame_start, fs.n_frames, fs.fps)
        voiced = float((np.nan_to_num(rms_core, nan=0.0) >= cfg.silence_rms).mean())
        score = conf = None
        if peak is not None:
            score = float(np.clip(peak.best, 0.0, 1.0))
            conf = float(np.clip(peak.margin, 0.0, 1.0))
        return build_result(request, self.name, peak, grid, curve_t, score, conf, voiced, cfg,
                            confidence_cap=CONFIDENCE_CAP)

    def score_batch(self, requests: Sequence[ScoreRequest], streams: Sequence[object | None] | None = None
                    ) -> list[LipSyncScore]:
        return [self.score(r) for r in requests]


class _NoCache:
    def forget_before(self, frame_index: int) -> None:
        return None

    def cached_frames(self) -> int:
        return 0
