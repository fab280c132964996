"""1-D convolutions as one matrix product each, for the video head on the CPU.

The causal temporal head runs per job on (1, C, T + 6) with T = 8..36 frames: a few MFLOP, and
oneDNN's convolution call costs about 0.5 ms of set-up per head on one thread whatever the size
(TorchScript-frozen or eager alike). Gathering the k shifted (and strided, dilated) views of the
input into a (k * C, L) matrix and multiplying once costs about 0.15 ms for the same result
(to float rounding). The audio encoder's longer inputs do not gain (measured), so only the head
uses this.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


class Conv1dMatmul(nn.Module):
    """Inference-only replacement of one ``nn.Conv1d`` (groups 1, zero or no padding)."""

    def __init__(self, conv: nn.Conv1d) -> None:
        super().__init__()
        if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("Conv1dMatmul takes ungrouped convolutions with numeric zero padding")
        self.kernel = conv.kernel_size[0]
        self.stride = conv.stride[0]
        self.dilation = conv.dilation[0]
        self.padding = conv.padding[0]
        w = conv.weight.detach()  # (out, in, k) -> (out, k * in), tap-major to match the gather
        self.register_buffer("weight", w.permute(0, 2, 1).reshape(w.shape[0], -1).contiguous())
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype)
        self.register_buffer("bias", bias[:, None].contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding:
            x = F.pad(x, (self.padding, self.padding))
        span = self.dilation * (self.kernel - 1)
        n_out = (x.shape[-1] - span - 1) // self.stride + 1
        last = self.stride * (n_out - 1) + 1
        taps = [x[..., j * self.dilation: j * self.dilation + last: self.stride] for j in range(self.kernel)]
        cols = torch.cat(taps, dim=1)  # (B, k * in, n_out)
        return torch.matmul(self.weight, cols) + self.bias


def convs_as_matmuls(module: nn.Module) -> nn.Module:
    """A copy of ``module`` (in eval mode) with every ``nn.Conv1d`` replaced by ``Conv1dMatmul``;
    the modules' own forward code is unchanged, so ensembles of heads convert alike."""
    out = copy.deepcopy(module).eval()
    for parent in list(out.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv1d):
                setattr(parent, name, Conv1dMatmul(child))
    return out
