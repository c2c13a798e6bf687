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

With ``stop_bound``, the same summary (``stop_bound``) for the model's gaze at the cap cut where a
perfect task-loss head would cut it: each frame at the shortest prefix whose *real* loss meets
``R`` (``cut_on_real_loss``). It separates what the head costs from what the gaze order costs.
The model's ``stop_by`` decides its own stops: the head's prediction, or the measured Paint loss
(then its stops are the bound's, each frame gazed after the cut frames before it).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..config import STOP_BY
from .metrics import correlation, fmt

__all__ = ["cut_on_real_loss", "frame_change", "threshold_markdown", "threshold_report"]


def frame_change(video: torch.Tensor) -> torch.Tensor:
    """video (B,T,3,S,S) → (B,T) mean |frame_t − frame_{t−1}|; NaN for frame 0."""
    change = (video[:, 1:] - video[:, :-1]).abs().float().mean((2, 3, 4))
    return torch.cat([torch.full_like(change[:, :1], float("nan")), change], 1)


@torch.no_grad()
def cut_on_real_loss(task, video: torch.Tensor, ids: torch.Tensor, frame_offsets: torch.Tensor,
                     requirement: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut each frame of a rollout at the shortest prefix whose real task loss is ≤ requirement.

    video (B,T,3,S,S); ids (L,) and frame_offsets (B·T+1,) as in ``GazeOutput``. Frames are cut
    in order, each painted over the cut frames before it (``PaintReconstruction.cut_at_requirement``,
    one pass over the clip); a frame that
    never meets the requirement keeps every id, and every frame keeps at least one (generation's
    first-step rule). Returns the cut (ids, frame_offsets). This is where a perfect head would
    stop the same ids; it is approximate in that the decoder chose them after uncut frames.
    """
    return task.cut_at_requirement(video, ids, frame_offsets, requirement)


@torch.no_grad()
def threshold_report(model, task, clips: Iterable[torch.Tensor], requirement: float,
                     ratio: float, tolerance: float = 0.3, bins: int = 5,
                     stop_bound: bool = False) -> tuple[dict, dict]:
    """Gaze batches of clips (B,T,3,S,S) under ``requirement`` with budget cap ``ratio``.

    Returns (summary, per_frame): ``summary`` is JSON-able (see the module docstring);
    ``per_frame`` holds (F,) tensors ``tokens``, ``loss``, ``change``, ``frame`` (index in its
    clip) and ``clip`` for plots and per-clip rows (of the model's own stops)."""
    if not requirement > 0:
        raise ValueError(f"threshold_report: requirement must be > 0, got {requirement}")
    tokens, losses, changes, frames, clip_ids = [], [], [], [], []
    cut_tokens, cut_losses = [], []
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
        if stop_bound:
            capped = model(video.to(model.device, model.dtype), gazing_ratio=ratio)
            ids, offs = cut_on_real_loss(task, video, capped["ids"].to(video.device),
                                         capped["frame_offsets"].to(video.device), requirement)
            cut_losses.append(task.frame_losses(video, ids, offs).float().cpu().flatten())
            cut_tokens.append(offs.diff().float().cpu())
    if not n_clips:
        raise ValueError("threshold_report: no clips")
    per_frame = {"tokens": torch.cat(tokens), "loss": torch.cat(losses),
                 "change": torch.cat(changes), "frame": torch.cat(frames),
                 "clip": torch.cat(clip_ids)}
    settings = {"requirement": float(requirement), "ratio": float(ratio),
                "stop_by": getattr(model, "stop_by", "head"),
                "tolerance": float(tolerance), "clips": n_clips, "num_tokens": model.num_tokens}
    summary = _summarise(per_frame["tokens"], per_frame["loss"], per_frame["change"], settings, bins)
    summary["stop_bound"] = None
    if stop_bound:
        summary["stop_bound"] = _summarise(torch.cat(cut_tokens), torch.cat(cut_losses),
                                           per_frame["change"], settings, bins)
    return summary, per_frame


def _summarise(tok: torch.Tensor, loss: torch.Tensor, change: torch.Tensor, settings: dict,
               bins: int) -> dict:
    """The JSON-able summary of per-frame tokens, realised losses and changes (all (F,))."""
    requirement, tolerance, n = settings["requirement"], settings["tolerance"], settings["num_tokens"]
    within = (loss - requirement).abs() <= tolerance * requirement
    later = ~torch.isnan(change)
    static = later & (change == 0)
    summary = {
        **settings, "frames": int(tok.numel()),
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
    return summary


def threshold_markdown(thr: dict) -> list[str]:
    """The threshold-behaviour section of the report."""
    r, tol = thr["requirement"], thr["tolerance"]
    lines = ["", "## Threshold behaviour", "",
             f"Requirement {fmt(r)} with budget cap ratio {fmt(thr['ratio'])}, frames stopped by "
             f"{STOP_BY[thr.get('stop_by', 'head')]}, {thr['clips']} clips, {thr['frames']} frames.",
             "",
             f"- tokens per frame: {fmt(thr['tokens_per_frame'], 3)} ({fmt(thr['kept_percent'], 3)} % of N)",
             f"- realised loss: mean {fmt(thr['loss_mean'])}, median {fmt(thr['loss_median'])}",
             f"- frames within ±{round(100 * tol)} % of the requirement: {fmt(100 * thr['within'], 3)} % "
             f"(below: {fmt(100 * thr['below'], 3)} %, above: {fmt(100 * thr['above'], 3)} %)"]
    st = thr["static"]
    if st["frames"]:
        lines.append(f"- frames identical to the previous one: {st['frames']}, tokens mean "
                     f"{fmt(st['tokens_mean_percent'], 3)} % of N, max {fmt(st['tokens_max_percent'], 3)} %")
    else:
        lines.append("- no frame identical to the previous one (use --static-clips)")
    tvc = thr["tokens_vs_change"]
    if tvc:
        lines += [f"- tokens vs frame change: Spearman {fmt(tvc['spearman'], 3)}", "",
                  "| change (mean abs diff) | tokens per frame | frames |", "|---|---|---|"]
        lines += [f"| {fmt(b['change'])} | {fmt(b['tokens'], 3)} | {b['frames']} |" for b in tvc["bins"]]
    bound = thr.get("stop_bound")
    if bound:
        lines += ["", "Stop bound (the same model's gaze at the cap, each frame cut where its real loss "
                  "first meets the requirement, as a perfect task-loss head would cut it):", "",
                  f"- tokens per frame: {fmt(bound['tokens_per_frame'], 3)}; realised loss mean "
                  f"{fmt(bound['loss_mean'])}",
                  f"- within ±{round(100 * tol)} %: {fmt(100 * bound['within'], 3)} % (below: "
                  f"{fmt(100 * bound['below'], 3)} %, above: {fmt(100 * bound['above'], 3)} %)"]
        if bound["static"]["frames"]:
            lines.append(f"- frames identical to the previous one: tokens mean "
                         f"{fmt(bound['static']['tokens_mean_percent'], 3)} % of N")
    return lines
