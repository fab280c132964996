"""A schema-registry outage is not a bad record: only a definite "schema not found" is.

Before, every exception from the registry (HTTP 503, connection refused, a timeout) became
DecodeError("unknown schema id"), and the worker dead-lettered valid records and committed past
them (a review's e2e_registry.py: a registry restart lost every record sent meanwhile).
"""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError

from schemas import AvroCodec, DecodeError
from schemas.codec import RegistryBackoff, RegistryUnavailable, schema_text

AUDIO = {"session_id": "s", "seq": 0, "start_sample": 0, "sample_rate": 16000, "channels": 1,
         "encoding": "PCM_S16LE", "data": b"\x00\x01"}


def _framed(schema_id: int) -> bytes:
    return b"\x00" + struct.pack(">I", schema_id) + AvroCodec("AudioChunk").encode(AUDIO)


class _Registry:
    """A registry client that fails with ``error`` while it is set, else knows schema id 7."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error
        self.calls = 0

    def get_schema(self, schema_id: int) -> Schema:
        self.calls += 1
        if self.error is not None:
            raise self.error
        if schema_id != 7:
            raise SchemaRegistryError(404, 40403, "Schema not found")
        return Schema(schema_text("AudioChunk"), "AVRO")


class _Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


@pytest.mark.parametrize("error", [
    SchemaRegistryError(503, 50301, "registry unavailable"),
    SchemaRegistryError(500, 50001, "error in the backend data store"),
    SchemaRegistryError(401, 40101, "unauthorized"),
    SchemaRegistryError(404, -1, "Unknown Schema Registry Error: <html>not found</html>"),  # a proxy
    ConnectionRefusedError(111, "Connection refused"),
    TimeoutError("timed out"),
])
def test_an_outage_is_registry_unavailable_not_a_decode_error(error: BaseException) -> None:
    codec = AvroCodec("AudioChunk", wire="confluent", registry=_Registry(error))
    with pytest.raises(RegistryUnavailable) as info:
        codec.decode(_framed(7))
    assert not isinstance(info.value, DecodeError)
    assert info.value.retry_in_s > 0 and "unavailable" in info.value.reason


def test_only_a_definite_not_found_makes_a_record_bad() -> None:
    codec = AvroCodec("AudioChunk", wire="confluent", registry=_Registry(None))
    with pytest.raises(DecodeError, match="unknown schema id 8"):
        codec.decode(_framed(8))
    assert codec.decode(_framed(7))["session_id"] == "s"


def test_after_an_outage_lookups_fail_fast_until_the_backoff_passes_then_recover() -> None:
    registry, clock = _Registry(SchemaRegistryError(503, 50301, "down")), _Clock()
    codec = AvroCodec("AudioChunk", wire="confluent", registry=registry, clock_s=clock)
    with pytest.raises(RegistryUnavailable) as first:
        codec.decode(_framed(7))
    assert registry.calls == 1 and first.value.retry_in_s == pytest.approx(0.5)
    clock.now_s += 0.4
    with pytest.raises(RegistryUnavailable) as fast:  # within the back-off: the registry is not asked
        codec.decode(_framed(7))
    assert registry.calls == 1 and fast.value.retry_in_s == pytest.approx(0.1)
    clock.now_s += 0.1
    with pytest.raises(RegistryUnavailable) as second:  # asked again, still down: waits longer
        codec.decode(_framed(7))
    assert registry.calls == 2 and second.value.retry_in_s == pytest.approx(1.0)
    registry.error = None
    clock.now_s += 1.0
    assert codec.decode(_framed(7))["seq"] == 0
    assert registry.calls == 3
    registry.error = SchemaRegistryError(503, 50301, "down")
    assert codec.decode(_framed(7))["seq"] == 0  # cached ids decode through an outage


def test_backoff_doubles_to_a_cap_and_an_answer_resets_it() -> None:
    b = RegistryBackoff(first_s=0.5, max_s=4.0)
    assert b.wait_s(0.0) == 0.0
    assert [b.failed(0.0) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert b.wait_s(1.0) == 3.0 and b.wait_s(4.0) == 0.0
    b.answered()
    assert b.wait_s(0.0) == 0.0 and b.failed(10.0) == 0.5


def test_a_registry_that_never_answers_costs_a_bounded_lookup() -> None:
    """Before: the client had no timeout (httpx waits forever) and retried 3 times."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)  # accepts (the kernel does) and never answers
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    codec = AvroCodec("AudioChunk", wire="confluent", registry={"url": url})
    outcome: list[BaseException] = []

    def decode() -> None:
        try:
            codec.decode(_framed(7))
        except BaseException as e:  # noqa: BLE001 - the test reads it
            outcome.append(e)

    t0 = time.monotonic()
    thread = threading.Thread(target=decode, daemon=True)
    thread.start()
    thread.join(8.0)
    try:
        assert not thread.is_alive(), "the lookup hung"
        assert time.monotonic() - t0 < 4.0
        assert isinstance(outcome[0], RegistryUnavailable)
    finally:
        server.close()
