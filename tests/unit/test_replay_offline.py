"""Replay without a broker: live order of recorded input, the worker's stages driven by recorded
records (a deterministic stand-in scorer), bad records, comparison with published signals, CLI errors."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

from schemas import AvroCodec
from tests.support.fake_scorer import FakeScorer, pulse_media
from worker.config import WindowingConfig
from worker.loadgen import AUDIO, ROI, expected_jobs, session_records
from worker.publish import signal_id
from worker.refs import RoiResolver
from worker.replay.engine import Replayer
from worker.replay.order import Recorded, compare_signals, due_ms, live_order, session_summary
from worker.windowing.events import Source

CODECS = {AUDIO: AvroCodec("AudioChunk"), ROI: AvroCodec("RoiRef")}
FPS, RATE = 25.0, 16_000


def recorded(session_id: str, offset_ms: float, seconds: float = 4.0, seed: int = 3, end_markers: bool = True,
             ts_base_ms: int | None = None) -> dict[str, list[Recorded]]:
    """A session as Kafka would keep it: each stream's records in offset order on partition 0
    (with ``ts_base_ms``, Kafka timestamps as a live source sending in real time would give)."""
    frames, audio = pulse_media(seconds, FPS, RATE, offset_ms, seed)
    out: dict[str, list[Recorded]] = {AUDIO: [], ROI: []}
    for rec in session_records(session_id, frames, audio, FPS, RATE, chunk_ms=40, end_markers=end_markers):
        topic = "a" if rec.stream == AUDIO else "r"
        n = len(out[rec.stream])
        ts = None if ts_base_ms is None else ts_base_ms + round(rec.due_ms)
        out[rec.stream].append(Recorded(rec.stream, session_id.encode(), CODECS[rec.stream].encode(rec.record),
                                        Source(topic, 0, n), ts))
    return out


def replayer(scorer=None) -> Replayer:
    return Replayer(scorer or FakeScorer(), WindowingConfig(), RoiResolver(), RATE, clock_ms=lambda: 1_000)


def test_due_times_follow_the_media_timeline():
    assert due_ms(ROI, {"frame_index": 24, "fps": 25.0}) == pytest.approx(1000.0)
    chunk = {"start_sample": 16_000, "sample_rate": 16_000, "channels": 2, "encoding": "PCM_S16LE",
             "data": b"\0" * (640 * 4)}
    assert due_ms(AUDIO, chunk) == pytest.approx(1040.0)  # 640 stereo samples after 1 s
    assert due_ms(AUDIO, {**chunk, "encoding": "F32LE"}) == pytest.approx(1020.0)
    assert due_ms(ROI, {"end_of_session": True, "frame_index": 3, "fps": 25.0}) == math.inf


def test_live_order_merges_by_due_time_and_keeps_each_inputs_own_order():
    audio = [(40.0, "a0"), (80.0, "a1"), (60.0, "a2-late"), (120.0, "a3")]
    roi = [(40.0, "f0"), (80.0, "f1"), (120.0, "f2"), (math.inf, "f-end")]
    got = live_order(audio, roi)
    assert got.index("a1") < got.index("a2-late") < got.index("a3")  # Kafka's order within a topic
    assert got[:2] == ["f0", "a0"]  # at equal due time the frame goes first
    assert got[-1] == "f-end" and sorted(got) == sorted([x for _, x in audio + roi])


def test_replay_emits_every_signal_of_the_session_once_with_its_id_and_offset():
    rec = recorded("s-lags", 120.0)
    rp = replayer()
    try:
        out = rp.replay("s-lags", rec[AUDIO], rec[ROI])
    finally:
        rp.close()
    want = {signal_id("s-lags", k, fs) for k, fs, _ in expected_jobs(100, FPS, 16, 1000, 1000)}
    assert {s["signal_id"] for s in out.signals} == want and len(out.signals) == len(want)
    assert not out.bad and out.records == len(rec[AUDIO]) + len(rec[ROI])
    windows = [s for s in out.signals if s["kind"] == "WINDOW"]
    assert all(s["offset_ms"] == pytest.approx(120.0) and s["direction"] == "AUDIO_LAGS" for s in windows)
    assert session_summary(out.signals)["median_window_offset_ms"] == pytest.approx(120.0)
    assert [s["frame_start"] for s in out.signals] == sorted(s["frame_start"] for s in out.signals)


def test_replay_of_a_session_cut_short_and_of_one_replayed_twice_match():
    full, cut = recorded("s1", -80.0), recorded("s1", -80.0, end_markers=False)
    rp = replayer()
    try:
        a = rp.replay("s1", full[AUDIO], full[ROI]).signals
        # without end markers the session ends as the worker ends it: idle, flushed
        b = replayer().replay("s1", cut[AUDIO], cut[ROI]).signals
    finally:
        rp.close()
    cmp = compare_signals(b, a)
    assert cmp["matched"] == len(a) > 0 and cmp["identical"] == len(a), cmp
    assert cmp["only_replayed"] == cmp["only_published"] == 0


def test_bad_records_are_reported_with_the_reason_and_the_rest_is_scored():
    rec = recorded("s-bad", 40.0)
    garbage = Recorded(ROI, b"s-bad", b"\x00\xffnot avro", Source("r", 0, 999))
    wrong_key = Recorded(AUDIO, b"someone-else", rec[AUDIO][3].value, Source("a", 0, 998))
    tombstone = Recorded(AUDIO, b"s-bad", None, Source("a", 0, 997))
    rp = replayer()
    try:
        out = rp.replay("s-bad", rec[AUDIO] + [wrong_key, tombstone], rec[ROI][:10] + [garbage] + rec[ROI][10:])
    finally:
        rp.close()
    reasons = {r.source.offset: reason for r, reason in out.bad}
    assert set(reasons) == {997, 998, 999}
    assert reasons[999].startswith("decode:") and "key" in reasons[998]
    # the worker's dead-letter reason for a record without a value (the replay had its own words)
    assert reasons[997] == "decode: syncscorer.v1.AudioChunk: no value (null record)"
    assert len(out.signals) == len(expected_jobs(100, FPS, 16, 1000, 1000))


def test_compare_counts_what_changed():
    base = {"session_id": "s", "kind": "WINDOW", "frame_start": 0, "score": 0.8, "offset_ms": 40.0,
            "direction": "AUDIO_LAGS", "label": "OK", "scorer": "m@1"}
    live = [dict(base, signal_id="a"), dict(base, signal_id="b"), dict(base, signal_id="c"),
            dict(base, signal_id="gone"), dict(base, signal_id="a", score=0.1)]  # a repeated: the last counts
    again = [dict(base, signal_id="a", score=0.1), dict(base, signal_id="b", offset_ms=0.0, direction="IN_SYNC"),
             dict(base, signal_id="c", score=None, offset_ms=None, label="SILENCE", direction="UNKNOWN"),
             dict(base, signal_id="new")]
    c = compare_signals(again, live)
    assert (c["matched"], c["identical"], c["only_replayed"], c["only_published"]) == (3, 1, 1, 1)
    assert c["changed"] == {"direction": 2, "label": 1, "offset": 1, "score": 0, "null": 1}
    assert c["offset_abs_diff_max_ms"] == 40.0 and c["score_abs_diff_max"] == 0.0
    assert {e["signal_id"] for e in c["examples"]} == {"b", "c"}


def _cli(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "worker.cli", "replay", *args], capture_output=True, text=True,
                          timeout=120, env=env, check=False)


def test_cli_errors_are_one_line():
    p = _cli()
    assert p.returncode == 3 and p.stderr.strip().count("\n") == 0 and "--session" in p.stderr
    p = _cli("--session", "x", "--all-sessions")
    assert p.returncode == 3 and "exclude" in p.stderr
    p = _cli("--session", "x", "--since-ms", "-5")  # was librdkafka's "API version not supported"
    assert p.returncode == 3 and "--since-ms must be within 0..253402300799999" in p.stderr
    p = _cli("--session", "x", "--since-ms", "99999999999999999999")  # was OverflowError, a traceback
    assert p.returncode == 3 and p.stderr.count("\n") == 1 and "--since-ms must be within" in p.stderr
    for flag in ("--to-topic", "--bundle", "--compare-topic"):  # an empty value was taken as none given
        p = _cli("--session", "x", flag, "")
        assert p.returncode == 3 and p.stderr.count("\n") == 1 and f"{flag} is empty" in p.stderr, p.stderr
    p = _cli("--session", "x", "--timeout-s", "1", env_extra={"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"})
    assert p.returncode == 3 and p.stderr.strip().count("\n") == 0 and "did not answer" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_replay_reads_the_clusters_wire_format():
    """With the Confluent framing (schema registry) the replay decodes with the worker's codecs."""
    from worker.config import KafkaConfig

    kafka = KafkaConfig(wire_format="confluent", schema_registry_url="mock://replay-test")
    codecs = {AUDIO: kafka.codec("AudioChunk", "a"), ROI: kafka.codec("RoiRef", "r")}
    plain = recorded("s-wire", 80.0)
    framed = {stream: [Recorded(r.stream, r.key, codecs[stream].encode(CODECS[stream].decode(r.value)), r.source)
                       for r in recs] for stream, recs in plain.items()}
    assert framed[ROI][0].value[0] == 0  # the Confluent magic byte
    rp = Replayer(FakeScorer(), WindowingConfig(), RoiResolver(), RATE, clock_ms=lambda: 1_000, codecs=codecs)
    try:
        out = rp.replay("s-wire", framed[AUDIO], framed[ROI])
    finally:
        rp.close()
    assert not out.bad and len(out.signals) == len(expected_jobs(100, FPS, 16, 1000, 1000))
    assert all(s["offset_ms"] == pytest.approx(80.0) for s in out.signals if s["kind"] == "WINDOW")


def test_the_table_lists_each_bad_record_with_its_reason(capsys):
    import argparse

    from worker.replay.cli import _print_summary, _write

    summary = {"sessions": {"s": {"records": 3, "bad_records": 1, "signals": 0, "kinds": {}, "labels": {},
                                  "median_window_offset_ms": None}},
               "bad_records": [{"topic": "av.roi-refs", "partition": 2, "offset": 41, "reason": "decode: truncated"}]}
    _write(argparse.Namespace(out=None, json=False), [])
    _print_summary(argparse.Namespace(out=None, json=False), summary)
    out = capsys.readouterr().out
    assert "1 bad" in out and "bad record av.roi-refs [2] @41: decode: truncated" in out


@pytest.mark.parametrize("topic, role, extra", [
    ("av.roi-refs", "the ROI input topic", ()),
    ("av.audio-chunks", "the audio input topic", ()),
    ("av.lipsync-signals", "the live signal topic", ()),
    ("av.lipsync-dlq", "the dead-letter topic", ()),
    ("mine.in", "the ROI input topic", ()),  # the config's names, not the defaults
    ("cmp", "the topic --compare reads", ("--compare-topic", "cmp")),
])
def test_to_topic_refuses_the_workers_own_topics(topic, role, extra):
    """--to-topic took the input topics and the live signal topic: a review wrote 19 LipSyncSignals
    into the ROI input topic (each one a record the worker then dead-letters)."""
    p = _cli("--session", "x", "--to-topic", topic, *extra, "--timeout-s", "1",
             env_extra={"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", "SYNC_SCORER_KAFKA__TOPICS__ROI__NAME":
                        "mine.in" if topic == "mine.in" else "av.roi-refs"})
    assert p.returncode == 3 and p.stderr.strip().count("\n") == 0, p.stderr
    assert f"--to-topic {topic} is {role}" in p.stderr, p.stderr


def test_what_can_be_refused_is_refused_before_kafka_is_asked(tmp_path):
    """A replay published its signals and only then failed on its --out file (a review), and a
    mistyped scoring.bundle_dir replayed on the heuristic scorer with one log line: both are one
    error line now, before the cluster (unreachable here) is asked anything."""
    unreachable = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"}
    p = _cli("--session", "x", "--out", str(tmp_path), "--timeout-s", "1", env_extra=unreachable)
    assert p.returncode == 3 and p.stderr.count("\n") == 1 and "not a file that can be written" in p.stderr, p.stderr
    (tmp_path / "f").write_text("x")
    p = _cli("--session", "x", "--out", str(tmp_path / "f" / "x.jsonl"), "--timeout-s", "1", env_extra=unreachable)
    assert p.returncode == 3 and "is not a directory" in p.stderr, p.stderr
    p = _cli("--session", "x", "--timeout-s", "1",
             env_extra={**unreachable, "SYNC_SCORER_SCORING__BUNDLE_DIR": str(tmp_path / "no-bundle")})
    assert p.returncode == 3 and p.stderr.count("\n") == 1 and "cannot load bundle" in p.stderr, p.stderr


def _replayed(session_id: str, audio, roi, **kwargs):
    rp = replayer(FakeScorer(search_ms=200.0))  # one each: a join remembers the sessions it closed
    try:
        return rp.replay(session_id, audio, roi, **kwargs)
    finally:
        rp.close()


def test_a_session_whose_start_retention_removed_leaves_out_the_jobs_that_read_it():
    """Retention removed a session's first 1.2 s: the replay scored the jobs after it on zero-filled
    audio (360 ms missing) and --compare charged the change to the bundle (a review). With the log
    trimmed, a job whose data began in the removed records is left out; the rest read as whole."""
    from worker.replay.order import in_replayed_range

    base = 1_700_000_000_000
    rec = recorded("s-ret", 120.0, ts_base_ms=base)
    kept = {st: [r for r in recs if r.timestamp_ms >= base + 1200] for st, recs in rec.items()}
    whole = _replayed("s-ret", rec[AUDIO], rec[ROI]).signals
    cut = _replayed("s-ret", kept[AUDIO], kept[ROI], log_trimmed=True)
    assert cut.start_lost and cut.first_frame == 29 and cut.left_out
    assert all(s["frame_start"] >= 29 for s in cut.signals) and cut.signals
    cmp = compare_signals(cut.signals, in_replayed_range(whole, {"s-ret": cut.first_frame}, cut.left_out))
    assert cmp["matched"] == len(cut.signals) == cmp["identical"], cmp
    assert cmp["only_published"] == cmp["only_replayed"] == 0
    # a log that was never trimmed: a session whose records begin past 0 is read as it is (the
    # live worker read it so too)
    as_is = _replayed("s-ret", kept[AUDIO], kept[ROI])
    assert not as_is.start_lost and not as_is.left_out and len(as_is.signals) > len(cut.signals)


def test_a_session_still_open_when_read_leaves_out_what_the_live_worker_had_not_finished():
    """A session read while still live (no end markers yet) was flushed as if it had gone idle: its
    last jobs came out on the audio read so far, and --compare reported them changed when the live
    worker published them whole later (a review). Now they are left out, counted as unfinished."""
    base = 1_700_000_000_000
    rec = recorded("s-open", 40.0, ts_base_ms=base, end_markers=False)
    newest = max(r.timestamp_ms for recs in rec.values() for r in recs)
    idle_ms = WindowingConfig().idle_timeout_ms
    live = _replayed("s-open", rec[AUDIO], rec[ROI], read_at_ms=newest + 50)
    gone = _replayed("s-open", rec[AUDIO], rec[ROI], read_at_ms=newest + idle_ms + 1000)
    assert live.still_open and live.unfinished and not gone.still_open and not gone.unfinished
    assert gone.signals == _replayed("s-open", rec[AUDIO], rec[ROI]).signals  # idle by then: flushed
    done = {s["signal_id"]: s for s in gone.signals}
    assert {s["signal_id"] for s in live.signals} | set(live.unfinished) == set(done)
    assert all(done[s["signal_id"]] == s for s in live.signals)
    # with end markers the session is over whenever it is read
    ended = recorded("s-open", 40.0, ts_base_ms=base)
    assert not _replayed("s-open", ended[AUDIO], ended[ROI], read_at_ms=newest + 50).still_open


def test_compare_of_a_session_still_open_leaves_out_what_the_live_worker_published_after_the_read():
    """--compare reads the signal topic after the replay, when the live worker has published the
    session's later jobs too: they were counted 'only published' (a review: 15 of them)."""
    from worker.replay.order import in_replayed_range

    base = 1_700_000_000_000
    rec = recorded("s-later", 40.0, seconds=6.0, ts_base_ms=base, end_markers=False)
    whole = _replayed("s-later", rec[AUDIO], rec[ROI]).signals  # what the live worker publishes in the end
    read = {st: [r for r in recs if r.timestamp_ms <= base + 3000] for st, recs in rec.items()}
    part = _replayed("s-later", read[AUDIO], read[ROI], read_at_ms=base + 3050)
    assert part.still_open and part.last_frame is not None
    published = in_replayed_range(whole, {"s-later": part.first_frame}, part.unfinished,
                                  {"s-later": part.last_frame})
    cmp = compare_signals(part.signals, published)
    assert cmp["only_published"] == 0 and cmp["only_replayed"] == 0 and cmp["matched"] == len(part.signals) > 0, cmp
    # a producer clock a little ahead of the reader's is skew: still open (a review)
    assert _replayed("s-later", read[AUDIO], read[ROI], read_at_ms=base + 2500).still_open
    # the newest record an idle timeout past the read either way: not open, flushed as cut short
    idle_ms = WindowingConfig().idle_timeout_ms
    ahead = _replayed("s-later", read[AUDIO], read[ROI], read_at_ms=base + 3000 - idle_ms - 100)
    assert not ahead.still_open and not ahead.unfinished


def test_the_still_open_bound_is_per_kind():
    """A review: one last-job bound for both kinds let a WINDOW the live worker published after
    the read (its frames not all read) count as 'only published' under the BLOCKs' later bound."""
    from worker.replay.order import in_replayed_range

    published = [{"session_id": "s", "kind": "BLOCK", "frame_start": 80, "signal_id": "b80"},
                 {"session_id": "s", "kind": "WINDOW", "frame_start": 50, "signal_id": "w50"},
                 {"session_id": "s", "kind": "WINDOW", "frame_start": 75, "signal_id": "w75"}]
    kept = in_replayed_range(published, {"s": 0}, (), {"s": {"BLOCK": 80, "WINDOW": 50}})
    assert [p["signal_id"] for p in kept] == ["b80", "w50"]


def test_only_a_session_whose_records_begin_where_the_log_was_cut_has_lost_its_start():
    """After retention every partition's log begins past offset 0: a session that began later
    (its first frame index not 0, say, ROIs from when a face was first found) was taken as cut
    too, its first jobs left out (a review)."""
    from worker.replay.source import CUT_SLACK_MS, RecordedSessions

    def rec(sid: str, ts: int | None, offset: int) -> Recorded:
        return Recorded(ROI, sid.encode(), b"", Source("r", 0, offset), ts)

    out = RecordedSessions(trimmed={("r", 0)}, first_ts_ms={("r", 0): 5_000})
    out.add(rec("cut", 5_000 + 40, 101), "cut")  # streaming when the log was cut
    out.add(rec("later", 5_000 + CUT_SLACK_MS + 1, 160), "later")  # began after the cut
    out.add(rec("unstamped", None, 170), "unstamped")  # no timestamp: it may have been cut
    assert [out.start_cut(sid) for sid in ("cut", "later", "unstamped")] == [True, False, True]
    assert not RecordedSessions(by_session=out.by_session).start_cut("cut")  # a log never trimmed


def _one_session_recorded(session_id: str = "s-cfg"):
    from worker.replay.source import RecordedSessions

    rec = recorded(session_id, 80.0, seconds=2.0)
    out = RecordedSessions()
    for stream in (AUDIO, ROI):
        for r in rec[stream]:
            out.add(r, session_id)
    return out


def _replay_cfg(monkeypatch, **env: str):
    from worker.config import load_config

    for key in list(os.environ):
        if key.startswith("SYNC_SCORER_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_config()


def test_replay_with_a_bundle_searches_the_configs_offsets_and_silence_threshold(monkeypatch):
    """`replay --bundle DIR` loaded the bundle with the default +/-200 ms and silence threshold,
    whatever scoring.max_offset_ms said: with the live bundle and max_offset_ms 320, --compare found
    12 of 60 signals identical (a review). Without --bundle the config's were used."""
    import argparse

    from worker.replay.cli import _replay_all, load_replay_scorer
    from worker.scoring import loader

    cfg = _replay_cfg(monkeypatch, SYNC_SCORER_SCORING__MAX_OFFSET_MS="320",
                         SYNC_SCORER_SCORING__SILENCE_RMS_THRESHOLD="0.02", SYNC_SCORER_SCORING__DEVICE="cpu")
    seen = []

    def fake_load(bundle_dir=None, config=None, device="auto", allow_fallback=True):
        seen.append((str(bundle_dir), config, allow_fallback))
        return FakeScorer()

    monkeypatch.setattr(loader, "load_scorer", fake_load)
    for bundle in ("/models/new-bundle", None):
        out = _replay_all(cfg, argparse.Namespace(bundle=bundle), load_replay_scorer(cfg, bundle),
                          _one_session_recorded())
        assert out and out[0].signals
    (named, named_cfg, fallback), (_, own_cfg, _) = seen
    assert named == "/models/new-bundle" and not fallback  # a bundle the user named must load
    assert (named_cfg.min_offset_ms, named_cfg.max_offset_ms, named_cfg.silence_rms) == (-320.0, 320.0, 0.02)
    assert named_cfg == own_cfg


def test_the_real_bundle_loaded_by_replay_takes_the_configs_search(monkeypatch):
    from model_store.bundle import DEFAULT_BUNDLE_DIR
    from worker.replay.cli import load_replay_scorer

    cfg = _replay_cfg(monkeypatch, SYNC_SCORER_SCORING__MAX_OFFSET_MS="320", SYNC_SCORER_SCORING__DEVICE="cpu")
    scorer = load_replay_scorer(cfg, str(DEFAULT_BUNDLE_DIR))
    assert (scorer.config.min_offset_ms, scorer.config.max_offset_ms) == (-320.0, 320.0)


class _ThreadCountingScorer(FakeScorer):
    def __init__(self) -> None:
        super().__init__()
        self.torch_threads: set[int] = set()

    def score_batch(self, requests, streams=None):
        import torch

        self.torch_threads.add(torch.get_num_threads())
        return super().score_batch(requests, streams)


def test_replay_scores_with_the_configs_torch_threads(monkeypatch):
    """The replay's scoring thread ran with torch's default thread count, ignoring
    scoring.torch_threads (the worker sets it on each scoring thread: oversubscribed OpenMP threads
    are several times slower here)."""
    import argparse

    import torch

    from worker import worker_cli
    from worker.replay.cli import _replay_all

    cfg = _replay_cfg(monkeypatch, SYNC_SCORER_SCORING__TORCH_THREADS="3")
    from worker.replay.cli import load_replay_scorer

    scorer = _ThreadCountingScorer()
    monkeypatch.setattr(worker_cli, "load_worker_scorer", lambda _cfg: scorer)
    before = torch.get_num_threads()
    try:
        out = _replay_all(cfg, argparse.Namespace(bundle=None), load_replay_scorer(cfg, None),
                          _one_session_recorded())
    finally:
        torch.set_num_threads(before)
    assert out[0].signals and scorer.torch_threads == {3}


def test_a_replay_from_a_time_scores_the_jobs_after_it_as_the_whole_session_did():
    """--since-ms mid-session: the jobs right after it were scored without the audio margin and
    context frames from before it, and --compare counted the published signals from before it as
    'only published' (a review: 25 of them, and 5 changed scores). Now the jobs from the session's
    first record written since then are replayed, given the records read before it; a job whose
    data begins before the first record read is left out, and compare sees only the range."""
    from worker.replay.order import in_replayed_range

    base = 1_700_000_000_000
    rec = recorded("s-mid", 120.0, ts_base_ms=base)
    since = base + 2000
    # only the records from just before `since` on: the first jobs' audio margin is not there
    late = {st: [r for r in recs if r.timestamp_ms >= since - 100] for st, recs in rec.items()}
    runs = []
    for audio, roi, from_ms in ((rec[AUDIO], rec[ROI], None), (rec[AUDIO], rec[ROI], since),
                                (late[AUDIO], late[ROI], since)):
        rp = replayer(FakeScorer(search_ms=200.0))  # one each: a join remembers the sessions it closed
        try:
            runs.append(rp.replay("s-mid", audio, roi, since_ms=from_ms))
        finally:
            rp.close()
    whole, part, short = runs[0].signals, runs[1], runs[2]
    # the first record written at or after `since` is the chunk ending at 2000 ms: it starts at 1960
    assert part.first_frame == 49 and not part.left_out
    want = [s for s in whole if s["frame_start"] >= 49]
    assert {s["signal_id"] for s in part.signals} == {s["signal_id"] for s in want} and len(want) >= 4
    cmp = compare_signals(part.signals, in_replayed_range(whole, {"s-mid": part.first_frame}, part.left_out))
    assert cmp["matched"] == len(want) == cmp["identical"] and cmp["only_published"] == cmp["only_replayed"] == 0
    # 240 ms of margin before a job starting at frame 64 (2560 ms) reach back to 2320: read; the one
    # at 50 (window, 2000 ms) needs 1760: not read, so it is left out rather than scored on zeros
    assert short.first_frame == 49 and short.left_out == [signal_id("s-mid", "WINDOW", 50)]
    kept = in_replayed_range(whole, {"s-mid": short.first_frame}, short.left_out)
    cmp = compare_signals(short.signals, kept)
    assert cmp["matched"] == len(kept) == len(want) - 1 == cmp["identical"] and cmp["only_published"] == 0


def test_a_session_that_really_paused_replays_as_the_worker_read_it():
    """A pause longer than the buffer bound (30 s) in both streams, told from a corrupt jump by the
    producer's clock (Kafka timestamps here): replay reads it with the clock as the worker does, so
    no record after the pause is refused."""
    pause_ms, fps = 30_000, FPS
    rec = recorded("s-pause", 0.0, seconds=4.0, ts_base_ms=1_700_000_000_000)
    moved: dict[str, list[Recorded]] = {}
    for stream, recs in rec.items():
        moved[stream] = []
        for r in recs:
            fields = CODECS[stream].decode(r.value)
            if due_ms(stream, fields) > 2000.0 and not fields.get("end_of_session"):
                if stream == AUDIO:
                    fields["start_sample"] += pause_ms * fields["sample_rate"] // 1000
                else:
                    fields["frame_index"] += round(pause_ms * fps / 1000)
                r = Recorded(r.stream, r.key, CODECS[stream].encode(fields), r.source, r.timestamp_ms + pause_ms)
            moved[stream].append(r)
    assert WindowingConfig().max_buffered_ms < pause_ms
    # replayed later than it was recorded, by the wall clock (a stamp ahead of it proves nothing)
    rp = Replayer(FakeScorer(), WindowingConfig(), RoiResolver(), RATE, clock_ms=lambda: 1_800_000_000_000)
    try:
        out = rp.replay("s-pause", moved[AUDIO], moved[ROI])
    finally:
        rp.close()
    assert [reason for _, reason in out.bad] == []
    assert {s["kind"] for s in out.signals} == {"BLOCK", "WINDOW"}
