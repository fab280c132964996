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

Noise added after the band was cut (a phone call recorded through a noisy chain, dither) fills 5-7
kHz with energy that is not speech: white noise at -60 dBFS put 97% of the telephone spans' ratio
above the line (-70 dBFS: 63%). So the ratio counts only the high band's speech part: what each
speech frame holds above twice (3 dB over) the mean of the span's quietest quarter of frames. A
full-band voice's high band follows its fricatives and bursts, many dB above that floor; stationary
noise stays within about 3 dB of it, and so counts nothing. Where the high band as a whole is within
20 dB of the low band, noise that loud can bury a full-band voice's own high band (the dev clips'
weakest spans read -30 to -39 dB clean), so such audio stays full band. On the same spans, through 8
kHz plus white or pink noise (-70, -60 dBFS) 97-100% of judged spans read narrowband (-50 dBFS: 63%
white, 90% pink), clean through 8 kHz and 32 kbit/s MP3 all of them as before; full band stays 0%
clean and at 32 kbit/s MP3, and 0-0.7% with white noise at -60 to -40 dBFS or white or pink at 10-20
dB SNR (pink at 20 dB in a review's run: 0.9%), and 1.4% (6 of 429 spans, five of them one clip,
latentsync_demo1) with hiss above 4 kHz 22-30 dB below the speech: spans whose own high band is
30-39 dB down, buried, where the old test read none narrowband. A voice buried under hiss and a
phone call under hiss look alike in 5-7 kHz. 16 kbit/s MP3 4.6% as before (lame
leaves some spans nothing above 5 kHz). Noise that went through MP3 after it was added is no longer
stationary: 52% of such spans (-60 dBFS, 32 kbit/s) read narrowband. The floor costs about 10 us of
a 1-s call's 80-90 here.
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
# the high band's speech part (below) this far below the low band, or further: narrowband. The dev
# clips' gap is -38.8 dB (full band) to -47.7 (through 8 kHz); the line sits nearer the narrow side
# because the two mistakes differ: a telephone job read full-band gets the full-band model's old
# reading, while compressed full-band audio (16 kbit/s MP3, -40 to -44 dB) read narrowband would
# flip between the models window by window (a review: 7 of 50 such clips did at -42)
NARROWBAND_RATIO_DB = -45.0
# the high band's floor: the mean of its quietest quarter of frames; what stays within this factor
# of it (3 dB) is stationary noise, not speech
HIGH_FLOOR_SHARE = 0.25
HIGH_FLOOR_FACTOR = 2.0
# ... and only a high band this far below the low band, or further, may be called noise: louder
# noise can bury a full-band voice's own high band (the dev clips' weakest spans, -30 to -39 dB)
NOISY_RATIO_DB = -20.0
NARROWBAND_RATE_HZ = 11025  # sampled below this there is no high band at all


def high_band_ratio_db(samples: np.ndarray, sample_rate: int, present: np.ndarray | None = None) -> float | None:
    """High-band over low-band energy (dB) of ``samples`` (mono float in [-1, 1]) over its speech
    frames; None when there are fewer than MIN_SPEECH_FRAMES of them or the rate has no high band.
    ``present``: False where the audio never arrived (zero-filled); a frame holding such a sample
    is not judged (the step into a gap is a click, with energy across the band)."""
    levels = band_levels_db(samples, sample_rate, present)
    return None if levels is None else levels[0]


def band_levels_db(samples: np.ndarray, sample_rate: int,
                   present: np.ndarray | None = None) -> tuple[float, float] | None:
    """(whole, speech part): the high band's energy over the low band's (dB) over the speech
    frames, all of it and only what rises above the high band's own floor (HIGH_FLOOR_FACTOR times
    the mean of its quietest HIGH_FLOOR_SHARE of frames: stationary noise added after the band
    was cut); None as in high_band_ratio_db."""
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
    low = power[:, lo0:lo1].sum(axis=1, dtype=np.float64)
    high = power[:, hi0:hi1].sum(axis=1, dtype=np.float64)
    # dBFS of the low band: a full-scale sine's frame sums to about n^2 / 8 under the Hann window
    low_db = 10.0 * np.log10(np.maximum(low, 1e-20) / (n * n / 8.0))
    speech = (low_db >= SPEECH_FLOOR_DB) & (low_db >= low_db.max() - SPEECH_RANGE_DB)
    if int(speech.sum()) < MIN_SPEECH_FRAMES:
        return None
    k = max(1, int(high.shape[0] * HIGH_FLOOR_SHARE))  # every judged frame, speech or not
    floor = np.partition(high, k - 1)[:k].mean()
    low_sum = low[speech].sum()
    whole_db = 10.0 * np.log10(max(high[speech].sum(), 1e-30) / low_sum)
    part = np.maximum(high[speech] - HIGH_FLOOR_FACTOR * floor, 0.0).sum()
    return float(whole_db), float(10.0 * np.log10(max(part, 1e-30) / low_sum))


@functools.lru_cache(maxsize=8)
def _hann(n: int) -> np.ndarray:
    return np.hanning(n).astype(np.float32)


def is_narrowband(samples: np.ndarray, sample_rate: int, present: np.ndarray | None = None) -> bool | None:
    """True: telephone-band speech; False: full-band speech; None: too little speech to tell.
    Audio sampled below NARROWBAND_RATE_HZ is narrowband whatever it holds. ``present``: as in
    high_band_ratio_db."""
    if sample_rate < NARROWBAND_RATE_HZ:
        return True
    levels = band_levels_db(samples, sample_rate, present)
    if levels is None:
        return None
    whole_db, speech_db = levels
    # the speech part is never above the whole, so a high band quiet as a whole stays narrowband
    return speech_db <= NARROWBAND_RATIO_DB and whole_db <= NOISY_RATIO_DB
