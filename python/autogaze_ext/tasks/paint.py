"""PaintReconstruction: a cheap, non-parametric reconstruction task for gaze training.

Each frame is rebuilt from its gazed multi-scale patches alone:

* every frame is resized to each scale ``s`` (torch bicubic, ``align_corners=False``; skipped
  when ``s`` equals the frame size) and brought back to the frame size with **nearest-exact**
  upsampling. Nearest is chosen (rather than bilinear) so that the region a gazed cell paints
  depends on that cell's 16×16 source patch only: every output pixel takes the value of exactly
  one source pixel, of the patch whose cell covers it;
* frame ``t`` starts from the reconstruction of frame ``t − 1`` (frame 0 from the constant
  ``fill``) and paints the region of every gazed cell, coarse scales first (finer scales
  overwrite), each region taking the values of that scale's upsampled image;
* the per-frame loss is the mean ``|recon − video|`` over C, H, W in the space the video is
  given in (the model's normalised space); reward = −loss.

Token-level targets for the task-loss head (spec §7 step 4): the loss of the frame once tokens
``0..j`` of that frame are painted (on top of the previous frame reconstructed from all of its
tokens). They are computed without re-painting: all cell borders are multiples of a block size
(8 px for the release, the gcd of every cell border and the frame size in general), so per frame
and block the |error| sum of every option (previous reconstruction, each scale) is tabulated
once, and the painted state of a block is just the finest scale painted there so far.

Nothing here needs gradients; everything runs under ``torch.no_grad`` on the video's device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = ["PaintReconstruction", "PaintOutput", "UPSAMPLE_MODE"]

UPSAMPLE_MODE = "nearest-exact"


class PaintOutput(NamedTuple):
    """losses (B, T) per-frame loss; rewards (B, T) = −losses; slot_targets (L,) the loss after
    tokens 0..j of each frame (packed order); recon (B, T, C, S, S) the reconstruction."""
    losses: torch.Tensor
    rewards: torch.Tensor
    slot_targets: torch.Tensor
    recon: torch.Tensor


class PaintReconstruction:
    """Non-parametric paint-by-patches reconstruction (see module docstring).

    Args:
        scales: ascending scale sides, e.g. (32, 64, 112, 224); each a multiple of patch_size.
        frame_size: side S of the (square) frames the task sees.
        patch_size: side of a gaze cell in its own scale's pixels (16).
        fill: constant the reconstruction of frame 0 starts from.
        perceptual: optional ``f(recon (n,C,S,S), target (n,C,S,S)) -> (n,)`` added with weight
            ``perceptual_weight`` to :meth:`frame_losses` / :meth:`__call__` losses only (the
            per-slot targets and the oracle use the L1 term).
    """

    def __init__(self, scales: Sequence[int] = (32, 64, 112, 224), frame_size: int = 224,
                 patch_size: int = 16, fill: float = 0.0,
                 perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 perceptual_weight: float = 1.0):
        scales = [int(s) for s in scales]
        if not scales or any(s <= 0 for s in scales):
            raise ValueError(f"PaintReconstruction: scales must be positive ints, got {scales}")
        if sorted(scales) != scales or len(set(scales)) != len(scales):
            raise ValueError(f"PaintReconstruction: scales must be strictly ascending, got {scales}")
        if any(s % patch_size for s in scales):
            raise ValueError(f"PaintReconstruction: every scale must be a multiple of patch_size "
                             f"{patch_size}, got {scales}")
        self.scales = tuple(scales)
        self.frame_size = S = int(frame_size)
        self.patch_size = p = int(patch_size)
        self.fill = float(fill)
        self.perceptual = perceptual
        self.perceptual_weight = float(perceptual_weight)
        self.grids = tuple(s // p for s in scales)
        self.per_scale = tuple(g * g for g in self.grids)
        self.num_tokens = sum(self.per_scale)
        self.num_scales = len(scales)

        # Per axis and scale: which cell of the scale's grid each output pixel belongs to, read
        # off the very upsampling used for painting (so the regions match it exactly).
        cell_maps = []
        for s in scales:
            src = torch.arange(s, dtype=torch.float32)
            if s != S:
                src = F.interpolate(src.view(1, 1, s), size=S, mode=UPSAMPLE_MODE).view(S)
            cell_maps.append(src.round().long() // p)
        borders = [S]
        for cm in cell_maps:
            borders += (torch.nonzero(cm.diff()).view(-1) + 1).tolist()
        self.block = bs = math.gcd(*borders)
        self.blocks_per_side = nbs = S // bs
        self.num_blocks = nbs * nbs
        starts = torch.arange(nbs) * bs
        # cover[i, blk]: token i's cell covers block blk; level[i] = scale index + 1.
        cover = []
        for g, cm in zip(self.grids, cell_maps):
            cb = cm[starts]                                       # (nbs,) cell of each block row
            cells = torch.arange(g)
            rows = cells[:, None, None, None] == cb[None, None, :, None]   # (g,1,nbs,1)
            cols = cells[None, :, None, None] == cb[None, None, None, :]   # (1,g,1,nbs)
            cover.append((rows & cols).reshape(g * g, self.num_blocks))
        self._cover = torch.cat(cover, 0)                         # (N, nb) bool
        self._level = torch.repeat_interleave(torch.arange(1, len(scales) + 1),
                                              torch.tensor(self.per_scale))  # (N,)
        self._device_cache: dict = {}

    @classmethod
    def from_config(cls, config, fill: float = 0.0, patch_size: int = 16, **kwargs) -> "PaintReconstruction":
        """The task for an :class:`~autogaze_ext.config.AutoGazeConfig` (frame = largest scale)."""
        task = cls(config.scales, frame_size=max(config.scales), patch_size=patch_size, fill=fill, **kwargs)
        if list(task.per_scale) != list(config.tokens_per_scale):
            raise ValueError(f"PaintReconstruction: config splits N into {config.tokens_per_scale}, "
                             f"but scales {config.scales} with patch {patch_size} give {task.per_scale}")
        return task

    # ---- helpers ----------------------------------------------------------------------------
    def _tables_on(self, device):
        key = str(device)
        if key not in self._device_cache:
            self._device_cache[key] = (self._cover.to(device), self._level.to(device))
        return self._device_cache[key]

    def _check_video(self, video: torch.Tensor, where: str) -> None:
        if not isinstance(video, torch.Tensor) or video.dim() != 5:
            raise ValueError(f"{where}: video must be (B, T, C, S, S), got {getattr(video, 'shape', type(video))}")
        S = self.frame_size
        if tuple(video.shape[-2:]) != (S, S):
            raise ValueError(f"{where}: frames must be {S}x{S}, got {tuple(video.shape[-2:])}")

    def _check_gaze(self, video, ids, frame_offsets, where):
        B, T = video.shape[:2]
        if ids.dim() != 1 or ids.is_floating_point() or frame_offsets.dim() != 1:
            raise ValueError(f"{where}: ids and frame_offsets must be 1-D integer tensors")
        if frame_offsets.shape[0] != B * T + 1:
            raise ValueError(f"{where}: frame_offsets must have B*T+1 = {B * T + 1} entries, "
                             f"got {frame_offsets.shape[0]}")
        if ids.device.type == "cpu" and ids.numel():
            if int(ids.min()) < 0 or int(ids.max()) >= self.num_tokens:
                raise ValueError(f"{where}: ids must lie in [0, {self.num_tokens})")
            if int(frame_offsets[0]) != 0 or int(frame_offsets[-1]) != ids.shape[0]:
                raise ValueError(f"{where}: frame_offsets must run from 0 to len(ids)")
        return ids.to(video.device).long(), frame_offsets.to(video.device).long()

    def _scale_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """(n, C, S, S) -> (n, K, C, S, S): each scale's resized-and-upsampled image."""
        S = self.frame_size
        out = []
        for s in self.scales:
            if s == S:
                out.append(frames)
            else:
                small = F.interpolate(frames, size=(s, s), mode="bicubic", align_corners=False)
                out.append(F.interpolate(small, size=(S, S), mode=UPSAMPLE_MODE))
        return torch.stack(out, 1)

    def _block_sum(self, x: torch.Tensor) -> torch.Tensor:
        """(..., S, S) -> (..., nb): sums over bs×bs blocks, row-major blocks."""
        nbs, bs = self.blocks_per_side, self.block
        lead = x.shape[:-2]
        return x.reshape(*lead, nbs, bs, nbs, bs).sum((-3, -1)).reshape(*lead, nbs * nbs)

    def _paint(self, options: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """options (n, K+1, C, S, S), level (n, nb) in [0, K] -> (n, C, S, S)."""
        n, _, C, S, _ = options.shape
        nbs, bs = self.blocks_per_side, self.block
        pix = level.view(n, nbs, nbs).repeat_interleave(bs, 1).repeat_interleave(bs, 2)
        index = pix[:, None, None].expand(n, 1, C, S, S)
        return torch.gather(options, 1, index).squeeze(1)

    def _step(self, frames: torch.Tensor, prev: torch.Tensor):
        """Options and block error table of one time step: (n, K+1, C, S, S), (n, K+1, nb)."""
        options = torch.cat([prev[:, None], self._scale_frames(frames)], 1)
        err = self._block_sum((options - frames[:, None]).abs().sum(2))
        return options, err

    def _frame_levels(self, ids, frame_offsets, num_frames):
        """(F, nb) finest level painted per block for every frame (0 = nothing painted)."""
        cover, level = self._tables_on(ids.device)
        out = torch.zeros(num_frames, self.num_blocks, dtype=torch.long, device=ids.device)
        if ids.numel():
            frame = torch.repeat_interleave(torch.arange(num_frames, device=ids.device),
                                            frame_offsets.diff(), output_size=ids.shape[0])
            tok = cover[ids].long() * level[ids][:, None]
            out.scatter_reduce_(0, frame[:, None].expand_as(tok), tok, "amax")
        return out

    def _tables(self, video, levels, keep_recon=False):
        """Block error tables (B, T, K+1, nb) (and the reconstruction) for the frame levels (B,T,nb)."""
        B, T, C, S, _ = video.shape
        prev = torch.full((B, C, S, S), self.fill, dtype=video.dtype, device=video.device)
        errs, recons = [], []
        for t in range(T):
            options, err = self._step(video[:, t], prev)
            errs.append(err)
            prev = self._paint(options, levels[:, t])
            if keep_recon:
                recons.append(prev)
        errs = torch.stack(errs, 1) if T else video.new_zeros(B, 0, self.num_scales + 1, self.num_blocks)
        recon = torch.stack(recons, 1) if keep_recon and T else (video.new_zeros(video.shape) if keep_recon else None)
        return errs, recon

    def _norm(self, video) -> float:
        return float(video.shape[2] * self.frame_size * self.frame_size)

    def _prefix_from_tables(self, errs, ids, frame_offsets, norm, chunk_elems=1 << 23):
        """(L,) loss after tokens 0..j of their frame, from error tables errs (B, T, K+1, nb)."""
        cover, level = self._tables_on(ids.device)
        nb, K1 = self.num_blocks, self.num_scales + 1
        E = errs.reshape(-1, K1 * nb)                            # (F, K1*nb)
        num_frames = E.shape[0]
        out = torch.empty(ids.shape[0], dtype=errs.dtype, device=ids.device)
        if not ids.numel():
            return out
        frame = torch.repeat_interleave(torch.arange(num_frames, device=ids.device),
                                        frame_offsets.diff(), output_size=ids.shape[0])
        offs = frame_offsets.tolist()
        blk = torch.arange(nb, device=ids.device)
        f0 = 0
        while f0 < num_frames:                                   # chunks of whole frames
            f1 = f0 + 1
            while f1 < num_frames and (offs[f1 + 1] - offs[f0]) * nb <= chunk_elems:
                f1 += 1
            lo, hi = offs[f0], offs[f1]
            if hi > lo:
                fr = frame[lo:hi]
                tok = cover[ids[lo:hi]].long() * level[ids[lo:hi]][:, None]    # (n, nb)
                # Segmented running max: an offset per frame larger than any level resets it.
                shift = (fr * K1)[:, None]
                painted = torch.cummax(tok + shift, 0).values - shift
                vals = torch.gather(E[fr], 1, painted * nb + blk)              # (n, nb)
                out[lo:hi] = vals.sum(1) / norm
            f0 = f1
        return out

    # ---- public API -------------------------------------------------------------------------
    @torch.no_grad()
    def cut_at_requirement(self, video: torch.Tensor, ids: torch.Tensor, frame_offsets: torch.Tensor,
                           requirement: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Cut each frame's gaze at the shortest prefix whose loss is ≤ ``requirement``.

        video (B,T,C,S,S); ids (L,) and frame_offsets (B·T+1,) packed as in ``prefix_losses``.
        Frames are cut in order, each painted over the *cut* reconstruction of the frame before
        (one pass over T); a frame that never meets the requirement keeps every id, and every
        frame keeps at least one. Returns the cut (ids, frame_offsets).
        """
        self._check_video(video, "cut_at_requirement")
        ids, frame_offsets = self._check_gaze(video, ids, frame_offsets, "cut_at_requirement")
        B, T, C, S, _ = video.shape
        starts = frame_offsets[:-1].view(B, T).tolist()
        counts = frame_offsets.diff().view(B, T).tolist()
        norm = self._norm(video)
        prev = torch.full((B, C, S, S), self.fill, dtype=video.dtype, device=video.device)

        def packed(frames) -> tuple[torch.Tensor, torch.Tensor]:
            spans = [(starts[b][f], counts[b][f]) for b in range(B) for f in frames]
            index = [torch.arange(a, a + n) for a, n in spans]
            index = torch.cat(index).to(ids.device) if index else ids.new_zeros(0)
            sizes = torch.tensor([0] + [n for _, n in spans], device=frame_offsets.device)
            return ids[index], sizes.cumsum(0)

        for t in range(T):
            options, err = self._step(video[:, t], prev)
            frame_ids, frame_offs = packed([t])
            losses = self._prefix_from_tables(err[:, None], frame_ids, frame_offs, norm).cpu()
            for b in range(B):
                lo, hi = int(frame_offs[b]), int(frame_offs[b + 1])
                met = (losses[lo:hi] <= requirement).nonzero()
                if met.numel():
                    counts[b][t] = int(met[0]) + 1
            frame_ids, frame_offs = packed([t])
            prev = self._paint(options, self._frame_levels(frame_ids, frame_offs, B))
        return packed(range(T))

    @torch.no_grad()
    def scale_images(self, video: torch.Tensor) -> torch.Tensor:
        """video (B, T, C, S, S) -> (B, T, K, C, S, S): per scale, resized (bicubic) and
        upsampled back (nearest-exact); the frame itself for a scale equal to S."""
        self._check_video(video, "scale_images")
        B, T = video.shape[:2]
        return self._scale_frames(video.flatten(0, 1)).unflatten(0, (B, T))

    @torch.no_grad()
    def reconstruct(self, video: torch.Tensor, ids: torch.Tensor, frame_offsets: torch.Tensor) -> torch.Tensor:
        """(B, T, C, S, S) painted reconstruction of every frame from its gazed cells."""
        self._check_video(video, "reconstruct")
        ids, frame_offsets = self._check_gaze(video, ids, frame_offsets, "reconstruct")
        B, T = video.shape[:2]
        levels = self._frame_levels(ids, frame_offsets, B * T).view(B, T, -1)
        return self._tables(video, levels, keep_recon=True)[1]

    @torch.no_grad()
    def __call__(self, video: torch.Tensor, ids: torch.Tensor, frame_offsets: torch.Tensor) -> PaintOutput:
        """Per-frame losses (B, T), rewards = −losses, per-slot targets (L,), reconstruction."""
        self._check_video(video, "PaintReconstruction")
        ids, frame_offsets = self._check_gaze(video, ids, frame_offsets, "PaintReconstruction")
        B, T = video.shape[:2]
        levels = self._frame_levels(ids, frame_offsets, B * T).view(B, T, -1)
        errs, recon = self._tables(video, levels, keep_recon=True)
        norm = self._norm(video)
        losses = torch.gather(errs, 2, levels[:, :, None]).squeeze(2).sum(-1) / norm
        slot = self._prefix_from_tables(errs, ids, frame_offsets, norm)
        if self.perceptual is not None and T:
            extra = self.perceptual(recon.flatten(0, 1), video.flatten(0, 1)).view(B, T)
            losses = losses + self.perceptual_weight * extra
        return PaintOutput(losses, -losses, slot, recon)

    forward = __call__

    @torch.no_grad()
    def frame_losses(self, video: torch.Tensor, ids: torch.Tensor, frame_offsets: torch.Tensor) -> torch.Tensor:
        """(B, T) mean |recon − video| over C, H, W (+ the optional perceptual term)."""
        return self(video, ids, frame_offsets).losses

    @torch.no_grad()
    def rewards(self, video: torch.Tensor, ids: torch.Tensor, frame_offsets: torch.Tensor) -> torch.Tensor:
        return -self.frame_losses(video, ids, frame_offsets)

    @torch.no_grad()
    def prefix_losses(self, video: torch.Tensor, ids: torch.Tensor, frame_offsets: torch.Tensor) -> torch.Tensor:
        """(L,): for gaze token j (packed order) the L1 loss of its frame once tokens 0..j of that
        frame are painted on top of the previous frame's full reconstruction."""
        self._check_video(video, "prefix_losses")
        ids, frame_offsets = self._check_gaze(video, ids, frame_offsets, "prefix_losses")
        B, T = video.shape[:2]
        levels = self._frame_levels(ids, frame_offsets, B * T).view(B, T, -1)
        errs, _ = self._tables(video, levels)
        return self._prefix_from_tables(errs, ids, frame_offsets, self._norm(video))
