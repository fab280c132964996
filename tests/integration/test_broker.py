"""The session broker is a real Kafka: topics with partition counts, Avro records through it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Producer

from schemas import codec_for
from worker.kafka.admin import TopicError, ensure_topics, topic_partitions


def _chunk(session_id: str, seq: int) -> dict:
    return {
        "session_id": session_id,
        "seq": seq,
        "start_sample": seq * 640,
        "sample_rate": 16000,
        "channels": 1,
        "encoding": "PCM_S16LE",
        "data": bytes([seq % 256]) * 1280,
        "end_of_session": seq == 4,
    }


def _consume(bootstrap: str, topics: list[str], n: int, timeout_s: float = 30.0) -> list:
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"test-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "partition.assignment.strategy": "range",
    })
    consumer.subscribe(topics)
    out: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < n and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=100, timeout=0.5):
                assert msg.error() is None, msg.error()
                out.append(msg)
    finally:
        consumer.close()
    return out


def test_topics_get_the_partition_counts_asked_for(kafka_bootstrap: str, unique_topic: Callable[[str], str]) -> None:
    audio, roi, dlq = unique_topic("av.audio-chunks"), unique_topic("av.roi-refs"), unique_topic("av.lipsync-dlq")
    created = ensure_topics(kafka_bootstrap, {audio: 4, roi: 4, dlq: 1}, config={"retention.ms": "3600000"})
    assert created == {audio: True, roi: True, dlq: True}
    assert topic_partitions(kafka_bootstrap, [audio, roi, dlq]) == {audio: 4, roi: 4, dlq: 1}
    # idempotent when the counts match ...
    assert ensure_topics(kafka_bootstrap, {audio: 4, roi: 4}) == {audio: False, roi: False}
    # ... and loud when they do not (co-partitioning would silently break)
    with pytest.raises(TopicError, match="has 4 partitions, config says 6"):
        ensure_topics(kafka_bootstrap, {audio: 6})


@pytest.mark.parametrize("wire", ["confluent", "schemaless"])
def test_avro_audio_chunks_round_trip_through_the_broker(
    kafka_bootstrap: str, unique_topic: Callable[[str], str], wire: str
) -> None:
    audio, roi = unique_topic("av.audio-chunks"), unique_topic("av.roi-refs")
    ensure_topics(kafka_bootstrap, {audio: 3, roi: 3})
    registry = {"url": f"mock://{uuid.uuid4().hex}"}
    encoder = codec_for("AudioChunk", wire=wire, registry=registry if wire == "confluent" else None, topic=audio)
    decoder = codec_for("AudioChunk", wire=wire, registry=registry if wire == "confluent" else None)

    sessions = [f"sess-{i}" for i in range(6)]
    sent = {(s, seq): _chunk(s, seq) for s in sessions for seq in range(5)}
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True, "linger.ms": 5})
    delivered: list = []
    for (session_id, _seq), record in sent.items():
        producer.produce(audio, key=session_id.encode(), value=encoder.encode(record),
                         on_delivery=lambda err, msg: delivered.append((err, msg.partition() if msg else None)))
        # The same keys on the co-partitioned topic (an empty body is enough to see the partition).
        producer.produce(roi, key=session_id.encode(), value=b"")
    assert producer.flush(30) == 0
    assert all(err is None for err, _ in delivered) and len(delivered) == len(sent)

    messages = _consume(kafka_bootstrap, [audio, roi], n=2 * len(sent))
    audio_msgs = [m for m in messages if m.topic() == audio]
    got = {}
    for m in audio_msgs:
        record = decoder.decode(m.value())
        assert m.key().decode() == record["session_id"]
        got[(record["session_id"], record["seq"])] = record
    assert got == {k: dict(v, produced_at_ms=None) for k, v in sent.items()}

    # Per session: one partition, offsets in send order, and the same partition number on both
    # input topics (the default partitioner hashes the key identically for equal counts).
    part_of: dict[tuple[str, str], set[int]] = {}
    for m in messages:
        part_of.setdefault((m.topic(), m.key().decode()), set()).add(m.partition())
    for s in sessions:
        assert len(part_of[(audio, s)]) == 1
        assert part_of[(audio, s)] == part_of[(roi, s)]
    for s in sessions:
        seqs = [decoder.decode(m.value())["seq"] for m in sorted(audio_msgs, key=lambda m: m.offset())
                if m.key().decode() == s]
        assert seqs == list(range(5))
    assert len({p for (t, _), ps in part_of.items() if t == audio for p in ps}) > 1  # spread out
