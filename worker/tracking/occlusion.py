"""Occlusion estimate from colour statistics (pure numpy/cv2, no mediapipe).

What it measures, honestly: FaceMesh always returns a full, plausible lip contour, even when
something covers the mouth (it hallucinates lips under a hand or a bar). So we check whether the
pixels on the lip *ring* (between the outer and inner lip contours, where lip tissue must be)
still look like lips or skin of this face: in CIE Lab, compared with a skin reference sampled on
the two cheeks of the same frame (same light, same camera). A ring pixel is "foreign" when it is
much darker than the skin (black objects, deep shadow), much less colourful (grey, white,
black: chroma below a share of the skin's) or of another hue (blue, green, yellow objects).
Lips differ from skin mostly in lightness and a little in hue toward red, which the bounds
tolerate (checked on the 50 dev clips: lips of all of them score low).
``occlusion_score`` = share of ring pixels that are foreign (0 = looks like lips, 1 = all
foreign). It detects occluders whose colour differs from skin: bars, microphones, black/grey/
coloured objects, the image border. It does NOT detect a skin-coloured occluder (a hand) nor
reliably one in a very dark or colourless (greyscale) frame where chroma carries no information
(there the luma test alone works, for dark occluders only).
"""

from __future__ import annotations

import numpy as np

try:
    import cv2
except ImportError:  # pragma: no cover
    cv2 = None

from worker.tracking.geometry import INNER_LIP, OUTER_LIP

# Bounds relative to the same frame's skin reference (OpenCV 8-bit Lab: L 0..255, a/b + 128).
MIN_REL_LUMA = 0.2  # darker than this share of skin L is foreign (lips can be ~0.45 of cheeks)
MIN_REL_CHROMA = 0.4  # less colourful than this share of skin chroma is foreign (grey/black/white)
MAX_HUE_DIFF_DEG = 45.0  # lips sit 0-25 deg redder than skin; other hues are foreign
OCCLUDED_THRESHOLD = 0.4  # dev clips: clean frames > 0.4 in 1.7 %, half-mouth grey bar in 97 %


def lip_ring_mask(lips_roi_px: np.ndarray, size: int) -> np.ndarray:
    """(L, 2) lip landmarks in ROI pixels (LIP_INDICES order) -> (size, size) bool ring mask."""
    mask = np.zeros((size, size), np.uint8)
    n_outer = len(OUTER_LIP)
    outer = np.round(lips_roi_px[:n_outer]).astype(np.int32)
    inner = np.round(lips_roi_px[n_outer : n_outer + len(INNER_LIP)]).astype(np.int32)
    cv2.fillPoly(mask, [outer], 1)
    cv2.fillPoly(mask, [inner], 0)
    return mask.astype(bool)


def skin_reference_lab(frame_rgb: np.ndarray, cheeks_px: np.ndarray, radius_px: float) -> np.ndarray | None:
    """Median Lab colour of square patches around the cheek points; None if off-image."""
    h, w = frame_rgb.shape[:2]
    r = max(1, round(radius_px))
    patches = []
    for x, y in cheeks_px:
        x0, x1 = int(x) - r, int(x) + r + 1
        y0, y1 = int(y) - r, int(y) + r + 1
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            continue
        patches.append(frame_rgb[y0:y1, x0:x1].reshape(-1, 3))
    if not patches:
        return None
    pix = np.concatenate(patches)[None].astype(np.uint8)
    lab = cv2.cvtColor(pix, cv2.COLOR_RGB2LAB)[0].astype(np.float32)
    return np.median(lab, axis=0)


def occlusion_score(roi_rgb: np.ndarray, lips_roi_px: np.ndarray, skin_lab: np.ndarray | None) -> float:
    """Share (0..1) of lip-ring pixels that look like neither lips nor this face's skin.

    roi_rgb: (S, S, 3) uint8 crop; lips_roi_px: (L, 2) landmarks in crop pixels; skin_lab: (3,)
    reference from ``skin_reference_lab`` (None -> NaN: no reference, no estimate)."""
    if skin_lab is None:
        return float("nan")
    size = roi_rgb.shape[0]
    mask = lip_ring_mask(lips_roi_px, size)
    if mask.sum() < 8:
        return float("nan")
    lab = cv2.cvtColor(roi_rgb, cv2.COLOR_RGB2LAB)[mask].astype(np.float32)
    sl, sa, sb = float(skin_lab[0]), float(skin_lab[1]) - 128.0, float(skin_lab[2]) - 128.0
    a, b = lab[:, 1] - 128.0, lab[:, 2] - 128.0
    skin_chroma = float(np.hypot(sa, sb))
    if sl < 10 or skin_chroma < 3:  # black or colourless skin reference: no chroma to compare
        foreign = lab[:, 0] < MIN_REL_LUMA * max(sl, 1.0)
        return float(foreign.mean())
    hue_diff = np.degrees(np.abs(np.angle(np.exp(1j * (np.arctan2(b, a) - np.arctan2(sb, sa))))))
    foreign = (
        (lab[:, 0] < MIN_REL_LUMA * sl)
        | (np.hypot(a, b) < MIN_REL_CHROMA * skin_chroma)
        | (hue_diff > MAX_HUE_DIFF_DEG)
    )
    return float(foreign.mean())


def occluded_flags(scores: np.ndarray, threshold: float = OCCLUDED_THRESHOLD) -> np.ndarray:
    """(T,) scores (NaN = unknown) -> (T,) bool after a 3-frame median (one-frame blips ignored)."""
    s = np.nan_to_num(np.asarray(scores, np.float64), nan=0.0)
    if len(s) >= 3:
        padded = np.concatenate([s[:1], s, s[-1:]])
        s = np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)
    return s > threshold
