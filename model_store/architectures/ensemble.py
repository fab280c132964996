"""An ensemble of dual encoders that the scorer sees as one dual encoder.

Each member's unit embeddings are scaled by 1/sqrt(K) and concatenated, so the ensemble's
embeddings are unit vectors too and its cosine is the mean of the members' cosines: the members'
similarity curves are averaged before the peak is picked. (With a bundle's embedding centering,
offsets.center_embeddings renormalises the concatenation after taking the window mean away, which
weights each member by its centred norm: a near-mean; on 1.5.0's members it differs from
the plain mean by up to 2e-3 on a real clip's 1-s windows.) Averaging independently trained
networks' curves cuts the seed-to-seed spread that a small training set leaves in any one of them
(docs/training.md). The scorer's per-frame feature cache, TorchScript freezing and CUDA graphs work
unchanged: the frame features are the members' features side by side.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# the parts of a member the scorer calls; every member architecture must have them
_PARTS = ("frame_encoder", "video_head", "audio_encoder")


class _ConcatFeatures(nn.Module):
    """Frames -> the members' per-frame features side by side (N, sum of feature dims)."""

    def __init__(self, parts: list[nn.Module]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([p(x) for p in self.parts], dim=1)


class _ConcatUnitEmbeddings(nn.Module):
    """Runs each member on its own slice of the input channels (or all of it) and concatenates the
    members' channel-normalised outputs scaled by 1/sqrt(K): (B, K * D, N), unit norm per position."""

    def __init__(self, parts: list[nn.Module], in_splits: list[int] | None = None) -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)
        self.in_splits = in_splits
        self.scale = 1.0 / math.sqrt(len(parts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inputs = torch.split(x, self.in_splits, dim=1) if self.in_splits else [x] * len(self.parts)
        return torch.cat([F.normalize(p(i), dim=1) * self.scale for p, i in zip(self.parts, inputs)], dim=1)


class SyncNetEnsemble(nn.Module):
    """``members``: [{"architecture": ..., "arch_params": {...}}, ...] of one input format."""

    def __init__(self, members: list[dict[str, Any]]) -> None:
        super().__init__()
        from model_store.architectures import build

        if not members:
            raise ValueError("an ensemble needs at least one member")
        nets = [build(m["architecture"], m.get("arch_params", {})) for m in members]
        if any(getattr(n, "shape_encoder", None) is not None for n in nets):
            # its frame features would silently lose the landmark view (SyncNetLite.add_shape)
            raise ValueError("ensemble members with the lip-landmark input (shape_features) are not supported")
        ctx = {n.context_frames for n in nets}
        if len(ctx) != 1:
            raise ValueError(f"ensemble members disagree on context_frames: {sorted(ctx)}")
        self.context_frames = ctx.pop()
        self.frame_feature_dims = [n.frame_feature_dim for n in nets]
        self.frame_feature_dim = sum(self.frame_feature_dims)
        self.frame_encoder = _ConcatFeatures([n.frame_encoder for n in nets])
        self.video_head = _ConcatUnitEmbeddings([n.video_head for n in nets], self.frame_feature_dims)
        self.audio_encoder = _ConcatUnitEmbeddings([n.audio_encoder for n in nets])

    # no video_embed / audio_embed: those are training entry points, and an ensemble is joined
    # from trained networks, never trained itself
    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        return self.frame_encoder(frames)


def ensemble_state(member_states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The members' state dicts -> the ensemble's (member i's ``frame_encoder.x`` becomes
    ``frame_encoder.parts.i.x``, and so on). Training-only tensors (the logit scale) are dropped."""
    out: dict[str, torch.Tensor] = {}
    for i, state in enumerate(member_states):
        for key, value in state.items():
            part, _, rest = key.partition(".")
            if part in _PARTS:
                out[f"{part}.parts.{i}.{rest}"] = value
    return out


def member_state(ensemble_state: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    """Member ``i``'s weights out of an ensemble's state (the inverse of ensemble_state; the
    training-only logit scale is not in it)."""
    out = {}
    for key, value in ensemble_state.items():
        part, _, rest = key.partition(".parts.")
        index, _, name = rest.partition(".")
        if index == str(i):
            out[f"{part}.{name}"] = value
    return out
