"""worker.tracking: ROI geometry (pure), and the FaceMesh tracker on a real dev clip and on
media without a face."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from worker.tracking import geometry as geo
from worker.tracking import occlusion as occ

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
DEV = DATA / "dev-clips"


def dev_clip(name: str) -> Path:
    if not DEV.is_dir():
        pytest.skip(f"dev clips folder absent: {DEV} (tests on real footage skipped)")
    return DEV / name


@pytest.fixture(scope="module")
def tracker():
    pytest.importorskip("mediapipe", reason="mediapipe (the media extra) is not installed")
    from worker.tracking import MouthTracker

    return MouthTracker(roi_size=96, keep_rgb=True)


@pytest.fixture(scope="module")
def vox_frames():
    from worker.media.decode import iter_video, probe

    path = dev_clip("vox_pcavs_00015.mp4")
    return next(iter_video(path, chunk_frames=75)), probe(path).fps


# -- pure geometry ---------------------------------------------------------------------------

def test_roi_params_and_crop_level_the_mouth():
    # A mouth tilted by 30 degrees: corners 40 px apart around (100, 80).
    ang = np.radians(30)
    lips = np.zeros((len(geo.LIP_INDICES), 2))
    n = len(geo.OUTER_LIP)
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    ellipse = np.stack([20 * np.cos(t), 6 * np.sin(t)], 1)
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    lips[:n] = ellipse @ rot.T + [100, 80]
    lips[n:] = 0.5 * ellipse @ rot.T + [100, 80]
    lips[geo.LIP_POS[geo.MOUTH_LEFT]] = rot @ [-20, 0] + [100, 80]
    lips[geo.LIP_POS[geo.MOUTH_RIGHT]] = rot @ [20, 0] + [100, 80]
    p = geo.roi_params(lips)
    assert p[:2] == pytest.approx([100, 80], abs=1.0)
    assert p[2] == pytest.approx(80.0)  # 2 x corner distance
    assert np.degrees(p[3]) == pytest.approx(30.0)
    roi = geo.to_roi_coords(lips, p, 96)
    left, right = roi[geo.LIP_POS[geo.MOUTH_LEFT]], roi[geo.LIP_POS[geo.MOUTH_RIGHT]]
    assert left == pytest.approx([0.25, 0.5], abs=0.01) and right == pytest.approx([0.75, 0.5], abs=0.01)


def test_crop_large_roi_is_antialiased_and_centred():
    img = np.zeros((1000, 1000, 3), np.uint8)
    img[480:520, 480:520] = 255  # white square at the centre
    crop = geo.crop_roi(img, np.array([500.0, 500.0, 400.0, 0.0]), 96)
    ys, xs = np.nonzero(crop[..., 0] > 128)
    assert abs(ys.mean() - 47.5) < 1 and abs(xs.mean() - 47.5) < 1
    assert 8 <= len(np.unique(ys)) <= 11  # 40 px of 400 -> ~9.6 px of 96


def _lips(open_gap: float) -> np.ndarray:
    """40 lip points (LIP_INDICES order) on two ellipses, corners at x = +/-1, inner lips apart by
    ``open_gap``."""
    n = len(geo.OUTER_LIP)
    ang = np.linspace(np.pi, -np.pi, n, endpoint=False)  # 61 (left corner) first, then the lower lip
    outer = np.stack([np.cos(ang), -0.45 * np.sin(ang)], -1)
    inner = np.stack([0.8 * np.cos(ang), -(0.05 + open_gap / 2) * np.sin(ang)], -1)
    return np.concatenate([outer, inner])


def test_mouth_shape_ignores_pose_and_follows_the_gap():
    closed, wide = _lips(0.0), _lips(0.6)
    base = geo.mouth_shape(np.stack([closed, wide]))
    assert base.shape == (2, geo.N_SHAPE_FEATURES)
    assert base[1, 0] == pytest.approx(base[0, 0] + 0.3, abs=1e-4)  # gap 0.6 over width 2
    a = np.deg2rad(17.0)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    moved = np.stack([closed, wide]) @ rot.T * 3.7 + np.array([40.0, -12.0])
    assert np.allclose(geo.mouth_shape(moved), base, atol=1e-5)


def test_bridge_only_short_gaps_and_smoothing_stays_inside_runs():
    t_len = 12
    params = np.zeros((t_len, 4))
    params[:, 0] = np.arange(t_len) * 10.0
    params[:, 2] = 50.0
    valid = np.ones(t_len, bool)
    valid[3:5] = False  # 2-frame gap: bridged
    valid[7:10] = False  # 3-frame gap: not bridged
    p = params.copy()
    p[~valid] = 0
    bridged = geo.bridge_gaps(p, valid, max_gap=2)
    assert bridged.tolist() == [i in (3, 4) for i in range(t_len)]
    assert p[3, 0] == pytest.approx(30.0) and p[4, 0] == pytest.approx(40.0)
    sm = geo.smooth_params(p, valid | bridged, radius=2)
    assert np.isnan(sm[7:10]).all()
    assert sm[2, 0] == pytest.approx(20.0)  # linear motion survives a centred average
    assert sm[6, 0] == pytest.approx(60.0)  # run edge: window shrinks symmetrically


def test_smoothing_never_blends_two_faces_across_a_jump():
    """A cut to another shot (or a track taken over by another face): the frames either side keep
    their own face's ROI instead of a blend that crops neither mouth."""
    params = np.zeros((10, 4))
    params[:, 2] = 60.0
    params[:5, 0] = 100.0 + np.arange(5) * 4.0  # a face moving right by 4 px a frame
    params[5:, 0] = 300.0  # after the cut: another face 200 px away
    sm = geo.smooth_params(params, np.ones(10, bool), radius=2)
    assert sm[2, 0] == pytest.approx(108.0)  # ordinary motion is still averaged
    assert sm[4, 0] == pytest.approx(116.0) and sm[5, 0] == pytest.approx(300.0)
    # a zoom cut: the mouth stays in place, the ROI triples
    params[:, 0], params[5:, 2] = 100.0, 180.0
    sm = geo.smooth_params(params, np.ones(10, bool), radius=2)
    assert sm[4, 2] == pytest.approx(60.0) and sm[5, 2] == pytest.approx(180.0)


@pytest.mark.parametrize("size", [(1280, 720), (1920, 1080), (1080, 1920), (3840, 2160), (7680, 4320)])
def test_small_face_tiles_cover_the_frame_at_every_level_and_hold_a_face_whole(size):
    from worker.tracking.tracker import TILE_MIN_PX, TILE_OVERLAP, tile_levels

    w, h = size
    levels = tile_levels(w, h)
    assert levels
    rng = np.random.default_rng(0)
    for k, level in enumerate(levels):
        tile_px = TILE_MIN_PX * 2 ** k
        assert tile_px < max(w, h)
        assert all(0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h for x0, y0, x1, y1 in level)
        assert all(max(x1 - x0, y1 - y0) <= tile_px for x0, y0, x1, y1 in level)
        # any face up to the tiles' overlap lies whole inside some tile of the level
        side = int(0.99 * TILE_OVERLAP * min(min(x1 - x0, y1 - y0) for x0, y0, x1, y1 in level))
        for x, y in zip(rng.integers(0, w - side, 200), rng.integers(0, h - side, 200)):
            assert any(x0 <= x and x + side <= x1 and y0 <= y and y + side <= y1 for x0, y0, x1, y1 in level)


def test_a_small_face_in_4k_is_found_wherever_it_stands(vox_frames):
    """A 150 px head-and-shoulders clip in a 4K frame: the old 3x3 tiles found it in 8 of 48
    placements (1536 px tiles: about 9 px at the detector's 192x192)."""
    pytest.importorskip("mediapipe", reason="mediapipe (the media extra) is not installed")
    import cv2

    from worker.tracking import MouthTracker

    tracker = MouthTracker()
    face = cv2.resize(vox_frames[0][0], (150, 150), interpolation=cv2.INTER_AREA)
    for x, y in [(1000, 500), (3000, 1800), (40, 1950)]:
        frame = np.zeros((2160, 3840, 3), np.uint8)
        frame[y:y + 150, x:x + 150] = face
        boxes = tracker._face_boxes(frame, geo.downscale(frame, (640, 360)))
        assert any(x <= cx <= x + 150 and y <= cy <= y + 150 for cx, cy, _ in boxes), (x, y, boxes)


def test_occlusion_score_on_synthetic_lips():
    skin_rgb = np.array([[[200, 150, 120]]], np.uint8)
    lip_rgb = (170, 90, 90)
    import cv2

    skin_lab = cv2.cvtColor(skin_rgb, cv2.COLOR_RGB2LAB)[0, 0].astype(np.float32)
    n = len(geo.OUTER_LIP)
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    lips = np.zeros((len(geo.LIP_INDICES), 2))
    lips[:n] = np.stack([48 + 24 * np.cos(t), 48 + 12 * np.sin(t)], 1)
    lips[n:] = np.stack([48 + 14 * np.cos(t), 48 + 3 * np.sin(t)], 1)
    roi = np.full((96, 96, 3), skin_rgb[0, 0], np.uint8)
    mask = occ.lip_ring_mask(lips, 96)
    roi[mask] = lip_rgb
    assert occ.occlusion_score(roi, lips, skin_lab) < 0.05
    for colour in ((128, 128, 128), (0, 0, 0), (40, 60, 200), (240, 240, 240)):
        bar = roi.copy()
        bar[36:60] = colour
        assert occ.occlusion_score(bar, lips, skin_lab) > 0.6, colour
    assert np.isnan(occ.occlusion_score(roi, lips, None))
    flags = occ.occluded_flags(np.array([0, 0.9, 0, 0, 0.9, 0.9, 0.9, np.nan]))
    assert flags.tolist() == [False, False, False, False, True, True, True, False]  # blip ignored


# -- tracker ---------------------------------------------------------------------------------

def test_no_face_anywhere(tracker, tmp_path):
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed")
    from worker.media.decode import read_video

    clip = tmp_path / "testsrc.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=1.2",
                    "-pix_fmt", "yuv420p", str(clip)], check=True)
    frames, fps = read_video(clip)
    res = tracker.track(frames, fps)
    assert res.n_frames == 30
    assert not res.face_present.any() and not res.face_detected.any() and not res.occluded.any()
    assert res.rois.shape == (30, 96, 96) and res.rois.max() == 0
    assert np.isnan(res.landmarks).all() and np.isnan(res.occlusion_score).all()


def test_real_clip_face_found_and_roi_stable(tracker, vox_frames):
    frames, fps = vox_frames
    res = tracker.track(frames, fps)
    assert res.rois.shape == (75, 96, 96) and res.rois.dtype == np.uint8
    assert res.rois_rgb.shape == (75, 96, 96, 3)
    assert res.face_present.mean() > 0.9
    assert res.landmarks.shape == (75, len(geo.LIP_INDICES), 2)
    p = res.roi_params[res.face_present].astype(float)
    step = np.hypot(np.diff(p[:, 0]), np.diff(p[:, 1])) / p[1:, 2]
    assert np.median(step) < 0.03 and step.max() < 0.15  # centre moves < 3 % of the ROI per frame
    assert np.abs(np.diff(p[:, 2]) / p[1:, 2]).max() < 0.1  # no size jumps
    # mouth-centred and level: corners near (0.25, 0.5) and (0.75, 0.5) of the ROI
    lm = res.landmarks[res.face_present]
    left = np.median(lm[:, geo.LIP_POS[geo.MOUTH_LEFT]], axis=0)
    right = np.median(lm[:, geo.LIP_POS[geo.MOUTH_RIGHT]], axis=0)
    assert left == pytest.approx([0.25, 0.5], abs=0.02) and right == pytest.approx([0.75, 0.5], abs=0.02)
    assert not res.occluded.any()
    assert res.tracking_ms > 0


def test_streamed_chunks_equal_whole_array(tracker, vox_frames):
    frames, fps = vox_frames
    whole = tracker.track(frames[:40], fps)
    chunked = tracker.track_chunks((frames[i : min(40, i + 7)] for i in range(0, 40, 7)), fps)
    np.testing.assert_array_equal(whole.rois, chunked.rois)
    np.testing.assert_array_equal(whole.face_present, chunked.face_present)


def test_crops_spilled_to_disk_equal_the_ones_kept_in_ram(tracker, vox_frames, monkeypatch, tmp_path):
    """A long clip's crops go to a temporary file past the spool's budget (tracking.spool); the
    result is the same array, gray and RGB, and no file is left behind."""
    from worker.tracking import spool

    frames, fps = vox_frames
    in_ram = tracker.track(frames[:40], fps)
    monkeypatch.setattr(spool, "CHUNK_FRAMES", 8)
    monkeypatch.setattr(spool, "SPOOL_RAM_BYTES", 96 * 96 * 10)  # past 10 crops
    monkeypatch.setattr(spool.tempfile, "tempdir", str(tmp_path))
    on_disk = tracker.track(frames[:40], fps)
    assert isinstance(on_disk.rois, np.memmap) and isinstance(on_disk.rois_rgb, np.memmap)
    np.testing.assert_array_equal(in_ram.rois, on_disk.rois)
    np.testing.assert_array_equal(in_ram.rois_rgb, on_disk.rois_rgb)
    np.testing.assert_array_equal(in_ram.face_present, on_disk.face_present)
    assert list(tmp_path.iterdir()) == [] and on_disk.notes == [] and in_ram.notes == []
    # no temporary file to be had: the crops stay in RAM, and the track says so (score prints it)
    monkeypatch.setattr(spool.tempfile, "tempdir", str(tmp_path / "missing"))
    kept = tracker.track(frames[:40], fps)
    np.testing.assert_array_equal(in_ram.rois, kept.rois)
    assert len(kept.notes) == 1 and "stayed in memory" in kept.notes[0] and "missing" in kept.notes[0]


def test_short_dropout_bridged_long_one_labelled(tracker, vox_frames):
    frames, fps = vox_frames
    f = frames[:40].copy()
    f[10:12] = 0  # 2 black frames: bridged
    f[25:30] = 0  # 5 black frames: no face
    res = tracker.track(f, fps)
    assert not res.face_detected[10:12].any() and res.bridged[10:12].all() and res.face_present[10:12].all()
    assert not res.face_present[25:30].any() and not res.bridged[25:30].any()
    assert res.rois[25:30].max() == 0
    assert res.face_present[:10].all() and res.face_present[12:25].all()


def test_bar_over_the_mouth_is_flagged_occluded(tracker, vox_frames):
    frames, fps = vox_frames
    clean = tracker.track(frames[:30], fps)
    f = frames[:30].copy()
    for t in range(30):
        cx, cy, side, _ = clean.roi_params[t]
        f[t, int(cy - 0.2 * side) : int(cy + 0.2 * side), int(cx - 0.35 * side) : int(cx + 0.35 * side)] = 120
    res = tracker.track(f, fps)
    assert res.face_present.mean() > 0.9
    assert res.occluded[res.face_present].mean() > 0.8
    assert np.nanmedian(res.occlusion_score) > np.nanmedian(clean.occlusion_score) + 0.4


def test_prepare_writes_npz_and_resumes(tmp_path):
    pytest.importorskip("mediapipe")
    from worker.tracking import prepare

    clip = dev_clip("grid_bbaf2n.mpg")
    out = tmp_path / "roi"
    assert prepare.main(["--src", str(clip), "--out", str(out)]) == 0
    z = np.load(out / "grid_bbaf2n.npz")
    t = z["rois"].shape[0]
    assert z["rois"].shape == (t, 96, 96) and z["rois"].dtype == np.uint8 and t == 75
    assert float(z["fps"]) == 25.0 and z["audio"].dtype == np.float32
    assert abs(z["audio"].shape[0] / 16000 - t / 25) < 0.1
    assert z["face_present"].mean() > 0.9 and str(z["source"]) == "grid_bbaf2n"
    done = json.loads((out / "DONE").read_text())
    assert done["clips_done"] == 1 and done["frames"] == 75 and done["failed"] == []
    mtime = (out / "grid_bbaf2n.npz").stat().st_mtime_ns
    assert prepare.main(["--src", str(clip), "--out", str(out)]) == 0  # resumable: skipped
    assert (out / "grid_bbaf2n.npz").stat().st_mtime_ns == mtime


def test_track_media_own_audio_and_external_audio(tmp_path):
    pytest.importorskip("mediapipe")
    from worker.media.decode import MediaError
    from worker.tracking.clip import track_media, write_wav

    path = dev_clip("cremad_1001_DFA_HAP_XX.flv")  # 29.97 fps, video starts 27 ms after audio
    clip = track_media(path)
    assert clip.fps == pytest.approx(30000 / 1001) and not clip.no_face
    assert clip.frames.shape[1:] == (96, 96) and clip.track.face_present.mean() > 0.9
    assert abs(len(clip.audio) / 16000 - clip.frames.shape[0] / clip.fps) < 0.1
    delayed = np.concatenate([np.zeros(1600, np.float32), clip.audio])  # audio 100 ms late
    wav = tmp_path / "delayed.wav"
    write_wav(wav, delayed)
    other = track_media(path, audio_path=wav)
    np.testing.assert_array_equal(other.frames, clip.frames)
    # the WAV takes the place of the clip's own track, which starts at 0 ms here, while frame 0
    # shows at 27 ms (the video's start): the WAV's first 27 ms come before frame 0
    lead = round(16000 * 0.027)
    assert np.abs(other.audio - delayed[lead:]).max() < 1e-3
    with pytest.raises(MediaError, match="no audio stream"):
        silent = tmp_path / "silent.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(path), "-an", "-t", "0.5", str(silent)], check=True)
        track_media(silent)


@pytest.mark.parametrize("with_grep", [True, False])
def test_mediapipes_native_start_up_lines_are_dropped_and_nothing_else(capfd, monkeypatch, with_grep):
    import os

    from worker.tracking import native_log
    from worker.tracking.native_log import is_noise, quiet_native_stderr

    if not with_grep:  # no grep to start: the lines are kept and replayed afterwards
        monkeypatch.setattr(native_log.shutil, "which", lambda name: None)

    noise = ["INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
             "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
             ("W0000 00:00:1796596790.605132   17353 inference_feedback_manager.cc:114] Feedback manager "
              "requires a model with a single signature inference. Disabling support for feedback tensors.")]
    assert all(is_noise(line) for line in noise)
    assert not is_noise("error: something real") and not is_noise("Traceback (most recent call last):")
    with quiet_native_stderr():
        for line in [noise[0], "a line of our own", noise[2]]:
            os.write(2, (line + "\n").encode())
    err = capfd.readouterr().err
    assert err.strip() == "a line of our own"


def test_native_last_words_before_an_abort_reach_stderr():
    # native code that ends the process (an absl CHECK, OpenBLAS's exit(1) out of memory) inside
    # the tracker's quiet scope: its message used to die with the buffered lines
    import sys

    code = ("import os\nfrom worker.tracking.native_log import quiet_native_stderr\n"
            "with quiet_native_stderr():\n"
            "    os.write(2, b'INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n')\n"
            "    os.write(2, b'Memory allocation still failed after 10 retries, giving up.\\n')\n"
            "    os._exit(1)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                         cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip() == "Memory allocation still failed after 10 retries, giving up."


def test_a_gap_in_a_variable_rate_video_is_no_face_not_a_still_mouth(tracker, tmp_path):
    """A probe: a VFR file that lost 1 s of frames had the slots filled with the nearest frame, and
    the window over them read +160 ms, AUDIO_LAGS, at confidence 0.37: a still mouth under speech."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed")
    clip = tmp_path / "gap.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(dev_clip("vox_pcavs_00015.mp4")), "-t", "3",
                    "-vf", r"select='lt(n\,25)+gt(n\,50)',scale=320:-2", "-fps_mode", "vfr", "-an", str(clip)],
                   check=True)
    (res, *_others) = tracker.track_faces_file(clip, fps=25.0)
    assert not res.face_present[28:48].any() and not res.face_detected[28:48].any()
    assert res.face_present[:24].all() and res.face_present[52:70].all()
    assert any("gap(s) of the video stream" in n for n in res.notes), res.notes
    # as TrackResult says of a frame with no face: a zero crop, NaN landmarks and ROI params
    assert not res.rois[28:48].any() and res.rois[:24].any()
    for values in (res.landmarks, res.landmarks_image, res.roi_params, res.occlusion_score):
        assert np.isnan(values[28:48]).all() and not np.isnan(values[:24]).any()


def test_frames_in_a_gap_are_no_face_also_in_crops_kept_read_only():
    """_mark_no_face on a result whose crops are a read-only array (a memmap opened "r"): copied,
    not a crash."""
    from worker.tracking.tracker import TrackResult, _mark_no_face

    n = 6
    rois = np.ones((n, 4, 4), np.uint8)
    rois.flags.writeable = False
    res = TrackResult(rois=rois, face_present=np.ones(n, bool), face_detected=np.ones(n, bool),
                      bridged=np.zeros(n, bool), landmarks=np.zeros((n, 40, 2), np.float32),
                      landmarks_image=np.zeros((n, 40, 2), np.float32), roi_params=np.zeros((n, 4), np.float32),
                      occlusion_score=np.zeros(n, np.float32), occluded=np.ones(n, bool), fps=25.0,
                      frame_size=(8, 8), tracking_ms=0.0)
    _mark_no_face(res, [(1, 3), (5, 6)])
    gone = np.array([False, True, True, False, False, True])
    assert (res.rois[gone] == 0).all() and (res.rois[~gone] == 1).all()
    assert np.isnan(res.landmarks[gone]).all() and not np.isnan(res.landmarks[~gone]).any()
    assert np.isnan(res.roi_params[gone]).all() and np.isnan(res.occlusion_score[gone]).all()
    assert (res.face_present == ~gone).all() and not res.occluded[gone].any()
