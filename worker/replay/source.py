"""Reading recorded sessions back from Kafka: every partition of the input topics from the start
(or from a time), up to the end offsets they had when the replay began, keeping the records whose
key is one of the chosen sessions. A private consumer with manual assignment and no group
commits: a replay never moves a live consumer group's offsets."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, KafkaException, TopicPartition

from worker.kafka.logs import with_logger
from worker.replay.order import Recorded
from worker.windowing.events import Source

# a session streaming when the log was cut has a record this soon after the cut on each input
CUT_SLACK_MS = 1000


class SourceError(Exception):
    """The recorded input cannot be read (a topic is missing, the broker does not answer)."""


@dataclass
class RecordedSessions:
    """Records per session and stream (each list in offset order; a session's records sit on one
    partition of each topic), and how many records were read in all."""

    by_session: dict[str, dict[str, list[Recorded]]] = field(default_factory=dict)
    read: int = 0
    # (topic, partition) whose log no longer begins at offset 0 (retention, a delete): a session
    # on one of them may have lost its first records
    trimmed: set[tuple[str, int]] = field(default_factory=set)
    # the Kafka timestamp of the first record read of each partition (where the log now begins)
    first_ts_ms: dict[tuple[str, int], int] = field(default_factory=dict)

    def start_cut(self, session_id: str) -> bool:
        """Whether the session's records begin where a trimmed log now begins (within
        CUT_SLACK_MS of the partition's first record): a session live when the log was cut lost
        its start; one that began later, on a log cut long before, did not (a review: any session
        on a trimmed partition whose first frame index was not 0 was taken as cut)."""
        for recs in self.by_session.get(session_id, {}).values():
            first = recs[0]
            tp = (first.source.topic, first.source.partition)
            if tp not in self.trimmed:
                continue
            log_ts = self.first_ts_ms.get(tp)
            if first.timestamp_ms is None or log_ts is None or first.timestamp_ms - log_ts <= CUT_SLACK_MS:
                return True
        return False

    def add(self, rec: Recorded, session_id: str) -> None:
        streams = self.by_session.setdefault(session_id, {})
        streams.setdefault(rec.stream, []).append(rec)


def read_recorded(client_config: Mapping[str, Any], topics: Mapping[str, str], sessions: set[str] | None,
                  since_ms: int | None = None, timeout_s: float = 60.0) -> RecordedSessions:
    """``topics``: stream name -> topic. ``sessions`` None: every session found. ``since_ms``
    (Unix ms): start at the first record at or after that time instead of the beginning."""
    stream_of = {topic: stream for stream, topic in topics.items()}
    out = RecordedSessions()
    for msg in _read_to_end(client_config, list(topics.values()), since_ms, timeout_s, out.trimmed):
        out.read += 1
        ts_type, ts = msg.timestamp()
        stamp_ms = ts if ts_type != 0 and ts > 0 else None  # type 0: TIMESTAMP_NOT_AVAILABLE
        if stamp_ms is not None:  # the first record with a timestamp (one without says nothing)
            out.first_ts_ms.setdefault((msg.topic(), msg.partition()), stamp_ms)
        key = msg.key()
        sid = key.decode("utf-8", "replace") if key is not None else ""
        if sessions is not None and sid not in sessions:
            continue
        out.add(Recorded(stream_of[msg.topic()], key, msg.value(), Source(msg.topic(), msg.partition(), msg.offset()),
                         stamp_ms), sid)
    return out


def read_published(client_config: Mapping[str, Any], topic: str, sessions: set[str], timeout_s: float = 60.0
                   ) -> list[tuple[bytes | None, bytes | None]]:
    """(key, value) of the records of ``topic`` keyed by one of ``sessions`` (the live signals)."""
    return [(msg.key(), msg.value()) for msg in _read_to_end(client_config, [topic], None, timeout_s, set())
            if msg.key() is not None and msg.key().decode("utf-8", "replace") in sessions]


def missing_topics(client_config: Mapping[str, Any], topics: list[str], timeout_s: float) -> list[str]:
    """Those of ``topics`` the cluster does not have."""
    consumer = _consumer(client_config)
    try:
        meta = consumer.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise SourceError(f"Kafka: {exc}") from None
    finally:
        consumer.close()
    return [t for t in topics if (tm := meta.topics.get(t)) is None or tm.error is not None or not tm.partitions]


def _read_to_end(client_config: Mapping[str, Any], topics: list[str], since_ms: int | None,
                 timeout_s: float, trimmed: set[tuple[str, int]]) -> Iterator[Any]:
    """Every record of ``topics`` from the start (or ``since_ms``) to the end offsets they had when
    called. A partition is done at its end offset even where the last offsets hold no record
    (compaction, transaction markers): its position is checked whenever a poll comes back empty.
    The partitions whose log no longer starts at offset 0 are added to ``trimmed``."""
    consumer = _consumer(client_config)
    try:
        ends = _assign(consumer, topics, since_ms, timeout_s, trimmed)
        deadline = time.monotonic() + timeout_s
        while ends:
            if time.monotonic() > deadline:
                left = ", ".join(f"{t}[{p}]" for t, p in sorted(ends))
                raise SourceError(f"reading the recorded topics timed out after {timeout_s:.0f} s ({left} unfinished)")
            msgs = consumer.consume(num_messages=1000, timeout=0.2)
            for msg in msgs:
                if msg.error() is not None:
                    raise SourceError(f"reading {msg.topic()}: {msg.error()}")
                tp = (msg.topic(), msg.partition())
                end = ends.get(tp)
                if end is None or msg.offset() >= end:
                    continue  # written after the replay began
                if msg.offset() + 1 >= end:
                    del ends[tp]
                yield msg
            if not msgs and ends:
                for tp in consumer.position([TopicPartition(t, p) for t, p in ends]):
                    if tp.offset >= 0 and tp.offset >= ends[(tp.topic, tp.partition)]:
                        del ends[(tp.topic, tp.partition)]
    except KafkaException as exc:
        raise SourceError(f"Kafka: {exc}") from None
    finally:
        consumer.close()


def _consumer(client_config: Mapping[str, Any]) -> Consumer:
    conf = {k: v for k, v in client_config.items() if k not in ("group.id", "group.instance.id")}
    conf.update({"group.id": f"sync-scorer-replay-{uuid.uuid4().hex[:12]}", "enable.auto.commit": False,
                 "enable.auto.offset.store": False, "auto.offset.reset": "earliest"})
    return Consumer(with_logger(conf))


def _assign(consumer: Consumer, topics: list[str], since_ms: int | None, timeout_s: float,
            trimmed: set[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """Assign every partition of ``topics`` at its start (or ``since_ms``); returns the end offset
    (exclusive) to read to, per partition that has anything to read, and adds to ``trimmed`` the
    partitions whose first offset is above 0."""
    meta = consumer.list_topics(timeout=timeout_s)
    tps = []
    for topic in topics:
        tm = meta.topics.get(topic)
        if tm is None or tm.error is not None or not tm.partitions:
            raise SourceError(f"topic {topic} does not exist on the cluster")
        tps += [TopicPartition(topic, p) for p in sorted(tm.partitions)]
    starts: dict[tuple[str, int], int] = {}
    ends: dict[tuple[str, int], int] = {}
    for tp in tps:
        low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
        starts[(tp.topic, tp.partition)] = low
        if low > 0:
            trimmed.add((tp.topic, tp.partition))
        ends[(tp.topic, tp.partition)] = high
    if since_ms is not None:
        found = consumer.offsets_for_times([TopicPartition(tp.topic, tp.partition, since_ms) for tp in tps],
                                           timeout=timeout_s)
        for tp in found:
            key = (tp.topic, tp.partition)
            starts[key] = ends[key] if tp.offset in (OFFSET_END, -1) else max(starts[key], tp.offset)
    todo = {key: end for key, end in ends.items() if starts[key] < end}
    consumer.assign([TopicPartition(t, p, starts[(t, p)]) for (t, p) in todo])
    return todo
