"""Is a stretch of audio telephone-band? (pure numpy: no torch, no I/O)

The networks learned speech sampled at 16 kHz and lean on its 4-8 kHz band (fricatives, the
bursts of plosives). Audio that went through 8 kHz on its way (a telephone line, an 8 kHz
recording resampled up) has nothing there, and the full-band model reads it less surely
(docs/training.md, session 20). A scorer holding a narrowband model as well
(``worker.scoring.routed``) asks this module which one a job's audio wants.

The test: over the frames where someone speaks, the energy of 5-7 kHz against 1-3.4 kHz. The
band starts at 5 kHz, clear of the transition of the 4 kHz anti-alias filter, which a gentle
resampler (torchaudio's default) leaves only 15-20 dB down. On the 50 dev clips' 1-s spans (the
router judges a job's own second: routed.job_audio) the full band read -38.8 dB and up, the same
audio through 8 kHz (degrade.telephone, the gentle kind) -47.7 dB and down; ffmpeg's resampler
leaves -90 dB. Audio with too little speech to tell (silence, a breath) gets no verdict: the caller
keeps its default.
"""

from __future__ import annotations

import functools

import numpy as np

FRAME_SAMPLES_16K = 512  # 32 ms at 16 kHz
LOW_BAND_HZ = (1000.0, 3400.0)  # what every telephone passes
HIGH_BAND_HZ = (5000.0, 7000.0)  # what none does, clear of a 4 kHz edge's transition
SPEECH_FLOOR_DB = -55.0  # a frame's low-band level (dBFS) below this is not speech to judge by
SPEECH_RANGE_DB = 30.0  # ... and so is one more than this below the loudest frame's
MIN_SPEECH_FRAMES = 8  # a quarter second of speech: fewer gives no verdict
# high band this far below the low band, or further: narrowband. The dev clips' gap is -38.8 dB
# (full band) to -47.7 (through 8 kHz); the line sits nearer the narrow side because the two
# mistakes differ: a telephone job read full-band gets the full-band model's old reading, while
# compressed full-band audio (16 kbit/s MP3, -40 to -44 dB) read narrowband would flip between the
# models window by window (a review: 7 of 50 such clips did at -42)
NARROWBAND_RATIO_DB = -45.0
NARROWBAND_RATE_HZ = 11025  # sampled below this there is no high band at all


def high_band_ratio_db(samples: np.ndarray, sample_rate: int, present: np.ndarray | None = None) -> float | None:
    """High-band over low-band energy (dB) of ``samples`` (mono float in [-1, 1]) over its speech
    frames; None when there are fewer than MIN_SPEECH_FRAMES of them or the rate has no high band.
    ``present``: False where the audio never arrived (zero-filled); a frame holding such a sample
    is not judged (the step into a gap is a click, with energy across the band)."""
    if sample_rate < NARROWBAND_RATE_HZ:
        return None
    n = max(64, round(FRAME_SAMPLES_16K * sample_rate / 16000))
    x = np.asarray(samples, dtype=np.float32)
    n_frames = x.shape[0] // n  # side by side, not overlapping: every job pays for this
    if n_frames < MIN_SPEECH_FRAMES:
        return None
    frames = x[: n_frames * n].reshape(n_frames, n)
    if present is not None and np.shape(present) != x.shape:
        return None  # not this audio's mask (the scorer's validation refuses such a request)
    if present is not None:
        whole = np.asarray(present, dtype=bool)[: n_frames * n].reshape(n_frames, n).all(axis=1)
        if int(whole.sum()) < MIN_SPEECH_FRAMES:
            return None
        frames = frames[whole]
    spec = np.fft.rfft(frames * _hann(n), axis=1)
    power = spec.real ** 2 + spec.imag ** 2
    lo0, lo1, hi0, hi1 = np.searchsorted(np.fft.rfftfreq(n, 1.0 / sample_rate), (*LOW_BAND_HZ, *HIGH_BAND_HZ))
    low = power[:, lo0:lo1].sum(axis=1)
    high = power[:, hi0:hi1].sum(axis=1)
    # dBFS of the low band: a full-scale sine's frame sums to about n^2 / 8 under the Hann window
    low_db = 10.0 * np.log10(np.maximum(low, 1e-20) / (n * n / 8.0))
    speech = (low_db >= SPEECH_FLOOR_DB) & (low_db >= low_db.max() - SPEECH_RANGE_DB)
    if int(speech.sum()) < MIN_SPEECH_FRAMES:
        return None
    return float(10.0 * np.log10(max(high[speech].sum(), 1e-30) / low[speech].sum()))


@functools.lru_cache(maxsize=8)
def _hann(n: int) -> np.ndarray:
    return np.hanning(n).astype(np.float32)


def is_narrowband(samples: np.ndarray, sample_rate: int, present: np.ndarray | None = None) -> bool | None:
    """True: telephone-band speech; False: full-band speech; None: too little speech to tell.
    Audio sampled below NARROWBAND_RATE_HZ is narrowband whatever it holds. ``present``: as in
    high_band_ratio_db."""
    if sample_rate < NARROWBAND_RATE_HZ:
        return True
    ratio_db = high_band_ratio_db(samples, sample_rate, present)
    if ratio_db is None:
        return None
    return ratio_db <= NARROWBAND_RATIO_DB
