"""Occlusion estimate from colour statistics (pure numpy/cv2, no mediapipe).

What it measures, honestly: FaceMesh always returns a full, plausible lip contour, even when
something covers the mouth (it hallucinates lips under a hand or a bar). So we check whether the
pixels on the lip *ring* (between the outer and inner lip contours, where lip tissue must be)
still look like lips or skin of this face: in CIE Lab, compared with a skin reference sampled on
the two cheeks of the same frame (same light, same camera). A pixel is "lip-compatible" when it
is not much darker than the skin and its chroma (a*, b*) lies in a generous box around the
skin chroma, shifted toward red (lips are redder and a bit less yellow than skin).
``occlusion_score`` = share of ring pixels that are not lip-compatible (0 = looks like lips,
1 = all foreign). It detects occluders whose colour differs from skin: bars, microphones,
black/grey/coloured objects, the image border. It does NOT detect a skin-coloured occluder
(a hand) nor occlusion in a very dark/desaturated frame where chroma carries no information;
for those the score stays low (no false alarm, but a miss).
"""

from __future__ import annotations

import numpy as np

try:
    import cv2
except ImportError:  # pragma: no cover
    cv2 = None

from worker.tracking.geometry import INNER_LIP, OUTER_LIP

# Bounds in OpenCV 8-bit Lab units (L 0..255, a/b offset by 128, ~1 unit = 1 CIE unit for a, b).
MIN_REL_LUMA = 0.35  # darker than this fraction of skin L is foreign (black bars, shadows)
A_BELOW_SKIN, A_ABOVE_SKIN = 7.0, 40.0  # lips: a* >= skin a*; grey/green/blue fall below
B_BELOW_SKIN, B_ABOVE_SKIN = 25.0, 12.0  # lips: slightly bluer than skin; yellow objects above
OCCLUDED_THRESHOLD = 0.5  # occlusion_score above this -> occluded


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
    r = max(1, int(round(radius_px)))
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
    sl, sa, sb = (float(v) for v in skin_lab)
    ok = (
        (lab[:, 0] >= MIN_REL_LUMA * sl)
        & (lab[:, 1] >= sa - A_BELOW_SKIN) & (lab[:, 1] <= sa + A_ABOVE_SKIN)
        & (lab[:, 2] >= sb - B_BELOW_SKIN) & (lab[:, 2] <= sb + B_ABOVE_SKIN)
    )
    return float(1.0 - ok.mean())


def occluded_flags(scores: np.ndarray, threshold: float = OCCLUDED_THRESHOLD) -> np.ndarray:
    """(T,) scores (NaN = unknown) -> (T,) bool after a 3-frame median (one-frame blips ignored)."""
    s = np.nan_to_num(np.asarray(scores, np.float64), nan=0.0)
    if len(s) >= 3:
        padded = np.concatenate([s[:1], s, s[-1:]])
        s = np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)
    return s > threshold
