"""The classical lip-sync baseline (FIELD-NOTES): an independent estimate of a clip's own offset.

Mouth openness from FaceMesh lip landmarks (inner-lip gap 13-14 over mouth width 61-291), audio
log energy plus 4 mel-band log energies per video frame (40 ms windows), a ridge regression from
the audio of frames t-3..t+3 to the openness at t fitted on other speakers' clips, and the lag
(+/-10 frames) at which the predicted openness correlates best with the observed one.

Why it is here: it shares nothing with the model (no pixels, no training data but the clips it is
fitted on), so where it and the model both put a clip's own audio two or more frames off, the
clip itself is probably off (FIELD-NOTES: "consistent non-zero estimates from independent
methods are a hint"), and judging the model against 0 ms there measures the clip, not the model.

Pure numpy and torch on arrays; positive lag = the audio lags the mouth (the scorer's convention).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from worker.tracking.geometry import SHAPE_INNER_GAP, mouth_shape

SAMPLE_RATE = 16000
CONTEXT_FRAMES = 3  # audio frames t-3..t+3 predict the openness at t
MAX_LAG_FRAMES = 10
RIDGE_ALPHA = 10.0
EDGE_FRAMES = 12  # frames at each end left out of the correlation (lagged features wrap there)


@dataclass(frozen=True)
class LagEstimate:
    lag_frames: int  # best lag; > 0: the audio lags the mouth
    correlation: float  # Pearson r of predicted vs observed openness at that lag
    n_frames: int


def mouth_openness(landmarks_image: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """(T, 40, 2) lip landmarks normalised to the image (x / W, y / H) and (H, W) -> (T,) openness,
    standardised over the clip (inner-lip gap over mouth width: scale-free)."""
    h, w = frame_size
    pts = np.asarray(landmarks_image, dtype=np.float64) * np.array([w, h], dtype=np.float64)
    o = mouth_shape(pts, np.float64)[:, SHAPE_INNER_GAP]
    return (o - o.mean()) / (o.std() + 1e-6)


_MEL = None


def audio_frame_features(audio: np.ndarray, fps: float, n_frames: int) -> np.ndarray:
    """16 kHz mono audio (sample 0 = frame 0) -> (n_frames, 5): log energy and 4 mel-band log
    energies in a 40 ms window centred on each frame, each standardised over the clip."""
    global _MEL
    if _MEL is None:
        import torchaudio

        _MEL = torchaudio.transforms.MelSpectrogram(SAMPLE_RATE, n_fft=640, win_length=640, hop_length=160,
                                                    n_mels=4, f_min=80.0, f_max=7000.0)
    x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    bands = torch.log(_MEL(x) + 1e-6).numpy()  # (4, M) at 100 Hz, column m centred on sample 160 m
    idx = np.clip(np.round(np.arange(n_frames) / fps * 100.0).astype(int), 0, bands.shape[1] - 1)
    # log energy of the same 40 ms windows (640 samples centred on each frame's time)
    centre = np.round(np.arange(n_frames) / fps * SAMPLE_RATE).astype(int)
    win = np.clip(centre[:, None] + np.arange(-320, 320)[None], 0, max(len(audio) - 1, 0))
    a = np.asarray(audio, dtype=np.float64)
    energy = np.log((a[win] ** 2).mean(1) + 1e-8) if len(a) else np.zeros(n_frames)
    f = np.concatenate([energy[:, None], bands[:, idx].T], axis=1)
    return (f - f.mean(0)) / (f.std(0) + 1e-6)


def lagged(features: np.ndarray, lag_frames: int) -> np.ndarray:
    """(T, F) -> (T, F * (2 C + 1)): the features of frames t + lag + c for c in -C..C (clamped)."""
    t = features.shape[0]
    cols = [features[np.clip(np.arange(t) + lag_frames + c, 0, t - 1)]
            for c in range(-CONTEXT_FRAMES, CONTEXT_FRAMES + 1)]
    return np.concatenate(cols, axis=1)


def fit_ridge(pairs: list[tuple[np.ndarray, np.ndarray]], alpha: float = RIDGE_ALPHA) -> np.ndarray:
    """(openness (T,), audio features (T, F)) of in-sync clips -> ridge weights (F * (2 C + 1),)."""
    if not pairs:
        raise ValueError("the classical baseline needs at least one clip to fit on")
    x = np.concatenate([lagged(f, 0) for _, f in pairs])
    y = np.concatenate([o for o, _ in pairs])
    return np.linalg.solve(x.T @ x + alpha * np.eye(x.shape[1]), x.T @ y)


def best_lag(openness: np.ndarray, features: np.ndarray, weights: np.ndarray,
             max_lag_frames: int = MAX_LAG_FRAMES) -> LagEstimate | None:
    """The lag whose audio best predicts the mouth; None for clips too short to judge."""
    t = openness.shape[0]
    core = slice(EDGE_FRAMES, t - EDGE_FRAMES)
    if t - 2 * EDGE_FRAMES < 10:
        return None
    best = None
    for lag in range(-max_lag_frames, max_lag_frames + 1):
        pred = lagged(features, lag) @ weights
        p, o = pred[core], openness[core]
        if p.std() < 1e-9 or o.std() < 1e-9:
            continue
        r = float(np.corrcoef(p, o)[0, 1])
        if best is None or r > best.correlation:
            best = LagEstimate(lag, r, t)
    return best


def own_offsets(clips: dict[str, tuple[np.ndarray, np.ndarray]], groups: dict[str, str]) -> dict[str, LagEstimate | None]:
    """Leave-one-speaker-out: each clip's lag from a ridge fitted on the clips of every other
    speaker group. ``clips``: name -> (openness, audio features); ``groups``: name -> speaker."""
    out: dict[str, LagEstimate | None] = {}
    for name, (o, f) in clips.items():
        others = [v for n, v in clips.items() if groups.get(n, n) != groups.get(name, name)]
        out[name] = best_lag(o, f, fit_ridge(others)) if others else None
    return out
