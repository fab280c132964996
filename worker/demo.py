"""``make run`` / ``sync-scorer run-demo`` without a cluster: a local Kafka, the worker, demo
sessions with known audio offsets played in real time, and the signals as a live table."""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass
from typing import TextIO

from schemas import AvroCodec
from worker.config import WorkerConfig
from worker.loadgen import expected_jobs, merge_sessions, session_records
from worker.publish import signal_id

_HEADER = (f"{'session':<16} {'kind':<6} {'frames':>9} {'time s':>11} {'score':>6} {'offset':>8} "
           f"{'direction':<12} {'conf':>5} {'label':<11} {'latency':>8}")


@dataclass(frozen=True)
class DemoOptions:
    seconds: float = 6.0
    offsets_ms: tuple[float, ...] = (-160.0, 0.0, 120.0)
    realtime: bool = True
    fps: float = 30.0
    seed: int = 7


def session_name(offset_ms: float) -> str:
    if offset_ms == 0:
        return "demo-in-sync"
    return f"demo-{'lags' if offset_ms > 0 else 'leads'}-{abs(offset_ms):.0f}ms"


def format_row(rec: dict) -> str:
    score = "-" if rec["score"] is None else f"{rec['score']:.2f}"
    offset = "-" if rec["offset_ms"] is None else f"{rec['offset_ms']:+.0f}ms"
    frames = f"{rec['frame_start']}-{rec['frame_end']}"
    span = f"{rec['start_ms'] / 1000:.2f}-{rec['end_ms'] / 1000:.2f}"
    return (f"{rec['session_id']:<16} {rec['kind']:<6} {frames:>9} {span:>11} {score:>6} {offset:>8} "
            f"{rec['direction']:<12} {rec['confidence']:>5.2f} {rec['label']:<11} {rec['latency_ms']:>6}ms")


def run_local_demo(cfg: WorkerConfig, opts: DemoOptions, out: TextIO) -> int:
    from worker.app import Worker
    from worker.feed import Player
    from worker.kafka.broker import kafka_bootstrap
    from worker.kafka.clients import RecordSender, TopicReader
    from worker.observability.logs import configure_logging
    from worker.synth import SynthOptions, generate_clip
    from worker.worker_cli import ensure_config_topics, load_worker_scorer

    configure_logging("WARNING", json_logs=False)  # the table is the output; only problems are logged
    print(f"generating {len(opts.offsets_ms)} demo sessions of {opts.seconds:.0f} s "
          f"(known audio offsets: {', '.join(f'{o:+.0f} ms' for o in opts.offsets_ms)}) ...", file=out, flush=True)
    synth = SynthOptions(fps=opts.fps)
    clips = {session_name(off): generate_clip(opts.seed + i, opts.seconds, off, synth)
             for i, off in enumerate(opts.offsets_ms)}
    truth = {session_name(off): off for off in opts.offsets_ms}
    print("starting a local Kafka broker ...", file=out, flush=True)
    with kafka_bootstrap() as bootstrap:
        cfg = cfg.model_copy(update={"kafka": cfg.kafka.model_copy(update={"bootstrap_servers": bootstrap})})
        ensure_config_topics(cfg)
        scorer = load_worker_scorer(cfg)
        print(f"broker {bootstrap}; scorer {scorer.name}; topics {cfg.kafka.topics.audio.name}, "
              f"{cfg.kafka.topics.roi.name} -> {cfg.kafka.topics.signals.name}", file=out, flush=True)
        worker = Worker(cfg, scorer)
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,), name="worker", daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while not worker.ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        sessions, expected = [], set()
        w = cfg.windowing
        for sid, clip in clips.items():
            sessions.append(session_records(sid, clip.frames, clip.audio, clip.fps, clip.sample_rate))
            expected |= {signal_id(sid, k, fs) for k, fs, _ in
                         expected_jobs(clip.frames.shape[0], clip.fps, w.block_frames, w.window_ms, w.window_hop_ms)}
        player = Player(RecordSender(bootstrap), cfg.kafka.topics.audio.name, cfg.kafka.topics.roi.name,
                        list(merge_sessions(sessions)), realtime=opts.realtime)
        reader = TopicReader(bootstrap, cfg.kafka.topics.signals.name)
        codec = AvroCodec("LipSyncSignal")
        print(f"playing {'in real time' if opts.realtime else 'as fast as possible'}; "
              f"{len(expected)} signals expected\n", file=out, flush=True)
        print(_HEADER, file=out, flush=True)
        player.start()
        got: dict[str, dict] = {}
        end_by = time.monotonic() + opts.seconds + 60
        try:
            while time.monotonic() < end_by and not expected <= set(got):
                for _, value in reader.read(0.2):
                    rec = codec.decode(value)
                    if rec["signal_id"] not in got:
                        got[rec["signal_id"]] = rec
                        print(format_row(rec), file=out, flush=True)
        except KeyboardInterrupt:
            print("interrupted", file=out)
        finally:
            player.stop_event.set()
            player.join(35)  # past its own 30-s flush: its error is set by then
            reader.close()
            stop.set()
            thread.join(30)
    missing = len(expected - set(got))
    if player.error is not None:  # its input did not all reach Kafka: the missing are the player's
        print(f"the demo's input could not be written: {player.error}", file=out, flush=True)
    print("\nsummary (median WINDOW offset per session vs the known offset):", file=out)
    for sid, off in truth.items():
        wins = [r for r in got.values() if r["session_id"] == sid and r["kind"] == "WINDOW"
                and r["offset_ms"] is not None]
        med = statistics.median(r["offset_ms"] for r in wins) if wins else None
        shown = "n/a" if med is None else f"{med:+.0f} ms"
        print(f"  {sid:<16} known {off:+5.0f} ms   estimated {shown}", file=out)
    print(f"{len(got)} of {len(expected)} expected signals received, {missing} missing", file=out, flush=True)
    return 0 if missing == 0 else 1
