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
