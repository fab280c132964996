"""The input consumer: one group on both co-partitioned input topics, range assignor.

Why range: it gives a member the same partition numbers of topics with equal partition counts,
which the join needs (a session's audio and ROI events share a key, so a partition number).
cooperative-sticky does not promise that. Every assignment is checked anyway; a member that gets
different partitions of the two topics refuses loudly (error log + ``AssignmentError`` out of
``consume``), since it would silently score sessions with half their data.

Pause state: librdkafka forgets pauses across reassignment, so the wrapper keeps its own flag
and pauses newly assigned partitions too while it is set.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, TopicPartition

log = logging.getLogger(__name__)

TP = tuple[str, int]


class AssignmentError(RuntimeError):
    """This member's partitions of the input topics differ: the join cannot work here."""


class Message(Protocol):
    """What the worker needs of a Kafka message (confluent_kafka.Message has all of it)."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def timestamp(self) -> tuple[int, int]: ...
    def error(self) -> Any: ...


def check_co_assignment(assigned: Iterable[TP], topics: tuple[str, str]) -> None:
    """Raise AssignmentError unless both topics have the same partition numbers here."""
    parts: dict[str, set[int]] = {t: set() for t in topics}
    for topic, partition in assigned:
        if topic in parts:
            parts[topic].add(partition)
    a, b = topics
    if parts[a] != parts[b]:
        raise AssignmentError(
            f"partition assignment is not co-partitioned: {a} -> {sorted(parts[a])}, "
            f"{b} -> {sorted(parts[b])}; use the range assignor and equal partition counts"
        )


class InputConsumer:
    """Thin wrapper over confluent_kafka.Consumer; callbacks run inside ``consume``.

    on_assign(tps) after the new partitions are checked; on_revoke(tps) before they go (commit
    there); on_lost(tps) when they are already gone (do not commit).
    """

    def __init__(
        self,
        client_config: Mapping[str, Any],
        group_id: str,
        topics: tuple[str, str],
        *,
        max_poll_interval_ms: int = 300_000,
        on_assign: Callable[[list[TP]], None] | None = None,
        on_revoke: Callable[[list[TP]], None] | None = None,
        on_lost: Callable[[list[TP]], None] | None = None,
    ) -> None:
        conf: dict[str, Any] = {
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "range",
            "max.poll.interval.ms": max_poll_interval_ms,
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 1_000,
            "fetch.wait.max.ms": 10,
            "socket.nagle.disable": True,  # Nagle + delayed ACKs add ~40 ms to small requests
        }
        conf.update(client_config)
        if conf.get("partition.assignment.strategy") != "range":
            log.warning("partition.assignment.strategy=%s: co-partitioning is only checked, not ensured",
                        conf.get("partition.assignment.strategy"))
        self.topics = topics
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._on_lost = on_lost
        self._paused = False
        self.assigned: set[TP] = set()
        self._failure: BaseException | None = None
        self._consumer = Consumer(conf)
        self._consumer.subscribe(list(topics), on_assign=self._assign_cb, on_revoke=self._revoke_cb,
                                 on_lost=self._lost_cb)

    # --- rebalance callbacks (run inside consume) --------------------------------------------
    def _assign_cb(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self.assigned |= set(tps)
        try:
            check_co_assignment(self.assigned, self.topics)
        except AssignmentError as exc:
            log.error("refusing assignment: %s", exc)
            self._failure = exc
            raise
        if self._paused and partitions:
            # assign first (the client would do it after this callback): a pause before the
            # assignment exists would be lost
            consumer.assign(partitions)
            consumer.pause(partitions)
        if self._on_assign is not None:
            self._guard(self._on_assign, tps)

    def _revoke_cb(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        if self._on_revoke is not None:
            self._guard(self._on_revoke, tps)
        self.assigned -= set(tps)

    def _lost_cb(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        if self._on_lost is not None:
            self._guard(self._on_lost, tps)
        self.assigned -= set(tps)

    def _guard(self, fn: Callable[[list[TP]], None], tps: list[TP]) -> None:
        try:
            fn(tps)
        except BaseException as exc:
            self._failure = exc
            raise

    # --- consuming --------------------------------------------------------------------------
    def consume(self, num_messages: int, timeout_s: float) -> list[Any]:
        """Up to ``num_messages`` messages (errors other than partition EOF raise)."""
        try:
            msgs = self._consumer.consume(num_messages=num_messages, timeout=timeout_s)
        except KafkaException:
            if self._failure is not None:
                raise self._failure from None
            raise
        if self._failure is not None:
            raise self._failure
        out = []
        for msg in msgs:
            err = msg.error()
            if err is None:
                out.append(msg)
            elif err.code() == KafkaError._PARTITION_EOF:
                continue
            elif err.fatal():
                raise KafkaException(err)
            else:
                log.warning("consumer error: %s", err)
        return out

    @property
    def paused(self) -> bool:
        return self._paused

    def pause_all(self) -> int:
        """Stop fetching every assigned partition (kept across reassignment); how many."""
        self._paused = True
        tps = [TopicPartition(t, p) for t, p in sorted(self.assigned)]
        if tps:
            self._consumer.pause(tps)
        return len(tps)

    def resume_all(self) -> None:
        self._paused = False
        tps = [TopicPartition(t, p) for t, p in sorted(self.assigned)]
        if tps:
            self._consumer.resume(tps)

    def commit(self, positions: Mapping[TP, int], asynchronous: bool = False) -> dict[TP, int]:
        """Commit ``positions`` (next offset to read) of the partitions still assigned."""
        offsets = [TopicPartition(t, p, off) for (t, p), off in positions.items() if (t, p) in self.assigned]
        if not offsets:
            return {}
        try:
            self._consumer.commit(offsets=offsets, asynchronous=asynchronous)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() == KafkaError._NO_OFFSET:
                return {}
            raise
        return {(o.topic, o.partition): o.offset for o in offsets}

    def lag(self) -> dict[TP, int]:
        """Messages behind the high watermark per assigned partition (cached watermarks)."""
        tps = [TopicPartition(t, p) for t, p in sorted(self.assigned)]
        if not tps:
            return {}
        out = {}
        for tp in self._consumer.position(tps):
            try:
                _, high = self._consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if high is None or high < 0:
                continue
            if tp.offset == OFFSET_INVALID or tp.offset < 0:
                continue  # nothing consumed there yet: position unknown
            out[(tp.topic, tp.partition)] = max(0, high - tp.offset)
        return out

    def close(self) -> None:
        self._consumer.close()
