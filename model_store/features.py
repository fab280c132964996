"""Feature extraction as a bundle's input spec states it: audio -> log-mel on the frame grid,
mouth-ROI frames -> normalised grayscale tensors.

Pure tensor functions (no I/O). Shapes are given as (..., time).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio

from model_store.bundle import AudioSpec, VideoSpec


@lru_cache(maxsize=8)
def _mel_transform(spec: AudioSpec) -> torchaudio.transforms.MelSpectrogram:
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=spec.sample_rate,
        n_fft=spec.n_fft,
        win_length=spec.win_length,
        hop_length=spec.hop_length,
        f_min=spec.f_min,
        f_max=spec.f_max,
        n_mels=spec.n_mels,
        power=2.0,
        center=True,
        pad_mode="constant",
    )


def log_mel(samples: torch.Tensor, spec: AudioSpec) -> torch.Tensor:
    """(..., n_samples) float audio at spec.sample_rate -> (..., n_mels, n_mel_frames) log-mel.

    Mel frame m is centred on sample m * hop_length (torchaudio's center=True).
    """
    mel = _mel_transform(spec)(samples)
    return torch.log(mel + spec.log_floor)


def grid_times_ms(first_grid: int, n_grid: int, fps: float, steps_per_frame: int) -> torch.Tensor:
    """Times (ms) of the encoder's input steps for frame-grid positions [first_grid, first_grid+n_grid).

    Step s of grid position g sits at (g + s / steps_per_frame) / fps seconds.
    """
    steps = torch.arange(n_grid * steps_per_frame, dtype=torch.float64)
    return (first_grid + steps / steps_per_frame) * (1000.0 / fps)


def sample_mel_on_grid(
    mel: torch.Tensor, mel_start_ms: float, times_ms: torch.Tensor, hop_ms: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Linearly interpolate a (n_mels, M) log-mel at the given times.

    Returns (n_mels, len(times)) features and a bool validity mask (time inside the mel's span).
    """
    pos = (times_ms - mel_start_ms) / hop_ms
    n = mel.shape[-1]
    valid = (pos >= 0) & (pos <= n - 1)
    pos = pos.clamp(0, max(n - 1, 0))
    i0 = pos.floor().long().clamp(max=max(n - 2, 0))
    w = (pos - i0).to(mel.dtype).clamp(0, 1)
    i1 = (i0 + 1).clamp(max=n - 1)
    out = mel[..., i0] * (1 - w) + mel[..., i1] * w
    return out, valid


def normalize_mel(feat: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Span CMVN: remove each band's mean over the valid steps, divide by one scalar std.

    A scalar (not per-band) std keeps relative band energies, which carry the phonetic content.
    Invalid steps (outside the audio) are set to the span's floor so they look like silence.
    """
    if valid.any():
        v = feat[..., valid]
        mean = v.mean(dim=-1, keepdim=True)
        std = v.std().clamp_min(1e-3) if v.numel() > 1 else torch.tensor(1.0)
        out = (feat - mean) / std
        floor = out[..., valid].min()
        out = torch.where(valid, out, floor)
    else:
        out = torch.zeros_like(feat)
    return out


def audio_grid_features(
    samples: np.ndarray,
    sample_rate: int,
    audio_start_ms: float,
    first_grid: int,
    n_grid: int,
    fps: float,
    spec: AudioSpec,
    present: np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Audio samples -> encoder input for frame-grid positions [first_grid, first_grid + n_grid).

    ``first_grid`` is a session frame index (may be negative); ``audio_start_ms`` is the session
    time of samples[0]. ``present``: optional (n_samples,) bool, False where nothing arrived (the
    worker's join fills lost audio with zeros). Returns (n_mels, n_grid * steps_per_frame)
    features and a (n_grid,) bool mask of grid positions whose audio was really there (not
    padding, not fill): fill is treated as padding is, left out of the normalisation's statistics
    and of the pairs, instead of being heard as silence that the lips do not match.
    """
    if sample_rate != spec.sample_rate:
        raise ValueError(f"audio must be {spec.sample_rate} Hz (got {sample_rate}); resample first")
    wav = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    mel = log_mel(wav, spec)
    hop_ms = 1000.0 * spec.hop_length / spec.sample_rate
    times = grid_times_ms(first_grid, n_grid, fps, spec.steps_per_frame)
    feat, valid_steps = sample_mel_on_grid(mel, audio_start_ms, times, hop_ms)
    if present is not None and not np.all(present):
        came = _whole_mel_frames(np.asarray(present, dtype=bool), mel.shape[-1], spec)
        # a step between two mel frames is real only if both are (the interpolation reads both)
        came_steps, _ = sample_mel_on_grid(came.unsqueeze(0), audio_start_ms, times, hop_ms)
        valid_steps &= came_steps[0] > 0.999
    feat = normalize_mel(feat, valid_steps)
    valid_grid = valid_steps.view(n_grid, spec.steps_per_frame).all(dim=1)
    return feat.float(), valid_grid


def _whole_mel_frames(present: np.ndarray, n_mel: int, spec: AudioSpec) -> torch.Tensor:
    """(n_samples,) bool -> (n_mel,) float 0/1: 1 where mel frame m's analysis window (win_length
    samples centred on sample m * hop_length, log_mel) holds only samples that arrived."""
    missing = np.concatenate([[0], np.cumsum(~present)])
    centres = np.arange(n_mel) * spec.hop_length
    n = present.shape[0]
    a = np.clip(centres - spec.win_length // 2, 0, n)
    b = np.clip(centres + spec.win_length // 2, 0, n)
    return torch.from_numpy((missing[b] - missing[a] == 0).astype(np.float32))


def frames_to_gray(frames: np.ndarray) -> np.ndarray:
    """(T, H, W) GRAY8 or (T, H, W, 3) RGB24 uint8 -> (T, H, W) float32 in [0, 1]."""
    if frames.ndim == 4 and frames.shape[-1] == 3:
        f = frames.astype(np.float32)
        gray = 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]
        return gray / 255.0
    if frames.ndim == 3:
        return frames.astype(np.float32) / 255.0
    raise ValueError(f"frames must be (T,H,W) GRAY8 or (T,H,W,3) RGB24, got shape {frames.shape}")


def video_input(frames: np.ndarray, spec: VideoSpec) -> torch.Tensor:
    """ROI frames of any size -> (T, 1, roi_height, roi_width) float32, normalised per frame."""
    gray = torch.from_numpy(frames_to_gray(frames)).unsqueeze(1)
    if gray.shape[-2:] != (spec.roi_height, spec.roi_width):
        mode = "area" if spec.resize == "area" else "bilinear"
        size = (spec.roi_height, spec.roi_width)
        if mode == "area" and (gray.shape[-2] < spec.roi_height or gray.shape[-1] < spec.roi_width):
            mode = "bilinear"  # area only downsamples
        gray = F.interpolate(gray, size=size, mode=mode, **({} if mode == "area" else {"align_corners": False}))
    return standardize_frames(gray)


def standardize_frames(x: torch.Tensor) -> torch.Tensor:
    """(..., H, W) -> per-frame zero mean, unit std: removes global brightness/contrast (low light)."""
    # one pass of sums: torch's std over two dims is ~15x slower on one CPU thread
    flat = x.flatten(-2)
    n = flat.shape[-1]
    mean = flat.mean(-1, keepdim=True)
    var = ((flat * flat).mean(-1, keepdim=True) - mean * mean).clamp_min(0) * (n / max(n - 1, 1))
    return ((flat - mean) / (var.sqrt() + 1e-3)).view_as(x)


def frame_rms(samples: np.ndarray, sample_rate: int, audio_start_ms: float, frame_start: int,
              n_frames: int, fps: float) -> np.ndarray:
    """RMS of the audio under each frame's duration, (n_frames,) float64; NaN where not covered."""
    t0 = (frame_start + np.arange(n_frames)) / fps * 1000.0 - audio_start_ms
    a = np.floor(t0 * sample_rate / 1000.0).astype(np.int64)
    b = np.floor((t0 + 1000.0 / fps) * sample_rate / 1000.0).astype(np.int64)
    n = samples.shape[0]
    a, b = np.clip(a, 0, n), np.clip(b, 0, n)
    sq = np.concatenate([[0.0], np.cumsum(samples.astype(np.float64) ** 2)])
    count = b - a
    with np.errstate(invalid="ignore", divide="ignore"):
        rms = np.sqrt(np.maximum(sq[b] - sq[a], 0.0) / count)
    return np.where(count > 0, rms, np.nan)
