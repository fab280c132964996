"""schemas.codec: round trips in both wire modes, schema evolution both ways, malformed input."""

from __future__ import annotations

import copy
import random
import struct
import subprocess
import sys
import uuid

import pytest

from schemas import AvroCodec, DecodeError, EncodeError, codec_for, registry_client, topic_subject
from schemas.codec import SCHEMA_NAMES, schema_dict

AUDIO = {
    "session_id": "sess-1",
    "seq": 7,
    "start_sample": 16000 * 3,
    "sample_rate": 16000,
    "channels": 1,
    "encoding": "PCM_S16LE",
    "data": bytes(range(256)) * 5,
    "end_of_session": False,
    "produced_at_ms": 1_700_000_000_123,
}
ROI_BASE = {
    "session_id": "sess-1",
    "frame_index": 42,
    "pts_ms": 1400,
    "fps": 30.0,
    "mouth_landmarks": [0.25, 0.5, 0.75, 0.5],
    "occluded": False,
    "face_confidence": 0.875,
    "end_of_session": False,
    "produced_at_ms": None,
}
ROIS = [
    None,
    {"width": 3, "height": 2, "format": "GRAY8", "data": bytes(range(6))},
    {"name": "psm_roi_1", "offset": 4096, "shape": [96, 96], "format": "GRAY8"},
    {"uri": "s3://bucket/sess-1/42.raw", "shape": [96, 96, 3], "format": "RGB24"},
]
SIGNAL = {
    "session_id": "sess-1",
    "signal_id": "sess-1:BLOCK:32",
    "kind": "BLOCK",
    "frame_start": 32,
    "frame_end": 48,
    "start_ms": 1067,
    "end_ms": 1600,
    "score": 0.81,
    "offset_ms": 40.0,
    "margin": 0.12,
    "confidence": 0.6,
    "direction": "AUDIO_LAGS",
    "label": "OK",
    "occluded": False,
    "scorer": "syncnet-lite@1.0.0",
    "latency_ms": 35,
    "emitted_at_ms": 1_700_000_001_000,
    "frames_missing": 2,
    "audio_missing_ms": 40,
}
SILENT_SIGNAL = dict(SIGNAL, score=None, offset_ms=None, margin=None, confidence=0.0, direction="UNKNOWN",
                     label="SILENCE", kind="WINDOW", signal_id="sess-1:WINDOW:32")
DEAD = {
    "topic": "av.audio-chunks",
    "partition": 3,
    "offset": 12345,
    "key": b"sess-1",
    "value": b"\x00\xff garbage",
    "timestamp_ms": 1_700_000_000_000,
    "reason": "decode: truncated Avro body",
    "worker": "host-a/123",
    "dead_at_ms": 1_700_000_000_500,
    "truncated": False,
    "key_bytes": 6,
    "value_bytes": 11,
}


def _records() -> list[tuple[str, dict]]:
    out = [("AudioChunk", AUDIO), ("AudioChunk", dict(AUDIO, encoding="F32LE", data=b"", end_of_session=True))]
    out += [("RoiRef", dict(ROI_BASE, roi=roi)) for roi in ROIS]
    out += [("LipSyncSignal", SIGNAL), ("LipSyncSignal", SILENT_SIGNAL), ("DeadLetter", DEAD)]
    out += [("DeadLetter", dict(DEAD, key=None, value=None, timestamp_ms=None, worker=None, key_bytes=None,
                                value_bytes=None, truncated=True))]
    return out


def _approx(record: dict) -> dict:
    # Avro float (32 bit) fields come back rounded; compare those approximately.
    out = dict(record)
    if out.get("mouth_landmarks") is not None:
        out["mouth_landmarks"] = pytest.approx(out["mouth_landmarks"], abs=1e-6)
    if out.get("face_confidence") is not None:
        out["face_confidence"] = pytest.approx(out["face_confidence"], abs=1e-6)
    return out


@pytest.fixture
def registry_conf() -> dict:
    return {"url": f"mock://{uuid.uuid4().hex}"}


@pytest.mark.parametrize("name,record", _records())
def test_schemaless_round_trip(name: str, record: dict) -> None:
    codec = AvroCodec(name)
    data = codec.encode(record)
    assert codec.decode(data) == _approx(record)


@pytest.mark.parametrize("name,record", _records())
def test_confluent_round_trip(name: str, record: dict, registry_conf: dict) -> None:
    producer = codec_for(name, wire="confluent", registry=registry_conf, topic="t")
    consumer = codec_for(name, wire="confluent", registry=registry_conf)  # decode needs no subject
    data = producer.encode(record)
    magic, schema_id = struct.unpack(">bI", data[:5])
    assert magic == 0
    assert schema_id == producer.schema_id()
    assert data[5:] == AvroCodec(name).encode(record)  # the body is the plain Avro encoding
    assert consumer.decode(data) == _approx(record)


def test_confluent_registers_once_and_reuses_the_id(registry_conf: dict) -> None:
    a = codec_for("AudioChunk", wire="confluent", registry=registry_conf, topic="av.audio-chunks")
    b = codec_for("AudioChunk", wire="confluent", registry=registry_conf, topic="av.audio-chunks")
    assert a.encode(AUDIO)[:5] == b.encode(AUDIO)[:5]
    client = registry_client(registry_conf)
    latest = client.get_latest_version(topic_subject("av.audio-chunks"))
    assert latest.schema_id == a.schema_id()


def test_defaults_are_filled_on_encode() -> None:
    codec = AvroCodec("AudioChunk")
    minimal = {k: v for k, v in AUDIO.items() if k not in ("end_of_session", "produced_at_ms")}
    out = codec.decode(codec.encode(minimal))
    assert out["end_of_session"] is False and out["produced_at_ms"] is None


@pytest.mark.parametrize(
    "bad,why",
    [
        (dict(AUDIO, extra_field=1), "more fields"),
        ({k: v for k, v in AUDIO.items() if k != "seq"}, "seq"),
        (dict(AUDIO, encoding="MP3"), "MP3"),
        (dict(AUDIO, seq="seven"), "seq"),
    ],
)
def test_encode_rejects_records_that_do_not_fit(bad: dict, why: str) -> None:
    with pytest.raises(EncodeError, match=why):
        AvroCodec("AudioChunk").encode(bad)


# --- evolution ---------------------------------------------------------------------------------


def _audio_v2() -> dict:
    schema = copy.deepcopy(schema_dict("AudioChunk"))
    schema["fields"].append({"name": "language", "type": "string", "default": "und"})
    return schema


def test_evolution_schemaless_both_ways() -> None:
    new = _audio_v2()
    new_bytes = AvroCodec(new).encode(dict(AUDIO, language="de"))
    old_bytes = AvroCodec("AudioChunk").encode(AUDIO)
    # old reader, new writer: the added field is dropped
    assert AvroCodec("AudioChunk", writer_schema=new).decode(new_bytes) == AUDIO
    # new reader, old writer: the added field takes its default
    assert AvroCodec(new, writer_schema="AudioChunk").decode(old_bytes) == dict(AUDIO, language="und")


def test_evolution_confluent_both_ways(registry_conf: dict) -> None:
    old = codec_for("AudioChunk", wire="confluent", registry=registry_conf, topic="av.audio-chunks")
    new = AvroCodec(_audio_v2(), wire="confluent", registry=registry_conf, subject="av.audio-chunks-value")
    old_bytes = old.encode(AUDIO)
    new_bytes = new.encode(dict(AUDIO, language="de"))
    assert old.schema_id() != new.schema_id()
    assert old.decode(new_bytes) == AUDIO
    assert new.decode(old_bytes) == dict(AUDIO, language="und")
    assert new.decode(new_bytes) == dict(AUDIO, language="de")


def test_evolution_incompatible_writer_is_a_decode_error(registry_conf: dict) -> None:
    # A writer that dropped a required field without a default cannot be read by the old schema.
    broken = copy.deepcopy(schema_dict("AudioChunk"))
    broken["fields"] = [f for f in broken["fields"] if f["name"] != "seq"]
    writer = AvroCodec(broken, wire="confluent", registry=registry_conf, subject="x-value")
    data = writer.encode({k: v for k, v in AUDIO.items() if k != "seq"})
    with pytest.raises(DecodeError):
        codec_for("AudioChunk", wire="confluent", registry=registry_conf).decode(data)


# --- malformed input ---------------------------------------------------------------------------

GOOD = AvroCodec("AudioChunk").encode(AUDIO)


@pytest.mark.parametrize(
    "data,why",
    [
        (None, "null"),
        (b"", "truncated"),
        (GOOD[:-1], "truncated|malformed"),
        (GOOD + b"\x00", "trailing"),
        (b"\x02s\x00\x00\x00\x00\x09", "malformed|truncated"),  # enum index out of range / short
        (random.Random(4).randbytes(64), "AudioChunk"),
    ],
)
def test_schemaless_malformed_bytes_raise_decode_error(data: bytes | None, why: str) -> None:
    with pytest.raises(DecodeError, match=why) as info:
        AvroCodec("AudioChunk").decode(data)
    assert info.value.reason and "AudioChunk" in info.value.reason


def test_confluent_malformed_header_and_unknown_id(registry_conf: dict) -> None:
    codec = codec_for("AudioChunk", wire="confluent", registry=registry_conf, topic="t")
    good = codec.encode(AUDIO)
    with pytest.raises(DecodeError, match="too short"):
        codec.decode(b"\x00\x00\x01")
    with pytest.raises(DecodeError, match="magic"):
        codec.decode(b"\x01" + good[1:])
    with pytest.raises(DecodeError, match="unknown schema id 999"):
        codec.decode(b"\x00" + struct.pack(">I", 999) + good[5:])
    with pytest.raises(DecodeError, match="trailing"):
        codec.decode(good + b"\x00\x00")
    # schemaless bytes fed to a confluent reader: the first byte is not the magic 0
    with pytest.raises(DecodeError):
        codec.decode(AvroCodec("AudioChunk").encode(AUDIO))


def test_bad_construction_is_rejected() -> None:
    with pytest.raises(KeyError, match="unknown schema|neither"):
        AvroCodec("NoSuchRecord")
    with pytest.raises(ValueError, match="registry"):
        AvroCodec("AudioChunk", wire="confluent")
    with pytest.raises(EncodeError, match="subject"):
        AvroCodec("AudioChunk", wire="confluent", registry={"url": "mock://x"}).encode(AUDIO)


def test_every_bundled_schema_has_a_namespace_and_loads() -> None:
    for name in SCHEMA_NAMES:
        assert schema_dict(name)["namespace"] == "syncscorer.v1"
        assert AvroCodec(name).name == f"syncscorer.v1.{name}"


def test_importing_the_codec_does_not_import_kafka() -> None:
    code = "import schemas.codec, sys; assert 'confluent_kafka' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
