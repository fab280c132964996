"""The classical baseline (worker/evaluation/classical.py) finds a known lag on signals built so
that mouth openness follows the audio envelope."""

import numpy as np
import pytest

from worker.evaluation import classical as cl
from worker.tracking.geometry import LIP_POS

FPS, SR = 25.0, 16000


def _clip(seed: int, seconds: float = 8.0, audio_lag_frames: int = 0):
    """Audio = noise under a syllable-rate envelope; openness = the same envelope at frame times,
    the audio delayed by ``audio_lag_frames``."""
    rng = np.random.default_rng(seed)
    n_frames = int(seconds * FPS)
    env_frames = np.clip(np.convolve(rng.random(n_frames + 40) > 0.6, np.ones(4) / 4, "same"), 0, 1)
    openness = env_frames[20:20 + n_frames]
    env_audio = np.interp(np.arange(int(seconds * SR)) / SR * FPS - audio_lag_frames,
                          np.arange(n_frames + 40) - 20, env_frames)
    audio = (env_audio * rng.standard_normal(env_audio.size) * 0.3).astype(np.float32)
    o = (openness - openness.mean()) / (openness.std() + 1e-6)
    return o, cl.audio_frame_features(audio, FPS, n_frames)


def test_finds_the_lag_and_its_sign():
    weights = cl.fit_ridge([_clip(s) for s in range(4)])
    for lag in (0, 3, -2):
        o, f = _clip(100 + lag, audio_lag_frames=lag)
        est = cl.best_lag(o, f, weights)
        assert est is not None and est.lag_frames == lag and est.correlation > 0.5


def test_leave_one_speaker_out_and_short_clips():
    clips = {f"c{i}": _clip(i) for i in range(4)}
    clips["late"] = _clip(9, audio_lag_frames=2)
    out = cl.own_offsets(clips, {n: n for n in clips})
    assert out["late"].lag_frames == 2
    assert all(out[f"c{i}"].lag_frames == 0 for i in range(4))
    o, f = _clip(1, seconds=1.0)
    assert cl.best_lag(o, f, cl.fit_ridge([_clip(2)])) is None  # too short to judge
    with pytest.raises(ValueError):
        cl.fit_ridge([])


def test_mouth_openness_is_gap_over_width():
    lm = np.zeros((3, 40, 2))
    lm[:, LIP_POS[61]] = [0.4, 0.5]
    lm[:, LIP_POS[291]] = [0.6, 0.5]
    lm[:, LIP_POS[13], 1] = 0.5
    lm[:, LIP_POS[14], 1] = [0.5, 0.55, 0.6]  # closed, half open, open
    lm[:, LIP_POS[13], 0] = lm[:, LIP_POS[14], 0] = 0.5
    o = cl.mouth_openness(lm, (100, 100))
    assert o[0] < o[1] < o[2]
