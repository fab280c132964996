"""The HTTP server of `sync-scorer serve` (standard library only: one JSON endpoint needs no web
framework).

    GET  /healthz          -> {"status": "ok", "scorer": "<name>@<version>"}
    GET  /v1/info          -> scorer, sample_rate, search_margin_ms, max_offset_ms, context_frames
    GET  /metrics          -> Prometheus: requests by transport, method, outcome; latency
    POST /v1/score         -> the `sync-scorer score --json` object for the posted clip (request.py)
    POST /v1/score-block   -> one BLOCK's verdict (8..16 frames; request.decode_span)
    POST /v1/score-window  -> one WINDOW's verdict (0.8..1.2 s of frames)

Errors are JSON {"error": "<one line>"}: 400 bad request body (or a Content-Length that is not
a number, two different ones, or Transfer-Encoding beside one), 417 an Expect other than
100-continue, 404 unknown path, 405 the wrong method for a path, 411 no Content-Length (chunked
uploads are not taken), 413 body too large (the body is read and dropped so that a client that
sends it whole reads the answer), 500 a scoring failure (logged with its traceback, never sent),
503 the server stopping (a request still in flight past the shutdown's grace, ``drain``) or busy
(the requests in hand over ScoreService.budget; with Retry-After); what the
standard library refuses itself (a malformed request line, too many headers) too. HTTP/1.1, one
request per connection (`Connection: close`); `Expect: 100-continue` is answered once the
Content-Length is accepted. A connection idle for IDLE_TIMEOUT_S is closed, one without its
headers HEADER_TIMEOUT_S after the accept too, and a body slower than MIN_BODY_BYTES_PER_S is
answered 408. Requests are served on threads, one per connection, MAX_CONNECTIONS at most (past
them: 503 and closed), scored one at a time by worker.serving.service.ScoreService.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import math
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from worker.observability.metrics import ServeMetrics
from worker.scoring.types import Kind, ScoringCancelled
from worker.serving.request import RequestError, check_json_size
from worker.serving.service import Held, Overloaded, ScoreService

_POSTS = {"/v1/score": None, "/v1/score-block": Kind.BLOCK, "/v1/score-window": Kind.WINDOW}
_GETS = ("/healthz", "/v1/info", "/metrics")
IDLE_TIMEOUT_S = 60.0
# connections open at once (a thread each); 2000 idle ones were 2011 threads before
MAX_CONNECTIONS = 256
# the request line and headers must come within this of the accept (the idle timeout is per gap)
HEADER_TIMEOUT_S = 10.0
# a body must come at this average rate past the grace (1 byte every 5 s held a connection for good)
MIN_BODY_BYTES_PER_S = 8192.0
BODY_GRACE_S = 10.0
# accept() failing for want of file descriptors (EMFILE ...): the listener is not read again for
# this long, doubling to the most (it spun at 100% CPU: the connection stays in the backlog, so
# the listener reads ready at once again), or until a connection closes
ACCEPT_BACKOFF_S = (0.05, 1.0)
_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_METHOD = {"/v1/score": "ScoreClip", "/v1/score-block": "ScoreBlock", "/v1/score-window": "ScoreWindow"}

log = logging.getLogger("sync_scorer.serve")


def make_server(service: ScoreService, host: str = "127.0.0.1", port: int = 8080,
                max_body_bytes: int = 64 << 20, idle_timeout_s: float = IDLE_TIMEOUT_S,
                max_connections: int = MAX_CONNECTIONS, header_timeout_s: float = HEADER_TIMEOUT_S,
                min_body_bytes_per_s: float = MIN_BODY_BYTES_PER_S, body_grace_s: float = BODY_GRACE_S) -> _Server:
    """The HTTP server (bound, not serving yet). ``max_connections``: connections open at once
    (one thread each); past it a new one is answered 503 and closed. ``header_timeout_s``: a
    connection's request line and headers must all come within this of its accept.
    ``min_body_bytes_per_s``: past ``body_grace_s``, a body coming slower than this on average
    is answered 408 and closed. ``idle_timeout_s``: the longest gap between bytes."""
    class Handler(BaseHTTPRequestHandler):
        server_version = "sync-scorer"
        # a connection that sends nothing, or less body than it announced, is closed after this
        # (it held a thread for good before)
        timeout = idle_timeout_s
        # HTTP/1.1 for `Expect: 100-continue` (curl sends it with bodies over 1 MB and, answered
        # by an HTTP/1.0 server with nothing, waited 1 s before sending the body); still one
        # request per connection, each answer says `Connection: close`
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # the request line and headers are read under one deadline from the accept: the
            # socket's timeout bounds each gap only, and a client trickling a byte every 5 s held
            # its connection (and thread) for good
            self.rfile.close()
            self._header_clock = _HeaderDeadline(self.connection.makefile("rb", buffering=0),
                                                 self.connection, time.monotonic() + header_timeout_s,
                                                 idle_timeout_s)
            self.rfile = io.BufferedReader(self._header_clock)

        def handle(self) -> None:
            self.close_connection = True
            self.handle_one_request()

        def send_response(self, code: int, message: str | None = None) -> None:
            super().send_response(code, message)
            self.send_header("Connection", "close")

        def handle_expect_100(self) -> bool:
            """`Expect: 100-continue` is answered once the Content-Length is found acceptable
            (do_POST): a body too large, or no length, gets its final status instead, unsent."""
            self._expect_100 = True
            return True

        def _continue(self) -> None:
            if self._expect_100:
                self.send_response_only(100)
                self.end_headers()

        def _send(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
            self._send_bytes(status, "application/json", json.dumps(payload).encode(), headers)

        def _send_bytes(self, status: int, content_type: str, body: bytes,
                        headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":  # HEAD: the headers GET would send, Content-Length too
                self.wfile.write(body)

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            """What the standard library answers itself (a request line it cannot parse, too many
            or too long headers, an unknown method or version): JSON like every other answer, not
            its HTML page."""
            self._header_clock.done()  # the answer is written with the gaps' timeout
            text = message or self.responses.get(code, ("error",))[0]
            self.log_error("code %d, message %s", code, text)
            if self.request_version == "HTTP/0.9":  # a line it could not read: a status line all the same
                self.request_version = "HTTP/1.0"
            self.close_connection = True
            self._send(code, {"error": text})
            self._discard_announced_body()

        def _discard_announced_body(self, unknown_bytes: int = 0) -> None:
            """After an answer sent without reading the request's body: the body the client may be
            sending (its Content-Length, or ``unknown_bytes`` when it has none or a bad one; at most
            DRAIN_CAP_BYTES) is read and dropped. Closed with it unread, the connection was reset:
            a client that sends its whole body before it reads (most do) got a broken pipe instead
            of the answer (the 413's fix; 404, 405 and the standard library's errors kept it)."""
            headers = getattr(self, "headers", None)  # none: the request line was refused
            length = headers.get("Content-Length") if headers is not None else None
            n_bytes = byte_count(length) if length is not None else None
            unread = min(DRAIN_CAP_BYTES, unknown_bytes if n_bytes is None else n_bytes)
            if unread <= 0:
                return
            try:
                self.connection.shutdown(socket.SHUT_WR)  # the answer is complete
            except OSError:
                return
            discard_body(self.rfile, self.connection, unread, min(DRAIN_IDLE_S, idle_timeout_s))

        def _refuse(self, status: int, outcome: str, error: str, body_bytes: int | None = None,
                    headers: dict[str, str] | None = None) -> None:
            """A scoring request refused before its body is read: answered, counted, and the body
            the client may be sending read and dropped (``body_bytes`` of it, or up to
            DRAIN_CAP_BYTES when its length is unknown). Closed with the body unread, the
            connection was reset: a client that sends its whole body before it reads (most do)
            got a broken pipe instead of the 413."""
            service.metrics.requests.labels("http", _METHOD[self.path], outcome).inc()
            self.close_connection = True
            self._send(status, {"error": error}, headers)
            if body_bytes is None:  # no length, or one that is not a number: read what comes
                self._discard_announced_body(DRAIN_CAP_BYTES)
            else:
                self._discard_announced_body(body_bytes)

        def parse_request(self) -> bool:
            self._expect_100 = False
            self.server.request_started()  # a request line came: in flight until answered
            ok = super().parse_request()
            self._header_clock.done()  # the headers are in (or refused): the gaps' timeout only now
            if not ok:
                return False
            self.path = urlsplit(self.path).path  # /healthz?probe=1 is /healthz
            refused = framing_problem(self.headers)
            if refused is not None:
                if self.command == "POST" and self.path in _POSTS:
                    service.metrics.requests.labels("http", _METHOD[self.path], "bad_request").inc()
                self.send_error(*refused)
                return False
            return True

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._send(200, {"status": "ok", "scorer": service.scorer.name})
            elif self.path == "/v1/info":
                self._send(200, service.info())
            elif self.path == "/metrics":
                from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

                self._send_bytes(200, CONTENT_TYPE_LATEST, generate_latest(service.metrics.registry))
            else:
                self._wrong_method()

        do_HEAD = do_GET

        def _wrong_method(self) -> None:
            if self.path in _POSTS:
                self._send(405, {"error": f"{self.path} takes POST"})
            elif self.path in _GETS:
                self._send(405, {"error": f"{self.path} takes GET"})
            else:
                self._send(404, {"error": f"no such path {self.path}"})
            self.close_connection = True
            self._discard_announced_body()

        do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _wrong_method

        def do_POST(self) -> None:
            if self.path not in _POSTS:
                self._wrong_method()
                return
            length = self.headers.get("Content-Length")
            if length is None:
                self._refuse(411, "bad_request", "Content-Length required (chunked uploads are not taken)")
                return
            n_bytes = byte_count(length)
            if n_bytes is None:
                self._refuse(400, "bad_request", f"Content-Length {length!r} is not a byte count")
                return
            if n_bytes > max_body_bytes:
                shown = n_bytes if n_bytes < 1 << 64 else "10^19 or more"
                self._refuse(413, "too_large", f"body of {shown} bytes is over the limit of {max_body_bytes}",
                             n_bytes)
                return
            # the body as it arrives, then what it decodes to, count against the server's budget
            # until answered (the whole length held from the start let three slow uploads
            # announcing large bodies lock every other request out, a review); past it, _read_body
            # answers 503
            with service.budget.admitted(0) as held:
                self._score_body(n_bytes, held)

        def _score_body(self, n_bytes: int, held: Held) -> None:
            """Reads, decodes, scores and answers a scoring request's body of ``n_bytes``, holding
            its bytes of the server's budget (``held``) as they arrive."""
            self._continue()
            raw = self._read_body(n_bytes, held)
            if raw is None:
                return
            kind = _POSTS[self.path]
            try:
                with service.observed("http", _METHOD[self.path]):
                    # each form dropped once the next is made: the body, its text, the parsed
                    # fields (base64), then the pixels and samples that wait for the scorer
                    # (all of them at once took four times the body)
                    text = json_text(raw, service.max_seconds)
                    del raw
                    body = parse_json(text)
                    del text
                    decoded = service.decode(kind, body)
                    del body

                    client = PeerWatch(self.connection)

                    def wanted() -> bool:  # asked while waiting for the scorer and between batches
                        return not self.server.stopping.is_set() and not client.gone()

                    result = service.run(decoded, wanted=wanted)
            except RequestError as exc:
                self._send(400, {"error": str(exc)})
                return
            except ScoringCancelled as exc:
                if self.server.stopping.is_set():  # past the shutdown's grace: answered, not dropped
                    log.info("%s stopped for the shutdown", self.path)
                    self._send(503, {"error": "the server is stopping; send the request again"})
                else:  # the client went away: nobody to answer
                    log.info("%s stopped: %s", self.path, exc)
                return
            except Exception:
                log.exception("scoring failed")
                self._send(500, {"error": "scoring failed (see the server log)"})
                return
            self._send(200, result)

        def _read_body(self, n_bytes: int, held: Held | None = None) -> bytearray | None:
            """The body, read as it comes while watching for the shutdown: past the grace (or on a
            second signal) an upload still coming is answered 503 and closed. (One blocking read
            held it to the idle timeout, past the grace, and the client was reset.) None: answered
            already (503 when its bytes so far do not fit the budget ``held`` is part of), or the
            client left or went idle for the idle timeout."""
            sock = self.connection
            body = bytearray()  # grown as it comes (pieces joined at the end took it twice)
            left = n_bytes
            started = last_data = time.monotonic()
            sock.settimeout(0.0)  # a socket timeout would leave the reader unusable: select instead
            try:
                while left > 0:
                    chunk = self.rfile.read1(min(1 << 20, left))  # b"": nothing buffered or ready
                    if chunk:
                        if held is not None:
                            try:
                                held.grow_to(len(body) + len(chunk))
                            except Overloaded as exc:
                                sock.settimeout(idle_timeout_s)
                                self._refuse(503, "busy", str(exc), left - len(chunk),
                                             {"Retry-After": str(RETRY_AFTER_S)})
                                return None
                        body += chunk
                        left -= len(chunk)
                        last_data = time.monotonic()
                        if too_slow(n_bytes - left, last_data - started):
                            self._too_slow(n_bytes - left, n_bytes, last_data - started)
                            return None
                        continue
                    try:
                        if sock.recv(1, socket.MSG_PEEK) == b"":
                            return None  # the client closed before its body was whole
                        continue  # a byte came meanwhile
                    except BlockingIOError:
                        pass
                    if self.server.stopping.is_set():
                        log.info("%s: upload stopped for the shutdown (%d of %d bytes)", self.path,
                                 n_bytes - left, n_bytes)
                        service.metrics.requests.labels("http", _METHOD[self.path], "cancelled").inc()
                        sock.settimeout(idle_timeout_s)
                        self._send(503, {"error": "the server is stopping; send the request again"})
                        return None
                    now = time.monotonic()
                    if now - last_data >= idle_timeout_s:
                        log.info("%s: no body for %g s (%d of %d bytes); closed", self.path, idle_timeout_s,
                                 n_bytes - left, n_bytes)
                        return None
                    if too_slow(n_bytes - left, now - started):
                        self._too_slow(n_bytes - left, n_bytes, now - started)
                        return None
                    readable(sock, _BODY_POLL_S)
            except (ConnectionError, ValueError):
                return None
            finally:
                try:
                    sock.settimeout(idle_timeout_s)
                except OSError:
                    pass
            return body

        def _too_slow(self, got: int, n_bytes: int, elapsed_s: float) -> None:
            log.info("%s: body too slow (%d of %d bytes in %.0f s); closed", self.path, got, n_bytes, elapsed_s)
            service.metrics.requests.labels("http", _METHOD[self.path], "too_slow").inc()
            self.connection.settimeout(idle_timeout_s)
            self._send(408, {"error": f"the body came too slowly ({got} of {n_bytes} bytes in {elapsed_s:.0f} s; "
                                      f"at least {min_body_bytes_per_s:g} bytes/s after {body_grace_s:g} s)"})

        def log_message(self, fmt: str, *args) -> None:
            # no path yet: a request line that could not be parsed (the 400 / 414 being sent)
            if getattr(self, "path", "") in ("/healthz", "/metrics"):  # probes and scrapes, per pod
                return
            log.info("%s %s", self.address_string(), fmt % args)

    def too_slow(got: int, elapsed_s: float) -> bool:
        """A body whose bytes came slower than min_body_bytes_per_s on average past the grace."""
        return elapsed_s > body_grace_s and got < min_body_bytes_per_s * (elapsed_s - body_grace_s)

    return _Server((host, port), Handler, max_connections=max_connections, metrics=service.metrics)


class _HeaderDeadline(io.RawIOBase):
    """A connection's raw reader (``raw``: socket.makefile("rb", buffering=0)) whose reads end
    at ``deadline`` (time.monotonic()) until ``done``: past it, TimeoutError, which the standard
    library's handler answers by closing the connection. Each read waits at most ``gap_s``."""

    def __init__(self, raw, sock: socket.socket, deadline: float, gap_s: float) -> None:
        super().__init__()
        self._raw, self._sock, self._deadline, self._gap_s = raw, sock, deadline, gap_s

    def done(self) -> None:
        if self._deadline is not None:
            self._deadline = None
            self._sock.settimeout(self._gap_s)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int | None:
        if self._deadline is not None:
            left_s = self._deadline - time.monotonic()
            if left_s <= 0:
                raise TimeoutError("no request line and headers within the deadline")
            self._sock.settimeout(min(self._gap_s, left_s))
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()
        super().close()


def json_text(raw: bytes | bytearray, max_seconds: float) -> str:
    """A request body -> its JSON text (UTF-8, or the UTF-16/32 JSON allows), once its values
    are counted (request.check_json_size: no more than any request has); RequestError if not."""
    check_json_size(raw, max_seconds)
    try:
        return raw.decode(json.detect_encoding(raw), "surrogatepass")
    except (UnicodeDecodeError, LookupError) as exc:
        raise RequestError(f"the body is not JSON: {exc}") from None


def parse_json(text: str) -> object:
    """JSON text (json_text's) -> its value; RequestError for one that is not JSON."""
    try:
        return json.loads(text)
    except ValueError as exc:  # not JSON, an integer of 4300+ digits
        raise RequestError(f"the body is not JSON: {exc}") from None
    except RecursionError:
        raise RequestError("the body's JSON is nested too deeply") from None


# a request over the server's byte budget is answered 503 with this Retry-After (seconds)
RETRY_AFTER_S = 2

# how often a body being read looks at the shutdown (an upload is answered 503 this soon past the grace)
_BODY_POLL_S = 0.2

# after the shutdown's grace, requests in flight are stopped at their next batch: this long for
# them to be answered (a batch takes well under a second)
CANCEL_WAIT_S = 5.0

# a refused body is read and dropped, up to this many bytes, while it keeps coming (at most
# DRAIN_IDLE_S between reads, DRAIN_DEADLINE_S in all), so that its client reads the answer
DRAIN_CAP_BYTES = 128 << 20
DRAIN_IDLE_S = 2.0
DRAIN_DEADLINE_S = 10.0


def discard_body(rfile, sock: socket.socket, max_bytes: int, idle_s: float = DRAIN_IDLE_S,
                 deadline_s: float = DRAIN_DEADLINE_S) -> int:
    """Reads and drops up to ``max_bytes`` from a connection (``rfile``: its buffered reader)
    until the peer closes, ``idle_s`` passes with nothing, or ``deadline_s`` in all. Returns the
    bytes read."""
    end = time.monotonic() + deadline_s
    read = 0
    try:
        while read < max_bytes and (left := end - time.monotonic()) > 0:
            sock.settimeout(min(idle_s, left))
            chunk = rfile.read1(min(1 << 20, max_bytes - read))
            if not chunk:
                break
            read += len(chunk)
    except (OSError, ValueError):  # idle (TimeoutError), reset, closed
        pass
    return read


def framing_problem(headers) -> tuple[int, str] | None:
    """(status, message) for headers that leave the request's length or expectations in doubt
    (RFC 9112 6.3, RFC 9110 10.1.1), None when they are clear: two different Content-Lengths (the
    first was taken), Transfer-Encoding beside a Content-Length (the body read by the length, then
    "not JSON"), an Expect other than 100-continue (ignored: scored, 200)."""
    lengths = [v.strip(" \t") for v in headers.get_all("Content-Length") or []]
    if len(set(lengths)) > 1:
        return 400, f"Content-Length given {len(lengths)} times with different values: send one"
    if headers.get("Transfer-Encoding") is not None and lengths:
        return 400, "Transfer-Encoding and Content-Length together: send a Content-Length only"
    expect = headers.get("Expect")
    if expect is not None and expect.strip(" \t").lower() != "100-continue":
        return 417, f"Expect {expect[:40]!r} is not supported (only 100-continue)"
    return None


# more digits than this (leading zeros aside) is over any body limit; int() of 4300+ digits raises
_MAX_LENGTH_DIGITS = 19


def byte_count(text: str) -> int | None:
    """A Content-Length value -> bytes, or None when it is not ASCII decimal digits (str.isdigit
    takes "\u00b2" and other Unicode digits that int() refuses: a traceback before)."""
    text = text.strip(" \t")
    if not text or not all("0" <= c <= "9" for c in text):
        return None
    digits = text.lstrip("0")
    return int(digits or "0") if len(digits) <= _MAX_LENGTH_DIGITS else 1 << 64


# bytes a client may send past its request that are read and dropped to see whether it left
EXTRA_BYTES_CAP = 64 << 10


def readable(sock: socket.socket, timeout_s: float) -> bool:
    """Whether ``sock`` has something to read (data, or its close) within ``timeout_s``. poll, not
    select: select refuses a descriptor numbered 1024 or more, which serve's raised open-files
    limit allows, and every request on one was taken for a client gone, unanswered (a review)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(max(0, math.ceil(timeout_s * 1000))))


class PeerWatch:
    """Whether the client of a connection whose request has been read is gone: it closed its
    side (a reset counts). Bytes it sends past the request (a CRLF after the body, as some clients
    send, or a pipelined request: one request per connection here) are read and dropped, up to
    ``extra_cap`` in all: left unread, a peek saw them and not the close behind them, and a
    client gone went on being scored. (One that sends more than that is taken as still there.)"""

    def __init__(self, sock: socket.socket, extra_cap: int = EXTRA_BYTES_CAP) -> None:
        self._sock = sock
        self._extra_cap = extra_cap
        self.extra_bytes = 0

    def gone(self) -> bool:
        sock = self._sock
        try:
            while readable(sock, 0.0):
                if self.extra_bytes >= self._extra_cap:
                    return sock.recv(1, socket.MSG_PEEK) == b""
                chunk = sock.recv(min(1 << 16, self._extra_cap - self.extra_bytes), socket.MSG_DONTWAIT)
                if not chunk:
                    return True
                self.extra_bytes += len(chunk)
            return False
        except BlockingIOError:
            return False
        except (OSError, ValueError):
            return True


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer whose requests in flight can be waited for (``drain``): its request
    threads were daemons nobody waited for, so SIGTERM dropped every request in flight and the
    interpreter's exit under a thread still in torch aborted the process (SIGABRT)."""

    # socketserver's listen backlog of 5 dropped the SYNs of a burst of connections: a review saw
    # 1..8 s connect retries and timeouts among 200 at once
    request_queue_size = 128

    def __init__(self, *args, max_connections: int = MAX_CONNECTIONS, metrics: ServeMetrics | None = None,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.metrics = metrics
        # set: requests in flight stop at their next batch (or while they wait for the scorer)
        # and are answered 503
        self.stopping = threading.Event()
        self.max_connections = max_connections
        self._connections: dict[threading.Thread, list] = {}  # thread -> [socket, request started]
        self._connections_lock = threading.Lock()
        self._full_logged = False
        self._accept_backoff_s = 0.0  # > 0: accept() is failing for want of descriptors
        self._connection_closed = threading.Event()  # ends the accept back-off early

    def get_request(self):
        try:
            accepted = super().get_request()
        except OSError as exc:
            if exc.errno in _OUT_OF_DESCRIPTORS:
                self._back_off_accepting(exc)
            raise  # socketserver drops it: the serve loop goes on
        if self._accept_backoff_s:
            log.warning("accepting connections again")
            self._accept_backoff_s = 0.0
        return accepted

    def _back_off_accepting(self, exc: OSError) -> None:
        """accept() failed for want of descriptors: said once, then the serve loop waits (longer
        each time, up to ACCEPT_BACKOFF_S[1]) or until a connection closes."""
        if not self._accept_backoff_s:
            with self._connections_lock:
                n_open = len(self._connections)
            log.warning("cannot accept connections: %s (%d open); waiting for one to close", exc, n_open)
        first, most = ACCEPT_BACKOFF_S
        self._accept_backoff_s = min(most, self._accept_backoff_s * 2 or first)
        self._connection_closed.clear()
        self._connection_closed.wait(self._accept_backoff_s)

    def process_request(self, request, client_address) -> None:
        with self._connections_lock:
            full = len(self._connections) >= self.max_connections
            if not full:
                thread = threading.Thread(target=self._serve_connection, args=(request, client_address),
                                          daemon=True)
                self._connections[thread] = [request, False]
        if full:
            self._refuse_connection(request)
            return
        try:
            thread.start()
        except BaseException:  # no thread to be had: socketserver closes the connection
            with self._connections_lock:
                self._connections.pop(thread, None)
            raise
        self._full_logged = False  # a connection taken: the next refusal is said again

    def _refuse_connection(self, request) -> None:
        """A connection past max_connections: 503 and closed, on the serve loop's thread (never
        blocking it: what the client sent is read if it is there, the answer sent if it fits)."""
        if not self._full_logged:
            self._full_logged = True
            log.warning("%d connections open: new ones are answered 503 until some close", self.max_connections)
        if self.metrics is not None:  # (no request read yet: no method to count it under)
            self.metrics.requests.labels("http", "connection", "busy").inc()
        body = json.dumps({"error": "the server has too many connections open; send the request again"}).encode()
        answer = (b"HTTP/1.1 503 Service Unavailable\r\nServer: sync-scorer\r\nContent-Type: application/json\r\n"
                  b"Retry-After: %d\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
                  % (RETRY_AFTER_S, len(body), body))
        try:
            request.recv(1 << 16, socket.MSG_DONTWAIT)  # unread bytes at the close would reset it
        except OSError:
            pass
        try:
            request.send(answer, socket.MSG_DONTWAIT)
        except OSError:
            pass
        self.shutdown_request(request)

    def _serve_connection(self, request, client_address) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.pop(threading.current_thread(), None)
            self._connection_closed.set()

    def request_started(self) -> None:
        """Called on a connection's thread once its request line has come."""
        with self._connections_lock:
            entry = self._connections.get(threading.current_thread())
            if entry is not None:
                entry[1] = True

    def in_flight(self) -> tuple[int, int]:
        """(connections open, those whose request has begun and is not answered yet)."""
        with self._connections_lock:
            return len(self._connections), sum(1 for _, started in self._connections.values() if started)

    def _close_idle(self) -> None:
        """Connections with no request yet and nothing to read are closed (their threads wait
        up to the idle timeout for a request that, the listener closed, is not coming)."""
        with self._connections_lock:
            idle = [entry for entry in self._connections.values() if not entry[1]]
        for entry in idle:
            sock = entry[0]
            try:
                if not readable(sock, 0.0):
                    sock.shutdown(socket.SHUT_RDWR)
            except (OSError, ValueError):
                pass

    def drain(self, grace_s: float, cancel_wait_s: float = CANCEL_WAIT_S, poll_s: float = 0.05) -> int:
        """Once serve_forever has returned (no new connections): waits up to ``grace_s`` for the
        requests in flight to be answered, then stops the rest at their next batch (answered
        503) and waits up to ``cancel_wait_s`` more. ``stopping`` set meanwhile (serve's second
        signal) ends the grace at once (it was waited out whole). Returns how many were still
        unanswered (their threads are daemons: they do not hold the exit)."""
        for wait_s, cancel in ((grace_s, False), (cancel_wait_s, True)):
            if cancel:
                self.stopping.set()
            end = time.monotonic() + wait_s
            while True:
                self._close_idle()
                with self._connections_lock:
                    if not self._connections:
                        return 0
                if time.monotonic() >= end or (not cancel and self.stopping.is_set()):
                    break
                time.sleep(poll_s)
        with self._connections_lock:
            return len(self._connections)

    def handle_error(self, request, client_address) -> None:
        """A client that goes away mid-request (reset, broken pipe) is one log line, not the
        standard library's traceback on stderr; anything else keeps its traceback in the log."""
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.info("client %s went away: %s", client_address[0], exc)
        else:
            log.exception("request from %s failed", client_address[0])
