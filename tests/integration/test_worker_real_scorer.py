"""The worker end to end with the REAL scorer (``load_default_scorer``: the bundled model) on the
real broker: synthetic sessions with known audio offsets, and a worker process killed with
SIGKILL in the middle of the stream and restarted.

If the bundle cannot load, the loader falls back to the heuristic scorer: delivery is still
checked in full, but the offset-sign check is then reported as an expected failure (xfail) naming
the reason, since the heuristic is not held to that accuracy.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter

import pytest

from tests.support.kafka_io import produce, read_topic
from tests.support.running_worker import RunningWorker
from worker.config import WorkerConfig
from worker.kafka.admin import ensure_topics
from worker.loadgen import expected_jobs, merge_sessions, session_records
from worker.publish import signal_id
from worker.synth import SynthOptions, generate_clip

PARTITIONS = 3


@pytest.fixture(scope="module")
def real_scorer():
    from worker.scoring.loader import load_default_scorer

    return load_default_scorer("cpu")


def _config(bootstrap: str, run: str) -> WorkerConfig:
    topics = {
        "audio": {"name": f"av.audio-chunks.{run}", "partitions": PARTITIONS},
        "roi": {"name": f"av.roi-refs.{run}", "partitions": PARTITIONS},
        "signals": {"name": f"av.lipsync-signals.{run}", "partitions": PARTITIONS},
        "dlq": {"name": f"av.lipsync-dlq.{run}", "partitions": 1},
    }
    cfg = WorkerConfig(kafka={"bootstrap_servers": bootstrap, "group_id": f"g-{run}", "topics": topics,
                              "commit_interval_ms": 200},
                       http={"port": 0}, log={"json_logs": False})
    ensure_topics(bootstrap, {t.name: t.partitions for t in cfg.kafka.topics.all()})
    return cfg


def _sessions(specs: list[tuple[str, float, float, int]], seconds: float):
    """specs: (session_id, audio offset ms, fps, seed) -> (records per session, expected ids)."""
    sessions, expected = [], {}
    for sid, offset, fps, seed in specs:
        clip = generate_clip(seed, seconds, offset, SynthOptions(fps=fps))
        sessions.append(session_records(sid, clip.frames, clip.audio, clip.fps, clip.sample_rate))
        for kind, fs, _ in expected_jobs(clip.frames.shape[0], clip.fps, 16, 1000, 1000):
            expected[signal_id(sid, kind, fs)] = (sid, kind.value, fs)
    return sessions, expected


def test_known_offsets_every_signal_once_with_the_right_sign(kafka_bootstrap, real_scorer):
    run = uuid.uuid4().hex[:8]
    cfg = _config(kafka_bootstrap, run)
    truth = {"leads-200": -200.0, "sync-30fps": 0.0, "lags-160": 160.0, "sync-25fps": 0.0}
    specs = [("leads-200", -200.0, 30.0, 11), ("sync-30fps", 0.0, 30.0, 12), ("lags-160", 160.0, 30.0, 13),
             ("sync-25fps", 0.0, 25.0, 14)]
    sessions, expected = _sessions(specs, 5.0)
    running = RunningWorker(cfg, real_scorer)
    try:
        running.wait_ready(60)
        produce(kafka_bootstrap, cfg.kafka.topics.audio.name, cfg.kafka.topics.roi.name,
                (rec for _, _, rec in merge_sessions(sessions)))
        signals = read_topic(kafka_bootstrap, cfg.kafka.topics.signals.name, "LipSyncSignal",
                             lambda recs: set(expected) <= {r["signal_id"] for r in recs}, timeout_s=120)
    finally:
        running.close()
    counts = Counter(r["signal_id"] for r in signals)
    assert set(counts) == set(expected), sorted(expected[i] for i in set(expected) - set(counts))
    assert max(counts.values()) == 1
    # the bundle's full-band model, or its narrowband one for a job whose audio has next to nothing
    # above 5 kHz (routed.py): the synthetic voice does now and then (5 of 600 1-s spans of the
    # evaluation's clips), so most signals, not all, name the full-band model
    models = {real_scorer.name, getattr(getattr(real_scorer, "narrow", None), "name", real_scorer.name)}
    for rec in signals:
        assert rec["scorer"] in models
        assert rec["frames_missing"] == 0 and rec["audio_missing_ms"] == 0
    assert sum(rec["scorer"] == real_scorer.name for rec in signals) > 0.9 * len(signals)
    # the offset sign, judged on the ~1 s WINDOW signals' median per session
    medians = {}
    for sid in truth:
        wins = [r["offset_ms"] for r in signals if r["session_id"] == sid and r["kind"] == "WINDOW"
                and r["offset_ms"] is not None]
        medians[sid] = statistics.median(wins) if wins else None
    def right(off: float, med: float | None) -> bool:
        if med is None:
            return False
        return abs(med) <= 1000.0 / 25 + 1 if off == 0 else med * off > 0

    wrong = [(sid, off, medians[sid]) for sid, off in truth.items() if not right(off, medians[sid])]
    if wrong and real_scorer.name.startswith("heuristic@"):
        pytest.xfail(f"bundled model unavailable, heuristic fallback: offsets {medians} vs truth {truth}")
    assert not wrong, f"(session, truth, median WINDOW offset): {wrong}"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_worker_process(cfg: WorkerConfig, log_path: str, instance: str) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    k = cfg.kafka
    env = dict(os.environ)
    env.update({
        "KAFKA_BOOTSTRAP_SERVERS": k.bootstrap_servers,
        "SYNC_SCORER_KAFKA__GROUP_ID": k.group_id,
        "SYNC_SCORER_KAFKA__TOPICS__AUDIO__NAME": k.topics.audio.name,
        "SYNC_SCORER_KAFKA__TOPICS__ROI__NAME": k.topics.roi.name,
        "SYNC_SCORER_KAFKA__TOPICS__SIGNALS__NAME": k.topics.signals.name,
        "SYNC_SCORER_KAFKA__TOPICS__DLQ__NAME": k.topics.dlq.name,
        "SYNC_SCORER_KAFKA__TOPICS__AUDIO__PARTITIONS": str(PARTITIONS),
        "SYNC_SCORER_KAFKA__TOPICS__ROI__PARTITIONS": str(PARTITIONS),
        "SYNC_SCORER_KAFKA__COMMIT_INTERVAL_MS": "200",
        # static membership: the restarted worker takes its partitions back at once instead of
        # waiting for the killed member's session to time out
        "SYNC_SCORER_KAFKA__CONSUMER": json.dumps({"group.instance.id": instance}),
        "SYNC_SCORER_HTTP__PORT": str(port),
        "SYNC_SCORER_HTTP__HOST": "127.0.0.1",
        "SYNC_SCORER_SCORING__DEVICE": "cpu",
    })
    with open(log_path, "a") as log:
        proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "worker"], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    return proc, port


def _wait_ready(proc: subprocess.Popen, port: int, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "worker process exited"
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1).status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("worker process not ready")


def test_worker_killed_and_restarted_mid_stream_misses_nothing(kafka_bootstrap, tmp_path):
    run = uuid.uuid4().hex[:8]
    cfg = _config(kafka_bootstrap, run)
    specs = [(f"kill-{i}", off, 30.0, 30 + i) for i, off in enumerate([-120.0, 0.0, 160.0])]
    sessions, expected = _sessions(specs, 6.0)
    timeline = [rec for _, _, rec in merge_sessions(sessions)]
    log_path = str(tmp_path / "worker.log")
    proc, port = _start_worker_process(cfg, log_path, f"w-{run}")
    try:
        _wait_ready(proc, port)
        feeder = threading.Thread(target=produce, args=(kafka_bootstrap, cfg.kafka.topics.audio.name,
                                                        cfg.kafka.topics.roi.name, timeline, True), daemon=True)
        feeder.start()
        time.sleep(3.0)  # half way through the sessions
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc, port = _start_worker_process(cfg, log_path, f"w-{run}")
        _wait_ready(proc, port)
        feeder.join(60)
        signals = read_topic(kafka_bootstrap, cfg.kafka.topics.signals.name, "LipSyncSignal",
                             lambda recs: set(expected) <= {r["signal_id"] for r in recs}, timeout_s=90)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            returncode = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            returncode = None
    got = {r["signal_id"] for r in signals}
    missing = sorted(expected[i] for i in set(expected) - got)
    with open(log_path) as f:
        log_tail = f.read()[-3000:]
    assert not missing, f"missing after the restart: {missing}\n{log_tail}"
    # SIGTERM: a clean shutdown (drain, publish, commit, close) and exit 0
    assert returncode == 0, log_tail
    assert '"worker stopped"' in log_tail or "worker stopped" in log_tail
    assert got <= set(expected)
    # at-least-once: duplicates are allowed and share the signal_id; each copy is a whole signal
    for rec in signals:
        assert rec["frame_end"] - rec["frame_start"] in (16, 30)
