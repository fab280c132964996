"""Producing test sessions into a real broker and reading back what the worker published."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable

from confluent_kafka import Consumer, Producer

from schemas import AvroCodec
from worker.loadgen import AUDIO, TimedRecord

_CODECS = {name: AvroCodec(name) for name in ("AudioChunk", "RoiRef", "LipSyncSignal", "DeadLetter")}


def produce(bootstrap: str, audio_topic: str, roi_topic: str, records: Iterable[TimedRecord],
            realtime: bool = False, ts_base_ms: int | None = None) -> int:
    """Send records (key = session_id); with ``realtime`` each waits for its due time. With
    ``ts_base_ms`` each record's Kafka timestamp is that plus its due time, as if a live source
    had sent it then (a backlog produced at once that looks like one produced in real time)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
    t0 = time.monotonic()
    n = 0
    for rec in records:
        if realtime:
            delay = rec.due_ms / 1000.0 - (time.monotonic() - t0)
            if delay > 0:
                time.sleep(delay)
        body = dict(rec.record, produced_at_ms=int(time.time() * 1000))
        name, topic = ("AudioChunk", audio_topic) if rec.stream == AUDIO else ("RoiRef", roi_topic)
        extra = {} if ts_base_ms is None else {"timestamp": ts_base_ms + round(rec.due_ms)}
        producer.produce(topic, key=body["session_id"].encode(), value=_CODECS[name].encode(body), **extra)
        producer.poll(0)
        n += 1
    assert producer.flush(30) == 0
    return n


def produce_raw(bootstrap: str, topic: str, key: bytes | None, value: bytes) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


def read_topic(bootstrap: str, topic: str, schema: str, until: Callable[[list[dict]], bool],
               timeout_s: float = 60.0) -> list[dict]:
    """Decode records of ``topic`` from the start until ``until(records)`` or the timeout."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    out: list[dict] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=500, timeout=0.2):
                if msg.error() is None:
                    rec = _CODECS[schema].decode(msg.value())
                    rec["_received_ms"] = int(time.time() * 1000)
                    rec["_key"] = msg.key()
                    out.append(rec)
            if until(out):
                break
    finally:
        consumer.close()
    return out
