"""``sync-scorer eval-synth`` and ``sync-scorer eval-real``: plugin of ``worker.cli``.

Both print a short human summary, then (with ``--json``) the whole report as one JSON object on
the last line of stdout; ``--out FILE`` writes the same report to a file. Progress goes to stderr.
Torch runs single-threaded by default (faster on a loaded 2-core machine; see notes/HELPERS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# The evaluations search past the largest offset they apply: at the search's edge the scorer
# holds any offset beyond it, so a +/-200 ms shift under a +/-200 ms search was "found" by
# estimates that would have gone further (a review: 8 of the 96 +/-200 pairs read 267-320 ms
# under a wider search, 67 of 96 sat at the edge). 120 ms is 3 frames at 25 fps, 3.6 at 30:
# an estimate at the edge is two frames past the tolerance.
SEARCH_BEYOND_MS = 120


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", help="model bundle directory (default: the bundled model; without one "
                                    "the heuristic scorer is evaluated and the report says so)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    from worker.cli import MAX_SEARCH_MS, MIN_SEARCH_MS, add_narrowband_arg

    p.add_argument("--max-offset-ms", type=float, default=None,
                   help=f"search offsets within +/- this many ms ({MIN_SEARCH_MS:g}..{MAX_SEARCH_MS:g}; default: the "
                        f"largest applied shift or true offset + {SEARCH_BEYOND_MS} ms, so that an estimate held at "
                        "the search's edge is never counted right)")
    add_narrowband_arg(p)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--json", action="store_true", help="last line of stdout: the report as one JSON object")
    p.add_argument("--out", help="also write the JSON report to this file")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def add_parsers(sub) -> None:
    p = sub.add_parser("eval-synth", help="accuracy on fresh synthetic clips (issue 2's numbers)",
                       description=_first_para("worker.evaluation.synthetic"),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=40, help="number of clips (default 40)")
    p.add_argument("--seconds", type=float, default=8.0, help="seconds per clip (default 8)")
    p.add_argument("--seed0", type=int, default=500_000, help="first seed (default 500000: unseen)")
    p.add_argument("--conditions", default="clean,low_light,motion_blur,occlusion",
                   help="comma list from clean,low_light,motion_blur,occlusion")
    _common(p)
    p.set_defaults(func=run_synth)

    from worker.evaluation import degrade as deg

    p = sub.add_parser("eval-real", help="accuracy on the real dev clips (issue 3's protocol)",
                       description=_first_para("worker.evaluation.real"),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips-dir", default=str(REPO.parent / "shared" / "data" / "dev-clips"),
                   help="folder of real clips with its README.md (default ../shared/data/dev-clips)")
    p.add_argument("--cache-dir", default=str(REPO / ".cache" / "roi" / "dev"),
                   help="tracked-ROI cache (built when missing; default .cache/roi/dev)")
    p.add_argument("--shifts", default="0,40,-40,80,-80,120,-120,200,-200",
                   help="applied audio shifts in ms (positive: audio delayed)")
    p.add_argument("--degraded-shifts", default=None,
                   help="shifts for the degraded versions (default: the same as --shifts)")
    p.add_argument("--degrade-on", choices=("frames", "rois"), default="frames",
                   help="apply dark/blur/bar to the full video frames before tracking (default) or to "
                        "the tracked mouth ROIs (fast); phone changes the audio either way")
    p.add_argument("--degradations", default=",".join(deg.KINDS),
                   help=f"comma list from {','.join(deg.KINDS)} ('' = none; phone: the audio through "
                        f"{deg.PHONE_RATE_HZ} Hz)")
    p.add_argument("--limit", type=int, default=0, help="only the first N clips (development; 0: every clip)")
    p.add_argument("--no-speed", action="store_true", help="skip the fresh 720p tracking timing")
    p.add_argument("--cv-folds", default="",
                   help="comma list of bundle folders, each trained on part of the dev speakers: every real clip is "
                        "judged by the first fold that never trained on it (cross-validation of a bundle trained on "
                        "all of them; the bundle itself judges the generated clips and the speed)")
    _common(p)
    p.set_defaults(func=run_real)


def _first_para(module: str) -> str:
    """A module's docstring, read from its source without importing it: the evaluation modules
    pull torch and scipy, and every `sync-scorer` command builds this parser (2-3 s each)."""
    import ast
    import importlib.util

    try:
        spec = importlib.util.find_spec(module)
        source = Path(spec.origin).read_text(encoding="utf-8") if spec and spec.origin else ""
        return (ast.get_docstring(ast.parse(source)) or "").replace("``", "")  # reST markup: plain text
    except (ImportError, OSError, SyntaxError, ValueError):  # pragma: no cover - help text only
        return ""


def _setup(args):
    import torch

    from worker.cli import check_out_file, check_range, load_scorer_for_command

    check_range("--threads", args.threads, 1, 256)
    if args.out:
        check_out_file("--out", args.out)
    torch.set_num_threads(args.threads)
    scorer = load_scorer_for_command(args.bundle, args.device, max_offset_ms=args.max_offset_ms,
                                     narrowband=not args.no_narrowband)
    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    return scorer, log


def _narrowband_info(scorer) -> dict | None:
    """The routed scorer's narrowband companion (name, sha256), or None."""
    from worker.scoring.routed import narrowband_of

    narrow = narrowband_of(scorer)
    return None if narrow is None else {"scorer": narrow.name, "weights_sha256": narrow.manifest.weights_sha256}


def _bundle_info(scorer, args) -> dict:
    m = getattr(scorer, "manifest", None)
    return {"scorer": scorer.name, "bundle_dir": args.bundle or "default",
            "weights_sha256": getattr(m, "weights_sha256", None),
            "narrowband": _narrowband_info(scorer),
            "search_ms": [getattr(scorer.config, "min_offset_ms", None), getattr(scorer.config, "max_offset_ms", None)],
            "heuristic_reason": getattr(scorer, "reason", None)}


def _machine(args) -> dict:
    import torch

    return {"torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()], "device": args.device}


def _emit(report: dict, args, lines: list[str]) -> int:
    for line in lines:
        print(line)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
        print(f"report written to {args.out}")
    if args.json:
        print(json.dumps(report))
    return 0


def run_synth(args) -> int:
    from worker.cli import CliError
    from worker.evaluation.report import synth_lines
    from worker.evaluation.synthetic import SynthEvalConfig, run_synthetic

    conditions = tuple(c.strip() for c in args.conditions.split(",") if c.strip())
    if not conditions:
        raise CliError("--conditions names none: give one or more of clean, low_light, motion_blur, occlusion")
    try:
        cfg = SynthEvalConfig(n_clips=args.clips, seconds=args.seconds, seed0=args.seed0, conditions=conditions)
        _search_past(args, cfg.max_offset_ms)
        if args.seed0 < 1000 or args.seed0 + args.clips > 1_000_000:
            raise ValueError("seeds must stay in [1000, 1000000): tests use < 1000, training >= 1000000")
        scorer, log = _setup(args)
        report = run_synthetic(scorer, cfg, log)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    report["bundle"] = _bundle_info(scorer, args)
    report["machine"] = _machine(args)
    return _emit(report, args, synth_lines(report))


def _search_past(args, largest_offset_ms: float) -> None:
    """``--max-offset-ms`` unless given: SEARCH_BEYOND_MS past the largest offset the evaluation
    applies (within the scorer's 1000 ms)."""
    from worker.cli import MAX_SEARCH_MS

    if args.max_offset_ms is None:
        args.max_offset_ms = min(MAX_SEARCH_MS, float(largest_offset_ms) + SEARCH_BEYOND_MS)


def _ints(text: str | None, name: str) -> tuple[int, ...]:
    from worker.cli import CliError

    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise CliError(f"{name} must be a comma list of integers (ms), got {text!r}") from None


def _check_cache_dir(path: Path) -> None:
    """--cache-dir, or the first of its parents that exists, must be a directory (a file there
    failed with errno 17 or 20 once the scorer had loaded, without naming the flag)."""
    from worker.cli import CliError

    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise CliError(f"--cache-dir is not a directory: {p}" if p == path else
                               f"--cache-dir {path}: {p} is not a directory")
            return


def run_real(args) -> int:
    from worker.cli import CliError, check_range, load_scorer_for_command
    from worker.evaluation.real import RealEvalConfig, run_real_eval
    from worker.evaluation.report import real_lines
    from worker.scoring.postprocess import ScorerConfig

    clips_dir = Path(args.clips_dir)
    check_range("--limit", args.limit, 0, note=" (0: every clip)")  # (-1 read the clips but the last, a review)
    _check_cache_dir(Path(args.cache_dir))
    if not clips_dir.is_dir():
        raise CliError(f"no such clips folder: {clips_dir}")
    shifts = _ints(args.shifts, "--shifts")
    deg_shifts = _ints(args.degraded_shifts, "--degraded-shifts") if args.degraded_shifts else shifts
    _search_past(args, max(abs(x) for x in (*shifts, *deg_shifts, 0)))
    degradations = tuple(d.strip() for d in args.degradations.split(",") if d.strip())
    try:
        cfg = RealEvalConfig(clips_dir=clips_dir, cache_dir=Path(args.cache_dir), shifts_ms=shifts,
                             degraded_shifts_ms=deg_shifts, degradations=degradations,
                             degrade_on=args.degrade_on, limit=args.limit, speed=not args.no_speed)
        scorer, log = _setup(args)
        fold_dirs = [d.strip() for d in args.cv_folds.split(",") if d.strip()]
        narrowband = not args.no_narrowband
        folds = tuple(load_scorer_for_command(d, args.device, "--cv-folds bundle", args.max_offset_ms, narrowband)
                      for d in fold_dirs)
        control = ()
        if args.max_offset_ms != ScorerConfig().max_offset_ms:  # the control also under `score`'s search
            control = (load_scorer_for_command(args.bundle, args.device, narrowband=narrowband),
                       *(load_scorer_for_command(d, args.device, "--cv-folds bundle", narrowband=narrowband)
                         for d in fold_dirs))
        report = run_real_eval(scorer, cfg, log, folds=folds, control=control)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    report["bundle"] = _bundle_info(scorer, args)
    report["machine"] = _machine(args)
    return _emit(report, args, real_lines(report))

