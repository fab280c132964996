"""worker.media.decode on the real dev clips and on tiny media generated with ffmpeg."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.support.audio_lag import lag_samples
from worker.media.decode import MediaError, first_frame_time_s, iter_video, probe, read_audio, read_video

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
DEV = DATA / "dev-clips"

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")


def dev_clip(name: str) -> Path:
    if not DEV.is_dir():
        pytest.skip(f"dev clips folder absent: {DEV} (tests on real footage skipped)")
    return DEV / name


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *args], check=True)


@pytest.mark.parametrize(
    "name, codec, fps, size_hw",
    [
        ("grid_bbaf2n.mpg", "mpeg1video", 25.0, (288, 360)),
        ("cremad_1001_DFA_ANG_XX.flv", "vp6f", 30000 / 1001, (360, 480)),
        ("av2av_ted_2.webm", "vp9", 25.0, (224, 224)),
        ("vox_pcavs_00015.mp4", "h264", 25.0, (224, 224)),
    ],
)
def test_decode_each_container(name, codec, fps, size_hw):
    path = dev_clip(name)
    info = probe(path)
    assert info.has_video and info.has_audio and info.video_codec == codec
    assert info.fps == pytest.approx(fps, rel=1e-6) and not info.is_vfr
    frames, got_fps = read_video(path)
    assert got_fps == pytest.approx(fps, rel=1e-6)
    assert frames.dtype == np.uint8 and frames.shape[1:] == (*size_hw, 3)
    # constant rate over the stream's duration (+/- 2 frames for container rounding)
    assert abs(frames.shape[0] - info.duration_s * fps) <= 2
    assert frames.std() > 5  # real picture, not a blank
    audio = read_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) / 16000 - frames.shape[0] / fps) < 0.1  # same timeline length
    assert 1e-3 < float(np.sqrt(np.mean(audio**2))) < 1.0


def test_29_97_stays_ntsc_and_downscale_keeps_aspect():
    path = dev_clip("dfdc_real_lynaeydofd.mp4")  # 1920x1080, probed as 2997/100
    info = probe(path)
    assert info.fps_fraction == "30000/1001"
    chunk = next(iter_video(path, max_side=640, chunk_frames=8))  # early stop kills ffmpeg cleanly
    assert chunk.shape == (8, 360, 640, 3)


def test_audio_start_offset_in_a_dev_clip_is_compensated():
    # dfrf_french_macron.mp4: video starts at 0.080 s, audio at 0 -> frame 0 is at 0.080 s, so
    # the first 80 ms of audio must be dropped.
    path = dev_clip("dfrf_french_macron.mp4")
    info = probe(path)
    assert info.av_start_offset_ms == pytest.approx(-80.0)
    t0 = first_frame_time_s(info)
    assert t0 == pytest.approx(0.080)
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-t", "3", "-map", "0:a:0", "-ac", "1", "-ar", "16000",
         "-f", "f32le", "-"], capture_output=True, check=True).stdout
    raw = np.frombuffer(raw, np.float32)
    aligned = read_audio(path)
    seg = aligned[8000:24000]
    lags = range(2000)
    best = max(lags, key=lambda s: float(np.dot(raw[8000 + s : 24000 + s], seg)))
    assert abs(best - round(t0 * 16000)) <= 2


def _tone_with_onset(path: Path, onset_s: float, total_s: float = 2.0) -> None:
    ffmpeg("-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={total_s}",
           "-af", f"volume=enable='lt(t,{onset_s})':volume=0", "-ac", "2", str(path))


def test_audio_starting_late_is_padded_and_early_is_trimmed(tmp_path):
    wav = tmp_path / "tone.wav"
    _tone_with_onset(wav, onset_s=0.5)
    late = tmp_path / "late.mkv"  # audio stream starts 0.2 s after the video
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=2", "-itsoffset", "0.2", "-i", str(wav),
           "-map", "0:v", "-map", "1:a", "-c:v", "ffv1", "-c:a", "pcm_s16le", str(late))
    early = tmp_path / "early.mkv"  # video starts 0.2 s after the audio
    ffmpeg("-itsoffset", "0.2", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=2", "-i", str(wav),
           "-map", "0:v", "-map", "1:a", "-c:v", "ffv1", "-c:a", "pcm_s16le", str(early))
    ref = read_audio(wav)  # the filter switches on at a frame boundary: measure, don't assume
    ref_onset = int(np.argmax(np.abs(ref) > 0.1))
    assert abs(ref_onset - 8000) < 400
    for path, shift_samples in ((late, +3200), (early, -3200)):
        audio = read_audio(path)
        first_loud = int(np.argmax(np.abs(audio) > 0.1))
        assert abs(first_loud - (ref_onset + shift_samples)) <= 2, (path.name, first_loud, ref_onset)


def _flash_and_click(tmp_path: Path, video_delay_s: float, container: str) -> Path:
    """25 fps frames black but frame 25 (1.0 s) white, a click at 1.0 s in the audio; the video
    stream then delayed by ``video_delay_s`` in the container (the two are that far apart)."""
    frames = np.zeros((50, 48, 64, 3), np.uint8)
    frames[25] = 255
    video = tmp_path / "flash.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "64x48", "-r", "25",
                    "-i", "-", "-c:v", "ffv1", str(video)], input=frames.tobytes(), check=True)
    click = np.zeros(32000, np.float32)
    click[16000:16016] = 0.9
    wav = tmp_path / "click.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "f32le", "-ar", "16000", "-ac", "1", "-i", "-",
                    str(wav)], input=click.tobytes(), check=True)
    out = tmp_path / f"flash_{video_delay_s}.{container}"
    # MPEG-PS as ffmpeg writes it starts near 0.54 s (13.5 frames at 25 fps); Matroska keeps
    # the delay to the millisecond
    codecs = (["-c:v", "mpeg1video", "-q:v", "2", "-c:a", "mp2"] if container == "mpg"
              else ["-c:v", "copy", "-c:a", "pcm_s16le"])
    ffmpeg("-itsoffset", str(video_delay_s), "-i", str(video), "-i", str(wav), "-map", "0:v", "-map", "1:a",
           *codecs, str(out))
    return out


@pytest.mark.parametrize("delay_s,container", [(0.019, "mkv"), (0.021, "mkv"), (0.0, "mpg")])
def test_a_video_starting_between_two_frame_times_is_read_where_it_was_shown(tmp_path, delay_s, container):
    """Frame i is the one shown at the video's start + i / fps, and audio sample 0 is there too:
    the flash shown ``delay_s`` after the click reads that far after it, to the millisecond, not
    snapped to the container clock's 40 ms grid (an audit: video starting 19 and 21 ms after the
    audio read a frame apart; MPEG-PS, which starts near 0.5 s, read one frame early)."""
    path = _flash_and_click(tmp_path, delay_s, container)
    frames, fps = read_video(path)
    audio = read_audio(path)
    flash_s = int(np.argmax(frames.reshape(len(frames), -1).mean(axis=1))) / fps
    click_s = int(np.argmax(np.abs(audio))) / 16000
    assert (flash_s - click_s) * 1000 == pytest.approx(delay_s * 1000, abs=3), probe(path).video_start_s


def test_a_stream_starting_before_time_zero_keeps_its_first_seconds_of_audio(tmp_path):
    """MPEG-TS whose timestamps wrap (33 bits) 2.3 s into the clip: its streams start at -2.3 s.
    The audio from there to 0 is the clip's too (a review: it was dropped and replaced by
    silence, here the whole of the clicks)."""
    src = _flash_and_click(tmp_path, 0.0, "mkv")
    wrapped = tmp_path / "wrapped.ts"
    ffmpeg("-i", str(src), "-c:v", "mpeg1video", "-q:v", "2", "-c:a", "mp2", "-output_ts_offset", "95440",
           "-f", "mpegts", str(wrapped))
    info = probe(wrapped)
    assert info.video_start_s < -2.0
    frames, fps = read_video(wrapped)
    audio = read_audio(wrapped, info=info)
    flash_s = int(np.argmax(frames.reshape(len(frames), -1).mean(axis=1))) / fps
    click_s = int(np.argmax(np.abs(audio))) / 16000
    assert np.abs(audio).max() > 0.5 and abs(flash_s - click_s) < 0.005, (flash_s, click_s)


def test_a_constant_rate_stream_that_dropped_frames_is_read_at_its_base_rate(tmp_path):
    """25 fps with a fifth of its frames gone (irregularly): the average is 20 fps, the base
    rate 25; read at 25, every frame that is there lands on its own time (an audit: read at the
    average, offsets stepped by 51 ms and read 30-80 ms off)."""
    n, h, w = 75, 48, 64
    kept = [i for i in range(n) if i % 5 != 3]
    frames = np.repeat(np.array(kept, np.uint8)[:, None, None, None] * 3, h * w * 3).reshape(len(kept), h, w, 3)
    out = tmp_path / "dropped.mp4"
    assert all(i == j + (j + 1) // 4 for j, i in enumerate(kept))  # the kept frame j's index, below
    proc = subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", "25",
         "-i", "-", "-vf", "setpts=(N+floor((N+1)/4))/(25*TB)", "-fps_mode", "vfr", "-c:v", "libx264", "-qp", "0",
         "-pix_fmt", "yuv444p", "-video_track_timescale", "25", str(out)],
        input=frames.tobytes(), capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr
    info = probe(out)
    assert info.is_vfr and info.avg_frame_rate < 21 and info.fps == 25
    got, fps = read_video(out)
    assert fps == 25
    index = np.round(got[:, 0, 0, 0] / 3.0).astype(int)  # the source frame each output frame shows
    for i in kept:
        assert index[i] == i


def _indexed_clip(path, kept, fps=25, h=32, w=48):
    """An mp4 whose frame k shows its index k as two gray levels (k // 16, k % 16: robust to the
    colour conversion) at time k / fps, for the k in ``kept`` (the others dropped)."""
    frames = np.zeros((len(kept), h, w, 3), np.uint8)
    for j, k in enumerate(kept):
        frames[j, :, : w // 2] = 16 * (k // 16) + 8
        frames[j, :, w // 2:] = 16 * (k % 16) + 8
    proc = subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps),
         "-i", "-", "-vf", f"setpts='({_pick_expr(kept)})/({fps}*TB)'", "-fps_mode", "vfr", "-c:v", "libx264", "-qp", "0",
         "-pix_fmt", "yuv444p", "-video_track_timescale", str(fps * 40), str(path)],
        input=frames.tobytes(), capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr


def _pick_expr(kept):
    """An ffmpeg expression of N giving kept[N] (a chain of ifs)."""
    expr = str(kept[-1])
    for j in range(len(kept) - 2, -1, -1):
        expr = f"if(eq(N,{j}),{kept[j]},{expr})"
    return expr


def _shown(frames, w=48):
    """The source index each decoded frame shows (_indexed_clip's two levels)."""
    hi = np.round((frames[:, 0, 0].mean(axis=-1) - 8) / 16).astype(int)
    lo = np.round((frames[:, 0, w - 1].mean(axis=-1) - 8) / 16).astype(int)
    return 16 * hi + lo


def test_a_recording_with_random_drops_shows_each_slot_its_nearest_frame(tmp_path):
    """A third of a 25 fps recording's frames dropped at random: each output frame shows the
    source frame nearest its time, not the last one before it (the fps filter's repeats read
    such a file 30-47 ms early in an audit: the video late by the repeats' staleness)."""
    rng = np.random.default_rng(11)
    kept = [0] + [k for k in range(1, 120) if rng.random() > 0.35]
    out = tmp_path / "drops.mp4"
    _indexed_clip(out, kept)
    info = probe(out)
    assert info.is_vfr and info.fps == 25
    got, fps = read_video(out)
    assert fps == 25
    index = _shown(got)
    slots = np.arange(len(index))
    assert len(index) == kept[-1] + 1
    nearest = np.abs(np.array(kept)[None, :] - slots[:, None]).min(axis=1)
    np.testing.assert_array_equal(np.abs(index - slots), nearest)
    assert abs(np.mean(index - slots)) < 0.1  # the fps filter: about -0.45 frames


def _fps_filter_frames(path, info, fps):
    """The frames ffmpeg's fps filter gives on the same clock (session 18's decoding), as RGB."""
    from fractions import Fraction

    rate = Fraction(fps if fps is not None else info.fps_fraction).limit_denominator(100000)
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-copyts", "-i", str(path), "-map", "0:v:0", "-vf",
         f"setpts=PTS-({info.video_start_s:.6f}/TB),fps=fps={rate.numerator}/{rate.denominator}:start_time=0",
         "-fps_mode", "passthrough", "-pix_fmt", "rgb24", "-f", "rawvideo", "pipe:1"],
        capture_output=True, check=True).stdout
    return np.frombuffer(out, np.uint8).reshape(-1, info.height, info.width, 3)


def test_a_constant_rate_file_reads_frame_for_frame_as_the_fps_filter_read_it(tmp_path):
    """Every stream is read by the nearest frame now (media.frame_grid); on a constant-rate file,
    started on the grid or off it (-itsoffset), at its own rate and at others, it shows the
    frames ffmpeg's fps filter showed (at another rate a slot midway between two frames may go
    to either)."""
    from worker.media.decode import iter_video

    src = tmp_path / "cfr.mp4"
    _indexed_clip(src, list(range(60)))
    late = tmp_path / "late.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-itsoffset", "0.013", "-i", str(src), "-c", "copy", str(late)],
                   check=True, capture_output=True)
    for path in (src, late):
        info = probe(path)
        assert not info.is_vfr
        for fps in (None, 30, 12.5):
            plain = _fps_filter_frames(path, info, fps)
            nearest = np.concatenate(list(iter_video(path, fps=fps, info=info, chunk_frames=7)))
            assert abs(len(nearest) - len(plain)) <= (0 if fps is None else 1), (path.name, fps)
            n = min(len(plain), len(nearest))
            if fps is None:
                np.testing.assert_array_equal(plain[:n], nearest[:n])
            else:
                assert np.abs(_shown(plain[:n]) - _shown(nearest[:n])).max() <= 1


def test_a_webm_that_dropped_frames_is_read_by_the_nearest_frame_too(tmp_path):
    """Matroska/WebM report such a recording's base rate as its average (not VFR to a probe): it
    is read by the nearest frame all the same (a review: the fps filter read it -0.40 frames)."""
    rng = np.random.default_rng(5)
    kept = [0] + [k for k in range(1, 100) if rng.random() > 0.35]
    mp4, webm = tmp_path / "drops.mp4", tmp_path / "drops.webm"
    _indexed_clip(mp4, kept)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(mp4), "-c:v", "libvpx-vp9", "-lossless", "1",
                    str(webm)], check=True, capture_output=True)
    info = probe(webm)
    got, fps = read_video(webm)
    assert fps == 25, (info.avg_frame_rate, info.r_frame_rate)
    index = _shown(got)
    slots = np.arange(len(index))
    nearest = np.abs(np.array(kept)[None, :] - slots[:, None]).min(axis=1)
    np.testing.assert_array_equal(np.abs(index - slots), nearest)


def test_vfr_input_is_resampled_to_constant_rate(tmp_path):
    # 60 frames whose brightness encodes their index: 30 fps for 1 s, then 15 fps for 2 s.
    n, h, w = 60, 48, 64
    frames = np.repeat(np.arange(n, dtype=np.uint8)[:, None, None, None] * 4, h * w * 3).reshape(n, h, w, 3)
    out = tmp_path / "vfr.mp4"  # mp4 reports avg_frame_rate = frames / duration (mkv does not)
    expr = "if(lt(N,30),N/30,1+(N-30)/15)/TB"
    proc = subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", "30",
         "-i", "-", "-vf", f"setpts='{expr}'", "-fps_mode", "vfr", "-c:v", "libx264", "-qp", "0",
         "-pix_fmt", "yuv444p",
         str(out)], input=frames.tobytes(), capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr
    info = probe(out)
    assert info.is_vfr
    got, fps = read_video(out, fps=10)
    assert fps == 10
    assert abs(got.shape[0] - 30) <= 1  # 3 s at 10 fps
    index = np.round(got[:, 0, 0, 0] / 4.0).astype(int)  # source frame shown by each output frame
    assert np.all(np.diff(index) >= 0)
    # output frame at t = k / 10 shows the source frame on screen at t (+/- one source frame)
    for k in (5, 15, 25):
        t = k / 10
        expect = t * 30 if t < 1 else 30 + (t - 1) * 15
        assert abs(index[k] - expect) <= 1, (k, index[k], expect)


def test_missing_file():
    with pytest.raises(MediaError, match="no such file"):
        probe("/nonexistent/clip.mp4")


def test_a_url_is_named_as_one_not_as_a_missing_file():
    """A URL read "no such file: http:/host/x.mp4" (the path folded its "//")."""
    with pytest.raises(MediaError, match=r"^not a local file: https://example\.org/a\.mp4 \(URLs are not fetched"):
        probe("https://example.org/a.mp4")
    with pytest.raises(MediaError, match="no such file: clips/a.mp4"):  # a relative path stays a path
        probe("clips/a.mp4")


def test_unreadable_file(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    with pytest.raises(MediaError, match="cannot read media file") as err:
        read_video(junk)
    assert "\n" not in str(err.value)


def test_no_video_stream(tmp_path):
    wav = tmp_path / "a.wav"
    _tone_with_onset(wav, 0.0, 0.5)
    assert read_audio(wav).shape[0] == pytest.approx(8000, abs=2)
    with pytest.raises(MediaError, match="no video stream"):
        read_video(wav)


def test_no_audio_stream(tmp_path):
    mp4 = tmp_path / "v.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=1", "-pix_fmt", "yuv420p", str(mp4))
    frames, fps = read_video(mp4)
    assert frames.shape == (25, 48, 64, 3) and fps == 25
    with pytest.raises(MediaError, match="no audio stream"):
        read_audio(mp4)


def test_hevc_portrait_and_mov(tmp_path):
    path = dev_clip("latentsync_demo1_video.mp4")  # HEVC, 1080x1920 portrait
    info = probe(path)
    assert info.video_codec == "hevc" and (info.width, info.height) == (1080, 1920)
    chunk = next(iter_video(path, max_side=640, chunk_frames=4))
    assert chunk.shape == (4, 640, 360, 3)
    mov = tmp_path / "clip.mov"
    ffmpeg("-i", str(path), "-t", "1", "-vf", "scale=180:320", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           "-c:a", "pcm_s16le", "-ac", "2", "-ar", "44100", str(mov))
    frames, fps = read_video(mov)
    assert fps == 25 and frames.shape == (25, 320, 180, 3)
    assert abs(len(read_audio(mov)) - 16000) < 400


def test_h264_with_b_frames_copied_into_avi_is_read_at_its_frame_rate(tmp_path):
    """Such an AVI counts every frame twice (avg_frame_rate 50 for a 25 fps clip): it was read at
    50 fps, every frame doubled, tracked twice."""
    src = tmp_path / "b.mp4"
    ffmpeg("-i", str(dev_clip("grid_swiz3n.mpg")), "-t", "2", "-c:v", "libx264", "-bf", "2", "-pix_fmt", "yuv420p",
           "-an", str(src))
    avi = tmp_path / "b.avi"
    ffmpeg("-i", str(src), "-c:v", "copy", str(avi))
    info = probe(avi)
    assert info.fps == 25 and not info.is_vfr, (info.avg_frame_rate, info.r_frame_rate)
    frames, fps = read_video(avi)
    assert fps == 25 and abs(frames.shape[0] - 50) <= 1


@pytest.mark.parametrize("ext", ["wav", "mp3"])
def test_a_clips_own_audio_extracted_by_ffmpeg_lines_up_as_audio(tmp_path, ext):
    """What a user does to check a file: extract the clip's audio with ffmpeg (and edit it), pass
    it with --audio. It must line up with the clip's own track: this FLV's first frame shows at
    33 ms (a frame after its audio starts), and an MP3 carries an encoder delay of ~70 ms that
    its decoder removes; both used to shift the result by one to two frames."""
    from worker.media.decode import read_audio_for_video

    path = dev_clip("cremad_1001_DFA_HAP_XX.flv")
    out = tmp_path / f"own.{ext}"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(path), "-vn", "-ac", "1", "-ar", "16000", str(out)],
                   check=True)
    info = probe(path)
    own = read_audio(path, 16000, info=info)
    other = read_audio_for_video(out, info)
    assert lag_samples(own, other) == pytest.approx(0, abs=2)


def test_read_ahead_yields_every_byte_in_blocks_and_stops_its_thread():
    import io
    import threading

    from worker.media.decode import _ReadAhead

    data = bytes(range(256)) * 40  # 10240 bytes
    ahead = _ReadAhead(io.BytesIO(data), 3000)
    blocks = list(ahead)
    ahead.close()
    assert [len(b) for b in blocks] == [3000, 3000, 3000, 1240] and b"".join(blocks) == data
    assert not any(t.name == "video-read-ahead" and t.is_alive() for t in threading.enumerate())


def test_read_ahead_reports_a_failing_pipe():
    from worker.media.decode import _ReadAhead

    class Broken:
        def __init__(self):
            self.calls = 0

        def read(self, n):
            self.calls += 1
            if self.calls > 1:
                raise OSError("pipe went away")
            return b"x" * n

    ahead = _ReadAhead(Broken(), 10)
    it = iter(ahead)
    assert next(it) == b"x" * 10
    with pytest.raises(MediaError, match="pipe went away"):
        next(it)
    ahead.close()


def test_early_stop_ends_ffmpeg_and_the_reader_and_big_frames_come_in_smaller_chunks(monkeypatch):
    import threading

    from worker.media import decode

    path = dev_clip("dfdc_real_lynaeydofd.mp4")  # 1920x1080: 6.2 MB a frame
    monkeypatch.setattr(decode, "MAX_CHUNK_BYTES", 3 * 1920 * 1080 * 3)
    gen = iter_video(path, chunk_frames=32)
    assert next(gen).shape == (3, 1080, 1920, 3)  # the byte bound, not chunk_frames
    gen.close()
    assert not any(t.name == "video-read-ahead" and t.is_alive() for t in threading.enumerate())


def test_read_ahead_turns_a_memory_error_or_a_dead_reader_into_a_media_error():
    from worker.media.decode import _ReadAhead

    class OutOfMemory:
        n = 0

        def read(self, k):
            self.n += 1
            if self.n > 1:
                raise MemoryError
            return b"x" * k

    it = iter(_ReadAhead(OutOfMemory(), 10))
    assert next(it) == b"x" * 10
    with pytest.raises(MediaError, match="out of memory"):
        next(it)  # it waited for good before: the thread died without its end marker

    class Empty:
        def read(self, k):
            return b""

    ahead = _ReadAhead(Empty(), 10)
    ahead._thread.join(timeout=10)
    assert ahead._queue.get(timeout=1) is ahead._END  # taken away: a reader that died silently
    with pytest.raises(MediaError, match="reader stopped"):
        list(ahead)


def test_names_ffmpeg_would_take_for_options_or_protocols_decode(tmp_path):
    from worker.media.decode import read_audio

    src = dev_clip("grid_bbaf2n.mpg")
    for name in ("-dash.mpg", "a:b.mpg"):
        path = tmp_path / name
        shutil.copy(src, path)
        info = probe(path)
        assert info.has_video and info.has_audio
        assert next(iter_video(path, chunk_frames=4, info=info)).shape[0] == 4
        assert read_audio(path, info=info).size > 16000


def _corrupt(src: Path, dst: Path, every: int, size: int, seed: int = 0, start: float = 0.25) -> None:
    """Random bytes over ``size`` bytes in every ``every``, from ``start`` of the file on (the
    container's header stays whole)."""
    data = bytearray(src.read_bytes())
    rng = np.random.default_rng(seed)
    for pos in range(int(len(data) * start), len(data), every):
        data[pos:pos + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))


def test_a_damaged_file_decodes_with_its_error_lines_and_never_stalls_on_them(tmp_path):
    import threading

    # MPEG-TS keeps decoding through damage; 8 loops of the 720p clip, 100 bytes in every 1000
    # overwritten, make ffmpeg write well over a pipe's 64 KB of errors (it stalled on them: a hang)
    ts = tmp_path / "loop.ts"
    ffmpeg("-stream_loop", "7", "-i", str(dev_clip("visualvoice_noisy_restaurant.mp4")), "-c", "copy", str(ts))
    bad = tmp_path / "bad.ts"
    _corrupt(ts, bad, every=1000, size=100)
    errors: list[str] = []
    frames: list[int] = []

    def decode():
        frames.extend(c.shape[0] for c in iter_video(bad, chunk_frames=32, errors=errors))

    t = threading.Thread(target=decode, daemon=True)
    t.start()
    t.join(timeout=240)
    assert not t.is_alive(), "decoding a damaged file hung"
    assert sum(frames) > 500 and sum(len(e) + 1 for e in errors) > 64 * 1024


def test_score_notes_a_damaged_file(tmp_path, capsys):
    import json

    from worker.cli import damage_notes, main

    assert damage_notes(("video", "a.mp4", []), ("audio", "a.mp4", [])) == []
    notes = damage_notes(("video", "a.mp4", ["x", "error while decoding MB 65 2"]), ("audio", "b.wav", []))
    assert len(notes) == 1 and "video of a.mp4 decoded with 2 ffmpeg errors" in notes[0] and "MB 65 2" in notes[0]
    # the 720p dev clip with 100 KB overwritten in its middle: it was scored without a word
    src = dev_clip("visualvoice_noisy_restaurant.mp4")
    bad = tmp_path / "damaged.mp4"
    _corrupt(src, bad, every=src.stat().st_size, size=100_000, seed=1, start=0.5)  # one block, midway
    assert main(["score", str(bad), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert any("video of" in n and "ffmpeg errors" in n for n in out["notes"])
    assert any("audio of" in n and "ffmpeg errors" in n for n in out["notes"])


def test_score_roi_on_a_whole_video_frame_says_so_and_decodes_it_small(tmp_path, capsys):
    import json

    from worker.cli import looks_like_roi, main

    assert looks_like_roi(96, 96) and looks_like_roi(112, 96) and looks_like_roi(None, None)
    assert not looks_like_roi(1280, 720) and not looks_like_roi(512, 512) and not looks_like_roi(96, 48)
    clip = tmp_path / "frame.mp4"  # 2 s of the 720p dev clip, given as if it were mouth ROIs
    ffmpeg("-i", str(dev_clip("visualvoice_noisy_restaurant.mp4")), "-t", "2", str(clip))
    assert main(["score", str(clip), "--roi", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert any(n.startswith("--roi: the frames are 1280x720") for n in out["notes"])
    assert "decode" in out["timings_s"] and "audio_decode" in out["timings_s"]


def test_frame_times_are_read_from_the_integer_pts_not_the_six_digit_pts_time():
    """showinfo prints pts_time with 6 significant digits: past 10000 s two frames 40 ms apart
    print the same time, and the later one was dropped as 'not after' the first (a review).
    The integer pts in the filter's time base keeps them apart."""
    import io

    from worker.media.decode import _FrameTimes

    log = (
        b"[Parsed_showinfo_1 @ 0x55] [info] config in time_base: 1/90000, frame_rate: 25/1\n"
        b"[Parsed_showinfo_1 @ 0x55] [info] n:   0 pts:      0 pts_time:0       pos: 48 fmt:yuv420p\n"
        b"[h264 @ 0x56] [error] error while decoding MB 3 4\n"
        b"[Parsed_showinfo_1 @ 0x55] [info] n:  25 pts:900000000 pts_time:10000   pos: 96 fmt:yuv420p\n"
        b"[Parsed_showinfo_1 @ 0x55] [info] n:  26 pts:900003600 pts_time:10000   pos: 99 fmt:yuv420p\n"
        b"[Parsed_showinfo_1 @ 0x55] [info] n:  27 pts: NOPTS pts_time:NOPTS pos: 99 fmt:yuv420p\n"
        # the input's tags are logged too: a title or comment that looks like showinfo is not a frame
        b"[info]     title           : showinfo n: 0 pts: 360000000 pts_time:4000\n"
        b"[info]     comment         : [error] not an error\n"
        b"[info]                     : [Parsed_showinfo_1 @ 0x55] [info] n: 9 pts: 7 pts_time:7\n"
    )
    times = _FrameTimes(io.BytesIO(log))
    got = [times.next() for _ in range(4)]
    assert got[:3] == [0.0, 10000.0, pytest.approx(10000.04, abs=1e-9)] and np.isnan(got[3])
    with pytest.raises(MediaError, match="without its time"):
        times.next()
    assert times.close() == ["[h264 @ 0x56] error while decoding MB 3 4"]


def _clip_at_times(path, times_s):
    """An H.264 mp4 whose frames show at ``times_s`` (in 1/90000 s ticks: such a file's base rate
    probes as 90000). ffmpeg's expressions nest about a hundred ifs deep: keep to 90 frames."""
    assert len(times_s) <= 90
    expr = str(round(times_s[-1] * 90000))
    for j in range(len(times_s) - 2, -1, -1):
        expr = f"if(eq(N,{j}),{round(times_s[j] * 90000)},{expr})"
    frames = np.zeros((len(times_s), 32, 48, 3), np.uint8)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "48x32", "-r", "25",
                    "-i", "-", "-vf", f"settb=1/90000,setpts='{expr}'", "-fps_mode", "passthrough",
                    "-enc_time_base", "1/90000", "-c:v", "libx264", str(path)], input=frames.tobytes(), check=True,
                   capture_output=True)


@pytest.mark.parametrize("case", ["mkv copy", "jitter"])
def test_a_recording_that_dropped_frames_is_read_at_its_base_rate_whatever_the_container_says(tmp_path, case):
    """A Matroska copy of a 25 fps recording that lost a third of its frames says 16.95 fps for
    both rates; an mp4 with +-8 ms jitter says 90000 (its time base) and 16.94 on average. Read
    at 16.95 fps, offsets step by 59 ms; the packets' own spacing says 25 (a review)."""
    rng = np.random.default_rng(21)
    kept = [0] + [k for k in range(1, 120) if rng.random() > 0.33]
    jitter_s = 0.008 if case == "jitter" else 0.0
    times = [k / 25 + (rng.uniform(-jitter_s, jitter_s) if k else 0.0) for k in kept]
    path = tmp_path / "src.mp4"
    _clip_at_times(path, times)
    if case == "mkv copy":
        path = tmp_path / "copy.mkv"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(tmp_path / "src.mp4"), "-c", "copy", str(path)],
                       check=True, capture_output=True)
    info = probe(path)
    assert info.avg_frame_rate < 18
    assert info.fps == 25 and info.is_vfr, (info.avg_frame_rate, info.r_frame_rate)


@pytest.mark.parametrize("fps", [20, 12.5, 5])
def test_a_steady_rate_no_camera_uses_is_kept(tmp_path, fps):
    """20 fps is no standard rate, and its frames keep to the 60 fps grid too (every third slot):
    it stays 20 fps, not 60 with two of three frames dropped; 12.5 and 5 keep to 25 and 10 (every
    other slot: exactly half, where rounding decided, a review) and stay too."""
    path = tmp_path / "steady.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc=s=48x32:r={fps}:d=4", "-c:v",
                    "libx264", str(path)], check=True, capture_output=True)
    info = probe(path)
    assert info.fps == fps and not info.is_vfr, (info.avg_frame_rate, info.r_frame_rate)


def test_a_timestamp_far_past_the_end_does_not_become_hours_of_frames(tmp_path, monkeypatch):
    """A frame time far past the container's end (a broken timestamp) would fill every slot up to
    it: the grid stops MAX_SLOTS_PAST_END_S past the duration (a review: 28125 s of frames from a
    6 s file, through a forged log line)."""
    from dataclasses import replace

    from worker.media import decode

    path = tmp_path / "short.mp4"
    _clip_at_times(path, [k / 25 for k in range(50)])
    info = probe(path)
    assert sum(len(c) for c in decode.iter_video(path, info=info)) == 50
    monkeypatch.setattr(decode, "MAX_SLOTS_PAST_END_S", 0.2)
    # as if the file said 1 s while its frames ran on: 1.2 s of slots, not 2 s
    assert sum(len(c) for c in decode.iter_video(path, info=replace(info, duration_s=1.0))) == 30


def test_an_audio_gap_shorter_than_100_ms_is_filled_where_its_timestamps_say(tmp_path):
    """One 64 ms audio packet lost, its neighbours' timestamps kept: the audio after it belongs
    where they put it. ffmpeg's aresample let gaps under its 0.1 s default through, so a review's
    clip read -80 ms past one lost AAC packet, with confidence."""
    whole, holed = tmp_path / "whole.mkv", tmp_path / "holed.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc=rate=25:size=64x64", "-f", "lavfi", "-i",
           "anoisesrc=r=16000:seed=7:amplitude=0.3", "-t", "3", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           "-c:a", "pcm_s16le", str(whole))
    ffmpeg("-i", str(whole), "-c", "copy", "-bsf:a", r"noise=drop=eq(n\,10)", str(holed))
    a, b = read_audio(whole), read_audio(holed)
    assert a.shape == b.shape  # before: 1024 samples short, everything after the gap early
    assert np.allclose(a[16000:], b[16000:], atol=1e-4)
    assert float(np.abs(b[10 * 1024 + 64: 11 * 1024 - 64]).max()) == 0.0  # the lost packet: silence


def test_frames_decoded_at_another_size_than_the_header_says_are_scaled_to_it(tmp_path):
    """VP6 copied from FLV into Matroska decodes 480x368 under a 480x360 header: the pipe was cut
    at 480x360 and out of step with the frames' times ("a frame came without its time")."""
    mkv = tmp_path / "vp6.mkv"
    ffmpeg("-i", str(dev_clip("cremad_1001_DFA_SAD_XX.flv")), "-map", "0:v", "-map", "0:a", "-c", "copy", str(mkv))
    info = probe(mkv)
    assert (info.height, info.width) == (360, 480)
    frames, _fps = read_video(mkv)
    flv, _ = read_video(dev_clip("cremad_1001_DFA_SAD_XX.flv"))
    assert frames.shape == flv.shape
    # the same pictures, the Matroska one scaled from 368 rows where FLV's header cropped 8
    assert float(np.abs(frames.astype(np.int16) - flv.astype(np.int16)).mean()) < 12.0


def test_a_video_stream_with_no_frame_to_decode_says_so(tmp_path):
    empty = tmp_path / "empty_video.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc=rate=25:size=64x64", "-f", "lavfi", "-i", "sine=r=16000", "-t", "1",
           "-c:v", "libx264", "-vf", "trim=end=0", "-c:a", "aac", str(empty))
    with pytest.raises(MediaError, match="no video frame could be decoded from"):
        read_video(empty)  # before: "cannot decode video of ...: Error marking filters as finished"


def test_a_short_clip_whose_average_rate_counts_one_frame_more_keeps_its_base_rate(tmp_path):
    """MPEG-PS copied into MP4: 75 frames over 2.96 s average 25.34 fps under a 25 fps base rate
    (the last frame has no duration). Read at the average, a frame was repeated."""
    mp4 = tmp_path / "grid.mp4"
    ffmpeg("-i", str(dev_clip("grid_lrwp9a.mpg")), "-c", "copy", str(mp4))
    info = probe(mp4)
    assert info.avg_frame_rate == pytest.approx(1875 / 74)  # what the container says
    assert info.fps == 25.0 and not info.is_vfr
    frames, fps = read_video(mp4)
    original, _ = read_video(dev_clip("grid_lrwp9a.mpg"))
    assert fps == 25.0 and frames.shape == original.shape


def test_jittering_audio_timestamps_are_followed_loosely_and_a_lost_packet_exactly():
    """Wall-clock stamped captures jitter: cutting and padding at every packet past 10 ms moved
    their audio by up to 12-34 ms (a review). A lost packet is one step, many straying ones jitter."""
    from worker.media.decode import audio_timestamps_jitter

    steady = np.arange(100) * 0.064
    lost = np.delete(steady, 10)
    durations = np.full(steady.shape, 0.064)
    jitter = steady + np.random.default_rng(0).uniform(-0.012, 0.012, steady.shape)
    assert not audio_timestamps_jitter(steady, durations)
    assert not audio_timestamps_jitter(lost, durations[:-1])
    assert audio_timestamps_jitter(jitter, durations)


def test_a_file_with_jittering_audio_timestamps_decodes_as_contiguous_audio(tmp_path, monkeypatch):
    from worker.media import decode

    thresholds: list[int] = []
    real_place = decode.place_audio

    def spy(samples, frames, hard_samples, **kw):
        thresholds.append(hard_samples)
        return real_place(samples, frames, hard_samples, **kw)

    monkeypatch.setattr(decode, "place_audio", spy)
    whole, jittered = tmp_path / "whole.mkv", tmp_path / "jittered.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc=rate=25:size=64x64", "-f", "lavfi", "-i",
           "anoisesrc=r=16000:seed=3:amplitude=0.3", "-t", "4", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           "-c:a", "pcm_s16le", str(whole))
    ffmpeg("-i", str(whole), "-c", "copy", "-bsf:a", "setts=ts=TS+trunc(24*random(0))-12", str(jittered))
    a, b = read_audio(whole), read_audio(jittered)
    assert thresholds == [160, 1600]  # 10 ms where the times keep to the samples, 0.1 s where they jitter
    # one lag for the whole clip (the first packet's jitter, where sample 0 is put), not a lag
    # that wanders with each packet's (before: cut and padded at every packet past 10 ms)
    lags = {lag_samples(a[s: s + 8000], b[s: s + 8000], max_lag=400) for s in range(0, 48000, 8000)}
    assert len(lags) == 1 and abs(lags.pop()) <= 16 * 13
