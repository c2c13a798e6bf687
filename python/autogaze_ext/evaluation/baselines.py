"""Gaze selection methods compared by ``autogaze-eval``.

Every method maps ``(video (B,T,3,S,S), budget, generator) -> (ids (L,), frame_offsets (B·T+1,))``
in the package's padding-free layout: frame-local ids ``0..N−1`` over the multi-scale candidates
(scale by scale, coarsest first, each scale's grid row-major; ``per_scale`` gives the count of
each scale, e.g. (4, 16, 49, 196) for scales 32/64/112/224 with 16 px patches, N = 265).
``budget`` is an int or T ints (patches per frame, each in [1, N]). Video is in the gaze model's
normalised space, frames S×S = the largest scale. Candidate ``i`` of a scale with a g×g grid
covers the (S/g)×(S/g) pixel cell of the frame at its row/column.

Definitions (all deterministic except ``random``):

* ``random``: a uniform random subset of ``budget`` candidates per frame.
* ``uniform``: the whole grid of the finest scale that fits in ``budget`` (the frame at that
  resolution), and the rest of the budget evenly spread over the next finer scale's grid (cells
  ``floor((j + φ_t)·n/rest)`` in raster order), with a per-frame phase ``φ_t = frac(t·0.618…)``
  so successive frames refine different cells. A budget under the coarsest grid is spread over
  it; a rest beyond the finest grid goes, the same way, to the coarser scales.
* ``frame_difference`` (EVS-like): a candidate's score is the amount of change it covers: the sum
  over its cell of ``|frame_t − frame_{t−1}|`` (mean over channels), i.e. the mean change times
  the cell's area; frame 0 is compared with its own per-channel mean (a constant frame), so it
  scores detail. The ``budget`` highest scores are kept; equal scores prefer the coarser scale.
  (Ranking by the *mean* change instead spends small budgets on a few fine cells and leaves the
  rest of the frame stale: on the example clips it lost to random selection, so the stronger,
  area-weighted reading is the baseline.)
* ``run_length`` (RLT-like): a candidate is *static* when that score is ≤ ``tol``; RLT keeps the
  non-static patches at the ViT's native (finest) scale, so the order is: non-static candidates
  of the finest scale, then non-static ones of coarser scales (finest first), then static ones;
  within each group by descending score. Cut at ``budget``: static candidates are only taken when
  the non-static ones do not fill the budget.
* ``oracle``: :func:`autogaze_ext.tasks.greedy_oracle` on a ``PaintReconstruction``. The oracle
  stops a frame early when no candidate lowers the loss, so it may use *fewer* than ``budget``.
* ``model``: ``AutoGaze.forward`` greedy, with per-frame ratios giving exactly ``budget``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..budget import frame_budgets
from ..tasks import PaintReconstruction, greedy_oracle

__all__ = ["METHODS", "GazeMethod", "random_gaze", "uniform_gaze", "frame_difference_gaze",
           "run_length_gaze", "oracle_gaze", "model_gaze", "cell_change", "make_methods",
           "frame_budget_list"]

GazeMethod = Callable[[torch.Tensor, object, "torch.Generator | None"], tuple[torch.Tensor, torch.Tensor]]
METHODS = ("model", "random", "uniform", "frame_difference", "run_length", "oracle")
_GOLDEN = (math.sqrt(5) - 1) / 2


def _check_video(video, where: str) -> None:
    if not isinstance(video, torch.Tensor) or video.dim() != 5 or video.shape[2] != 3:
        raise ValueError(f"{where}: video must be a (B,T,3,S,S) tensor, got "
                         f"{tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__}")
    if video.shape[-1] != video.shape[-2]:
        raise ValueError(f"{where}: frames must be square, got {tuple(video.shape[-2:])}")


def _grids(per_scale: Sequence[int]) -> list[int]:
    grids = [math.isqrt(int(n)) for n in per_scale]
    if not per_scale or any(g * g != int(n) or g < 1 for g, n in zip(grids, per_scale)):
        raise ValueError(f"per_scale must be positive square counts, got {list(per_scale)}")
    return grids


def frame_budget_list(budget, frames: int, num_tokens: int) -> list[int]:
    """``budget`` (int or T ints) -> T ints, each checked to lie in [1, N]."""
    if isinstance(budget, torch.Tensor):
        budget = budget.tolist()
    values = list(budget) if isinstance(budget, Sequence) else [budget] * frames
    if len(values) != frames:
        raise ValueError(f"budget must be an int or {frames} ints (one per frame), got {len(values)}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"budget must be an int or a sequence of ints, got {v!r}")
        if not 1 <= v <= num_tokens:
            raise ValueError(f"budget values must lie in [1, {num_tokens}], got {v}")
    return [int(v) for v in values]


def _take(order: torch.Tensor, budgets: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """order (B,T,N) ranked candidates -> the first budgets[t] of every frame, packed."""
    B, T, N = order.shape
    keep = torch.arange(N, device=order.device)[None, None] < torch.tensor(budgets, device=order.device)[None, :, None]
    ids = order[keep.expand(B, T, N)]
    counts = torch.tensor(budgets, device=order.device).repeat(B)
    return ids, F.pad(counts.cumsum(0), (1, 0))


def cell_change(video: torch.Tensor, per_scale: Sequence[int]) -> torch.Tensor:
    """(B,T,N) mean |frame_t − frame_{t−1}| over each candidate's cell (channel mean); frame 0
    against its per-channel spatial mean."""
    _check_video(video, "cell_change")
    grids = _grids(per_scale)
    prev = torch.cat([video[:, :1].mean((-2, -1), keepdim=True).expand_as(video[:, :1]),
                      video[:, :-1]], 1)
    diff = (video - prev).abs().mean(2).flatten(0, 1)[:, None]           # (B·T, 1, S, S)
    scores = [F.adaptive_avg_pool2d(diff, g).flatten(1) for g in grids]
    return torch.cat(scores, 1).view(*video.shape[:2], -1)


def random_gaze(video, budget, generator=None, *, per_scale):
    """A uniform random subset of ``budget`` candidates per frame."""
    _check_video(video, "random_gaze")
    B, T = video.shape[:2]
    N = sum(per_scale)
    budgets = frame_budget_list(budget, T, N)
    noise = torch.rand(B, T, N, generator=generator).to(video.device)
    return _take(noise.argsort(-1), budgets)


def _spread(start: int, n: int, count: int, phase: float) -> list[int]:
    return [start + int((j + phase) * n / count) for j in range(count)]


def _uniform_frame(budget: int, grids: list[int], phase: float) -> list[int]:
    starts = [0]
    for g in grids:
        starts.append(starts[-1] + g * g)
    sizes = [g * g for g in grids]
    full = [k for k, n in enumerate(sizes) if n <= budget]
    if not full:                                   # less than the coarsest grid
        return _spread(0, sizes[0], budget, phase)
    k = full[-1]
    ids = list(range(starts[k], starts[k + 1]))
    rest = budget - sizes[k]
    if rest and k + 1 < len(grids):                # rest < the next finer grid
        ids += _spread(starts[k + 1], sizes[k + 1], rest, phase)
    elif rest:                                     # beyond the finest grid: coarser scales
        ids += _uniform_frame(rest, grids[:k], phase)
    return ids


def uniform_gaze(video, budget, generator=None, *, per_scale):
    """Evenly spread cells of the coarsest scale that fits the budget (see module docstring)."""
    _check_video(video, "uniform_gaze")
    B, T = video.shape[:2]
    grids = _grids(per_scale)
    budgets = frame_budget_list(budget, T, sum(per_scale))
    frames = [_uniform_frame(m, grids, (t * _GOLDEN) % 1.0) for t, m in enumerate(budgets)]
    ids = torch.tensor([i for _ in range(B) for f in frames for i in f], dtype=torch.long,
                       device=video.device)
    counts = torch.tensor(budgets, device=video.device).repeat(B)
    return ids, F.pad(counts.cumsum(0), (1, 0))


def frame_difference_gaze(video, budget, generator=None, *, per_scale):
    """The ``budget`` candidates covering the most change since the previous frame."""
    _check_video(video, "frame_difference_gaze")
    budgets = frame_budget_list(budget, video.shape[1], sum(per_scale))
    area = torch.repeat_interleave(torch.tensor([1.0 / n for n in per_scale], device=video.device),
                                   torch.tensor(list(per_scale), device=video.device))
    # ids are coarse-first, so a stable sort keeps the coarser scale first on ties
    order = (cell_change(video, per_scale) * area).sort(dim=-1, descending=True, stable=True).indices
    return _take(order, budgets)


def run_length_gaze(video, budget, generator=None, *, per_scale, tol: float = 0.05):
    """Drop candidates whose cell equals the previous frame's within ``tol`` (see module doc)."""
    _check_video(video, "run_length_gaze")
    if not tol >= 0:
        raise ValueError(f"run_length_gaze: tol must be >= 0, got {tol!r}")
    budgets = frame_budget_list(budget, video.shape[1], sum(per_scale))
    change = cell_change(video, per_scale)
    K = len(per_scale)
    scale = torch.repeat_interleave(torch.arange(K, device=video.device),
                                    torch.tensor(list(per_scale), device=video.device))
    group = torch.where(change > tol, (K - 1 - scale).expand_as(change), torch.full_like(scale, K))
    order = change.sort(dim=-1, descending=True, stable=True).indices
    order = order.gather(-1, group.gather(-1, order).sort(dim=-1, stable=True).indices)
    return _take(order, budgets)


def oracle_gaze(video, budget, generator=None, *, task: PaintReconstruction):
    """Greedy paint oracle (may use fewer than ``budget`` ids when nothing lowers the loss)."""
    _check_video(video, "oracle_gaze")
    B, T = video.shape[:2]
    budgets = frame_budget_list(budget, T, task.num_tokens)
    result = greedy_oracle(task, video, torch.tensor(budgets)[None].expand(B, T))
    return result.ids, result.frame_offsets


def model_gaze(video, budget, generator=None, *, model):
    """AutoGaze greedy gaze with exactly ``budget`` ids per frame."""
    _check_video(video, "model_gaze")
    T, N = video.shape[1], model.num_tokens
    budgets = frame_budget_list(budget, T, N)
    ratios = [min(1.0, (m + 0.5) / N) for m in budgets]
    if frame_budgets(ratios, T, N) != budgets:   # float32 trunc(ratio·N) must give m back
        raise RuntimeError(f"model_gaze: ratios {ratios} do not reproduce budgets {budgets}")
    out = model(video.to(model.device, model.dtype), gazing_ratio=ratios)
    return out["ids"].to(video.device), out["frame_offsets"].to(video.device)


def make_methods(names: Sequence[str], per_scale: Sequence[int], paint: PaintReconstruction | None = None,
                 model=None, tol: float = 0.05) -> dict[str, GazeMethod]:
    """Name -> ``f(video, budget, generator)`` for the requested ``names`` (from ``METHODS``)."""
    per_scale = [int(n) for n in per_scale]
    _grids(per_scale)
    table = {
        "random": lambda v, b, g=None: random_gaze(v, b, g, per_scale=per_scale),
        "uniform": lambda v, b, g=None: uniform_gaze(v, b, g, per_scale=per_scale),
        "frame_difference": lambda v, b, g=None: frame_difference_gaze(v, b, g, per_scale=per_scale),
        "run_length": lambda v, b, g=None: run_length_gaze(v, b, g, per_scale=per_scale, tol=tol),
        "oracle": lambda v, b, g=None: oracle_gaze(v, b, g, task=paint),
        "model": lambda v, b, g=None: model_gaze(v, b, g, model=model),
    }
    out = {}
    for name in names:
        if name not in table:
            raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
        if name == "oracle" and paint is None:
            raise ValueError("method 'oracle' needs a PaintReconstruction (paint=...)")
        if name == "model" and model is None:
            raise ValueError("method 'model' needs a model (model=...)")
        out[name] = table[name]
    return out
