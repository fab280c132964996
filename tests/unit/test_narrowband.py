"""Telephone-band audio: the band test (worker.scoring.band), the scorer that routes such jobs to a
bundle's narrowband companion (worker.scoring.routed), and the training flag that makes a
companion share its start bundle's video side exactly (make_model --finetune-freeze-stats)."""

import json
import logging
import shutil
import subprocess
from dataclasses import replace

import numpy as np
import pytest
import torch

from model_store.architectures import build
from model_store.bundle import AudioSpec, Calibration, Manifest, VideoSpec, load_bundle, save_bundle
from worker.evaluation.degrade import telephone
from worker.scoring.band import NARROWBAND_RATIO_DB, band_levels_db, high_band_ratio_db, is_narrowband
from worker.scoring.loader import load_scorer
from worker.scoring.postprocess import ScorerConfig
from worker.scoring.routed import BandRoutedScorer
from worker.scoring.scorer import ModelScorer
from worker.scoring.types import AudioSpan, FrameSpan, Kind, ScoreRequest

SR = 16000


def _speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Syllable-rate bursts of noise with a speech-like tilt: full band, as a microphone hears it."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    noise = rng.standard_normal(n)
    spec = np.fft.rfft(noise)
    hz = np.fft.rfftfreq(n, 1 / SR)
    spec /= np.maximum(hz, 300.0) / 300.0  # about -6 dB per octave above 300 Hz
    x = np.fft.irfft(spec, n)
    env = np.clip(np.sin(2 * np.pi * 3.5 * t + rng.uniform(0, 6)), 0, None)
    x = x * env
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def test_full_band_speech_is_not_narrowband_and_the_same_through_8_khz_is():
    x = _speech_like(1.6)
    assert is_narrowband(x, SR) is False
    assert high_band_ratio_db(x, SR) > NARROWBAND_RATIO_DB + 10
    # the gentle resampler (torchaudio's default, the eval's phone degradation) and ffmpeg's
    assert is_narrowband(telephone(x, SR), SR) is True
    raw = subprocess.run(["ffmpeg", "-v", "error", "-f", "f32le", "-ar", str(SR), "-ac", "1", "-i", "-",
                          "-af", "aresample=8000,aresample=16000", "-f", "f32le", "-"],
                         input=x.astype("<f4").tobytes(), capture_output=True, check=True).stdout
    assert is_narrowband(np.frombuffer(raw, "<f4"), SR) is True


def test_no_verdict_without_speech_and_a_low_rate_is_narrowband_whatever_it_holds():
    assert is_narrowband(np.zeros(SR, np.float32), SR) is None  # silence
    assert is_narrowband((0.1 * np.random.default_rng(0).standard_normal(SR // 10)).astype(np.float32),
                         SR) is None  # too short to tell
    quiet = _speech_like(1.6) * 1e-4  # below the speech floor (-55 dBFS)
    assert is_narrowband(quiet, SR) is None
    assert is_narrowband(np.zeros(100, np.float32), 8000) is True
    # a 44.1 kHz stream is read in the same bands
    x44 = torch.from_numpy(_speech_like(1.6))
    import torchaudio.functional as AF

    assert is_narrowband(AF.resample(x44, SR, 44100).numpy(), 44100) is False


def _noise(n: int, dbfs: float, colour: str = "white", seed: int = 0) -> np.ndarray:
    """Stationary noise of RMS ``dbfs`` (re 1.0): white, or pink (-3 dB per octave)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(n)
    if colour == "pink":
        w = np.fft.irfft(np.fft.rfft(w) / np.sqrt(np.maximum(np.fft.rfftfreq(n, 1 / SR), 20.0)), n)
    return (w / np.sqrt(np.mean(w ** 2)) * 10 ** (dbfs / 20)).astype(np.float32)


def _level_dbfs(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(x.astype(np.float64) ** 2)))


@pytest.mark.parametrize("colour,dbfs", [("white", -70), ("white", -60), ("pink", -60), ("pink", -50)])
def test_telephone_band_speech_under_noise_added_after_the_band_is_narrowband(colour, dbfs):
    """Noise added after 8 kHz (a noisy recording chain, dither) fills 5-7 kHz with energy that does
    not follow the speech; the whole high band rises above the line, its speech part does not."""
    phone = telephone(_speech_like(1.6, 7), SR)
    noisy = phone + _noise(phone.shape[0], dbfs, colour, seed=-dbfs)
    whole, part = band_levels_db(noisy, SR)
    assert whole > NARROWBAND_RATIO_DB  # what the band test read before: full band
    assert part <= NARROWBAND_RATIO_DB
    assert is_narrowband(noisy, SR) is True
    # the same through ffmpeg's resampler, and a voice without pauses (no frame of noise alone)
    raw = subprocess.run(["ffmpeg", "-v", "error", "-f", "f32le", "-ar", str(SR), "-ac", "1", "-i", "-",
                          "-af", "aresample=8000,aresample=16000", "-f", "f32le", "-"],
                         input=_speech_like(1.6, 7).astype("<f4").tobytes(), capture_output=True, check=True).stdout
    ff = np.frombuffer(raw, "<f4")
    assert is_narrowband(ff + _noise(ff.shape[0], dbfs, colour, seed=1), SR) is True
    steady = telephone(_steady_speech_like(1.6, 8), SR)
    assert is_narrowband(steady + _noise(steady.shape[0], dbfs, colour, seed=2), SR) is True


def _steady_speech_like(seconds: float, seed: int) -> np.ndarray:
    """As _speech_like, but the voice never pauses: every frame is speech."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    spec = np.fft.rfft(rng.standard_normal(n))
    spec /= np.maximum(np.fft.rfftfreq(n, 1 / SR), 300.0) / 300.0
    x = np.fft.irfft(spec, n) * (0.3 + np.clip(np.sin(2 * np.pi * 3.5 * t + rng.uniform(0, 6)), 0, None))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


@pytest.mark.parametrize("noise", [None, ("white", -60.0), ("white", -40.0), ("white", "snr20"), ("white", "snr10"),
                                   ("pink", "snr10")])
def test_full_band_speech_in_noise_stays_full_band(noise):
    """Noise in the high band is no reason to call full-band speech narrowband: its own high band
    still rises above the noise's floor where it speaks (the steady voice too)."""
    for x in (_speech_like(1.6, 3), _steady_speech_like(1.6, 4)):
        if noise is not None:
            colour, level = noise
            dbfs = level if isinstance(level, float) else _level_dbfs(x) - float(level[3:])
            x = x + _noise(x.shape[0], dbfs, colour, seed=5)
        assert is_narrowband(x, SR) is False
        whole, part = band_levels_db(x, SR)
        assert part <= whole and part > NARROWBAND_RATIO_DB + 10


def test_a_full_band_voice_with_little_high_band_is_not_taken_for_noise():
    """A dull full-band voice (5-7 kHz about 35 dB below 1-3.4 kHz, as the dev clips' weakest
    spans) stays full band clean, and so does its steady version, whose quietest frames are speech."""
    for x in (_speech_like(1.6, 12), _steady_speech_like(1.6, 13)):
        n = x.shape[0]
        spec = np.fft.rfft(x)
        hz = np.fft.rfftfreq(n, 1 / SR)
        spec *= 10 ** (-np.clip((hz - 3000.0) / 1000.0, 0, None) * 9.0 / 20)  # -9 dB per kHz above 3 kHz
        dull = np.fft.irfft(spec, n).astype(np.float32)
        assert -40.0 < high_band_ratio_db(dull, SR) < -30.0
        assert is_narrowband(dull, SR) is False


def _bundle(d, version: str, state: dict, calibration: Calibration | None = None):
    man = Manifest("test-net", version, "syncnet_lite_v1", {}, 128, AudioSpec(), VideoSpec(),
                   calibration or Calibration(), "weights.safetensors", "")
    save_bundle(d, man, state)


@pytest.fixture(scope="module")
def bundle_with_companion(tmp_path_factory):
    """A random bundle and, in its narrowband/ directory, the same network with another audio encoder."""
    torch.manual_seed(0)
    model = build("syncnet_lite_v1", {})
    d = tmp_path_factory.mktemp("bundle")
    _bundle(d, "0.0.1", model.state_dict())
    torch.manual_seed(1)
    other = build("syncnet_lite_v1", {}).state_dict()
    narrow = {k: (other[k] if k.startswith("audio_encoder.") else v) for k, v in model.state_dict().items()}
    # calibrated otherwise, as a narrowband bundle is (on telephone-band audio)
    base = Calibration()
    _bundle(d / "narrowband", "0.0.1-nb", narrow, replace(base, score_b=base.score_b + 1.0, conf_b=base.conf_b + 1.0))
    return d


def _req(frames, audio, frame_start=0, kind=Kind.WINDOW):
    return ScoreRequest(kind, FrameSpan(frames, 25.0, frame_start), AudioSpan(audio, SR, 0))


def test_each_job_is_scored_by_the_model_its_audio_wants(bundle_with_companion):
    routed = load_scorer(bundle_with_companion, device="cpu", allow_fallback=False)
    assert isinstance(routed, BandRoutedScorer)
    assert routed.name == "test-net@0.0.1" and routed.config.narrowband
    wide = load_scorer(bundle_with_companion, ScorerConfig(narrowband=False), device="cpu", allow_fallback=False)
    assert isinstance(wide, ModelScorer)
    narrow = load_scorer(bundle_with_companion / "narrowband", device="cpu", allow_fallback=False)
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 255, (64, 96, 96), dtype=np.uint8)
    full = _speech_like(4.0, 3)
    phone = telephone(full, SR)
    # a session that moves to a phone line mid-way: blocks in timeline order, in one batch
    reqs = [_req(frames[b * 16:(b + 1) * 16], full if b < 2 else phone, b * 16, Kind.BLOCK) for b in range(4)]
    got = routed.score_batch(reqs, [routed.new_stream()] * 4)
    assert [r.scorer for r in got] == ["test-net@0.0.1"] * 2 + ["test-net@0.0.1-nb"] * 2
    assert [r.frame_start for r in got] == [0, 16, 32, 48]
    # each as its own model scores it given the same frames before it (one shared cache)
    for model, idx in ((wide, (0, 1)), (narrow, (2, 3))):
        stream = model.new_stream()
        model.score_batch(reqs[:idx[0]], [stream] * idx[0]) if idx[0] else None
        for i in idx:
            want = model.score(reqs[i], stream)
            np.testing.assert_allclose(got[i].curve, want.curve, atol=1e-5)
            assert got[i].offset_ms == want.offset_ms
    # silence has no verdict: the full-band model's (here, its SILENCE label)
    quiet = routed.score(_req(frames[:25], np.zeros(3 * SR, np.float32)))
    assert quiet.scorer == "test-net@0.0.1" and quiet.label.value == "SILENCE"


def test_lost_audio_does_not_decide_the_band():
    """The worker zero-fills audio that never arrived (AudioSpan.present False); the step into the
    gap is a click with energy across the band, so frames holding it are not judged."""
    phone = telephone(_speech_like(1.6, 5), SR)
    holed = phone.copy()
    present = np.ones(holed.shape[0], bool)
    for start in range(2000, 24000, 4000):  # 20 ms gaps across the span
        holed[start: start + 320] = 0.0
        present[start: start + 320] = False
    assert is_narrowband(phone, SR) is True
    assert high_band_ratio_db(holed, SR) > high_band_ratio_db(holed, SR, present)  # the clicks
    assert is_narrowband(holed, SR, present) is True


def test_a_bad_job_fails_as_with_one_model_and_jobs_of_sessions_on_one_band_share_a_call(bundle_with_companion):
    from worker.scoring.types import ScoringInputError

    routed = load_scorer(bundle_with_companion, device="cpu", allow_fallback=False)
    frames = np.random.default_rng(4).integers(0, 255, (32, 96, 96), dtype=np.uint8)
    full = _speech_like(3.0, 6)
    phone = telephone(full, SR)
    with pytest.raises(ScoringInputError, match="mono"):
        routed.score(_req(frames[:16], np.stack([phone, phone], axis=1)))
    calls = []
    for side in ("wide", "narrow"):
        model = getattr(routed, side)
        model.score_batch = lambda reqs, streams, _f=model.score_batch, _s=side, **kw: calls.append(
            (_s, len(reqs))) or _f(reqs, streams, **kw)
    try:
        # two sessions, one on a phone line, their blocks interleaved as the batcher gathers them
        a, b = routed.new_stream(), routed.new_stream()
        reqs = [_req(frames[i * 16:(i + 1) * 16], x, i * 16, Kind.BLOCK) for i in (0, 1) for x in (full, phone)]
        got = routed.score_batch(reqs, [a, b, a, b])
        assert calls == [("wide", 2), ("narrow", 2)]
        assert [r.scorer.endswith("-nb") for r in got] == [False, True, False, True]
        # a session whose jobs go to both models: its runs in order, so each job's context is cached
        # first; another session's full-band job joins its first run's call
        calls.clear()
        routed.score_batch([_req(frames[:16], full, 0, Kind.BLOCK), _req(frames[16:], phone, 16, Kind.BLOCK),
                            _req(frames[:16], full, 0, Kind.BLOCK)], [a, a, b])
        assert calls == [("wide", 2), ("narrow", 1)]
    finally:
        for side in ("wide", "narrow"):
            del getattr(routed, side).score_batch
    import copy

    assert copy.copy(routed).name == routed.name  # no recursion through __getattr__


def test_calls_per_run_of_each_session_keep_its_order_and_batch_the_rest():
    from worker.scoring.routed import _groups

    a, b, c = object(), object(), object()
    # a: phone, a silent block (full band), phone again; b and c stay on one band each
    narrow = [True, False, False, True, True, True]
    streams = [a, b, a, c, a, None]
    assert _groups(narrow, streams) == [[1], [0, 3, 5], [2], [4]]
    # a's jobs come in its order (0 in run 0, 2 in run 1, 4 in run 2); b, c and the lone job join run 0
    assert _groups([False, False, True], [None, None, None]) == [[0, 1], [2]]


def test_a_tie_between_the_models_is_calibrated_as_the_full_band_model():
    from worker.clipscore import _clip_score
    from worker.scoring.types import Direction, Label, LipSyncScore

    class Router:
        name = "net@1"
        manifest = Manifest("net", "1", "syncnet_lite_v1", {}, 128, AudioSpec(), VideoSpec(), Calibration(), "w", "")
        narrow = replace(manifest, version="1-nb", calibration=replace(Calibration(), score_b=0.0))

        def manifest_of(self, name):
            return self.narrow if name == "net@1-nb" else self.manifest

    def win(start, scorer):
        return LipSyncScore(Kind.WINDOW, start, start + 25, 0, 1000, 0.5, 0.0, 0.1, 0.5, Direction.IN_SYNC, Label.OK,
                            scorer)

    router = Router()
    wide_score = _clip_score(router, 0.3, 0.1, 100, [win(0, "net@1")])
    for order in (["net@1", "net@1-nb"], ["net@1-nb", "net@1"]):
        usable = [win(25 * i, name) for i, name in enumerate(order * 2)]
        assert _clip_score(router, 0.3, 0.1, 100, usable) == wide_score
    assert _clip_score(router, 0.3, 0.1, 100, [win(0, "net@1-nb")]) != wide_score


def test_the_band_is_judged_on_the_jobs_own_second_not_its_search_margin():
    from worker.scoring.routed import job_audio

    # a 16-frame block at frames 100..116 (4.0-4.64 s) with 0.44 s of margin each side
    start = round((4.0 - 0.44) * SR)
    audio = np.arange(round(1.52 * SR), dtype=np.float32)
    present = np.ones(audio.shape[0], bool)
    req = ScoreRequest(Kind.BLOCK, FrameSpan(np.zeros((16, 96, 96), np.uint8), 25.0, 100),
                       AudioSpan(audio, SR, start, present))
    samples, mask = job_audio(req)
    assert samples.shape[0] == SR and mask.shape[0] == SR  # 1 s centred on the block's 0.64 s
    centre = (4.32 * SR) - start
    assert abs((samples[0] + samples[-1]) / 2 - centre) <= 1
    # a longer job keeps its own span (1.2 s here); at the audio's edge the span is cut, not shifted
    win = ScoreRequest(Kind.WINDOW, FrameSpan(np.zeros((30, 96, 96), np.uint8), 25.0, 0), AudioSpan(audio, SR, 0))
    samples, mask = job_audio(win)
    assert samples.shape[0] == round(1.2 * SR) and samples[0] == 0 and mask is None
    late = ScoreRequest(Kind.WINDOW, FrameSpan(np.zeros((30, 96, 96), np.uint8), 25.0, 10), AudioSpan(audio, SR, 0))
    assert job_audio(late)[0][0] == round(0.4 * SR) and job_audio(late)[0][-1] == audio[-1]  # 0.4..1.52 s


def test_a_job_with_too_little_speech_in_its_own_second_is_judged_on_all_its_audio(bundle_with_companion):
    routed = load_scorer(bundle_with_companion, device="cpu", allow_fallback=False)
    phone = telephone(_speech_like(3.0, 9), SR)
    # the job's own second (frames 25..50 at 25 fps) fades to barely audible and back (no click)
    t = np.arange(phone.shape[0]) / SR
    dip = np.clip((t - 0.8) / 0.2, 0, 1) - np.clip((t - 2.0) / 0.2, 0, 1)  # 0 -> 1 -> 0
    gain = 1.0 - (1.0 - 1e-4) * (1.0 - np.cos(np.pi * dip)) / 2.0
    quiet_middle = (phone * gain).astype(np.float32)
    frames = np.zeros((25, 96, 96), np.uint8)
    job = ScoreRequest(Kind.WINDOW, FrameSpan(frames, 25.0, 25), AudioSpan(quiet_middle, SR, 0))
    assert routed.route(job) is True  # from the speech around it
    assert routed.route(ScoreRequest(Kind.WINDOW, FrameSpan(frames, 25.0, 25), AudioSpan(phone, SR, 0))) is True
    assert routed.route(ScoreRequest(Kind.WINDOW, FrameSpan(frames, 25.0, 25),
                                     AudioSpan(_speech_like(3.0, 9), SR, 0))) is False


def test_a_mask_of_another_length_gives_no_verdict():
    phone = telephone(_speech_like(1.6, 5), SR)
    assert is_narrowband(phone, SR, np.ones(phone.shape[0] - 100, bool)) is None


def test_a_phone_clips_summary_is_calibrated_as_the_model_that_read_it(bundle_with_companion):
    from worker.clipscore import score_clip

    routed = load_scorer(bundle_with_companion, device="cpu", allow_fallback=False)
    narrow = load_scorer(bundle_with_companion / "narrowband", device="cpu", allow_fallback=False)
    assert routed.wide.manifest.calibration != narrow.manifest.calibration
    frames = np.random.default_rng(7).integers(0, 255, (100, 96, 96), dtype=np.uint8)
    phone = telephone(_speech_like(4.0, 8), SR)
    got, want = (score_clip(s, frames, 25.0, phone) for s in (routed, narrow))
    assert {w.scorer for w in got.windows if w.score is not None} == {narrow.name}
    assert got.scorer == routed.name  # the bundle's name; the windows and a note name the model
    assert (got.offset_ms, got.score, got.confidence) == (want.offset_ms, want.score, want.confidence)
    assert any("narrowband model" in n for n in got.all_notes())


def test_a_companion_that_does_not_share_the_video_side_is_left_out(bundle_with_companion, tmp_path, caplog):
    d = tmp_path / "b"
    shutil.copytree(bundle_with_companion, d)
    _, state = load_bundle(d / "narrowband")
    state = dict(state)
    key = next(k for k in state if k.startswith("frame_encoder.") and "running_mean" in k)
    state[key] = state[key] + 0.01  # batch-norm statistics that moved in training
    shutil.rmtree(d / "narrowband")
    _bundle(d / "narrowband", "0.0.1-nb", state)
    with caplog.at_level(logging.ERROR):
        s = load_scorer(d, device="cpu", allow_fallback=False)
    assert isinstance(s, ModelScorer)
    assert "narrowband bundle" in caplog.text and key in caplog.text
    # one that reads audio at another rate: left out the same way
    shutil.rmtree(d / "narrowband")
    man, state = load_bundle(bundle_with_companion / "narrowband")
    save_bundle(d / "narrowband", replace(man, audio=replace(man.audio, sample_rate=8000)), state)
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert isinstance(load_scorer(d, device="cpu", allow_fallback=False), ModelScorer)
    assert "8000 Hz" in caplog.text
    # a companion whose weights do not match their checksum: left out the same way
    (d / "narrowband" / "manifest.json").write_text(
        json.dumps({**json.loads((d / "narrowband" / "manifest.json").read_text()), "weights_sha256": "0" * 64}))
    assert isinstance(load_scorer(d, device="cpu", allow_fallback=False), ModelScorer)


def test_the_stage_with_frozen_statistics_keeps_the_video_side_exactly(tmp_path):
    from model_store.training.make_model import main

    start = tmp_path / "start"
    common = ["--no-real", "--synth-clips", "4", "--batch-size", "4", "--version", "0.0.1"]
    assert main([*common, "--steps", "2", "--finetune-steps", "0", "--out", str(start)]) == 0
    for flag, same in (("--finetune-freeze-stats", True), (None, False)):
        out = tmp_path / f"nb{same}"
        argv = [*common, "--from-bundle", str(start), "--band-limit", "1", "--finetune-steps", "3",
                "--finetune-sources", "all", "--finetune-freeze", "video", "--out", str(out)]
        assert main(argv + ([flag] if flag else [])) == 0
        _, a = load_bundle(start)
        man, b = load_bundle(out)
        video = [k for k in a if k.startswith(("frame_encoder.", "video_head."))]
        assert all(torch.equal(a[k], b[k]) for k in video) is same, flag
        assert not all(torch.equal(a[k], b[k]) for k in a if k.startswith("audio_encoder."))
        assert man.training["finetune"]["frozen_stats"] is same
        # asked only about telephone-band audio, it is calibrated on such audio
        assert man.calibration.fitted_on.endswith("audio through 8000 Hz")


def test_every_shipped_bundle_carries_the_makefiles_narrowband_companion():
    """`make model` / `make model-cv` make what ships: each bundle's narrowband/ is its own network
    after the Makefile's NARROWBAND stage (the bundle as the teacher, every window band-limited,
    the video side kept exactly), and the loader routes to it."""
    import re
    import shlex

    from model_store.bundle import DEFAULT_BUNDLE_DIR

    text = (DEFAULT_BUNDLE_DIR.parents[2] / "Makefile").read_text().replace("\\\n", " ")
    version = re.search(r"^MODEL_VERSION := (\S+)$", text, re.MULTILINE).group(1)
    words = shlex.split(re.search(r"^NARROWBAND := (.+)$", text, re.MULTILINE).group(1))
    for name in ("default", "cv-fold-1", "cv-fold-2"):
        start, _ = load_bundle(DEFAULT_BUNDLE_DIR.parent / name)
        man, _ = load_bundle(DEFAULT_BUNDLE_DIR.parent / name / "narrowband")
        stage = man.training["finetune"]
        assert man.version == f"{version}-nb" and man.name == start.name, name
        named = f"{start.scorer_name} (sha256 {start.weights_sha256})"
        assert man.training["teacher"] == named and man.training["weights_from"] == named, name
        assert man.training["augment"]["band_limit"] == float(words[words.index("--band-limit") + 1]), name
        assert stage["config"]["steps"] == int(words[words.index("--finetune-steps") + 1]), name
        assert stage["frozen"] == "video" and stage["frozen_stats"] and "--finetune-freeze-stats" in words, name
        assert man.calibration.fitted_on.endswith("audio through 8000 Hz"), name
        scorer = load_scorer(DEFAULT_BUNDLE_DIR.parent / name, device="cpu", allow_fallback=False)
        assert isinstance(scorer, BandRoutedScorer) and scorer.narrow.name == man.scorer_name, name


def test_bench_says_which_narrowband_model_it_carries_and_can_leave_it_out(capsys):
    from model_store.bundle import DEFAULT_BUNDLE_DIR
    from worker.cli import main

    wide, narrow = (load_bundle(d)[0].scorer_name for d in (DEFAULT_BUNDLE_DIR, DEFAULT_BUNDLE_DIR / "narrowband"))
    for extra, want in (([], narrow), (["--no-narrowband"], None)):
        assert main(["bench", "--blocks", "10", "--threads", "1", "--json", *extra]) == 0
        result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert result["narrowband_scorer"] == want and result["scorer"] == wide


def test_a_routed_batch_validates_each_job_once_and_names_its_companion(bundle_with_companion, monkeypatch):
    """The router validates every job before it routes any (it reads their audio); the model it
    hands them to took them through validate_request again (about 10 us a job)."""
    import worker.scoring.routed as routed_mod
    import worker.scoring.scorer as scorer_mod
    from worker.scoring.routed import narrowband_of

    routed = load_scorer(bundle_with_companion, device="cpu", allow_fallback=False)
    assert narrowband_of(routed) is routed.narrow and narrowband_of(routed.wide) is None
    seen = []
    for mod in (routed_mod, scorer_mod):
        monkeypatch.setattr(mod, "validate_request", lambda r, rate, _f=mod.validate_request: seen.append(r) or _f(r, rate))
    frames = np.random.default_rng(5).integers(0, 255, (16, 96, 96), dtype=np.uint8)
    full = _speech_like(2.0, 7)
    reqs = [_req(frames, full), _req(frames, telephone(full, SR))]
    got = routed.score_batch(reqs)
    assert [r.scorer.endswith("-nb") for r in got] == [False, True]
    assert len(seen) == 2  # before: 4
    seen.clear()
    routed.wide.score(reqs[0])  # a model on its own still validates
    assert len(seen) == 1
