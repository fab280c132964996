"""`sync-scorer` command line. Bad input gets one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

EXIT_USAGE = 2
EXIT_INPUT = 3


class CliError(Exception):
    """A user-facing error: printed as one line, exit code ``code``."""

    def __init__(self, message: str, code: int = EXIT_INPUT) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not the usage block
        raise CliError(f"{self.prog}: {message}", EXIT_USAGE)


def _num(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def check_range(flag: str, value: float | None, lo: float, hi: float = float("inf"), *,
                lo_open: bool = False, note: str = "") -> None:
    """One check and one message for a numeric flag outside its bounds (NaN fails too; None, a flag
    not given, passes): "--fps must be within 10..240, got 2". ``lo_open``: ``lo`` itself is out
    (0 reads "positive"); ``note`` follows the bounds, e.g. " (0: torch's default)"."""
    if value is None or ((lo < value if lo_open else lo <= value) and value <= hi):
        return
    if hi == float("inf"):
        bounds = f"> {_num(lo)}" if lo_open else f">= {_num(lo)}"
    elif lo_open and lo == 0:
        bounds = f"positive and at most {_num(hi)}"
    else:
        bounds = f"within {_num(lo)}..{_num(hi)}" + (f" (exclusive of {_num(lo)})" if lo_open else "")
    raise CliError(f"{flag} must be {bounds}{note}, got {_num(value)}")


def check_out_file(flag: str, path: str) -> None:
    """A report file the run will write at its end, checked before the run (a review: a bad path
    failed only after minutes of work, or after a replay had published): not a directory, and its
    nearest existing parent a writable directory (missing directories are made when it is
    written)."""
    import os

    out = Path(path).resolve()
    have = next(d for d in out.parents if d.exists())
    if out.is_dir() or not have.is_dir() or not os.access(have, os.W_OK) \
            or (out.exists() and not os.access(out, os.W_OK)):
        raise CliError(f"{flag} {path}: not a file that can be written"
                       + ("" if have.is_dir() else f" ({have} is not a directory)"))


# --max-offset-ms bounds (the worker's scoring.max_offset_ms has the same)
MIN_SEARCH_MS, MAX_SEARCH_MS = 40.0, 1000.0


def add_search_args(p: argparse.ArgumentParser) -> None:
    """``--max-offset-ms`` and ``--no-narrowband`` for a command that scores (score, serve, eval-*)."""
    p.add_argument("--max-offset-ms", type=float, default=200.0,
                   help=f"search offsets within +/- this many ms, to the nearest frame "
                        f"({MIN_SEARCH_MS:g}..{MAX_SEARCH_MS:g}; default 200)")
    add_narrowband_arg(p)


def add_narrowband_arg(p: argparse.ArgumentParser) -> None:
    """``--no-narrowband`` for a command that loads a scorer (ScorerConfig.narrowband)."""
    p.add_argument("--no-narrowband", action="store_true",
                   help="score telephone-band audio with the full-band model too, without the per-job band "
                        "check (default: such jobs go to the bundle's narrowband model, where it has one)")


def load_scorer_for_command(bundle_dir: str | None, device: str = "auto", what: str = "bundle",
                            max_offset_ms: float | None = None, narrowband: bool = True):
    """``load_scorer`` for a command line: the default bundle may fall back to the heuristic scorer
    (with its loud log line), a bundle the user named must load; a failure is one CliError line.
    ``max_offset_ms``: search -max..+max instead of the default +/-200 ms; ``narrowband``: route
    telephone-band jobs to the bundle's narrowband model (ScorerConfig.narrowband)."""
    from worker.scoring.loader import load_scorer
    from worker.scoring.postprocess import ScorerConfig
    from worker.scoring.scorer import DeviceError

    config = ScorerConfig(narrowband=narrowband)
    if max_offset_ms is not None:
        check_range("--max-offset-ms", max_offset_ms, MIN_SEARCH_MS, MAX_SEARCH_MS)
        config = ScorerConfig(min_offset_ms=-max_offset_ms, max_offset_ms=max_offset_ms, narrowband=narrowband)
    try:
        return load_scorer(bundle_dir, config, device=device, allow_fallback=bundle_dir is None)
    except DeviceError as exc:
        raise CliError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - BundleError, OSError, ...: one line, no traceback
        raise CliError(f"cannot load {what} {bundle_dir}: {exc}") from None


# (module, description) of subcommands other modules own; each exposes add_parser(sub) and run(args)
_PLUGINS = ("worker.synth.cli", "worker.worker_cli", "worker.bench", "worker.evaluation.cli", "worker.serving.cli",
           "worker.replay.cli")


def _add_score(sub) -> None:
    from worker.tracking.faces import DEFAULT_SCORE_FACES, MAX_FACES

    p = sub.add_parser("score", help="score a media file (face tracked) or a mouth-ROI clip (--roi)",
                       description="Score lip sync of a video file. Without --roi the face and mouth are "
                                   "tracked; with --roi the frames are already mouth ROIs.")
    p.add_argument("media", help="video file (anything ffmpeg reads)")
    p.add_argument("--roi", action="store_true", help="frames are mouth ROIs already (no face tracking)")
    p.add_argument("--audio", help="score against this audio file instead of the clip's own track: an audio-only "
                                   "file's first sample plays where the clip's own track starts (as in a track "
                                   "ffmpeg extracts from the clip; the clip's start if it has no audio), a video "
                                   "file's audio keeps its place under that file's own first frame")
    p.add_argument("--json", action="store_true", help="last line of stdout: one JSON object")
    p.add_argument("--bundle", help="model bundle directory (default: the bundled model)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--fps", type=float, help="resample the video to this constant frame rate (10..240; default: "
                                             "the file's own rate)")
    p.add_argument("--max-faces", type=int, default=DEFAULT_SCORE_FACES,
                   help="follow up to this many faces and score the one whose lips match the audio "
                        f"best (1..{MAX_FACES}; default {DEFAULT_SCORE_FACES})")
    p.add_argument("--block-frames", type=int, default=16,
                   help="frames per block signal (8..16; default 16, the worker's BLOCK)")
    p.add_argument("--window-ms", type=int, default=1000,
                   help="length of a window signal in ms (800..1200; default 1000, the worker's WINDOW)")
    add_search_args(p)
    p.add_argument("--audio-stream", type=int, default=None, metavar="N",
                   help="score the N-th audio stream (0-based) of MEDIA, or of --audio's file when given "
                        "(default: the stream flagged default, else the first)")
    p.set_defaults(func=run_score)


def run_score(args) -> int:
    from worker.media.decode import MediaError, probe, read_audio, read_audio_for_video, read_video
    from worker.tracking.faces import MAX_FACES

    check_range("--block-frames", args.block_frames, 8, 16)
    check_range("--window-ms", args.window_ms, 800, 1200)
    check_range("--max-faces", args.max_faces, 1, MAX_FACES)
    # below 10 fps one frame is 100 ms and more: the +/-200 ms search holds a handful of offsets
    check_range("--fps", args.fps, MIN_SCORE_FPS, 240.0)  # before decoding, not after
    t_start = time.perf_counter()
    try:
        info = probe(args.media, None if args.audio else args.audio_stream)
        if not info.has_video:
            raise CliError(f"no video stream in {args.media}")
        if args.audio is None and not info.has_audio:
            raise CliError(f"no audio stream in {args.media} (pass --audio FILE)")
        # the --audio file is checked before tracking (seconds to minutes), not after
        audio_info = probe(args.audio, args.audio_stream) if args.audio else None
        if audio_info is not None and not audio_info.has_audio:
            raise CliError(f"no audio stream in {args.audio}")
        # so is the bundle and the device: a typo fails in a second, not after the tracking
        scorer = load_scorer_for_command(args.bundle, args.device, max_offset_ms=args.max_offset_ms,
                                         narrowband=not args.no_narrowband)
        t0 = time.perf_counter()
        tracks = None
        video_errors: list[str] = []
        audio_errors: list[str] = []
        audio_notes: list[str] = []
        if args.roi:
            # the scorer reads ROIs at 96 px: a bigger frame is decoded smaller (a 720p video given
            # as --roi held 100 MB per second of it)
            frames, fps = read_video(args.media, fps=args.fps, max_side=ROI_READ_MAX_SIDE, errors=video_errors)
            video_timing = {"tracking": 0.0, "decode": time.perf_counter() - t0}
        else:
            from worker.tracking.clip import track_speakers

            tracks = track_speakers(args.media, fps=args.fps, info=info, max_faces=args.max_faces,
                                    errors=video_errors)
            frames, fps = tracks[0].rois, float(tracks[0].fps)
            video_timing = {"tracking": time.perf_counter() - t0}  # decoding included: side by side
        t_audio = time.perf_counter()
        # only the audio under the video and the scorer's margin is decoded: memory follows the
        # video, not a 2-hour track beside a 3-second clip (a review: 1.55 GB)
        audio_max_s = _audio_span_s(scorer, frames.shape[0], fps)
        if audio_info is not None:
            audio = read_audio_for_video(args.audio, info, audio_info=audio_info, errors=audio_errors,
                                         max_s=audio_max_s, notes=audio_notes)
        else:
            audio = read_audio(args.media, 16000, info=info, errors=audio_errors, max_s=audio_max_s,
                               notes=audio_notes)
        audio_s = time.perf_counter() - t_audio
        audio_len_s = audio.shape[0] / 16000
        if audio.shape[0] >= round(audio_max_s * 16000):  # cut there: how long it is, the file says
            audio_len_s = max(audio_len_s, audio_extent_s(info, audio_info))
    except MediaError as exc:
        raise CliError(str(exc)) from None
    if frames.shape[0] < 8:
        raise CliError(f"{args.media} has {frames.shape[0]} frames; at least 8 are needed")
    if audio.shape[0] == 0:
        raise CliError(f"the audio of {args.audio or args.media} is empty")
    from worker.clipscore import score_clip, score_faces

    jobs = {"block_frames": args.block_frames, "window_ms": args.window_ms, "session_id": Path(args.media).name}
    if tracks is None:
        summary = score_clip(scorer, frames, fps, audio, **jobs)
    else:
        summary = score_faces(scorer, tracks, audio, **jobs)
        if len(tracks) == 1 and args.max_faces > 1 and np_any(tracks[0].face_present) and _unmatched(summary, scorer):
            summary, tracks = _look_again_for_faces(args, info, scorer, audio, summary, tracks, jobs, video_timing)
    if tracks is not None:
        summary.notes += tracks[0].notes
    if tracks is not None and not np_any(tracks[0].face_present):
        summary.label = "NO_FACE"
        summary.notes.append("no face found in any frame")
    summary.notes += input_notes(info, audio_info, frames.shape[0] / fps, audio_len_s, fps,
                                 narrowband_model=summary.routed_windows() > 0)
    summary.notes += quiet_audio_notes(audio, summary.windows, getattr(getattr(scorer, "config", None),
                                                                     "silence_rms", None))
    summary.notes += audio_notes
    if args.roi and not looks_like_roi(info.width, info.height):
        summary.notes.append(f"--roi: the frames are {info.width}x{info.height}, not mouth crops (synth and "
                             "face-track send square crops of about 96 px); without --roi the face is tracked")
    summary.notes += damage_notes(("video", args.media, video_errors), ("audio", args.audio or args.media, audio_errors))
    summary.timings_s.update({**video_timing, "audio_decode": audio_s,
                              "total": time.perf_counter() - t_start,
                              "video": frames.shape[0] / fps})
    _print_summary(summary, args.media)
    if args.json:
        print(json.dumps(summary.to_json()))
    return 0


AUDIO_SPAN_SLACK_S = 1.0  # audio decoded past the video's end and the scorer's margin


def _audio_span_s(scorer, n_frames: int, fps: float) -> float:
    """Seconds of audio from frame 0 that scoring can reach: the video, the scorer's search margin
    as score_clip stretches it, and AUDIO_SPAN_SLACK_S."""
    from worker.clipscore import audio_margin_ms

    return n_frames / fps + audio_margin_ms(scorer, fps) / 1000.0 + AUDIO_SPAN_SLACK_S


def _unmatched(summary, scorer) -> bool:
    """The face scored most likely does not go with the audio (direction UNKNOWN on the score)."""
    least = getattr(getattr(scorer, "config", None), "min_direction_score", 0.25)
    return summary.score is None or summary.score < least


def _look_again_for_faces(args, info, scorer, audio, summary, tracks, jobs, video_timing):
    """The one face tracked does not match the audio: a second pass looks for every face (small
    ones in tiles, as the one-face pass does only where FaceMesh finds none) and scores them. A
    small speaker beside a large listener is missed by the one-face pass's face count (the
    full-range detector on a 640 px frame): in 1080p a 160-200 px speaker went unseen and the
    listener's lips were reported, score 0.17 (a review). Keeps whichever reading matches the
    audio better; a clip whose audio is another person's pays for the second pass."""
    from worker.clipscore import score_faces
    from worker.tracking.clip import track_all_faces

    t0 = time.perf_counter()
    more = track_all_faces(args.media, args.max_faces, fps=args.fps, info=info, before_ms=tracks[0].tracking_ms)
    video_timing["tracking"] += time.perf_counter() - t0
    if len(more) < 2:
        return summary, tracks
    again = score_faces(scorer, more, audio, **jobs)
    if (again.score or 0.0) <= (summary.score or 0.0):
        return summary, tracks
    again.notes.insert(0, f"the face first tracked does not match the audio (score {summary.score or 0:.2f}); "
                          f"a second look found {len(more)} faces")
    return again, more


MIN_SCORE_FPS = 10.0
NARROWBAND_HZ = 11025  # audio sampled below this lacks the 4-8 kHz band the model hears (input_notes)
ROI_READ_MAX_SIDE = 256  # score --roi decodes bigger frames down to this (the scorer reads 96 px)


def looks_like_roi(width: int | None, height: int | None) -> bool:
    """A mouth crop is near square and small; a whole video frame given as --roi is neither."""
    if not width or not height:
        return True
    return max(width, height) <= ROI_READ_MAX_SIDE and max(width, height) <= 1.25 * min(width, height)


def damage_notes(*streams: tuple[str, str, list[str]]) -> list[str]:
    """A note per stream that decoded with errors: ffmpeg skipped damaged data, so the scores
    around it may be off (what, path, ffmpeg's error lines)."""
    from worker.media.decode import MAX_ERROR_LINES

    notes = []
    for what, path, lines in streams:
        if lines:
            n = f"{len(lines)}+" if len(lines) >= MAX_ERROR_LINES else str(len(lines))
            notes.append(f"the {what} of {path} decoded with {n} ffmpeg errors (damaged data skipped; scores "
                         f"near it may suffer), last: {lines[-1][:160]}")
    return notes


def input_notes(video, audio_info, video_s: float, audio_s: float, fps: float,
                narrowband_model: bool = False) -> list[str]:
    """What a user should know about the input that scoring itself does not show: a video that
    decoded to less than it says it holds, audio far longer than the video, which of several
    audio streams was scored, telephone-band audio the full-band model read (``narrowband_model``:
    a narrowband one read some of it, and its note says so), a frame rate too low for the offsets
    to mean much. ``audio_s``:
    how far the audio reaches past frame 0."""
    notes = []
    # the video stream's own length, not the file's: a file is as long as its longest stream, and
    # a 0.3 s video under 2 s of audio (or one whose timestamps start at 3600 s) is not damaged
    said = video.video_duration_s
    if said <= 0:  # the video does not say: the container's length, unless its own audio makes it up
        said = video.duration_s - max(0.0, video.video_start_s - video.start_s)
        own_audio = audio_extent_s(video) if video.has_audio else 0.0
        if audio_info is None:
            own_audio = max(own_audio, audio_s)
        if own_audio >= said - 1.0:
            said = 0.0
    if said > video_s + 1.0:
        notes.append(f"the video stream says {said:.1f} s but {video_s:.1f} s of it could be decoded "
                     "(truncated or damaged?): only that was scored")
    if audio_s > video_s + 1.0:
        notes.append(f"the audio is longer than the video: it runs {audio_s - video_s:.1f} s past the video's end; "
                     "only the part under the video was scored")
    source = audio_info or video
    if source.audio_streams > 1:
        notes.append(f"{source.path} has {source.audio_streams} audio streams: scored stream {source.audio_stream} "
                     "(0-based; --audio-stream N picks another)")
    if source.sample_rate and source.sample_rate < NARROWBAND_HZ and not narrowband_model:
        # the networks learned speech sampled at 16 kHz and hear its 4-8 kHz band (fricatives);
        # the dev clips' own audio through 8 kHz, judged in sync: 81% -> 77% of clips and 73% ->
        # 69% of 1-s windows within a frame, scores 0.68 -> 0.55 (at 11.025 kHz: no change)
        notes.append(f"the audio is sampled at {source.sample_rate} Hz (sound up to {source.sample_rate // 2} Hz): "
                     "the full-band model hears speech up to 8 kHz and reads telephone-band audio less "
                     "surely (lower scores, more windows a frame off)")
    native = min(fps, video.fps or fps)  # --fps 25 on a 5 fps file repeats its frames: no finer
    if native < MIN_SCORE_FPS:
        notes.append(f"at {native:g} fps a frame lasts {1000 / native:.0f} ms: the lips are seen in those steps, and "
                     "the model knows lips at 25-30 fps")
    return notes


def quiet_audio_notes(audio, windows, silence_rms: float | None, rate: int = 16000) -> list[str]:
    """A note when most windows read SILENCE though the audio is not silent, only quiet: the
    silence threshold is a level (CONTRACT), and a talking clip 30 dB down reads as silence with no
    word why (a probe)."""
    import numpy as np

    silent = sum(w.label.value == "SILENCE" for w in windows)
    if not silence_rms or not windows or silent * 2 < len(windows) or audio.size == 0:
        return []
    x = np.asarray(audio, dtype=np.float64)
    peak = float(np.abs(x).max())
    per_s = x[: x.size // rate * rate].reshape(-1, rate) if x.size >= rate else x[None, :]
    loudest = float(np.sqrt((per_s ** 2).mean(axis=1)).max())
    if peak < 10 ** (-80 / 20) or loudest >= silence_rms:
        return []  # digital silence (nothing to raise), or loud enough somewhere: silence is real

    def db(v: float) -> str:
        return f"{20 * np.log10(max(v, 1e-12)):.0f} dBFS"

    return [(f"{silent} of {len(windows)} windows read SILENCE, but the audio is not silent, only quiet (peak "
             f"{db(peak)}, loudest second {db(loudest)} RMS, under the silence level of {db(silence_rms)} RMS): "
             "raise its level to have it scored")]


def audio_extent_s(video, audio_info=None) -> float:
    from worker.media.decode import audio_extent_s as extent

    return extent(video, audio_info)


def np_any(x) -> bool:
    import numpy as np

    return bool(np.asarray(x).any())


def _print_summary(s, media: str) -> None:
    off = "n/a" if s.offset_ms is None else f"{s.offset_ms:+.0f} ms"
    score = "n/a" if s.score is None else f"{s.score:.3f}"
    print(f"{media}: offset {off} ({s.direction}), score {score}, confidence {s.confidence:.2f}, "
          f"label {s.label}, scorer {s.scorer}")
    for note in s.all_notes():
        print(f"  note: {note}")
    t = s.timings_s
    if t.get("video"):
        video = f"decoding {t['decode']:.2f} s" if "decode" in t else f"tracking {t.get('tracking', 0):.2f} s"
        print(f"  {s.n_frames} frames at {s.fps:.2f} fps ({t['video']:.1f} s): {video}, "
              f"scoring {t.get('scoring', 0):.2f} s")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sync-scorer")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sync-scorer", description="Streaming lip-sync scorer.")
    parser.add_argument("--version", action="version", version=f"sync-scorer {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    _add_score(sub)
    for mod_name in _PLUGINS:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:
            if exc.name == mod_name:
                continue  # that part is not in this build
            raise
        add = getattr(mod, "add_parser", None)
        if add is not None:
            p = add(sub)
            if p is not None and getattr(mod, "run", None) is not None and p.get_default("func") is None:
                p.set_defaults(func=mod.run)
        extra = getattr(mod, "add_parsers", None)
        if extra is not None:
            extra(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT


if __name__ == "__main__":
    # `python -m worker.cli`: run the importable module's main, so CliError raised by plugins (which
    # import worker.cli) is the class main catches, not a second copy of it in __main__
    from worker.cli import main as _main

    raise SystemExit(_main())
