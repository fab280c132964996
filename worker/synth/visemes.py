"""Phonemes -> mouth-shape trajectories (visemes with co-articulation).

Mouth shape is a small parameter vector (all dimensionless, see ``PARAMS``):
  open     jaw / lip opening, 0 closed .. 1 wide open ("ah")
  spread   lip spreading, 0 neutral .. 1 wide ("ee")
  round    lip rounding and protrusion, 0 .. 1 ("oo", "w")
  press    lips pressed together (bilabial closure p/b/m), 0 .. 1
  labdent  lower lip tucked under the upper teeth (f/v), 0 .. 1
  tongue   tongue tip visible between the teeth (th), 0 .. 1

Co-articulation follows the dominance model of Cohen & Massaro (1993): each phoneme segment pulls
the mouth towards its target with a weight that is flat over the segment and decays
exponentially outside it, more slowly before the segment (anticipation) than after it (carry-over).
The mouth at time t is the dominance-weighted mean of all targets. Bilabials get a very high
dominance so the lips really close; ``/h/`` and short pauses get a low one so they take the shape
of their neighbours; long pauses pull to the resting mouth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PARAMS = ("open", "spread", "round", "press", "labdent", "tongue")
N_PARAMS = len(PARAMS)
REST = np.array([0.02, 0.0, 0.0, 0.35, 0.0, 0.0])
_CHUNK = 2048  # time samples blended at once


@dataclass(frozen=True)
class Viseme:
    target: tuple[float, float, float, float, float, float]
    dominance: float   # weight inside the segment
    reach: float = 1.0  # scales the decay time constants outside the segment


def _v(open_=0.0, spread=0.0, round_=0.0, press=0.0, labdent=0.0, tongue=0.0, dom=1.0, reach=1.0) -> Viseme:
    return Viseme((open_, spread, round_, press, labdent, tongue), dom, reach)


# Visemes by class. Values are hand-set from articulatory descriptions (Fisher/Disney-style
# viseme groups) and tuned by eye on rendered frames.
V_BILABIAL = _v(0.0, 0.0, 0.0, 1.0, dom=3.0, reach=0.6)
V_LABIODENTAL = _v(0.10, 0.15, 0.0, 0.0, labdent=1.0, dom=2.5, reach=0.6)
V_DENTAL = _v(0.22, 0.2, 0.0, 0.0, tongue=1.0, dom=1.5, reach=0.6)
V_POSTALVEOLAR = _v(0.18, 0.0, 0.6, dom=1.5, reach=0.8)
V_ALVEOLAR = _v(0.16, 0.35, 0.0, dom=0.5, reach=0.7)
V_L = _v(0.30, 0.2, 0.0, tongue=0.35, dom=0.5, reach=0.7)
V_VELAR = _v(0.28, 0.15, 0.0, dom=0.4, reach=0.7)
V_H = _v(0.35, 0.1, 0.0, dom=0.1, reach=0.5)
V_R = _v(0.20, 0.0, 0.45, dom=1.0, reach=0.8)
V_W = _v(0.08, 0.0, 1.0, dom=2.5, reach=1.0)
V_J = _v(0.15, 0.6, 0.0, dom=0.8, reach=0.8)
V_AA = _v(0.95, 0.25, 0.0, dom=2.0)
V_AE = _v(0.75, 0.45, 0.0, dom=2.0)
V_EH = _v(0.55, 0.6, 0.0, dom=1.8)
V_IY = _v(0.25, 1.0, 0.0, dom=1.8)
V_IH = _v(0.32, 0.75, 0.0, dom=1.5)
V_AO = _v(0.72, 0.0, 0.65, dom=2.0)
V_OW = _v(0.50, 0.0, 0.80, dom=2.0)
V_UW = _v(0.22, 0.0, 1.0, dom=2.2)
V_UH = _v(0.30, 0.0, 0.75, dom=1.8)
V_SCHWA = _v(0.40, 0.1, 0.0, dom=1.0)
V_AH = _v(0.60, 0.15, 0.0, dom=1.6)
V_ER = _v(0.35, 0.0, 0.35, dom=1.4)

# espeak-ng English mnemonics. Diphthongs map to two visemes that split the segment.
_EXACT: dict[str, tuple[Viseme, ...]] = {
    "p": (V_BILABIAL,), "b": (V_BILABIAL,), "m": (V_BILABIAL,),
    "f": (V_LABIODENTAL,), "v": (V_LABIODENTAL,),
    "T": (V_DENTAL,), "D": (V_DENTAL,),
    "S": (V_POSTALVEOLAR,), "Z": (V_POSTALVEOLAR,), "tS": (V_POSTALVEOLAR,), "dZ": (V_POSTALVEOLAR,),
    "t": (V_ALVEOLAR,), "d": (V_ALVEOLAR,), "n": (V_ALVEOLAR,), "s": (V_ALVEOLAR,), "z": (V_ALVEOLAR,),
    "t#": (V_ALVEOLAR,), "d#": (V_ALVEOLAR,), "n-": (V_ALVEOLAR,), "t2": (V_ALVEOLAR,),
    "l": (V_L,), "l/": (V_L,), "l/2": (V_L,), "L": (V_L,),
    "k": (V_VELAR,), "g": (V_VELAR,), "N": (V_VELAR,), "x": (V_VELAR,), "?": (V_VELAR,),
    "h": (V_H,),
    "r": (V_R,), "r-": (V_R,), "*": (V_ALVEOLAR,),
    "w": (V_W,), "W": (V_W,), "j": (V_J,),
    "a": (V_AE,), "aa": (V_AE,), "a#": (V_AH,), "A:": (V_AA,), "A@": (V_AA, V_ER), "A": (V_AA,),
    "E": (V_EH,), "e": (V_EH,), "e@": (V_EH, V_SCHWA), "eI": (V_EH, V_IY),
    "i": (V_IY,), "i:": (V_IY,), "I": (V_IH,), "I#": (V_IH,), "I2": (V_IH,), "i@": (V_IY, V_SCHWA),
    "i@3": (V_IY, V_SCHWA), "IR": (V_IH, V_ER),
    "0": (V_AO,), "0#": (V_AO,), "O": (V_AO,), "O:": (V_AO,), "O@": (V_AO, V_ER), "o@": (V_OW, V_ER),
    "OI": (V_AO, V_IY), "oU": (V_OW, V_UW), "o": (V_OW,), "oU#": (V_OW, V_UW),
    "U": (V_UH,), "u:": (V_UW,), "U@": (V_UH, V_SCHWA), "u": (V_UW,),
    "@": (V_SCHWA,), "@2": (V_SCHWA,), "@5": (V_SCHWA,), "@L": (V_SCHWA, V_L), "3": (V_ER,),
    "3:": (V_ER,), "V": (V_AH,), "VR": (V_AH, V_ER),
    "aI": (V_AA, V_IY), "aI@": (V_AA, V_IY, V_SCHWA), "aI3": (V_AA, V_IY, V_ER), "aU": (V_AA, V_UW),
    "aU@": (V_AA, V_UW, V_SCHWA),
}


def phoneme_visemes(phoneme: str) -> tuple[Viseme, ...]:
    """Viseme sequence for an espeak-ng phoneme mnemonic (unknown ones: by first letter, else schwa)."""
    if phoneme in _EXACT:
        return _EXACT[phoneme]
    stripped = phoneme.rstrip(":;#0123456789-/")
    if stripped in _EXACT:
        return _EXACT[stripped]
    for n in (2, 1):
        if phoneme[:n] in _EXACT:
            return _EXACT[phoneme[:n]]
    return (V_SCHWA,)


def is_bilabial(phoneme: str) -> bool:
    return phoneme in ("p", "b", "m")


@dataclass(frozen=True)
class Style:
    """Per-speaker articulation style (drawn per seed)."""

    open_gain: float = 1.0       # how wide this speaker opens the jaw
    shape_gain: float = 1.0      # how strongly spread/round show
    anticipation_ms: float = 60.0  # dominance decay before a segment
    carryover_ms: float = 40.0     # dominance decay after a segment
    rest_press: float = 0.35


def _segments_to_units(phonemes: list[tuple[float, float, str]], rng: np.random.Generator,
                       style: Style) -> tuple[np.ndarray, ...]:
    starts, ends, targets, doms, reaches = [], [], [], [], []
    for start_ms, end_ms, ph in phonemes:
        vis = phoneme_visemes(ph)
        step = (end_ms - start_ms) / len(vis)
        for k, v in enumerate(vis):
            target = np.array(v.target, dtype=np.float64)
            # Per-token variation: nobody says a vowel the same way twice.
            target[0] *= style.open_gain * rng.uniform(0.85, 1.15)
            target[1:3] *= style.shape_gain * rng.uniform(0.85, 1.1)
            starts.append(start_ms + k * step)
            ends.append(start_ms + (k + 1) * step)
            targets.append(target)
            doms.append(v.dominance)
            reaches.append(v.reach)
    if not starts:
        return (np.zeros(0), np.zeros(0), np.zeros((0, N_PARAMS)), np.zeros(0), np.zeros(0))
    return np.array(starts), np.array(ends), np.array(targets), np.array(doms), np.array(reaches)


def mouth_trajectory(phonemes: list[tuple[float, float, str]], times_ms: np.ndarray,
                     rng: np.random.Generator, style: Style = Style()) -> np.ndarray:
    """Mouth parameters at ``times_ms``.

    phonemes: (start_ms, end_ms, phoneme) speech segments, sorted; time not covered is a pause.
    times_ms: (K,) sample times in ms on the same timeline.
    Returns (K, N_PARAMS) float64, parameter order ``PARAMS``.
    """
    times_ms = np.asarray(times_ms, dtype=np.float64)
    starts, ends, targets, doms, reaches = _segments_to_units(phonemes, rng, style)
    rest = REST.copy()
    rest[3] = style.rest_press
    # Pauses are segments too: the rest target's dominance grows with the pause length, so a
    # 60 ms word gap barely moves the mouth while a 400 ms pause lets it settle.
    p_starts, p_ends = _pauses(starts, ends, times_ms)
    p_len = p_ends - p_starts
    p_dom = 0.05 + 3.0 * np.clip((p_len - 80.0) / 250.0, 0.0, 1.0)
    all_starts = np.concatenate([starts, p_starts])
    all_ends = np.concatenate([ends, p_ends])
    all_targets = np.concatenate([targets, np.repeat(rest[None], len(p_starts), axis=0)])
    all_doms = np.concatenate([doms, p_dom])
    all_reach = np.concatenate([reaches, np.ones(len(p_starts))])

    # Weights are negligible beyond a couple of seconds, so long clips are blended chunk by chunk
    # against nearby units only (memory stays O(chunk x local units)).
    params = np.empty((len(times_ms), N_PARAMS))
    reach_ms = 3000.0
    for lo in range(0, len(times_ms), _CHUNK):
        t = times_ms[lo:lo + _CHUNK, None]
        near = (all_ends > t.min() - reach_ms) & (all_starts < t.max() + reach_ms)
        before = np.clip(all_starts[near][None] - t, 0.0, None)  # > 0 while the unit is still to come
        after = np.clip(t - all_ends[near][None], 0.0, None)     # > 0 once it is over
        reach = all_reach[near][None]
        weight = all_doms[near][None] * np.exp(-before / (style.anticipation_ms * reach)
                                               - after / (style.carryover_ms * reach))
        weight += 1e-12
        params[lo:lo + _CHUNK] = weight @ all_targets[near] / weight.sum(axis=1, keepdims=True)
    # Lips really close on p/b/m and really touch the teeth on f/v, however short the segment:
    # blending alone would leave them half-way. Raised-cosine envelopes around each such core.
    close = _contact_envelope(starts, ends, targets[:, 3] if len(targets) else targets, times_ms)
    params[:, 0] *= 1.0 - close
    params[:, 3] = np.maximum(params[:, 3], close)
    tuck = _contact_envelope(starts, ends, targets[:, 4] if len(targets) else targets, times_ms)
    params[:, 4] = np.maximum(params[:, 4], tuck)
    params[:, 0] = np.where(tuck > 0, np.minimum(params[:, 0], 0.12 + 0.5 * (1 - tuck)), params[:, 0])
    return params


def _contact_envelope(starts: np.ndarray, ends: np.ndarray, amount: np.ndarray, times_ms: np.ndarray,
                      ramp_ms: float = 45.0) -> np.ndarray:
    """1 inside the middle of every segment with amount > 0.5, falling to 0 over ``ramp_ms`` outside."""
    env = np.zeros(len(times_ms))
    if not len(amount):
        return env
    order = np.argsort(times_ms, kind="stable")
    sorted_t = times_ms[order]
    for i in np.nonzero(amount > 0.5)[0]:
        dur = ends[i] - starts[i]
        core_lo = starts[i] + 0.2 * dur
        core_hi = max(ends[i] - 0.2 * dur, core_lo + 1.0)
        a, b = np.searchsorted(sorted_t, [core_lo - ramp_ms, core_hi + ramp_ms])
        idx = order[a:b]
        t = times_ms[idx]
        d = np.maximum(core_lo - t, 0) + np.maximum(t - core_hi, 0)
        env[idx] = np.maximum(env[idx], 0.5 + 0.5 * np.cos(np.pi * np.minimum(d, ramp_ms) / ramp_ms))
    return env


def _pauses(starts: np.ndarray, ends: np.ndarray, times_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gaps between speech units, plus the open-ended stretches before the first and after the last."""
    lo = float(times_ms.min()) - 1000.0 if len(times_ms) else 0.0
    hi = float(times_ms.max()) + 1000.0 if len(times_ms) else 0.0
    if len(starts) == 0:
        return np.array([lo]), np.array([hi])
    order = np.argsort(starts)
    s, e = starts[order], ends[order]
    gap_starts = np.concatenate([[min(lo, s[0])], e])
    gap_ends = np.concatenate([s, [max(hi, e[-1])]])
    keep = gap_ends - gap_starts > 1.0
    return gap_starts[keep], gap_ends[keep]
