"""Packed (varlen) token sequences: indexing, frame-aware attention, and scatter to dense grids.

A gaze result in padding-free form is ``ids`` (L,) frame-local ids and ``frame_offsets``
(B·T + 1,): the tokens of frame f = b·T + t are ``ids[frame_offsets[f]:frame_offsets[f + 1]]``.
Tokens are therefore clip-major, then frame-major, then in generation order. ``pack`` derives
everything the ViT needs per token (clip, frame, scale, grid cell) without any padding.

Attention modes (never across clips):

* ``block_causal``: a token sees every token of its own frame and of earlier frames of its clip.
* ``causal``: a token sees the tokens at or before it in its clip (packed order).
* ``bidirectional``: a token sees its whole clip.
* ``frame``: a token sees only its own frame (``frame_independent_encoding``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["MODES", "Packed", "pack", "varlen_attention", "varlen_attention_reference",
           "scatter_tokens", "gather_tokens"]

MODES = ("block_causal", "causal", "bidirectional", "frame")


@dataclass(frozen=True)
class Packed:
    """Per-token indices of a packed sequence of B clips of T frames.

    cu_seqlens (B+1,) int64: token offsets of the clips. frame_offsets (B·T+1,) int64.
    clip, frame, scale, row, col (L,) int64: clip index, frame index within the clip, scale
    index, and the cell (row, col) within that scale's grid. ids (L,) the frame-local ids.
    """

    ids: torch.Tensor
    frame_offsets: torch.Tensor
    cu_seqlens: torch.Tensor
    clip: torch.Tensor
    frame: torch.Tensor
    scale: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor
    batch: int
    frames: int
    per_scale: tuple[int, ...]

    @property
    def num_tokens(self) -> int:
        return self.ids.shape[0]

    @property
    def grid_sides(self) -> tuple[int, ...]:
        return tuple(math.isqrt(n) for n in self.per_scale)


def _check_per_scale(per_scale: Sequence[int], where: str) -> list[int]:
    per_scale = [int(n) for n in per_scale]
    if not per_scale:
        raise ValueError(f"{where}: per_scale must list at least one scale, got []")
    for i, n in enumerate(per_scale):
        if n <= 0 or math.isqrt(n) ** 2 != n:
            raise ValueError(f"{where}: per_scale[{i}] = {n} must be a positive square (g·g cells)")
    return per_scale


def pack(ids: torch.Tensor, frame_offsets: torch.Tensor, batch: int, frames: int,
         per_scale: Sequence[int]) -> Packed:
    """Per-token clip/frame/scale/cell indices of a padding-free gaze result (vectorized).

    ids (L,) integer frame-local ids in [0, Σ per_scale); frame_offsets (B·T+1,) non-decreasing
    from 0 to L; per_scale: cells per scale, e.g. [4, 16, 49, 196] (grid sides 2, 4, 7, 14).
    Values are validated for CPU tensors (no host sync on other devices).
    """
    per_scale = _check_per_scale(per_scale, "pack")
    if not isinstance(ids, torch.Tensor) or ids.dim() != 1 or ids.is_floating_point():
        raise ValueError(f"pack: ids must be a 1-D integer tensor, got "
                         f"{getattr(ids, 'shape', type(ids))} {getattr(ids, 'dtype', '')}")
    if (not isinstance(frame_offsets, torch.Tensor) or frame_offsets.dim() != 1
            or frame_offsets.is_floating_point()):
        raise ValueError(f"pack: frame_offsets must be a 1-D integer tensor, got "
                         f"{getattr(frame_offsets, 'shape', type(frame_offsets))}")
    if frame_offsets.device != ids.device:
        raise ValueError(f"pack: frame_offsets must be on ids' device ({ids.device}), got {frame_offsets.device}")
    if batch < 0 or frames < 0:
        raise ValueError(f"pack: batch and frames must be non-negative, got {batch}, {frames}")
    if frame_offsets.shape[0] != batch * frames + 1:
        raise ValueError(f"pack: frame_offsets must have batch*frames + 1 = {batch * frames + 1} "
                         f"elements, got {frame_offsets.shape[0]}")
    ids = ids.long()
    frame_offsets = frame_offsets.long()
    total = sum(per_scale)
    length = ids.shape[0]
    if ids.device.type == "cpu":
        if int(frame_offsets[0]) != 0 or int(frame_offsets[-1]) != length:
            raise ValueError(f"pack: frame_offsets must run from 0 to len(ids) = {length}, got "
                             f"{int(frame_offsets[0])} .. {int(frame_offsets[-1])}")
        if bool((frame_offsets.diff() < 0).any()):
            raise ValueError("pack: frame_offsets must be non-decreasing")
        if length and (int(ids.min()) < 0 or int(ids.max()) >= total):
            raise ValueError(f"pack: ids must lie in [0, {total}) for per_scale {per_scale}, got "
                             f"values in [{int(ids.min())}, {int(ids.max())}]")
    device = ids.device
    counts = frame_offsets.diff()
    flat_frame = torch.repeat_interleave(torch.arange(batch * frames, device=device), counts,
                                         output_size=length)
    frames_div = max(frames, 1)
    clip = flat_frame // frames_div
    frame = flat_frame % frames_div
    cu_seqlens = frame_offsets[::frames_div] if frames else torch.zeros(batch + 1, dtype=torch.long, device=device)
    bounds = torch.tensor(per_scale, device=device).cumsum(0)
    scale = torch.searchsorted(bounds, ids, right=True)
    starts = bounds - torch.tensor(per_scale, device=device)
    sides = torch.tensor([math.isqrt(n) for n in per_scale], device=device)
    local = ids - starts[scale.clamp(max=len(per_scale) - 1)]
    side = sides[scale.clamp(max=len(per_scale) - 1)]
    return Packed(ids=ids, frame_offsets=frame_offsets, cu_seqlens=cu_seqlens, clip=clip,
                  frame=frame, scale=scale, row=local // side, col=local % side, batch=batch,
                  frames=frames, per_scale=tuple(per_scale))


def _check_qkv(q, k, v, packed: Packed, mode: str, where: str):
    if mode not in MODES:
        raise ValueError(f"{where}: mode must be one of {MODES}, got {mode!r}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 3:
            raise ValueError(f"{where}: {name} must be (L, heads, head_dim), got shape {list(t.shape)}")
        if t.shape[0] != packed.num_tokens:
            raise ValueError(f"{where}: {name} must have L = {packed.num_tokens} rows (packed tokens), "
                             f"got shape {list(t.shape)}")
    if k.shape[:2] != q.shape[:2] or v.shape[:2] != q.shape[:2] or k.shape[2] != q.shape[2]:
        raise ValueError(f"{where}: q, k, v must agree in (L, heads) and q/k in head_dim, got "
                         f"{list(q.shape)}, {list(k.shape)}, {list(v.shape)}")


def _visible(frame_q: torch.Tensor, frame_k: torch.Tensor, pos_q: torch.Tensor,
             pos_k: torch.Tensor, mode: str) -> torch.Tensor | None:
    """Boolean (Lq, Lk) visibility within one clip (True = attend); None = no mask."""
    if mode == "block_causal":
        return frame_k[None, :] <= frame_q[:, None]
    if mode == "frame":
        return frame_k[None, :] == frame_q[:, None]
    if mode == "causal":
        return pos_k[None, :] <= pos_q[:, None]
    return None


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, packed: Packed,
                     mode: str = "block_causal", scale: float | None = None,
                     backend: str = "auto") -> torch.Tensor:
    """Attention over packed clips. q, k, v (L, heads, head_dim) → (L, heads, head_dim_v).

    ``auto``/``reference``: one ``scaled_dot_product_attention`` per clip with that clip's boolean
    mask (built from its frame indices); nothing is materialised across clips. ``native``: the
    ``ops.varlen_attention`` kernel over per-token key ranges (no mask at all; not yet the default
    on CUDA, where it awaits verification on a GPU). ``scale`` defaults to 1/√head_dim.
    """
    _check_qkv(q, k, v, packed, mode, "varlen_attention")
    if backend not in ("auto", "reference", "native"):
        raise ValueError(f"varlen_attention: backend must be 'auto', 'reference' or 'native', "
                         f"got {backend!r}")
    if backend == "native":
        from . import ops
        key_lo, key_hi = ops.key_ranges(packed, mode=mode)
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        return ops.varlen_attention(q, k, v, key_lo, key_hi, scale)
    out = q.new_empty(q.shape[:2] + v.shape[2:])
    bounds = packed.cu_seqlens.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        if end == start:
            continue
        # (1, heads, n, d): with a batch dimension, CPU SDPA takes its flash kernel (4x faster)
        qc, kc, vc = (t[start:end].transpose(0, 1)[None] for t in (q, k, v))
        if mode == "causal":
            res = F.scaled_dot_product_attention(qc, kc, vc, is_causal=True, scale=scale)
        elif mode == "bidirectional":
            res = F.scaled_dot_product_attention(qc, kc, vc, scale=scale)
        else:
            fr = packed.frame[start:end]
            res = F.scaled_dot_product_attention(qc, kc, vc, attn_mask=_visible(fr, fr, None, None, mode),
                                                 scale=scale)
        out[start:end] = res[0].transpose(0, 1)
    return out


def varlen_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, packed: Packed,
                               mode: str = "block_causal", scale: float | None = None) -> torch.Tensor:
    """Ground truth for ``varlen_attention``: one SDPA over the whole packed sequence with a
    dense (L, L) mask, block-diagonal per clip."""
    _check_qkv(q, k, v, packed, mode, "varlen_attention_reference")
    length = packed.num_tokens
    if length == 0:
        return q.new_empty(q.shape[:2] + v.shape[2:])
    pos = torch.arange(length, device=q.device)
    same_clip = packed.clip[None, :] == packed.clip[:, None]
    visible = _visible(packed.frame, packed.frame, pos, pos, mode)
    mask = same_clip if visible is None else same_clip & visible
    res = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1),
                                         attn_mask=mask, scale=scale)
    return res.transpose(0, 1)


def scatter_tokens(features: torch.Tensor, packed: Packed, per_scale: Sequence[int] | None = None,
                   batch: int | None = None, frames: int | None = None):
    """Packed features (L, C) → per scale a dense grid (B, T, g, g, C) (zeros where not gazed)
    and a coverage mask (B, T, g, g) bool. Returns (grids, masks), two lists over scales."""
    per_scale = _check_per_scale(packed.per_scale if per_scale is None else per_scale, "scatter_tokens")
    batch = packed.batch if batch is None else batch
    frames = packed.frames if frames is None else frames
    if tuple(per_scale) != packed.per_scale or batch != packed.batch or frames != packed.frames:
        raise ValueError(f"scatter_tokens: per_scale/batch/frames ({per_scale}, {batch}, {frames}) do not "
                         f"match the packed layout ({list(packed.per_scale)}, {packed.batch}, {packed.frames})")
    if features.dim() != 2 or features.shape[0] != packed.num_tokens:
        raise ValueError(f"scatter_tokens: features must be (L = {packed.num_tokens}, C), got shape "
                         f"{list(features.shape)}")
    channels = features.shape[1]
    grids, masks = [], []
    for i, n in enumerate(per_scale):
        g = math.isqrt(n)
        sel = packed.scale == i
        index = (packed.clip[sel], packed.frame[sel], packed.row[sel], packed.col[sel])
        grid = features.new_zeros(batch, frames, g, g, channels)
        grid = grid.index_put(index, features[sel])
        mask = torch.zeros(batch, frames, g, g, dtype=torch.bool, device=features.device)
        mask = mask.index_put(index, torch.ones((), dtype=torch.bool, device=features.device))
        grids.append(grid)
        masks.append(mask)
    return grids, masks


def gather_tokens(grids: Sequence[torch.Tensor], packed: Packed) -> torch.Tensor:
    """Inverse of ``scatter_tokens``: read each packed token's row from the per-scale grids
    (B, T, g, g, C) → (L, C)."""
    if len(grids) != len(packed.per_scale):
        raise ValueError(f"gather_tokens: expected {len(packed.per_scale)} grids, got {len(grids)}")
    channels = grids[0].shape[-1]
    out = grids[0].new_empty(packed.num_tokens, channels)
    for i, grid in enumerate(grids):
        sel = packed.scale == i
        out[sel] = grid[packed.clip[sel], packed.frame[sel], packed.row[sel], packed.col[sel]]
    return out
