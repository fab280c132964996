"""Micro-batching of scoring jobs across sessions, on a thread of its own.

``MicroBatcher`` is the pure policy (time passed in): a batch goes as soon as ``max_batch_size``
jobs are queued, or when the oldest queued job has waited ``max_wait_ms``; it never waits longer
for a fuller batch (Triton's dynamic batcher rule).

``ScoringStage`` runs the scorer on one background thread so the Kafka poll loop never blocks on a
model (it must call ``consume`` well within ``max.poll.interval.ms``). The poll loop submits jobs,
polls finished results, and reads ``backlog()`` to pause consuming when scoring falls behind
(backpressure) instead of queueing without bound. Each job is any object with ``request``
(ScoreRequest), ``session_id`` and ``keep_from_frame``; per-session scorer streams (the scoring
core's embedding caches) live here, on the scoring thread only.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from worker.scoring.interface import Scorer, StreamState
from worker.scoring.types import Direction, Label, LipSyncScore, ScoreRequest

log = logging.getLogger(__name__)

# Frames kept before a session's next job when trimming its scorer cache: more than any causal
# context the scoring core uses (the cache has its own hard bound as well).
_CONTEXT_FRAMES = 30


class ScoringJob(Protocol):
    @property
    def request(self) -> ScoreRequest: ...

    @property
    def session_id(self) -> str: ...

    @property
    def keep_from_frame(self) -> int: ...


J = TypeVar("J")


class MicroBatcher(Generic[J]):
    """FIFO of jobs with their enqueue times; decides when a batch is due. Pure."""

    def __init__(self, max_batch_size: int, max_wait_ms: float) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must be >= 0")
        self.max_batch_size = max_batch_size
        self.max_wait_ms = max_wait_ms
        self._queue: deque[tuple[float, J]] = deque()

    def add(self, job: J, now_ms: float) -> None:
        self._queue.append((now_ms, job))

    def __len__(self) -> int:
        return len(self._queue)

    def deadline_ms(self) -> float | None:
        """When the oldest job's wait runs out (None when empty)."""
        return self._queue[0][0] + self.max_wait_ms if self._queue else None

    def due(self, now_ms: float, flush: bool = False) -> bool:
        if not self._queue:
            return False
        if flush or len(self._queue) >= self.max_batch_size:
            return True
        return now_ms >= self._queue[0][0] + self.max_wait_ms

    def take(self, now_ms: float, flush: bool = False) -> list[tuple[float, J]]:
        """The next batch (oldest first, with enqueue times) if one is due, else []."""
        if not self.due(now_ms, flush):
            return []
        n = min(self.max_batch_size, len(self._queue))
        return [self._queue.popleft() for _ in range(n)]


@dataclass(frozen=True)
class Scored(Generic[J]):
    """A finished job. ``queued_ms``: enqueue to batch start; ``scoring_ms``: the batch's scorer
    time; ``error``: why the scorer failed on this job (then ``score`` is a LOW_QUALITY stand-in)."""

    job: J
    score: LipSyncScore
    batch_size: int
    queued_ms: float
    scoring_ms: float
    error: str | None = None


def failed_score(request: ScoreRequest, scorer_name: str) -> LipSyncScore:
    """What is published for a job the scorer rejected: no score, confidence 0, LOW_QUALITY."""
    fs = request.frames
    return LipSyncScore(
        kind=request.kind, frame_start=fs.frame_start, frame_end=fs.frame_end,
        start_ms=round(1000.0 * fs.frame_start / fs.fps), end_ms=round(1000.0 * fs.frame_end / fs.fps),
        score=None, offset_ms=None, margin=None, confidence=0.0, direction=Direction.UNKNOWN,
        label=Label.LOW_QUALITY, scorer=scorer_name,
    )


class ScoringStage(Generic[J]):
    """The scoring thread. All public methods are called from the poll-loop thread."""

    def __init__(self, scorer: Scorer, max_batch_size: int, max_wait_ms: float,
                 clock_ms: Callable[[], float] | None = None,
                 on_batch: Callable[[int, float, float], Any] | None = None,
                 thread_init: Callable[[], Any] | None = None) -> None:
        self.scorer = scorer
        self._thread_init = thread_init
        self._batcher: MicroBatcher[J] = MicroBatcher(max_batch_size, max_wait_ms)
        self._clock_ms = clock_ms or (lambda: time.monotonic() * 1000.0)
        self._on_batch = on_batch
        self._cv = threading.Condition()
        self._results: deque[Scored[J]] = deque()
        self._in_flight = 0
        self._streams: dict[str, StreamState] = {}
        self._queued_per_session: dict[str, int] = {}
        self._closing: set[str] = set()
        self._flush = False
        self._stopping = False
        self._error: BaseException | None = None
        self._batch_started_s: float | None = None  # time.monotonic() when the batch in flight began
        self.batches = 0
        self._thread = threading.Thread(target=self._run, name="scoring", daemon=True)
        self._thread.start()

    # --- poll-loop side ---------------------------------------------------------------------
    def submit(self, jobs: Sequence[J]) -> None:
        if not jobs:
            return
        self._raise_if_failed()
        with self._cv:
            now = self._clock_ms()
            for job in jobs:
                self._batcher.add(job, now)
                sid = job.session_id  # type: ignore[attr-defined]
                self._queued_per_session[sid] = self._queued_per_session.get(sid, 0) + 1
            self._cv.notify_all()

    def results(self) -> list[Scored[J]]:
        """Finished jobs since the last call (in completion order)."""
        self._raise_if_failed()
        out = []
        while self._results:
            out.append(self._results.popleft())
        return out

    def backlog(self) -> int:
        """Jobs queued or being scored."""
        with self._cv:
            return len(self._batcher) + self._in_flight

    def close_sessions(self, session_ids: Sequence[str]) -> None:
        """Forget these sessions' scorer streams once their queued jobs are scored."""
        with self._cv:
            for sid in session_ids:
                if self._queued_per_session.get(sid, 0) == 0:
                    self._streams.pop(sid, None)
                else:
                    self._closing.add(sid)

    def open_streams(self) -> int:
        with self._cv:
            return len(self._streams)

    def busy_s(self, now_s: float) -> float:
        """How long the batch being scored has taken so far (0 when none is): a scorer that hangs
        (a deadlocked native library) shows here while the poll loop still turns."""
        with self._cv:
            return 0.0 if self._batch_started_s is None else max(0.0, now_s - self._batch_started_s)

    def drain(self, timeout_s: float) -> bool:
        """Score everything queued now, without waiting for fuller batches; True when done."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            self._flush = True
            self._cv.notify_all()
            try:
                while len(self._batcher) or self._in_flight:
                    if self._error is not None:
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._cv.wait(min(left, 0.05))
            finally:
                self._flush = False
        self._raise_if_failed()
        return True

    def stop(self, timeout_s: float = 10.0) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self._thread.join(timeout_s)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"scoring thread died: {self._error!r}") from self._error

    # --- scoring thread ---------------------------------------------------------------------
    def _run(self) -> None:
        try:
            if self._thread_init is not None:
                self._thread_init()  # e.g. torch thread settings, which are per thread for OpenMP
            while True:
                with self._cv:
                    batch = self._next_batch()
                    if batch is None:
                        return
                    self._in_flight = len(batch)
                    self._batch_started_s = time.monotonic()
                    streams = [self._stream(job) for _, job in batch]
                self._score(batch, streams)
        except BaseException as exc:
            log.exception("scoring thread failed")
            with self._cv:
                self._error = exc
                self._in_flight = 0
                self._cv.notify_all()

    def _next_batch(self) -> list[tuple[float, J]] | None:
        """Wait (holding the condition) until a batch is due or we stop; None means stop."""
        while True:
            if self._stopping and not len(self._batcher):
                return None
            now = self._clock_ms()
            batch = self._batcher.take(now, flush=self._flush or self._stopping)
            if batch:
                return batch
            deadline = self._batcher.deadline_ms()
            timeout = None if deadline is None else max(0.0, (deadline - now) / 1000.0)
            self._cv.wait(timeout if timeout is None else max(timeout, 0.0005))

    def _stream(self, job: J) -> StreamState:
        sid = job.session_id  # type: ignore[attr-defined]
        stream = self._streams.get(sid)
        if stream is None:
            stream = self._streams[sid] = self.scorer.new_stream()
        return stream

    def _score(self, batch: list[tuple[float, J]], streams: list[StreamState]) -> None:
        start = self._clock_ms()
        cpu_start = time.thread_time()
        jobs = [job for _, job in batch]
        requests = [job.request for job in jobs]  # type: ignore[attr-defined]
        errors: list[str | None] = [None] * len(jobs)
        try:
            scores = self.scorer.score_batch(requests, streams)
            if len(scores) != len(jobs):
                raise RuntimeError(f"scorer returned {len(scores)} results for {len(jobs)} jobs")
        except Exception as exc:  # noqa: BLE001 - one bad job must not sink the batch
            log.warning("batch of %d failed (%s); scoring one by one", len(jobs), exc)
            scores = []
            for i, (req, stream) in enumerate(zip(requests, streams)):
                try:
                    scores.append(self.scorer.score(req, stream))
                except Exception as one:  # noqa: BLE001 - scored as LOW_QUALITY, counted
                    errors[i] = f"{type(one).__name__}: {one}"
                    scores.append(failed_score(req, self.scorer.name))
        end = self._clock_ms()
        elapsed = end - start
        cpu_s = time.thread_time() - cpu_start
        for job, stream in zip(jobs, streams):
            keep = job.keep_from_frame  # type: ignore[attr-defined]
            # bound the cache, keeping the frames a causal context needs before the next job
            stream.forget_before(max(0, keep - _CONTEXT_FRAMES))
        with self._cv:
            for (queued_at, job), score, error in zip(batch, scores, errors):
                self._results.append(Scored(job, score, len(batch), start - queued_at, elapsed, error))
                sid = job.session_id  # type: ignore[attr-defined]
                left = self._queued_per_session.get(sid, 1) - 1
                if left <= 0:
                    self._queued_per_session.pop(sid, None)
                    if sid in self._closing:
                        self._closing.discard(sid)
                        self._streams.pop(sid, None)
                else:
                    self._queued_per_session[sid] = left
            self._in_flight = 0
            self._batch_started_s = None
            self.batches += 1
            self._cv.notify_all()
        if self._on_batch is not None:
            self._on_batch(len(batch), elapsed, cpu_s)


class ScoringPool(Generic[J]):
    """Several ScoringStages side by side, each on its own thread with its own batches; a session
    always goes to the same one (its scorer stream is not shared between threads). On CPU, a few
    single-threaded scorers in parallel use cores better than one scorer with intra-op threads.
    Same interface as ScoringStage."""

    def __init__(self, lanes: int, make_stage: Callable[[int], ScoringStage[J]]) -> None:
        if lanes < 1:
            raise ValueError("lanes must be >= 1")
        self.stages = [make_stage(i) for i in range(lanes)]

    def _lane(self, session_id: str) -> ScoringStage[J]:
        return self.stages[zlib.crc32(session_id.encode("utf-8")) % len(self.stages)]

    def submit(self, jobs: Sequence[J]) -> None:
        if len(self.stages) == 1:
            self.stages[0].submit(jobs)
            return
        by_lane: dict[int, list[J]] = {}
        for job in jobs:
            lane = self.stages.index(self._lane(job.session_id))  # type: ignore[attr-defined]
            by_lane.setdefault(lane, []).append(job)
        for lane, items in by_lane.items():
            self.stages[lane].submit(items)

    def results(self) -> list[Scored[J]]:
        out: list[Scored[J]] = []
        for stage in self.stages:
            out += stage.results()
        return out

    def backlog(self) -> int:
        return sum(stage.backlog() for stage in self.stages)

    def close_sessions(self, session_ids: Sequence[str]) -> None:
        for sid in session_ids:
            self._lane(sid).close_sessions([sid])

    def open_streams(self) -> int:
        return sum(stage.open_streams() for stage in self.stages)

    def busy_s(self, now_s: float) -> float:
        return max(stage.busy_s(now_s) for stage in self.stages)

    def drain(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        return all(stage.drain(max(0.0, deadline - time.monotonic())) for stage in self.stages)

    def stop(self, timeout_s: float = 10.0) -> None:
        for stage in self.stages:
            stage.stop(timeout_s)
