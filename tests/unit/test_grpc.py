"""`sync-scorer serve`'s gRPC face (syncscorer.v1.SyncScorer) in process: the same answers as the
HTTP face, INVALID_ARGUMENT for bad input, and generated code that matches schemas/sync_scorer.proto."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from schemas import sync_scorer_pb2 as pb
from schemas import sync_scorer_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stub():
    from worker.scoring.loader import load_scorer
    from worker.serving.grpc_server import make_grpc_server
    from worker.serving.service import ScoreService

    service = ScoreService(load_scorer(None))
    server, port = make_grpc_server(service, "127.0.0.1", 0)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield pb_grpc.SyncScorerStub(channel), service
    channel.close()
    server.stop(0)


def _request(clip, a: int, b: int, margin_ms: float) -> pb.ScoreRequest:
    rate = clip.sample_rate
    s0 = max(0, round((a / clip.fps - margin_ms / 1000.0) * rate))
    s1 = min(clip.audio.shape[0], round((b / clip.fps + margin_ms / 1000.0) * rate))
    pcm = (np.clip(clip.audio[s0:s1], -1, 1) * 32767).astype("<i2").tobytes()
    frames = np.ascontiguousarray(clip.frames[a:b], dtype=np.uint8)
    fmt = "GRAY8" if frames.ndim == 3 else "RGB24"
    return pb.ScoreRequest(
        session_id="t", frames=pb.Frames(width=frames.shape[2], height=frames.shape[1], format=fmt,
                                         data=frames.tobytes(), fps=clip.fps, frame_start=a),
        audio=pb.Audio(sample_rate=rate, channels=1, encoding="PCM_S16LE", data=pcm, start_sample=s0))


def test_grpc_answers_as_http_does(stub):
    from worker.scoring.types import Kind
    from worker.synth.clip import generate_clip

    client, service = stub
    info = client.Info(pb.InfoRequest())
    assert info.scorer == service.scorer.name and info.sample_rate == 16000 and info.search_margin_ms > 200
    clip = generate_clip(seed=5151, seconds=3.0, audio_offset_ms=160.0)
    whole = client.ScoreClip(_request(clip, 0, clip.frames.shape[0], 0.0))
    assert whole.label == "OK" and whole.direction == "AUDIO_LAGS" and whole.HasField("offset_ms")
    assert abs(whole.offset_ms - 160.0) <= 1000.0 / clip.fps + 0.5 and len(whole.windows) == 3
    req = _request(clip, 25, 50, info.search_margin_ms)
    got = client.ScoreWindow(req)
    from worker.serving.grpc_server import request_body

    want = service.score_span(Kind.WINDOW, request_body(req))  # the HTTP face's answer
    assert (got.kind, got.frame_start, got.frame_end, got.direction, got.label) == \
        ("WINDOW", 25, 50, want["direction"], want["label"])
    assert got.offset_ms == want["offset_ms"] and got.score == pytest.approx(want["score"], abs=1e-6)
    blk = client.ScoreBlock(_request(clip, 16, 32, info.search_margin_ms))
    assert blk.kind == "BLOCK" and blk.frame_end == 32 and 0.0 <= blk.confidence <= 1.0


def test_grpc_bad_input_is_invalid_argument_and_the_server_goes_on(stub):
    from worker.synth.clip import generate_clip

    client, service = stub
    clip = generate_clip(seed=5152, seconds=2.0, audio_offset_ms=0.0)
    with pytest.raises(grpc.RpcError) as err:
        client.ScoreBlock(_request(clip, 0, 40, 240.0))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "8..16 frames" in err.value.details()
    bad = _request(clip, 0, 25, 240.0)
    bad.audio.encoding = "MP3"
    with pytest.raises(grpc.RpcError) as err:
        client.ScoreWindow(bad)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "encoding" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        client.ScoreClip(pb.ScoreRequest())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "fps" in err.value.details()
    assert client.Info(pb.InfoRequest()).scorer  # still serving
    requests = service.metrics.requests
    assert requests.labels("grpc", "ScoreBlock", "bad_request")._value.get() >= 1
    assert requests.labels("grpc", "ScoreClip", "bad_request")._value.get() >= 1


def test_a_call_whose_caller_is_gone_stops_scoring(stub):
    """A ScoreClip past its deadline (or cancelled) stops at its next batch of jobs instead of
    scoring the clip to its end while every call behind it waits (an audit: a 120 s clip with a
    0.5 s deadline went on; the next ScoreBlock waited 2.85 s)."""
    from worker.scoring.types import ScoringCancelled
    from worker.serving.grpc_server import SyncScorerServicer, request_body
    from worker.synth.clip import generate_clip

    _client, service = stub
    clip = generate_clip(seed=5154, seconds=8.0, audio_offset_ms=0.0)
    request = _request(clip, 0, clip.frames.shape[0], 0.0)
    asked: list[int] = []

    def wanted() -> bool:  # the caller is there when the scorer is free, gone at the first batch
        asked.append(1)
        return len(asked) < 2

    with pytest.raises(ScoringCancelled, match="stopped after 0 of"):
        service.score(request_body(request), wanted=wanted)

    class Gone:  # a ServicerContext whose call ended
        def is_active(self) -> bool:
            return False

        def abort(self, code, details):
            raise RuntimeError(code, details)

    cancelled = service.metrics.requests.labels("grpc", "ScoreClip", "cancelled")
    before = cancelled._value.get()
    with pytest.raises(RuntimeError) as err:
        SyncScorerServicer(service).ScoreClip(request, Gone())
    assert err.value.args[0] == grpc.StatusCode.CANCELLED and cancelled._value.get() == before + 1


def test_grpc_audio_that_misses_the_frames_is_invalid_argument(stub):
    from worker.synth.clip import generate_clip

    client, _ = stub
    clip = generate_clip(seed=5154, seconds=2.0, audio_offset_ms=0.0)
    req = _request(clip, 0, 16, 240.0)
    req.audio.start_sample = 10**12
    with pytest.raises(grpc.RpcError) as err:
        client.ScoreBlock(req)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "overlap" in err.value.details()


def test_a_second_server_on_a_grpc_port_in_use_is_refused():
    from worker.scoring.loader import load_scorer
    from worker.serving.grpc_server import make_grpc_server
    from worker.serving.service import ScoreService

    first, port = make_grpc_server(ScoreService(load_scorer(None)), "127.0.0.1", 0)
    first.start()
    try:
        with pytest.raises(OSError):
            make_grpc_server(ScoreService(load_scorer(None)), "127.0.0.1", port)
    finally:
        first.stop(0)


def test_generated_code_matches_the_proto(tmp_path):
    pytest.importorskip("grpc_tools")
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "sync_scorer.proto").write_bytes((REPO / "schemas" / "sync_scorer.proto").read_bytes())
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I.", "--python_out=.", "--grpc_python_out=.",
                    "--pyi_out=.", "schemas/sync_scorer.proto"], cwd=tmp_path, check=True)
    for name in ("sync_scorer_pb2.py", "sync_scorer_pb2_grpc.py", "sync_scorer_pb2.pyi"):
        assert filecmp.cmp(tmp_path / "schemas" / name, REPO / "schemas" / name, shallow=False), \
            f"schemas/{name} is stale: run `make proto`"


def test_serve_cli_grpc_port_errors_are_one_line(capsys):
    from worker.cli import main

    assert main(["serve", "--grpc-port", "-5"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--grpc-port" in err[0]


def test_a_grpc_port_in_use_is_one_line_that_says_so():
    """gRPC core logged its own "E... add_port.cc" line before serve's error, which said only
    "Failed to bind" and pointed at GRPC_VERBOSITY (a probe)."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "worker.cli", "serve", "--port", "0", "--grpc-port", str(port),
                               "--device", "cpu"], capture_output=True, text=True, timeout=120, check=False)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(err) == 1, proc.stderr
    assert f"cannot listen for gRPC on 127.0.0.1:{port}" in err[0] and "Address already in use" in err[0], err


def test_serve_command_answers_on_both_ports_and_stops_cleanly_on_sigterm():
    import json
    import re
    import signal
    import urllib.request

    proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "serve", "--port", "0", "--grpc-port", "0",
                             "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+) .*gRPC 127\.0\.0\.1:(\d+)", line)
        assert m, line + proc.stderr.read() if proc.poll() is not None else line
        with urllib.request.urlopen(f"http://127.0.0.1:{m.group(1)}/healthz", timeout=10) as resp:
            scorer = json.loads(resp.read())["scorer"]
        with grpc.insecure_channel(f"127.0.0.1:{m.group(2)}") as channel:
            info = pb_grpc.SyncScorerStub(channel).Info(pb.InfoRequest(), timeout=10)
        assert info.scorer == scorer
    finally:
        proc.send_signal(signal.SIGTERM)  # how Kubernetes stops the pod
        proc.wait(30)
    assert proc.returncode == 0


def test_score_clip_honours_start_sample_and_present(stub):
    """ScoreClip ignored Audio.start_sample and Frames.present (ScoreBlock read both)."""
    from worker.synth.clip import generate_clip

    client, _ = stub
    clip = generate_clip(seed=3, seconds=4.0, audio_offset_ms=0.0)
    req = _request(clip, 0, clip.frames.shape[0], 0.0)
    pcm = (np.clip(clip.audio[1920:], -1, 1) * 32767).astype("<i2").tobytes()
    req.audio.data, req.audio.start_sample = pcm, 1920  # in sync, the audio from 120 ms on
    res = client.ScoreClip(req)
    assert res.direction == "IN_SYNC" and abs(res.offset_ms) < 1000.0 / clip.fps, res
    req = _request(clip, 0, clip.frames.shape[0], 0.0)
    req.frames.present.extend([False] * clip.frames.shape[0])
    res = client.ScoreClip(req)
    assert res.label == "NO_FACE" and {w.label for w in res.windows} == {"NO_FACE"}


def test_expired_calls_waiting_for_the_scorer_free_their_threads():
    """Calls whose deadline passes while another request holds the scorer give their thread back
    (they waited for the scorer's lock to the end before: with the server's threads all taken by
    expired ScoreBlock calls, an Info call could not run)."""
    import time

    from worker.scoring.heuristic import HeuristicScorer
    from worker.serving.grpc_server import make_grpc_server
    from worker.serving.service import ScoreService
    from worker.synth.clip import generate_clip

    service = ScoreService(HeuristicScorer())
    server, port = make_grpc_server(service, "127.0.0.1", 0, threads=2)
    server.start()
    clip = generate_clip(seed=5156, seconds=2.0, audio_offset_ms=0.0)
    request = _request(clip, 16, 32, 240.0)
    cancelled = service.metrics.requests.labels("grpc", "ScoreBlock", "cancelled")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            client = pb_grpc.SyncScorerStub(channel)
            with service._lock:  # a long request is being scored
                for _ in range(2):  # one per server thread
                    with pytest.raises(grpc.RpcError) as err:
                        client.ScoreBlock(request, timeout=0.3)
                    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                assert client.Info(pb.InfoRequest(), timeout=5).scorer == service.scorer.name
                deadline = time.monotonic() + 5
                while cancelled._value.get() < 2 and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert cancelled._value.get() == 2  # both stopped while the scorer was still busy
            assert client.ScoreBlock(request, timeout=10).kind == "BLOCK"
    finally:
        server.stop(0)


def test_present_false_reads_as_no_face_in_blocks_as_in_clips(stub):
    """Frames.present false is the contract's RoiRef with no roi (no face): ScoreClip read it as
    NO_FACE, ScoreBlock as frames that never arrived (LOW_QUALITY) for the same frames."""
    from worker.synth.clip import generate_clip

    client, _ = stub
    clip = generate_clip(seed=3, seconds=2.0, audio_offset_ms=0.0)
    req = _request(clip, 16, 32, 240.0)
    req.frames.present.extend([False] * 16)
    assert client.ScoreBlock(req).label == "NO_FACE"
    req = _request(clip, 0, 25, 240.0)
    req.frames.present.extend([False] * 25)
    assert client.ScoreWindow(req).label == "NO_FACE"


def test_a_call_stopped_by_the_shutdown_is_unavailable_and_logged_so(stub, caplog):
    """serve's help said calls past the shutdown's grace end CANCELLED (grpcio ends them
    UNAVAILABLE), and the log called them "the caller left". A call stopped while serve stops is
    UNAVAILABLE now and logged as the shutdown's."""
    import logging
    import threading

    from worker.serving.cli import add_parser
    from worker.serving.grpc_server import SyncScorerServicer
    from worker.synth.clip import generate_clip

    _client, service = stub
    clip = generate_clip(seed=5154, seconds=2.0, audio_offset_ms=0.0)
    request = _request(clip, 0, clip.frames.shape[0], 0.0)

    class Stopped:  # the call grpcio ends as the server stops
        def is_active(self) -> bool:
            return False

        def abort(self, code, details):
            raise RuntimeError(code, details)

    stopping = threading.Event()
    stopping.set()
    with caplog.at_level(logging.INFO, logger="sync_scorer.serve.grpc"), pytest.raises(RuntimeError) as err:
        SyncScorerServicer(service, stopping).ScoreClip(request, Stopped())
    assert err.value.args[0] == grpc.StatusCode.UNAVAILABLE and "stopping" in err.value.args[1]
    assert "for the shutdown" in caplog.text and "caller" not in caplog.text
    import argparse

    text = add_parser(argparse.ArgumentParser().add_subparsers()).format_help()
    assert "UNAVAILABLE" in text and "CANCELLED" not in text


def test_occluded_frames_read_as_occluded_in_clips_and_blocks(stub):
    """Frames.occluded (RoiRef.occluded): the gRPC API had no way to send it."""
    from worker.synth.clip import generate_clip

    client, _ = stub
    clip = generate_clip(seed=3, seconds=4.0, audio_offset_ms=0.0)
    req = _request(clip, 0, clip.frames.shape[0], 0.0)
    req.frames.occluded.extend([True] * clip.frames.shape[0])
    res = client.ScoreClip(req)
    assert {w.label for w in res.windows} == {"OCCLUDED"}, res
    info = client.Info(pb.InfoRequest())
    block = _request(clip, 32, 48, info.search_margin_ms)
    block.frames.occluded.extend([True] * 16)
    assert client.ScoreBlock(block).label == "OCCLUDED"
    block = _request(clip, 32, 48, info.search_margin_ms)
    assert client.ScoreBlock(block).label != "OCCLUDED"


def test_flags_of_another_count_than_the_frames_are_refused_before_they_are_converted():
    """60 MB of Frames.present became a 60-million-item list (670 MB) before its length was
    checked (a probe). The count is compared with the frames' first."""
    from worker.serving.grpc_server import request_body
    from worker.serving.request import RequestError
    from worker.synth.clip import generate_clip

    clip = generate_clip(seed=5158, seconds=2.0, audio_offset_ms=0.0)
    req = _request(clip, 16, 32, 240.0)
    req.frames.present.extend([True] * (4 << 20))
    with pytest.raises(RequestError, match="present must be a list of 16 booleans"):
        request_body(req)
    req = _request(clip, 16, 32, 240.0)
    req.frames.occluded.extend([False] * 17)
    with pytest.raises(RequestError, match="occluded must be a list of 16 booleans"):
        request_body(req)
    req.frames.ClearField("occluded")
    req.frames.occluded.extend([False] * 16)
    assert request_body(req)["occluded"] == [False] * 16


def test_calls_over_the_byte_budget_are_resource_exhausted(stub):
    """gRPC calls count against the same budget as HTTP bodies: past it RESOURCE_EXHAUSTED."""
    import threading
    import time

    from worker.scoring.heuristic import HeuristicScorer
    from worker.serving.grpc_server import make_grpc_server
    from worker.serving.service import ScoreService
    from worker.synth.clip import generate_clip

    clip = generate_clip(seed=5159, seconds=2.0, audio_offset_ms=0.0)
    request = _request(clip, 16, 32, 240.0)
    service = ScoreService(HeuristicScorer(), max_pending_bytes=request.ByteSize() * 3 // 2)
    server, port = make_grpc_server(service, "127.0.0.1", 0)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            client = pb_grpc.SyncScorerStub(channel)
            results = []
            with service._lock:
                waiting = threading.Thread(target=lambda: results.append(client.ScoreBlock(request, timeout=60)))
                waiting.start()
                deadline = time.monotonic() + 10
                while service.budget.used_bytes == 0 and time.monotonic() < deadline:
                    time.sleep(0.01)
                with pytest.raises(grpc.RpcError) as err:
                    client.ScoreBlock(request, timeout=30)
                assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "busy" in err.value.details()
            waiting.join(60)
            assert results and results[0].kind == "BLOCK"
            assert service.metrics.requests.labels("grpc", "ScoreBlock", "busy")._value.get() == 1
            assert client.ScoreBlock(request, timeout=30).kind == "BLOCK" and service.budget.used_bytes == 0
    finally:
        server.stop(0)


def test_info_is_answered_while_scoring_calls_wait_and_calls_past_the_slots_are_refused():
    """The pool of 4 threads: with 8 ScoreClip callers Info waited 1.9 s for a thread (HTTP's
    /healthz 9 ms), and calls queued without bound. Now scoring calls take at most
    THREADS - INFO_THREADS threads; past them RESOURCE_EXHAUSTED."""
    import threading
    import time

    from worker.scoring.heuristic import HeuristicScorer
    from worker.serving.grpc_server import GRPC_HELD_PER_BYTE, INFO_THREADS, THREADS, make_grpc_server
    from worker.serving.service import ScoreService
    from worker.synth.clip import generate_clip

    clip = generate_clip(seed=5160, seconds=2.0, audio_offset_ms=0.0)
    request = _request(clip, 16, 32, 240.0)
    service = ScoreService(HeuristicScorer())
    server, port = make_grpc_server(service, "127.0.0.1", 0)
    server.start()
    slots = THREADS - INFO_THREADS
    results, callers = [], []
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            client = pb_grpc.SyncScorerStub(channel)

            def wait_for_waiting(n: int) -> None:
                deadline = time.monotonic() + 20
                held = GRPC_HELD_PER_BYTE * request.ByteSize()
                while service.budget.used_bytes < n * held and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert service.budget.used_bytes == n * held

            with service._lock:  # a long request is being scored
                for n in (8, slots):
                    while len(callers) < n:
                        callers.append(threading.Thread(
                            target=lambda: results.append(client.ScoreBlock(request, timeout=60).kind)))
                        callers[-1].start()
                    wait_for_waiting(n)
                    assert client.Info(pb.InfoRequest(), timeout=20).scorer == service.scorer.name
                with pytest.raises(grpc.RpcError) as err:
                    client.ScoreBlock(request, timeout=20)
                assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "busy" in err.value.details()
            for t in callers:
                t.join(60)
            assert results == ["BLOCK"] * slots
    finally:
        server.stop(0)
