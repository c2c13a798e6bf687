"""Gaze result layouts: the official padded form, the padding-free form, per-scale masks, and
target-resolution tiling with its recovery (spec §5, §6.5, §8.1)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class AttrDict(dict):
    """A dict whose fields are also readable as attributes (the results of the models)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class GazeOutput(AttrDict):
    """The gazing result: the official keys plus the padding-free ``ids``/``frame_offsets``."""


def split_mask(mask: torch.Tensor, per_scale: list[int]) -> list[torch.Tensor]:
    """(B,T,N) coverage → list of per-scale (B,T,n_s) float32 chunks."""
    return list(mask.float().split(per_scale, dim=-1))


def assemble(frame_tokens: list[torch.Tensor], frame_counts: list[torch.Tensor], num_tokens: int,
             per_scale: list[int], eos: int) -> dict:
    """Build the output fields from per-frame generation results.

    frame_tokens[t] (B,M_t) local ids with EOS pads; frame_counts[t] (B,) slots used per sample.
    Padded form: frame t has ``max_b count`` slots; each row holds its own slots in generation
    order, then pads. Pad slots carry the official value ``N + N·t`` (never use it as an id).
    """
    batch = frame_tokens[0].shape[0]
    device = frame_tokens[0].device
    counts = torch.stack(frame_counts, dim=1)  # (B,T)
    slots = counts.max(0).values.tolist() if counts.numel() else []
    width = max(slots, default=0)
    padded = torch.full((batch, len(frame_tokens), width), eos, dtype=torch.long, device=device)
    for t, (tok, n) in enumerate(zip(frame_tokens, slots)):
        padded[:, t, :n] = tok[:, :n]
    real = padded != eos  # (B,T,W)
    pieces = [padded[:, t, :n] for t, n in enumerate(slots)]
    seq = torch.cat(pieces, dim=1) if pieces else padded.new_zeros(batch, 0)
    seq_offsets = torch.cat([torch.full((n,), t * num_tokens, device=device, dtype=torch.long)
                             for t, n in enumerate(slots)]) if pieces else seq.new_zeros(0)
    mask = torch.zeros(batch, len(frame_tokens), num_tokens + 1, device=device)
    mask.scatter_(2, padded, 1.0)
    return {
        "gazing_pos": seq + seq_offsets,
        "if_padded_gazing": seq == eos,
        "num_gazing_each_frame": torch.tensor(slots, dtype=torch.long, device=device),
        "gazing_mask": split_mask(mask[..., :num_tokens], per_scale),
        "ids": padded[real],
        "frame_offsets": F.pad(real.sum(-1).flatten().cumsum(0), (1, 0)),
    }


def from_ids(ids: torch.Tensor, frame_offsets: torch.Tensor, batch: int, frames: int,
             num_tokens: int, per_scale: list[int]) -> dict:
    """Padding-free gaze (``ids`` (L,), ``frame_offsets`` (B·T+1,)) → all output fields, with the
    official padded layout (no pads inside a frame; e.g. oracle labels for ``score``)."""
    eos = num_tokens
    counts = frame_offsets.diff().view(batch, frames)
    width = int(counts.max()) if counts.numel() else 0
    frame_of = torch.repeat_interleave(torch.arange(batch * frames, device=ids.device),
                                       counts.flatten(), output_size=ids.shape[0])
    slot = torch.arange(ids.shape[0], device=ids.device) - frame_offsets[frame_of]
    padded = torch.full((batch * frames, width), eos, dtype=torch.long, device=ids.device)
    padded[frame_of, slot] = ids
    padded = padded.view(batch, frames, width)
    return assemble(list(padded.unbind(1)), list(counts.unbind(1)), num_tokens, per_scale, eos)


def unpad(gazing_pos: torch.Tensor, if_padded: torch.Tensor, num_gazing_each_frame,
          num_tokens: int, eos: int) -> torch.Tensor:
    """Official padded layout → (B,T,W) local ids with EOS at padded slots."""
    counts = [int(c) for c in num_gazing_each_frame]
    batch = gazing_pos.shape[0]
    out = torch.full((batch, len(counts), max(counts, default=0)), eos, dtype=torch.long,
                     device=gazing_pos.device)
    start = 0
    for t, n in enumerate(counts):
        local = gazing_pos[:, start : start + n] - num_tokens * t
        pad = if_padded[:, start : start + n]
        out[:, t, :n] = torch.where(pad, eos, local)
        start += n
    return out


# ---- target-resolution tiling (spec §8.1) ---------------------------------------------------

def tile_grid(per_scale: list[int], target_scales: list[int], patch: int):
    """Per-scale cells of one tile, of the full target grid, and tiles per side."""
    tile_g = [math.isqrt(n) for n in per_scale]
    full_g = [s // patch for s in target_scales]
    tiles = math.ceil(full_g[-1] / tile_g[-1])
    return tile_g, full_g, tiles


def cut_tiles(video: torch.Tensor, tile_px: int, rows: int, cols: int) -> torch.Tensor:
    """(B,T,C,H,W) → (B·rows·cols, T, C, tile_px, tile_px), zero-padded bottom/right; tiles
    ordered (b, row, col)."""
    b, t, c, h, w = video.shape
    video = F.pad(video, (0, cols * tile_px - w, 0, rows * tile_px - h))
    video = video.view(b, t, c, rows, tile_px, cols, tile_px)
    return video.permute(0, 3, 5, 1, 2, 4, 6).reshape(b * rows * cols, t, c, tile_px, tile_px)


def merge_tile_masks(masks: list[torch.Tensor], batch: int, tile_g: list[int], rows: int,
                     cols: int, crop: list[int] | None = None) -> torch.Tensor:
    """Per-tile per-scale masks (B·rows·cols,T,g²) → full-grid mask (B,T,Σ rows·g·cols·g),
    each scale's grid optionally cropped to ``crop[i]``² cells, flattened row-major."""
    merged = []
    for i, (mask, g) in enumerate(zip(masks, tile_g)):
        t = mask.shape[1]
        grid = mask.view(batch, rows, cols, t, g, g).permute(0, 3, 1, 4, 2, 5)
        grid = grid.reshape(batch, t, rows * g, cols * g)
        if crop is not None:
            grid = grid[:, :, : crop[i], : crop[i]]
        merged.append(grid.reshape(batch, t, -1))
    return torch.cat(merged, dim=-1)


def from_mask(mask: torch.Tensor, per_scale: list[int]) -> dict:
    """Coverage (B,T,N) → output fields with ids sorted within each frame (order is not kept).

    Slots per frame = the most gazed ids of any sample; pads take ``N·t − 1`` as officially.
    """
    batch, frames, n = mask.shape
    gazed = mask > 0
    counts = gazed.sum(-1)  # (B,T)
    slots = counts.max(0).values.tolist() if batch else [0] * frames
    positions = torch.arange(n, device=mask.device).expand_as(gazed)
    # stable sort: gazed ids first, in ascending order
    order = torch.sort((~gazed).to(torch.int8), dim=-1, stable=True).indices
    sorted_ids = positions.gather(-1, order)
    pieces, pads = [], []
    for t, s in enumerate(slots):
        slot = torch.arange(s, device=mask.device)
        pad = slot[None, :] >= counts[:, t, None]
        ids = torch.where(pad, -1, sorted_ids[:, t, :s])
        pieces.append(ids + n * t)
        pads.append(pad)
    width_ok = bool(pieces)
    return {
        "gazing_pos": torch.cat(pieces, 1) if width_ok else mask.new_zeros(batch, 0, dtype=torch.long),
        "if_padded_gazing": torch.cat(pads, 1) if width_ok else mask.new_zeros(batch, 0, dtype=torch.bool),
        "num_gazing_each_frame": torch.tensor(slots, dtype=torch.long, device=mask.device),
        "gazing_mask": split_mask(mask, per_scale),
        "ids": positions[gazed],
        "frame_offsets": F.pad(counts.flatten().cumsum(0), (1, 0)),
    }
