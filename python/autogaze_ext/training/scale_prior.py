"""A per-scale prior on the gaze logits, folded into the readout (``lm_head``).

The greedy gaze of a model trained by NTP on a few videos follows a learnt coarse-to-fine scan
on video it has not seen (docs/evaluation.md). Adding one offset per scale to the gaze logits,
``logit[v] += offsets[scale(v)]`` for every candidate v (EOS unchanged), shifts that scan with
four numbers, which can be chosen on the training clips (four parameters overfit far less than
a refit of the whole readout; what they did for the bundled model is in docs/evaluation.md).

The release architecture has no logit bias, so the offsets are folded into the weights: the
decoder's final hidden states h at the states the model's own greedy gaze visits lie close to a
hyperplane ``h·w = 1`` (RMSNorm output), with w fitted by ridge regression; adding
``offsets[scale(v)]·w`` to every row v of every K-block of ``lm_head`` then adds
``offsets[scale(v)]·(h·w)`` ≈ the offset to each logit. ``fold_report`` says how close.
"""

from __future__ import annotations

import torch

from ..model import AutoGaze
from .algorithms import greedy_rollout
from .policy import score_rollout
from .readout import slot_logits

__all__ = ["prior_data", "constant_direction", "scale_bias", "fold_scale_prior", "fold_report"]


@torch.no_grad()
def prior_data(model: AutoGaze, video: torch.Tensor, ratios) -> dict:
    """The readout's inputs along the model's greedy gaze of each clip of ``video`` (B,T,3,H,W)
    at its ratio (B floats). Returns inputs (n,D) float32, heads (n,) the K-block row of each
    slot, and allowed (n,V) bool: the candidates generation may pick there."""
    ids, offsets = greedy_rollout(model, video, ratios)
    ids, offsets = ids.to(video.device), offsets.to(video.device)
    scored = score_rollout(model, video, ids, offsets, temperature=1.0, top_k=None,
                           return_distribution=True, return_inputs=True)
    return {"inputs": scored.gaze_inputs.float().cpu(), "heads": scored.gaze_index.cpu(),
            "allowed": torch.isfinite(scored.log_dist).cpu()}


def constant_direction(inputs: torch.Tensor, ridge: float = 1e-4) -> torch.Tensor:
    """w (D,) float32 minimising mean((inputs·w − 1)²) + ridge·‖w‖² over inputs (n,D)."""
    if inputs.dim() != 2 or inputs.shape[0] < 1 or not torch.isfinite(inputs).all():
        raise ValueError(f"constant_direction: finite inputs (n,D) expected, got {tuple(inputs.shape)}")
    if ridge < 0:
        raise ValueError(f"constant_direction: ridge must be ≥ 0, got {ridge}")
    x = inputs.double()
    gram = x.T @ x / x.shape[0] + ridge * torch.eye(x.shape[1], dtype=x.dtype)
    return torch.linalg.solve(gram, x.mean(0)).float()


def scale_bias(per_scale, offsets, vocab: int) -> torch.Tensor:
    """(V,) float32: ``offsets[s]`` on every candidate of scale s, 0 on EOS (the last id)."""
    per_scale, offsets = [int(n) for n in per_scale], [float(o) for o in offsets]
    if len(offsets) != len(per_scale):
        raise ValueError(f"offsets: one per scale ({len(per_scale)}) expected, got {len(offsets)}")
    if sum(per_scale) != vocab - 1:
        raise ValueError(f"per_scale must add up to the {vocab - 1} candidates, got {per_scale}")
    if not all(abs(o) < 1e3 for o in offsets):
        raise ValueError(f"offsets must be finite, got {offsets}")
    parts = [torch.full((n,), o) for n, o in zip(per_scale, offsets)]
    return torch.cat(parts + [torch.zeros(1)])


def fold_scale_prior(weight: torch.Tensor, k: int, bias: torch.Tensor,
                     direction: torch.Tensor) -> torch.Tensor:
    """``lm_head.weight`` (K·V, D) with ``bias[v]·direction`` added to row v of every K-block.
    Returns float32 on ``weight``'s device."""
    rows, dim = weight.shape
    if rows % k or rows // k != bias.numel() or direction.shape != (dim,):
        raise ValueError(f"fold_scale_prior: weight (K·V, D) with V = {bias.numel()}, direction "
                         f"({dim},) expected, got {tuple(weight.shape)}, K = {k}, "
                         f"{tuple(direction.shape)}")
    blocks = weight.detach().float().cpu().view(k, rows // k, dim)
    blocks = blocks + bias.float()[None, :, None] * direction.float()[None, None, :]
    return blocks.reshape(rows, dim).to(weight.device)


def _masked_logits(data: dict, weight: torch.Tensor, k: int) -> torch.Tensor:
    blocks = weight.detach().float().cpu().view(k, -1, weight.shape[1])
    logits = slot_logits(data["inputs"], data["heads"], blocks)
    return logits.masked_fill(~data["allowed"], float("-inf"))


@torch.no_grad()
def fold_report(data: dict, weight: torch.Tensor, folded: torch.Tensor, k: int,
                bias: torch.Tensor, direction: torch.Tensor) -> dict:
    """How well ``folded`` gives ``weight``'s logits plus ``bias`` on ``data``: the spread of
    h·w around 1, and the share of slots whose greedy pick (argmax) is the exact one."""
    exact = _masked_logits(data, weight, k) + bias
    approx = _masked_logits(data, folded, k)
    gap = data["inputs"] @ direction - 1
    same = (exact.argmax(1) == approx.argmax(1)).float().mean()
    return {"slots": int(gap.numel()), "hw_minus_1_rms": float(gap.pow(2).mean().sqrt()),
            "hw_minus_1_max": float(gap.abs().max()), "same_greedy_pick": float(same)}
