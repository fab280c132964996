"""``sync-scorer synth OUT.mp4 --seconds S --audio-offset-ms D --seed N``: write a synthetic clip.

Wired into ``worker.cli`` through ``add_parser(subparsers)`` and ``run(args)``; also runnable as
``python -m worker.synth.cli ...``. Bad arguments print one line to stderr and exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys

PROG = "sync-scorer synth"


def _one_line_error(message: str) -> None:
    print(f"error: {PROG}: {message}", file=sys.stderr)  # as the other commands word theirs
    raise SystemExit(2)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "synth", help="write a synthetic talking-mouth clip (mouth-ROI video + speech) to an mp4",
        description="Write a synthetic talking-mouth clip: mouth-ROI frames driven by espeak-ng "
                    "phoneme timing, plus the speech, with the audio delayed by --audio-offset-ms "
                    "(positive: audio lags the video; negative: audio leads).")
    _add_arguments(p)
    if type(p).error is argparse.ArgumentParser.error:
        p.error = _one_line_error  # one line, not argparse's usage dump (unless the parent's class does that)
    p.set_defaults(func=run)
    return p


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", metavar="OUT.mp4", help="output file (mp4: H.264 + AAC)")
    p.add_argument("--seconds", type=float, required=True, help="clip length in seconds")
    p.add_argument("--audio-offset-ms", type=float, default=0.0,
                   help="audio delay in ms: >0 audio lags, <0 audio leads (default 0)")
    p.add_argument("--seed", type=int, required=True, help="random seed (non-negative integer)")
    p.add_argument("--fps", type=float, default=25.0, help="frame rate (default 25)")
    p.add_argument("--sample-rate", type=int, default=16000, help="audio sample rate (default 16000)")
    p.add_argument("--roi-size", type=int, default=96, help="square ROI side in pixels (default 96)")
    p.add_argument("--low-light", action="store_true", help="dark, noisy exposure")
    p.add_argument("--motion-blur", action="store_true", help="directional blur of varying strength")
    p.add_argument("--occlusion", action="store_true", help="bar or hand-like blob over part of the mouth")
    p.add_argument("--noise", action="store_true", help="sensor noise")
    p.add_argument("--head-motion", action="store_true", help="ROI translation/scale/rotation over time")
    p.add_argument("--silence-gaps", action="store_true", help="pauses of 0.4-1.5 s between phrases")
    p.add_argument("--audio-noise-db", type=float, default=None, help="background noise at this SNR (dB)")


def run(args: argparse.Namespace) -> int:
    # Imported here so `sync-scorer --help` stays fast and does not need opencv/scipy.
    from worker.synth import SynthOptions, generate_clip, write_clip

    try:
        if not args.out.lower().endswith((".mp4", ".m4v", ".mov", ".mkv")):
            raise ValueError(f"OUT must be an .mp4/.mov/.mkv path, got {args.out!r}")
        out_dir = os.path.dirname(os.path.abspath(args.out))
        if not os.path.isdir(out_dir):
            raise ValueError(f"output directory does not exist: {out_dir}")
        if args.audio_noise_db is not None and not -20.0 <= args.audio_noise_db <= 80.0:  # (NaN fails too)
            # 1e9 dB overflowed, -1e9 divided by zero (a review)
            raise ValueError(f"--audio-noise-db must be within -20..80 (speech-to-noise ratio in dB), "
                             f"got {args.audio_noise_db:g}")
        if args.roi_size % 2:
            raise ValueError(f"--roi-size must be even, got {args.roi_size} (the video encoder's 4:2:0 chroma "
                             "needs even sides)")
        options = SynthOptions(fps=args.fps, sample_rate=args.sample_rate, roi_size=args.roi_size,
                               low_light=args.low_light, motion_blur=args.motion_blur,
                               occlusion=args.occlusion, noise=args.noise, head_motion=args.head_motion,
                               silence_gaps=args.silence_gaps, audio_noise_db=args.audio_noise_db)
        clip = generate_clip(args.seed, args.seconds, args.audio_offset_ms, options)
        write_clip(clip, args.out)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {clip.frames.shape[0]} frames {clip.frames.shape[2]}x{clip.frames.shape[1]} "
          f"@ {clip.fps:g} fps, {len(clip.audio)} samples @ {clip.sample_rate} Hz, "
          f"audio offset {clip.audio_offset_ms:+g} ms, seed {clip.seed}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    _add_arguments(parser)
    parser.error = _one_line_error
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
