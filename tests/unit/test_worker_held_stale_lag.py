"""A partition the worker holds or paused itself counts as still having unread records: its lag
(librdkafka's cached high watermark, refreshed by fetches only) is stale meanwhile, and stays stale
after a resume until a fetch of it answers.

Before (a review's e2e_registry_one_topic.py): a registry outage on the audio topic held the
audio partition for ~5 s; the ROI partition, running ahead, was held as "ahead of its partner";
when the audio came back the ROI partition's lag read 0 (stale: paused for 12 s of new records),
so the audio was not held back and ran ~10 s ahead, the video stream counted as stalled, jobs were
emitted with no frames and the frames arriving later were dropped as late, their offsets committed
(28 of 57 signals LOW_QUALITY, events_dropped{why=late} 288).

Here the Worker's poll loop is driven turn by turn on a fake clock (the run loop's steps: consume,
handle, release the held, tick the join every 250 ms) over a stand-in consumer whose lag is stale
exactly as librdkafka's: the high watermark is only seen by a fetch, and a held or paused
partition is not fetched.
"""

from __future__ import annotations

import struct

import pytest
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError
from support.fake_scorer import FakeScorer

from schemas import AvroCodec
from schemas.codec import schema_text
from tests.support.worker_fakes import FakeMessage, offline_worker
from worker.app import STALE_LAG_MS, Worker, lagging_partitions
from worker.windowing.events import Stream

AUDIO, ROI = ("a", 0), ("r", 0)


class _Registry:
    def __init__(self, name: str, schema_id: int) -> None:
        self.name, self.schema_id = name, schema_id
        self.down = False

    def get_schema(self, schema_id: int) -> Schema:
        if self.down:
            raise SchemaRegistryError(503, 50301, "registry unavailable")
        return Schema(schema_text(self.name), "AVRO")


def _Msg(topic: str, offset: int, value: bytes, ts: int) -> FakeMessage:
    return FakeMessage(topic, offset, value, key=b"s1", timestamp_ms=ts)


class _Consumer:
    """Two partitions, each a log the test appends to. ``fetch`` reads what a fetch would (not the
    held or paused ones, nor for FETCH_MS one just resumed: the fetch is on its way) and only then
    sees the high watermark: lag() is stale for the others."""

    FETCH_MS = 100

    def __init__(self) -> None:
        self.assigned = {AUDIO, ROI}
        self.logs: dict = {AUDIO: [], ROI: []}
        self.position = {AUDIO: 0, ROI: 0}
        self.high_seen = {AUDIO: 0, ROI: 0}
        self._held: set = set()
        self.paused = False
        self.now = 0
        self._resumed_at: dict = {}
        self.down = False  # the broker does not answer: no fetch, no watermark query
        self.fetch_from: dict = {}  # tp -> the time its first fetch answers (after an outage, a freeze)

    @property
    def held(self) -> set:
        return set(self._held)

    def hold(self, tps: set) -> None:
        for tp in self._held - set(tps):
            self._resumed_at[tp] = self.now
        self._held = set(tps) & self.assigned

    def pause_all(self) -> int:
        self.paused = True
        return len(self.assigned)

    def resume_all(self) -> None:
        self.paused = False
        for tp in self.assigned:
            self._resumed_at[tp] = self.now

    def fetch(self, most: int = 500) -> list:
        out: list = []
        if self.paused or self.down:
            return out
        for tp in sorted(self.assigned - self._held):
            if self.now - self._resumed_at.get(tp, self.now - self.FETCH_MS) < self.FETCH_MS:
                continue
            if self.now < self.fetch_from.get(tp, self.now):
                continue
            log = self.logs[tp]
            self.high_seen[tp] = len(log)
            got = log[self.position[tp]:self.position[tp] + most]
            self.position[tp] += len(got)
            out += got
        return out

    def lag(self) -> dict:
        return {tp: max(0, self.high_seen[tp] - self.position[tp]) for tp in self.assigned}

    def unread(self, tps: list, timeout_s: float) -> dict:
        """The broker's own answer (InputConsumer.unread): None while it is down."""
        return {tp: None if self.down else len(self.logs[tp]) > self.position[tp] for tp in tps}

    def close(self) -> None:
        pass


def _framed(name: str, schema_id: int, record: dict) -> bytes:
    return b"\x00" + struct.pack(">I", schema_id) + AvroCodec(name).encode(record)


@pytest.fixture
def rig():
    clock = {"ms": 1_000_000}
    worker = offline_worker(FakeScorer(), _Consumer(), dlq=True, clock_ms=lambda: clock["ms"])
    registries = {"AudioChunk": _Registry("AudioChunk", 1), "RoiRef": _Registry("RoiRef", 2)}
    for name, topic in (("AudioChunk", "a"), ("RoiRef", "r")):
        worker.codecs[name] = AvroCodec(name, wire="confluent", registry=registries[name], subject=f"{topic}-value",
                                        clock_s=lambda: clock["ms"] / 1000.0)
    worker._assigned_once = worker._warm = True
    yield worker, registries, clock
    worker.stage.stop()


def _lagging(worker: Worker, now: int) -> set:
    return worker._lagging(now)


def _write_frame(consumer: _Consumer, ts: int, k: int, fps: int) -> None:
    """Frame ``k`` of session s1 written to the ROI partition at Kafka time ``ts``."""
    consumer.logs[ROI].append(_Msg("r", len(consumer.logs[ROI]), _framed("RoiRef", 2, {
        "session_id": "s1", "frame_index": k, "pts_ms": 1000 * k // fps, "fps": float(fps),
        "roi": {"width": 16, "height": 16, "format": "GRAY8", "data": bytes(256)}}), ts))


def _write_chunk(consumer: _Consumer, ts: int, seq: int, schema_id: int) -> None:
    """40-ms chunk ``seq`` of session s1 written to the audio partition under ``schema_id``."""
    consumer.logs[AUDIO].append(_Msg("a", len(consumer.logs[AUDIO]), _framed("AudioChunk", schema_id, {
        "session_id": "s1", "seq": seq, "start_sample": 640 * seq, "sample_rate": 16000, "channels": 1,
        "encoding": "PCM_S16LE", "data": bytes(1280)}), ts))


def _one_turn(worker: Worker, now: int, late_s: float, tick: bool) -> list:
    """One turn of Worker.run: consume (``late_s`` past its wait), handle, release the held and,
    every 250 ms (``tick``), renew the lagging set and tick the join. The jobs it made."""
    msgs = worker.consumer.fetch()
    worker._lag_now = None
    worker._consumed(msgs, late_s, now)
    jobs = worker._handle_batch(msgs, now)
    worker._lag_now = None
    jobs += worker._handle_batch(worker._release_held(now), now)
    if tick:
        worker.joiner.set_lagging(_lagging(worker, now))
        jobs += worker.joiner.tick(worker._activity_ms(now))
    return jobs


def test_a_registry_outage_on_one_topic_loses_no_frames(rig) -> None:
    """One live session, 30 fps frames and 40 ms chunks in real time for 20 s; the audio topic's
    schema cannot be looked up from 3 s to 8 s of it."""
    worker, registries, clock = rig
    consumer: _Consumer = worker.consumer
    fps, seconds = 30, 20
    t0 = clock["ms"]
    frames = [(t0 + k * 1000 // fps, k) for k in range(fps * seconds)]
    chunks = [(t0 + (s + 1) * 40, s) for s in range(seconds * 25)]
    jobs: list = []
    last_tick = t0
    ahead_ms = 0
    for now in range(t0, t0 + seconds * 1000 + 4000, 50):
        clock["ms"] = consumer.now = now
        registries["AudioChunk"].down = t0 + 3000 <= now < t0 + 8000
        while frames and frames[0][0] <= now:
            _write_frame(consumer, *frames.pop(0), fps)
        while chunks and chunks[0][0] <= now:
            ts, s = chunks.pop(0)
            # from 3 s on the audio producer writes with a schema id the worker has to look up
            _write_chunk(consumer, ts, s, 1 if s < 75 else 3)
        jobs += _one_turn(worker, now, 0.0, now - last_tick >= 250)
        last_tick = now if now - last_tick >= 250 else last_tick
        if AUDIO in worker._last_ts and ROI in worker._last_ts:
            ahead_ms = max(ahead_ms, abs(worker._last_ts[AUDIO] - worker._last_ts[ROI]))
    assert consumer.position == {tp: len(log) for tp, log in consumer.logs.items()}  # all read
    assert not worker._deferred and worker.consumer.held == set()
    counters = worker.joiner.counters
    # before: the audio ran ~10 s ahead, frames came late (dropped, committed) and jobs lacked them
    assert counters["dropped_late"] == 0, dict(counters)
    assert ahead_ms <= worker._align_ms + 1000, ahead_ms
    assert jobs and [j for j in jobs if j.frames_missing] == []


def test_held_paused_or_just_resumed_partitions_count_as_lagging_whatever_their_lag_reads() -> None:
    lag = {AUDIO: 0, ROI: 0}  # both read 0: stale for those the worker stopped
    assert lagging_partitions(lag, set(), False, {}, 5_000) == set()
    assert lagging_partitions(lag, {ROI}, False, {}, 5_000) == {ROI}  # held (alignment, registry, refs)
    assert lagging_partitions(lag, set(), True, {}, 5_000) == {AUDIO, ROI}  # backpressure: all paused
    resumed = {AUDIO: 5_000}
    assert lagging_partitions(lag, set(), False, resumed, 5_000 + STALE_LAG_MS - 1) == {AUDIO}
    assert lagging_partitions(lag, set(), False, resumed, 5_000 + STALE_LAG_MS) == set()  # a fetch answered by now
    assert lagging_partitions({AUDIO: None, ROI: 3}, set(), False, {}, 0) == {AUDIO, ROI}


def test_the_worker_counts_what_it_holds_pauses_and_resumes_as_lagging(rig) -> None:
    worker, _registries, clock = rig
    consumer: _Consumer = worker.consumer
    now = clock["ms"]
    assert _lagging(worker, now) == set()
    consumer.hold({ROI})
    assert _lagging(worker, now) == {(Stream.VIDEO, 0)}  # held: stale lag
    consumer.hold(set())
    worker.stage.backlog = lambda: 10_000  # scoring far behind: every partition paused
    worker._backpressure()
    assert consumer.paused and _lagging(worker, now) == {(Stream.AUDIO, 0), (Stream.VIDEO, 0)}
    worker.stage.backlog = lambda: 0
    worker._backpressure()  # resumed: stale until a fetch answers
    assert not consumer.paused and _lagging(worker, now + 10) == {(Stream.AUDIO, 0), (Stream.VIDEO, 0)}
    worker._fetched([_Msg("a", 0, b"", now)], now)  # a record of the audio partition came: its lag is fresh
    assert _lagging(worker, now + 10) == {(Stream.VIDEO, 0)}
    assert _lagging(worker, now + STALE_LAG_MS) == set()


def test_a_revoke_forgets_the_alignment_positions_of_its_partitions(rig):
    """Given back after a rebalance, partitions are read again from their committed offsets: the
    positions read before the revoke must not stand for them (a re-review: they survived, so a
    topic counted its partner as further on than it was and ran ahead of it unheld)."""
    worker, _registries, _clock = rig
    for tp in (("a", 0), ("r", 0)):
        worker._first_ts[tp] = 0
        worker._last_ts[tp] = 40_000
    worker._forget([("a", 0), ("r", 0)])
    assert worker._last_ts == {} and worker._first_ts == {}


def _live_session(worker: Worker, clock: dict, seconds: int, outage: tuple[int, int] | None = None,
                  freeze: tuple[int, int] | None = None, roi_late_ms: int = 800,
                  frames_until_ms: int | None = None) -> list:
    """One live session (30 fps frames, 40 ms chunks, plain registry ids) through Worker.run's turn
    steps every 50 ms. ``outage`` (from, to) ms after the start: the broker answers nothing and
    the producers' records wait for it; ``freeze``: no turn runs (the process was stopped) while
    the records keep coming. After either, the ROI partition's first fetch answers ``roi_late_ms``
    after the audio's (librdkafka fetches the partitions on their own schedules).
    ``frames_until_ms``: the ROI producer dies then."""
    consumer: _Consumer = worker.consumer
    fps = 30
    t0 = clock["ms"]
    frames = [(t0 + k * 1000 // fps, k) for k in range(fps * seconds)
              if frames_until_ms is None or k * 1000 // fps < frames_until_ms]
    chunks = [(t0 + (s + 1) * 40, s) for s in range(seconds * 25)]
    jobs: list = []
    last_tick = last_turn = t0
    for now in range(t0, t0 + seconds * 1000 + 4000, 50):
        clock["ms"] = consumer.now = now
        down = outage is not None and t0 + outage[0] <= now < t0 + outage[1]
        frozen = freeze is not None and t0 + freeze[0] <= now < t0 + freeze[1]
        if consumer.down and not down or (freeze is not None and now == t0 + freeze[1]):
            consumer.fetch_from[ROI] = now + roi_late_ms
        consumer.down = down
        while not down and frames and frames[0][0] <= now:
            _write_frame(consumer, *frames.pop(0), fps)
        while not down and chunks and chunks[0][0] <= now:
            _write_chunk(consumer, *chunks.pop(0), 1)
        if frozen:
            continue
        jobs += _one_turn(worker, now, (now - last_turn - 50) / 1000.0, now - last_tick >= 250)  # (waits 50 ms)
        last_turn = now
        last_tick = now if now - last_tick >= 250 else last_tick
    assert consumer.position == {tp: len(log) for tp, log in consumer.logs.items()}  # all read
    return jobs


@pytest.mark.parametrize("fault", ["outage", "freeze"])
def test_a_broker_outage_or_a_frozen_worker_loses_no_input(rig, fault) -> None:
    """A probe: after a 6-s broker outage (shorter than the session timeout, so no rebalance) or a
    5-s SIGSTOP of the worker, the cached watermarks read 0 lag while seconds of records waited;
    the partition fetched second was taken as a stalled stream, 8-32 of 204 signals went out
    without its input and 46-278 records were then dropped as late. The partitions of open
    sessions that go silent are now asked of the broker (InputConsumer.unread)."""
    worker, _registries, clock = rig
    jobs = _live_session(worker, clock, 16, **({"outage": (5000, 11000)} if fault == "outage"
                                               else {"freeze": (5000, 10000)}))
    counters = worker.joiner.counters
    assert counters["dropped_late"] == 0, dict(counters)
    assert len(jobs) > 20 and [j for j in jobs if j.frames_missing or j.audio_missing_ms] == []


def test_a_stream_that_really_stopped_is_still_taken_as_stalled(rig) -> None:
    """The broker answers that nothing waits on the silent ROI partition (its producer died): the
    session goes on being reported on its audio, as before (the asking must not hold it forever)."""
    worker, _registries, clock = rig
    jobs = _live_session(worker, clock, 10, frames_until_ms=4000)
    late = [j for j in jobs if j.frames_missing]
    assert late and all(j.frame_start >= 4000 * 30 // 1000 - 30 for j in late), "a dead ROI stream is stalled"


def test_partitions_paused_or_held_are_not_asked_of_the_broker(rig) -> None:
    """They count as lagging already: a question to the broker for them is a round trip in the poll
    loop for nothing (a review: every partition of an open session was asked each second of a
    backpressure pause)."""
    worker, _registries, clock = rig
    consumer: _Consumer = worker.consumer
    asked: list = []
    answer = consumer.unread
    consumer.unread = lambda tps, timeout_s: asked.append(sorted(tps)) or answer(tps, timeout_s)
    _live_session(worker, clock, 1)  # a session open on partition 0, both streams read to the end
    asked.clear()
    now = clock["ms"] + 5000  # silent since
    consumer.hold({ROI})
    worker._lagging(now)
    assert asked == [[AUDIO]]  # the held one is not asked
    consumer.hold(set())
    worker.stage.backlog = lambda: 10_000
    worker._backpressure()  # every partition paused
    worker._lagging(now + 2000)
    assert asked == [[AUDIO]] and consumer.paused
