"""One session's join of ROI frames and audio, and the BLOCK/WINDOW jobs it makes due.

Event time: each stream has its own watermark, the latest media time it delivered (end of the
newest frame; end of the newest audio chunk), in ms. Why per stream: the two streams come from two
topics, and after a restart or in a backlog the consumer may read seconds of one topic before the
other; one shared watermark would then declare the other stream's data late. A job
[frame_start, frame_end) needs those frames and the audio [start_ms - margin, end_ms + margin)
(margin = the scorer's search margin). It is due when

- COMPLETE: every frame arrived (or the video ended) and the needed audio arrived (or the audio
  ended); or
- LATENESS: each stream is complete for the job or *final* for it: its own watermark passed the
  job's need (frames: end_ms; audio: end_ms + margin) by allowed_lateness_ms, or the stream has
  stalled (nothing from it for ``stream_stall_ms`` of processing time) while the other stream's
  watermark passed that point. Gaps are then labelled (missing frames present=False, missing
  audio zero-filled and counted); or
- ENDED: the session is being flushed (idle timeout, eviction) and its frames end by the last
  frame seen or by the audio's watermark.

Frames are also final once the video has stalled and the audio's end marker came, for every job
the audio reaches.

A job none of whose frames arrived is skipped when no audio arrived for its span either (a
session that jumped ahead: nothing happened there). With audio it is published, labelled
LOW_QUALITY by the scorer: a session whose ROI stream died while its speech goes on must say so
block by block, not fall silent. The first job of each kind starts
at the first grid start at or after the earliest frame seen (decided when that job is due), so a
worker that restarts mid-session never emits a job for frames it did not see.

Nothing here reads a clock: processing time arrives as ``now_wall_ms`` arguments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from worker.scoring.rate import decimation, margin_stretch
from worker.scoring.types import AudioSpan, FrameSpan, Kind, ScoreRequest
from worker.windowing.buffers import AudioBuffer, FrameSlot, stack_rois
from worker.windowing.events import Arrival, AudioEvent, DueReason, FrameEvent, Job, Source, Stream
from worker.windowing.timeline import (
    JobGrid,
    audio_need_ms,
    frame_ms,
    ms_to_sample_ceil,
    ms_to_sample_floor,
    sample_ms,
)

KINDS = (Kind.BLOCK, Kind.WINDOW)
# Below this rate a session's jobs grow as the rate falls (16 frames last longer, and the audio
# margins stretch with the frame: margin_stretch); at and above it they are what the config's
# bounds are sized for (window_ms, max_buffered_ms)
FULL_RATE_FPS = 25.0


class BadEvent(ValueError):
    """An event that contradicts its session (fps or sample rate changed, bad index)."""


def _clock_ms(arrival: Arrival, skew_ms: float) -> float | None:
    """When the record was made, by its producer's clock (produced_at_ms or the Kafka timestamp),
    else by when it came. A producer clock ahead of the worker's by more than ``skew_ms`` is no
    evidence of anything (None): a corrupt record must not vouch for itself with a future stamp."""
    produced = arrival.produced_wall_ms
    if produced is None:
        return float(arrival.received_wall_ms)
    if produced > arrival.received_wall_ms + skew_ms:
        return None
    return float(produced)


class JumpGuard:
    """Refuses a record of one stream of a session that lands far ahead of that stream.

    Why: a corrupt frame_index or start_sample far ahead moved the stream's watermark there; the
    buffer bound then dropped everything buffered and every later real record came late, so one
    bad record silently ended a live session. A record that opens a gap of more than ``bound_ms``
    (max_buffered_ms: what the session can hold) after the newest data of its own stream is refused,
    unless the gap is real: its producer's clock advanced by as much, less ``bound_ms``, since the
    stream's newest record (a pause takes as long to produce as to play, live or read later from a
    backlog by its Kafka timestamps), or it continues the record refused just before it (a feed
    faster than real time that really skipped ahead loses one record, not the rest of the session).
    The other stream is never compared with: in a backlog one topic runs ahead of the other.
    """

    def __init__(self, what: str, bound_ms: float) -> None:
        self.what = what
        self.bound_ms = bound_ms
        self.clock_ms: float | None = None  # newest producer clock of the stream's accepted records
        self.refused_end_ms: float | None = None  # end of the jump refused last, if nothing came since

    def check(self, position: str, start_ms: float, end_ms: float, newest_end_ms: float,
              arrival: Arrival) -> None:
        """Raises BadEvent for a corrupt jump; ``newest_end_ms``: the stream's watermark."""
        gap_ms = start_ms - newest_end_ms
        if not math.isfinite(newest_end_ms) or gap_ms <= self.bound_ms:
            return
        advance_ms = self._clock_advance_ms(arrival)
        if gap_ms - advance_ms <= self.bound_ms or self._continues_refused(start_ms):
            return
        self.refused_end_ms = end_ms
        raise BadEvent(f"{position} is {gap_ms:.0f} ms ahead of the session's {self.what} (which ends at "
                       f"{newest_end_ms:.0f} ms), more than max_buffered_ms ({self.bound_ms:.0f}) beyond "
                       f"what its producer's clock advanced ({advance_ms:.0f} ms): a corrupt position")

    def accepted(self, arrival: Arrival) -> None:
        self.refused_end_ms = None
        clock = _clock_ms(arrival, self.bound_ms / 2)
        if clock is not None:
            self.clock_ms = clock if self.clock_ms is None else max(self.clock_ms, clock)

    def _clock_advance_ms(self, arrival: Arrival) -> float:
        clock = _clock_ms(arrival, self.bound_ms / 2)
        if clock is None or self.clock_ms is None:
            return 0.0
        return max(0.0, clock - self.clock_ms)

    def _continues_refused(self, start_ms: float) -> bool:
        """Starts at or after the refused jump's end, within the bound: the jump was real. A
        repeat of the refused record itself (a producer's retry) is not."""
        refused = self.refused_end_ms
        return refused is not None and refused <= start_ms <= refused + self.bound_ms


@dataclass(frozen=True)
class WindowParams:
    """What a session needs from the config, plus the scorer's margin and sample rate."""

    block_frames: int
    window_ms: int
    window_hop_ms: int
    allowed_lateness_ms: int
    max_buffered_ms: int
    margin_ms: float
    sample_rate: int = 16_000
    stream_stall_ms: int = 2000
    # the scorer's video context (frames before a job its head reads, at 25-30 fps): kept and sent
    # with each job, so that a worker taking the session over gives the job the same context
    context_frames: int = 0


# A session's frame rate is its first frame's until this many frames are stored (or a job is
# emitted); before then a rate more frames say replaces it (SessionState._rate_outvoted).
FPS_SETTLE_FRAMES = 3


class SessionState:
    def __init__(self, session_id: str, partition: int, params: WindowParams, now_wall_ms: int,
                 lagging: set[tuple[Stream, int]] | None = None) -> None:
        self.session_id = session_id
        self.partition = partition
        # (stream, partition) pairs whose input still has unread records (the joiner's view,
        # shared): silence from such a stream is a backlog, not a stall
        self.lagging: set[tuple[Stream, int]] = lagging if lagging is not None else set()
        self.p = params
        self.fps: float | None = None
        self.grid: JobGrid | None = None
        self.frames: dict[int, FrameSlot] = {}
        self.frame_meta: dict[int, tuple[Source, Arrival]] = {}
        self.audio = AudioBuffer()
        self.next_start: dict[Kind, int | None] = {Kind.BLOCK: None, Kind.WINDOW: None}
        self.min_frame_seen: int | None = None
        self.max_frame_seen: int | None = None
        self.video_wm_ms = -math.inf
        self.audio_wm_ms = -math.inf
        self.created_wall_ms = now_wall_ms
        self.video_last_wall_ms: int | None = None
        self.audio_last_wall_ms: int | None = None
        self.video_end: int | None = None  # frames at or after this index never come
        self.audio_ended = False
        self.audio_end_sample = 0
        self.last_active_wall_ms = now_wall_ms
        self.skipped_empty = 0
        self._pruned_to = -1
        self.dropped_buffered = 0
        self.dropped_sources: list[Source] = []  # dropped by the buffer bound; the joiner releases them
        self.video_guard = JumpGuard("frames", params.max_buffered_ms)
        self.audio_guard = JumpGuard("audio", params.max_buffered_ms)
        # the frames refused for another rate than the session's, per rate, while it is unsettled
        self._rival_fps: dict[float, set[int]] = {}
        self.first_media_ms: float | None = None  # where the first media stored (either stream) starts
        self.align_given_up = False  # waiting for one stream to catch the other up did not help once

    # --- events -----------------------------------------------------------------------------
    def add_frame(self, ev: FrameEvent, now_wall_ms: int) -> str:
        """Store a frame; returns "ok", "late" (no future job needs it) or "duplicate"."""
        if ev.frame_index < 0:
            raise BadEvent(f"frame_index {ev.frame_index} is negative")
        if not (math.isfinite(ev.fps) and 1.0 <= ev.fps <= 240.0):
            raise BadEvent(f"fps {ev.fps} is outside [1, 240]")
        if self.fps is None:
            self._set_rate(ev.fps)
        elif abs(ev.fps - self.fps) > 1e-6 and not self._rate_outvoted(ev.fps, ev.frame_index):
            raise BadEvent(f"fps changed within the session: {self.fps} then {ev.fps}")
        f = ev.frame_index
        self.video_guard.check(f"frame_index {f}", frame_ms(f, self.fps), frame_ms(f + 1, self.fps),
                               self.video_wm_ms, ev.arrival)
        self.last_active_wall_ms = max(self.last_active_wall_ms, now_wall_ms)
        if self.video_end is not None and f >= self.video_end:
            return "late"
        if f in self.frames:
            return "duplicate"
        if f < self.frontier_frame(default=-1):
            return "late"
        self.frames[f] = FrameSlot(ev.pixels, ev.face_present, ev.occluded, ev.landmarks, ev.ref_error is None)
        self.frame_meta[f] = (ev.source, ev.arrival)
        self.min_frame_seen = f if self.min_frame_seen is None else min(self.min_frame_seen, f)
        self.max_frame_seen = f if self.max_frame_seen is None else max(self.max_frame_seen, f)
        self._media_from(frame_ms(f, self.fps))
        self.video_wm_ms = max(self.video_wm_ms, frame_ms(f + 1, self.fps))
        self.video_last_wall_ms = now_wall_ms
        self.video_guard.accepted(ev.arrival)
        return "ok"

    def _set_rate(self, fps: float) -> None:
        """The session's frame rate and its job grid (BadEvent where the rate is too slow to fit)."""
        grid = JobGrid.for_fps(self.p.block_frames, self.p.window_ms, self.p.window_hop_ms, fps)
        self._check_rate_fits(fps, grid)
        self.fps, self.grid = fps, grid

    def _rate_outvoted(self, fps: float, frame_index: int) -> bool:
        """Whether a frame's ``fps``, not the session's, replaces the session's rate: only while
        that rate is unsettled (fewer than FPS_SETTLE_FRAMES frames stored, no job emitted), once
        more frames have said ``fps`` than the frames stored (this one included; the others were
        refused). The frames stored keep their indices, read at the new rate (a probe: one corrupt
        fps in frame 0 had every later frame dead-lettered, the session read on twice its grid)."""
        if len(self.frames) >= FPS_SETTLE_FRAMES or any(s is not None for s in self.next_start.values()):
            return False
        if frame_index in self.frames:
            return False  # a frame stored already: its record again, not a vote
        # votes by frame index: the same record delivered twice is one vote (a review)
        voters = self._rival_fps.setdefault(round(fps, 6), set())
        voters.add(frame_index)
        if len(voters) <= len(self.frames):
            return False
        self._set_rate(fps)
        self._rival_fps.clear()
        # the frames' times at the new rate; the jump guard starts again from them
        self.video_wm_ms = -math.inf if self.max_frame_seen is None else frame_ms(self.max_frame_seen + 1, fps)
        self.video_guard = JumpGuard("frames", self.p.max_buffered_ms)
        return True

    def add_audio(self, ev: AudioEvent, now_wall_ms: int) -> str:
        """Store an audio chunk; returns "ok", "late" or "duplicate"."""
        if ev.start_sample < 0:
            raise BadEvent(f"start_sample {ev.start_sample} is negative")
        if ev.sample_rate != self.p.sample_rate:
            raise BadEvent(f"sample_rate {ev.sample_rate} != {self.p.sample_rate}")
        if ev.samples.ndim != 1 or ev.samples.shape[0] == 0:
            raise BadEvent("audio chunk must be mono and non-empty")
        end = ev.start_sample + int(ev.samples.shape[0])
        start_ms, end_ms = sample_ms(ev.start_sample, ev.sample_rate), sample_ms(end, ev.sample_rate)
        if end_ms - start_ms > self.p.max_buffered_ms:
            # it could not be held whole: it would move the watermark past all that is buffered
            raise BadEvent(f"audio chunk of {end_ms - start_ms:.0f} ms is longer than max_buffered_ms "
                           f"({self.p.max_buffered_ms})")
        self.audio_guard.check(f"start_sample {ev.start_sample}", start_ms, end_ms, self.audio_wm_ms, ev.arrival)
        self.last_active_wall_ms = max(self.last_active_wall_ms, now_wall_ms)
        front = self.frontier_frame(default=None)
        if (front is not None and self.fps is not None
                and end_ms <= frame_ms(front, self.fps) - self.margin_ms):
            return "late"
        if not self.audio.add(ev.start_sample, ev.samples, (ev.source, ev.arrival), ev.spill):
            return "duplicate"
        self._media_from(start_ms)
        self.audio_wm_ms = max(self.audio_wm_ms, end_ms)
        self.audio_last_wall_ms = now_wall_ms
        self.audio_guard.accepted(ev.arrival)
        return "ok"

    def _check_rate_fits(self, fps: float, grid: JobGrid) -> None:
        """Below FULL_RATE_FPS a job and its stretched audio margins must fit in max_buffered_ms:
        otherwise the buffer bound drops a job's first frames and audio before the job is due,
        and the session never gets that kind of signal (1-2 fps got no BLOCK at all)."""
        if fps >= FULL_RATE_FPS:
            return
        longest = max(grid.length(kind) for kind in KINDS)
        need_ms = frame_ms(longest, fps) + 2 * self.p.margin_ms * margin_stretch(fps)
        if need_ms > self.p.max_buffered_ms:
            raise BadEvent(f"fps {fps:g} is too low: a {longest}-frame job and its audio margins span "
                           f"{need_ms:.0f} ms, more than windowing.max_buffered_ms ({self.p.max_buffered_ms}) holds")

    def end_video(self, now_wall_ms: int) -> None:
        self.last_active_wall_ms = max(self.last_active_wall_ms, now_wall_ms)
        if self.video_end is None:
            self.video_end = 0 if self.max_frame_seen is None else self.max_frame_seen + 1

    def end_audio(self, now_wall_ms: int) -> None:
        self.last_active_wall_ms = max(self.last_active_wall_ms, now_wall_ms)
        self.audio_ended = True
        self.audio_end_sample = self.audio.end_sample or 0

    def _media_from(self, start_ms: float) -> None:
        self.first_media_ms = start_ms if self.first_media_ms is None else min(self.first_media_ms, start_ms)

    def media_lead(self, stream: Stream, end_ms: float, now_wall_ms: int) -> tuple[float, float] | None:
        """For media of ``stream`` ending at ``end_ms``: how far (ms) it runs ahead of what the
        session holds of its other stream (that stream's watermark, or where the session's media
        starts when it has none yet), and how long (wall ms) the other stream has been silent
        (since the session began, when it never came). None where waiting for the other stream
        cannot help: it ended, the session holds nothing yet, waiting was given up once, or the
        media jumps further ahead of its own stream than the join takes (JumpGuard: refused)."""
        if self.align_given_up:
            return None
        if stream is Stream.AUDIO:
            own_wm, other_wm, other_wall, ended = (self.audio_wm_ms, self.video_wm_ms, self.video_last_wall_ms,
                                                   self.video_end is not None)
        else:
            own_wm, other_wm, other_wall, ended = (self.video_wm_ms, self.audio_wm_ms, self.audio_last_wall_ms,
                                                   self.audio_ended)
        if math.isfinite(own_wm) and end_ms - own_wm > self.p.max_buffered_ms:
            return None  # a jump the join refuses (JumpGuard): nothing to wait for (a review)
        base = other_wm if math.isfinite(other_wm) else self.first_media_ms
        if ended or base is None:
            return None
        return end_ms - base, now_wall_ms - (self.created_wall_ms if other_wall is None else other_wall)

    @property
    def watermark_ms(self) -> float:
        """The latest media time seen on either stream (bounds the buffer)."""
        return max(self.video_wm_ms, self.audio_wm_ms)

    def _stalled(self, stream: Stream, last_wall_ms: int | None, now_wall_ms: int) -> bool:
        if (stream, self.partition) in self.lagging:
            return False
        since = self.created_wall_ms if last_wall_ms is None else last_wall_ms
        return now_wall_ms - since >= self.p.stream_stall_ms

    # --- jobs -------------------------------------------------------------------------------
    @property
    def frame_stretch(self) -> float:
        """How much longer than 40 ms a frame is as the networks read this session (1 at 25 fps
        and up; 2 at 12.5 fps; 45 fps is read at 22.5): spans the scorer gives in 25 fps frames
        reach this much further here."""
        return 1.0 if self.fps is None else margin_stretch(self.fps)

    @property
    def margin_ms(self) -> float:
        """Audio a job needs on each side of its frames: the scorer's search margin (its offsets
        and audio context at 25 fps and up), stretched for slower sessions, so that the
        search's edge offsets are not read on padding."""
        return self.p.margin_ms * self.frame_stretch

    @property
    def context_span(self) -> int:
        """Session frames before a job sent as its context (the scorer's, at this session's rate)."""
        return 0 if self.fps is None else self.p.context_frames * decimation(self.fps)

    def frontier_frame(self, default: int | None = None) -> int | None:
        """No job not yet emitted starts before this frame (``default`` while undecided)."""
        starts = [s for s in self.next_start.values() if s is not None]
        if len(starts) < len(KINDS):
            return default
        return min(starts)

    def finished(self) -> bool:
        """The video ended and every job that fits before its end was emitted."""
        if self.video_end is None:
            return False
        if self.grid is None or self.min_frame_seen is None:
            return True
        for kind in KINDS:
            start = self.next_start[kind]
            if start is None:
                start = self.grid.first_start_at_or_after(kind, self.min_frame_seen)
            if start + self.grid.length(kind) <= self.video_end:
                return False
        return True

    def due_jobs(self, now_wall_ms: int, force: bool = False) -> list[Job]:
        """Every job due now, in order of frame end (blocks first on ties).

        force: the session is being flushed; emit every job whose frames end by the last frame
        seen, complete or not.
        """
        if self.grid is None or self.min_frame_seen is None:
            self._enforce_buffer_bound()
            return []
        jobs: list[Job] = []
        for kind in KINDS:
            while True:
                job = self._next_due(kind, now_wall_ms, force)
                if job is None:
                    break
                if job is not _SKIPPED:
                    jobs.append(job)
        jobs.sort(key=lambda j: (j.frame_end, j.kind is not Kind.BLOCK))
        self._prune()
        return jobs

    def _next_due(self, kind: Kind, now_wall_ms: int, force: bool) -> Job | object | None:
        grid, fps = self.grid, self.fps
        assert grid is not None and fps is not None and self.min_frame_seen is not None
        start = self.next_start[kind]
        decided = start is not None
        if start is None:
            start = grid.first_start_at_or_after(kind, self.min_frame_seen)
        end = start + grid.length(kind)
        if self.video_end is not None and end > self.video_end:
            return None  # a partial job at the end of the video is never emitted
        reason = self._readiness(start, end, now_wall_ms, force)
        if reason is None:
            return None
        if not decided:
            self.next_start[kind] = start
        present = [f for f in range(start, end) if f in self.frames]
        if not present and not self._audio_within(start, end):
            self.skipped_empty += 1
            # jump to the next job with anything in it: a frame, or audio under its frames (a
            # job with audio and no frames is published, LOW_QUALITY; jumping to the next frame
            # alone lost those under an ROI stream's gap)
            later = [f for f in self.frames if f >= end]
            heard = self._first_heard_frame(end)
            if heard is not None:
                later.append(heard)
            nxt = start + grid.step(kind)
            if later:
                nxt = max(nxt, grid.first_start_covering_or_after(kind, min(later)))
            self.next_start[kind] = nxt
            return _SKIPPED
        self.next_start[kind] = start + grid.step(kind)
        return self._build(kind, start, end, reason)

    def _first_heard_frame(self, frame_index: int) -> int | None:
        """The first frame at or after ``frame_index`` under which some audio arrived, or None."""
        fps, sr = self.fps, self.p.sample_rate
        assert fps is not None
        s = self.audio.coverage.first_at_or_after(max(0, ms_to_sample_floor(frame_ms(frame_index, fps), sr)))
        if s is None:
            return None
        # the frame whose span [f/fps, (f+1)/fps) holds sample s
        return max(frame_index, math.floor(sample_ms(s, sr) * fps / 1000.0))

    def _audio_within(self, start: int, end: int) -> bool:
        """Whether any audio arrived for frames [start, end) themselves (margins aside)."""
        fps, sr = self.fps, self.p.sample_rate
        assert fps is not None
        a = max(0, ms_to_sample_floor(frame_ms(start, fps), sr))
        return self.audio.coverage.covered(a, ms_to_sample_ceil(frame_ms(end, fps), sr)) > 0

    def _readiness(self, start: int, end: int, now_wall_ms: int, force: bool) -> DueReason | None:
        fps = self.fps
        assert fps is not None
        lo_ms, hi_ms = audio_need_ms(start, end, fps, self.margin_ms)
        end_ms = frame_ms(end, fps)
        late = self.p.allowed_lateness_ms
        frames_ok = self.video_end is not None or all(f in self.frames for f in range(start, end))
        a = max(0, ms_to_sample_floor(lo_ms, self.p.sample_rate))
        b = ms_to_sample_ceil(hi_ms, self.p.sample_rate)
        # complete: covered, and (resampled audio) the next chunk's spill into its last samples in;
        # where no chunk follows, the end marker, lateness or a stall make it final as it is
        audio_ok = self.audio_ended or self.audio.coverage.contains(a, b + self.audio.longest_spill_samples)
        if frames_ok and audio_ok:
            return DueReason.COMPLETE
        video_stalled = self._stalled(Stream.VIDEO, self.video_last_wall_ms, now_wall_ms)
        # the audio's end marker came and the frames stopped: no more frames are on their way for
        # any job the audio covers (without this, the tail of a session whose ROI stream died
        # waited for an audio watermark past the audio's end)
        frames_final = frames_ok or self.video_wm_ms >= end_ms + late or (
            video_stalled and (self.audio_wm_ms >= end_ms + late or (self.audio_ended and self.audio_wm_ms >= end_ms)))
        audio_final = audio_ok or self.audio_wm_ms >= hi_ms + late or (
            self._stalled(Stream.AUDIO, self.audio_last_wall_ms, now_wall_ms) and self.video_wm_ms >= hi_ms + late)
        if frames_final and audio_final:
            return DueReason.LATENESS
        # flushed: every job within the media that came (frames seen, or audio past them)
        if force and self.max_frame_seen is not None and (end <= self.max_frame_seen + 1 or end_ms <= self.audio_wm_ms):
            return DueReason.ENDED
        return None

    def _build(self, kind: Kind, start: int, end: int, reason: DueReason) -> Job:
        fps, sr = self.fps, self.p.sample_rate
        assert fps is not None and self.grid is not None
        slots = [self.frames.get(f) for f in range(start, end)]
        frames, present, face, occluded, landmarks = stack_rois(slots)
        lo_ms, hi_ms = audio_need_ms(start, end, fps, self.margin_ms)
        a = max(0, ms_to_sample_floor(lo_ms, sr))
        b = ms_to_sample_ceil(hi_ms, sr)
        if self.audio_ended:
            # nothing exists past the session's last sample: not missing, just not there. A job
            # the sound ends in gets the sound only, so the scorer reads it where there is sound
            # (or calls it LOW_QUALITY, with sound under less than half its frames) rather than
            # hearing zeros as silence under a talking mouth; a job wholly after it keeps its
            # frames' span of zeros, and is SILENCE
            if self.audio_end_sample > ms_to_sample_floor(frame_ms(start, fps), sr):
                b = min(b, self.audio_end_sample)
            else:
                b = min(b, ms_to_sample_ceil(frame_ms(end, fps), sr))
        samples, came = self.audio.extract(a, b)
        if self.audio_ended:
            came[max(0, self.audio_end_sample - a):] = True  # past the end: no sound, not lost sound
        missing_samples = int(came.shape[0] - came.sum())
        sources: list[Source] = []
        newest_rx, newest_tx = 0, None
        metas = [self.frame_meta[f] for f in range(start, end) if f in self.frame_meta]
        metas += self.audio.infos(a, b)  # type: ignore[arg-type]
        for source, arrival in metas:
            sources.append(source)
            newest_rx = max(newest_rx, arrival.received_wall_ms)
            if arrival.produced_wall_ms is not None:
                newest_tx = max(newest_tx or 0, arrival.produced_wall_ms)
        request = ScoreRequest(
            kind=kind,
            frames=FrameSpan(frames=frames, fps=fps, frame_start=start, present=present,
                             landmarks=landmarks, occluded=occluded, face_present=face),
            audio=AudioSpan(samples=samples, sample_rate=sr, start_sample=a, present=came),
            session_id=self.session_id,
            context=self._context(start),
        )
        keep = self.frontier_frame(default=start)
        return Job(
            session_id=self.session_id, kind=kind, frame_start=start, frame_end=end,
            start_ms=round(frame_ms(start, fps)), end_ms=round(frame_ms(end, fps)),
            request=request,
            frames_missing=int((~present).sum()),
            audio_missing_ms=round(sample_ms(missing_samples, sr)),
            reason=reason, newest_received_wall_ms=newest_rx, newest_produced_wall_ms=newest_tx,
            keep_from_frame=keep if keep is not None else start, partition=self.partition,
            sources=tuple(dict.fromkeys(sources)),
        )

    def _context(self, start: int) -> FrameSpan | None:
        """The buffered frames right before ``start`` (context_span of them), None if none are."""
        assert self.fps is not None
        first = max(0, start - self.context_span)
        slots = [self.frames.get(f) for f in range(first, start)]
        if not any(slot is not None for slot in slots):
            return None
        frames, present, face, occluded, landmarks = stack_rois(slots)
        return FrameSpan(frames=frames, fps=self.fps, frame_start=first, present=present, landmarks=landmarks,
                         occluded=occluded, face_present=face)

    # --- bounds -----------------------------------------------------------------------------
    def _prune(self) -> None:
        """Forget what no future job needs; then enforce max_buffered_ms by dropping the oldest."""
        front = self.frontier_frame(default=None)
        if front is not None and self.fps is not None:
            if front > self._pruned_to:  # frames only need a sweep when the frontier moved
                self._pruned_to = front
                for f in [f for f in self.frames if f < front - self.context_span]:
                    del self.frames[f]
                    self.frame_meta.pop(f, None)
            need_from = frame_ms(front, self.fps) - self.margin_ms
            self.audio.drop_before(max(0, ms_to_sample_floor(need_from, self.p.sample_rate)))
        self._enforce_buffer_bound()

    def _enforce_buffer_bound(self) -> None:
        if not math.isfinite(self.watermark_ms):
            return
        cut_ms = self.watermark_ms - self.p.max_buffered_ms
        if cut_ms <= 0:
            return
        dropped = self.audio.drop_before(ms_to_sample_floor(cut_ms, self.p.sample_rate))
        if self.fps is not None:
            for f in [f for f in self.frames if frame_ms(f, self.fps) < cut_ms]:
                del self.frames[f]
                dropped.append(self.frame_meta.pop(f))
        self.dropped_buffered += len(dropped)
        self.dropped_sources += [info[0] for info in dropped]  # type: ignore[index]
        if dropped and self.fps is not None:
            assert self.grid is not None
            first_kept = math.ceil(cut_ms * self.fps / 1000.0 - 1e-9)
            for kind in KINDS:
                start = self.next_start[kind]
                nxt = self.grid.first_start_at_or_after(kind, first_kept)
                if start is None or start < nxt:
                    self.next_start[kind] = nxt
            if self.min_frame_seen is not None:
                self.min_frame_seen = max(self.min_frame_seen, first_kept)

    def buffered(self) -> tuple[int, int]:
        """(frames, audio chunks) held."""
        return len(self.frames), len(self.audio)


_SKIPPED = object()
