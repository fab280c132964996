"""The one-product offset search equals a per-offset brute force; peak and margin rules."""

import pytest
import torch
import torch.nn.functional as F

from worker.scoring.offsets import (
    OffsetGrid,
    brute_force_curve,
    center_embeddings,
    crop,
    offset_curve,
    pick_peak,
    similarity_by_offset,
    smooth_curve,
    valid_pairs,
    widen,
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


def test_centering_zero_is_the_identity():
    e = F.normalize(torch.randn(2, 9, 8, generator=torch.Generator().manual_seed(3)), dim=-1)
    assert center_embeddings(e, torch.ones(2, 9, dtype=torch.bool), 0.0) is e


def test_centering_takes_the_valid_mean_away_and_ignores_invalid_rows():
    g = torch.Generator().manual_seed(4)
    e = F.normalize(torch.randn(1, 12, 8, generator=g), dim=-1)
    valid = torch.ones(1, 12, dtype=torch.bool)
    valid[0, 9:] = False
    out = center_embeddings(e, valid, 1.0)
    assert torch.allclose(out.norm(dim=-1), torch.ones(1, 12), atol=1e-6)
    mean = e[0, :9].mean(0)
    assert torch.allclose(out[0, 3], F.normalize(e[0, 3] - mean, dim=-1), atol=1e-6)
    garbage = e.clone()
    garbage[0, 9:] = 100.0  # rows outside the audio / without a face must not move the mean
    assert torch.allclose(center_embeddings(garbage, valid, 1.0)[0, :9], out[0, :9], atol=1e-6)


def test_centering_removes_a_constant_part_that_inflates_mismatched_similarity():
    """Two unrelated sequences that share a constant component (a speaker's looks, a room) look
    similar at every offset; with the window means taken away they do not."""
    g = torch.Generator().manual_seed(5)
    grid = OffsetGrid(-3, 3)
    t = 24
    common = torch.randn(16, generator=g) * 3.0
    v = F.normalize(torch.randn(1, t, 16, generator=g) + common, dim=-1)
    a = F.normalize(torch.randn(1, grid.n_audio(t), 16, generator=g) + common, dim=-1)
    ok = valid_pairs(torch.ones(1, t, dtype=torch.bool), torch.ones(1, grid.n_audio(t), dtype=torch.bool), grid)

    def best(vv, aa):
        return float(offset_curve(similarity_by_offset(vv, aa, grid), ok)[0].max())

    vc = center_embeddings(v, torch.ones(1, t, dtype=torch.bool), 1.0)
    ac = center_embeddings(a, torch.ones(1, grid.n_audio(t), dtype=torch.bool), 1.0)
    assert best(v, a) > 0.6
    assert best(vc, ac) < 0.2


def test_smoothing_picks_the_centre_of_a_broad_peak_over_a_lone_spike():
    grid = OffsetGrid(-5, 5)
    # a broad peak around +2 and a narrow spike at -3 that is higher than any single broad value
    curve = torch.tensor([0.0, 0.0, 0.62, 0.0, 0.1, 0.2, 0.5, 0.58, 0.55, 0.3, 0.1])
    assert pick_peak(curve, grid).offset_frames == -3
    peak = pick_peak(smooth_curve(curve, 1), grid)
    assert peak.offset_frames == 2
    assert peak.best == pytest.approx((0.5 + 0.58 + 0.55) / 3)


def test_smoothing_keeps_missing_offsets_missing_and_averages_what_is_there():
    curve = torch.tensor([float("nan"), 0.3, 0.6, 0.9, float("nan")])
    out = smooth_curve(curve, 1)
    assert torch.isnan(out[0]) and torch.isnan(out[4])
    assert out[1:4].tolist() == pytest.approx([0.45, 0.6, 0.75])
    assert smooth_curve(curve, 0) is curve


def test_widen_then_crop_gives_every_reported_offset_its_full_neighbourhood():
    grid = OffsetGrid(-5, 5)
    wide = widen(grid, 1)
    assert wide.offsets.tolist() == list(range(-6, 7))
    assert widen(OffsetGrid(-4, 4, 2), 1).offsets.tolist() == [-6, -4, -2, 0, 2, 4, 6]
    # a peak at the last reported offset +5 and a falling flank beyond it: the edge must not win
    # just because it has fewer neighbours
    wide_curve = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.3, 0.5, 0.9, 0.6, 0.2])
    smoothed = crop(smooth_curve(wide_curve, 1), 1)
    assert smoothed.shape == (11,)
    assert pick_peak(smoothed, grid).offset_frames == 4  # centre of the 0.5, 0.9, 0.6 band
    naive = smooth_curve(crop(wide_curve, 1), 1)  # smoothing after cropping favours the edge
    assert pick_peak(naive, grid).offset_frames == 5
