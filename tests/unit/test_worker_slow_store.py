"""A store that hangs costs the frames it holds, not the poll loop: the ROI references of a consume
batch are read together within a time budget, then skipped while the store cools down.

Before (a review's e2e_s3_hang.py): four s3:// references to an endpoint that never answered held
the poll loop 60.8 s; a healthy inline session waited 61.7 s for its signals and /healthz said 503
from 31 s. Here the Worker's input handling is driven without a broker (stand-in consumer and
producer; the pipeline tests run the real ones).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from support.fake_scorer import FakeScorer

from schemas import AvroCodec
from tests.support.worker_fakes import FakeMessage, HoldingConsumer, offline_worker
from worker.app import Worker
from worker.observability.metrics import WorkerMetrics
from worker.refs import RefError, RoiResolver
from worker.refs.errors import BACKEND_ERROR

RELEASE = threading.Event()


def _hanging_store(uri: str, shape: tuple[int, ...]) -> np.ndarray:
    RELEASE.wait(10.0)
    return np.zeros(shape, np.uint8)


def _Msg(offset: int, session: str, value: bytes) -> FakeMessage:
    return FakeMessage("r", offset, value, key=session.encode())


def _roi(session: str, k: int, roi: dict) -> bytes:
    return AvroCodec("RoiRef").encode({"session_id": session, "frame_index": k, "pts_ms": 40 * k, "fps": 25.0,
                                       "roi": roi})


@pytest.fixture
def worker():
    metrics = WorkerMetrics()
    resolver = RoiResolver(uri_resolvers={"s3": _hanging_store}, stall_s=0.3, max_wait_s=1.0,
                           on_failure=lambda e: metrics.ref_errors.labels(e.reason).inc())
    w = offline_worker(FakeScorer(), metrics=metrics, resolver=resolver)
    RELEASE.clear()
    yield w
    RELEASE.set()
    w.stage.stop()
    resolver.close()


def test_a_hanging_store_costs_its_frames_not_the_poll_loop(worker: Worker) -> None:
    s3 = [_Msg(k, "s3", _roi("s3", k, {"uri": f"s3://bucket/s3/{k}.raw", "shape": [96, 96], "format": "GRAY8"}))
          for k in range(4)]
    inline = [_Msg(4 + k, "h", _roi("h", k, {"width": 16, "height": 16, "format": "GRAY8", "data": bytes(256)}))
              for k in range(3)]
    t0 = time.monotonic()
    worker._handle_batch(s3 + inline, 1_000_000)
    assert time.monotonic() - t0 < 0.8  # the stall budget (0.3 s), not 4 x botocore's timeouts
    t0 = time.monotonic()
    more = [_Msg(7 + k, "s3", _roi("s3", 4 + k, {"uri": f"s3://bucket/s3/{4 + k}.raw", "shape": [96, 96],
                                           "format": "GRAY8"})) for k in range(4)]
    worker._handle_batch(more, 1_000_100)  # the store cools down: not asked
    assert time.monotonic() - t0 < 0.1
    errors = {s.labels["reason"]: s.value for s in worker.metrics.ref_errors.collect()[0].samples
              if s.name.endswith("_total")}
    assert errors == {"timeout": 4.0, "store_down": 4.0}
    assert worker.dead_lettered == 0  # missing frames, as documented; every record opened in the join
    assert worker.tracker.open_count(("r", 0)) == 11


class _SlowStore:
    """A healthy store that answers every GET, each in ``delay_s``."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.reads: list[str] = []

    def __call__(self, uri: str, shape: tuple[int, ...]) -> np.ndarray:
        time.sleep(self.delay_s)
        self.reads.append(uri)
        return np.full(shape, int(uri.rsplit("/", 1)[1].split(".")[0]) % 251, np.uint8)


def test_a_batch_longer_than_a_turn_is_read_on_next_turn_nothing_missing() -> None:
    """A healthy store slower than a backlog's batch: what is not read within the turn's budget
    is kept back (its partition held, the records unopened: no commit passes them) and read on the
    next turn, in order. Before: given up as missing frames (``timeout``), offsets released, and
    the store marked down for the batches after (``store_down``)."""
    metrics = WorkerMetrics()
    store = _SlowStore(0.03)
    resolver = RoiResolver(uri_resolvers={"s3": store}, store_threads=2, stall_s=0.5, max_wait_s=0.15,
                           on_failure=lambda e: metrics.ref_errors.labels(e.reason).inc())
    w = offline_worker(FakeScorer(), HoldingConsumer(), metrics=metrics, resolver=resolver)
    try:
        msgs = [_Msg(k, "s", _roi("s", k, {"uri": f"s3://bucket/s/{k}.raw", "shape": [16, 16], "format": "GRAY8"}))
                for k in range(40)]  # ~0.6 s of reads on two threads: four turns' budget
        now = 1_000_000
        t0 = time.monotonic()
        w._handle_batch(msgs, now)
        assert time.monotonic() - t0 < 0.5  # the turn's bound holds
        first = w.tracker.open_count(("r", 0))
        assert 0 < first < 40 and w.consumer.held == {("r", 0)}  # the rest kept back, unopened
        assert w.tracker.positions() == {("r", 0): 0}  # nothing committed past the first kept back
        assert w._release_held(now) == []  # not within the same turn
        turns = 1
        while w.consumer.held and turns < 20:
            now += 200
            turns += 1
            w._handle_batch(w._release_held(now), now)
        assert w.tracker.open_count(("r", 0)) == 40 and w.consumer.held == set()
        errors = [s for s in metrics.ref_errors.collect()[0].samples if s.name.endswith("_total")]
        assert errors == []  # before: timeout for the rest, store_down for the batches after
        assert sorted(store.reads) == sorted(f"s3://bucket/s/{k}.raw" for k in range(40))  # each read once
    finally:
        w.stage.stop()
        resolver.close()


def test_a_store_outage_holds_its_partition_and_loses_no_frame() -> None:
    """A probe: a 10-s S3 outage cost its frames (``timeout``, then ``store_down``), though every
    object was there once the store answered again. With ``refs.outage_hold_s`` the records are
    kept back (their partition held, unopened: no commit passes them), tried again every
    STORE_RETRY_MS without waiting on the store, and read once it answers."""
    from worker.app import STORE_RETRY_MS
    from worker.refs.resolver import PROBE_EVERY_S

    metrics = WorkerMetrics()
    up = threading.Event()

    def store(uri: str, shape: tuple[int, ...]) -> np.ndarray:
        if not up.is_set():
            up.wait(0.6)  # hangs past the stall budget
            if not up.is_set():
                raise TimeoutError("read timeout")
        return np.full(shape, 7, np.uint8)

    clock = {"s": 0.0}
    resolver = RoiResolver(uri_resolvers={"s3": store}, stall_s=0.2, max_wait_s=1.0, outage_hold_s=30.0,
                           on_failure=lambda e: metrics.ref_errors.labels(e.reason).inc(),
                           clock_s=lambda: time.monotonic() + clock["s"])
    w = offline_worker(FakeScorer(), HoldingConsumer(), metrics=metrics, resolver=resolver)
    resolver.on_outage = w._store_outage
    try:
        msgs = [_Msg(k, "s", _roi("s", k, {"uri": f"s3://bucket/s/{k}.raw", "shape": [16, 16], "format": "GRAY8"}))
                for k in range(6)]
        msgs += [_Msg(6, "h", _roi("h", 0, {"width": 16, "height": 16, "format": "GRAY8", "data": bytes(256)}))]
        now = 1_000_000
        w._handle_batch(msgs, now)
        assert w.consumer.held == {("r", 0)} and w.tracker.open_count(("r", 0)) == 0  # all kept, in order
        assert w.tracker.positions() == {}  # nothing opened: nothing to commit
        assert w._release_held(now + STORE_RETRY_MS - 1) == []  # not spinning on a store that is down
        for _ in range(3):  # down: each try skips the store at once
            now += STORE_RETRY_MS
            t0 = time.monotonic()
            w._handle_batch(w._release_held(now), now)
            assert time.monotonic() - t0 < 0.1 and w.consumer.held == {("r", 0)}
        up.set()  # back: a side read finds it up within PROBE_EVERY_S
        deadline = time.monotonic() + 5
        while w.consumer.held and time.monotonic() < deadline:
            clock["s"] += PROBE_EVERY_S
            now += STORE_RETRY_MS
            w._handle_batch(w._release_held(now), now)
            time.sleep(0.02)
        assert w.consumer.held == set() and w.tracker.open_count(("r", 0)) == 7
        assert [s for s in metrics.ref_errors.collect()[0].samples if s.name.endswith("_total")] == []
        outages = {s.labels["store"]: s.value for s in metrics.ref_store_outages.collect()[0].samples
                   if s.name.endswith("_total")}
        assert outages == {"s3": 1.0}
    finally:
        up.set()
        w.stage.stop()
        resolver.close()


def test_the_partner_partition_stays_held_while_a_store_outage_is_retried() -> None:
    """A probe: beside a ROI partition retried every STORE_RETRY_MS for a store outage, the audio
    partition (held for running ahead of it) was let go and held again at every retry, 52 times:
    the retry let the ROI partition go for a moment, and the audio's check saw it not held."""
    from worker.app import STORE_RETRY_MS

    class CountingConsumer(HoldingConsumer):
        def __init__(self) -> None:
            super().__init__()
            self.holds: dict = {}

        def hold(self, tps: set) -> None:
            for tp in (set(tps) & self.assigned) - self._held:
                self.holds[tp] = self.holds.get(tp, 0) + 1
            super().hold(tps)

    def down(uri: str, shape: tuple[int, ...]) -> np.ndarray:
        raise RefError(BACKEND_ERROR, "connection refused", scheme="s3")

    resolver = RoiResolver(uri_resolvers={"s3": down}, stall_s=0.2, max_wait_s=1.0, outage_hold_s=30.0)
    consumer = CountingConsumer()
    w = offline_worker(FakeScorer(), consumer, resolver=resolver)
    try:
        t0 = 1_000_000
        rois = [FakeMessage("r", k, _roi("s", k, {"uri": f"s3://bucket/s/{k}.raw", "shape": [16, 16],
                                                  "format": "GRAY8"}), key=b"s", timestamp_ms=t0 + 40 * k)
                for k in range(3)]
        chunk = AvroCodec("AudioChunk")
        audio = [FakeMessage("a", k, chunk.encode({
            "session_id": "s", "seq": k, "start_sample": 320 * k, "sample_rate": 16000, "channels": 1,
            "encoding": "PCM_S16LE", "data": bytes(640), "end_of_session": False, "produced_at_ms": None}),
            key=b"s", timestamp_ms=t0 + 20_000 + 20 * k) for k in range(3)]  # 20 s ahead by Kafka time
        now = 2_000_000
        for _ in range(3):  # the store fails every read until it is marked down and held
            w._handle_batch(rois if not w._deferred else [], now)
            now += STORE_RETRY_MS
            w._handle_batch(w._release_held(now), now)
        assert ("r", 0) in w._deferred and resolver.held_stores == {"s3"}
        w._handle_batch(audio, now)
        assert ("a", 0) in w._deferred  # ahead of a partner that waits: held
        for _ in range(8):
            now += STORE_RETRY_MS
            w._handle_batch(w._release_held(now), now)
        assert ("a", 0) in w._deferred and consumer.holds[("a", 0)] == 1  # held once, for good
    finally:
        w.stage.stop()
        resolver.close()


def test_a_partition_held_again_and_again_is_logged_once_in_a_while(monkeypatch: pytest.MonkeyPatch) -> None:
    """A re-probe: beside a store outage's retries every 250 ms, 'input partition ahead of its
    partner topic: held' was logged 31-68 times per 8-s outage."""
    from worker import app
    from worker.app import HELD_LOG_EVERY_MS, STORE_RETRY_MS

    lines: list[str] = []

    class Log:
        def info(self, event: str, **_kw: object) -> None:
            lines.append(event)

        def __getattr__(self, _name: str):
            return lambda *_a, **_kw: None

    monkeypatch.setattr(app, "log", Log())
    w = offline_worker(FakeScorer(), HoldingConsumer())
    try:
        w._deferred[("r", 0)] = []  # the partner waits (held): "a" runs ahead by Kafka time
        chunk = AvroCodec("AudioChunk").encode({
            "session_id": "s", "seq": 0, "start_sample": 0, "sample_rate": 16000, "channels": 1,
            "encoding": "PCM_S16LE", "data": bytes(640), "end_of_session": False, "produced_at_ms": None})
        w._first_ts[("a", 0)] = 0
        w._last_ts[("r", 0)] = 0
        now = 1_000_000
        for k in range(2 * HELD_LOG_EVERY_MS // STORE_RETRY_MS):
            assert w._hold_if_ahead(FakeMessage("a", k, chunk, key=b"s", timestamp_ms=60_000), now)
            w._deferred.pop(("a", 0))  # let go (a retry), held again on the next turn
            now += STORE_RETRY_MS
        assert sum(line.startswith("input partition ahead") for line in lines) == 2
    finally:
        w.stage.stop()
