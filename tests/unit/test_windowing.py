"""The pure join + windowing: what is emitted, when, with which gaps, and which offsets may go.

Scale used throughout (easy to read): 25 fps (40 ms a frame), audio at 1000 Hz (1 sample = 1 ms),
blocks of 8 frames (320 ms), windows of 800 ms = 20 frames every 800 ms, search margin 100 ms.

    frame    0   1   2   3   4   5   6   7 | 8 ...
    ms       0  40  80 120 160 200 240 280 |320
    block 0  [-------- frames 0..7 --------)
    audio  [-100 ms (clipped to 0) ......................... 420 ms)   <- block 0 needs this
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from worker.config import WindowingConfig
from worker.scoring.types import Kind
from worker.windowing.events import Arrival, AudioEvent, DueReason, EndEvent, FrameEvent, Source, Stream
from worker.windowing.joiner import BadEvent, Joiner
from worker.windowing.offsets import OffsetTracker

FPS = 25.0
SR = 1000
MARGIN_MS = 100.0
ROI, AUD = "roi", "aud"


def cfg(**kw) -> WindowingConfig:
    base = {"block_frames": 8, "window_ms": 800, "window_hop_ms": 800, "allowed_lateness_ms": 200,
            "idle_timeout_ms": 5000, "max_sessions": 10, "max_buffered_ms": 4000}
    base.update(kw)
    return WindowingConfig(**base)


class Feed:
    """Builds events with increasing offsets per (topic, partition) and feeds a joiner."""

    def __init__(self, joiner: Joiner | None = None, context_frames: int = 0, **kw) -> None:
        self.tracker = OffsetTracker()
        self.joiner = joiner or Joiner(cfg(**kw), MARGIN_MS, self.tracker, sample_rate=SR,
                                       context_frames=context_frames)
        self.next_offset: dict[tuple[str, int], int] = {}
        self.jobs = []

    def src(self, topic: str, partition: int = 0) -> Source:
        off = self.next_offset.get((topic, partition), 0)
        self.next_offset[(topic, partition)] = off + 1
        return Source(topic, partition, off)

    def frame(self, sid: str, f: int, now: int = 0, partition: int = 0, ref_error=None, pixels=True):
        px = np.full((12, 12), f % 256, dtype=np.uint8) if pixels else None
        return FrameEvent(sid, f, FPS, px if ref_error is None else None, self.src(ROI, partition),
                          Arrival(now, now), face_present=pixels, ref_error=ref_error)

    def chunk(self, sid: str, start_ms: int, length_ms: int = 40, now: int = 0, partition: int = 0):
        samples = (np.arange(start_ms, start_ms + length_ms, dtype=np.float32) % 97) / 97.0
        return AudioEvent(sid, start_ms, SR, samples, self.src(AUD, partition), Arrival(now, now))

    def end(self, sid: str, stream: Stream, partition: int = 0):
        topic = ROI if stream is Stream.VIDEO else AUD
        return EndEvent(sid, stream, self.src(topic, partition), Arrival(0, 0))

    def push(self, ev, now: int = 0):
        self.tracker.open(ev.source)
        if isinstance(ev, FrameEvent):
            out = self.joiner.on_frame(ev, now)
        elif isinstance(ev, AudioEvent):
            out = self.joiner.on_audio(ev, now)
        else:
            out = self.joiner.on_end(ev, now)
        self.jobs += out
        return out


def spans(jobs):
    return [(j.kind.value[0], j.frame_start, j.frame_end) for j in jobs]


def media(feed: Feed, sid: str, seconds: float, partition: int = 0, audio_lead_ms: int = 0,
          jitter_ms: int = 0, seed: int = 0):
    """Frames and 40 ms audio chunks of ``seconds`` in real-time order (audio ``audio_lead_ms``
    ahead), each event delayed by up to ``jitter_ms`` (so out of order within that bound)."""
    rng = random.Random(seed)
    n = int(seconds * FPS)
    events = []
    for f in range(n):
        events.append((f * 40 + rng.uniform(0, jitter_ms), feed.frame(sid, f, partition=partition)))
    for start in range(0, n * 40, 40):
        events.append((start - audio_lead_ms + rng.uniform(0, jitter_ms),
                       feed.chunk(sid, start, partition=partition)))
    events.sort(key=lambda e: e[0])
    return [e for _, e in events]


def test_block_waits_for_audio_up_to_end_plus_margin():
    feed = Feed()
    for f in range(8):
        assert feed.push(feed.frame("s", f)) == []
    # audio [0, 400) is not enough: block 0 needs up to 320 + 100 = 420 ms
    for start in range(0, 400, 40):
        assert feed.push(feed.chunk("s", start)) == []
    out = feed.push(feed.chunk("s", 400))
    assert spans(out) == [("B", 0, 8)]
    job = out[0]
    assert job.reason is DueReason.COMPLETE
    assert job.request.frames.frames.shape == (8, 12, 12)
    assert job.request.frames.present.all()
    # audio from 0 (the session start clips the -100 ms margin) to 420 ms
    assert job.request.audio.start_sample == 0 and job.request.audio.samples.shape == (420,)
    assert job.frames_missing == 0 and job.audio_missing_ms == 0
    assert (job.start_ms, job.end_ms) == (0, 320)


def test_in_order_stream_emits_every_block_and_window_once():
    feed = Feed()
    for ev in media(feed, "s", 3.2):
        feed.push(ev)
    for ev in (feed.end("s", Stream.VIDEO), feed.end("s", Stream.AUDIO)):
        feed.push(ev)
    blocks = [s for s in spans(feed.jobs) if s[0] == "B"]
    windows = [s for s in spans(feed.jobs) if s[0] == "W"]
    assert blocks == [("B", b, b + 8) for b in range(0, 80, 8)]
    assert windows == [("W", w, w + 20) for w in range(0, 80, 20)]
    assert feed.joiner.open_sessions() == 0


def test_out_of_order_events_give_the_same_jobs_and_pixels():
    ref = Feed()
    for ev in media(ref, "s", 2.4):
        ref.push(ev)
    shuffled = Feed()
    # each event up to 180 ms late (allowed lateness: 200 ms): far out of order
    events = media(shuffled, "s", 2.4, jitter_ms=180, seed=7)
    assert [e.frame_index for e in events if isinstance(e, FrameEvent)] != list(range(60))
    for ev in events:
        shuffled.push(ev)
    key = lambda j: (j.kind.value, j.frame_start)
    a, b = sorted(ref.jobs, key=key), sorted(shuffled.jobs, key=key)
    assert spans(a) == spans(b) and len(a) > 5
    for x, y in zip(a, b):
        assert np.array_equal(x.request.frames.frames, y.request.frames.frames)
        assert np.array_equal(x.request.audio.samples, y.request.audio.samples)
        assert y.frames_missing == 0 and y.audio_missing_ms == 0


def test_missing_frame_is_labelled_after_the_lateness_bound():
    """
        frame    0 1 2 . 4 5 6 7 | 8 ...            frame 3 never comes
        block 0 is due when the video's event time >= 320 ms (its end) + 200 ms (lateness)
        = 520 ms; its audio (to 420 ms) is complete by then
    """
    feed = Feed()
    for ev in media(feed, "s", 1.0):
        if isinstance(ev, FrameEvent) and ev.frame_index == 3:
            continue
        out = feed.push(ev)
        if any(j.frame_start == 0 and j.kind is Kind.BLOCK for j in out):
            break
    job = next(j for j in feed.jobs if j.kind is Kind.BLOCK and j.frame_start == 0)
    assert 520 <= feed.joiner.sessions["s"].video_wm_ms < 520 + 41
    assert job.reason is DueReason.LATENESS
    assert job.frames_missing == 1
    assert list(job.request.frames.present) == [True, True, True, False, True, True, True, True]
    assert not job.request.frames.frames[3].any()


def test_missing_audio_is_zero_filled_and_counted():
    feed = Feed()
    for ev in media(feed, "s", 1.0):
        if isinstance(ev, AudioEvent) and ev.start_sample == 200:
            continue
        feed.push(ev)
    job = next(j for j in feed.jobs if j.kind is Kind.BLOCK and j.frame_start == 0)
    assert job.reason is DueReason.LATENESS
    assert job.audio_missing_ms == 40
    assert not job.request.audio.samples[200:240].any()
    assert job.request.audio.samples[160:200].any()
    # the scorer is told which samples are zero-fill (lost input), not silence
    assert not job.request.audio.present[200:240].any() and job.request.audio.present[160:200].all()


def test_unresolved_reference_and_no_face_frames():
    feed = Feed()
    for ev in media(feed, "s", 1.0):
        if isinstance(ev, FrameEvent) and ev.frame_index == 2:
            ev = feed.frame("s", 2, ref_error="file not found")
        if isinstance(ev, FrameEvent) and ev.frame_index == 5:
            ev = feed.frame("s", 5, pixels=False)
        feed.push(ev)
    job = next(j for j in feed.jobs if j.kind is Kind.BLOCK and j.frame_start == 0)
    assert job.reason is DueReason.COMPLETE  # every frame event arrived
    assert job.frames_missing == 1
    assert not job.request.frames.present[2] and job.request.frames.present[5]
    assert not job.request.frames.face_present[5] and not job.request.frames.face_present[2]
    assert feed.joiner.counters["ref_errors"] == 1


def test_end_markers_flush_complete_jobs_and_drop_the_partial_tail():
    feed = Feed()
    for ev in media(feed, "s", 1.0):  # 25 frames: blocks 0, 8, 16 fit; window 0 fits
        feed.push(ev)
    feed.push(feed.end("s", Stream.VIDEO))
    feed.push(feed.end("s", Stream.AUDIO))
    assert sorted(spans(feed.jobs)) == [("B", 0, 8), ("B", 8, 16), ("B", 16, 24), ("W", 0, 20)]
    assert feed.joiner.open_sessions() == 0
    assert feed.joiner.drain_closed() == ["s"]
    # events after the end are dropped, not a new session
    feed.push(feed.frame("s", 30))
    assert feed.joiner.open_sessions() == 0
    assert feed.joiner.counters["dropped_after_close"] == 1


def test_idle_timeout_flushes_what_arrived():
    feed = Feed()
    for f in range(10):
        feed.push(feed.frame("s", f), now=1000)
    feed.push(feed.chunk("s", 0, length_ms=200), now=1000)
    assert feed.jobs == []
    assert feed.joiner.tick(5999) == []
    out = feed.joiner.tick(6000)
    assert spans(out) == [("B", 0, 8)]
    assert out[0].reason is DueReason.ENDED and out[0].audio_missing_ms == 420 - 200
    assert feed.joiner.counters["sessions_closed_idle"] == 1


def test_input_still_lagging_keeps_a_session_open_and_its_stream_not_stalled():
    """A backpressure pause (or a slow partition) leaves events in Kafka: the session must not be
    idle-closed, nor its silent stream treated as stalled, until its partitions caught up."""
    feed = Feed(stream_stall_ms=2000)
    for f in range(40):
        feed.push(feed.frame("s", f), now=0)
    feed.joiner.set_lagging({(Stream.AUDIO, 0)})  # the audio is waiting in Kafka
    assert feed.joiner.tick(10_000) == []
    assert feed.joiner.open_sessions() == 1
    feed.joiner.set_lagging(set())  # caught up: nothing more is coming
    out = feed.joiner.tick(10_000)
    assert ("B", 0, 8) in spans(out) and feed.joiner.open_sessions() == 0


def test_max_sessions_evicts_the_least_recently_active():
    feed = Feed(max_sessions=2)
    feed.push(feed.frame("a", 0), now=1)
    feed.push(feed.frame("b", 0), now=2)
    feed.push(feed.frame("a", 1), now=3)  # b is now least recently active
    feed.push(feed.frame("c", 0), now=4)
    assert sorted(feed.joiner.sessions) == ["a", "c"]
    assert feed.joiner.counters["evictions_max_sessions"] == 1


def test_a_jump_ahead_makes_no_flood_of_empty_jobs():
    feed = Feed()
    for f in range(4):
        feed.push(feed.frame("s", f), now=0)
    # a frame 100 s later, 3 s of processing time on (no audio ever: the audio stream stalled):
    # the 4 old frames are scored and the 100 s of nothing in between costs one skip, not 300
    # empty jobs. Its producer stamped it 100 s after the others (a real pause: a jump of 100 s
    # of media made in no time is refused, test_session_jumps.py)
    out = feed.push(feed.frame("s", 2500, now=100_000), now=3000)
    assert spans(out) == [("B", 0, 8), ("W", 0, 20)]
    assert all(j.reason is DueReason.LATENESS and j.frames_missing == j.frame_end - 4 for j in out)
    state = feed.joiner.sessions["s"]
    assert list(state.frames) == [2500]
    assert feed.joiner.counters["jobs_skipped_empty"] <= 2


def test_a_dead_roi_stream_under_live_audio_still_gets_its_jobs():
    """Face-track dies after 1.6 s; the speech goes on in real time for 3.2 s more. The controller
    must keep hearing about that session (every job from then on has no frame at all: the scorer
    labels it LOW_QUALITY), not see its signals stop."""
    feed = Feed(stream_stall_ms=2000)
    for f in range(40):  # frames 0..39 (0..1.6 s), then nothing
        feed.push(feed.frame("s", f), now=f * 40)
    for start in range(0, 4800, 40):  # audio to 4.8 s, in real time
        feed.push(feed.chunk("s", start), now=start)
    feed.joiner.tick(6000)
    full = [(k, s, e) for k, s, e in spans(feed.jobs)]
    blocks = [s for k, s, _ in full if k == "B"]
    windows = [s for k, s, _ in full if k == "W"]
    # every block and window the audio covers, up to where the need for audio margin is met:
    # blocks of 8 frames to 4.8 s - 100 ms margin -> through frames 104..111; windows 0..100
    assert blocks == list(range(0, 112, 8))
    assert windows == [0, 20, 40, 60, 80]
    empty = [j for j in feed.jobs if j.frame_start >= 40]
    assert empty and all(j.frames_missing == j.frame_end - j.frame_start for j in empty)
    assert all(not j.request.frames.present.any() for j in empty)
    assert feed.joiner.counters["jobs_skipped_empty"] == 0
    # the audio's end marker: the tail jobs the audio reaches come out as well, not just those
    # whose margin it covers, and nothing past the audio's end
    feed.push(feed.end("s", Stream.AUDIO), now=6000)
    feed.joiner.tick(6100)
    assert [s for k, s, _ in spans(feed.jobs) if k == "B"] == list(range(0, 120, 8))
    assert [s for k, s, _ in spans(feed.jobs) if k == "W"] == [0, 20, 40, 60, 80, 100]


def test_a_session_that_only_ever_gets_audio_holds_a_bounded_ledger():
    """No frame, so no frame rate and no job: the buffer bound drops the oldest audio, and its
    records are released from the ledger too, not kept one per chunk for the session's life (a
    review: 1 MB per minute per session), and become committable."""
    feed = Feed()
    for start in range(0, 60_000, 40):
        feed.push(feed.chunk("s", start), now=start)
    assert len(feed.joiner.ledgers["s"].pending) <= 4000 // 40 + 2  # max_buffered_ms of 40 ms chunks
    assert feed.tracker.positions()[(AUD, 0)] >= (60_000 - 4000) // 40 - 2


def test_an_audio_chunk_that_is_also_the_end_marker_is_held_until_the_session_closes():
    """A record may carry the last samples and the end marker (CONTRACT: data or none): it is
    needed as the marker until the session closes, whatever its samples' jobs do (a review: the
    first release made it committable, and a worker taking the session over never saw the end)."""
    feed = Feed()
    for start in range(0, 1560, 40):
        feed.push(feed.chunk("s", start), now=start)
    last = feed.chunk("s", 1560)
    feed.tracker.open(last.source)
    feed.jobs += feed.joiner.on_events([last, EndEvent("s", Stream.AUDIO, last.source, last.arrival)], 1600)
    for f in range(80):  # the video goes on past the audio's end: its jobs pass the chunk's need
        feed.push(feed.frame("s", f), now=1600 + f * 40)
    for job in feed.jobs:
        feed.joiner.on_published(job)
    assert max(j.frame_end for j in feed.jobs) * 40 > 1600 + MARGIN_MS
    assert "s" in feed.joiner.sessions  # the video has not ended
    assert feed.tracker.positions()[(AUD, 0)] <= last.source.offset
    feed.jobs += feed.push(feed.end("s", Stream.VIDEO), now=1700)
    for job in feed.jobs:
        feed.joiner.on_published(job)
    assert "s" not in feed.joiner.sessions
    assert feed.tracker.positions()[(AUD, 0)] == last.source.offset + 1


def test_a_slow_sessions_jobs_wait_for_the_audio_their_offsets_reach():
    """The scorer's margin (100 ms here) is for 40 ms frames; at 12.5 fps its offsets and audio
    context span twice as many ms, so block 0 (0-640 ms) needs audio to 640 + 200 ms."""
    feed = Feed()
    for f in range(8):
        ev = feed.frame("s", f)
        assert feed.push(FrameEvent(ev.session_id, f, 12.5, ev.pixels, ev.source, ev.arrival)) == []
    for start in range(0, 800, 40):
        assert feed.push(feed.chunk("s", start)) == []
    out = feed.push(feed.chunk("s", 800))
    assert spans(out) == [("B", 0, 8)]
    assert out[0].request.audio.samples.shape == (840,) and out[0].audio_missing_ms == 0
    assert feed.joiner.sessions["s"].margin_ms == 2 * MARGIN_MS


def test_an_empty_job_is_skipped_to_the_next_job_with_audio_not_the_next_frame():
    """The ROI stream misses frames 24..47 (under its stall time), the audio misses block 24..32's
    span only: that block has nothing and is skipped, but blocks 32..40 and 40..48 have the
    speech under them and are published (no frames: LOW_QUALITY at the scorer), not jumped over
    to frame 48 (a review: the skip went to the next frame that came)."""
    feed = Feed(stream_stall_ms=2000)
    for step in range(100):  # real time, 40 ms a step
        now = step * 40
        if not 24 <= step < 48:
            feed.push(feed.frame("s", step), now=now)
        if not 24 <= step < 32:
            feed.push(feed.chunk("s", step * 40), now=now)
    blocks = [s for k, s, _ in spans(feed.jobs) if k == "B"]
    assert blocks[:8] == [0, 8, 16, 32, 40, 48, 56, 64]
    by_start = {j.frame_start: j for j in feed.jobs if j.kind is Kind.BLOCK}
    assert by_start[32].frames_missing == 8 and by_start[40].frames_missing == 8
    assert feed.joiner.counters["jobs_skipped_empty"] == 1


def test_a_job_the_audio_ends_in_gets_the_sound_only():
    """The audio's end marker at 1000 ms: block 24..32 (960-1280 ms) gets audio to 1000 ms, not
    zeros to its end heard as silence; block 32..40, wholly after it, keeps its frames' span."""
    feed = Feed()
    for f in range(40):
        feed.push(feed.frame("s", f))
    for start in range(0, 1000, 40):
        feed.push(feed.chunk("s", start))
    feed.push(feed.end("s", Stream.AUDIO))
    feed.push(feed.end("s", Stream.VIDEO))
    by = {(j.kind.value[0], j.frame_start): j for j in feed.jobs}
    assert by[("B", 24)].request.audio.end_sample == 1000
    assert by[("B", 32)].request.audio.end_sample == 1600
    assert by[("B", 16)].request.audio.end_sample == 1000  # 640-960 ms plus its margin, cut at the end
    # past the end there is no sound, and nothing is lost: that block is SILENCE, not LOW_QUALITY,
    # and counts no audio missing
    assert by[("B", 32)].request.audio.present.all() and by[("B", 32)].audio_missing_ms == 0


def test_one_topic_read_far_ahead_of_the_other_is_not_late():
    """After a restart the consumer may read seconds of ROI events before any audio:

        roi    |f0 f1 ... f79|                       (all first)
        audio                 |c0 c1 ... c79|        (then all audio)

    Each stream's own watermark decides what is late, so nothing is scored without its audio."""
    feed = Feed()
    events = media(feed, "s", 3.2)
    frames = [e for e in events if isinstance(e, FrameEvent)]
    chunks = [e for e in events if isinstance(e, AudioEvent)]
    for ev in frames + chunks:
        feed.push(ev, now=100)
    assert len(feed.jobs) >= 8
    assert all(j.reason is DueReason.COMPLETE and j.audio_missing_ms == 0 for j in feed.jobs)


def test_a_stalled_stream_is_treated_as_late_after_stream_stall_ms():
    feed = Feed(stream_stall_ms=2000)
    for f in range(40):  # 1.6 s of video in real time, no audio at all
        feed.push(feed.frame("s", f), now=f * 40)
    assert feed.jobs == []  # the audio might still come
    assert feed.joiner.tick(1999) == []
    out = feed.joiner.tick(2000)  # no audio for 2 s since the session began: stalled
    assert ("B", 0, 8) in spans(out)
    assert all(j.reason is DueReason.LATENESS and j.audio_missing_ms > 0 for j in out)


def test_buffer_bound_drops_the_oldest_audio():
    feed = Feed(max_buffered_ms=2000)
    for start in range(0, 5000, 40):  # audio with no video at all
        feed.push(feed.chunk("s", start))
    state = feed.joiner.sessions["s"]
    assert feed.joiner.counters["evictions_max_buffered"] >= (5000 - 2000) // 40 - 1
    assert state.audio.coverage.lo >= 5000 - 2000 - 40
    # the dropped chunks are not held for a commit
    assert feed.tracker.positions()[(AUD, 0)] >= (5000 - 2000) // 40 - 1


def test_late_frame_after_its_jobs_were_emitted_is_dropped():
    feed = Feed()
    for ev in media(feed, "s", 2.0):
        feed.push(ev)
    assert ("B", 0, 8) in spans(feed.jobs) and ("W", 0, 20) in spans(feed.jobs)
    before = len(feed.jobs)
    ev = feed.frame("s", 1)
    feed.push(ev)
    assert len(feed.jobs) == before
    assert feed.joiner.counters["dropped_late"] + feed.joiner.counters["dropped_duplicate"] == 1


def test_session_contradictions_are_bad_events():
    feed = Feed()
    feed.push(feed.frame("s", 0))
    bad = FrameEvent("s", 1, 30.0, np.zeros((4, 4), np.uint8), feed.src(ROI), Arrival(0, 0))
    with pytest.raises(BadEvent, match="fps changed"):
        feed.joiner.on_frame(bad, 0)
    wrong_rate = AudioEvent("s", 0, 16000, np.zeros(10, np.float32), feed.src(AUD), Arrival(0, 0))
    with pytest.raises(BadEvent, match="sample_rate"):
        feed.joiner.on_audio(wrong_rate, 0)


def test_a_corrupt_rate_in_the_first_frame_is_outvoted_by_the_frames_after_it():
    """A probe: frame 0 of a 25 fps session said 50 fps; every later frame was dead-lettered as
    'fps changed' and the session was read on a 50 fps grid (signals at half their times). Now
    the second frame at 25 is refused, the third replaces the unsettled rate, frame 0 is kept."""
    feed = Feed()
    first = feed.frame("s", 0)
    feed.push(FrameEvent("s", 0, 2 * FPS, first.pixels, first.source, first.arrival, face_present=True))
    with pytest.raises(BadEvent, match="fps changed"):
        feed.push(feed.frame("s", 1))  # one frame against one: not enough to tell
    for f in range(2, 60):
        feed.push(feed.frame("s", f))
    for start in range(0, 2400, 40):
        feed.push(feed.chunk("s", start))
    assert feed.joiner.sessions["s"].fps == FPS
    assert ("B", 0, 8) in spans(feed.jobs) and ("W", 0, 20) in spans(feed.jobs)
    assert all(j.request.frames.fps == FPS for j in feed.jobs)
    first_block = next(j for j in feed.jobs if (j.kind.value[0], j.frame_start) == ("B", 0))
    assert first_block.frames_missing == 1  # frame 1 only: frame 0 is kept, read at 25 fps


def test_a_record_delivered_twice_is_one_vote_for_its_rate():
    """A review: the corrupt frame's record delivered twice outvoted the first frame, the rate
    flipped to the corrupt one and good frames were dead-lettered until it flipped back."""
    feed = Feed()
    feed.push(feed.frame("s", 0))
    bad = feed.frame("s", 1)
    for _ in range(2):
        with pytest.raises(BadEvent, match="fps changed"):
            feed.push(FrameEvent("s", 1, 2 * FPS, bad.pixels, bad.source, bad.arrival, face_present=True))
    for f in range(2, 6):
        feed.push(feed.frame("s", f))
    state = feed.joiner.sessions["s"]
    assert state.fps == FPS and sorted(state.frames) == [0, 2, 3, 4, 5]


def test_frames_held_before_the_rate_changed_are_held_to_their_new_times():
    """A review: a takeover's first frame (1000) said 50 fps, the next ones 25; frame 1000 stayed
    held to its 50 fps time (20 s, not 40 s), so its offset was committable while the jobs that
    read it were still unpublished, and a crash then would have lost it for them."""
    feed = Feed()
    first = feed.frame("s", 1000)
    feed.push(FrameEvent("s", 1000, 2 * FPS, first.pixels, first.source, first.arrival, face_present=True))
    with pytest.raises(BadEvent, match="fps changed"):
        feed.push(feed.frame("s", 1001))
    for f in range(1002, 1060):
        feed.push(feed.frame("s", f))
    for start in range(39_000, 42_400, 40):
        feed.push(feed.chunk("s", start))
    assert feed.joiner.sessions["s"].fps == FPS
    assert any(j.frame_start == 1000 for j in feed.jobs)  # emitted, not published
    assert feed.tracker.positions()[(ROI, 0)] == first.source.offset  # frame 1000 still needed


def test_a_settled_rate_is_not_outvoted():
    feed = Feed()
    for f in range(3):  # FPS_SETTLE_FRAMES frames agree
        feed.push(feed.frame("s", f))
    for f in range(3, 9):
        ev = feed.frame("s", f)
        with pytest.raises(BadEvent, match="fps changed"):
            feed.push(FrameEvent("s", f, 2 * FPS, ev.pixels, ev.source, ev.arrival, face_present=True))
    assert feed.joiner.sessions["s"].fps == FPS


def test_restart_in_the_middle_starts_at_the_next_grid_point():
    # a worker that first sees frame 13 (its predecessor published what came before)
    feed = Feed()
    for f in range(13, 60):
        feed.push(feed.frame("s", f))
    for start in range(0, 2600, 40):
        feed.push(feed.chunk("s", start))
    assert spans(feed.jobs)[0] == ("B", 16, 24)
    assert ("W", 20, 40) in spans(feed.jobs) and ("W", 0, 20) not in spans(feed.jobs)


# --- offsets ---------------------------------------------------------------------------------

def test_offsets_wait_for_publication():
    feed = Feed()
    events = media(feed, "s", 1.0)
    for ev in events:
        feed.push(ev)
    positions = feed.tracker.positions()
    # nothing published yet: frame 0 and the first chunk are still needed
    assert positions[(ROI, 0)] == 0 and positions[(AUD, 0)] == 0
    by_span = {(j.kind, j.frame_start): j for j in feed.jobs}
    feed.joiner.on_published(by_span[(Kind.BLOCK, 0)])
    # window 0 (frames 0..19) is still in flight: frame 0 still needed
    assert feed.tracker.positions()[(ROI, 0)] == 0
    feed.joiner.on_published(by_span[(Kind.WINDOW, 0)])
    # next unpublished job starts at frame 8 (block 1): frames 0..7 are done
    assert feed.tracker.positions()[(ROI, 0)] == 8
    # block 1 needs audio from 8 * 40 - 100 = 220 ms: the 5 chunks ending by 200 ms are done
    assert feed.tracker.positions()[(AUD, 0)] == 5


def test_a_session_on_two_partition_numbers_is_counted():
    feed = Feed()
    feed.push(feed.frame("s", 0, partition=0))
    feed.push(feed.chunk("s", 0, partition=1))
    assert feed.joiner.counters["partition_mismatch"] == 1


def test_dropped_events_release_at_once():
    feed = Feed()
    feed.push(feed.frame("s", 0))
    feed.push(feed.frame("s", 0))  # duplicate
    assert feed.tracker.open_count() == 1


def _run_with_crash(seed: int, context_frames: int = 0, return_jobs: bool = False):
    """A stream of 3 sessions on 2 partitions, a crash after a random prefix with a random
    subset of jobs published, a fresh worker from the committed positions: no job missing."""
    rng = random.Random(seed)
    feed = Feed()
    streams = []
    for i, sid in enumerate(["a", "b", "c"]):
        evs = media(feed, sid, 2.0 + i * 0.4, partition=i % 2, audio_lead_ms=rng.choice([0, 80, -120]),
                    jitter_ms=rng.choice([0, 60, 150]), seed=seed * 10 + i)
        streams.append(evs + [feed.end(sid, Stream.VIDEO, i % 2), feed.end(sid, Stream.AUDIO, i % 2)])
    merged = []
    while any(streams):
        s = rng.choice([s for s in streams if s])
        merged.append(s.pop(0))
    expected = set()
    full = Feed(context_frames=context_frames)
    for ev in merged:
        full.push(ev)
    expected = {j.key for j in full.jobs}
    crash_at = rng.randrange(len(merged) // 4, 3 * len(merged) // 4)
    first = Feed(context_frames=context_frames)
    published = set()
    for ev in merged[:crash_at]:
        for job in first.push(ev):
            if rng.random() < 0.7:
                first.joiner.on_published(job)
                published.add(job.key)
    positions = first.tracker.positions()
    second = Feed(context_frames=context_frames)
    for ev in merged:
        tp = (ev.source.topic, ev.source.partition)
        if ev.source.offset >= positions.get(tp, 0):
            second.push(ev)
    replayed = {j.key for j in second.jobs}
    if return_jobs:
        return full.jobs, second.jobs, published
    return expected, published, replayed


@pytest.mark.parametrize("seed", range(12))
def test_a_worker_taking_a_session_over_gives_its_jobs_the_same_context(seed):
    """The frames before a job (the scorer's video context, ScoreRequest.context) stay uncommitted
    until the frontier passes them by the context span, so the worker that re-reads from the
    committed positions sends every job it scores the context the first worker's run had (before,
    its first job of a session had none and could read another offset: an audit)."""
    full_jobs, replayed_jobs, published = _run_with_crash(seed, context_frames=6, return_jobs=True)
    full = {j.key: j for j in full_jobs}
    assert sum(j.request.context is not None for j in full_jobs) >= len(full_jobs) - 6  # all but the first
    for job in replayed_jobs:
        # every job it emits gets its audio whole (audio is held by the context's span too)
        want_audio, got_audio = full[job.key].request.audio, job.request.audio
        assert got_audio.start_sample == want_audio.start_sample and np.array_equal(got_audio.samples, want_audio.samples)
        assert np.array_equal(got_audio.present, want_audio.present), job.key
        if job.key in published:
            # one the first worker published already, starting in the context span it kept (the
            # other kind's frontier was earlier): a duplicate whose own context may reach
            # before what was kept (README: Offsets)
            continue
        want, got = full[job.key].request.context, job.request.context
        assert (want is None) == (got is None), job.key
        if want is not None:
            assert (got.frame_start, got.n_frames) == (want.frame_start, want.n_frames) == (job.frame_start - 6, 6)
            assert np.array_equal(got.frames, want.frames) and np.array_equal(got.present, want.present), job.key


@pytest.mark.parametrize("seed", range(20))
def test_crash_and_replay_from_committed_positions_loses_nothing(seed):
    expected, published, replayed = _run_with_crash(seed)
    assert len(expected) > 20
    assert expected <= published | replayed, sorted(expected - published - replayed)
    assert (published | replayed) <= expected


# --- bounded state of long sessions and many sessions ------------------------------------------

def _publish_all(feed: Feed, jobs) -> None:
    for job in jobs:
        feed.joiner.on_published(job)


def test_a_session_that_never_ends_keeps_a_bounded_ledger():
    """Each published job used to leave a zero count behind in the ledger's in-flight table, which
    the frontier walked on every event: memory and per-event cost grew with the session's age (a
    review: 237,600 keys and 5 ms per event after 24 h)."""
    feed = Feed()
    for ev in media(feed, "s", 120.0):
        _publish_all(feed, feed.push(ev, now=0))
    assert len(feed.jobs) > 400
    ledger = feed.joiner.ledgers["s"]
    assert len(ledger.in_flight) <= 2  # only jobs emitted and not yet published


def test_the_ledger_frontier_is_the_earliest_job_in_flight():
    """The frontier follows emits and publishes in any order (the in-flight table keeps its
    smallest start at hand instead of scanning every start)."""
    from worker.windowing.joiner import SessionLedger

    rng = random.Random(3)
    ledger = SessionLedger()
    ledger.fps, ledger.open_frontier = FPS, 10_000
    in_flight: list[int] = []
    for step in range(3000):
        if in_flight and rng.random() < 0.5:
            start = in_flight.pop(rng.randrange(len(in_flight)))
            ledger.in_flight.remove(start)
        else:
            start = rng.randrange(step, step + 50)
            in_flight.append(start)
            ledger.in_flight.add(start)
        want = min(in_flight + [10_000])
        assert ledger.frontier_ms() == want * 40.0
        assert len(ledger.in_flight) == len(set(in_flight))


def _live(feed: Feed, sids, f: int, now: int) -> None:
    """Frame ``f`` and its 40 ms of audio for each of ``sids``, published at once."""
    for sid in sids:
        _publish_all(feed, feed.push(feed.frame(sid, f), now=now))
        _publish_all(feed, feed.push(feed.chunk(sid, f * 40), now=now))


def _streamed(feed: Feed, sid: str, n_frames: int) -> list:
    """Frames 0..n_frames-1 of ``sid`` and their audio in real time; the jobs, left unpublished."""
    jobs = []
    for f in range(n_frames):
        jobs += feed.push(feed.frame(sid, f), now=f * 40)
        jobs += feed.push(feed.chunk(sid, f * 40), now=f * 40)
    return jobs


def test_a_flood_of_one_record_sessions_does_not_evict_sessions_that_are_receiving():
    """A producer that puts a new session id on every record must not push out the sessions that
    are streaming: the new ids are evicted among themselves (a review: three live sessions lost
    21 of their 28 signals each, for good)."""
    ref = Feed(max_sessions=5)
    feed = Feed(max_sessions=5)
    for f in range(100):
        _live(ref, ["a", "b"], f, now=f * 40)
        _live(feed, ["a", "b"], f, now=f * 40)
        if f == 30:
            for k in range(50):
                _publish_all(feed, feed.push(feed.frame(f"flood-{k}", 0), now=f * 40))
    assert spans(feed.jobs) == spans(ref.jobs) and len(ref.jobs) > 20
    assert feed.joiner.counters["evictions_max_sessions"] == 50 - 3
    assert feed.joiner.counters["sessions_closed_evicted_new"] == 50 - 3
    assert feed.joiner.counters["sessions_closed_evicted"] == 0
    assert feed.joiner.counters["dropped_after_close"] == 0


def test_a_session_evicted_for_capacity_comes_back_with_its_next_records():
    """Evicted to make room (every session is established, so the least recently active goes
    once it has been silent for stream_stall_ms): its later records open it again where it was,
    losing only the media eviction dropped, not every signal after (it did not end)."""
    feed = Feed(max_sessions=2)
    silent = feed.joiner.silent_ms
    for f in range(40):
        _live(feed, ["a", "b"], f, now=f * 40)
    for f in range(40, 60):  # a pauses; c starts once a went silent and takes a's place
        _live(feed, ["b", "c"], f, now=f * 40 + silent)
    assert "a" not in feed.joiner.sessions
    assert feed.joiner.counters["sessions_closed_evicted"] == 1
    before = {j.key for j in feed.jobs if j.session_id == "a"}
    for f in range(60, 120):  # b and c stopped: a comes back once they went silent
        _live(feed, ["a"], f, now=f * 40 + 2 * silent)
    after = {(j.kind.value, j.frame_start) for j in feed.jobs if j.session_id == "a"} - {k[1:] for k in before}
    assert feed.joiner.counters["dropped_after_close"] == 0
    assert feed.joiner.counters["sessions_resumed"] == 1
    # every job of the media after its return (frames 60..119), none emitted twice
    assert {(Kind.BLOCK.value, b) for b in range(64, 112, 8)} <= after
    assert {(Kind.WINDOW.value, w) for w in (60, 80)} <= after
    keys = [j.key for j in feed.jobs]
    assert len(keys) == len(set(keys))


def test_a_session_evicted_for_capacity_does_not_lose_the_holds_of_its_jobs_in_flight():
    """Its ledger (jobs emitted before the eviction, not yet published) goes on with it when it
    comes back: publishing them later still releases their records, so the partition's commit
    position moves on (a fresh ledger in its place kept them open for good)."""
    feed = Feed(max_sessions=1)
    silent = feed.joiner.silent_ms
    unpublished = _streamed(feed, "a", 30)
    unpublished += feed.push(feed.frame("b", 0), now=1200 + silent)  # a went silent: evicted (flushed)
    assert feed.joiner.counters["sessions_closed_evicted"] == 1
    assert unpublished and all(j.session_id == "a" for j in unpublished)
    feed.push(feed.frame("a", 30), now=1240 + silent)  # a comes back; b (new) is evicted
    assert feed.joiner.counters["sessions_closed_evicted_new"] == 1
    _publish_all(feed, unpublished)
    for f in range(31, 200):
        _live(feed, ["a"], f, now=f * 40 + silent)
    assert feed.tracker.positions()[(ROI, 0)] > 150


def test_a_duplicate_frame_that_carries_the_end_marker_is_held_until_the_session_closes():
    """The record's frame is dropped (a duplicate), its end marker is not: the record must stay
    uncommitted until the session closed, or a worker taking over never sees the end."""
    feed = Feed()
    for f in range(24):
        _publish_all(feed, feed.push(feed.frame("s", f), now=f * 40))
    for start in range(0, 600, 40):  # block 0's audio; blocks 8 and 16 and window 0 wait for more
        _publish_all(feed, feed.push(feed.chunk("s", start), now=960))
    open_before = feed.tracker.open_count((ROI, 0))
    dup = feed.frame("s", 23)
    feed.tracker.open(dup.source)
    feed.joiner.on_events([dup, EndEvent("s", Stream.VIDEO, dup.source, dup.arrival)], 1000)
    assert feed.joiner.counters["dropped_duplicate"] == 1
    assert "s" in feed.joiner.sessions  # jobs before the video's end still wait for audio
    assert feed.tracker.open_count((ROI, 0)) == open_before + 1
    for start in range(600, 1200, 40):
        _publish_all(feed, feed.push(feed.chunk("s", start), now=1000 + start))
    assert "s" not in feed.joiner.sessions
    assert feed.tracker.positions()[(ROI, 0)] == dup.source.offset + 1


def test_overlapping_audio_chunks_stay_within_the_buffer_bound():
    """Chunks of 3 s each shifted by 1 ms: every one adds a sample, and each used to be stored
    whole (a review: 307 MB held for 8 s of media)."""
    feed = Feed()
    for k in range(500):
        feed.push(feed.chunk("s", k, length_ms=3000), now=k)
    held = sum(c[1].nbytes for c in feed.joiner.sessions["s"].audio._chunks)
    assert held <= (3000 + 500) * 4


# --- over max_sessions: no eviction cycle ---------------------------------------------------------


def _jobs_of(feed: Feed, sid: str) -> list:
    return [j for j in feed.jobs if j.session_id == sid]


def test_sessions_streaming_together_beyond_max_sessions_do_not_evict_each_other():
    """Four sessions streaming together at max_sessions 3: the first three are served whole and the
    fourth's records are dropped (counted), not evicted in turn (a review: a resumed session was
    new again and first in line, so every session was evicted on about every record: 1,112
    evictions and 0 signals for all four; 3 were served before 4375f3f)."""
    sids = ["a", "b", "c", "d"]
    ref = Feed(max_sessions=10)
    feed = Feed(max_sessions=3)
    for f in range(100):
        _live(ref, sids, f, now=f * 40)
        _live(feed, sids, f, now=f * 40)
    assert feed.joiner.counters["evictions_max_sessions"] == 0
    for sid in "abc":
        assert spans(_jobs_of(feed, sid)) == spans(_jobs_of(ref, sid)) and len(_jobs_of(ref, sid)) > 10
        assert all(j.frames_missing == 0 for j in _jobs_of(feed, sid))
    assert _jobs_of(feed, "d") == []
    assert feed.joiner.counters["dropped_overloaded"] == 2 * 100
    assert sorted(feed.joiner.sessions) == ["a", "b", "c"]


def test_sessions_that_start_in_the_same_instant_settle_after_one_eviction_each():
    """All four new when the fourth comes (a frame each, then the audio): it takes the place of a
    new one, which comes back established in the place of another new one, and so on once round;
    then three are served (losing the frame the eviction dropped, labelled missing) and the last
    one's records are dropped."""
    sids = ["a", "b", "c", "d"]
    ref = Feed(max_sessions=10)
    feed = Feed(max_sessions=3)
    for fd in (ref, feed):
        for f in range(100):
            for sid in sids:
                _publish_all(fd, fd.push(fd.frame(sid, f), now=f * 40))
            for sid in sids:
                _publish_all(fd, fd.push(fd.chunk(sid, f * 40), now=f * 40))
    assert feed.joiner.counters["evictions_max_sessions"] == 4
    assert feed.joiner.counters["sessions_resumed"] == 3  # the fourth's next record found no place
    served = [sid for sid in sids if _jobs_of(feed, sid)]
    assert len(served) == 3
    for sid in served:
        jobs = _jobs_of(feed, sid)
        assert spans(jobs) == spans(_jobs_of(ref, sid))  # none lost: the first ones come labelled
        assert sum(j.frames_missing for j in jobs) <= 2  # frame 0, in its block and its window
    assert feed.joiner.counters["dropped_overloaded"] == 2 * 100 - 1


def test_a_flood_of_new_ids_cannot_push_out_sessions_when_the_table_is_full_of_streaming_ones():
    """Every place is taken by a session that streams: a flood of new ids is dropped (counted), not
    let in one by one in the place of a live session, which came back in the place of the flood
    id, and the next id evicted the next live session (each eviction flushes its jobs with what
    had come)."""
    sids = ["a", "b", "c"]
    ref = Feed(max_sessions=3)
    feed = Feed(max_sessions=3)
    for f in range(100):
        _live(ref, sids, f, now=f * 40)
        _live(feed, sids, f, now=f * 40)
        if 30 <= f < 60:
            for k in range(5):
                _publish_all(feed, feed.push(feed.frame(f"flood-{f}-{k}", 0), now=f * 40))
    assert spans(feed.jobs) == spans(ref.jobs)
    assert all(j.frames_missing == 0 for j in feed.jobs)
    assert feed.joiner.counters["evictions_max_sessions"] == 0
    assert feed.joiner.counters["dropped_overloaded"] == 30 * 5


def test_sessions_waiting_for_a_place_and_a_flood_settle_when_a_place_frees():
    """Two sessions waiting (evicted, their records dropped) and a flood of new ids when a live
    session ends: a flood id takes the free place, a waiting session comes back in its place
    (established at once), and from then on no one is evicted: no cycle between the two waiting
    sessions, nor with the flood."""
    feed = Feed(max_sessions=3)
    sids = ["a", "b", "c", "d", "e"]
    for f in range(120):
        live = [sid for sid in sids if not (sid == "c" and f >= 40)]
        for sid in live:  # a frame each, then the audio: all new at the start
            _publish_all(feed, feed.push(feed.frame(sid, f), now=f * 40))
        for sid in live:
            _publish_all(feed, feed.push(feed.chunk(sid, f * 40), now=f * 40))
        if f == 39 and "c" in feed.joiner.sessions:
            _publish_all(feed, feed.push(feed.end("c", Stream.VIDEO), now=f * 40))
            _publish_all(feed, feed.push(feed.end("c", Stream.AUDIO), now=f * 40))
        if f >= 40:
            for k in range(3):
                _publish_all(feed, feed.push(feed.frame(f"flood-{f}-{k}", 0), now=f * 40))
    evictions = feed.joiner.counters["evictions_max_sessions"]
    assert evictions <= 5 + 2  # the start's round, the ended session's place: not one per record
    served_after = [sid for sid in "de" if any(j.frame_start >= 48 for j in _jobs_of(feed, sid))]
    assert len(served_after) == 1 and served_after[0] in feed.joiner.sessions
    late = [j for j in _jobs_of(feed, served_after[0]) if j.frame_start >= 48]
    assert late and all(j.frames_missing == 0 for j in late)
    assert len(feed.joiner.sessions) == 3
    assert not any(sid.startswith("flood") for sid in feed.joiner.sessions)


def test_an_established_session_gives_its_place_only_once_silent():
    """A new id finds every place taken by an established session: it is dropped while they
    stream, takes the place of the least recently active once that one has been silent for
    stream_stall_ms, and never of one whose input is still waiting in Kafka (consumer lag)."""
    feed = Feed(max_sessions=2)
    silent = feed.joiner.silent_ms
    _live(feed, ["a", "b"], 0, now=0)
    _live(feed, ["b"], 1, now=silent - 10)
    feed.push(feed.frame("c", 0), now=silent - 1)
    assert feed.joiner.counters["dropped_overloaded"] == 1 and "a" in feed.joiner.sessions
    feed.joiner.set_lagging({(Stream.AUDIO, 0)})
    feed.push(feed.frame("c", 1), now=silent + 100)
    assert feed.joiner.counters["dropped_overloaded"] == 2 and "a" in feed.joiner.sessions
    feed.joiner.set_lagging(set())
    feed.push(feed.frame("c", 2), now=silent + 100)
    assert sorted(feed.joiner.sessions) == ["b", "c"]
    assert feed.joiner.counters["sessions_closed_evicted"] == 1


def test_a_record_dropped_as_overloaded_is_released_and_its_end_marker_with_it():
    """At-least-once: a dropped record is released as the other drops are (else the partition's
    commit position stops there for good), also a frame carrying its stream's end marker, and
    also for a waiting session whose flushed jobs still hold its earlier records."""
    feed = Feed(max_sessions=1)
    silent = feed.joiner.silent_ms
    held = _streamed(feed, "a", 12)
    # a went silent: b (on another partition) takes its place, and is established
    feed.push(feed.frame("b", 0, partition=1), now=440 + silent)
    feed.push(feed.chunk("b", 0, partition=1), now=440 + silent)
    assert "a" not in feed.joiner.sessions and held  # a's flushed jobs are in flight
    assert feed.tracker.open_count((ROI, 0)) > 0  # ... holding a's records
    open_before = feed.tracker.open_count((ROI, 0))
    rec = feed.frame("a", 12)
    feed.tracker.open(rec.source)
    jobs = feed.joiner.on_events([rec, EndEvent("a", Stream.VIDEO, rec.source, rec.arrival)], 500 + silent)
    assert jobs == [] and feed.joiner.counters["dropped_overloaded"] == 2
    assert feed.tracker.open_count((ROI, 0)) == open_before  # released at once, marker and all
    _publish_all(feed, held)  # a's jobs published: its earlier records go too
    assert feed.tracker.open_count((ROI, 0)) == 0
    assert feed.tracker.positions()[(ROI, 0)] == rec.source.offset + 1


def test_eviction_notices_are_kept_to_one_per_interval():
    """A flood of new ids evicts one of them per record: one log line, not one per record; the
    counters count them all."""
    from worker.windowing.joiner import NOTICE_INTERVAL_MS

    feed = Feed(max_sessions=5)
    for k in range(50):
        feed.push(feed.frame(f"flood-{k}", 0), now=1000 + k)
    notices = feed.joiner.drain_notices()
    assert notices == [("evicted_max_sessions", "flood-0")]
    assert feed.joiner.counters["evictions_max_sessions"] == 45
    feed.push(feed.frame("late-flood", 0), now=1005 + NOTICE_INTERVAL_MS)  # the first was at 1005
    assert feed.joiner.drain_notices() == [("evicted_max_sessions", "flood-45")]
