"""Per-frame crops gathered in chunks, moved to an unlinked temporary file past a RAM budget.

The tracker keeps every frame's mouth crop until the clip ends (`score` reads the whole clip's
windows, and a second face track may be chosen after the fact). Kept as a list of small arrays
stacked at the end, an hour of 25 fps video held 0.8 GB of crops twice over at the end, and the
allocator's heap never shrank back (`score` of a 10-minute clip: 1.1 GB peak, 0.45 GB of it
freed but not returned). Here crops fill a preallocated chunk of ``chunk_frames``; once the
crops pass ``ram_bytes`` they are written to a temporary file that is unlinked at once (nothing
is left behind, even on a crash), and ``finish`` returns the file as a copy-on-write memory
map: the page cache holds what is read, and the kernel may drop it again.

Frames without a face are blank (zeros) and are only counted (``append_blank``): a track that
FaceMesh saw for four frames of a long clip, and that is then dropped as a false detection,
costs nothing for the frames it was absent from (a review: a blank copied per frame cost 138 MB
per such track in a 10-minute clip). In the file they are holes, which read as zeros; a track
that is kept has its file's space reserved when it is finished.

If no temporary file can be made, or the disk fills up part-way, the crops stay in (or come back
to) RAM, as before the spool, rather than fail the clip.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import BinaryIO

import numpy as np

log = logging.getLogger(__name__)

# crops past this stay on disk: 64 MB is 4.6 minutes of 96 px GRAY8 crops at 25 fps, so the
# clips of the evaluation and the tests never touch the disk
SPOOL_RAM_BYTES = 64 << 20
CHUNK_FRAMES = 256


class FrameSpool:
    """Rows of one shape and dtype, appended one at a time (a blank row: zeros); ``finish``
    gives them as one ``(n, *frame_shape)`` array (a memory map once past ``ram_bytes``)."""

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
        self._row_bytes = int(np.prod(self.frame_shape, dtype=np.int64)) * self.dtype.itemsize
        # in RAM: row arrays and blank-run lengths (ints), in order
        self._segments: list[np.ndarray | int] = []
        self._ram_used = 0  # bytes of the row arrays kept in RAM
        self._chunk: np.ndarray | None = None  # rows being filled, allocated on the first crop
        self._fill = 0
        self._blank_run = 0  # blank rows after the chunk's, not yet stored
        self._n = 0
        self._file: BinaryIO | None = None
        self._rows_in_file = 0  # rows written (or skipped as holes) to the file
        self._no_disk = False  # no temporary file could be made or written: everything in RAM
        self.fell_back: str | None = None  # why the rows stayed in RAM past the budget, if they did
        self._finished = False

    def __len__(self) -> int:
        return self._n

    @property
    def spilled(self) -> bool:
        """Whether the rows are (being) kept in a file rather than in RAM."""
        return self._file is not None

    def append(self, frame: np.ndarray) -> None:
        self._check_open()
        frame = np.asarray(frame)
        if frame.shape != self.frame_shape:
            raise ValueError(f"frame shape {frame.shape} != {self.frame_shape}")
        if self._blank_run:
            self._flush()
        if self._chunk is None:
            self._chunk = np.empty((self.chunk_frames, *self.frame_shape), self.dtype)
        self._chunk[self._fill] = frame
        self._fill += 1
        self._n += 1
        if self._fill == self.chunk_frames:
            self._flush()

    def append_blank(self, count: int = 1) -> None:
        """``count`` rows of zeros (frames without the face): counted, not stored."""
        self._check_open()
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        self._blank_run += count
        self._n += count

    def _check_open(self) -> None:
        if self._finished:
            raise RuntimeError("append after finish")

    def _flush(self) -> None:
        """Store the chunk's rows, then the blank run after them (that order: the run came later)."""
        if self._fill:
            # a full chunk moves as it is; a partial one (a blank run follows) is copied, so a
            # flickering face does not keep a whole chunk alive per visible frame
            rows = self._chunk if self._fill == self.chunk_frames else self._chunk[:self._fill].copy()
            if rows is self._chunk:
                self._chunk = None
            self._fill = 0
            self._store(rows)
        if self._blank_run:
            run, self._blank_run = self._blank_run, 0
            self._store(run)

    def _store(self, seg: np.ndarray | int) -> None:
        if self._file is None:
            self._segments.append(seg)
            if isinstance(seg, np.ndarray):
                self._ram_used += seg.nbytes
            if not self._no_disk and self._ram_used > self.ram_bytes:
                self._move_to_file()
            return
        try:
            self._write(seg)
        except OSError as exc:  # the disk filled up: back to RAM with what the file holds
            self._back_to_ram(exc, seg)

    def _write(self, seg: np.ndarray | int) -> None:
        assert self._file is not None
        if isinstance(seg, int):
            self._file.seek(seg * self._row_bytes, os.SEEK_CUR)  # a hole: zeros, no disk blocks
            self._rows_in_file += seg
        else:
            self._file.write(memoryview(np.ascontiguousarray(seg)).cast("B"))
            self._rows_in_file += len(seg)

    def _move_to_file(self) -> None:
        try:
            # kept open past this function (closed in finish): no context manager
            f = tempfile.TemporaryFile(dir=self.tmp_dir, prefix="sync-scorer-crops-")  # noqa: SIM115
        except OSError as exc:
            self._stay_in_ram(exc)
            return
        self._file, self._rows_in_file = f, 0
        segments, self._segments, self._ram_used = self._segments, [], 0
        for i, seg in enumerate(segments):
            try:
                self._write(seg)
            except OSError as exc:
                self._back_to_ram(exc, *segments[i:])
                return

    def _back_to_ram(self, exc: OSError, *pending: np.ndarray | int) -> None:
        """The file could not take more: its rows are read back, ``pending`` follows them."""
        f, self._file = self._file, None
        assert f is not None
        try:
            f.seek(0)
            data = f.read(self._rows_in_file * self._row_bytes)
        finally:
            f.close()
        # a trailing hole reads short: the rest is zeros
        rows = np.zeros((self._rows_in_file, *self.frame_shape), self.dtype)
        rows.reshape(-1).view(np.uint8)[: len(data)] = np.frombuffer(data, np.uint8)
        self._segments = [rows, *pending]
        self._ram_used = sum(s.nbytes for s in self._segments if isinstance(s, np.ndarray))
        self._stay_in_ram(exc)

    def _stay_in_ram(self, exc: OSError) -> None:
        self.fell_back = f"the temporary file in {self.tmp_dir or tempfile.gettempdir()} failed ({exc})"
        log.warning("crops stay in RAM: %s", self.fell_back)
        self._no_disk = True

    def finish(self) -> np.ndarray:
        """Every row appended, ``(n, *frame_shape)``. Call once; the spool keeps nothing after."""
        self._check_open()
        self._finished = True
        self._flush()
        self._chunk = None
        if self._file is not None:
            f, self._file = self._file, None
            try:
                f.truncate(self._n * self._row_bytes)  # a trailing blank run: a hole to the end
                f.flush()
                # a hole read through the map needs a page of its own, and on a full tmpfs that
                # is a SIGBUS, not an error (a review: the process died reading blank rows):
                # reserved here, a full disk is an OSError, and the rows go back to RAM
                os.posix_fallocate(f.fileno(), 0, self._n * self._row_bytes)
                if self._n:
                    # copy-on-write: writable for callers (torch.from_numpy warns on a read-only
                    # array), while writes stay private and the file is never changed
                    return np.memmap(f, dtype=self.dtype, mode="c", shape=(self._n, *self.frame_shape))
            except OSError as exc:
                self._file = f
                self._back_to_ram(exc)
            finally:
                f.close()  # the map keeps the unlinked file's pages alive until it is dropped
        segments, self._segments = self._segments, []
        if len(segments) == 1 and isinstance(segments[0], np.ndarray) and len(segments[0]) == self._n:
            return segments[0]
        out = np.zeros((self._n, *self.frame_shape), self.dtype)
        at = 0
        for seg in segments:
            if isinstance(seg, int):
                at += seg
            else:
                out[at: at + len(seg)] = seg
                at += len(seg)
        return out
