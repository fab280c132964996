"""worker.refs: inline pixels, POSIX shared memory and file:// references, failures counted."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np
import pytest

from schemas import AvroCodec
from worker.refs import REASONS, RefError, RoiResolver

RNG = np.random.default_rng(7)
GRAY = RNG.integers(0, 256, size=(9, 8), dtype=np.uint8)
RGB = RNG.integers(0, 256, size=(8, 10, 3), dtype=np.uint8)


def _reason(resolver: RoiResolver, roi: object) -> str:
    with pytest.raises(RefError) as info:
        resolver.resolve(roi)
    assert info.value.reason in REASONS
    return info.value.reason


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


# --- inline ------------------------------------------------------------------------------------


def test_inline_gray_and_rgb_keep_row_major_layout() -> None:
    r = RoiResolver()
    gray = r.resolve({"width": 8, "height": 9, "format": "GRAY8", "data": GRAY.tobytes()})
    rgb = r.resolve({"width": 10, "height": 8, "format": "RGB24", "data": RGB.tobytes()})
    assert gray.dtype == np.uint8 and gray.shape == (9, 8) and np.array_equal(gray, GRAY)
    assert rgb.shape == (8, 10, 3) and np.array_equal(rgb, RGB)
    assert rgb[1, 2, 0] == RGB.tobytes()[(1 * 10 + 2) * 3]  # R of row 1, column 2
    gray[0, 0] = 1  # owned and writable, not a view on the event's bytes
    assert r.resolved() == {"inline": 2}


@pytest.mark.parametrize(
    "roi,reason",
    [
        ({"width": 8, "height": 9, "format": "GRAY8", "data": GRAY.tobytes()[:-1]}, "wrong_size"),
        ({"width": 8, "height": 9, "format": "RGB24", "data": GRAY.tobytes()}, "wrong_size"),
        ({"width": 8, "height": 9, "format": "YUV420", "data": GRAY.tobytes()}, "bad_ref"),
        ({"width": 0, "height": 9, "format": "GRAY8", "data": b""}, "bad_ref"),
        ({"width": 100_000, "height": 100_000, "format": "GRAY8", "data": b""}, "bad_ref"),
        ({"width": 8, "format": "GRAY8", "data": b""}, "bad_ref"),
    ],
)
def test_inline_failures(roi: dict, reason: str) -> None:
    assert _reason(RoiResolver(), roi) == reason


# --- shared memory -----------------------------------------------------------------------------


@pytest.fixture
def segment():
    """A producer-owned segment: 64 bytes of header, then GRAY, then RGB."""
    shm = shared_memory.SharedMemory(name=f"sstest_{uuid.uuid4().hex[:12]}", create=True, size=64 + GRAY.size + RGB.size)
    shm.buf[64: 64 + GRAY.size] = GRAY.tobytes()
    shm.buf[64 + GRAY.size: 64 + GRAY.size + RGB.size] = RGB.tobytes()
    yield shm
    shm.close()
    shm.unlink()


def test_shm_reads_at_offset_and_leaves_the_segment_alone(segment: shared_memory.SharedMemory) -> None:
    r = RoiResolver()
    gray = r.resolve({"name": segment.name, "offset": 64, "shape": [9, 8], "format": "GRAY8"})
    rgb = r.resolve({"name": "/" + segment.name, "offset": 64 + GRAY.size, "shape": [8, 10, 3], "format": "RGB24"})
    assert np.array_equal(gray, GRAY) and np.array_equal(rgb, RGB)
    # a copy: the producer may reuse its buffer right after
    segment.buf[64] = (int(GRAY[0, 0]) + 1) % 256
    assert gray[0, 0] == GRAY[0, 0]
    # still there for the producer
    again = shared_memory.SharedMemory(name=segment.name)
    again.close()
    assert r.resolved() == {"shm": 2}


def test_shm_reader_process_exit_neither_unlinks_nor_warns(segment: shared_memory.SharedMemory) -> None:
    # Python < 3.13 registers attaches with the resource tracker, which unlinks "leaked" segments
    # at exit and warns. A worker process must do neither to the producer's segment.
    code = textwrap.dedent(f"""
        from worker.refs import RoiResolver
        px = RoiResolver().resolve({{"name": "{segment.name}", "offset": 64, "shape": [9, 8], "format": "GRAY8"}})
        assert px.shape == (9, 8)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "leaked" not in proc.stderr and "resource_tracker" not in proc.stderr, proc.stderr
    still = shared_memory.SharedMemory(name=segment.name)
    assert bytes(still.buf[64:70]) == GRAY.tobytes()[:6]
    still.close()


def test_shm_failures(segment: shared_memory.SharedMemory) -> None:
    r = RoiResolver()
    missing = {"name": f"sstest_missing_{uuid.uuid4().hex[:8]}", "offset": 0, "shape": [9, 8], "format": "GRAY8"}
    assert _reason(r, missing) == "not_found"
    past_end = {"name": segment.name, "offset": segment.size - 10, "shape": [9, 8], "format": "GRAY8"}
    assert _reason(r, past_end) == "wrong_size"
    assert _reason(r, {"name": "a/b", "offset": 0, "shape": [9, 8], "format": "GRAY8"}) == "bad_ref"
    assert _reason(r, {"name": segment.name, "offset": -1, "shape": [9, 8], "format": "GRAY8"}) == "bad_ref"
    assert _reason(r, {"name": segment.name, "offset": 0, "shape": [9, 8, 3], "format": "GRAY8"}) == "bad_ref"
    assert r.failures() == {("shm", "not_found"): 1, ("shm", "wrong_size"): 1, ("shm", "bad_ref"): 3}


# --- file:// -----------------------------------------------------------------------------------


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    root, outside = tmp_path / "rois", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    (root / "gray.raw").write_bytes(GRAY.tobytes())
    (root / "rgb.npy").write_bytes(_npy(RGB))
    (root / "gray1.npy").write_bytes(_npy(GRAY[:, :, None]))
    (root / "short.raw").write_bytes(GRAY.tobytes()[:-3])
    (root / "float.npy").write_bytes(_npy(GRAY.astype(np.float32)))
    (root / "big.raw").write_bytes(b"\0" * 100_000)
    (root / "sub").mkdir()
    (outside / "secret.raw").write_bytes(GRAY.tobytes())
    os.symlink(outside / "secret.raw", root / "link-out.raw")
    os.symlink(root / "gray.raw", root / "link-in.raw")
    return root, outside


def _file(path: Path | str, shape: list[int], fmt: str = "GRAY8") -> dict:
    return {"uri": f"file://{path}", "shape": shape, "format": fmt}


def test_file_raw_and_npy_under_the_roots(roots: tuple[Path, Path]) -> None:
    root, _ = roots
    r = RoiResolver(allowed_file_roots=[root])
    assert np.array_equal(r.resolve(_file(root / "gray.raw", [9, 8])), GRAY)
    assert np.array_equal(r.resolve(_file(root / "rgb.npy", [8, 10, 3], "RGB24")), RGB)
    assert np.array_equal(r.resolve(_file(root / "rgb.npy", [8, 10], "RGB24")), RGB)
    assert np.array_equal(r.resolve(_file(root / "gray1.npy", [9, 8])), GRAY)
    assert np.array_equal(r.resolve(_file(root / "link-in.raw", [9, 8])), GRAY)  # symlink within root
    assert np.array_equal(r.resolve(_file(f"{root}/sub/../gray.raw", [9, 8])), GRAY)
    assert r.resolved() == {"file": 6}


def test_file_failures(roots: tuple[Path, Path]) -> None:
    root, outside = roots
    r = RoiResolver(allowed_file_roots=[root])
    assert _reason(r, _file(outside / "secret.raw", [9, 8])) == "outside_roots"
    assert _reason(r, _file(root / "link-out.raw", [9, 8])) == "outside_roots"  # symlink escaping
    assert _reason(r, _file(f"{root}/../elsewhere/secret.raw", [9, 8])) == "outside_roots"
    assert _reason(r, _file(f"{root}2/x.raw", [9, 8])) == "outside_roots"  # prefix is not a parent
    assert _reason(r, _file(root / "nope.raw", [9, 8])) == "not_found"
    assert _reason(r, _file(root / "short.raw", [9, 8])) == "wrong_size"
    assert _reason(r, _file(root / "gray.raw", [9, 8], "RGB24")) == "wrong_size"
    assert _reason(r, _file(root / "float.npy", [9, 8])) == "wrong_size"
    assert _reason(r, _file(root / "big.raw", [9, 8])) == "wrong_size"
    assert _reason(r, _file(root / "sub", [9, 8])) == "unreadable"
    # a FIFO with no writer: refused at once, not waited on by the poll loop (a review: it hung)
    os.mkfifo(root / "pipe.raw")
    answer: list[str] = []
    asked = threading.Thread(target=lambda: answer.append(_reason(r, _file(root / "pipe.raw", [9, 8]))), daemon=True)
    asked.start()
    asked.join(10.0)
    assert answer == ["unreadable"]
    assert _reason(r, {"uri": "file://otherhost/etc/x", "shape": [9, 8], "format": "GRAY8"}) == "bad_ref"
    assert _reason(r, {"uri": "file:relative.raw", "shape": [9, 8], "format": "GRAY8"}) == "bad_ref"
    assert _reason(RoiResolver(), _file(root / "gray.raw", [9, 8])) == "outside_roots"  # no roots set
    assert r.failures_by_reason() == {"outside_roots": 4, "not_found": 1, "wrong_size": 4, "unreadable": 2,
                                      "bad_ref": 2}


# --- the resolver as a whole -------------------------------------------------------------------


@pytest.mark.parametrize(
    "roi",
    [None, [], 42, "s3://b/k", {"shape": [2, 2]}, {"uri": "gs://b/k", "shape": [2, 2], "format": "GRAY8"},
     {"uri": "s3://b/k", "shape": "abc", "format": "GRAY8"}, {"name": None, "shape": None, "format": None},
     ("syncscorer.v1.InlinePixels", {"width": 1, "height": 1, "format": "GRAY8", "data": b""})],
)
def test_garbage_is_always_a_ref_error(roi: object) -> None:
    failures: list[RefError] = []
    r = RoiResolver(on_failure=failures.append)
    with pytest.raises(RefError):
        r.resolve(roi)
    assert len(failures) == 1 and sum(r.failures().values()) == 1
    assert {scheme for scheme, _ in r.failures()} <= {"roi", "inline", "shm", "file", "s3", "uri"}


def test_try_resolve_and_a_failing_metrics_hook() -> None:
    def broken_hook(err: RefError) -> None:
        raise RuntimeError("metrics down")

    r = RoiResolver(on_failure=broken_hook)
    pixels, err = r.try_resolve({"width": 8, "height": 8, "format": "GRAY8", "data": b"\x07" * 64})
    assert err is None and pixels is not None and pixels.tolist() == [[7] * 8] * 8
    pixels, err = r.try_resolve(None)
    assert pixels is None and err is not None and err.reason == "no_roi"


def test_decoded_roiref_resolves(tmp_path: Path) -> None:
    (tmp_path / "f.raw").write_bytes(RGB.tobytes())
    codec = AvroCodec("RoiRef")
    event = {"session_id": "s", "frame_index": 1, "pts_ms": 33, "fps": 30.0,
             "roi": {"uri": f"file://{tmp_path}/f.raw", "shape": [8, 10], "format": "RGB24"}}
    decoded = codec.decode(codec.encode(event))
    assert np.array_equal(RoiResolver(allowed_file_roots=[tmp_path]).resolve(decoded["roi"]), RGB)


def test_from_config_reads_the_refs_section(tmp_path: Path) -> None:
    class RefsConfig:
        allowed_file_roots = (tmp_path,)
        s3_endpoint_url = "http://127.0.0.1:1"
        s3_region = "us-east-1"

    r = RoiResolver.from_config(RefsConfig())
    (tmp_path / "g.raw").write_bytes(GRAY.tobytes())
    assert np.array_equal(r.resolve(_file(tmp_path / "g.raw", [9, 8])), GRAY)
    assert r.uri_resolvers["s3"].endpoint_url == "http://127.0.0.1:1"
