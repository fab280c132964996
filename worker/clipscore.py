"""Score a whole clip through the worker's block/window grid and the same scorer, then summarise.

The clip summary's offset comes from the sum of the windows' offset curves (weighted by each
window's usable frames): a whole-clip cross-correlation, robust to single bad windows, as SyncNet
averages its distances over the clip. Its score and confidence use the same calibrated maps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from worker.scoring.offsets import OffsetGrid, pick_peak, smooth_curve, smooth_radius
from worker.scoring.postprocess import direction_for
from worker.scoring.rate import margin_stretch, read_frame_ms
from worker.scoring.types import (
    AudioSpan,
    FrameSpan,
    Kind,
    Label,
    LipSyncScore,
    ScoreRequest,
    ScoringCancelled,
)
from worker.windowing.timeline import JobGrid


@dataclass
class ClipSummary:
    offset_ms: float | None
    score: float | None
    confidence: float
    direction: str
    label: str
    scorer: str
    windows: list[LipSyncScore]
    blocks: list[LipSyncScore]
    n_frames: int
    fps: float
    timings_s: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # score MEDIA: every face track considered (FaceCandidate.to_json), the scored one first
    faces: list[dict] = field(default_factory=list)
    # the windows and blocks are printed as LipSyncSignals of this session (the media's name)
    session_id: str = "clip"
    # (kind, frame_start) -> (ms from the start of scoring to its result, wall time then in ms)
    emitted: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)
    # the summed curve peaks at an end of the offset search
    at_search_edge: bool = False

    def at_its_timing(self, offset_ms: float | None) -> bool:
        """Whether ``offset_ms`` is this summary's offset within a frame (of the rate it was read
        at): another face's reading at this recording's timing."""
        return (self.offset_ms is not None and offset_ms is not None
                and abs(offset_ms - self.offset_ms) <= read_frame_ms(self.fps) + 1e-6)

    def routed_windows(self) -> int:
        """Windows another model than ``scorer`` read (a routed scorer's narrowband model)."""
        return sum(w.scorer != self.scorer for w in self.windows)

    def all_notes(self) -> list[str]:
        """``notes`` and what the summary itself says about its reading."""
        notes = list(self.notes)
        n = self.routed_windows()
        if n:
            # the routed scorer's narrowband model (scoring/routed.py) read these windows
            others = sorted({w.scorer for w in self.windows if w.scorer != self.scorer})
            notes.append(f"{n} of {len(self.windows)} windows are telephone-band audio (nothing above about "
                         f"4 kHz): scored by {', '.join(others)}, the bundle's narrowband model")
        if self.offset_ms is None:
            return notes
        faceless = sum(w.label is Label.NO_FACE for w in self.windows)
        if faceless * 2 > len(self.windows):
            notes.append(f"no face in view in {faceless} of {len(self.windows)} windows (label NO_FACE): the "
                         f"offset and score rest on the other {len(self.windows) - faceless}")
        if self.at_search_edge:
            # the sum still rises at the search's end: the true offset may lie beyond it (or,
            # with a low score, the lips do not go with this audio at all)
            notes.append(f"the best offset is at the edge of the search ({self.offset_ms:+g} ms): the audio may "
                         "be off by more than that, or not go with these lips at all if the score is low "
                         "(--max-offset-ms widens the search)")
        elif self.direction == "UNKNOWN" and self.score is not None:
            # a probe: another speaker's audio, or audio 320 ms late, read "+40 ms, score 0.13"
            # with no word that the +40 means nothing
            notes.append(f"no direction: the lips go with this audio weakly at every offset searched (score "
                         f"{self.score:.2f}, confidence {self.confidence:.2f}), so the offset is only the least bad "
                         "one: the audio may not belong to these lips, or be off by more than the search "
                         "(--max-offset-ms widens it)")
        seconds = self.n_frames / self.fps if self.fps else 0.0
        if seconds < SHORT_CLIP_S:
            notes.append(f"the clip is {seconds:.2f} s long ({self.n_frames} frames), shorter than one 1-s window: "
                         "its reading rests on few mouth movements and is rough")
        return notes

    def to_json(self) -> dict:
        return {
            "offset_ms": self.offset_ms,
            "score": None if self.score is None else round(self.score, 4),
            "confidence": round(self.confidence, 4),
            "direction": self.direction,
            "label": self.label,
            "scorer": self.scorer,
            "n_frames": self.n_frames,
            "fps": self.fps,
            "timings_s": {k: round(v, 3) for k, v in self.timings_s.items()},
            "notes": self.all_notes(),
            "offset_at_search_edge": self.at_search_edge,
            "faces": self.faces,
            "windows": [self._signal(w) for w in self.windows],
            "blocks": [self._signal(b) for b in self.blocks],
        }

    def _signal(self, r: LipSyncScore) -> dict:
        """A window's or block's verdict with the rest of a LipSyncSignal's fields (CONTRACT): the
        session is the clip, the latency is how long after scoring began its result was ready."""
        from worker.publish import signal_id

        latency_ms, emitted_at_ms = self.emitted.get((r.kind.value, r.frame_start), (0, 0))
        return {"session_id": self.session_id, "signal_id": signal_id(self.session_id, r.kind, r.frame_start),
                **r.to_dict(), "latency_ms": latency_ms, "emitted_at_ms": emitted_at_ms}


def plan_jobs(n_frames: int, fps: float, block_frames: int = 16, window_ms: int = 1000,
              window_hop_ms: int = 1000) -> list[tuple[Kind, int, int]]:
    """(kind, frame_start, frame_end) of every complete block and window, on the worker's grid.
    A clip shorter than one window still gets one window over all its frames."""
    grid = JobGrid.for_fps(block_frames, window_ms, window_hop_ms, fps)
    jobs = []
    for kind in (Kind.BLOCK, Kind.WINDOW):
        length, step = grid.length(kind), grid.step(kind)
        s = 0
        while s + length <= n_frames:
            jobs.append((kind, s, s + length))
            s += step
    if not any(k is Kind.WINDOW for k, _, _ in jobs) and n_frames >= 8:
        jobs.append((Kind.WINDOW, 0, n_frames))
    return jobs


def audio_margin_ms(scorer, fps: float) -> float:
    """Audio a clip's scoring reads past each end of its video: the scorer's search margin,
    stretched with the frame below 25 fps (rate.margin_stretch)."""
    return scorer.search_margin_ms * margin_stretch(fps)


def score_clip(scorer, frames: np.ndarray, fps: float, audio: np.ndarray, sample_rate: int = 16000,
               face_present: np.ndarray | None = None, landmarks: np.ndarray | None = None,
               occluded: np.ndarray | None = None, block_frames: int = 16, window_ms: int = 1000,
               batch_size: int = 16, session_id: str = "clip",
               wanted: Callable[[], bool] | None = None) -> ClipSummary:
    """frames: (T, H, W[, 3]) uint8 mouth ROIs at ``fps``; audio: float32 mono at ``sample_rate``,
    sample 0 at frame 0's time. ``session_id`` names the clip in its signals (signal_id).
    ``wanted``: asked before each batch of jobs; False stops the scoring (ScoringCancelled): a
    caller gone, or past its deadline, should not hold the scorer for the rest of a long clip."""
    t0 = time.perf_counter()
    n = int(frames.shape[0])
    jobs = plan_jobs(n, fps, block_frames, window_ms)
    stream = scorer.new_stream()
    # the scorer's margin holds its offsets and audio context at 25 fps and up; a slower clip's
    # frames (15 fps, or 45 fps read at 22.5) reach further in ms. A file has all its audio at
    # hand, so the margin grows with the frame instead of the edge offsets reading padding.
    margin_samples = math.ceil(audio_margin_ms(scorer, fps) * sample_rate / 1000.0)
    # Audio that ends before the video: the rest is silence, as the worker zero-fills audio
    # that never came (those windows come out SILENCE), instead of failing the whole clip.
    sound_samples = int(np.shape(audio)[0])
    audio, short_note = _pad_to_video(np.ascontiguousarray(audio, dtype=np.float32), n / fps, sample_rate,
                                      margin_samples)
    audio_span = AudioSpan(audio, sample_rate, 0)

    def request(kind: Kind, a: int, b: int) -> ScoreRequest:
        s0 = max(0, int(a / fps * sample_rate) - margin_samples)
        s1 = min(audio.shape[0], math.ceil(b / fps * sample_rate) + margin_samples)
        if a / fps * sample_rate < sound_samples:
            # a job the sound's end cuts through (or its search margin reaches past) is read
            # where there is sound, as the worker reads a job its audio's end marker cuts: the
            # padding is not silence heard with a talking mouth (it scored such windows low and
            # OK), and with sound under less than half its frames the job is LOW_QUALITY. Not
            # only past the note's 0.1 s: a clip's last window read the margin's zeros as sound
            # where the audio ends with the video (a review: 0.823 offline, 0.895 in the worker)
            s1 = min(s1, sound_samples)
        sl = lambda x: None if x is None else np.asarray(x)[a:b]
        return ScoreRequest(kind, FrameSpan(frames[a:b], fps, a, face_present=sl(face_present),
                                            landmarks=sl(landmarks), occluded=sl(occluded)),
                            AudioSpan(audio_span.samples[s0:s1], sample_rate, s0))

    # jobs in timeline order so the stream's cache serves windows from blocks already scored
    jobs.sort(key=lambda j: (j[2], j[0] is Kind.WINDOW))
    results: list[LipSyncScore] = []
    emitted: dict[tuple[str, int], tuple[int, int]] = {}
    for i in range(0, len(jobs), batch_size):
        if wanted is not None and not wanted():
            raise ScoringCancelled(f"stopped after {i} of {len(jobs)} jobs: the caller is gone")
        chunk = jobs[i: i + batch_size]
        reqs = [request(*j) for j in chunk]
        batch = scorer.score_batch(reqs, [stream] * len(reqs))
        done = (round(1000 * (time.perf_counter() - t0)), int(time.time() * 1000))
        emitted.update({(r.kind.value, r.frame_start): done for r in batch})
        results += batch
    windows = [r for r in results if r.kind is Kind.WINDOW]
    blocks = [r for r in results if r.kind is Kind.BLOCK]
    summary = summarise(windows, fps, scorer, n)
    summary.blocks = blocks
    summary.emitted = emitted
    summary.session_id = session_id
    if short_note:
        summary.notes.append(short_note)
    summary.timings_s["scoring"] = time.perf_counter() - t0
    return summary


def _pad_to_video(audio: np.ndarray, video_s: float, sample_rate: int, margin_samples: int) -> tuple[np.ndarray, str | None]:
    """``audio`` zero-padded to the video's end plus the search margin, and a note when the
    sound itself stopped before the video did (by more than 0.1 s: tracks commonly differ by a
    frame or two)."""
    need = math.ceil(video_s * sample_rate) + margin_samples
    if audio.shape[0] >= need:
        return audio, None
    audio_s = audio.shape[0] / sample_rate
    note = None
    if audio_s < video_s - 0.1:
        note = (f"the audio ends at {audio_s:.2f} s, {video_s - audio_s:.2f} s before the video: "
                "windows and blocks after it are SILENCE, one it ends in is read where there is sound "
                "(LOW_QUALITY with sound under less than half its frames)")
    return np.concatenate([audio, np.zeros(need - audio.shape[0], np.float32)]), note


def _evidence(w: LipSyncScore) -> float:
    """How much a window's curve counts in its clip's: its frames, scaled by its voiced share."""
    return (w.frame_end - w.frame_start) * max(w.voiced_fraction, 0.05)


def summarise(windows: list[LipSyncScore], fps: float, scorer, n_frames: int) -> ClipSummary:
    # the windows' curves are on the rate they were scored at (50/60 fps: every other frame)
    frame_ms = read_frame_ms(fps)
    usable = [w for w in windows if w.score is not None and w.curve]
    labels = [w.label for w in windows]
    if not usable:
        if labels and all(lab is Label.NO_FACE for lab in labels):
            label = Label.NO_FACE
        elif labels and all(lab in (Label.SILENCE, Label.NO_FACE) for lab in labels):
            label = Label.SILENCE if Label.SILENCE in labels else Label.NO_FACE
        else:
            label = Label.LOW_QUALITY
        return ClipSummary(None, None, 0.0, "UNKNOWN", label.value, scorer.name, windows, [], n_frames, fps)
    # windows on one clip share the offset grid; weight each curve by its evidence
    curves = np.array([w.curve for w in usable], dtype=np.float64)
    weights = np.array([_evidence(w) for w in usable])
    valid = np.isfinite(curves)
    num = np.where(valid, curves, 0.0).T @ weights
    den = valid.astype(np.float64).T @ weights
    clip_curve = np.where(den > 0, num / np.maximum(den, 1e-9), np.nan)
    offsets = np.array(usable[0].curve_offsets_ms) / frame_ms
    grid = OffsetGrid(round(offsets[0]), round(offsets[-1]),
                      round(offsets[1] - offsets[0]) if len(offsets) > 1 else 1)
    cfg = getattr(scorer, "config", None)
    neighbourhood = getattr(cfg, "peak_neighbourhood_frames", 2)
    # the offset: the summed curve's own peak (the sum of many windows is smooth already; averaged
    # again over +/-1 frame, the dev clips' whole-clip estimates lose 1.3 points: 76.9% vs 78.2%)
    peak = pick_peak(torch.tensor(clip_curve), grid, neighbourhood)
    if peak is None:
        return ClipSummary(None, None, 0.0, "UNKNOWN", Label.LOW_QUALITY.value, scorer.name, windows, [], n_frames, fps)
    offset_ms = round(peak.offset_frames * frame_ms, 1)
    n_used = int(sum(w.frame_end - w.frame_start for w in usable))
    # the score and confidence: the peak's height as the windows read theirs (the calibration's
    # input: the curve averaged over +/-peak_smooth_frames); the raw height read higher, so a clip
    # of one window scored above that window (a review: 0.847 against 0.777)
    radius = smooth_radius(getattr(getattr(scorer, "manifest", None), "peak_smooth_frames", 0), grid)
    height = pick_peak(smooth_curve(torch.tensor(clip_curve), radius), grid, neighbourhood) if radius > 0 else peak
    score, conf = _clip_score(scorer, height.best, height.margin, n_used, usable)
    occluded_share = float(np.mean([w.occluded for w in windows])) if windows else 0.0
    label = Label.OCCLUDED if occluded_share >= 0.5 else Label.OK
    if sum(lab is Label.NO_FACE for lab in labels) * 2 > len(labels):
        # no face in most of the clip (the labels' meaning), though the rest could be read (a
        # review: a face in view for 2.5 s of 8 gave label OK and no word about the rest)
        label = Label.NO_FACE
    direction = direction_for(offset_ms, frame_ms, conf, cfg, score) if cfg is not None else None
    at_edge = grid.lo_frames < grid.hi_frames and peak.offset_frames in (grid.lo_frames, grid.hi_frames)
    return ClipSummary(offset_ms, score, conf, direction.value if direction else "UNKNOWN", label.value,
                       scorer.name, windows, [], n_frames, fps, at_search_edge=at_edge)


# Shorter clips get a note: a reading from less than one 1-s window rests on a few mouth movements
# (a probe: a 9-frame clip read -40 ms, its only window 0 ms, both at confidence 0.1).
SHORT_CLIP_S = 0.8

# A face seen in fewer frames than this share of the clip is not scored as the speaker candidate
# (a passer-by, a face on a poster that FaceMesh finds now and then).
MIN_FACE_SHARE = 0.2


@dataclass
class FaceCandidate:
    """One face track of a clip and what its lips said against the audio."""

    index: int  # the tracker's order: most frames with a detection first
    frames_present: int
    centre: tuple[float, float] | None  # median mouth centre, fractions of the frame (x, y)
    summary: ClipSummary | None = None  # None: seen in too few frames to be scored
    fill_only: bool = False  # scored only to read jobs where the chosen face is out of view
    jobs_lent: int = 0  # windows and blocks of the summary read on this face (fill_out_of_view)
    jobs_spoken: int = 0  # ... where the kept face is in view but this one speaks (read_turns)

    def to_json(self, chosen: bool) -> dict:
        s = self.summary
        return {"face": self.index, "chosen": chosen, "frames_present": self.frames_present,
                "centre": None if self.centre is None else [round(v, 3) for v in self.centre],
                "score": None if s is None or s.score is None else round(s.score, 4),
                "offset_ms": None if s is None else s.offset_ms,
                "confidence": None if s is None else round(s.confidence, 4),
                "jobs_where_chosen_out_of_view": self.jobs_lent, "jobs_where_this_face_speaks": self.jobs_spoken}


def choose_face(candidates: list[FaceCandidate]) -> int:
    """Position in ``candidates`` of the speaker: among the scored faces, the one whose lips
    match the audio best (highest clip score; a face without a score ranks below any score),
    ties to the face seen in more frames. The first candidate is always scored."""
    def key(i: int):
        s = None if candidates[i].fill_only else candidates[i].summary
        score = -1.0 if s is None or s.score is None else s.score
        return (s is not None, score, candidates[i].frames_present, -i)

    return max(range(len(candidates)), key=key)


def score_faces(scorer, tracks: list, audio: np.ndarray, sample_rate: int = 16000,
                min_face_share: float = MIN_FACE_SHARE, **kw) -> ClipSummary:
    """Score every face track (tracking.TrackResult, most frames first) seen in at least
    ``min_face_share`` of the frames, and return the summary of the face whose lips match the
    audio best, with every candidate in ``faces``. One track: exactly ``score_clip``'s summary."""
    n = tracks[0].n_frames

    def score_track(tr) -> ClipSummary:
        return score_clip(scorer, tr.rois, tr.fps, audio, sample_rate, face_present=tr.face_present,
                          landmarks=tr.landmarks, occluded=tr.occluded, **kw)

    candidates = []
    for i, tr in enumerate(tracks):
        present = int(np.asarray(tr.face_present).sum())
        params = np.asarray(tr.roi_params, np.float64)[np.asarray(tr.face_present, bool)]
        h, w = tr.frame_size
        centre = None if not len(params) else (float(np.median(params[:, 0])) / w, float(np.median(params[:, 1])) / h)
        cand = FaceCandidate(i, present, centre)
        if i == 0 or present >= max(8, min_face_share * n):
            cand.summary = score_track(tr)
        candidates.append(cand)
    best = choose_face(candidates)
    summary = candidates[best].summary
    notes = []
    scored = [c for c in candidates if c.summary is not None]
    if len(scored) > 1:
        others = ", ".join(f"face {c.index} {_fmt_score(c.summary.score)}" for c in scored if c is not candidates[best])
        x, y = candidates[best].centre
        notes.append(f"{len(scored)} faces tracked; scored face {best} (mouth at x {x:.2f}, y {y:.2f} of the "
                     f"frame), whose lips match the audio best: score {_fmt_score(summary.score)} ({others})")
    scoring_s = sum(c.summary.timings_s.get("scoring", 0.0) for c in scored)
    if len(scored) > 1:
        # two people in view taking turns (an interview): where another face's lips match the
        # audio clearly better at the kept face's timing, the job is read on it
        speakers = [(c.index, c.summary, np.asarray(tracks[c.index].face_present, bool))
                    for c in scored if c is not candidates[best]]
        summary, spoken = read_turns(summary, speakers, scorer)
        for c in candidates:
            c.jobs_spoken = spoken.get(c.index, 0)
        if spoken:
            notes.append(f"in {sum(spoken.values())} windows and blocks another face's lips match the audio "
                         f"clearly better than face {best}'s, at its timing (people taking turns): they are read "
                         "on it (" + ", ".join(f"face {i}: {k}" for i, k in sorted(spoken.items())) + ")")
    if len(tracks) > 1 and any(r.label is Label.NO_FACE for r in summary.windows + summary.blocks):
        # the chosen face is out of view somewhere (a cut to another shot, a turn away): read
        # those jobs on the faces in view there, every track this time
        for c, tr in zip(candidates, tracks):
            if c.summary is None:
                c.summary = score_track(tr)
                c.fill_only = True
                scoring_s += c.summary.timings_s.get("scoring", 0.0)
        chosen_in_view = np.asarray(tracks[best].face_present, bool)
        lenders = [(c.index, c.summary, lendable_frames(tr, chosen_in_view))
                   for c, tr in zip(candidates, tracks) if c.index != best]
        summary, lent = fill_out_of_view(summary, lenders, scorer)
        # a face seen beside the chosen one (a listener, or the other person of a two-shot) that
        # stays in view where the chosen one leaves: read there only where its lips match the
        # audio as clearly as a turn needs (read_turns), at the chosen face's timing (a review: B
        # took over the speech when A left the shot, and 5 of 8 windows came out NO_FACE)
        beside = [(c.index, c.summary, np.asarray(tr.face_present, bool) & ~chosen_in_view, LEND_MIN_SCORE)
                  for c, tr in zip(candidates, tracks) if c.index != best]
        beside = [b for b in beside if _speaks_where_alone(b[1], b[2], summary, scorer)]
        summary, more = _read_on_other_faces(summary, beside, scorer, lambda r: r.label is Label.NO_FACE,
                                             lambda alt, r: True)
        for i, k in more.items():
            lent[i] = lent.get(i, 0) + k
        for c in candidates:
            c.jobs_lent = lent.get(c.index, 0)
        if lent:
            notes.append(f"face {best} is out of view in {sum(lent.values())} windows and blocks; they are read on "
                         "the face in view there whose lips match best ("
                         + ", ".join(f"face {i}: {k}" for i, k in sorted(lent.items())) + ")")
    summary.notes += notes
    summary.timings_s["scoring"] = scoring_s
    summary.faces = [candidates[best].to_json(True)] + [c.to_json(False) for i, c in enumerate(candidates) if i != best]
    return summary


# A job read on another face must match the audio more likely than not (score: P(these lips
# belong with this audio)); a listener's lips reach 0.4-0.5 on a job now and then, by chance.
LEND_MIN_SCORE = 0.5


def lendable_frames(track, chosen_in_view: np.ndarray) -> np.ndarray:
    """(T,) bool: frames of ``track`` that may stand in for the chosen face. A stretch of the track
    (tracking.geometry.track_runs: it ends at dropouts and jumps, so a cut that hands the track to
    another face starts a new stretch) qualifies only if the chosen face is out of view in every
    frame of it: a face seen beside the speaker is a listener, wherever the speaker goes."""
    from worker.tracking.geometry import track_runs

    present = np.asarray(track.face_present, bool)
    runs = track_runs(track.roi_params, present)
    out = np.zeros(present.shape[0], bool)
    for run in np.unique(runs[present]):
        frames = present & (runs == run)
        if not (frames & chosen_in_view).any():
            out |= frames
    return out


def fill_out_of_view(chosen: ClipSummary, lenders: list[tuple[int, ClipSummary, np.ndarray]],
                     scorer) -> tuple[ClipSummary, dict[int, int]]:
    """``chosen`` with each NO_FACE window and block replaced by the same job of another face
    (``lenders``: index, summary, lendable_frames) that is in view there in a stretch never seen
    beside the chosen face, for at least half the job's frames, and whose lips match the audio
    (score >= LEND_MIN_SCORE; the best such) at the chosen face's offset, within a frame: one
    recording's audio is as late for every face in it, while a face that is not speaking
    matches the audio now and then at a chance offset (a review: b-roll of a listener under a
    voice-over lent a window reading +120 ms, confidence 0.55, to a speaker at +40, and turned
    a clip read -80 into -40, IN_SYNC). Its summary is taken again over the windows. Returns it
    and, per face index, how many jobs it lent. Otherwise the job stays NO_FACE: the speaker is
    not in view, and a face that is proves nothing about the timing."""
    return _read_on_other_faces(chosen, [(i, s, ok, LEND_MIN_SCORE) for i, s, ok in lenders], scorer,
                                lambda r: r.label is Label.NO_FACE, lambda alt, r: True)


# A job of a face in view beside the kept one is read on it only if its lips match the audio
# clearly (score >= SWITCH_MIN_SCORE) and clearly better than the kept face's (by SWITCH_MIN_GAIN):
# a listener's lips reach 0.4-0.5 by chance now and then, the speaker's 0.7-0.9.
SWITCH_MIN_SCORE = 0.6
SWITCH_MIN_GAIN = 0.25


def read_turns(chosen: ClipSummary, speakers: list[tuple[int, ClipSummary, np.ndarray]],
               scorer) -> tuple[ClipSummary, dict[int, int]]:
    """``chosen`` with each scored window and block replaced by the same job of another face in
    view there (``speakers``: index, summary, face_present) whose lips match the audio clearly
    better (SWITCH_MIN_SCORE, SWITCH_MIN_GAIN) at the chosen face's offset, within a frame: two
    people taking turns in one shot. One face kept for the whole clip read the other's turns on
    the listener, published OK at chance offsets, and the clip's confidence fell to 0.4 (a
    review). Returns the summary taken again over the windows and, per face, how many jobs."""
    return _read_on_other_faces(
        chosen, [(i, s, ok, SWITCH_MIN_SCORE) for i, s, ok in speakers], scorer, lambda r: r.score is not None,
        lambda alt, r: alt.score >= r.score + SWITCH_MIN_GAIN)


def _speaks_where_alone(other: ClipSummary, alone: np.ndarray, chosen: ClipSummary, scorer) -> bool:
    """Whether ``other``'s windows where it is in view without the chosen face (``alone``, at
    least half their frames), taken together, match the audio as clearly as a turn needs
    (SWITCH_MIN_SCORE) at the chosen face's timing, within a frame. Together, not job by job: a
    listener's lips match a job now and then by chance, a speaker's match them all."""
    windows = [w for w in other.windows if alone[w.frame_start: w.frame_end].mean() >= 0.5]
    if not windows:
        return False
    together = summarise(windows, other.fps, scorer, other.n_frames)
    return together.score is not None and together.score >= SWITCH_MIN_SCORE and chosen.at_its_timing(together.offset_ms)


def _read_on_other_faces(chosen: ClipSummary, others: list[tuple[int, ClipSummary, np.ndarray, float]], scorer,
                         replace: Callable[[LipSyncScore], bool],
                         better: Callable[[LipSyncScore, LipSyncScore], bool]) -> tuple[ClipSummary, dict[int, int]]:
    """``chosen`` with each job that ``replace`` picks read on another face instead: the same job
    of ``others`` (index, summary, frames it may stand in, least score) where that face is in
    view for at least half the job's frames, its score is at least the least, its offset is the
    chosen face's within a frame, and ``better(alt, job)``; the best-scoring such. Its summary
    is taken again over the windows. Returns it and, per face index, how many jobs were read on
    it."""
    taken: dict[int, int] = {}
    emitted = dict(chosen.emitted)
    if chosen.offset_ms is None:
        return chosen, taken
    # each other face's jobs by (kind, frame_start), those at the chosen face's timing only
    at_timing = [(i, s, ok, {(o.kind, o.frame_start): o for o in s.windows + s.blocks
                             if o.score is not None and o.score >= least and chosen.at_its_timing(o.offset_ms)})
                 for i, s, ok, least in others]

    def read(results: list[LipSyncScore]) -> list[LipSyncScore]:
        out = []
        for r in results:
            if replace(r):
                key = (r.kind, r.frame_start)
                alts = [(i, jobs[key], s) for i, s, ok, jobs in at_timing
                        if key in jobs and ok[r.frame_start: r.frame_end].mean() >= 0.5 and better(jobs[key], r)]
                if alts:
                    i, r, src = max(alts, key=lambda a: a[1].score)
                    taken[i] = taken.get(i, 0) + 1
                    done = src.emitted.get((r.kind.value, r.frame_start))
                    if done is not None:
                        emitted[(r.kind.value, r.frame_start)] = done
            out.append(r)
        return out

    windows, blocks = read(chosen.windows), read(chosen.blocks)
    if not taken:
        return chosen, taken
    out = summarise(windows, chosen.fps, scorer, chosen.n_frames)
    out.blocks, out.emitted, out.session_id = blocks, emitted, chosen.session_id
    out.notes, out.timings_s = list(chosen.notes), dict(chosen.timings_s)
    return out, taken


def _fmt_score(score: float | None) -> str:
    return "n/a" if score is None else f"{score:.2f}"


def _clip_score(scorer, best: float, margin: float, n_frames: int, usable: list[LipSyncScore]) -> tuple[float, float]:
    manifest = getattr(scorer, "manifest", None)
    manifest_of = getattr(scorer, "manifest_of", None)
    if manifest_of is not None:
        # a routed scorer: the calibration of the model that read most of the windows (a phone
        # clip's are the narrowband model's; read with the full-band calibration its scores came
        # out 0.04 low, a review)
        weight: dict[str, float] = {}
        for w in usable:  # as summarise weighs the windows' curves
            weight[w.scorer] = weight.get(w.scorer, 0.0) + _evidence(w)
        # a tie goes to the full-band model (whatever the hash seed: a review saw either)
        manifest = manifest_of(max(sorted(weight, key=lambda name: name != scorer.name), key=weight.__getitem__))
    if manifest is None:  # heuristic: its own capped values, aggregated
        return (float(np.median([w.score for w in usable])),
                float(min(0.3, np.median([w.confidence for w in usable]))))
    from worker.scoring.calibration import confidence_from_peak, score_from_similarity

    cal = manifest.calibration
    # a clip-long curve is smoother than a window's; its confidence conservatively uses the
    # 1-s window model (n capped at 30 frames) on the clip curve's margin and height.
    conf = confidence_from_peak(margin, best, min(n_frames, 30), cal)
    return score_from_similarity(best, cal), float(conf)
