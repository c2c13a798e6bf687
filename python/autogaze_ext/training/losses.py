"""Losses of the two training stages, on the official padded slot layout (B, S).

Per-sample losses are normalised by the batch-average number of valid slots, as the official
code does (spec §9.3), so a batch mean of them is the loss to back-propagate.
"""

from __future__ import annotations

import torch

EPS = 1e-6


def _per_sample_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ_n mask·values per sample, divided by the batch-average Σ mask (+1e-6)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum(1) / (mask.sum() / mask.shape[0] + EPS)


def ntp_loss(log_action_probs: torch.Tensor, if_padded: torch.Tensor,
             task_loss_prediction: torch.Tensor | None = None,
             task_loss_target: torch.Tensor | None = None) -> torch.Tensor:
    """Next-token prediction on oracle gaze (spec §9.3) → per-sample loss (B,).

    log_action_probs (B,S): ``model.score(video, labels)["log_action_probs"]``; if_padded (B,S)
    bool: pad slots are excluded. With ``task_loss_prediction``/``task_loss_target`` (B,S), adds
    the squared error of the task-loss head on the valid slots.
    """
    valid = ~if_padded
    loss = -_per_sample_sum(log_action_probs, valid)
    if task_loss_target is not None:
        if task_loss_prediction is None:
            raise ValueError("task_loss_target needs task_loss_prediction")
        loss = loss + _per_sample_sum((task_loss_prediction - task_loss_target) ** 2, valid)
    return loss


def soft_targets(gains: torch.Tensor, temperature: float, vocab: int) -> torch.Tensor:
    """Oracle candidate gains (L,N) (−inf: not allowed) → target distributions (L,V): softmax of
    gain / (temperature · best gain of the slot), zero beyond N (EOS) and where not allowed."""
    gains = gains.float()
    best = gains.amax(1, keepdim=True).clamp(min=1e-6)      # slots where nothing helps: near uniform over the best
    target = torch.softmax(gains / (temperature * best), dim=1)
    return torch.nn.functional.pad(target, (0, vocab - gains.shape[1]))


def regret_loss(log_dist: torch.Tensor, gains: torch.Tensor, cap: float = 4.0) -> torch.Tensor:
    """Per-slot expected regret (L,) of the distribution, in units of the slot's best gain:
    Σ_v q(v)·min(cap, (best − gain(v)) / best). gains (L,N) (−inf: not allowed, where q is 0);
    log_dist (L,V), V ≥ N (ids ≥ N are never allowed). Unlike a cross-entropy with the best
    candidates, it tells a useless candidate (regret 1) from a harmful one (regret > 1: a
    coarse cell painted over detail), so mass the model cannot place on the best candidate moves
    to the harmless ones. Slots where nothing helps (best ≤ 0) count their regret against
    the largest loss, clamped the same way."""
    gains = gains.float()
    allowed = torch.isfinite(gains)
    best = gains.masked_fill(~allowed, float("-inf")).amax(1, keepdim=True)
    scale = torch.where(best > 0, best, gains.masked_fill(~allowed, 0).abs().amax(1, keepdim=True))
    regret = ((best - gains) / scale.clamp(min=1e-8)).clamp(0, cap).masked_fill(~allowed, 0.0)
    q = log_dist[:, : gains.shape[1]].float().exp()
    return (q * regret).sum(1)


def soft_label_loss(log_dist: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-slot cross-entropy (L,) −Σ_v target·log q (slots where q is −inf have target 0)."""
    return -(target * log_dist.clamp(min=-1e4)).sum(1)


def grpo_advantages(rewards: torch.Tensor, group_size: int, if_padded: torch.Tensor,
                    trajectory_ends: torch.Tensor, gamma: float = 0.995) -> torch.Tensor:
    """Per-slot advantages (B,S) of GRPO (spec §9.4 step 4).

    rewards (B,R): one reward per reconstructed frame, B = G·b in the group-major layout
    ``[x_0..x_{b-1}, x_0..x_{b-1}, ...]``. Advantage of reward i: reward − mean over the group
    (no division by the std). It reaches the slots before ``trajectory_ends[i]`` (slot count up
    to and including that frame), discounted by γ^(valid slots after the slot up to the end);
    later and padded slots get 0. The R rewards' contributions are summed.
    """
    batch, count = rewards.shape
    if batch % group_size:
        raise ValueError(f"rewards has {batch} rows, not a multiple of group_size {group_size}")
    grouped = rewards.view(group_size, batch // group_size, count)
    advantage = (grouped - grouped.mean(0, keepdim=True)).view(batch, count)
    valid = (~if_padded).to(rewards.dtype)
    slots = torch.arange(if_padded.shape[1], device=rewards.device)
    total = torch.zeros_like(valid)
    for i in range(count):
        inside = (slots < int(trajectory_ends[i])).to(rewards.dtype)
        kept = valid * inside
        # valid slots in [n, end) − 1: a reversed cumulative count
        after = kept.flip(1).cumsum(1).flip(1) - 1
        total = total + advantage[:, i : i + 1] * kept * gamma ** after.clamp(min=0)
    return total


def grpo_loss(log_action_probs: torch.Tensor, advantages: torch.Tensor,
              if_padded: torch.Tensor) -> torch.Tensor:
    """Policy-gradient loss per sample (B,): −Σ_n exp(logp − sg(logp))·A_n (value −ΣA, gradient
    −Σ A ∇logp), summed over slots as officially (no clipping, no KL)."""
    ratio = torch.exp(log_action_probs - log_action_probs.detach())
    return -(ratio * advantages * (~if_padded).to(advantages.dtype)).sum(1)
