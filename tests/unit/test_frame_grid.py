"""NearestFrameGrid: each constant-rate slot gets the decoded frame nearest to it in time."""

from fractions import Fraction

import numpy as np
import pytest

from worker.media.frame_grid import NearestFrameGrid


def _slots(times_s, rate=25):
    """Expand the grid's counts into the index of the frame each slot shows (skipped frames: -)."""
    grid = NearestFrameGrid(Fraction(rate))
    shown, prev = [], None
    for j, t in enumerate(times_s):
        count = grid.push(t)
        if count is None:
            continue
        if prev is not None:
            shown += [prev] * count
        prev = j
    shown += [prev] * grid.finish()
    return shown


def test_a_constant_rate_stream_maps_one_to_one():
    assert _slots([i / 25 for i in range(50)]) == list(range(50))
    # timestamps rounded to the millisecond (Matroska, FLV) at 29.97 fps: still one to one
    rate = Fraction(30000, 1001)
    assert _slots([round(i / rate, 3) for i in range(300)], rate) == list(range(300))


def test_a_gap_is_filled_by_the_nearer_frame_on_each_side():
    # frames at slots 0, 1, 5, 6: slots 2 and 3 are nearer frame 1 (slot 1) or a tie... 2 -> 1,
    # 3 is midway (tie), 4 -> frame 2 (slot 5)
    shown = _slots([0.0, 0.04, 0.20, 0.24])
    assert shown[:3] == [0, 1, 1] and shown[4:] == [2, 2, 3]
    assert shown[3] in (1, 2)


def test_ties_alternate_so_single_drops_are_not_read_early_or_late():
    rng = np.random.default_rng(7)
    kept = [i for i in range(2000) if i % 3 != 1 or rng.random() < 0.2]  # many single drops
    shown = np.array(_slots([k / 25 for k in kept]))
    index = np.array(kept)[shown]
    lag = index - np.arange(len(shown))
    assert np.all(np.abs(lag) <= 1)
    assert abs(lag.mean()) < 0.01  # the fps filter's repeats: about -0.27 frames here


def test_random_drops_every_slot_shows_a_nearest_frame():
    rng = np.random.default_rng(3)
    kept = np.array([0] + [i for i in range(1, 500) if rng.random() > 0.4])
    shown = np.array(_slots(list(kept / 25)))
    assert len(shown) == kept[-1] + 1
    dist = np.abs(kept[shown] - np.arange(len(shown)))
    nearest = np.abs(kept[None, :] - np.arange(len(shown))[:, None]).min(axis=1)
    np.testing.assert_array_equal(dist, nearest)


def test_first_frame_late_and_frames_before_zero():
    # the first frame 3 slots late: slots 0..3 show it (the fps filter repeats it too)
    assert _slots([0.12, 0.16]) == [0, 0, 0, 0, 1]
    # a frame before time 0 nearer slot 0 than the next frame is shown there; a frame further
    # back is not shown at all
    assert _slots([-0.01, 0.04]) == [0, 1]
    assert _slots([-0.2, 0.0, 0.04]) == [1, 2]


def test_a_frame_not_after_the_one_before_it_is_skipped():
    assert _slots([0.0, 0.04, 0.04, 0.02, 0.08]) == [0, 1, 4]


def test_a_single_frame_gives_one_slot_and_bad_input_is_refused():
    assert _slots([0.0]) == [0]
    assert _slots([0.5]) == [0] * 13  # slots 0..12 show it (12.5 frames: a tie at the end stops short)
    assert _slots([0.0, 0.52]) == [0] * 7 + [1] * 7  # 0.52 is slot 13's own time
    with pytest.raises(ValueError):
        NearestFrameGrid(0)
    with pytest.raises(ValueError):
        NearestFrameGrid(25).push(float("nan"))


def test_read_faster_than_its_rate_every_frame_is_held_alike():
    """--fps 50 on a 25 fps stream: every other slot is midway between two frames. Ties taken
    in turn held frames 2, 1, 3, 1, 3 slots (a review); without alternation every frame holds 2."""
    grid = NearestFrameGrid(Fraction(50), alternate_ties=False)
    holds = [grid.push(k / 25) for k in range(40)][1:]
    assert holds == [2] * 39
    alternating = NearestFrameGrid(Fraction(50))
    assert [alternating.push(k / 25) for k in range(6)][1:] != [2] * 5  # what the review saw


def _missing(times_s, rate=25, hold_s=0.08):
    from worker.media.frame_grid import missing_slots

    return missing_slots(times_s, Fraction(rate), hold_s)


def test_slots_far_from_every_frame_are_missing():
    """A stretch without frames: its slots are still filled (nearest frame) but listed as
    missing when the nearest frame is more than the hold away (a probe: a 1-s hole filled
    from both sides read a confident +160 ms)."""
    kept = [i for i in range(125) if i < 50 or i > 75]
    # frames 49 and 76 either side of the hole: slots 52..73 are more than 2 slots from both
    assert _missing([k / 25 for k in kept]) == [(52, 74)]
    # up to 4 frames lost in a row: every slot within 2 frames of a real one, nothing missing
    assert _missing([k / 25 for k in range(100) if k % 10 not in (3, 4, 5, 6)]) == []
    five_lost = [k / 25 for k in range(100) if k % 10 not in (3, 4, 5, 6, 7)]
    assert _missing(five_lost) == [(k + 5, k + 6) for k in range(0, 100, 10)]  # the middle slot of each
    # exactly 2 frames away is not missing, even with the times rounded to the millisecond
    assert _missing([0.0, 0.04, 0.16, 0.2]) == []
    assert _missing([round(t, 3) for t in (0.0, 1 / 30, 5 / 30, 6 / 30)], rate=30, hold_s=2 / 30) == []


def test_missing_slots_before_the_first_frame_and_runs_that_touch_are_one():
    assert _missing([0.4, 0.44]) == [(0, 8)]  # slots 0..7 more than 2 slots before the first frame
    assert _missing([0.0, 0.04, 0.2, 0.24], hold_s=0.0) == [(2, 5)]  # every slot without its own frame
    with pytest.raises(ValueError):
        _missing([0.0], hold_s=-1.0)


def test_missing_slots_at_other_rates_and_the_hold_follows_the_frames():
    from worker.media.decode import MIN_HOLD_S, missing_hold_s
    from worker.media.frame_grid import median_spacing_s

    assert _missing([k / 30 for k in range(60)], rate=60, hold_s=1 / 30) == []  # each slot a frame's neighbour
    assert _missing([0.0, 0.1, 0.2, 0.7, 0.8], hold_s=0.0) == [(1, 5), (6, 20)]
    assert _missing([], hold_s=0.08) == []
    assert median_spacing_s([0.0, 0.48, 0.96, 1.0]) == pytest.approx(0.48) and median_spacing_s([1.0]) == 0.0
    # 2 periods: the longest of the output's, the header's and the frames' own spacing
    assert missing_hold_s([k / 20 for k in range(30)], Fraction(60), Fraction(60)) == pytest.approx(0.1)
    assert missing_hold_s([k * 0.48 for k in range(9)], Fraction(25), Fraction(25)) == pytest.approx(0.96)
    assert missing_hold_s([k / 25 for k in range(30)], Fraction(25), Fraction(25)) == pytest.approx(0.08)
    assert missing_hold_s([k / 60 for k in range(60)], Fraction(60), Fraction(60)) == MIN_HOLD_S  # not 33 ms
