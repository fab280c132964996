"""Interval bookkeeping, audio assembly and ROI stacking used by the join."""

from __future__ import annotations

import numpy as np

from worker.scoring.types import Kind
from worker.windowing.buffers import AudioBuffer, FrameSlot, IntervalSet, stack_rois
from worker.windowing.timeline import JobGrid, audio_need_samples


def test_interval_set_merges_and_counts():
    s = IntervalSet()
    assert s.add(10, 20) == 10
    assert s.add(30, 40) == 10
    assert s.add(15, 35) == 10  # only [20, 30) is new
    assert repr(s) == "IntervalSet([10,40))"
    assert s.add(40, 41) == 1 and repr(s) == "IntervalSet([10,41))"
    assert s.contains(10, 41) and not s.contains(9, 12)
    assert s.covered(0, 100) == 31
    s.remove_before(25)
    assert s.lo == 25 and s.hi == 41


def test_audio_buffer_out_of_order_duplicates_and_gaps():
    buf = AudioBuffer()
    assert buf.add(100, np.full(50, 0.5, np.float32), "b")
    assert buf.add(0, np.full(50, 0.25, np.float32), "a")
    assert not buf.add(0, np.full(50, 0.9, np.float32), "dup")  # nothing new: ignored
    out, came = buf.extract(0, 150)
    assert (~came).sum() == 50 and not came[50:100].any()
    assert (out[:50] == 0.25).all() and (out[50:100] == 0).all() and (out[100:] == 0.5).all()
    assert buf.infos(40, 60) == ["a"] and buf.infos(0, 150) == ["a", "b"]
    assert buf.drop_before(50) == ["a"]
    assert len(buf) == 1


def test_overlapping_chunk_keeps_the_first_samples():
    buf = AudioBuffer()
    buf.add(0, np.full(100, 0.1, np.float32))
    buf.add(50, np.full(100, 0.7, np.float32))
    out, came = buf.extract(0, 150)
    assert came.all()
    assert np.allclose(out[:100], 0.1) and np.allclose(out[100:], 0.7)


def test_stack_rois_mixed_sizes_and_formats():
    rgb = np.zeros((10, 10, 3), np.uint8)
    rgb[..., 0] = 255
    gray_small = np.full((5, 5), 200, np.uint8)
    slots = [
        FrameSlot(rgb, True, False, np.zeros((4, 2)), True),
        None,
        FrameSlot(gray_small, True, True, np.zeros((4, 2)), True),
        FrameSlot(None, False, False, None, True),  # no face
        FrameSlot(None, True, False, None, False),  # reference failed
    ]
    frames, present, face, occluded, landmarks = stack_rois(slots)
    assert frames.shape == (5, 10, 10) and frames.dtype == np.uint8
    assert frames[0, 0, 0] == 76  # 0.299 * 255 (gray because the job mixes formats)
    assert (frames[2] == 200).all()  # resized 5x5 -> 10x10
    assert list(present) == [True, False, True, True, False]
    assert list(face) == [True, False, True, False, False]
    assert list(occluded) == [False, False, True, False, False]
    assert landmarks is None  # not every frame has landmarks


def test_job_grid_and_audio_need():
    g = JobGrid.for_fps(16, 1000, 1000, 30.0)
    assert (g.block_frames, g.window_frames, g.hop_frames) == (16, 30, 30)
    assert g.first_start_at_or_after(Kind.BLOCK, 17) == 32
    assert g.first_start_at_or_after(Kind.WINDOW, 30) == 30
    assert g.first_start_covering_or_after(Kind.WINDOW, 59) == 30
    assert g.first_start_covering_or_after(Kind.BLOCK, 16) == 16
    g25 = JobGrid.for_fps(8, 1200, 1000, 25.0)
    assert (g25.window_frames, g25.hop_frames) == (30, 25)
    # frames [30, 46) at 30 fps = [1000, 1533.3) ms, +/- 300 ms, at 16 kHz
    assert audio_need_samples(30, 46, 30.0, 300.0, 16000) == (11200, 29334)


def test_overlapping_chunks_store_only_their_new_samples():
    """N long chunks each shifted by one sample hold the media span, not N chunks (a review: 600
    chunks of 8 s shifted by one sample held 307 MB for 8.04 s of media)."""
    buf = AudioBuffer()
    for k in range(200):
        assert buf.add(k, np.full(8000, k, np.float32), k)
    assert sum(c[1].nbytes for c in buf._chunks) == (8000 + 199) * 4
    out, came = buf.extract(0, 8199)
    assert came.all() and (out[:8000] == 0).all() and list(out[8000:8003]) == [1, 2, 3]


def test_the_samples_that_came_first_win_whatever_their_position():
    buf = AudioBuffer()
    buf.add(50, np.full(100, 0.7, np.float32), "first")
    buf.add(0, np.full(100, 0.1, np.float32), "second")  # only [0, 50) is new
    out, came = buf.extract(0, 150)
    assert came.all() and np.allclose(out[:50], 0.1) and np.allclose(out[50:], 0.7)
    assert buf.infos(60, 70) == ["first"] and buf.infos(0, 10) == ["second"]


def test_a_chunk_split_around_stored_audio_is_dropped_once_all_its_pieces_are():
    """Its new samples on both sides of a stored chunk are kept as two pieces; its info (the record,
    whose offset the caller then releases) comes back once neither piece is left."""
    buf = AudioBuffer()
    buf.add(40, np.full(20, 0.5, np.float32), "middle")
    assert buf.add(0, np.full(100, 0.2, np.float32), "around")  # new: [0, 40) and [60, 100)
    assert buf.drop_before(40) == []  # [60, 100) of "around" is still held
    assert buf.drop_before(60) == ["middle"]
    assert buf.drop_before(100) == ["around"] and len(buf) == 0


def test_a_chunk_across_the_cut_keeps_its_samples_and_their_coverage():
    """A chunk that straddles a drop stays whole, and the coverage says what extract gives, so a
    later chunk over the kept part adds nothing there."""
    buf = AudioBuffer()
    buf.add(0, np.full(100, 0.2, np.float32), "a")
    buf.add(100, np.full(100, 0.4, np.float32), "b")
    assert buf.drop_before(150) == ["a"]
    assert buf.coverage.lo == 100
    assert not buf.add(120, np.full(20, 0.9, np.float32), "c")
    out, came = buf.extract(100, 200)
    assert came.all() and np.allclose(out, 0.4)
