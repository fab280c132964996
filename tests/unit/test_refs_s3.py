"""worker.refs s3:// against moto's S3 server on 127.0.0.1 (a real HTTP endpoint, boto3 unpatched)."""

from __future__ import annotations

import io
import os
import socket
from collections.abc import Iterator

import numpy as np
import pytest

from worker.refs import RefError, RoiResolver
from worker.refs.s3 import S3Resolver

GRAY = np.arange(9 * 8, dtype=np.uint8).reshape(9, 8)
RGB = (np.arange(8 * 10 * 3, dtype=np.uint8) * 7).reshape(8, 10, 3)
BUCKET = "rois"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        import boto3

        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        npy = io.BytesIO()
        np.save(npy, RGB)
        s3.put_object(Bucket=BUCKET, Key="sess-1/gray.raw", Body=GRAY.tobytes())
        s3.put_object(Bucket=BUCKET, Key="sess-1/rgb.npy", Body=npy.getvalue())
        s3.put_object(Bucket=BUCKET, Key="sess-1/with space.raw", Body=GRAY.tobytes())
        s3.put_object(Bucket=BUCKET, Key="sess-1/short.raw", Body=GRAY.tobytes()[:-1])
        s3.put_object(Bucket=BUCKET, Key="sess-1/huge.raw", Body=b"\0" * 200_000)
        s3.put_object(Bucket=BUCKET, Key="sess-1/empty.raw", Body=b"")
        yield endpoint
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _s3(key: str, shape: list[int], fmt: str = "GRAY8", bucket: str = BUCKET) -> dict:
    return {"uri": f"s3://{bucket}/{key}", "shape": shape, "format": fmt}


def test_s3_raw_and_npy(s3_endpoint: str) -> None:
    r = RoiResolver(s3_endpoint_url=s3_endpoint, s3_region="us-east-1")
    assert np.array_equal(r.resolve(_s3("sess-1/gray.raw", [9, 8])), GRAY)
    assert np.array_equal(r.resolve(_s3("sess-1/rgb.npy", [8, 10, 3], "RGB24")), RGB)
    assert np.array_equal(r.resolve(_s3("sess-1/with%20space.raw", [9, 8])), GRAY)
    assert r.resolved() == {"s3": 3}


def test_s3_failures_are_counted(s3_endpoint: str) -> None:
    r = RoiResolver(s3_endpoint_url=s3_endpoint, s3_region="us-east-1")
    outcomes = {}
    for label, roi in {
        "missing key": _s3("sess-1/nope.raw", [9, 8]),
        "missing bucket": _s3("k.raw", [9, 8], bucket="no-such-bucket"),
        "short": _s3("sess-1/short.raw", [9, 8]),
        "format mismatch": _s3("sess-1/gray.raw", [9, 8], "RGB24"),
        "too big": _s3("sess-1/huge.raw", [9, 8]),
        "empty": _s3("sess-1/empty.raw", [9, 8]),
        "no key": {"uri": "s3://rois", "shape": [9, 8], "format": "GRAY8"},
    }.items():
        with pytest.raises(RefError) as info:
            r.resolve(roi)
        outcomes[label] = info.value.reason
    assert outcomes == {
        "missing key": "not_found",
        "missing bucket": "not_found",
        "short": "wrong_size",
        "format mismatch": "wrong_size",
        "too big": "wrong_size",
        "empty": "wrong_size",
        "no key": "bad_ref",
    }
    assert r.failures() == {("s3", "not_found"): 2, ("s3", "wrong_size"): 4, ("s3", "bad_ref"): 1}


def test_s3_endpoint_down_is_a_backend_error_not_a_hang(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    dead = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    r = RoiResolver(uri_resolvers={"s3": S3Resolver(dead, "us-east-1", connect_timeout_s=0.5, max_attempts=1)})
    with pytest.raises(RefError) as info:
        r.resolve(_s3("sess-1/gray.raw", [9, 8]))
    assert info.value.reason == "backend_error" and info.value.scheme == "s3"


def test_an_object_the_store_refuses_is_that_objects_failure_not_the_stores(monkeypatch: pytest.MonkeyPatch) -> None:
    """A review: AccessDenied was a backend_error, the store's failure, so one denied object among
    good ones, asked again alone, made the store look down and its outage held (32 times in 40 s)."""
    from botocore.stub import Stubber

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    s3 = S3Resolver("http://127.0.0.1:9", "us-east-1")
    reasons = []
    with Stubber(s3.client()) as stub:
        for code, status in (("AccessDenied", 403), ("InvalidObjectState", 403), ("SlowDown", 503),
                             ("InternalError", 500), ("RequestTimeTooSkewed", 403), ("ExpiredToken", 400)):
            stub.add_client_error("get_object", service_error_code=code, http_status_code=status)
            with pytest.raises(RefError) as info:
                s3("s3://rois/k.raw", (9, 8))
            reasons.append(info.value.reason)
    assert reasons == ["unreadable", "unreadable", "backend_error", "backend_error", "backend_error",
                       "backend_error"]
