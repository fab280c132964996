"""More than one face in the frame: the tracker follows each face as its own track (pure
association in worker.tracking.faces), and `sync-scorer score` scores each and keeps the face
whose lips match the audio, whichever face FaceMesh happens to list first.

The two-face clip is two real dev clips side by side with one of their audio tracks. They are
speakers the default bundle trained on: what is checked here is which face is chosen, not how
well an unseen speaker is read (test_score_real.py does that)."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from worker.clipscore import ClipSummary, FaceCandidate, choose_face
from worker.tracking.faces import DUPLICATE_DIST, MAX_STEP, assign_faces, distinct_faces

LEFT, RIGHT = "vox_pcavs_00098.mp4", "vox_pcavs_00015.mp4"  # both 224x224, 25 fps
SECONDS = 4


def _p(cx: float, cy: float, side: float = 40.0) -> np.ndarray:
    return np.array([cx, cy, side, 0.0])


# -- association (pure) ----------------------------------------------------------------------

def test_faces_listed_in_another_order_continue_their_own_tracks():
    last = [_p(100, 100), _p(300, 100)]
    assert assign_faces(last, [_p(302, 101), _p(98, 99)], max_tracks=8) == [1, 0]


def test_a_face_far_from_every_track_starts_a_new_one_and_the_cap_holds():
    last = [_p(100, 100)]
    far = _p(100 + 40 * (MAX_STEP + 0.1), 100)
    assert assign_faces(last, [far, _p(101, 100)], max_tracks=8) == [1, 0]
    assert assign_faces(last, [far, _p(101, 100)], max_tracks=1) == [None, 0]
    assert assign_faces([], [_p(10, 10), _p(300, 10)], max_tracks=8) == [0, 1]


def test_each_track_takes_one_face_per_frame_the_nearest():
    # two detections near one track: the nearer continues it, the other starts a track
    assert assign_faces([_p(100, 100)], [_p(110, 100), _p(104, 100)], max_tracks=8) == [1, 0]


def test_one_face_listed_twice_is_kept_once_the_one_that_continues_its_track():
    tracked, redetected = _p(100, 100, 40), _p(104, 102, 52)  # same place, another mouth width
    other = _p(300, 100)
    assert distinct_faces([redetected, tracked, other], [_p(100, 100, 40)]) == [1, 2]
    assert distinct_faces([redetected, tracked], []) == [0]  # no track yet: the first listed
    apart = _p(100 + 40 * (DUPLICATE_DIST + 0.05), 100)
    assert distinct_faces([tracked, apart], []) == [0, 1]


# -- which face is the speaker (pure) --------------------------------------------------------

def _cand(i: int, present: int, score: float | None, scored: bool = True) -> FaceCandidate:
    s = ClipSummary(0.0, score, 0.5, "IN_SYNC", "OK", "m@1", [], [], 100, 25.0) if scored else None
    return FaceCandidate(i, present, (0.5, 0.5), s)


def test_the_face_whose_lips_match_best_is_chosen_not_the_most_seen():
    assert choose_face([_cand(0, 100, 0.12), _cand(1, 90, 0.85)]) == 1
    # a face without a score (silence, no usable window) ranks below any score
    assert choose_face([_cand(0, 100, None), _cand(1, 50, 0.05)]) == 1
    # a face seen too rarely to be scored is never chosen
    assert choose_face([_cand(0, 100, 0.3), _cand(1, 10, None, scored=False)]) == 0
    # equal scores: the face seen in more frames
    assert choose_face([_cand(0, 60, 0.5), _cand(1, 90, 0.5)]) == 1


# -- real footage ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_faces(dev_clips_dir, tmp_path_factory):
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    pytest.importorskip("mediapipe", reason="mediapipe (the media extra) is not installed")
    from worker.media.decode import probe, read_audio
    from worker.tracking.clip import write_wav

    d = tmp_path_factory.mktemp("two_faces")
    video = d / "two_faces.mp4"
    side_by_side = (f"[0:v]trim=0:{SECONDS},setpts=PTS-STARTPTS[a];"
                    f"[1:v]trim=0:{SECONDS},setpts=PTS-STARTPTS[b];[a][b]hstack=inputs=2[v]")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(dev_clips_dir / LEFT), "-i", str(dev_clips_dir / RIGHT),
                    "-filter_complex", side_by_side, "-map", "[v]", "-an", "-c:v", "libx264", "-crf", "18", "-pix_fmt", "yuv420p", str(video)],
                   check=True)
    wavs = {}
    for name in (LEFT, RIGHT):  # each clip's own audio, sample 0 = its frame 0
        path = dev_clips_dir / name
        wavs[name] = d / f"{name}.wav"
        write_wav(wavs[name], read_audio(path, 16000, info=probe(path))[: SECONDS * 16000])
    return video, wavs


def test_the_tracker_follows_both_faces_as_separate_tracks(two_faces):
    from worker.tracking import MouthTracker

    video, _ = two_faces
    tracks = MouthTracker(max_faces=4).track_faces_file(video)
    assert len(tracks) == 2
    width = tracks[0].frame_size[1]
    sides = []
    for tr in tracks:
        assert tr.face_present.mean() > 0.9
        cx = tr.roi_params[tr.face_present, 0]
        assert cx.max() - cx.min() < 0.25 * width  # never jumps to the other face
        sides.append(float(np.median(cx)) > width / 2)
    assert sorted(sides) == [False, True]
    one = MouthTracker(max_faces=1, count_faces_every=25).track_faces_file(video)
    assert len(one) == 1 and one[0].face_present.mean() > 0.9
    assert one[0].faces_seen == 2  # what tells `score` to track the clip again for more faces


def test_a_one_face_clip_is_counted_as_one_and_tracked_once(dev_clips_dir, monkeypatch):
    pytest.importorskip("mediapipe", reason="mediapipe (the media extra) is not installed")
    from worker.tracking import MouthTracker
    from worker.tracking.clip import track_speakers

    passes = []
    real = MouthTracker.track_faces_chunks
    monkeypatch.setattr(MouthTracker, "track_faces_chunks",
                        lambda self, *a, **k: passes.append(self.max_faces) or real(self, *a, **k))
    tracks = track_speakers(dev_clips_dir / "vox_pcavs_620900105.mp4", max_faces=4)
    assert passes == [1] and len(tracks) == 1 and tracks[0].faces_seen == 1


@pytest.mark.parametrize("speaker, right_half", [(LEFT, False), (RIGHT, True)])
def test_score_keeps_the_face_that_matches_the_audio(capsys, two_faces, speaker, right_half):
    from worker.cli import main

    video, wavs = two_faces
    assert main(["score", str(video), "--audio", str(wavs[speaker]), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    chosen, other = out["faces"]
    assert chosen["chosen"] and not other["chosen"]
    assert (chosen["centre"][0] > 0.5) is right_half
    assert out["score"] == chosen["score"] > 0.6 and other["score"] < 0.3
    assert abs(out["offset_ms"]) <= 40.0
    assert any("2 faces tracked" in n for n in out["notes"])


@pytest.mark.parametrize("bad", ["0", "9", "x"])
def test_a_bad_max_faces_is_one_line(capsys, two_faces, bad):
    from worker.cli import main

    video, _ = two_faces
    assert main(["score", str(video), "--max-faces", bad]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "max-faces" in err[0]


@pytest.mark.parametrize("canvas, color", [("1920:1080", "gray"), ("1920:1080", "black"), ("3840:2160", "gray")])
def test_a_small_face_in_a_large_frame_is_found_and_placed_right(dev_clips_dir, tmp_path, canvas, color):
    """MediaPipe's short-range detector sees the whole frame at 128x128 and misses a face 7% of
    a 1080p frame wide; the tracker then finds it with the full-range detector (on the whole
    frame and on overlapping tiles: on black padding or in 4K the whole frame alone missed it)
    and runs FaceMesh on a face-centred crop. The mouth must land where it is in the original
    clip, moved by the padding."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    pytest.importorskip("mediapipe", reason="mediapipe (the media extra) is not installed")
    from worker.tracking import MouthTracker

    src = dev_clips_dir / "vox_pcavs_620900105.mp4"  # 224x224
    padded = tmp_path / "small_face_1080p.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-vf", f"pad={canvas}:300:200:color={color}",
                    "-c:v", "libx264", "-crf", "18", "-pix_fmt", "yuv420p", "-an", str(padded)], check=True)
    small = MouthTracker().track_file(padded)
    plain = MouthTracker().track_file(src)
    both = small.face_present & plain.face_present
    assert small.face_present.mean() > 0.9 and both.mean() > 0.9
    d = small.roi_params[both, :3] - plain.roi_params[both, :3]
    assert np.median(d[:, 0]) == pytest.approx(300, abs=3) and np.median(d[:, 1]) == pytest.approx(200, abs=3)
    assert np.median(np.abs(d[:, 2]) / plain.roi_params[both, 2]) < 0.1


def test_a_small_speaker_beside_a_large_listener_is_the_face_scored(dev_clips_dir, tmp_path, capsys):
    """FaceMesh on the whole frame finds the large face only; the small one (too small for its
    detector) used to be missed, and the listener was scored: -120 ms at score 0.08 for an
    in-sync speaker. Faces the full-range detector sees besides FaceMesh's are tracked on crops."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    pytest.importorskip("mediapipe", reason="mediapipe (the media extra) is not installed")
    from worker.cli import main

    video = tmp_path / "small_speaker.mp4"
    graph = ("color=c=gray:s=1280x720:r=25:d=4[bg];[1:v]trim=0:4,setpts=PTS-STARTPTS,scale=600:600[big];"
             "[0:v]trim=0:4,setpts=PTS-STARTPTS[small];[bg][big]overlay=40:60[a];[a][small]overlay=900:300[v]")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(dev_clips_dir / LEFT), "-i", str(dev_clips_dir / RIGHT),
                    "-f", "lavfi", "-i", "color=c=gray:s=1280x720:r=25:d=4", "-filter_complex",
                    graph.replace("color=c=gray:s=1280x720:r=25:d=4[bg]", "[2:v]null[bg]"),
                    "-map", "[v]", "-map", "0:a", "-t", "4", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac",
                    str(video)], check=True)
    assert main(["score", str(video), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    chosen = out["faces"][0]
    assert len(out["faces"]) >= 2 and chosen["centre"][0] > 0.6  # the small face on the right
    assert chosen["frames_present"] >= 80  # of 100
    assert out["score"] > 0.6 and abs(out["offset_ms"]) <= 40.0, (out["score"], out["offset_ms"])


def test_a_speaker_too_small_for_the_face_count_is_found_by_a_second_look(dev_clips_dir, tmp_path, capsys):
    """1080p, the speaker 160 px beside a 900 px listener: the one-face pass's face count (the
    full-range detector on a 640 px frame) sees the listener only, whose lips do not match the
    audio. That low score sends `score` to look again for every face, small ones in tiles, and
    the speaker is found and scored (a review: the listener was reported, score 0.17)."""
    graph = ("color=c=gray:s=1920x1080:r=25:d=4[bg];[0:v]trim=0:4,setpts=PTS-STARTPTS,scale=160:160[a];"
             "[1:v]trim=0:4,setpts=PTS-STARTPTS,scale=900:900[b];[bg][b]overlay=980:100[t];"
             "[t][a]overlay=200:400:shortest=1[v];[0:a]atrim=0:4,asetpts=PTS-STARTPTS[au]")
    out = _score_edit(dev_clips_dir, tmp_path, capsys, graph)
    assert len(out["faces"]) >= 2 and out["faces"][0]["centre"][0] < 0.3  # the small face on the left
    assert out["score"] > 0.6 and abs(out["offset_ms"]) <= 40.0, (out["score"], out["offset_ms"])
    assert any("second look" in n for n in out["notes"])


def _score_edit(dev_clips_dir, tmp_path, capsys, graph: str, right: str = RIGHT) -> dict:
    """`score --json` of an edit of LEFT (input 0) and ``right`` (input 1) made by ffmpeg filter
    ``graph`` (outputs [v] and [au])."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    pytest.importorskip("mediapipe", reason="mediapipe (the media extra) is not installed")
    from worker.cli import main

    video = tmp_path / "edit.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(dev_clips_dir / LEFT), "-i", str(dev_clips_dir / right),
                    "-filter_complex", graph, "-map", "[v]", "-map", "[au]", "-c:v", "libx264", "-crf", "18",
                    "-pix_fmt", "yuv420p", "-c:a", "aac", str(video)], check=True)
    assert main(["score", str(video), "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_a_cut_from_two_faces_to_one_keeps_reading_the_speech(dev_clips_dir, tmp_path, capsys):
    """Four seconds of two faces side by side, then a cut to the speaker alone, centred. The
    tracks follow positions, so after the cut the speaker's face continues the other track; the
    chosen face is out of view there. Those windows used to be NO_FACE; they are now read on the
    face in view (the note says so) and the clip summary covers the whole speech."""
    graph = ("[0:v]trim=0:4,setpts=PTS-STARTPTS[a];[1:v]trim=0:4,setpts=PTS-STARTPTS[b];[a][b]hstack=inputs=2[s1];"
             "[1:v]trim=4:7,setpts=PTS-STARTPTS,pad=448:224:112:0[s2];[s1][s2]concat=n=2:v=1:a=0[v];"
             "[1:a]atrim=0:7,asetpts=PTS-STARTPTS[au]")
    out = _score_edit(dev_clips_dir, tmp_path, capsys, graph)
    assert [w["label"] for w in out["windows"]] == ["OK"] * 6
    # block 96 holds 4 frames of the speaker on the right and 12 after the cut: neither face
    # covers it well, it stays NO_FACE
    assert [b["frame_start"] for b in out["blocks"] if b["label"] != "OK"] in ([], [96])
    after = [w for w in out["windows"] if w["frame_start"] >= 100]
    assert all(w["score"] >= 0.5 for w in after), [w["score"] for w in after]
    chosen, other = out["faces"]
    assert chosen["centre"][0] > 0.5 and other["jobs_where_chosen_out_of_view"] >= 2 + 3  # windows 100, 125; blocks 112..144
    assert any("out of view" in n for n in out["notes"])
    assert out["score"] > 0.6 and abs(out["offset_ms"]) <= 40.0


def test_a_hidden_speaker_is_not_read_on_the_listener_beside_them(dev_clips_dir, tmp_path, capsys):
    """Two faces side by side with the right one's speech; the speaker is blacked out from 2 s to
    4 s. The listener, in view beside the speaker all along, is not the speaker: those windows
    stay NO_FACE instead of reading the listener's lips as a timing."""
    graph = ("[0:v]trim=0:6,setpts=PTS-STARTPTS[a];[1:v]trim=0:6,setpts=PTS-STARTPTS[b];[a][b]hstack=inputs=2,"
             "drawbox=x=224:y=0:w=224:h=224:color=black:t=fill:enable='between(t,2,4)'[v];"
             "[1:a]atrim=0:6,asetpts=PTS-STARTPTS[au]")
    out = _score_edit(dev_clips_dir, tmp_path, capsys, graph)
    labels = {w["frame_start"]: w["label"] for w in out["windows"]}
    assert labels[50] == labels[75] == "NO_FACE", labels
    assert labels[0] == labels[25] == labels[100] == "OK", labels
    assert all(f["jobs_where_chosen_out_of_view"] == 0 for f in out["faces"])
    assert out["faces"][0]["centre"][0] > 0.5 and abs(out["offset_ms"]) <= 40.0


def test_two_people_taking_turns_are_each_read_on_their_own_turn(dev_clips_dir, tmp_path, capsys):
    """Two faces side by side for 7 s, the left one's speech for 3.5 s, then the right one's: one
    face is kept for the clip, and the other's turn is read on the other face (a note says so)
    instead of on the kept face's listening lips (a review: published OK at chance offsets, the
    clip's confidence under 0.5). Two clips that each read 0 ms on their own: one recording's
    people share its timing, which is what lets a turn be read on the other face."""
    graph = ("[0:v]trim=0:7,setpts=PTS-STARTPTS[a];[1:v]trim=0:7,setpts=PTS-STARTPTS[b];[a][b]hstack=inputs=2[v];"
             "[0:a]atrim=0:3.5,asetpts=PTS-STARTPTS[x1];[1:a]atrim=3.5:7,asetpts=PTS-STARTPTS[x2];"
             "[x1][x2]concat=n=2:v=0:a=1[au]")
    out = _score_edit(dev_clips_dir, tmp_path, capsys, graph, right="avse_lrs3_E4.mp4")
    assert any("taking turns" in n for n in out["notes"]), out["notes"]
    assert sum(f["jobs_where_this_face_speaks"] for f in out["faces"]) >= 3
    assert abs(out["offset_ms"]) <= 40.0 and out["confidence"] >= 0.5, (out["offset_ms"], out["confidence"])
    scored = [w for w in out["windows"] if w["score"] is not None]
    assert sum(abs(w["offset_ms"]) <= 40.0 for w in scored) >= len(scored) - 1
