"""Capture degradations for synthetic mouth ROIs: head motion, motion blur, occlusion, low light,
sensor noise. Each is a small object built once per clip from its own random generator, applied per
frame; all work on float32 RGB frames in 0-255 (occlusion draws on the supersampled canvas).
"""

from __future__ import annotations

import cv2
import numpy as np


def smooth_signal(rng: np.random.Generator, times_s: np.ndarray, max_hz: float = 0.8,
                  n_terms: int = 3) -> np.ndarray:
    """Smooth random signal in about [-1, 1] at ``times_s``: a sum of sinusoids of random frequency."""
    out = np.zeros_like(times_s, dtype=np.float64)
    for _ in range(n_terms):
        f = rng.uniform(0.08, max_hz)
        out += np.sin(2 * np.pi * f * times_s + rng.uniform(0, 2 * np.pi))
    return out / np.sqrt(n_terms * 0.5) / 1.6


class HeadMotion:
    """ROI jitter from imperfect tracking and head movement: translation up to ~6% of the ROI,
    scale +/-8%, rotation +/-6 degrees, all smooth, plus a little per-frame tracker jitter."""

    def __init__(self, rng: np.random.Generator, times_s: np.ndarray, roi: int) -> None:
        self.roi = roi
        amp = rng.uniform(0.4, 1.0)
        self.dx = amp * 0.06 * roi * smooth_signal(rng, times_s) + rng.normal(0, 0.3, len(times_s))
        self.dy = amp * 0.05 * roi * smooth_signal(rng, times_s) + rng.normal(0, 0.3, len(times_s))
        self.scale = 1 + amp * 0.08 * smooth_signal(rng, times_s)
        self.angle = amp * 6.0 * smooth_signal(rng, times_s)

    def apply(self, frame: np.ndarray, i: int) -> np.ndarray:
        c = (self.roi / 2, self.roi / 2)
        m = cv2.getRotationMatrix2D(c, float(self.angle[i]), float(self.scale[i]))
        m[:, 2] += (self.dx[i], self.dy[i])
        return cv2.warpAffine(frame, m, (self.roi, self.roi), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT101)


class MotionBlur:
    """Directional blur of smoothly varying length (0-9 px at 96 px ROI) and angle."""

    def __init__(self, rng: np.random.Generator, times_s: np.ndarray, roi: int) -> None:
        scale = roi / 96.0
        self.length = np.clip((0.5 + 0.8 * smooth_signal(rng, times_s, 1.5)) * 9 * scale, 0, 9 * scale)
        self.angle = np.pi * (0.5 + 0.5 * smooth_signal(rng, times_s, 0.5)) + rng.uniform(0, np.pi)

    def apply(self, frame: np.ndarray, i: int) -> np.ndarray:
        length = float(self.length[i])
        if length < 1.0:
            return frame
        k = int(np.ceil(length)) | 1
        kernel = np.zeros((k, k), np.float32)
        c = k // 2
        dx, dy = np.cos(self.angle[i]) * length / 2, np.sin(self.angle[i]) * length / 2
        cv2.line(kernel, (round(c - dx), round(c - dy)), (round(c + dx), round(c + dy)),
                 1.0, 1, cv2.LINE_AA)
        kernel /= kernel.sum()
        return cv2.filter2D(frame, -1, kernel, borderType=cv2.BORDER_REFLECT101)


class Occluder:
    """A bar (microphone, pen, finger) or a hand-like blob over 20-40% of the mouth, drifting slowly.

    Drawn on the supersampled canvas by ``MouthRenderer.render`` through ``draw(i)``.
    """

    def __init__(self, rng: np.random.Generator, times_s: np.ndarray, look) -> None:
        self.kind = "bar" if rng.uniform() < 0.5 else "blob"
        mouth_w = 2 * look.half_width
        cover = rng.uniform(0.2, 0.4)
        side = 1 if rng.uniform() < 0.5 else -1
        # Horizontal position of the occluder's inner edge: the covered share of the mouth width.
        self.x = look.cx + side * (look.half_width - cover * mouth_w) + 0.02 * smooth_signal(rng, times_s, 0.3)
        self.y = look.cy + 0.03 * smooth_signal(rng, times_s, 0.3)
        self.side = side
        self.cover_w = cover * mouth_w
        self.angle = rng.uniform(-25, 25) + 5 * smooth_signal(rng, times_s, 0.3)
        self.n_fingers = int(rng.integers(2, 4))
        self.finger_w = rng.uniform(0.085, 0.11)
        if self.kind == "bar":
            g = rng.uniform(20, 200)
            self.color = (g * rng.uniform(0.8, 1.2), g * rng.uniform(0.8, 1.2), g * rng.uniform(0.8, 1.2))
        else:
            # One factor for all channels: a hand keeps the skin's hue but not its lighting.
            tone = rng.uniform(0.7, 0.88) if rng.uniform() < 0.5 else rng.uniform(1.12, 1.3)
            self.color = tuple(min(255.0, float(c) * tone) for c in look.skin)

    def draw(self, i: int):
        def _draw(img: np.ndarray, px) -> None:
            n = img.shape[0]
            cx = self.x[i] + self.side * self.cover_w / 2
            if self.kind == "bar":
                w, h = self.cover_w * n, 0.9 * n
                box = cv2.boxPoints(((cx * n, self.y[i] * n), (w, h), float(self.angle[i])))
                cv2.fillPoly(img, [np.round(box).astype(np.int32)], self.color, cv2.LINE_AA)
            else:
                # Two or three fingers coming in from the side, tips over the mouth.
                angle = float(self.angle[i])
                tip_x = cx - self.side * self.cover_w / 2
                length, width = 0.5 * n, self.finger_w * n
                direction = np.array([np.cos(np.radians(angle)), np.sin(np.radians(angle))]) * self.side
                normal = np.array([-direction[1], direction[0]])
                shade = tuple(c * 0.62 for c in self.color)
                for k in range(self.n_fingers):
                    offset = (k - (self.n_fingers - 1) / 2) * width * 1.05
                    tip = np.array([tip_x * n, self.y[i] * n]) + normal * offset \
                        + direction * (0.02 * n * abs(k - 1))
                    centre = tip + direction * length / 2
                    box = ((float(centre[0]), float(centre[1])), (length, width), angle)
                    cv2.ellipse(img, box, shade, -1, cv2.LINE_AA)
                    inner = ((float(centre[0]), float(centre[1])), (length * 0.97, width * 0.8), angle)
                    cv2.ellipse(img, inner, self.color, -1, cv2.LINE_AA)
        return _draw


class LowLight:
    """Dim scene with the camera's gain turned up: mean level 25-50% of normal, crushed shadows
    (gamma 1.1-1.5), a colour cast, and the amplified sensor noise that comes with the gain."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.gain = rng.uniform(0.3, 0.6)
        self.gamma = rng.uniform(1.1, 1.5)
        self.cast = rng.uniform(0.85, 1.1, size=3).astype(np.float32)
        self.sigma = rng.uniform(3.0, 8.0)
        self.rng = rng

    def apply(self, frame: np.ndarray) -> np.ndarray:
        x = np.clip(frame / 255.0, 0, 1) ** self.gamma * (255.0 * self.gain) * self.cast
        luma = self.rng.normal(0, self.sigma, size=frame.shape[:2] + (1,)).astype(np.float32)
        chroma = self.rng.normal(0, self.sigma * 0.5, size=frame.shape).astype(np.float32)
        return x + luma + chroma


class SensorNoise:
    """Gaussian luma noise (sigma 3-9) plus weaker chroma noise."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.sigma = rng.uniform(3.0, 9.0)
        self.rng = rng

    def apply(self, frame: np.ndarray) -> np.ndarray:
        luma = self.rng.normal(0, self.sigma, size=frame.shape[:2] + (1,)).astype(np.float32)
        chroma = self.rng.normal(0, self.sigma * 0.4, size=frame.shape).astype(np.float32)
        return frame + luma + chroma
