"""Scorer mechanics that do not depend on trained weights: bundle integrity and fallback, batch
consistency, streams, silence, bad inputs."""

import json
import shutil

import numpy as np
import pytest
import torch

from model_store.architectures import build
from model_store.bundle import (
    DEFAULT_BUNDLE_DIR,
    AudioSpec,
    BundleError,
    Calibration,
    Manifest,
    VideoSpec,
    load_bundle,
    save_bundle,
)
from worker.scoring.heuristic import HeuristicScorer
from worker.scoring.loader import load_scorer
from worker.scoring.scorer import ModelScorer
from worker.scoring.types import AudioSpan, Direction, FrameSpan, Kind, Label, ScoreRequest, ScoringInputError

SR = 16000


@pytest.fixture(scope="module")
def random_bundle(tmp_path_factory):
    torch.manual_seed(0)
    model = build("syncnet_lite_v1", {})
    man = Manifest("test-net", "0.0.1", "syncnet_lite_v1", {}, 128, AudioSpec(), VideoSpec(), Calibration(),
                   "weights.safetensors", "")
    d = tmp_path_factory.mktemp("bundle")
    save_bundle(d, man, model.state_dict())
    return d


@pytest.fixture(scope="module")
def scorer(random_bundle):
    return load_scorer(random_bundle, device="cpu", allow_fallback=False)


def _req(frames, audio, fps=25.0, frame_start=0, audio_start=0, kind=Kind.BLOCK, **kw):
    return ScoreRequest(kind, FrameSpan(frames, fps, frame_start, **kw), AudioSpan(audio, SR, audio_start))


def _speechy(n, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6))
    return (0.2 * env * rng.standard_normal(n)).astype(np.float32)


def test_bundle_roundtrip_and_name(random_bundle, scorer):
    man, _ = load_bundle(random_bundle)
    assert man.scorer_name == "test-net@0.0.1" == scorer.name
    doc = json.loads((random_bundle / "manifest.json").read_text())
    assert doc["input"]["audio"]["n_mels"] == 40 and doc["input"]["video"]["roi_height"] == 96
    assert len(doc["weights"]["sha256"]) == 64


def test_similarity_settings_round_trip_and_default_to_off(random_bundle, tmp_path):
    import dataclasses

    from model_store.bundle import read_manifest, save_bundle

    man, state = load_bundle(random_bundle)
    assert man.embedding_centering == 0.0 and man.peak_smooth_frames == 0
    doc = json.loads((random_bundle / "manifest.json").read_text())
    doc.pop("similarity", None)  # a bundle written before the section existed
    old = type(man).from_json(doc)
    assert old.embedding_centering == 0.0 and old.peak_smooth_frames == 0
    save_bundle(tmp_path / "c", dataclasses.replace(man, embedding_centering=0.5, peak_smooth_frames=1), state)
    back = read_manifest(tmp_path / "c")
    assert back.embedding_centering == 0.5 and back.peak_smooth_frames == 1
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["similarity"] == {
        "embedding_centering": 0.5, "peak_smooth_frames": 1}


def test_corrupted_bundle_falls_back_to_heuristic(random_bundle, tmp_path, caplog):
    bad = tmp_path / "bad"
    shutil.copytree(random_bundle, bad)
    with open(bad / "weights.safetensors", "r+b") as fh:
        fh.seek(200)
        fh.write(b"\x00\x01\x02\x03")
    with pytest.raises(BundleError, match="checksum mismatch"):
        load_bundle(bad)
    with caplog.at_level("ERROR"):
        s = load_scorer(bad, device="cpu")
    assert isinstance(s, HeuristicScorer)
    assert s.name.startswith("heuristic@")
    assert "checksum mismatch" in caplog.text
    frames = np.random.default_rng(0).integers(0, 255, (25, 64, 64), dtype=np.uint8)
    r = s.score(_req(frames, _speechy(SR * 2), kind=Kind.WINDOW))
    assert r.scorer.startswith("heuristic@")
    assert r.confidence <= 0.3


def test_missing_bundle_and_strict_mode(tmp_path):
    with pytest.raises(BundleError):
        load_scorer(tmp_path / "nothing", allow_fallback=False)
    assert isinstance(load_scorer(tmp_path / "nothing"), HeuristicScorer)


def test_default_bundle_is_in_the_repo():
    man, _ = load_bundle(DEFAULT_BUNDLE_DIR)
    assert man.name and man.version
    assert (DEFAULT_BUNDLE_DIR / man.weights_file).stat().st_size < 8 * 2**20


def test_batched_equals_item_by_item(scorer):
    rng = np.random.default_rng(3)
    reqs = []
    for i, (n, fps) in enumerate([(16, 25.0), (8, 25.0), (30, 30.0), (16, 30.0), (25, 25.0)]):
        frames = rng.integers(0, 255, (n, 96, 96, 3) if i % 2 else (n, 80, 100), dtype=np.uint8)
        reqs.append(_req(frames, _speechy(SR * 3, i), fps=fps, frame_start=10, kind=Kind.WINDOW))
    batched = scorer.score_batch(reqs)
    single = [scorer.score(r) for r in reqs]
    for b, s in zip(batched, single):
        assert b.offset_ms == s.offset_ms
        assert b.score == pytest.approx(s.score, abs=1e-5)
        assert b.margin == pytest.approx(s.margin, abs=1e-5)
        assert np.allclose(b.curve, s.curve, atol=1e-5)


def test_stream_cache_gives_the_same_scores_and_is_bounded(scorer, random_bundle):
    rng = np.random.default_rng(4)
    frames = rng.integers(0, 255, (64, 96, 96), dtype=np.uint8)
    audio = _speechy(SR * 4)
    stream = scorer.new_stream()
    # blocks in order fill the cache; a window over cached frames must equal a cold window that
    # is given the same causal context (its frames) - compare against a fresh stream fed likewise
    for b in range(4):
        scorer.score(_req(frames[b * 16:(b + 1) * 16], audio, frame_start=b * 16), stream)
    assert stream.cached_frames() == 64
    warm = scorer.score(_req(frames[24:49], audio, frame_start=24, kind=Kind.WINDOW), stream)
    fresh = scorer.new_stream()
    scorer.score(_req(frames[0:24], audio, frame_start=0), fresh)
    again = scorer.score(_req(frames[24:49], audio, frame_start=24, kind=Kind.WINDOW), fresh)
    assert np.allclose(warm.curve, again.curve, atol=1e-5)
    stream.forget_before(40)
    assert stream.cached_frames() == 24
    small = ModelScorer(scorer.manifest, load_bundle(random_bundle)[1], type(scorer.config)(cache_frames=20),
                        device="cpu")
    s2 = small.new_stream()
    small.score(_req(frames[:48], audio, kind=Kind.WINDOW), s2)
    assert s2.cached_frames() == 20


def test_silence_gives_null_score(scorer):
    frames = np.random.default_rng(0).integers(0, 255, (25, 96, 96), dtype=np.uint8)
    quiet = (1e-4 * np.random.default_rng(1).standard_normal(SR * 2)).astype(np.float32)
    for s in (scorer, HeuristicScorer()):
        r = s.score(_req(frames, quiet, kind=Kind.WINDOW))
        assert r.label is Label.SILENCE
        assert r.score is None and r.offset_ms is None and r.confidence == 0.0
        assert r.direction is Direction.UNKNOWN


def test_partly_silent_window_is_scored_with_less_confidence(scorer):
    frames = np.random.default_rng(0).integers(0, 255, (25, 96, 96), dtype=np.uint8)
    audio = _speechy(SR * 2)
    part = audio.copy()
    part[int(0.7 * SR):] = 0.0  # speech stops 30% into the window (window starts at 400 ms)
    full = scorer.score(_req(frames, audio, frame_start=10, kind=Kind.WINDOW))
    half = scorer.score(_req(frames, part, frame_start=10, kind=Kind.WINDOW))
    assert half.label is Label.OK and half.score is not None
    assert 0.0 < half.voiced_fraction < 0.5
    assert half.confidence <= full.confidence * (half.voiced_fraction / 0.5) + 1e-9 or half.confidence < full.confidence


def test_no_face_frames(scorer):
    frames = np.zeros((16, 96, 96), dtype=np.uint8)
    r = scorer.score(_req(frames, _speechy(SR * 2), face_present=np.zeros(16, bool)))
    assert r.label is Label.NO_FACE and r.score is None and r.confidence == 0.0


def test_frames_whose_rois_are_missing_are_low_quality_not_no_face(scorer):
    frames = np.zeros((16, 96, 96), dtype=np.uint8)
    lost = np.zeros(16, bool)
    lost[:4] = True  # 12 of 16 ROIs never arrived or could not be read: no face flag either
    r = scorer.score(_req(frames, _speechy(SR * 2), present=lost, face_present=lost))
    assert r.label is Label.LOW_QUALITY and r.score is None and r.confidence == 0.0


def test_a_job_with_no_frame_at_all_is_low_quality(scorer):
    """What the join sends when a session's ROI stream died under live audio: 8x8 zeros, nothing
    present (buffers.stack_rois)."""
    for s in (scorer, HeuristicScorer()):
        r = s.score(_req(np.zeros((16, 8, 8), np.uint8), _speechy(SR * 2), present=np.zeros(16, bool),
                         face_present=np.zeros(16, bool)))
        assert r.label is Label.LOW_QUALITY and r.score is None and r.confidence == 0.0


def test_a_jobs_context_frames_give_any_stream_the_verdict_of_the_one_that_scored_them(scorer):
    """A worker that takes a session over (or a lone request) has not scored the frames before a
    job; sent along as its context, they make its verdict the one the first worker gives."""
    frames = np.random.default_rng(7).integers(0, 255, (32, 96, 96), dtype=np.uint8)
    audio = _speechy(SR * 3)
    first = scorer.new_stream()
    scorer.score(_req(frames[:16], audio), first)
    before = scorer.score(_req(frames[16:], audio, frame_start=16), first)
    context = FrameSpan(frames[10:16], 25.0, 10)
    for stream in (None, scorer.new_stream()):
        job = ScoreRequest(Kind.BLOCK, FrameSpan(frames[16:], 25.0, 16), AudioSpan(audio, SR, 0), context=context)
        taken_over = scorer.score(job, stream)
        assert taken_over.offset_ms == before.offset_ms and np.allclose(taken_over.curve, before.curve, atol=1e-5)
    bare = scorer.score(_req(frames[16:], audio, frame_start=16), scorer.new_stream())
    assert not np.allclose(bare.curve, before.curve, atol=1e-5)  # what the context changes
    with pytest.raises(ScoringInputError, match="context"):
        scorer.score(ScoreRequest(Kind.BLOCK, FrameSpan(frames[16:], 25.0, 16), AudioSpan(audio, SR, 0),
                                  context=FrameSpan(frames[10:15], 25.0, 10)))


def test_missing_rois_before_a_job_give_every_worker_the_same_verdict(scorer):
    """Frames 11, 13 and 15 of the first block have no ROI. The worker that scored that block and
    one that takes the session over with the frames before the next job as its context must read
    the next job alike: frames without a ROI are neither encoded nor cached by either (a review:
    the first worker cached them as blank images, the second repeated the last seen frame)."""
    frames = np.random.default_rng(8).integers(0, 255, (32, 96, 96), dtype=np.uint8)
    audio = _speechy(SR * 3, seed=2)
    came = np.ones(32, bool)
    came[[11, 13, 15]] = False
    frames[~came] = 0  # stack_rois' zeros where nothing came
    first = scorer.new_stream()
    scorer.score(_req(frames[:16], audio, present=came[:16], face_present=came[:16]), first)
    before = scorer.score(_req(frames[16:], audio, frame_start=16), first)
    assert first.get(13) is None and first.get(12) is not None
    context = FrameSpan(frames[10:16], 25.0, 10, present=came[10:16], face_present=came[10:16])
    for stream in (None, scorer.new_stream()):
        job = ScoreRequest(Kind.BLOCK, FrameSpan(frames[16:], 25.0, 16), AudioSpan(audio, SR, 0), context=context)
        taken_over = scorer.score(job, stream)
        assert taken_over.offset_ms == before.offset_ms and np.allclose(taken_over.curve, before.curve, atol=1e-5)


def test_jobs_not_scored_run_the_cnn_on_their_seen_frames_only(random_bundle):
    """A job with no frame (its ROI stream died) costs no CNN work; a silent job's frames are
    still encoded into the stream, so the next job's causal context is the frames before it."""
    s = load_scorer(random_bundle, device="cpu", allow_fallback=False)
    encoded: list[int] = []
    encode = s._encode_frames
    s._encode_frames = lambda x: (encoded.append(x.shape[0]), encode(x))[1]
    frames = np.random.default_rng(5).integers(0, 255, (32, 96, 96), dtype=np.uint8)
    speech, quiet = _speechy(SR * 4), np.zeros(SR * 4, np.float32)
    stream = s.new_stream()
    dead = s.score(_req(np.zeros((16, 8, 8), np.uint8), speech, frame_start=60, present=np.zeros(16, bool),
                        face_present=np.zeros(16, bool)), stream)
    assert dead.label is Label.LOW_QUALITY and sum(encoded) == 0
    assert s.score(_req(frames[:16], quiet)).label is Label.SILENCE and sum(encoded) == 0  # no stream
    assert s.score(_req(frames[:16], quiet), stream).label is Label.SILENCE and sum(encoded) == 16
    after_silence = s.score(_req(frames[16:], speech, frame_start=16), stream)
    fresh = s.new_stream()
    s.score(_req(frames[:16], speech), fresh)
    after_speech = s.score(_req(frames[16:], speech, frame_start=16), fresh)
    assert np.allclose(after_silence.curve, after_speech.curve, atol=1e-5)


def test_a_60_fps_job_is_read_on_every_other_frame_like_the_30_fps_one(scorer):
    """The networks know 25-30 fps lips (rate.py): a job at 60 fps is scored on its even session
    frames, so 60 fps frames that repeat a 30 fps clip read exactly as that clip, and the result
    keeps the job's own span."""
    from worker.scoring.rate import decimation

    assert [decimation(f) for f in (12.5, 25, 29.97, 30, 40, 50, 59.94, 60, 120)] == [1, 1, 1, 1, 1, 2, 2, 2, 4]
    frames30 = np.random.default_rng(6).integers(0, 255, (30, 96, 96), dtype=np.uint8)
    audio = _speechy(SR * 4)
    for s in (scorer, HeuristicScorer()):
        r30 = s.score(_req(frames30, audio, fps=30.0, frame_start=30, kind=Kind.WINDOW))
        r60 = s.score(_req(np.repeat(frames30, 2, axis=0), audio, fps=60.0, frame_start=60, kind=Kind.WINDOW))
        assert (r60.frame_start, r60.frame_end, r60.start_ms, r60.end_ms) == (60, 120, 1000, 2000)
        assert r60.offset_ms == r30.offset_ms and r60.curve_offsets_ms == r30.curve_offsets_ms, s.name
        assert np.allclose(r60.curve, r30.curve, atol=1e-5) and r60.score == pytest.approx(r30.score, abs=1e-6)
        # a feed that delivers only the odd frames (the even ones lost) is read on those
        odd_only = s.score(_req(np.repeat(frames30, 2, axis=0), audio, fps=60.0, frame_start=60, kind=Kind.WINDOW,
                                present=np.arange(60) % 2 == 1))
        assert odd_only.offset_ms == r30.offset_ms and np.allclose(odd_only.curve, r30.curve, atol=1e-5), s.name
    # a job starting on an odd frame keeps the even ones (the same frames any other job keeps)
    odd = scorer.score(_req(np.repeat(frames30, 2, axis=0)[1:], audio, fps=60.0, frame_start=61, kind=Kind.WINDOW))
    assert (odd.frame_start, odd.frame_end) == (61, 120) and odd.offset_ms is not None
    # a stream's cache is keyed by session frame, as the worker's forget_before(session frame) expects
    stream = scorer.new_stream()
    scorer.score(_req(np.repeat(frames30[:16], 2, axis=0), audio, fps=60.0), stream)
    assert stream.cached_frames() == 16
    stream.forget_before(16)
    assert stream.cached_frames() == 8  # session frames 16, 18, ..., 30


def test_audio_that_never_arrived_is_low_quality_not_silence(scorer):
    """The join zero-fills audio that never came and says where (AudioSpan.present): under most
    of a job's frames that is lost input, as missing ROIs are, not the speaker falling silent."""
    frames = np.random.default_rng(0).integers(0, 255, (16, 96, 96), dtype=np.uint8)
    zeros = np.zeros(SR * 2, np.float32)
    lost = np.zeros(SR * 2, bool)
    lost[: SR // 2] = True  # the first 0.5 s came (silent); frames 10..25 are 400-1040 ms
    for s in (scorer, HeuristicScorer()):
        r = s.score(ScoreRequest(Kind.BLOCK, FrameSpan(frames, 25.0, 10), AudioSpan(zeros, SR, 0, present=lost)))
        assert r.label is Label.LOW_QUALITY and r.score is None, s.name
        heard = s.score(ScoreRequest(Kind.BLOCK, FrameSpan(frames, 25.0, 10), AudioSpan(zeros, SR, 0, present=np.ones(SR * 2, bool))))
        assert heard.label is Label.SILENCE, s.name
    with pytest.raises(ScoringInputError, match="present"):
        scorer.score(ScoreRequest(Kind.BLOCK, FrameSpan(frames, 25.0, 10), AudioSpan(zeros, SR, 0, present=lost[:5])))


def test_audio_fill_in_a_jobs_search_margin_is_not_heard(scorer):
    """Audio lost in a job's search margin (the join's zero fill, AudioSpan.present False) is left
    out as the audio's own edge is, not heard as silence the lips do not match: whatever the
    fill holds, the job reads alike (a review: the fill halved a block's score, label OK)."""
    from model_store.features import audio_grid_features

    frames = np.random.default_rng(3).integers(0, 255, (16, 96, 96), dtype=np.uint8)
    speech = _speechy(SR * 2, seed=4)
    came = np.ones(SR * 2, bool)
    came[int(1.06 * SR):int(1.4 * SR)] = False  # after the block's frames (400-1040 ms), in its margin
    results = []
    for fill in (np.zeros(SR * 2, np.float32), _speechy(SR * 2, seed=9)):
        audio = np.where(came, speech, fill).astype(np.float32)
        results.append(scorer.score(ScoreRequest(Kind.BLOCK, FrameSpan(frames, 25.0, 10),
                                                 AudioSpan(audio, SR, 0, present=came))))
        spec = scorer.manifest.audio
        feat, ok = audio_grid_features(audio, SR, 0.0, 0, 50, 25.0, spec, came)
        results.append((feat, ok))
    (zero_fill, (f0, ok0)), (noise_fill, (f1, ok1)) = results[:2], results[2:]
    assert zero_fill.label is Label.OK and zero_fill.offset_ms == noise_fill.offset_ms
    assert np.allclose(zero_fill.curve, noise_fill.curve, atol=1e-5, equal_nan=True)
    assert zero_fill.score == pytest.approx(noise_fill.score, abs=1e-6)
    assert torch.equal(ok0, ok1) and torch.allclose(f0, f1)
    # grid positions 27..34 (1080-1400 ms) touch the fill; the frames' own time (10..25) does not
    assert not ok0[27:35].any() and ok0[10:26].all()
    # the fill read as sound instead (no mask) changes the job's curve
    heard = scorer.score(ScoreRequest(Kind.BLOCK, FrameSpan(frames, 25.0, 10),
                                      AudioSpan(np.where(came, speech, 0).astype(np.float32), SR, 0)))
    assert not np.allclose(heard.curve, zero_fill.curve, atol=1e-3, equal_nan=True)


@pytest.mark.parametrize("mutate,match", [
    (lambda f, a: (f, a[:0]), "empty audio"),
    (lambda f, a: (f.astype(np.float32), a), "dtype"),
    (lambda f, a: (f, np.where(np.arange(a.size) == 5, np.nan, a).astype(np.float32)), "NaN"),
    (lambda f, a: (f, a.astype(np.int16)), "float32"),
    (lambda f, a: (f[:0], a), "no frames"),
    (lambda f, a: (f[..., None].repeat(2, -1), a), "shape"),
    (lambda f, a: (f, np.stack([a, a], 1)), "mono"),
])
def test_bad_inputs_raise_clear_errors(scorer, mutate, match):
    frames = np.zeros((16, 96, 96), dtype=np.uint8)
    frames, audio = mutate(frames, _speechy(SR * 2))
    with pytest.raises(ScoringInputError, match=match):
        scorer.score(_req(frames, audio))


def test_sound_under_less_than_half_the_frames_is_low_quality(scorer):
    """The audio ends 5 frames into a 16-frame block (its margin included): only offsets reaching
    back into the sound have pairs enough; the block must not be read at the search's edge."""
    frames = np.random.default_rng(0).integers(0, 255, (16, 96, 96), dtype=np.uint8)
    speech = _speechy(SR * 2)
    for s in (scorer, HeuristicScorer()):
        # frames 10..25, sound from 0 to frame 15's time: at offset -5 frames 10 pairs (of the
        # 8 needed), at offset 0 only 5
        r = s.score(_req(frames, speech[: int(SR * 15 / 25)], frame_start=10))
        assert r.label is Label.LOW_QUALITY and r.offset_ms is None, s.name
        r = s.score(_req(frames, speech[: int(SR * 22 / 25)], frame_start=10))  # 12 of 16 frames: scored
        assert r.offset_ms is not None, s.name


def test_mismatched_lengths_and_disjoint_audio(scorer):
    frames = np.zeros((16, 96, 96), dtype=np.uint8)
    with pytest.raises(ScoringInputError, match="present"):
        scorer.score(_req(frames, _speechy(SR), present=np.ones(5, bool)))
    with pytest.raises(ScoringInputError, match="overlap"):
        scorer.score(_req(frames, _speechy(SR), frame_start=1000))
    with pytest.raises(ScoringInputError, match="Hz"):
        scorer.score(ScoreRequest(Kind.BLOCK, FrameSpan(frames, 25.0), AudioSpan(_speechy(SR), 8000)))


def test_delay_frames_moves_the_reported_offset_by_whole_frames():
    """A bundle's delay_frames says which frame an embedding describes: the same weights read
    with one more frame of delay report every offset one frame later."""
    import dataclasses

    from worker.synth import SynthOptions, generate_clip

    manifest, state = load_bundle(DEFAULT_BUNDLE_DIR)
    clip = generate_clip(424242, 3.0, 80.0, SynthOptions())
    offsets = {}
    for extra in (0, 1, 2):
        video = dataclasses.replace(manifest.video, delay_frames=manifest.video.delay_frames + extra)
        sc = ModelScorer(dataclasses.replace(manifest, video=video), state, device="cpu")
        r = sc.score(_req(clip.frames[:25], clip.audio, fps=clip.fps, kind=Kind.WINDOW))
        offsets[extra] = r.offset_ms
    frame_ms = 1000.0 / clip.fps
    assert offsets[1] == pytest.approx(offsets[0] + frame_ms, abs=0.2)
    assert offsets[2] == pytest.approx(offsets[0] + 2 * frame_ms, abs=0.2)


def test_scorer_applies_the_bundles_embedding_centering():
    """The manifest's centering reaches the cosines: the same weights give another curve, and a
    planted offset on a clear synthetic clip is still found."""
    import dataclasses

    from worker.synth import SynthOptions, generate_clip

    manifest, state = load_bundle(DEFAULT_BUNDLE_DIR)
    clip = generate_clip(424243, 3.0, 80.0, SynthOptions())
    curves, offsets = {}, {}
    for w in (0.0, 1.0):
        sc = ModelScorer(dataclasses.replace(manifest, embedding_centering=w), state, device="cpu")
        r = sc.score(_req(clip.frames[:50], clip.audio, fps=clip.fps, kind=Kind.WINDOW))
        curves[w], offsets[w] = np.array(r.curve), r.offset_ms
    assert not np.allclose(curves[0.0], curves[1.0], atol=1e-3)
    assert offsets[1.0] == pytest.approx(offsets[0.0], abs=1000.0 / clip.fps + 0.2)


def test_make_model_reuses_a_bundles_weights_only_for_the_same_recipe(random_bundle, tmp_path):
    """`make_model --from-bundle` (how 1.2.0 got 1.1.0's weights) loads the weights as they are and
    records where they came from; from an ensemble (1.5.0, the shipped bundle's teacher) it takes the
    first network; a bundle of other architecture parameters is refused."""
    import dataclasses

    from model_store.training.make_model import ARCH_PARAMS, reuse_weights

    torch.manual_seed(1)
    man, _ = load_bundle(random_bundle)
    save_bundle(tmp_path / "same", dataclasses.replace(man, arch_params=ARCH_PARAMS),
                build("syncnet_lite_v1", ARCH_PARAMS).state_dict())
    model = build("syncnet_lite_v1", ARCH_PARAMS)
    record = reuse_weights(model, tmp_path / "same")
    manifest, state = load_bundle(tmp_path / "same")
    assert record["weights_from"].endswith(f"(sha256 {manifest.weights_sha256})")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    with pytest.raises(SystemExit, match="is not this recipe"):
        reuse_weights(build("syncnet_lite_v1", ARCH_PARAMS), random_bundle)  # default channels
    from model_store.architectures.ensemble import member_state

    first = build("syncnet_lite_v1", ARCH_PARAMS)
    ensemble = DEFAULT_BUNDLE_DIR.parent / "ensemble"  # 1.5.0, the shipped bundle's teacher
    record = reuse_weights(first, ensemble)
    assert ", member 0 (sha256" in record["weights_from"]
    _, ens_state = load_bundle(ensemble)
    # every weight (the training-only logit scale is not in an ensemble)
    assert all(torch.equal(first.state_dict()[k], v) for k, v in member_state(ens_state, 0).items())


def test_smoothed_reading_reports_the_configured_offsets_only():
    """1.2.0 computes the curve one frame wider for its smoothing; what it publishes (curve, offsets,
    offset_ms) stays inside the configured -200..+200 ms search."""
    from worker.synth import SynthOptions, generate_clip

    manifest, state = load_bundle(DEFAULT_BUNDLE_DIR)
    assert manifest.peak_smooth_frames == 1
    clip = generate_clip(424244, 3.0, 200.0, SynthOptions(fps=25.0))
    r = ModelScorer(manifest, state, device="cpu").score(_req(clip.frames[:25], clip.audio, kind=Kind.WINDOW))
    assert r.curve_offsets_ms == tuple(float(k * 40) for k in range(-5, 6))
    assert len(r.curve) == 11
    assert -200.0 <= r.offset_ms <= 200.0
    assert r.similarity is not None  # the smoothed peak the score was mapped from


@pytest.mark.parametrize("fps", [25.0, 29.97, 30.0, 30000 / 1001])
def test_one_frame_offset_is_in_sync_at_any_frame_rate_after_rounding(fps):
    """The published offset is rounded to 0.1 ms (29.97 fps: one frame = 33.367 ms -> 33.4 ms); one
    frame either way is still IN_SYNC, two frames are not."""
    from worker.scoring.postprocess import ScorerConfig, direction_for

    cfg, frame_ms = ScorerConfig(), 1000.0 / fps
    for frames, want in ((1, Direction.IN_SYNC), (-1, Direction.IN_SYNC), (2, Direction.AUDIO_LAGS),
                         (-2, Direction.AUDIO_LEADS)):
        offset_ms = round(frames * frame_ms, 1)
        assert direction_for(offset_ms, frame_ms, 0.9, cfg) is want, (fps, offset_ms)
    assert direction_for(round(frame_ms, 1), frame_ms, 0.0, cfg) is Direction.UNKNOWN
    # lips that most likely do not go with the audio have no direction, however high the peak
    assert direction_for(0.0, frame_ms, 0.9, cfg, score=0.2) is Direction.UNKNOWN
    assert direction_for(0.0, frame_ms, 0.9, cfg, score=0.3) is Direction.IN_SYNC
