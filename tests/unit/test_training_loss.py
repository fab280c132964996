"""Training losses on hand-made similarity tensors (no model, no data)."""

import torch

from model_store.training.data import Batch
from model_store.training.train import GlobalThreshold


def _batch(labels, clip_ids):
    b = len(labels)
    return Batch(frames=torch.zeros(b, 1, 1, 1), frame_ok=torch.ones(b, 1, dtype=torch.bool),
                 mel=torch.zeros(b, 1, 1), audio_ok=torch.ones(b, 1, dtype=torch.bool),
                 label=torch.tensor(labels), clip_ids=clip_ids)


def test_global_threshold_loss_falls_when_matched_windows_beat_every_mismatched_peak():
    # c[i, j, k]: window i's frames with window j's audio at offset k
    batch = _batch([1, 2, 0], [0, 1, 2])
    base = torch.full((3, 3, 3), 0.1)
    good, bad = base.clone(), base.clone()
    for i, k in enumerate([1, 2, 0]):
        good[i, i, k] = 0.8
        bad[i, i, k] = 0.15
    # a mismatched pair whose best offset is high: the peak the scorer would pick
    bad[0, 2, 1] = 0.7
    head = GlobalThreshold()
    assert float(head.loss(good, batch)) < float(head.loss(bad, batch))


def test_global_threshold_ignores_pairs_of_one_clip_and_invalid_pairs():
    batch = _batch([0, 0], [5, 5])  # two windows of the same clip: no mismatched pair
    c = torch.full((2, 2, 1), 0.5)
    assert float(GlobalThreshold().loss(c, batch)) == 0.0
    batch = _batch([0, 0], [5, 6])
    c = torch.full((2, 2, 1), -1.0)  # too few valid pairs everywhere (batch_loss's sentinel)
    assert float(GlobalThreshold().loss(c, batch)) == 0.0
