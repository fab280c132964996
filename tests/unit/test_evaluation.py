"""worker.evaluation: the statistics and helpers behind eval-synth / eval-real, and small end-to-end
runs of both harnesses (the numbers themselves are the README's, from the full commands)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from worker.evaluation import degrade as deg
from worker.evaluation.metrics import auc, ece, p_in_sync, tally, within_frames
from worker.evaluation.real import read_clip_table, speaker_group
from worker.evaluation.shifts import fit_length, mismatched_partners, shift_audio
from worker.evaluation.signals import JobTally
from worker.evaluation.synthetic import SynthEvalConfig, insert_quiet_stretch, plan_clips
from worker.scoring.types import Direction, Kind, Label, LipSyncScore


# --- metrics -----------------------------------------------------------------------------------
def _brute_auc(pos, neg):
    pairs = list(itertools.product(pos, neg))
    return sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)


def test_auc_matches_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    pos = list(rng.integers(0, 5, 40).astype(float))
    neg = list(rng.integers(0, 4, 30).astype(float))
    assert auc(pos, neg) == pytest.approx(_brute_auc(pos, neg))
    assert auc([2, 3], [0, 1]) == 1.0
    assert auc([0, 1], [2, 3]) == 0.0
    assert auc([1, 1], [1]) == 0.5
    assert auc([], [1.0]) is None


def test_ece():
    assert ece([0.9] * 10, [True] * 10)["ece"] == pytest.approx(0.1)
    # a bin predicting 0.25 with 1 of 4 right, one predicting 0.75 with 3 of 4 right: calibrated
    assert ece([0.25] * 4 + [0.75] * 4, [1, 0, 0, 0, 1, 1, 1, 0])["ece"] == pytest.approx(0.0)
    assert ece([], []) is None
    with pytest.raises(ValueError):
        ece([0.5], [True, False])


def test_within_one_frame_tolerates_rounding_only():
    frame_ms = 1000 / 29.97
    assert within_frames(33.4, 0.0, frame_ms)  # one frame, reported rounded to 0.1 ms
    assert not within_frames(66.7, 0.0, frame_ms)
    assert within_frames(40.0, 73.0, 40.0) and not within_frames(40.0, 81.0, 40.0)
    assert not within_frames(None, 0.0, 40.0)
    assert tally([True, False, True]) == {"n": 3, "hits": 2, "rate": 0.6667}


def test_p_in_sync_orders_verdicts():
    confident_in = p_in_sync(0.0, 0.9, 40.0)
    weak_in = p_in_sync(40.0, 0.2, 40.0)
    none = p_in_sync(None, 0.0, 40.0)
    weak_out = p_in_sync(120.0, 0.2, 40.0)
    confident_out = p_in_sync(-160.0, 0.9, 40.0)
    assert confident_in > weak_in > none > weak_out > confident_out


# --- shifts ------------------------------------------------------------------------------------
def test_shift_audio_sign_and_length():
    a = np.zeros(16000, np.float32)
    a[8000] = 1.0
    late = shift_audio(a, 40, 16000)  # delayed: the click is heard 640 samples later
    early = shift_audio(a, -40, 16000)
    assert late.shape == a.shape == early.shape
    assert int(np.argmax(late)) == 8640 and int(np.argmax(early)) == 7360
    assert np.array_equal(shift_audio(a, 0, 16000), a)
    assert not shift_audio(a, 5000, 16000).any()  # shifted out entirely


def test_fit_length_and_partners():
    assert np.array_equal(fit_length(np.arange(3, dtype=np.float32), 7), [0, 1, 2, 0, 1, 2, 0])
    names = ["cremad_1001_A.flv", "cremad_1001_B.flv", "vox_pcavs_00104.mp4", "vox_pcavs_741400163.mp4",
             "grid_a.mpg", "x.mp4"]
    group = lambda n: speaker_group(Path(n).stem)
    p = mismatched_partners(names, group)
    assert set(p) == set(names)
    assert all(p[n] != n and group(p[n]) != group(n) for n in names)
    assert p == mismatched_partners(list(reversed(names)), group)


# --- degradations --------------------------------------------------------------------------------
def test_degradations():
    rng = np.random.default_rng(0)
    img = np.tile(np.linspace(40, 220, 64, dtype=np.float32), (48, 1))[..., None].repeat(3, 2).astype(np.uint8)
    img[20:28, 20:44] = 30  # a dark mouth
    dark = deg.darken(img, np.random.default_rng(1))
    assert dark.dtype == np.uint8 and dark.mean() < 0.4 * img.mean()
    assert deg.blur(img, 3.0).std() < img.std()
    lips = np.array([[20.0, 24.0], [44.0, 24.0], [32.0, 20.0], [32.0, 28.0]])
    x0, y0, x1, y1 = deg.bar_box(lips)
    assert x0 < 20 < x1 < 32 and y0 < 20 and y1 > 28  # covers the left part, not the whole mouth
    barred = deg.draw_bar(img, (x0, y0, x1, y1))
    assert (barred[y0:y1, max(0, x0):x1] == deg.BAR_GREY).all() and (barred[:, 40:] == img[:, 40:]).all()
    assert deg.bar_box(np.full((4, 2), np.nan)) is None and deg.draw_bar(img, None) is img
    assert deg.darken(img[..., 0], rng).shape == img.shape[:2]  # GRAY8 ROIs too


def test_the_phone_degradation_keeps_the_speech_band_and_drops_what_8_khz_audio_cannot_carry():
    t = np.arange(16000 * 2) / 16000.0
    low, high = np.sin(2 * np.pi * 1000 * t), np.sin(2 * np.pi * 6000 * t)
    out = deg.telephone((0.3 * (low + high)).astype(np.float32), 16000)
    assert out.dtype == np.float32 and out.shape == t.shape
    mid = slice(1600, -1600)  # away from the resampler's edges
    assert abs(np.dot(out[mid], low[mid]) / np.dot(low[mid], low[mid]) - 0.3) < 0.01
    assert abs(np.dot(out[mid], high[mid]) / np.dot(high[mid], high[mid])) < 0.003
    assert deg.recipe("phone") == f"phone rate={deg.PHONE_RATE_HZ}" and "phone" in deg.KINDS


# --- job judging ---------------------------------------------------------------------------------
def _job(offset, conf, label=Label.OK):
    return LipSyncScore(Kind.WINDOW, 0, 25, 0, 1000, None if offset is None else 0.8, offset, None, conf,
                        Direction.UNKNOWN, label, "t@1")


def test_job_tally_excludes_silence_and_counts_other_nulls_wrong():
    t = JobTally(0.5)
    t.add_all([_job(40.0, 0.9), _job(160.0, 0.8), _job(None, 0.0, Label.SILENCE), _job(None, 0.0, Label.NO_FACE),
               _job(80.0, 0.2)], true_ms=50.0, frame_ms=40.0)
    d = t.as_dict()
    assert (d["n"], d["hits"], d["silence_excluded"], d["no_offset_counted_wrong"]) == (4, 2, 1, 1)
    assert d["confident_and_wrong_share"] == 0.25


# --- clip table and synthetic plan ---------------------------------------------------------------
def test_read_clip_table_flags_clips_whose_own_audio_may_be_off(tmp_path):
    (tmp_path / "README.md").write_text(
        "| file | category | seconds | note |\n|---|---|---|---|\n"
        "| a.mp4 | real | 2 | audio ~240 ms late |\n| b.mp4 | real | 2 | heavy noise |\n"
        "| gen_c.mp4 | generated | 2 | |\n")
    for n in ("a.mp4", "b.mp4", "gen_c.mp4", "d.webm", "notes.txt"):
        (tmp_path / n).write_bytes(b"x")
    clips = {c.name: c for c in read_clip_table(tmp_path)}
    assert set(clips) == {"a.mp4", "b.mp4", "gen_c.mp4", "d.webm"}
    assert clips["a.mp4"].flagged and not clips["b.mp4"].flagged
    assert clips["gen_c.mp4"].category == "generated" and clips["d.webm"].category == "real"


def test_read_clip_table_knows_clips_whose_source_aligned_their_streams(tmp_path):
    """LRS2/LRS3 released every clip with its audio offset measured and corrected by SyncNet: a
    held-out subset chosen by provenance, not by the scorer's reading. A silent video of such a
    clip muxed with a wav from elsewhere is not that release."""
    from worker.evaluation.real import HELDOUT_SOURCE_ALIGNED, SETS

    (tmp_path / "README.md").write_text(
        "| file | category | terms | note |\n|---|---|---|---|\n"
        "| ted.webm | real | MIT (repo); LRS3/TED (CC BY-NC-ND) | |\n"
        "| muxed.mp4 | real | LRS3/TED | silent video muxed with the clean target wav |\n"
        "| vox.mp4 | real | VoxCeleb2-style YouTube crop | |\n"
        "| lrs30.mp4 | real | LRS30 lookalike | |\n"
        "| late.mp4 | real | LRS2-BBC | audio ~80 ms late |\n")
    for n in ("ted.webm", "muxed.mp4", "vox.mp4", "lrs30.mp4", "late.mp4", "other.mp4"):
        (tmp_path / n).write_bytes(b"x")
    clips = {c.name: c for c in read_clip_table(tmp_path)}
    assert {n for n, c in clips.items() if c.source_aligned} == {"ted.webm", "late.mp4"}
    aligned = SETS[HELDOUT_SOURCE_ALIGNED]
    assert [n for n, c in sorted(clips.items()) if aligned(c)] == ["ted.webm"]  # the flagged one is not
    from dataclasses import replace
    assert not aligned(replace(clips["ted.webm"], trained_on=True))


def test_cross_validation_folds_judge_only_speakers_they_never_trained_on(tmp_path):
    from worker.evaluation.real import ClipInfo, assign_judges

    clips = [ClipInfo(f"{n}.mp4", tmp_path / f"{n}.mp4", "real") for n in ("a", "b", "c", "d")]
    clips.append(ClipInfo("gen_e.mp4", tmp_path / "gen_e.mp4", "generated"))
    everything = {"a", "b", "c"}  # the shipped bundle: trained on every dev speaker (not d)
    fold1, fold2 = {"a"}, {"b", "c"}
    got = {c.stem: (c.judge, c.trained_on) for c in assign_judges(clips, [everything, fold1, fold2], 2)}
    assert got == {"a": (2, False), "b": (1, False), "c": (1, False), "d": (1, False), "gen_e": (0, False)}
    # a clip every fold trained on is judged by the bundle, and counted as trained on
    got = {c.stem: (c.judge, c.trained_on) for c in assign_judges(clips, [everything, {"a"}, {"a"}], 2)}
    assert got["a"] == (0, True)
    # without folds the bundle judges everything, as before
    got = {c.stem: (c.judge, c.trained_on) for c in assign_judges(clips, [everything], 0)}
    assert got == {"a": (0, True), "b": (0, True), "c": (0, True), "d": (0, False), "gen_e": (0, False)}


def test_a_speakers_other_file_counts_as_trained_on(tmp_path):
    """vox_pcavs_00104 and vox_pcavs_741400163 are one speaker (the dev clips' README): a bundle
    or fold that trained on one has seen the other's speaker (a review: judged per file, 00104
    counted as held out for the bundle, and the folds' order alone kept it from a fold that had
    trained on its speaker)."""
    from worker.evaluation.real import ClipInfo, assign_judges

    clips = [ClipInfo(f"{n}.mp4", tmp_path / f"{n}.mp4", "real")
             for n in ("vox_pcavs_00104", "vox_pcavs_741400163", "cremad_1001_DFA_ANG_XX", "x")]
    bundle = {"vox_pcavs_741400163", "cremad_1001_DFA_SAD_XX", "x"}
    got = {c.stem: (c.judge, c.trained_on) for c in assign_judges(clips, [bundle], 0)}
    assert got == {"vox_pcavs_00104": (0, True), "vox_pcavs_741400163": (0, True),
                   "cremad_1001_DFA_ANG_XX": (0, True), "x": (0, True)}
    fold_a, fold_b = {"vox_pcavs_741400163"}, {"x"}
    for order in ([bundle, fold_a, fold_b], [bundle, fold_b, fold_a]):
        judged = {c.stem: order[c.judge] for c in assign_judges(clips, order, 2)}
        assert judged["vox_pcavs_00104"] is fold_b and judged["vox_pcavs_741400163"] is fold_b
        assert judged["x"] is fold_a


def test_synthetic_plan_uses_unseen_seeds_and_spread_offsets():
    plans = plan_clips(SynthEvalConfig(n_clips=200))
    assert plans == plan_clips(SynthEvalConfig(n_clips=200))
    assert all(1000 <= p.seed < 1_000_000 for p in plans)
    offs = np.array([p.true_offset_ms for p in plans])
    assert offs.min() >= -200 and offs.max() <= 200 and offs.min() < -150 and offs.max() > 150
    assert np.mean(np.abs(offs / 40 - np.round(offs / 40)) > 0.05) > 0.5  # mostly off the frame grid
    quiet = insert_quiet_stretch(np.ones(16000, np.float32), 16000, 0.25, 0.5, 0.0, 1)
    assert not quiet[4000:8000].any() and quiet[:4000].all() and quiet[8000:].all()


# --- the harnesses end to end, small -------------------------------------------------------------
def test_eval_synth_runs_small():
    from worker.evaluation.synthetic import run_synthetic
    from worker.scoring.loader import load_scorer

    r = run_synthetic(load_scorer(None), SynthEvalConfig(n_clips=2, seconds=2.0, conditions=("clean",)))
    c = r["conditions"]["clean"]
    assert c["windows_1s"]["n"] + c["windows_1s"]["silence_excluded"] == 4
    assert set(r["targets"]) >= {"clean.windows_1s", "sync_auc", "silence_violations"}
    assert r["silence"]["truly_silent_jobs"] > 0  # the inserted quiet stretch is checked


def test_eval_real_runs_small(dev_clips_dir, tmp_path):
    from worker.evaluation.real import RealEvalConfig, run_real_eval
    from worker.scoring.loader import load_scorer

    clips = tmp_path / "clips"
    clips.mkdir()
    # two test speakers' clips (make_model.TEST_SPEAKERS): held out by the default bundle
    for name in ("grid_swiz3n.mpg", "cremad_1001_DFA_NEU_XX.flv"):
        (clips / name).symlink_to(dev_clips_dir / name)
    cfg = RealEvalConfig(clips_dir=clips, cache_dir=tmp_path / "cache", shifts_ms=(0, 80),
                         degraded_shifts_ms=(80,), degradations=("bar", "phone"), degrade_on="rois", speed=False)
    from worker.scoring.postprocess import ScorerConfig

    # the evaluation searches past its largest shift; the control also under the product's search
    scorer = load_scorer(None, ScorerConfig(min_offset_ms=-200.0, max_offset_ms=200.0))
    wide = load_scorer(None, ScorerConfig(min_offset_ms=-320.0, max_offset_ms=320.0))
    r = run_real_eval(wide, cfg, folds=(wide,), control=(scorer, scorer))  # the bundle as its own fold
    assert [f["judges"] for f in r["cv_folds"]] == [["cremad_1001_DFA_NEU_XX.flv", "grid_swiz3n.mpg"]]
    ctrl, evals = r["mismatched_default_search"]["heldout_real"], r["mismatched"]["heldout_real"]
    assert ctrl["n_pairs"] == evals["n_pairs"] == 2
    assert r["targets"]["mismatched.heldout_real.auc_window_score"]["value"] == ctrl["auc_window_score"]
    # the window scores differ with the search (its best similarity and the margin to the rest)
    assert evals["mismatched_window_score"] != ctrl["mismatched_window_score"]
    from worker.evaluation.report import real_lines, real_markdown

    assert "Cross-validated" in real_markdown(r)[0]
    assert any("cross-validation fold" in line and "judges 2 real clips" in line for line in real_lines(r))
    assert r["n_real"] == 2 and len(r["per_clip"]) == 2
    assert r["aggregates"]["all_real"]["clips"]["n"] == 4
    assert r["mismatched"]["heldout_real"]["n_pairs"] == 2
    # no README here, so no clip is known to come from a source that aligned it: an empty set
    assert r["sets"]["heldout_real_source_aligned"] == 0
    assert r["mismatched"]["heldout_real_source_aligned"]["n_pairs"] == 0
    # each clip's mismatched pairs say which pool they were drawn for
    grid = next(row for row in r["per_clip"] if row["clip"] == "grid_swiz3n.mpg")
    assert sorted(m["pool"] for m in grid["mismatched"]) == ["all_real", "heldout_real"]
    assert set(r["targets"]) >= {"heldout_real.clips", "heldout_real.windows_1s"}
    assert r["degraded"]["bar"]["all_real"]["clips"]["n"] == 2
    phone = r["degraded"]["phone"]
    assert phone["all_real"]["clips"]["n"] == 2 and phone["method"].startswith("audio resampled through 8000 Hz")
    # the frames are the clean track's: the same faces, where the bar's re-drawn ROIs differ
    assert phone["face_present_share"] == r["degraded"]["bar"]["face_present_share"]
    assert any(line.lstrip().startswith("phone") for line in real_lines(r))
    # the table's header names the first kind's method (the bar's: mouth ROIs); the phone row says its own
    assert any(line.startswith("| phone (audio resampled through 8000 Hz") for line in real_markdown(r))
    # the default bundle's narrowband model read the phone windows with speech, and none of the clean ones
    nb = r["scorer"] + "-nb"
    assert phone["all_real"]["windows_by_scorer"].get(nb, 0) > 0
    assert nb not in phone["clean_same_pairs"]["all_real"]["windows_by_scorer"]
    assert nb not in r["aggregates"]["all_real"]["windows_by_scorer"]
    assert any(line.lstrip().startswith("phone") and "narrowband model" in line for line in real_lines(r))
    assert any(line.startswith("The bundle's narrowband model") for line in real_markdown(r))
    assert (tmp_path / "cache" / "grid_swiz3n.npz").exists()  # built on a fresh machine
    # the classical cross-check ran on both (each fitted on the other speaker) and is reported
    for row in r["per_clip"]:
        assert isinstance(row["classical_own_offset_frames"], int) and -10 <= row["classical_own_offset_frames"] <= 10
    cc = r["cross_check"]
    assert cc["heldout_without_them"]["clips"]["n"] == 4 - 2 * len(cc["clips"])


def test_the_committed_cross_validation_folds_split_the_dev_speakers():
    """README's real-footage numbers: every clip the shipped bundle trained on is judged by a fold
    that never saw its speaker, and the two folds never share a speaker."""
    from model_store.bundle import DEFAULT_BUNDLE_DIR, load_bundle
    from worker.evaluation.real import speaker_group

    def data(d):
        return load_bundle(d)[0].training["data"]

    shipped = data(None)
    folds = [data(DEFAULT_BUNDLE_DIR.parent / f"cv-fold-{i}") for i in (1, 2)]
    groups = [{speaker_group(n) for n in f["dev_train_clips"]} for f in folds]
    assert groups[0] and groups[1] and not groups[0] & groups[1]
    for clip in shipped["dev_train_clips"] + shipped["dev_heldout_clips"]:
        assert any(clip in f["dev_heldout_clips"] for f in folds), clip


def test_eval_real_with_a_missing_fold_bundle_is_a_one_line_error(capsys, tmp_path):
    from worker.cli import main

    (tmp_path / "README.md").write_text("| file | category |\n|---|---|\n")
    rc = main(["eval-real", "--clips-dir", str(tmp_path), "--cv-folds", str(tmp_path / "no-such-bundle"),
               "--no-speed", "--degradations", ""])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "Traceback" not in err[0]
    assert "--cv-folds" in err[0] and "no-such-bundle" in err[0]


def test_a_cached_track_stays_fresh_when_only_its_sources_modification_time_moves(tmp_path):
    """A re-provisioned clip folder (same bytes, new mtimes) must not cost minutes of re-tracking;
    changed bytes must."""
    import os

    from model_store.bundle import sha256_file
    from worker.evaluation.real import _fresh
    from worker.media.decode import TIMELINE_VERSION

    src, npz = tmp_path / "clip.mp4", tmp_path / "clip.npz"
    src.write_bytes(b"video bytes")
    now = np.int32(TIMELINE_VERSION)
    np.savez(npz, source_sha256=np.str_(sha256_file(src)), timeline=now)
    assert _fresh(npz, src)
    later = npz.stat().st_mtime + 100
    os.utime(src, (later, later))  # copied again: newer than the cache, same content
    assert _fresh(npz, src)
    assert npz.stat().st_mtime >= src.stat().st_mtime  # touched: the next check is a stat
    src.write_bytes(b"other video bytes")
    os.utime(src, (later + 100, later + 100))
    assert not _fresh(npz, src)
    np.savez(npz, rois=np.zeros(1), timeline=now)  # a cache without the digest: modification times decide
    os.utime(src, (npz.stat().st_mtime - 100,) * 2)
    assert _fresh(npz, src)
    os.utime(src, (npz.stat().st_mtime + 100,) * 2)
    assert not _fresh(npz, src)
    # decoded on another timeline convention (media.decode): stale, however new
    for old in ({}, {"timeline": np.int32(TIMELINE_VERSION - 1)}):
        np.savez(npz, source_sha256=np.str_(sha256_file(src)), **old)
        os.utime(src, (npz.stat().st_mtime - 100,) * 2)
        assert not _fresh(npz, src)
    # made by another tracker, or degraded with other parameters: stale too (a review: a change
    # to either was read from the old caches); caches that predate the fields are today's
    from worker.evaluation import degrade as deg
    from worker.tracking.tracker import TRACKER_VERSION

    def cache(**fields):
        np.savez(npz, source_sha256=np.str_(sha256_file(src)), timeline=now, **fields)
        os.utime(src, (npz.stat().st_mtime - 100,) * 2)

    cache()
    assert _fresh(npz, src) and _fresh(npz, src, deg.recipe("dark"))
    cache(tracker=np.int32(TRACKER_VERSION + 1))
    assert not _fresh(npz, src)
    cache(tracker=np.int32(TRACKER_VERSION), degrade=np.str_(deg.recipe("dark")))
    assert _fresh(npz, src, deg.recipe("dark"))
    cache(tracker=np.int32(TRACKER_VERSION), degrade=np.str_("dark gain=0.5 gamma=1.4 noise=4.0"))
    assert not _fresh(npz, src, deg.recipe("dark"))


def test_the_report_command_says_what_is_wrong_in_one_line(tmp_path, capsys):
    from worker.evaluation.report import main

    bad = tmp_path / "bad.json"
    bad.write_text('{"x": 1}')
    for argv, code in (([], 2), ([str(tmp_path / "nope.json")], 3), ([str(bad)], 3)):
        assert main(argv) == code
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and "Traceback" not in err[0]
    assert main(["--help"]) == 0 and "REPORT.json" in capsys.readouterr().out


def test_the_evaluations_search_past_the_largest_offset_they_apply():
    """At the search's edge the scorer holds any offset beyond it: a +/-200 ms shift under a
    +/-200 ms search was 'found' by estimates that would have gone further (a review: 8 of 96
    such pairs read 267-320 ms under a wider search). Unless told, eval-* search 120 ms past."""
    from types import SimpleNamespace

    from worker.evaluation.cli import SEARCH_BEYOND_MS, _search_past

    args = SimpleNamespace(max_offset_ms=None)
    _search_past(args, 200)
    assert args.max_offset_ms == 200 + SEARCH_BEYOND_MS == 320
    args = SimpleNamespace(max_offset_ms=250.0)
    _search_past(args, 200)
    assert args.max_offset_ms == 250.0  # given: kept, and the report says it is not past the shifts
    args = SimpleNamespace(max_offset_ms=None)
    _search_past(args, 950)
    assert args.max_offset_ms == 1000.0


def test_the_confident_and_wrong_share_says_of_how_many_confident_windows():
    """0.003 confident-and-wrong under the bar was all 11 confident windows (a review): the
    tally and the report give the count and the share of them wrong."""
    from worker.evaluation.report import _confident
    from worker.evaluation.signals import JobTally
    from worker.scoring.types import Direction, Kind, Label, LipSyncScore

    def job(offset_ms, conf):
        return LipSyncScore(kind=Kind.WINDOW, frame_start=0, frame_end=25, start_ms=0, end_ms=1000, score=0.5,
                            offset_ms=offset_ms, margin=0.1, confidence=conf, direction=Direction.UNKNOWN,
                            label=Label.OK, scorer="t")

    tally = JobTally(0.5)
    for off, conf in [(0, 0.1)] * 97 + [(120, 0.9)] * 3:
        tally.add(job(off, conf), 0.0, 40.0)
    d = tally.as_dict()
    assert d["confident"] == 3 and d["wrong_if_confident"] == 1.0 and d["confident_and_wrong_share"] == 0.03
    assert _confident(d) == "0.030 (3 confident, 100% of them wrong)"
