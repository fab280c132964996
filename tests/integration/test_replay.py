"""`sync-scorer replay` on the real broker: sessions scored live by the worker (real scorer) are
replayed from the input topics; the replay reproduces every live signal, reports the records the
worker dead-lettered, publishes to a topic of choice, and a replay of part of the data is compared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

from schemas import AvroCodec
from tests.support.kafka_io import produce, produce_raw, read_topic
from tests.support.running_worker import RunningWorker
from worker.config import WorkerConfig
from worker.kafka.admin import ensure_topics
from worker.loadgen import expected_jobs, merge_sessions, session_records
from worker.publish import signal_id
from worker.synth import SynthOptions, generate_clip


def _env(cfg: WorkerConfig) -> dict[str, str]:
    k = cfg.kafka
    return dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=k.bootstrap_servers,
                SYNC_SCORER_KAFKA__TOPICS__AUDIO__NAME=k.topics.audio.name,
                SYNC_SCORER_KAFKA__TOPICS__ROI__NAME=k.topics.roi.name,
                SYNC_SCORER_KAFKA__TOPICS__SIGNALS__NAME=k.topics.signals.name,
                SYNC_SCORER_KAFKA__TOPICS__DLQ__NAME=k.topics.dlq.name)


def _replay(cfg: WorkerConfig, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "worker.cli", "replay", *args, "--json", "--device", "cpu"],
                          env=_env(cfg), capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_replay_reproduces_the_live_signals_and_reports_bad_records(kafka_bootstrap, tmp_path):
    from worker.scoring.loader import load_default_scorer

    run = uuid.uuid4().hex[:8]
    topics = {name: {"name": f"replay.{name}.{run}", "partitions": 2 if name != "dlq" else 1}
              for name in ("audio", "roi", "signals", "dlq")}
    cfg = WorkerConfig(kafka={"bootstrap_servers": kafka_bootstrap, "group_id": f"g-{run}", "topics": topics,
                              "commit_interval_ms": 200}, http={"port": 0}, log={"json_logs": False})
    ensure_topics(kafka_bootstrap, {t.name: t.partitions for t in cfg.kafka.topics.all()})
    specs = [("lags-120", 120.0, 30.0, 31), ("sync-25", 0.0, 25.0, 32), ("other", -80.0, 25.0, 33)]
    sessions, expected = [], {}
    for sid, offset, fps, seed in specs:
        clip = generate_clip(seed, 3.0, offset, SynthOptions(fps=fps))
        sessions.append(session_records(sid, clip.frames, clip.audio, clip.fps, clip.sample_rate))
        for kind, fs, _ in expected_jobs(clip.frames.shape[0], clip.fps, 16, 1000, 1000):
            expected[signal_id(sid, kind, fs)] = sid
    scorer = load_default_scorer("cpu")
    running = RunningWorker(cfg, scorer)
    try:
        running.wait_ready(60)
        # two records the worker dead-letters, keyed by a replayed session: not Avro, and a chunk
        # whose bytes are not whole samples
        produce_raw(kafka_bootstrap, cfg.kafka.topics.roi.name, b"lags-120", b"\x00\x01not avro")
        odd = AvroCodec("AudioChunk").encode({"session_id": "lags-120", "seq": 999, "start_sample": 0,
                                               "sample_rate": 16000, "channels": 1, "encoding": "PCM_S16LE",
                                               "data": b"\x01\x02\x03", "end_of_session": False})
        produce_raw(kafka_bootstrap, cfg.kafka.topics.audio.name, b"lags-120", odd)
        # Kafka timestamps as a live source sending in real time would give (for --since-ms below)
        ts_base = int(time.time() * 1000)
        produce(kafka_bootstrap, cfg.kafka.topics.audio.name, cfg.kafka.topics.roi.name,
                (rec for _, _, rec in merge_sessions(sessions)), ts_base_ms=ts_base)
        live = read_topic(kafka_bootstrap, cfg.kafka.topics.signals.name, "LipSyncSignal",
                          lambda recs: set(expected) <= {r["signal_id"] for r in recs}, timeout_s=120)
    finally:
        running.close()
    assert set(expected) <= {r["signal_id"] for r in live}

    out = tmp_path / "replayed.jsonl"
    summary = _replay(cfg, "--session", "lags-120", "--session", "sync-25", "--compare", "--out", str(out),
                      "--to-topic", f"replay.out.{run}")
    mine = {i for i, sid in expected.items() if sid != "other"}
    replayed = [json.loads(line) for line in out.read_text().splitlines()]
    assert {s["signal_id"] for s in replayed} == mine and len(replayed) == len(mine)
    assert summary["signals"] == len(mine) and set(summary["sessions"]) == {"lags-120", "sync-25"}
    assert summary["scorer"] == scorer.name
    # the worker's own stages on the same records: the live signals again
    cmp = summary["compare"]
    assert cmp["matched"] == len(mine) and cmp["only_replayed"] == 0 and cmp["only_published"] == 0, cmp
    assert cmp["identical"] == cmp["matched"], cmp["examples"]
    assert summary["sessions"]["lags-120"]["median_window_offset_ms"] > 40  # audio lags
    bad = {b["topic"]: b["reason"] for b in summary["bad_records"]}
    assert len(summary["bad_records"]) == 2 and summary["sessions"]["lags-120"]["bad_records"] == 2
    assert bad[cfg.kafka.topics.roi.name].startswith("decode:")
    assert "whole number" in bad[cfg.kafka.topics.audio.name]
    # --to-topic: the replayed signals, Avro, keyed by session
    got = read_topic(kafka_bootstrap, f"replay.out.{run}", "LipSyncSignal",
                     lambda recs: len(recs) >= len(mine), timeout_s=30)
    assert {r["signal_id"] for r in got} == mine and all(r["_key"] == r["session_id"].encode() for r in got)

    # from a time mid-session: the jobs from the first records written since then, given the context
    # frames and audio margin they read from before it, are the live ones again, and the live
    # signals from before it are not counted (they were: 'only published', and the first jobs
    # after it changed score, scored without what came before)
    part = _replay(cfg, "--all-sessions", "--since-ms", str(ts_base + 1500), "--compare")
    cmp = part["compare"]
    assert cmp["only_published"] == 0 and cmp["only_replayed"] == 0, cmp
    assert cmp["identical"] == cmp["matched"], cmp["examples"]
    firsts = {sid: s["first_frame"] for sid, s in part["sessions"].items()}
    assert set(firsts) == {"lags-120", "sync-25", "other"} and all(30 < f < 50 for f in firsts.values()), firsts
    assert all(s["left_out"] == 0 for s in part["sessions"].values())
    in_range = {r["signal_id"] for r in live if r["frame_start"] >= firsts[r["session_id"]]}
    assert cmp["matched"] == len(in_range) == part["signals"] and 0 < len(in_range) < len(expected)

    # from a time after everything was written: nothing to replay, said in one line
    proc = subprocess.run([sys.executable, "-m", "worker.cli", "replay", "--session", "sync-25", "--since-ms",
                           str(int(time.time() * 1000) + 60_000)], env=_env(cfg), capture_output=True, text=True,
                          timeout=120, check=False)
    # (the session has input, read as the lookback: the line says none was written since then)
    assert proc.returncode == 3 and "no recorded input written at or after --since-ms" in proc.stderr, proc.stderr
    assert "for session(s) sync-25" in proc.stderr, proc.stderr

    # a compare topic that does not exist: refused before the replay, nothing published (it was
    # found missing after the replay had published to --to-topic, a review)
    never = f"replay.never.{run}"
    proc = subprocess.run([sys.executable, "-m", "worker.cli", "replay", "--session", "sync-25", "--to-topic", never,
                           "--compare-topic", f"replay.missing.{run}", "--device", "cpu"], env=_env(cfg),
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 3 and "does not exist" in proc.stderr, proc.stderr
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    assert never not in admin.list_topics(timeout=10).topics

    # retention took the first 40 records of every input partition: the sessions that lost their
    # start say so, the jobs that read the removed records are left out, and the rest are the live
    # signals again (they were scored on zero-filled audio and counted as changed, a review)
    from confluent_kafka import TopicPartition

    cut = [TopicPartition(t, p, 40) for t in (cfg.kafka.topics.audio.name, cfg.kafka.topics.roi.name)
           for p in range(2)]
    for fut in admin.delete_records(cut, operation_timeout=10).values():
        fut.result(timeout=30)
    trimmed = _replay(cfg, "--all-sessions", "--compare")
    lost = {sid for sid, s in trimmed["sessions"].items() if s["start_lost"]}
    assert lost and all(trimmed["sessions"][sid]["first_frame"] > 0 for sid in lost), trimmed["sessions"]
    cmp = trimmed["compare"]
    assert cmp["only_published"] == 0 and cmp["only_replayed"] == 0, cmp
    assert cmp["identical"] == cmp["matched"] > 0, cmp["examples"]
    assert not any(s["still_open"] for s in trimmed["sessions"].values())
