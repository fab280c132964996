"""The player that feeds the demo and the load test says when its input did not all reach Kafka
(a probe: the flush's leftovers were ignored, so a broker gone past it silently dropped 70% of a
load test's input and the worker was charged with the signals missing)."""

from __future__ import annotations

import numpy as np

from worker.feed import Player
from worker.loadgen import session_records


class _Sender:
    def __init__(self, undelivered: int) -> None:
        self.undelivered, self.sent = undelivered, 0

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        self.sent += 1

    def close(self, timeout_s: float = 30.0) -> int:
        return self.undelivered


def _play(undelivered: int) -> Player:
    frames = np.zeros((10, 16, 16), dtype=np.uint8)
    audio = np.zeros(16_000 * 10 // 25, dtype=np.float32)
    timeline = [(rec.due_ms, 0, rec) for rec in session_records("s", frames, audio, 25.0, 16_000)]
    player = Player(_Sender(undelivered), "a", "r", timeline, realtime=False)
    player.start()
    player.join(30)
    return player


def test_records_left_undelivered_are_the_players_error():
    assert _play(0).error is None
    player = _play(7)
    assert isinstance(player.error, RuntimeError) and f"7 of {player.sent} input records" in str(player.error)
