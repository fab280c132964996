"""A small deterministic stand-in scorer behind the Scorer protocol, for pipeline tests only.

It correlates per-frame brightness (mean ROI intensity) with per-frame audio RMS over candidate
offsets of whole frames in [-search, +search] and reports the best one, with the contract's sign:
positive = the audio lags. ``pulse_media`` makes matching test media: brightness pulses and
noise bursts whose loudness follows them, delayed by a known offset.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from worker.scoring.types import Direction, Label, LipSyncScore, ScoreRequest


class FakeStream:
    def __init__(self) -> None:
        self.frames: set[int] = set()

    def forget_before(self, frame_index: int) -> None:
        self.frames = {f for f in self.frames if f >= frame_index}

    def cached_frames(self) -> int:
        return len(self.frames)


class FakeScorer:
    def __init__(self, search_ms: float = 200.0, delay_s: float = 0.0) -> None:
        self.search_ms = search_ms
        self.delay_s = delay_s  # simulated model time per batch
        self.batch_sizes: list[int] = []
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return "fake@1"

    @property
    def search_margin_ms(self) -> float:
        return self.search_ms + 40.0

    def new_stream(self) -> FakeStream:
        return FakeStream()

    def score(self, request: ScoreRequest, stream: FakeStream | None = None) -> LipSyncScore:
        return self.score_batch([request], [stream])[0]

    def score_batch(self, requests: Sequence[ScoreRequest],
                    streams: Sequence[FakeStream | None] | None = None) -> list[LipSyncScore]:
        import time

        with self._lock:
            self.batch_sizes.append(len(requests))
            self.threads.add(threading.current_thread().name)
        if self.delay_s:
            time.sleep(self.delay_s)
        streams = streams or [None] * len(requests)
        out = []
        for req, stream in zip(requests, streams):
            if stream is not None:
                stream.frames.update(range(req.frames.frame_start, req.frames.frame_end))
            out.append(self._one(req))
        return out

    def _one(self, req: ScoreRequest) -> LipSyncScore:
        fs, au = req.frames, req.audio
        if fs.frames.ndim not in (3, 4) or fs.n_frames == 0:
            raise ValueError("bad frames")
        frame_ms = 1000.0 / fs.fps
        start_ms = round(fs.frame_start * frame_ms)
        end_ms = round(fs.frame_end * frame_ms)
        ok = np.ones(fs.n_frames, bool)
        if fs.present is not None:
            ok &= fs.present
        if fs.face_present is not None:
            ok &= fs.face_present
        base = {"kind": req.kind, "frame_start": fs.frame_start, "frame_end": fs.frame_end,
                    "start_ms": start_ms, "end_ms": end_ms, "scorer": self.name,
                    "occluded": bool(fs.occluded is not None and fs.occluded.mean() > 0.5)}
        if ok.mean() < 0.5:  # the real scorer's rule (postprocess.silence_verdict)
            missing = fs.present is not None and fs.present.mean() < 0.5
            return LipSyncScore(score=None, offset_ms=None, margin=None, confidence=0.0,
                                direction=Direction.UNKNOWN,
                                label=Label.LOW_QUALITY if missing else Label.NO_FACE, **base)
        bright = fs.frames.reshape(fs.n_frames, -1).mean(axis=1).astype(np.float64)
        k_max = round(self.search_ms / frame_ms)
        rms = self._rms_by_frame(au.samples, au.sample_rate, au.start_sample, fs.frame_start - k_max,
                                 fs.n_frames + 2 * k_max, fs.fps)
        if np.nanmax(np.nan_to_num(rms, nan=0.0)) < 1e-3:
            return LipSyncScore(score=None, offset_ms=None, margin=None, confidence=0.0,
                                direction=Direction.UNKNOWN, label=Label.SILENCE, **base)
        curve = []
        for k in range(-k_max, k_max + 1):
            e = rms[k_max + k: k_max + k + fs.n_frames]
            m = ok & np.isfinite(e)
            if m.sum() < 3 or bright[m].std() == 0 or e[m].std() == 0:
                curve.append(-1.0)
                continue
            curve.append(float(np.corrcoef(bright[m], e[m])[0, 1]))
        curve_a = np.array(curve)
        best = int(np.argmax(curve_a))
        offset = (best - k_max) * frame_ms
        others = np.delete(curve_a, range(max(0, best - 1), min(len(curve_a), best + 2)))
        margin = float(curve_a[best] - (others.max() if others.size else -1.0))
        score = (curve_a[best] + 1) / 2
        if abs(offset) <= frame_ms:
            direction = Direction.IN_SYNC
        else:
            direction = Direction.AUDIO_LAGS if offset > 0 else Direction.AUDIO_LEADS
        return LipSyncScore(score=float(score), offset_ms=float(offset), margin=margin,
                            confidence=float(min(1.0, max(0.0, margin))), direction=direction,
                            label=Label.OK, **base)

    @staticmethod
    def _rms_by_frame(samples, sample_rate, start_sample, first_frame, n, fps):
        out = np.full(n, np.nan)
        for i in range(n):
            f = first_frame + i
            a = round(f * sample_rate / fps) - start_sample
            b = round((f + 1) * sample_rate / fps) - start_sample
            if a >= 0 and b <= samples.shape[0] and b > a:
                out[i] = float(np.sqrt(np.mean(samples[a:b].astype(np.float64) ** 2)))
        return out


def pulse_media(seconds: float, fps: float, sample_rate: int, audio_offset_ms: float, seed: int,
                size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Frames (T, size, size) uint8 with random brightness per frame, and mono float32 audio whose
    loudness per frame follows that brightness ``audio_offset_ms`` later (> 0: the audio lags)."""
    rng = np.random.default_rng(seed)
    n = round(seconds * fps)
    level = rng.uniform(0.1, 1.0, n)
    frames = np.repeat((level * 250).astype(np.uint8)[:, None, None], size, 1).repeat(size, 2)
    n_samples = round(seconds * sample_rate)
    t_ms = np.arange(n_samples) * 1000.0 / sample_rate - audio_offset_ms
    idx = np.floor(t_ms * fps / 1000.0).astype(int)
    env = np.where((idx >= 0) & (idx < n), level[np.clip(idx, 0, n - 1)], 0.05)
    noise = rng.standard_normal(n_samples)
    audio = (0.3 * env * noise).astype(np.float32)
    return frames, audio
