"""The gRPC face of `sync-scorer serve` (service syncscorer.v1.SyncScorer, schemas/sync_scorer.proto).

Each RPC turns its message into the same field dict the HTTP JSON body has (raw bytes where JSON
has base64) and calls the same ScoreService, so both transports validate and score identically.
Bad input -> INVALID_ARGUMENT with the one-line reason; a scoring failure -> INTERNAL (logged with
its traceback, never sent)."""

from __future__ import annotations

import errno
import logging
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from schemas import sync_scorer_pb2 as pb
from schemas import sync_scorer_pb2_grpc as pb_grpc
from worker.scoring.types import Kind, ScoringCancelled
from worker.serving.request import RequestError, frame_count
from worker.serving.service import Overloaded, ScoreService

log = logging.getLogger("sync_scorer.serve.grpc")


def request_body(req: pb.ScoreRequest) -> dict[str, Any]:
    """A ScoreRequest message -> the request dict of worker.serving.request."""
    fr, au = req.frames, req.audio
    body: dict[str, Any] = {
        "session_id": req.session_id, "fps": fr.fps, "frame_start": int(fr.frame_start),
        "frames": {"width": int(fr.width), "height": int(fr.height), "format": fr.format, "data": fr.data},
        "audio": {"sample_rate": int(au.sample_rate), "channels": int(au.channels) or 1, "encoding": au.encoding,
                  "data": au.data},
    }
    if au.HasField("start_sample"):
        body["audio"]["start_sample"] = int(au.start_sample)
    # one flag per frame: a count that is not the frames' is refused before the flags are made
    # Python objects (60 MB of Frames.present took 670 MB as a list before its length was read);
    # frames decode refuses (their size, format, bytes) get no flags: that error comes first
    n_frames = frame_count(body["frames"]["width"], body["frames"]["height"], fr.format, len(body["frames"]["data"]))
    for key in ("present", "occluded"):
        flags = getattr(fr, key)
        if len(flags) and n_frames is not None:
            if len(flags) != n_frames:
                raise RequestError(f"{key} must be a list of {n_frames} booleans, one per frame")
            body[key] = [bool(p) for p in flags]
    if fr.context_frames:
        body["context_frames"] = int(fr.context_frames)
    if req.block_frames:
        body["block_frames"] = int(req.block_frames)
    if req.window_ms:
        body["window_ms"] = int(req.window_ms)
    return body


def score_message(d: dict[str, Any]) -> pb.LipSyncScore:
    """A LipSyncScore.to_dict() (or a clip's window entry) -> the message (None fields left unset)."""
    fields = {k: d[k] for k in ("kind", "frame_start", "frame_end", "start_ms", "end_ms", "confidence",
                                "direction", "label", "scorer") if d.get(k) is not None}
    for k in ("score", "offset_ms", "margin"):
        if d.get(k) is not None:
            fields[k] = float(d[k])
    fields["occluded"] = bool(d.get("occluded", False))
    fields["confidence"] = float(fields.get("confidence") or 0.0)
    return pb.LipSyncScore(**fields)


def clip_message(d: dict[str, Any]) -> pb.ClipScore:
    msg = pb.ClipScore(confidence=float(d.get("confidence") or 0.0), direction=d.get("direction") or "",
                       label=d.get("label") or "", scorer=d.get("scorer") or "",
                       notes=[str(n) for n in d.get("notes") or []])
    for k in ("offset_ms", "score"):
        if d.get(k) is not None:
            setattr(msg, k, float(d[k]))
    msg.windows.extend(score_message(w) for w in d.get("windows") or [])
    msg.blocks.extend(score_message(b) for b in d.get("blocks") or [])
    return msg


class SyncScorerServicer(pb_grpc.SyncScorerServicer):
    def __init__(self, service: ScoreService, stopping: threading.Event | None = None,
                 scoring_calls: int | None = None) -> None:
        self.service = service
        # set while serve stops: a call stopped then is the shutdown's (past the grace grpcio
        # ends it UNAVAILABLE), not a caller that left
        self.stopping = stopping or threading.Event()
        # scoring calls at once (waiting for the scorer or scored), each on a server thread: the
        # threads past them are kept for Info and for refusing the next ones (None: no limit)
        self.scoring_calls = scoring_calls
        self._scoring_slots = threading.BoundedSemaphore(scoring_calls) if scoring_calls else None

    def _call(self, context: grpc.ServicerContext, method: str, kind: Kind | None, request: pb.ScoreRequest):
        slots = self._scoring_slots
        if slots is not None and not slots.acquire(blocking=False):
            self.service.metrics.requests.labels("grpc", method, "busy").inc()
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"the server is busy ({self.scoring_calls} scoring calls in hand); send the call again shortly")
        try:
            return self._score(context, method, kind, request)
        finally:
            if slots is not None:
                slots.release()

    def _score(self, context: grpc.ServicerContext, method: str, kind: Kind | None, request: pb.ScoreRequest):
        service = self.service
        try:
            # the message, then what it decodes to, count against the server's budget until
            # answered: the message is kept, its frames copied and decoded while the call waits
            # (three waiting 12 MB calls took 168 MB, 4.7 times their size; a review)
            with service.budget.admitted(GRPC_HELD_PER_BYTE * request.ByteSize()), \
                    service.observed("grpc", method):
                decoded = service.decode(kind, request_body(request))
                # past its deadline or cancelled, a call stops while it waits or at the next batch
                return service.run(decoded, wanted=context.is_active)
        except Overloaded as exc:
            service.metrics.requests.labels("grpc", method, "busy").inc()
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except RequestError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except ScoringCancelled as exc:
            if self.stopping.is_set():
                log.info("%s stopped for the shutdown", method)
                context.abort(grpc.StatusCode.UNAVAILABLE, "the server is stopping; send the request again")
            log.info("%s stopped: %s", method, exc)
            context.abort(grpc.StatusCode.CANCELLED, str(exc))
        except Exception:
            log.exception("scoring failed")
            context.abort(grpc.StatusCode.INTERNAL, "scoring failed (see the server log)")

    def ScoreBlock(self, request, context):
        return score_message(self._call(context, "ScoreBlock", Kind.BLOCK, request))

    def ScoreWindow(self, request, context):
        return score_message(self._call(context, "ScoreWindow", Kind.WINDOW, request))

    def ScoreClip(self, request, context):
        return clip_message(self._call(context, "ScoreClip", None, request))

    def Info(self, request, context):
        return pb.ScorerInfo(**self.service.info())


# the server's threads; all but INFO_THREADS of them may hold scoring calls (a pool of 4, all
# taken by ScoreClip calls waiting for the scorer, kept Info waiting 1.9 s, a probe)
THREADS = 64
INFO_THREADS = 4


# what a call holds of the server's byte budget per byte of its message (measured: 4.7)
GRPC_HELD_PER_BYTE = 5


def make_grpc_server(service: ScoreService, host: str = "127.0.0.1", port: int = 50051,
                     max_message_bytes: int = 64 << 20, threads: int = THREADS,
                     stopping: threading.Event | None = None) -> tuple[grpc.Server, int]:
    """The server (not started yet) and the port it bound (``port`` 0: any free one). Raises
    OSError when the address cannot be bound. ``stopping``: set when serve stops (a call stopped
    then is logged as the shutdown's, not as a caller that left). ``threads``: the pool; past
    ``threads`` - INFO_THREADS scoring calls at once (all of them in a pool of INFO_THREADS or
    fewer) a call is RESOURCE_EXHAUSTED, and past twice ``threads`` calls in hand (running or
    queued for a thread) grpcio answers RESOURCE_EXHAUSTED itself."""
    scoring_calls = threads - INFO_THREADS if threads > INFO_THREADS else threads
    server = grpc.server(ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
                         maximum_concurrent_rpcs=2 * threads,
                         options=[("grpc.max_receive_message_length", max_message_bytes),
                                  ("grpc.max_send_message_length", max_message_bytes),
                                  # grpcio sets SO_REUSEPORT by default: a second server on a port
                                  # in use would start and silently share its calls
                                  ("grpc.so_reuseport", 0)])
    pb_grpc.add_SyncScorerServicer_to_server(SyncScorerServicer(service, stopping, scoring_calls), server)
    _check_bindable(host, port)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:  # grpcio raises on a port it cannot bind
        raise OSError(str(exc)) from None
    if bound == 0:
        raise OSError(f"cannot bind {host}:{port}")
    return server, bound


def _check_bindable(host: str, port: int) -> None:
    """Raise OSError "[Errno 98] Address already in use" where another listener holds ``host:port``,
    before gRPC tries: gRPC core logs its own failure on stderr first (an "E1207 ... add_port.cc"
    line above serve's one error line) and says only "Failed to bind". Only that case: gRPC binds
    where any one of the host's addresses binds (``localhost`` as ::1 on a host without IPv6 is
    gRPC's to judge), so other errors are left to it. SO_REUSEADDR as gRPC sets it, so a port
    left in TIME_WAIT by a restart is not taken for one in use."""
    if port == 0:
        return
    try:
        addresses = socket.getaddrinfo(host.strip("[]") or None, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
    except OSError:
        return  # a name gRPC resolves its own way ("[::]", "ipv4:...")
    for family, kind, proto, _, addr in addresses:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(addr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise
