"""The HTTP server of `sync-scorer serve` (standard library only: one JSON endpoint needs no web
framework).

    GET  /healthz      -> {"status": "ok", "scorer": "<name>@<version>"}
    POST /v1/score     -> the `sync-scorer score --json` object for the posted clip (request.py)

Errors are JSON {"error": "<one line>"}: 400 bad request body, 404 unknown path, 411 no length,
413 body too large, 500 a scoring failure (logged with its traceback, never sent). Requests are
served on threads, scored one at a time (the model is the bottleneck on CPU and GPU alike).
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from worker.serving.request import RequestError, decode

log = logging.getLogger("sync_scorer.serve")


class ScoreService:
    """Scores decoded requests with one scorer, one request at a time."""

    def __init__(self, scorer, max_seconds: float = 120.0) -> None:
        self.scorer = scorer
        self.max_seconds = max_seconds
        from worker.app import scorer_sample_rate  # the worker's rule: the bundle's rate, else 16 kHz

        self.sample_rate = scorer_sample_rate(scorer)
        self._lock = threading.Lock()

    def score(self, body) -> dict:
        from worker.clipscore import score_clip

        clip = decode(body, self.sample_rate, self.max_seconds)
        with self._lock:
            summary = score_clip(self.scorer, clip.frames, clip.fps, clip.audio, clip.sample_rate,
                                 block_frames=clip.block_frames, window_ms=clip.window_ms)
        return summary.to_json()


def make_server(service: ScoreService, host: str = "127.0.0.1", port: int = 8080,
                max_body_bytes: int = 64 << 20) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        server_version = "sync-scorer"

        def _send(self, status: int, payload: dict) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._send(200, {"status": "ok", "scorer": service.scorer.name})
            else:
                self._send(404, {"error": f"no such path {self.path}"})

        def do_POST(self) -> None:
            if self.path != "/v1/score":
                self._send(404, {"error": f"no such path {self.path}"})
                return
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                self._send(411, {"error": "Content-Length required"})
                return
            if int(length) > max_body_bytes:
                self._send(413, {"error": f"body of {length} bytes is over the limit of {max_body_bytes}"})
                self.close_connection = True
                return
            raw = self.rfile.read(int(length))
            try:
                body = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                self._send(400, {"error": f"the body is not JSON: {exc}"})
                return
            try:
                self._send(200, service.score(body))
            except RequestError as exc:
                self._send(400, {"error": str(exc)})
            except Exception:
                log.exception("scoring failed")
                self._send(500, {"error": "scoring failed (see the server log)"})

        def log_message(self, fmt: str, *args) -> None:
            log.info("%s %s", self.address_string(), fmt % args)

    return ThreadingHTTPServer((host, port), Handler)
