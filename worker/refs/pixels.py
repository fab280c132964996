"""Pure helpers: ROI shape/format checks and bytes -> uint8 pixel arrays (raw or .npy)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

from worker.refs.errors import BAD_REF, UNREADABLE, WRONG_SIZE, RefError
from worker.scoring.validate import MIN_ROI_SIDE_PX

CHANNELS = {"GRAY8": 1, "RGB24": 3}
NPY_MAGIC = b"\x93NUMPY"
# A .npy header is at most a few hundred bytes for a 2-3-d uint8 array; allow generous slack.
NPY_HEADER_MAX = 4096
DEFAULT_MAX_SIDE_PX = 4096


def expected_shape(shape: Sequence[int], pixel_format: str, *, max_side_px: int = DEFAULT_MAX_SIDE_PX,
                   scheme: str = "") -> tuple[int, ...]:
    """The numpy shape of a ROI: (H, W) for GRAY8, (H, W, 3) for RGB24.

    ``shape`` is [H, W] or [H, W, C] with C matching the format. Sides must be
    MIN_ROI_SIDE_PX..max_side_px: the scorer reads nothing smaller (and a job's frames take its
    first frame's size, so one tiny frame spoilt the job: refused here, where it is read, it is a
    bad reference, or a bad record when inline); the maximum bounds what a bad reference can make
    the worker allocate.
    """
    if pixel_format not in CHANNELS:
        raise RefError(BAD_REF, f"unknown pixel format {pixel_format!r}", scheme=scheme)
    channels = CHANNELS[pixel_format]
    dims = [int(d) for d in shape]
    if len(dims) == 3:
        if dims[2] != channels:
            raise RefError(BAD_REF, f"shape {dims} has {dims[2]} channels but {pixel_format} has {channels}",
                           scheme=scheme)
        dims = dims[:2]
    if len(dims) != 2:
        raise RefError(BAD_REF, f"shape must be [H, W] or [H, W, C], got {list(shape)}", scheme=scheme)
    height, width = dims
    if not (MIN_ROI_SIDE_PX <= height <= max_side_px and MIN_ROI_SIDE_PX <= width <= max_side_px):
        raise RefError(BAD_REF, f"ROI {height}x{width} outside {MIN_ROI_SIDE_PX}..{max_side_px} px per side",
                       scheme=scheme)
    return (height, width) if channels == 1 else (height, width, channels)


def n_bytes(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape))


def pixels_from_raw(data: bytes | memoryview, shape: tuple[int, ...], *, scheme: str = "") -> np.ndarray:
    """Row-major raw pixels -> an owned, writable uint8 array of ``shape``; exact size required."""
    want = n_bytes(shape)
    if len(data) != want:
        raise RefError(WRONG_SIZE, f"{len(data)} bytes for a {'x'.join(map(str, shape))} ROI (want {want})",
                       scheme=scheme)
    return np.frombuffer(data, dtype=np.uint8, count=want).reshape(shape).copy()


def pixels_from_npy(data: bytes, shape: tuple[int, ...], *, scheme: str = "") -> np.ndarray:
    """A .npy file's bytes -> uint8 array; dtype must be uint8 and the shape must match (a GRAY8
    (H, W, 1) array is accepted as (H, W))."""
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as e:  # truncated/corrupt header or body
        raise RefError(UNREADABLE, f"bad .npy: {type(e).__name__}: {e}", scheme=scheme) from e
    if arr.dtype != np.uint8:
        raise RefError(WRONG_SIZE, f".npy dtype {arr.dtype}, want uint8", scheme=scheme)
    if arr.ndim == 3 and arr.shape[2] == 1 and len(shape) == 2:
        arr = arr[:, :, 0]
    if tuple(arr.shape) != shape:
        raise RefError(WRONG_SIZE, f".npy shape {arr.shape}, reference says {shape}", scheme=scheme)
    return np.ascontiguousarray(arr)


def pixels_from_bytes(data: bytes, shape: tuple[int, ...], *, scheme: str = "") -> np.ndarray:
    """Raw pixels (exactly H*W*C bytes), else a .npy array (starts with the .npy magic).

    Deciding by size first is unambiguous: a .npy always has a header, so it is never exactly the
    raw size, while raw pixels could by chance begin with the magic bytes.
    """
    if len(data) != n_bytes(shape) and data[: len(NPY_MAGIC)] == NPY_MAGIC:
        return pixels_from_npy(bytes(data), shape, scheme=scheme)
    return pixels_from_raw(data, shape, scheme=scheme)


def max_object_bytes(shape: tuple[int, ...]) -> int:
    """The most bytes a file/object for ``shape`` may hold (raw, or .npy with its header)."""
    return n_bytes(shape) + NPY_HEADER_MAX
