"""Qwen2.5-VL video geometry, torch only: the processor's row order, merge units, gaze → units,
and the vision tower's attention groups restricted to kept units.

Vocabulary (Qwen2.5-VL defaults in brackets):

* patch: ``patch`` px square over ``temporal`` frames [14 px, 2 frames]; one row of
  ``pixel_values_videos`` of ``C·temporal·patch²`` values, ordered (c, frame, y, x).
* merge unit: ``merge × merge`` patches [2×2: 28×28 px over 2 frames] = one LLM token.
* grid_thw (t, h, w): temporal groups and patches per side; a video has t·(h/m)·(w/m) units.
* row order (the video processor's ``patchify``): temporal group, then unit row, unit column
  (raster over units), then the m×m patches of the unit row-major. Unit u of a video owns
  rows ``m²·u … m²·u + m² − 1`` (block-major order, not raster order over patches).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def patchify(frames: torch.Tensor, patch: int = 14, merge: int = 2,
             temporal: int = 2) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Frames (T,C,H,W) float → ``pixel_values_videos`` rows (P, C·temporal·patch²) in the
    processor's order and grid_thw (t,h,w). A frame count not divisible by ``temporal`` is padded
    by repeating the last frame, as the processor does. H and W must be multiples of patch·merge.
    """
    n, c, height, width = frames.shape
    side = patch * merge
    if height % side or width % side:
        raise ValueError(f"frames must be multiples of {side} px (patch {patch} × merge {merge}), "
                         f"got {height}x{width}")
    if pad := -n % temporal:
        frames = torch.cat((frames, frames[-1:].expand(pad, -1, -1, -1)))
    t, h, w = frames.shape[0] // temporal, height // patch, width // patch
    x = frames.reshape(t, temporal, c, h // merge, merge, patch, w // merge, merge, patch)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # (t, uh, uw, mh, mw, c, frame, py, px)
    return x.reshape(t * h * w, c * temporal * patch * patch), (t, h, w)


def unpatchify(rows: torch.Tensor, grid_thw, patch: int = 14, merge: int = 2, temporal: int = 2,
               channels: int = 3) -> torch.Tensor:
    """Inverse of :func:`patchify` for one video: rows (t·h·w, C·temporal·patch²) →
    frames (t·temporal, C, h·patch, w·patch)."""
    t, h, w = (int(v) for v in grid_thw)
    x = rows.reshape(t, h // merge, w // merge, merge, merge, channels, temporal, patch, patch)
    x = x.permute(0, 6, 5, 1, 3, 7, 2, 4, 8)  # (t, frame, c, uh, mh, py, uw, mw, px)
    return x.reshape(t * temporal, channels, h * patch, w * patch)


def cell_cover(cells: int, units: int) -> torch.Tensor:
    """(cells, units) bool: cell a of ``cells`` equal cells spanning ``units`` units overlaps
    unit u with positive length (a coarse cell covers every unit it touches)."""
    a = torch.arange(cells)[:, None]
    u = torch.arange(units)[None, :]
    return (u * cells < (a + 1) * units) & ((u + 1) * cells > a * units)


def units_from_scale_masks(masks: list[torch.Tensor], units_hw: tuple[int, int]) -> torch.Tensor:
    """Per-scale gaze masks over one frame area → merge units covered.

    masks[s]: (T, gh_s, gw_s) bool/float, scale s cutting the area into gh_s × gw_s equal cells;
    units_hw: merge units (rows, cols) over the same area. Returns (T, rows, cols) bool: a unit
    is kept when a gazed cell of any of the given scales overlaps it.
    """
    rows, cols = units_hw
    kept = None
    for mask in masks:
        gh, gw = mask.shape[-2:]
        down = cell_cover(gh, rows).float()  # (gh, rows)
        across = cell_cover(gw, cols).float()  # (gw, cols)
        cover = torch.einsum("ar,tab,bc->trc", down, (mask > 0).float(), across) > 0
        kept = cover if kept is None else kept | cover
    return kept


def pair_union(units: torch.Tensor, temporal: int = 2) -> torch.Tensor:
    """(T,h,w) per-frame kept units → (T/temporal, h, w): a unit of a temporal group is kept when
    any of its frames keeps it."""
    if units.shape[0] % temporal:
        raise ValueError(f"frame count {units.shape[0]} is not divisible by the temporal patch "
                         f"{temporal}")
    return units.unflatten(0, (-1, temporal)).any(1)


def _restrict_segments(cu_seqlens: torch.Tensor, keep_in_order: torch.Tensor,
                       unit: int) -> torch.Tensor:
    """Dense segment bounds (in patches, units in ``keep_in_order``'s order) → bounds of the
    kept units; emptied segments vanish."""
    per_segment = cu_seqlens.diff().long() // unit
    segment = torch.repeat_interleave(torch.arange(per_segment.shape[0], device=cu_seqlens.device),
                                      per_segment)
    counts = torch.bincount(segment[keep_in_order], minlength=per_segment.shape[0])
    bounds = F.pad((counts * unit).cumsum(0), (1, 0))
    return torch.unique_consecutive(bounds).to(torch.int32)


def restrict_vision_metadata(keep: torch.Tensor, position_ids: torch.Tensor,
                             cu_seqlens: torch.Tensor, window_index: torch.Tensor,
                             cu_window_seqlens: torch.Tensor, merge_unit: int) -> dict:
    """The vision tower's precomputed metadata for the kept merge units only.

    keep (U,) bool over every unit of the batch's videos in row order. The dense metadata (as
    transformers computes it from grid_thw): position_ids (U·mu, 2) rotary (h, w) per patch,
    cu_seqlens full-attention bounds (one segment per temporal group), window_index (U,) the
    units in window order, cu_window_seqlens window bounds in patches; mu = merge_unit.

    Returns ``rows`` (K·mu,) the pixel rows to keep (block-major, units in row order) and the
    vision tower kwargs over those rows: ``position_ids`` (each kept patch its dense ids),
    ``cu_seqlens``/``cu_window_seqlens`` (groups recomputed over kept units, empty ones dropped),
    ``window_index`` (K,) and ``max_seqlen``/``max_window_seqlen``.
    """
    if keep.dtype != torch.bool or keep.dim() != 1 or keep.shape[0] != window_index.shape[0]:
        raise ValueError(f"keep must be a ({window_index.shape[0]},) bool tensor, got "
                         f"{tuple(keep.shape)} {keep.dtype}")
    units = keep.nonzero().squeeze(1)
    rows = (units[:, None] * merge_unit + torch.arange(merge_unit, device=keep.device)).flatten()
    rank = keep.long().cumsum(0) - 1
    in_window_order = keep[window_index]
    cu = _restrict_segments(cu_seqlens, keep, merge_unit)
    cu_window = _restrict_segments(cu_window_seqlens, in_window_order, merge_unit)
    longest = lambda bounds: int(bounds.diff().max()) if bounds.numel() > 1 else 0  # noqa: E731
    return {
        "rows": rows,
        "position_ids": position_ids[rows],
        "cu_seqlens": cu,
        "window_index": rank[window_index[in_window_order]],
        "cu_window_seqlens": cu_window,
        "max_seqlen": longest(cu),
        "max_window_seqlen": longest(cu_window),
    }
