"""One training step of NTP (spec §9.3) and GRPO (spec §9.4), plus the budget/requirement
strategies (§9.5) and the temperature schedule (§9.6).

Both steps return ``(loss, metrics)``: a scalar loss to back-propagate (the batch mean of the
per-sample losses) and a dict of floats.
"""

from __future__ import annotations

import inspect
import math
import random

import torch

from ..layout import from_ids
from ..model import AutoGaze
from ..tasks import PaintReconstruction
from .config import AlgorithmSection
from .losses import (EPS, grpo_advantages, grpo_loss, ntp_loss, regret_loss, soft_label_loss,
                     soft_targets)
from .policy import packed_to_padded, score_rollout


def task_outputs(task, video: torch.Tensor, ids: torch.Tensor, frame_offsets: torch.Tensor,
                 generator: torch.Generator | None = None):
    """Run a task on a gaze rollout; the one place tasks are adapted.

    video (B,T,3,S,S) task view; ids (L,), frame_offsets (B·T+1,). Returns losses (B,R) per
    reconstructed frame, frames (R,) their indices, slot_targets (L,) per-slot task-loss targets
    and slot_mask (L,) bool where a target exists. PaintReconstruction reconstructs all frames and
    has a target at every slot (the loss after slots 0..j); other tasks (e.g. MAEReconstruction)
    must return these four fields themselves.
    """
    if isinstance(task, PaintReconstruction):
        out = task(video, ids, frame_offsets)
        frames = torch.arange(video.shape[1], device=video.device)
        mask = torch.ones_like(out.slot_targets, dtype=torch.bool)
        return out.losses, frames, out.slot_targets, mask
    try:
        takes_generator = "generator" in inspect.signature(task).parameters
    except (TypeError, ValueError):
        takes_generator = False
    if takes_generator:
        out = task(video, ids, frame_offsets, generator=generator)
    else:
        out = task(video, ids, frame_offsets)
    fields = {}
    for name in ("losses", "frames", "slot_targets", "slot_mask"):
        value = out.get(name) if isinstance(out, dict) else getattr(out, name, None)
        if value is None:
            raise TypeError(f"task {type(task).__name__} output lacks {name!r}")
        fields[name] = value
    return fields["losses"], fields["frames"], fields["slot_targets"], fields["slot_mask"].bool()


def masked_sq_error(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ mask·(pred−target)² per sample / (batch-average Σ mask + 1e-6) → (B,) (spec §9.3)."""
    m = mask.to(pred.dtype)
    return ((pred - target) ** 2 * m).sum(1) / (m.sum() / m.shape[0] + EPS)


HEAD_ERRORS = ("absolute", "relative", "log")


def soft_log(x: torch.Tensor, floor: float) -> torch.Tensor:
    """log(x) for x ≥ floor, continued below it by its tangent at floor (finite for any x)."""
    return torch.where(x >= floor, x.clamp(min=floor).log(), math.log(floor) + (x - floor) / floor)


def head_error(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
               kind: str = "absolute", floor: float = 0.02) -> torch.Tensor:
    """The task-loss head's error per sample (B,) over (B,S) slots, normalised as
    ``masked_sq_error``. kind: "absolute" (pred − target)², the official one; "relative"
    ((pred − target) / max(target, floor))²; "log" (log pred − log max(target, floor))², with
    ``soft_log`` below floor. A requirement is met or missed by a ratio, and the loss spans two
    orders of magnitude over content, so "log" weighs every frame alike and, unlike "relative",
    does not pull uncertain predictions low."""
    if kind == "absolute":
        return masked_sq_error(pred, target, mask)
    if kind == "relative":
        scale = 1.0 / target.clamp(min=floor)
        return masked_sq_error(pred * scale, target * scale, mask)
    if kind == "log":
        return masked_sq_error(soft_log(pred, floor), target.clamp(min=floor).log(), mask)
    raise ValueError(f"head_error: kind must be one of {HEAD_ERRORS}, got {kind!r}")


# ---- NTP ---------------------------------------------------------------------------------------
def ntp_step(model: AutoGaze, batch: dict, labels: dict, scoring: str = "official",
             optimize_task_loss_prediction: bool = True, soft_weight: float = 0.0,
             soft_temperature: float = 0.2, hard_weight: float = 1.0, tlp_weight: float = 1.0,
             tlp_error: str = "absolute", tlp_floor: float = 0.02, regret_weight: float = 0.0):
    """NTP on oracle labels (spec §9.3).

    With ``soft_weight`` > 0 (scoring "sampling", labels with "gains" (L,N)), adds the
    cross-entropy of every slot's processed distribution with the oracle's soft target
    (``losses.soft_targets``): which candidates were nearly as good as the pick, not just which
    one won; with ``regret_weight`` > 0 also the expected regret of that distribution against
    the same gains (``losses.regret_loss``). ``hard_weight`` scales the NLL of the label ids (0 for labels that are the model's
    own rollout, where only the soft targets and the head targets teach); ``tlp_weight`` scales
    the task-loss head's error (losses are ~0.1: its raw gradient is small next to a
    cross-entropy's), whose form ``tlp_error``/``tlp_floor`` pick (``head_error``).

    batch["video"] (B,T,3,H,W); labels {ids (L,), frame_offsets (B·T+1,), losses (L,)}.
    scoring "official": the teacher-forced pass ``model.score`` (consecutive positions, raw
    softmax); "sampling": ``policy.score_rollout`` with the greedy processors (the positions and
    masks greedy generation uses). The task-loss head is fitted to the oracle's per-slot losses.
    """
    video = batch["video"]
    b, t = video.shape[:2]
    ids, offs = labels["ids"].to(video.device), labels["frame_offsets"].to(video.device)
    fields = from_ids(ids, offs, b, t, model.num_tokens, model.config.tokens_per_scale)
    pad = fields["if_padded_gazing"]
    if scoring == "official":
        scored = model.score(video, fields)
        logp, pred = scored["log_action_probs"], scored["task_loss_prediction"]
    elif scoring == "sampling":
        scored = score_rollout(model, video, ids, offs, temperature=1.0, top_k=None,
                               return_distribution=soft_weight > 0 or regret_weight > 0)
        logp = packed_to_padded(scored.log_probs, offs, b, t)
        pred = packed_to_padded(scored.task_loss_prediction, offs, b, t)
    else:
        raise ValueError(f"scoring must be 'official' or 'sampling', got {scoring!r}")
    target = packed_to_padded(labels["losses"].to(video.device).float(), offs, b, t)
    nll = ntp_loss(logp.float(), pad)
    if optimize_task_loss_prediction:
        tlp = head_error(pred.float(), target, ~pad, tlp_error, tlp_floor)
    else:
        tlp = 0.0 * pred.float().mean(1)  # keeps the head in the graph (DDP)
    soft, regret = torch.zeros_like(nll), torch.zeros_like(nll)
    if soft_weight > 0 or regret_weight > 0:
        if "gains" not in labels or scoring != "sampling":
            raise ValueError("soft labels need labels['gains'] and scoring 'sampling'")
        gains = labels["gains"].to(video.device)
        per_slot = soft_label_loss(scored.log_dist.float(),
                                   soft_targets(gains, soft_temperature, scored.log_dist.shape[1]))
        slots = (~pad).sum() / b + EPS
        soft = packed_to_padded(per_slot, offs, b, t).sum(1) / slots
        if regret_weight > 0:
            regret = packed_to_padded(regret_loss(scored.log_dist, gains), offs, b, t).sum(1) / slots
    loss = (hard_weight * nll + soft_weight * soft + regret_weight * regret + tlp_weight * tlp).mean()
    valid = (~pad).sum().clamp(min=1)
    metrics = {"loss": loss.item(), "ntp_loss": nll.mean().item(), "tlp_loss": tlp.mean().item(),
               "soft_loss": soft.mean().item(), "regret_loss": regret.mean().item(),
               "label_logp": (logp.float() * ~pad).sum().item() / valid.item(),
               "tokens_per_frame": ids.numel() / (b * t)}
    return loss, metrics


@torch.no_grad()
def greedy_rollout(model: AutoGaze, video: torch.Tensor, ratios,
                   requirements=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's own greedy gaze (in eval mode) of every clip of ``video`` (B,T,3,H,W), one
    clip at a time at its ratio (B floats) and requirement (B floats or None). Returns ids (L,)
    and frame_offsets (B·T+1,) of all clips together, as ``GazeOutput`` (padding-free)."""
    was_training = model.training
    model.eval()
    ids, counts = [], []
    requirements = requirements or [None] * len(ratios)
    for b, (ratio, requirement) in enumerate(zip(ratios, requirements)):
        out = model(video[b:b + 1], gazing_ratio=float(ratio), task_loss_requirement=requirement)
        ids.append(out["ids"])
        counts.append(out["frame_offsets"].diff())
    model.train(was_training)
    ids, counts = torch.cat(ids), torch.cat(counts)
    return ids, torch.nn.functional.pad(counts.cumsum(0), (1, 0))


def rollout_labels(model: AutoGaze, task: PaintReconstruction, batch: dict, ratios,
                   requirements=None) -> dict:
    """On-policy labels (DAgger with the greedy oracle as expert): the model's own greedy gaze of
    every clip at its ratio, with the real loss after every prefix (head targets) and the
    oracle's candidate gains at every state the gaze visits (soft targets).

    batch: video (B,T,3,H,W), video_for_task (B,T,3,S,S); ratios: B floats (budget caps);
    requirements: B floats or None (a frame stops once the head predicts it reached it, as at
    inference with a threshold)."""
    from ..tasks import candidate_gains
    video = batch["video_for_task"]
    ids, offsets = greedy_rollout(model, batch["video"], ratios, requirements)
    ids, offsets = ids.to(video.device), offsets.to(video.device)
    return {"ids": ids, "frame_offsets": offsets,
            "losses": task.prefix_losses(video, ids, offsets).float(),
            "gains": candidate_gains(task, video, ids, offsets)}


# ---- budgets, requirement, temperature (spec §9.5-9.6) --------------------------------------
def scheduled_temperature(cfg: AlgorithmSection, step: int, total_steps: int) -> float:
    """τ = τ_start·(τ_end/τ_start)^(step/total)."""
    frac = step / max(total_steps, 1)
    return cfg.temperature_start * (cfg.temperature_end / cfg.temperature_start) ** frac


def sample_ratio(cfg: AlgorithmSection, rng: random.Random) -> float:
    """Whole-clip gazing ratio: fixed, uniform [min,max] or exponential(λ) within [min,max]."""
    if cfg.ratio_strategy == "fixed":
        return cfg.ratio
    if cfg.ratio_strategy == "uniform":
        return rng.uniform(cfg.ratio_min, cfg.ratio_max)
    for _ in range(10_000):
        value = rng.expovariate(cfg.ratio_lambda)
        if cfg.ratio_min <= value <= cfg.ratio_max:
            return value
    raise ValueError("algorithm.ratio_lambda: no exponential sample fell in [ratio_min, ratio_max]")


def sample_requirement(cfg: AlgorithmSection, rng: random.Random, force: bool = False):
    """Requirement scalar or None (``force``: uniform [min,max] when the strategy is none, as the
    official ``self`` strategy's forced sampling)."""
    if cfg.requirement_strategy == "fixed":
        return cfg.requirement
    if cfg.requirement_strategy == "uniform" or force:
        return rng.uniform(cfg.requirement_min, cfg.requirement_max)
    return None


def frame_ratios(model: AutoGaze, cfg: AlgorithmSection, ratio: float, video: torch.Tensor,
                 rng: random.Random, temperature: float, generator) -> list[float]:
    """Per-frame ratios (T,) of mean ``ratio``: uniform, Dirichlet(α)·ratio·T clamped to
    [1/N, 1], or ``self``: the model's own gaze of the batch's first clip under a sampled
    requirement, ratio_t = k_t/N (k_t real ids of frame t; the official code requires a
    one-clip batch, here the first clip stands for the batch)."""
    frames, n = video.shape[1], model.num_tokens
    if cfg.frame_strategy == "uniform":
        return [ratio] * frames
    if cfg.frame_strategy == "dirichlet":
        alpha = [float(a) for a in cfg.dirichlet_alpha]
        alpha = alpha * frames if len(alpha) == 1 else alpha
        if len(alpha) != frames:
            raise ValueError(f"algorithm.dirichlet_alpha needs 1 or {frames} values")
        gen = torch.Generator().manual_seed(rng.getrandbits(62))
        sample = torch._standard_gamma(torch.tensor(alpha), generator=gen)
        sample = sample / sample.sum()
        return (sample * ratio * frames).clamp(1.0 / n, 1.0).tolist()
    requirement = sample_requirement(cfg, rng, force=True)
    out = model(video[:1], gazing_ratio=ratio, task_loss_requirement=requirement,
                do_sample=model.training, temperature=temperature, generator=generator)
    counts = out["frame_offsets"].diff().tolist()
    return [max(c, 1) / n for c in counts]


# ---- GRPO --------------------------------------------------------------------------------------
def prefix_mean(slot_targets: torch.Tensor, slot_mask: torch.Tensor, frame_offsets: torch.Tensor,
                shape: tuple[int, int]) -> torch.Tensor:
    """(B,T) mean over each frame's slots of the loss after slots 0..j (``slot_targets`` (L,),
    where ``slot_mask``): the area under the frame's loss-vs-tokens curve per token, which a
    gaze lowers by ranking the best first at every budget, not only at the one it ran with.
    A frame without slots gets NaN."""
    b, t = shape
    counts = frame_offsets.diff()
    frame = torch.repeat_interleave(torch.arange(b * t, device=counts.device), counts)
    m = slot_mask.to(slot_targets.dtype)
    total = torch.zeros(b * t, dtype=slot_targets.dtype, device=slot_targets.device)
    total.index_add_(0, frame, slot_targets * m)
    n = torch.zeros_like(total).index_add_(0, frame, m)
    return (total / n).view(b, t)


@torch.no_grad()
def grpo_rollout(model: AutoGaze, task, batch: dict, cfg: AlgorithmSection, temperature: float,
                 rng: random.Random, generator: torch.Generator | None) -> dict:
    """Sample G rollouts per clip (group-major) and compute their advantages (spec §9.4 1-4)."""
    g = cfg.group_size
    video = batch["video"]
    ratio = sample_ratio(cfg, rng)
    ratios = frame_ratios(model, cfg, ratio, video, rng, temperature, generator)
    requirement = sample_requirement(cfg, rng)
    video_g = video.repeat(g, 1, 1, 1, 1)
    task_g = batch["video_for_task"].repeat(g, 1, 1, 1, 1)
    out = model(video_g, gazing_ratio=ratios, task_loss_requirement=requirement, do_sample=True,
                temperature=temperature, generator=generator)
    losses, frames, slot_targets, slot_mask = task_outputs(task, task_g, out["ids"],
                                                           out["frame_offsets"], generator)
    pad = out["if_padded_gazing"]
    ends = out["num_gazing_each_frame"].cumsum(0)[frames.to(pad.device)]
    if cfg.grpo_reward == "anytime":
        losses_for_reward = prefix_mean(slot_targets, slot_mask, out["frame_offsets"],
                                        video_g.shape[:2])[:, frames]
    else:
        losses_for_reward = losses
    advantages = grpo_advantages(-losses_for_reward.float(), g, pad, ends, cfg.gamma)
    return {"video": video_g, "ids": out["ids"], "frame_offsets": out["frame_offsets"],
            "fields": {k: out[k] for k in ("gazing_pos", "if_padded_gazing",
                                           "num_gazing_each_frame")},
            "advantages": advantages, "losses": losses, "slot_targets": slot_targets.float(),
            "slot_mask": slot_mask, "temperature": temperature, "ratio": ratio,
            "has_pads": bool(pad.any())}


def place_real(values: torch.Tensor, pad: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """Packed per-slot values (L,) → the rollout's padded layout (B,S): the real slots, row-major,
    receive them in order (differentiable); pad slots get ``fill``."""
    out = torch.full(pad.shape, fill, dtype=values.dtype, device=values.device)
    return out.masked_scatter(~pad, values)


def grpo_loss_from_rollout(model: AutoGaze, rollout: dict, cfg: AlgorithmSection):
    """Score a rollout with gradients and build the GRPO + task-loss-head loss (§9.4 5-7)."""
    video, ids, offs = rollout["video"], rollout["ids"], rollout["frame_offsets"]
    b, t = video.shape[:2]
    pad = rollout["fields"]["if_padded_gazing"]
    if cfg.scoring == "sampling":
        scored = score_rollout(model, video, ids, offs, temperature=rollout["temperature"])
        logp = place_real(scored.log_probs, pad)
        pred = place_real(scored.task_loss_prediction, pad)
    else:
        scored = model.score(video, rollout["fields"])
        logp, pred = scored["log_action_probs"], scored["task_loss_prediction"]
    target = place_real(rollout["slot_targets"].to(pred.dtype), pad)
    mask = place_real(rollout["slot_mask"], pad, fill=False)
    policy = grpo_loss(logp.float(), rollout["advantages"], pad)
    if cfg.optimize_task_loss_prediction:
        tlp = head_error(pred.float(), target, mask & ~pad, cfg.head_error, cfg.head_error_floor)
    else:
        tlp = 0.0 * pred.float().mean(1)
    loss = (policy + tlp).mean()
    metrics = {"loss": loss.item(), "grpo_loss": policy.mean().item(),
               "tlp_loss": tlp.mean().item(),
               "task_loss": rollout["losses"].float().mean().item(),
               "temperature": rollout["temperature"], "ratio": rollout["ratio"],
               "logp": logp.detach().float()[~pad].mean().item(),
               "tokens_per_frame": ids.numel() / (b * t)}
    return loss, metrics


def grpo_step(model: AutoGaze, task, batch: dict, cfg: AlgorithmSection, step: int,
              generator: torch.Generator | None, total_steps: int = 1,
              rng: random.Random | None = None):
    """GRPO (spec §9.4): group-major rollouts at τ(step), rewards −task loss, group-mean
    advantages, generation-consistent (or official) scoring, policy + task-loss-head loss."""
    rng = rng or random.Random(step)
    temperature = scheduled_temperature(cfg, step, total_steps)
    rollout = grpo_rollout(model, task, batch, cfg, temperature, rng, generator)
    return grpo_loss_from_rollout(model, rollout, cfg)


def check_finite(loss: torch.Tensor) -> None:
    if not math.isfinite(loss.item()):
        raise FloatingPointError(f"training loss is not finite: {loss.item()}")
