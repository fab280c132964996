"""Avro encode/decode of the sync-scorer records, schemaless or in the Confluent wire format.

Two wire modes:

* ``"schemaless"``: the plain Avro binary body, nothing else. Reader and writer must agree on the
  writer schema out of band (``writer_schema=`` when it differs from the reader's).
* ``"confluent"``: ``0x00`` magic byte + 4-byte big-endian schema id + Avro body; the id is
  registered/looked up in a schema registry (confluent-kafka's ``SchemaRegistryClient``; a
  ``{"url": "mock://..."}`` config gives an in-process registry for tests). On decode the writer
  schema is fetched by id and resolved against this codec's (reader) schema, so a reader on an old
  schema reads records written with a newer compatible one and vice versa.

Schemas are parsed once (``load_schema`` caches). Importing this module never imports Kafka; the
schema-registry client is imported only when a confluent-mode codec is built from a config dict.
"""

from __future__ import annotations

import io
import json
import re
import struct
import threading
import time
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any, Literal

import fastavro
from fastavro.schema import to_parsing_canonical_form

SCHEMA_DIR = Path(__file__).resolve().parent
SCHEMA_NAMES: tuple[str, ...] = ("AudioChunk", "RoiRef", "LipSyncSignal", "DeadLetter")
NAMESPACE = "syncscorer.v1"

WireMode = Literal["schemaless", "confluent"]
_MAGIC = 0
_HEADER = struct.Struct(">bI")  # magic byte, schema id (big-endian unsigned 32 bit)


class DecodeError(ValueError):
    """Bytes that are not a valid record of the expected schema. ``reason`` is one line, fit for a
    dead-letter record."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RegistryUnavailable(RuntimeError):
    """The schema registry did not answer whether a schema id exists (connection refused, timeout,
    HTTP 5xx, an auth or proxy error): nothing is known about the record, so it must be read again
    later, never dead-lettered. ``retry_in_s``: until then this codec does not ask again and fails
    fast (a registry that hangs must not hold the caller once per record)."""

    def __init__(self, reason: str, retry_in_s: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_in_s = retry_in_s


class EncodeError(ValueError):
    """A record that does not fit its schema (missing/extra field, wrong type) or a registry failure."""


# ---------------------------------------------------------------------------------------------
# Schemas


def schema_path(name: str) -> Path:
    if name not in SCHEMA_NAMES:
        raise KeyError(f"unknown schema {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    return SCHEMA_DIR / f"{name}.avsc"


@cache
def schema_dict(name: str) -> dict:
    """The raw .avsc JSON of a bundled schema (do not mutate)."""
    with open(schema_path(name), encoding="utf-8") as f:
        return json.load(f)


@cache
def schema_text(name: str) -> str:
    """Compact JSON text of a bundled schema, as registered in a schema registry."""
    return json.dumps(schema_dict(name), separators=(",", ":"), sort_keys=False)


@cache
def load_schema(name: str) -> dict:
    """The fastavro-parsed schema of a bundled record type, parsed once per process."""
    return fastavro.parse_schema(schema_dict(name))


def _parse(schema: str | Mapping[str, Any]) -> tuple[dict, str]:
    """(parsed schema, JSON text) from a bundled name, a JSON text or a schema dict."""
    if isinstance(schema, str):
        if schema in SCHEMA_NAMES:
            return load_schema(schema), schema_text(schema)
        try:
            as_dict = json.loads(schema)
        except json.JSONDecodeError as e:
            raise KeyError(f"{schema!r} is neither a bundled schema name nor schema JSON") from e
        return fastavro.parse_schema(as_dict), json.dumps(as_dict, separators=(",", ":"))
    as_dict = dict(schema)
    return fastavro.parse_schema(as_dict), json.dumps(as_dict, separators=(",", ":"))


# ---------------------------------------------------------------------------------------------
# Schema registry


_mock_registries: dict[str, Any] = {}
_mock_lock = threading.Lock()


def registry_client(conf_or_client: Any) -> Any:
    """A schema-registry client from a client object (returned as is) or a config dict.

    ``{"url": "mock://NAME"}`` gives confluent-kafka's in-process mock; the same NAME returns the
    same mock in this process, so a producer-side and a consumer-side codec share one registry as
    they would with a real one.
    """
    if not isinstance(conf_or_client, Mapping):
        return conf_or_client
    from confluent_kafka.schema_registry import SchemaRegistryClient  # lazy: no Kafka at import

    conf = dict(conf_or_client)
    url = str(conf.get("url", ""))
    if url.startswith("mock://"):
        with _mock_lock:
            if url not in _mock_registries:
                # new_client() is what maps mock:// to MockSchemaRegistryClient in confluent-kafka
                # 2.x; the plain constructor would try HTTP.
                _mock_registries[url] = SchemaRegistryClient.new_client(conf)
            return _mock_registries[url]
    return SchemaRegistryClient(conf)


# Schema lookups on decode run on the caller's thread (the worker's poll loop): one attempt,
# bounded, and no retries inside the client (their sleeps would block the caller too; the codec
# backs off instead, see RegistryBackoff). Only where the config does not say otherwise.
_LOOKUP_CONF = {"timeout": 2.0, "max.retries": 0}


def _schema_not_found(exc: BaseException) -> bool:
    """A definite "no such schema id" from a registry: HTTP 404 with a Confluent 404xx error code
    (40403 "Schema not found"; the in-process mock says 40400). A 404 without such a code (a proxy
    or a wrong URL) says nothing about the record."""
    status = getattr(exc, "http_status_code", None)
    code = getattr(exc, "error_code", None)
    return code == 40403 or (status == 404 and isinstance(code, int) and 40400 <= code <= 40499)


class RegistryBackoff:
    """When to ask the registry again after it failed: ``first_s``, doubling per failure in a row
    up to ``max_s``; an answer resets it. Pure: the time is passed in."""

    def __init__(self, first_s: float = 0.5, max_s: float = 30.0) -> None:
        self.first_s, self.max_s = first_s, max_s
        self.failures_in_a_row = 0
        self._retry_at_s = float("-inf")

    def wait_s(self, now_s: float) -> float:
        """Seconds until the registry may be asked again (0: now)."""
        return max(0.0, self._retry_at_s - now_s)

    def failed(self, now_s: float) -> float:
        """Note a failed lookup; returns the seconds to wait before the next one."""
        self.failures_in_a_row += 1
        delay_s = min(self.max_s, self.first_s * 2 ** (self.failures_in_a_row - 1))
        self._retry_at_s = now_s + delay_s
        return delay_s

    def answered(self) -> None:
        self.failures_in_a_row = 0
        self._retry_at_s = float("-inf")


def topic_subject(topic: str) -> str:
    """The subject of a topic's values under Confluent's default TopicNameStrategy."""
    return f"{topic}-value"


# ---------------------------------------------------------------------------------------------
# Codec


class AvroCodec:
    """Encode/decode one record type.

    Args:
        schema: a bundled name ("AudioChunk", ...), schema JSON text or a schema dict. It is the
            writer schema on encode and the reader schema on decode.
        wire: "schemaless" or "confluent" (see the module docstring).
        registry: confluent mode only: a ``SchemaRegistryClient`` or its config dict.
        subject: confluent mode, needed to encode: the subject to register/look up the schema
            under (``topic_subject(topic)`` for the default strategy).
        auto_register: confluent mode: register the schema on first encode (else look it up and
            fail if the registry does not know it).
        writer_schema: schemaless mode: the schema the bytes were written with, when it differs
            from ``schema`` (e.g. replaying data written by an older producer).
        clock_s: monotonic seconds, for the registry back-off (tests pass their own).

    Decoding a record whose writer schema id is not cached asks the registry: a definite "not
    found" is a ``DecodeError`` (a bad record); any other failure is ``RegistryUnavailable`` (an
    outage: read the record again later), and for the back-off after it every uncached id fails
    fast with ``RegistryUnavailable`` too. Ids already cached decode as ever.

    ``encode``/``decode`` are safe to call from several threads (the caches are idempotent).
    """

    def __init__(
        self,
        schema: str | Mapping[str, Any],
        *,
        wire: WireMode = "schemaless",
        registry: Any = None,
        subject: str | None = None,
        auto_register: bool = True,
        writer_schema: str | Mapping[str, Any] | None = None,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        if wire not in ("schemaless", "confluent"):
            raise ValueError(f"wire must be 'schemaless' or 'confluent', not {wire!r}")
        self.wire: WireMode = wire
        self._schema, self._schema_text = _parse(schema)
        self.name: str = self._schema["name"]
        self._writer: dict | None = None
        if writer_schema is not None:
            if wire != "schemaless":
                raise ValueError("writer_schema is for schemaless mode; confluent mode reads it by id")
            writer, _ = _parse(writer_schema)
            same = to_parsing_canonical_form(writer) == to_parsing_canonical_form(self._schema)
            self._writer = None if same else writer
        self._registry = None
        self._lookup_registry = None
        if wire == "confluent":
            if registry is None:
                raise ValueError("confluent wire format needs a schema registry (client or config dict)")
            self._registry = registry_client(registry)
            self._lookup_registry = (registry_client({**_LOOKUP_CONF, **registry}) if isinstance(registry, Mapping)
                                     else self._registry)
        self._clock_s = clock_s
        self._backoff = RegistryBackoff()
        self._backoff_lock = threading.Lock()
        self.subject = subject
        self.auto_register = auto_register
        self._schema_id: int | None = None
        # schema id -> (writer schema, or None when it equals ours so no resolution is needed)
        self._writers_by_id: dict[int, dict | None] = {}

    # -- encode ----------------------------------------------------------------------------

    @property
    def schema(self) -> dict:
        return self._schema

    def schema_id(self) -> int:
        """Confluent mode: this codec's schema id under ``subject`` (registered or looked up once)."""
        if self._schema_id is not None:
            return self._schema_id
        if self._registry is None:
            raise EncodeError("schemaless codec has no schema id")
        if not self.subject:
            raise EncodeError(f"{self.name}: confluent encode needs a subject (e.g. 'av.audio-chunks-value')")
        from confluent_kafka.schema_registry import Schema  # lazy: no Kafka at import

        sr_schema = Schema(self._schema_text, "AVRO")
        try:
            if self.auto_register:
                schema_id = int(self._registry.register_schema(self.subject, sr_schema))
            else:
                schema_id = int(self._registry.lookup_schema(self.subject, sr_schema).schema_id)
        except Exception as e:  # the registry's errors vary by client and transport
            raise EncodeError(f"{self.name}: schema registry failed for subject {self.subject!r}: {e}") from e
        self._schema_id = schema_id
        self._writers_by_id.setdefault(schema_id, None)
        return schema_id

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """Record dict -> bytes. Missing fields with defaults are filled; unknown fields, missing
        required fields and wrong types raise ``EncodeError``."""
        buf = io.BytesIO()
        if self.wire == "confluent":
            buf.write(_HEADER.pack(_MAGIC, self.schema_id()))
        try:
            fastavro.schemaless_writer(buf, self._schema, record, strict_allow_default=True)
        except Exception as e:  # fastavro raises ValueError/TypeError/AttributeError/KeyError
            raise EncodeError(f"{self.name}: cannot encode record: {type(e).__name__}: {e}") from e
        return buf.getvalue()

    # -- decode ----------------------------------------------------------------------------

    def decode(self, data: bytes | bytearray | memoryview | None) -> dict:
        """Bytes -> record dict in this codec's (reader) schema. Raises ``DecodeError`` (a bad
        record), or ``RegistryUnavailable`` (confluent mode: the registry could not be asked)."""
        if data is None:
            raise DecodeError(f"{self.name}: no value (null record)")
        view = bytes(data)
        writer: dict | None = self._writer
        start = 0
        if self.wire == "confluent":
            if len(view) < _HEADER.size:
                raise DecodeError(
                    f"{self.name}: {len(view)} bytes is too short for the Confluent wire format (header is 5)"
                )
            magic, schema_id = _HEADER.unpack_from(view)
            if magic != _MAGIC:
                raise DecodeError(f"{self.name}: bad magic byte {magic}, expected {_MAGIC} (not Confluent wire format)")
            writer = self._writer_for_id(schema_id)
            start = _HEADER.size
        fo = io.BytesIO(view)
        fo.seek(start)
        try:
            if writer is None:
                record = fastavro.schemaless_reader(fo, self._schema, None)
            else:
                record = fastavro.schemaless_reader(fo, writer, self._schema)
        except EOFError as e:
            raise DecodeError(f"{self.name}: truncated Avro body ({len(view)} bytes) {_stable(e)}".rstrip()) from e
        except Exception as e:  # bad union/enum index (IndexError), bad UTF-8, negative lengths, ...
            raise DecodeError(f"{self.name}: malformed Avro body: {type(e).__name__}: {_stable(e)}") from e
        if fo.tell() != len(view):
            raise DecodeError(
                f"{self.name}: {len(view) - fo.tell()} trailing bytes after the record (wrong schema or corrupt)"
            )
        if not isinstance(record, dict):
            raise DecodeError(f"{self.name}: decoded a {type(record).__name__}, not a record")
        return record

    def _writer_for_id(self, schema_id: int) -> dict | None:
        if schema_id in self._writers_by_id:
            return self._writers_by_id[schema_id]
        registered = self._lookup(schema_id)
        if getattr(registered, "schema_type", "AVRO") not in (None, "AVRO"):
            raise DecodeError(f"{self.name}: schema id {schema_id} is {registered.schema_type}, not AVRO")
        try:
            text = registered.schema_str
            writer = fastavro.parse_schema(json.loads(text))
        except Exception as e:
            raise DecodeError(f"{self.name}: schema id {schema_id} is not a valid Avro schema: {e}") from e
        # Same Parsing Canonical Form = same binary layout (docs and defaults do not change the
        # bytes), so the fast path without schema resolution is exact.
        same = to_parsing_canonical_form(writer) == to_parsing_canonical_form(self._schema)
        self._writers_by_id[schema_id] = None if same else writer
        return self._writers_by_id[schema_id]


    def _lookup(self, schema_id: int) -> Any:
        """The registry's schema for ``schema_id``: DecodeError when it says there is none,
        RegistryUnavailable when it cannot say (now, or within the back-off after a failure)."""
        assert self._lookup_registry is not None
        with self._backoff_lock:
            wait_s = self._backoff.wait_s(self._clock_s())
        if wait_s > 0:
            raise RegistryUnavailable(f"{self.name}: schema id {schema_id}: schema registry unavailable, "
                                      f"next lookup in {wait_s:.1f} s", wait_s)
        try:
            registered = self._lookup_registry.get_schema(schema_id)
        except Exception as e:  # the registry's errors vary by client and transport
            if _schema_not_found(e):
                with self._backoff_lock:
                    self._backoff.answered()
                raise DecodeError(f"{self.name}: unknown schema id {schema_id}: {e}") from e
            with self._backoff_lock:
                wait_s = self._backoff.failed(self._clock_s())
            raise RegistryUnavailable(f"{self.name}: schema id {schema_id}: schema registry unavailable "
                                      f"({type(e).__name__}: {e})", wait_s) from e
        with self._backoff_lock:
            self._backoff.answered()
        return registered


def codec_for(
    name: str,
    *,
    wire: WireMode = "schemaless",
    registry: Any = None,
    topic: str | None = None,
    auto_register: bool = True,
) -> AvroCodec:
    """A codec for a bundled record type; in confluent mode the subject is ``<topic>-value``."""
    return AvroCodec(
        name,
        wire=wire,
        registry=registry,
        subject=topic_subject(topic) if topic else None,
        auto_register=auto_register,
    )


_OBJECT_REPR = re.compile(r"\s*(?:from|in|of)?\s*<[^<>]* object at 0x[0-9a-fA-F]+>")


def _stable(exc: BaseException) -> str:
    """An exception's message without object reprs ("<_io.BytesIO object at 0x7f..>"): the same
    bad record gives the same dead-letter reason every time (they are grouped and counted)."""
    return _OBJECT_REPR.sub("", str(exc)).strip()
