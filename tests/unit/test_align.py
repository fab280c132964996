"""worker.windowing.align: when a partition of one input topic must wait for its partner's."""

from worker.windowing.align import may_release, runs_ahead

ALIGN = 2000


def test_a_record_more_than_the_allowance_ahead_of_a_lagging_partner_waits():
    assert runs_ahead(10_000 + ALIGN + 1, 10_000, 0, True, ALIGN)
    assert not runs_ahead(10_000 + ALIGN, 10_000, 0, True, ALIGN)
    # the partner has nothing left to read: its stream is behind for good, nothing to wait for
    assert not runs_ahead(10_000 + 60_000, 10_000, 0, False, ALIGN)
    # behind, not ahead
    assert not runs_ahead(5_000, 10_000, 0, True, ALIGN)


def test_a_partner_read_nothing_yet_stands_where_this_partition_started():
    assert not runs_ahead(1_000 + ALIGN, None, 1_000, True, ALIGN)
    assert runs_ahead(1_000 + ALIGN + 40, None, 1_000, True, ALIGN)


def test_release_needs_the_partner_within_half_the_allowance_or_done():
    nxt = 20_000
    assert not may_release(nxt, nxt - ALIGN, 0, True, ALIGN)  # still ahead
    assert not may_release(nxt, nxt - ALIGN // 2 - 1, 0, True, ALIGN)  # hysteresis
    assert may_release(nxt, nxt - ALIGN // 2, 0, True, ALIGN)
    assert may_release(nxt, nxt - 10 * ALIGN, 0, False, ALIGN)  # partner has nothing left to read


def test_only_one_partition_of_a_pair_can_be_ahead():
    a, b = 30_000, 25_000
    assert runs_ahead(a, b, 0, True, ALIGN) and not runs_ahead(b, a, 0, True, ALIGN)
