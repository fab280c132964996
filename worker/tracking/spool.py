"""Per-frame crops gathered in fixed chunks, moved to an unlinked temporary file past a RAM budget.

The tracker keeps every frame's mouth crop until the clip ends (`score` reads the whole clip's
windows, and a second face track may be chosen after the fact). Kept as a list of small arrays
stacked at the end, an hour of 25 fps video held 0.8 GB of crops twice over at the end, and the
allocator's heap never shrank back (`score` of a 10-minute clip: 1.1 GB peak, 0.45 GB of it
freed but not returned). Here crops fill preallocated chunks of ``chunk_frames``; once the
crops pass ``ram_bytes`` every full chunk is written to a temporary file that is unlinked at
once (nothing is left behind, even on a crash), and ``finish`` returns the file as a
copy-on-write memory map: the page cache holds what is read, and the kernel may drop it again.

Pure bookkeeping of one array's rows; the file is the only I/O. If no temporary file can be
made (a read-only or full ``tmp_dir``), the crops stay in RAM, as before, rather than fail.
"""

from __future__ import annotations

import logging
import tempfile
from typing import BinaryIO

import numpy as np

log = logging.getLogger(__name__)

# crops past this stay on disk: 64 MB is 4.6 minutes of 96 px GRAY8 crops at 25 fps, so the
# clips of the evaluation and the tests never touch the disk
SPOOL_RAM_BYTES = 64 << 20
CHUNK_FRAMES = 256


class FrameSpool:
    """Rows of one shape and dtype, appended one at a time; ``finish`` gives them as one
    ``(n, *frame_shape)`` array (a memory map once past ``ram_bytes``)."""

    def __init__(self, frame_shape: tuple[int, ...], dtype=np.uint8, chunk_frames: int | None = None,
                 ram_bytes: int | None = None, tmp_dir: str | None = None) -> None:
        chunk_frames = CHUNK_FRAMES if chunk_frames is None else chunk_frames
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        self.frame_shape = tuple(int(s) for s in frame_shape)
        self.dtype = np.dtype(dtype)
        self.chunk_frames = int(chunk_frames)
        self.ram_bytes = SPOOL_RAM_BYTES if ram_bytes is None else int(ram_bytes)
        self.tmp_dir = tmp_dir
        self._full: list[np.ndarray] = []  # full chunks still in RAM
        self._chunk = np.empty((self.chunk_frames, *self.frame_shape), self.dtype)
        self._fill = 0  # rows used in _chunk
        self._n = 0
        self._file: BinaryIO | None = None
        self._no_disk = False  # a temporary file could not be made: everything stays in RAM
        self._finished = False

    def __len__(self) -> int:
        return self._n

    @property
    def spilled(self) -> bool:
        """Whether the rows are (being) kept in a file rather than in RAM."""
        return self._file is not None

    def append(self, frame: np.ndarray) -> None:
        if self._finished:
            raise RuntimeError("append after finish")
        frame = np.asarray(frame)
        if frame.shape != self.frame_shape:
            raise ValueError(f"frame shape {frame.shape} != {self.frame_shape}")
        self._chunk[self._fill] = frame
        self._fill += 1
        self._n += 1
        if self._fill == self.chunk_frames:
            self._store_full_chunk()

    def _store_full_chunk(self) -> None:
        chunk, self._fill = self._chunk, 0
        self._chunk = np.empty_like(chunk)
        if self._file is None and not self._no_disk and self._n * self._row_bytes > self.ram_bytes:
            self._open_file()
        if self._file is not None:
            self._file.write(memoryview(chunk).cast("B"))
        else:
            self._full.append(chunk)

    @property
    def _row_bytes(self) -> int:
        return int(np.prod(self.frame_shape, dtype=np.int64)) * self.dtype.itemsize

    def _open_file(self) -> None:
        try:
            # kept open past this function (closed in finish): no context manager
            f = tempfile.TemporaryFile(dir=self.tmp_dir, prefix="sync-scorer-crops-")  # noqa: SIM115
            for chunk in self._full:
                f.write(memoryview(chunk).cast("B"))
        except OSError as exc:
            log.warning("crops stay in RAM: no temporary file in %s (%s)", self.tmp_dir or tempfile.gettempdir(), exc)
            self._no_disk = True
            return
        self._file, self._full = f, []

    def finish(self) -> np.ndarray:
        """Every row appended, ``(n, *frame_shape)``. Call once; the spool keeps nothing after."""
        if self._finished:
            raise RuntimeError("finish called twice")
        self._finished = True
        tail = self._chunk[:self._fill]
        if self._file is None:
            parts = [*self._full, tail]
            self._full, self._chunk = [], None
            return parts[0] if len(parts) == 1 else np.concatenate(parts)
        f, self._file = self._file, None
        try:
            if self._fill:
                f.write(memoryview(tail).cast("B"))
            f.flush()
            self._chunk = None
            if self._n == 0:  # mmap refuses an empty file
                return np.empty((0, *self.frame_shape), self.dtype)
            # copy-on-write: writable for callers (torch.from_numpy warns on a read-only array),
            # while writes stay private and the file is never changed
            return np.memmap(f, dtype=self.dtype, mode="c", shape=(self._n, *self.frame_shape))
        finally:
            f.close()  # the map keeps the unlinked file's pages alive until it is dropped
