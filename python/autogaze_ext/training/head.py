"""Task-loss-head calibration on the model's own greedy rollouts (issue 11, "a head that can stop").

NTP teaches the task-loss head the loss after the *oracle's* ids, which is lower than after the
model's own: a model trained that way predicts too low a loss and stops too early on a threshold.
Here the model gazes each clip greedily (as at inference) at a sampled ratio and, for a sampled
share of the clips, under a sampled loss requirement (so the histories include frames that
stopped early, as with a requirement at inference); the task gives the exact loss after every
prefix of every frame (PaintReconstruction: the loss after slots 0..j), and the head is fitted to
it where generation reads it (``policy.score_rollout``). ``algorithm.train_params = "head"``
trains the head alone, which leaves every gaze decision unchanged.
"""

from __future__ import annotations

import random

import torch

from ..model import AutoGaze
from .algorithms import masked_sq_error, sample_ratio, sample_requirement, task_outputs
from .config import AlgorithmSection
from .policy import packed_to_padded, score_rollout


@torch.no_grad()
def head_rollout(model: AutoGaze, task, batch: dict, cfg: AlgorithmSection,
                 rng: random.Random) -> dict:
    """Greedy gaze of the batch at a sampled ratio (and requirement) plus per-slot targets."""
    video = batch["video"]
    ratio = sample_ratio(cfg, rng)
    requirement = sample_requirement(cfg, rng) if rng.random() < cfg.requirement_fraction else None
    was_training = model.training
    model.eval()
    out = model(video, gazing_ratio=ratio, task_loss_requirement=requirement)
    model.train(was_training)
    losses, _, targets, mask = task_outputs(task, batch["video_for_task"], out["ids"],
                                            out["frame_offsets"])
    return {"video": video, "ids": out["ids"], "frame_offsets": out["frame_offsets"],
            "slot_targets": targets.float(), "slot_mask": mask, "losses": losses,
            "ratio": ratio, "requirement": requirement}


def head_loss(model: AutoGaze, rollout: dict, weight: float = 1.0):
    """Squared error of the head's predictions against the rollout's real prefix losses."""
    video, ids, offs = rollout["video"], rollout["ids"], rollout["frame_offsets"]
    b, t = video.shape[:2]
    scored = score_rollout(model, video, ids, offs, temperature=1.0, top_k=None)
    pred = packed_to_padded(scored.task_loss_prediction.float(), offs, b, t)
    target = packed_to_padded(rollout["slot_targets"], offs, b, t)
    mask = packed_to_padded(rollout["slot_mask"].float(), offs, b, t) > 0
    tlp = masked_sq_error(pred, target, mask)
    # keep every parameter in the graph (DDP), contributing nothing
    loss = weight * tlp.mean() + 0.0 * scored.log_probs.float().mean()
    real = pred.detach()[mask]
    metrics = {"loss": loss.item(), "tlp_loss": tlp.mean().item(),
               "task_loss": rollout["losses"].float().mean().item(), "ratio": rollout["ratio"],
               "pred_bias": (real - target[mask]).mean().item() if real.numel() else 0.0,
               "tokens_per_frame": ids.numel() / (b * t)}
    return loss, metrics
