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
