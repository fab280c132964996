"""worker.media.decode on files whose clock misbehaves: an audio format that changes mid-stream,
a clock that restarts at a join, chained Ogg, a variable-rate stream that lost a stretch of
frames, raw muxers' timestamp complaints, a truncated MP4. Inputs are made with ffmpeg: small
and synthetic, a few seconds each."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from worker.media.decode import (
    MediaError,
    iter_video,
    join_offsets_s,
    place_audio,
    probe,
    read_audio,
    read_audio_file,
    read_video,
    split_at_resets,
)

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")

SR = 16000


def ffmpeg(*args: str, stdin: bytes | None = None) -> None:
    """Run ffmpeg quietly; ``stdin``: bytes for an input given as "-"."""
    quiet = ["-v", "error", "-y", *(["-nostdin"] if stdin is None else [])]
    subprocess.run(["ffmpeg", *quiet, *args], input=stdin, check=True)


def _longest_silence_s(audio: np.ndarray) -> float:
    """The longest run of digital silence inside ``audio`` (its last 50 ms left out: the end of
    an encode)."""
    quiet = np.concatenate([[False], np.abs(audio[: -SR // 20]) < 1e-5, [False]])
    edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))
    return float((edges[1::2] - edges[::2]).max()) / SR if edges.size else 0.0


# --- the audio's rate or channel layout changes mid-stream (finding 1) ---------------------------

@pytest.mark.parametrize("first, second", [(("44100", "2"), ("48000", "2")), (("48000", "2"), ("48000", "1"))],
                         ids=["rate", "layout"])
def test_an_audio_format_change_mid_stream_inserts_no_silence(tmp_path, first, second):
    """MPEG-TS cut from two encodes: 1 s at one rate or layout, then 1.5 s at another. ffmpeg
    rebuilds its filters at the change and aresample's first_pts=0 padded silence from 0 to it (a
    probe: 7.47 s of audio for 5 s); the overlap at the join was kept once that was gone."""
    parts = []
    for k, ((rate, ch), start, length) in enumerate(((first, 0.0, 1.0), (second, 1.0, 1.5))):
        part = tmp_path / f"p{k}.ts"
        ffmpeg("-f", "lavfi", "-i", "testsrc=rate=25:size=64x64:duration=2.5", "-f", "lavfi", "-i",
               "sine=frequency=330:sample_rate=48000:duration=2.5", "-ss", str(start), "-t", str(length),
               "-c:v", "mpeg1video", "-c:a", "aac", "-ar", rate, "-ac", ch, "-output_ts_offset", str(start),
               "-f", "mpegts", str(part))
        parts.append(part.read_bytes())
    joined = tmp_path / "joined.ts"
    joined.write_bytes(b"".join(parts))
    errors: list[str] = []
    audio = read_audio(joined, SR, errors=errors)
    assert abs(audio.shape[0] / SR - 2.5) < 0.05  # before: 3.5 s
    # before: the first second again, as silence; now at most the first part's last AAC frame,
    # padded by its encoder past the cut (its timestamps overlap the second part's first frame)
    assert _longest_silence_s(audio) < 1024 / 44100
    assert errors == []  # before: the channel pipe's muxer complained at the rebuild (8 lines)


def test_a_chained_ogg_reads_as_long_as_its_chains(tmp_path):
    """Two Vorbis streams, 44.1 then 48 kHz, cat'ed: ffmpeg restarts the clock at the second and
    runs its 48 kHz samples on the first's 44.1 kHz clock, and aresample padded 8.8% silence in."""
    chains = []
    for k, (rate, length) in enumerate((("44100", "1.0"), ("48000", "2.0"))):
        chain = tmp_path / f"c{k}.ogg"
        ffmpeg("-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={rate}:duration={length}", "-c:a", "libvorbis",
               str(chain))
        chains.append(chain.read_bytes())
    chained = tmp_path / "chained.ogg"
    chained.write_bytes(b"".join(chains))
    audio = read_audio_file(chained, SR)
    assert abs(audio.shape[0] / SR - 3.0) < 0.03  # before: 3.17 s
    assert _longest_silence_s(audio) < 0.01


CLICKS = "aevalsrc='0.8*sin(2*PI*1000*t)*lt(mod(t\\,1)\\,0.006)':s=48000:d=4"  # a 6-ms click each second
GAP = "aselect='not(between(t\\,1.2\\,1.8))'"  # 0.6 s cut out (its timestamps kept)


def _clicks_s(audio: np.ndarray) -> list[float]:
    """Where the clicks start (s): the first loud sample after each 0.3 s of quiet."""
    loud = np.flatnonzero(np.abs(audio) > 0.2)
    return [round(float(t) / SR, 3) for k, t in enumerate(loud) if k == 0 or t - loud[k - 1] > 0.3 * SR]


@pytest.mark.parametrize("codec, ext", [("libopus", "opus"), ("libvorbis", "ogg"), ("theora", "ogg")])
def test_an_ogg_gap_is_read_as_silence_where_its_timestamps_put_it(tmp_path, codec, ext):
    """An Ogg file whose audio has 0.6 s cut out (its granule positions keep the gap): counted by
    its samples throughout (the chained-Ogg fix), the clicks after the gap read 0.6 s early (a
    review: 2403 ms for 3000) and the file 0.6 s short; its timestamps are followed until a
    chain restarts the clock."""
    path = tmp_path / f"gap.{ext}"
    if codec == "theora":  # with a video: read_audio, sample 0 at the first frame
        ffmpeg("-f", "lavfi", "-i", "testsrc=rate=25:size=64x64:duration=4", "-f", "lavfi", "-i", CLICKS,
               "-af", GAP, "-c:v", "libtheora", "-c:a", "libvorbis", str(path))
        audio = read_audio(path, SR)
    else:
        ffmpeg("-f", "lavfi", "-i", CLICKS, "-af", GAP, "-c:a", codec, str(path))
        audio = read_audio_file(path, SR)
    assert abs(audio.shape[0] / SR - 4.0) < 0.03  # before: 3.4 s
    # the clicks after the gap (before: at 1.4 and 2.4 s); libvorbis's own timestamps move the
    # one before it to 1.6 s (its encoder's frame queue: so read at commit 8317695 too)
    assert _clicks_s(audio)[-2:] == pytest.approx([2.0, 3.0], abs=0.003)


def test_a_gap_across_max_s_is_silence_up_to_the_cut_not_the_end(tmp_path):
    """A 0.6-s gap in the audio from 2.2 s, read with max_s=2.5: ffmpeg stops by the frames'
    times (a little past 2.5 s), so no frame after the gap came and the audio ended at the gap
    (a review: 35482 samples for 40000). The gap is silence up to the cut; a track that ends
    before the cut is not padded past its end."""
    gapped, short = tmp_path / "gapped.mkv", tmp_path / "short.mkv"
    for path, af in ((gapped, "aselect='not(between(t,2.2,2.8))'"), (short, "atrim=end=2")):
        ffmpeg("-f", "lavfi", "-i", "testsrc=rate=25:size=64x64:duration=4", "-f", "lavfi", "-i",
               "sine=frequency=440:sample_rate=48000:duration=4", "-af", af, "-c:v", "mpeg4", "-c:a", "pcm_s16le",
               str(path))
    whole = read_audio(gapped, SR)
    audio = read_audio(gapped, SR, max_s=2.5)
    assert audio.shape[0] == 40000  # before: 35482
    np.testing.assert_array_equal(audio, whole[:40000])
    assert (audio[round(2.22 * SR):] == 0).all()  # the gap: from the end of the frame at 2.197 s
    assert read_audio(short, SR, max_s=3.0).shape[0] == read_audio(short, SR).shape[0]


# --- a clock that restarts at a join (finding 2) --------------------------------------------------

def _flash_and_click_ts(tmp_path: Path, name: str, flash_s: float | None, length_s: float, audio_lead_s: float = 0.0
                        ) -> Path:
    """An MPEG-TS part of its own (its clock from 0): 25 fps frames, black but one white one at
    ``flash_s``, and 16 kHz audio silent but a click there (None: neither); the audio stream
    starting ``audio_lead_s`` before the video."""
    n = round(length_s * 25)
    frames = np.zeros((n, 48, 64, 3), np.uint8)
    audio = np.zeros(round((length_s + audio_lead_s) * SR), np.float32)
    if flash_s is not None:
        frames[round(flash_s * 25)] = 255
        at = round((flash_s + audio_lead_s) * SR)
        audio[at: at + 16] = 0.9
    video, wav = tmp_path / f"{name}.nut", tmp_path / f"{name}.wav"
    ffmpeg("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "64x48", "-r", "25", "-i", "-", "-c:v", "ffv1", str(video),
           stdin=frames.tobytes())
    ffmpeg("-f", "f32le", "-ar", str(SR), "-ac", "1", "-i", "-", str(wav), stdin=audio.tobytes())
    out = tmp_path / f"{name}.ts"
    ffmpeg("-itsoffset", str(audio_lead_s), "-i", str(video), "-i", str(wav), "-map", "0:v", "-map", "1:a",
           "-c:v", "mpeg1video", "-q:v", "2", "-c:a", "mp2", "-f", "mpegts", str(out))
    return out


def test_ts_parts_whose_clock_restarts_are_read_whole_and_in_sync(tmp_path):
    """Two MPEG-TS parts encoded apart and cat'ed, the second's clock from 0 again (and its audio
    starting 60 ms before its video): -copyts kept the restart, and every frame after it was
    dropped as going back in time (a probe: 63 of 125 frames), the audio trimmed alike. Read
    whole, the second part's flash and click (1 s into it) are where its own timestamps put them
    against each other."""
    a = _flash_and_click_ts(tmp_path, "a", None, 2.0)
    b = _flash_and_click_ts(tmp_path, "b", 1.0, 2.0, audio_lead_s=0.06)
    joined = tmp_path / "joined.ts"
    joined.write_bytes(a.read_bytes() + b.read_bytes())

    def flash_and_click_s(path: Path, notes: list[str] | None = None) -> tuple[float, float, int, int]:
        frames, fps = read_video(path)
        audio = read_audio(path, SR, notes=notes)
        flash = int(np.argmax(frames.reshape(len(frames), -1).mean(axis=1))) / fps
        return flash, int(np.argmax(np.abs(audio))) / SR, frames.shape[0], audio.shape[0]

    notes: list[str] = []
    flash_s, click_s, n_frames, n_samples = flash_and_click_s(joined, notes)
    alone_flash_s, alone_click_s, _, _ = flash_and_click_s(b)
    assert n_frames == 100  # before: 50
    assert abs(n_samples / SR - 4.0) < 0.1  # before: 2.0 s
    assert flash_s == pytest.approx(2.0 + alone_flash_s, abs=0.001)
    # the click against the flash as in the part read alone (mp2 in MPEG-TS puts it 20 ms early)
    assert (click_s - flash_s) == pytest.approx(alone_click_s - alone_flash_s, abs=0.001)
    assert any("restart" in n for n in notes)


def test_one_damaged_frame_time_is_no_restart(tmp_path, monkeypatch):
    """A frame whose time alone goes far back is dropped, as before restarts were read: the
    frames after it keep their times (read as a restart, all of them would have moved)."""
    from worker.media import decode

    clip = tmp_path / "clip.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc=rate=25:size=64x64:duration=3", "-c:v", "ffv1", str(clip))
    whole = np.concatenate(list(iter_video(clip)))
    real_next, calls = decode._FrameTimes.next, [0]

    def damaged(self):
        t = real_next(self)
        calls[0] += 1
        return 0.1 if calls[0] == 41 else t  # frame 40 (1.6 s) says 0.1 s

    monkeypatch.setattr(decode._FrameTimes, "next", damaged)
    frames = np.concatenate(list(iter_video(clip)))
    assert frames.shape == whole.shape
    same = [k for k in range(75) if np.array_equal(frames[k], whole[k])]
    assert same == [k for k in range(75) if k != 40]  # its slot shows frame 39 or 41


def test_a_restart_is_where_the_clock_goes_back_and_stays_back_and_parts_join_end_to_end():
    part = np.arange(30) * 0.04  # 1.2 s
    assert split_at_resets(np.concatenate([part, part, part])) == [30, 60]
    assert split_at_resets(np.concatenate([part, part[:3] + 0.7])) == []  # 0.46 s back: an overlap, no restart
    assert split_at_resets(np.array([5.0])) == []
    damaged = np.concatenate([part, part + 1.2])
    damaged[40] = 0.1  # one time far back: no restart
    assert split_at_resets(damaged) == []
    damaged[40] = 99.0  # one far ahead: the frame after it is no restart either
    assert split_at_resets(damaged) == []
    # parts [0, 0.16) and [1.0, 1.08): the second moved to start at 0.16; a third from 0 after it
    start = np.array([0.0, 0.04, 0.08, 0.12, 1.0, 1.04, 0.0, 0.04])
    end = start + 0.04
    assert join_offsets_s(start, end, [4, 6]) == pytest.approx([-0.84, 0.24])


# --- placing audio by its timestamps (pure) ----------------------------------------------------------

def _place(frames, hard=160, **kw):
    samples = np.concatenate([np.full(n, k + 1, np.float32) for k, (_, n) in enumerate(frames)])
    out, restarts = place_audio(samples, frames, hard, **kw)
    return out, restarts


def test_place_audio_pads_a_gap_drops_an_overlap_and_follows_jitter():
    out, _ = _place([(0, 100), (100, 100), (400, 100)], from_zero=True)  # a 200-sample gap
    assert out.shape[0] == 500 and (out[200:400] == 0).all() and (out[400:] == 3).all()
    out, _ = _place([(0, 100), (100, 100), (150, 100)], from_zero=True)  # a 50-sample jitter: followed on
    assert out.shape[0] == 300
    # an overlap longer than the frame that found it: the frames after it are dropped too (a
    # rebuilt filter's first frames all overlapped, and only the first was dropped)
    out, _ = _place([(0, 1000), (500, 200), (700, 200), (900, 200)], from_zero=True)
    assert out.shape[0] == 1100 and (out[1000:] == 4).all()


def test_place_audio_puts_sample_0_at_time_0_or_at_the_first_sample():
    out, _ = _place([(320, 100), (420, 100)], from_zero=True)  # starts late: padded
    assert out.shape[0] == 520 and (out[:320] == 0).all()
    out, _ = _place([(-150, 100), (-50, 100)], from_zero=True)  # starts early: trimmed
    assert out.shape[0] == 50 and (out == 2).all()
    out, _ = _place([(320, 100), (420, 100)], from_zero=False)
    assert out.shape[0] == 200


def test_place_audio_joins_restarted_parts_and_may_ignore_timestamps():
    part = [(k * 500, 500) for k in range(12)]
    frames = part + part  # the clock restarts at frame 12
    out, restarts = _place(frames, from_zero=True, reset_samples=2000)
    assert restarts == 1 and out.shape[0] == 12000 and (out[6000:6500] == 13).all()  # end to end
    out, _ = _place(frames, from_zero=True, reset_samples=2000, reset_offsets=lambda: [6500])
    assert out.shape[0] == 12500 and (out[6000:6500] == 0).all()  # the video's join: 500 samples later
    damaged = part + [(6000 + k * 500, 500) for k in range(12)]
    damaged[15] = (100, 500)  # one time far back: follows on, not a restart, nothing dropped
    out, restarts = _place(damaged, from_zero=True, reset_samples=2000)
    assert restarts == 0 and out.shape[0] == 12000 and (out[7500:8000] == 16).all()
    out, _ = _place([(0, 1000), (5000, 1000)], from_zero=True, follow=False)
    assert out.shape[0] == 2000
    # chained Ogg: its timestamps until the clock first restarts (a gap padded), then counted
    gapped = [(0, 500), (1500, 500), (2000, 500), (2500, 500), (3000, 500), (0, 500), (1400, 500)]
    out, restarts = _place(gapped, from_zero=True, reset_samples=2000, count_after_restart=True)
    assert restarts == 1 and out.shape[0] == 4500 and (out[500:1500] == 0).all() and (out[4000:] == 7).all()
    out, _ = _place([(0, 1000), (1000, 1000)], from_zero=True, max_samples=1500)
    assert out.shape[0] == 1500


def test_place_audio_copies_nothing_when_nothing_moves_and_in_place_gives_the_same(monkeypatch):
    """The samples come back as a view when no frame is moved (a second copy held 196 MB for a
    20-min track, 116 MB before); moved in place (in_place) or told at once (_unmoved_shift), the
    result is the frame-by-frame one."""
    from worker.media import decode

    samples = np.arange(1000, dtype=np.float32)
    steady = [(k * 100 + (3 if k % 2 else 0), 100) for k in range(10)]  # within the threshold
    out, _ = place_audio(samples, steady, 160, from_zero=True)
    assert out.shape[0] == 1000 and np.shares_memory(out, samples)
    out, _ = place_audio(samples, [(t - 250, n) for t, n in steady], 160, from_zero=True)  # starts early
    assert out.shape[0] == 750 and np.shares_memory(out, samples) and out[0] == 250
    rng = np.random.default_rng(0)
    for trial in range(300):
        sizes = rng.integers(1, 400, rng.integers(1, 12))
        times = np.cumsum(sizes) - sizes + rng.integers(-300, 300) + rng.choice([0, 0, 0, -250, 250, 5], sizes.size)
        frames = [(int(t), int(n)) for t, n in zip(times, sizes, strict=True)]
        x = rng.standard_normal(int(sizes.sum())).astype(np.float32)
        kw = {"from_zero": bool(trial % 2), "reset_samples": 2000, "start_samples": 16,
              "max_samples": None if trial % 3 else 500}
        monkeypatch.setattr(decode, "_unmoved_shift", lambda *a: None)
        slow, _ = place_audio(x.copy(), frames, 160, **kw)
        monkeypatch.undo()
        fast, _ = place_audio(x.copy(), frames, 160, **kw)
        moved, _ = place_audio(x.copy(), frames, 160, in_place=True, **kw)
        np.testing.assert_array_equal(fast, slow)
        np.testing.assert_array_equal(moved, slow)


# --- a variable-rate stream that lost a stretch of frames (finding 3) ------------------------------

def test_frames_far_from_any_decoded_frame_are_listed_as_missing(tmp_path):
    """About 1 s without frames in a VFR file: its slots held the frames either side of the hole
    (a probe's 1-s window over it read a confident +160 ms). They are still yielded, and listed."""
    holed, dropped = tmp_path / "holed.mkv", tmp_path / "dropped.mkv"
    for path, keep in ((holed, r"lt(n\,50)+gt(n\,75)"), (dropped, r"not(eq(mod(n\,10)\,5))")):
        ffmpeg("-f", "lavfi", "-i", "testsrc=rate=25:size=64x64:duration=5", "-vf", f"select='{keep}'",
               "-fps_mode", "vfr", "-c:v", "ffv1", str(path))
    missing: list[tuple[int, int]] = []
    assert sum(len(c) for c in iter_video(holed, fps=25, missing=missing)) == 125
    # frames 49 (1.96 s) and 76 (3.04 s) either side: slots 52..73 are more than 2 frames from both
    assert missing == [(52, 74)]
    missing = []
    assert sum(len(c) for c in iter_video(dropped, fps=25, missing=missing)) == 125
    assert missing == []  # single drops: each slot's nearest frame is one frame away


def test_frames_a_stream_never_had_are_not_listed_as_missing(tmp_path):
    """A 30 fps phone clip whose header says 60 (one frame in ten 1/60 s early, a frame lost in
    twenty, two in forty), read at its own rate: 2 periods of 60 fps listed single slots in its
    100-ms gaps. Theora in Ogg writes no frame for a still picture (frames 0.48 s apart): all but
    the slots next to a frame were listed. The frames' own spacing sets the period now."""
    phone, still = tmp_path / "phone.mp4", tmp_path / "still.ogv"
    early = r"(N/30 - 0.01667*eq(mod(N\,10)\,5) + 0.0333*floor(N/20) + 0.0333*floor(N/40))/TB"
    ffmpeg("-f", "lavfi", "-i", "testsrc=rate=30:size=64x48:duration=4", "-vf", f"settb=1/90000,setpts='{early}'",
           "-fps_mode", "passthrough", "-enc_time_base", "1/90000", "-video_track_timescale", "90000",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", str(phone))
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:size=64x64:rate=25:duration=4", "-c:v", "libtheora", str(still))
    assert probe(phone).fps == 60.0
    for path, before in ((phone, [(83, 84), (169, 170)]), (still, [(3, 10), (15, 22)])):
        for fps in (None, 25.0):
            missing: list[tuple[int, int]] = []
            assert sum(len(c) for c in iter_video(path, fps=fps, missing=missing)) > 90
            assert missing == [], (path.name, fps, before)  # before: e.g. ``before`` at its own rate


# --- ffmpeg's lines that are no damage, and one that should be said plainly (findings 4, 6) -------

def test_a_clean_vfr_file_decodes_without_error_lines(tmp_path):
    """The rawvideo muxer says "non monotonically increasing dts" for frames closer than its
    time base (1 s at 25 fps, then 1 s at 30 fps): the frames are written all the same, and a
    clean file read as damaged ("decoded with 12 ffmpeg errors (damaged data skipped)")."""
    vfr = tmp_path / "vfr.mp4"  # its base rate 25 fps: the muxer's time base 1/25 s
    ffmpeg("-f", "lavfi", "-i", "testsrc=rate=25:size=64x64:duration=1", "-f", "lavfi", "-i",
           "testsrc=rate=30:size=64x64:duration=1", "-filter_complex", "[0:v][1:v]concat=n=2:v=1",
           "-fps_mode", "vfr", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(vfr))
    errors: list[str] = []
    assert sum(len(c) for c in iter_video(vfr, errors=errors)) > 40
    assert errors == []


def test_a_truncated_mp4_is_said_to_be_truncated(tmp_path):
    whole, cut, text = tmp_path / "whole.mp4", tmp_path / "cut.mp4", tmp_path / "text.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=rate=25:size=64x64:duration=2", "-c:v", "mpeg4", str(whole))
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])  # the moov index is written last
    text.write_text("hello, this is no video\n")
    with pytest.raises(MediaError, match=r"cut\.mp4: the file looks truncated: it has no moov index"):
        probe(cut)
    with pytest.raises(MediaError) as err:  # not an MP4 at all: not called truncated
        probe(text)
    assert "looks truncated" not in str(err.value)
    # full length, its index damaged (its box renamed): every box is there, so not "cut off"
    damaged = tmp_path / "damaged.mp4"
    at = data.rfind(b"moov")
    for garbage in (b"moox", b"\xce,}\xe9\xce,}\xe9"):  # its type, or its size and type overwritten
        damaged.write_bytes(data[:at - 4 * (len(garbage) // 8)] + garbage + data[at + 4:])
        with pytest.raises(MediaError, match=r"damaged\.mp4: the file looks damaged or truncated: it has no moov") \
                as err:
            probe(damaged)
        assert "cut off" not in str(err.value)
