"""Synthetic clip generator (worker.synth): determinism, shapes, offset, visemes, silence, mp4, CLI."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from worker.synth import SynthOptions, generate_clip, write_clip
from worker.synth.speech import STOPS

OPEN_VOWELS = {"a", "aa", "A:", "aI", "aU", "0", "O:", "a#", "V"}
BILABIALS = {"p", "b", "m"}


def mouth_height_px(frames: np.ndarray) -> np.ndarray:
    """Vertical extent (px) of the lips-and-mouth region in the central columns, per frame.

    Lips, mouth interior and tongue are redder than skin (teeth lie between them), so the run from
    the first to the last reddish row is upper lip + opening + lower lip.
    """
    f = frames.astype(np.float32) + 1.0
    n = f.shape[1]
    band = f[:, :, n // 2 - 2:n // 2 + 3].mean(axis=2)
    red = band[..., 0] / band.sum(axis=-1)
    skin = np.median(red[:, int(0.85 * n):], axis=1)
    rows = np.arange(n)
    mask = (red > skin[:, None] + 0.04) & (rows >= int(0.35 * n))[None] & (rows < int(0.85 * n))[None]
    first = mask.argmax(axis=1)
    last = n - 1 - mask[:, ::-1].argmax(axis=1)
    return np.where(mask.any(axis=1), last - first, 0)


def centre_frames(clip, phonemes: set[str], min_ms: float = 40.0) -> list[int]:
    out = []
    for a, b, p in clip.phonemes:
        if p in phonemes and b - a >= min_ms:
            i = round((a + b) / 2 * clip.fps / 1000)
            if 0 <= i < len(clip.frames):
                out.append(i)
    return out


def test_deterministic_per_seed():
    a = generate_clip(11, 2.0)
    b = generate_clip(11, 2.0)
    c = generate_clip(12, 2.0)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio)
    assert a.phonemes == b.phonemes and np.array_equal(a.voiced, b.voiced)
    assert not np.array_equal(a.frames, c.frames)
    assert not np.array_equal(a.audio, c.audio)


@pytest.mark.parametrize("seconds,fps", [(2.0, 25.0), (1.3, 30.0), (1.0, 29.97)])
def test_shapes_and_dtypes(seconds, fps):
    clip = generate_clip(3, seconds, 40.0, SynthOptions(fps=fps))
    t = round(seconds * fps)
    assert clip.frames.shape == (t, 96, 96, 3) and clip.frames.dtype == np.uint8
    assert clip.audio.shape == (round(seconds * 16000),) and clip.audio.dtype == np.float32
    assert np.abs(clip.audio).max() <= 1.0 and np.abs(clip.audio).max() > 0.05
    assert clip.voiced.shape == (t,) and clip.voiced.dtype == bool
    assert clip.fps == fps and clip.sample_rate == 16000 and clip.audio_offset_ms == 40.0 and clip.seed == 3
    assert clip.phonemes and all(a < b for a, b, _ in clip.phonemes)
    assert all(b > 0 and a < seconds * 1000 for a, b, _ in clip.phonemes)


def test_roi_size_option():
    clip = generate_clip(3, 0.4, options=SynthOptions(roi_size=64))
    assert clip.frames.shape == (10, 64, 64, 3)


@pytest.mark.parametrize("offset_ms", [120.0, -80.0])
def test_audio_offset_is_applied(offset_ms):
    ref = generate_clip(21, 3.0, 0.0)
    shifted = generate_clip(21, 3.0, offset_ms)
    assert np.array_equal(ref.frames, shifted.frames)  # only the audio moves
    assert ref.phonemes == shifted.phonemes
    # Cross-correlation of the two soundtracks peaks at the offset (positive = shifted lags).
    from scipy.signal import correlate

    xc = correlate(shifted.audio.astype(np.float64), ref.audio.astype(np.float64), mode="full", method="fft")
    lags = np.arange(-len(ref.audio) + 1, len(shifted.audio))
    window = np.abs(lags) <= int(0.3 * ref.sample_rate)
    lag_ms = lags[window][np.argmax(xc[window])] * 1000.0 / ref.sample_rate
    assert lag_ms == pytest.approx(offset_ms, abs=0.1)


def test_mouth_closes_on_bilabials_and_opens_on_open_vowels():
    closed, opened = [], []
    for seed in (100, 101, 104):
        clip = generate_clip(seed, 6.0)
        h = mouth_height_px(clip.frames)
        closed += [h[i] for i in centre_frames(clip, BILABIALS)]
        opened += [h[i] for i in centre_frames(clip, OPEN_VOWELS)]
    assert len(closed) >= 10 and len(opened) >= 10
    # Closed lips are only the two lips (< ~0.1 of the ROI); open vowels add the opening.
    assert max(closed) < 0.11 * 96
    assert np.median(opened) > 1.8 * np.median(closed)
    assert min(opened) > max(closed)


def _pauses(clip, min_ms: float):
    ends = [b for _, b, _ in clip.phonemes]
    starts = [a for a, _, _ in clip.phonemes]
    for end, nxt in zip(ends[:-1], starts[1:]):
        if nxt - end >= min_ms:
            yield end, nxt


def test_silence_gaps_are_silent_with_a_resting_mouth():
    clip = generate_clip(31, 8.0, 0.0, SynthOptions(silence_gaps=True))
    pauses = [(a, b) for a, b in _pauses(clip, 400.0) if a > 0 and b < 8000]
    assert pauses, "silence_gaps should produce pauses of 0.4-1.5 s"
    speech_rms = float(np.sqrt(np.mean(clip.audio[np.abs(clip.audio) > 1e-3] ** 2)))
    h = mouth_height_px(clip.frames)
    talking = np.median(h[clip.voiced])
    for a, b in pauses:
        assert 390.0 <= b - a <= 1600.0
        # Inner part of the pause: leave 200 ms for the mouth to settle and to anticipate.
        lo_ms, hi_ms = a + 200.0, b - 200.0
        s = clip.audio[int(lo_ms * 16):int(hi_ms * 16)]
        assert np.sqrt(np.mean(s.astype(np.float64) ** 2)) < 1e-3 * speech_rms
        frames = range(int(np.ceil(lo_ms * clip.fps / 1000)), int(hi_ms * clip.fps / 1000) + 1)
        assert not clip.voiced[list(frames)].any()
        rest = h[list(frames)]
        assert rest.max() <= talking  # lips together, not talking-open
        diffs = np.abs(np.diff(clip.frames[list(frames)].astype(np.int16), axis=0))
        assert diffs.mean() < 1.0  # the resting mouth holds still


def test_phoneme_times_match_audio_onsets():
    """espeak's phoneme events against the audio: each phrase starts where its sound starts."""
    errors_ms = []
    for seed in (41, 42):
        clip = generate_clip(seed, 6.0, 0.0, SynthOptions(silence_gaps=True))
        x = clip.audio.astype(np.float64)
        first_phoneme = {a: p for a, _, p in clip.phonemes}
        for pause_end in [b for _, b in _pauses(clip, 300.0) if 100 < b < 5900]:
            if first_phoneme[pause_end] in STOPS:
                continue  # the segment of an initial stop includes its silent closure
            seg = x[int((pause_end - 50) * 16):int((pause_end + 50) * 16)]
            # first 0.5 ms window above -50 dBFS
            win = 8
            power = np.convolve(seg ** 2, np.ones(win) / win, mode="valid")
            onset_ms = pause_end - 50 + np.argmax(power > 1e-5) / 16.0
            errors_ms.append(pause_end - onset_ms)
    assert len(errors_ms) >= 3
    assert np.max(np.abs(errors_ms)) < 10.0  # one frame is 40 ms


def test_degradations_run_and_change_pixels_not_audio():
    base = generate_clip(7, 1.0)
    for name in ("low_light", "motion_blur", "occlusion", "noise", "head_motion"):
        clip = generate_clip(7, 1.0, options=SynthOptions(**{name: True}))
        assert clip.frames.shape == base.frames.shape
        assert np.array_equal(clip.audio, base.audio), name
        diff = np.abs(clip.frames.astype(int) - base.frames.astype(int))
        assert diff.reshape(len(diff), -1).max(axis=1).mean() > 8, name
    dark = generate_clip(7, 1.0, options=SynthOptions(low_light=True))
    assert dark.frames.mean() < 0.6 * base.frames.mean()
    blurred = generate_clip(7, 1.0, options=SynthOptions(motion_blur=True))

    def sharpness(frames):
        f = frames.astype(np.float32)
        return np.abs(np.diff(f, axis=1)).mean() + np.abs(np.diff(f, axis=2)).mean()

    assert sharpness(blurred.frames) < 0.95 * sharpness(base.frames)
    noisy = generate_clip(7, 1.0, options=SynthOptions(audio_noise_db=10.0))
    assert not np.array_equal(noisy.audio, base.audio) and np.abs(noisy.audio).max() <= 1.0


@pytest.mark.parametrize("kwargs", [{"seed": -1, "seconds": 1.0}, {"seed": 1, "seconds": 0.0},
                                    {"seed": 1, "seconds": float("nan")},
                                    {"seed": 1, "seconds": 1.0, "audio_offset_ms": float("inf")}])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        generate_clip(**kwargs)


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe not installed")
def test_write_clip_gives_one_video_and_one_audio_stream(tmp_path):
    clip = generate_clip(5, 2.0, 120.0)
    out = tmp_path / "clip.mp4"
    write_clip(clip, str(out))
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(out)],
                           capture_output=True, text=True, check=True)
    streams = json.loads(probe.stdout)["streams"]
    video = [s for s in streams if s["codec_type"] == "video"]
    audio = [s for s in streams if s["codec_type"] == "audio"]
    assert len(video) == 1 and len(audio) == 1
    assert video[0]["codec_name"] == "h264" and video[0]["pix_fmt"] == "yuv420p"
    assert (video[0]["width"], video[0]["height"]) == (96, 96) and int(video[0]["nb_frames"]) == 50
    assert float(video[0]["duration"]) == pytest.approx(2.0, abs=0.05)
    assert float(audio[0]["duration"]) == pytest.approx(2.0, abs=0.05)
    assert int(audio[0]["sample_rate"]) == 16000 and audio[0]["channels"] == 1


@pytest.mark.parametrize("args", [
    ["out.mp4", "--seconds", "abc", "--seed", "1"],
    ["out.mp4", "--seconds", "-2", "--seed", "1"],
    ["out.mp4", "--seconds", "1", "--seed", "-3"],
    ["out.mp4", "--seconds", "1"],
    ["out.txt", "--seconds", "1", "--seed", "1"],
    ["/no/such/dir/out.mp4", "--seconds", "1", "--seed", "1"],
    ["out.mp4", "--seconds", "1", "--seed", "1", "--fps", "0"],
    ["out.mp4", "--seconds", "1", "--seed", "1", "--roi-size", "97"],  # odd: the encoder needs even sides
])
def test_cli_bad_arguments_one_line_error(args, tmp_path, monkeypatch, capsys):
    from worker.synth import cli

    monkeypatch.chdir(tmp_path)
    try:
        code = cli.main(args)
    except SystemExit as exc:
        code = exc.code
    assert code not in (0, None)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0]


def test_cli_bad_arguments_in_a_real_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "worker.synth.cli", "o.mp4", "--seconds", "x", "--seed", "1"],
                          capture_output=True, text=True, cwd=tmp_path, check=False,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--seconds" in lines[0] and "Traceback" not in proc.stderr


def test_cli_subparser_wiring(tmp_path):
    from worker.synth import cli

    parser = argparse.ArgumentParser(prog="sync-scorer")
    cli.add_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "c.mp4"
    args = parser.parse_args(["synth", str(out), "--seconds", "0.6", "--audio-offset-ms", "-40",
                              "--seed", "9", "--occlusion"])
    assert args.func(args) == 0 and out.stat().st_size > 0
