"""``sync-scorer loadtest``: N synthetic sessions in real time through a real broker and worker.

What is measured, per signal: event->signal latency = the time this process read the signal
minus the time it sent the newest input record the signal depends on (the last frame of the
job, the audio chunk that completes frames + search margin, or the end-of-session marker when the
needed audio runs past the end). Both times are on this host's clock. Also: signals per second,
expected signals missing, duplicates, and the worker's own view (its latency_ms field, batch
sizes, scorer time per batch, CPU time) to locate the bottleneck, and the p99 per 2 s of the run
beside the machine's CPU pressure over it, to tell a stall from steady queueing.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO

from schemas import AvroCodec
from worker.config import WorkerConfig
from worker.loadgen import AUDIO, ROI, expected_jobs, merge_sessions, session_records
from worker.observability.stats import percentile
from worker.publish import signal_id

_OFFSETS_MS = (-160.0, 0.0, 120.0, -80.0, 200.0, 40.0)
_SLICE_S = 2.0  # the report's p99_ms_by_slice


@dataclass(frozen=True)
class LoadtestOptions:
    sessions: int
    seconds: float
    fps: float = 30.0
    chunk_ms: int = 20
    gray: bool = True
    start_worker: bool = True
    margin_ms: float | None = None
    grace_s: float = 15.0
    worker_log: str | None = None
    config_path: str | None = None
    json_out: bool = False
    distinct_clips: int = 4
    stagger_ms: float = 1000.0


def p99_by_slice(points: list[tuple[float, float]], slice_s: float) -> list[float | None]:
    """p99 latency per ``slice_s`` of the run, from (seconds into the run, latency ms) points.

    A tail that one slice holds is a stall (the machine, the broker); one spread over every slice
    is steady queueing in the worker. Slices without a signal are None."""
    if not points:
        return []
    n = int(max(t for t, _ in points) // slice_s) + 1
    by: list[list[float]] = [[] for _ in range(n)]
    for t, lat in points:
        by[int(max(t, 0.0) // slice_s)].append(lat)
    return [_round(percentile(v, 99)) for v in by]


def cpu_pressure_us(text: str) -> int | None:
    """The "some" stall total (microseconds) of a /proc/pressure/cpu reading: time in which at
    least one runnable task of this machine waited for a CPU."""
    for line in text.splitlines():
        if line.startswith("some "):
            for field in line.split()[1:]:
                key, _, value = field.partition("=")
                if key == "total" and value.isdigit():
                    return int(value)
    return None


def _read_cpu_pressure_us() -> int | None:
    try:
        with open("/proc/pressure/cpu") as f:
            return cpu_pressure_us(f.read())
    except OSError:  # not Linux, or PSI disabled
        return None


class SignalCollector(threading.Thread):
    """Reads the signal topic; keeps the first arrival (wall ms) of every signal id and counts."""

    def __init__(self, bootstrap: str, topic: str, client_config: dict | None = None) -> None:
        super().__init__(name="collector", daemon=True)
        from worker.kafka.clients import TopicReader

        self.reader = TopicReader(bootstrap, topic, client_config)
        self.codec = AvroCodec("LipSyncSignal")
        self.first: dict[str, tuple[int, dict]] = {}
        self.counts: Counter[str] = Counter()
        self.stop_event = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                batch = self.reader.read(0.005)  # consume() waits out its timeout: keep it short
                now = int(time.time() * 1000)
                with self.lock:
                    for _, value in batch:
                        rec = self.codec.decode(value)
                        sid = rec["signal_id"]
                        self.counts[sid] += 1
                        if sid not in self.first:
                            self.first[sid] = (now, rec)
        finally:
            self.reader.close()

    def received(self) -> set[str]:
        with self.lock:
            return set(self.first)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _metrics(port: int) -> dict[str, float]:
    """The worker's Prometheus text as {sample name with labels: value}."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                continue
    return out


def _ready(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).status == 200
    except OSError:
        return False


def _cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


@contextlib.contextmanager
def _cluster(cfg: WorkerConfig) -> Iterator[WorkerConfig]:
    """The configured cluster (KAFKA_BOOTSTRAP_SERVERS, or kafka.bootstrap_servers set in the config
    file or environment); with none configured, a local broker for the duration (as make run)."""
    from worker.kafka.broker import kafka_bootstrap

    if "bootstrap_servers" in cfg.kafka.model_fields_set:
        yield cfg
        return
    with kafka_bootstrap() as bootstrap:
        yield cfg.model_copy(update={"kafka": cfg.kafka.model_copy(update={"bootstrap_servers": bootstrap})})


def run(cfg: WorkerConfig, opts: LoadtestOptions, out: TextIO) -> int:
    with _cluster(cfg) as cluster_cfg:
        return _run(cluster_cfg, opts, out)[0]


def sweep(cfg: WorkerConfig, opts: LoadtestOptions, session_counts: list[int], p99_target_ms: float,
          out: TextIO) -> int:
    """One load test per session count (fresh worker each, one broker); the last line says the most
    sessions that ran in real time: nothing missing and p99 within the target."""
    from dataclasses import replace

    results = []
    with _cluster(cfg) as cluster_cfg:
        for n in session_counts:
            _, report = _run(cluster_cfg, replace(opts, sessions=n), out)
            results.append(report)
    ok = [r["sessions"] for r in results
          if r["missing"] == 0 and r["p99_ms"] is not None and r["p99_ms"] <= p99_target_ms]
    summary = {"p99_target_ms": p99_target_ms, "max_sessions_realtime": max(ok) if ok else 0,
               "sweep": [{k: r[k] for k in ("sessions", "p50_ms", "p99_ms", "max_ms", "missing", "duplicates",
                                              "signals", "worker_cpu_cores", "mean_scoring_ms_per_batch")}
                         for r in results]}
    print(json.dumps(summary), file=out, flush=True)
    return 0


def _run(cfg: WorkerConfig, opts: LoadtestOptions, out: TextIO) -> tuple[int, dict]:
    from worker.feed import Player
    from worker.kafka.admin import delete_topics
    from worker.kafka.clients import RecordSender
    from worker.synth import SynthOptions, generate_clip
    from worker.worker_cli import ensure_config_topics

    def say(msg: str) -> None:
        print(msg, file=out, flush=True)

    run_id = uuid.uuid4().hex[:8]
    k = cfg.kafka
    bootstrap = k.bootstrap_servers
    client_extra = {key: v for key, v in k.client_config("admin").items() if key != "bootstrap.servers"}
    created_topics: list[str] = []
    if opts.start_worker:
        # private topics and group: a rerun never reads an old run's signals
        topics = k.topics.model_copy(update={
            name: getattr(k.topics, name).model_copy(update={"name": f"{getattr(k.topics, name).name}.lt-{run_id}"})
            for name in ("audio", "roi", "signals", "dlq")})
        k = k.model_copy(update={"topics": topics, "group_id": f"{k.group_id}.lt-{run_id}"})
        cfg = cfg.model_copy(update={"kafka": k})
        created_topics = [t.name for t in k.topics.all()]
    ensure_config_topics(cfg)

    # --- sessions ------------------------------------------------------------------------------
    n_clips = max(1, min(opts.sessions, opts.distinct_clips))
    say(f"loadtest {run_id}: {opts.sessions} sessions x {opts.seconds:.0f} s at {opts.fps:g} fps, "
        f"{opts.chunk_ms} ms audio chunks, broker {bootstrap}; generating {n_clips} synthetic clips ...")
    synth = SynthOptions(fps=opts.fps)
    clips = [generate_clip(i + 1, opts.seconds, _OFFSETS_MS[i % len(_OFFSETS_MS)], synth) for i in range(n_clips)]
    w = cfg.windowing
    sessions, expected, truth = [], {}, {}
    for i in range(opts.sessions):
        clip = clips[i % n_clips]
        sid = f"lt-{run_id}-{i:04d}"
        truth[sid] = clip.audio_offset_ms
        sessions.append(session_records(sid, clip.frames, clip.audio, clip.fps, clip.sample_rate,
                                        chunk_ms=opts.chunk_ms, gray=opts.gray))
        for kind, fs, fe in expected_jobs(clip.frames.shape[0], clip.fps, w.block_frames, w.window_ms,
                                          w.window_hop_ms):
            expected[signal_id(sid, kind, fs)] = (sid, kind, fs, fe, clip.fps, clip.sample_rate,
                                                  clip.audio.shape[0])
    starts = [i * opts.stagger_ms / max(1, opts.sessions) for i in range(opts.sessions)]
    timeline = list(merge_sessions(sessions, starts))

    # --- worker --------------------------------------------------------------------------------
    proc = None
    port = None
    log_path = opts.worker_log
    if opts.start_worker:
        port = _free_port()
        env = dict(os.environ)
        env.update({
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "SYNC_SCORER_KAFKA__GROUP_ID": k.group_id,
            "SYNC_SCORER_KAFKA__TOPICS__AUDIO__NAME": k.topics.audio.name,
            "SYNC_SCORER_KAFKA__TOPICS__ROI__NAME": k.topics.roi.name,
            "SYNC_SCORER_KAFKA__TOPICS__SIGNALS__NAME": k.topics.signals.name,
            "SYNC_SCORER_KAFKA__TOPICS__DLQ__NAME": k.topics.dlq.name,
            "SYNC_SCORER_HTTP__PORT": str(port),
            "SYNC_SCORER_HTTP__HOST": "127.0.0.1",
        })
        cmd = [sys.executable, "-m", "worker.cli", "worker"]
        if opts.config_path:
            cmd += ["--config", opts.config_path]
        if log_path is None:
            log_path = os.path.join(tempfile.gettempdir(), f"sync-scorer-loadtest-{run_id}.log")
        with open(log_path, "w") as log_file:
            proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while not _ready(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                with open(log_path) as f:
                    tail = f.read()[-1500:]
                raise RuntimeError(f"the worker did not become ready (log {log_path}):\n{tail}")
            time.sleep(0.1)
        say(f"worker pid {proc.pid} ready (metrics on 127.0.0.1:{port}, log {log_path})")
    margin = opts.margin_ms
    if margin is None and port is not None:
        margin = _metrics(port).get("sync_scorer_search_margin_ms")
    if margin is None:
        from worker.worker_cli import load_worker_scorer

        margin = load_worker_scorer(cfg).search_margin_ms

    # --- play ----------------------------------------------------------------------------------
    collector = SignalCollector(bootstrap, k.topics.signals.name, client_extra)
    collector.start()
    player = Player(RecordSender(bootstrap, client_extra), k.topics.audio.name, k.topics.roi.name, timeline,
                    realtime=True)
    cpu0 = _cpu_seconds(proc.pid) if proc else None
    psi0 = _read_cpu_pressure_us()
    metrics0 = _metrics(port) if port else {}  # counters since start: the report uses differences
    t_play = time.monotonic()
    player.start()
    say(f"playing {len(timeline)} records over {timeline[-1][0] / 1000:.1f} s; {len(expected)} signals expected")
    player.join()
    play_s = time.monotonic() - t_play
    if player.error is not None:
        raise RuntimeError(f"the player failed: {player.error!r}")
    deadline = time.monotonic() + opts.grace_s
    while time.monotonic() < deadline and not set(expected) <= collector.received():
        time.sleep(0.05)
    time.sleep(0.5)  # let duplicates, if any, show up
    wall_s = time.monotonic() - t_play
    cpu1 = _cpu_seconds(proc.pid) if proc else None
    psi1 = _read_cpu_pressure_us()
    metrics1 = _metrics(port) if port else {}
    worker_metrics = {key: v - metrics0.get(key, 0.0) if key.endswith(("_total", "_sum", "_count")) else v
                      for key, v in metrics1.items()}
    collector.stop_event.set()
    collector.join(10)
    if proc is not None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    if created_topics:
        try:
            delete_topics(bootstrap, created_topics, client_config=client_extra)
        except Exception as exc:  # noqa: BLE001 - cleanup only
            say(f"(could not delete the load-test topics: {exc})")

    # --- report --------------------------------------------------------------------------------
    worker_lat, sign_ok, sign_n = [], 0, 0
    timed: list[tuple[int, float]] = []  # (send time of the signal's newest input, latency ms)
    slowest: list[tuple[int, str, str, int, int]] = []
    sr_by_sid = {}
    for sid_key, (recv_ms, rec) in collector.first.items():
        info = expected.get(sid_key)
        if info is None:
            continue
        sid, kind, fs, fe, fps, sr, n_samples = info
        sr_by_sid[sid] = sr
        dep = _dependency_sent_ms(player.sent_wall_ms, sid, fe, fps, sr, n_samples, margin, opts.chunk_ms)
        if dep is not None:
            timed.append((dep, recv_ms - dep))
            slowest.append((recv_ms - dep, rec["session_id"], rec["kind"], rec["frame_start"], rec["latency_ms"]))
        worker_lat.append(rec["latency_ms"])
        if rec["offset_ms"] is not None and rec["kind"] == "WINDOW" and rec["label"] == "OK":
            truth_ms = truth[sid]
            sign_n += 1
            frame_ms = 1000.0 / fps
            sign_ok += (abs(rec["offset_ms"] - truth_ms) <= frame_ms + 1e-6)
    received = collector.received()
    missing = len(set(expected) - received)
    duplicates = sum(c - 1 for sid_key, c in collector.counts.items() if c > 1)
    cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    latencies = [lat for _, lat in timed]
    first_ms = min((t for t, _ in timed), default=0)
    by_slice = p99_by_slice([((t - first_ms) / 1000.0, lat) for t, lat in timed], _SLICE_S)
    batches = worker_metrics.get("sync_scorer_batch_size_count", 0.0)
    report = {
        "sessions": opts.sessions,
        "seconds": opts.seconds,
        "signals": sum(collector.counts.values()),
        "expected": len(expected),
        "missing": missing,
        "duplicates": duplicates,
        "p50_ms": _round(percentile(latencies, 50)),
        "p99_ms": _round(percentile(latencies, 99)),
        "max_ms": _round(max(latencies) if latencies else None),
        "signals_per_s": round(len(received) / play_s, 2) if play_s > 0 else None,
        "worker_latency_p50_ms": _round(percentile(worker_lat, 50)),
        "worker_latency_p99_ms": _round(percentile(worker_lat, 99)),
        "player_behind_max_ms": round(player.behind_ms, 1),
        "records_sent": player.sent,
        "search_margin_ms": margin,
        "window_offset_within_1_frame": round(sign_ok / sign_n, 3) if sign_n else None,
        "scorer": next((key.split('"')[1] for key in worker_metrics if key.startswith("sync_scorer_scorer_info")),
                       None),
        "worker_cpu_cores": round(cpu / wall_s, 2) if cpu is not None and wall_s > 0 else None,
        "batches": int(batches),
        "mean_batch_size": _ratio(worker_metrics.get("sync_scorer_batch_size_sum"), batches),
        "mean_scoring_ms_per_batch": _ratio(worker_metrics.get("sync_scorer_scoring_latency_seconds_sum"),
                                            batches, 1000.0),
        "mean_queue_wait_ms": _ratio(worker_metrics.get("sync_scorer_scoring_queue_seconds_sum"),
                                     worker_metrics.get("sync_scorer_scoring_queue_seconds_count"), 1000.0),
        "dlq": int(sum(v for key, v in worker_metrics.items() if key.startswith("sync_scorer_dlq_total"))),
        # where the worker's CPU went (cores busy over the run): the scorer vs everything else
        "scoring_cpu_cores": _ratio(worker_metrics.get("sync_scorer_scoring_cpu_seconds_total"), wall_s),
        "poll_loop_cpu_cores": _ratio(worker_metrics.get("sync_scorer_poll_loop_cpu_seconds_total"), wall_s),
        # the tail's shape over the run, and how much of the run this machine's tasks (broker,
        # player, worker, and anyone else's) spent waiting for a CPU
        "p99_ms_by_slice": by_slice,
        "slice_s": _SLICE_S,
        "cpu_pressure_some": (round((psi1 - psi0) / (wall_s * 1e6), 3)
                              if psi0 is not None and psi1 is not None and wall_s > 0 else None),
        "gc_pause_s": {gen: round(worker_metrics.get(f'sync_scorer_gc_pause_seconds_sum{{generation="{gen}"}}', 0.0), 3)
                       for gen in ("0", "1", "2")},
    }
    say(f"signals {report['signals']} (expected {report['expected']}), missing {missing}, "
        f"duplicates {duplicates}, {report['signals_per_s']} signals/s")
    say(f"event->signal latency: p50 {report['p50_ms']} ms, p99 {report['p99_ms']} ms, max {report['max_ms']} ms "
        f"(worker's own view p50 {report['worker_latency_p50_ms']} / p99 {report['worker_latency_p99_ms']} ms)")
    if report["scorer"] is None:  # --no-worker: its metrics are not this process's to read
        say(f"worker: not started here (--no-worker); player fell behind by at most "
            f"{report['player_behind_max_ms']} ms")
    else:
        say(f"worker: scorer {report['scorer']}, {report['worker_cpu_cores']} CPU cores busy (scorer "
            f"{report['scoring_cpu_cores']}, poll loop {report['poll_loop_cpu_cores']}), {report['batches']} "
            f"batches of {report['mean_batch_size']} jobs, {report['mean_scoring_ms_per_batch']} ms scoring each, "
            f"{report['mean_queue_wait_ms']} ms queue wait; player fell behind by at most "
            f"{report['player_behind_max_ms']} ms")
    say(f"p99 per {_SLICE_S:g} s of the run: " + " ".join("-" if v is None else f"{v:g}" for v in by_slice)
        + f" ms; CPU pressure (some) {report['cpu_pressure_some']} of the run")
    slowest.sort(reverse=True)
    say("slowest signals (latency ms, session, kind, first frame, worker's latency_ms): "
        + "; ".join(f"{lat} {sid[-4:]} {kind} {fs} {wl}" for lat, sid, kind, fs, wl in slowest[:6]))
    print(json.dumps(report), file=out, flush=True)
    return (0 if missing == 0 else 1), report


def _dependency_sent_ms(sent: dict, sid: str, frame_end: int, fps: float, sr: int, n_samples: int,
                        margin_ms: float, chunk_ms: int) -> int | None:
    """Send time of the newest record the job [.., frame_end) needed (see the module docstring)."""
    frame_t = sent.get((sid, ROI, frame_end - 1))
    need_end = math.ceil((1000.0 * frame_end / fps + margin_ms) * sr / 1000.0)
    step = max(1, sr * chunk_ms // 1000)
    if need_end > n_samples:
        audio_t = sent.get((sid, AUDIO, n_samples))  # the end-of-session marker completes it
    else:
        audio_t = sent.get((sid, AUDIO, ((need_end - 1) // step) * step))
    times = [t for t in (frame_t, audio_t) if t is not None]
    return max(times) if times else None


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def _ratio(num: float | None, den: float | None, scale: float = 1.0) -> float | None:
    if not num or not den:
        return None
    return round(num / den * scale, 2)

