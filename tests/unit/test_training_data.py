"""Training window sampler: audio edges and noise augmentations (pure tensors, no model)."""

import numpy as np
import torch

from model_store.bundle import AudioSpec
from model_store.training.data import WindowSampler, make_clip

SPEC = AudioSpec()


def _clips(n_frames: int, seconds: float, n: int = 3):
    rng = np.random.default_rng(0)
    return [make_clip(f"c{i}", f"g{i}", rng.integers(0, 255, (n_frames, 96, 96), dtype=np.uint8),
                      (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32), 25.0, SPEC)
            for i in range(n)]


def test_edge_jitter_only_moves_clip_edges_inwards():
    short = _clips(28, 1.12)  # one-word clips: every window shows an edge
    plain = WindowSampler(short, SPEC, 6, 6, seed=3, delay_frames=3).sample(16, 24)
    jit = WindowSampler(short, SPEC, 6, 6, seed=3, delay_frames=3, edge_jitter_frames=6).sample(16, 24)
    assert torch.equal(plain.label, jit.label)
    assert not (jit.audio_ok & ~plain.audio_ok).any()  # never adds valid audio
    assert int(jit.audio_ok.sum()) < int(plain.audio_ok.sum())
    # a window far from the clip's edges keeps all its audio
    long = _clips(400, 16.0)
    a = WindowSampler(long, SPEC, 6, 6, seed=5).sample(8, 12)
    b = WindowSampler(long, SPEC, 6, 6, seed=5, edge_jitter_frames=6).sample(8, 12)
    inner = a.audio_ok.all(dim=1)
    assert inner.any() and torch.equal(a.audio_ok[inner], b.audio_ok[inner])


def test_audio_noise_changes_features_and_stays_finite():
    clips = _clips(100, 4.0)
    clean = WindowSampler(clips, SPEC, 6, 6, seed=1).sample(8, 16)
    noisy = WindowSampler(clips, SPEC, 6, 6, seed=1, audio_noise_prob=1.0).sample(8, 16)
    assert torch.isfinite(noisy.mel).all()
    assert clean.mel.shape == noisy.mel.shape
    assert not torch.allclose(clean.mel, noisy.mel)


def test_windows_carry_mouth_shape_where_clips_have_landmarks():
    rng = np.random.default_rng(2)
    audio = (0.1 * rng.standard_normal(16000 * 4)).astype(np.float32)
    frames = rng.integers(0, 255, (100, 96, 96), dtype=np.uint8)
    marks = rng.uniform(0.3, 0.7, (100, 40, 2)).astype(np.float32)
    present = np.ones(100, bool)
    present[50:] = False  # no face: no shape target either
    with_marks = make_clip("m", "m", frames, audio, 25.0, SPEC, present, landmarks=marks)
    plain = make_clip("p", "p", frames, audio, 25.0, SPEC)
    assert with_marks.shape.shape == (100, 7) and plain.shape is None
    b = WindowSampler([with_marks, plain], SPEC, 6, 6, seed=4).sample(16, 12)
    assert b.shape.shape == (16, 18, 7) and b.shape_ok.shape == (16, 18)
    ids = np.array(b.clip_ids)
    assert not b.shape_ok[ids == 1].any()  # the clip without landmarks
    assert b.shape_ok[ids == 0].any()
    assert WindowSampler([plain], SPEC, 6, 6, seed=4).sample(4, 12).shape is None


def test_roi_dir_skips_a_trackers_unfinished_write(tmp_path):
    from model_store.training.data import load_roi_dir

    rng = np.random.default_rng(3)
    fields = {"rois": rng.integers(0, 255, (30, 96, 96), dtype=np.uint8), "fps": np.float64(25.0),
              "audio": (0.1 * rng.standard_normal(19200)).astype(np.float32), "face_present": np.ones(30, bool),
              "landmarks": rng.uniform(0.3, 0.7, (30, 40, 2)).astype(np.float32)}
    np.savez(tmp_path / "done.npz", **fields)
    np.savez(tmp_path / "half.4242.tmp.npz", **fields)
    clips = load_roi_dir(tmp_path, SPEC)
    assert [c.name for c in clips] == ["done"]
    assert clips[0].shape.shape == (30, 7)


def test_voice_warp_moves_energy_along_the_mel_axis_and_keeps_the_labels():
    clips = _clips(100, 4.0)
    plain = WindowSampler(clips, SPEC, 6, 6, seed=1).sample(8, 16)
    warped = WindowSampler(clips, SPEC, 6, 6, seed=1, voice_warp=0.15).sample(8, 16)
    assert torch.equal(plain.label, warped.label) and torch.equal(plain.audio_ok, warped.audio_ok)
    assert torch.isfinite(warped.mel).all() and not torch.allclose(plain.mel, warped.mel)
    # one tone in one band: stretching the mel axis by alpha moves it to about alpha times its index
    s = WindowSampler(clips, SPEC, 6, 6, seed=2, voice_warp=0.15)
    feat = torch.zeros(SPEC.n_mels, 8)
    feat[20] = 1.0
    moved = [int(s._warp_voice(feat.clone()).mean(1).argmax()) for _ in range(40)]
    assert min(moved) >= 17 and max(moved) <= 23 and len(set(moved)) > 1


def _resampled_through(audio: np.ndarray, rate: int) -> np.ndarray:
    import torchaudio.functional as AF

    a = torch.from_numpy(audio)
    return AF.resample(AF.resample(a, 16000, rate), rate, 16000).numpy()[: len(audio)]


def test_band_limit_hears_a_telephone_band_and_the_teacher_hears_the_full_band():
    from model_store.features import log_mel
    from model_store.training.data import MelBands

    clips = _clips(100, 4.0)
    plain = WindowSampler(clips, SPEC, 6, 6, seed=1).sample(8, 16)
    band = WindowSampler(clips, SPEC, 6, 6, seed=1, band_limit_prob=1.0).sample(8, 16)
    assert torch.equal(plain.label, band.label) and torch.equal(plain.audio_ok, band.audio_ok)
    assert plain.teacher_mel is None
    assert torch.allclose(band.teacher_mel, plain.mel)  # the teacher's audio is the window as it was
    assert torch.isfinite(band.mel).all() and not torch.allclose(band.mel, plain.mel)

    # against the real thing: white noise resampled through 8 kHz loses its bands above 4 kHz and
    # keeps those below 3 kHz; the simulated filter does the same, and neither goes below the floor
    rng = np.random.default_rng(7)
    noise = (0.1 * rng.standard_normal(16000 * 2)).astype(np.float32)
    full = log_mel(torch.from_numpy(noise), SPEC).mean(1)
    narrow = log_mel(torch.from_numpy(_resampled_through(noise, 8000)), SPEC).mean(1)
    bands = MelBands(SPEC)
    centres_khz = (bands.fb * bands.freqs_khz[:, None]).sum(0) / bands.weight
    low, high = centres_khz < 3.0, centres_khz > 4.6
    sim = torch.log((full.exp() - SPEC.log_floor) * bands.band_gain(3.9, 30.0, 50.0) + SPEC.log_floor)
    for heard in (narrow, sim):
        assert (heard[low] - full[low]).abs().max() < 0.3
        assert (heard[high] - full[high]).max() < -3.0
        assert heard.min() >= np.log(SPEC.log_floor) - 1e-6
    # a bottom cut-off takes the lowest bands down too
    gain = bands.band_gain(3.5, 60.0, 50.0, low_khz=0.3)
    assert gain[centres_khz < 0.15].max() < 0.2 and gain[(centres_khz > 0.6) & (centres_khz < 2.5)].min() > 0.99
