"""RoiResolver: a decoded RoiRef's ``roi`` -> uint8 pixels, with failures counted by reason.

Kinds of ``roi`` (schemas/RoiRef.avsc; fastavro gives the union branch as a plain dict, told apart
by its keys, or as ``(record_name, dict)`` with ``return_record_name``):

* inline  ``{width, height, format, data}``
* shm     ``{name, offset, shape, format}``           -> worker.refs.shm
* uri     ``{uri, shape, format}`` by URI scheme:     file:// -> FileResolver, s3:// -> S3Resolver

``resolve`` returns an owned, writable, C-contiguous array, (H, W) for GRAY8 or (H, W, 3) for
RGB24, or raises ``RefError``. It never raises anything else: an unexpected error inside a
resolver becomes ``RefError("internal")``, so the caller can always mark the frame missing and
carry on.

``resolve_batch`` is for the worker's poll loop: the URI references of one consume batch are read
concurrently (a few threads per store); a store that hangs costs its frames and is then skipped for
a cool-down (worker.refs.breaker), while one slow object among reads the store answers costs only
its own frame; a store that answers is read to the end, across turns of the
poll loop when a batch takes longer than one turn's budget (the rest is returned as not read yet,
its reads carried on, and asked again). Before, each reference was read in turn on the poll loop:
an S3 endpoint that hung held every session for ~15 s per reference, and a healthy one at
20-50 ms per GET cost 0.6-1.5 s of poll-loop time per second of one 30 fps session.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from worker.refs import shm
from worker.refs.breaker import CircuitBreaker, give_up_at_s, hung, outpaced, store_verdict
from worker.refs.errors import (
    BACKEND_ERROR,
    BAD_REF,
    INTERNAL,
    NO_ROI,
    STORE_DOWN,
    TIMEOUT,
    UNSUPPORTED_SCHEME,
    RefError,
)
from worker.refs.files import FileResolver
from worker.refs.pixels import DEFAULT_MAX_SIDE_PX, expected_shape, pixels_from_raw
from worker.refs.s3 import S3Resolver

# A URI resolver: (uri, numpy shape) -> pixels, raising RefError.
UriResolver = Callable[[str, tuple[int, ...]], np.ndarray]
Resolved = tuple[np.ndarray | None, RefError | None]


def _store_up(future: Future[Resolved]) -> bool:
    """A finished read that the store answered (pixels, "not found", a bad reference...), not
    one that failed with it (BACKEND_ERROR: endpoint down, refused)."""
    if future.exception() is not None:
        return False
    err = future.result()[1]
    return err is None or err.reason != BACKEND_ERROR


# one URI read of a batch: its store, the read, its reference's key (None: unusable) and when it was sent
_Pending = tuple[str, Future[Resolved], tuple[str, str, str] | None, float]

STORE_THREADS = 8  # concurrent reads per store (I/O bound; a hung store ties up only its own)
STALL_S = 1.0  # a store that answered none of a batch's reads for this long hangs (S3 GETs: 20-50 ms)
# the most one batch's reads hold the poll loop (it must keep turning: /healthz, max.poll.interval.ms);
# what a store that answers has not read by then is returned as not read yet and asked again
MAX_WAIT_S = 2.0
CARRY_S = 10.0  # reads carried over that no next call took up (records revoked, or held long) are dropped
# while a store is skipped, one of its references is read this often on the side, not waited for:
# its answer ends the cool-down, so a store back from an outage is read again within about this
# long (a probe: the doubled cool-down after an outage cost 5-8 s of frames with the store answering)
PROBE_EVERY_S = 1.0


class RoiResolver:
    """Per-scheme resolvers plus thread-safe counters.

    Args:
        allowed_file_roots: directories ``file://`` references may point into (none: file refs
            are refused).
        s3_endpoint_url, s3_region: for ``s3://`` (None: AWS defaults).
        uri_resolvers: extra or replacement URI schemes, e.g. ``{"gs": my_resolver}``.
        max_side_px: largest accepted ROI side (bounds allocations from bad references).
        on_failure: called with each RefError (e.g. to bump a Prometheus counter).
        store_threads, stall_s, max_wait_s, cooldown_s, max_cooldown_s: ``resolve_batch``'s
            threads per store, time budget and breaker (worker.refs.breaker).
        outage_hold_s: how long ``resolve_batch`` holds each reference of a store that is down
            (hangs, or fails every read) as not read yet, to be read when it answers again, before
            giving it up as missing (0: missing at once).
        on_outage: called with a store's name and what happened, once per outage each: "held"
            (its references are held), "given_up" (the first held past ``outage_hold_s``), "back"
            (it answers again after a hold); e.g. to log it and bump a counter.
        clock_s: monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        *,
        allowed_file_roots: Iterable[str | os.PathLike[str]] = (),
        s3_endpoint_url: str | None = None,
        s3_region: str | None = None,
        uri_resolvers: Mapping[str, UriResolver] | None = None,
        max_side_px: int = DEFAULT_MAX_SIDE_PX,
        on_failure: Callable[[RefError], None] | None = None,
        store_threads: int = STORE_THREADS,
        stall_s: float = STALL_S,
        max_wait_s: float = MAX_WAIT_S,
        cooldown_s: float = 5.0,
        max_cooldown_s: float = 60.0,
        outage_hold_s: float = 0.0,
        on_outage: Callable[[str, str], None] | None = None,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_side_px = max_side_px
        self.on_failure = on_failure
        self.uri_resolvers: dict[str, UriResolver] = {
            "file": FileResolver(allowed_file_roots),
            "s3": S3Resolver(s3_endpoint_url, s3_region),
        }
        self.uri_resolvers.update(uri_resolvers or {})
        self._lock = threading.Lock()
        self._failures: Counter[tuple[str, str]] = Counter()
        self._resolved: Counter[str] = Counter()
        self.store_threads, self.stall_s, self.max_wait_s = store_threads, stall_s, max_wait_s
        self._cooldowns_s = (cooldown_s, max_cooldown_s)
        self.outage_hold_s, self.on_outage = outage_hold_s, on_outage
        # stores whose references the last resolve_batch held for an outage (poll loop only); per
        # store, the outage (its breaker's down_since_s) and the events reported for it
        self.held_stores: set[str] = set()
        self._reported: dict[str, tuple[float, set[str]]] = {}
        # per reference held for an outage: when it was first held and last asked for (poll loop
        # only; _holds: how long a reference may be held)
        self._held_since: dict[tuple[str, str, str], tuple[float, float]] = {}
        # references that failed with their store as it went down, given one more read before
        # they are counted (when): the reads of a batch sent just before an outage (poll loop only)
        self._retried: dict[tuple[str, str, str], float] = {}
        self._clock_s = clock_s
        self._breakers: dict[str, CircuitBreaker] = {}  # per store (URI scheme); poll loop only
        # side reads of skipped stores (PROBE_EVERY_S): the last one's future and when it was sent,
        # per store; the stores one found up (set on the reading threads, under _lock)
        self._probes: dict[str, tuple[Future[bool], float]] = {}
        self._probed_up: set[str] = set()
        self._pools: dict[str, ThreadPoolExecutor] = {}
        # reads not finished within a call's budget, by reference, for the next call to take up
        # (with when they were carried, and when they were sent); poll loop only
        self._carried: dict[tuple[str, str, str], tuple[Future[Resolved], float, float]] = {}
        # when each store last answered a read, any read (this batch's, or one carried on or left
        # running from an earlier one): a store busy answering reads queued before a batch's is
        # not hanging; set on the reading threads
        self._answered_s: dict[str, float] = {}
        # when the latest read each store answered (not with a failure of its own) was sent: a read
        # sent no later than that and still going is one slow object, not the store hanging
        # (breaker.outpaced); set on the reading threads
        self._up_sent_s: dict[str, float] = {}

    @classmethod
    def from_config(cls, refs_config: Any, **kwargs: Any) -> RoiResolver:
        """From an object with ``allowed_file_roots``, ``s3_endpoint_url``, ``s3_region``
        (worker.config.RefsConfig)."""
        return cls(
            allowed_file_roots=getattr(refs_config, "allowed_file_roots", ()) or (),
            s3_endpoint_url=getattr(refs_config, "s3_endpoint_url", None),
            s3_region=getattr(refs_config, "s3_region", None),
            outage_hold_s=getattr(refs_config, "outage_hold_s", 0.0),
            **kwargs,
        )

    # -- resolving -------------------------------------------------------------------------

    def resolve(self, roi: Mapping[str, Any] | tuple[str, Mapping[str, Any]] | None) -> np.ndarray:
        """Pixels of one ROI; ``RefError`` (counted) if it cannot be had."""
        pixels, err = self._counted(self._kind(roi), self._attempt(roi))
        if err is not None:
            raise err
        return pixels  # type: ignore[return-value]

    def try_resolve(self, roi: Any) -> tuple[np.ndarray | None, RefError | None]:
        """``(pixels, None)`` or ``(None, error)``: for callers that prefer values to exceptions."""
        try:
            return self.resolve(roi), None
        except RefError as e:
            return None, e

    def _attempt(self, roi: Any) -> Resolved:
        """One read, not counted yet (a batch counts a read once its outcome is final: one held for
        a store's outage is read again, ``outage_hold_s``)."""
        try:
            return self._resolve(roi)[1], None
        except RefError as e:
            return None, e
        except (KeyError, TypeError, ValueError) as e:  # a field missing or of the wrong type
            err = RefError(BAD_REF, f"{type(e).__name__}: {e}", scheme=self._kind(roi))
            err.__cause__ = e
        except Exception as e:  # noqa: BLE001 - a bug in a resolver must still only cost one frame
            err = RefError(INTERNAL, f"{type(e).__name__}: {e}", scheme=self._kind(roi))
            err.__cause__ = e
        return None, err

    def _counted(self, scheme: str, resolved: Resolved) -> Resolved:
        """``resolved``, counted as a read (``resolved()``) or as a failure (``on_failure``)."""
        if resolved[1] is not None:
            self._count_failure(resolved[1])
        else:
            with self._lock:
                self._resolved[scheme] += 1
        return resolved

    # -- one consume batch, concurrently --------------------------------------------------

    def is_store_ref(self, roi: Any) -> bool:
        """A URI reference with a resolver (file://, s3://): read from a store that may be slow."""
        return self._kind(roi) in self.uri_resolvers

    def held_for_outage(self, roi: Any) -> bool:
        """Whether ``roi`` was not read by the last ``resolve_batch`` because its store is down and
        its outage is held (``outage_hold_s``), rather than because the call's budget ran out."""
        return self._kind(roi) in self.held_stores

    def resolve_batch(self, rois: Sequence[Any], ages_s: Sequence[float | None] | None = None
                      ) -> list[Resolved | None]:
        """``try_resolve`` of each of ``rois``, in order; URI references read concurrently.

        * A store that answers none of its reads for ``stall_s`` hangs: its reads still going are
          given up as missing (``timeout``) and it is skipped for its cool-down (``store_down``),
          as is a store whose every answered read failed (the endpoint down): a store that hangs
          costs frames and at most ``stall_s`` of the caller's time per cool-down. Unless it
          answered a read sent with or after each read given up (breaker.outpaced): those are
          slow objects, missing frames, and the store is not skipped (each batch holding one
          costs up to ``stall_s``).
        * A store that answers is read to the end. What it has not read when the call's budget
          (``max_wait_s``, the poll loop's turn) is up is None: not read yet, neither missing nor
          a failure of the store; its reads go on, and a next call with the same reference takes
          the read up where it is. The caller asks again (the worker keeps those records back
          for its next turn).
        * A read given up before it was sent (queued behind reads that hang) is None: not read
          yet, asked again.
        * With ``outage_hold_s``, a store that is down (it hangs, or fails every read: the reads
          that would be ``timeout``, ``backend_error`` or ``store_down`` above) has its
          references held: None, not read yet, uncounted, and read when the store answers again
          (the side read finds it up). A reference is held while it is younger than
          ``outage_hold_s`` (``ages_s``: seconds since its record was written, where known), or
          for up to ``outage_hold_s`` from when it was first held if that was within
          ``outage_hold_s`` of the outage's start (a backlog's old records). Its name is in
          ``held_stores`` after the call. A read that failed with the store (given up, or
          ``backend_error``) while the store was not marked down (the reads of a batch sent as it
          went down) is asked once more before it is counted. Past the hold, as above.

        One caller thread (the poll loop)."""
        started_s = self._clock_s()
        self.held_stores = set()
        with self._lock:
            back, self._probed_up = self._probed_up, set()
        for store in back:  # a side read found it up: asked again from this batch on
            self._store_answered(store)
        out: list[Resolved | None] = [None] * len(rois)
        pending: dict[int, _Pending] = {}
        for i, roi in enumerate(rois):
            store = self._kind(roi)
            if store not in self.uri_resolvers:
                out[i] = self.try_resolve(roi)
                continue
            key = self._read_key(roi)
            carried = self._carried.pop(key, None) if key is not None else None
            if carried is not None:  # read on since the last call: the answer may be in already
                future, _since_s, sent_s = carried
                pending[i] = (store, future, key, sent_s)
            elif not self._breaker(store).allows(started_s):
                self._probe(store, roi, started_s)
                if self._holds(store, key, started_s, None if ages_s is None else ages_s[i]):
                    continue  # out[i] stays None: read when the store answers again
                out[i] = (None, self._failure(RefError(
                    STORE_DOWN, f"skipped for {self._breaker(store).open_for_s(started_s):.1f} s more: the "
                    "store failed", scheme=store)))
            else:
                future = self._pool(store).submit(self._attempt, roi)
                future.add_done_callback(
                    lambda f, store=store, sent_s=started_s: f.cancelled() or self._answered(store, sent_s, f))
                pending[i] = (store, future, key, started_s)
        if pending:
            hung_stores = self._wait(pending, started_s)
            self._collect(pending, out, hung_stores, ages_s)
        self._drop_stale_carried(self._clock_s())
        return out

    def _store_answered(self, store: str) -> None:
        """The store is up: its breaker closed, and the end of a held outage reported."""
        breaker = self._breaker(store)
        if breaker.down_since_s is not None:
            self._report(store, "back")
        breaker.answered()

    def _wait(self, pending: Mapping[int, _Pending], started_s: float) -> set[str]:
        """Wait for the reads until each store has answered them all or hangs, or the budget is up;
        the stores that hang."""
        left: dict[str, set[Future[Resolved]]] = {}
        for store, future, _key, _sent_s in pending.values():
            left.setdefault(store, set()).add(future)
        last_answer_s = dict.fromkeys(left, started_s)
        hung_stores: set[str] = set()
        while True:
            now_s = self._clock_s()
            for store, futures in left.items():
                futures -= {f for f in futures if f.done()}  # e.g. carried reads answered since
                last_answer_s[store] = max(last_answer_s[store], self._answered_s.get(store, started_s))
                if futures and store not in hung_stores and hung(now_s, last_answer_s[store], self.stall_s):
                    hung_stores.add(store)
            active = [s for s, futures in left.items() if futures and s not in hung_stores]
            if not active:
                return hung_stores
            timeout_s = min(give_up_at_s(started_s, last_answer_s[s], self.stall_s, self.max_wait_s)
                            for s in active) - now_s
            if now_s >= started_s + self.max_wait_s:
                return hung_stores  # the turn's budget: the rest is asked again
            if timeout_s <= 0:
                continue  # a store just went past its stall budget: marked above
            wait(set().union(*(left[s] for s in active)), timeout=min(timeout_s, 0.05), return_when=FIRST_COMPLETED)

    def _collect(self, pending: Mapping[int, _Pending], out: list[Resolved | None], hung_stores: set[str],
                 ages_s: Sequence[float | None] | None = None) -> None:
        """Results into ``out``, counted; the reads of a store that hangs given up; the reads still
        going at a store that answers carried over (None in ``out``); each store's breaker told; the
        reads a store's outage cost held (None, uncounted) while ``outage_hold_s`` lasts."""
        ok: Counter[str] = Counter()
        bad: Counter[str] = Counter()
        now_s = self._clock_s()
        given_up: dict[int, float] = {}  # index -> when its read was sent
        up_sent_s = self._up_sent_snapshot(pending)
        for i, (store, future, key, sent_s) in pending.items():
            if future.cancelled():
                continue  # dropped meanwhile (a duplicate's read): out[i] stays None, asked again
            if future.done():
                out[i] = future.result()
                err = out[i][1]  # type: ignore[index]
                (bad if err is not None and err.reason == BACKEND_ERROR else ok)[store] += 1
            elif store in hung_stores:
                # one not started never will (out[i] stays None: it was never sent, so it says
                # nothing and is asked again); a running one ends on its own timeouts
                if not future.cancel():
                    given_up[i] = sent_s
            elif key is not None and key not in self._carried:
                self._carried[key] = (future, now_s, sent_s)  # out[i] stays None: not read yet
            else:  # a second read of the same reference in this batch: the carried one serves both
                future.cancel()
        for store in {entry[0] for entry in pending.values()}:
            if all(key in self._retried for st, _f, key, _s in pending.values() if st == store):
                continue  # second reads alone say nothing of the store: one object may fail twice
            slow = outpaced((sent for i, sent in given_up.items() if pending[i][0] == store),
                            up_sent_s.get(store, float("-inf")))
            verdict = store_verdict(ok[store], bad[store], store in hung_stores, outpaced_=slow)
            if verdict is True:
                self._store_answered(store)
            elif verdict is False:
                self._breaker(store).failed(now_s)
        for i, (store, _future, key, sent_s) in pending.items():
            done = out[i]
            failed_with_store = i in given_up or (done is not None and done[1] is not None
                                                  and done[1].reason == BACKEND_ERROR)
            if failed_with_store and self._holds(store, key, now_s, None if ages_s is None else ages_s[i]):
                out[i] = None  # the outage's: read again when the store answers
            elif (failed_with_store and self.outage_hold_s > 0 and key is not None and key not in self._retried
                    and self._breaker(store).down_since_s is None):
                self._retried[key] = now_s  # sent as the store went down, maybe: once more first
                out[i] = None
            elif i in given_up:
                out[i] = (None, self._failure(RefError(
                    TIMEOUT, f"not read within {self.stall_s:g} s" + (
                        ", while the store answered reads sent with or after it"
                        if outpaced([sent_s], up_sent_s.get(store, float("-inf")))
                        else ": the store answered nothing meanwhile"), scheme=store)))
            elif done is not None:
                self._counted(store, done)
            if out[i] is not None and key is not None:  # settled: no longer held or tried again
                self._held_since.pop(key, None)
                self._retried.pop(key, None)

    def _holds(self, store: str, key: tuple[str, str, str] | None, now_s: float, age_s: float | None = None) -> bool:
        """Whether the reference ``key`` of ``store`` is held for the store's outage now: the store
        is down, and the reference's record is younger than ``outage_hold_s`` (``age_s``), or the
        reference was first held less than ``outage_hold_s`` ago, and that less than
        ``outage_hold_s`` into the outage. So a live record waits at most ``outage_hold_s`` after
        it was written, and an outage longer than that costs the frames written more than
        ``outage_hold_s`` before it ended; a backlog's old records wait at most twice that. (Held
        per first-asked time alone, each fetch of a paused partition started a fresh hold: 113 s
        behind after 120 s of a store down; given up for any first asked late into the outage,
        a 45-s outage lost nearly all its frames, since a paused partition's later records are
        first asked only when it moves on.) The first hold of each outage and its first
        reference held too long are reported (``on_outage``)."""
        breaker = self._breaker(store)
        if self.outage_hold_s <= 0 or breaker.down_since_s is None or key is None:
            return False
        first_s, _asked_s = self._held_since.get(key, (now_s, now_s))
        young = age_s is not None and age_s < self.outage_hold_s
        early = now_s - first_s < self.outage_hold_s and first_s - breaker.down_since_s < self.outage_hold_s
        if not (young or early):
            self._held_since.pop(key, None)
            self._report(store, "given_up")
            return False
        self._held_since[key] = (first_s, now_s)
        self.held_stores.add(store)
        self._report(store, "held")
        return True

    def _report(self, store: str, event: str) -> None:
        """``on_outage(store, event)`` once per outage of ``store`` ("back" only after a hold)."""
        outage = self._breaker(store).down_since_s
        if outage is None:
            return
        seen_outage, seen = self._reported.get(store, (None, set()))
        if seen_outage != outage:
            seen = set()
            self._reported[store] = (outage, seen)
        if event in seen or (event == "back" and "held" not in seen):
            return
        seen.add(event)
        if self.on_outage is not None:
            try:
                self.on_outage(store, event)
            except Exception:  # noqa: BLE001, S110 - a metrics hook must not stop the reads
                pass

    def _probe(self, store: str, roi: Any, now_s: float) -> None:
        """Read ``roi`` of a skipped ``store`` on the side (one at a time, every PROBE_EVERY_S), not
        counted and not waited for: an answer (any but BACKEND_ERROR) marks the store up."""
        last = self._probes.get(store)
        if last is not None and (not last[0].done() or now_s - last[1] < PROBE_EVERY_S):
            return

        def read() -> bool:
            try:
                self._resolve(roi)
            except RefError as e:
                return e.reason != BACKEND_ERROR
            except Exception:  # noqa: BLE001 - a read that failed says nothing of the store
                return False
            return True

        def done(f: Future[bool]) -> None:
            if not f.cancelled() and f.exception() is None and f.result():
                with self._lock:
                    self._probed_up.add(store)

        future = self._pool(store).submit(read)
        future.add_done_callback(done)
        self._probes[store] = (future, now_s)

    def _up_sent_snapshot(self, pending: Mapping[int, _Pending]) -> dict[str, float]:
        """``_up_sent_s`` as of now, with this batch's own reads that are done counted in: wait()
        wakes on a read before its done callback has run."""
        with self._lock:
            up = dict(self._up_sent_s)
        for store, future, _key, sent_s in pending.values():
            if future.done() and not future.cancelled() and _store_up(future):
                up[store] = max(sent_s, up.get(store, sent_s))
        return up

    def _answered(self, store: str, sent_s: float, future: Future[Resolved]) -> None:
        """A read of ``store`` sent at ``sent_s`` was answered (done callback, on its reading thread)."""
        now_s = self._clock_s()
        store_up = _store_up(future)
        with self._lock:
            self._answered_s[store] = max(now_s, self._answered_s.get(store, now_s))
            if store_up:
                self._up_sent_s[store] = max(sent_s, self._up_sent_s.get(store, sent_s))

    def _drop_stale_carried(self, now_s: float) -> None:
        """Reads carried over, references held or tried again, that no call took up for CARRY_S
        (their records went elsewhere: revoked, or the worker stopped)."""
        for key, (future, since_s, _sent_s) in list(self._carried.items()):
            if now_s - since_s >= CARRY_S:
                future.cancel()
                del self._carried[key]
        for key, (_first_s, asked_s) in list(self._held_since.items()):
            if now_s - asked_s >= CARRY_S:
                del self._held_since[key]
        for key, tried_s in list(self._retried.items()):
            if now_s - tried_s >= CARRY_S:
                del self._retried[key]

    @staticmethod
    def _read_key(roi: Any) -> tuple[str, str, str] | None:
        """What identifies one read of a URI reference across calls (None: nothing usable)."""
        try:
            if isinstance(roi, tuple) and len(roi) == 2:
                roi = roi[1]
            return str(roi["uri"]), str(list(roi["shape"])), str(roi["format"])
        except Exception:  # noqa: BLE001 - a malformed reference is read (and refused) afresh
            return None

    def _breaker(self, store: str) -> CircuitBreaker:
        if store not in self._breakers:
            self._breakers[store] = CircuitBreaker(*self._cooldowns_s)
        return self._breakers[store]

    def _pool(self, store: str) -> ThreadPoolExecutor:
        """Threads per store: reads stuck on a store that hangs do not hold another's."""
        if store not in self._pools:
            self._pools[store] = ThreadPoolExecutor(self.store_threads, thread_name_prefix=f"roi-{store}")
        return self._pools[store]

    def close(self) -> None:
        """Stop the reading threads (reads not started are dropped; running ones end on their
        own timeouts)."""
        for future, _since_s, _sent_s in self._carried.values():
            future.cancel()
        self._carried.clear()
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
        self._pools.clear()

    def _failure(self, err: RefError) -> RefError:
        self._count_failure(err)
        return err

    def _resolve(self, roi: Any) -> tuple[str, np.ndarray]:
        if roi is None:
            raise RefError(NO_ROI, "the event carries no ROI (no face)", scheme="roi")
        if isinstance(roi, tuple) and len(roi) == 2 and isinstance(roi[0], str):
            roi = roi[1]  # fastavro's (record_name, record) union form
        if not isinstance(roi, Mapping):
            raise RefError(BAD_REF, f"ROI must be a record, got {type(roi).__name__}", scheme="roi")
        if "data" in roi:
            shape = expected_shape([roi["height"], roi["width"]], roi["format"],
                                   max_side_px=self.max_side_px, scheme="inline")
            return "inline", pixels_from_raw(roi["data"], shape, scheme="inline")
        if "name" in roi:
            return "shm", shm.read_shm(str(roi["name"]), int(roi.get("offset", 0) or 0), list(roi["shape"]),
                                       roi["format"], max_side_px=self.max_side_px)
        if "uri" in roi:
            uri = str(roi["uri"])
            scheme = urlsplit(uri).scheme.lower()
            resolver = self.uri_resolvers.get(scheme)
            if resolver is None:
                # Labelled "uri", not the scheme: a sender's typos must not grow the metric labels.
                raise RefError(UNSUPPORTED_SCHEME, f"no resolver for {scheme or 'a scheme-less'} URI {uri!r}",
                               scheme="uri")
            shape = expected_shape(list(roi["shape"]), roi["format"], max_side_px=self.max_side_px, scheme=scheme)
            return scheme, resolver(uri, shape)
        raise RefError(BAD_REF, f"unknown ROI kind with fields {sorted(roi)}", scheme="roi")

    def _kind(self, roi: Any) -> str:
        """Scheme label of a ROI for counting failures (bounded set; never raises)."""
        try:
            if isinstance(roi, tuple) and len(roi) == 2:
                roi = roi[1]
            if isinstance(roi, Mapping):
                if "data" in roi:
                    return "inline"
                if "name" in roi:
                    return "shm"
                if "uri" in roi:
                    scheme = urlsplit(str(roi["uri"])).scheme.lower()
                    return scheme if scheme in self.uri_resolvers else "uri"
        except Exception:  # noqa: BLE001, S110 - only a label; the real error is reported by the caller
            pass
        return "roi"

    # -- counters --------------------------------------------------------------------------

    def _count_failure(self, err: RefError) -> None:
        with self._lock:
            self._failures[(err.scheme, err.reason)] += 1
        if self.on_failure is not None:
            try:
                self.on_failure(err)
            except Exception:  # noqa: BLE001, S110 - a metrics hook must not turn a missing frame into a crash
                pass

    def failures_by_reason(self) -> dict[str, int]:
        """``{reason: count}`` over all schemes."""
        out: Counter[str] = Counter()
        with self._lock:
            for (_scheme, reason), n in self._failures.items():
                out[reason] += n
        return dict(out)

    def failures(self) -> dict[tuple[str, str], int]:
        """``{(scheme, reason): count}``."""
        with self._lock:
            return dict(self._failures)

    def resolved(self) -> dict[str, int]:
        """``{scheme: count}`` of successful resolutions."""
        with self._lock:
            return dict(self._resolved)

