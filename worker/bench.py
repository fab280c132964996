"""`sync-scorer bench`: scoring latency of 16-frame 96x96 blocks with the default offset search.

cold: a block scored with no stream (every frame through the CNN, fresh caches).
incremental: consecutive blocks of one stream (only the block's own new frames run; the causal
head reads cached past frames), and a 1-s window whose frames are all cached already.
Also prints FLOPs per block (counted by torch's FlopCounterMode) against the machine's measured
matmul rate, so the number says how close to the hardware the scorer runs.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from worker.observability.stats import percentile


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("bench", help="scoring benchmark (16-frame 96x96 blocks, default search)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="last line of stdout: one JSON object")
    p.add_argument("--blocks", type=int, default=300, help="timed blocks per mode")
    p.add_argument("--block-frames", type=int, default=16)
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--device", default="auto")
    p.add_argument("--bundle", help="model bundle directory (default: the bundled model)")
    from worker.cli import add_narrowband_arg

    add_narrowband_arg(p)  # the blocks here are full band: without it, the band check's cost is gone
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (default 0: torch's default, all cores; the worker's scoring "
                        "lane uses cores - 1 to leave one for its poll loop)")
    return p


def _pct(xs: list[float], q: float) -> float | None:
    """A percentile in ms, rounded for the report (None without samples)."""
    p = percentile(xs, q)
    return None if p is None else round(p, 3)


def matmul_gflops(device, seconds: float = 1.0) -> float:
    """Measured dense fp32 matmul rate (GFLOP/s) of this device: the hardware's practical peak."""
    import torch

    n = 512
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def run(args) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from worker.cli import check_range, load_scorer_for_command
    from worker.scoring.loader import load_scorer
    from worker.scoring.routed import narrowband_of
    from worker.scoring.types import AudioSpan, FrameSpan, Kind, ScoreRequest

    check_range("--blocks", args.blocks, 10, 100_000)
    check_range("--block-frames", args.block_frames, 8, 16)
    check_range("--fps", args.fps, 10.0, 240.0)
    check_range("--threads", args.threads, 0, 256, note=" (0: torch's default)")
    if args.threads:
        torch.set_num_threads(args.threads)
    scorer = load_scorer_for_command(args.bundle, args.device, narrowband=not args.no_narrowband)
    device = getattr(scorer, "device", torch.device("cpu"))
    fps, bf, sr = args.fps, args.block_frames, 16000
    rng = np.random.default_rng(0)
    n_blocks = args.blocks + 20
    total_frames = n_blocks * bf
    frames = rng.integers(0, 255, size=(total_frames, 96, 96), dtype=np.uint8)
    seconds = total_frames / fps + 2.0
    t = np.arange(int(seconds * sr)) / sr
    audio = (0.2 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    margin = int(scorer.search_margin_ms * sr / 1000) + 1

    def req(start: int, n: int, kind=Kind.BLOCK) -> ScoreRequest:
        a0 = max(0, int(start / fps * sr) - margin)
        a1 = int((start + n) / fps * sr) + margin
        return ScoreRequest(kind, FrameSpan(frames[start:start + n], fps, start), AudioSpan(audio[a0:a1], sr, a0))

    def timed(fn) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) * 1000

    for i in range(10):  # warm-up
        scorer.score(req(i * bf, bf))
    cold = [timed(lambda i=i: scorer.score(req(i * bf, bf))) for i in range(args.blocks)]
    stream = scorer.new_stream()
    inc, win = [], []
    window_frames = round(fps)
    for i in range(args.blocks):
        inc.append(timed(lambda i=i: scorer.score(req(i * bf, bf), stream)))
        end = (i + 1) * bf
        if end >= window_frames and i % 2 == 1:
            win.append(timed(lambda end=end: scorer.score(req(end - window_frames, window_frames, Kind.WINDOW), stream)))
    # TorchScript modules are opaque to the FLOP counter: count on an eager twin of the scorer
    from dataclasses import replace

    eager = scorer
    if getattr(scorer, "config", None) is not None and getattr(scorer.config, "cpu_jit", False):
        eager = load_scorer(args.bundle, config=replace(scorer.config, cpu_jit=False), device=args.device)
    with FlopCounterMode(display=False) as counter:
        eager.score(req(0, bf))
    flops = counter.get_total_flops()
    rate = matmul_gflops(device)
    p50 = percentile(inc, 50)
    result = {
        "device": str(device),
        "scorer": scorer.name,
        # the narrowband companion the band check would route telephone-band jobs to (None: none)
        "narrowband_scorer": getattr(narrowband_of(scorer), "name", None),
        "block_frames": bf,
        "search_ms": [getattr(scorer.config, "min_offset_ms", -200), getattr(scorer.config, "max_offset_ms", 200)],
        "threads": torch.get_num_threads(),
        "blocks": args.blocks,
        "p50_ms": _pct(inc, 50),
        "p99_ms": _pct(inc, 99),
        "blocks_per_s": round(1000.0 / p50, 1) if p50 else None,
        "cold_p50_ms": _pct(cold, 50),
        "cold_p99_ms": _pct(cold, 99),
        "window_incremental_p50_ms": _pct(win, 50),
        "flops_per_block": int(flops),
        "matmul_gflops": round(rate, 1),
        "fraction_of_matmul_rate": round(flops / (p50 / 1000.0) / (rate * 1e9), 4) if p50 else None,
    }
    print(f"device {result['device']}  scorer {result['scorer']}  threads {result['threads']}")
    print(f"incremental 16-frame block: p50 {result['p50_ms']} ms  p99 {result['p99_ms']} ms  "
          f"({result['blocks_per_s']} blocks/s)")
    print(f"cold block: p50 {result['cold_p50_ms']} ms  p99 {result['cold_p99_ms']} ms;  "
          f"1-s window over cached frames: p50 {result['window_incremental_p50_ms']} ms")
    print(f"{flops / 1e6:.1f} MFLOP per block; matmul rate {rate:.1f} GFLOP/s; "
          f"the block runs at {100 * (result['fraction_of_matmul_rate'] or 0):.1f}% of it")
    if args.json:
        print(json.dumps(result))
    return 0
