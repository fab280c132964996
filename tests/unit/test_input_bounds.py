"""What ingest and the session refuse so that no accepted record can break a signal or a job:
positions past the session timeline (a signal that cannot be encoded), ROIs smaller than the
scorer reads (a job that cannot be scored), frame rates too slow for the buffer bound (a session
that never gets a BLOCK)."""

from __future__ import annotations

import numpy as np
import pytest

from schemas import AvroCodec
from worker.config import WorkerConfig
from worker.ingest import MAX_TIMELINE_MS, BadRecord, audio_events, roi_events
from worker.publish import signal_record
from worker.refs import RefError, RoiResolver
from worker.refs.pixels import expected_shape
from worker.scoring.batcher import failed_score
from worker.scoring.types import AudioSpan, FrameSpan, Kind, ScoreRequest, ScoringInputError
from worker.scoring.validate import MIN_ROI_SIDE_PX, validate_request
from worker.windowing.events import Arrival, FrameEvent, Source
from worker.windowing.joiner import BadEvent, Joiner
from worker.windowing.offsets import OffsetTracker

ARR = Arrival(1000, 990)
SR = 16_000


def _roi(frame_index: int, fps: float = 25.0, size: int = 16, **kw) -> dict:
    rec = {"session_id": "s", "frame_index": frame_index, "pts_ms": round(1000 * frame_index / fps), "fps": fps,
           "roi": {"width": size, "height": size, "format": "GRAY8", "data": bytes(size * size)},
           "end_of_session": False}
    rec.update(kw)
    return rec


def _chunk(start_sample: int, n: int = 640, **kw) -> dict:
    rec = {"session_id": "s", "seq": 0, "start_sample": start_sample, "sample_rate": SR, "channels": 1,
           "encoding": "PCM_S16LE", "data": np.full(n, 3000, "<i2").tobytes(), "end_of_session": False}
    rec.update(kw)
    return rec


def _src(topic: str, offset: int) -> Source:
    return Source(topic, 0, offset)


# --- positions past the session timeline ---------------------------------------------------------


@pytest.mark.parametrize("record, needle", [
    (_roi(16 * 10**17), "frame_index"),  # a valid Avro long; its signal's start_ms was not
    (_roi(2**63 - 1, fps=240.0), "frame_index"),
    (_roi(-(-MAX_TIMELINE_MS * 25 // 1000), fps=25.0), "frame_index"),  # ends just past the end
])
def test_a_frame_past_the_session_timeline_is_a_bad_record(record, needle):
    with pytest.raises(BadRecord, match=needle) as info:
        roi_events(record, _src("roi", 0), ARR, RoiResolver().try_resolve)
    assert info.value.reason.startswith("invalid: ")


@pytest.mark.parametrize("pts_ms", [1_733_561_205_000, 2**62, -(2**62)])
def test_a_frame_whose_pts_ms_is_on_another_clock_is_accepted(pts_ms):
    """pts_ms is not read (frames are placed by frame_index at fps) and the contract does not say
    which clock it is on: a producer that stamps Unix-epoch milliseconds (about 1.7e12, past the
    2**40 ms session timeline) must not have every frame refused. Avro already bounds it."""
    (ev,) = roi_events(_roi(3, pts_ms=pts_ms), _src("roi", 0), ARR, RoiResolver().try_resolve)
    assert ev.frame_index == 3 and ev.pixels is not None


def test_the_last_frame_on_the_timeline_is_accepted():
    last = MAX_TIMELINE_MS * 25 // 1000 - 1
    (ev,) = roi_events(_roi(last, fps=25.0), _src("roi", 0), ARR, RoiResolver().try_resolve)
    assert ev.frame_index == last


@pytest.mark.parametrize("record", [
    _chunk(2**62),
    _chunk(MAX_TIMELINE_MS * SR // 1000 - 100, n=640),  # starts inside, ends past the end
    _chunk(MAX_TIMELINE_MS * 48, sample_rate=48_000, n=480),  # at its own rate, before resampling
])
def test_audio_past_the_session_timeline_is_a_bad_record(record):
    with pytest.raises(BadRecord, match="start_sample") as info:
        audio_events(record, _src("audio", 0), ARR, SR)
    assert info.value.reason.startswith("invalid: ")


@pytest.mark.parametrize("fps", [25.0, 240.0])
def test_the_last_accepted_positions_make_signals_that_encode(fps):
    """A session at the very end of the timeline: every signal it makes fits the schema."""
    last_frame = int(MAX_TIMELINE_MS * fps / 1000) - 1
    first = (last_frame - 300) // 16 * 16
    joiner = Joiner(WorkerConfig().windowing, 440.0, OffsetTracker(), sample_rate=SR)
    resolve = RoiResolver().try_resolve
    jobs = []
    for k, f in enumerate(range(first, last_frame + 1)):
        jobs += joiner.on_events(roi_events(_roi(f, fps=fps), _src("roi", k), ARR, resolve), 1000)
    last_sample = MAX_TIMELINE_MS * SR // 1000
    start = round(first * SR / fps) - 16_000
    for k, s in enumerate(range(start, last_sample - 640 + 1, 640)):
        jobs += joiner.on_events(audio_events(_chunk(s), _src("audio", k), ARR, SR), 1000)
    jobs += joiner.tick(10**9)
    assert jobs and max(j.frame_end for j in jobs) > last_frame - 16
    codec = AvroCodec("LipSyncSignal")
    for job in jobs:
        rec = signal_record(job, failed_score(job.request, "m@1"), emitted_at_ms=2000)
        assert codec.decode(codec.encode(rec))["start_ms"] == job.start_ms <= MAX_TIMELINE_MS


# --- ROIs smaller than the scorer reads ----------------------------------------------------------


def test_an_inline_roi_below_the_scorers_minimum_is_a_bad_record():
    tiny = MIN_ROI_SIDE_PX - 1
    with pytest.raises(BadRecord, match=f"ROI {tiny}x{tiny}") as info:
        roi_events(_roi(0, size=tiny), _src("roi", 0), ARR, RoiResolver().try_resolve)
    assert info.value.reason.startswith("invalid: ")
    (ev,) = roi_events(_roi(0, size=MIN_ROI_SIDE_PX), _src("roi", 0), ARR, RoiResolver().try_resolve)
    assert ev.pixels.shape == (MIN_ROI_SIDE_PX, MIN_ROI_SIDE_PX)


def test_a_reference_to_a_tiny_roi_is_a_bad_reference_and_its_job_still_scores(tmp_path):
    """4x4 frame 0 used to shrink the whole job to 4x4 (a job takes its first frame's shape) and
    the scorer refused BLOCK 0 and WINDOW 0. Now frame 0 is a missing frame, like any unreadable
    reference, and the job is 16x16 and valid."""
    (tmp_path / "tiny.raw").write_bytes(bytes(16))
    failures = []
    resolver = RoiResolver(allowed_file_roots=[tmp_path], on_failure=failures.append)
    ref = {"uri": f"file://{tmp_path}/tiny.raw", "shape": [4, 4], "format": "GRAY8"}
    joiner = Joiner(WorkerConfig().windowing, 440.0, OffsetTracker(), sample_rate=SR)
    (ev,) = roi_events(_roi(0, roi=ref), _src("roi", 0), ARR, resolver.try_resolve)
    assert isinstance(ev, FrameEvent) and ev.pixels is None and ev.ref_error == "bad_ref"
    assert [f.reason for f in failures] == ["bad_ref"]  # counted in sync_scorer_ref_errors_total
    jobs = joiner.on_events([ev], 1000)
    for f in range(1, 50):
        jobs += joiner.on_events(roi_events(_roi(f), _src("roi", f), ARR, resolver.try_resolve), 1000)
    rng = np.random.default_rng(0)
    for k, s in enumerate(range(0, 3 * SR, 640)):
        pcm = (rng.standard_normal(640) * 3000).astype("<i2").tobytes()
        jobs += joiner.on_events(audio_events(_chunk(s, data=pcm), _src("audio", k), ARR, SR), 1000)
    first = [j for j in jobs if j.frame_start == 0]
    assert {j.kind.value for j in first} == {"BLOCK", "WINDOW"}
    for job in first:
        assert job.request.frames.frames.shape[1:] == (16, 16) and job.frames_missing == 1
        validate_request(job.request, SR)  # the scorer takes it


def test_the_scorer_and_the_resolver_share_the_minimum():
    with pytest.raises(RefError):
        expected_shape([MIN_ROI_SIDE_PX - 1, 32], "GRAY8")
    assert expected_shape([MIN_ROI_SIDE_PX, MIN_ROI_SIDE_PX], "GRAY8") == (MIN_ROI_SIDE_PX, MIN_ROI_SIDE_PX)
    with pytest.raises(ScoringInputError, match=f"min {MIN_ROI_SIDE_PX}x{MIN_ROI_SIDE_PX}"):
        frames = np.zeros((16, MIN_ROI_SIDE_PX - 1, 32), np.uint8)
        validate_request(ScoreRequest(Kind.BLOCK, FrameSpan(frames, 25.0, 0),
                                      AudioSpan(np.zeros(16_000, np.float32), SR, 0)), SR)


# --- frame rates too slow for the buffer bound ---------------------------------------------------


def _low_rate_session(fps: float, seconds: int = 60, max_buffered_ms: int | None = None):
    """A complete session at ``fps`` fed in media order; (jobs, the dead-lettered reasons)."""
    cfg = WorkerConfig().windowing
    if max_buffered_ms is not None:
        cfg = cfg.model_copy(update={"max_buffered_ms": max_buffered_ms})
    joiner = Joiner(cfg, 440.0, OffsetTracker(), sample_rate=SR)  # the default model's margin
    resolve = RoiResolver().try_resolve
    items = [(1000 * f / fps, "roi", f) for f in range(int(seconds * fps))]
    items += [(1000 * (s + 640) / SR, "audio", s) for s in range(0, seconds * SR, 640)]
    last = len(items) - 1
    jobs, refused = [], []
    for k, (due_ms, stream, pos) in enumerate(sorted(items)):
        now = 1000 + int(due_ms)
        end = k >= last - 1  # the last frame and chunk carry the end markers
        try:
            if stream == "roi":
                evs = roi_events(_roi(pos, fps=fps, end_of_session=end), _src("roi", k), Arrival(now), resolve)
            else:
                evs = audio_events(_chunk(pos, end_of_session=end), _src("audio", k), Arrival(now), SR)
            jobs += joiner.on_events(evs, now)
        except BadEvent as exc:
            refused.append(str(exc))
    return jobs + joiner.tick(10**9), refused


def test_a_rate_too_slow_for_the_buffer_bound_is_refused_with_the_reason():
    """At 2 fps a 16-frame BLOCK and its stretched audio margins (8 s + 2 x 5.5 s) cannot fit in
    max_buffered_ms (10 s): the bound dropped its data first and the session never got a BLOCK,
    silently. Now every frame is dead-lettered, saying why."""
    jobs, refused = _low_rate_session(2.0)
    assert jobs == [] and len(refused) == 120
    assert "fps 2 is too low" in refused[0] and "max_buffered_ms (10000)" in refused[0]


@pytest.mark.parametrize("fps", [5.0, 12.5, 25.0])
def test_the_rates_the_bound_holds_get_every_block(fps):
    jobs, refused = _low_rate_session(fps, seconds=30)
    blocks = [j for j in jobs if j.kind.value == "BLOCK"]
    assert refused == [] and len(blocks) == int(30 * fps) // 16
    assert all(j.audio_missing_ms == 0 and j.frames_missing == 0 for j in blocks)


def test_a_larger_bound_admits_a_slower_rate():
    jobs, refused = _low_rate_session(2.0, seconds=40, max_buffered_ms=20_000)
    blocks = [j for j in jobs if j.kind.value == "BLOCK"]
    assert refused == [] and len(blocks) == 5 and all(j.audio_missing_ms == 0 for j in blocks)


def test_full_rate_sessions_are_never_refused_for_their_rate():
    """At 25 fps and up the config's bounds are what the jobs are sized by: a small bound is the
    config's concern, not a reason to refuse every session."""
    jobs, refused = _low_rate_session(30.0, seconds=4, max_buffered_ms=2000)
    assert refused == [] and jobs
