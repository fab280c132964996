"""FrameSpool: crops kept in chunks, on disk past the RAM budget, given back unchanged."""

import os

import numpy as np
import pytest

from worker.tracking.spool import FrameSpool


def _frames(n, shape=(6, 6)):
    rng = np.random.default_rng(n)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8)


@pytest.mark.parametrize("n", [1, 3, 4, 5, 17])
def test_in_ram_below_the_budget(n):
    spool = FrameSpool((6, 6), chunk_frames=4, ram_bytes=10_000)
    frames = _frames(n)
    for f in frames:
        spool.append(f)
    assert len(spool) == n and not spool.spilled
    out = spool.finish()
    assert not isinstance(out, np.memmap)
    np.testing.assert_array_equal(out, frames)


@pytest.mark.parametrize("n", [9, 12, 13, 40])
def test_past_the_budget_the_rows_come_back_from_a_file(n, tmp_path):
    spool = FrameSpool((6, 6), chunk_frames=4, ram_bytes=6 * 6 * 5, tmp_dir=str(tmp_path))
    frames = _frames(n)
    for f in frames:
        spool.append(f)
    assert spool.spilled
    # the file is unlinked as soon as it is made: nothing to clean up, even after a crash
    assert os.listdir(tmp_path) == []
    out = spool.finish()
    assert isinstance(out, np.memmap) and out.shape == (n, 6, 6) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, frames)
    # writable for callers, and a write changes only the caller's copy of the page
    out[0] = 0
    assert out.flags.writeable and int(out[1].sum()) == int(frames[1].sum())


def test_rgb_rows_keep_their_shape(tmp_path):
    spool = FrameSpool((4, 4, 3), chunk_frames=2, ram_bytes=0, tmp_dir=str(tmp_path))
    frames = _frames(5, (4, 4, 3))
    for f in frames:
        spool.append(f)
    np.testing.assert_array_equal(spool.finish(), frames)


def test_no_temporary_file_keeps_the_rows_in_ram(tmp_path):
    spool = FrameSpool((6, 6), chunk_frames=2, ram_bytes=0, tmp_dir=str(tmp_path / "missing"))
    frames = _frames(7)
    for f in frames:
        spool.append(f)
    assert not spool.spilled
    np.testing.assert_array_equal(spool.finish(), frames)


def test_a_wrong_shape_is_refused_and_finish_is_once():
    spool = FrameSpool((6, 6))
    with pytest.raises(ValueError, match="shape"):
        spool.append(np.zeros((6, 7), np.uint8))
    spool.append(np.zeros((6, 6), np.uint8))
    assert spool.finish().shape == (1, 6, 6)
    with pytest.raises(RuntimeError):
        spool.finish()
    with pytest.raises(RuntimeError):
        spool.append(np.zeros((6, 6), np.uint8))


def _mixed(n, seed=0, shape=(6, 6)):
    """Rows and blanks interleaved in runs (a face that comes and goes), and the expected array."""
    rng = np.random.default_rng(seed)
    frames = _frames(n, shape)
    blank = rng.random(n) < 0.4
    blank[rng.integers(0, n, 3)] = True
    expect = np.where(blank.reshape(-1, *([1] * len(shape))), 0, frames).astype(np.uint8)
    return frames, blank, expect


@pytest.mark.parametrize("ram_bytes", [10**6, 6 * 6 * 7, 0])
def test_blank_rows_are_zeros_in_ram_and_holes_on_disk(ram_bytes, tmp_path):
    frames, blank, expect = _mixed(61)
    spool = FrameSpool((6, 6), chunk_frames=4, ram_bytes=ram_bytes, tmp_dir=str(tmp_path))
    for f, b in zip(frames, blank):
        spool.append_blank() if b else spool.append(f)
    spool.append_blank(5)  # a trailing run: a hole to the end of the file
    out = spool.finish()
    np.testing.assert_array_equal(out, np.concatenate([expect, np.zeros((5, 6, 6), np.uint8)]))


def test_a_track_absent_from_most_frames_costs_only_its_crops():
    spool = FrameSpool((96, 96), chunk_frames=256, ram_bytes=10**9)
    spool.append_blank(15_000)  # a false detection late in a 10-minute clip
    for _ in range(4):
        spool.append(np.ones((96, 96), np.uint8))
    spool.append_blank(100)
    assert spool._ram_used <= 4 * 96 * 96 and len(spool) == 15_104


class _FullDisk:
    """A temporary file that takes ``room`` bytes and then raises ENOSPC, as a full disk does."""

    def __init__(self, make, room):
        self.f, self.room = make(), room

    def write(self, b):
        b = memoryview(b).cast("B")
        if self.f.tell() + len(b) > self.room:
            self.f.write(b[: max(0, self.room - self.f.tell())])  # a partial write, then the error
            raise OSError(28, "No space left on device")
        return self.f.write(b)

    def __getattr__(self, name):
        return getattr(self.f, name)


@pytest.mark.parametrize("room", [0, 6 * 6 * 3, 6 * 6 * 13, 6 * 6 * 40])
def test_a_disk_that_fills_part_way_keeps_every_row_in_ram(room, monkeypatch):
    from worker.tracking import spool as sp

    make = sp.tempfile.TemporaryFile
    monkeypatch.setattr(sp.tempfile, "TemporaryFile", lambda **kw: _FullDisk(make, room))
    frames, blank, expect = _mixed(57, seed=4)
    spool = FrameSpool((6, 6), chunk_frames=4, ram_bytes=6 * 6 * 5)
    for f, b in zip(frames, blank):
        spool.append_blank() if b else spool.append(f)
    out = spool.finish()
    assert not isinstance(out, np.memmap)
    np.testing.assert_array_equal(out, expect)


def test_no_room_to_reserve_the_file_brings_the_rows_back_to_ram(monkeypatch, tmp_path):
    """A hole read through the map on a full tmpfs is a SIGBUS (a review): the file's space is
    reserved before mapping, and when it cannot be, the rows come back to RAM instead."""
    from worker.tracking import spool as sp

    def full(fd, offset, length):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sp.os, "posix_fallocate", full)
    frames, blank, expect = _mixed(40, seed=9)
    spool = FrameSpool((6, 6), chunk_frames=4, ram_bytes=6 * 6 * 3, tmp_dir=str(tmp_path))
    for f, b in zip(frames, blank):
        spool.append_blank() if b else spool.append(f)
    spool.append_blank(7)
    assert spool.spilled
    out = spool.finish()
    assert not isinstance(out, np.memmap)
    np.testing.assert_array_equal(out, np.concatenate([expect, np.zeros((7, 6, 6), np.uint8)]))
