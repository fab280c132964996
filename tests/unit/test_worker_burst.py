"""A session written faster than real time loses nothing (worker.windowing.align.media_ahead).

A probe: a 20-s session produced in one burst (a replay, a backfill, a bridge flushing a
recording) got 28-44 of its 57 signals. Its records' Kafka timestamps lay within half a second,
so the Kafka-time alignment held nothing, while one topic's fetch returned ~28 s of small audio
records against ~3.6 s of large ROI records (or a producer wrote one stream whole before the
other): the stream ahead pushed the session's buffer bound past the other stream's unread
records, which were dropped as late when they came, and their offsets committed.

Here the Worker's input handling runs turn by turn against a stand-in consumer that fetches each
partition in chunks and honours the worker's holds (no broker: the pipeline tests run the real one).
"""

from __future__ import annotations

import numpy as np
import pytest
from support.fake_scorer import FakeScorer

from schemas import AvroCodec
from tests.support.worker_fakes import FakeMessage, offline_worker
from worker.loadgen import AUDIO, ROI, expected_jobs, session_records
from worker.windowing.align import media_ahead, record_end_ms

FPS, RATE = 30.0, 16_000


class ChunkedConsumer:
    """Two partitions' records, fetched ``fetch[topic]`` records at a time from the partitions not
    held; lag = records not fetched yet."""

    def __init__(self, queues: dict[tuple[str, int], list[FakeMessage]], fetch: dict[str, int]) -> None:
        self.queues = {tp: list(q) for tp, q in queues.items()}
        self.assigned = set(self.queues)
        self.fetch = fetch
        self._held: set = set()
        self.paused = False
        self.longest_held_turns = 0
        self._held_turns = 0
        self.holds: dict = {}  # times each partition was held

    @property
    def held(self) -> set:
        return set(self._held)

    def hold(self, tps: set) -> None:
        for tp in (set(tps) & self.assigned) - self._held:
            self.holds[tp] = self.holds.get(tp, 0) + 1
        self._held = set(tps) & self.assigned

    def lag(self) -> dict:
        return {tp: len(q) for tp, q in self.queues.items()}

    def unread(self, tps: list, _timeout_s: float) -> dict:
        return {tp: bool(self.queues.get(tp)) for tp in tps}

    def consume(self) -> list[FakeMessage]:
        self._held_turns = self._held_turns + 1 if self._held else 0
        self.longest_held_turns = max(self.longest_held_turns, self._held_turns)
        out: list[FakeMessage] = []
        for tp, q in self.queues.items():
            if tp not in self._held:
                out += q[:self.fetch[tp[0]]]
                del q[:self.fetch[tp[0]]]
        return out

    def close(self) -> None:
        pass


def _queues(order: str, seconds: float) -> tuple[dict, int]:
    rng = np.random.default_rng(0)
    n = round(seconds * FPS)
    frames = rng.integers(0, 255, (n, 16, 16), dtype=np.uint8)
    audio = (0.3 * np.sin(np.arange(round(seconds * RATE)) * 0.05)).astype(np.float32)
    recs = session_records("s", frames, audio, FPS, RATE, chunk_ms=20)
    codecs = {AUDIO: AvroCodec("AudioChunk"), ROI: AvroCodec("RoiRef")}
    queues: dict = {("a", 0): [], ("r", 0): []}
    for r in recs:
        tp = ("a", 0) if r.stream == AUDIO else ("r", 0)
        # written in one burst: every timestamp within the same few ms
        queues[tp].append(FakeMessage(tp[0], len(queues[tp]), codecs[r.stream].encode(r.record), key=b"s",
                                      timestamp_ms=1_000_000 + len(queues[tp]) // 200))
    return queues, n


def _run(consumer: ChunkedConsumer, turns: int = 400) -> tuple[set, dict]:
    w = offline_worker(FakeScorer(), consumer)
    try:
        now = 5_000_000
        got: set = set()
        for _ in range(turns):
            now += 20  # a burst is read far faster than real time
            w._lag_now = None
            jobs = w._handle_batch(consumer.consume(), now)
            w._lag_now = None
            jobs += w._handle_batch(w._release_held(now), now)
            w.joiner.set_lagging(w._lagging(now))
            jobs += w.joiner.tick(w._activity_ms(now))
            got |= {(j.kind.value, j.frame_start) for j in jobs}
            if not any(consumer.queues.values()) and not w._deferred and not w.joiner.sessions:
                break
        return got, dict(w.joiner.counters)
    finally:
        w.stage.stop()


@pytest.mark.parametrize("order", ["fetch", "audio_first", "roi_first", "both_far", "one_batch"])
def test_a_session_written_in_one_burst_gets_every_signal(order: str) -> None:
    queues, n = _queues(order, 20.0)
    fetch = {"a": 500, "r": 108}  # ~1 MB per fetch: 10 s of 20-ms chunks, 3.6 s of 96x96 frames
    if order == "both_far":  # one batch takes each partition far: the audio waits, the frames pass it by
        fetch = {"a": 500, "r": 500}
    elif order == "one_batch":  # the whole burst in one consume batch: neither partition shows lag
        fetch = {"a": 10_000, "r": 10_000}
    if order == "audio_first":  # one stream read whole before the other is fetched at all
        fetch = {"a": 10_000, "r": 108}
    elif order == "roi_first":
        fetch = {"a": 500, "r": 10_000}
    consumer = ChunkedConsumer(queues, fetch)
    got, counters = _run(consumer)
    expected = {(k.value, start) for k, start, _end in expected_jobs(n, FPS, 16, 1000, 1000)}
    assert got == expected  # before: 37 of 57 (fetch), 28 (audio first, roi first)
    assert counters.get("dropped_late", 0) == 0 and counters.get("evictions_max_buffered", 0) == 0


def test_a_stream_that_never_comes_is_waited_for_once_then_reported_without_it() -> None:
    """A session whose frames never come while the ROI partition holds other records: its audio
    partition waits until the ROI partition has nothing left to read (or MEDIA_HOLD_MAX_MS), then
    goes on and is not held for that session again."""
    queues, _n = _queues("fetch", 12.0)
    # the ROI partition holds another session's frames (the session id re-encoded: "s" -> "x")
    queues[("r", 0)] = [FakeMessage("r", m.offset(), m.value().replace(b"\x02s", b"\x02x", 1), key=b"x",
                                    timestamp_ms=1_000_000) for m in queues[("r", 0)]]
    consumer = ChunkedConsumer(queues, {"a": 500, "r": 20})
    got, _counters = _run(consumer)
    assert not any(consumer.queues.values())  # everything read: nothing waits for good
    assert consumer.holds == {("a", 0): 1}  # one wait, while the ROI partition was read through
    assert consumer.longest_held_turns < 40
    assert ("BLOCK", 64) in got  # the session without frames is reported, as stalled input is


def test_record_end_ms_and_media_ahead() -> None:
    chunk = {"start_sample": 16_000, "sample_rate": 16_000, "channels": 2, "encoding": "PCM_S16LE",
             "data": bytes(4 * 320)}
    assert record_end_ms(True, chunk) == pytest.approx(1020.0)
    assert record_end_ms(False, {"frame_index": 29, "fps": 30.0}) == pytest.approx(1000.0)
    assert record_end_ms(True, {**chunk, "encoding": "MP3"}) is None
    assert record_end_ms(False, {"frame_index": 1, "fps": 0.0}) is None
    assert record_end_ms(False, {"frame_index": 1, "fps": float("nan")}) is None
    assert media_ahead(6000.0, 300.0, 5000.0)  # 6 s of media in 0.3 s: a burst
    assert not media_ahead(6000.0, 5500.0, 5000.0)  # the other stream stopped 5.5 s ago: live
    assert not media_ahead(4000.0, -10.0, 5000.0)


def test_a_partner_held_on_a_timer_does_not_end_the_wait_and_never_both_wait() -> None:
    """A review: a ROI partition kept for the next turn's reads (s3:// slower than a turn), for a
    store outage or the registry goes on without its partner, but counted as "waiting for me":
    the audio's media-time hold gave up at once (32 of 57 signals). And two partitions cut in the
    same batch could both wait."""
    w = offline_worker(FakeScorer(), ChunkedConsumer({("a", 0): [], ("r", 0): []}, {"a": 1, "r": 1}))
    try:
        audio, roi = ("a", 0), ("r", 0)
        assert not w._partner_waits_for(audio)
        w._deferred[roi] = []
        w._retry_at_ms[roi] = 1  # on a timer: goes on by itself
        assert not w._partner_waits_for(audio)
        del w._retry_at_ms[roi]  # held until the audio moves (Kafka time)
        assert w._partner_waits_for(audio)
        del w._deferred[roi]
        w._media_held[roi] = ("s", None, 0.0, 0)  # cut this batch, not deferred yet
        assert w._partner_waits_for(audio)
    finally:
        w.stage.stop()


def test_a_jump_the_join_refuses_is_not_waited_for() -> None:
    """A review: a chunk 100 s ahead of its stream held its partition 12 s before the join
    dead-lettered it."""
    from worker.windowing.events import Arrival, AudioEvent, Source, Stream
    from worker.windowing.session import SessionState, WindowParams

    st = SessionState("s", 0, WindowParams(16, 1000, 1000, 200, 10_000, 440.0), now_wall_ms=0)
    st.add_audio(AudioEvent("s", 0, 16_000, np.zeros(32_000, np.float32), Source("a", 0, 0), Arrival(0, 0)), 0)
    assert st.media_lead(Stream.AUDIO, 8000.0, 100) == (8000.0, 100)  # no frames yet: from the media's start
    assert st.media_lead(Stream.AUDIO, 102_000.0, 100) is None  # 100 s past its own stream: refused there
