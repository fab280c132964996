"""Pure mouth-ROI geometry: lip landmark indices, ROI parameters from landmarks, temporal
smoothing and short-gap bridging, and the affine crop. No mediapipe, no I/O.

An ROI is (cx, cy, side, angle): centre and side in full-resolution image pixels, angle in
radians of the mouth-corner line (61 -> 291) against the image x axis. The crop rotates by
-angle so that the corner line is horizontal in the ROI.
"""

from __future__ import annotations

import itertools

import numpy as np

try:  # cv2 comes with mediapipe (opencv-contrib-python)
    import cv2
except ImportError:  # pragma: no cover - the media extra installs it
    cv2 = None

# MediaPipe FaceMesh lip contours (468-point topology), in drawing order.
OUTER_LIP = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185]
INNER_LIP = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191]
LIP_INDICES = OUTER_LIP + INNER_LIP  # the L = 40 landmarks TrackResult.landmarks carries
MOUTH_LEFT, MOUTH_RIGHT = 61, 291  # corners (subject's right, left)
# Positions inside LIP_INDICES, for consumers that want named points.
LIP_POS = {idx: i for i, idx in enumerate(LIP_INDICES)}
# Cheek/skin reference points away from lips and beard-free-ish (below the eyes, beside the nose).
CHEEK_LEFT, CHEEK_RIGHT = 205, 425

ROI_SCALE = 2.0  # ROI side = ROI_SCALE x corner distance


def roi_params(lips_px: np.ndarray) -> np.ndarray:
    """(L, 2) lip landmarks in pixels (LIP_INDICES order) -> (cx, cy, side, angle) float64."""
    left = lips_px[LIP_POS[MOUTH_LEFT]]
    right = lips_px[LIP_POS[MOUTH_RIGHT]]
    d = right - left
    width = float(np.hypot(d[0], d[1]))
    # Centre: along the corner line, the corners' midpoint (the outer contour's mean drifts
    # sideways on turned heads); across it, the outer contour's mean (halfway between the lips,
    # so an opening jaw stays inside the crop).
    u = d / max(width, 1e-9)
    mid = 0.5 * (left + right)
    contour_mean = lips_px[: len(OUTER_LIP)].mean(axis=0)
    n = np.array([-u[1], u[0]])
    centre = mid + n * float(np.dot(contour_mean - mid, n))
    return np.array([centre[0], centre[1], ROI_SCALE * width, np.arctan2(d[1], d[0])], np.float64)


def bridge_gaps(params: np.ndarray, valid: np.ndarray, max_gap: int) -> np.ndarray:
    """Linearly interpolate ROI params across runs of <= max_gap invalid frames that have a valid
    frame on both sides. params (T, 4) (rows of invalid frames ignored), valid (T,) bool.
    Returns the (T,) bool mask of bridged frames; params is filled in place."""
    t_len = len(valid)
    bridged = np.zeros(t_len, bool)
    if max_gap <= 0:
        return bridged
    idx = np.flatnonzero(valid)
    for a, b in itertools.pairwise(idx):
        gap = b - a - 1
        if 0 < gap <= max_gap:
            for k in range(1, gap + 1):
                w = k / (gap + 1)
                p = (1 - w) * params[a] + w * params[b]
                # angles: interpolate the shortest way round
                da = (params[b, 3] - params[a, 3] + np.pi) % (2 * np.pi) - np.pi
                p[3] = params[a, 3] + w * da
                params[a + k] = p
                bridged[a + k] = True
    return bridged


# A mouth ROI's centre moving by more than half its side between two frames (at 25 fps), or its
# side changing by half, is not one face moving: a head turning fast moves its mouth by well under
# a quarter of the ROI a frame. It is a cut to another shot, or a track taken over by another face.
JUMP_SIDES = 0.5
JUMP_SIZE_RATIO = 1.5


def track_runs(params: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(T,) run id per frame: a run is a stretch of valid frames with no jump (JUMP_SIDES,
    JUMP_SIZE_RATIO) inside; dropouts and jumps start a new one. Invalid frames get ids too
    (their own stretches), so compare ids of valid frames only."""
    valid = np.asarray(valid, bool)
    p = np.asarray(params, np.float64)
    step = np.hypot(*(p[1:, :2] - p[:-1, :2]).T)
    big, small = np.fmax(p[1:, 2], p[:-1, 2]), np.fmin(p[1:, 2], p[:-1, 2])
    with np.errstate(invalid="ignore", divide="ignore"):
        jump = valid[1:] & valid[:-1] & ((step > JUMP_SIDES * big) | (big > JUMP_SIZE_RATIO * small))
    return np.cumsum(np.concatenate([[1], ((valid[1:] != valid[:-1]) | jump).astype(int)]))


def smooth_params(params: np.ndarray, valid: np.ndarray, radius: int) -> np.ndarray:
    """Centred moving average of ROI params over +/-radius frames, using only valid frames of the
    same run (track_runs: never averaging across a face dropout, nor across a jump, whose blend
    would crop neither mouth). (T, 4) -> (T, 4); invalid rows become NaN. Angles are averaged as
    unit vectors."""
    t_len = len(valid)
    out = np.full_like(params, np.nan)
    if radius <= 0:
        out[valid] = params[valid]
        return out
    run = track_runs(params, valid)
    for t in np.flatnonzero(valid):
        lo, hi = max(0, t - radius), min(t_len, t + radius + 1)
        sel = np.arange(lo, hi)
        sel = sel[valid[lo:hi] & (run[lo:hi] == run[t])]
        # Symmetric window: near a run edge, shrink both sides so the average is not biased
        # toward one side (which would lag motion).
        r = min(t - sel.min(), sel.max() - t)
        sel = sel[np.abs(sel - t) <= r]
        p = params[sel]
        out[t, :3] = p[:, :3].mean(axis=0)
        out[t, 3] = np.arctan2(np.sin(p[:, 3]).mean(), np.cos(p[:, 3]).mean())
    return out


def roi_affine(param: np.ndarray, roi_size: int) -> np.ndarray:
    """2x3 affine matrix mapping full-image pixels to ROI pixels (rotated so corners are level)."""
    cx, cy, side, angle = (float(v) for v in param)
    scale = roi_size / max(side, 1e-6)
    c, s = np.cos(-angle) * scale, np.sin(-angle) * scale
    # x' = R(-angle) * scale * (x - centre) + roi_size / 2
    m = np.array([[c, -s, 0.0], [s, c, 0.0]], np.float64)
    m[:, 2] = np.array([roi_size / 2.0, roi_size / 2.0]) - m[:, :2] @ np.array([cx, cy])
    return m


def downscale(image: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Anti-aliased downscale to (w, h). cv2's INTER_AREA is ~10x slower for non-integer
    factors (measured 13 ms for 1312 -> 640 px), so: integer-factor area averaging (its fast
    path), then bilinear for the remaining factor < 2."""
    h, w = image.shape[:2]
    nw, nh = size_wh
    k = int(min(w / nw, h / nh))
    if k >= 2:
        hk, wk = (h // k) * k, (w // k) * k
        image = cv2.resize(image[:hk, :wk], (wk // k, hk // k), interpolation=cv2.INTER_AREA)
    if image.shape[1] == nw and image.shape[0] == nh:
        return image
    return cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)


def crop_roi(frame_rgb: np.ndarray, param: np.ndarray, roi_size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (roi_size, roi_size, 3) uint8 crop; outside the image is black.

    When the ROI is much larger than roi_size, the axis-aligned box around it is first
    area-downscaled (anti-aliasing, and cheap), then the rotation is applied by warpAffine."""
    cx, cy, side, angle = (float(v) for v in param)
    shrink = side / roi_size
    if shrink > 1.5:
        h, w = frame_rgb.shape[:2]
        half = 0.75 * side  # > side * sqrt(2) / 2: the rotated square fits
        x0, y0 = max(0, int(np.floor(cx - half))), max(0, int(np.floor(cy - half)))
        x1, y1 = min(w, int(np.ceil(cx + half)) + 1), min(h, int(np.ceil(cy + half)) + 1)
        if x1 - x0 < 2 or y1 - y0 < 2:
            return np.zeros((roi_size, roi_size, 3), np.uint8)
        f = 1.0 / shrink
        nw, nh = max(2, round((x1 - x0) * f)), max(2, round((y1 - y0) * f))
        patch = downscale(frame_rgb[y0:y1, x0:x1], (nw, nh))
        fx, fy = nw / (x1 - x0), nh / (y1 - y0)
        # same ROI expressed in the patch's pixels (pixel centres: (x + 0.5) * f - 0.5)
        param = np.array([(cx - x0 + 0.5) * fx - 0.5, (cy - y0 + 0.5) * fy - 0.5, side * fx, angle])
        frame_rgb = patch
    m = roi_affine(param, roi_size)
    return cv2.warpAffine(frame_rgb, m, (roi_size, roi_size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def to_roi_coords(points_px: np.ndarray, param: np.ndarray, roi_size: int) -> np.ndarray:
    """(L, 2) image pixels -> (L, 2) normalised ROI coordinates (0..1 inside the crop)."""
    m = roi_affine(param, roi_size)
    pts = points_px @ m[:, :2].T + m[:, 2]
    return (pts / roi_size).astype(np.float32)


# Mouth-shape measures (pairs of FaceMesh points), each divided by the corner-to-corner width so
# they do not depend on scale, rotation or position in the crop. Left/right pairs are averaged:
# a mirrored mouth measures the same.
_SHAPE_PAIRS: tuple[tuple[tuple[int, int], ...], ...] = (
    ((13, 14),),  # inner gap, centre
    ((82, 87), (312, 317)),  # inner gap, sides
    ((0, 17),),  # outer height, centre
    ((37, 84), (267, 314)),  # outer height, sides
    ((0, 13),),  # upper lip thickness
    ((14, 17),),  # lower lip thickness
    ((78, 308),),  # inner corner-to-corner width
)
N_SHAPE_FEATURES = len(_SHAPE_PAIRS)
SHAPE_INNER_GAP = 0  # mouth_shape's column of the centre inner-lip gap (FIELD-NOTES' "openness")


def mouth_shape(lips: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """(T, 40, 2) lip landmarks (LIP_INDICES order, any isotropic coordinates) -> (T, 7) shape
    measures over the mouth width: the articulatory view of a mouth, free of its looks."""
    p = np.asarray(lips, dtype=np.float64)
    width = np.linalg.norm(p[:, LIP_POS[MOUTH_RIGHT]] - p[:, LIP_POS[MOUTH_LEFT]], axis=-1)
    width = np.maximum(width, 1e-6)
    cols = []
    for pairs in _SHAPE_PAIRS:
        d = [np.linalg.norm(p[:, LIP_POS[i]] - p[:, LIP_POS[j]], axis=-1) for i, j in pairs]
        cols.append(np.mean(d, axis=0) / width)
    return np.stack(cols, axis=-1).astype(dtype)
