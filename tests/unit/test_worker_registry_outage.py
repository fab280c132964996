"""The worker rides out a schema-registry outage: the records it cannot decode for want of the
registry are held (their partition paused, nothing committed past them) and read again after a
back-off, never dead-lettered; a definite "schema not found" is still a bad record.

Before (a review's e2e_registry.py): with the registry answering 503 every valid record was
dead-lettered as "unknown schema id" and the offsets were committed past them: data lost. The
poll loop (here a Worker's own input handling, without a broker: the consumer and producer are
stand-ins; the pipeline tests run the real ones) is driven turn by turn with a fake clock.
"""

from __future__ import annotations

import struct

import pytest
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError
from support.fake_scorer import FakeScorer

from schemas import AvroCodec
from schemas.codec import schema_text
from tests.support.worker_fakes import FakeMessage, HoldingConsumer, offline_worker
from worker.app import Worker

AUDIO_ID, ROI_ID = 1, 2


class _Registry:
    def __init__(self) -> None:
        self.down = True
        self.calls = 0
        self.clock: dict | None = None
        self.lookup_s = 0.0  # how long a lookup takes (a registry that times out: seconds)

    def get_schema(self, schema_id: int) -> Schema:
        self.calls += 1
        if self.clock is not None:
            self.clock["s"] += self.lookup_s
        if self.down:
            raise SchemaRegistryError(503, 50301, "registry unavailable")
        if schema_id not in (AUDIO_ID, ROI_ID):
            raise SchemaRegistryError(404, 40403, "Schema not found")
        return Schema(schema_text("AudioChunk" if schema_id == AUDIO_ID else "RoiRef"), "AVRO")


def _Msg(topic: str, offset: int, value: bytes) -> FakeMessage:
    # no timestamp: the two topics' alignment stays out of the way
    return FakeMessage(topic, offset, value, key=b"good")


class _Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def produce(self, topic: str, key: bytes, value: bytes, on_delivery) -> None:
        self.sent.append((topic, value))
        on_delivery(None)

    def poll(self, _timeout: float) -> int:
        return 0


def _framed(codec_name: str, schema_id: int, record: dict) -> bytes:
    return b"\x00" + struct.pack(">I", schema_id) + AvroCodec(codec_name).encode(record)


def _audio(seq: int, schema_id: int = AUDIO_ID) -> bytes:
    return _framed("AudioChunk", schema_id, {
        "session_id": "good", "seq": seq, "start_sample": 640 * seq, "sample_rate": 16000, "channels": 1,
        "encoding": "PCM_S16LE", "data": bytes(1280)})


def _roi(k: int) -> bytes:
    return _framed("RoiRef", ROI_ID, {
        "session_id": "good", "frame_index": k, "pts_ms": 33 * k, "fps": 30.0,
        "roi": {"width": 16, "height": 16, "format": "GRAY8", "data": bytes(256)}})


@pytest.fixture
def rig():
    clock = {"s": 1000.0}
    worker = offline_worker(FakeScorer(), HoldingConsumer(), _Producer(), dlq=True,
                            clock_ms=lambda: int(clock["s"] * 1000))
    registry = _Registry()
    registry.clock = clock
    for name, topic in (("AudioChunk", "a"), ("RoiRef", "r")):
        worker.codecs[name] = AvroCodec(name, wire="confluent", registry=registry, subject=f"{topic}-value",
                                        clock_s=lambda: clock["s"])
    worker._assigned_once = worker._warm = True
    yield worker, registry, clock
    worker.stage.stop()


def _turn(worker: Worker, msgs: list, clock: dict) -> None:
    now = int(clock["s"] * 1000)
    worker._handle_batch(msgs, now)
    worker._handle_batch(worker._release_held(now), now)


def test_records_wait_for_the_registry_and_are_read_when_it_is_back(rig) -> None:
    worker, registry, clock = rig
    msgs = [_Msg("r", k, _roi(k)) for k in range(3)] + [_Msg("a", k, _audio(k)) for k in range(3)]
    _turn(worker, msgs, clock)
    assert worker.producer.sent == [] and worker.dead_lettered == 0  # before: all 6 dead-lettered
    assert worker.consumer.held == {("a", 0), ("r", 0)}
    assert worker.tracker.positions() == {}  # nothing opened: no commit passes them
    assert worker.metrics.registry_unavailable._value.get() == 2  # once per partition held
    assert registry.calls == 2  # one lookup per codec, then it backs off
    assert not worker.ready() and worker.healthy()  # alive (the loop turns), not doing its work
    clock["s"] += 0.2
    _turn(worker, [], clock)  # within the back-off: not asked again
    assert registry.calls == 2 and worker.consumer.held == {("a", 0), ("r", 0)}
    clock["s"] += 0.4
    _turn(worker, [], clock)  # asked again, still down: held again, waiting longer
    assert registry.calls == 4 and worker.consumer.held == {("a", 0), ("r", 0)}
    assert [len(v) for v in worker._deferred.values()] == [3, 3]  # kept in order
    registry.down = False
    clock["s"] += 1.001  # the codec's next lookup, on the worker's ms clock (rounded up)
    _turn(worker, [], clock)
    assert worker.dead_lettered == 0 and worker.consumer.held == set() and worker.ready()
    # read now: every record is opened in the join (their jobs will release them)
    assert worker.tracker.open_count(("r", 0)) == 3 and worker.tracker.open_count(("a", 0)) == 3


def test_a_schema_the_registry_does_not_know_is_still_dead_lettered(rig) -> None:
    worker, registry, clock = rig
    registry.down = False
    _turn(worker, [_Msg("a", 0, _audio(0, schema_id=99)), _Msg("a", 1, _audio(1))], clock)
    assert worker.dead_lettered == 1 and len(worker.producer.sent) == 1
    assert worker.consumer.held == set()
    assert worker.tracker.positions() == {("a", 0): 1}  # the bad one done, the good one open


def test_a_held_record_is_read_again_when_its_codec_asks_again_not_before(rig) -> None:
    """The retry runs on the codec's own clock: its back-off starts when the lookup failed, which
    may be seconds into the turn. Before, the retry was timed from the turn's start, fired while the
    codec was still backing off, failed fast and held again: every wait logged and counted twice."""
    worker, registry, clock = rig
    registry.lookup_s = 1.5  # the lookup times out
    _turn(worker, [_Msg("a", 0, _audio(0)), _Msg("a", 1, _audio(1))], clock)  # at 1000.0; failed at 1001.5
    held = worker.metrics.registry_unavailable._value
    assert registry.calls == 1 and held.get() == 1 and worker.consumer.held == {("a", 0)}
    clock["s"] = 1001.7  # the turn's start + 0.5 s is past; the codec asks again at 1002.0
    _turn(worker, [], clock)
    assert held.get() == 1 and registry.calls == 1 and worker.consumer.held == {("a", 0)}  # before: 2, held again
    clock["s"] = 1002.001  # the codec's next lookup, on the worker's ms clock (rounded up)
    registry.lookup_s = 0.0
    _turn(worker, [], clock)
    assert registry.calls == 2 and held.get() == 2  # asked, still down: held once more, for 1 s
    registry.down = False
    clock["s"] = 1003.002
    _turn(worker, [], clock)
    assert worker.consumer.held == set() and worker.tracker.open_count(("a", 0)) == 2


def test_not_ready_until_the_record_held_for_the_registry_is_read(rig) -> None:
    """/readyz (another thread) must not answer 200 while the held record is being tried again:
    before, the wait was forgotten when its timer fired, before the record was decoded again."""
    worker, registry, clock = rig
    _turn(worker, [_Msg("a", 0, _audio(0))], clock)
    assert not worker.ready()
    codec = worker.codecs["AudioChunk"]
    seen: list[bool] = []

    def decode(value: bytes):
        seen.append(worker.ready())  # what /readyz answers while the record is tried again
        return type(codec).decode(codec, value)

    codec.decode = decode
    registry.down = False
    clock["s"] += 1.0
    _turn(worker, [], clock)
    assert seen == [False]  # before: [True]
    assert worker.ready() and worker.consumer.held == set()


def test_a_held_record_is_not_released_before_the_codec_asks_again_within_the_millisecond(rig) -> None:
    """The worker's clock is whole milliseconds (floored), the codec's back-off its own fractional
    seconds: the retry was due up to 1 ms before the codec's next lookup, so the first release
    failed fast ("next lookup in 0.0 s") and was held again: one hold and error line too many per
    outage (the review's e2e: registry_unavailable_total one too many)."""
    worker, registry, clock = rig
    clock["s"] = 1000.0004  # within a millisecond: the codec's back-off ends at 1000.5004
    _turn(worker, [_Msg("a", 0, _audio(0))], clock)
    held = worker.metrics.registry_unavailable._value
    assert registry.calls == 1 and held.get() == 1
    clock["s"] = 1000.5  # the worker's ms clock says 1000.500 s; the codec is still backing off
    _turn(worker, [], clock)
    assert held.get() == 1 and worker.consumer.held == {("a", 0)}  # before: 2 (failed fast, held again)
    clock["s"] = 1000.5015  # the codec asks again: still down, held once more for its next step
    _turn(worker, [], clock)
    assert registry.calls == 2 and held.get() == 2
    registry.down = False
    clock["s"] = 1001.503
    _turn(worker, [], clock)
    assert registry.calls == 3 and held.get() == 2
    assert worker.consumer.held == set() and worker.tracker.open_count(("a", 0)) == 1
