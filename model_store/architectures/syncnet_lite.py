"""SyncNet-lite: a small dual encoder for mouth-ROI frames and log-mel audio.

Video: a per-frame 2-D CNN (the expensive part, computed once per frame and cached by streams)
followed by a causal temporal head over the last ``context_frames`` frames' features.
Audio: a 1-D CNN over log-mel sampled at ``steps_per_frame`` steps per video frame, strided down to
one embedding per frame-grid position. Both embeddings are L2-normalised; similarity is a cosine.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn(cin: int, cout: int, k: int, s: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=s, padding=k // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _conv1_bn(cin: int, cout: int, k: int, s: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(cin, cout, k, stride=s, padding=k // 2, bias=False),
        nn.BatchNorm1d(cout),
        nn.ReLU(inplace=True),
    )


class _Residual2d(nn.Module):
    """relu(x + bn(conv(relu(bn(conv(x)))))) at constant width and size (a ResNet basic block).
    The body is one Sequential of conv/bn pairs, so ``fuse_for_inference`` folds its norms."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class FrameEncoder(nn.Module):
    """(N, 1, 96, 96) -> (N, feat_dim) per-frame features.

    The stem is a 4x4 stride-4 patch convolution: full-resolution activations dominate the cost of
    small CNNs on CPUs, and 16 pixels -> ``channels[0]`` channels loses nothing a mouth needs.
    ``blocks_per_stage`` residual blocks follow each stride-2 stage but the last (whose 3x3 map
    leaves little to mix); 0 is the plain stack of the bundles up to 1.7.0.
    """

    def __init__(self, channels: tuple[int, ...], feat_dim: int, roi_size: int = 96,
                 blocks_per_stage: int = 0) -> None:
        super().__init__()
        layers = [nn.Sequential(nn.Conv2d(1, channels[0], 4, stride=4, bias=False),
                                nn.BatchNorm2d(channels[0]), nn.ReLU(inplace=True))]
        cin = channels[0]
        side = roi_size // 4
        for i, c in enumerate(channels[1:]):
            layers.append(_conv_bn(cin, c, 3, 2))
            if i < len(channels) - 2:
                layers.extend(_Residual2d(c) for _ in range(blocks_per_stage))
            cin = c
            side = (side + 1) // 2
        self.convs = nn.Sequential(*layers)
        self.fc = nn.Linear(cin * side * side, feat_dim)
        self.drop = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.convs(x)
        return F.relu(self.fc(self.drop(h.flatten(1))))


class CausalTemporalHead(nn.Module):
    """(B, C, T + ctx) per-frame features -> (B, D, T) embeddings; frame t sees frames t-ctx..t."""

    def __init__(self, feat_dim: int, emb_dim: int, context_frames: int) -> None:
        super().__init__()
        # two causal convs: kernel 3 dilation 1, kernel 4 dilation 2 -> receptive field 1+2+6 = 9
        # frames would exceed ctx=6; use k=3,d=1 then k=3,d=2: 1 + 2 + 4 = 7 frames = ctx + 1.
        self.ctx = context_frames
        self.c1 = nn.Conv1d(feat_dim, feat_dim, 3, dilation=1)
        self.c2 = nn.Conv1d(feat_dim, feat_dim, 3, dilation=2)
        self.out = nn.Conv1d(feat_dim, emb_dim, 1)
        assert context_frames == 6, "receptive field of this head is 7 frames"

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.c1(f))  # T+ctx -> T+ctx-2
        h = F.relu(self.c2(h))  # -> T+ctx-6 = T
        return self.out(h)


class AudioEncoder(nn.Module):
    """(B, n_mels, steps_per_frame * N) -> (B, D, N) embeddings, one per frame-grid position.

    Receptive field 25 mel steps (250 ms); each of ``context_layers`` residual blocks (kernel 3,
    dilation 2 at the frame rate) widens it by two frames on each side."""

    def __init__(self, n_mels: int, channels: tuple[int, ...], emb_dim: int, steps_per_frame: int,
                 context_layers: int = 0) -> None:
        super().__init__()
        if steps_per_frame != 4:
            raise ValueError("AudioEncoder strides by 4: steps_per_frame must be 4")
        c1, c2, c3 = channels
        self.net = nn.Sequential(
            _conv1_bn(n_mels, c1, 5),
            _conv1_bn(c1, c2, 5, 2),
            _conv1_bn(c2, c3, 5, 2),
            _conv1_bn(c3, c3, 3),
            nn.Conv1d(c3, emb_dim, 1),
        )
        self.context = nn.ModuleList(
            nn.Sequential(nn.Conv1d(c3, c3, 3, padding=2, dilation=2, bias=False), nn.BatchNorm1d(c3),
                          nn.ReLU(inplace=True))
            for _ in range(context_layers))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        h = self.net[:-1](mel)
        for block in self.context:  # residual: the local features stay, the wider view adds
            h = h + block(h)
        return self.net[-1](h)


def audio_context_frames(context_layers: int) -> int:
    """Frames of audio an AudioEncoder needs on each side of a grid position (its receptive field's
    half, 3 frames + 2 per context layer, plus one frame to spare): ``AudioSpec.context_frames``."""
    return 4 + 2 * context_layers


class ShapeEncoder(nn.Module):
    """(N, S) lip-shape measures per frame (worker.tracking.geometry.mouth_shape) and (N,) a flag
    that they exist -> (N, feat_dim), added to the frame CNN's features: the landmark-geometry view
    of the mouth, free of the speaker's looks. Frames without landmarks (synthetic mouths, ROI
    refs that carry none) get the flag 0 and zeros, so one network serves both kinds of input.
    ``mean`` / ``std`` standardise the measures with the training clips' statistics (buffers, so
    they travel in the bundle's weights)."""

    def __init__(self, n_features: int, feat_dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        self.net = nn.Sequential(nn.Linear(n_features + 1, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, feat_dim))

    def forward(self, shape: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
        okf = ok.to(shape.dtype).unsqueeze(-1)
        z = torch.nan_to_num((shape - self.mean) / self.std) * okf
        return self.net(torch.cat([z, okf], dim=-1))


class SyncNetLite(nn.Module):
    def __init__(
        self,
        emb_dim: int = 128,
        video_channels: tuple[int, ...] = (32, 48, 64, 96),
        video_feat_dim: int = 128,
        audio_channels: tuple[int, ...] = (64, 128, 128),
        n_mels: int = 40,
        steps_per_frame: int = 4,
        context_frames: int = 6,
        roi_size: int = 96,
        shape_features: int = 0,
        audio_context_layers: int = 0,
        video_blocks_per_stage: int = 0,
    ) -> None:
        super().__init__()
        self.frame_encoder = FrameEncoder(tuple(video_channels), video_feat_dim, roi_size, video_blocks_per_stage)
        # the lip-landmark view as a second input (0: pixels only, the bundles up to 1.7.0)
        self.shape_encoder = ShapeEncoder(shape_features, video_feat_dim) if shape_features > 0 else None
        self.video_head = CausalTemporalHead(video_feat_dim, emb_dim, context_frames)
        self.audio_encoder = AudioEncoder(n_mels, tuple(audio_channels), emb_dim, steps_per_frame,
                                          audio_context_layers)
        # learned inverse temperature for training logits (not used by inference similarity)
        self.logit_scale = nn.Parameter(torch.tensor(2.3))
        self.context_frames = context_frames
        self.frame_feature_dim = video_feat_dim

    @property
    def shape_features(self) -> int:
        """Lip-shape measures per frame the network takes beside the pixels (0: none)."""
        return 0 if self.shape_encoder is None else int(self.shape_encoder.mean.numel())

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) normalised frames -> (N, feat_dim): the pixel CNN alone (see add_shape)."""
        return self.frame_encoder(frames)

    def add_shape(self, feats: torch.Tensor, shape: torch.Tensor | None, ok: torch.Tensor | None) -> torch.Tensor:
        """Frame features plus the lip-shape view: (N, F) + (N, S) measures where ``ok`` (N,) says
        a frame has landmarks. Without a shape encoder the features pass unchanged; without
        landmarks (``shape`` None) every frame counts as having none."""
        if self.shape_encoder is None:
            return feats
        n = feats.shape[0]
        if shape is None or ok is None:
            shape = feats.new_zeros(n, self.shape_features)
            ok = torch.zeros(n, dtype=torch.bool, device=feats.device)
        return feats + self.shape_encoder(shape.to(feats.dtype), ok)

    def video_embed(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, T + ctx, feat_dim) -> (B, T, D) unit-norm embeddings."""
        e = self.video_head(feats.transpose(1, 2)).transpose(1, 2)
        return F.normalize(e, dim=-1)

    def audio_embed(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, 4 N) -> (B, N, D) unit-norm embeddings."""
        e = self.audio_encoder(mel).transpose(1, 2)
        return F.normalize(e, dim=-1)


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm into the convolution before it (same outputs, fewer passes
    over memory: on a CPU the BN passes cost as much as a small conv). Returns the model."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.children())
        for i in range(len(children) - 1):
            conv, bn = children[i], children[i + 1]
            if isinstance(conv, (nn.Conv1d, nn.Conv2d)) and isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)):
                module[i] = fuse_conv_bn_eval(conv.eval(), bn.eval())
                module[i + 1] = nn.Identity()
    return model
