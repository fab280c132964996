"""ROI pixels in an S3 object (``s3://bucket/key``) through boto3, endpoint configurable
(MinIO, moto, a VPC endpoint). Objects hold raw pixels or a .npy array.

Timeouts and retries are short on purpose: a store that hangs must cost a missing frame, not a
stalled worker. The worker reads through ``RoiResolver.resolve_batch``, on threads of their own (a
store that answers nothing for 1 s counts as hung; a slow one is read on across poll-loop turns),
so these only bound how long a read holds one of those threads.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np

from worker.refs.errors import BACKEND_ERROR, BAD_REF, NOT_FOUND, UNREADABLE, WRONG_SIZE, RefError
from worker.refs.pixels import max_object_bytes, pixels_from_bytes

SCHEME = "s3"
_NOT_FOUND_CODES = {"NoSuchKey", "NoSuchBucket", "404", "NotFound"}
# 4xx answers that are about the store or the client's session, not the object: the store failed
# (every read would), and tried again later they may pass
_STORE_CODES = {"RequestTimeout", "RequestTimeTooSkewed", "ExpiredToken", "TokenRefreshRequired", "Throttling",
                "ThrottlingException", "TooManyRequests", "SlowDown"}


class S3Resolver:
    """``s3://bucket/key`` -> pixels. boto3 is imported and the client built on first use.

    Args:
        endpoint_url: e.g. ``http://127.0.0.1:9000``; None for AWS.
        region: AWS region (None: boto3's default chain).
        client: a ready boto3 S3 client (overrides the two above).
        connect_timeout_s, read_timeout_s, max_attempts, max_connections: botocore settings.
    """

    def __init__(
        self,
        endpoint_url: str | None = None,
        region: str | None = None,
        *,
        client: Any = None,
        connect_timeout_s: float = 1.0,
        read_timeout_s: float = 2.0,
        max_attempts: int = 2,
        max_connections: int = 10,
    ) -> None:
        self.endpoint_url = endpoint_url
        self.region = region
        self._client = client
        self._client_lock = threading.Lock()
        self._timeouts = (connect_timeout_s, read_timeout_s, max_attempts)
        self._max_connections = max_connections  # at least RoiResolver's threads per store

    def client(self) -> Any:
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    import boto3  # lazy: ~0.5 s to import, and only S3 users need it
                    from botocore.config import Config

                    connect_s, read_s, attempts = self._timeouts
                    config = Config(connect_timeout=connect_s, read_timeout=read_s,
                                    retries={"max_attempts": attempts, "mode": "standard"},
                                    max_pool_connections=self._max_connections)
                    # A client is thread-safe; a Session is not, so build one just for it.
                    self._client = boto3.session.Session().client(
                        "s3", endpoint_url=self.endpoint_url, region_name=self.region, config=config
                    )
        return self._client

    @staticmethod
    def parse(uri: str) -> tuple[str, str]:
        parts = urlsplit(uri)
        bucket, key = parts.netloc, unquote(parts.path.lstrip("/"))
        if parts.scheme != "s3" or not bucket or not key:
            raise RefError(BAD_REF, f"want s3://bucket/key, got {uri!r}", scheme=SCHEME)
        return bucket, key

    def __call__(self, uri: str, shape: tuple[int, ...]) -> np.ndarray:
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = self.parse(uri)
        limit = max_object_bytes(shape)
        try:
            # Range caps what a wrong reference can make us download.
            response = self.client().get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{limit}")
            body = response["Body"]
            try:
                data = body.read(limit + 1)
            finally:
                body.close()
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code in _NOT_FOUND_CODES:
                raise RefError(NOT_FOUND, f"s3://{bucket}/{key}: {code}", scheme=SCHEME) from e
            if code == "InvalidRange":  # an empty object
                raise RefError(WRONG_SIZE, f"s3://{bucket}/{key} is empty", scheme=SCHEME) from e
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            if 400 <= int(status) < 500 and code not in _STORE_CODES:
                # the store answered about this object (AccessDenied, InvalidObjectState...): the
                # object's failure, not the store's (a review: one denied object among good ones
                # made the store look down and its outage held, 32 times in 40 s)
                raise RefError(UNREADABLE, f"s3://{bucket}/{key}: {code or status}", scheme=SCHEME) from e
            raise RefError(BACKEND_ERROR, f"s3://{bucket}/{key}: {code or e}", scheme=SCHEME) from e
        except BotoCoreError as e:  # endpoint down, timeout, no credentials
            raise RefError(BACKEND_ERROR, f"s3://{bucket}/{key}: {type(e).__name__}: {e}", scheme=SCHEME) from e
        except OSError as e:
            raise RefError(UNREADABLE, f"s3://{bucket}/{key}: {e}", scheme=SCHEME) from e
        total = _total_size(response)
        if total is not None and total > limit:
            raise RefError(WRONG_SIZE, f"s3://{bucket}/{key} has {total} bytes, more than a "
                           f"{'x'.join(map(str, shape))} ROI can take", scheme=SCHEME)
        return pixels_from_bytes(data, shape, scheme=SCHEME)


def _total_size(response: dict) -> int | None:
    # With a Range request the full size is in Content-Range: "bytes 0-N/TOTAL".
    content_range = response.get("ContentRange") or ""
    if "/" in content_range:
        tail = content_range.rsplit("/", 1)[1]
        if tail.isdigit():
            return int(tail)
    return None
