"""Whole-clip CUDA graphs for greedy gaze generation (issue 3, integration item 4).

On CUDA, generation never reads the device from the host: each frame runs exactly
``ceil(M_t / K)`` selection steps, per-sample stops are masks, and the cache grows by amounts
fixed by the shapes. A whole clip (conv encoder, prefills, decode calls, selections) is therefore
a fixed sequence of kernels for a given (batch, frames, frame size, dtype, per-frame budgets,
requirement or not, batching mode, backend), and is captured once as one CUDA graph and replayed:
one launch per clip instead of thousands, and no host synchronisation until the caller reads the
result. Sampling is not captured (its generator state would have to be registered with the graph);
sampled calls run eagerly.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch

__all__ = ["ClipGraph", "GraphCache"]

Program = Callable[[torch.Tensor, "torch.Tensor | None"], tuple[list, list]]


class ClipGraph:
    """One captured clip program with static input and output buffers.

    program(video (B,T,3,H,W), requirement (B,T) or None) -> (tokens list of (B,M_t), counts list
    of (B,)). The program is run once eagerly on a side stream (to warm up allocators and
    libraries), then captured.
    """

    def __init__(self, program: Program, video: torch.Tensor, requirement: torch.Tensor | None):
        if video.device.type != "cuda":
            raise ValueError(f"ClipGraph needs a CUDA video, got device {video.device}")
        self.video = video.clone()
        self.requirement = None if requirement is None else requirement.clone()
        side = torch.cuda.Stream(device=video.device)
        side.wait_stream(torch.cuda.current_stream(video.device))
        with torch.cuda.stream(side):
            program(self.video, self.requirement)
        torch.cuda.current_stream(video.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.tokens, self.counts = program(self.video, self.requirement)

    def __call__(self, video: torch.Tensor, requirement: torch.Tensor | None):
        self.video.copy_(video)
        if self.requirement is not None:
            self.requirement.copy_(requirement)
        self.graph.replay()
        # the buffers are overwritten by the next replay: hand out copies
        return [t.clone() for t in self.tokens], [c.clone() for c in self.counts]


class GraphCache:
    """Captured clip programs by shape key, least recently used dropped beyond ``max_graphs``."""

    def __init__(self, max_graphs: int = 8):
        self.max_graphs = max_graphs
        self.graphs: OrderedDict[tuple, ClipGraph] = OrderedDict()

    def run(self, key: tuple, program: Program, video: torch.Tensor,
            requirement: torch.Tensor | None):
        graph = self.graphs.get(key)
        if graph is None:
            graph = ClipGraph(program, video, requirement)
            self.graphs[key] = graph
            while len(self.graphs) > self.max_graphs:
                self.graphs.popitem(last=False)
        self.graphs.move_to_end(key)
        return graph(video, requirement)

    def clear(self) -> None:
        self.graphs.clear()

    def __len__(self) -> int:
        return len(self.graphs)
