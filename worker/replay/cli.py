"""`sync-scorer replay`: plugin of worker.cli."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

DESCRIPTION = """\
Score recorded sessions again. Reads the chosen sessions' AudioChunk and RoiRef records back from
the input topics (every partition, from the start or --since-ms, up to the end offsets they have
when the replay starts), runs them through the worker's own decode, join/window and scoring stages
(in live order: frames and chunks merged by media time), and prints the LipSyncSignals, with the
same deterministic signal_ids as the live ones. Records the worker would dead-letter are reported
with the reason and skipped. Never commits offsets of any consumer group. The chosen sessions'
records are held in memory while they are replayed (about their size on the topics).

--since-ms T replays, of each session with records written at or after T (Kafka timestamps), the
jobs that start at or after the media time of its first such record. The records written in the
windowing.max_buffered_ms before T are read too, to give those jobs the context frames and audio
margin they read from before T; a job whose data starts before the first record read even so is
left out (counted per session). --compare then compares only the jobs of that range.

--bundle replays with another model (what would a new bundle have said?); --compare reads what the
worker published live for those sessions and reports what changed; --to-topic publishes the
replayed signals (Avro) to a topic of your choice (not one of the worker's). Kafka settings and
the scorer's (scoring.*) come from --config / SYNC_SCORER_* / KAFKA_BOOTSTRAP_SERVERS, as for the
worker."""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("replay", help="score recorded sessions again from the input topics",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--session", action="append", default=[], metavar="ID",
                   help="session to replay (repeat for several)")
    p.add_argument("--all-sessions", action="store_true", help="replay every session found in the topics")
    p.add_argument("--since-ms", type=int, default=None,
                   help="replay the jobs from the records written at or after this Unix time (ms) on, "
                        "instead of from the beginning (see above)")
    p.add_argument("--config", help="worker YAML config (topics, Kafka, windowing, refs)")
    p.add_argument("--bundle", help="model bundle directory (default: the config's, else the bundled model)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="override scoring.device")
    p.add_argument("--out", help="write the replayed signals here as JSON lines (default: a table on stdout)")
    p.add_argument("--to-topic", help="also publish the replayed signals (Avro, key = session_id) to this topic")
    p.add_argument("--compare", action="store_true",
                   help="compare with the signals published live (the config's signal topic, or --compare-topic)")
    p.add_argument("--compare-topic", help="topic holding the signals to compare with")
    p.add_argument("--timeout-s", type=float, default=120.0, help="give up reading a topic after this long")
    p.add_argument("--json", action="store_true", help="last line of stdout: one JSON summary object")
    return p


def run(args) -> int:
    from worker.cli import CliError, check_out_file, check_range

    if not args.session and not args.all_sessions:
        raise CliError("name the sessions to replay (--session ID, repeatable) or pass --all-sessions")
    if args.session and args.all_sessions:
        raise CliError("--session and --all-sessions exclude each other")
    check_range("--timeout-s", args.timeout_s, 0, 86400, lo_open=True)
    # (a time past year 9999 overflowed in librdkafka's offsets_for_times: a traceback)
    check_range("--since-ms", args.since_ms, 0, _MAX_SINCE_MS, note=" (ms since the epoch)")
    for flag, value in (("--to-topic", args.to_topic), ("--bundle", args.bundle), ("--compare-topic", args.compare_topic)):
        if value is not None and not value.strip():  # an empty value was taken as none given
            raise CliError(f"{flag} is empty")
    # everything that can be refused before the replay is: a replay that published its signals
    # and then failed on its --out file or compare topic left half its work done (a review)
    if args.out:
        check_out_file("--out", args.out)
    if args.compare_topic and not args.compare:
        args.compare = True
    cfg = _config(args)
    if args.to_topic:
        _check_to_topic(cfg, args)
    scorer = load_replay_scorer(cfg, args.bundle)  # before Kafka: a bundle that cannot load is one line
    from worker.kafka.admin import TopicError, wait_until_reachable
    from worker.replay.source import SourceError, missing_topics, read_published, read_recorded

    kafka = cfg.kafka
    consumer_conf = kafka.client_config("consumer")
    try:
        # quiet: an unreachable cluster is the one line below, not librdkafka's retry log
        wait_until_reachable(kafka.bootstrap_servers, min(args.timeout_s, 15.0),
                             {**{k: v for k, v in kafka.client_config("admin").items() if k != "bootstrap.servers"},
                              "log_level": 0})
    except TopicError as exc:
        raise CliError(str(exc)) from None
    compare_topic = args.compare_topic or kafka.topics.signals.name
    if args.compare:
        try:
            absent = missing_topics(consumer_conf, [compare_topic], args.timeout_s)
        except SourceError as exc:
            raise CliError(str(exc)) from None
        if absent:
            raise CliError(f"topic {compare_topic} (--compare) does not exist on the cluster")
    wanted = set(args.session) if args.session else None
    t0 = time.perf_counter()
    read_at_ms = int(time.time() * 1000)  # the end offsets read to are the ones of about now
    # from --since-ms, read a lookback before it too: the jobs right after it read context frames
    # and audio margin from before it (a live worker holds at most max_buffered_ms of a session)
    read_from = None if args.since_ms is None else max(0, args.since_ms - cfg.windowing.max_buffered_ms)
    try:
        recorded = read_recorded(consumer_conf, {"audio": kafka.topics.audio.name, "roi": kafka.topics.roi.name},
                                 wanted, read_from, args.timeout_s)
    except SourceError as exc:
        raise CliError(str(exc)) from None
    if args.since_ms is not None:  # sessions read only for the lookback: nothing of them to replay
        recorded.by_session = {sid: streams for sid, streams in recorded.by_session.items()
                               if _written_since(streams, args.since_ms)}
    since = "" if args.since_ms is None else f" written at or after --since-ms {args.since_ms}"
    missing = sorted((wanted or set()) - set(recorded.by_session))
    if missing:
        raise CliError(f"no recorded input{since} for session(s) {', '.join(missing)} in "
                       f"{kafka.topics.audio.name} / {kafka.topics.roi.name}")
    if not recorded.by_session:
        raise CliError(f"no sessions{since} in {kafka.topics.audio.name} / {kafka.topics.roi.name}")
    read_s = time.perf_counter() - t0

    from worker.replay.order import session_summary

    results = _replay_all(cfg, args, scorer, recorded, read_at_ms)
    signals = [s for r in results for s in r.signals]
    summary: dict[str, Any] = {
        "scorer": signals[0]["scorer"] if signals else None,
        "records_read": recorded.read,
        "sessions": {r.session_id: {"records": r.records, "bad_records": len(r.bad),
                                    **session_summary(r.signals),
                                    **({} if args.since_ms is None and not r.start_lost else
                                       {"first_frame": r.first_frame, "left_out": len(r.left_out)}),
                                    "start_lost": r.start_lost, "still_open": r.still_open,
                                    "unfinished": len(r.unfinished)}
                     for r in results},
        "signals": len(signals),
        "bad_records": [{"topic": rec.source.topic, "partition": rec.source.partition, "offset": rec.source.offset,
                         "reason": reason} for r in results for rec, reason in r.bad][:50],
        "read_s": round(read_s, 3),
        "replay_s": round(time.perf_counter() - t0 - read_s, 3),
    }
    if args.compare:
        from schemas import DecodeError
        from worker.replay.order import compare_signals, in_replayed_range

        try:
            raw = read_published(consumer_conf, compare_topic, set(recorded.by_session), args.timeout_s)
        except SourceError as exc:
            raise CliError(str(exc)) from None
        codec, published = kafka.codec("LipSyncSignal", compare_topic), []
        for _key, value in raw:
            try:
                published.append(codec.decode(value))
            except DecodeError:
                continue  # not a signal: nothing to compare with
        # only what the replay answers for: the jobs of its range, less those left out
        published = in_replayed_range(published, {r.session_id: r.first_frame for r in results},
                                      [sid for r in results for sid in (*r.left_out, *r.unfinished)],
                                      {r.session_id: r.last_frame for r in results})
        summary["compare"] = {"topic": compare_topic, **compare_signals(signals, published)}
    _write(args, signals)
    if args.to_topic:  # after what could fail: nothing is published by a replay that then fails
        _publish(cfg, args.to_topic, signals)
        summary["published_to"] = args.to_topic
    _print_summary(args, summary)  # last: it says what was published
    return 0


# the end of year 9999 in ms since the epoch
_MAX_SINCE_MS = 253_402_300_799_999


def _written_since(streams: dict, since_ms: int) -> bool:
    return any(rec.timestamp_ms is None or rec.timestamp_ms >= since_ms for recs in streams.values() for rec in recs)


def _check_to_topic(cfg, args) -> None:
    """--to-topic must be a topic of the replay's own: replayed LipSyncSignals written into an input
    topic are records the worker dead-letters (a review wrote 19 into the ROI topic), and in the
    live signal topic consumers would take them for the worker's. The dead-letter topic is the
    worker's too, and a topic --compare reads would compare the replay with itself."""
    from worker.cli import CliError

    t = cfg.kafka.topics
    roles = {t.audio.name: "the audio input topic (kafka.topics.audio)",
             t.roi.name: "the ROI input topic (kafka.topics.roi)",
             t.signals.name: "the live signal topic (kafka.topics.signals)",
             t.dlq.name: "the dead-letter topic (kafka.topics.dlq)"}
    if args.compare_topic:
        roles.setdefault(args.compare_topic, "the topic --compare reads")
    if args.to_topic in roles:
        raise CliError(f"--to-topic {args.to_topic} is {roles[args.to_topic]}: publish replayed signals "
                       f"to a topic of their own")


def _config(args):
    from worker.cli import CliError
    from worker.config import ConfigError, load_config
    from worker.kafka.admin import check_client_config

    try:
        cfg = load_config(args.config)
        check_client_config(cfg.kafka)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    if args.device:
        cfg = cfg.model_copy(update={"scoring": cfg.scoring.model_copy(update={"device": args.device})})
    return cfg


def load_replay_scorer(cfg, bundle: str | None):
    """The scorer a replay runs: ``bundle``, else the config's ``scoring.bundle_dir``, which must
    load (a replay on the heuristic fallback compared it with the live model, and a mistyped path
    said only "MODEL UNAVAILABLE", a review); else the bundled model as the worker loads it. Built
    from ``cfg.scoring`` (max_offset_ms, silence_rms_threshold) either way, as live."""
    from worker.cli import CliError
    from worker.worker_cli import load_worker_scorer, worker_scorer_config

    bundle = bundle or cfg.scoring.bundle_dir
    if not bundle:
        return load_worker_scorer(cfg)
    from worker.scoring.loader import load_scorer
    from worker.scoring.scorer import DeviceError

    try:
        return load_scorer(bundle, worker_scorer_config(cfg), device=cfg.scoring.device, allow_fallback=False)
    except DeviceError as exc:
        raise CliError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - BundleError, OSError, ...: one line, no traceback
        raise CliError(f"cannot load bundle {bundle}: {exc}") from None


def make_replayer(cfg, scorer):
    """A Replayer with the worker's settings: windowing, refs, wire format, batch size, and the
    scoring thread's torch threads (scoring.torch_threads; torch's are per thread)."""
    from worker.app import scorer_sample_rate, set_torch_threads, wall_ms
    from worker.refs import RoiResolver
    from worker.replay.engine import Replayer
    from worker.replay.order import AUDIO, ROI

    device = str(getattr(scorer, "device", "cpu"))
    threads = cfg.scoring.cpu_threads()
    set_torch_threads(threads)
    k = cfg.kafka
    codecs = {AUDIO: k.codec("AudioChunk", k.topics.audio.name), ROI: k.codec("RoiRef", k.topics.roi.name)}
    return Replayer(scorer, cfg.windowing, RoiResolver.from_config(cfg.refs), scorer_sample_rate(scorer),
                    wall_ms, max_batch_size=cfg.scoring.batch_size_for(device), codecs=codecs,
                    thread_init=lambda: set_torch_threads(threads))


def _replay_all(cfg, args, scorer, recorded, read_at_ms: int | None = None) -> list:
    replayer = make_replayer(cfg, scorer)
    try:
        return [replayer.replay(sid, streams.get("audio", []), streams.get("roi", []),
                                since_ms=getattr(args, "since_ms", None),
                                log_trimmed=recorded.start_cut(sid), read_at_ms=read_at_ms)
                for sid, streams in sorted(recorded.by_session.items())]
    finally:
        replayer.close()


def _publish(cfg, topic: str, signals: list[dict]) -> None:
    """Publish the replayed signals to ``topic`` (created like the signal topic if missing); every
    record must be acknowledged, else one error line."""
    from worker.cli import CliError
    from worker.kafka.admin import TopicError, ensure_topics
    from worker.kafka.producer import OutputProducer

    k = cfg.kafka
    try:
        ensure_topics(k.bootstrap_servers, {topic: k.topics.signals.partitions},
                      replication_factor=k.topics.signals.replication_factor,
                      client_config={key: v for key, v in k.client_config("admin").items() if key != "bootstrap.servers"})
    except TopicError as exc:
        raise CliError(str(exc)) from None
    codec = k.codec("LipSyncSignal", topic)
    producer = OutputProducer(k.client_config("producer"))
    failed: list[str] = []
    for s in signals:
        producer.produce(topic, s["session_id"].encode("utf-8"), codec.encode(s),
                         lambda err: failed.append(err) if err else None)
        producer.poll(0)
    left = producer.close(30.0)
    if left or failed:
        raise CliError(f"{left + len(failed)} replayed signals were not delivered to {topic}"
                       + (f": {failed[0]}" if failed else ""))


def _write(args, signals: list[dict]) -> None:
    """The replayed signals: to --out as JSON lines, else (without --json) a table on stdout."""
    from worker.demo import format_row

    if args.out:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)  # as eval-* make theirs
            with open(args.out, "w", encoding="utf-8") as fh:
                fh.writelines(json.dumps(s) + "\n" for s in signals)
        except OSError as exc:
            from worker.cli import CliError

            raise CliError(f"--out {args.out}: {exc.strerror or exc}") from None
    elif not args.json:
        for s in signals:
            print(format_row(s))


def _print_summary(args, summary: dict) -> None:
    for sid, s in summary["sessions"].items():
        off = s["median_window_offset_ms"]
        since = ""
        if s.get("start_lost"):
            since += ", its start no longer in the log (retention)"
        if s.get("first_frame") is not None:
            since += f", from frame {s['first_frame']}"
            if s.get("left_out"):
                since += f" ({s['left_out']} jobs left out: their data begins before the records read)"
        if s.get("unfinished"):
            since += f" ({s['unfinished']} jobs left out: still open when read, the live worker had not finished them)"
        print(f"session {sid}: {s['records']} records, {s['bad_records']} bad, {s['signals']} signals "
              f"{s['kinds']}, labels {s['labels']}, median window offset "
              f"{'n/a' if off is None else f'{off:+.0f} ms'}{since}", file=sys.stderr if args.json else sys.stdout)
    for bad in summary["bad_records"]:  # what the worker dead-letters, and why (at most 50)
        print(f"  bad record {bad['topic']} [{bad['partition']}] @{bad['offset']}: {bad['reason']}",
              file=sys.stderr if args.json else sys.stdout)
    if "compare" in summary:
        c = summary["compare"]
        print(f"compared with {c['topic']}: {c['matched']} matched ({c['identical']} identical), "
              f"{c['only_replayed']} only replayed, {c['only_published']} only published, changed {c['changed']}",
              file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(summary))
