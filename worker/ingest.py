"""Decoded input records -> windowing events. Pure, except for resolving ROI references.

A record that cannot be used raises ``BadRecord`` with a one-line reason (the worker dead-letters
it with its original bytes and goes on). A ROI reference that cannot be read is *not* a bad
record: the frame is kept as missing (``ref_error``) and counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from worker.windowing.events import (
    BYTES_PER_SAMPLE,
    Arrival,
    AudioEvent,
    EndEvent,
    FrameEvent,
    Source,
    Stream,
)
from worker.windowing.resample import chunk_contribution

Event = FrameEvent | AudioEvent | EndEvent
# roi record -> (pixels, None) or (None, error with .reason)
ResolveFn = Callable[[Any], tuple[np.ndarray | None, Any]]

# Band-limited resampling by the ratio of the two rates in lowest terms, p/q: 160/441 for 44.1 kHz
# -> 16 kHz, but 16000/44101 for 44101 Hz, whose filter (a row per output phase) and period are
# far past any real rate's. Past this product a rate is refused (dead-lettered).
MAX_RESAMPLE_TERMS = 1_000_000
F32_BOUND = 8.0  # F32LE samples past +/-8 (18 dB over full scale) are clipped there
# The session timeline a record may reach: 2**40 ms, about 34 years. Every position a signal
# carries (frame_start/end, start_ms/end_ms) comes from frame_index / start_sample: bounded here,
# an accepted record cannot make a signal that overflows Avro's long (a frame_index near 2**63
# did, and the worker failed on it at every restart), and every ms, frame and sample index (at
# 384 kHz: 4.2e14) stays exact in a float64 (below 2**53) through the windowing's arithmetic.
MAX_TIMELINE_MS = 2**40


class BadRecord(ValueError):
    """A record the worker cannot use; ``reason`` is one line for the dead-letter topic."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check_key(key: bytes | None, session_id: str) -> None:
    """The key must be the session id: co-partitioning of the two inputs depends on it."""
    if key is None:
        raise BadRecord("invalid: record has no key (must be the session_id)")
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRecord("invalid: key is not UTF-8") from None
    if text != session_id:
        raise BadRecord(f"invalid: key {text[:64]!r} != session_id {session_id[:64]!r}")


def audio_events(record: Mapping[str, Any], source: Source, arrival: Arrival,
                 target_rate: int) -> list[Event]:
    """An AudioChunk record -> [AudioEvent] and/or [EndEvent(AUDIO)].

    PCM_S16LE / F32LE, interleaved channels, are mixed down to mono float32 in [-1, 1] and
    resampled to ``target_rate`` (the scorer's) when the chunk's rate differs.
    """
    sid = _session_id(record)
    out: list[Event] = []
    data = record.get("data") or b""
    if data:
        encoding = record.get("encoding")
        if encoding not in BYTES_PER_SAMPLE:
            raise BadRecord(f"invalid: unknown audio encoding {encoding!r}")
        channels = int(record.get("channels") or 0)
        rate = int(record.get("sample_rate") or 0)
        start = int(record.get("start_sample", -1))
        if channels < 1 or channels > 16:
            raise BadRecord(f"invalid: channels {channels} (must be 1..16)")
        if rate < 1000 or rate > 384_000:
            raise BadRecord(f"invalid: sample_rate {rate} (must be 1000..384000 Hz)")
        g = math.gcd(rate, target_rate)
        if (rate // g) * (target_rate // g) > MAX_RESAMPLE_TERMS:
            raise BadRecord(f"invalid: sample_rate {rate} Hz cannot be resampled to {target_rate} Hz "
                            f"(ratio {rate // g}/{target_rate // g}); use a standard rate such as 16000, 44100 or 48000")
        if start < 0:
            raise BadRecord(f"invalid: start_sample {start}")
        width = BYTES_PER_SAMPLE[encoding] * channels
        if len(data) % width:
            raise BadRecord(f"invalid: {len(data)} data bytes is not a whole number of "
                            f"{channels}-channel {encoding} samples")
        _check_audio_on_timeline(start, len(data) // width, rate)
        if encoding == "PCM_S16LE":
            samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
        else:
            samples = np.frombuffer(data, dtype="<f4").astype(np.float32)
            if not np.isfinite(samples).all():
                raise BadRecord("invalid: F32LE audio holds NaN or infinity")
            # full scale is 1.0, but decoders and resamplers overshoot it (the dev clips' audio, as
            # ffmpeg decodes it for `score`, peaks at 1.26): clipped at 1.0, served and streamed
            # audio read otherwise than the same samples offline (window scores up to 0.05 apart, a
            # probe). Only absurd values are bounded, so the features' squares stay finite.
            samples = np.clip(samples, -F32_BOUND, F32_BOUND)
        if channels > 1:
            samples = samples.reshape(-1, channels).mean(axis=1)
        spill: tuple[tuple[int, np.ndarray], ...] = ()
        if rate != target_rate:
            samples, start, spill = chunk_contribution(samples, start, rate, target_rate)
        if samples.shape[0]:
            out.append(AudioEvent(sid, start, target_rate, samples, source, arrival, spill))
    if record.get("end_of_session"):
        out.append(EndEvent(sid, Stream.AUDIO, source, arrival))
    if not out:
        raise BadRecord("invalid: audio chunk with no data that is not an end-of-session marker")
    return out


def roi_events(record: Mapping[str, Any], source: Source, arrival: Arrival,
               resolve: ResolveFn) -> list[Event]:
    """A RoiRef record -> [FrameEvent] and/or [EndEvent(VIDEO)].

    roi null: no face in this frame (a frame with face_present False), unless the record is an
    end-of-session marker (then it is only the marker).
    """
    sid = _session_id(record)
    frame_index = int(record.get("frame_index", -1))
    fps = float(record.get("fps") or 0.0)
    if frame_index < 0:
        raise BadRecord(f"invalid: frame_index {frame_index}")
    if not (np.isfinite(fps) and 1.0 <= fps <= 240.0):
        raise BadRecord(f"invalid: fps {fps}")
    _check_frame_on_timeline(frame_index, fps)
    roi = record.get("roi")
    end = bool(record.get("end_of_session"))
    out: list[Event] = []
    if roi is not None or not end:
        landmarks = _landmarks(record.get("mouth_landmarks"))
        occluded = bool(record.get("occluded"))
        if roi is None:
            out.append(FrameEvent(sid, frame_index, fps, None, source, arrival, face_present=False,
                                  occluded=occluded, landmarks=landmarks))
        else:
            pixels, err = resolve(roi)
            if err is not None and getattr(err, "scheme", "") == "inline":
                # inline pixels travel in the record itself: a size that does not match is a
                # malformed event (dead-lettered with its reason), not a store that failed
                raise BadRecord(f"invalid: {err}")
            reason = None if err is None else str(getattr(err, "reason", err) or "unreadable")
            out.append(FrameEvent(sid, frame_index, fps, pixels, source, arrival, face_present=True,
                                  occluded=occluded, landmarks=landmarks, ref_error=reason))
    if end:
        out.append(EndEvent(sid, Stream.VIDEO, source, arrival))
    return out


def _check_audio_on_timeline(start_sample: int, n_samples: int, sample_rate: int) -> None:
    """The chunk must end within the session timeline (exact integer arithmetic)."""
    if (start_sample + n_samples) * 1000 > MAX_TIMELINE_MS * sample_rate:
        raise BadRecord(f"invalid: start_sample {start_sample} (+{n_samples} samples at {sample_rate} Hz) "
                        f"ends past the session timeline's {MAX_TIMELINE_MS} ms")


def _check_frame_on_timeline(frame_index: int, fps: float) -> None:
    """The frame must end within the session timeline. pts_ms is not checked: the worker never
    reads it (frames are placed by frame_index at fps), the contract does not say which clock it
    is on (a producer may stamp Unix-epoch milliseconds, ~1.7e12, past this timeline), and Avro
    bounds it to a long."""
    if (frame_index + 1) * 1000.0 > MAX_TIMELINE_MS * fps:
        raise BadRecord(f"invalid: frame_index {frame_index} at {fps:g} fps ends past the session "
                        f"timeline's {MAX_TIMELINE_MS} ms")


def _session_id(record: Mapping[str, Any]) -> str:
    sid = record.get("session_id")
    if not isinstance(sid, str) or not sid:
        raise BadRecord("invalid: empty session_id")
    if len(sid) > 256:
        raise BadRecord("invalid: session_id longer than 256 characters")
    return sid


def _landmarks(flat: Any) -> np.ndarray | None:
    if not flat:
        return None
    arr = np.asarray(flat, dtype=np.float32)
    if arr.ndim != 1 or arr.shape[0] % 2 or not np.isfinite(arr).all():
        return None  # malformed landmarks are ignored: they are optional help, not the ROI
    return arr.reshape(-1, 2)
