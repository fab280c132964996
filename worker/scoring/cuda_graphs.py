"""CUDA graphs for the per-frame encoder: one captured graph per fixed batch size (bucket).

Small batches on a GPU are bound by kernel-launch overhead, not FLOPs: a 16-frame block is ~10
small kernels. Replaying a captured graph launches them all at once. Graphs need static shapes, so
a batch is padded up to the next bucket; batches above the largest bucket run eagerly.
Only used when the device is CUDA; ``bucket_for`` is pure and tested on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

DEFAULT_BUCKETS = (16, 32, 64, 128, 256)


def bucket_for(n: int, buckets: Sequence[int]) -> int | None:
    """The smallest bucket >= n, or None when n exceeds every bucket."""
    for b in sorted(buckets):
        if n <= b:
            return b
    return None


class GraphedModule:
    """Wraps ``fn`` (a module's forward) with CUDA graphs captured for each bucket size."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], item_shape: tuple[int, ...],
                 device: torch.device, dtype: torch.dtype, buckets: Sequence[int] = DEFAULT_BUCKETS) -> None:
        if device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        self.fn = fn
        self.buckets = tuple(sorted(buckets))
        self.inputs: dict[int, torch.Tensor] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        pool = None
        for b in reversed(self.buckets):  # largest first, so smaller graphs share its memory pool
            x = torch.zeros((b, *item_shape), device=device, dtype=dtype)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side), torch.inference_mode():
                for _ in range(3):  # warm-up: cuDNN picks its kernels before capture
                    fn(x)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool), torch.inference_mode():
                y = fn(x)
            pool = graph.pool()
            self.inputs[b], self.outputs[b], self.graphs[b] = x, y, graph

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        b = bucket_for(n, self.buckets)
        if b is None:
            return self.fn(x)
        static = self.inputs[b]
        static[:n].copy_(x, non_blocking=True)
        if n < b:
            static[n:].zero_()
        self.graphs[b].replay()
        return self.outputs[b][:n].clone()
