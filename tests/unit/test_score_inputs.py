"""`sync-scorer score MEDIA` on inputs a review found mishandled: a wrapped MPEG-TS with an
extracted --audio track, cover art or a still track listed before the video, a FIFO, audio far
longer than the video, non-square pixels, notes on files whose streams differ in length, a file
that cannot be decoded (one stderr line, no tracker left running) and stereo in opposite phase.
All media is generated with ffmpeg (a few seconds) except where a dev clip guards the caches."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.support.audio_lag import lag_samples
from worker.media import decode
from worker.media.decode import (
    MediaError,
    MediaInfo,
    iter_video,
    probe,
    read_audio,
    read_audio_for_video,
    read_video,
)

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")

DEV = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "dev-clips"


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *args], check=True, timeout=120)


def _clip(path: Path, seconds: float = 2.0, size: str = "160x120", extra: tuple[str, ...] = ()) -> Path:
    """testsrc video with noise audio (stereo: the same noise in both channels), ``seconds`` long."""
    ffmpeg("-f", "lavfi", "-i", f"testsrc=size={size}:rate=25:duration={seconds}",
           "-f", "lavfi", "-i", f"anoisesrc=seed=3:amplitude=0.3:duration={seconds}:sample_rate=48000",
           "-filter:a", "pan=stereo|c0=c0|c1=c0", *extra, "-c:v", "libx264", "-pix_fmt", "yuv420p",
           "-c:a", "aac", "-t", str(seconds), str(path))
    return path


# -- 2: an extracted audio track of a clip whose streams start before 0 --------------------------

@pytest.mark.parametrize("case", ["wrapped ts", "opus priming"])
def test_an_extracted_track_lines_up_as_the_clips_own_for_streams_starting_before_zero(tmp_path, case):
    """--audio's first sample plays where the clip's own track starts. A wrapped MPEG-TS starts
    its streams at -2.3 s; its extracted WAV was placed at 0 instead (2.3 s late: a review read
    +160 ms for +120 and SILENCE). An Opus track starting a few ms before 0 is priming the
    decoder drops: its WAV starts at 0 (what the old clamp to 0 was for)."""
    src = _clip(tmp_path / "src.mkv", 6.0)
    if case == "wrapped ts":
        clip = tmp_path / "wrapped.ts"
        ffmpeg("-i", str(src), "-c:v", "mpeg2video", "-q:v", "4", "-c:a", "mp2", "-output_ts_offset", "95440",
               "-f", "mpegts", str(clip))
    else:
        clip = tmp_path / "opus.mkv"
        ffmpeg("-i", str(src), "-c:v", "copy", "-c:a", "libopus", str(clip))
    info = probe(clip)
    if case == "wrapped ts":
        assert info.video_start_s < -2.0
    else:
        assert -0.1 < info.audio_start_s < 0.0
    wav = tmp_path / "own.wav"
    ffmpeg("-i", str(clip), "-vn", "-ac", "1", "-ar", "16000", str(wav))
    own = read_audio(clip, 16000, info=info)
    other = read_audio_for_video(wav, info)
    assert lag_samples(own, other) == pytest.approx(0, abs=2)
    assert abs(len(other) - len(own)) < 0.1 * 16000


# -- 3: cover art or a still listed before the video ------------------------------------------

def _atoms(buf: bytes, off: int, end: int) -> list[tuple[bytes, int, int]]:
    out = []
    while off < end:
        size, typ = struct.unpack(">I4s", buf[off:off + 8])
        if size == 1:
            size = struct.unpack(">Q", buf[off + 8:off + 16])[0]
        out.append((typ, off, size))
        off += size
    return out


def _cover_listed_first(src: Path, dst: Path) -> None:
    """An MP4 whose cover art (udta) comes before the tracks in its moov: demuxed as stream 0."""
    data = src.read_bytes()
    moov = next(a for a in _atoms(data, 0, len(data)) if a[0] == b"moov")
    kids = _atoms(data, moov[1] + 8, moov[1] + moov[2])
    udta = [k for k in kids if k[0] == b"udta"]
    rest = [k for k in kids if k[0] != b"udta"]
    body = b"".join(data[o:o + s] for _, o, s in [rest[0], *udta, *rest[1:]])
    assert len(body) + 8 == moov[2]
    dst.write_bytes(data[:moov[1]] + struct.pack(">I4s", 8 + len(body), b"moov") + body
                    + data[moov[1] + moov[2]:])


def test_cover_art_listed_before_the_video_is_not_what_is_decoded(tmp_path):
    clip = _clip(tmp_path / "clip.mp4", 2.0)
    cover = tmp_path / "cover.jpg"
    ffmpeg("-f", "lavfi", "-i", "color=red:size=64x48:duration=0.04", "-frames:v", "1", str(cover))
    with_cover = tmp_path / "with_cover.mp4"
    ffmpeg("-i", str(clip), "-i", str(cover), "-map", "0", "-map", "1", "-c", "copy",
           "-disposition:v:1", "attached_pic", str(with_cover))
    first = tmp_path / "cover_first.mp4"
    _cover_listed_first(with_cover, first)
    streams = json.loads(subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(first)],
                                        capture_output=True, text=True, check=True).stdout)["streams"]
    assert streams[0]["disposition"]["attached_pic"] == 1  # the cover is stream 0 (0:v:0)
    info = probe(first)
    assert info.video_index == 1 and (info.width, info.height) == (160, 120)
    frames, fps = read_video(first)  # "cannot decode video ...: no frames decoded" before
    assert frames.shape == (50, 120, 160, 3) and fps == 25.0


def _still_png(tmp_path) -> Path:
    still = tmp_path / "still.png"
    ffmpeg("-f", "lavfi", "-i", "color=blue:size=64x48:duration=0.04", "-frames:v", "1", str(still))
    return still


def test_a_one_frame_still_track_before_the_video_is_not_read_as_the_video(tmp_path):
    clip = _clip(tmp_path / "clip.mp4", 2.0)
    still = _still_png(tmp_path)
    mkv = tmp_path / "still_first.mkv"
    ffmpeg("-i", str(still), "-i", str(clip), "-map", "0:v", "-map", "1:v", "-map", "1:a", "-c:v:0", "png",
           "-c:v:1", "copy", "-c:a", "copy", str(mkv))
    info = probe(mkv)
    assert info.video_index == 1 and info.video_codec == "h264"
    frames, _ = read_video(mkv)  # "has 1 frames; at least 8 are needed" before
    assert frames.shape[0] == 50 and frames.shape[1:3] == (120, 160)


def test_of_two_moving_video_streams_the_default_one_is_read_not_the_busiest(tmp_path):
    """A 25 fps camera beside a 60 fps screen track: the camera (the first, default-flagged)
    is the video; before, the busiest stream in the first seconds was read (the screen,
    NO_FACE). With the default flag on the second stream, that one is read."""
    mkv = tmp_path / "two.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=25:duration=3",
           "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=60:duration=3",
           "-map", "0:v", "-map", "1:v", "-c:v", "libx264", "-preset", "ultrafast", "-t", "3", str(mkv))
    info = probe(mkv)
    assert info.video_index == 0 and (info.width, info.height, info.fps) == (160, 120, 25.0)
    flagged = tmp_path / "second_default.mkv"
    ffmpeg("-i", str(mkv), "-map", "0", "-c", "copy", "-disposition:v:0", "0", "-disposition:v:1", "default",
           str(flagged))
    info = probe(flagged)
    assert info.video_index == 1 and (info.width, info.height, info.fps) == (320, 240, 60.0)


def test_a_default_flagged_still_is_passed_over_for_the_next_moving_stream(tmp_path):
    clip = _clip(tmp_path / "clip.mp4", 2.0)
    still = _still_png(tmp_path)
    mkv = tmp_path / "still_default.mkv"
    ffmpeg("-i", str(clip), "-i", str(still), "-map", "0:v", "-map", "1:v", "-map", "0:a", "-c:v:0", "copy",
           "-c:v:1", "png", "-c:a", "copy", "-disposition:v:0", "0", "-disposition:v:1", "default", str(mkv))
    info = probe(mkv)
    assert info.video_index == 0 and info.video_codec == "h264"


# -- 4: a FIFO --------------------------------------------------------------------------------

def test_a_fifo_is_refused_at_once(tmp_path):
    fifo = tmp_path / "fifo.mp4"
    os.mkfifo(fifo)
    got: list = []

    def run() -> None:
        try:
            probe(fifo)
        except MediaError as exc:
            got.append(str(exc))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout=20)
    if t.is_alive():  # ffprobe waits for a writer: give it one (and EOF) so the thread ends
        with open(fifo, "wb"):
            pass
        t.join(timeout=20)
        pytest.fail("probing a FIFO hung")
    assert got and "not a regular file" in got[0]


def test_score_of_a_fifo_as_media_or_audio_is_one_line_and_non_zero(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    clip = _clip(tmp_path / "clip.mp4", 1.0)
    for argv in (["score", str(fifo)], ["score", str(clip), "--audio", str(fifo)]):
        try:
            proc = subprocess.run([sys.executable, "-m", "worker.cli", *argv], capture_output=True, text=True,
                                  timeout=60, check=False)
        except subprocess.TimeoutExpired:
            with open(fifo, "wb"):  # let the hung ffprobe go
                pass
            pytest.fail(f"{argv} hung on a FIFO")
        assert proc.returncode == 3, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "not a regular file" in lines[0], proc.stderr


# -- 5: audio far longer than the video ---------------------------------------------------------

def test_only_the_audio_the_video_needs_is_decoded(tmp_path, capsys, monkeypatch):
    """A 2 s video with 10 minutes of audio: memory used to follow the audio (a review: 2 h of it
    held 1.55 GB for a 3 s video). The note still says how far the audio runs past the video."""
    from worker.cli import main

    audio = tmp_path / "long.flac"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=220:duration=600:sample_rate=16000", "-ac", "2", str(audio))
    mkv = tmp_path / "long_audio.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=25:duration=2", "-i", str(audio), "-map", "0:v",
           "-map", "1:a", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "copy", str(mkv))
    info = probe(mkv)
    part = read_audio(mkv, info=info, max_s=3.0)
    assert part.shape == (48000,)
    assert np.array_equal(part, read_audio(mkv, info=info)[:48000])  # the same samples, only fewer

    decoded: list[int] = []
    real = decode._run_audio

    def spy(cmd, channels):
        out = real(cmd, channels)
        decoded.append(out[0].shape[0])
        return out

    monkeypatch.setattr(decode, "_run_audio", spy)
    for argv in (["score", str(mkv), "--json"], ["score", str(mkv), "--audio", str(audio), "--json"]):
        assert main(argv) == 0
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert decoded and max(decoded) < 10 * 16000, decoded  # 600 s before
        assert any("runs 598.0 s past the video's end" in n for n in out["notes"]), out["notes"]
        decoded.clear()


# -- 6: non-square pixels -----------------------------------------------------------------------

@pytest.mark.parametrize("rotate", [False, True])
def test_non_square_pixels_are_decoded_in_the_shape_they_are_shown(tmp_path, rotate):
    """A 320x240 picture stored as 160x240 with pixels twice as wide (SAR 2:1), as PAL 16:9
    (720x576 at 64:45) is: faces were read squeezed (a review: NO_FACE)."""
    ref = tmp_path / "square.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=1", "-c:v", "libx264", "-crf", "10",
           "-pix_fmt", "yuv444p", str(ref))
    anam = tmp_path / "anamorphic.mp4"
    ffmpeg("-i", str(ref), "-vf", "scale=160:240,setsar=2", "-c:v", "libx264", "-crf", "10", "-pix_fmt",
           "yuv444p", str(anam))
    if rotate:  # shown turned a quarter: 240 wide, 320 high
        turned = tmp_path / "turned.mp4"
        ffmpeg("-i", str(anam), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(turned))
        anam = turned
    info = probe(anam)
    if rotate and info.rotation_deg % 180 != 90:
        pytest.skip("this ffmpeg does not write rotation metadata")
    shown = (240, 320) if rotate else (320, 240)
    assert (info.width, info.height) == shown and info.sample_aspect == 2.0
    frames, _ = read_video(anam)
    assert frames.shape[1:3] == (shown[1], shown[0])
    want, _ = read_video(ref)
    if rotate:  # the square picture turned as players show it (ffmpeg's autorotate: the top-left
        want = np.rot90(want, 1, axes=(1, 2))  # corner at the top right), not upside down
        assert np.abs(frames.astype(int) - np.rot90(want, 2, axes=(1, 2)).astype(int)).mean() > 60
    assert np.abs(frames.astype(int) - want.astype(int)).mean() < 12  # the picture, not squeezed
    small, _ = read_video(anam, max_side=160)  # downscaled keeps the shown aspect
    assert max(small.shape[1:3]) == 160 and abs(small.shape[2] / small.shape[1] - shown[0] / shown[1]) < 0.05


def test_square_pixels_are_decoded_as_ffmpeg_decodes_them_without_a_scale(tmp_path, monkeypatch):
    """The SAR scaling is a no-op for square pixels: the only filter is the scale to the size the
    pipe is cut at (for a decoder that gives frames of another size), which leaves a frame of that
    size exactly as ffmpeg's own conversion to RGB does (the dev clips and their caches decode
    as they did: all 50 byte for byte)."""
    import subprocess

    clip = _clip(tmp_path / "square.mp4", 1.0)
    seen: list[list[str]] = []
    real = decode._iter_nearest_frames
    monkeypatch.setattr(decode, "_iter_nearest_frames",
                        lambda info, rate, scale, *a: seen.append(scale) or real(info, rate, scale, *a))
    frames, _ = read_video(clip)
    assert seen == [["scale=160:120"]] and frames.shape[1:3] == (120, 160)
    plain = subprocess.run(["ffmpeg", "-v", "error", "-i", str(clip), "-pix_fmt", "rgb24", "-f", "rawvideo", "-"],
                           capture_output=True, check=True).stdout
    assert frames.tobytes() == plain


# -- 7: notes on files whose streams differ in length -------------------------------------------

def _info(**kw) -> MediaInfo:
    base = {"path": "x.mkv", "duration_s": 8.0, "container": "matroska", "has_video": True, "has_audio": True,
            "fps": 25.0, "sample_rate": 48000, "audio_streams": 1}
    return MediaInfo(**{**base, **kw})


def test_the_truncated_note_is_for_a_video_shorter_than_it_says_not_for_longer_audio():
    from worker import cli

    notes = cli.input_notes
    truncated = "could be decoded (truncated or damaged?)"
    # 0.32 s of video under 2 s of audio (a MOV that says so per stream)
    n = notes(_info(duration_s=2.0, video_duration_s=0.32, audio_duration_s=2.0), None, 0.32, 2.0, 25.0)
    assert not any(truncated in x for x in n) and any("audio is longer than the video" in x for x in n), n
    # timestamps from 3600 s: the file's duration is its end time
    n = notes(_info(duration_s=3608.064, start_s=3600.0, video_start_s=3600.0, audio_start_s=3600.056,
                    video_duration_s=8.0, audio_duration_s=8.008), None, 8.0, 8.0, 25.0)
    assert n == [], n
    # a Matroska that says nothing per stream, 3 s of video and 2 h of audio
    n = notes(_info(duration_s=7200.0, audio_duration_s=0.0), None, 3.0, 7200.0, 25.0)
    assert not any(truncated in x for x in n) and any("audio is longer" in x for x in n), n
    # a video stream that says 10 s and decoded to 5: truncated, said so
    n = notes(_info(duration_s=10.0, video_duration_s=10.0, audio_duration_s=10.0), None, 5.0, 5.0, 25.0)
    assert any(truncated in x and "says 10.0 s" in x for x in n), n
    # nothing said per stream, and neither stream reaches the container's length
    n = notes(_info(duration_s=10.0), None, 5.0, 5.0, 25.0)
    assert any(truncated in x for x in n), n


def test_stream_lengths_are_probed_from_the_streams(tmp_path, capsys):
    from worker.cli import main

    mov = tmp_path / "short_video.mov"  # 0.4 s of video, 3 s of audio
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=25:duration=0.4", "-f", "lavfi", "-i",
           "sine=frequency=300:duration=3", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "pcm_s16le", str(mov))
    info = probe(mov)
    assert info.video_duration_s == pytest.approx(0.4, abs=0.05) and info.audio_duration_s == pytest.approx(3, abs=0.05)
    late = tmp_path / "late.mkv"  # Matroska from 3600 s: DURATION tags are end times
    _clip(tmp_path / "src.mp4", 2.0)
    ffmpeg("-i", str(tmp_path / "src.mp4"), "-c", "copy", "-output_ts_offset", "3600", str(late))
    info = probe(late)
    assert info.video_start_s == pytest.approx(3600, abs=0.1)
    assert info.video_duration_s == pytest.approx(2.0, abs=0.1), info
    for media in (mov, late):
        rc = main(["score", str(media), "--json"])
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert rc == 0 and not any("truncated or damaged" in n for n in out["notes"]), (media, out["notes"])
    rc = main(["score", str(mov), "--json"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert any("audio is longer than the video: it runs 2.6 s past" in n for n in out["notes"]), out["notes"]


# -- 8: a file that cannot be decoded: one line, no tracker left running --------------------------

def test_a_video_without_a_size_fails_before_the_tracker_starts(tmp_path, monkeypatch):
    from worker.tracking import tracker as trk

    clip = _clip(tmp_path / "clip.mp4", 1.0)
    sizeless = dataclasses.replace(probe(clip), width=0, height=0)
    with pytest.raises(MediaError, match="has no size"):
        iter_video(clip, info=sizeless)  # at the call, not at the first chunk

    def no_mesh(*_a, **_k):
        raise AssertionError("FaceMesh started for a file that cannot be decoded")

    monkeypatch.setattr(trk, "_new_face_mesh", no_mesh)
    with pytest.raises(MediaError, match="has no size"):
        trk.MouthTracker(roi_size=96).track_faces_file(clip, info=sizeless)


def test_the_tracker_is_closed_when_decoding_fails_midway():
    from worker.tracking import MouthTracker

    def chunks():
        yield np.zeros((4, 120, 160, 3), np.uint8)
        raise MediaError("cannot decode video of x.mp4: damaged")

    tracker = MouthTracker(roi_size=96)
    with pytest.raises(MediaError):
        tracker.track_faces_chunks(chunks(), 25.0)
    assert tracker._mesh is None and tracker._detector is None


def test_score_of_a_file_without_a_size_is_one_stderr_line(tmp_path):
    """MediaPipe's start-up and shut-down lines surrounded the error (a review's MPEG-4 Part 2
    in MPEG-TS probes as 0x0): the size is checked before FaceMesh starts."""
    clip = _clip(tmp_path / "clip.mp4", 1.0)
    code = ("import dataclasses, sys\n"
            "from worker.media import decode\n"
            "real = decode.probe\n"
            "def probe(path, *a, **k):\n"
            "    info = real(path, *a, **k)\n"
            "    return dataclasses.replace(info, width=0, height=0)\n"
            "decode.probe = probe\n"
            "from worker.cli import main\n"
            f"sys.exit(main(['score', {str(clip)!r}]))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 3
    assert proc.stderr.strip().splitlines() == [f"error: video stream of {clip} has no size"], proc.stderr


# -- 9: stereo in opposite phase ----------------------------------------------------------------

def test_channels_in_opposite_phase_are_not_mixed_to_silence(tmp_path):
    anti = tmp_path / "anti.wav"
    ffmpeg("-f", "lavfi", "-i", "anoisesrc=seed=5:amplitude=0.3:duration=2:sample_rate=16000",
           "-af", "pan=stereo|c0=c0|c1=-1*c0", str(anti))
    notes: list[str] = []
    audio = read_audio(anti, notes=notes)
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
    assert rms > 0.05, rms  # the mix was ~0: SILENCE, no note
    assert len(notes) == 1 and "cancel when mixed to mono" in notes[0] and "channel 0 alone" in notes[0]
    # one channel silent, or the same sound in both: mixed as before, no note
    for pan in ("c0=c0|c1=0*c0", "c0=c0|c1=c0", "c0=c0|c1=0.5*c0"):
        same = tmp_path / "same.wav"
        ffmpeg("-f", "lavfi", "-i", "anoisesrc=seed=5:amplitude=0.3:duration=2:sample_rate=16000",
               "-af", f"pan=stereo|{pan}", str(same))
        notes.clear()
        read_audio(same, notes=notes)
        assert notes == [], (pan, notes)


def test_score_notes_opposite_phase_audio(tmp_path, capsys):
    from worker.cli import main

    clip = _clip(tmp_path / "clip.mp4", 2.0)
    anti = tmp_path / "anti.wav"
    ffmpeg("-f", "lavfi", "-i", "anoisesrc=seed=5:amplitude=0.3:duration=2:sample_rate=16000",
           "-af", "pan=stereo|c0=c0|c1=-1*c0", str(anti))
    assert main(["score", str(clip), "--audio", str(anti), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert any("cancel when mixed to mono" in n for n in out["notes"]), out["notes"]


def test_the_channels_energies_are_measured_on_the_first_seconds_only(tmp_path, monkeypatch):
    """Opposite phase is the file's wiring: the channels are read beside the mix only for the
    first CANCEL_SCAN_S seconds (all of a 20 min stereo track took 2.0-2.5 s, not 1.2 s). Here
    the channels cancel in the first second only; measured on the first second (the scan
    shortened to 1 s) that is what is found; measured on all 3 s, it was not."""
    import wave

    rng = np.random.default_rng(7)
    left = (rng.standard_normal(48000) * 6000).clip(-32000, 32000).astype(np.int16)
    right = left.copy()
    right[:16000] = -left[:16000]  # opposite phase for the first second, then the same sound
    path = tmp_path / "first_second_anti.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.stack([left, right], axis=1).tobytes())
    monkeypatch.setattr(decode, "CANCEL_SCAN_S", 1, raising=False)
    notes: list[str] = []
    read_audio(path, notes=notes)
    assert len(notes) == 1 and "cancel when mixed to mono" in notes[0], notes


def test_errors_of_a_stereo_decode_are_counted_once(tmp_path):
    """The channels' second output repeated the mono output's muxer errors (two TS segments
    joined with cat: twice as many errors in the damage note as ffmpeg's own decode gives). Those
    errors are the raw muxer's complaint that a time went back, which drops nothing: they are no
    damage at all now (media.decode._RAW_MUXER_DTS), once or twice."""
    seg = tmp_path / "seg.ts"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=3", "-f", "lavfi", "-i",
           "sine=f=440:duration=3", "-ac", "2", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac",
           "-t", "3", "-f", "mpegts", str(seg))
    joined = tmp_path / "joined.ts"
    joined.write_bytes(seg.read_bytes() * 2)
    info = probe(joined)
    assert info.channels == 2
    # the clock kept as is: the muxer sees the second segment's time go back
    errors: list[str] = []
    decode._decode_audio(info, 16000, shift_s=0.0, from_zero=False, errors=errors)
    plain = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-copyts", "-i", str(joined), "-map", "0:a:0", "-af",
                            "anull,aresample=16000,aformat=sample_fmts=flt:channel_layouts=mono", "-f", "f32le",
                            "pipe:1"], capture_output=True, check=False).stderr.decode().splitlines()
    assert len(plain) > 0 and all(decode._RAW_MUXER_DTS.match(line) for line in plain), plain[:3]
    assert errors == [], errors[:3]


def test_stereo_dev_clips_mix_to_mono_exactly_as_ffmpeg_does():
    """The evaluation caches hold ffmpeg's own mono mix: reading the channels beside it, and
    cutting the decode short, leave its samples alone."""
    if not DEV.is_dir():
        pytest.skip(f"dev clips folder absent: {DEV}")
    for name in ("grid_bbaf2n.mpg", "eamm_mead_M030.mp4", "gen_sadtalker_still1.mp4"):
        path = DEV / name
        info = probe(path)
        assert info.channels == 2
        t0 = info.video_start_s
        af = (f"asetpts=PTS-({t0:.6f}/TB),aresample=async=1:first_pts=0,aresample=16000,"
              "aformat=sample_fmts=flt:channel_layouts=mono")
        plain = np.frombuffer(subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-copyts", "-i", str(path), "-map",
                                              "0:a:0", "-af", af, "-f", "f32le", "pipe:1"], capture_output=True,
                                             check=True).stdout, np.float32)
        notes: list[str] = []
        ours = read_audio(path, info=info, notes=notes)
        assert np.array_equal(plain, ours) and notes == [], name
        assert np.array_equal(plain[:24000], read_audio(path, info=info, max_s=1.5)), name
