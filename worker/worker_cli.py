"""CLI subcommands of the streaming worker: ``worker``, ``run-demo`` (what ``make run`` calls) and
``loadtest``. Registered by worker/cli.py through ``add_parsers``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from worker.kafka.broker import BOOTSTRAP_ENV


def _cli_error(message: str, code: int = 3) -> Exception:
    from worker.cli import CliError

    return CliError(message, code)


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("worker", help="run the streaming worker (Kafka in, LipSyncSignals out)",
                       description="Consume audio chunks and ROI references, join and window them per "
                                   "session, score blocks and ~1 s windows in micro-batches and publish "
                                   "LipSyncSignals. Config: YAML (--config) < SYNC_SCORER_* env < "
                                   "KAFKA_BOOTSTRAP_SERVERS. SIGTERM/SIGINT shut it down cleanly.")
    _common(p)
    p.add_argument("--create-topics", action="store_true", help="create missing topics with the config's "
                   "partition counts before consuming")
    p.set_defaults(func=run_worker)

    d = sub.add_parser("run-demo", help="local broker + worker + a demo session with known offsets",
                       description="With no KAFKA_BOOTSTRAP_SERVERS: start a local Kafka, the worker, feed "
                                   "synthetic demo sessions with known audio offsets in real time and print "
                                   "the LipSyncSignals as they arrive. With it set: run the worker against "
                                   "that cluster (as `sync-scorer worker --create-topics`).")
    _common(d)
    d.add_argument("--seconds", type=float, default=6.0, help="length of each demo session (s)")
    d.add_argument("--offsets-ms", default="-160,0,120",
                   help="comma-separated known audio offsets, one demo session each (> 0: audio lags)")
    d.add_argument("--fast", action="store_true", help="send the demo as fast as possible, not in real time")
    d.set_defaults(func=run_demo)

    lt = sub.add_parser("loadtest", help="play N synthetic sessions in real time and measure latency",
                        description="Plays N synthetic sessions in real time (30 fps ROI events + audio "
                                    "chunks, known offsets) into the configured cluster (or a local broker "
                                    "when none is configured), starts its own worker process unless "
                                    "--no-worker, and reports event->signal latency p50/p99/max, signals/s, "
                                    "and expected signals missing or duplicated.")
    _common(lt)
    lt.add_argument("--sessions", type=int, help="concurrent sessions (required unless --sweep)")
    lt.add_argument("--seconds", type=float, required=True, help="media length of each session (s)")
    lt.add_argument("--json", action="store_true", help="last line of stdout: one JSON object")
    lt.add_argument("--no-worker", action="store_true", help="do not start a worker (one already consumes "
                    "the configured topics)")
    lt.add_argument("--fps", type=float, default=30.0)
    lt.add_argument("--chunk-ms", type=int, default=20, help="audio chunk length (ms)")
    lt.add_argument("--rgb", action="store_true", help="send RGB24 ROIs (default GRAY8)")
    lt.add_argument("--margin-ms", type=float, default=None,
                    help="the worker's audio search margin (default: the default scorer's)")
    lt.add_argument("--grace-s", type=float, default=15.0, help="wait this long for the last signals")
    lt.add_argument("--worker-log", default=None, help="write the worker's log here")
    lt.add_argument("--sweep", default=None, metavar="N1,N2,...",
                    help="run one load test per session count (overrides --sessions) and report the most "
                         "sessions sustained in real time (0 missing, p99 within --p99-target-ms)")
    lt.add_argument("--p99-target-ms", type=float, default=150.0)
    lt.set_defaults(func=run_loadtest)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config file")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="override scoring.device")
    p.add_argument("--log-format", choices=("json", "console"), help="override log.json_logs")


def _load(args: argparse.Namespace):
    from worker.config import ConfigError, load_config
    from worker.kafka.admin import check_client_config

    try:
        cfg = load_config(args.config)
        check_client_config(cfg.kafka)  # every command here builds Kafka clients from it
    except ConfigError as exc:
        raise _cli_error(str(exc)) from None
    updates: dict[str, Any] = {}
    if getattr(args, "device", None):
        updates["scoring"] = cfg.scoring.model_copy(update={"device": args.device})
    if getattr(args, "log_format", None):
        updates["log"] = cfg.log.model_copy(update={"json_logs": args.log_format == "json"})
    return cfg.model_copy(update=updates) if updates else cfg


def worker_scorer_config(cfg):
    """The ScorerConfig of ``cfg.scoring``: the offsets searched and the silence threshold (every
    scorer the worker's config drives, whichever bundle it loads, is built with this)."""
    from worker.scoring.postprocess import ScorerConfig

    settings: dict[str, Any] = {"min_offset_ms": -cfg.scoring.max_offset_ms,
                                "max_offset_ms": cfg.scoring.max_offset_ms,
                                "narrowband": cfg.scoring.narrowband}
    if cfg.scoring.silence_rms_threshold is not None:
        settings["silence_rms"] = cfg.scoring.silence_rms_threshold
    return ScorerConfig(**settings)


def load_worker_scorer(cfg):
    """The real scorer (the bundled model, or the heuristic fallback when it cannot load)."""
    from worker.scoring.loader import load_scorer

    return load_scorer(cfg.scoring.bundle_dir, worker_scorer_config(cfg), device=cfg.scoring.device)


def ensure_config_topics(cfg) -> None:
    from worker.kafka.admin import TopicError, ensure_topics

    k = cfg.kafka
    try:
        # within the startup timeout, as the worker's own wait for a broker (it waited a fixed 30 s)
        ensure_topics(k.bootstrap_servers, {t.name: t.partitions for t in k.topics.all()},
                      replication_factor=max(t.replication_factor for t in k.topics.all()),
                      client_config={key: v for key, v in k.client_config("admin").items()
                                     if key != "bootstrap.servers"},
                      timeout_s=k.startup_timeout_ms / 1000.0)
    except TopicError as exc:
        raise _cli_error(f"Kafka at {k.bootstrap_servers}: {exc}") from None


def _stop_on_signals(stop: threading.Event, deadline_s: float | None = None,
                     exit_now: Callable[[int], Any] = os._exit) -> Callable[[int, Any], None]:
    """SIGTERM/SIGINT set ``stop`` (the loop ends and the worker drains). With ``deadline_s``,
    a watchdog then ends the process if the drain has not finished by then: a broker that
    stops answering made the final flush and commit wait for as long as it was gone (10 min in an
    audit), past any pod's grace period. Exiting then loses nothing: offsets are committed only
    for published signals, so the next owner reads the rest again."""
    def overdue() -> None:
        from worker.observability.logs import get_logger

        get_logger("worker").error("shutdown took too long: exiting without finishing it",
                                   deadline_s=deadline_s)
        from worker.app import EXIT_UNFINISHED

        exit_now(EXIT_UNFINISHED)

    def handler(signum: int, _frame: Any) -> None:
        if not stop.is_set() and deadline_s is not None:
            timer = threading.Timer(deadline_s, overdue)
            timer.daemon = True
            timer.start()
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return handler


def run_worker(args: argparse.Namespace) -> int:
    from worker.app import Worker
    from worker.observability.logs import configure_logging

    cfg = _load(args)
    configure_logging(cfg.log.level, cfg.log.json_logs)
    if args.create_topics or cfg.kafka.create_topics:
        ensure_config_topics(cfg)
    from worker.app import set_torch_threads

    scorer = load_worker_scorer(cfg)
    set_torch_threads(cfg.scoring.cpu_threads())
    stop = threading.Event()
    _stop_on_signals(stop, cfg.shutdown_timeout_ms / 1000.0)
    try:
        from worker.observability.metrics import watch_gc

        worker = Worker(cfg, scorer)
        worker.freeze_gc = True
        watch_gc(worker.metrics.gc_pause)
        worker.start_http()
        return worker.run(stop)
    except OSError as exc:  # e.g. the HTTP port is taken
        raise _cli_error(f"worker cannot start: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - anything that stops the loop ends the process
        # logged in full (structured) for operators; one line for the terminal; non-zero exit so
        # the orchestrator restarts it (uncommitted input is then re-read: nothing is lost)
        from worker.app import KafkaUnreachable
        from worker.kafka.consumer import AssignmentError
        from worker.observability.logs import get_logger

        if isinstance(exc, KafkaUnreachable):
            get_logger("worker").error("worker cannot start", error=str(exc))
            raise _cli_error(f"worker cannot start: {exc}") from None
        if isinstance(exc, AssignmentError):  # a deployment error, said in full: no traceback
            get_logger("worker").error("worker failed", error=f"{type(exc).__name__}: {exc}")
        else:
            get_logger("worker").exception("worker failed")
        raise _cli_error(f"worker failed: {type(exc).__name__}: {exc}", 1) from None


def run_demo(args: argparse.Namespace) -> int:
    if os.environ.get(BOOTSTRAP_ENV, "").strip():
        args.create_topics = True
        return run_worker(args)
    from worker.cli import check_range
    from worker.demo import DemoOptions, run_local_demo

    try:
        offsets = [float(x) for x in args.offsets_ms.split(",") if x.strip()]
    except ValueError:
        raise _cli_error(f"--offsets-ms must be numbers separated by commas, got {args.offsets_ms!r}") from None
    if not offsets or not all(abs(o) <= 1000 for o in offsets):  # (NaN fails too)
        raise _cli_error("--offsets-ms needs 1+ offsets within +/-1000 ms")
    check_range("--seconds", args.seconds, 2.0, 120.0)
    cfg = _load(args)
    try:
        return run_local_demo(cfg, DemoOptions(seconds=args.seconds, offsets_ms=tuple(offsets),
                                               realtime=not args.fast), out=sys.stdout)
    except _infra_errors() as exc:
        raise _cli_error(f"run-demo: {exc}", 1) from None


def run_loadtest(args: argparse.Namespace) -> int:
    from worker.cli import check_range
    from worker.loadtest import LoadtestOptions, run

    if args.sessions is None and not args.sweep:
        raise _cli_error("loadtest needs --sessions N (or --sweep N1,N2,...)", 2)
    if args.sessions is None:
        args.sessions = 1
    # checked before a broker or worker starts
    check_range("--sessions", args.sessions, 1, 1000)
    check_range("--seconds", args.seconds, 1.0, 3600.0)
    check_range("--chunk-ms", args.chunk_ms, 5, 200)
    check_range("--fps", args.fps, 10.0, 60.0)
    check_range("--grace-s", args.grace_s, 0.0, 600.0)
    check_range("--margin-ms", args.margin_ms, 0.0, 2000.0)
    check_range("--p99-target-ms", args.p99_target_ms, 0.0, 60_000.0, lo_open=True)
    counts: list[int] = []
    if args.sweep:
        try:
            counts = [int(x) for x in args.sweep.split(",") if x.strip()]
        except ValueError:
            raise _cli_error(f"--sweep takes session counts separated by commas, got {args.sweep!r}") from None
        if not counts:
            raise _cli_error("--sweep names no session count")
        for n in counts:
            check_range("--sweep session count", n, 1, 1000)
    cfg = _load(args)
    opts = LoadtestOptions(sessions=args.sessions, seconds=args.seconds, fps=args.fps, chunk_ms=args.chunk_ms,
                           gray=not args.rgb, start_worker=not args.no_worker, margin_ms=args.margin_ms,
                           grace_s=args.grace_s, worker_log=args.worker_log, config_path=args.config,
                           json_out=args.json)
    try:
        if counts:
            from worker.loadtest import sweep

            return sweep(cfg, opts, counts, args.p99_target_ms, out=sys.stdout)
        return run(cfg, opts, out=sys.stdout)
    except _infra_errors() as exc:
        raise _cli_error(f"loadtest: {exc}", 1) from None


def _infra_errors() -> tuple[type[BaseException], ...]:
    """Failures of the environment (no broker, topics, a worker that would not start)."""
    from worker.kafka.clients import kafka_errors

    return (*kafka_errors(), RuntimeError)
