"""The bundled model on freshly generated synthetic clips (seeds the training never sees):
offsets and their sign are recovered, also under low light, blur and occlusion; silence is null."""

import numpy as np
import pytest

from worker.clipscore import score_clip
from worker.scoring.loader import load_default_scorer
from worker.scoring.routed import BandRoutedScorer
from worker.scoring.scorer import ModelScorer
from worker.scoring.types import Direction, Label
from worker.synth import SynthOptions, generate_clip


@pytest.fixture(scope="module")
def scorer():
    s = load_default_scorer(device="cpu")
    # the bundled model with its narrowband companion (routed.py), never the heuristic fallback
    assert isinstance(s, BandRoutedScorer) and isinstance(s.wide, ModelScorer), \
        "the bundled model must load (no heuristic fallback)"
    return s


def _score(scorer, seed, offset_ms, **opts):
    clip = generate_clip(seed, 4.0, offset_ms, SynthOptions(**opts))
    return score_clip(scorer, clip.frames, clip.fps, clip.audio), clip


@pytest.mark.parametrize("seed,offset_ms,fps", [(11, 0.0, 25.0), (12, 120.0, 25.0), (13, -120.0, 25.0),
                                                (14, 200.0, 30.0), (15, -160.0, 30.0), (16, 80.0, 25.0)])
def test_offset_and_sign_recovered(scorer, seed, offset_ms, fps):
    summary, _ = _score(scorer, seed, offset_ms, fps=fps)
    frame_ms = 1000.0 / fps
    assert summary.offset_ms is not None
    assert abs(summary.offset_ms - offset_ms) <= frame_ms + 1e-6, summary.offset_ms
    if offset_ms >= 2 * frame_ms:
        assert summary.direction == Direction.AUDIO_LAGS.value
    elif offset_ms <= -2 * frame_ms:
        assert summary.direction == Direction.AUDIO_LEADS.value
    else:
        assert summary.direction == Direction.IN_SYNC.value
    assert summary.score > 0.5
    good = [w for w in summary.windows if abs(w.offset_ms - offset_ms) <= frame_ms + 1e-6]
    assert len(good) >= len(summary.windows) - 1


@pytest.mark.parametrize("degradation", ["low_light", "motion_blur", "occlusion"])
def test_robust_to_degradations(scorer, degradation):
    summary, _ = _score(scorer, 21, 80.0, **{degradation: True})
    assert abs(summary.offset_ms - 80.0) <= 40.0 + 1e-6


def test_mismatched_audio_scores_lower(scorer):
    a = generate_clip(31, 4.0, 0.0)
    b = generate_clip(32, 4.0, 0.0)
    matched = score_clip(scorer, a.frames, a.fps, a.audio)
    mismatched = score_clip(scorer, a.frames, a.fps, b.audio)
    assert mismatched.score < matched.score
    assert mismatched.confidence < matched.confidence


def test_silence_is_labelled(scorer):
    clip = generate_clip(41, 3.0, 0.0)
    quiet = np.zeros_like(clip.audio)
    summary = score_clip(scorer, clip.frames, clip.fps, quiet)
    assert summary.windows and all(w.label is Label.SILENCE and w.score is None for w in summary.windows)
    assert all(b.label is Label.SILENCE and b.score is None and b.confidence == 0 for b in summary.blocks)
    assert summary.label == Label.SILENCE.value and summary.offset_ms is None
