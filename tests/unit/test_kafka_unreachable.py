"""No broker: the worker says so in one line and exits, and librdkafka's retry errors do not
flood the output (worker.kafka.logs)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from worker.kafka.logs import RepeatFilter

REPO = Path(__file__).resolve().parents[2]


def _no_broker_env(startup_timeout_ms: int) -> dict:
    """A worker's environment pointing at a port where no broker answers."""
    return {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
            "SYNC_SCORER_KAFKA__STARTUP_TIMEOUT_MS": str(startup_timeout_ms), "SYNC_SCORER_HTTP__PORT": "0",
            "PYTHONPATH": str(REPO)}


def _record(msg: str) -> logging.LogRecord:
    return logging.LogRecord("librdkafka", logging.ERROR, __file__, 1, msg, None, None)


def test_the_same_message_passes_once_a_minute_digits_aside():
    now = [0.0]
    f = RepeatFilter(every_s=60.0, clock=lambda: now[0])
    fail = "FAIL [rdkafka#consumer-2] 127.0.0.1:1/bootstrap: Connect failed (after {}ms in state CONNECT)"
    assert f.filter(_record(fail.format(0)))
    now[0] = 5.0
    assert not f.filter(_record(fail.format(3)))  # the same error again, another count
    assert f.filter(_record("another message"))
    now[0] = 61.0
    assert f.filter(_record(fail.format(7)))


def test_retries_librdkafka_does_by_itself_are_info_not_warnings():
    from worker.kafka.logs import TransientAsInfo

    logger = logging.getLogger("test-librdkafka-transient")
    f = TransientAsInfo(logger)
    retry = logging.LogRecord("x", logging.WARNING, __file__, 1, "GETPID ... Coordinator load in progress: retrying",
                              None, None)
    logger.setLevel(logging.WARNING)
    assert not f.filter(retry)  # a WARNING console does not show it
    logger.setLevel(logging.INFO)
    assert f.filter(retry) and retry.levelno == logging.INFO
    real = logging.LogRecord("x", logging.WARNING, __file__, 1, "FAIL Connect to ipv4#127.0.0.1:1 failed", None, None)
    logger.setLevel(logging.WARNING)
    assert f.filter(real) and real.levelno == logging.WARNING


def test_a_worker_without_a_broker_exits_with_one_line(tmp_path):
    env = _no_broker_env(startup_timeout_ms=2000)
    proc = subprocess.run([sys.executable, "-m", "worker.cli", "worker"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120, check=False)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert err[-1].startswith("error: worker cannot start: no Kafka broker at 127.0.0.1:1 answered within 2 s")
    assert "Traceback" not in proc.stderr
    assert len(err) < 20, len(err)  # librdkafka's retries used to print ~23 lines a second


def test_a_worker_stopped_while_it_waits_for_kafka_says_so_and_stops_soon(tmp_path):
    """SIGTERM during the wait for a broker: the worker stops within a few seconds (it asked in
    10-s turns and was killed) and says it was stopped (it blamed the broker: "within 60 s")."""
    import signal
    import time

    env = _no_broker_env(startup_timeout_ms=60000)
    proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "worker"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        # once it is waiting for Kafka (its first retry's warning), stop it
        seen = ""
        while "Kafka not reachable yet" not in seen:
            line = proc.stderr.readline()
            assert line, "the worker ended before it waited for Kafka"
            seen += line
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        _out, rest = proc.communicate(timeout=45)  # the startup timeout is 60 s
        waited_s = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    err = (seen + rest).strip().splitlines()
    assert proc.returncode == 3
    assert err[-1].startswith("error: worker cannot start: stopped while waiting for a Kafka broker at 127.0.0.1:1")
    assert waited_s < 20, waited_s  # turns of 3 s at most, with the process's own shutdown


def test_creating_topics_without_a_broker_keeps_to_the_startup_timeout_and_names_the_broker(tmp_path):
    """--create-topics waited a fixed 30 s whatever startup_timeout_ms said, and its line named
    no broker ("cannot list topics: ...")."""
    import time

    env = _no_broker_env(startup_timeout_ms=2000)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "worker.cli", "worker", "--create-topics"], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=120, check=False)
    waited_s = time.monotonic() - t0
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert err[-1].startswith("error: Kafka at 127.0.0.1:1: "), err[-1]
    assert waited_s < 20, waited_s  # 2 s of waiting plus start-up, not 30 s
