"""The model scorer: pre (validate, features) -> core (encoders, one batched offset product) -> post
(peak, silence, calibration, labels).

Streams cache per-frame CNN features (the expensive part) keyed by session frame index, so a new
block costs only its new frames; the causal temporal head then reads the cached past.
"""

from __future__ import annotations

import logging
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from model_store.architectures import build
from model_store.bundle import Manifest
from model_store.features import audio_grid_features, frame_rms, video_input
from worker.scoring.calibration import confidence_from_peak, score_from_similarity
from worker.scoring.conv_matmul import convs_as_matmuls
from worker.scoring.offsets import (
    OffsetGrid,
    center_embeddings,
    crop,
    offset_curve,
    own_time_pairs,
    pick_peak,
    similarity_by_offset,
    smooth_curve,
    smooth_radius,
    valid_pairs,
    widen,
)
from worker.scoring.postprocess import ScorerConfig, build_result, null_result, silence_verdict
from worker.scoring.rate import at_model_rate, on_request_frames
from worker.scoring.types import FrameSpan, LipSyncScore, ScoreRequest
from worker.scoring.validate import validate_request
from worker.tracking.geometry import LIP_INDICES, mouth_shape

N_LIP_LANDMARKS = len(LIP_INDICES)

log = logging.getLogger(__name__)


def _frozen_cpu_encoders(model, manifest: Manifest):
    """CPU encoders: TorchScript-frozen frame and audio CNNs (oneDNN fuses conv + ReLU and pre-packs
    weights, measured 2.6 -> 0.95 ms for 16 frames and 0.63 -> 0.45 ms for a block's audio on one
    thread) and the video head with its convolutions as matrix products. Falls back to eager
    modules if tracing fails."""
    v, a = manifest.video, manifest.audio
    frames = torch.zeros(16, v.channels, v.roi_height, v.roi_width)
    mel = torch.zeros(1, a.n_mels, a.steps_per_frame * 42)
    try:
        # TorchScript is deprecated in favour of torch.compile, which needs a compiler and tens of
        # seconds at start-up; for two small frozen modules TorchScript is still the right tool.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            fe = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model.frame_encoder, frames)))
            ae = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model.audio_encoder, mel)))
        # the head's convolutions run as matrix products (conv_matmul: ~0.5 -> ~0.15 ms per network)
        return fe, ae, convs_as_matmuls(model.video_head)
    except Exception as exc:  # noqa: BLE001 - tracing is an optimisation, never a reason not to score
        log.warning("TorchScript freezing failed (%s); scoring with eager modules", exc)
        return model.frame_features, model.audio_encoder, model.video_head


class DeviceError(ValueError):
    """A device this machine cannot score on (a bad name, or CUDA without a GPU)."""


def select_device(device: str = "auto") -> torch.device:
    """"auto" -> CUDA when present, else CPU; "cpu", "cuda" or "cuda:N" as asked, if it exists.
    A device asked for by name is never silently replaced: where it is missing, DeviceError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(f"unknown device {device!r} (auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {device!r}: CUDA is not available here (use auto or cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise DeviceError(f"device {device!r}: the scorer runs on cpu or cuda")
    return dev


class FeatureCache:
    """Per-session cache of per-frame CNN features, bounded to ``max_frames`` most recent frames."""

    def __init__(self, max_frames: int) -> None:
        self.max_frames = max_frames
        self._feats: OrderedDict[int, torch.Tensor] = OrderedDict()

    def get(self, frame_index: int) -> torch.Tensor | None:
        return self._feats.get(frame_index)

    def put(self, frame_index: int, feat: torch.Tensor) -> None:
        self._feats[frame_index] = feat
        self._feats.move_to_end(frame_index)
        while len(self._feats) > self.max_frames:
            self._feats.popitem(last=False)

    def forget_before(self, frame_index: int) -> None:
        for k in [k for k in self._feats if k < frame_index]:
            del self._feats[k]

    def cached_frames(self) -> int:
        return len(self._feats)


@dataclass
class _Prepared:
    req: ScoreRequest
    grid: OffsetGrid  # reported offsets
    search: OffsetGrid  # the same offsets as paired in embedding indices (grid - delay_frames)
    n_frames: int
    frame_ok: torch.Tensor  # (T,) bool
    mel: torch.Tensor  # (n_mels, steps * n_audio)
    audio_ok: torch.Tensor  # (n_audio,) bool, core positions only
    voiced_fraction: float
    rms: np.ndarray  # (T,) audio RMS under each frame
    frame_step: int = 1  # session frames per scored frame (rate.py: 2 at 50/60 fps)

    @property
    def frames(self) -> FrameSpan:
        return self.req.frames

    def session_index(self, t: int) -> int:
        return _session_index(self.req.frames, self.frame_step, t)


@dataclass
class _Frames:
    """Frames to encode into a stream's cache without scoring them (a job's context)."""

    frames: FrameSpan
    frame_ok: torch.Tensor  # (T,) bool
    frame_step: int = 1

    @property
    def n_frames(self) -> int:
        return self.frames.n_frames

    def session_index(self, t: int) -> int:
        return _session_index(self.frames, self.frame_step, t)


def _session_index(span: FrameSpan, frame_step: int, t: int) -> int:
    """The session frame index of scored frame ``t`` of ``span`` (negative: before it), at
    ``frame_step`` session frames per scored frame: what a stream's cache is keyed by, so that
    the worker's forget_before(session index) holds."""
    return (span.frame_start + t) * frame_step


def _frame_ok(fs: FrameSpan) -> torch.Tensor:
    """(T,) bool: frames whose ROI came and shows a face."""
    ok = torch.ones(fs.n_frames, dtype=torch.bool)
    if fs.present is not None:
        ok &= torch.from_numpy(np.asarray(fs.present, dtype=bool))
    if fs.face_present is not None:
        ok &= torch.from_numpy(np.asarray(fs.face_present, dtype=bool))
    return ok


class ModelScorer:
    """Scores blocks and windows with a bundle's dual encoder (implements the Scorer protocol)."""

    def __init__(self, manifest: Manifest, state_dict: dict, config: ScorerConfig | None = None,
                 device: str = "auto") -> None:
        self.manifest = manifest
        self.config = config or ScorerConfig()
        self.device = select_device(device)
        model = build(manifest.architecture, manifest.arch_params)
        try:
            missing, unexpected = model.load_state_dict(state_dict, strict=False)
        except RuntimeError as exc:
            # tensors of other shapes (arch_params that are not the weights'): torch lists every
            # one, over 20 lines; one line names the first and how many
            sizes = [line.strip() for line in str(exc).splitlines() if line.strip().startswith("size mismatch")]
            first = sizes[0] if sizes else " ".join(str(exc).split())[:200]
            raise ValueError(f"weights do not fit {manifest.architecture} with these arch_params: {first}"
                             + (f" (and {len(sizes) - 1} more)" if len(sizes) > 1 else "")) from None
        if missing or unexpected:
            raise ValueError(f"weights do not fit {manifest.architecture}: missing={missing[:3]} "
                             f"unexpected={unexpected[:3]}")
        from model_store.architectures.syncnet_lite import fuse_for_inference

        self.model = fuse_for_inference(model.eval()).to(self.device)
        # GPU path: half precision, pinned host buffers, CUDA graphs per batch-size bucket
        self.half = self.device.type == "cuda"
        self._encode_frames = self.model.frame_features
        self._encode_audio = self.model.audio_encoder
        self._video_head = self.model.video_head
        if self.device.type == "cpu" and self.config.cpu_jit:
            self._encode_frames, self._encode_audio, self._video_head = _frozen_cpu_encoders(self.model, manifest)
        if self.half:
            self.model = self.model.half()
            if self.config.cuda_graphs:
                from worker.scoring.cuda_graphs import GraphedModule

                v = manifest.video
                self._encode_frames = GraphedModule(self.model.frame_features, (v.channels, v.roi_height, v.roi_width),
                                                    self.device, torch.float16)
        # the lip-landmark view as a second input (SyncNetLite.add_shape), where the bundle has it
        self._shape_input = getattr(self.model, "shape_encoder", None) is not None
        self.ctx = manifest.video.context_frames
        self.audio_ctx = manifest.audio.context_frames
        self.delay = manifest.video.delay_frames

    # --- Scorer protocol -------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.manifest.scorer_name

    @property
    def context_frames(self) -> int:
        """Frames before a job its video head reads (from a stream's cache), at 25-30 fps: a job
        scored without them repeats its first frame instead (serve's context_frames)."""
        return int(self.ctx)

    @property
    def search_margin_ms(self) -> float:
        # offsets plus the audio encoder's context, at the slowest frame rate we expect (25 fps)
        reach = max(abs(self.config.min_offset_ms), abs(self.config.max_offset_ms))
        return reach + (self.audio_ctx + self.delay + self.manifest.peak_smooth_frames + 1) * 40.0

    def new_stream(self) -> FeatureCache:
        return FeatureCache(self.config.cache_frames)

    def score(self, request: ScoreRequest, stream: FeatureCache | None = None) -> LipSyncScore:
        return self.score_batch([request], [stream])[0]

    @torch.inference_mode()
    def score_batch(self, requests: Sequence[ScoreRequest],
                    streams: Sequence[FeatureCache | None] | None = None, *,
                    validated: bool = False) -> list[LipSyncScore]:
        """``validated``: the caller has already passed every request through validate_request at
        this model's audio rate (BandRoutedScorer, which must before it can route them)."""
        if streams is None:
            streams = [None] * len(requests)
        if len(streams) != len(requests):
            raise ValueError("streams and requests differ in length")
        results: list[LipSyncScore | None] = [None] * len(requests)
        prepared: list[tuple[int, _Prepared, FeatureCache | None]] = []
        warm: list[tuple[_Prepared | _Frames, FeatureCache]] = []
        for i, (job, stream) in enumerate(zip(requests, streams)):
            if not validated:
                validate_request(job, self.manifest.audio.sample_rate)
            req = at_model_rate(job)  # 50/60 fps: every other frame (rate.py)
            prep = self._prepare(req)
            prep.frame_step = round(job.frames.fps / req.frames.fps)
            verdict = silence_verdict(req, self.config, prep.rms)
            if verdict is not None:
                results[i] = null_result(req, self.name, verdict, self.config)
                if stream is not None:
                    warm.append((prep, stream))  # the next job's causal context, from its seen frames
                continue
            if req.context is not None:
                # frames before the job that this stream did not score (a worker that took the
                # session over, a lone request): they go into its cache first, so that the
                # job's video context is what any worker would have given it
                stream = stream if stream is not None else self.new_stream()
                warm.append((_Frames(req.context, _frame_ok(req.context), prep.frame_step), stream))
            prepared.append((i, prep, stream))
        if warm:
            self._warm_cache(warm)  # before the scored jobs read their context from the caches
        if prepared:
            feats = self._frame_features([(p, s) for _, p, s in prepared])
            # (T, D) unit vectors per job, as SyncNetLite.video_embed
            v = [F.normalize(self._video_head(f.t().unsqueeze(0))[0].t(), dim=-1) for f in feats]
            a = self._audio_embed([p for _, p, _ in prepared])
            for (i, prep, _), vi, ai in zip(prepared, v, a):
                results[i] = self._post(prep, vi, ai)
        return [on_request_frames(r, job) for r, job in zip(results, requests) if r is not None]

    def _smooth_radius(self, grid: OffsetGrid) -> int:
        """Grid positions the curve is averaged over on each side before the peak is picked."""
        return smooth_radius(self.manifest.peak_smooth_frames, grid)

    # --- pre -------------------------------------------------------------------------------
    def _prepare(self, req: ScoreRequest) -> _Prepared:
        fs, au = req.frames, req.audio
        grid = OffsetGrid.from_ms(self.config.min_offset_ms, self.config.max_offset_ms, fs.fps,
                                  self.config.step_frames)
        # embedding t describes frame t - delay: offset k pairs it with audio position t - delay + k;
        # the curve reaches the smoothing radius beyond the reported offsets (offsets.smooth_curve)
        wide = widen(grid, self._smooth_radius(grid))
        search = OffsetGrid(wide.lo_frames - self.delay, wide.hi_frames - self.delay, grid.step_frames)
        frame_ok = _frame_ok(fs)
        n_audio = search.n_audio(fs.n_frames)
        first = fs.frame_start - search.pad_before - self.audio_ctx
        mel, ok = audio_grid_features(au.samples, au.sample_rate, au.start_ms(), first,
                                      n_audio + 2 * self.audio_ctx, fs.fps, self.manifest.audio, au.present)
        audio_ok = ok[self.audio_ctx: self.audio_ctx + n_audio]
        rms = frame_rms(au.samples, au.sample_rate, au.start_ms(), fs.frame_start, fs.n_frames, fs.fps)
        voiced = np.nan_to_num(rms, nan=0.0) >= self.config.silence_rms
        return _Prepared(req, grid, search, fs.n_frames, frame_ok, mel, audio_ok,
                         float(voiced.mean()) if voiced.size else 0.0, rms)

    # --- core ------------------------------------------------------------------------------
    def _warm_cache(self, items: list[tuple[_Prepared | _Frames, FeatureCache]]) -> None:
        """Caches the CNN features of the seen frames (ROI there, face in view) of jobs that are
        not scored, so that the next job's causal context is the frames before it. Frames without
        a face are not run at all: a job whose ROI stream died costs no CNN work, and the next
        job's context repeats the last seen frame instead of reading a blank."""
        seen = [[t for t in range(p.n_frames) if bool(p.frame_ok[t])] for p, _ in items]
        computed = self._encode_slots(items, seen)
        for (j, t), f in computed.items():
            prep, cache = items[j]
            cache.put(prep.session_index(t), f)

    def _encode_slots(self, items: list[tuple[_Prepared | _Frames, FeatureCache | None]],
                      frames: list[list[int]]) -> dict[tuple[int, int], torch.Tensor]:
        """CNN features of ``frames[j]`` (positions within job j's frames) that job j's cache does
        not hold yet, keyed by (job, position)."""
        todo: list[torch.Tensor] = []
        slots: list[tuple[int, int]] = []  # (item, position within the job's frames)
        for j, ((prep, cache), wanted) in enumerate(zip(items, frames)):
            new = [t for t in wanted if cache is None or cache.get(prep.session_index(t)) is None]
            if new:
                todo.append(video_input(prep.frames.frames[new], self.manifest.video))
                slots += [(j, t) for t in new]
        computed: dict[tuple[int, int], torch.Tensor] = {}
        if todo:
            batch = torch.cat(todo)
            if self.device.type == "cuda":
                batch = batch.half().pin_memory().to(self.device, non_blocking=True)
            out = []
            for chunk in batch.split(self.config.max_frames_per_pass):
                out.append(self._encode_frames(chunk))
            feats = torch.cat(out)
            if self._shape_input:
                shape, ok = self._lip_shapes(items, slots)
                feats = self.model.add_shape(feats, shape.to(feats.device), ok.to(feats.device))
            for slot, f in zip(slots, feats):
                computed[slot] = f
        return computed

    def _frame_features(self, items: list[tuple[_Prepared, FeatureCache | None]]) -> list[torch.Tensor]:
        """Per-frame CNN features for every job, (T + ctx, F) each; only uncached seen frames are
        normalised and run through the CNN.

        A frame without its ROI or without a face is never encoded nor cached: it and the
        context frames the cache lacks repeat the last seen frame before them (the first seen
        one at the start). That is what ``_warm_cache`` leaves in a stream, so the video context
        a job reads does not depend on whether this worker scored the job before it, a silent
        one, or nothing (a review: a blank ROI cached by a scored job moved the next job's curve
        by up to 0.14 against a worker that took the session over)."""
        seen = [[t for t in range(p.n_frames) if bool(p.frame_ok[t])] for p, _ in items]
        computed = self._encode_slots(items, seen)
        result = []
        for j, (prep, cache) in enumerate(items):
            rows: list[torch.Tensor | None] = []
            for t in range(prep.n_frames):
                f = computed.get((j, t))
                if f is not None and cache is not None:
                    cache.put(prep.session_index(t), f)
                elif f is None and bool(prep.frame_ok[t]):
                    f = cache.get(prep.session_index(t))  # type: ignore[union-attr]
                rows.append(f)
            # causal context: the cache's past frames where present
            ctx_rows = [cache.get(prep.session_index(-c)) if cache is not None else None
                        for c in range(self.ctx, 0, -1)]
            last = next((r for r in ctx_rows + rows if r is not None), None)
            if last is None:  # no seen frame at all: the CNN reads the job's first ROI as it is
                last = self._encode_slots([(prep, None)], [[0]])[(0, 0)]
            filled = []
            for r in ctx_rows + rows:
                last = r if r is not None else last
                filled.append(last)
            result.append(torch.stack(filled))
        return result

    def _lip_shapes(self, items: list[tuple[_Prepared | _Frames, FeatureCache | None]],
                    slots: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Lip-shape measures of the frames in ``slots`` and whether each has them: frames whose
        stream carries the tracker's 40 lip landmarks and shows an unoccluded face (others count
        as none)."""
        n_feat = self.model.shape_features
        shape = np.zeros((len(slots), n_feat), dtype=np.float32)
        ok = np.zeros(len(slots), dtype=bool)
        by_item: dict[int, list[int]] = {}
        for row, (j, _) in enumerate(slots):
            by_item.setdefault(j, []).append(row)
        for j, rows in by_item.items():
            fs = items[j][0].frames
            if fs.landmarks is None or np.shape(fs.landmarks)[1:] != (N_LIP_LANDMARKS, 2):
                continue
            t = np.array([slots[r][1] for r in rows])
            shape[rows] = mouth_shape(np.asarray(fs.landmarks)[t])
            seen = items[j][0].frame_ok.numpy()[t] & np.isfinite(shape[rows]).all(axis=1)
            if fs.occluded is not None:
                # a landmarker draws lips under a hand or a bar as readily as on a mouth: where
                # face-track says the mouth is covered, the pixels alone speak
                seen &= ~np.asarray(fs.occluded, dtype=bool)[t]
            ok[rows] = seen
        return torch.from_numpy(shape), torch.from_numpy(ok)

    def _audio_embed(self, preps: list[_Prepared]) -> list[torch.Tensor]:
        """Audio embeddings on each job's grid, batched across jobs of equal length."""
        out: list[torch.Tensor | None] = [None] * len(preps)
        by_len: dict[int, list[int]] = {}
        for i, p in enumerate(preps):
            by_len.setdefault(p.mel.shape[-1], []).append(i)
        for idx in by_len.values():
            mel = torch.stack([preps[i].mel for i in idx]).to(self.device)
            if self.half:
                mel = mel.half()
            # (B, n_audio + 2 ctx, D) unit vectors, as SyncNetLite.audio_embed
            emb = F.normalize(self._encode_audio(mel).transpose(1, 2), dim=-1)
            for row, i in zip(emb, idx):
                out[i] = row[self.audio_ctx: row.shape[0] - self.audio_ctx]
        return [o for o in out if o is not None]

    # --- post ------------------------------------------------------------------------------
    def _post(self, prep: _Prepared, v: torch.Tensor, a: torch.Tensor) -> LipSyncScore:
        grid = prep.grid
        frame_ok, audio_ok = prep.frame_ok.unsqueeze(0).to(v.device), prep.audio_ok.unsqueeze(0).to(a.device)
        w = self.manifest.embedding_centering
        v = center_embeddings(v.float().unsqueeze(0), frame_ok, w)
        a = center_embeddings(a.float().unsqueeze(0), audio_ok, w)
        sim = similarity_by_offset(v, a, prep.search)
        ok = valid_pairs(frame_ok, audio_ok, prep.search)
        min_pairs = max(1, int(self.config.min_valid_fraction * prep.req.frames.n_frames))
        wide_curve = offset_curve(sim, ok, min_pairs=min_pairs)[0].cpu()
        radius = self._smooth_radius(grid)
        curve = crop(wide_curve, radius)  # published: the raw cosines at the reported offsets
        peak = None
        if own_time_pairs(prep.frame_ok, prep.audio_ok, prep.search) >= min_pairs:
            peak = pick_peak(crop(smooth_curve(wide_curve, radius), radius), grid, self.config.peak_neighbourhood_frames)
        n_ok = int(prep.frame_ok.sum())
        cal = self.manifest.calibration
        score = confidence = None
        if peak is not None:
            score = score_from_similarity(peak.best, cal)
            confidence = confidence_from_peak(peak.margin, peak.best, n_ok, cal)
        return build_result(prep.req, self.name, peak, grid, curve, score, confidence,
                            prep.voiced_fraction, self.config)
