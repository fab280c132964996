"""The `loadtest` and `run-demo` commands end to end on the session broker (short runs)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid

from worker.config import WorkerConfig


def test_loadtest_cli_reports_json_with_nothing_missing(kafka_bootstrap, tmp_path):
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap)
    worker_log = tmp_path / "worker.log"  # not the default in the system's temp folder, kept after the run
    proc = subprocess.run([sys.executable, "-m", "worker.cli", "loadtest", "--sessions", "3", "--seconds", "3",
                           "--json", "--grace-s", "20", "--worker-log", str(worker_log)], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("sessions", "p50_ms", "p99_ms", "max_ms", "missing", "duplicates", "signals", "signals_per_s"):
        assert key in report, key
    assert report["sessions"] == 3 and report["missing"] == 0 and report["duplicates"] == 0
    assert worker_log.stat().st_size > 0  # the worker wrote its log where it was told
    # 3 s at 30 fps: 5 blocks of 16 and 3 windows of 30 per session
    assert report["signals"] == report["expected"] == 3 * (5 + 3)
    assert 0 < report["p50_ms"] <= report["p99_ms"] <= report["max_ms"]
    # 3 s of sessions started over 1 s: two or three 2-s slices, each holding signals
    assert report["slice_s"] == 2.0 and 2 <= len(report["p99_ms_by_slice"]) <= 3
    assert all(v is not None and 0 < v <= report["max_ms"] for v in report["p99_ms_by_slice"])


def test_run_demo_prints_every_signal_and_the_summary(kafka_bootstrap, monkeypatch):
    from worker.demo import DemoOptions, run_local_demo

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)  # the demo's broker = the fixture's
    run = uuid.uuid4().hex[:8]
    topics = {name: {"name": f"demo.{name}.{run}", "partitions": 2 if name != "dlq" else 1}
              for name in ("audio", "roi", "signals", "dlq")}
    cfg = WorkerConfig(kafka={"topics": topics, "group_id": f"demo-{run}"}, http={"port": 0})
    out = io.StringIO()
    code = run_local_demo(cfg, DemoOptions(seconds=3.0, offsets_ms=(-160.0, 120.0), realtime=False), out)
    text = out.getvalue()
    assert code == 0, text
    assert "16 of 16 expected signals received, 0 missing" in text
    rows = [line for line in text.splitlines() if line.startswith("demo-")]
    assert len(rows) == 16
    assert "demo-leads-160ms known  -160 ms" in text and "demo-lags-120ms  known  +120 ms" in text
