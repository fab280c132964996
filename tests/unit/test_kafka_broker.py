"""worker.kafka.broker: the order env > Docker > local broker, without starting anything."""

from __future__ import annotations

import socket
import sys
import time

import pytest

from worker.kafka import broker


def test_env_bootstrap_wins_and_nothing_is_started(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a: object, **k: object) -> None:
        raise AssertionError("must not be called when KAFKA_BOOTSTRAP_SERVERS is set")

    monkeypatch.setattr(broker, "docker_available", boom)
    monkeypatch.setattr(broker, "start_local_broker", boom)
    with broker.kafka_bootstrap({"KAFKA_BOOTSTRAP_SERVERS": " kafka-1:9092,kafka-2:9092 "}) as bootstrap:
        assert bootstrap == "kafka-1:9092,kafka-2:9092"


def test_no_docker_falls_back_to_the_local_broker_and_stops_it(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []

    class FakeLocal:
        bootstrap = "127.0.0.1:1234"

        def stop(self) -> None:
            events.append("stopped")

    monkeypatch.setattr(broker, "docker_available", lambda timeout_s=2.0: False)
    monkeypatch.setattr(broker, "start_local_broker", lambda: events.append("started") or FakeLocal())
    with pytest.raises(RuntimeError, match="test body failed"), broker.kafka_bootstrap({}) as bootstrap:
        assert bootstrap == "127.0.0.1:1234"
        raise RuntimeError("test body failed")
    assert events == ["started", "stopped"]


def test_docker_probe_is_quick_and_false_without_a_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{port}")
    t0 = time.monotonic()
    assert broker.docker_available(timeout_s=1.0) is False
    assert time.monotonic() - t0 < 5.0


def test_importing_broker_does_not_import_confluent_kafka() -> None:
    import subprocess

    code = "import worker.kafka.broker, sys; assert 'confluent_kafka' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
