"""`sync-scorer serve`'s gRPC latency on this machine: an in-process server with the bundled model on
the CPU (one torch thread) and a client on the same host. ScoreBlock (16 frames) and ScoreWindow
(1 s at 25 fps) with the search margin of audio on each side, then ScoreClip on a 6 s clip.
Prints one JSON line of medians.

    .venv/bin/python scripts/bench_serve.py
"""

from __future__ import annotations

import json
import statistics
import time

import grpc
import numpy as np
import torch

from schemas import sync_scorer_pb2 as pb
from schemas import sync_scorer_pb2_grpc as pb_grpc
from worker.scoring.loader import load_scorer
from worker.serving.grpc_server import make_grpc_server
from worker.serving.service import ScoreService
from worker.synth.clip import generate_clip


def request(clip, a: int, b: int, margin_ms: float) -> pb.ScoreRequest:
    rate = clip.sample_rate
    s0 = max(0, round((a / clip.fps - margin_ms / 1000.0) * rate))
    s1 = min(clip.audio.shape[0], round((b / clip.fps + margin_ms / 1000.0) * rate))
    frames = np.ascontiguousarray(clip.frames[a:b], dtype=np.uint8)
    return pb.ScoreRequest(
        frames=pb.Frames(width=frames.shape[2], height=frames.shape[1], format="GRAY8" if frames.ndim == 3 else "RGB24",
                         data=frames.tobytes(), fps=clip.fps, frame_start=a),
        audio=pb.Audio(sample_rate=rate, channels=1, encoding="PCM_S16LE", start_sample=s0,
                       data=(np.clip(clip.audio[s0:s1], -1, 1) * 32767).astype("<i2").tobytes()))


def timed_ms(fn, req, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn(req)
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def main() -> int:
    import argparse

    argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    torch.set_num_threads(1)
    service = ScoreService(load_scorer(None, device="cpu"))
    server, port = make_grpc_server(service, "127.0.0.1", 0)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.SyncScorerStub(channel)
            margin = stub.Info(pb.InfoRequest()).search_margin_ms
            clip = generate_clip(seed=77, seconds=6.0, audio_offset_ms=80.0)
            result: dict = {"scorer": service.scorer.name}
            for name, fn, a, b in (("ScoreBlock", stub.ScoreBlock, 16, 32), ("ScoreWindow", stub.ScoreWindow, 25, 50)):
                req = request(clip, a, b, margin)
                timed_ms(fn, req, 5)  # warm-up
                ts = sorted(timed_ms(fn, req, 60))
                result[name] = {"p50_ms": round(statistics.median(ts), 2), "p90_ms": round(ts[int(0.9 * len(ts))], 2)}
            whole = request(clip, 0, clip.frames.shape[0], 0.0)
            result["ScoreClip_6s"] = {"p50_ms": round(statistics.median(timed_ms(stub.ScoreClip, whole, 10)), 1)}
    finally:
        server.stop(0)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
