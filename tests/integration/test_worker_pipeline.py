"""The worker on a real broker with the stand-in scorer (tests/support/fake_scorer.py).

These check the pipeline itself (consume, join, window, batch, publish, DLQ, gaps, commits,
backpressure); test_worker_real_scorer.py runs the real scorer end to end.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import pytest

from schemas import AvroCodec
from tests.support.fake_scorer import FakeScorer, pulse_media
from tests.support.kafka_io import produce, produce_raw, read_topic
from tests.support.running_worker import RunningWorker
from worker.app import Worker
from worker.config import WorkerConfig
from worker.kafka.admin import ensure_topics
from worker.loadgen import ROI, TimedRecord, expected_jobs, merge_sessions, session_records
from worker.publish import signal_id

FPS = 30.0
SR = 16000
PARTITIONS = 3


def make_config(bootstrap: str, run: str, windowing: dict | None = None, partitions: int = PARTITIONS,
                kafka: dict | None = None, **scoring) -> WorkerConfig:
    topics = {
        "audio": {"name": f"av.audio-chunks.{run}", "partitions": partitions},
        "roi": {"name": f"av.roi-refs.{run}", "partitions": partitions},
        "signals": {"name": f"av.lipsync-signals.{run}", "partitions": PARTITIONS},
        "dlq": {"name": f"av.lipsync-dlq.{run}", "partitions": 1},
    }
    cfg = WorkerConfig(
        kafka={"bootstrap_servers": bootstrap, "group_id": f"g-{run}", "topics": topics,
               "commit_interval_ms": 200, **(kafka or {})},
        windowing={"block_frames": 16, "window_ms": 1000, "window_hop_ms": 1000,
                   "allowed_lateness_ms": 500, "idle_timeout_ms": 3000, **(windowing or {})},
        scoring={"max_batch_size": 16, "max_wait_ms": 5, **scoring},
        http={"port": 0},
        log={"json_logs": False},
    )
    ensure_topics(bootstrap, {t.name: t.partitions for t in cfg.kafka.topics.all()})
    return cfg


def _signals_complete(expected: set[str]):
    return lambda recs: expected <= {r["signal_id"] for r in recs}


@pytest.fixture
def run_id() -> str:
    return uuid.uuid4().hex[:8]



def _pulse_sessions(prefix: str, n: int, seconds: float, seed0: int, size: int = 16) -> tuple[list, set]:
    """n in-sync pulse sessions named prefix0..: their records and every expected signal id
    (``size``: the ROI side; 96 is a real ROI's weight on the wire)."""
    sessions, expected = [], set()
    for i in range(n):
        frames, audio = pulse_media(seconds, FPS, SR, 0.0, seed=seed0 + i, size=size)
        sessions.append(session_records(f"{prefix}{i}", frames, audio, FPS, SR))
        expected |= {signal_id(f"{prefix}{i}", k, fs) for k, fs, _ in
                     expected_jobs(frames.shape[0], FPS, 16, 1000, 1000)}
    return sessions, expected

def test_sessions_with_known_offsets_each_signal_once(kafka_bootstrap, run_id):
    cfg = make_config(kafka_bootstrap, run_id)
    offsets = {"s-lead": -100.0, "s-sync": 0.0, "s-lag": 133.0, "s-lag2": 200.0}
    sessions, expected = [], {}
    for i, (sid, off) in enumerate(offsets.items()):
        frames, audio = pulse_media(3.0, FPS, SR, off, seed=i)
        sessions.append(session_records(sid, frames, audio, FPS, SR))
        for kind, fs, _ in expected_jobs(frames.shape[0], FPS, 16, 1000, 1000):
            expected[signal_id(sid, kind, fs)] = (sid, kind.value, fs)
    running = RunningWorker(cfg, FakeScorer())
    try:
        running.wait_ready()
        produce(kafka_bootstrap, cfg.kafka.topics.audio.name, cfg.kafka.topics.roi.name,
                (rec for _, _, rec in merge_sessions(sessions)))
        signals = read_topic(kafka_bootstrap, cfg.kafka.topics.signals.name, "LipSyncSignal",
                             _signals_complete(set(expected)), timeout_s=60)
    finally:
        running.close()
    ids = Counter(r["signal_id"] for r in signals)
    assert set(ids) == set(expected), (set(expected) - set(ids), set(ids) - set(expected))
    assert max(ids.values()) == 1, [k for k, v in ids.items() if v > 1]
    for rec in signals:
        assert rec["_key"] == rec["session_id"].encode()
        off = offsets[rec["session_id"]]
        assert rec["offset_ms"] == pytest.approx(off, abs=1000 / FPS + 1), {k: rec[k] for k in ("kind", "frame_start", "label", "frames_missing", "audio_missing_ms", "score")}
        assert rec["scorer"] == "fake@1" and rec["label"] == "OK"
        assert rec["frames_missing"] == 0 and rec["audio_missing_ms"] == 0
        assert 0 <= rec["latency_ms"] < 5000
    # 4 sessions x (5 blocks + 3 windows)
    assert len(signals) == 4 * (5 + 3)
    # everything published was committed: a new worker of the group would start at the end
    assert running.worker.tracker.open_count() == 0
    assert _committed_lag(kafka_bootstrap, cfg) == 0


def _committed_lag(bootstrap: str, cfg: WorkerConfig) -> int:
    """Records of the input topics past the group's committed offsets (what a restart re-reads)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": cfg.kafka.group_id})
    try:
        tps = [TopicPartition(t, p) for t in cfg.kafka.topics.inputs() for p in range(PARTITIONS)]
        lag = 0
        for tp in c.committed(tps, timeout=10):
            low, high = c.get_watermark_offsets(tp, timeout=10)
            lag += high - (tp.offset if tp.offset >= 0 else low)
        return lag
    finally:
        c.close()


def test_poison_records_go_to_the_dlq_and_the_rest_goes_on(kafka_bootstrap, run_id, monkeypatch):
    """Bad records of every kind between a good session's records: each goes to the DLQ with its
    reason and the session's signals all come. Among them (a review): a chunk near 1 MB, whose
    dead letter cannot carry it whole; a sample rate whose resampling filter would take GBs; a
    record the worker fails on in a way no check foresaw (here a resolver that raises)."""
    import worker.app

    cfg = make_config(kafka_bootstrap, run_id)
    frames, audio = pulse_media(2.2, FPS, SR, 66.0, seed=5)
    records = session_records("s-ok", frames, audio, FPS, SR)
    expected = {signal_id("s-ok", k, fs) for k, fs, _ in expected_jobs(frames.shape[0], FPS, 16, 1000, 1000)}
    poison = b"\x02not avro at all\xff\xfe"
    chunk = {"session_id": "s-ok", "seq": 10_000, "start_sample": 0, "sample_rate": SR, "channels": 1,
             "encoding": "PCM_S16LE", "data": b"", "end_of_session": False, "produced_at_ms": None}
    codec = AvroCodec("AudioChunk")
    big = codec.encode(dict(chunk, data=b"\x01" * 999_871))  # odd: not whole 16-bit samples
    odd_rate = codec.encode(dict(chunk, sample_rate=44_101, data=b"\x00\x00" * 882))
    roi_events = worker.app.roi_events

    def failing(record, *args):
        if record["session_id"] == "s-boom":
            raise RuntimeError("a failure no check foresaw")
        return roi_events(record, *args)

    monkeypatch.setattr(worker.app, "roi_events", failing)
    boom = session_records("s-boom", frames[:1], audio[:640], FPS, SR, end_markers=False)
    running = RunningWorker(cfg, FakeScorer())
    try:
        running.wait_ready()
        half = len(records) // 2
        produce(kafka_bootstrap, cfg.kafka.topics.audio.name, cfg.kafka.topics.roi.name, records[:half])
        produce_raw(kafka_bootstrap, cfg.kafka.topics.roi.name, b"s-ok", poison)
        produce_raw(kafka_bootstrap, cfg.kafka.topics.audio.name, b"s-ok", big)
        produce_raw(kafka_bootstrap, cfg.kafka.topics.audio.name, b"s-ok", odd_rate)
        produce(kafka_bootstrap, cfg.kafka.topics.audio.name, cfg.kafka.topics.roi.name,
                [r for r in boom if r.stream == ROI])
        produce(kafka_bootstrap, cfg.kafka.topics.audio.name, cfg.kafka.topics.roi.name, records[half:])
        dlq = read_topic(kafka_bootstrap, cfg.kafka.topics.dlq.name, "DeadLetter", lambda r: len(r) >= 4,
                         timeout_s=30)
        signals = read_topic(kafka_bootstrap, cfg.kafka.topics.signals.name, "LipSyncSignal",
                             _signals_complete(expected), timeout_s=30)
    finally:
        running.close()
    assert len(dlq) == 4
    by_reason = {d["reason"].split(":")[0] + (":rate" if "resampled" in d["reason"] else ""): d for d in dlq}
    dead = by_reason["decode"]
    assert dead["value"] == poison and dead["key"] == b"s-ok" and not dead["truncated"]
    assert dead["topic"] == cfg.kafka.topics.roi.name and dead["offset"] >= 0
    whole = [d for d in dlq if "whole number" in d["reason"]]
    assert len(whole) == 1 and whole[0]["truncated"] and whole[0]["value_bytes"] == len(big)
    assert whole[0]["value"] == big[: len(whole[0]["value"])] and len(whole[0]["value"]) > 900_000
    assert "cannot be resampled" in by_reason["invalid:rate"]["reason"]
    assert by_reason["internal"]["reason"] == "internal: RuntimeError: a failure no check foresaw"
    assert by_reason["internal"]["key"] == b"s-boom"
    assert {r["signal_id"] for r in signals} == expected
    assert all(r["frames_missing"] == 0 for r in signals)


def _one_session_through_a_worker(bootstrap: str, cfg: WorkerConfig, session_id: str, n_frames: int,
                                  records: list) -> tuple[list, set, RunningWorker]:
    """Produce one session's records to a fresh worker (stand-in scorer) and read until every
    signal of its job grid came: (signals, expected ids, the stopped worker)."""
    expected = {signal_id(session_id, k, fs) for k, fs, _ in expected_jobs(n_frames, FPS, 16, 1000, 1000)}
    running = RunningWorker(cfg, FakeScorer())
    try:
        running.wait_ready()
        produce(bootstrap, cfg.kafka.topics.audio.name, cfg.kafka.topics.roi.name, records)
        signals = read_topic(bootstrap, cfg.kafka.topics.signals.name, "LipSyncSignal",
                             _signals_complete(expected), timeout_s=30)
    finally:
        running.close()
    return signals, expected, running


def test_missing_references_are_labelled(kafka_bootstrap, run_id, tmp_path):
    cfg = make_config(kafka_bootstrap, run_id)
    frames, audio = pulse_media(2.2, FPS, SR, 0.0, seed=9)
    records = []
    for rec in session_records("s-refs", frames, audio, FPS, SR):
        f = rec.record.get("frame_index")
        # one gap in block 0; block 1 entirely unreadable
        if rec.stream == ROI and rec.record["roi"] is not None and (f == 5 or 16 <= f < 32):
            roi = {"uri": f"file://{tmp_path}/missing-{f}.raw", "shape": [16, 16], "format": "GRAY8"}
            rec = TimedRecord(rec.due_ms, rec.stream, dict(rec.record, roi=roi))
        records.append(rec)
    signals, _, running = _one_session_through_a_worker(kafka_bootstrap, cfg, "s-refs", frames.shape[0], records)
    errors = running.worker.metrics.ref_errors.labels("outside_roots")._value.get()
    by = {(r["kind"], r["frame_start"]): r for r in signals}
    assert by[("BLOCK", 0)]["frames_missing"] == 1 and by[("BLOCK", 0)]["label"] == "OK"
    # unreadable references are lost data, not an empty screen (README: LOW_QUALITY)
    assert by[("BLOCK", 16)]["frames_missing"] == 16 and by[("BLOCK", 16)]["label"] == "LOW_QUALITY"
    assert by[("BLOCK", 16)]["score"] is None and by[("BLOCK", 16)]["confidence"] == 0.0
    assert by[("WINDOW", 0)]["frames_missing"] == 1 + 14
    assert by[("BLOCK", 32)]["frames_missing"] == 0
    assert errors == 17


def test_a_session_whose_roi_stream_dies_keeps_getting_signals(kafka_bootstrap, run_id):
    """Face-track stops sending after frame 23 (no end marker either) while the audio goes on to
    the session's end: every block and window is still published, those without a frame
    LOW_QUALITY (they used to be skipped, and the controller heard nothing more)."""
    cfg = make_config(kafka_bootstrap, run_id, windowing={"stream_stall_ms": 1000})
    frames, audio = pulse_media(3.2, FPS, SR, 0.0, seed=21)
    records = [r for r in session_records("s-dies", frames, audio, FPS, SR)
               if r.stream != ROI or r.record["frame_index"] < 24]
    signals, expected, _ = _one_session_through_a_worker(kafka_bootstrap, cfg, "s-dies", frames.shape[0], records)
    by = {(r["kind"], r["frame_start"]): r for r in signals}
    assert {r["signal_id"] for r in signals} == expected
    assert by[("BLOCK", 0)]["label"] == "OK" and by[("BLOCK", 16)]["frames_missing"] == 8
    dead = [r for r in signals if r["frame_start"] >= 24]
    assert len(dead) >= 5  # blocks 32, 48, 64, 80; windows 30, 60
    for r in dead:
        assert r["frames_missing"] == r["frame_end"] - r["frame_start"]
        assert r["label"] == "LOW_QUALITY" and r["score"] is None and r["confidence"] == 0.0


def test_slow_scoring_pauses_and_resumes_input(kafka_bootstrap, run_id):
    # a scorer slower than real time for 6 sessions, a tiny queue: the worker must pause, resume
    # and still deliver everything, never buffering more than the bound plus one poll's jobs
    cfg = make_config(kafka_bootstrap, run_id, max_queued_jobs=4, max_batch_size=2)
    cfg = cfg.model_copy(update={"kafka": cfg.kafka.model_copy(update={"consume_batch": 20})})
    sessions, expected = _pulse_sessions("s", 6, 2.2, seed0=20)
    running = RunningWorker(cfg, FakeScorer(delay_s=0.05))
    max_backlog = 0
    paused_seen = False
    try:
        running.wait_ready()
        produce(kafka_bootstrap, cfg.kafka.topics.audio.name, cfg.kafka.topics.roi.name,
                (rec for _, _, rec in merge_sessions(sessions)))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and running.worker.published < len(expected):
            max_backlog = max(max_backlog, running.worker.stage.backlog())
            paused_seen |= running.worker.consumer.paused
            time.sleep(0.01)
        signals = read_topic(kafka_bootstrap, cfg.kafka.topics.signals.name, "LipSyncSignal",
                             _signals_complete(expected), timeout_s=30)
        counters = dict(running.worker.joiner.counters)
    finally:
        running.close()
    assert paused_seen
    assert not running.worker.consumer.paused
    assert max_backlog <= 4 + 2 * 20
    names = {signal_id(f"s{i}", k, fs): (f"s{i}", k.value, fs) for i in range(6)
             for k, fs, _ in expected_jobs(66, FPS, 16, 1000, 1000)}
    missing = sorted(names[x] for x in expected - {r["signal_id"] for r in signals})
    # a session must never be idle-closed while its events wait behind a pause
    assert not missing, (missing, counters)
    assert counters.get("dropped_after_close", 0) == 0 and counters.get("sessions_closed_idle", 0) == 0
    assert running.worker.metrics.paused_partitions._value.get() == 0


def test_health_endpoints_and_metrics(kafka_bootstrap, run_id):
    import urllib.error
    import urllib.request

    cfg = make_config(kafka_bootstrap, run_id)
    cfg = cfg.model_copy(update={"http": cfg.http.model_copy(update={"port": 0})})
    running = RunningWorker(cfg, FakeScorer())
    try:
        # port 0 in config means "off"; start a server on an ephemeral port by hand for the test
        from worker.observability.health import HealthServer

        server = HealthServer("127.0.0.1", 0, running.worker.metrics.registry, running.worker.healthy,
                              running.worker.ready).start()
        base = f"http://127.0.0.1:{server.port}"
        running.wait_ready()
        assert urllib.request.urlopen(base + "/healthz").status == 200
        assert urllib.request.urlopen(base + "/readyz").status == 200
        body = urllib.request.urlopen(base + "/metrics").read().decode()
        for name in ("sync_scorer_events_in_total", "sync_scorer_consumer_lag", "sync_scorer_batch_size",
                     "sync_scorer_event_to_signal_latency_seconds", "sync_scorer_dlq_total",
                     "sync_scorer_fallbacks_total", "sync_scorer_evictions_total",
                     "sync_scorer_paused_partitions", "sync_scorer_scoring_latency_seconds",
                     "sync_scorer_windows_scored_total"):
            assert name in body, name
        running.stop.set()
        running.thread.join(30)
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(base + "/readyz")
        server.stop()
    finally:
        running.close()


def test_a_second_worker_joining_mid_stream_takes_half_and_nothing_is_lost(kafka_bootstrap, run_id):
    # the rebalance path: the first worker finishes, publishes and commits what it has in on_revoke,
    # forgets the sessions it loses; both members get the same partition numbers of both inputs
    cfg = make_config(kafka_bootstrap, run_id)
    sessions, expected = _pulse_sessions("r", 6, 3.0, seed0=40)
    timeline = [rec for _, _, rec in merge_sessions(sessions)]
    first = RunningWorker(cfg, FakeScorer())
    second = None
    try:
        first.wait_ready()
        feeder = threading.Thread(target=produce, args=(kafka_bootstrap, cfg.kafka.topics.audio.name,
                                                        cfg.kafka.topics.roi.name, timeline, True), daemon=True)
        feeder.start()
        time.sleep(1.2)
        second = RunningWorker(cfg, FakeScorer())
        feeder.join(30)
        signals = read_topic(kafka_bootstrap, cfg.kafka.topics.signals.name, "LipSyncSignal",
                             _signals_complete(expected), timeout_s=60)
        mine = [sorted(w.worker.consumer.assigned) for w in (first, second)]
    finally:
        first.close()
        if second is not None:
            second.close()
    assert {r["signal_id"] for r in signals} == expected
    for assigned in mine:
        parts = {t: {p for tt, p in assigned if tt == t} for t in cfg.kafka.topics.inputs()}
        assert parts[cfg.kafka.topics.audio.name] == parts[cfg.kafka.topics.roi.name] != set()


def test_inputs_with_different_partition_counts_are_refused(kafka_bootstrap, run_id):
    from worker.kafka.consumer import AssignmentError

    cfg = make_config(kafka_bootstrap, run_id)
    # the audio topic exists with 3 partitions; recreate the ROI input under a new name with 2
    roi = f"av.roi-refs.{run_id}.two"
    ensure_topics(kafka_bootstrap, {roi: 2})
    topics = cfg.kafka.topics.model_copy(update={"roi": cfg.kafka.topics.roi.model_copy(update={"name": roi})})
    cfg = cfg.model_copy(update={"kafka": cfg.kafka.model_copy(update={"topics": topics})})
    worker = Worker(cfg, FakeScorer())
    with pytest.raises(AssignmentError, match="not co-partitioned"):
        worker.run(threading.Event())


def _worker_on_backlog(bootstrap: str, cfg: WorkerConfig, expected: set, timeout_s: float) -> tuple[list, Worker]:
    """A worker started on input already in Kafka: the signals it publishes until ``expected``
    are all there (or the timeout), and the worker (stopped) to inspect."""
    running = RunningWorker(cfg, FakeScorer())
    try:
        running.wait_ready()
        signals = read_topic(bootstrap, cfg.kafka.topics.signals.name, "LipSyncSignal",
                             _signals_complete(expected), timeout_s=timeout_s)
    finally:
        running.close()
    return signals, running.worker


def test_a_backlog_read_one_topic_first_loses_nothing(kafka_bootstrap, run_id):
    """Sessions already in Kafka when the worker starts (a restart after downtime): the consumer's
    fetches return the small audio records far faster than the 96x96 ROI records, so the audio
    partitions run seconds of media ahead. The sessions' buffers (4 s here) used to drop their
    oldest audio before the frames for it were read, and the first seconds' signals were lost
    with their offsets committed. The worker now holds the partition that runs ahead in time
    (Kafka timestamps) until the other catches up: every signal arrives, nothing is evicted."""
    cfg = make_config(kafka_bootstrap, run_id, windowing={"max_buffered_ms": 4000})
    sessions, expected = _pulse_sessions("b", 3, 16.0, seed0=40, size=96)
    # produced at once, stamped as if sent live 30 s ago
    produce(kafka_bootstrap, cfg.kafka.topics.audio.name, cfg.kafka.topics.roi.name,
            (rec for _, _, rec in merge_sessions(sessions)), ts_base_ms=int(time.time() * 1000) - 30_000)
    signals, worker = _worker_on_backlog(kafka_bootstrap, cfg, expected, timeout_s=90)
    counters, holds = dict(worker.joiner.counters), worker.consumer.holds_total
    got = {r["signal_id"] for r in signals}
    assert expected <= got, f"{len(expected - got)} of {len(expected)} signals missing; joiner {counters}"
    assert counters.get("evictions_max_buffered", 0) == 0 and counters.get("dropped_late", 0) == 0, counters
    assert holds > 0  # the audio partitions did run ahead and were held: the case was exercised


def test_a_backlog_with_a_quiet_gap_is_read_through_not_held_for_good(kafka_bootstrap, run_id):
    """Two batches of sessions, the second stamped 30 s after the first (a quiet gap in the
    input), already in Kafka when the worker starts. Both topics' partitions jump the gap: each
    used to look ahead of the other's last record, both were held, and the second batch never
    came (0 of its signals). Every signal must arrive."""
    # one partition: both batches share it, so both topics' partitions have the gap; small
    # consume batches: records past the gap are still unread on both when each reaches it
    cfg = make_config(kafka_bootstrap, run_id, windowing={"max_buffered_ms": 4000}, partitions=1,
                      kafka={"consume_batch": 20})
    now_ms = int(time.time() * 1000)
    expected = set()
    for batch, seed0, ts_base in (("g1-", 60, now_ms - 70_000), ("g2-", 70, now_ms - 40_000)):
        sessions, more = _pulse_sessions(batch, 2, 6.0, seed0, size=96)
        expected |= more
        produce(kafka_bootstrap, cfg.kafka.topics.audio.name, cfg.kafka.topics.roi.name,
                (rec for _, _, rec in merge_sessions(sessions)), ts_base_ms=ts_base)
    signals, worker = _worker_on_backlog(kafka_bootstrap, cfg, expected, timeout_s=60)
    held = worker.consumer.held
    got = {r["signal_id"] for r in signals}
    assert expected <= got, f"{len(expected - got)} of {len(expected)} missing; still held: {sorted(held)}"
