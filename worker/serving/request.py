"""A score request body (JSON) -> mouth-ROI frames and mono audio. Pure; bad input raises
``RequestError`` with one line that says what is wrong.

The body mirrors the Kafka contract's RoiRef / AudioChunk fields, so a caller that already speaks
to the worker sends the same things:

    {"fps": 25,
     "frames": {"width": 96, "height": 96, "format": "GRAY8" | "RGB24", "data": base64 (T*H*W*C bytes)},
     "audio":  {"sample_rate": 16000, "channels": 1, "encoding": "PCM_S16LE" | "F32LE", "data": base64},
     "block_frames": 16, "window_ms": 1000}          # optional, as `sync-scorer score`

Audio sample 0 is at frame 0's time. Any rate and channel count: mixed down and resampled to the
scorer's rate (worker.ingest.audio_events, the worker's own decoding).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import numpy as np

from worker.ingest import BadRecord, audio_events
from worker.windowing.events import Arrival, Source

_CHANNELS = {"GRAY8": 1, "RGB24": 3}
_SOURCE = Source("http", 0, 0)


class RequestError(ValueError):
    """A request the server cannot score (HTTP 400)."""


@dataclass(frozen=True)
class ClipInput:
    frames: np.ndarray  # (T, H, W) or (T, H, W, 3) uint8 mouth ROIs
    fps: float
    audio: np.ndarray  # float32 mono in [-1, 1] at sample_rate
    sample_rate: int
    block_frames: int = 16
    window_ms: int = 1000

    @property
    def seconds(self) -> float:
        return self.frames.shape[0] / self.fps


def _b64(field: str, text: Any) -> bytes:
    if not isinstance(text, str):
        raise RequestError(f"{field} must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"{field} is not valid base64") from None


def _int(d: dict, key: str, where: str, lo: int, hi: int) -> int:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise RequestError(f"{where}.{key} must be an integer in {lo}..{hi}, got {v!r}")
    return v


def decode(body: Any, sample_rate: int, max_seconds: float = 120.0) -> ClipInput:
    """``body``: the parsed JSON. ``sample_rate``: the scorer's audio rate."""
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object")
    fps = body.get("fps")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 10.0 <= float(fps) <= 60.0:
        raise RequestError(f"fps must be a number in 10..60, got {fps!r}")
    fps = float(fps)
    fr = body.get("frames")
    if not isinstance(fr, dict):
        raise RequestError("frames must be an object with width, height, format and data")
    w, h = _int(fr, "width", "frames", 16, 1024), _int(fr, "height", "frames", 16, 1024)
    fmt = fr.get("format")
    if fmt not in _CHANNELS:
        raise RequestError(f"frames.format must be GRAY8 or RGB24, got {fmt!r}")
    raw = _b64("frames.data", fr.get("data"))
    per_frame = w * h * _CHANNELS[fmt]
    if not raw or len(raw) % per_frame:
        raise RequestError(f"frames.data holds {len(raw)} bytes, not a whole number of {w}x{h} {fmt} frames")
    n = len(raw) // per_frame
    if n / fps > max_seconds:
        raise RequestError(f"{n} frames at {fps:g} fps is longer than {max_seconds:g} s")
    shape = (n, h, w) if fmt == "GRAY8" else (n, h, w, 3)
    frames = np.frombuffer(raw, dtype=np.uint8).reshape(shape)

    au = body.get("audio")
    if not isinstance(au, dict):
        raise RequestError("audio must be an object with sample_rate, channels, encoding and data")
    data = _b64("audio.data", au.get("data"))
    if not data:
        raise RequestError("audio.data is empty")
    record = {"session_id": "http", "start_sample": 0, "sample_rate": au.get("sample_rate"),
              "channels": au.get("channels", 1), "encoding": au.get("encoding"),
              "data": data, "end_of_session": False}
    try:
        events = audio_events(record, _SOURCE, Arrival(0), sample_rate)
    except (BadRecord, TypeError, ValueError) as exc:
        raise RequestError(f"audio: {getattr(exc, 'reason', exc)}".replace("invalid: ", "")) from None
    audio = events[0].samples
    block = body.get("block_frames", 16)
    window = body.get("window_ms", 1000)
    if isinstance(block, bool) or not isinstance(block, int) or not 8 <= block <= 16:
        raise RequestError(f"block_frames must be an integer in 8..16, got {block!r}")
    if isinstance(window, bool) or not isinstance(window, int) or not 800 <= window <= 1200:
        raise RequestError(f"window_ms must be an integer in 800..1200, got {window!r}")
    return ClipInput(frames, fps, audio, sample_rate, block, window)


def encode(frames: np.ndarray, fps: float, audio: np.ndarray, sample_rate: int) -> dict:
    """The request body for ``frames`` (uint8 (T, H, W[, 3])) and float audio: what a client sends."""
    fmt = "GRAY8" if frames.ndim == 3 else "RGB24"
    pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
    return {"fps": fps,
            "frames": {"width": int(frames.shape[2]), "height": int(frames.shape[1]), "format": fmt,
                       "data": base64.b64encode(np.ascontiguousarray(frames, dtype=np.uint8).tobytes()).decode()},
            "audio": {"sample_rate": int(sample_rate), "channels": 1, "encoding": "PCM_S16LE",
                      "data": base64.b64encode(pcm.tobytes()).decode()}}
