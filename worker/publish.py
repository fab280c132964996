"""What the worker publishes: LipSyncSignal and DeadLetter records as plain dicts. Pure.

``signal_id`` is a function of (session_id, kind, frame_start) only, so a signal re-emitted after
a restart or a rebalance (at-least-once) has the id of the first one and consumers can drop it.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from worker.scoring.types import Kind, LipSyncScore
from worker.windowing.events import Job, Source


def signal_id(session_id: str, kind: Kind | str, frame_start: int) -> str:
    """sha1 of ``session_id|KIND|frame_start`` as 40 hex digits."""
    kind_text = kind.value if isinstance(kind, Kind) else str(kind)
    return hashlib.sha1(f"{session_id}|{kind_text}|{int(frame_start)}".encode()).hexdigest()


def signal_record(job: Job, score: LipSyncScore, emitted_at_ms: int) -> dict[str, Any]:
    """The LipSyncSignal for a scored job. Frame range and times come from the job (the join's
    grid), the verdict from the scorer. latency_ms: emission minus the arrival at this worker of
    the newest input event the signal depends on."""
    latency = max(0, emitted_at_ms - job.newest_received_wall_ms) if job.newest_received_wall_ms else 0
    return {
        "session_id": job.session_id,
        "signal_id": signal_id(job.session_id, job.kind, job.frame_start),
        "kind": job.kind.value,
        "frame_start": job.frame_start,
        "frame_end": job.frame_end,
        "start_ms": job.start_ms,
        "end_ms": job.end_ms,
        "score": _finite_or_none(score.score),
        "offset_ms": _finite_or_none(score.offset_ms),
        "margin": _finite_or_none(score.margin),
        "confidence": _finite_or_none(score.confidence) or 0.0,
        "direction": score.direction.value,
        "label": score.label.value,
        "occluded": bool(score.occluded),
        "scorer": score.scorer,
        "latency_ms": int(latency),
        "emitted_at_ms": int(emitted_at_ms),
        "frames_missing": int(job.frames_missing),
        "audio_missing_ms": int(job.audio_missing_ms),
    }


# A dead letter's key is cut to this many bytes (it also keys the dead letter's own record), and
# its value to what leaves this much room for the other fields under the record size limit.
DLQ_MAX_KEY_BYTES = 4096
DLQ_HEADROOM_BYTES = 16 * 1024


def dead_letter_record(source: Source, key: bytes | None, value: bytes | None, timestamp_ms: int | None,
                       reason: str, worker: str, dead_at_ms: int,
                       max_record_bytes: int = 1_000_000) -> dict[str, Any]:
    """The DeadLetter for a rejected input record. The original key and value go in unchanged
    unless the dead letter would not fit in one record of ``max_record_bytes`` (the producer's
    message.max.bytes): then only their first bytes, with ``truncated`` set and the original
    lengths beside them. (A bad record near 1 MB could not be dead-lettered at all: the
    producer refused it, and the worker stopped on it at every restart.)"""
    key_out = key if key is None or len(key) <= DLQ_MAX_KEY_BYTES else key[:DLQ_MAX_KEY_BYTES]
    room = max(0, max_record_bytes - DLQ_HEADROOM_BYTES - 2 * len(key_out or b""))
    value_out = value if value is None or len(value) <= room else value[:room]
    return {
        "topic": source.topic,
        "partition": source.partition,
        "offset": source.offset,
        "key": key_out,
        "value": value_out,
        "timestamp_ms": timestamp_ms,
        "reason": " ".join(reason.split())[:1000],
        "worker": worker,
        "dead_at_ms": int(dead_at_ms),
        "truncated": key_out is not key or value_out is not value,
        "key_bytes": None if key is None else len(key),
        "value_bytes": None if value is None else len(value),
    }


def _finite_or_none(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None
