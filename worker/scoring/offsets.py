"""Offset search: pure tensor logic, no model, no I/O.

Conventions: video embeddings v[t] for t in [0, T); audio embeddings a[g] on the frame grid for
g in [-K_lo, T + K_hi) (stored from index 0). Candidate offset k (frames) pairs v[t] with
a[t + k]: the sound heard k frames after the mouth. Positive k = the audio lags (is late).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class OffsetGrid:
    """Candidate offsets in frames: lo, lo+step, ..., hi (lo <= 0 <= hi not required)."""

    lo_frames: int
    hi_frames: int
    step_frames: int = 1

    @staticmethod
    def from_ms(min_offset_ms: float, max_offset_ms: float, fps: float, step_frames: int = 1) -> OffsetGrid:
        if min_offset_ms > max_offset_ms:
            raise ValueError(f"min_offset_ms {min_offset_ms} > max_offset_ms {max_offset_ms}")
        if step_frames < 1:
            raise ValueError("step_frames must be >= 1")
        frame_ms = 1000.0 / fps
        # nearest frame: +/-200 ms is 5 frames at 25 fps, 6 at 30 and at 29.97 (200.2 ms)
        lo = round(min_offset_ms / frame_ms)
        hi = round(max_offset_ms / frame_ms)
        return OffsetGrid(lo, hi, step_frames)

    @property
    def offsets(self) -> torch.Tensor:
        return torch.arange(self.lo_frames, self.hi_frames + 1, self.step_frames)

    @property
    def pad_before(self) -> int:
        """Audio grid positions needed before frame 0."""
        return max(0, -self.lo_frames)

    @property
    def pad_after(self) -> int:
        return max(0, self.hi_frames)

    def n_audio(self, n_frames: int) -> int:
        return n_frames + self.pad_before + self.pad_after


def center_embeddings(e: torch.Tensor, valid: torch.Tensor, weight: float) -> torch.Tensor:
    """(B, N, D) unit embeddings -> unit embeddings with ``weight`` x their mean over the valid
    positions taken away.

    An embedding carries a part that is constant over a window: the speaker's looks on the video
    side, the voice and the room on the audio side. Their product adds to every offset's
    similarity alike, so it cannot help find the offset, but it moves the best similarity up or
    down with who is speaking, which blurs matched-vs-mismatched scores. Removing the window mean
    keeps what moves with time. weight 0 returns ``e`` unchanged (bundles trained without it).
    """
    if weight == 0.0:
        return e
    m = valid.unsqueeze(-1).to(e.dtype)
    mean = (e * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1.0)
    return F.normalize(e - weight * mean, dim=-1)


def similarity_by_offset(v: torch.Tensor, a: torch.Tensor, grid: OffsetGrid) -> torch.Tensor:
    """All offsets in one batched product.

    v: (B, T, D) video embeddings; a: (B, T + pad_before + pad_after, D) audio embeddings whose
    index 0 is grid position -pad_before. Returns (B, T, n_offsets): cos(v[t], a[t + k]).
    """
    _b, t, _d = v.shape
    span = grid.hi_frames - grid.lo_frames + 1
    # windows[b, t, :, j] = a[b, t + lo + pad_before + j]: an unfold is a strided view, no copy
    start = grid.lo_frames + grid.pad_before
    windows = a[:, start:].unfold(1, span, 1)[:, :t]  # (B, T, D, span)
    if grid.step_frames > 1:
        windows = windows[..., :: grid.step_frames]
    return torch.einsum("btd,btdk->btk", v, windows)


def valid_pairs(frame_ok: torch.Tensor, audio_ok: torch.Tensor, grid: OffsetGrid) -> torch.Tensor:
    """(B, T) frame validity and (B, n_audio) audio validity -> (B, T, n_offsets) pair validity."""
    span = grid.hi_frames - grid.lo_frames + 1
    start = grid.lo_frames + grid.pad_before
    t = frame_ok.shape[1]
    win = audio_ok[:, start:].unfold(1, span, 1)[:, :t]
    if grid.step_frames > 1:
        win = win[..., :: grid.step_frames]
    return win & frame_ok.unsqueeze(-1)


def own_time_pairs(frame_ok, audio_ok, grid: OffsetGrid) -> int:
    """Frames with their ROI and the audio of their own time (offset 0): (T,) and (n_audio,)
    bool, numpy or torch, audio position 0 at grid position -pad_before. A job short of them
    (sound ending inside it) still has enough pairs at offsets reaching back into the sound, and
    its peak would be chosen among those alone: at the search's edge, not at its timing."""
    t = len(frame_ok)
    return int((frame_ok & audio_ok[grid.pad_before: grid.pad_before + t]).sum())


def offset_curve(sim: torch.Tensor, valid: torch.Tensor, min_pairs: int = 1) -> torch.Tensor:
    """Mean similarity per offset over valid frames: (B, T, K) -> (B, K); NaN where < min_pairs."""
    w = valid.to(sim.dtype)
    n = w.sum(dim=1)
    curve = (sim * w).sum(dim=1) / n.clamp_min(1)
    return torch.where(n >= min_pairs, curve, torch.full_like(curve, float("nan")))


@dataclass(frozen=True)
class Peak:
    index: int
    offset_frames: int
    best: float
    margin: float  # best minus the best value outside the peak's neighbourhood (0 if none)


def smooth_curve(curve: torch.Tensor, radius: int) -> torch.Tensor:
    """(..., K) curve -> the mean of each offset's finite neighbours within +/- radius positions.
    Offsets without a value (NaN: no valid pairs) stay NaN, so they are never picked.

    Why: a judgement within +/-1 frame is best served by the centre of the best band of offsets,
    not by a lone maximum that noise lifted beside a broad peak's centre. The ends of a curve
    have fewer neighbours, and a mean over fewer values favours them: compute the curve
    ``radius`` positions wider than the offsets reported and crop after smoothing
    (``widen``/``crop``)."""
    if radius <= 0:
        return curve
    c = curve.double()
    finite = torch.isfinite(c)
    vals = torch.where(finite, c, torch.zeros_like(c))
    pad = (radius, radius)
    kernel_sum = F.pad(vals, pad).unfold(-1, 2 * radius + 1, 1).sum(-1)
    kernel_n = F.pad(finite.double(), pad).unfold(-1, 2 * radius + 1, 1).sum(-1)
    out = kernel_sum / kernel_n.clamp_min(1.0)
    return torch.where(finite, out, torch.full_like(out, float("nan"))).to(curve.dtype)


def smooth_radius(peak_smooth_frames: int, grid: OffsetGrid) -> int:
    """Grid positions a curve is averaged over on each side before its peak is picked: a
    bundle's ``peak_smooth_frames`` on ``grid``'s step (windows, blocks and the clip summary alike)."""
    return int(peak_smooth_frames) // grid.step_frames


def widen(grid: OffsetGrid, radius: int) -> OffsetGrid:
    """``grid`` with ``radius`` more positions on each side (the smoothing's support)."""
    ext = radius * grid.step_frames
    return OffsetGrid(grid.lo_frames - ext, grid.hi_frames + ext, grid.step_frames)


def crop(curve: torch.Tensor, radius: int) -> torch.Tensor:
    """Undo ``widen`` on a (..., K + 2 radius) curve."""
    return curve[..., radius: curve.shape[-1] - radius] if radius > 0 else curve


def pick_peak(curve: torch.Tensor, grid: OffsetGrid, neighbourhood_frames: int = 2) -> Peak | None:
    """Best offset of one (K,) curve and its margin over the runner-up outside +/- neighbourhood.

    Returns None if every offset is NaN (no valid pairs).
    """
    c = curve.detach().double()
    finite = torch.isfinite(c)
    if not finite.any():
        return None
    c = torch.where(finite, c, torch.full_like(c, -float("inf")))
    idx = int(torch.argmax(c))
    offsets = grid.offsets
    k_best = int(offsets[idx])
    outside = (offsets - k_best).abs() > neighbourhood_frames
    rest = c[outside & finite]
    best = float(c[idx])
    margin = best - float(rest.max()) if rest.numel() else 0.0
    return Peak(idx, k_best, best, margin)


def brute_force_curve(v: torch.Tensor, a: torch.Tensor, grid: OffsetGrid) -> torch.Tensor:
    """Reference: one product per offset (tests check similarity_by_offset against this)."""
    _b, t, _ = v.shape
    out = []
    for k in grid.offsets.tolist():
        seg = a[:, grid.pad_before + k : grid.pad_before + k + t]
        out.append((v * seg).sum(-1))
    return torch.stack(out, dim=-1)
