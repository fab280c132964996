"""RefError: a ROI reference that cannot be turned into pixels. The worker counts it and treats the
frame as missing; it never stops the worker."""

from __future__ import annotations

# The fixed set of reasons (low cardinality: they label metrics).
NO_ROI = "no_roi"  # the event carries no ROI (face-track found no face): not a reference at all
BAD_REF = "bad_ref"  # malformed reference: unknown kind, bad shape/format/name/offset
UNSUPPORTED_SCHEME = "unsupported_scheme"  # a URI scheme with no resolver
NOT_FOUND = "not_found"  # no such shm segment / file / S3 object or bucket
OUTSIDE_ROOTS = "outside_roots"  # file:// path outside the allowed roots (symlinks resolved)
WRONG_SIZE = "wrong_size"  # the bytes do not match shape x format (or run past the segment)
UNREADABLE = "unreadable"  # exists but cannot be read (permissions, S3 AccessDenied, I/O error, bad .npy)
BACKEND_ERROR = "backend_error"  # the store failed (S3 endpoint down, 5xx, throttled, timeout, expired token)
INTERNAL = "internal"  # an unexpected error inside a resolver (a bug): still only a missing frame
TIMEOUT = "timeout"  # not read within a second: its store hung, or this one object is slow (RoiResolver.resolve_batch)
STORE_DOWN = "store_down"  # not asked: the store failed and is skipped for a cool-down (breaker)

REASONS = (NO_ROI, BAD_REF, UNSUPPORTED_SCHEME, NOT_FOUND, OUTSIDE_ROOTS, WRONG_SIZE, UNREADABLE,
           BACKEND_ERROR, INTERNAL, TIMEOUT, STORE_DOWN)


class RefError(Exception):
    """``reason``: one of REASONS (for counters); ``scheme``: inline|shm|file|s3|...; ``detail``: one
    line for logs."""

    def __init__(self, reason: str, detail: str = "", *, scheme: str = "") -> None:
        super().__init__(f"{scheme or 'roi'} {reason}: {detail}" if detail else f"{scheme or 'roi'} {reason}")
        self.reason = reason
        self.detail = detail
        self.scheme = scheme
