"""The input consumer: one group on both co-partitioned input topics, range assignor.

Why range: it gives a member the same partition numbers of topics with equal partition counts,
which the join needs (a session's audio and ROI events share a key, so a partition number).
cooperative-sticky does not promise that. Every assignment is checked anyway; a member that gets
different partitions of the two topics refuses loudly (error log + ``AssignmentError`` out of
``consume``), since it would silently score sessions with half their data.

Pause state: librdkafka forgets pauses across reassignment, so the wrapper keeps its own flag
and pauses newly assigned partitions too while it is set. Besides that pause of everything
(backpressure) single partitions can be held (``hold``: the two topics kept level in time while
a backlog is read, worker.windowing.align); resuming everything leaves them held.

Lag: until a record of a partition has been consumed, librdkafka cannot say where this member
stands on it, so on assignment the wrapper asks where reading starts (the group's committed offset,
else where ``auto.offset.reset`` puts it) and the high watermark. A partition nothing was read from
yet then counts as behind by what it holds, not as caught up: the join keeps a session open while
its other stream's records wait there (after a restart, or when one partition is fetched last).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition

from worker.kafka.logs import with_logger

log = logging.getLogger(__name__)

TP = tuple[str, int]

_QUERY_TIMEOUT_S = 5.0  # committed offsets and watermarks of newly assigned partitions
_RETRY_EVERY_S = 10.0  # a failed start query is asked again (lag() calls) at most this often


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
        # librdkafka takes one protocol for all the strategies listed (cooperative-sticky: incremental)
        self._cooperative = "cooperative" in str(conf.get("partition.assignment.strategy"))
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._on_lost = on_lost
        self._paused = False
        self._held: set[TP] = set()
        self.holds_total = 0  # partitions newly held, ever
        self._reset_earliest = str(conf.get("auto.offset.reset", "latest")) in ("earliest", "smallest", "beginning")
        self.assigned: set[TP] = set()
        # where reading starts and the high watermark seen at assignment, per partition (see lag)
        self._start: dict[TP, int] = {}
        self._high_at_assign: dict[TP, int] = {}
        self._starts_unknown: set[TP] = set()
        self._starts_tried_s = 0.0
        self._failure: BaseException | None = None
        self._consumer = Consumer(with_logger(conf))
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
            # assignment exists would be lost. Under the cooperative protocol the assignment
            # grows incrementally (assign() there fails the consume call: _STATE)
            if self._cooperative:
                consumer.incremental_assign(partitions)
            else:
                consumer.assign(partitions)
            consumer.pause(partitions)
        self._starts_unknown |= set(tps)
        self._query_starts()
        if self._on_assign is not None:
            self._guard(self._on_assign, tps)

    def _revoke_cb(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        if self._on_revoke is not None:
            self._guard(self._on_revoke, tps)
        self._drop(tps)

    def _lost_cb(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        if self._on_lost is not None:
            self._guard(self._on_lost, tps)
        self._drop(tps)

    def _drop(self, tps: list[TP]) -> None:
        self.assigned -= set(tps)
        self._held -= set(tps)
        for tp in tps:
            self._start.pop(tp, None)
            self._high_at_assign.pop(tp, None)
        self._starts_unknown -= set(tps)

    def _query_starts(self) -> None:
        """Where reading starts on the partitions in ``_starts_unknown`` (broker calls). A failure
        leaves them unknown (lag() reports them as None, i.e. perhaps behind) until a retry works."""
        self._starts_tried_s = time.monotonic()
        tps = [TopicPartition(t, p) for t, p in sorted(self._starts_unknown & self.assigned)]
        if not tps:
            return
        try:
            committed = self._consumer.committed(tps, timeout=_QUERY_TIMEOUT_S)
            for tp in committed:
                key = (tp.topic, tp.partition)
                if tp.error is not None:
                    log.warning("cannot tell where reading starts on %s [%d] yet: %s", tp.topic, tp.partition, tp.error)
                    continue
                low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(tp.topic, tp.partition), timeout=_QUERY_TIMEOUT_S, cached=False)
                self._high_at_assign[key] = high
                if tp.offset >= 0:
                    self._start[key] = tp.offset
                else:  # no committed offset: auto.offset.reset decides
                    self._start[key] = low if self._reset_earliest else high
                self._starts_unknown.discard(key)
        except KafkaException as exc:
            log.warning("cannot tell where reading starts on %d partitions yet: %s", len(tps), exc)

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
        """Resume every assigned partition except those held."""
        self._paused = False
        tps = [TopicPartition(t, p) for t, p in sorted(self.assigned - self._held)]
        if tps:
            self._consumer.resume(tps)

    @property
    def held(self) -> set[TP]:
        return set(self._held)

    def hold(self, tps: set[TP]) -> tuple[set[TP], set[TP]]:
        """Hold exactly ``tps`` (of the assigned ones) back: pause those newly held, resume
        those no longer held (unless everything is paused). Returns (newly held, released)."""
        want = set(tps) & self.assigned
        new, released = want - self._held, self._held - want
        self._held = want
        self.holds_total += len(new)
        if not self._paused:
            if new:
                self._consumer.pause([TopicPartition(t, p) for t, p in sorted(new)])
            if released:
                self._consumer.resume([TopicPartition(t, p) for t, p in sorted(released)])
        return new, released

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

    def lag(self) -> dict[TP, int | None]:
        """Records behind the high watermark per assigned partition (local calls: the position, or
        where reading starts while nothing was consumed there; cached watermarks, or the one seen
        at assignment). None: not known yet (the start query failed), so perhaps behind."""
        if self._starts_unknown and time.monotonic() - self._starts_tried_s >= _RETRY_EVERY_S:
            self._query_starts()
        tps = [TopicPartition(t, p) for t, p in sorted(self.assigned)]
        if not tps:
            return {}
        out: dict[TP, int | None] = {}
        for tp in self._consumer.position(tps):
            key = (tp.topic, tp.partition)
            try:
                _, high = self._consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                high = -1
            high = max(high if high is not None else -1, self._high_at_assign.get(key, -1))
            position = tp.offset if tp.offset >= 0 else self._start.get(key)  # OFFSET_INVALID < 0
            out[key] = None if position is None or high < 0 else max(0, high - position)
        return out

    def unread(self, tps: list[TP], timeout_s: float) -> dict[TP, bool | None]:
        """Whether records wait past the position of each of ``tps``, asked of the broker in one
        request (its end offsets now, not the cached watermarks, which only a fetch that answers
        moves: after a process freeze or a broker outage they read 0 lag while seconds of records
        wait). None: not known (the broker did not answer within ``timeout_s``, or nothing was
        read there and where reading starts is not known). One ListOffsets request for all: one
        watermark query per partition took about 12 ms each here, 0.8 s for 64 (a review)."""
        if not tps:
            return {}
        try:
            ends = self._consumer.offsets_for_times([TopicPartition(t, p, OFFSET_END) for t, p in tps],
                                                    timeout=timeout_s)
        except KafkaException:
            return {tp: None for tp in tps}
        end_of = {(e.topic, e.partition): e.offset for e in ends if e.error is None and e.offset >= 0}
        out: dict[TP, bool | None] = {}
        for tp in self._consumer.position([TopicPartition(t, p) for t, p in tps]):
            key = (tp.topic, tp.partition)
            position = tp.offset if tp.offset >= 0 else self._start.get(key)
            end = end_of.get(key)
            out[key] = None if position is None or end is None else end > position
        return out

    def close(self) -> None:
        self._consumer.close()
