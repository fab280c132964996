"""`sync-scorer serve`: plugin of worker.cli."""

from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("serve", help="score clips posted over HTTP (POST /v1/score, GET /healthz)",
                       description=__import__("worker.serving.http", fromlist=["x"]).__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 = any free port)")
    p.add_argument("--bundle", help="model bundle directory (default: the bundled model)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--max-body-mb", type=float, default=64.0, help="largest request body (default 64 MB)")
    p.add_argument("--max-seconds", type=float, default=120.0, help="longest clip per request (default 120 s)")
    return p


def run(args) -> int:
    import logging

    from worker.cli import CliError, load_scorer_for_command
    from worker.serving.http import ScoreService, make_server

    if not 0 <= args.port <= 65535:
        raise CliError("--port must be within 0..65535")
    if args.max_body_mb <= 0 or args.max_seconds <= 0:
        raise CliError("--max-body-mb and --max-seconds must be positive")
    scorer = load_scorer_for_command(args.bundle, args.device)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        server = make_server(ScoreService(scorer, args.max_seconds), args.host, args.port,
                             int(args.max_body_mb * (1 << 20)))
    except OSError as exc:
        raise CliError(f"cannot listen on {args.host}:{args.port}: {exc}") from None
    host, port = server.server_address[:2]
    print(f"sync-scorer serve: {scorer.name} on http://{host}:{port} (POST /v1/score, GET /healthz)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
