"""`sync-scorer score MEDIA` on real footage (issue 3's tests): shifted copies of dev clips recover
the shift and its sign (judged against the absolute applied shift, the clip's own audio = 0 ms),
a mismatched pair scores lower than the matched one, the error cases give one line and a
non-zero exit, and a clip without a face is labelled NO_FACE.

The real clips come from ../shared/data/dev-clips (the `dev_clips_dir` fixture skips loudly when
it is absent). Shifted and mismatched audio is written as WAV and passed with --audio, the way a
user would check a file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from worker.cli import main

SR = 16000
# Real, unflagged clips of different containers, codecs and frame rates (MP4/H.264 25 fps,
# MPEG-1 25 fps, FLV 29.97 fps), chosen for variety and among the speakers the default bundle
# is NOT trained on (make_model's seed-1234 speaker split; checked below): the shortest
# held-out clip of each family, not the ones the model does best on.
SHIFT_CLIPS = ["vox_pcavs_620900105.mp4", "grid_swiz3n.mpg", "cremad_1001_DFA_ANG_XX.flv"]
SHIFTS_MS = [120, -120]
MATCHED_CLIP, OTHER_SPEAKER = "vox_pcavs_620900105.mp4", "vox_pcavs_517600055.mp4"

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")


def _score(capsys, media: Path, *extra: str) -> dict:
    """Run `sync-scorer score MEDIA --json ...` in-process; the last stdout line is the JSON."""
    rc = main(["score", str(media), "--json", *extra])
    out = capsys.readouterr().out
    assert rc == 0, out
    return json.loads(out.strip().splitlines()[-1])


def _own_audio(path: Path) -> np.ndarray:
    """The clip's audio track as a user gets it (`ffmpeg -i clip -vn -ac 1 -ar 16000 -f f32le`):
    sample 0 where the track starts, which `score --audio` lines up with the clip."""
    proc = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-vn", "-ac", "1",
                           "-ar", str(SR), "-f", "f32le", "pipe:1"], capture_output=True, check=True)
    return np.frombuffer(proc.stdout, np.float32).copy()


def _write_wav(path: Path, audio: np.ndarray) -> Path:
    pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as wf:
        wf.setnchannels(1)
        wf.setsampwidth(2)
        wf.setframerate(SR)
        wf.writeframes(pcm.tobytes())
    return path


def _delayed(audio: np.ndarray, shift_ms: float) -> np.ndarray:
    """Audio delayed by shift_ms (> 0: it lags the video) or advanced (< 0), same length."""
    k = round(shift_ms * SR / 1000)
    out = np.zeros_like(audio)
    if k >= 0:
        out[k:] = audio[: len(audio) - k]
    else:
        out[:k] = audio[-k:]
    return out


def test_clips_used_here_are_held_out_by_the_default_bundle():
    """These tests measure generalisation: the default bundle must not have trained on them."""
    from model_store.bundle import load_bundle

    manifest, _ = load_bundle(None)
    trained = set((manifest.training.get("data") or {}).get("dev_train_clips") or [])
    used = {Path(c).stem for c in [*SHIFT_CLIPS, MATCHED_CLIP, OTHER_SPEAKER]}
    assert not used & trained, f"the default bundle was trained on {sorted(used & trained)}: pick held-out clips"


# Known misses of the current default bundle, kept visible as XFAIL (an XPASS is welcome) rather
# than hidden: syncnet-lite@1.4.0 to 1.7.0 read this held-out clip's own audio one or two frames
# early (-40 or -80 ms; the classical baseline's fit on it is too poor to say which), and its
# +120 ms copy lands at +40 ms, 2 frames off. (1.2.0's known misses, cremad ANG at +/-120 ms,
# pass since 1.3.0.) eval-real measures the rate of such misses over all dev clips (issue 3);
# this case must pass once the model improves.
KNOWN_MISSES = {
    ("vox_pcavs_620900105.mp4", 120): "syncnet-lite@1.4.0 to 1.7.0 estimate +40 ms (2 frames off)",
}


@pytest.mark.parametrize("clip", SHIFT_CLIPS)
@pytest.mark.parametrize("shift_ms", SHIFTS_MS)
def test_shifted_audio_recovers_absolute_shift_and_sign(request, capsys, tmp_path, dev_clips_dir, clip, shift_ms):
    if (clip, shift_ms) in KNOWN_MISSES:
        request.applymarker(pytest.mark.xfail(reason=KNOWN_MISSES[(clip, shift_ms)], strict=False))
    media = dev_clips_dir / clip
    wav = _write_wav(tmp_path / "shifted.wav", _delayed(_own_audio(media), shift_ms))
    res = _score(capsys, media, "--audio", str(wav))
    frame_ms = 1000.0 / res["fps"]
    assert res["label"] == "OK", res["label"]
    assert res["offset_ms"] is not None, "no offset for a clip with a face and speech"
    # absolute: the estimate must be the applied shift (own audio = 0 ms), within one frame
    assert abs(res["offset_ms"] - shift_ms) <= frame_ms + 0.5, (clip, shift_ms, res["offset_ms"])
    assert np.sign(res["offset_ms"]) == np.sign(shift_ms)
    assert res["direction"] == ("AUDIO_LAGS" if shift_ms > 0 else "AUDIO_LEADS")


def test_an_8_khz_recording_is_read_by_the_narrowband_model_and_the_shift_recovered(capsys, tmp_path, dev_clips_dir):
    """A telephone recording (8 kHz WAV) of a held-out clip's audio, delayed 120 ms: every voiced
    window goes to the bundle's narrowband model (the summary's note and the windows' scorer say
    so), and the shift is read as with the full band. --no-narrowband reads it all full-band."""
    media = dev_clips_dir / "grid_swiz3n.mpg"
    wav = _write_wav(tmp_path / "shifted16.wav", _delayed(_own_audio(media), 120.0))
    phone = tmp_path / "phone8k.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(wav), "-ar", "8000", str(phone)], check=True)
    res = _score(capsys, media, "--audio", str(phone))
    scored = [w for w in res["windows"] if w["score"] is not None]
    assert scored and all(w["scorer"] == res["scorer"] + "-nb" for w in scored), [w["scorer"] for w in scored]
    assert any("telephone-band audio" in n and "narrowband model" in n for n in res["notes"]), res["notes"]
    # the full-band model's caveat about 8 kHz audio is not given when the narrowband one read it
    assert not any("sampled at 8000 Hz" in n for n in res["notes"]), res["notes"]
    assert abs(res["offset_ms"] - 120.0) <= 1000.0 / res["fps"] + 0.5, res["offset_ms"]
    plain = _score(capsys, media, "--audio", str(phone), "--no-narrowband")
    assert {w["scorer"] for w in plain["windows"]} == {plain["scorer"]} == {res["scorer"]}
    assert any("sampled at 8000 Hz" in n for n in plain["notes"]), plain["notes"]


def test_mismatched_pair_scores_lower_than_matched(capsys, tmp_path, dev_clips_dir):
    media = dev_clips_dir / MATCHED_CLIP
    own = _own_audio(media)
    other = _own_audio(dev_clips_dir / OTHER_SPEAKER)
    other = np.tile(other, -(-len(own) // len(other)))[: len(own)]  # cover the whole video
    matched = _score(capsys, media)
    mismatched = _score(capsys, media, "--audio", str(_write_wav(tmp_path / "other.wav", other)))
    assert matched["score"] is not None and mismatched["score"] is not None
    assert mismatched["score"] < matched["score"], (matched["score"], mismatched["score"])
    # another speaker's audio has no true offset: the summary must not be a confident one
    assert mismatched["confidence"] < 0.5, mismatched


def test_an_offset_beyond_the_default_search_is_read_with_a_wider_one(capsys, tmp_path, dev_clips_dir):
    """400 ms is outside the default +/-200 ms search (CONTRACT: configurable): --max-offset-ms
    600 finds it, absolute and signed, and so do most of its 1-s windows."""
    media = dev_clips_dir / "grid_swiz3n.mpg"
    wav = _write_wav(tmp_path / "late.wav", _delayed(_own_audio(media), 400))
    res = _score(capsys, media, "--audio", str(wav), "--max-offset-ms", "600")
    frame_ms = 1000.0 / res["fps"]
    assert abs(res["offset_ms"] - 400) <= frame_ms + 0.5, res["offset_ms"]
    assert res["direction"] == "AUDIO_LAGS"
    assert sum((w["offset_ms"] or 0) > 200 for w in res["windows"]) >= len(res["windows"]) // 2
    assert "must be within 40..1000" in _one_line_error(capsys, ["score", str(media), "--max-offset-ms", "5000"])


def test_a_50_fps_copy_reads_as_the_25_fps_clip(capsys, tmp_path, dev_clips_dir):
    """The networks know 25-30 fps lips: 50 fps frames (each one twice) used to read a clip's
    offset 20-43 ms later (an audit); scored on every other frame they read as the clip."""
    media = dev_clips_dir / "grid_swiz3n.mpg"
    fast = tmp_path / "fifty.mp4"
    _ffmpeg("-i", str(media), "-vf", "fps=50", "-c:v", "libx264", "-crf", "18", "-c:a", "aac", str(fast))
    base, res = _score(capsys, media), _score(capsys, fast)
    assert res["fps"] == 50 and all(w["frame_end"] - w["frame_start"] == 50 for w in res["windows"])
    assert res["offset_ms"] == base["offset_ms"] and res["direction"] == base["direction"], (base["offset_ms"], res["offset_ms"])
    assert res["score"] == pytest.approx(base["score"], abs=0.05)


def test_of_two_audio_streams_the_default_one_is_scored_and_the_note_says_so(capsys, tmp_path, dev_clips_dir):
    """A file with another speaker's track first and the clip's own, flagged default, second (a
    dubbed film's layout): players play the flagged one, and so must the scorer."""
    media, other = dev_clips_dir / "grid_swiz3n.mpg", dev_clips_dir / "vox_pcavs_517600055.mp4"
    two = tmp_path / "two tracks.mp4"
    _ffmpeg("-i", str(media), "-i", str(other), "-map", "0:v", "-map", "1:a", "-map", "0:a", "-c:v", "libx264",
            "-c:a", "aac", "-disposition:a:0", "0", "-disposition:a:1", "default", "-shortest", str(two))
    base, own = _score(capsys, media), _score(capsys, two)
    assert abs(own["offset_ms"] - base["offset_ms"]) <= 40 and own["score"] > 0.5, own
    assert any("2 audio streams: scored stream 1" in n for n in own["notes"]), own["notes"]
    dub = _score(capsys, two, "--audio-stream", "0")
    assert dub["score"] < own["score"] and any("scored stream 0" in n for n in dub["notes"])
    assert "audio stream must be within 0..1" in _one_line_error(capsys, ["score", str(two), "--audio-stream", "2"])


def test_a_truncated_file_says_how_much_of_it_was_scored(capsys, tmp_path, dev_clips_dir):
    whole = tmp_path / "whole.mp4"
    _ffmpeg("-i", str(dev_clips_dir / "vox_pcavs_00015.mp4"), "-c", "copy", "-movflags", "+faststart", str(whole))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    res = _score(capsys, cut)
    assert any("could be decoded (truncated or damaged?)" in n for n in res["notes"]), res["notes"]
    assert "--fps must be within 10..240" in _one_line_error(capsys, ["score", str(cut), "--fps", "2"])


def _one_line_error(capsys, argv: list[str]) -> str:
    rc = main(argv)
    cap = capsys.readouterr()
    assert rc != 0
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1, cap.err
    assert "Traceback" not in cap.err
    return lines[0]


def test_missing_file_is_one_line_error_in_a_subprocess(tmp_path):
    missing = tmp_path / "nope.mp4"
    proc = subprocess.run([sys.executable, "-m", "worker.cli", "score", str(missing)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "no such file" in proc.stderr


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, timeout=60)


def test_no_video_stream(capsys, tmp_path):
    wav = tmp_path / "speech_only.wav"
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:duration=2", str(wav))
    assert "no video stream" in _one_line_error(capsys, ["score", str(wav)])


def test_no_audio_stream(capsys, tmp_path):
    mp4 = tmp_path / "silent_video.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=2", "-c:v", "libx264",
            "-pix_fmt", "yuv420p", str(mp4))
    assert "no audio stream" in _one_line_error(capsys, ["score", str(mp4)])


def test_a_bad_audio_file_is_refused_before_the_face_tracking(capsys, tmp_path, monkeypatch):
    from worker.tracking import MouthTracker

    def no_tracking(*_a, **_k):
        raise AssertionError("tracked a clip whose --audio file cannot be used")

    monkeypatch.setattr(MouthTracker, "track_faces_chunks", no_tracking)  # every tracking path
    mp4 = tmp_path / "silent_video.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=2", "-c:v", "libx264",
            "-pix_fmt", "yuv420p", str(mp4))
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF not really" * 10)
    assert f"no audio stream in {mp4}" in _one_line_error(capsys, ["score", str(mp4), "--audio", str(mp4)])
    assert "cannot read media file" in _one_line_error(capsys, ["score", str(mp4), "--audio", str(junk)])


def test_an_fps_out_of_range_is_refused_before_decoding(capsys, dev_clips_dir, monkeypatch):
    from worker.media import decode

    def no_decoding(*_a, **_k):
        raise AssertionError("decoded before the --fps check")

    monkeypatch.setattr(decode, "iter_video", no_decoding)
    assert "--fps must be within 10..240" in _one_line_error(capsys, ["score", str(dev_clips_dir / "grid_swiz3n.mpg"),
                                                                      "--fps", "1000"])


def test_unreadable_file(capsys, tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    _one_line_error(capsys, ["score", str(junk)])


def test_clip_without_a_face_is_no_face(capsys, tmp_path):
    mp4 = tmp_path / "testsrc.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=3",
            "-f", "lavfi", "-i", "sine=frequency=440:duration=3",
            "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(mp4))
    res = _score(capsys, mp4)
    assert res["label"] == "NO_FACE"
    assert res["offset_ms"] is None and res["score"] is None
    assert res["windows"] and all(w["label"] == "NO_FACE" for w in res["windows"])


def test_audio_shorter_than_the_video_scores_what_it_covers(capsys, tmp_path, dev_clips_dir):
    """A track that stops early (or another clip's shorter audio in the mismatched control) used
    to fail the whole clip ("audio ... does not overlap frames"); the rest is silence now, as
    the worker zero-fills audio that never came."""
    media = dev_clips_dir / "vox_pcavs_620900105.mp4"  # 4.3 s
    wav = _write_wav(tmp_path / "short.wav", _own_audio(media)[: 2 * SR])
    res = _score(capsys, media, "--audio", str(wav))
    assert any("the audio ends at 2.00 s" in n for n in res["notes"]), res["notes"]
    labels = [w["label"] for w in res["windows"]]
    assert labels[0] == "OK" and labels[-1] == "SILENCE", labels
    assert res["offset_ms"] is not None
    # a window the sound ends in is read where there is sound: 0.6 s of it -> scored; 0.3 s ->
    # LOW_QUALITY (it used to be scored over the padding as silence: low scores labelled OK)
    for cut_s, label in ((2.6, "OK"), (2.3, "LOW_QUALITY")):
        wav = _write_wav(tmp_path / f"short{cut_s}.wav", _own_audio(media)[: int(cut_s * SR)])
        res = _score(capsys, media, "--audio", str(wav))
        assert [w["label"] for w in res["windows"]] == ["OK", "OK", label, "SILENCE"], (cut_s, res["windows"])


def test_an_interrupt_is_one_line_and_exit_130(capsys, monkeypatch):
    from worker import cli

    def interrupted(_args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run_score", interrupted)
    assert cli.main(["score", "clip.mp4"]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"
