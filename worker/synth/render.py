"""Draw a mouth-ROI frame from mouth parameters (see ``visemes.PARAMS``).

Geometry is in ROI units (the ROI side is 1) and drawn at ``SUPERSAMPLE`` x resolution, then
area-downsampled, which anti-aliases every edge. The ROI is a square centred on the mouth with a
side of about twice the mouth-corner distance, as the face tracker crops it: the bottom of the
nose shows at the top, the chin crease below the lower lip.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SUPERSAMPLE = 4
_N_CURVE = 41  # points per lip curve


@dataclass(frozen=True)
class Look:
    """Per-seed appearance. Colours are RGB 0-255, lengths in ROI units."""

    cx: float
    cy: float
    half_width: float        # mouth-corner half distance at rest
    upper_lip: float         # upper-lip thickness
    lower_lip: float         # lower-lip thickness
    max_open: float          # inner opening height at open=1
    corner_lift: float       # mouth corners up (+) or down (-)
    skin: tuple[float, float, float]
    lip: tuple[float, float, float]
    interior: tuple[float, float, float]
    teeth: tuple[float, float, float]
    tongue: tuple[float, float, float]
    light_angle: float       # direction of the lighting gradient, radians
    light_strength: float    # 0..0.5, relative brightness change across the ROI
    focus_sigma_px: float    # final Gaussian blur (camera focus), in output pixels
    texture_seed: int


def random_look(rng: np.random.Generator) -> Look:
    # Skin tones from light to dark, with a little hue jitter.
    light = np.array([236.0, 200.0, 176.0])
    dark = np.array([92.0, 58.0, 42.0])
    t = rng.uniform(0, 1) ** 1.2
    skin = (1 - t) * light + t * dark
    skin = skin * rng.uniform(0.94, 1.06, size=3)
    lip = skin * np.array([0.86, 0.58, 0.60]) * rng.uniform(0.85, 1.05) + np.array([18.0, 0.0, 4.0])
    lip = lip * rng.uniform(0.95, 1.05, size=3)
    interior = np.array([58.0, 20.0, 26.0]) * rng.uniform(0.5, 1.1)
    teeth = np.array([232.0, 226.0, 208.0]) * rng.uniform(0.75, 0.95)
    tongue = np.array([186.0, 92.0, 98.0]) * rng.uniform(0.75, 1.0)
    return Look(
        cx=0.5 + rng.normal(0, 0.012), cy=0.5 + rng.normal(0, 0.012),
        half_width=rng.uniform(0.21, 0.27), upper_lip=rng.uniform(0.032, 0.055),
        lower_lip=rng.uniform(0.045, 0.072), max_open=rng.uniform(0.17, 0.25),
        corner_lift=rng.uniform(-0.012, 0.012),
        skin=tuple(np.clip(skin, 0, 255)), lip=tuple(np.clip(lip, 0, 255)),
        interior=tuple(interior), teeth=tuple(teeth), tongue=tuple(tongue),
        light_angle=rng.uniform(0, 2 * np.pi), light_strength=rng.uniform(0.05, 0.35),
        focus_sigma_px=rng.uniform(0.3, 0.9), texture_seed=int(rng.integers(2**31)),
    )


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean, unit-ish smooth noise field (size, size) from a (cells, cells) random grid."""
    grid = rng.normal(0, 1, size=(cells, cells)).astype(np.float32)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)


class MouthRenderer:
    """Renders frames for one look at one ROI size. Build once per clip; ``render`` per frame."""

    def __init__(self, look: Look, roi_size: int) -> None:
        self.look = look
        self.roi = roi_size
        self.big = roi_size * SUPERSAMPLE
        self._background = self._make_background()
        self._lighting = self._make_lighting()
        self._jaw_cache: dict[int, np.ndarray] = {}

    # -- static parts -------------------------------------------------------------------------
    def _px(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """ROI units -> int32 pixel points for cv2 (with 3 fractional bits... kept simple)."""
        pts = np.stack([x * self.big, y * self.big], axis=-1)
        return np.round(pts).astype(np.int32)

    def _make_background(self) -> np.ndarray:
        lk, n = self.look, self.big
        rng = np.random.default_rng(lk.texture_seed)
        skin = np.array(lk.skin, dtype=np.float32)
        yy, xx = (np.mgrid[0:n, 0:n].astype(np.float32) + 0.5) / n
        shade = 1.0 + 0.05 * _smooth_noise(rng, n, 4) + 0.025 * _smooth_noise(rng, n, 24)
        # Shadow under the nose and soft cheeks: broad Gaussian bumps.
        nose_y = lk.cy - 0.27
        shade -= 0.10 * np.exp(-(((yy - (nose_y + 0.04)) / 0.035) ** 2 + ((xx - lk.cx) / 0.16) ** 2))
        shade += 0.06 * np.exp(-(((yy - (nose_y - 0.04)) / 0.05) ** 2 + ((xx - lk.cx) / 0.09) ** 2))
        # Philtrum: a faint groove between two ridges from the nose to the cupid's bow.
        in_philtrum = np.clip((yy - nose_y) / (lk.cy - nose_y), 0, 1) * (yy < lk.cy)
        shade -= 0.035 * np.exp(-((xx - lk.cx) / 0.025) ** 2) * in_philtrum
        shade += 0.025 * np.exp(-((np.abs(xx - lk.cx) - 0.05) / 0.015) ** 2) * in_philtrum
        # Chin: slightly lighter bulge towards the bottom.
        shade += 0.05 * np.exp(-(((yy - (lk.cy + 0.38)) / 0.1) ** 2 + ((xx - lk.cx) / 0.2) ** 2))
        # Chin crease (mentolabial sulcus) below the lower lip; it moves with the jaw (see _with_jaw).
        crease_y = lk.cy + lk.lower_lip + 0.07 - 0.03 * (1 - ((xx - lk.cx) / 0.14) ** 2)
        shade -= 0.09 * np.exp(-((yy - crease_y) / 0.012) ** 2) * np.exp(-((xx - lk.cx) / 0.11) ** 4)
        shade += 0.04 * np.exp(-((yy - crease_y - 0.035) / 0.02) ** 2) * np.exp(-((xx - lk.cx) / 0.12) ** 4)
        img = skin[None, None, :] * shade[..., None]
        img += rng.normal(0, 2.0, size=(n, n, 1)).astype(np.float32)  # pores / fine texture
        img = np.clip(img, 0, 255).astype(np.uint8)
        # Nostrils and nasolabial folds.
        sk = tuple(float(c) for c in skin)
        dark = tuple(float(c) * 0.45 for c in skin)
        for side in (-1, 1):
            centre = self._px(np.array(lk.cx + side * 0.085), np.array(nose_y - 0.005))
            axes = (int(0.045 * n), int(0.02 * n))
            cv2.ellipse(img, tuple(int(v) for v in centre), axes, side * 15.0, 0, 360, dark, -1, cv2.LINE_AA)
            t = np.linspace(0, 1, 20)
            fx = lk.cx + side * (0.17 + 0.17 * t ** 1.3)
            fy = nose_y + 0.02 + 0.4 * t
            fold = tuple(float(c) * 0.92 for c in sk)
            cv2.polylines(img, [self._px(fx, fy)], False, fold, max(3, int(0.02 * n)), cv2.LINE_AA)
        return img

    def _make_lighting(self) -> np.ndarray:
        lk, n = self.look, self.roi
        yy, xx = (np.mgrid[0:n, 0:n].astype(np.float32) + 0.5) / n - 0.5
        ramp = xx * np.cos(lk.light_angle) + yy * np.sin(lk.light_angle)
        return (1.0 + 2 * lk.light_strength * ramp)[..., None].astype(np.float32)

    def _with_jaw(self, drop: float) -> np.ndarray:
        """Background with the chin and lower face moved down by ``drop`` (ROI units).

        The skin below the mouth follows the jaw, fading out towards the cheeks; the stretch
        happens under the lips. Levels are quantised to half an output pixel and cached per clip.
        """
        level = round(drop * self.big / (SUPERSAMPLE / 2))
        if level <= 0:
            return self._background.copy()
        cached = self._jaw_cache.get(level)
        if cached is None:
            lk, n = self.look, self.big
            d = level * SUPERSAMPLE / 2
            y0 = int(lk.cy * n)
            ys = np.arange(y0, n, dtype=np.float32)[:, None]
            xs = np.arange(n, dtype=np.float32)[None, :]
            ramp = np.clip((ys - y0) / (0.08 * n), 0, 1)
            ramp = ramp * ramp * (3 - 2 * ramp)
            side = np.exp(-(((xs + 0.5) / n - lk.cx) / 0.32) ** 2)
            map_y = ys - d * ramp * side
            map_x = np.broadcast_to(xs, map_y.shape).astype(np.float32)
            cached = self._background.copy()
            cached[y0:] = cv2.remap(self._background, map_x, map_y.astype(np.float32), cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REFLECT101)
            self._jaw_cache[level] = cached
        return cached.copy()

    # -- per frame ----------------------------------------------------------------------------
    def render(self, p: np.ndarray, occluder=None) -> np.ndarray:
        """One frame. p: (6,) mouth parameters (``visemes.PARAMS``). Returns float32 (roi, roi, 3)
        RGB in 0-255 (not yet clipped, so later degradations can work in float).

        occluder: optional callable(img_big, px) drawing on the supersampled frame.
        """
        lk = self.look
        open_, spread, round_, press, labdent, tongue = (float(v) for v in p)
        open_ = max(open_, 0.0)
        img = self._with_jaw(self.look.max_open * open_ * 0.68 * (1 - 0.6 * labdent))

        open_h = open_ * lk.max_open * (1 + 0.1 * round_) * (1 - 0.6 * labdent)
        hw = lk.half_width * (1 + 0.12 * spread - 0.30 * round_ - 0.06 * open_ + 0.03 * press)
        a = hw * (0.86 - 0.30 * round_)              # inner opening half-width
        tu = lk.upper_lip * (1 + 0.35 * round_ - 0.35 * press + 0.1 * labdent)
        tl = lk.lower_lip * (1 + 0.35 * round_ - 0.35 * press - 0.25 * labdent)
        cx, cy = lk.cx, lk.cy + 0.08 * open_h + 0.010 * labdent
        up_frac = 0.32                                 # share of the opening above the lip line
        n_exp = 1.5 + 1.3 * round_                     # lens-shaped (spread) .. elliptic (round)

        x = np.linspace(-1, 1, _N_CURVE)
        xo = x * hw                                    # outer contour abscissae (ROI units)
        u = np.clip(np.abs(xo) / max(a, 1e-6), 0, 1)
        s = (1 - u ** n_exp) ** (1 / n_exp)            # inner opening profile, 0 at inner corners
        corner = lk.corner_lift * (1 - 0.5 * round_) * (np.abs(x) ** 3)
        bow = (1 - 0.28 * np.exp(-(x / 0.12) ** 2)) * (1 + 0.18 * np.exp(-((np.abs(x) - 0.3) / 0.14) ** 2))
        top_outer = cy - up_frac * open_h * s - tu * (1 - x ** 2) ** 0.55 * bow - corner
        bot_outer = cy + (1 - up_frac) * open_h * s + tl * (1 - x ** 2) ** 0.7 - corner

        lips = np.concatenate([self._px(cx + xo, top_outer), self._px(cx + xo[::-1], bot_outer[::-1])])
        cv2.fillPoly(img, [lips], lk.lip, cv2.LINE_AA)
        # Lower lip catches the light, upper lip is in its own shadow.
        hi = tuple(min(255.0, c * 1.12 + 6) for c in lk.lip)
        lo_mid = cy + (1 - up_frac) * open_h * s + tl * 0.55 * (1 - x ** 2) ** 0.7 - corner
        xi = x * hw * 0.6
        sel = slice(_N_CURVE // 5, _N_CURVE - _N_CURVE // 5)
        lower_hl = np.interp(xi, xo, lo_mid)
        lower_top = np.interp(xi, xo, cy + (1 - up_frac) * open_h * s - corner) + tl * 0.2
        band = np.concatenate([self._px(cx + xi[sel], lower_top[sel]), self._px(cx + xi[sel][::-1], lower_hl[sel][::-1])])
        cv2.fillPoly(img, [band], hi, cv2.LINE_AA)

        if open_h * self.big > 0.6:
            inner_x = xo[u < 1]
            su = s[u < 1]
            c_in = corner[u < 1]
            top_in = cy - up_frac * open_h * su - c_in
            bot_in = cy + (1 - up_frac) * open_h * su - c_in
            inner = np.concatenate([self._px(cx + inner_x, top_in), self._px(cx + inner_x[::-1], bot_in[::-1])])
            cv2.fillPoly(img, [inner], lk.interior, cv2.LINE_AA)
            k = np.abs(inner_x) < a * 0.72
            if k.sum() >= 3:
                tx = inner_x[k]
                # Tongue low in the mouth when it is open.
                if open_ > 0.35:
                    tongue_top = np.maximum(bot_in[k] - 0.45 * open_h * (1 - (tx / (a * 0.72)) ** 2), top_in[k])
                    poly = np.concatenate([self._px(cx + tx, tongue_top), self._px(cx + tx[::-1], bot_in[k][::-1])])
                    cv2.fillPoly(img, [poly], lk.tongue, cv2.LINE_AA)
                # Upper teeth under the upper lip; lower teeth show less.
                teeth_h = 0.034 + 0.02 * labdent
                t_bot = np.minimum(top_in[k] + teeth_h, bot_in[k] + 0.02 * labdent)
                poly = np.concatenate([self._px(cx + tx, top_in[k]), self._px(cx + tx[::-1], t_bot[::-1])])
                cv2.fillPoly(img, [poly], lk.teeth, cv2.LINE_AA)
                lt = np.maximum(bot_in[k] - 0.018 * min(1.0, open_ * 2), top_in[k])
                poly = np.concatenate([self._px(cx + tx, lt), self._px(cx + tx[::-1], bot_in[k][::-1])])
                cv2.fillPoly(img, [poly], tuple(c * 0.85 for c in lk.teeth), cv2.LINE_AA)
            if tongue > 0.3 and open_h > 0.01:
                centre = tuple(int(v) for v in self._px(np.array(cx), np.array(cy + 0.2 * open_h)))
                axes = (int(a * 0.45 * self.big), max(1, int(open_h * 0.45 * tongue * self.big)))
                cv2.ellipse(img, centre, axes, 0, 0, 360, lk.tongue, -1, cv2.LINE_AA)
        elif labdent > 0.3:
            # f/v: upper teeth rest on the lower lip.
            k = np.abs(xo) < hw * 0.45
            t_top = cy - 0.004 - corner[k]
            poly = np.concatenate([self._px(cx + xo[k], t_top), self._px(cx + xo[k][::-1], t_top[::-1] + 0.018 * labdent)])
            cv2.fillPoly(img, [poly], lk.teeth, cv2.LINE_AA)

        # Lip line where the lips meet, while the opening is thinner than the line itself.
        if open_h * self.big <= 8.0:
            keep = np.abs(x) < 0.97
            thick = max(2, int((0.010 + 0.005 * press) * self.big))
            line_y = cy - corner[keep] + 0.2 * open_h
            cv2.polylines(img, [self._px(cx + xo[keep], line_y)], False, lk.interior, thick, cv2.LINE_AA)

        if occluder is not None:
            occluder(img, self._px)

        small = cv2.resize(img, (self.roi, self.roi), interpolation=cv2.INTER_AREA).astype(np.float32)
        if lk.focus_sigma_px > 0.35:
            small = cv2.GaussianBlur(small, (0, 0), lk.focus_sigma_px)
        return small * self._lighting
