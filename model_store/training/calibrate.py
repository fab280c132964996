"""Fit the similarity -> score and peak -> confidence maps on held-out windows, and report ECE.

Positives: windows scored with their own audio shifted by a known amount. Negatives for the score:
the same frames with another clip's audio. The confidence target: the offset is right within
+/-1 frame (never, for a mismatched pair). Half the clips fit the maps, the other half measure ECE.
"""

from __future__ import annotations

import numpy as np

from model_store.bundle import Calibration, Manifest
from model_store.training.data import Clip
from worker.evaluation.shifts import shift_audio
from worker.scoring.calibration import confidence_features, expected_calibration_error, fit_logistic
from worker.scoring.types import AudioSpan, FrameSpan, Kind, ScoreRequest


def window_features(scorer, clips: list[Clip], rng: np.random.Generator, per_clip: int = 12):
    """Score random windows (with random shifts) and mismatched pairs. Returns rows of
    (best, margin, n_frames, matched, correct)."""
    rows = []
    for ci, clip in enumerate(clips):
        frame_ms = 1000.0 / clip.fps
        for _ in range(per_clip):
            n = int(rng.choice([16, 25, 30]))
            if clip.n_frames < n + 2:
                n = clip.n_frames - 2
            if n < 8:
                continue
            s = int(rng.integers(0, clip.n_frames - n + 1))
            d_frames = int(rng.integers(-5, 6))
            matched = rng.random() < 0.5 or len(clips) < 2
            if matched:
                audio = shift_audio(clip.audio, d_frames * frame_ms, 16000)
            else:
                other = clips[(ci + int(rng.integers(1, len(clips)))) % len(clips)]
                audio = np.resize(other.audio, clip.audio.shape[0]).astype(np.float32)
            marks = None if clip.landmarks is None else clip.landmarks[s: s + n]
            req = ScoreRequest(Kind.WINDOW, FrameSpan(clip.rois[s: s + n], clip.fps, s,
                                                      present=clip.present[s: s + n], landmarks=marks),
                               AudioSpan(audio.astype(np.float32), 16000, 0))
            r = scorer.score(req)
            if r.score is None or not r.curve:
                continue
            best = float(r.similarity) if r.similarity is not None else float(np.nanmax(np.array(r.curve)))
            correct = matched and abs(r.offset_ms - d_frames * frame_ms) <= frame_ms + 1e-6
            rows.append((best, float(r.margin), n, float(matched), float(correct)))
    return np.array(rows, dtype=np.float64)


def fit_calibration(model, manifest: Manifest, clips: list[Clip], seed: int = 0) -> Calibration:
    from worker.scoring.scorer import ModelScorer

    scorer = ModelScorer(manifest, model.state_dict(), device="cpu")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(clips))
    half = len(clips) // 2
    fit_clips = [clips[i] for i in order[:half]]
    test_clips = [clips[i] for i in order[half:]]
    fit = window_features(scorer, fit_clips, rng)
    test = window_features(scorer, test_clips, rng)
    w, b = fit_logistic(fit[:, 0], fit[:, 3])
    xf = np.stack([confidence_features(m, be, int(n)) for be, m, n, _, _ in fit])
    cw, cb = fit_logistic(xf, fit[:, 4])
    cal = Calibration(score_a=float(w[0]), score_b=float(b), conf_w=tuple(float(x) for x in cw), conf_b=float(cb),
                      fitted_on=f"{len(fit)} held-out windows ({len(fit_clips)} clips)")
    # ECE on the other half
    p_score = 1 / (1 + np.exp(-(cal.score_a * test[:, 0] + cal.score_b)))
    xt = np.stack([confidence_features(m, be, int(n)) for be, m, n, _, _ in test])
    p_conf = 1 / (1 + np.exp(-(xt @ np.asarray(cal.conf_w) + cal.conf_b)))
    from dataclasses import replace

    return replace(cal, ece_score=round(expected_calibration_error(p_score, test[:, 3]), 4),
                   ece_confidence=round(expected_calibration_error(p_conf, test[:, 4]), 4),
                   fitted_on=cal.fitted_on + f"; ECE measured on {len(test)} windows of {len(test_clips)} other clips")
