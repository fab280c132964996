"""A record far ahead of its own stream: a corrupt position is refused (dead-lettered) and the
session keeps its signals; a real gap (a pause, a backlog of one, a skip confirmed by the records
after it, a session or a worker starting mid-stream, the other topic ahead) is not.

Scale as in test_windowing.py: 25 fps (40 ms a frame), audio at 1000 Hz (1 sample = 1 ms), blocks
of 8 frames, windows of 800 ms, search margin 100 ms, max_buffered_ms 4000.
"""

from __future__ import annotations

import numpy as np
import pytest

from worker.config import WindowingConfig
from worker.windowing.events import Arrival, AudioEvent, EndEvent, FrameEvent, Source, Stream
from worker.windowing.joiner import BadEvent, Joiner
from worker.windowing.offsets import OffsetTracker

FPS, SR, MARGIN_MS = 25.0, 1000, 100.0
BOUND_MS = 4000
T0 = 1_700_000_000_000  # the producers' wall clock at media time 0


class Feed:
    def __init__(self) -> None:
        cfg = WindowingConfig(block_frames=8, window_ms=800, window_hop_ms=800, allowed_lateness_ms=200,
                              idle_timeout_ms=60_000, max_sessions=10, max_buffered_ms=BOUND_MS)
        self.joiner = Joiner(cfg, MARGIN_MS, OffsetTracker(), sample_rate=SR)
        self.offsets = {"roi": 0, "aud": 0}
        self.jobs: list = []
        self.refused: list[str] = []

    def _src(self, topic: str) -> Source:
        self.offsets[topic] += 1
        return Source(topic, 0, self.offsets[topic])

    def frame(self, f: int, produced_ms: int | None, now_ms: int, sid: str = "s") -> None:
        ev = FrameEvent(sid, f, FPS, np.full((12, 12), f % 256, np.uint8), self._src("roi"),
                        Arrival(now_ms, produced_ms))
        self._push(ev, now_ms)

    def chunk(self, start: int, produced_ms: int | None, now_ms: int, length: int = 40, sid: str = "s") -> None:
        samples = (np.arange(start, start + length) % 97 / 97.0).astype(np.float32)
        self._push(AudioEvent(sid, start, SR, samples, self._src("aud"), Arrival(now_ms, produced_ms)), now_ms)

    def end(self, now_ms: int, sid: str = "s") -> None:
        for stream, topic in ((Stream.VIDEO, "roi"), (Stream.AUDIO, "aud")):
            self._push(EndEvent(sid, stream, self._src(topic), Arrival(now_ms)), now_ms)

    def _push(self, ev, now_ms: int) -> None:
        self.joiner.tracker.open(ev.source)
        try:
            self.jobs += self.joiner.on_events([ev], now_ms)
        except BadEvent as exc:
            self.refused.append(str(exc))
            self.joiner.tracker.done(ev.source)  # dead-lettered

    def play(self, from_ms: int, to_ms: int, clock=lambda t: T0 + t, now=lambda t: T0 + t) -> None:
        """Frames and 40 ms chunks of media [from_ms, to_ms), each sent when its media is over:
        produced at clock(due), read at now(due)."""
        items = [((f + 1) * 40, 0, f) for f in range(from_ms // 40, to_ms // 40)]
        items += [(s + 40, 1, s) for s in range(from_ms, to_ms, 40)]
        for due, kind, pos in sorted(items):
            if kind == 0:
                self.frame(pos, clock(due), now(due))
            else:
                self.chunk(pos, clock(due), now(due))

    def spans(self) -> list[tuple[str, int, int]]:
        return sorted((j.kind.value, j.frame_start, j.frame_end) for j in self.jobs)


def _baseline(to_ms: int) -> Feed:
    feed = Feed()
    feed.play(0, to_ms)
    feed.end(T0 + to_ms + 100)
    return feed


@pytest.mark.parametrize("bad", ["frame", "chunk"])
def test_one_corrupt_position_far_ahead_is_refused_and_the_session_keeps_its_signals(bad):
    """One record 1e9 frames / samples ahead, among a live session's records, used to move the
    stream's watermark there: the buffer bound dropped everything and every later record came
    late (4 of 28 signals left). It is refused, and the session is scored as if it never came."""
    feed = Feed()
    feed.play(0, 2000)
    if bad == "frame":
        feed.frame(10**9, T0 + 2000, T0 + 2000)
    else:
        feed.chunk(10**9, T0 + 2000, T0 + 2000)
    feed.play(2000, 6000)
    feed.end(T0 + 6100)
    assert len(feed.refused) == 1
    assert ("frame_index 1000000000" if bad == "frame" else "start_sample 1000000000") in feed.refused[0]
    assert "ahead of the session's" in feed.refused[0] and "max_buffered_ms (4000)" in feed.refused[0]
    assert feed.spans() == _baseline(6000).spans()
    assert all(j.frames_missing == 0 for j in feed.jobs)
    counters = feed.joiner.counters
    assert counters["evictions_max_buffered"] == 0 and counters["dropped_late"] == 0


def test_a_corrupt_position_with_a_future_stamp_is_refused_too():
    """A producer clock ahead of the worker's vouches for nothing."""
    feed = Feed()
    feed.play(0, 2000)
    feed.frame(10**9, T0 + 10**12, T0 + 2000)
    assert len(feed.refused) == 1


def test_a_gap_within_the_bound_needs_no_evidence():
    """Frames face-track never sent, or audio a producer dropped, for up to max_buffered_ms."""
    feed = Feed()
    feed.play(0, 2000)
    feed.play(5800, 8000, clock=lambda t: T0)  # 3.8 s on, stamped as if no time passed
    assert feed.refused == []


@pytest.mark.parametrize("read", ["live", "backlog"])
def test_a_pause_longer_than_the_bound_is_a_real_gap(read):
    """Both streams pause 30 s and resume: live, or read later from a backlog in a few ms (the
    records' own stamps show the pause; the worker's clock does not)."""
    feed = Feed()
    now = (lambda t: T0 + t) if read == "live" else (lambda t: T0 + 60_000 + t // 100)
    feed.play(0, 2000, now=now)
    feed.play(32_000, 36_000, now=now)
    feed.end(now(36_100))
    assert feed.refused == []
    resumed = [j for j in feed.jobs if j.frame_start >= 800]
    assert [j.frame_start for j in resumed if j.kind.value == "BLOCK"] == list(range(800, 896, 8))
    # whole, but for the audio margin that reaches back into the pause
    assert all(j.frames_missing == 0 and j.audio_missing_ms <= MARGIN_MS for j in resumed)


def test_a_skip_ahead_made_faster_than_real_time_costs_one_record_per_stream():
    """A producer ahead of real time (its clock shows no pause) that skips 30 s of media: the
    first frame and chunk past the gap are refused, the next ones continue from them and are
    taken; a retry of a refused record itself is not taken as evidence."""
    feed = Feed()
    feed.play(0, 2000, clock=lambda t: T0)
    feed.frame(800, T0, T0 + 2000)
    feed.frame(800, T0, T0 + 2000)  # the producer's retry of the same record
    assert len(feed.refused) == 2
    feed.play(32_040, 36_000, clock=lambda t: T0)
    feed.end(T0 + 40_000)
    assert len(feed.refused) == 3 and "start_sample 32040" in feed.refused[2]
    later = [j for j in feed.jobs if j.frame_start >= 808]
    assert later and all(j.frames_missing == 0 for j in later)


@pytest.mark.parametrize("start_ms", [2000, 3_600_000])
def test_a_session_or_a_worker_starting_mid_stream(start_ms):
    """The first record of each stream has nothing to be ahead of: a session that starts an hour
    in, or a worker that takes a session over mid-way (a restart, a rebalance)."""
    feed = Feed()
    feed.play(start_ms, start_ms + 4000)
    feed.end(T0 + start_ms + 4100)
    assert feed.refused == [] and feed.jobs
    assert min(j.frame_start for j in feed.jobs) >= start_ms // 40


def test_the_other_topic_far_ahead_is_not_a_jump():
    """In a backlog one topic can be read seconds ahead of the other (worker.md, Backlogs): each
    stream is measured against itself only."""
    feed = Feed()
    for s in range(0, 8000, 40):  # 8 s of audio read first ...
        feed.chunk(s, T0 + s + 40, T0 + 10_000)
    for f in range(200):  # ... then the frames, from 0
        feed.frame(f, T0 + (f + 1) * 40, T0 + 10_000)
    assert feed.refused == []


def test_an_audio_chunk_longer_than_the_bound_is_refused():
    """It could not be held whole: it would move the audio's watermark past all that is held."""
    feed = Feed()
    feed.play(0, 1000)
    feed.chunk(1000, T0 + 6000, T0 + 6000, length=BOUND_MS + 40)
    assert len(feed.refused) == 1 and "longer than max_buffered_ms" in feed.refused[0]
