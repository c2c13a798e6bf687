"""Threshold behaviour of a gaze model: does a loss requirement make it stop where it should?

The model gazes every clip under a task-loss requirement ``R`` (and a per-frame budget cap, the
gazing ratio), as with the bundled defaults. Per frame we record the tokens it used, the real
task loss of the frame afterwards, and how much the frame changed: the mean |frame_t − frame_{t−1}|
over pixels and channels in the model's normalised space (frame 0 has no previous frame and is
left out of the change statistics). Summaries:

* ``within``: the share of frames whose realised loss lies within ±``tolerance``·R of R;
* ``static``: frames identical to the previous one (change exactly 0): their count and the mean
  and largest share of the N candidates they used;
* ``tokens_vs_change``: Spearman correlation of tokens with change, and equal-count change bins
  with the mean tokens of each (tokens should rise with motion and fall on static frames).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .metrics import correlation

__all__ = ["frame_change", "threshold_report"]


def frame_change(video: torch.Tensor) -> torch.Tensor:
    """video (B,T,3,S,S) → (B,T) mean |frame_t − frame_{t−1}|; NaN for frame 0."""
    change = (video[:, 1:] - video[:, :-1]).abs().float().mean((2, 3, 4))
    return torch.cat([torch.full_like(change[:, :1], float("nan")), change], 1)


@torch.no_grad()
def threshold_report(model, task, clips: Iterable[torch.Tensor], requirement: float,
                     ratio: float, tolerance: float = 0.3, bins: int = 5) -> tuple[dict, dict]:
    """Gaze batches of clips (B,T,3,S,S) under ``requirement`` with budget cap ``ratio``.

    Returns (summary, per_frame): ``summary`` is JSON-able (see the module docstring);
    ``per_frame`` holds (F,) tensors ``tokens``, ``loss``, ``change``, ``frame`` (index in its
    clip) and ``clip`` for plots and per-clip rows."""
    if not requirement > 0:
        raise ValueError(f"threshold_report: requirement must be > 0, got {requirement}")
    tokens, losses, changes, frames, clip_ids = [], [], [], [], []
    n_clips = 0
    for video in clips:
        b, t = video.shape[:2]
        out = model(video.to(model.device, model.dtype), gazing_ratio=ratio,
                    task_loss_requirement=requirement)
        ids, offs = out["ids"].to(video.device), out["frame_offsets"].to(video.device)
        losses.append(task.frame_losses(video, ids, offs).float().cpu().flatten())
        tokens.append(offs.diff().float().cpu())
        changes.append(frame_change(video).cpu().flatten())
        frames.append(torch.arange(t).repeat(b))
        clip_ids.append(torch.arange(n_clips, n_clips + b).repeat_interleave(t))
        n_clips += b
    if not n_clips:
        raise ValueError("threshold_report: no clips")
    per_frame = {"tokens": torch.cat(tokens), "loss": torch.cat(losses),
                 "change": torch.cat(changes), "frame": torch.cat(frames),
                 "clip": torch.cat(clip_ids)}
    n = model.num_tokens
    tok, loss, change = per_frame["tokens"], per_frame["loss"], per_frame["change"]
    within = (loss - requirement).abs() <= tolerance * requirement
    later = ~torch.isnan(change)
    static = later & (change == 0)
    summary = {
        "requirement": float(requirement), "ratio": float(ratio), "tolerance": float(tolerance),
        "clips": n_clips, "frames": int(tok.numel()), "num_tokens": n,
        "tokens_per_frame": float(tok.mean()), "kept_percent": float(100 * tok.mean() / n),
        "loss_mean": float(loss.mean()), "loss_median": float(loss.median()),
        "within": float(within.float().mean()),
        "within_after_first": float(within[later].float().mean()) if later.any() else None,
        "below": float((loss < (1 - tolerance) * requirement).float().mean()),
        "above": float((loss > (1 + tolerance) * requirement).float().mean()),
        "static": {"frames": int(static.sum()),
                   "tokens_mean_percent": float(100 * tok[static].mean() / n) if static.any() else None,
                   "tokens_max_percent": float(100 * tok[static].max() / n) if static.any() else None},
        "tokens_vs_change": None,
    }
    if int(later.sum()) >= 2:
        x, y = change[later], tok[later]
        order = x.argsort()
        table = [{"change": float(x[c].mean()), "tokens": float(y[c].mean()), "frames": int(c.numel())}
                 for c in order.tensor_split(min(bins, int(x.numel()))) if c.numel()]
        summary["tokens_vs_change"] = {"spearman": correlation(x, y)["spearman"], "bins": table}
    return summary, per_frame
