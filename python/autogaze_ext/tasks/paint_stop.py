"""Stopping a frame's gaze on its measured Paint loss instead of the head's prediction.

Under a task-loss requirement R a frame stops at the first token whose loss *before* it is ≤ R
(spec §0.2, §0.5). The release model reads that loss off its task-loss head, a linear guess.
With ``stop_by="paint"`` the loss is measured instead: the exact ``PaintReconstruction`` loss of
the frame's prefix, painted over the previous frame's reconstruction from the ids that frame kept.
A frame then ends at its shortest prefix (at least one id) that meets R, or at its budget; the
ids of that prefix are what ``PaintReconstruction.cut_at_requirement`` would keep of the same
ids, and each later frame is gazed after the cut frames (unlike a cut of an uncut rollout).

One departure from the model's own order: a frame that meets R before any id (nothing changed
enough, e.g. a frozen frame) must still keep one id, and a coarse one would repaint a sharp
region blurred and push the loss over R again. There the first id is the model's best pick among
the finest-scale cells, which paint the frame's own pixels, so the frame keeps one id and R.

The cost per decode step is one extra selection (to see the step's ids before deciding where it
stops) and a gather over the frame's 8-px blocks; nothing reads the host.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .paint import PaintReconstruction


class PaintStop:
    """The measured stop of one clip (or stream): the reconstruction carried between frames.

    Call ``begin_frame`` with each frame's pixels, then per decode step ``losses_before`` with the
    step's ids and ``commit`` with the ids the step kept, then ``end_frame``.
    """

    def __init__(self, task: PaintReconstruction, batch: int, device, channels: int = 3):
        size = task.frame_size
        self.task = task
        self.recon = torch.full((batch, channels, size, size), task.fill, device=device)
        self.cover, self.level = task._tables_on(device)
        self.eos = task.num_tokens
        # finest-scale ids paint the frame's own pixels: they can only lower the loss
        self.exact_ids = self.level == task.num_scales
        self.norm = float(channels * size * size)
        self.options = self.err = self.levels = self.best = self.start_loss = None
        self._painted = self._running = None  # of the last ``losses_before``, for ``commit``

    @classmethod
    def for_model(cls, config, batch: int, device) -> "PaintStop":
        """The measured stop for an ``AutoGazeConfig`` (frames at its largest scale)."""
        if config.vision.temporal_patch_size != 1:
            raise ValueError("stop_by='paint' needs temporal_patch_size 1 (one frame per gaze "
                             f"frame), the model has {config.vision.temporal_patch_size}")
        cells = math.isqrt(config.tokens_per_scale[-1])  # the finest scale's grid side
        patch = config.scales[-1] // cells if cells else 0
        if not cells or patch * cells != config.scales[-1]:
            raise ValueError(f"stop_by='paint' needs square cell grids that divide the scales, "
                             f"got scales {config.scales} with {config.tokens_per_scale} cells")
        return cls(PaintReconstruction.from_config(config, patch_size=patch), batch, device)

    def begin_frame(self, frame: torch.Tensor) -> None:
        """frame (B,3,H,W) in the model's input space; resized (bicubic) to the task's frame."""
        size = self.task.frame_size
        frame = frame.float()
        if tuple(frame.shape[-2:]) != (size, size):
            frame = F.interpolate(frame, size=(size, size), mode="bicubic", align_corners=False)
        self.options, self.err = self.task._step(frame, self.recon)  # (B,K1,C,S,S), (B,K1,nb)
        batch = frame.shape[0]
        self.levels = torch.zeros(batch, self.task.num_blocks, dtype=torch.long,
                                  device=frame.device)
        # the lowest loss of a prefix of ≥ 1 id so far (inf: a frame never stops before its first)
        self.best = torch.full((batch,), float("inf"), device=frame.device)
        self.start_loss = self.err[:, 0].sum(-1) / self.norm  # (B,) before any id of the frame

    def restrict_met_frames(self, used: torch.Tensor, requirement: torch.Tensor) -> None:
        """A frame that meets ``requirement`` (B,) before any id still keeps one (spec §0.3):
        ban every id but the finest-scale ones there, so that one cannot raise the loss.
        used (B,V) bool, the frame's banned ids, is updated in place."""
        candidates = used[:, : self.eos]
        left = (~candidates & self.exact_ids).any(1)
        met = (self.start_loss <= requirement) & left
        candidates |= met[:, None] & ~self.exact_ids

    def losses_before(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B,K) the step's picks (EOS where none) → (B,K) float32: the lowest loss of any
        prefix (≥ 1 id) ending before each pick; non-increasing along K, so a stop is a cut."""
        real = ids != self.eos
        safe = ids.clamp(max=self.eos - 1)
        tok = self.cover[safe].long() * (self.level[safe] * real)[..., None]   # (B,K,nb)
        self._painted = torch.maximum(tok.cummax(1).values, self.levels[:, None])
        after = torch.gather(self.err, 1, self._painted).sum(-1) / self.norm
        self._running = torch.minimum(after.cummin(1).values, self.best[:, None])
        return torch.cat((self.best[:, None], self._running[:, :-1]), 1).float().contiguous()

    def commit(self, ids: torch.Tensor) -> None:
        """ids (B,K): the ids the step kept, a prefix of those given to ``losses_before`` (EOS
        for stopped or idle slots)."""
        kept = (ids != self.eos).sum(1)
        last = (kept - 1).clamp(min=0)
        rows = torch.arange(ids.shape[0], device=ids.device)
        moved = kept > 0
        self.levels = torch.where(moved[:, None], self._painted[rows, last], self.levels)
        self.best = torch.where(moved, self._running[rows, last], self.best)

    def end_frame(self) -> None:
        """Paint the frame from the ids it kept; the next frame starts from it."""
        self.recon = self.task._paint(self.options, self.levels)
        self.options = self.err = None
