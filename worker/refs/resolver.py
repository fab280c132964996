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
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from worker.refs import shm
from worker.refs.errors import BAD_REF, INTERNAL, NO_ROI, UNSUPPORTED_SCHEME, RefError
from worker.refs.files import FileResolver
from worker.refs.pixels import DEFAULT_MAX_SIDE_PX, expected_shape, pixels_from_raw
from worker.refs.s3 import S3Resolver

# A URI resolver: (uri, numpy shape) -> pixels, raising RefError.
UriResolver = Callable[[str, tuple[int, ...]], np.ndarray]


class RoiResolver:
    """Per-scheme resolvers plus thread-safe counters.

    Args:
        allowed_file_roots: directories ``file://`` references may point into (none: file refs
            are refused).
        s3_endpoint_url, s3_region: for ``s3://`` (None: AWS defaults).
        uri_resolvers: extra or replacement URI schemes, e.g. ``{"gs": my_resolver}``.
        max_side_px: largest accepted ROI side (bounds allocations from bad references).
        on_failure: called with each RefError (e.g. to bump a Prometheus counter).
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

