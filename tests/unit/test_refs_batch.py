"""A slow or hanging store costs missing frames, never a stalled poll loop (RoiResolver.resolve_batch).

Before, each reference was read in turn on the poll loop: a review's S3 endpoint that accepted and
never answered held every session ~15 s per reference (4 references: 60.8 s, /healthz 503), and a
healthy S3 at 20-50 ms per GET cost 0.6-1.5 s of poll-loop time per second of one 30 fps session.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from worker.refs import RefError, RoiResolver
from worker.refs.breaker import CircuitBreaker, give_up_at_s, hung, outpaced, store_verdict
from worker.refs.errors import BACKEND_ERROR, NOT_FOUND, STORE_DOWN, TIMEOUT

SHAPE = [16, 16]  # a small mouth ROI
PIXELS = np.arange(256, dtype=np.uint8).reshape(16, 16)


def _ref(scheme: str, key: str) -> dict:
    return {"uri": f"{scheme}://bucket/{key}", "shape": SHAPE, "format": "GRAY8"}


def _inline() -> dict:
    return {"width": 16, "height": 16, "format": "GRAY8", "data": PIXELS.tobytes()}


class _Store:
    """A URI resolver: answers after ``delay_s``; hangs (until released) while ``hang`` is set."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.hang = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        self.running = 0
        self.most_running = 0
        self._lock = threading.Lock()

    def __call__(self, uri: str, shape: tuple[int, ...]) -> np.ndarray:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            if self.hang.is_set():
                self.release.wait(10.0)
                raise RefError(BACKEND_ERROR, "read timeout", scheme="s3")
            time.sleep(self.delay_s)
            if uri.endswith("missing"):
                raise RefError(NOT_FOUND, uri, scheme="s3")
            return PIXELS.copy()
        finally:
            with self._lock:
                self.running -= 1


@pytest.fixture
def store():
    s = _Store()
    yield s
    s.release.set()


def _resolver(store: _Store, **kw) -> tuple[RoiResolver, list[str]]:
    counted: list[str] = []
    r = RoiResolver(uri_resolvers={"s3": store}, on_failure=lambda e: counted.append(e.reason), **kw)
    return r, counted


def test_breaker_opens_on_failure_for_a_doubling_cool_down_and_closes_on_an_answer() -> None:
    b = CircuitBreaker(cooldown_s=5.0, max_cooldown_s=12.0)
    assert b.allows(0.0)
    b.failed(10.0)
    assert not b.allows(14.9) and b.open_for_s(14.0) == 1.0 and b.allows(15.0)
    b.failed(15.0)  # tried again, failed again: longer
    assert not b.allows(24.9) and b.allows(25.0)
    b.failed(25.0)
    assert b.open_for_s(25.0) == 12.0  # capped
    b.answered()
    assert b.allows(25.0) and b.failures_in_a_row == 0


def test_budget_stops_on_a_stall_or_at_the_cap() -> None:
    assert give_up_at_s(started_s=0.0, last_answer_s=0.0, stall_s=1.0, max_wait_s=2.0) == 1.0
    assert give_up_at_s(started_s=0.0, last_answer_s=0.8, stall_s=1.0, max_wait_s=2.0) == 1.8
    assert give_up_at_s(started_s=0.0, last_answer_s=1.5, stall_s=1.0, max_wait_s=2.0) == 2.0


def test_results_come_back_in_order_with_inline_and_errors_in_place(store: _Store) -> None:
    r, counted = _resolver(store)
    rois = [_ref("s3", "a"), _inline(), _ref("s3", "missing"), None, _ref("gs", "x"), _ref("s3", "b")]
    out = r.resolve_batch(rois)
    assert np.array_equal(out[0][0], PIXELS) and np.array_equal(out[1][0], PIXELS)
    assert [None if e is None else e.reason for _, e in out] == [
        None, None, "not_found", "no_roi", "unsupported_scheme", None]
    assert sorted(counted) == ["no_roi", "not_found", "unsupported_scheme"]
    r.close()


def test_a_hanging_store_costs_the_stall_budget_once_then_is_skipped_for_its_cool_down(store: _Store) -> None:
    clock = {"s": 0.0}
    r, counted = _resolver(store, stall_s=0.2, max_wait_s=0.5, cooldown_s=5.0,
                           clock_s=lambda: time.monotonic() + clock["s"])
    store.hang.set()
    t0 = time.monotonic()
    out = r.resolve_batch([_ref("s3", str(k)) for k in range(20)] + [_inline()])
    first_s = time.monotonic() - t0
    assert first_s < 0.5  # before: each read in turn, each up to botocore's timeouts
    # the reads sent hang: given up; the rest never started (cancelled): never sent, they say
    # nothing and are asked again (None: not read yet)
    sent = r.store_threads
    assert [e.reason for _, e in out[:sent]] == [TIMEOUT] * sent and out[sent:20] == [None] * (20 - sent)
    assert out[20][1] is None and store.most_running <= r.store_threads
    calls = store.calls
    t0 = time.monotonic()
    out = r.resolve_batch([_ref("s3", "next")])  # open: skipped, one read on the side, not waited for
    assert time.monotonic() - t0 < 0.05 and out[0][1].reason == STORE_DOWN
    side = r._probes["s3"][0]  # the side read (queued behind the stuck reads: the store stays skipped)
    store.hang.clear()
    store.release.set()  # the store is back (the stuck reads end)
    side.result(timeout=10)
    assert store.calls == calls + 1
    clock["s"] += 5.0  # the cool-down is over: asked again
    out = r.resolve_batch([_ref("s3", "again")])
    assert out[0][1] is None and store.calls == calls + 2
    assert counted.count(TIMEOUT) == sent and counted.count(STORE_DOWN) == 1
    r.close()


def test_a_store_back_within_its_cool_down_is_read_again_at_once(store: _Store) -> None:
    """A probe: after an outage the doubled cool-down skipped a store that answered again, 5-8 s
    of frames lost with the store up. A skipped store's reference is read on the side now (uncounted,
    not waited for), and its answer ends the cool-down."""
    from worker.refs.resolver import PROBE_EVERY_S

    clock = {"s": 0.0}
    r, counted = _resolver(store, stall_s=0.2, max_wait_s=0.5, cooldown_s=60.0,
                           clock_s=lambda: time.monotonic() + clock["s"])
    store.hang.set()
    r.resolve_batch([_ref("s3", "a")])  # hangs: skipped for 60 s
    assert r.resolve_batch([_ref("s3", "b")])[0][1].reason == STORE_DOWN  # a side read, queued
    store.hang.clear()  # back
    store.release.set()
    r._probes["s3"][0].result(timeout=10)
    clock["s"] += PROBE_EVERY_S
    assert r.resolve_batch([_ref("s3", "c")])[0][1].reason == STORE_DOWN  # skipped; read on the side
    deadline = time.monotonic() + 5
    while not r._probed_up and time.monotonic() < deadline:
        time.sleep(0.01)
    out = r.resolve_batch([_ref("s3", "d")])  # seconds into a 60 s cool-down
    assert out[0][1] is None and np.array_equal(out[0][0], PIXELS)
    assert TIMEOUT in counted and counted.count(STORE_DOWN) == 2  # side reads not counted
    r.close()


def test_a_healthy_store_is_read_concurrently_and_keeps_up(store: _Store) -> None:
    store.delay_s = 0.04  # a healthy S3 GET: 20-50 ms
    r, counted = _resolver(store)
    t0 = time.monotonic()
    out = r.resolve_batch([_ref("s3", str(k)) for k in range(30)])  # one second of a 30 fps session
    took_s = time.monotonic() - t0
    assert all(e is None for _, e in out) and counted == []
    assert took_s < 0.4  # one at a time: 1.2 s
    assert store.most_running > 1
    r.close()


def test_a_long_batch_from_a_healthy_store_is_not_given_up(store: _Store) -> None:
    """A backlog's batch takes longer than the stall budget in all, but answers keep coming."""
    store.delay_s = 0.03
    r, counted = _resolver(store, store_threads=2, stall_s=0.2, max_wait_s=5.0)
    out = r.resolve_batch([_ref("s3", str(k)) for k in range(40)])  # ~0.6 s on two threads
    assert all(e is None for _, e in out) and counted == []
    r.close()


def test_a_store_slower_than_the_turn_is_read_on_across_calls_never_marked_down(store: _Store) -> None:
    """What a store that answers has not read when the call's budget (the poll loop's turn) is up
    is "not read yet" (None), not missing, and no failure of the store: the next call with the same
    references takes the reads up (none read twice). Before: the rest given up as ``timeout`` and
    the store marked down, so the next batches were all ``store_down`` (a review: 500 references
    at 40 ms, 392 read + 108 timeout, then three batches of 500 store_down)."""
    store.delay_s = 0.1
    r, counted = _resolver(store, store_threads=1, stall_s=1.0, max_wait_s=0.35)
    rois = [_ref("s3", str(k)) for k in range(12)]
    t0 = time.monotonic()
    out = r.resolve_batch(rois)
    assert time.monotonic() - t0 < 0.6  # the turn's bound holds
    assert out[0] is not None and out[0][1] is None and out[-1] is None
    read = [k for k, o in enumerate(out) if o is not None]
    assert read == list(range(len(read)))  # one thread: a prefix
    for _ in range(10):
        unread = [k for k, o in enumerate(out) if o is None]
        if not unread:
            break
        t0 = time.monotonic()
        again = r.resolve_batch([rois[k] for k in unread])  # the caller asks again for those
        assert time.monotonic() - t0 < 0.6
        assert again[0] is not None  # the oldest read was carried on meanwhile: answered now
        for k, a in zip(unread, again, strict=True):
            out[k] = a
    assert all(o is not None and o[1] is None for o in out)
    assert counted == [] and store.calls == len(rois)  # nothing missing, nothing read twice
    assert r.resolve_batch([_ref("s3", "x")])[0][1] is None  # asked: never marked down
    r.close()


def test_a_backlog_batch_from_a_healthy_store_loses_nothing(store: _Store) -> None:
    """The review's case, scaled down: a healthy store, batches longer than the turn's budget."""
    store.delay_s = 0.01
    r, counted = _resolver(store, store_threads=4, stall_s=0.5, max_wait_s=0.1)
    for b in range(3):
        rois = [_ref("s3", f"{b}/{k}") for k in range(100)]  # ~0.25 s each on four threads
        out = r.resolve_batch(rois)
        while None in out:
            unread = [k for k, o in enumerate(out) if o is None]
            for k, a in zip(unread, r.resolve_batch([rois[k] for k in unread]), strict=True):
                out[k] = a
        assert all(e is None for _, e in out)
    assert counted == []
    r.close()


def test_one_failed_object_does_not_mark_the_store_down(store: _Store) -> None:
    """An AccessDenied (or throttled) GET among good ones is that frame missing, not a store down.
    Before: the next 30 good references were all ``store_down``."""
    denied = _Store()
    denied.delay_s = 0.005

    def one_denied(uri: str, shape: tuple[int, ...]) -> np.ndarray:
        if uri.endswith("/denied"):
            raise RefError(BACKEND_ERROR, f"{uri}: AccessDenied", scheme="s3")
        return denied(uri, shape)

    r = RoiResolver(uri_resolvers={"s3": one_denied})
    out = r.resolve_batch([_ref("s3", str(k)) for k in range(29)] + [_ref("s3", "denied")])
    assert [e.reason if e else None for _, e in out] == [None] * 29 + [BACKEND_ERROR]
    out = r.resolve_batch([_ref("s3", f"b{k}") for k in range(30)])
    assert all(e is None for _, e in out)  # before: 30 x store_down
    r.close()


def test_a_store_whose_reads_all_fail_is_skipped_for_its_cool_down() -> None:
    def down(uri: str, shape: tuple[int, ...]) -> np.ndarray:
        raise RefError(BACKEND_ERROR, "connection refused", scheme="s3")

    r = RoiResolver(uri_resolvers={"s3": down})
    out = r.resolve_batch([_ref("s3", str(k)) for k in range(5)])
    assert [e.reason for _, e in out] == [BACKEND_ERROR] * 5
    assert r.resolve_batch([_ref("s3", "next")])[0][1].reason == STORE_DOWN
    r.close()


def test_store_verdicts() -> None:
    assert store_verdict(answered_ok=29, answered_failed=1, hung_=False) is True
    assert store_verdict(answered_ok=0, answered_failed=5, hung_=False) is False
    assert store_verdict(answered_ok=3, answered_failed=0, hung_=True) is False
    assert store_verdict(answered_ok=0, answered_failed=0, hung_=False) is None  # only cut by the turn
    # a slow object among answered reads: up where others were answered, else nothing either way
    assert store_verdict(answered_ok=3, answered_failed=0, hung_=True, outpaced_=True) is True
    assert store_verdict(answered_ok=0, answered_failed=0, hung_=True, outpaced_=True) is None
    assert hung(now_s=1.0, last_answer_s=0.0, stall_s=1.0) and not hung(0.99, 0.0, 1.0)


def test_outpaced_reads_were_all_sent_no_later_than_an_answered_one() -> None:
    assert outpaced([4.0, 4.0], up_sent_s=4.0)  # the answered read was sent with them
    assert outpaced([3.0], up_sent_s=4.0)  # ... or after
    assert not outpaced([4.0, 5.0], up_sent_s=4.0)  # one sent after every answer: a hang
    assert not outpaced([], up_sent_s=4.0) and not outpaced([1.0], up_sent_s=float("-inf"))


def _one_slow_object(store: _Store, slow_s: float):
    """``store``, but the object named "slow" takes ``slow_s`` (an S3 GET retried for seconds)."""
    def read(uri: str, shape: tuple[int, ...]) -> np.ndarray:
        if uri.endswith("/slow"):
            time.sleep(slow_s)
        return store(uri, shape)
    return read


def test_one_slow_object_among_good_ones_is_that_frame_missing_not_the_store_down(store: _Store) -> None:
    """Before: once the others were answered the slow read looked like a hang, so the store was
    skipped for its cool-down (5 s of every session's frames ``store_down``)."""
    counted: list[str] = []
    r = RoiResolver(uri_resolvers={"s3": _one_slow_object(store, 1.0)}, on_failure=lambda e: counted.append(e.reason),
                    stall_s=0.2, max_wait_s=2.0)
    out = r.resolve_batch([_ref("s3", str(k)) for k in range(8)] + [_ref("s3", "slow")])
    assert [e.reason if e else None for _, e in out] == [None] * 8 + [TIMEOUT]
    assert "while the store answered" in out[8][1].detail
    out = r.resolve_batch([_ref("s3", f"b{k}") for k in range(8)])
    assert all(e is None for _, e in out)  # asked and read: before, 8 x store_down
    assert counted == [TIMEOUT]
    r.close()


def test_a_slow_object_kept_back_and_asked_for_alone_does_not_mark_the_store_down(store: _Store) -> None:
    """The worker asks again for a reference not read within its turn in a call of its own, where
    the slow read is the only one: the answers it was sent with still count for the store."""
    store.delay_s = 0.05
    counted: list[str] = []
    r = RoiResolver(uri_resolvers={"s3": _one_slow_object(store, 2.0)}, on_failure=lambda e: counted.append(e.reason),
                    store_threads=2, stall_s=0.5, max_wait_s=0.7)
    # the other thread answers one every 50 ms until 0.4 s: no stall (0.9 s) before the turn ends at 0.7
    out = r.resolve_batch([_ref("s3", "slow")] + [_ref("s3", k) for k in "abcdefgh"])
    assert out[0] is None and all(e is None for _, e in out[1:])  # the turn ended: kept back
    again = r.resolve_batch([_ref("s3", "slow")])  # alone: given up at ~1.2 s, its read ends at 2.0
    assert again[0][1].reason == TIMEOUT and "while the store answered" in again[0][1].detail
    assert r.resolve_batch([_ref("s3", "next")])[0][1] is None  # asked: not marked down
    assert counted == [TIMEOUT]
    r.close()


def test_a_store_that_stops_answering_mid_batch_is_marked_down_by_the_next_batch(store: _Store) -> None:
    """The reads of the batch it stopped in count as slow objects; the next batch's reads, sent
    after every answer, hang: then it is down, as a store hanging from the start is."""
    counted: list[str] = []
    stop_after = {"n": 4}

    def dies(uri: str, shape: tuple[int, ...]) -> np.ndarray:
        with store._lock:
            stop_after["n"] -= 1
            dead = stop_after["n"] < 0
        if dead:
            store.release.wait(10.0)
            raise RefError(BACKEND_ERROR, "read timeout", scheme="s3")
        return PIXELS.copy()

    r = RoiResolver(uri_resolvers={"s3": dies}, on_failure=lambda e: counted.append(e.reason),
                    store_threads=2, stall_s=0.2, max_wait_s=2.0)
    out = r.resolve_batch([_ref("s3", str(k)) for k in range(5)])
    assert [e.reason if e else None for _, e in out] == [None] * 4 + [TIMEOUT]
    out = r.resolve_batch([_ref("s3", "next")])
    assert out[0][1].reason == TIMEOUT and "answered nothing" in out[0][1].detail
    assert r.resolve_batch([_ref("s3", "after")])[0][1].reason == STORE_DOWN
    store.release.set()
    r.close()


def test_one_hanging_store_does_not_hold_another(store: _Store) -> None:
    files = _Store()
    r = RoiResolver(uri_resolvers={"s3": store, "file": files}, stall_s=0.3, max_wait_s=0.5)
    store.hang.set()
    r.resolve_batch([_ref("s3", str(k)) for k in range(20)])  # s3 threads stuck
    out = r.resolve_batch([_ref("file", "a"), _ref("file", "b")])
    assert [e for _, e in out] == [None, None]
    r.close()


def test_the_breaker_knows_when_an_outage_began_until_an_answer() -> None:
    b = CircuitBreaker(cooldown_s=5.0)
    assert b.down_since_s is None
    b.failed(10.0)
    b.failed(15.0)  # still down after the cool-down: the same outage
    assert b.down_since_s == 10.0
    b.answered()
    assert b.down_since_s is None


def test_an_outage_is_held_uncounted_and_read_when_the_store_answers_again(store: _Store) -> None:
    """A probe: a 10-s S3 outage cost its frames (timeout, then store_down), though every object
    was there once the store answered. With outage_hold_s the outage's references are not read
    yet (None: the worker keeps their records back), uncounted, and read once the store is back."""
    from worker.refs.resolver import PROBE_EVERY_S

    clock = {"s": 0.0}
    holds: list[str] = []
    r, counted = _resolver(store, stall_s=0.2, max_wait_s=0.5, cooldown_s=5.0, outage_hold_s=30.0,
                           on_outage=lambda store, event: holds.append(f"{store} {event}"), clock_s=lambda: time.monotonic() + clock["s"])
    store.hang.set()
    t0 = time.monotonic()
    out = r.resolve_batch([_ref("s3", "a"), _inline(), _ref("s3", "b")])
    assert time.monotonic() - t0 < 0.5  # the stall budget, as without a hold
    assert out[0] is None and out[2] is None and out[1][1] is None  # held; the inline one read
    assert r.held_stores == {"s3"} and r.held_for_outage(_ref("s3", "a")) and not r.held_for_outage(_inline())
    assert counted == [] and holds == ["s3 held"]
    t0 = time.monotonic()
    assert r.resolve_batch([_ref("s3", "a"), _ref("s3", "b")]) == [None, None]  # skipped, not waited for
    assert time.monotonic() - t0 < 0.05 and counted == [] and holds == ["s3 held"]  # one report per outage
    store.hang.clear()  # back
    store.release.set()
    r._probes["s3"][0].result(timeout=10)
    clock["s"] += PROBE_EVERY_S
    r.resolve_batch([_ref("s3", "a")])  # a side read finds it up
    deadline = time.monotonic() + 5
    while not r._probed_up and time.monotonic() < deadline:
        time.sleep(0.01)
    out = r.resolve_batch([_ref("s3", "a"), _ref("s3", "b")])
    assert all(e is None and np.array_equal(p, PIXELS) for p, e in out)
    assert r.held_stores == set() and counted == [] and r.resolved() == {"s3": 2, "inline": 1}
    assert holds == ["s3 held", "s3 back"]
    r.close()


def test_an_outage_longer_than_the_hold_costs_each_reference_held_that_long(store: _Store) -> None:
    """Each reference is held at most outage_hold_s from when it was first held: an outage longer
    than the hold costs the frames past it, not the whole outage's (a probe's 45-s outage lost all
    45 s of frames, released at once when a hold counted from the outage's start expired)."""
    clock = {"s": 0.0}
    holds: list[str] = []
    r, counted = _resolver(store, stall_s=0.2, max_wait_s=0.5, cooldown_s=5.0, outage_hold_s=8.0,
                           on_outage=lambda store, event: holds.append(f"{store} {event}"),
                           clock_s=lambda: time.monotonic() + clock["s"])
    store.hang.set()
    assert r.resolve_batch([_ref("s3", "a")]) == [None]
    clock["s"] += 5.0  # the cool-down is over: asked again, hangs again
    assert r.resolve_batch([_ref("s3", "a"), _ref("s3", "b")]) == [None, None]
    clock["s"] += 3.0  # "a" held 8 s: given up; "b", first held 3 s ago, still held
    out = r.resolve_batch([_ref("s3", "a"), _ref("s3", "b")])
    assert out[0][1].reason == STORE_DOWN and out[1] is None
    clock["s"] += 5.0
    assert r.resolve_batch([_ref("s3", "b")])[0][1].reason == STORE_DOWN
    assert counted == [STORE_DOWN, STORE_DOWN] and holds == ["s3 held", "s3 given_up"]
    r.close()


def test_a_store_whose_reads_all_fail_is_held_too() -> None:
    def down(uri: str, shape: tuple[int, ...]) -> np.ndarray:
        raise RefError(BACKEND_ERROR, "connection refused", scheme="s3")

    counted: list[str] = []
    r = RoiResolver(uri_resolvers={"s3": down}, on_failure=lambda e: counted.append(e.reason), outage_hold_s=30.0)
    assert r.resolve_batch([_ref("s3", "a"), _ref("s3", "b")]) == [None, None]
    assert r.resolve_batch([_ref("s3", "c")]) == [None]  # skipped for the cool-down, still held
    assert counted == [] and r.held_stores == {"s3"}
    r.close()


def test_one_failed_object_among_good_ones_is_missing_even_with_a_hold(store: _Store) -> None:
    """The store answers: a hold is for outages, not for objects that are not there."""
    r, counted = _resolver(store, outage_hold_s=30.0)
    out = r.resolve_batch([_ref("s3", "a"), _ref("s3", "missing")])
    assert out[0][1] is None and out[1][1].reason == NOT_FOUND
    assert counted == [NOT_FOUND] and r.held_stores == set()
    r.close()


class _DiesAfter(_Store):
    """A store that answers its first ``n`` reads (each in ``delay_s``), then hangs until released."""

    def __init__(self, n: int, delay_s: float = 0.01) -> None:
        super().__init__(delay_s)
        self.left = n

    def __call__(self, uri: str, shape: tuple[int, ...]) -> np.ndarray:
        with self._lock:
            self.left -= 1
            if self.left == -1:  # (once: released, it answers again)
                self.hang.set()
        return super().__call__(uri, shape)


def _read_all_once_back(r: RoiResolver, store: _Store, keys: list[str], clock: dict) -> None:
    """The store back: a side read finds it up, then every reference is read."""
    from worker.refs.resolver import PROBE_EVERY_S

    store.hang.clear()
    store.release.set()
    deadline = time.monotonic() + 10
    while keys and time.monotonic() < deadline:  # asked again until read, as the worker does
        clock["s"] += PROBE_EVERY_S
        out = r.resolve_batch([_ref("s3", k) for k in keys])
        assert all(o is None or o[1] is None for o in out)
        keys = [k for k, o in zip(keys, out, strict=True) if o is None]
        time.sleep(0.02)
    assert keys == []


def test_an_outage_that_starts_mid_batch_loses_none_of_the_batch() -> None:
    """A probe: a store that went dark 0.15 s into a backlog's batch of 300 references lost 260 of
    them as timeout with the hold on: reads queued behind the stuck ones (never sent) and reads sent
    with ones it answered (taken for slow objects) were counted before the store was marked down."""
    store = _DiesAfter(20)
    clock = {"s": 0.0}
    r, counted = _resolver(store, store_threads=2, stall_s=0.2, max_wait_s=1.0, outage_hold_s=30.0,
                           clock_s=lambda: time.monotonic() + clock["s"])
    keys = [str(k) for k in range(60)]
    out = r.resolve_batch([_ref("s3", k) for k in keys])
    assert sum(o is not None for o in out) == 20 and counted == []  # the rest: not read yet
    later = [k for k, o in zip(keys, out, strict=True) if o is None]
    assert r.resolve_batch([_ref("s3", k) for k in later]) == [None] * len(later)  # now down
    assert r.resolve_batch([_ref("s3", k) for k in later]) == [None] * len(later)  # held
    assert counted == [] and r.held_stores == {"s3"}
    _read_all_once_back(r, store, later, clock)
    assert counted == []
    r.close()


def test_reads_carried_over_into_an_outage_are_held_too() -> None:
    """A probe: a slow store's reads carried over from one turn, asked for again while its outage
    was already held, were all counted as timeout."""
    store = _Store(0.05)
    clock = {"s": 0.0}
    r, counted = _resolver(store, store_threads=2, stall_s=0.2, max_wait_s=0.4, outage_hold_s=30.0,
                           clock_s=lambda: time.monotonic() + clock["s"])
    keys = [str(k) for k in range(60)]
    out = r.resolve_batch([_ref("s3", k) for k in keys])  # ~1.5 s of reads: most carried over
    store.hang.set()  # the store goes dark: the carried reads not started yet hang when they start
    later = [k for k, o in zip(keys, out, strict=True) if o is None]
    assert len(later) > 10
    r.resolve_batch([_ref("s3", "new")])  # a new reference finds the store down
    for _ in range(3):
        out = r.resolve_batch([_ref("s3", k) for k in later])
        later = [k for k, o in zip(later, out, strict=True) if o is None]
    assert counted == [] and later and r.held_stores == {"s3"}
    _read_all_once_back(r, store, later + ["new"], clock)
    assert counted == []
    r.close()


def test_nothing_first_held_later_than_the_hold_into_an_outage() -> None:
    """A review: each reference held for its own outage_hold_s keeps its partition paused, so the
    next fetch's references started fresh holds, and a store down for 120 s left the worker 113 s
    behind. References first asked once the outage is outage_hold_s old are not held."""
    def down(uri: str, shape: tuple[int, ...]) -> np.ndarray:
        raise RefError(BACKEND_ERROR, "connection refused", scheme="s3")

    clock = {"s": 0.0}
    counted: list[str] = []
    r = RoiResolver(uri_resolvers={"s3": down}, on_failure=lambda e: counted.append(e.reason), outage_hold_s=8.0,
                    clock_s=lambda: clock["s"])
    assert r.resolve_batch([_ref("s3", "a")]) == [None]  # the outage begins: held
    clock["s"] = 7.0
    assert r.resolve_batch([_ref("s3", "b")]) == [None]  # first asked 7 s in: held too
    clock["s"] = 8.5
    out = r.resolve_batch([_ref("s3", "b"), _ref("s3", "c")])
    assert out[0] is None and out[1][1].reason == STORE_DOWN  # "c", first asked 8.5 s in: not held
    assert counted == [STORE_DOWN]
    r.close()


def test_a_reference_asked_again_alone_says_nothing_of_its_store() -> None:
    """A reference that failed with its store while others were read is asked once more; that
    second read, alone in its call, failing again, is counted, and the store is not marked down."""
    def flaky(uri: str, shape: tuple[int, ...]) -> np.ndarray:
        if uri.endswith("bad"):
            raise RefError(BACKEND_ERROR, "SlowDown", scheme="s3")
        return PIXELS.copy()

    counted: list[str] = []
    r = RoiResolver(uri_resolvers={"s3": flaky}, on_failure=lambda e: counted.append(e.reason), outage_hold_s=30.0)
    out = r.resolve_batch([_ref("s3", "a"), _ref("s3", "bad"), _ref("s3", "b")])
    assert out[1] is None and out[0][1] is None and counted == []  # once more first
    out = r.resolve_batch([_ref("s3", "bad")])
    assert out[0][1].reason == BACKEND_ERROR and counted == [BACKEND_ERROR]
    assert r._breaker("s3").down_since_s is None and r.held_stores == set()
    r.close()


def test_a_live_record_is_held_while_it_is_young_however_late_into_the_outage() -> None:
    """A probe of a 45-s outage: a paused partition's later records are first asked only when it
    moves on, 30 s into the outage, and were given up at once (nearly all its frames lost). A
    record is held while younger than outage_hold_s: the outage costs only the frames written
    more than outage_hold_s before it ended, and no signal is later than that."""
    down = {"on": True}

    def store(uri: str, shape: tuple[int, ...]) -> np.ndarray:
        if down["on"]:
            raise RefError(BACKEND_ERROR, "connection refused", scheme="s3")
        return PIXELS.copy()

    clock = {"s": 5.0}
    counted: list[str] = []
    r = RoiResolver(uri_resolvers={"s3": store}, on_failure=lambda e: counted.append(e.reason), outage_hold_s=30.0,
                    clock_s=lambda: clock["s"])
    assert r.resolve_batch([_ref("s3", "5")], [0.0]) == [None]  # written at 5 s, as the outage began
    clock["s"] = 36.0  # written at 6 s (age 30): given up; at 20 and 29 s, first asked now: held
    out = r.resolve_batch([_ref("s3", "6"), _ref("s3", "20"), _ref("s3", "29")], [30.0, 16.0, 7.0])
    assert out[0][1].reason in (STORE_DOWN, BACKEND_ERROR) and out[1:] == [None, None]  # (asked, or skipped)
    clock["s"] = 50.0
    assert r.resolve_batch([_ref("s3", "20")], [30.0])[0][1] is not None  # 30 s old by now: given up
    down["on"] = False  # back: asked after its cool-down, it answers
    clock["s"] = 200.0
    out = r.resolve_batch([_ref("s3", "29")], [21.0])
    assert out[0][1] is None and len(counted) == 2
    r.close()
