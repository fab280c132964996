"""Micro-batching: the batch policy with time passed in, and the scoring thread with a fake scorer."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest

from tests.support.fake_scorer import FakeScorer, pulse_media
from worker.scoring.batcher import MicroBatcher, ScoringPool, ScoringStage
from worker.scoring.types import AudioSpan, FrameSpan, Kind, Label, ScoreRequest


def test_full_batch_goes_at_once():
    b: MicroBatcher[int] = MicroBatcher(max_batch_size=3, max_wait_ms=50)
    b.add(1, now_ms=0)
    b.add(2, now_ms=1)
    assert b.take(now_ms=2) == []
    b.add(3, now_ms=2)
    assert [j for _, j in b.take(now_ms=2)] == [1, 2, 3]


def test_never_waits_longer_than_max_wait_from_the_oldest():
    """
        t(ms)   0    10        50
        jobs    a    b         |-> batch [a, b] at 50 (a waited 50), not at 60 (b's 50)
    """
    b: MicroBatcher[str] = MicroBatcher(max_batch_size=8, max_wait_ms=50)
    b.add("a", 0)
    b.add("b", 10)
    assert b.deadline_ms() == 50
    assert b.take(49.9) == []
    assert [j for _, j in b.take(50)] == ["a", "b"]
    assert b.deadline_ms() is None


def test_batches_are_capped_and_fifo():
    b: MicroBatcher[int] = MicroBatcher(max_batch_size=4, max_wait_ms=0)
    for i in range(10):
        b.add(i, 0)
    sizes = []
    while len(b):
        sizes.append([j for _, j in b.take(0)])
    assert sizes == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_flush_ignores_the_wait():
    b: MicroBatcher[int] = MicroBatcher(max_batch_size=4, max_wait_ms=1000)
    b.add(1, 0)
    assert b.take(1) == []
    assert len(b.take(1, flush=True)) == 1


def test_bad_parameters():
    with pytest.raises(ValueError):
        MicroBatcher(0, 1)
    with pytest.raises(ValueError):
        MicroBatcher(1, -1)


@dataclass(frozen=True)
class J:
    session_id: str
    request: ScoreRequest
    keep_from_frame: int = 0


def _request(offset_ms: float, seed: int, frame_start: int = 30) -> ScoreRequest:
    frames, audio = pulse_media(3.0, 30.0, 16000, offset_ms, seed)
    a = frame_start * 16000 // 30 - 4000
    return ScoreRequest(Kind.WINDOW, FrameSpan(frames[frame_start:frame_start + 30], 30.0, frame_start),
                        AudioSpan(audio[a:a + 24000], 16000, a))


def _wait_results(stage, n, timeout=10.0):
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got += stage.results()
        time.sleep(0.002)
    return got


def test_stage_scores_on_its_own_thread_and_batches_across_sessions():
    scorer = FakeScorer(delay_s=0.05)
    stage = ScoringStage(scorer, max_batch_size=4, max_wait_ms=20)
    try:
        jobs = [J(f"s{i}", _request(off, i)) for i, off in enumerate([-100, 0, 100, 133, -66, 0])]
        stage.submit(jobs)
        assert stage.backlog() == 6
        got = _wait_results(stage, 6)
        assert [r.job for r in got] == jobs  # FIFO
        assert scorer.threads == {"scoring"}
        assert scorer.batch_sizes == [4, 2]
        offsets = [r.score.offset_ms for r in got]
        assert offsets == pytest.approx([-100, 0, 100, 133.3, -66.7, 0], abs=1)
        assert got[0].batch_size == 4 and got[0].scoring_ms >= 50
        assert stage.backlog() == 0 and stage.open_streams() == 6
        stage.close_sessions(["s0", "s1"])
        assert stage.open_streams() == 4
    finally:
        stage.stop()


def test_submit_never_blocks_while_scoring_is_slow():
    scorer = FakeScorer(delay_s=0.3)
    stage = ScoringStage(scorer, max_batch_size=1, max_wait_ms=0)
    try:
        t0 = time.monotonic()
        stage.submit([J("s", _request(0, 1)) for _ in range(5)])
        assert time.monotonic() - t0 < 0.1
        assert stage.backlog() == 5  # the poll loop reads this to pause partitions
        assert stage.drain(timeout_s=5.0)
        assert stage.backlog() == 0 and len(stage.results()) == 5
    finally:
        stage.stop()


def test_a_hung_scorer_shows_as_a_batch_busy_for_long():
    """busy_s is what /healthz reads (Worker.healthy): the poll loop turns while a hung scorer
    holds every partition paused; the time the batch in flight has taken tells."""
    release = threading.Event()

    class Hung(FakeScorer):
        def score_batch(self, requests, streams):
            release.wait(10.0)
            return super().score_batch(requests, streams)

    stage = ScoringStage(Hung(), max_batch_size=1, max_wait_ms=0)
    pool = ScoringPool(1, lambda _i: stage)
    try:
        assert stage.busy_s(time.monotonic()) == 0.0
        stage.submit([J("s", _request(0, 1))])
        deadline = time.monotonic() + 5.0
        while stage.backlog() and stage.busy_s(time.monotonic()) == 0.0 and time.monotonic() < deadline:
            time.sleep(0.005)
        started = time.monotonic()
        assert stage.busy_s(started + 300.0) >= 299.0 and pool.busy_s(started + 300.0) >= 299.0
        release.set()
        assert len(_wait_results(stage, 1)) == 1 and stage.busy_s(time.monotonic() + 300.0) == 0.0
    finally:
        release.set()
        stage.stop()


def test_one_bad_job_does_not_sink_its_batch():
    scorer = FakeScorer()
    stage = ScoringStage(scorer, max_batch_size=3, max_wait_ms=5)
    try:
        bad = ScoreRequest(Kind.BLOCK, FrameSpan(np.zeros((0,), np.uint8), 30.0, 0),
                           AudioSpan(np.zeros(10, np.float32), 16000, 0))
        stage.submit([J("a", _request(0, 1)), J("b", bad), J("c", _request(100, 2))])
        got = _wait_results(stage, 3)
        assert [r.error is None for r in got] == [True, False, True]
        assert got[1].score.label is Label.LOW_QUALITY and got[1].score.score is None
        assert got[2].score.offset_ms == pytest.approx(100)
    finally:
        stage.stop()


def test_drain_waits_for_in_flight_and_stop_finishes_the_queue():
    scorer = FakeScorer(delay_s=0.05)
    stage = ScoringStage(scorer, max_batch_size=2, max_wait_ms=10_000)
    stage.submit([J("s", _request(0, i)) for i in range(3)])
    assert stage.drain(timeout_s=5.0)  # the lone third job goes without waiting 10 s
    assert len(stage.results()) == 3
    stage.submit([J("s", _request(0, 9))])
    stage.stop(timeout_s=5.0)
    assert len(stage.results()) == 1
    # this stage's own thread has finished (other tests' stages may still be winding down)
    assert not stage._thread.is_alive()


def test_pool_keeps_each_session_on_one_lane_and_returns_everything():
    from worker.scoring.batcher import ScoringPool

    scorers = [FakeScorer(), FakeScorer()]
    pool = ScoringPool(2, lambda i: ScoringStage(scorers[i], max_batch_size=4, max_wait_ms=1))
    try:
        jobs = [J(f"s{i % 5}", _request(0, i)) for i in range(20)]
        pool.submit(jobs)
        got = _wait_results(pool, 20)
        assert sorted(id(r.job) for r in got) == sorted(id(j) for j in jobs)
        lanes = {}
        for i, stage in enumerate(pool.stages):
            for sid in stage._streams:
                lanes.setdefault(sid, set()).add(i)
        assert all(len(v) == 1 for v in lanes.values()) and len(lanes) == 5
        assert sum(scorers[i].batch_sizes != [] for i in range(2)) == 2  # both lanes worked
        assert pool.drain(5.0) and pool.backlog() == 0
        pool.close_sessions([f"s{i}" for i in range(5)])
        assert pool.open_streams() == 0
    finally:
        pool.stop()
