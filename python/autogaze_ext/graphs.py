"""Whole-clip CUDA graphs for greedy gaze generation (issue 3, integration item 4).

On CUDA, generation never reads the device from the host: each frame runs exactly
``ceil(M_t / K)`` selection steps, per-sample stops are masks, and the cache grows by amounts
fixed by the shapes. A whole clip (conv encoder, prefills, decode calls, selections) is therefore
a fixed sequence of kernels for a given (batch, frames, frame size, dtype, per-frame budgets,
requirement or not, batching mode, backend), and is captured once as one CUDA graph and replayed:
one launch per clip instead of thousands, and no host synchronisation until the caller reads the
result. Sampling is not captured (its generator state would have to be registered with the graph);
sampled calls run eagerly.

A captured graph reads its weights and buffers by address. The cache therefore keys graphs by the
addresses of every tensor the program reads (parameters and buffers) and holds those tensors
while the graph lives, so their memory is never freed and reused under a graph that still points
at it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch

__all__ = ["ClipGraph", "GraphCache"]

Program = Callable[[torch.Tensor, "torch.Tensor | None"], tuple[list, list]]


class ClipGraph:
    """One captured clip program with static input and output buffers.

    program(video (B,T,3,H,W), requirement (B,T) or None) -> (tokens list of (B,M_t), counts list
    of (B,)). Everything runs under the video's device on a stream of its own: the program is run
    once eagerly on it (to warm up allocators and libraries), then captured on it, so a model on
    ``cuda:1`` is captured on ``cuda:1`` whatever device is current.
    """

    def __init__(self, program: Program, video: torch.Tensor, requirement: torch.Tensor | None):
        if video.device.type != "cuda":
            raise ValueError(f"ClipGraph needs a CUDA video, got device {video.device}")
        self.device = video.device
        with torch.cuda.device(self.device):
            self.video = video.clone()
            self.requirement = None if requirement is None else requirement.clone()
            caller = torch.cuda.current_stream(self.device)
            self.stream = torch.cuda.Stream(device=self.device)
            self.stream.wait_stream(caller)
            with torch.cuda.stream(self.stream):
                program(self.video, self.requirement)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph, stream=self.stream):
                self.tokens, self.counts = program(self.video, self.requirement)
            caller.wait_stream(self.stream)

    def __call__(self, video: torch.Tensor, requirement: torch.Tensor | None):
        with torch.cuda.device(self.device):
            self.video.copy_(video)
            if self.requirement is not None:
                self.requirement.copy_(requirement)
            self.graph.replay()  # on the caller's current stream of the graph's device
            # the buffers are overwritten by the next replay: hand out copies
            return [t.clone() for t in self.tokens], [c.clone() for c in self.counts]


class GraphCache:
    """Captured clip programs by (shape key, addresses of the tensors they read), least recently
    used dropped beyond ``max_graphs``."""

    def __init__(self, max_graphs: int = 8):
        self.max_graphs = max_graphs
        self.graphs: OrderedDict[tuple, ClipGraph] = OrderedDict()
        self._held: dict[tuple, tuple[torch.Tensor, ...]] = {}

    @staticmethod
    def _addresses(tensors: Sequence[torch.Tensor]) -> tuple:
        return tuple((t.data_ptr(), t.dtype, tuple(t.shape)) for t in tensors)

    def run(self, key: tuple, program: Program, video: torch.Tensor,
            requirement: torch.Tensor | None, tensors: Sequence[torch.Tensor] = ()):
        """Replay the graph of ``key`` and ``tensors`` (every tensor ``program`` reads besides
        its arguments: weights, buffers), capturing it first if needed."""
        full_key = (key, self._addresses(tensors))
        graph = self.graphs.get(full_key)
        if graph is None:
            graph = ClipGraph(program, video, requirement)
            self.graphs[full_key] = graph
            self._held[full_key] = tuple(tensors)
            while len(self.graphs) > self.max_graphs:
                self._held.pop(self.graphs.popitem(last=False)[0])
        self.graphs.move_to_end(full_key)
        return graph(video, requirement)

    def keep_only(self, tensors: Sequence[torch.Tensor]) -> None:
        """Drop the graphs captured with other tensors than ``tensors`` (e.g. after ``.to()``
        moved or cast the weights: those graphs can never be replayed again)."""
        addresses = self._addresses(tensors)
        for full_key in [k for k in self.graphs if k[1] != addresses]:
            del self.graphs[full_key]
            del self._held[full_key]

    def clear(self) -> None:
        self.graphs.clear()
        self._held.clear()

    def __len__(self) -> int:
        return len(self.graphs)
