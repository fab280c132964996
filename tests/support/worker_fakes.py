"""Stand-ins for a Worker's Kafka clients in unit tests that drive its poll-loop steps directly
(records handed to ``_handle_batch`` by the test; integration tests use a real broker)."""

from __future__ import annotations

from worker.app import Worker
from worker.config import WorkerConfig


def offline_config(dlq: bool = False) -> WorkerConfig:
    """Topics a (audio) and r (roi), plus d as the DLQ; a bootstrap nothing listens on."""
    topics = {"audio": {"name": "a"}, "roi": {"name": "r"}, **({"dlq": {"name": "d"}} if dlq else {})}
    return WorkerConfig(kafka={"bootstrap_servers": "127.0.0.1:9", "group_id": "g", "topics": topics},
                        http={"port": 0}, log={"json_logs": False})


class FakeMessage:
    """A consumed record as confluent_kafka.Message shows it to the poll loop: topic, partition 0
    unless told, offset, key, value, and its timestamp (CREATE_TIME ms, or none available)."""

    def __init__(self, topic: str, offset: int, value: bytes, key: bytes = b"", partition: int = 0,
                 timestamp_ms: int | None = None) -> None:
        self._t, self._o, self._v, self._k, self._p, self._ts = topic, offset, value, key, partition, timestamp_ms

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes:
        return self._k

    def value(self) -> bytes:
        return self._v

    def timestamp(self) -> tuple[int, int]:
        # (TIMESTAMP_NOT_AVAILABLE, 0) or (TIMESTAMP_CREATE_TIME, ms)
        return (0, 0) if self._ts is None else (1, self._ts)

    def error(self) -> None:
        return None


class HoldingConsumer:
    """Assigned partitions, all caught up; the worker's holds are kept as the real consumer keeps them."""

    def __init__(self, assigned: set | None = None) -> None:
        self.assigned = {("a", 0), ("r", 0)} if assigned is None else assigned
        self._held: set = set()
        self.paused = False

    @property
    def held(self) -> set:
        return set(self._held)

    def hold(self, tps: set) -> None:
        self._held = set(tps) & self.assigned

    def lag(self) -> dict:
        return {tp: 0 for tp in self.assigned}

    def close(self) -> None:
        pass


class NoBadRecordProducer:
    """Fails the test on any dead letter: every record the test feeds is good."""

    def produce(self, topic: str, key: bytes, value: bytes, on_delivery) -> None:
        raise AssertionError(f"nothing here is a bad record: {topic}")

    def poll(self, _timeout: float) -> int:
        return 0


def offline_worker(scorer, consumer=None, producer=None, dlq: bool = False, **kwargs) -> Worker:
    """A Worker whose Kafka clients are the given stand-ins (its own consumer is closed unused)."""
    w = Worker(offline_config(dlq), scorer, **kwargs)
    w.consumer.close()
    if consumer is not None:
        w.consumer = consumer
    w.producer = producer if producer is not None else NoBadRecordProducer()
    return w
