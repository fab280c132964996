"""Which input partitions the join treats as still delivering (never idle-closed, never stalled)."""

from __future__ import annotations

from types import SimpleNamespace

from worker.app import Worker
from worker.windowing.events import Stream


class _Consumer:
    paused = False  # nothing paused or held by the worker (tests/unit/test_worker_held_stale_lag.py)

    def lag(self):
        # caught up / behind / not known yet (the start query failed) / caught up
        return {("audio", 0): 0, ("audio", 1): 3, ("roi", 0): None, ("roi", 1): 0}


def test_partitions_behind_or_not_known_yet_count_as_lagging():
    worker = SimpleNamespace(consumer=_Consumer(), audio_topic="audio", _stopped=set, _resumed_at_ms={},
                             _ask_silent=lambda lag, now: None)  # (no open session to ask about)
    assert Worker._lagging(worker, 0) == {(Stream.AUDIO, 1), (Stream.VIDEO, 0)}
