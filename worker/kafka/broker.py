"""Where a Kafka bootstrap address comes from, for tests, `make run` and `loadtest`.

Order (issue 4, item 1):
1. ``KAFKA_BOOTSTRAP_SERVERS`` if set (used as is, nothing started or stopped);
2. else testcontainers' Kafka module in KRaft mode, if a Docker daemon answers a ping;
3. else the project's local broker: Apache Kafka 4.x from Maven Central, started by
   ``scripts/kafka/kafka_local.sh`` with its own state dir, and stopped again at the end.

Set ``SYNC_SCORER_KAFKA_DOCKER=0`` to skip the Docker probe, ``KAFKA_TESTCONTAINER_IMAGE`` to pick
the container image. Nothing here imports confluent_kafka at module import time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"
DOCKER_ENV = "SYNC_SCORER_KAFKA_DOCKER"
IMAGE_ENV = "KAFKA_TESTCONTAINER_IMAGE"
# Confluent Platform 8.0 ships Apache Kafka 4.0 (KRaft only).
DEFAULT_IMAGE = "confluentinc/cp-kafka:8.0.0"

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS_DIR = REPO_ROOT / "scripts" / "kafka"


class BrokerError(RuntimeError):
    """No broker could be provided (the message says which step failed and where its logs are)."""


def _scripts() -> tuple[Path, Path]:
    fetch, local = SCRIPTS_DIR / "fetch_jars.sh", SCRIPTS_DIR / "kafka_local.sh"
    if not (fetch.is_file() and local.is_file()):
        raise BrokerError(
            f"local broker scripts not found under {SCRIPTS_DIR} (installed without the repository?); "
            f"set {BOOTSTRAP_ENV} to use an existing cluster"
        )
    return fetch, local


def fetch_jars(timeout_s: float = 900.0) -> None:
    """Make sure the broker jars are in .kafka/libs (instant when warm; Maven on a fresh machine)."""
    fetch, _ = _scripts()
    proc = subprocess.run(["bash", str(fetch)], capture_output=True, text=True, timeout=timeout_s, check=False)
    if proc.returncode != 0:
        raise BrokerError(f"fetching the Kafka jars failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")


@dataclass
class LocalBroker:
    """A broker started by ``kafka_local.sh`` in ``state_dir``; ``stop()`` ends it."""

    bootstrap: str
    state_dir: Path
    started_in_s: float
    remove_state_on_stop: bool = True

    def stop(self, timeout_s: float = 60.0) -> None:
        _, local = _scripts()
        env = dict(os.environ, KAFKA_LOCAL_DIR=str(self.state_dir))
        proc = subprocess.run(["bash", str(local), "down"], env=env, capture_output=True, text=True,
                              timeout=timeout_s, check=False)
        if proc.returncode != 0:
            log.warning("kafka_local.sh down failed (exit %s): %s", proc.returncode, proc.stderr.strip())
            return
        if self.remove_state_on_stop:
            shutil.rmtree(self.state_dir, ignore_errors=True)


def start_local_broker(
    state_dir: Path | None = None,
    *,
    port: int | None = None,
    fresh: bool = True,
    timeout_s: float = 120.0,
) -> LocalBroker:
    """Start a private local broker and return once it accepts clients.

    Args:
        state_dir: where its config, data and logs go; default a new temp dir under .kafka/,
            removed again by ``stop()``. Use a fixed dir (and ``fresh=False``) to keep data.
        port: preferred client port; default: any free port (never the 9092 of `make kafka-up`).
        fresh: wipe any data left in ``state_dir``.
    """
    fetch_jars()
    _, local = _scripts()
    remove = state_dir is None
    if state_dir is None:
        (REPO_ROOT / ".kafka").mkdir(exist_ok=True)
        reap_orphans()
        state_dir = Path(tempfile.mkdtemp(prefix=_PRIVATE_PREFIX, dir=REPO_ROOT / ".kafka"))
        (state_dir / "owner.pid").write_text(str(os.getpid()))
    env = dict(os.environ, KAFKA_LOCAL_DIR=str(state_dir), KAFKA_LOCAL_FRESH="1" if fresh else "0",
               KAFKA_START_TIMEOUT_S=str(int(timeout_s)))
    if port is not None:
        env["KAFKA_LOCAL_PORT"] = str(port)
    else:
        env["KAFKA_LOCAL_PORT"] = str(_free_port())
    t0 = time.monotonic()
    try:
        proc = subprocess.run(["bash", str(local), "up"], env=env, capture_output=True, text=True,
                              timeout=timeout_s + 30, check=False)
    except subprocess.TimeoutExpired as e:
        LocalBroker("", state_dir, 0.0, remove_state_on_stop=False).stop()
        raise BrokerError(f"local broker did not start within {timeout_s + 30:.0f}s; logs in {state_dir}/logs") from e
    started_in_s = time.monotonic() - t0
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise BrokerError(
            f"local broker failed to start (exit {proc.returncode}); logs in {state_dir}/logs:\n{proc.stderr[-3000:]}"
        )
    broker = LocalBroker(lines[-1].strip(), state_dir, started_in_s, remove_state_on_stop=remove)
    log.info("local Kafka broker at %s (started in %.1fs, state %s)", broker.bootstrap, started_in_s, state_dir)
    return broker


_PRIVATE_PREFIX = "broker-"


def reap_orphans() -> list[Path]:
    """Stop and remove private brokers whose owning process is gone (a test run killed before its
    teardown). Only brokers this module started are touched, each by its own pidfile."""
    reaped: list[Path] = []
    for state_dir in sorted((REPO_ROOT / ".kafka").glob(_PRIVATE_PREFIX + "*")):
        try:
            owner = int((state_dir / "owner.pid").read_text().strip())
        except (OSError, ValueError):
            continue
        if _alive(owner):
            continue
        LocalBroker("", state_dir, 0.0).stop()
        reaped.append(state_dir)
    return reaped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def docker_available(timeout_s: float = 2.0) -> bool:
    """True if a Docker daemon answers a ping within ``timeout_s`` (a docker CLI alone is not enough)."""
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=timeout_s)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception as e:  # noqa: BLE001 - no package, no socket, refused, timeout: all mean "no Docker"
        log.debug("no Docker daemon: %s", e)
        return False


@contextlib.contextmanager
def _testcontainer_kafka(image: str) -> Iterator[str]:
    try:
        from testcontainers.community.kafka import KafkaContainer  # testcontainers >= 4.9
    except ImportError:  # older layout
        from testcontainers.kafka import KafkaContainer  # type: ignore[no-redef]

    with KafkaContainer(image).with_kraft() as container:
        yield container.get_bootstrap_server()


@contextlib.contextmanager
def kafka_bootstrap(
    environ: Mapping[str, str] | None = None,
    *,
    use_docker: bool | None = None,
    docker_timeout_s: float = 2.0,
) -> Iterator[str]:
    """Yield a Kafka bootstrap address (``host:port[,host:port...]``) for the duration of the block.

    ``KAFKA_BOOTSTRAP_SERVERS`` if set; else a testcontainers Kafka (KRaft) if Docker answers;
    else a private local broker (started here, stopped on exit). ``use_docker=False`` skips the
    Docker probe (default: on unless ``SYNC_SCORER_KAFKA_DOCKER=0``).
    """
    env = os.environ if environ is None else environ
    given = env.get(BOOTSTRAP_ENV, "").strip()
    if given:
        log.info("Kafka from %s: %s", BOOTSTRAP_ENV, given)
        yield given
        return
    if use_docker is None:
        use_docker = env.get(DOCKER_ENV, "1") not in ("0", "false", "no")
    if use_docker and docker_available(docker_timeout_s):
        image = env.get(IMAGE_ENV, DEFAULT_IMAGE)
        log.info("Kafka from testcontainers (%s)", image)
        with _testcontainer_kafka(image) as bootstrap:
            yield bootstrap
        return
    broker = start_local_broker()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()
