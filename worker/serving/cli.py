"""`sync-scorer serve`: plugin of worker.cli."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
The scorer over HTTP and gRPC, for callers that want a sampled score without Kafka (the provider
bridge). Both transports take the Kafka contract's fields (RoiRef inline pixels, AudioChunk audio)
and score with the worker's own code: a whole clip, one BLOCK (8..16 frames) or one WINDOW
(0.8..1.2 s). One scoring at a time.

HTTP (JSON, frames and audio base64):
  GET  /healthz, /v1/info, /metrics (Prometheus, both transports)
  POST /v1/score, /v1/score-block, /v1/score-window
gRPC: service syncscorer.v1.SyncScorer (schemas/sync_scorer.proto):
  ScoreBlock, ScoreWindow, ScoreClip, Info"""


# the shutdown's grace for requests in flight (HTTP and gRPC), then up to CANCEL_WAIT_S (5 s) for
# the stopped ones to answer: 25 s in all, within Kubernetes' default termination grace (30 s)
DEFAULT_GRACE_S = 20.0


# the bytes of requests being read, decoded or waiting for the scorer, in --max-body-mb: past it a
# request is answered 503 (Retry-After) / RESOURCE_EXHAUSTED instead of decoded (memory: each
# takes about twice its body while decoded, once while it waits)
PENDING_BODIES = 3

MAX_BODY_MB = 1024  # gRPC's message limit is an int32 of bytes: 2 GiB
MAX_REQUEST_SECONDS = 24 * 3600

def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("serve", help="score clips, blocks and windows over HTTP and gRPC",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080; 0 = any free port)")
    p.add_argument("--grpc-port", type=int, default=50051,
                   help="gRPC port (default 50051; 0 = any free port; -1 = no gRPC)")
    p.add_argument("--bundle", help="model bundle directory (default: the bundled model)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--max-body-mb", type=float, default=64.0, help="largest request body (default 64 MB)")
    p.add_argument("--max-seconds", type=float, default=120.0, help="longest clip per request (default 120 s)")
    p.add_argument("--shutdown-grace-s", type=float, default=DEFAULT_GRACE_S,
                   help=f"on SIGTERM or SIGINT, how long requests in flight have to finish before they "
                        f"are stopped (HTTP 503, gRPC UNAVAILABLE); a second signal stops them at once; "
                        f"default {DEFAULT_GRACE_S:g} s, within Kubernetes' default 30 s termination grace")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="CPU threads for the scorer (default: as the worker, cores - 1, 1..4: "
                        "oversubscribed OpenMP threads are dramatically slower than one)")
    from worker.cli import add_search_args

    add_search_args(p)
    return p


def run(args) -> int:
    import logging
    import signal
    import sys
    import threading

    from worker.cli import CliError, check_range, load_scorer_for_command
    from worker.serving.http import MAX_CONNECTIONS, make_server
    from worker.serving.service import ScoreService

    check_range("--port", args.port, 0, 65535)
    check_range("--grpc-port", args.grpc_port, -1, 65535, note=" (-1: no gRPC)")
    # within bounds, NaN failing too (NaN passed "<= 0" and turned the length limit off; inf and
    # 1e8 MB crashed converting to bytes, a review)
    check_range("--max-body-mb", args.max_body_mb, 0, MAX_BODY_MB, lo_open=True)
    check_range("--max-seconds", args.max_seconds, 0, MAX_REQUEST_SECONDS, lo_open=True)
    check_range("--shutdown-grace-s", args.shutdown_grace_s, 0, 3600)
    check_range("--torch-threads", args.torch_threads, 1, 256)
    fd_limit = _raise_fd_limit()
    # a signal while the model loads (seconds) or the ports open stops serve, exit 0 (the default
    # action killed it, -15, before): until serve's own handlers are in, it raises this
    server = grpc_server = None

    def stop_during_start(signum, _frame) -> None:
        raise _StoppedDuringStart(signum)

    previous = {sig: signal.signal(sig, stop_during_start) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        scorer = load_scorer_for_command(args.bundle, args.device, max_offset_ms=args.max_offset_ms,
                                         narrowband=not args.no_narrowband)
        threads = _set_torch_threads(args.torch_threads)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
        max_bytes = int(args.max_body_mb * (1 << 20))
        # requests being read, decoded or waiting for the scorer: PENDING_BODIES bodies' worth at most
        service = ScoreService(scorer, args.max_seconds, max_pending_bytes=PENDING_BODIES * max_bytes)
        try:
            # a connection is a descriptor: the cap leaves half of them to gRPC, the model and logs
            server = make_server(service, args.host, args.port, max_bytes,
                                 max_connections=max(16, min(MAX_CONNECTIONS, fd_limit // 2)))
        except OSError as exc:
            raise CliError(f"cannot listen on {args.host}:{args.port}: {exc}") from None
        server_stopping = threading.Event()  # set once serve stops: a stopped gRPC call is the shutdown's
        where = ""
        if args.grpc_port >= 0:
            from worker.serving.grpc_server import make_grpc_server

            try:
                grpc_server, grpc_port = make_grpc_server(service, args.host, args.grpc_port, max_bytes,
                                                          stopping=server_stopping)
            except OSError as exc:
                server.server_close()
                raise CliError(f"cannot listen for gRPC on {args.host}:{args.grpc_port}: {exc}") from None
            grpc_server.start()
            where = f", gRPC {args.host}:{grpc_port} (syncscorer.v1.SyncScorer)"
        host, port = server.server_address[:2]
        print(f"sync-scorer serve: {scorer.name} on http://{host}:{port} (POST /v1/score, /v1/score-block, "
              f"/v1/score-window; GET /healthz, /v1/info){where}; torch threads {threads}", flush=True)
        # SIGTERM (Kubernetes stopping the pod) or SIGINT: no new requests; the ones in flight have
        # the grace to finish, then stop at their next batch and are answered (503 / UNAVAILABLE); exit 0.
        # A second signal stops them at once.
        stopping = threading.Event()

        def on_signal(signum, _frame) -> None:
            server_stopping.set()
            if stopping.is_set():
                server.stopping.set()
                if grpc_server is not None:
                    grpc_server.stop(0)
                return
            stopping.set()
            log.info("%s: stopping; requests in flight have %g s", signal.Signals(signum).name, args.shutdown_grace_s)
            threading.Thread(target=server.shutdown, daemon=True).start()

        log = logging.getLogger("sync_scorer.serve")
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    except BaseException as exc:
        for sig, handler in previous.items():  # (run in-process, the caller's handlers are its own)
            signal.signal(sig, handler)
        if not isinstance(exc, _StoppedDuringStart):
            raise
        if grpc_server is not None:
            grpc_server.stop(0)
        if server is not None:
            server.server_close()
        print(f"sync-scorer serve: {signal.Signals(exc.args[0]).name} during start-up: stopped", file=sys.stderr,
              flush=True)
        return 0
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server_stopping.set()
        grpc_stopped = grpc_server.stop(grace=args.shutdown_grace_s) if grpc_server is not None else None
        server.server_close()  # new connections are refused at once, not left in the backlog
        left = server.drain(args.shutdown_grace_s)
        if left:
            log.warning("%d HTTP request(s) still unanswered at exit", left)
        if grpc_stopped is not None:
            grpc_stopped.wait(args.shutdown_grace_s + 5.0)
    return 0


class _StoppedDuringStart(BaseException):
    """SIGTERM or SIGINT before serve's servers are up (a BaseException: the loader's own
    ``except Exception`` does not catch it)."""


def _raise_fd_limit() -> int:
    """Raises the soft limit of open files to the hard one (commonly 1024 of 524288 or more: each
    connection takes one) and returns the soft limit now in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # the kernel refuses more than its nr_open (2^20 by default) even under an unlimited hard limit
    for want in ((hard,) if hard != resource.RLIM_INFINITY else (1 << 20, 65536)):
        if want <= soft:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            return want
        except (OSError, ValueError):
            continue
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def _set_torch_threads(requested: int | None) -> int:
    """Sets torch's intra-op threads as the worker does (ScoringConfig.cpu_threads: cores - 1,
    1..4, unless ``requested``) and returns the count torch now uses. Left alone, torch took one
    per core: under load, 2 threads scored a block 8x slower than 1 (notes/HELPERS.md). Request
    threads started later take the count over."""
    import torch

    from worker.app import set_torch_threads
    from worker.config import ScoringConfig

    set_torch_threads(ScoringConfig(torch_threads=requested).cpu_threads())
    return torch.get_num_threads()
