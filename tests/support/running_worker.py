"""A Worker on a thread of the test process, for integration tests on the real broker."""

from __future__ import annotations

import threading
import time

from worker.app import Worker
from worker.config import WorkerConfig


class RunningWorker:
    def __init__(self, cfg: WorkerConfig, scorer) -> None:
        self.worker = Worker(cfg, scorer)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None
        self.thread.start()

    def _run(self) -> None:
        try:
            self.worker.run(self.stop)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.worker.ready():
            assert time.monotonic() < deadline, "worker did not get its partitions"
            assert self.error is None, self.error
            time.sleep(0.05)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert self.error is None, self.error
