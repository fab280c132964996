"""Sub-frame targets (``make_model --subframe-targets``): the sampler says where, between two grid
offsets, each window's true offset lies (its sub-frame jitter), and the losses split their target
between those two offsets."""

import numpy as np
import pytest
import torch

from model_store.bundle import AudioSpec
from model_store.training import data as data_mod
from model_store.training.data import Clip, WindowSampler
from model_store.training.train import subframe_targets


def test_the_label_fraction_points_at_the_audio_of_each_frames_own_time(monkeypatch):
    """Frames carry their index as pixel value, the mel is a ramp whose value is its own time in ms,
    and mel normalisation is switched off: then the audio at offset index label + label_frac of
    window frame t must be the time of the frame t shows."""
    spec = AudioSpec()
    fps, n = 25.0, 200
    hop_ms = 1000.0 * spec.hop_length / spec.sample_rate
    n_mel = int(n / fps * 1000 / hop_ms) + 1
    mel = (torch.arange(n_mel, dtype=torch.float32) * hop_ms).repeat(spec.n_mels, 1)
    rois = np.repeat(np.arange(n, dtype=np.uint8)[:, None, None], 96, 1).repeat(96, 2)
    clip = Clip("ramp", "g", rois, fps, mel, np.ones(n, bool), "synth")
    monkeypatch.setattr(data_mod, "normalize_mel", lambda feat, valid: feat)
    k, ctx, t_frames = 6, 6, 16
    sampler = WindowSampler([clip], spec, ctx, k, seed=3)
    batch = sampler.sample(16, t_frames, shift_prob=1.0)
    assert batch.label_frac.shape == (16,) and float(batch.label_frac.abs().max()) <= 0.3
    assert float(batch.label_frac.abs().min()) > 0  # a jitter is drawn per window
    actx, spf = spec.context_frames, spec.steps_per_frame
    for i in range(16):
        for t in (0, t_frames // 2, t_frames - 1):
            frame_index = float(batch.frames[i, ctx + t, 0, 0]) * 255.0
            frame_ms = frame_index * 1000.0 / fps
            pos = t + int(batch.label[i])  # audio index of offset label, before the fraction
            audio_ms = float(batch.mel[i, 0, (actx + pos) * spf])
            true_pos = t + float(batch.label[i]) + float(batch.label_frac[i])
            # one grid position is one frame: the audio at true_pos is audio_ms + frac frames later
            at_true = audio_ms + float(batch.label_frac[i]) * 1000.0 / fps
            assert at_true == pytest.approx(frame_ms, abs=0.5), (i, t, true_pos)


def test_targets_split_linearly_between_the_bracketing_offsets():
    label = torch.tensor([3, 3, 0, 12, 5])
    frac = torch.tensor([0.25, -0.1, -0.2, 0.3, 0.0])
    out = subframe_targets(label, frac, span=13)
    assert out.sum(1) == pytest.approx(torch.ones(5))
    assert out[0, 3] == pytest.approx(0.75) and out[0, 4] == pytest.approx(0.25)
    assert out[1, 3] == pytest.approx(0.9) and out[1, 2] == pytest.approx(0.1)
    # at the grid's ends the neighbour does not exist: everything stays on the label
    assert out[2, 0] == pytest.approx(1.0) and out[3, 12] == pytest.approx(1.0)
    assert out[4, 5] == pytest.approx(1.0)


def test_with_no_fraction_the_soft_losses_are_the_hard_ones():
    from dataclasses import replace

    from model_store.architectures import build
    from model_store.training.make_model import synth_clips
    from model_store.training.train import batch_loss, embed_batch

    spec = AudioSpec()
    torch.manual_seed(0)
    model = build("syncnet_lite_v1", {"video_channels": [8, 8, 16, 16]}).eval()
    batch = WindowSampler(synth_clips(2, 77, spec), spec, 6, 6, seed=5).sample(4, 12)
    with torch.no_grad():
        v, a = embed_batch(model, batch, spec.context_frames, None, 0.0)
        hard = batch_loss(model, batch, 6, v, a, 0.5)[0]
        zero = replace(batch, label_frac=torch.zeros(4))
        assert batch_loss(model, zero, 6, v, a, 0.5, subframe=True)[0] == pytest.approx(float(hard), rel=1e-5)
        # with the fractions the target moves off the label, and so does the loss
        assert float(batch_loss(model, batch, 6, v, a, 0.5, subframe=True)[0]) != pytest.approx(float(hard), rel=1e-5)
