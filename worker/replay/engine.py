"""The worker's own stages driven by recorded input: decode (schemas + worker.ingest), join and
window (worker.windowing.Joiner), micro-batched scoring (worker.scoring.batcher.ScoringStage) and
the LipSyncSignal record (worker.publish). Nothing here is replay-specific scoring, so a replay
with the live bundle reproduces what the worker published, and one with a new bundle shows what
it would have published.

Time: the join's processing clock is the session's media time (its records' due times, see
``order.due_ms``) plus an idle timeout at the end, so a replay is deterministic and runs as fast
as scoring allows; ``clock_ms`` (wall time) only stamps arrival and emission.

Part of a session (``since_ms``): the jobs starting at or after the media time of the session's
first record written (Kafka timestamp) at or after ``since_ms`` are replayed. The records given
may start earlier (the CLI reads a lookback before ``since_ms``) so that those jobs get the
context frames and audio margin they read from before it; a job whose data starts before the
first record given is left out (``SessionReplay.left_out``) rather than scored on less than the
worker had. Jobs before the range are neither scored nor reported.

A session's start lost from the log (``start_lost``: retention or a delete removed the first
records of its partitions, and its first frame or sample read is not the session's first) is
replayed the same way from its first record read: a job whose data began in the records removed
is left out, not scored on less than the worker had (and charged to the bundle by ``--compare``).

A session still open when its records were read (``read_at_ms``: no end markers, its newest record
written less than ``idle_timeout_ms`` before) is read up to where the live worker stood then: the
processing clock stops at the media time plus the time since that newest record, and the jobs the
live worker had not finished by then are left out (it scores them later, with more input); they
are not flushed on the idle timeout as those of a session cut short are.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from schemas import AvroCodec, DecodeError
from worker.config import WindowingConfig
from worker.ingest import BadRecord, audio_events, check_key, roi_events
from worker.publish import signal_id, signal_record
from worker.refs import RoiResolver
from worker.replay.order import AUDIO, ROI, Recorded, due_ms, live_order, media_start_ms
from worker.scoring.batcher import ScoringStage
from worker.scoring.interface import Scorer
from worker.scoring.rate import decimation
from worker.scoring.types import Kind
from worker.windowing.events import Arrival, AudioEvent, FrameEvent, Job
from worker.windowing.joiner import BadEvent, Joiner
from worker.windowing.offsets import OffsetTracker

_DRAIN_TIMEOUT_S = 600.0


@dataclass
class SessionReplay:
    """What replaying one session gave: its signals (frame order, BLOCKs before WINDOWs at equal
    starts) and the records the worker would have dead-lettered, with the reason."""

    session_id: str
    signals: list[dict[str, Any]] = field(default_factory=list)
    bad: list[tuple[Recorded, str]] = field(default_factory=list)
    records: int = 0
    # a replay from since_ms: jobs starting at or after this frame were replayed (0: the whole
    # session; None: none, nothing was written since); the signal_ids of those left out for want
    # of data from before the records read
    first_frame: int | None = 0
    left_out: list[str] = field(default_factory=list)
    # the earliest frame index and audio sample (the scorer's rate) fed to the join
    first_frame_fed: int | None = field(default=None, repr=False)
    first_sample_fed: int | None = field(default=None, repr=False)
    start_lost: bool = False  # its first records were removed from the log (module docstring)
    still_open: bool = False  # open for the live worker when its records were read
    # the signal_ids of the jobs such a session's live worker had not finished then
    unfinished: list[str] = field(default_factory=list)
    # such a session's last job start per kind (replayed or unfinished): the live worker's later
    # signals, published after the records were read, are not the replay's to answer for
    last_frame: dict[str, int] | None = None


class Replayer:
    """Replays sessions one at a time through a Joiner and a ScoringStage of its own."""

    def __init__(self, scorer: Scorer, windowing: WindowingConfig, resolver: RoiResolver, sample_rate: int,
                 clock_ms: Callable[[], int], max_batch_size: int = 8,
                 codecs: Mapping[str, AvroCodec] | None = None,
                 thread_init: Callable[[], Any] | None = None) -> None:
        """``codecs``: stream (AUDIO, ROI) -> the input topics' codec (default: plain Avro bodies;
        the CLI passes the cluster's wire format, as the worker uses). ``thread_init`` runs on the
        scoring thread first (torch's thread count is per thread: the worker sets it there)."""
        self.scorer = scorer
        self.windowing = windowing
        self.resolver = resolver
        self.sample_rate = sample_rate
        self.clock_ms = clock_ms
        self.joiner = Joiner(windowing, scorer.search_margin_ms, OffsetTracker(), sample_rate=sample_rate,
                             context_frames=getattr(scorer, "context_frames", 0))
        # max_wait 0: nothing arrives later that a fuller batch could wait for
        self.stage: ScoringStage[Job] = ScoringStage(scorer, max_batch_size, 0.0, thread_init=thread_init)
        self.codecs = dict(codecs or {AUDIO: AvroCodec("AudioChunk"), ROI: AvroCodec("RoiRef")})

    def replay(self, session_id: str, audio: Sequence[Recorded], roi: Sequence[Recorded],
               since_ms: int | None = None, log_trimmed: bool = False,
               read_at_ms: int | None = None) -> SessionReplay:
        """Replay one session's records (each input in its partition's offset order). With
        ``since_ms`` (Unix ms) only the jobs from the session's first record written at or after
        it on (see the module docstring); ``audio`` and ``roi`` may begin before that.
        ``log_trimmed``: its records begin where a trimmed log now begins (RecordedSessions.
        start_cut), so if they begin past the session's start, that start was cut. ``read_at_ms`` (Unix ms): when the records
        were read, to tell a session still live then (module docstring)."""
        out = SessionReplay(session_id, records=len(audio) + len(roi))
        decoded = {name: self._decode(recs, out) for name, recs in ((AUDIO, audio), (ROI, roi))}
        jobs: list[Job] = []
        media_now = 0.0
        for due, rec, fields in live_order(decoded[AUDIO], decoded[ROI]):
            if math.isfinite(due):
                media_now = max(media_now, due)
            jobs += self._feed(rec, fields, int(media_now), out)
        idle_ms = self.windowing.idle_timeout_ms + 1
        newest_ms = max((r.timestamp_ms for r in (*audio, *roi) if r.timestamp_ms is not None), default=None)
        if session_id in self.joiner.sessions and read_at_ms is not None and newest_ms is not None:
            # either way within the idle timeout: a producer clock a little ahead of the reader's
            # is skew, not a session over (a review)
            out.still_open = abs(read_at_ms - newest_ms) < idle_ms
        if out.still_open:
            # where the live worker's clock stood when the records were read; what it had not
            # finished then is left out, not flushed
            jobs += self.joiner.tick(int(media_now) + max(0, read_at_ms - newest_ms))
            pending = self.joiner.tick(int(media_now) + idle_ms)
            out.unfinished = [signal_id(job.session_id, job.kind, job.frame_start) for job in pending]
            out.last_frame = {kind.value: max((j.frame_start for j in (*jobs, *pending) if j.kind is kind), default=-1)
                              for kind in Kind}
            for job in pending:
                self.joiner.on_published(job)
        else:
            # a session without end markers (cut short) ends as the worker would end it: idle, flushed
            jobs += self.joiner.tick(int(media_now) + idle_ms)
        out.start_lost = since_ms is None and log_trimmed and bool(out.first_frame_fed or out.first_sample_fed)
        if since_ms is not None or out.start_lost:
            since_ms = since_ms or 0  # a lost start: from the first record read
            out.bad = [(rec, why) for rec, why in out.bad if _written_since(rec, since_ms)]
            jobs = self._in_range(jobs, decoded, since_ms, out)
        self.stage.submit(jobs)
        if not self.stage.drain(_DRAIN_TIMEOUT_S):
            raise RuntimeError(f"scoring session {session_id} did not finish within {_DRAIN_TIMEOUT_S:.0f} s")
        results = self.stage.results()
        self.stage.close_sessions([session_id])
        for scored in results:
            self.joiner.on_published(scored.job)
            out.signals.append(signal_record(scored.job, scored.score, self.clock_ms()))
        out.signals.sort(key=lambda s: (s["frame_start"], s["kind"] != "BLOCK"))
        self.joiner.drain_closed()
        return out

    def close(self) -> None:
        self.stage.stop()

    def _in_range(self, jobs: list[Job], decoded: Mapping[str, list], since_ms: int, out: SessionReplay
                  ) -> list[Job]:
        """The jobs of a replay from ``since_ms`` (module docstring); the rest are released."""
        fps = next((float(f["fps"]) for _, (_, _, f) in decoded[ROI] if f.get("fps")), None)
        starts = [media_start_ms(rec.stream, f) for _, (_, rec, f) in (*decoded[AUDIO], *decoded[ROI])
                  if _written_since(rec, since_ms)]
        starts = [t for t in starts if t is not None]
        kept: list[Job] = []
        if not starts:
            out.first_frame = None  # nothing of it was written since then
        elif fps is not None:  # (without frames the join makes no jobs)
            out.first_frame = max(0, math.ceil(min(starts) * fps / 1000.0 - 1e-6))
            context = int(getattr(self.scorer, "context_frames", 0)) * decimation(fps)
            for job in jobs:
                if job.frame_start < out.first_frame:
                    continue
                frames_read = out.first_frame_fed is None or max(0, job.frame_start - context) >= out.first_frame_fed
                audio_read = out.first_sample_fed is None or job.request.audio.start_sample >= out.first_sample_fed
                if frames_read and audio_read:
                    kept.append(job)
                else:
                    out.left_out.append(signal_id(job.session_id, job.kind, job.frame_start))
        kept_ids = {id(job) for job in kept}
        for job in jobs:
            if id(job) not in kept_ids:
                self.joiner.on_published(job)  # as if done: the join holds nothing for it
        return kept

    def _decode(self, recs: Sequence[Recorded], out: SessionReplay
                ) -> list[tuple[float, tuple[float, Recorded, dict[str, Any]]]]:
        """Each record -> (due_ms, (due_ms, record, its Avro fields)); one that does not decode is
        kept in ``out.bad`` with the reason the worker's dead letter would give. Events (and their
        pixels and samples) are made one record at a time as they are fed, not all up front."""
        decoded = []
        for rec in recs:
            try:
                fields = self.codecs[AUDIO if rec.stream == AUDIO else ROI].decode(rec.value)
                check_key(rec.key, fields["session_id"])
            except DecodeError as exc:
                out.bad.append((rec, f"decode: {exc.reason}"))
                continue
            except BadRecord as exc:
                out.bad.append((rec, exc.reason))
                continue
            due = due_ms(rec.stream, fields)
            decoded.append((due, (due, rec, fields)))
        return decoded

    def _feed(self, rec: Recorded, fields: dict[str, Any], now_ms: int, out: SessionReplay) -> list[Job]:
        """One record through the worker's ingest and join; a record the worker dead-letters is kept
        in ``out.bad`` with the same reason."""
        # the producer's clock as the worker reads it: a session that really paused longer than
        # the buffer bound is told from a corrupt jump by it (session.JumpGuard)
        arrival = Arrival(self.clock_ms(), fields.get("produced_at_ms") or rec.timestamp_ms)
        try:
            if rec.stream == AUDIO:
                events = audio_events(fields, rec.source, arrival, self.sample_rate)
            else:
                events = roi_events(fields, rec.source, arrival, self.resolver.try_resolve)
            jobs = self.joiner.on_events(events, now_ms)
            for ev in events:  # what the join got, from where (a replay from since_ms)
                if isinstance(ev, AudioEvent):
                    first = out.first_sample_fed
                    out.first_sample_fed = ev.start_sample if first is None else min(first, ev.start_sample)
                elif isinstance(ev, FrameEvent):
                    first = out.first_frame_fed
                    out.first_frame_fed = ev.frame_index if first is None else min(first, ev.frame_index)
            return jobs
        except BadRecord as exc:
            out.bad.append((rec, exc.reason))
        except BadEvent as exc:  # contradicts its session
            out.bad.append((rec, f"invalid: {exc}"))
        except Exception as exc:  # noqa: BLE001 - as the worker dead-letters a failure no check foresaw
            out.bad.append((rec, f"internal: {type(exc).__name__}: {exc}"))
        return []


def _written_since(rec: Recorded, since_ms: int) -> bool:
    """Written at or after ``since_ms`` (a record without a timestamp counts as such)."""
    return rec.timestamp_ms is None or rec.timestamp_ms >= since_ms
