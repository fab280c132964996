"""What `sync-scorer serve` answers, whatever the transport (HTTP JSON or gRPC): a clip, one
BLOCK, one WINDOW, or the scorer's facts. Requests are decoded by worker.serving.request (the
contract's field names; bad input raises RequestError with one line) and scored one at a time
(the model is the bottleneck on CPU and GPU alike), in arrival order, a clip letting the waiting
requests in between its batches (FairLock, _Turn)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Self

from worker.observability.metrics import ServeMetrics
from worker.scoring.types import Kind, ScoreRequest, ScoringCancelled, ScoringInputError
from worker.serving.request import ClipInput, RequestError, decode, decode_span


@contextmanager
def _as_request_error() -> Iterator[None]:
    """The scorer's own input checks (audio that does not overlap the frames, say) judge the
    request, not the server: a 400 / INVALID_ARGUMENT, not a 500 with a traceback in the log."""
    try:
        yield
    except ScoringInputError as exc:
        raise RequestError(str(exc)) from None


class Overloaded(Exception):
    """The request would put the bytes being decoded or waiting to be scored over the server's
    budget (HTTP 503 with Retry-After, gRPC RESOURCE_EXHAUSTED): sent again later, it is taken."""


class ByteBudget:
    """Bytes of the requests admitted and not yet answered (their bodies as they arrive, then what
    they decode to): a request that would take them over ``limit_bytes`` is refused (Overloaded)
    instead of read further or decoded. Eight 53 MB clips at once, each decoded while it waited
    for the scorer, took the server to 2.2 GB; two 64 MB JSON bodies to 4 GB (the chart's limit).
    One request is always taken when none is in (a body the size limit allows fits whatever the
    budget), and so is one of SMALL_REQUEST_BYTES or less (a block or a window: a few hundred KB),
    which the connection cap bounds, so large clips waiting never lock blocks and windows out."""

    def __init__(self, limit_bytes: int, small_bytes: int | None = None) -> None:
        self.limit_bytes = limit_bytes
        self.small_bytes = SMALL_REQUEST_BYTES if small_bytes is None else small_bytes
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return self._used

    @contextmanager
    def admitted(self, n_bytes: int) -> Iterator[Held]:
        """Holds ``n_bytes`` of the budget for the block (more with ``Held.grow_to``); raises
        Overloaded when they do not fit."""
        held = Held(self)
        try:
            held.grow_to(n_bytes)
            yield held
        finally:
            with self._lock:
                self._used -= held.n_bytes

    def _take(self, held_bytes: int, more_bytes: int) -> None:
        with self._lock:
            total = held_bytes + more_bytes
            if (more_bytes > 0 and total > self.small_bytes and self._used > held_bytes
                    and self._used + more_bytes > self.limit_bytes):
                raise Overloaded(f"the server is busy ({self._used >> 20} MB of requests being read, decoded or "
                                 f"waiting for the scorer, {self.limit_bytes >> 20} MB at most); "
                                 "send the request again shortly")
            self._used += more_bytes


class Held:
    """One request's part of a ByteBudget."""

    def __init__(self, budget: ByteBudget) -> None:
        self._budget = budget
        self.n_bytes = 0

    def grow_to(self, n_bytes: int) -> None:
        """Hold ``n_bytes`` in all (a body as it arrives); raises Overloaded when they do not fit."""
        more = max(0, int(n_bytes)) - self.n_bytes
        if more > 0:
            self._budget._take(self.n_bytes, more)
            self.n_bytes += more


# a request this small is taken whatever the budget holds (module ByteBudget)
SMALL_REQUEST_BYTES = 1 << 20


# the budget when none is given: three bodies at the default 64 MB limit
DEFAULT_PENDING_BYTES = 3 * (64 << 20)


def _check_wanted(wanted: Callable[[], bool] | None) -> None:
    """Raises ScoringCancelled when the caller left while its request waited for the scorer."""
    if wanted is not None and not wanted():
        raise ScoringCancelled("the caller left while waiting for the scorer")


# how often a request waiting for the scorer asks whether its caller is still there: a call past
# its deadline (or a client gone) used to wait for the lock all the same, holding one of the
# server's threads (an audit: 4 expired ScoreBlock calls left no gRPC thread for Info)
LOCK_POLL_S = 0.05


class FairLock:
    """The scorer, taken in the order it was asked for (a ticket queue). A plain Lock's waiters
    polled for it: whoever polled first after a release won, and a block behind back-to-back 30 s
    clips waited up to 4.2 s (a probe). ``with lock:`` takes it without a ``wanted``."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[object] = deque()  # tickets of the waiters, the next one first
        self._held = False

    def acquire(self, wanted: Callable[[], bool] | None = None) -> None:
        """Waits for this caller's turn; ``wanted`` asked every LOCK_POLL_S meanwhile: False
        leaves the queue and raises ScoringCancelled."""
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
        try:
            while True:
                with self._cond:
                    if self._take(ticket):
                        return
                    self._cond.wait(LOCK_POLL_S)
                    if self._take(ticket):
                        return
                _check_wanted(wanted)  # (not under the condition's lock: it may read a socket)
        except BaseException:
            with self._cond:
                if ticket in self._queue:
                    self._queue.remove(ticket)
                    self._cond.notify_all()  # the next one may be first now
            raise

    def _take(self, ticket: object) -> bool:
        if self._held or self._queue[0] is not ticket:
            return False
        self._queue.popleft()
        self._held = True
        return True

    def release(self) -> None:
        with self._cond:
            self._held = False
            self._cond.notify_all()

    def waiting(self) -> int:
        """Callers waiting for their turn."""
        with self._cond:
            return len(self._queue)

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class _Turn:
    """One request's hold on the scorer (ScoreService._scorer). A clip gives it up between its
    batches of jobs to whoever waits, and queues again behind them (``between_batches``, asked by
    score_clip before each batch): a block or window waits for one batch of each request ahead
    of it, not for whole clips. Each batch is scored as it would be alone (the clip's feature
    cache is its own), so the results are those of a request made alone."""

    def __init__(self, lock: FairLock, wanted: Callable[[], bool] | None) -> None:
        self._lock, self._wanted = lock, wanted
        self.held = False
        self._batches = 0

    def between_batches(self) -> bool:
        """score_clip's ``wanted``: False (the caller gone, while scoring or waiting its turn
        again) stops the clip."""
        if self._wanted is not None and not self._wanted():
            return False
        if self._batches and self._lock.waiting():  # not before the first: each turn scores one
            self._lock.release()
            self.held = False
            try:
                self._lock.acquire(self._wanted)
            except ScoringCancelled:
                return False
            self.held = True
        self._batches += 1
        return True


class ScoreService:
    """Scores decoded requests with one scorer, one request at a time."""

    def __init__(self, scorer, max_seconds: float = 120.0, metrics: ServeMetrics | None = None,
                 max_pending_bytes: int = DEFAULT_PENDING_BYTES, small_request_bytes: int | None = None) -> None:
        self.scorer = scorer
        self.max_seconds = max_seconds
        self.metrics = metrics or ServeMetrics()
        # bodies being read, decoded or waiting for the scorer, in body bytes (both transports)
        self.budget = ByteBudget(max_pending_bytes, small_request_bytes)
        from worker.app import scorer_sample_rate  # the worker's rule: the bundle's rate, else 16 kHz

        self.sample_rate = scorer_sample_rate(scorer)
        self._lock = FairLock()

    def decode(self, kind: Kind | None, body: Any) -> ClipInput | ScoreRequest:
        """A request's fields -> what ``run`` scores: a clip (``kind`` None) or one BLOCK or
        WINDOW. Decoded before the request waits for the scorer, so that the body (JSON text,
        base64) can be dropped meanwhile: only the pixels and samples wait."""
        if kind is None:
            return decode(body, self.sample_rate, self.max_seconds)
        return decode_span(body, self.sample_rate, kind)

    def run(self, decoded: ClipInput | ScoreRequest, wanted: Callable[[], bool] | None = None) -> dict:
        """Scores what ``decode`` returned once the scorer is free: a clip's summary (what
        `sync-scorer score --roi --json` prints) or one job's verdict fields. ``wanted``: asked
        while the request waits for the scorer, once it is free and between batches of a clip's
        jobs; False stops the work (ScoringCancelled), so a caller past its deadline does not hold
        the next one up."""
        if isinstance(decoded, ClipInput):
            from worker.clipscore import score_clip

            clip = decoded
            with self._scorer(wanted) as turn, _as_request_error():
                summary = score_clip(self.scorer, clip.frames, clip.fps, clip.audio, clip.sample_rate,
                                     face_present=clip.face_present, occluded=clip.occluded,
                                     block_frames=clip.block_frames,
                                     window_ms=clip.window_ms, wanted=turn.between_batches)
            return summary.to_json()
        with self._scorer(wanted), _as_request_error():
            # the frames sent before the job (context_frames) are its video context, as the
            # worker's stream holds them from the blocks before: the verdict is the worker's
            result = self.scorer.score(decoded)
        return result.to_dict()

    def score(self, body: Any, wanted: Callable[[], bool] | None = None) -> dict:
        """A whole clip (``decode`` then ``run``)."""
        return self.run(self.decode(None, body), wanted)

    def score_span(self, kind: Kind, body: Any, wanted: Callable[[], bool] | None = None) -> dict:
        """One BLOCK or WINDOW (the seed's ScoreBlock / ScoreWindow): the LipSyncSignal's verdict
        fields for it, scored exactly as the worker scores that job."""
        return self.run(self.decode(kind, body), wanted)

    @contextmanager
    def _scorer(self, wanted: Callable[[], bool] | None) -> Iterator[_Turn]:
        """Holds the scorer for one request, its turn taken in arrival order (FairLock). While
        others have it, ``wanted`` is asked every LOCK_POLL_S: a caller that left raises
        ScoringCancelled instead of waiting its turn."""
        turn = _Turn(self._lock, wanted)
        self._lock.acquire(wanted)
        turn.held = True
        try:
            _check_wanted(wanted)
            yield turn
        finally:
            if turn.held:  # (not when the clip's caller left while it waited for its turn again)
                self._lock.release()

    def info(self) -> dict:
        config = getattr(self.scorer, "config", None)
        reach = max(abs(getattr(config, "min_offset_ms", 200.0)), abs(getattr(config, "max_offset_ms", 200.0)))
        return {"scorer": self.scorer.name, "sample_rate": self.sample_rate,
                "search_margin_ms": float(self.scorer.search_margin_ms), "max_offset_ms": float(reach),
                "context_frames": int(getattr(self.scorer, "context_frames", 0))}

    @contextmanager
    def observed(self, transport: str, method: str) -> Iterator[None]:
        """Count one request of ``method`` over ``transport`` by outcome (ok, bad_request,
        cancelled, error) and time it."""
        t0 = time.perf_counter()
        outcome = "error"
        try:
            yield
            outcome = "ok"
        except RequestError:
            outcome = "bad_request"
            raise
        except ScoringCancelled:
            outcome = "cancelled"
            raise
        finally:
            self.metrics.requests.labels(transport, method, outcome).inc()
            self.metrics.latency.labels(transport, method).observe(time.perf_counter() - t0)
