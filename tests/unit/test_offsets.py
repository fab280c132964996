"""The one-product offset search equals a per-offset brute force; peak and margin rules."""

import pytest
import torch
import torch.nn.functional as F

from worker.scoring.offsets import (
    OffsetGrid,
    brute_force_curve,
    offset_curve,
    pick_peak,
    similarity_by_offset,
    valid_pairs,
)


@pytest.mark.parametrize("lo,hi,step", [(-5, 5, 1), (-6, 6, 2), (-3, 7, 1), (0, 4, 1)])
def test_batched_product_equals_brute_force(lo, hi, step):
    g = torch.Generator().manual_seed(0)
    grid = OffsetGrid(lo, hi, step)
    v = F.normalize(torch.randn(3, 16, 32, generator=g), dim=-1)
    a = F.normalize(torch.randn(3, grid.n_audio(16), 32, generator=g), dim=-1)
    fast = similarity_by_offset(v, a, grid)
    slow = brute_force_curve(v, a, grid)
    assert fast.shape == (3, 16, len(grid.offsets))
    assert torch.allclose(fast, slow, atol=1e-6)


def test_grid_from_ms_covers_default_search():
    assert OffsetGrid.from_ms(-200, 200, 25.0).offsets.tolist() == list(range(-5, 6))
    assert OffsetGrid.from_ms(-200, 200, 30.0).offsets.tolist() == list(range(-6, 7))
    assert OffsetGrid.from_ms(-200, 200, 30000 / 1001).offsets.tolist() == list(range(-6, 7))
    with pytest.raises(ValueError):
        OffsetGrid.from_ms(100, -100, 25.0)


def test_planted_shift_is_found_with_sign():
    """Audio embeddings equal to the video's, delayed by 3 frames -> offset +3 (audio lags)."""
    g = torch.Generator().manual_seed(1)
    grid = OffsetGrid(-5, 5)
    t = 20
    seq = F.normalize(torch.randn(t + 10, 16, generator=g), dim=-1)
    v = seq[5: 5 + t].unsqueeze(0)
    # a[index] is grid position index - 5; the sound of frame x is heard at x + 3
    a = torch.zeros(1, grid.n_audio(t), 16)
    for idx in range(grid.n_audio(t)):
        pos = idx - grid.pad_before - 3
        a[0, idx] = seq[5 + pos] if 0 <= 5 + pos < seq.shape[0] else 0
    sim = similarity_by_offset(v, a, grid)
    ok = valid_pairs(torch.ones(1, t, dtype=torch.bool), torch.ones(1, grid.n_audio(t), dtype=torch.bool), grid)
    peak = pick_peak(offset_curve(sim, ok)[0], grid)
    assert peak.offset_frames == 3
    assert peak.margin > 0.5


def test_margin_ignores_the_peak_neighbourhood():
    grid = OffsetGrid(-5, 5)
    curve = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.8, 0.9, 0.85, 0.2, 0.1, 0.4, 0.0])
    peak = pick_peak(curve, grid, neighbourhood_frames=2)
    assert peak.offset_frames == 0
    assert peak.margin == pytest.approx(0.9 - 0.4)


def test_all_invalid_curve_has_no_peak():
    grid = OffsetGrid(-2, 2)
    assert pick_peak(torch.full((5,), float("nan")), grid) is None


def test_cuda_graph_buckets():
    from worker.scoring.cuda_graphs import bucket_for

    assert bucket_for(1, (16, 32)) == 16
    assert bucket_for(16, (32, 16)) == 16
    assert bucket_for(17, (16, 32)) == 32
    assert bucket_for(33, (16, 32)) is None
