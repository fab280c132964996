"""A score request body (JSON) -> mouth-ROI frames and mono audio. Pure; bad input raises
``RequestError`` with one line that says what is wrong.

The body mirrors the Kafka contract's RoiRef / AudioChunk fields, so a caller that already speaks
to the worker sends the same things:

    {"fps": 25,
     "frames": {"width": 96, "height": 96, "format": "GRAY8" | "RGB24", "data": base64 (T*H*W*C bytes)},
     "audio":  {"sample_rate": 16000, "channels": 1, "encoding": "PCM_S16LE" | "F32LE", "data": base64},
     "block_frames": 16, "window_ms": 1000}          # optional, as `sync-scorer score`

Audio sample 0 is at frame 0's time unless ``"audio": {"start_sample": ...}`` places it (at the
audio's rate, on the timeline where frame 0 is ``"frame_start"``, default 0: later audio is
preceded by silence, earlier audio loses what comes before frame 0), and ``"present"`` (one bool
per frame) marks the frames without a ROI, as for a BLOCK or WINDOW below. Any rate and channel
count: mixed down and resampled to the scorer's rate (worker.ingest.audio_events, the worker's
own decoding).

A single BLOCK or WINDOW (``decode_span``) takes the same body plus where it sits on the session
timeline: ``"frame_start"`` (session frame index of the job's first frame, default 0), optional
``"present"`` (one bool per frame; or ``"frames": {"present": ...}``, where the proto has it) and ``"audio": {"start_sample": ...}`` (session sample index of
the first sample at the audio's rate; default: the first frame's time). Send the scorer's search
margin of audio on each side of the frames, as the worker does (stretched below 25 fps by the
frame's length over 40 ms: SessionState.margin_ms), and, for the worker's verdict
exactly, ``"context_frames": N`` with the N frames before the job first in ``frames`` (the
scorer's video context, Info.context_frames; the worker has them from the blocks before). gRPC
sends the same fields with raw bytes instead of base64 (worker.serving.grpc_server).
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from worker.ingest import BadRecord, audio_events
from worker.scoring.types import AudioSpan, FrameSpan, Kind, ScoreRequest
from worker.windowing.events import BYTES_PER_SAMPLE, Arrival, Source

_CHANNELS = {"GRAY8": 1, "RGB24": 3}
_SOURCE = Source("http", 0, 0)


class RequestError(ValueError):
    """A request the server cannot score (HTTP 400)."""


@dataclass(frozen=True)
class ClipInput:
    frames: np.ndarray  # (T, H, W) or (T, H, W, 3) uint8 mouth ROIs
    fps: float
    audio: np.ndarray  # float32 mono (full scale 1.0) at sample_rate, sample 0 at frame 0's time
    sample_rate: int
    block_frames: int = 16
    window_ms: int = 1000
    face_present: np.ndarray | None = None  # (T,) bool: False = no ROI in that frame; None = all
    occluded: np.ndarray | None = None  # (T,) bool: True = the mouth covered (RoiRef.occluded); None = none

    @property
    def seconds(self) -> float:
        return self.frames.shape[0] / self.fps


def _b64(field: str, text: Any) -> bytes:
    if isinstance(text, (bytes, bytearray)):  # gRPC: raw bytes
        return bytes(text)
    if not isinstance(text, str):
        raise RequestError(f"{field} must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"{field} is not valid base64") from None


# session positions far beyond any real session (2^40 frames is 1400 years at 25 fps) are refused,
# not turned into overflowing times
MAX_INDEX = 1 << 40


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _int(d: dict, key: str, where: str, lo: int, hi: int, default: Any = None) -> int:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        name = f"{where}.{key}" if where else key
        raise RequestError(f"{name} must be an integer in {lo}..{hi}, got {_short(v)}")
    return v


# the frame rates a request may have, and the sides of its frames (px)
MIN_FPS, MAX_FPS = 10, 240
SIDE_PX = (16, 1024)


def max_json_commas(max_seconds: float) -> int:
    """The most commas a valid request body's JSON has: one per value of ``present`` and
    ``occluded`` (one bool per frame each, at most ``max_seconds`` at MAX_FPS) and a few dozen
    between the fields. Base64 has no commas, and the only free text (``session_id``) is short."""
    return 2 * math.ceil(max_seconds * MAX_FPS) + 64


def check_json_size(raw: bytes, max_seconds: float) -> None:
    """Refuses a body with more JSON values than any valid request has, before it is parsed: a
    64 MB body of ``[{},{},...]`` (22 million objects) took json.loads 1.7 GB and seconds of the
    GIL. Commas bound the values (a container without one holds at most one value, and nesting is
    bounded by the parser's recursion limit); counting them is one pass in C."""
    commas = raw.count(b",")
    limit = max_json_commas(max_seconds)
    if commas > limit:
        raise RequestError(f"the body has {commas} JSON values, more than any request "
                           f"(at most {limit}: two flags per frame and the fields)")


# the fields a request may have (every one documented above and in the README); any other is
# refused: ignored, a misspelt one ("windows_ms") was scored with its default
_FIELDS = {
    "": {"fps", "frames", "audio", "block_frames", "window_ms", "frame_start", "present", "occluded",
         "context_frames", "session_id"},
    "frames": {"width", "height", "format", "data", "present", "occluded"},
    "audio": {"sample_rate", "channels", "encoding", "data", "start_sample"},
}


def _check_fields(body: dict) -> None:
    """RequestError naming the first field no request has, at the top level or in ``frames`` or
    ``audio`` (with the known field it most resembles, or where it belongs)."""
    import difflib

    for where, known in _FIELDS.items():
        obj = body if not where else body.get(where)
        if not isinstance(obj, dict):
            continue  # (the field's own check says what it must be)
        for key in obj:
            if key in known:
                continue
            name = f"{where}.{key}" if where else key
            home = next((w for w, k in _FIELDS.items() if key in k and w != where), None)
            if home is not None:
                hint = f" ({key} goes {'at the top level' if not home else 'in ' + home})"
            elif key == "landmarks":
                hint = " (mouth landmarks are not taken: the networks read the pixels)"
            else:
                close = difflib.get_close_matches(str(key), sorted(known), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
            raise RequestError(f"unknown field {_short(name)}{hint}; the fields are: {', '.join(sorted(known))}")


def _frames(body: Any, max_seconds: float) -> tuple[np.ndarray, float]:
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object")
    _check_fields(body)
    fps = body.get("fps")
    # compared as given: float() of a 400-digit integer overflows (a 500 before)
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not MIN_FPS <= fps <= MAX_FPS:
        raise RequestError(f"fps must be a number in {MIN_FPS}..{MAX_FPS}, got {_short(fps)}")
    fps = float(fps)
    fr = body.get("frames")
    if not isinstance(fr, dict):
        raise RequestError("frames must be an object with width, height, format and data")
    w, h = _int(fr, "width", "frames", *SIDE_PX), _int(fr, "height", "frames", *SIDE_PX)
    fmt = fr.get("format")
    if not isinstance(fmt, str) or fmt not in _CHANNELS:  # (a list was a TypeError: a 500)
        raise RequestError(f"frames.format must be GRAY8 or RGB24, got {fmt!r}")
    raw = _b64("frames.data", fr.get("data"))
    per_frame = w * h * _CHANNELS[fmt]
    if not raw or len(raw) % per_frame:
        raise RequestError(f"frames.data holds {len(raw)} bytes, not a whole number of {w}x{h} {fmt} frames")
    n = len(raw) // per_frame
    if n / fps > max_seconds:
        raise RequestError(f"{n} frames at {fps:g} fps is longer than {max_seconds:g} s")
    shape = (n, h, w) if fmt == "GRAY8" else (n, h, w, 3)
    return np.frombuffer(raw, dtype=np.uint8).reshape(shape), fps


def frame_count(width: Any, height: Any, fmt: Any, n_bytes: int) -> int | None:
    """How many frames ``n_bytes`` of pixels hold, or None where _frames refuses the frames
    (a size or format out of range, not a whole number of frames)."""
    if not all(isinstance(v, int) and SIDE_PX[0] <= v <= SIDE_PX[1] for v in (width, height)) or not isinstance(fmt, str) \
            or fmt not in _CHANNELS:
        return None
    per_frame = width * height * _CHANNELS[fmt]
    return n_bytes // per_frame if n_bytes and not n_bytes % per_frame else None


def _audio_rate(au: dict) -> int:
    """``audio.sample_rate``, in the range the worker's ingest takes."""
    return _int(au, "sample_rate", "audio", 1000, 384_000)


def _audio(body: dict, sample_rate: int, start_sample: int | None = None,
           max_seconds: float = 130.0) -> tuple[np.ndarray, int]:
    """(mono float32 at ``sample_rate``, its start sample at that rate). Audio longer than
    ``max_seconds`` is refused before it is decoded (a small body at a low rate is hours)."""
    au = body.get("audio")
    if not isinstance(au, dict):
        raise RequestError("audio must be an object with sample_rate, channels, encoding and data")
    rate = _audio_rate(au)
    channels = _int(au, "channels", "audio", 1, 16, default=1)
    data = _b64("audio.data", au.get("data"))
    if not data:
        raise RequestError("audio.data is empty")
    encoding = au.get("encoding")
    if not isinstance(encoding, str) or encoding not in BYTES_PER_SAMPLE:  # (a list was a TypeError: a 500)
        raise RequestError(f"audio: unknown audio encoding {_short(encoding)} (PCM_S16LE or F32LE)")
    seconds = len(data) / (BYTES_PER_SAMPLE[encoding] * channels * rate)
    if seconds > max_seconds:
        raise RequestError(f"audio of {seconds:.1f} s is longer than the {max_seconds:.1f} s this request can use")
    record = {"session_id": "http", "start_sample": start_sample or 0, "sample_rate": rate,
              "channels": channels, "encoding": au.get("encoding"),
              "data": data, "end_of_session": False}
    try:
        events = audio_events(record, _SOURCE, Arrival(0), sample_rate)
    except (BadRecord, TypeError, ValueError) as exc:
        raise RequestError(f"audio: {getattr(exc, 'reason', exc)}".replace("invalid: ", "")) from None
    return events[0].samples, int(events[0].start_sample)


def _frame_flags(body: dict, n: int, key: str = "present") -> np.ndarray | None:
    """``present`` (top level, or ``frames.present`` where the proto has it: Frames.present): one
    bool per frame sent (False: no ROI in that frame, i.e. no face: the RoiRef's null roi), or
    None (all). (``frames.present`` was ignored: frames sent absent were scored.) ``key``
    "occluded": the same for RoiRef.occluded (True: the mouth covered; None: none is)."""
    present = body.get(key)
    fr = body.get("frames")
    in_frames = fr.get(key) if isinstance(fr, dict) else None
    if in_frames is not None:
        if present is not None:
            raise RequestError(f"{key} is given twice ({key} and frames.{key}): send one")
        present = in_frames
    if isinstance(present, (list, tuple)) and len(present) == 0:
        return None  # proto3: an empty repeated field is "not sent"
    if present is None:
        return None
    if not isinstance(present, (list, tuple)) or len(present) != n or not all(isinstance(p, bool) for p in present):
        raise RequestError(f"{key} must be a list of {n} booleans, one per frame")
    return np.array(present, dtype=bool)


def _align_to_first_frame(body: dict, audio: np.ndarray, sample_rate: int, fps: float, n_frames: int) -> np.ndarray:
    """A clip's audio with sample 0 at frame 0's time. ``audio.start_sample`` (at the audio's
    own rate) places the audio on the timeline whose frame ``frame_start`` (default 0) is the
    clip's first, as ScoreBlock / ScoreWindow read both: audio that starts later is preceded by
    silence (the worker zero-fills audio that never came), audio that starts earlier loses the
    samples before frame 0. Unset: the audio starts at frame 0."""
    au = body["audio"]
    if au.get("start_sample") is None:
        return audio
    rate = _audio_rate(au)
    start = _int(au, "start_sample", "audio", 0, MAX_INDEX * 16_000)
    frame_start = _int(body, "frame_start", "", 0, MAX_INDEX, default=0)
    # the first frame's sample as ScoreBlock's default start computes it, then to the scorer's rate
    shift = round((start - round(frame_start / fps * rate)) * sample_rate / rate)
    clip_samples = math.ceil(n_frames / fps * sample_rate)
    if shift >= clip_samples:
        raise RequestError(f"audio.start_sample {start} starts after the clip's last frame")
    if shift >= 0:
        return np.concatenate([np.zeros(shift, np.float32), audio])
    if -shift >= audio.shape[0]:
        raise RequestError(f"audio.start_sample {start}: the audio ends before the clip's first frame")
    return audio[-shift:]


def _lead_s(body: dict, fps: float) -> float:
    """Seconds of the sent audio before frame 0 (``audio.start_sample`` before ``frame_start``'s
    time), 0 when it starts at or after it; read unchecked (0 when a field is not a number:
    _align_to_first_frame refuses it)."""
    au = body.get("audio")
    if not isinstance(au, dict):
        return 0.0
    start, rate, frame_start = au.get("start_sample"), au.get("sample_rate"), body.get("frame_start", 0)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, rate, frame_start)) or rate <= 0:
        return 0.0
    if not 0 <= start <= MAX_INDEX * 16_000 or not 0 <= frame_start <= MAX_INDEX:  # refused later
        return 0.0
    return max(0.0, frame_start / fps - start / rate)


def decode(body: Any, sample_rate: int, max_seconds: float = 120.0) -> ClipInput:
    """``body``: the parsed JSON. ``sample_rate``: the scorer's audio rate. ``audio.start_sample``
    and ``frame_start`` as for a span (the audio placed so that sample 0 is frame 0's time);
    ``present``: one bool per frame."""
    frames, fps = _frames(body, max_seconds)
    present = _frame_flags(body, frames.shape[0])
    # (occluded was not read: a covered mouth's jobs came back OK where the worker says OCCLUDED)
    occluded = _frame_flags(body, frames.shape[0], "occluded")
    # the clip's audio may run on past its frames a little, not for hours: limited once placed
    # (audio sent from before frame 0 is cut there: counted, it refused a clip from 12 s into a
    # session with the session's audio); before decoding, no more than that and max_seconds of
    # audio before frame 0
    clip_s = frames.shape[0] / fps
    _session_id(body)  # (the clip's is not used, but one sent must be one: a review)
    audio, _ = _audio(body, sample_rate, max_seconds=clip_s + 10.0 + min(_lead_s(body, fps), max_seconds))
    audio = _align_to_first_frame(body, audio, sample_rate, fps, frames.shape[0])
    if audio.shape[0] > (clip_s + 10.0) * sample_rate:
        raise RequestError(f"audio of {audio.shape[0] / sample_rate:.1f} s from frame 0 on is longer than the "
                           f"{clip_s + 10.0:.1f} s this request can use")
    block = body.get("block_frames", 16)
    window = body.get("window_ms", 1000)
    if isinstance(block, bool) or not isinstance(block, int) or not 8 <= block <= 16:
        raise RequestError(f"block_frames must be an integer in 8..16, got {block!r}")
    if isinstance(window, bool) or not isinstance(window, int) or not 800 <= window <= 1200:
        raise RequestError(f"window_ms must be an integer in 800..1200, got {window!r}")
    return ClipInput(frames, fps, audio, sample_rate, block, window, present, occluded)


# frames a BLOCK or WINDOW request may carry before its job: the worker's scorer sees the frames
# before a job (its video context) from the blocks it scored earlier; sent along, the served
# verdict is the worker's exactly (Info.context_frames says how many matter)
MAX_CONTEXT_FRAMES = 32


def decode_span(body: Any, sample_rate: int, kind: Kind) -> ScoreRequest:
    """One BLOCK (8..16 frames) or WINDOW (0.8..1.2 s of frames) with its place on the session
    timeline, and the frames sent before it (``context_frames``) as its context -> the scorer's
    ScoreRequest."""
    frames, fps = _frames(body, max_seconds=10.0)
    n_ctx = _int(body, "context_frames", "", 0, MAX_CONTEXT_FRAMES, default=0)
    n = frames.shape[0] - n_ctx
    if kind is Kind.BLOCK and not 8 <= n <= 16:
        raise RequestError(f"a BLOCK is 8..16 frames (after {n_ctx} context frames), got {n}")
    if kind is Kind.WINDOW and not 800 <= round(1000.0 * n / fps) <= 1200:
        raise RequestError(f"a WINDOW is 0.8..1.2 s of frames (after {n_ctx} context frames), got {n} at {fps:g} fps")
    frame_start = _int(body, "frame_start", "", 0, MAX_INDEX, default=0)
    if n_ctx > frame_start:
        raise RequestError(f"context_frames ({n_ctx}) exceeds frame_start ({frame_start}): the context frames "
                           "come before the job's first frame")
    present = _frame_flags(body, n + n_ctx)
    occluded = _frame_flags(body, n + n_ctx, "occluded")
    au = body.get("audio")
    start = au.get("start_sample") if isinstance(au, dict) else None
    if start is None:  # the first frame's time at the audio's own rate (checked as _audio checks it)
        start = round(frame_start / fps * _audio_rate(au)) if isinstance(au, dict) else 0
    else:
        start = _int(au, "start_sample", "audio", 0, MAX_INDEX * 16_000)
    # the frames and the search margin on each side (up to 1.3 s with a 1000 ms search)
    samples, start_at_rate = _audio(body, sample_rate, start, max_seconds=(n + n_ctx) / fps + 4.0)
    audio = AudioSpan(samples, sample_rate, start_at_rate)

    def span(a: int, b: int, first: int) -> FrameSpan:
        # no ROI for a frame is the contract's RoiRef with roi null: no face in it, which the
        # worker reads as face_present False (NO_FACE), as score_clip reads a clip's frames. (It
        # was FrameSpan.present, the worker's frame that never arrived: LOW_QUALITY, while the
        # same frames sent as a clip were NO_FACE.)
        return FrameSpan(frames[a:b], fps, first, face_present=None if present is None else present[a:b],
                         occluded=None if occluded is None else occluded[a:b])

    return ScoreRequest(kind, span(n_ctx, n_ctx + n, frame_start), audio, session_id=_session_id(body),
                        context=span(0, n_ctx, frame_start - n_ctx) if n_ctx else None)


MAX_SESSION_ID_CHARS = 256


def _session_id(body: dict) -> str:
    """The span's ``session_id``: a string (an object was taken and turned into its repr, a probe),
    at most MAX_SESSION_ID_CHARS long; absent or null is ""."""
    sid = body.get("session_id")
    if sid is None:
        return ""
    if not isinstance(sid, str):
        raise RequestError(f"session_id must be a string, got {type(sid).__name__}")
    if len(sid) > MAX_SESSION_ID_CHARS:
        raise RequestError(f"session_id is {len(sid)} characters long (at most {MAX_SESSION_ID_CHARS})")
    return sid


def encode(frames: np.ndarray, fps: float, audio: np.ndarray, sample_rate: int) -> dict:
    """The request body for ``frames`` (uint8 (T, H, W[, 3])) and float audio: what a client sends."""
    fmt = "GRAY8" if frames.ndim == 3 else "RGB24"
    pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
    return {"fps": fps,
            "frames": {"width": int(frames.shape[2]), "height": int(frames.shape[1]), "format": fmt,
                       "data": base64.b64encode(np.ascontiguousarray(frames, dtype=np.uint8).tobytes()).decode()},
            "audio": {"sample_rate": int(sample_rate), "channels": 1, "encoding": "PCM_S16LE",
                      "data": base64.b64encode(pcm.tobytes()).decode()}}
