"""Task-loss-head calibration on the model's own greedy rollouts (issue 11, "a head that can stop").

NTP teaches the task-loss head the loss after the *oracle's* ids, which is lower than after the
model's own: a model trained that way predicts too low a loss and stops too early on a threshold.
Here the model gazes each clip greedily (as at inference) at a sampled ratio and, for a sampled
share of the clips, under a sampled loss requirement (so the histories include frames that
stopped early, as with a requirement at inference); the task gives the exact loss after every
prefix of every frame (PaintReconstruction: the loss after slots 0..j), and the head is fitted to
it where generation reads it (``policy.score_rollout``). ``algorithm.train_params = "head"``
trains the head alone, which leaves every gaze decision unchanged; ``"decoder_tail"`` trains the
last decoder layer and final norm with it, under a KL anchor to the initial model's gaze
distribution (``algorithm.anchor_kl``), so the features the head reads can change while the
gaze stays (nearly) where it was.
"""

from __future__ import annotations

import random

import torch

from ..model import AutoGaze, exact_float32
from .algorithms import head_error, sample_ratio, sample_requirement, task_outputs
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


def head_loss(model: AutoGaze, rollout: dict, weight: float = 1.0, error: str = "absolute",
              floor: float = 0.02, anchor: float = 0.0, reference: AutoGaze | None = None):
    """Error of the head's predictions against the rollout's real prefix losses.

    error, floor: the form of the error (``algorithms.head_error``). anchor > 0 with a frozen ``reference`` model adds
    ``anchor · KL(reference's gaze distribution ‖ model's)`` averaged over slots: the term that
    keeps the gaze unchanged while layers the gaze logits share with the head train.
    """
    video, ids, offs = rollout["video"], rollout["ids"], rollout["frame_offsets"]
    b, t = video.shape[:2]
    anchored = anchor > 0 and reference is not None
    vision = None
    encoder = (model.gazing_model.vision_model, model.gazing_model.connector)
    if not any(p.requires_grad for m in encoder for p in m.parameters()):
        # frozen encoder: one pass serves the model and the reference
        with torch.no_grad(), exact_float32(model.dtype == torch.float32):
            vision = model.embed(model._check_video(video))[0]
    scored = score_rollout(model, video, ids, offs, temperature=1.0, top_k=None,
                           return_distribution=anchored, vision=vision)
    pred = packed_to_padded(scored.task_loss_prediction.float(), offs, b, t)
    target = packed_to_padded(rollout["slot_targets"], offs, b, t)
    mask = packed_to_padded(rollout["slot_mask"].float(), offs, b, t) > 0
    tlp = head_error(pred, target, mask, error, floor)
    # keep every parameter in the graph (DDP), contributing nothing
    loss = weight * tlp.mean() + 0.0 * scored.log_probs.float().mean()
    real = pred.detach()[mask]
    metrics = {"tlp_loss": tlp.mean().item(),
               "task_loss": rollout["losses"].float().mean().item(), "ratio": rollout["ratio"],
               "pred_bias": (real - target[mask]).mean().item() if real.numel() else 0.0,
               "tokens_per_frame": ids.numel() / (b * t)}
    if anchored:
        with torch.no_grad():
            ref = score_rollout(reference, video, ids, offs, temperature=1.0, top_k=None,
                                return_distribution=True, vision=vision).log_dist.float()
        new = scored.log_dist.float()
        support = ref > float("-inf")  # banned ids are −inf in both
        p = ref.exp()
        kl = (p[support] * (ref[support] - new[support])).sum() / max(1, ids.numel())
        loss = loss + anchor * kl
        metrics["anchor_kl"] = kl.item()
        metrics["greedy_agreement"] = (new.detach().argmax(-1) == ref.argmax(-1)).float().mean().item()
    metrics["loss"] = loss.item()
    return loss, metrics


# ---- closed-form fit: the head is linear in the decoder's final hidden state -------------------
@torch.no_grad()
def head_data(model: AutoGaze, rollout: dict) -> dict:
    """The head's regression data of one rollout (``head_rollout``): inputs (n,D) float64, head
    index (n,) in [0,K), targets (n,) the real loss after each slot's prefix; masked slots dropped."""
    scored = score_rollout(model, rollout["video"], rollout["ids"], rollout["frame_offsets"],
                           temperature=1.0, top_k=None, return_inputs=True)
    keep = rollout["slot_mask"]
    return {"inputs": scored.head_inputs[keep].double().cpu(),
            "heads": scored.head_index[keep].cpu(),
            "targets": rollout["slot_targets"][keep].double().cpu()}


def fit_head(data: dict, weight: torch.Tensor, floor: float = 0.02,
             ridge: float = 1e-3) -> torch.Tensor:
    """Weighted ridge regression of the task-loss head (K,D), one output row at a time.

    Row k minimises ``Σ_i ((x_i·w − y_i) / max(y_i, floor))² + ridge·n_k·‖w − w_k‖²`` over the
    n_k samples of head k: the error is *relative* to the real loss (a requirement is met or missed
    by a ratio, and a plain squared error lets the few large losses decide), and the fit is pulled
    towards the current row ``w_k`` of ``weight`` (rows without samples stay as they are).
    ``data``: ``head_data`` outputs, concatenated. Returns the new weight, float32, on ``weight``'s
    device."""
    if floor <= 0 or ridge < 0:
        raise ValueError(f"fit_head: floor must be > 0 and ridge ≥ 0, got {floor}, {ridge}")
    x, heads, y = data["inputs"].double(), data["heads"].long(), data["targets"].double()
    n = x.shape[0] if x.dim() == 2 else -1
    if n < 0 or x.shape[1] != weight.shape[1] or tuple(heads.shape) != (n,) or tuple(y.shape) != (n,):
        raise ValueError(f"fit_head: inputs (n,{weight.shape[1]}), heads (n,), targets (n,) expected, "
                         f"got {tuple(x.shape)}, {tuple(heads.shape)}, {tuple(y.shape)}")
    if not torch.isfinite(x).all() or not torch.isfinite(y).all():
        raise ValueError("fit_head: inputs and targets must be finite")
    old = weight.detach().double().cpu()
    new = old.clone()
    eye = torch.eye(x.shape[1], dtype=torch.float64)
    for k in range(weight.shape[0]):
        rows = heads == k
        n = int(rows.sum())
        if n == 0:
            continue
        scale = 1.0 / y[rows].clamp(min=floor)
        xs, ys = x[rows] * scale[:, None], y[rows] * scale
        lhs = xs.T @ xs + ridge * n * eye
        rhs = xs.T @ ys + ridge * n * old[k]
        new[k] = torch.linalg.solve(lhs, rhs)
    return new.to(weight.device, torch.float32)


def relative_error(data: dict, weight: torch.Tensor, floor: float = 0.02) -> float:
    """Root-mean-square of ``(prediction − real) / max(real, floor)`` of a head weight (K,D)."""
    w = weight.detach().double().cpu()
    pred = (data["inputs"].double() * w[data["heads"].long()]).sum(1)
    y = data["targets"].double()
    return float((((pred - y) / y.clamp(min=floor)) ** 2).mean().sqrt())
