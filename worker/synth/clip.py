"""``generate_clip``: a synthetic talking-mouth clip (mouth-ROI frames + speech) for one seed.

Offset convention (CONTRACT.md): audio delayed by D ms means the sound for the mouth shape shown at
video time t is heard at t + D. The undelayed speech is laid out on the video timeline from
``ROLL_MS`` before the clip to ``ROLL_MS`` after it; the clip's audio is that speech read D ms
earlier, so a shift pulls in real speech rather than silence (silence only when |D| > ROLL_MS).
The same seed gives the same frames and the same undelayed speech for every D.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.signal import lfilter

from worker.synth import degrade
from worker.synth.render import MouthRenderer, random_look
from worker.synth.speech import build_speech
from worker.synth.text import random_voice
from worker.synth.visemes import Style, mouth_trajectory

ROLL_MS = 1000.0
_EXPOSURE_OFFSETS_MS = np.array([-8.0, -4.0, 0.0, 4.0, 8.0])  # mouth averaged over the exposure
_VOICED_DB = -35.0  # frame RMS relative to the loudest frame of the clip's speech


@dataclass(frozen=True)
class SynthOptions:
    fps: float = 25.0
    sample_rate: int = 16000
    roi_size: int = 96            # square mouth ROI, pixels
    low_light: bool = False
    motion_blur: bool = False
    occlusion: bool = False       # partial occlusion of the mouth (bar / hand-like blob)
    noise: bool = False           # sensor noise
    head_motion: bool = False     # ROI jitter / scale / small rotation over time
    silence_gaps: bool = False    # pauses of 0.4-1.5 s with a resting mouth and silent audio
    audio_noise_db: float | None = None  # optional background noise SNR


@dataclass(frozen=True)
class SynthClip:
    """frames: uint8 (T, roi, roi, 3) RGB, T = round(seconds * fps); frame i is at i * 1000 / fps ms.
    audio: float32 (N,) mono in [-1, 1] at sample_rate, N = round(seconds * sample_rate).
    phonemes: (start_ms, end_ms, phoneme) on the VIDEO timeline (espeak-ng mnemonics), speech
    segments overlapping the clip; gaps between them are pauses.
    voiced: (T,) bool, frames whose undelayed speech is non-silent."""

    frames: np.ndarray
    audio: np.ndarray
    fps: float
    sample_rate: int
    audio_offset_ms: float
    seed: int
    phonemes: list[tuple[float, float, str]] = field(default_factory=list)
    voiced: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))


def _check(seed: int, seconds: float, audio_offset_ms: float, options: SynthOptions) -> None:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not np.isfinite(seconds) or not 0 < seconds <= 600:
        raise ValueError(f"seconds must be in (0, 600], got {seconds!r}")
    if not np.isfinite(audio_offset_ms) or abs(audio_offset_ms) > 10_000:
        raise ValueError(f"audio_offset_ms must be finite and within +/-10000, got {audio_offset_ms!r}")
    if not np.isfinite(options.fps) or not 1 <= options.fps <= 120:
        raise ValueError(f"fps must be in [1, 120], got {options.fps!r}")
    if not 8000 <= options.sample_rate <= 48000:
        raise ValueError(f"sample_rate must be in [8000, 48000], got {options.sample_rate!r}")
    if not 16 <= options.roi_size <= 512:
        raise ValueError(f"roi_size must be in [16, 512], got {options.roi_size!r}")
    if round(seconds * options.fps) < 1:
        raise ValueError(f"{seconds} s at {options.fps} fps is less than one frame")


def generate_clip(seed: int, seconds: float, audio_offset_ms: float = 0.0,
                  options: SynthOptions = SynthOptions()) -> SynthClip:
    """Deterministic synthetic clip for ``seed``; audio delayed by ``audio_offset_ms`` (see module doc)."""
    _check(seed, seconds, audio_offset_ms, options)
    fps, sr = float(options.fps), int(options.sample_rate)
    n_frames = round(seconds * fps)
    n_samples = round(seconds * sr)
    # Independent streams so that switching a degradation on does not change speech or face.
    seeds = np.random.SeedSequence(int(seed)).spawn(8)
    rng_text, rng_look, rng_style, rng_vis, rng_audio = (np.random.default_rng(s) for s in seeds[:5])

    voice = random_voice(rng_text)
    speech = build_speech(rng_text, voice, -ROLL_MS, seconds * 1000.0 + ROLL_MS, sr, options.silence_gaps)

    # --- audio: undelayed speech read audio_offset_ms earlier --------------------------------
    shift = round((-audio_offset_ms - speech.start_ms) * sr / 1000.0)  # source index of sample 0
    audio = np.zeros(n_samples, np.float32)
    lo, hi = max(0, -shift), min(n_samples, len(speech.audio) - shift)
    if hi > lo:
        audio[lo:hi] = speech.audio[lo + shift:hi + shift]
    if options.audio_noise_db is not None:
        audio = _add_noise(audio, options.audio_noise_db, rng_audio)

    # --- voiced frames from the undelayed speech ---------------------------------------------
    frame_ms = np.arange(n_frames) * 1000.0 / fps
    voiced = _voiced_frames(speech, frame_ms, fps)

    # --- mouth ---------------------------------------------------------------------------------
    style = Style(open_gain=rng_style.uniform(0.75, 1.2), shape_gain=rng_style.uniform(0.7, 1.15),
                  anticipation_ms=rng_style.uniform(45, 75), carryover_ms=rng_style.uniform(30, 50),
                  rest_press=rng_style.uniform(0.2, 0.5))
    sample_ms = (frame_ms[:, None] + _EXPOSURE_OFFSETS_MS[None]).ravel()
    params = mouth_trajectory(speech.phonemes, sample_ms, rng_vis, style)
    params = params.reshape(n_frames, len(_EXPOSURE_OFFSETS_MS), -1).mean(axis=1)

    look = random_look(rng_look)
    renderer = MouthRenderer(look, options.roi_size)
    frames = _render_frames(renderer, params, frame_ms / 1000.0, options, seeds[5], look)

    phonemes = [(a, b, p) for a, b, p in speech.phonemes if b > 0 and a < seconds * 1000.0]
    return SynthClip(frames=frames, audio=audio, fps=fps, sample_rate=sr,
                     audio_offset_ms=float(audio_offset_ms), seed=int(seed), phonemes=phonemes,
                     voiced=voiced)


def _render_frames(renderer: MouthRenderer, params: np.ndarray, times_s: np.ndarray,
                   options: SynthOptions, seed_seq: np.random.SeedSequence, look) -> np.ndarray:
    roi = options.roi_size
    sub = [np.random.default_rng(s) for s in seed_seq.spawn(5)]  # one stream per degradation
    head = degrade.HeadMotion(sub[0], times_s, roi) if options.head_motion else None
    blur = degrade.MotionBlur(sub[1], times_s, roi) if options.motion_blur else None
    occ = degrade.Occluder(sub[2], times_s, look) if options.occlusion else None
    low = degrade.LowLight(sub[3]) if options.low_light else None
    noise = degrade.SensorNoise(sub[4]) if options.noise else None
    out = np.empty((len(params), roi, roi, 3), np.uint8)
    for i, p in enumerate(params):
        frame = renderer.render(p, occ.draw(i) if occ is not None else None)
        if head is not None:
            frame = head.apply(frame, i)
        if blur is not None:
            frame = blur.apply(frame, i)
        if low is not None:
            frame = low.apply(frame)
        if noise is not None:
            frame = noise.apply(frame)
        out[i] = np.clip(frame + 0.5, 0, 255).astype(np.uint8)
    return out


def _voiced_frames(speech, frame_ms: np.ndarray, fps: float) -> np.ndarray:
    sr = speech.sample_rate
    x = speech.audio.astype(np.float64)
    c = np.concatenate([[0.0], np.cumsum(x * x)])
    half = 500.0 / fps
    lo = np.clip(np.round((frame_ms - half - speech.start_ms) * sr / 1000).astype(int), 0, len(x))
    hi = np.clip(np.round((frame_ms + half - speech.start_ms) * sr / 1000).astype(int), 0, len(x))
    rms = np.sqrt((c[hi] - c[lo]) / np.maximum(hi - lo, 1))
    ref = np.sqrt(np.max(np.convolve(x * x, np.ones(int(sr / fps)) / int(sr / fps), mode="valid"))) \
        if len(x) > sr / fps else np.sqrt(np.mean(x * x))
    return rms > ref * 10 ** (_VOICED_DB / 20) if ref > 0 else np.zeros(len(frame_ms), bool)


def _add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Add pinkish background noise ``snr_db`` below the speech RMS (measured where speech is)."""
    if not np.isfinite(snr_db):
        raise ValueError(f"audio_noise_db must be finite, got {snr_db!r}")
    active = np.abs(audio) > 1e-4
    speech_rms = float(np.sqrt(np.mean(audio[active] ** 2))) if active.any() else 0.05
    white = rng.normal(0, 1, len(audio))
    # White plus a one-pole low-passed copy: a cheap 1/f-like tilt, like room and fan noise.
    noise = lfilter([1.0], [1.0, -0.95], white) * 0.3 + white * 0.5
    noise *= speech_rms / 10 ** (snr_db / 20) / (np.sqrt(np.mean(noise**2)) + 1e-12)
    return np.clip(audio + noise, -1, 1).astype(np.float32)
