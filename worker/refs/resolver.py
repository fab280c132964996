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
concurrently (a few threads per store), within a time budget, and a store that failed is skipped
for a cool-down (worker.refs.breaker). Before, each reference was read in turn on the poll loop:
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
from worker.refs.breaker import CircuitBreaker, give_up_at_s
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

STORE_THREADS = 8  # concurrent reads per store (I/O bound; a hung store ties up only its own)
STALL_S = 1.0  # no read of a batch answered for this long: the store hangs (S3 GETs: 20-50 ms)
MAX_WAIT_S = 2.0  # the most a batch's reads may cost the poll loop, even from a store that answers


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
        self._clock_s = clock_s
        self._breakers: dict[str, CircuitBreaker] = {}  # per store (URI scheme); poll loop only
        self._pools: dict[str, ThreadPoolExecutor] = {}

    @classmethod
    def from_config(cls, refs_config: Any, **kwargs: Any) -> RoiResolver:
        """From an object with ``allowed_file_roots``, ``s3_endpoint_url``, ``s3_region``
        (worker.config.RefsConfig)."""
        return cls(
            allowed_file_roots=getattr(refs_config, "allowed_file_roots", ()) or (),
            s3_endpoint_url=getattr(refs_config, "s3_endpoint_url", None),
            s3_region=getattr(refs_config, "s3_region", None),
            **kwargs,
        )

    # -- resolving -------------------------------------------------------------------------

    def resolve(self, roi: Mapping[str, Any] | tuple[str, Mapping[str, Any]] | None) -> np.ndarray:
        """Pixels of one ROI; ``RefError`` (counted) if it cannot be had."""
        try:
            scheme, pixels = self._resolve(roi)
        except RefError as e:
            self._count_failure(e)
            raise
        except (KeyError, TypeError, ValueError) as e:  # a field missing or of the wrong type
            err = RefError(BAD_REF, f"{type(e).__name__}: {e}", scheme=self._kind(roi))
            self._count_failure(err)
            raise err from e
        except Exception as e:  # a bug in a resolver must still only cost one frame
            err = RefError(INTERNAL, f"{type(e).__name__}: {e}", scheme=self._kind(roi))
            self._count_failure(err)
            raise err from e
        with self._lock:
            self._resolved[scheme] += 1
        return pixels

    def try_resolve(self, roi: Any) -> tuple[np.ndarray | None, RefError | None]:
        """``(pixels, None)`` or ``(None, error)``: for callers that prefer values to exceptions."""
        try:
            return self.resolve(roi), None
        except RefError as e:
            return None, e

    # -- one consume batch, concurrently --------------------------------------------------

    def is_store_ref(self, roi: Any) -> bool:
        """A URI reference with a resolver (file://, s3://): read from a store that may be slow."""
        return self._kind(roi) in self.uri_resolvers

    def resolve_batch(self, rois: Sequence[Any]) -> list[Resolved]:
        """``try_resolve`` of each of ``rois``, in order; URI references read concurrently. What
        is not read within the budget (``give_up_at_s``) is given up as missing (``timeout``), and
        a store that failed is skipped for its cool-down (``store_down``): a store that hangs
        costs frames and at most ``stall_s`` of the caller's time per cool-down. One caller
        thread (the poll loop)."""
        started_s = self._clock_s()
        out: list[Resolved] = [(None, None)] * len(rois)
        pending: dict[int, tuple[str, Future[Resolved]]] = {}
        for i, roi in enumerate(rois):
            store = self._kind(roi)
            if store not in self.uri_resolvers:
                out[i] = self.try_resolve(roi)
            elif not self._breaker(store).allows(started_s):
                out[i] = (None, self._failure(RefError(
                    STORE_DOWN, f"skipped for {self._breaker(store).open_for_s(started_s):.1f} s more: the "
                    "store failed", scheme=store)))
            else:
                pending[i] = (store, self._pool(store).submit(self.try_resolve, roi))
        if pending:
            self._wait([future for _, future in pending.values()], started_s)
            self._collect(pending, out)
        return out

    def _wait(self, futures: list[Future[Resolved]], started_s: float) -> None:
        left, last_answer_s = set(futures), started_s
        while left:
            timeout_s = give_up_at_s(started_s, last_answer_s, self.stall_s, self.max_wait_s) - self._clock_s()
            if timeout_s <= 0:
                return
            done, left = wait(left, timeout=timeout_s, return_when=FIRST_COMPLETED)
            if done:
                last_answer_s = self._clock_s()

    def _collect(self, pending: dict[int, tuple[str, Future[Resolved]]], out: list[Resolved]) -> None:
        """Results into ``out``; the reads still going given up; each store's breaker told."""
        answered: set[str] = set()
        failed: set[str] = set()
        for i, (store, future) in pending.items():
            if future.done():
                out[i] = future.result()
                err = out[i][1]
                (failed if err is not None and err.reason == BACKEND_ERROR else answered).add(store)
            else:
                future.cancel()  # one not started never will; a running one ends on its own timeouts
                out[i] = (None, self._failure(RefError(TIMEOUT, "not read within the batch's time budget",
                                                       scheme=store)))
                failed.add(store)  # too slow to keep up is a failure too, even if it answered some
        now_s = self._clock_s()
        for store in failed:
            self._breaker(store).failed(now_s)
        for store in answered - failed:
            self._breaker(store).answered()

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

