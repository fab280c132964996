"""The lip-landmark view as a second input of one network (``make_model --shape-input``):
per-frame mouth-shape measures added to the frame CNN's features, used where a stream carries the
tracker's 40 lip landmarks and ignored where it does not."""

import json

import numpy as np
import pytest
import torch

from model_store.architectures import build
from model_store.bundle import AudioSpec, Calibration, Manifest, VideoSpec
from model_store.training.data import Batch, Clip
from model_store.training.train import shape_visible
from worker.scoring.postprocess import ScorerConfig
from worker.scoring.scorer import ModelScorer
from worker.scoring.types import AudioSpan, FrameSpan, Kind, ScoreRequest
from worker.synth import SynthOptions, generate_clip
from worker.tracking.geometry import N_SHAPE_FEATURES

PARAMS = {"video_channels": [8, 8, 16, 16], "shape_features": N_SHAPE_FEATURES}


def _scorer(params=PARAMS, seed: int = 3) -> ModelScorer:
    torch.manual_seed(seed)
    model = build("syncnet_lite_v1", params)
    if model.shape_encoder is not None:  # a trained encoder's last layer is far from zero
        torch.nn.init.normal_(model.shape_encoder.net[2].weight, std=1.0)
    man = Manifest("shape", "0.0.1", "syncnet_lite_v1", params, 128, AudioSpec(), VideoSpec(), Calibration(),
                   "weights.safetensors", "")
    return ModelScorer(man, model.state_dict(), ScorerConfig(cpu_jit=False), device="cpu")


def _lips(n: int, seed: int = 0) -> np.ndarray:
    """(n, 40, 2) lip landmarks that open and close (any 40 points give finite shape measures)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.3, 0.7, (40, 2))
    opening = 1 + 0.3 * np.sin(np.arange(n) / 2.0)
    marks = np.repeat(base[None], n, axis=0)
    marks[..., 1] = 0.5 + (marks[..., 1] - 0.5) * opening[:, None]
    return marks.astype(np.float32)


@pytest.fixture(scope="module")
def clip():
    return generate_clip(5, 1.5, 40.0, SynthOptions())


def _request(clip, landmarks=None, face_present=None) -> ScoreRequest:
    frames = FrameSpan(clip.frames[:25], clip.fps, 0, landmarks=landmarks, face_present=face_present)
    return ScoreRequest(Kind.WINDOW, frames, AudioSpan(clip.audio, 16000, 0))


def test_a_pixel_network_ignores_landmarks_and_a_shape_network_uses_them(clip):
    pixels = _scorer({"video_channels": [8, 8, 16, 16]})
    lips = _lips(25)
    plain = pixels.score(_request(clip)).curve
    assert len(plain) == 11 and plain == pixels.score(_request(clip, lips)).curve
    shaped = _scorer()
    without, with_ = shaped.score(_request(clip)).curve, shaped.score(_request(clip, lips)).curve
    assert np.max(np.abs(np.array(without) - np.array(with_))) > 1e-3


def test_landmarks_of_occluded_frames_count_as_none(clip):
    scorer = _scorer()
    covered = np.ones(25, dtype=bool)
    none = scorer.score(_request(clip)).curve
    hidden = scorer.score(ScoreRequest(Kind.WINDOW, FrameSpan(clip.frames[:25], clip.fps, 0, landmarks=_lips(25),
                                                              occluded=covered), AudioSpan(clip.audio, 16000, 0))).curve
    assert len(none) == 11  # -200..+200 ms at 25 fps: a curve is still computed for occluded frames
    assert hidden == pytest.approx(none, abs=1e-6)


def test_landmarks_of_another_layout_or_on_frames_without_a_face_count_as_none(clip):
    scorer = _scorer()
    none = scorer.score(_request(clip)).curve
    # 20 points per frame: not the tracker's 40-point lip layout, so not read as one
    assert scorer.score(_request(clip, _lips(25)[:, :20])).curve == pytest.approx(none, abs=1e-6)
    no_face = np.zeros(25, dtype=bool)
    no_face[:3] = True  # too few frames with a face to score: compare the features instead
    marked = scorer._prepare(_request(clip, _lips(25), no_face))
    _, read = scorer._lip_shapes([(marked, None)], [(0, t) for t in range(25)])
    assert read[:3].all() and not read[3:].any()  # landmarks on frames without a face are not read
    # nor are those frames encoded: they repeat the last frame seen (ModelScorer._frame_features)
    feats_none = scorer._frame_features([(scorer._prepare(_request(clip, face_present=no_face)), None)])[0]
    feats_hidden = scorer._frame_features([(marked, None)])[0]
    ctx = scorer.ctx
    assert all(torch.equal(feats_hidden[ctx + t], feats_hidden[ctx + 2]) for t in range(3, 25))
    assert not torch.allclose(feats_hidden[ctx:ctx + 3], feats_none[ctx:ctx + 3])


def test_streamed_blocks_cache_the_features_with_the_shape_view(clip):
    """A stream caches each frame's features with its landmarks' view, so a later block's causal
    context reads the past frames as they were seen."""
    scorer = _scorer()
    lips = _lips(32)

    def block(start: int, marks) -> ScoreRequest:
        return ScoreRequest(Kind.BLOCK, FrameSpan(clip.frames[start:start + 16], clip.fps, start, landmarks=marks),
                            AudioSpan(clip.audio, 16000, 0))

    seen, bare = scorer.new_stream(), scorer.new_stream()
    scorer.score(block(0, lips[:16]), seen)
    scorer.score(block(0, None), bare)
    direct = scorer._frame_features([(scorer._prepare(block(0, lips[:16])), None)])[0][scorer.ctx:]
    torch.testing.assert_close(torch.stack([seen.get(t) for t in range(16)]), direct)
    second_seen = scorer.score(block(16, lips[16:32]), seen).curve
    second_bare = scorer.score(block(16, lips[16:32]), bare).curve
    assert np.max(np.abs(np.array(second_seen) - np.array(second_bare))) > 1e-4


def test_shape_dropout_hides_whole_windows():
    ok = torch.ones(64, 10, dtype=torch.bool)
    ok[:, :2] = False
    batch = Batch(torch.zeros(64, 10, 2, 2), torch.ones(64, 4, dtype=torch.bool), torch.zeros(64, 1, 1),
                  torch.ones(64, 4, dtype=torch.bool), torch.zeros(64, dtype=torch.long), list(range(64)),
                  torch.zeros(64, 10, N_SHAPE_FEATURES), ok)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(shape_visible(batch, gen, 0.0), ok)
    assert not shape_visible(batch, gen, 1.0).any()
    seen = shape_visible(batch, gen, 0.5)
    rows = seen[:, 2:]
    assert bool((rows.all(1) | ~rows.any(1)).all()), "a window's frames are hidden together"
    assert 10 < int(rows.all(1).sum()) < 54
    assert not seen[:, :2].any(), "frames without landmarks never become visible"
    no_shapes = Batch(*[getattr(batch, f) for f in ("frames", "frame_ok", "mel", "audio_ok", "label", "clip_ids")])
    assert shape_visible(no_shapes, gen, 0.3) is None


def test_make_model_with_shape_input_records_it_and_keeps_it_when_reusing_the_weights(tmp_path):
    from model_store.bundle import load_bundle
    from model_store.training.make_model import main, set_shape_statistics

    out, again = tmp_path / "shape", tmp_path / "again"
    common = ["--no-real", "--synth-clips", "4", "--batch-size", "4", "--version", "0.0.1", "--finetune-steps", "0"]
    assert main([*common, "--steps", "2", "--shape-input", "--out", str(out)]) == 0
    assert json.loads((out / "manifest.json").read_text())["arch_params"]["shape_features"] == N_SHAPE_FEATURES
    assert main([*common, "--from-bundle", str(out), "--out", str(again)]) == 0
    manifest, state = load_bundle(again)
    assert manifest.arch_params["shape_features"] == N_SHAPE_FEATURES
    assert "shape_encoder.mean" in state

    # the measures are standardised with the training clips' statistics, faces only
    model = build("syncnet_lite_v1", PARAMS)
    shape = np.stack([np.arange(4.0)] * N_SHAPE_FEATURES, axis=1).astype(np.float32)
    present = np.array([True, True, True, False])
    c = Clip("c", "g", np.zeros((4, 96, 96), np.uint8), 25.0, torch.zeros(40, 10), present, "real", shape=shape)
    set_shape_statistics(model, [c])
    np.testing.assert_allclose(model.shape_encoder.mean.numpy(), 1.0)
    np.testing.assert_allclose(model.shape_encoder.std.numpy(), np.std([0.0, 1.0, 2.0]) + 1e-3, rtol=1e-5)


def test_an_ensemble_refuses_a_member_with_the_landmark_input():
    with pytest.raises(ValueError, match="lip-landmark"):
        build("ensemble_v1", {"members": [{"architecture": "syncnet_lite_v1", "arch_params": PARAMS}]})


def test_a_teacher_with_the_landmark_input_sees_the_landmarks():
    from model_store.training.train import teacher_embed

    torch.manual_seed(0)
    teacher = build("syncnet_lite_v1", PARAMS).eval()
    torch.nn.init.normal_(teacher.shape_encoder.net[2].weight, std=1.0)
    b, f, n_audio = 2, 10, 16
    shape = torch.rand(b, f, N_SHAPE_FEATURES)
    seen = Batch(torch.rand(b, f, 96, 96), torch.ones(b, f - 6, dtype=torch.bool), torch.randn(b, 40, 4 * (n_audio + 8)),
                 torch.ones(b, n_audio, dtype=torch.bool), torch.zeros(b, dtype=torch.long), [0, 1],
                 shape, torch.ones(b, f, dtype=torch.bool))
    hidden = Batch(*[getattr(seen, k) for k in ("frames", "frame_ok", "mel", "audio_ok", "label", "clip_ids")],
                   shape, torch.zeros(b, f, dtype=torch.bool))
    x = seen.frames
    v_seen, _ = teacher_embed(teacher, seen, 4, x)
    v_hidden, _ = teacher_embed(teacher, hidden, 4, x)
    assert not torch.allclose(v_seen, v_hidden)
