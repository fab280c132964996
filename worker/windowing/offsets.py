"""Which input offsets may be committed: the lowest offset per partition still needed.

Every consumed record is ``open``ed; it is marked ``done`` once nothing still to be published
depends on it (its windows are published, it went to the dead-letter topic, or it was dropped on
purpose). The commit position of a partition is its lowest open offset, or one past the highest
offset seen when none is open, so a restart replays exactly the records whose signals might be
missing (at-least-once).
"""

from __future__ import annotations

import heapq

from worker.windowing.events import Source

TopicPartition = tuple[str, int]


class _PartitionOffsets:
    __slots__ = ("heap", "next_offset", "open")

    def __init__(self) -> None:
        self.open: set[int] = set()
        self.heap: list[int] = []
        self.next_offset: int | None = None

    def position(self) -> int | None:
        while self.heap and self.heap[0] not in self.open:
            heapq.heappop(self.heap)  # lazily drop offsets already done
        if self.heap:
            return self.heap[0]
        return self.next_offset


class OffsetTracker:
    def __init__(self) -> None:
        self._parts: dict[TopicPartition, _PartitionOffsets] = {}

    def open(self, source: Source) -> None:
        part = self._parts.setdefault((source.topic, source.partition), _PartitionOffsets())
        if source.offset not in part.open:
            part.open.add(source.offset)
            heapq.heappush(part.heap, source.offset)
        if part.next_offset is None or source.offset + 1 > part.next_offset:
            part.next_offset = source.offset + 1

    def done(self, source: Source) -> None:
        part = self._parts.get((source.topic, source.partition))
        if part is not None:
            part.open.discard(source.offset)

    def open_count(self, tp: TopicPartition | None = None) -> int:
        if tp is not None:
            part = self._parts.get(tp)
            return len(part.open) if part else 0
        return sum(len(p.open) for p in self._parts.values())

    def positions(self) -> dict[TopicPartition, int]:
        """Commit position (the next offset to read after a restart) per partition seen."""
        out = {}
        for tp, part in self._parts.items():
            pos = part.position()
            if pos is not None:
                out[tp] = pos
        return out

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Drop revoked partitions (their records are someone else's now)."""
        for tp in partitions:
            self._parts.pop(tp, None)
