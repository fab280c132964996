"""Plain feed and read clients for the demo, the load test and tests: send records to a topic,
read a topic from its start. Not used by the worker's own pipeline (see consumer.py, producer.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer

from worker.kafka.logs import with_logger


def kafka_errors() -> tuple[type[BaseException], ...]:
    """Errors of the Kafka environment (client, topics, the local broker) for callers outside
    worker.kafka that turn them into one-line messages."""
    from worker.kafka.admin import TopicError
    from worker.kafka.broker import BrokerError

    return (KafkaException, TopicError, BrokerError)


class RecordSender:
    def __init__(self, bootstrap: str, client_config: Mapping[str, Any] | None = None) -> None:
        conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "linger.ms": 1, "enable.idempotence": True,
                                "socket.nagle.disable": True}
        conf.update(client_config or {})
        self._producer = Producer(with_logger(conf))

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        while True:
            try:
                self._producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                self._producer.poll(0.05)
        self._producer.poll(0)

    def flush(self, timeout_s: float = 30.0) -> int:
        return self._producer.flush(timeout_s)

    def close(self, timeout_s: float = 30.0) -> int:
        """Flush and release the client; returns records not delivered."""
        left = self._producer.flush(timeout_s)
        self._producer = None  # type: ignore[assignment]  # librdkafka closes on release
        return left


class TopicReader:
    """Reads every partition of ``topic`` from the beginning (a throwaway consumer group)."""

    def __init__(self, bootstrap: str, topic: str, client_config: Mapping[str, Any] | None = None) -> None:
        conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex[:12]}",
                                "auto.offset.reset": "earliest", "enable.auto.commit": False,
                                "fetch.wait.max.ms": 10, "socket.nagle.disable": True}
        conf.update(client_config or {})
        self._consumer = Consumer(with_logger(conf))
        self._consumer.subscribe([topic])

    def read(self, timeout_s: float, max_records: int = 1000) -> list[tuple[bytes | None, bytes]]:
        """(key, value) of the records that arrive within ``timeout_s``."""
        out = []
        for msg in self._consumer.consume(num_messages=max_records, timeout=timeout_s):
            if msg.error() is None and msg.value() is not None:
                out.append((msg.key(), msg.value()))
        return out

    def close(self) -> None:
        self._consumer.close()
