"""Avro schemas (*.avsc) of the sync-scorer topics and their codec. No Kafka import here."""

from schemas.codec import (
    SCHEMA_NAMES,
    AvroCodec,
    DecodeError,
    EncodeError,
    codec_for,
    load_schema,
    registry_client,
    topic_subject,
)

__all__ = [
    "SCHEMA_NAMES",
    "AvroCodec",
    "DecodeError",
    "EncodeError",
    "codec_for",
    "load_schema",
    "registry_client",
    "topic_subject",
]
