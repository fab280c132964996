"""Integration fixtures: one real Kafka broker for the whole session (never a mock).

``KAFKA_BOOTSTRAP_SERVERS`` if set; else testcontainers' Kafka if Docker answers; else the
project's local Apache Kafka (scripts/kafka), started once here and stopped at the end.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from worker.kafka.admin import wait_until_reachable
from worker.kafka.broker import kafka_bootstrap as _kafka_bootstrap


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap address of a real broker, shared by every integration test of the session."""
    with _kafka_bootstrap() as bootstrap:
        wait_until_reachable(bootstrap, timeout_s=60)
        yield bootstrap


@pytest.fixture
def unique_topic() -> Callable[[str], str]:
    """Topic names private to one test, so tests sharing the broker never see each other's data."""
    run = uuid.uuid4().hex[:8]
    return lambda base: f"{base}.{run}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Everything under tests/integration needs the broker: mark it so `-m "not integration"` works.
    for item in items:
        if "tests/integration/" in item.nodeid.replace("\\", "/") or item.nodeid.startswith("integration/"):
            item.add_marker(pytest.mark.integration)
