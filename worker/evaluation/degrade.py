"""Degradations of real footage for the robustness part of eval-real. Pure image functions.

Strengths are stated relative to the mouth so that a 224x224 crop and a 1080p room shot get the
same degradation where it matters:
- dark: gain 0.3, gamma 1.4 (crushed shadows), Gaussian luma noise sigma 4 (8-bit levels): a dim
  room with the camera's gain up (like synth.degrade.LowLight's middle setting).
- blur: Gaussian blur, sigma = 3 px at the 96-px mouth-ROI scale (sigma_px = 3 * roi_side / 96 on
  the full frame, roi_side = the tracker's ROI side, 2 x the mouth-corner distance).
- bar: a dark grey (70) vertical bar in front of the mouth, from 15% of the mouth width outside
  the left corner (image left) to 45% of it inside, and half the mouth height above and below
  (mouth height at least 0.3 x width): part of the mouth stays visible.
- phone: the audio, not the frames: resampled to 8 kHz and back (torchaudio's windowed sinc), as
  a telephone or an 8 kHz recording reaches the scorer; nothing above 4 kHz is left.
"""

from __future__ import annotations

import numpy as np

DARK_GAIN = 0.3
DARK_GAMMA = 1.4
DARK_NOISE_SIGMA = 4.0
BLUR_SIGMA_ROI_PX = 3.0
ROI_REFERENCE_PX = 96.0
BAR_GREY = 70
BAR_X = (-0.15, 0.45)  # fractions of the mouth width from the left corner
BAR_Y_PAD = 0.5  # fraction of the mouth height above and below
PHONE_RATE_HZ = 8000
KINDS = ("dark", "blur", "bar", "phone")
AUDIO_KINDS = ("phone",)  # degrade the audio; the clean track's frames are kept


def recipe(kind: str) -> str:
    """The parameters a degraded copy of ``kind`` is made with, as its cache records them: a
    copy made with others is stale (eval-real's caches are otherwise keyed on the source file)."""
    if kind == "dark":
        return f"dark gain={DARK_GAIN} gamma={DARK_GAMMA} noise={DARK_NOISE_SIGMA}"
    if kind == "blur":
        return f"blur sigma={BLUR_SIGMA_ROI_PX}@{ROI_REFERENCE_PX}px"
    if kind == "bar":
        return f"bar grey={BAR_GREY} x={BAR_X} y_pad={BAR_Y_PAD}"
    if kind == "phone":
        return f"phone rate={PHONE_RATE_HZ}"
    raise ValueError(f"unknown degradation {kind!r}")


def darken(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(H, W[, 3]) uint8 -> the same darkened, with sensor noise (one luma noise for all channels)."""
    x = (img.astype(np.float32) / 255.0) ** DARK_GAMMA * (255.0 * DARK_GAIN)
    noise = rng.standard_normal(img.shape[:2], dtype=np.float32) * DARK_NOISE_SIGMA
    x += noise[..., None] if img.ndim == 3 else noise
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def blur(img: np.ndarray, sigma_px: float) -> np.ndarray:
    if sigma_px <= 0:
        return img
    import cv2  # here, not at the top: eval-real's parser reads KINDS, and a parser imports no heavy library

    return cv2.GaussianBlur(img, (0, 0), sigmaX=float(sigma_px), borderType=cv2.BORDER_REFLECT101)


def blur_sigma_for_roi_side(roi_side_px: float) -> float:
    """Full-frame blur sigma (px) equivalent to BLUR_SIGMA_ROI_PX at the 96-px ROI scale."""
    return BLUR_SIGMA_ROI_PX * float(roi_side_px) / ROI_REFERENCE_PX


def bar_box(lips_px: np.ndarray) -> tuple[int, int, int, int] | None:
    """(L, 2) lip landmarks in pixels -> (x0, y0, x1, y1) of the bar, or None without landmarks."""
    p = np.asarray(lips_px, dtype=np.float64)
    if p.size == 0 or not np.all(np.isfinite(p)):
        return None
    x_left, x_right = p[:, 0].min(), p[:, 0].max()
    w = x_right - x_left
    h = max(p[:, 1].max() - p[:, 1].min(), 0.3 * w)
    y_mid = 0.5 * (p[:, 1].max() + p[:, 1].min())
    x0, x1 = x_left + BAR_X[0] * w, x_left + BAR_X[1] * w
    y0, y1 = y_mid - (0.5 + BAR_Y_PAD) * h, y_mid + (0.5 + BAR_Y_PAD) * h
    return int(np.floor(x0)), int(np.floor(y0)), int(np.ceil(x1)), int(np.ceil(y1))


def draw_bar(img: np.ndarray, box: tuple[int, int, int, int] | None) -> np.ndarray:
    if box is None:
        return img
    out = img.copy()
    h, w = img.shape[:2]
    x0, y0, x1, y1 = max(0, box[0]), max(0, box[1]), min(w, box[2]), min(h, box[3])
    if x1 > x0 and y1 > y0:
        out[y0:y1, x0:x1] = BAR_GREY
    return out


def telephone(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono float audio at ``sample_rate`` -> the same length, band-limited through PHONE_RATE_HZ."""
    import torch
    import torchaudio.functional as AF

    a = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    out = AF.resample(AF.resample(a, sample_rate, PHONE_RATE_HZ), PHONE_RATE_HZ, sample_rate).numpy()
    if out.shape[0] < a.shape[0]:
        out = np.pad(out, (0, a.shape[0] - out.shape[0]))
    return out[: a.shape[0]].astype(np.float32)
