"""The input consumer's lag on a real broker: what the join's idle and stall checks rely on."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from confluent_kafka import Producer

from worker.kafka.admin import ensure_topics
from worker.kafka.consumer import InputConsumer


def _produce(bootstrap: str, topic: str, n: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(n):
        producer.produce(topic, key=b"s", value=str(i).encode())
    assert producer.flush(30) == 0


def _assigned(consumer: InputConsumer, n: int, timeout_s: float = 30.0) -> list:
    """Poll until ``n`` partitions are assigned; what was consumed meanwhile."""
    got = []
    deadline = time.monotonic() + timeout_s
    while len(consumer.assigned) < n:
        assert time.monotonic() < deadline, "no assignment"
        got += consumer.consume(10, 0.2)
    return got


def _read(consumer: InputConsumer, n: int, timeout_s: float = 30.0) -> list:
    """Consume until ``n`` records came or the timeout; what came."""
    got: list = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        got += consumer.consume(10, 0.2)
    return got


def test_a_partition_nothing_was_read_from_yet_counts_as_behind_by_what_it_holds(
        kafka_bootstrap: str, unique_topic: Callable[[str], str]) -> None:
    # the worker's failure this guards against: one stream's partition fetched last, its lag read as
    # "unknown, skip", the session on it idle-closed and its records then dropped as after-close
    audio, roi = unique_topic("audio"), unique_topic("roi")
    ensure_topics(kafka_bootstrap, {audio: 1, roi: 1})
    _produce(kafka_bootstrap, audio, 3)
    _produce(kafka_bootstrap, roi, 5)
    group = f"g-{uuid.uuid4().hex[:8]}"
    consumer = InputConsumer({"bootstrap.servers": kafka_bootstrap}, group, (audio, roi))
    try:
        consumer.pause_all()  # before the assignment: the new partitions are paused on arrival
        assert _assigned(consumer, 2) == []
        assert consumer.lag() == {(audio, 0): 3, (roi, 0): 5}
        consumer.resume_all()
        assert len(_read(consumer, 8)) == 8
        assert consumer.lag() == {(audio, 0): 0, (roi, 0): 0}
        consumer.commit({(audio, 0): 3, (roi, 0): 2}, asynchronous=False)
    finally:
        consumer.close()

    # a restart of the group: reading starts at the committed offsets, so a partition read to its
    # end shows no lag (not its whole history) and the other one the 3 records left
    again = InputConsumer({"bootstrap.servers": kafka_bootstrap}, group, (audio, roi))
    try:
        again.pause_all()
        assert _assigned(again, 2) == []
        assert again.lag() == {(audio, 0): 0, (roi, 0): 3}
    finally:
        again.close()


def test_a_paused_consumer_takes_its_partitions_under_the_cooperative_protocol_too(
        kafka_bootstrap: str, unique_topic: Callable[[str], str]) -> None:
    """cooperative-sticky is allowed (with a warning): a consumer paused before its assignment
    keeps the new partitions paused. It assigned them with assign(), which the cooperative
    protocol refuses: the consume call failed (_STATE) and the worker stopped (a review)."""
    audio, roi = unique_topic("audio"), unique_topic("roi")
    ensure_topics(kafka_bootstrap, {audio: 2, roi: 2})
    _produce(kafka_bootstrap, audio, 4)
    consumer = InputConsumer({"bootstrap.servers": kafka_bootstrap,
                              "partition.assignment.strategy": "cooperative-sticky"},
                             f"g-{uuid.uuid4().hex[:8]}", (audio, roi))
    try:
        consumer.pause_all()
        assert _assigned(consumer, 4) == []  # paused on arrival: nothing read
        consumer.resume_all()
        assert len(_read(consumer, 4)) == 4
    finally:
        consumer.close()


def test_unread_asks_the_broker_where_the_cached_lag_is_stale(
        kafka_bootstrap: str, unique_topic: Callable[[str], str]) -> None:
    """InputConsumer.unread, one ListOffsets request: records written to a paused partition wait,
    asked of the broker at once (the cached watermark moves only when a fetch answers); one read to
    its end has none; before anything is read it counts from where reading starts."""
    audio, roi = unique_topic("audio"), unique_topic("roi")
    ensure_topics(kafka_bootstrap, {audio: 1, roi: 1})
    _produce(kafka_bootstrap, audio, 2)
    consumer = InputConsumer({"bootstrap.servers": kafka_bootstrap}, f"g-{uuid.uuid4().hex[:8]}", (audio, roi))
    try:
        consumer.pause_all()
        assert _assigned(consumer, 2) == []
        tps = [(audio, 0), (roi, 0)]
        assert consumer.unread(tps, 10.0) == {(audio, 0): True, (roi, 0): False}  # nothing read yet
        consumer.resume_all()
        assert len(_read(consumer, 2)) == 2
        assert consumer.unread(tps, 10.0) == {(audio, 0): False, (roi, 0): False}
        consumer.pause_all()
        _produce(kafka_bootstrap, roi, 4)
        assert consumer.unread(tps, 10.0) == {(audio, 0): False, (roi, 0): True}
    finally:
        consumer.close()
