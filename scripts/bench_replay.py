"""Replay speed: N synthetic sessions of S seconds (known offsets -120, 0, +80 ms) into fresh topics
of the cluster at KAFKA_BOOTSTRAP_SERVERS (`make kafka-up` starts one), then `sync-scorer replay
--all-sessions` on them. Prints one JSON line: media seconds replayed per second of replay.

    .venv/bin/python scripts/bench_replay.py --sessions 6 --seconds 30
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid

from schemas import AvroCodec
from worker.kafka.admin import ensure_topics
from worker.kafka.clients import RecordSender
from worker.loadgen import AUDIO, merge_sessions, session_records
from worker.synth import SynthOptions, generate_clip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    run = uuid.uuid4().hex[:6]
    topics = {k: f"bench-replay.{k}.{run}" for k in ("audio", "roi", "signals", "dlq")}
    ensure_topics(bootstrap, {t: 2 for t in topics.values()})
    sessions = []
    for i in range(args.sessions):
        clip = generate_clip(100 + i, args.seconds, (-120.0, 0.0, 80.0)[i % 3], SynthOptions(fps=25.0))
        sessions.append(session_records(f"s{i}", clip.frames, clip.audio, clip.fps, clip.sample_rate))
    codecs = {"audio": AvroCodec("AudioChunk"), "roi": AvroCodec("RoiRef")}
    sender = RecordSender(bootstrap)
    for _, _, rec in merge_sessions(sessions):
        stream = "audio" if rec.stream == AUDIO else "roi"
        sender.send(topics[stream], rec.record["session_id"].encode(), codecs[stream].encode(rec.record))
    if sender.close(60.0):
        raise SystemExit("could not deliver the sessions")
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bootstrap,
               **{f"SYNC_SCORER_KAFKA__TOPICS__{k.upper()}__NAME": v for k, v in topics.items()})
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "worker.cli", "replay", "--all-sessions", "--json"], env=env,
                          capture_output=True, text=True, check=False)
    wall_s = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(proc.stderr.strip()[-500:])
    s = json.loads(proc.stdout.strip().splitlines()[-1])
    media_s = args.sessions * args.seconds
    print(json.dumps({"sessions": args.sessions, "media_s": media_s, "signals": s["signals"],
                      "read_s": s["read_s"], "replay_s": s["replay_s"], "command_wall_s": round(wall_s, 2),
                      "media_s_per_replay_s": round(media_s / s["replay_s"], 1),
                      "median_window_offset_ms": {k: v["median_window_offset_ms"] for k, v in s["sessions"].items()}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
