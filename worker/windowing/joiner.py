"""All sessions of one worker: routing events, bounded state, session ends, offset release.

Offsets (issue 4 item 8): each stored event is held in its session's ledger until no job that
could contain it is still unpublished. A ledger's *frontier* is the earliest frame start of any
job not yet published (emitted and in flight, or not yet emitted); a frame is released once the
frontier passes it by the scorer's context span (a job's context frames are read again after a
restart), an audio chunk once the frontier's audio need (frontier - margin) passes its
end, an end marker once the session closed and all its jobs are published. Released events are
marked done in the OffsetTracker, whose positions are what may be committed.

Bounds: at most ``max_sessions`` open sessions, at most ``max_buffered_ms`` of media per session
(older data is dropped: an eviction). With ``max_sessions`` open, a record of another session
gets a place only by evicting one (flushed and closed): the least recently active *new* session
(fewer than ``ESTABLISHED_EVENTS`` frames or chunks stored), else the least recently active
session if it went silent (``silent_ms``: nothing for ``stream_stall_ms``, at least
``MIN_SILENT_MS``, and its partitions not lagging); else the record is dropped (``overloaded``)
and the open sessions keep streaming. So a flood of one-record session ids evicts its own ids,
and sessions that stream together beyond ``max_sessions`` do not evict each other in turn: the
first ``max_sessions`` are served. A session evicted for room has not ended: its next records
open it again where it was (its job grid and end markers remembered), having lost only the media
the eviction dropped, and it counts as established at once (counted as new again, it was first
in line to be evicted by the next newcomer, so sessions evicted each other on every record).
Idle sessions (no event for ``idle_timeout_ms`` of processing time) are flushed and closed by
``tick``. Events for a session that ended (end markers or idle timeout) recently are dropped as
late. Notices (log lines) are kept to one per kind per ``NOTICE_INTERVAL_MS``: an eviction or a
drop can happen on every record; the counters count each one.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from worker.config import WindowingConfig
from worker.scoring.types import Kind
from worker.windowing.events import AudioEvent, EndEvent, FrameEvent, Job, Source, Stream
from worker.windowing.offsets import OffsetTracker
from worker.windowing.session import BadEvent, SessionState, WindowParams
from worker.windowing.timeline import JobGrid, frame_ms, sample_ms

__all__ = ["ESTABLISHED_EVENTS", "MIN_SILENT_MS", "NOTICE_INTERVAL_MS", "BadEvent", "InFlight", "Joiner",
           "SessionLedger"]

_tiebreak = itertools.count()

# frames or chunks a session stores before it is *established* (evicted for room only when every
# open session is): a producer that puts a new session id on every record makes only new ones
ESTABLISHED_EVENTS = 2
# an established session is evicted for room only once silent this long (or stream_stall_ms if
# longer): one that is streaming keeps its place (with stream_stall_ms 0, sessions streaming
# together would evict each other on every record)
MIN_SILENT_MS = 1000
# one notice (log line) per kind at most this often: evictions and drops can come on every record
NOTICE_INTERVAL_MS = 10_000


class InFlight:
    """Jobs emitted and not yet published, counted per frame start, with the smallest start at
    hand: a heap whose stale entries go when they reach its top (O(log n) amortised). A start
    whose jobs are all published is forgotten, so a session that never ends keeps only its jobs
    in flight (the counts of every published job, walked on every event, cost 5 ms an event
    after 24 h in a review)."""

    def __init__(self) -> None:
        self._count: dict[int, int] = {}
        self._heap: list[int] = []  # every start counted, perhaps twice, plus stale ones

    def add(self, frame_start: int) -> None:
        n = self._count.get(frame_start, 0)
        if n == 0:
            heapq.heappush(self._heap, frame_start)
        self._count[frame_start] = n + 1

    def remove(self, frame_start: int) -> None:
        """One job of ``frame_start`` published (no-op when none is in flight)."""
        n = self._count.pop(frame_start, 0)
        if n > 1:
            self._count[frame_start] = n - 1
        if len(self._heap) > 2 * len(self._count) + 32:
            self._heap = sorted(self._count)  # stale entries under a long-lived top: rebuild

    def first(self) -> int | None:
        """The smallest start in flight, or None."""
        while self._heap and self._heap[0] not in self._count:
            heapq.heappop(self._heap)
        return self._heap[0] if self._heap else None

    def __len__(self) -> int:
        return len(self._count)


@dataclass(frozen=True)
class _Evicted:
    """What a session evicted for room goes on with when its records keep coming."""

    partition: int
    fps: float | None
    next_start: dict[Kind, int | None]  # its job grid: no job is emitted twice
    first_frame: int | None  # where its grid starts while no job of a kind was emitted yet
    video_end: int | None
    audio_ended: bool
    audio_end_sample: int


class SessionLedger:
    """Which of a session's input events are still needed, keyed by media time (ms)."""

    def __init__(self) -> None:
        self.pending: list[tuple[float, int, Source]] = []  # (release key ms, tiebreak, source)
        # holds per record: an audio chunk that is also its session's end marker is held twice
        # (its samples, and the marker until the session closes), and is done after both
        self.holds: Counter[Source] = Counter()
        self.in_flight = InFlight()  # frame starts of jobs emitted, not yet published
        self.fps: float | None = None
        self.open_frontier: int | None = None  # session's next job start; None: undecided
        self.closed = False

    def hold(self, key_ms: float, source: Source) -> None:
        heapq.heappush(self.pending, (key_ms, next(_tiebreak), source))
        self.holds[source] += 1

    def rekey(self, keys: Mapping[Source, float]) -> None:
        """Hold each of ``keys``' sources to its new release time instead of its old one."""
        self.pending = [(keys.get(src, key) if math.isfinite(key) else key, tb, src)
                        for key, tb, src in self.pending]
        heapq.heapify(self.pending)

    def frontier_ms(self) -> float:
        first = self.in_flight.first()
        starts = [] if first is None else [first]
        if not self.closed:
            if self.open_frontier is None:
                return -math.inf  # the first jobs are not decided yet: nothing can go
            starts.append(self.open_frontier)
        if not starts:
            return math.inf
        if self.fps is None:
            return -math.inf
        return frame_ms(min(starts), self.fps)

    def release(self) -> list[Source]:
        """Pop every hold whose key is below the frontier; returns the records no longer held."""
        front = self.frontier_ms()
        out = []
        while self.pending and (self.pending[0][0] < front or front == math.inf):
            out += self._unhold(heapq.heappop(self.pending)[2])
        return out

    def forget(self, sources: list[Source]) -> list[Source]:
        """Drop the media hold of each of ``sources`` (media the session's buffer bound dropped:
        no job will read it), so that a session whose holds cannot be released yet (no frame,
        so no frame rate: an ROI stream that never started) does not keep one per chunk for
        good. Returns the records no longer held at all."""
        if not sources:
            return []
        drop = Counter(sources)
        kept = []
        for entry in self.pending:
            if drop[entry[2]] > 0 and math.isfinite(entry[0]):
                drop[entry[2]] -= 1
                continue
            kept.append(entry)
        heapq.heapify(kept)
        self.pending = kept
        out = []
        for source, n in Counter(sources).items():
            out += self._unhold(source, n - drop[source])
        return out

    def _unhold(self, source: Source, n: int = 1) -> list[Source]:
        left = self.holds[source] - n
        if left > 0:
            self.holds[source] = left
            return []
        self.holds.pop(source, None)
        return [source]

    def done(self) -> bool:
        return self.closed and not self.pending and not self.in_flight


class Joiner:
    """Feed decoded events in; get due jobs out. Pure: time is passed in."""

    def __init__(self, cfg: WindowingConfig, margin_ms: float, tracker: OffsetTracker,
                 sample_rate: int = 16_000, context_frames: int = 0) -> None:
        self.cfg = cfg
        self.params = WindowParams(
            block_frames=cfg.block_frames, window_ms=cfg.window_ms, window_hop_ms=cfg.window_hop_ms,
            allowed_lateness_ms=cfg.allowed_lateness_ms, max_buffered_ms=cfg.max_buffered_ms,
            margin_ms=float(margin_ms), sample_rate=sample_rate, stream_stall_ms=cfg.stream_stall_ms,
            context_frames=int(context_frames),
        )
        self.tracker = tracker
        self.sessions: OrderedDict[str, SessionState] = OrderedDict()  # least recently active first
        self.ledgers: dict[str, SessionLedger] = {}
        self._recently_closed: OrderedDict[str, None] = OrderedDict()  # ended: later records are late
        self._evicted: OrderedDict[str, _Evicted] = OrderedDict()  # evicted for room: may come back
        # open sessions not yet established: frames and chunks stored, least recently active first
        self._new_sessions: OrderedDict[str, int] = OrderedDict()
        self._record: Source | None = None  # the record on_events is feeding
        self._record_dropped = False  # ... and a part of it was dropped
        self._closed_queue: list[str] = []
        self._pending_jobs: list[Job] = []  # flushed from sessions evicted to make room
        self._notices: list[tuple[str, str]] = []  # (what, session_id) worth a log line
        self._notice_at: dict[str, int] = {}  # what -> when its last notice went
        self.silent_ms = max(cfg.stream_stall_ms, MIN_SILENT_MS)
        self.lagging: set[tuple[Stream, int]] = set()  # shared with every SessionState
        self.counters: Counter[str] = Counter()

    # --- events -----------------------------------------------------------------------------
    def on_events(self, events: list[FrameEvent | AudioEvent | EndEvent], now_wall_ms: int) -> list[Job]:
        """The events of one input record, in order. Raises BadEvent for a frame or chunk that
        contradicts its session (the caller dead-letters the record). A record holds at most one
        frame or chunk, first, then perhaps an end marker (which never raises), so a BadEvent
        comes before any job of the record was emitted."""
        jobs: list[Job] = []
        self._record = events[0].source if events else None
        self._record_dropped = False
        try:
            for ev in events:
                if isinstance(ev, FrameEvent):
                    jobs += self.on_frame(ev, now_wall_ms)
                elif isinstance(ev, AudioEvent):
                    jobs += self.on_audio(ev, now_wall_ms)
                elif isinstance(ev, EndEvent):
                    jobs += self.on_end(ev, now_wall_ms)
        finally:
            self._finish_record(events)
        return jobs

    def _finish_record(self, events: list[FrameEvent | AudioEvent | EndEvent]) -> None:
        """A record with a dropped part (a duplicate or late frame that carries its stream's end
        marker) is done only if no other part of it is held: releasing it with the marker held
        made it committable while its session was open, and a worker taking over never saw the
        end."""
        source, dropped = self._record, self._record_dropped
        self._record, self._record_dropped = None, False
        if source is None or not dropped:
            return
        ledger = self.ledgers.get(events[0].session_id)
        if ledger is None or source not in ledger.holds:
            self.tracker.done(source)

    def on_frame(self, ev: FrameEvent, now_wall_ms: int) -> list[Job]:
        """Raises BadEvent for a frame that contradicts its session (caller dead-letters it)."""
        state = self._session(ev.session_id, ev.source, now_wall_ms)
        if isinstance(state, str):
            return self._drop(ev.source, state)
        status = state.add_frame(ev, now_wall_ms)
        if status != "ok":
            return self._drop(ev.source, status)
        if ev.ref_error is not None:
            self.counters["ref_errors"] += 1
        self._stored(ev.session_id)
        ledger = self.ledgers[ev.session_id]
        if ledger.fps is not None and state.fps != ledger.fps:
            # the session's unsettled rate was outvoted (SessionState._rate_outvoted): the frames
            # held already are held to their times at the new rate, not the old one (a review:
            # a frame held at 50 fps times was released, committed, before its jobs were out)
            ledger.rekey({source: frame_ms(f + state.context_span, state.fps)
                          for f, (source, _) in state.frame_meta.items()})
        ledger.fps = state.fps
        # held until the frontier passes the frame plus the context span: a job's context frames
        # are read again by a worker that takes the session over (its verdict stays the same)
        ledger.hold(frame_ms(ev.frame_index + state.context_span, state.fps), ev.source)
        return self._advance(state, now_wall_ms)

    def on_audio(self, ev: AudioEvent, now_wall_ms: int) -> list[Job]:
        state = self._session(ev.session_id, ev.source, now_wall_ms)
        if isinstance(state, str):
            return self._drop(ev.source, state)
        status = state.add_audio(ev, now_wall_ms)
        if status != "ok":
            return self._drop(ev.source, status)
        self._stored(ev.session_id)
        end_ms = sample_ms(ev.start_sample + int(ev.samples.shape[0]), ev.sample_rate)
        # and by the video context's span (context_frames of 40 ms, longer below 25 fps): a worker that
        # takes the session over re-reads the frames of that span, and may emit again a job that
        # starts there; it gets its audio whole
        context_ms = self.params.context_frames * 40.0 * state.frame_stretch
        self.ledgers[ev.session_id].hold(end_ms + state.margin_ms + context_ms, ev.source)
        return self._advance(state, now_wall_ms)

    def on_end(self, ev: EndEvent, now_wall_ms: int) -> list[Job]:
        state = self._session(ev.session_id, ev.source, now_wall_ms)
        if isinstance(state, str):
            return self._drop(ev.source, state)
        if ev.stream is Stream.VIDEO:
            state.end_video(now_wall_ms)
        else:
            state.end_audio(now_wall_ms)
        self.ledgers[ev.session_id].hold(math.inf, ev.source)  # kept until the session closes
        return self._advance(state, now_wall_ms)

    def media_lead(self, session_id: str, stream: Stream, end_ms: float, now_wall_ms: int) -> tuple[float, float] | None:
        """SessionState.media_lead of an open session (None for one not open here)."""
        state = self.sessions.get(session_id)
        return None if state is None else state.media_lead(stream, end_ms, now_wall_ms)

    def give_up_alignment(self, session_id: str) -> None:
        """Waiting for the other stream of ``session_id`` did not bring it: not asked again."""
        state = self.sessions.get(session_id)
        if state is not None:
            state.align_given_up = True

    def set_lagging(self, lagging: set[tuple[Stream, int]]) -> None:
        """(stream, partition) pairs with unread input (consumer lag): a session on such a partition is
        never idle-closed, and such a stream never counts as stalled; its events are on their way."""
        self.lagging.clear()
        self.lagging.update(lagging)

    def tick(self, now_wall_ms: int) -> list[Job]:
        """Processing-time progress: jobs due because a stream stalled, and sessions idle for
        idle_timeout_ms closed (flushing their remaining jobs) unless their input lags."""
        jobs: list[Job] = []
        limit = now_wall_ms - self.cfg.idle_timeout_ms
        idle = [sid for sid, st in self.sessions.items() if st.last_active_wall_ms <= limit
                and (Stream.VIDEO, st.partition) not in self.lagging
                and (Stream.AUDIO, st.partition) not in self.lagging]
        for sid in idle:
            jobs += self._close(sid, "idle", flush=True)
        for state in list(self.sessions.values()):
            jobs += self._advance(state, now_wall_ms)
        return jobs

    def on_published(self, job: Job) -> None:
        """The job's signal was delivered: release what no unpublished job needs any more."""
        ledger = self.ledgers.get(job.session_id)
        if ledger is None:
            return  # its partition was revoked meanwhile
        ledger.in_flight.remove(job.frame_start)
        self._release(job.session_id, ledger)

    def drop_partitions(self, partitions: set[int]) -> int:
        """Forget sessions of revoked partitions, without emitting; returns how many."""
        gone = [sid for sid, st in self.sessions.items() if st.partition in partitions]
        for sid in gone:
            del self.sessions[sid]
            self._new_sessions.pop(sid, None)
            self.ledgers.pop(sid, None)
            self._closed_queue.append(sid)
        for sid in [sid for sid, ev in self._evicted.items() if ev.partition in partitions]:
            del self._evicted[sid]  # another worker takes these over
        for sid in [sid for sid, led in self.ledgers.items() if sid not in self.sessions]:
            # closed sessions with jobs still in flight on a revoked partition
            if any(src.partition in partitions for _, _, src in self.ledgers[sid].pending):
                del self.ledgers[sid]
        return len(gone)

    def drain_notices(self) -> list[tuple[str, str]]:
        """(what, session_id) of evictions and partition mismatches since the last call."""
        out, self._notices = self._notices, []
        return out

    def drain_closed(self) -> list[str]:
        """Sessions closed since the last call (their scorer streams can go)."""
        out, self._closed_queue = self._closed_queue, []
        return out

    # --- internals --------------------------------------------------------------------------
    def _session(self, sid: str, source: Source, now_wall_ms: int) -> SessionState | str:
        """The open session ``sid`` (opened or resumed if need be), or why its event is dropped."""
        state = self.sessions.get(sid)
        if state is not None:
            self.sessions.move_to_end(sid)
            if sid in self._new_sessions:
                self._new_sessions.move_to_end(sid)
            if source.partition != state.partition:
                # the two inputs' producers partition keys differently (e.g. murmur2 vs crc32):
                # with several workers such a session would be split between them
                self.counters["partition_mismatch"] += 1
                self._notice("partition_mismatch", sid, now_wall_ms)
            return state
        if sid in self._recently_closed:
            return "after_close"
        if not self._make_room(now_wall_ms):
            if sid in self._evicted:
                self._evicted.move_to_end(sid)  # still streaming: not the first to be forgotten
            self._notice("dropped_overloaded", sid, now_wall_ms)
            return "overloaded"
        state = SessionState(sid, source.partition, self.params, now_wall_ms, self.lagging)
        evicted = self._evicted.pop(sid, None)
        if evicted is not None:
            # established at once: counted as new again it was the next newcomer's victim, and
            # sessions streaming together beyond max_sessions evicted each other on every record
            self._resume(state, evicted)
        else:
            self._new_sessions[sid] = 0
        self.sessions[sid] = state
        ledger = self.ledgers.get(sid)
        if ledger is None:
            self.ledgers[sid] = SessionLedger()
        else:
            ledger.closed = False  # its jobs flushed at eviction still in flight: holds stay with them
        self.counters["sessions_opened"] += 1
        return state

    def _make_room(self, now_wall_ms: int) -> bool:
        """Make room for one more session, evicting (flushing and closing) the least recently
        active new session, else the least recently active session if it went silent; False
        when every open session is established and streaming (nothing is evicted)."""
        while len(self.sessions) >= self.cfg.max_sessions:
            if self._new_sessions:
                victim, why = next(iter(self._new_sessions)), "evicted_new"
            else:
                victim, why = next(iter(self.sessions)), "evicted"
                if not self._silent(self.sessions[victim], now_wall_ms):
                    return False
            self.counters["evictions_max_sessions"] += 1
            self._notice("evicted_max_sessions", victim, now_wall_ms)
            self._pending_jobs += self._close(victim, why, flush=True)
        return True

    def _silent(self, state: SessionState, now_wall_ms: int) -> bool:
        """Nothing came for the session for ``silent_ms`` and none of its input is waiting unread
        (consumer lag: its records are on their way, as for the idle timeout)."""
        if (Stream.VIDEO, state.partition) in self.lagging or (Stream.AUDIO, state.partition) in self.lagging:
            return False
        return now_wall_ms - state.last_active_wall_ms >= self.silent_ms

    def _notice(self, what: str, sid: str, now_wall_ms: int) -> None:
        """A notice worth a log line, at most one per kind per NOTICE_INTERVAL_MS (an eviction or a
        drop can come on every record: a flood of new ids logged a line per record)."""
        last = self._notice_at.get(what)
        if last is not None and 0 <= now_wall_ms - last < NOTICE_INTERVAL_MS:
            return
        self._notice_at[what] = now_wall_ms
        self._notices.append((what, sid))

    def _resume(self, state: SessionState, evicted: _Evicted) -> None:
        """Continue a session evicted for room where it was: the same job grid (its flushed jobs
        are not emitted again, frames before them are late) and the end markers it had."""
        p = self.params
        state.next_start.update(evicted.next_start)
        if evicted.fps is not None:
            state.fps = evicted.fps
            state.grid = JobGrid.for_fps(p.block_frames, p.window_ms, p.window_hop_ms, evicted.fps)
            for kind, start in evicted.next_start.items():
                if start is None and evicted.first_frame is not None:
                    # evicted before its first job: the grid starts where its first frame was, so
                    # the jobs over the dropped frames come with them labelled missing, not skipped
                    state.next_start[kind] = state.grid.first_start_at_or_after(kind, evicted.first_frame)
        state.video_end = evicted.video_end
        state.audio_ended = evicted.audio_ended
        state.audio_end_sample = evicted.audio_end_sample
        self.counters["sessions_resumed"] += 1

    def _stored(self, sid: str) -> None:
        """A frame or chunk of ``sid`` was stored: count it towards being established."""
        n = self._new_sessions.get(sid)
        if n is None:
            return
        if n + 1 >= ESTABLISHED_EVENTS:
            del self._new_sessions[sid]
        else:
            self._new_sessions[sid] = n + 1

    def _drop(self, source: Source, why: str) -> list[Job]:
        self.counters[f"dropped_{why}"] += 1
        if source == self._record:
            self._record_dropped = True  # on_events decides once it saw the rest of the record
        else:
            self.tracker.done(source)
        return self._take_pending()

    def _take_pending(self) -> list[Job]:
        out, self._pending_jobs = self._pending_jobs, []
        return out

    def _advance(self, state: SessionState, now_wall_ms: int) -> list[Job]:
        dropped_before = state.dropped_buffered
        skipped_before = state.skipped_empty
        jobs = state.due_jobs(now_wall_ms)
        if state.dropped_buffered > dropped_before:
            self.counters["evictions_max_buffered"] += state.dropped_buffered - dropped_before
            self._notice("dropped_oldest_max_buffered", state.session_id, now_wall_ms)
        for source in self.ledgers[state.session_id].forget(state.dropped_sources):
            self.tracker.done(source)
        state.dropped_sources.clear()
        self.counters["jobs_skipped_empty"] += state.skipped_empty - skipped_before
        self._emitted(state.session_id, jobs)
        if state.finished():
            jobs += self._close(state.session_id, "ended", flush=False)
        else:
            self._sync_frontier(state)
        return self._take_pending() + jobs

    def _emitted(self, sid: str, jobs: list[Job]) -> None:
        ledger = self.ledgers[sid]
        for job in jobs:
            ledger.in_flight.add(job.frame_start)
            self.counters[f"jobs_{job.reason.value}"] += 1

    def _sync_frontier(self, state: SessionState) -> None:
        ledger = self.ledgers[state.session_id]
        ledger.fps = state.fps
        ledger.open_frontier = state.frontier_frame(default=None)
        self._release(state.session_id, ledger)

    def _release(self, sid: str, ledger: SessionLedger) -> None:
        for source in ledger.release():
            self.tracker.done(source)
        if ledger.done():
            del self.ledgers[sid]

    def _close(self, sid: str, why: str, flush: bool) -> list[Job]:
        state = self.sessions.pop(sid)
        self._new_sessions.pop(sid, None)
        jobs: list[Job] = []
        if flush:
            skipped_before = state.skipped_empty
            jobs = state.due_jobs(state.last_active_wall_ms, force=True)
            self.counters["jobs_skipped_empty"] += state.skipped_empty - skipped_before
            self._emitted(sid, jobs)
        ledger = self.ledgers[sid]
        ledger.fps = state.fps
        ledger.closed = True
        self._release(sid, ledger)
        self.counters[f"sessions_closed_{why}"] += 1
        self._closed_queue.append(sid)
        self._remember(sid, state, evicted=why.startswith("evicted"))
        return jobs

    def _remember(self, sid: str, state: SessionState, evicted: bool) -> None:
        """An ended session's later records are late; one evicted for room may come back."""
        limit = self.cfg.closed_sessions_remembered
        if evicted:
            self._evicted[sid] = _Evicted(
                partition=state.partition, fps=state.fps, next_start=dict(state.next_start),
                first_frame=state.min_frame_seen,
                video_end=state.video_end, audio_ended=state.audio_ended,
                audio_end_sample=state.audio_end_sample)
            _keep_newest(self._evicted, limit)
        else:
            self._recently_closed[sid] = None
            _keep_newest(self._recently_closed, limit)

    def open_sessions(self) -> int:
        return len(self.sessions)


def _keep_newest(remembered: OrderedDict, limit: int) -> None:
    while len(remembered) > limit:
        remembered.popitem(last=False)
