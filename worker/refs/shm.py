"""ROI pixels in a POSIX shared-memory segment (as ``multiprocessing.shared_memory`` makes them),
opened by name, read at an offset and copied out.

The segment belongs to its producer (face-track): this side never unlinks it, and opens it
read-only. It does not go through ``SharedMemory(name=...)`` on Python < 3.13 because that
registers every attach with multiprocessing's resource tracker, which then unlinks the
producer's segment when this process exits and warns about a "leak"; unregistering afterwards
is no fix either, since the tracker keeps a set, not a count, and so would forget a segment this
same process created. Instead it uses the primitive SharedMemory itself is built on
(``_posixshmem.shm_open``: same names, same namespace) and one ``pread``. Where that module is
missing it falls back to ``SharedMemory(..., track=False)`` (Python >= 3.13).
"""

from __future__ import annotations

import os
import sys

import numpy as np

from worker.refs.errors import BAD_REF, NOT_FOUND, UNREADABLE, WRONG_SIZE, RefError
from worker.refs.pixels import DEFAULT_MAX_SIDE_PX, expected_shape, n_bytes

try:
    import _posixshmem  # CPython on POSIX: what multiprocessing.shared_memory uses
except ImportError:  # pragma: no cover - other platforms/implementations
    _posixshmem = None

SCHEME = "shm"


def _read_posix(name: str, offset: int, nbytes: int) -> bytes:
    fd = _posixshmem.shm_open("/" + name, os.O_RDONLY, mode=0o600)
    try:
        size = os.fstat(fd).st_size
        if offset + nbytes > size:
            raise RefError(WRONG_SIZE, f"segment {name!r} has {size} bytes; ROI needs {offset}+{nbytes}",
                           scheme=SCHEME)
        data = os.pread(fd, nbytes, offset)
    finally:
        os.close(fd)
    if len(data) != nbytes:  # the producer shrank it meanwhile
        raise RefError(WRONG_SIZE, f"segment {name!r}: read {len(data)} of {nbytes} bytes", scheme=SCHEME)
    return data


def _read_tracked_free(name: str, offset: int, nbytes: int) -> bytes:  # pragma: no cover - fallback
    from multiprocessing import shared_memory

    if sys.version_info < (3, 13):
        raise RefError(UNREADABLE, "shared memory needs _posixshmem or Python >= 3.13", scheme=SCHEME)
    shm = shared_memory.SharedMemory(name=name, create=False, track=False)  # type: ignore[call-arg]
    try:
        if offset + nbytes > shm.size:
            raise RefError(WRONG_SIZE, f"segment {name!r} has {shm.size} bytes; ROI needs {offset}+{nbytes}",
                           scheme=SCHEME)
        return bytes(shm.buf[offset: offset + nbytes])
    finally:
        shm.close()


def read_shm(name: str, offset: int, shape: list[int], pixel_format: str, *,
             max_side_px: int = DEFAULT_MAX_SIDE_PX) -> np.ndarray:
    """Copy a (H, W) or (H, W, 3) uint8 ROI out of segment ``name`` starting at byte ``offset``."""
    want_shape = expected_shape(shape, pixel_format, max_side_px=max_side_px, scheme=SCHEME)
    name = name.lstrip("/")  # multiprocessing names carry no slash; accept the POSIX spelling too
    if not name or "/" in name or "\0" in name:
        raise RefError(BAD_REF, f"bad shared-memory name {name!r}", scheme=SCHEME)
    if offset < 0:
        raise RefError(BAD_REF, f"negative offset {offset}", scheme=SCHEME)
    nbytes = n_bytes(want_shape)
    read = _read_posix if _posixshmem is not None else _read_tracked_free
    try:
        data = read(name, offset, nbytes)
    except FileNotFoundError as e:
        raise RefError(NOT_FOUND, f"no shared-memory segment {name!r}", scheme=SCHEME) from e
    except OSError as e:  # permissions, I/O
        raise RefError(UNREADABLE, f"cannot read segment {name!r}: {e}", scheme=SCHEME) from e
    return np.frombuffer(data, dtype=np.uint8).reshape(want_shape).copy()
