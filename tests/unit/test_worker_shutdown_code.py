"""A shutdown that leaves signals undelivered exits non-zero (a probe: against a broker that had
stopped answering, the worker logged "records not delivered at shutdown" and exited 0, where the
docs promise code 4 for a shutdown that could not finish). Nothing is lost either way: input is
committed only for delivered signals, so the next owner reads the rest again."""

from __future__ import annotations

from support.fake_scorer import FakeScorer

from tests.support.worker_fakes import HoldingConsumer, offline_worker
from worker.app import EXIT_UNFINISHED


class _Producer:
    """A producer whose broker answers (``left`` 0) or not (``left`` records never acknowledged)."""

    def __init__(self, left: int) -> None:
        self.left = left

    def produce(self, topic: str, key: bytes, value: bytes, on_delivery) -> None:
        raise AssertionError("nothing to publish here")

    def poll(self, _timeout: float) -> int:
        return 0

    def flush(self, _timeout: float) -> int:
        return self.left

    def close(self, _timeout: float) -> int:
        return self.left


def _shut_down(left: int) -> int:
    worker = offline_worker(FakeScorer(), HoldingConsumer(), _Producer(left))
    worker._shutdown()
    return worker.exit_code


def test_a_shutdown_that_left_records_undelivered_exits_with_the_unfinished_code():
    assert EXIT_UNFINISHED == 4  # the code the docs and the shutdown watchdog give
    assert _shut_down(left=0) == 0
    assert _shut_down(left=3) == EXIT_UNFINISHED


def test_a_shutdown_whose_scoring_did_not_drain_exits_with_the_unfinished_code(monkeypatch):
    worker = offline_worker(FakeScorer(), HoldingConsumer(), _Producer(0))
    monkeypatch.setattr(worker.stage, "drain", lambda _timeout_s: False)  # a batch still scoring
    worker._shutdown()
    assert worker.exit_code == EXIT_UNFINISHED
