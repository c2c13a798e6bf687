"""Plain-PyTorch reference implementations: the ground truth the native kernels are tested against.

Each function defines the behaviour of the op of the same name in ``autogaze_ext.ops``, written
for readability rather than speed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["multiscale_patches", "gather_patches", "select_step"]


def multiscale_patches(video: torch.Tensor, scales: Sequence[int], patch_size: int = 16) -> torch.Tensor:
    """All patches of every scale of every frame.

    video (B, T, C, H, W) -> (B, T, N, C*p*p), N = sum((s // p) ** 2 for s in scales).
    For each scale s in order, every frame is resized to s x s with torch bicubic
    (align_corners=False, no antialias; skipped when the frame already is s x s) and cut into
    non-overlapping p x p cells, row-major; each patch is flattened channel-major (c, ky, kx).
    """
    B, T, C, H, W = video.shape
    p = patch_size
    frames = video.reshape(B * T, C, H, W)
    blocks = []
    for side in scales:
        resized = frames
        if (H, W) != (side, side):
            resized = F.interpolate(frames, size=(side, side), mode="bicubic", align_corners=False)
        cells = F.unfold(resized, kernel_size=p, stride=p)  # (B*T, C*p*p, cells), (c, ky, kx) order
        blocks.append(cells.transpose(1, 2).reshape(B, T, -1, C * p * p))
    return torch.cat(blocks, dim=2)


def gather_patches(
    video: torch.Tensor,
    ids: torch.Tensor,
    frame_offsets: torch.Tensor,
    scales: Sequence[int],
    patch_size: int = 16,
) -> torch.Tensor:
    """Selected patches of every frame, packed.

    video (B, T, C, H, W); ids (L,) int64 frame-local ids in [0, N); frame_offsets (B*T + 1,)
    int64: ids[frame_offsets[f]:frame_offsets[f + 1]] belong to frame f = b*T + t.
    Returns (L, C*p*p): row j = multiscale_patches(video)[b, t, ids[j]] for the frame of j.
    """
    patches = multiscale_patches(video, scales, patch_size).flatten(0, 1)  # (B*T, N, C*p*p)
    frames = torch.arange(patches.shape[0], device=ids.device)
    frame_of_row = torch.repeat_interleave(frames, frame_offsets.diff())
    return patches[frame_of_row, ids]


def select_step(logits, loss_pred, requirement, uniforms, used, n, finished, done, tokens,
                leftover_ids, leftover_len, budget: int, first: bool, coupled: bool,
                temperature: float = 1.0, top_k: int = 50) -> torch.Tensor:
    """One gaze selection step of a frame (spec §6.4), updating the frame state in place.

    logits (B,K,V) float32 and loss_pred (B,K) float32: the heads at the last fed token.
    requirement (B,) float32 or None: task-loss threshold of the frame. uniforms (B,K) float32 in
    [0,1) or None: sampling draws (None = greedy; with them, temperature then top-k filtering,
    then inverse-CDF sampling from the softmax). State, all modified in place: used (B,V) bool ids
    taken in this frame; n (B,) int64 slots filled; finished (B,) bool a requirement was met;
    done (B,) bool the sample's frame is over; tokens (B,W) int64 (W ≥ budget + K) the frame's
    slots, EOS-filled; leftover_ids (B,K) / leftover_len (B,) the step that ended each sample's
    frame. ``coupled``: the official batch coupling (shared step count, spec §0.11).

    Returns fed (B,K) int64: the ids to feed next (EOS where the sample is done). EOS = V − 1.
    """
    batch, k, vocab = logits.shape
    eos = vocab - 1
    scores = logits.masked_fill(used[:, None, :], float("-inf"))
    scores[:, :, eos] = float("-inf")
    if uniforms is not None:
        if temperature != 1.0:
            scores = scores / temperature
        kth = scores.topk(min(top_k, vocab), dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    ids = torch.full((batch, k), eos, dtype=torch.long, device=logits.device)
    selected = torch.zeros(batch, k, dtype=torch.bool, device=logits.device)
    can = torch.ones(batch, dtype=torch.bool, device=logits.device)
    for j in range(k):
        row = scores[:, j]
        exhausted = torch.isinf(row).all(-1)
        can = can & (n + j < budget) & ~(exhausted.all() if coupled else exhausted)
        pick = row.argmax(-1) if uniforms is None else _sample(row, uniforms[:, j])
        ids[:, j] = torch.where(can, pick, eos)
        selected[:, j] = can
        if j + 1 < k:
            scores[:, j + 1 :].scatter_(2, pick[:, None, None].expand(batch, k - j - 1, 1),
                                        float("-inf"))
    count = selected.sum(1)
    ids = torch.where(finished[:, None], eos, ids)  # coupled: finished samples emit pads
    if requirement is not None:
        meet = (loss_pred <= requirement[:, None]) & selected
        if first:
            meet[:, 0] = False  # a frame's first token is never stopped
        ids = torch.where(meet, eos, ids)
        finished |= meet.any(1) & ~done
    active = ~done
    over = (n + count >= budget) | (count < k)  # budget reached, or the heads ran dry
    if coupled:
        over = (over | finished).all().expand(batch) | over.any()
    else:
        over = over | finished
    width = tokens.shape[1]
    where = (n[:, None] + torch.arange(k, device=logits.device)).clamp(max=width - 1)
    keep = active[:, None] & selected
    tokens.scatter_(1, where, torch.where(keep, ids, tokens.gather(1, where)))
    used.scatter_(1, torch.where(keep, ids, eos), True)
    used[:, eos] = True  # EOS is always banned; keeps the state canonical
    n += torch.where(active, count, 0)
    ending = active & over
    leftover_ids.copy_(torch.where(ending[:, None], ids, leftover_ids))
    leftover_len.copy_(torch.where(ending, count, leftover_len))
    done |= ending
    return torch.where(done[:, None], eos, ids)


def _sample(row: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw from softmax(row) per sample; an all −inf row draws uniformly."""
    dead = torch.isinf(row).all(-1, keepdim=True)
    probs = torch.softmax(row.masked_fill(dead, 0.0), dim=-1)
    cdf = probs.cumsum(-1)
    target = (uniform * cdf[:, -1]).unsqueeze(-1)
    return torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp(max=row.shape[-1] - 1)


# ---- varlen_attention ---------------------------------------------------------------------------

__all__ += ["varlen_attention"]


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_lo: torch.Tensor,
                     key_hi: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Attention over packed tokens, query i seeing the keys [key_lo[i], key_hi[i]).

    q (L, H, D), k / v (L, Hkv, D) with H % Hkv == 0 (head h reads kv head h // (H // Hkv)),
    key_lo / key_hi (L,) integer, 0 <= lo < hi <= L. Returns (L, H, D) of q's dtype: a dense
    (L, L) boolean mask from the ranges and one scaled_dot_product_attention in float32
    (``scale`` defaults to 1/sqrt(D)), rounded once to q's dtype.
    """
    length, heads, head_dim = q.shape
    group = heads // k.shape[1]
    keys = torch.arange(length, device=q.device)
    mask = (keys[None, :] >= key_lo[:, None]) & (keys[None, :] < key_hi[:, None])
    qf, kf, vf = (t.float().transpose(0, 1) for t in (q, k, v))  # (heads, L, D)
    kf = kf.repeat_interleave(group, dim=0)
    vf = vf.repeat_interleave(group, dim=0)
    out = F.scaled_dot_product_attention(qf, kf, vf, attn_mask=mask, scale=scale)
    return out.transpose(0, 1).to(q.dtype)
