"""Clip scoring: the worker's job grid, and the clip summary from the windows' curves."""

from worker.clipscore import plan_jobs, summarise
from worker.scoring.heuristic import HeuristicScorer
from worker.scoring.types import Direction, Kind, Label, LipSyncScore


def test_plan_jobs_on_the_worker_grid():
    jobs = plan_jobs(100, 25.0, block_frames=16, window_ms=1000)
    blocks = [(a, b) for k, a, b in jobs if k is Kind.BLOCK]
    windows = [(a, b) for k, a, b in jobs if k is Kind.WINDOW]
    assert blocks == [(0, 16), (16, 32), (32, 48), (48, 64), (64, 80), (80, 96)]
    assert windows == [(0, 25), (25, 50), (50, 75), (75, 100)]
    assert plan_jobs(90, 30.0, 8, 1000)[-1] == (Kind.WINDOW, 60, 90)
    # shorter than a window: one window over everything
    assert [j for j in plan_jobs(20, 25.0) if j[0] is Kind.WINDOW] == [(Kind.WINDOW, 0, 20)]


def _win(start, curve, label=Label.OK, score=0.5):
    offsets = tuple(float(40 * k) for k in range(-5, 6))
    return LipSyncScore(Kind.WINDOW, start, start + 25, start * 40, (start + 25) * 40, score,
                        offsets[curve.index(max(curve))] if score is not None else None, 0.1, 0.5,
                        Direction.UNKNOWN, label, "heuristic@1.0", curve_offsets_ms=offsets if score is not None else (),
                        curve=tuple(curve) if score is not None else ())


def test_summary_sums_curves_so_one_bad_window_does_not_win():
    good = [0, 0, 0, 0, 0, 0, 0, 0.2, 0.6, 0.2, 0]  # peak at +120 ms
    bad = [0, 0.7, 0, 0, 0, 0, 0, 0, 0, 0, 0]  # one noisy window peaking at -160 ms
    s = summarise([_win(0, good), _win(25, bad), _win(50, good)], 25.0, HeuristicScorer(), 75)
    assert s.offset_ms == 120.0
    assert s.direction in ("AUDIO_LAGS", "UNKNOWN")
    assert s.label == "OK"


def test_a_summary_that_peaks_at_the_search_edge_says_the_offset_may_lie_beyond():
    rising = [0, 0, 0, 0, 0, 0, 0, 0.1, 0.2, 0.4, 0.6]  # still climbing at +200 ms
    edge = summarise([_win(0, rising), _win(25, rising)], 25.0, HeuristicScorer(), 50)
    assert edge.offset_ms == 200.0 and edge.at_search_edge
    notes = edge.all_notes()
    assert any("edge of the search (+200 ms)" in n and "--max-offset-ms" in n for n in notes), notes
    assert edge.to_json()["notes"] == notes
    inside = summarise([_win(0, [0, 0, 0, 0, 0, 0, 0, 0.2, 0.6, 0.2, 0])], 25.0, HeuristicScorer(), 25)
    assert not inside.at_search_edge and inside.all_notes() == []
    low_edge = summarise([_win(0, rising[::-1])], 25.0, HeuristicScorer(), 25)
    assert any("(-200 ms)" in n for n in low_edge.all_notes())


def test_summary_of_silence_and_no_face():
    sil = [_win(0, [0] * 11, Label.SILENCE, None), _win(25, [0] * 11, Label.SILENCE, None)]
    s = summarise(sil, 25.0, HeuristicScorer(), 50)
    assert s.label == "SILENCE" and s.offset_ms is None and s.score is None and s.confidence == 0
    nf = [_win(0, [0] * 11, Label.NO_FACE, None)]
    assert summarise(nf, 25.0, HeuristicScorer(), 25).label == "NO_FACE"


def test_a_clip_with_no_face_in_most_windows_says_so_and_reads_the_rest():
    """NO_FACE means no face in most frames: a clip whose face is in view in 2 windows of 5 is
    labelled so, with its offset read on those 2 and a note (a review: label OK, no note)."""
    good = [0, 0, 0, 0, 0, 0, 0, 0.2, 0.6, 0.2, 0]  # +120 ms
    nf = lambda start: _win(start, [0] * 11, Label.NO_FACE, None)
    s = summarise([_win(0, good), _win(25, good), nf(50), nf(75), nf(100)], 25.0, HeuristicScorer(), 125)
    assert s.label == "NO_FACE" and s.offset_ms == 120.0
    assert any("no face in view in 3 of 5 windows" in n for n in s.all_notes())
    half = summarise([_win(0, good), _win(25, good), nf(50), nf(75)], 25.0, HeuristicScorer(), 100)
    assert half.label == "OK" and not any("no face" in n for n in half.all_notes())


def test_a_clips_windows_and_blocks_are_whole_lipsync_signals():
    """CONTRACT: `score --json` lists per-window signals "as above", so each carries every
    LipSyncSignal field, its signal_id derived like the worker's from the clip's name."""
    import numpy as np

    from worker.clipscore import score_clip
    from worker.publish import signal_id

    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, (60, 32, 32), dtype=np.uint8)
    audio = (0.1 * rng.standard_normal(16000 * 3)).astype(np.float32)
    out = score_clip(HeuristicScorer(), frames, 25.0, audio, session_id="talk.mp4").to_json()
    fields = {"session_id", "signal_id", "kind", "frame_start", "frame_end", "start_ms", "end_ms", "score",
              "offset_ms", "margin", "confidence", "direction", "label", "occluded", "scorer", "latency_ms",
              "emitted_at_ms"}
    assert out["windows"] and out["blocks"]
    for sig in out["windows"] + out["blocks"]:
        assert fields <= set(sig), fields - set(sig)
        assert sig["session_id"] == "talk.mp4"
        assert sig["signal_id"] == signal_id("talk.mp4", Kind(sig["kind"]), sig["frame_start"])
        assert sig["latency_ms"] >= 0 and sig["emitted_at_ms"] > 1_600_000_000_000


def test_a_slow_clips_jobs_get_the_audio_their_offsets_reach(monkeypatch):
    """The scorer's search margin is for 25 fps frames and up: at 12.5 fps (and 45 fps, read at
    22.5) its offsets and audio context reach further in ms, and a clip's jobs get that much
    audio, so no offset of the search is read on padding (a review)."""
    import numpy as np
    import torch

    from model_store.architectures import build
    from model_store.bundle import AudioSpec, Calibration, Manifest, VideoSpec
    from model_store.features import audio_grid_features
    from worker.clipscore import score_clip
    from worker.scoring.postprocess import ScorerConfig
    from worker.scoring.rate import at_model_rate
    from worker.scoring.scorer import ModelScorer

    torch.manual_seed(0)
    man = Manifest("t", "0.0.1", "syncnet_lite_v1", {}, 128, AudioSpec(), VideoSpec(), Calibration(),
                   "weights.safetensors", "")
    scorer = ModelScorer(man, build("syncnet_lite_v1", {}).state_dict(), ScorerConfig(cpu_jit=False), device="cpu")
    seen = []
    real = scorer.score_batch
    monkeypatch.setattr(scorer, "score_batch", lambda reqs, streams: (seen.extend(reqs), real(reqs, streams))[1])
    for fps in (12.5, 45.0, 25.0):
        n = int(6 * fps)
        seen.clear()
        rng = np.random.default_rng(1)
        score_clip(scorer, rng.integers(0, 255, (n, 96, 96), dtype=np.uint8), fps,
                   (0.1 * rng.standard_normal(6 * 16000)).astype(np.float32))
        inner = 0
        for req in seen:
            job = at_model_rate(req)
            prep = scorer._prepare(job)
            first = job.frames.frame_start - prep.search.pad_before - scorer.audio_ctx
            n_pos = prep.search.n_audio(job.frames.n_frames) + 2 * scorer.audio_ctx
            _, ok = audio_grid_features(req.audio.samples, 16000, req.audio.start_ms(), first, n_pos,
                                        job.frames.fps, scorer.manifest.audio)
            frame_ms = 1000.0 / job.frames.fps
            pos_ms = (first + np.arange(n_pos)) * frame_ms
            inside = (pos_ms >= 0.0) & (pos_ms + frame_ms <= 6000.0)  # the position's steps lie in the audio
            assert ok.numpy()[inside].all(), (fps, req.frames.frame_start)
            inner += int(inside.all())
        assert inner > 0, fps  # some jobs lie wholly inside the clip's audio


def test_a_face_in_view_where_the_speaker_is_not_lends_only_jobs_at_the_speakers_timing():
    """Where the chosen face is out of view, a job is read on a face in view there only if its lips
    match the audio (score >= 0.5) at the chosen face's offset, within a frame: a listener under a
    voice-over matches now and then at a chance offset (a review: +120 ms lent to a speaker at
    +40, confidence 0.55)."""
    import numpy as np

    from worker.clipscore import fill_out_of_view

    at_40 = [0, 0, 0, 0, 0, 0.2, 0.6, 0.2, 0, 0, 0]  # peaks at +40 ms (offsets -200..+200 in 40 ms steps)
    at_120 = [0, 0, 0, 0, 0, 0, 0, 0.2, 0.6, 0.2, 0]  # +120 ms
    chosen = summarise([_win(0, at_40, score=0.8), _win(25, at_40, score=0.8), _win(50, [0] * 11, Label.NO_FACE, None),
                        _win(75, [0] * 11, Label.NO_FACE, None)], 25.0, HeuristicScorer(), 100)
    assert chosen.offset_ms == 40.0
    in_view = np.zeros(100, bool)
    in_view[50:] = True
    lender = summarise([_win(50, at_120, score=0.7), _win(75, at_40, score=0.7)], 25.0, HeuristicScorer(), 100)
    out, lent = fill_out_of_view(chosen, [(1, lender, in_view)], HeuristicScorer())
    assert lent == {1: 1}
    by_start = {w.frame_start: w for w in out.windows}
    assert by_start[50].label is Label.NO_FACE and by_start[75].offset_ms == 40.0


def test_two_people_taking_turns_are_each_read_on_their_own_turn():
    """Both faces in view; the kept face's lips match the first half, the other's the second, at
    the same timing: the second half's jobs are read on the other face (a review: the listener's
    lips were published OK at chance offsets and the clip's confidence fell to 0.4). A face whose
    lips match only a little better, or at another timing, does not take a job."""
    import numpy as np

    from worker.clipscore import read_turns

    at_40 = [0, 0, 0, 0, 0, 0.2, 0.6, 0.2, 0, 0, 0]  # +40 ms
    at_0 = [0, 0, 0, 0, 0.2, 0.6, 0.2, 0, 0, 0, 0]  # 0 ms: within a frame of +40
    at_160 = [0, 0, 0, 0, 0, 0, 0, 0, 0.2, 0.6, 0.2]
    kept = summarise([_win(0, at_40, score=0.85), _win(25, at_40, score=0.8), _win(50, at_40, score=0.2),
                      _win(75, at_40, score=0.2), _win(100, at_40, score=0.5)], 25.0, HeuristicScorer(), 125)
    other = summarise([_win(0, at_0, score=0.3), _win(25, at_0, score=0.3), _win(50, at_0, score=0.9),
                       _win(75, at_160, score=0.9), _win(100, at_0, score=0.6)], 25.0, HeuristicScorer(), 125)
    out, spoken = read_turns(kept, [(1, other, np.ones(125, bool))], HeuristicScorer())
    by_start = {w.frame_start: w for w in out.windows}
    assert spoken == {1: 1}  # window 50 only: 75 is at another timing, 100 only 0.1 better
    assert by_start[50].score == 0.9 and by_start[75].score == 0.2 and by_start[100].score == 0.5
    assert by_start[0].score == 0.85


def test_a_face_seen_beside_the_kept_one_stands_in_where_it_is_alone_only_if_it_speaks_there():
    """The kept face leaves the shot; the other person, seen beside it before, stays. Where its
    lips match the audio there taken together, at the kept face's timing, they are read; a
    listener's chance match in one job is not (fill_out_of_view's stretch rule keeps listeners
    out; _speaks_where_alone lets a face that takes over the speech in)."""
    import numpy as np

    from worker.clipscore import _speaks_where_alone

    at_40 = [0, 0, 0, 0, 0, 0.2, 0.6, 0.2, 0, 0, 0]
    nf = [0] * 11
    kept = summarise([_win(0, at_40, score=0.85), _win(25, at_40, score=0.8), _win(50, nf, Label.NO_FACE, None),
                      _win(75, nf, Label.NO_FACE, None)], 25.0, HeuristicScorer(), 100)
    alone = np.zeros(100, bool)
    alone[50:] = True
    speaks = summarise([_win(0, at_40, score=0.3), _win(25, at_40, score=0.3), _win(50, at_40, score=0.8),
                        _win(75, at_40, score=0.75)], 25.0, HeuristicScorer(), 100)
    listens = summarise([_win(0, at_40, score=0.3), _win(25, at_40, score=0.3), _win(50, at_40, score=0.65),
                         _win(75, nf, score=0.1)], 25.0, HeuristicScorer(), 100)
    assert _speaks_where_alone(speaks, alone, kept, HeuristicScorer())
    assert not _speaks_where_alone(listens, alone, kept, HeuristicScorer())


def test_telephone_band_audio_gets_a_note_and_wideband_audio_none():
    """8 kHz audio lacks the 4-8 kHz band the networks hear (the dev clips through 8 kHz: 4
    points of clips and windows, scores 0.68 -> 0.55); 11.025 kHz and up read as 16 kHz."""
    from worker.cli import input_notes
    from worker.media.decode import MediaInfo

    def notes(rate, narrowband_model=False):
        info = MediaInfo(path="x.mp4", duration_s=10.0, container="mov", has_video=True, has_audio=True,
                         fps=25.0, sample_rate=rate, audio_streams=1)
        return input_notes(info, None, 10.0, 10.0, 25.0, narrowband_model)

    assert any("sampled at 8000 Hz (sound up to 4000 Hz)" in n for n in notes(8000))
    assert notes(11025) == [] and notes(16000) == [] and notes(48000) == []
    # read by the bundle's narrowband model: the summary's own note on those windows says so
    assert notes(8000, narrowband_model=True) == []


def test_a_clips_score_reads_its_peak_as_the_windows_do():
    """The calibration maps a window's peak height averaged over +/-peak_smooth_frames; the clip
    summary's score and confidence read the summed curve the same way (the raw height scored a
    clip of one window above that window), while its offset stays the raw sum's peak."""
    import torch

    from model_store.bundle import DEFAULT_BUNDLE_DIR, load_bundle
    from worker.scoring.calibration import score_from_similarity
    from worker.scoring.offsets import smooth_curve
    from worker.scoring.postprocess import ScorerConfig

    manifest, _ = load_bundle(DEFAULT_BUNDLE_DIR)
    assert manifest.peak_smooth_frames == 1

    class Bundled:
        name, config = "stub@1", ScorerConfig()

    Bundled.manifest = manifest
    sharp = [0.0, 0.05, 0.1, 0.1, 0.15, 0.2, 0.3, 0.25, 0.62, 0.3, 0.1]  # a narrow peak at +120 ms
    one = summarise([_win(0, sharp)], 25.0, Bundled(), 25)
    window_height = float(smooth_curve(torch.tensor(sharp, dtype=torch.float64), 1).max())
    assert one.score == score_from_similarity(window_height, manifest.calibration)
    assert one.score < score_from_similarity(max(sharp), manifest.calibration)
    assert one.offset_ms == 120.0


def test_a_weak_match_and_a_short_clip_say_what_their_reading_is_worth():
    """A probe: audio 320 ms late, or another speaker's, read "+40 ms, score 0.13, UNKNOWN" with no
    word that the offset means nothing; a 9-frame clip read -40 ms with no word that it is too short."""
    from worker.clipscore import ClipSummary

    weak = ClipSummary(40.0, 0.13, 0.12, "UNKNOWN", "OK", "m@1", [], [], 125, 25.0)
    assert any("no direction" in n and "least bad" in n and "--max-offset-ms" in n for n in weak.all_notes())
    sure = ClipSummary(0.0, 0.7, 0.6, "IN_SYNC", "OK", "m@1", [], [], 125, 25.0)
    assert sure.all_notes() == []
    short = ClipSummary(-40.0, 0.3, 0.1, "IN_SYNC", "OK", "m@1", [], [], 9, 25.0)
    assert [n for n in short.all_notes() if "0.36 s long (9 frames)" in n]


def test_quiet_speech_read_as_silence_says_so_and_digital_silence_does_not():
    import numpy as np

    from worker.cli import quiet_audio_notes

    sil = [_win(0, [0] * 11, Label.SILENCE, None), _win(25, [0] * 11, Label.SILENCE, None)]
    t = np.arange(32000) / 16000
    quiet = (10 ** (-55 / 20) * np.sqrt(2) * np.sin(2 * np.pi * 220 * t)).astype(np.float32)  # -55 dBFS RMS
    (note,) = quiet_audio_notes(quiet, sil, 0.005)
    assert "2 of 2 windows read SILENCE" in note and "-55 dBFS RMS" in note and "-46 dBFS" in note
    assert quiet_audio_notes(np.zeros(32000, np.float32), sil, 0.005) == []  # nothing to raise
    assert quiet_audio_notes(quiet * 100, sil, 0.005) == []  # loud enough: the silence is the model's call
    assert quiet_audio_notes(quiet, [_win(0, [0.1] * 11)], 0.005) == []  # scored: nothing to say
