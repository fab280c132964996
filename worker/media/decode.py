"""Decode media files with ffmpeg/ffprobe subprocesses into numpy arrays.

Timeline convention (what every caller relies on): video is resampled to a constant frame rate
``fps`` on a clock whose zero is the video stream's start_time ``t0`` (container time); frame
``i`` is the decoded frame nearest to the container time ``t0 + i / fps`` (``media.frame_grid``:
a dropped frame's slot is filled half from each side, where ffmpeg's fps filter repeated the
frame before). ``read_audio``
returns mono audio whose sample 0 is at that same ``t0``: a stream that starts later is padded
with silence, one that starts earlier (encoder delay, negative start_time) is trimmed. So sample
``n`` and frame ``i`` are simultaneous when ``n / sample_rate == i / fps``.

(On the container's own clock ffmpeg's fps filter puts frames on multiples of 1 / fps, so a stream
starting between two of them, as FLV, Matroska or MPEG-PS streams do, had its frames read up to
half a frame from where they were shown: an audit's same clip read 40 ms apart with its video
starting 19 and 21 ms after the audio.)
"""

from __future__ import annotations

import collections
import fcntl
import functools
import json
import math
import os
import queue
import re
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from worker.media.frame_grid import NearestFrameGrid, median_spacing_s, missing_slots

# Standard broadcast/camera rates; an average rate within 0.1 % of one of these snaps to it
# (29.97 probes as 2997/100 or 30000/1001 depending on the muxer: both mean 30000/1001).
_STANDARD_RATES = [
    Fraction(24000, 1001), Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(30),
    Fraction(50), Fraction(60000, 1001), Fraction(60), Fraction(15), Fraction(12), Fraction(10),
]
_VFR_TOLERANCE = 0.01  # r_frame_rate vs avg_frame_rate relative difference that means VFR


# The timeline convention above, as caches of decoded clips record it: 3 = frame i the decoded
# frame nearest the video's start + i / fps (2 = the fps filter's last frame at or before it;
# 1 = on the container clock's 1 / fps grid, up to half a frame off).
TIMELINE_VERSION = 3


class MediaError(Exception):
    """A media file that cannot be used; ``str(err)`` is one line fit for a CLI error."""


@dataclass(frozen=True)
class MediaInfo:
    path: str
    duration_s: float
    container: str
    has_video: bool
    has_audio: bool
    video_codec: str | None = None
    audio_codec: str | None = None
    width: int | None = None  # display width (after rotation metadata and non-square pixels)
    height: int | None = None
    coded_width: int | None = None  # the decoded frames' size (after rotation), before the pixel aspect
    coded_height: int | None = None
    sample_aspect: float = 1.0  # the pixels' own aspect ratio (SAR; 1 = square)
    video_index: int | None = None  # the video stream read: its absolute index in the file (ffmpeg's 0:N)
    video_duration_s: float = 0.0  # the video stream's own length as the file says it (0: not said)
    audio_duration_s: float = 0.0  # the audio stream's own length as the file says it (0: not said)
    fps: float | None = None  # snapped average frame rate
    fps_fraction: str | None = None  # the same as an exact "num/den" for ffmpeg
    avg_frame_rate: float | None = None  # as probed
    r_frame_rate: float | None = None  # as probed
    is_vfr: bool = False
    video_start_s: float = 0.0
    audio_start_s: float = 0.0
    start_s: float = 0.0  # the container's start time (ffmpeg subtracts it when extracting a stream)
    sample_rate: int | None = None
    channels: int | None = None
    rotation_deg: int = 0
    audio_streams: int = 0  # how many audio streams the file has
    audio_stream: int = 0  # which of them (ffmpeg's 0:a:N) is read: the one asked for, else the default-flagged one
    audio_index: int | None = None  # the audio stream read: its absolute index in the file (ffmpeg's 0:N)

    @property
    def av_start_offset_ms(self) -> float:
        """Audio start minus video start (container clocks), ms; what read_audio compensates."""
        return 1000.0 * (self.audio_start_s - self.video_start_s)


def _require_tools() -> None:
    for tool in ("ffmpeg", "ffprobe"):
        if shutil.which(tool) is None:
            raise MediaError(f"{tool} not found on PATH (install ffmpeg)")


def _parse_rate(text: str | None) -> Fraction | None:
    if not text or text in ("0/0", "0"):
        return None
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None
    return value if value > 0 else None


def snap_fps(rate: Fraction) -> Fraction:
    """Snap a probed rate to the nearest standard rate within 0.1 %, else a small fraction."""
    for std in _STANDARD_RATES:
        if abs(rate - std) / std < Fraction(1, 1000):
            return std
    return rate.limit_denominator(1001)


def _float(value, default: float = 0.0) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if math.isfinite(out) else default


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _check_path(path: str | os.PathLike) -> str:
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except OSError:
        mode = None
    if mode is None or not p.exists():
        if _URL.match(os.fspath(path)):
            # Path() folds "//": a URL read "no such file: http:/host/x.mp4" (ffmpeg could fetch
            # it, but a file is probed and decoded twice over, and this machine may be offline)
            raise MediaError(f"not a local file: {os.fspath(path)} (URLs are not fetched: download it first)")
        raise MediaError(f"no such file: {p}")
    if stat.S_ISDIR(mode):
        raise MediaError(f"is a directory, not a media file: {p}")
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        # ffprobe waits on a FIFO for a writer for good (a review: `score` hung; with a writer it
        # left an ffmpeg behind), and a file read twice (probe, then decode) cannot be a stream
        raise MediaError(f"not a regular file (a pipe or socket): {p}")
    if not os.access(p, os.R_OK):
        raise MediaError(f"cannot read file (permission denied): {p}")
    return str(p)


def _probe_error(path: str, stderr: str) -> str:
    """ffprobe's failure as one line: its last line, unless an earlier one says what is wrong: a
    truncated MP4 ends "Invalid data found when processing input", after "moov atom not found"
    (the index an MP4/MOV writer puts at the end, or at the start once it is done). So does any
    file named .mp4 that is none (a text file), which is not called truncated: only one that
    starts with an MP4 box is."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    if any("moov atom not found" in ln for ln in lines) and _starts_like_mp4(path):
        if _last_box_runs_past_end(path):
            return ("the file looks truncated: it has no moov index (an MP4/MOV whose writing was cut off "
                    "or never finished)")
        # all of its boxes there, the index among them damaged (a review: a full-length file
        # was called cut off)
        return "the file looks damaged or truncated: it has no moov index that can be read (an MP4/MOV)"
    return lines[-1] if lines else "unknown ffprobe error"


_BOX_TYPE = re.compile(rb"[A-Za-z0-9 \xa9]{4}")  # a box's four-character type (\xa9: QuickTime's "(c)nam")


def _last_box_runs_past_end(path: str, max_boxes: int = 100_000) -> bool:
    """Whether an MP4/MOV's top-level boxes, walked from the start by their sizes, reach past the
    end of the file (its writing cut off); False when they end with it, or a box's header is not
    one (a review's moov header overwritten read as a 3.4 GB box)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            at = 0
            for _ in range(max_boxes):
                if at >= size:
                    return at > size  # the last box ends past the file's end, or with it
                f.seek(at)
                head = f.read(16)
                if len(head) < 8:
                    return True  # a box header cut off
                length = int.from_bytes(head[:4], "big")
                if length == 1:  # a 64-bit size follows the type
                    if len(head) < 16:
                        return True
                    length = int.from_bytes(head[8:16], "big")
                elif length == 0:  # to the end of the file
                    return False
                if length < 8 or not _BOX_TYPE.fullmatch(head[4:8]):
                    return False  # no box size or type (bytes overwritten): damage, not a cut
                at += length
            return False
    except OSError:
        return False


# top-level ISO BMFF / QuickTime boxes a file starts with
_MP4_FIRST_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"styp", b"sidx",
                    b"moof", b"pdin", b"meta"}


def _starts_like_mp4(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return False
    return len(head) == 8 and head[4:8] in _MP4_FIRST_BOXES


def ff_input(path: str | os.PathLike) -> str:
    """``path`` as ffmpeg/ffprobe must be given it: a file: URL of the absolute path, so that a
    name starting with "-" is not read as an option, nor "a:b.mp4" as protocol "a"."""
    return "file:" + os.path.abspath(path)


def probe(path: str | os.PathLike, audio_stream: int | None = None) -> MediaInfo:
    """Describe the first video stream of ``path`` and one audio stream (raises MediaError): the
    ``audio_stream``-th (0-based, as ffmpeg's 0:a:N), else the one flagged default when there
    are several (what players play; a dubbed film's original language, say), else the first."""
    _require_tools()
    spath = _check_path(path)
    cmd = ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", ff_input(spath)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise MediaError(f"cannot read media file {spath}: {_probe_error(spath, proc.stderr)}")
    try:
        data = json.loads(proc.stdout or "{}")
    except json.JSONDecodeError as err:
        raise MediaError(f"cannot read media file {spath}: bad ffprobe output ({err})") from None
    streams = data.get("streams", [])
    fmt = data.get("format", {})
    # Cover art (attached_pic) is a "video" stream that is not video; of several, a still (a
    # one-frame PNG track listed first, a review) is not the video either (_moving_video)
    videos = [s for s in streams if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")]
    video = _moving_video(spath, videos) if len(videos) > 1 else (videos[0] if videos else None)
    audios = [s for s in streams if s.get("codec_type") == "audio"]
    if audio_stream is not None and not 0 <= audio_stream < max(1, len(audios)):
        raise MediaError(f"{spath} has {len(audios)} audio stream(s): the audio stream must be within "
                         f"0..{max(0, len(audios) - 1)}, got {audio_stream}")
    if audio_stream is None:
        flagged = [i for i, a in enumerate(audios) if a.get("disposition", {}).get("default")]
        audio_stream = flagged[0] if len(audios) > 1 and flagged else 0
    audio = audios[audio_stream] if audios else None
    if video is None and audio is None:
        raise MediaError(f"cannot read media file {spath}: no audio or video stream")

    kw: dict = {}
    if video is not None:
        avg = _parse_rate(video.get("avg_frame_rate"))
        real = _parse_rate(video.get("r_frame_rate"))
        base = avg or real
        packets_not_frames = bool(avg and real and avg > real * Fraction(3, 2))
        if packets_not_frames:
            # more frames per second on average than the stream's base rate can time: packets
            # that are not frames (H.264 with B-frames copied into AVI counts each frame twice,
            # 50 "fps" for a 25 fps clip), so the base rate is the frame rate
            base = real
        if base is None:
            raise MediaError(f"video stream of {spath} has no frame rate")
        video_s = _stream_duration(video, _float(video.get("start_time")))
        one_frame_over = bool(avg and real and avg > real and snap_fps(real) in _STANDARD_RATES
                              and video_s > 0 and float(avg - real) * video_s <= 1.5)
        if one_frame_over:
            # N frames averaged over the N - 1 intervals they span (the last frame given no
            # duration: MPEG-PS copied into MP4 reads 75 frames in 2.96 s, 25.34 fps): a short
            # clip's average sits a frame's worth above its standard base rate, which it keeps
            # (read at the average, a review's frame was repeated and the fps reported 25.3378)
            base = real
        fps = snap_fps(base)
        is_vfr = bool(avg and real and not packets_not_frames and not one_frame_over
                      and abs(float(real - avg)) / float(avg) > _VFR_TOLERANCE)
        if is_vfr and real > avg and snap_fps(real) in _STANDARD_RATES:
            # a standard base rate above the average: frames dropped from a constant-rate stream
            # (a 25 fps recording that lost a fifth of its frames averages 19.6 fps). Read at
            # the base rate, each frame lands on its own time; at the average, an audit's
            # offsets moved to a 51 ms grid and read 30-80 ms off.
            fps = snap_fps(real)
        elif fps not in _STANDARD_RATES and (steady := _steady_rate(spath, int(video.get("index", 0)))) is not None \
                and steady != fps:
            # a rate no camera records at (16.95 fps): either container says only the average
            # (Matroska copied from a 25 fps recording that lost a third of its frames), or the
            # base rate is the time base (90000). The frames' own spacing tells the base rate;
            # at the average an audit's offsets stepped by 59 ms.
            fps, is_vfr = steady, True
        rotation = _rotation(video)
        cw, ch = int(video.get("width") or 0), int(video.get("height") or 0)
        sar = _sample_aspect(video.get("sample_aspect_ratio"))
        # non-square pixels (PAL 16:9 is 720x576 at 64:45, a review): frames are scaled to the
        # shape they are shown in, or faces are squeezed; square pixels keep their size exactly
        w = max(2, round(cw * sar / 2) * 2) if sar != 1.0 and cw > 0 else cw
        h = ch
        if rotation % 180 == 90:
            w, h, cw, ch = h, w, ch, cw
        kw.update(
            video_codec=video.get("codec_name"), width=w, height=h, coded_width=cw, coded_height=ch,
            sample_aspect=sar, video_index=int(video.get("index", 0)),
            video_duration_s=video_s, fps=float(fps),
            fps_fraction=f"{fps.numerator}/{fps.denominator}",
            avg_frame_rate=float(avg) if avg else None, r_frame_rate=float(real) if real else None,
            is_vfr=is_vfr, video_start_s=_float(video.get("start_time")), rotation_deg=rotation,
        )
    if audio is not None:
        kw.update(
            audio_codec=audio.get("codec_name"), sample_rate=int(_float(audio.get("sample_rate"))),
            channels=int(audio.get("channels") or 0), audio_start_s=_float(audio.get("start_time")),
            audio_duration_s=_stream_duration(audio, _float(audio.get("start_time"))),
            audio_streams=len(audios), audio_stream=audio_stream, audio_index=int(audio.get("index", 0)),
        )
    duration = _float(fmt.get("duration"))
    if duration <= 0:
        duration = max(_float(s.get("duration")) for s in streams) if streams else 0.0
    return MediaInfo(
        path=spath, duration_s=duration, container=str(fmt.get("format_name", "")),
        has_video=video is not None, has_audio=audio is not None, start_s=_float(fmt.get("start_time")), **kw,
    )


# _steady_rate: how much of the stream its packets are read for, and how closely their phases on
# a rate's grid must agree (1: exactly on it; uniform +-8 ms jitter at 25 fps gives 0.76)
STEADY_SCAN_S = 120
STEADY_MIN_AGREEMENT = 0.5
STEADY_MAX_SLOTS = 1.8  # a standard rate's slots per frame there are, at most (fewer than 45% dropped)


def _moving_video(path: str, videos: list[dict]) -> dict:
    """Of several video streams, the one to read: the default-flagged one (else the first), as
    ffmpeg and players pick it, unless it is a still (at most one packet in the first
    MOVING_SCAN_S seconds, demuxed only: a one-frame PNG track listed before the camera's
    stream, a review: "has 1 frames; at least 8 are needed"); then the next one that moves.
    Not the busiest: a 25 fps camera beside a 60 fps screen track is still the video (a review:
    the screen track was scored, NO_FACE)."""
    preferred = next((i for i, v in enumerate(videos) if (v.get("disposition") or {}).get("default")), 0)
    cmd = ["ffprobe", "-v", "error", "-read_intervals", f"%+{MOVING_SCAN_S}", "-show_entries",
           "packet=stream_index", "-of", "csv=p=0", ff_input(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    counts = collections.Counter(x.strip().rstrip(",") for x in proc.stdout.split())
    n = [counts.get(str(v.get("index")), 0) for v in videos]
    if proc.returncode != 0 or n[preferred] > 1:
        return videos[preferred]
    order = [*range(preferred + 1, len(videos)), *range(preferred)]
    return next((videos[i] for i in order if n[i] > 1), videos[preferred])


MOVING_SCAN_S = 5


def _sample_aspect(text: str | None) -> float:
    """A stream's sample (pixel) aspect ratio "64:45" as a float; 1.0 when unset ("0:1", "N/A")
    or beyond any real camera's (outside 1/4..4)."""
    try:
        num, den = (int(x) for x in str(text).split(":"))
    except (TypeError, ValueError):
        return 1.0
    if num <= 0 or den <= 0 or num == den:
        return 1.0
    sar = num / den
    return sar if 0.25 <= sar <= 4.0 else 1.0


def _stream_duration(stream: dict, start_s: float) -> float:
    """How long a stream says it is: its duration, else the DURATION tag Matroska muxers write
    (ffmpeg's is the stream's end time: 01:00:08 for 8 s starting at 3600 s); 0.0 when unsaid."""
    dur = _float(stream.get("duration"))
    if dur > 0:
        return dur
    tag = next((v for k, v in (stream.get("tags") or {}).items() if k.upper() == "DURATION"), None)
    m = re.fullmatch(r"\s*(\d+):(\d+):(\d+(?:\.\d*)?)\s*", str(tag)) if tag else None
    if not m:
        return 0.0
    t = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    if start_s > 0 and t > start_s:  # an end time (ffmpeg), not a length
        t -= start_s
    return t if t > 0 else 0.0


def _steady_rate(path: str, index: int = 0) -> Fraction | None:
    """The standard rate whose frame grid the video's packet times keep to (the first
    STEADY_SCAN_S seconds, demuxed only: 0.1 s for a small file, 0.8-4 s for 1.6 GB of
    1080p), or None (also when they keep to their own average rate). Each rate's grid is
    scored by how closely the times' phases on it agree (the mean resultant length of
    exp(2 pi i t rate)): dropped frames leave the phases alone and jitter only spreads them,
    while a wrong rate's phases drift round the circle. Multiples of the rate (50 for 25) agree
    too, so the lowest rate that scores nearly as well as the best is the frame rate, and none
    with STEADY_MAX_SLOTS times the frames there are or more (45% of its slots empty)."""
    cmd = ["ffprobe", "-v", "error", "-select_streams", str(index), "-read_intervals", f"%+{STEADY_SCAN_S}",
           "-show_entries", "packet=pts_time", "-of", "csv=p=0", ff_input(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    times = np.unique(np.array([t for t in (_float(x.strip().rstrip(","), math.nan) for x in proc.stdout.split())
                                if math.isfinite(t)], np.float64))
    if proc.returncode != 0 or len(times) < 8:
        return None
    t = times - times[0]
    mean_rate = (len(t) - 1) / t[-1] if t[-1] > 0 else 0.0

    def agreement(rate: float) -> float:
        return float(np.abs(np.exp(2j * np.pi * t * rate).mean()))

    # a grid is only the frame rate if well over half its slots hold a frame: a 20 fps stream
    # keeps to the 60 fps grid as well (every third slot), and a 12.5 fps one to the 25 fps grid
    # (every other: exactly half, where rounding decided before, a review)
    agree = {std: agreement(float(std)) for std in _STANDARD_RATES if float(std) < STEADY_MAX_SLOTS * mean_rate}
    if not agree:
        return None
    best = max(agree.values())
    if best < STEADY_MIN_AGREEMENT or agreement(mean_rate) >= 0.9 * best:
        return None  # the frames keep to their own average rate: nothing dropped, a rate of its own
    return min(std for std, a in agree.items() if a >= 0.9 * best)


def _rotation(stream: dict) -> int:
    rot = stream.get("tags", {}).get("rotate")
    for side in stream.get("side_data_list", []) or []:
        if "rotation" in side:
            rot = side["rotation"]
    return int(_float(rot)) % 360 if rot is not None else 0


def first_frame_time_s(info: MediaInfo) -> float:
    """Container time of output frame 0: the video stream's start_time (``iter_video`` moves
    the fps filter's clock there, so frame i is at start_time + i / fps at any rate)."""
    return info.video_start_s


def _target_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    if not max_side or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    # Even sizes keep every pixel format happy.
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def _fps_fraction(info: MediaInfo, fps: float | None) -> Fraction:
    if fps is None:
        return Fraction(info.fps_fraction)
    if not (fps > 0 and math.isfinite(fps)):
        raise MediaError(f"bad fps {fps!r}: must be a positive number")
    return snap_fps(Fraction(fps).limit_denominator(100000))


def iter_video(
    path: str | os.PathLike,
    fps: float | None = None,
    max_side: int | None = None,
    chunk_frames: int = 64,
    info: MediaInfo | None = None,
    errors: list[str] | None = None,
    missing: list[tuple[int, int]] | None = None,
) -> Iterator[np.ndarray]:
    """Yield constant-rate RGB frames in chunks of (<= chunk_frames, H, W, 3) uint8.

    fps: output rate (default: the stream's snapped average rate); VFR input is resampled.
    max_side: downscale (area filter) so that max(H, W) <= max_side; never upscales.
    errors: if given, ffmpeg's error lines for a file that decoded (a damaged stretch it skipped)
    are appended to it once the stream ends.
    missing: if given, the frames with no decoded frame near them (a variable-rate stream that
    lost a stretch of frames: see missing_hold_s) are appended to it once the stream ends, as
    half-open ranges [start, stop) of frame indices. Those frames are yielded all the same (the
    nearest decoded frame), so a caller that cannot use the list reads them as before; one that
    can should not score them.
    A stream whose clock restarts (MPEG-TS parts cat'ed, each from 0) is read whole, each part
    after the one before it (``timestamp_resets``; read_audio joins the audio alike).
    Memory stays at a few chunks (the one in use, the one being filled and READ_AHEAD_CHUNKS read
    ahead, each at most MAX_CHUNK_BYTES), so hour-long or 4K files are fine.
    Frames come in the shape they are shown in: non-square pixels are scaled to square ones
    (``info.width`` x ``info.height``; a square-pixel file's frames are not touched).

    The file is checked when this is called (MediaError: no video, no size, a bad fps), not
    when the first chunk is asked for: a tracker starts FaceMesh only for a file that can be
    read (a review: MediaPipe's lines around a one-line error).
    """
    info = info or probe(path)
    if not info.has_video:
        raise MediaError(f"no video stream in {info.path}")
    rate = _fps_fraction(info, fps)
    w, h = _target_size(info.width or 0, info.height or 0, max_side)
    if w <= 0 or h <= 0:
        raise MediaError(f"video stream of {info.path} has no size")
    coded = (info.coded_width or info.width, info.coded_height or info.height)
    # the pipe is cut into frames of w x h, so every frame is scaled to it: a decoder may give
    # frames of another size than the stream's header (VP6 in Matroska: 480x368 for a 480x360
    # header, a review), which cut the pipe out of step with the frames' times. A frame already
    # w x h is only converted to RGB, as without the filter.
    scale = [f"scale={w}:{h}"]
    if (w, h) != coded:
        scale = [f"scale={w}:{h}:flags=area"]
        if info.sample_aspect != 1.0:
            scale.append("setsar=1")
    frame_bytes = w * h * 3
    # Bounded in bytes too: 32 frames of 4K are 800 MB.
    per_chunk = max(1, min(chunk_frames, MAX_CHUNK_BYTES // frame_bytes))
    return _iter_nearest_frames(info, rate, scale, (h, w), per_chunk, errors, missing)


# A frame or packet more than this before the one before it: the stream's clock restarted (MPEG-TS
# parts encoded apart and cat'ed, each from 0). A join's overlap is a frame or two and an encoder's
# priming (a probe's: 80 ms of video, 104 ms of audio), far less; read by those timestamps the
# second part was thrown away (63 frames of 125 decoded, the audio trimmed alike).
RESET_S = 0.5
# ... and before the RESET_CONFIRM times before it, with the RESET_CONFIRM - 1 after it before them
# too: one damaged timestamp, far back or far ahead, is no restart (read as one, everything
# after it would have moved)
RESET_CONFIRM = 4


def is_restart(before: Sequence[float], t: float, after: Sequence[float] = (), reset: float = RESET_S) -> bool:
    """Whether time ``t`` restarts the clock (pure): more than ``reset`` (RESET_S, in the times'
    unit) before the time just before it, before all of ``before`` (the last RESET_CONFIRM times
    of its part), and the times ``after`` it (up to RESET_CONFIRM - 1 of them, as known) staying
    before those too."""
    if len(before) == 0:
        return False
    floor = min(before)
    return t < before[-1] - reset and t < floor and all(x < floor for x in after)


def split_at_resets(times_s: np.ndarray) -> list[int]:
    """Where a stream's clock restarts (pure, is_restart): the indices i at which a new part
    begins (packets by decoding time, or decoded frames in order), in order."""
    t = np.asarray(times_s, np.float64)
    cuts: list[int] = []
    part = 0
    for i in (np.flatnonzero(t[1:] < t[:-1] - RESET_S) + 1).tolist():
        if i > part and is_restart(t[max(part, i - RESET_CONFIRM): i], t[i], t[i + 1: i + RESET_CONFIRM]):
            cuts.append(i)
            part = i
    return cuts


def join_offsets_s(start_s: np.ndarray, end_s: np.ndarray, cuts: Sequence[int]) -> list[float]:
    """For each part after a restart (cut at ``cuts``, as split_at_resets gives them), the offset
    in seconds that puts its first frame right where the part before it ends, that part already
    moved by its own offset (pure). ``start_s``, ``end_s``: each packet's presentation time and
    end (B-frames: a part starts at its earliest time, ends at its latest end)."""
    start, end = np.asarray(start_s, np.float64), np.asarray(end_s, np.float64)
    bounds = [0, *cuts, start.shape[0]]
    offsets: list[float] = []
    before = 0.0
    for k in range(1, len(bounds) - 1):
        prev_end = float(np.nanmax(end[bounds[k - 1]: bounds[k]]))
        first = float(np.nanmin(start[bounds[k]: bounds[k + 1]]))
        before = prev_end + before - first
        offsets.append(before)
    return offsets


@dataclass(frozen=True)
class Join:
    """Where a file's video clock restarts: the part before it ends at ``before_end_s``, the new
    one starts at ``start_s`` (container times, as the part's own timestamps say), and
    ``offset_s`` added to the new part's times joins it to the end of the one before (that one
    already moved by its own)."""

    before_end_s: float
    start_s: float
    offset_s: float


@dataclass(frozen=True)
class TimestampResets:
    """Where a file's clock restarts (``timestamp_resets``): the video's ``joins`` in order; the
    audio's timestamps fall into ``audio_parts`` parts (1: they never restart)."""

    joins: tuple[Join, ...]
    audio_parts: int = 1

    def audio_offsets_s(self) -> tuple[float, ...] | None:
        """The video's offsets for the audio's parts when the two restart alike (as many times),
        so that each part's audio stays with its frames as the part's own timestamps put it;
        else None."""
        if self.audio_parts != len(self.joins) + 1:
            return None
        return tuple(j.offset_s for j in self.joins)


def timestamp_resets(info: MediaInfo) -> TimestampResets | None:
    """Where the clock of ``info``'s video (and the audio read with it) restarts, from all of the
    file's packets (demuxed only; read once per file, and only for a file whose decoded frames
    went back in time). None when it cannot be told. Video and audio, decoded apart, both join
    their parts by the video's offsets: ffmpeg's own fix (without -copyts) joins each stream
    end to end on its own, and a probe's concatenation then read its second half's audio 51 ms
    away from where its timestamps put it against the frames."""
    if not info.has_video:
        return None
    try:
        st = os.stat(info.path)
    except OSError:
        return None
    frame_s = float(1 / Fraction(info.fps_fraction)) if info.fps_fraction else 0.04
    return _scan_resets(info.path, st.st_size, st.st_mtime_ns, info.video_index,
                        info.audio_index if info.has_audio else None, frame_s)


@functools.lru_cache(maxsize=8)
def _scan_resets(path: str, _size: int, _mtime_ns: int, video_index: int | None, audio_index: int | None,
                 frame_s: float) -> TimestampResets | None:
    cmd = ["ffprobe", "-v", "error", "-show_entries", "packet=stream_index,pts_time,dts_time,duration_time",
           "-of", "csv=p=0", ff_input(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return None
    rows: dict[int | None, list[tuple[float, float, float]]] = {video_index: [], audio_index: []}
    for line in proc.stdout.split():
        f = line.split(",")
        if len(f) < 4 or not f[0].isdigit() or (idx := int(f[0])) not in rows:
            continue
        rows[idx].append((_float(f[1], math.nan), _float(f[2], math.nan), _float(f[3], math.nan)))

    def parts(index: int | None) -> tuple[np.ndarray, np.ndarray, list[int]]:
        x = np.array(rows.get(index) or np.zeros((0, 3)), np.float64).reshape(-1, 3)
        pts, dts, dur = x[:, 0], x[:, 1], x[:, 2]
        start = np.where(np.isfinite(pts), pts, dts)
        order = np.where(np.isfinite(dts), dts, start)
        keep = np.isfinite(order)
        start, order = start[keep], order[keep]
        end = start + np.where(np.isfinite(dur[keep]) & (dur[keep] > 0), dur[keep], frame_s)
        return start, end, split_at_resets(order)

    start, end, cuts = parts(video_index)
    if start.shape[0] == 0:
        return None
    offsets = join_offsets_s(start, end, cuts)
    bounds = [0, *cuts, start.shape[0]]
    joins = tuple(Join(float(np.nanmax(end[bounds[k]: bounds[k + 1]])), float(np.nanmin(start[bounds[k + 1]:
                                                                                             bounds[k + 2]])), o)
                  for k, o in enumerate(offsets))
    audio_cuts = parts(audio_index)[2] if audio_index is not None else []
    return TimestampResets(joins, len(audio_cuts) + 1)


def _iter_nearest_frames(info: MediaInfo, rate: Fraction, scale: list[str], size_hw: tuple[int, int],
                         per_chunk: int, errors: list[str] | None,
                         missing: list[tuple[int, int]] | None = None) -> Iterator[np.ndarray]:
    """iter_video's frames: every decoded frame with its own time (showinfo on ffmpeg's log), each
    slot of the constant-rate grid filled with the frame nearest to it (media.frame_grid). Time 0
    is the video stream's start_time. ffmpeg's fps filter, used before, fills a dropped frame's
    slot with the frame before it, and read a recording that lost a third of its frames 30-47
    ms early; a probe cannot tell such a file (Matroska, WebM and MPEG-TS report its base rate
    as their average, a review), so every stream is read this way. On a constant-rate stream
    the two give the same frames (49 of the 50 dev clips frame for frame; the 50th, a WebM that
    lost two frames after its first, differs in one)."""
    h, w = size_hw
    frame_bytes = w * h * 3
    filters = [f"setpts=PTS-({info.video_start_s:.6f}/TB)", "showinfo=checksum=0", *scale]
    cmd = [
        "ffmpeg", "-hide_banner", "-nostats", "-loglevel", "+level+info", "-nostdin", "-copyts",
        "-i", ff_input(info.path), "-map", _video_map(info), "-vf", ",".join(filters), "-fps_mode", "passthrough",
        "-pix_fmt", "rgb24", "-f", "rawvideo", "pipe:1",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    times = _FrameTimes(proc.stderr)
    ahead = _ReadAhead(proc.stdout, frame_bytes * per_chunk)
    native = Fraction(info.fps_fraction) if info.fps_fraction else rate
    grid = NearestFrameGrid(rate, alternate_ties=rate <= native)
    placed: list[float] = []  # every placed frame's time, for ``missing`` (8 bytes a frame)
    # slots are copied into a chunk of their own as they are filled and the chunk yielded when
    # full: the read-ahead's buffers are let go as soon as their frames are placed (a list of
    # views stacked at the end kept them alive: 2.6x the fps path's memory on 4K)
    out: np.ndarray | None = None
    n_fill = n_out = 0
    prev: np.ndarray | None = None
    prev_s = None

    # no slot far past the container's end: a broken timestamp (or a forged log line) must not
    # turn a short file into hours of repeated frames
    max_slots = math.ceil((info.duration_s + MAX_SLOTS_PAST_END_S) * rate) if info.duration_s > 0 else None
    # a restarted clock (is_restart): the file's joins, asked for at the first frame that may be
    # one; the frames' own times (container clock less t0) of the part being read, the last few
    offset_s, restarts = 0.0, 0
    joins: tuple[Join, ...] | None = None
    recent: collections.deque[float] = collections.deque(maxlen=RESET_CONFIRM)

    def fill(img: np.ndarray, count: int) -> Iterator[np.ndarray]:
        nonlocal out, n_fill, n_out
        if max_slots is not None:
            count = max(0, min(count, max_slots - n_out - n_fill))
        for _ in range(count):
            if out is None:
                out = np.empty((per_chunk, h, w, 3), np.uint8)
            out[n_fill] = img
            n_fill += 1
            if n_fill == per_chunk:
                done, out, n_fill = out, None, 0
                n_out += per_chunk
                yield done

    try:
        for buf in ahead:
            n = len(buf) // frame_bytes
            for img in np.frombuffer(buf[: n * frame_bytes], np.uint8).reshape(n, h, w, 3):
                pts_s = times.next()
                if not math.isfinite(pts_s):  # a frame without a time: one slot after the last
                    pts_s = 0.0 if prev_s is None else prev_s + float(1 / rate)
                else:
                    damaged = False
                    if is_restart(recent, pts_s):
                        if joins is None:
                            found = timestamp_resets(info)
                            joins = found.joins if found is not None else ()
                        # the file's next join, if this is where it is; else a damaged time (the
                        # frame is dropped below, as not after the one before it)
                        t0 = info.video_start_s
                        if restarts < len(joins) and abs(joins[restarts].start_s - t0 - pts_s) <= RESET_S \
                                and abs(joins[restarts].before_end_s - t0 - recent[-1]) <= RESET_S:
                            new_s = joins[restarts].offset_s
                            if max_slots is not None:  # the container's length counts one part's clock
                                max_slots += max(0, math.ceil((new_s - offset_s) * rate))
                            offset_s, restarts = new_s, restarts + 1
                            recent.clear()
                        else:
                            damaged = True
                    if not damaged:
                        recent.append(pts_s)
                    pts_s += offset_s
                count = grid.push(pts_s)
                if count is None:  # not after the frame before it (a broken timestamp)
                    continue
                if missing is not None:
                    placed.append(pts_s)
                if prev is not None:
                    yield from fill(prev, count)
                prev, prev_s = img, pts_s
            if prev is not None:
                prev = prev.copy()  # its slots are not all known yet: keep the frame, not the buffer
        rc = proc.wait()
        if prev is not None and rc == 0:
            yield from fill(prev, grid.finish())
        if n_fill:
            n_out += n_fill
            yield out[:n_fill]
            out = None
    finally:
        if proc.poll() is None:  # consumer stopped early
            proc.kill()
            proc.wait()
        ahead.close()
        err_lines = times.close()
        proc.stdout.close()
        proc.stderr.close()
    if n_out == 0:  # ffmpeg's last line alone read "Error marking filters as finished" (a review)
        detail = f" (ffmpeg: {err_lines[-1]})" if err_lines else ""
        raise MediaError(f"no video frame could be decoded from {info.path}{detail}")
    if rc != 0:
        raise MediaError(f"cannot decode video of {info.path}: {(err_lines or ['?'])[-1]}")
    if errors is not None:
        errors.extend(err_lines)
    if missing is not None:
        hold_s = missing_hold_s(placed, rate, native)
        missing.extend((a, min(b, n_out)) for a, b in missing_slots(placed, rate, hold_s) if a < n_out)


def missing_hold_s(times_s: Sequence[float], rate: Fraction, native: Fraction) -> float:
    """How far (s) a frame slot may be from the nearest decoded frame (``times_s``) before
    iter_video lists it as missing (pure): MAX_HOLD_PERIODS frame periods, the longest of the
    output's, the stream's header's and its decoded frames' median spacing (a 30 fps phone clip
    whose header says 60, one frame in ten early, had single slots listed at 60 fps; Theora in
    Ogg writes no frame for a still picture, 0.48 s apart, and 77 of 139 slots were listed), and
    never under MIN_HOLD_S."""
    period_s = max(float(1 / rate), float(1 / native), median_spacing_s(times_s))
    return max(MAX_HOLD_PERIODS * period_s, MIN_HOLD_S)


def _video_map(info: MediaInfo) -> str:
    """ffmpeg's -map for the video stream probe described: by its absolute index (0:v:0 is the
    first video stream, cover art included: a review's MP4 listing its cover first decoded the
    cover, "no frames decoded")."""
    return "0:v:0" if info.video_index is None else f"0:{info.video_index}"


# iter_video: one chunk's bytes at most, and how many chunks the reader thread keeps ready
MAX_CHUNK_BYTES = 96 * 1024 * 1024
READ_AHEAD_CHUNKS = 2
MAX_ERROR_LINES = 10_000  # ffmpeg's error lines kept per stream (the last ones)
MAX_SLOTS_PAST_END_S = 10.0  # _iter_nearest_frames: frame slots past the container's duration
# iter_video's ``missing``: a frame slot further than this many frame periods (the longest of the
# output's, the header's and the decoded frames' median spacing: missing_hold_s) from the nearest decoded frame has none. Up to 4 frames lost in a
# row leave every slot within 2 periods of a real frame (a nearest-frame fill, off by at most two
# frames, as the tracker bridges a face lost for 2 frames); a longer hole holds one picture for
# its half-length, a still mouth under speech that read a confident +160 ms over a 1-s hole.
MAX_HOLD_PERIODS = 2
# ... and never closer than this: at 25 fps the 2 periods, a fill at most two frames off; the same
# time at 50 or 60 fps (2 periods there are 33-40 ms: 3 lost frames in a row, a hold no worse than
# one lost frame at 12.5 fps), so a slot is missing only in a gap of 160 ms or more, whatever the
# rate the clip is read at. Half a 1-s hole, which read +160 ms, is 500 ms.
MIN_HOLD_S = 0.08


class _ReadAhead:
    """Iterate a pipe in blocks of ``block_bytes`` (the last may be short), read by a thread that
    keeps up to READ_AHEAD_CHUNKS blocks ready. Without it ffmpeg stalls on a full pipe while the
    consumer works on a block, so decoding and tracking took turns on a 2-core machine instead of
    running side by side (a 720p clip: 1.1 s of 2.4 s waiting for frames)."""

    _END = object()

    def __init__(self, pipe, block_bytes: int) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=READ_AHEAD_CHUNKS)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(pipe, block_bytes), daemon=True,
                                        name="video-read-ahead")
        self._thread.start()

    def _run(self, pipe, block_bytes: int) -> None:
        try:
            while not self._stop.is_set():
                buf = pipe.read(block_bytes)
                if buf:
                    self._put(buf)
                if len(buf) < block_bytes:
                    break
        except BaseException as exc:  # noqa: BLE001 - a closed pipe, MemoryError, ...: the consumer says so
            if not self._stop.is_set():
                self._put(exc)
        self._put(self._END)

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self):
        while True:
            try:
                item = self._queue.get(timeout=1.0)
            except queue.Empty:
                if self._thread.is_alive():
                    continue
                # the thread died without a word (it always puts _END): never wait for good
                raise MediaError("reading decoded frames failed: the reader stopped") from None
            if item is self._END:
                return
            if isinstance(item, MemoryError):
                raise MediaError("reading decoded frames failed: out of memory") from None
            if isinstance(item, BaseException):
                raise MediaError(f"reading decoded frames failed: {item}") from None
            yield item

    def close(self) -> None:
        """Stop the thread (after the process was killed or ended, so its read returns)."""
        self._stop.set()
        self._thread.join(timeout=5)


class _FrameTimes:
    """ffmpeg's log read to its end on a thread (``-loglevel +level+info``): showinfo's frame
    times, in decoding order, for ``next``; its last MAX_ERROR_LINES error lines (level error or
    fatal, the tag dropped, as ``-v error`` prints them). Drained as it comes: a damaged file
    makes ffmpeg write more errors than a pipe holds (64 KB), and it then stalled on them while
    we waited for frames (a hang)."""

    # the integer pts in the filter's time base: pts_time prints with 6 significant digits, 10 ms
    # steps past 1000 s and 100 ms past 10000 s (a review: frames sharing a time were dropped)
    # Anchored at the line's start: ffmpeg logs the input's tags (title, comment) on the same
    # log, and a title "showinfo n: 0 pts: 0 ..." was read as a frame time (a review: a clip read
    # +80 ms, another decoded 28125 s of frames from a 6 s file); a tag's lines start "[info]".
    _SHOWINFO = re.compile(r"\[Parsed_showinfo_\d+ @ 0x[0-9a-fA-F]+\] \[info\] n:\s*\d+\s+pts:\s*(-?\d+|NOPTS)"
                           r"\s+pts_time:(\S+)")
    _TIME_BASE = re.compile(r"\[Parsed_showinfo_\d+ @ 0x[0-9a-fA-F]+\] \[info\] config in time_base:\s*(\d+)/(\d+)")

    def __init__(self, pipe) -> None:
        self._times: queue.Queue = queue.Queue()
        self._time_base: Fraction | None = None
        self._lines: collections.deque[str] = collections.deque(maxlen=MAX_ERROR_LINES)
        self._thread = threading.Thread(target=self._run, args=(pipe,), daemon=True, name="ffmpeg-frame-times")
        self._thread.start()

    def _run(self, pipe) -> None:
        try:
            for raw in pipe:
                line = raw.decode("utf-8", "replace").rstrip()
                if m := self._SHOWINFO.match(line):
                    self._times.put(self._seconds(m.group(1), m.group(2)))
                elif (tb := self._TIME_BASE.match(line)) and int(tb.group(1)):
                    self._time_base = Fraction(int(tb.group(1)), int(tb.group(2)))
                elif (err := _error_line(line)) is not None:
                    self._lines.append(err)
        except (OSError, ValueError):  # closed under us
            pass
        finally:
            self._times.put(None)

    def _seconds(self, pts: str, pts_time: str) -> float:
        if pts == "NOPTS":
            return math.nan
        if self._time_base is not None:
            return float(int(pts) * self._time_base)
        return _float(pts_time, math.nan)

    def next(self) -> float:
        """The next frame's time in seconds (NaN: the frame has none). Its log line is written
        before the frame reaches the pipe, so it is there or on its way."""
        item = self._times.get()
        if item is None:
            self._times.put(None)  # stays at the end for any later call
            raise MediaError("reading decoded frames failed: a frame came without its time")
        return item

    def close(self) -> list[str]:
        self._thread.join(timeout=5)
        return list(self._lines)


def read_video(
    path: str | os.PathLike, fps: float | None = None, max_side: int | None = None,
    errors: list[str] | None = None,
) -> tuple[np.ndarray, float]:
    """All frames as (T, H, W, 3) uint8 RGB at a constant ``fps``; returns (frames, fps).
    ``errors``: see iter_video."""
    info = probe(path)
    chunks = list(iter_video(path, fps=fps, max_side=max_side, info=info, errors=errors))
    return np.concatenate(chunks, axis=0), float(_fps_fraction(info, fps))


def read_audio(
    path: str | os.PathLike,
    sample_rate: int = 16000,
    info: MediaInfo | None = None,
    errors: list[str] | None = None,
    max_s: float | None = None,
    notes: list[str] | None = None,
) -> np.ndarray:
    """Mono float32 (N,) at ``sample_rate``, sample 0 at video frame 0's time (see module doc; at
    any rate the video is read at). For an audio-only file sample 0 is its first sound sample
    (``read_audio_file``). Samples are placed where their timestamps say (``place_audio``): gaps
    are filled with silence, overlaps trimmed. ``errors`` gets ffmpeg's error lines of a damaged
    stream that decoded.
    ``max_s``: decode no more than this many seconds (from sample 0): memory follows what the
    caller needs, not the track's length (a review: a 3 s video with 2 h of audio held 1.5 GB).
    ``notes`` gets a line when the channels had to be read otherwise than mixed (_decode_audio),
    and when the file's timestamps restarted (``timestamp_resets``).
    """
    info = info or probe(path)
    if not info.has_video:
        return read_audio_file(path, sample_rate, info, errors, max_s=max_s, notes=notes)
    _check_audio(info, sample_rate)
    t0 = first_frame_time_s(info)
    max_samples = _max_samples(max_s, sample_rate)
    if max_samples is not None and (info.audio_start_s - t0) * sample_rate >= max_samples:
        # the track starts past the span asked for: all of the span is silence
        return np.zeros(max_samples, np.float32)
    # -copyts keeps container time; the audio's clock is moved to t0 (as iter_video moves the
    # frames'), and sample 0 is put at t0 (padded when the audio starts late, trimmed when it
    # starts early), negative t0 included (an audit's stream past a 33-bit timestamp wrap
    # starts at -2.3 s: those seconds are the clip's too).
    audio = _decode_audio(info, sample_rate, shift_s=t0, from_zero=True, errors=errors, max_samples=max_samples,
                          notes=notes)
    if audio.size == 0:
        raise MediaError(f"audio stream of {info.path} decoded to no samples")
    return audio


def read_audio_file(path: str | os.PathLike, sample_rate: int = 16000, info: MediaInfo | None = None,
                    errors: list[str] | None = None, max_s: float | None = None,
                    notes: list[str] | None = None) -> np.ndarray:
    """An audio-only file as mono float32 at ``sample_rate``, sample 0 = its first sound sample.

    Not from the container's start on purpose: an MP3's encoder delay shows as a start time of
    ~50-70 ms that ffmpeg's decoder already removes (its skip samples), and padding it again
    put an MP3 copy of a clip's audio two frames late, with high confidence. The samples after
    the first are placed by their timestamps as read_audio places them (ffmpeg's own fix for an
    MPEG-TS clock that goes back more than 0.1 s joined a rate change's parts end to end instead:
    104 ms more audio than the same file's video track read). ``max_s``, ``notes``: see
    read_audio."""
    info = info or probe(path)
    _check_audio(info, sample_rate)
    audio = _decode_audio(info, sample_rate, shift_s=info.audio_start_s, from_zero=False, errors=errors,
                          max_samples=_max_samples(max_s, sample_rate), notes=notes)
    if audio.size == 0:
        raise MediaError(f"audio stream of {info.path} decoded to no samples")
    return audio


# Audio placed by its timestamps: a gap is filled with silence (and an overlap trimmed) once the
# samples and the timestamps disagree by more than min_hard_comp. ffmpeg's default, 0.1 s, let
# every shorter gap through: a review's clip that lost one 64 ms AAC packet read -80 ms after it,
# with confidence, and one lost every 40 packets swung its windows between 0 and -80. So 10 ms (a
# quarter of a frame at 25 fps, well above a millisecond container clock's rounding) where the
# frames' times keep to their lengths; where they jitter (wall-clock stamped captures: RTSP,
# a browser's MediaRecorder), 10 ms would cut and pad the audio at every frame that strays past
# it (a review: +/-12 ms of jitter moved 47% of 1-s windows by 5 ms or more), so ffmpeg's 0.1 s.
# Told from the decoded frames (their own sample counts), not the packets' durations, which a
# demuxer counts at the stream's first rate: after a change to 48 kHz every 8th MPEG-TS packet
# strayed, the file was called jittery, and a 90 ms overlap at the change was kept until some
# later wobble crossed 0.1 s and cut it there, a second on.
ALIGN_STEADY_S, ALIGN_JITTERY_S = 0.01, 0.1
JITTER_SCAN_S = 30.0  # how much of the stream's frames are looked at to tell
JITTER_TOLERANCE_S = 0.002  # a frame's time this far from where the one before it ended strays
JITTERY_SHARE = 0.1  # ... and with this share of them straying, the times jitter


def audio_timestamps_jitter(pts_s: np.ndarray, durations_s: np.ndarray) -> bool:
    """Whether an audio stream's frame (or packet) times jitter (pure): many start away from
    where the one before ended. A lost packet is one step; jitter is many, both ways."""
    if pts_s.shape[0] < 8:
        return False
    strays = np.abs(pts_s[1:] - (pts_s[:-1] + durations_s[:-1])) > JITTER_TOLERANCE_S
    return bool(strays.mean() > JITTERY_SHARE)


def align_threshold_s(frames: Sequence[tuple[int | None, int]], sample_rate: int) -> float:
    """How far decoded audio's samples and timestamps may disagree before a gap is filled or an
    overlap trimmed (place_audio; see ALIGN_STEADY_S), from the frames' (pts, sample count) at
    ``sample_rate`` (pure): the first JITTER_SCAN_S seconds of those with a time."""
    timed = np.array([(p, n) for p, n in frames if p is not None], np.float64).reshape(-1, 2)
    timed = timed[timed[:, 0] - (timed[0, 0] if timed.shape[0] else 0.0) < JITTER_SCAN_S * sample_rate]
    jittery = audio_timestamps_jitter(timed[:, 0] / sample_rate, timed[:, 1] / sample_rate)
    return ALIGN_JITTERY_S if jittery else ALIGN_STEADY_S


def _max_samples(max_s: float | None, sample_rate: int) -> int | None:
    if max_s is None:
        return None
    if not (max_s > 0 and math.isfinite(max_s)):
        raise MediaError(f"bad audio span {max_s!r}: must be a positive number of seconds")
    return max(1, math.ceil(max_s * sample_rate))


def _check_audio(info: MediaInfo, sample_rate: int) -> None:
    if not info.has_audio:
        raise MediaError(f"no audio stream in {info.path}")
    if sample_rate <= 0:
        raise MediaError(f"bad sample_rate {sample_rate}")


# _decode_audio: the channels' mix at least this much quieter than uncorrelated channels would
# mix to (10 dB) means they cancel (opposite phase); and a channel must be louder than this RMS
# (-80 dBFS) for there to be anything to cancel
CANCEL_RATIO = 0.1
CANCEL_MIN_RMS = 1e-4
CANCEL_SCAN_S = 60  # the channels' energies are measured on the first this many seconds


def _native_trim(info: MediaInfo) -> str:
    """An atrim ending the channel branch soon after CANCEL_SCAN_S seconds at the stream's own
    rate (before resampling them all), or nothing when the rate is not known."""
    return f"atrim=end_sample={math.ceil((CANCEL_SCAN_S + 1) * info.sample_rate)}," if info.sample_rate else ""


def _chained_clock(info: MediaInfo) -> bool:
    """Whether the audio's clock cannot be trusted past its first restart: Ogg. ffmpeg misreads
    a chained Ogg's granule positions (streams cat'ed one after the other): each chain restarts
    the clock, and a chain at another rate keeps the first one's time base, so 48 kHz samples ran
    on a 44.1 kHz clock and 8.8% silence was padded in (a probe: 5.44 s read for 5.01 s). So the
    samples are counted after the first restart; before it the timestamps hold, and tell a gap
    (an Opus file with 0.6 s cut out read its later clicks 0.6 s early when all of it was
    counted, a review)."""
    return "ogg" in info.container.split(",")


def _pes_packets(info: MediaInfo) -> bool:
    """Whether the container is MPEG-TS or MPEG-PS (timestamps per PES packet, not per frame)."""
    return bool({"mpegts", "mpeg", "mpegtsraw"} & set(info.container.split(",")))


def _decode_audio(info: MediaInfo, sample_rate: int, shift_s: float, from_zero: bool,
                  errors: list[str] | None = None, max_samples: int | None = None,
                  notes: list[str] | None = None) -> np.ndarray:
    """The audio stream ``info`` names as mono float32 at ``sample_rate``, laid out by its
    timestamps (place_audio) on the container's clock (-copyts) moved back by ``shift_s``: with
    ``from_zero`` that time is output sample 0, else the first decoded sample is.
    ``errors`` gets ffmpeg's error lines when the stream decoded all the same (damage skipped).
    ``max_samples``: no more output samples than this (ffmpeg stops decoding near there).

    The samples are placed in Python from each decoded frame's timestamp (ashowinfo on ffmpeg's
    log), not by aresample's async inside ffmpeg: ffmpeg rebuilds its filters when the stream's
    rate or channel layout changes mid-stream (MPEG-TS cut from two sources), and the rebuilt
    aresample forgot where the audio was: with first_pts=0 it padded silence from 0 to the
    change (a probe: a change at 2.5 s read 7.47 s of audio for 5 s), and without it the overlap
    at the join was kept (104 ms: the rest read late by that).

    Channels are mixed as ffmpeg mixes them to mono, unless they cancel in the mix: stereo whose
    channels are in opposite phase mixed to silence and read SILENCE without a word (a review).
    ffmpeg hands the channels themselves over on a second pipe, only their energies are kept;
    when the mix is far quieter than the channels would mix to if they were unrelated
    (CANCEL_RATIO), the loudest channel alone is decoded and scored, and ``notes`` says so."""
    chained = _chained_clock(info)
    shift = f"asetpts=PTS-({shift_s:.6f}/TB),"
    bound = ""
    if max_samples:
        # place_audio cuts at max_samples exactly; ffmpeg stops near there. On a video's clock by
        # time, which a rebuilt filter keeps; else by the samples decoded (their count restarts
        # in a rebuilt filter: more is read then, never less), with what may be trimmed before
        # sample 0 and a second to spare
        if from_zero and not chained:
            bound = f",atrim=end_pts={max_samples + sample_rate // 10}"
        else:
            lead_s = max(0.0, shift_s - info.audio_start_s) if from_zero else 0.0
            bound = f",atrim=end_sample={max_samples + math.ceil((lead_s + 1.0) * sample_rate)}"
    mono = (f"{shift}aresample={sample_rate},aformat=sample_fmts=flt:channel_layouts=mono,"
            f"asettb=1/{sample_rate}{bound},ashowinfo")
    # MPEG-TS/PS carry a timestamp per PES packet, each holding several audio frames; the demuxer
    # times the frames after the first by their durations at the stream's first rate, also after
    # the rate changed (48 kHz frames 23.2 ms apart in a PES, then a 13 ms step back at the next:
    # placed by those, 11 ms of silence went in every 170 ms). With nofillin it leaves them
    # untimed and ffmpeg times each from the samples decoded before it. Not for other containers:
    # an MP3's first frames lost their times so, and its encoder delay was no longer removed.
    fill = ["-fflags", "+nofillin"] if _pes_packets(info) else []
    head = ["ffmpeg", "-hide_banner", "-nostats", "-loglevel", "+level+info", "-nostdin", "-copyts", *fill,
            "-i", ff_input(info.path)]
    channels = info.channels or 0
    resets = [0]

    def offsets() -> list[int] | None:
        # a video's own audio keeps to the video where both restart (timestamp_resets); an
        # audio-only file's parts are joined end to end
        found = timestamp_resets(info) if (from_zero and info.has_video) else None
        joined = found.audio_offsets_s() if found is not None else None
        return None if joined is None else [round(o * sample_rate) for o in joined]

    def place(raw: np.ndarray, frames: list[tuple[int | None, int]]) -> np.ndarray:
        hard = round(align_threshold_s(frames, sample_rate) * sample_rate)
        out, resets[0] = place_audio(raw, frames, hard, from_zero=from_zero, count_after_restart=chained,
                                     reset_samples=round(RESET_S * sample_rate), reset_offsets=offsets,
                                     max_samples=max_samples, start_samples=sample_rate // 1000, in_place=True)
        return out

    if channels < 2:
        raw, _, lines, rc, frames = _run_audio([*head, "-map", f"0:a:{info.audio_stream}", "-af", mono,
                                                "-f", "f32le", "pipe:1"], 0)
        counted, energy = 0, None
    else:
        # the channels only for the first CANCEL_SCAN_S seconds (opposite phase is the file's
        # wiring, not a moment's: all of a 20 min track took 2.0-2.5 s and 250 MB, not 1.2 s and
        # 180 MB), their clock renumbered so their muxer does not repeat the mono one's errors
        scan = math.ceil(CANCEL_SCAN_S * sample_rate)
        graph = (f"[0:a:{info.audio_stream}]asplit[m][c];[m]{mono}[mono];"
                 f"[c]{_native_trim(info)}asetpts=N/SR/TB,aresample={sample_rate},aformat=sample_fmts=flt,"
                 f"atrim=end_sample={min(scan, max_samples or scan)}[chans]")
        raw, (energy, counted), lines, rc, frames = _run_audio(
            [*head, "-filter_complex", graph, "-map", "[mono]", "-f", "f32le", "pipe:1", "-map", "[chans]",
             "-f", "f32le"], channels)
    if rc != 0:
        raise MediaError(f"cannot decode audio of {info.path}: {(lines or ['?'])[-1]}")
    if errors is not None:
        errors.extend(lines)
    # the mix as decoded, before any placing (which may move the samples within raw): the same
    # samples the channels were measured on
    mixed = float(np.mean(np.square(raw[:counted], dtype=np.float64))) if counted else 0.0
    audio = place(raw, frames)
    if channels >= 2 and raw.size and energy is not None:
        unrelated = float(energy.sum()) / channels**2  # what equal-weight unrelated channels mix to
        loudest = int(np.argmax(energy))
        if energy[loudest] > CANCEL_MIN_RMS**2 and mixed < CANCEL_RATIO * unrelated:
            one, _, _, rc, one_frames = _run_audio([*head, "-map", f"0:a:{info.audio_stream}", "-af",
                                                    f"pan=mono|c0=c{loudest},{mono}", "-f", "f32le", "pipe:1"], 0)
            if rc == 0 and one.size:
                audio = place(one, one_frames)
                if notes is not None:
                    db = 10 * math.log10(max(mixed, 1e-20) / energy[loudest])
                    below = f"{-db:.0f} dB" if -db < 60 else "more than 60 dB"
                    notes.append(f"the audio's {channels} channels cancel when mixed to mono (opposite phase?): "
                                 f"the mix is {below} below channel {loudest}, so channel {loudest} alone "
                                 "was scored")
    if resets[0] and notes is not None:
        notes.append(f"the audio's timestamps restart {resets[0]} time(s) (recordings joined one after the "
                     "other?): each part was read after the one before it, not over it")
    if max_samples is not None and audio.shape[0] < max_samples:
        # ffmpeg stopped a little past max_samples by the frames' times, so a gap across that
        # point (no frame in it) ended the samples at the gap: the gap is silence up to the cut,
        # as far as the track reaches (a review: 35482 samples for 40000 at max_s=2.5)
        end = _audio_end_samples(info, sample_rate, shift_s, from_zero)
        if end > audio.shape[0]:
            audio = np.concatenate([audio, np.zeros(min(max_samples, end) - audio.shape[0], np.float32)])
    return audio


def _audio_end_samples(info: MediaInfo, sample_rate: int, shift_s: float, from_zero: bool) -> int:
    """Where the audio track ends as the file says (its own duration, else the container's), in
    output samples of _decode_audio (``from_zero``: from ``shift_s`` on the container clock; else
    from the track's start); 0 when unsaid."""
    start = info.audio_start_s if info.audio_duration_s > 0 else info.start_s
    length = info.audio_duration_s or info.duration_s
    if length <= 0:
        return 0
    end_s = start + length - shift_s if from_zero else length - max(0.0, shift_s - start)
    return max(0, math.floor(end_s * sample_rate))


def place_audio(samples: np.ndarray, frames: list[tuple[int | None, int]], hard_samples: int,
                from_zero: bool, follow: bool = True, count_after_restart: bool = False,
                reset_samples: int | None = None,
                reset_offsets: Callable[[], Sequence[int] | None] | None = None,
                max_samples: int | None = None, start_samples: int = 0,
                in_place: bool = False) -> tuple[np.ndarray, int]:
    """Decoded audio laid out on its clock (pure, but for ``in_place``): what aresample's async=1
    did inside ffmpeg.

    ``samples``: (N,) float32 as decoded; ``frames``: each decoded frame's (pts in samples, None
    when it has none; sample count), in order, the counts summing to N.
    ``from_zero``: output sample 0 is at pts 0 (earlier samples dropped, silence before a first
    frame after it); else at the first frame's pts.
    The first sample is placed to within ``start_samples``; after that a frame more than
    ``hard_samples`` past where the samples so far put it has silence put before it, one more
    than that before it has the samples it overlaps dropped (in the frames after it too, as far
    as the overlap goes), and one closer follows on (jitter). ``follow`` False: every frame after
    the first follows on (timestamps that only count the samples). ``count_after_restart``: the
    timestamps are followed until the clock first restarts, and every frame after that restart
    follows on (chained Ogg: each chain after the first runs on a clock that cannot be trusted).
    A frame whose time restarts the clock (is_restart, ``reset_samples`` for RESET_S: recordings
    joined one after the other) starts a new part; one that goes back alone follows on (its time
    damaged). Part k's timestamps get ``reset_offsets()[k - 1]`` added (asked once, at the first
    restart) when it says, else the part follows on from where the one before ended.
    ``max_samples``: the output is cut there. Returns (audio (M,) float32, restarts seen): a view
    of ``samples`` when no frame had to be moved (no second copy of an hour's audio); with
    ``in_place`` (``samples`` writable, and not needed as decoded after this) also when samples
    were only dropped, moved back within ``samples``; else a new array."""
    # what goes where: runs [dst, src_lo, src_hi) of samples, silence between them; the samples
    # are copied once, at the end (a list of pieces joined by np.concatenate held two copies: a
    # 20-min track peaked at 196 MB, 116 MB before placing)
    runs: list[list[int]] = []
    size = samples.shape[0]
    total = pos = 0
    offset = restarts = 0
    pending = 0  # samples still to drop: an overlap longer than the frame that found it
    origin = 0 if from_zero else None
    started = False
    asked, joins = False, None
    recent: collections.deque[int] = collections.deque(maxlen=RESET_CONFIRM)  # this part's last times
    prev_n = 0
    # most files: every frame where the samples before it put it, the loop below would move
    # nothing, and numpy tells so at a fraction of its cost (20 min of 16 kHz audio: 56k frames)
    shift = _unmoved_shift(frames, size, hard_samples, from_zero, start_samples, reset_samples)
    for j, (pts, n) in enumerate(frames if shift is None else ()):
        if max_samples is not None and total >= max_samples:
            break
        lo, hi = min(pos, size), min(pos + n, size)
        pos += n
        t = None
        timed = pts is not None and ((follow and not (count_after_restart and restarts)) or not started)
        if timed and reset_samples is not None and recent and pts < recent[-1] - reset_samples:
            after = [p for p, _ in frames[j + 1: j + RESET_CONFIRM] if p is not None]
            if is_restart(recent, pts, after, reset=reset_samples):
                restarts += 1
                if not asked:
                    joins, asked = (reset_offsets() if reset_offsets is not None else None), True
                if joins is not None and restarts <= len(joins):
                    offset = int(joins[restarts - 1])
                else:  # on from where the frame before ended
                    offset = recent[-1] + prev_n + offset - pts
                recent.clear()
            else:  # one damaged time: the frame follows on
                timed = False
        if timed:
            recent.append(pts)
            prev_n = n
            if origin is None:
                origin = pts + offset
            t = pts + offset - origin
        # where the frame lands against where the samples so far put it (total, less what is
        # still to be dropped): past the threshold (before the first sample, past a rounding's
        # worth: a millisecond clock's frames kept to the first one's place, as aresample did),
        # the output is put back on the timestamps, by silence or by dropping the overlap
        if t is not None and abs(t - (total - pending)) > (hard_samples if started else start_samples):
            if t > total:
                total, pending = t, 0  # silence up to t
            else:
                pending = total - t
        if pending:
            cut = min(pending, hi - lo)
            lo, pending = lo + cut, pending - cut
        if hi > lo:
            if runs and runs[-1][2] == lo and runs[-1][0] + (runs[-1][2] - runs[-1][1]) == total:
                runs[-1][2] = hi  # on from the run before, in both
            else:
                runs.append([total, lo, hi])
            total += hi - lo
            started = True
    if shift is not None:
        runs, total = [[max(0, shift), max(0, -shift), size]], size + shift
    if not frames and size:
        runs, total = [[0, 0, size]], size  # no frame times at all: the samples as they came
    end = total if max_samples is None else min(total, max_samples)
    if len(runs) == 1 and runs[0][0] == 0 and runs[0][2] - runs[0][1] >= end:
        return samples[runs[0][1]: runs[0][1] + end].astype(np.float32, copy=False), restarts
    if in_place and samples.flags.writeable and end <= size and all(dst <= lo for dst, lo, _ in runs):
        # overlaps dropped, no silence put in: each run moves back, in order, so a run's target
        # never holds samples still to be moved; in blocks, so that numpy's copy of an
        # overlapping slice stays small
        covered = 0
        for dst, lo, hi in runs:
            if dst >= end:
                break
            samples[covered: dst] = 0.0
            n = min(hi - lo, end - dst)
            for k in range(0, n, PLACE_BLOCK_SAMPLES):
                m = min(PLACE_BLOCK_SAMPLES, n - k)
                samples[dst + k: dst + k + m] = samples[lo + k: lo + k + m]
            covered = dst + n
        samples[covered: end] = 0.0
        return samples[:end], restarts
    audio = np.zeros(end, np.float32)
    for dst, lo, hi in runs:
        if dst >= end:
            break
        n = min(hi - lo, end - dst)
        audio[dst: dst + n] = samples[lo: lo + n]
    return audio, restarts


PLACE_BLOCK_SAMPLES = 1 << 20  # place_audio(in_place): samples moved at a time


def _unmoved_shift(frames: Sequence[tuple[int | None, int]], size: int, hard_samples: int, from_zero: bool,
                   start_samples: int, reset_samples: int | None) -> int | None:
    """place_audio's result told at once (pure): when every frame is timed and within its
    threshold of where the samples before it put it (so none is moved and no clock restarts),
    the shift of all of them (> 0: silence before the first; < 0: that many samples dropped);
    else None, and the frames are placed one by one."""
    if not frames or (reset_samples is not None and 2 * hard_samples >= reset_samples):
        return None
    try:
        x = np.array(frames, np.int64).reshape(-1, 2)
    except (TypeError, ValueError, OverflowError):  # a frame without a time
        return None
    pts, n = x[:, 0], x[:, 1]
    if (n <= 0).any() or int(n.sum()) != size:
        return None
    t = pts if from_zero else pts - pts[0]
    shift = int(t[0]) if abs(int(t[0])) > start_samples else 0
    if shift <= -size:
        return None
    before = np.cumsum(n) - n  # samples before each frame
    dev = np.abs(t[1:] - (shift + before[1:]))
    started = before[1:] > max(0, -shift)  # some sample already out: the hard threshold
    return shift if bool(np.where(started, dev <= hard_samples, dev <= start_samples).all()) else None


# ffmpeg's raw output muxers (rawvideo, f32le) write no timestamps, yet complain when a frame's
# time is not after the one before in their time base ("non monotonically increasing dts"): VFR
# frames closer than 1 / rate, a clock that restarts at a join, audio filters rebuilt at a format
# change. The frame is written all the same (a probe: 138 frames in, 138 out), so it is no
# damage: counted as one, clean files read "decoded with N ffmpeg errors (damaged data skipped)".
_RAW_MUXER_DTS = re.compile(r"\[(rawvideo|f32le) @ 0x[0-9a-fA-F]+\] Application provided invalid, non monotonically "
                            r"increasing dts to muxer")
_LOG_LEVEL = re.compile(r"(\[[^\]]+ @ 0x[0-9a-fA-F]+\] )?\[(error|fatal|panic)\] ")
# ashowinfo's frame lines, anchored at the line's start as _FrameTimes' (tags are logged "[info]" too)
# (on bytes, over many lines at once: a line at a time, 20 min of audio's 56k lines cost 0.4 s of CPU)
_AUDIO_FRAME = re.compile(rb"^\[Parsed_ashowinfo_\d+ @ 0x[0-9a-fA-F]+\] \[info\] n:[ \t]*\d+[ \t]+pts:[ \t]*(-?\d+|NOPTS)"
                          rb"[ \t][^\n]*?[ \t]nb_samples:(\d+)[ \t\r\n]", re.MULTILINE)
_LEVEL_LINE = re.compile(rb"^[^\n]*\[(?:error|fatal|panic)\] [^\n]*", re.MULTILINE)  # may be an error line


def _error_line(line: str) -> str | None:
    """A level-tagged ffmpeg log line (``-loglevel +level``) as ``-v error`` prints it, when it is
    an error that may mean damage; None for anything else."""
    lv = _LOG_LEVEL.match(line)
    if lv is None:
        return None
    out = ((lv.group(1) or "") + line[lv.end():]).strip()
    return None if _RAW_MUXER_DTS.match(out) else out


# _run_audio's pipes: ffmpeg writes each audio frame and each log line with a write of its own
# (1.4 KB, 200 bytes), and a reader woken for each read 20 min of audio in 57k reads, 1.0 s of
# CPU; with a wider pipe, waiting a little while it fills when a read finds little, 260 reads
# and 0.13 s (wall time no longer: ffmpeg never waits on a pipe a quarter full)
PIPE_BYTES = 1 << 20
PIPE_WAIT_S = 0.01


def _widen_pipe(fd: int) -> None:
    """Ask for a pipe of PIPE_BYTES (Linux; left as it is where that is refused)."""
    try:
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except OSError:
        pass


def _read_batched(pipe) -> bytes:
    """What ``pipe`` (a buffered reader) holds, up to PIPE_BYTES (b"" at its end), waiting
    PIPE_WAIT_S after a read that found less than a quarter of that, so the next finds more."""
    block = pipe.read1(PIPE_BYTES)
    if block and len(block) < PIPE_BYTES // 4:
        time.sleep(PIPE_WAIT_S)
    return block


def _run_audio(cmd: list[str], channels: int) -> tuple[np.ndarray, tuple[np.ndarray | None, int], list[str], int,
                                                        list[tuple[int | None, int]]]:
    """Run an audio ffmpeg (logging at +level+info, an ashowinfo at the mono output's end): (mono
    float32 from stdout, (each channel's mean square energy from a second f32le output of
    ``channels`` interleaved channels, appended to ``cmd`` as a pipe of its own (None when
    ``channels`` is 0), how many samples that was), ffmpeg's error lines, its exit code, the mono
    output's frames as (pts, sample count)). Every pipe is drained as it comes (stderr and the
    channels on threads): a full pipe stalls ffmpeg."""
    r_fd = w_fd = None
    if channels:
        r_fd, w_fd = os.pipe()
        cmd = [*cmd, f"pipe:{w_fd}"]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                pass_fds=(w_fd,) if w_fd is not None else ())
    except OSError:
        for fd in (r_fd, w_fd):
            if fd is not None:
                os.close(fd)
        raise
    if w_fd is not None:
        os.close(w_fd)
    assert proc.stdout is not None and proc.stderr is not None
    err_lines: collections.deque[str] = collections.deque(maxlen=MAX_ERROR_LINES)
    frames: list[tuple[int | None, int]] = []
    sums = np.zeros(max(1, channels), np.float64)
    counted = [0]

    def drain_err() -> None:
        rest = b""
        while block := _read_batched(proc.stderr):
            block = rest + block
            cut = block.rfind(b"\n") + 1  # whole lines only; the rest waits for its end
            block, rest = block[:cut], block[cut:]
            scan(block)
        scan(rest + b"\n")

    def scan(text: bytes) -> None:
        for m in _AUDIO_FRAME.finditer(text):
            frames.append((None if m.group(1) == b"NOPTS" else int(m.group(1)), int(m.group(2))))
        for m in _LEVEL_LINE.finditer(text):
            if (err := _error_line(m.group(0).decode("utf-8", "replace").rstrip())) is not None:
                err_lines.append(err)

    def drain_channels() -> None:
        frame = 4 * channels
        rest = b""
        with os.fdopen(r_fd, "rb") as pipe:
            try:
                while block := pipe.read(1 << 20):
                    block = rest + block
                    n = len(block) // frame
                    rest = block[n * frame:]
                    x = np.frombuffer(block[: n * frame], np.float32).reshape(n, channels).astype(np.float64)
                    sums[:] += np.einsum("ij,ij->j", x, x)
                    counted[0] += n
            except Exception:  # noqa: BLE001 - no energies then (no check), but never a stalled ffmpeg
                counted[0] = 0
                while pipe.read(1 << 20):
                    pass

    for pipe in (proc.stdout, proc.stderr):
        _widen_pipe(pipe.fileno())
    threads = [threading.Thread(target=drain_err, daemon=True)]
    if r_fd is not None:
        threads.append(threading.Thread(target=drain_channels, daemon=True))
    for t in threads:
        t.start()
    buf = bytearray()
    try:
        while block := _read_batched(proc.stdout):
            buf += block
    except BaseException:
        proc.kill()
        raise
    finally:
        rc = proc.wait()
        for t in threads:
            t.join()
        proc.stdout.close()
        proc.stderr.close()
    audio = np.frombuffer(buf, np.float32, count=len(buf) // 4)
    energy = sums / counted[0] if channels and counted[0] else None
    return audio, (energy, counted[0]), list(err_lines), rc, frames


def audio_track_start_s(video: MediaInfo) -> float:
    """Where, on ``video``'s container clock, its own audio track's first sample plays: the first
    decoded frame's time (a decoder drops an Opus or AAC stream's priming samples, which start it
    a few ms before 0 in the file), the container's start when the clip has no audio. That is
    the sample ffmpeg starts a WAV it extracts from the clip with, so ``--audio`` files line up
    as its own track does, for a clip whose streams start before 0 too (a wrapped MPEG-TS at
    -2.3 s: its extracted track was placed 2.3 s late, a review)."""
    if not video.has_audio:
        return video.start_s
    cmd = ["ffprobe", "-v", "error", "-select_streams", f"a:{video.audio_stream}", "-read_intervals", "%+#8",
           "-show_entries", "frame=pts_time,pkt_dts_time", "-of", "csv=p=0", ff_input(video.path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        for field in line.split(","):
            t = _float(field.strip(), math.nan)
            if math.isfinite(t):
                return t
    # no frame to ask: a start a little before 0 is priming the decoder drops, one far before it
    # (a timestamp wrap) is real
    return video.audio_start_s if video.audio_start_s < -PRIMING_MAX_S else max(0.0, video.audio_start_s)


PRIMING_MAX_S = 0.5


def read_audio_for_video(audio_path: str | os.PathLike, video: MediaInfo,
                         sample_rate: int = 16000, audio_info: MediaInfo | None = None,
                         errors: list[str] | None = None, max_s: float | None = None,
                         notes: list[str] | None = None) -> np.ndarray:
    """Another file's audio to score against ``video`` (``score --audio``), sample 0 at the
    video's frame 0 like ``read_audio``'s.

    An audio-only file takes the place of the video's own audio track: its first sample plays
    where that track's first sample plays (``audio_track_start_s``; the container's start if
    there is none), which is where ffmpeg starts a WAV it extracts from the clip, so an
    extracted and edited copy lines up with the clip (a clip whose first frame lands at 33 ms
    read its own extracted WAV a frame late). A file with its own video keeps its own
    alignment: sample 0 at its own frame 0. ``max_s``, ``notes``: see read_audio (``max_s``
    counts from the video's frame 0)."""
    audio_info = audio_info or probe(audio_path)
    if audio_info.has_video:
        return read_audio(audio_path, sample_rate, info=audio_info, errors=errors, max_s=max_s, notes=notes)
    lead = round((first_frame_time_s(video) - audio_track_start_s(video)) * sample_rate)
    file_max_s = None if max_s is None else max_s + max(0, lead) / sample_rate
    audio = read_audio_file(audio_path, sample_rate, audio_info, errors, max_s=file_max_s, notes=notes)
    if lead > 0:
        audio = audio[lead:]
    elif lead < 0:
        audio = np.concatenate([np.zeros(-lead, np.float32), audio])
    if audio.size == 0:
        raise MediaError(f"the audio of {audio_info.path} ends before the video's first frame")
    return audio


def audio_extent_s(video: MediaInfo, audio_info: MediaInfo | None = None) -> float:
    """How far past the video's frame 0 the audio reaches as the file(s) say (0.0 when unsaid):
    the clip's own track, or ``audio_info``'s file in its place (its length from the track's
    start). For notes about audio that was not all decoded (read_audio's max_s)."""
    src = audio_info or video
    length = src.audio_duration_s or (src.duration_s if src.has_audio and not src.has_video else 0.0)
    if length <= 0:
        return 0.0
    if audio_info is not None and not audio_info.has_video:
        start = video.audio_start_s if video.has_audio else video.start_s
        return max(0.0, start + length - first_frame_time_s(video))
    return max(0.0, src.audio_start_s + length - first_frame_time_s(src))
