"""Greedy oracle gaze labels for NTP training (with per-slot task-loss targets).

Per frame (sequentially in time, since frame t starts from frame t−1's reconstruction) the
oracle repeatedly adds the candidate id whose painting lowers the frame's loss most given the ids
already chosen (coarse-first semantics: a block shows the finest scale painted on it), until the
budget is reached, the loss is at most ``requirement``, or no candidate lowers the loss. Every
frame gets at least one id. All clips of the batch and all N candidates are evaluated at once
from the task's block error tables (one small matmul per scale and step).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .paint import PaintReconstruction

__all__ = ["greedy_oracle", "candidate_gains", "OracleResult"]


class OracleResult(NamedTuple):
    """ids (L,) frame-local ids in pick order; frame_offsets (B·T+1,); losses (L,) the frame
    loss after tokens 0..j (the task-loss-head targets); gains (L, N) float16 or None: for every
    slot, the frame-loss decrease each candidate would have brought at that pick (−inf for the
    candidates already picked in the frame), the soft labels of NTP (``return_gains=True``)."""
    ids: torch.Tensor
    frame_offsets: torch.Tensor
    losses: torch.Tensor
    gains: torch.Tensor | None = None


def _per_frame(value, B: int, T: int, name: str, dtype, device) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=dtype, device=device)
    if t.dim() == 0:
        return t.expand(B, T).clone()
    if t.dim() == 1 and t.shape[0] == T:
        return t[None].expand(B, T).clone()
    if t.dim() == 1 and t.shape[0] == B:
        return t[:, None].expand(B, T).clone()
    if t.shape == (B, T):
        return t.clone()
    raise ValueError(f"greedy_oracle: {name} must be a scalar, (T,), (B,) or (B, T); got shape {tuple(t.shape)}")


def _loss_change(err: torch.Tensor, cur: torch.Tensor, coverf: torch.Tensor, splits) -> torch.Tensor:
    """(B, N) change of the summed |error| if each candidate were painted now: err (B, K+1, nb)
    block error tables, cur (B, nb) finest level painted per block (a candidate only changes the
    blocks where its scale is finer than what is there)."""
    K1 = err.shape[1]
    here = torch.gather(err, 1, cur[:, None])                                   # (B, 1, nb)
    finer = torch.arange(1, K1, device=err.device)[None, :, None] > cur[:, None]
    delta_blocks = torch.where(finer, err[:, 1:] - here, torch.zeros((), dtype=err.dtype, device=err.device))
    return torch.cat([dk @ ck.T for dk, ck in zip(delta_blocks.unbind(1), coverf.split(splits, 0))], 1)


@torch.no_grad()
def candidate_gains(task: PaintReconstruction, video: torch.Tensor, ids: torch.Tensor,
                    frame_offsets: torch.Tensor) -> torch.Tensor:
    """(L, N) float16: along a given gaze (any method's, e.g. the model's own rollout), the
    frame-loss decrease every candidate would bring at each slot, given the slots before it
    (−inf for candidates already gazed in the frame): the greedy oracle's view of every state
    the gaze visits (on-policy soft labels).

    video (B, T, C, S, S) in the task's space; ids (L,) frame-local; frame_offsets (B·T+1,)."""
    task._check_video(video, "candidate_gains")
    ids, frame_offsets = task._check_gaze(video, ids, frame_offsets, "candidate_gains")
    B, T, C, S, _ = video.shape
    N = task.num_tokens
    cover, level = task._tables_on(video.device)
    coverf, splits, norm = cover.to(video.dtype), list(task.per_scale), task._norm(video)
    offs = frame_offsets.view(-1).tolist()
    out = torch.empty(ids.shape[0], N, dtype=torch.float16, device=video.device)
    levels = task._frame_levels(ids, frame_offsets, B * T).view(B, T, -1)
    prev = torch.full((B, C, S, S), task.fill, dtype=video.dtype, device=video.device)
    for t in range(T):
        options, err = task._step(video[:, t], prev)
        for b in range(B):
            lo, hi = offs[b * T + t], offs[b * T + t + 1]
            if hi == lo:
                continue
            frame = ids[lo:hi]
            paint = cover[frame].long() * level[frame][:, None]                 # (n, nb)
            # the levels before each slot: running max of the earlier slots' paint
            before = torch.cummax(paint, 0).values
            before = torch.cat([torch.zeros_like(before[:1]), before[:-1]], 0)
            delta = _loss_change(err[b].expand(hi - lo, -1, -1), before, coverf, splits)
            # seen[j, c]: candidate c is one of slots 0..j-1 of the frame
            earlier = torch.ones(hi - lo, hi - lo, device=video.device).tril(-1)
            seen = (earlier @ torch.nn.functional.one_hot(frame, N).float()) > 0
            out[lo:hi] = (-delta / norm).masked_fill(seen, float("-inf")).to(torch.float16)
        prev = task._paint(options, levels[:, t])
    return out


@torch.no_grad()
def greedy_oracle(task: PaintReconstruction, video: torch.Tensor, budget, k: int = 1,
                  requirement=None, device=None, return_gains: bool = False) -> OracleResult:
    """Greedy gaze sequences minimising ``task``'s per-frame loss.

    Args:
        task: a :class:`PaintReconstruction`.
        video: (B, T, C, S, S) in the task's space.
        budget: max ids per frame: int, per-frame sequence (T,), per-clip (B,), or (B, T)
            (a 1-D value of length T is read as per-frame when B == T).
        k: ids added per greedy step (the k best single-candidate decreases; k=1 is exact greedy).
        requirement: optional loss threshold (scalar, (B,), (T,) or (B, T)): a frame stops once
            its loss is ≤ requirement.
        device: where to compute (default: CUDA when available, else the video's device).
        return_gains: also return every slot's candidate gains (see :class:`OracleResult`).
    Returns:
        :class:`OracleResult` (ids, frame_offsets, per-slot prefix losses, gains or None) on the
        video's device.
    """
    task._check_video(video, "greedy_oracle")
    if int(k) < 1:
        raise ValueError(f"greedy_oracle: k must be >= 1, got {k}")
    k = int(k)
    out_device = video.device
    if device is None:
        device = video.device if video.device.type != "cpu" or not torch.cuda.is_available() else "cuda"
    video = video.to(device)
    B, T, C, S, _ = video.shape
    N, nb, K1 = task.num_tokens, task.num_blocks, task.num_scales + 1
    budgets = _per_frame(budget, B, T, "budget", torch.long, device).clamp(min=1, max=N)
    reqs = (_per_frame(requirement, B, T, "requirement", video.dtype, device)
            if requirement is not None else None)
    cover, level = task._tables_on(video.device)
    coverf = cover.to(video.dtype)
    splits = list(task.per_scale)
    norm = task._norm(video)
    blk = torch.arange(nb, device=device)
    rows = torch.arange(B, device=device)
    max_budget = int(budgets.max()) if T else 0

    chosen = torch.full((B, T, max_budget), -1, dtype=torch.long, device=device)
    gains = (torch.empty((B, T, max_budget, N), dtype=torch.float16, device=device)
             if return_gains else None)
    errs = []
    prev = torch.full((B, C, S, S), task.fill, dtype=video.dtype, device=device)
    for t in range(T):
        options, err = task._step(video[:, t], prev)          # err (B, K1, nb)
        errs.append(err)
        cur = torch.zeros(B, nb, dtype=torch.long, device=device)
        used = torch.zeros(B, N, dtype=torch.bool, device=device)
        count = torch.zeros(B, dtype=torch.long, device=device)
        active = torch.ones(B, dtype=torch.bool, device=device)
        cap = budgets[:, t]
        step = 0
        while step < max_budget:
            loss = torch.gather(err, 1, cur[:, None]).squeeze(1).sum(1)          # (B,)
            if reqs is not None:
                active &= (loss > reqs[:, t] * norm) | (count == 0)
            active &= count < cap
            if not bool(active.any()):
                break
            delta = _loss_change(err, cur, coverf, splits).masked_fill(used, float("inf"))
            take = min(k, N)
            vals, cand = torch.topk(delta, take, dim=1, largest=False)           # (B, take)
            room = (cap - count)[:, None]
            rank = torch.arange(take, device=device)[None]
            ok = ((vals < 0) | ((count == 0)[:, None] & (rank == 0))) & (rank < room) & active[:, None]
            ok &= torch.isfinite(vals)
            # Accepted candidates are a prefix of the ranked list (values ascend).
            ok = torch.cummin(ok.long(), 1).values.bool()
            n_ok = ok.sum(1)
            if not bool(n_ok.any()):
                break
            slot = (count[:, None] + rank).clamp(max=max_budget - 1)
            bi = rows[:, None].expand_as(cand)
            chosen[bi[ok], t, slot[ok]] = cand[ok]
            if gains is not None:
                # the pick of rank r saw the step's gains without the picks of ranks < r
                seen = (-delta / norm).float()
                for r in range(take):
                    pick = ok[:, r]
                    if bool(pick.any()):
                        gains[rows[pick], t, slot[pick, r]] = seen[pick].to(torch.float16)
                    seen[rows, cand[:, r]] = float("-inf")
            used[bi[ok], cand[ok]] = True
            paint = (cover[cand].long() * level[cand][:, :, None]) * ok[:, :, None]  # (B, take, nb)
            cur = torch.maximum(cur, paint.amax(1))
            count += n_ok
            active &= n_ok > 0
            step += 1
        prev = task._paint(options, cur)

    counts = (chosen >= 0).sum(-1).flatten()
    ids = chosen[chosen >= 0]
    frame_offsets = torch.zeros(B * T + 1, dtype=torch.long, device=device)
    frame_offsets[1:] = counts.cumsum(0)
    errs = torch.stack(errs, 1) if T else video.new_zeros(B, 0, K1, nb)
    losses = task._prefix_from_tables(errs, ids, frame_offsets, norm)
    if gains is not None:
        gains = gains[chosen >= 0].to(out_device)
    return OracleResult(ids.to(out_device), frame_offsets.to(out_device), losses.to(out_device),
                        gains)
