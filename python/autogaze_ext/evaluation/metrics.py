"""Metrics of ``autogaze-eval``: loss at fixed budgets, patches needed for a loss target, and
how well the model's task-loss head tracks the real loss.

Definitions:

* every method is run with the *same per-frame budget m for all frames* of a clip, for every m
  of a budget grid (the evaluation ratios plus a denser grid, ``budget = max(1, trunc(r·N))``);
  ``task.frame_losses`` gives the loss of each frame (B, T) (reconstruction is sequential, so
  frame t's loss depends on the budget of the frames before it too);
* **loss at ratio r**: mean over all frames of the frame loss at budget(r);
* **patches needed** for a target: per frame, the number of ids the method used at the smallest
  grid budget whose frame loss is ≤ target (= that budget, except for the oracle, which may stop
  early); a frame that no grid budget brings under the target is *not reached*. Summaries: the
  mean over reached frames, the count of not-reached frames, and ``mean_capped`` where a
  not-reached frame counts N (the value used for method-vs-method ratios);
* **head calibration**: the task-loss head's prediction at each frame's last gazed slot
  (where generation reads it) against that frame's real loss: Pearson and Spearman correlation (ranks
  without tie averaging) and equal-count bins by prediction.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import torch

from ..budget import frame_budgets

__all__ = ["DEFAULT_RATIOS", "GRID_RATIOS", "ratio_budget", "budget_grid", "loss_tables",
           "loss_at_ratios", "patches_needed", "head_predictions", "correlation", "calibration", "fmt",
           "evaluate"]

DEFAULT_RATIOS = (0.05, 0.1, 0.2, 0.3, 0.5)
HEURISTICS = ("uniform", "frame_difference", "run_length")  # the selection rules without a model
GRID_RATIOS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 1.0)


def ratio_budget(ratio: float, num_tokens: int) -> int:
    """Patches per frame for a gazing ratio: ``max(1, trunc(float32(ratio)·N))`` (as the model)."""
    return frame_budgets(float(ratio), 1, num_tokens)[0]


def budget_grid(ratios: Sequence[float], num_tokens: int, extra: Sequence[float] = GRID_RATIOS) -> list[int]:
    """Sorted distinct budgets of ``ratios`` and ``extra``."""
    return sorted({ratio_budget(r, num_tokens) for r in (*ratios, *extra)})


@torch.no_grad()
def loss_tables(task, methods: Mapping, video: torch.Tensor, budgets: Sequence[int],
                generator: torch.Generator | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per method: frame losses and ids used, each (G, B, T) over the budgets (G,).

    ``task`` is anything with ``frame_losses(video, ids, frame_offsets) -> (B, T)``."""
    B, T = video.shape[:2]
    out = {}
    for name, method in methods.items():
        losses, counts = [], []
        for m in budgets:
            ids, offsets = method(video, int(m), generator)
            losses.append(task.frame_losses(video, ids, offsets).float().cpu())
            counts.append(offsets.diff().view(B, T).cpu())
        out[name] = (torch.stack(losses), torch.stack(counts))
    return out


def loss_at_ratios(losses: torch.Tensor, budgets: Sequence[int], ratios: Sequence[float],
                   num_tokens: int) -> dict[str, float]:
    """losses (G, ...) on the grid ``budgets`` -> {str(ratio): mean loss at budget(ratio)}."""
    index = {int(m): g for g, m in enumerate(budgets)}
    out = {}
    for r in ratios:
        m = ratio_budget(r, num_tokens)
        if m not in index:
            raise ValueError(f"loss_at_ratios: budget {m} of ratio {r} is not on the grid {list(budgets)}")
        out[str(r)] = float(losses[index[m]].mean())
    return out


def patches_needed(losses: torch.Tensor, counts: torch.Tensor, target: float, num_tokens: int) -> dict:
    """Per frame, ids used at the smallest grid budget with loss ≤ target (see module doc).

    losses, counts: (G, ...) over an ascending budget grid. Returns ``per_frame`` (F,) float
    (NaN = not reached) and the summaries ``mean``, ``median``, ``mean_capped``, ``not_reached``,
    ``frames``."""
    losses, counts = losses.flatten(1), counts.flatten(1).float()
    ok = losses <= target                                            # (G, F)
    first = ok.float().argmax(0)                                     # first True (0 if none)
    reached = ok.any(0)
    needed = counts.gather(0, first[None]).squeeze(0)
    needed = torch.where(reached, needed, torch.full_like(needed, float("nan")))
    hit = needed[reached]
    return {
        "per_frame": needed,
        "mean": float(hit.mean()) if hit.numel() else float("nan"),
        "median": float(hit.median()) if hit.numel() else float("nan"),
        "mean_capped": float(torch.where(reached, needed, torch.full_like(needed, num_tokens)).mean()),
        "not_reached": int((~reached).sum()),
        "frames": int(needed.numel()),
    }


@torch.no_grad()
def slot_predictions(model, video: torch.Tensor, ids: torch.Tensor, frame_offsets: torch.Tensor) -> torch.Tensor:
    """(L,) the task-loss head's prediction after every gazed slot (the loss once slots 0..j of
    the frame are in), read where greedy generation reads it (``training.policy.score_rollout``:
    the decode positions and masks of generation, which a requirement is compared against;
    ``model.score``'s teacher-forced positions give other values)."""
    from ..training.policy import score_rollout
    with torch.no_grad():
        scored = score_rollout(model, video.to(model.device, model.dtype), ids.to(model.device),
                               frame_offsets.to(model.device), temperature=1.0, top_k=None)
    return scored.task_loss_prediction.float().cpu()


def last_slots(frame_offsets: torch.Tensor) -> torch.Tensor:
    """(B·T,) index of every frame's last slot in the packed layout (0 for an empty first frame)."""
    return (frame_offsets[1:] - 1).clamp(min=0).cpu()


def head_predictions(model, video: torch.Tensor, ids: torch.Tensor, frame_offsets: torch.Tensor) -> torch.Tensor:
    """(B, T) the task-loss head's prediction once every gazed slot of a frame is in (see
    :func:`slot_predictions`)."""
    B, T = video.shape[:2]
    return slot_predictions(model, video, ids, frame_offsets)[last_slots(frame_offsets)].view(B, T)


def correlation(x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Pearson and Spearman (ranks, ties not averaged) correlation of two 1-D samples."""
    x, y = x.double().flatten(), y.double().flatten()
    if x.numel() != y.numel():
        raise ValueError(f"correlation: sizes differ ({x.numel()} vs {y.numel()})")

    def pearson(a, b):
        a, b = a - a.mean(), b - b.mean()
        denom = float(a.norm() * b.norm())
        return float((a * b).sum()) / denom if denom > 0 else float("nan")

    rank = lambda v: v.argsort().argsort().double()
    if x.numel() < 2:
        return {"pearson": float("nan"), "spearman": float("nan")}
    return {"pearson": pearson(x, y), "spearman": pearson(rank(x), rank(y))}


def calibration(pred: torch.Tensor, real: torch.Tensor, bins: int = 10) -> list[dict]:
    """Equal-count bins of the predictions: mean prediction, mean real loss, count per bin."""
    pred, real = pred.double().flatten(), real.double().flatten()
    order = pred.argsort()
    out = []
    for chunk in order.tensor_split(min(bins, max(1, pred.numel()))):
        if chunk.numel():
            out.append({"pred": float(pred[chunk].mean()), "real": float(real[chunk].mean()),
                        "count": int(chunk.numel())})
    return out


def _num(x: float):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def evaluate(task, methods: Mapping, clips: Iterable[torch.Tensor], num_tokens: int,
             ratios: Sequence[float] = DEFAULT_RATIOS, target: float | None = None,
             model=None, grid: Sequence[float] = GRID_RATIOS, seed: int = 0) -> tuple[dict, dict]:
    """Run every method on every batch of clips (B,T,3,S,S) and summarise.

    Returns (results, extras): ``results`` is the JSON-able summary (schema in the CLI docs);
    ``extras`` holds tensors for plots: ``curves`` {method: (budgets, mean losses)} and
    ``calibration_points`` (pred (F,), real (F,)) or None. Without ``target`` the mean loss of
    ``random`` (else the first method) at the largest ratio is used."""
    ratios = sorted(float(r) for r in ratios)
    if not ratios or any(not 0 < r <= 1 for r in ratios):
        raise ValueError(f"ratios must be floats in (0, 1], got {ratios}")
    if not methods:
        raise ValueError("evaluate: no methods given")
    budgets = budget_grid(ratios, num_tokens, grid)
    generator = torch.Generator().manual_seed(seed)
    tables: dict[str, list] = {name: [] for name in methods}
    preds, reals, slot_preds, slot_reals = [], [], [], []
    n_clips = frames = 0
    calibrate = model is not None and "model" in methods
    ratio_budgets = {ratio_budget(r, num_tokens) for r in ratios}
    for video in clips:
        n_clips += video.shape[0]
        frames = video.shape[1]
        kept = {}                                    # the model's gaze at the ratio budgets

        def keep(v, m, g=None, _model=methods.get("model")):
            out = _model(v, m, g)
            if m in ratio_budgets:
                kept[m] = out
            return out

        run = {**methods, "model": keep} if calibrate else methods
        for name, value in loss_tables(task, run, video, budgets, generator).items():
            tables[name].append(value)
        for ids, offsets in kept.values():
            every = slot_predictions(model, video, ids, offsets)
            preds.append(every[last_slots(offsets)])
            reals.append(task.frame_losses(video, ids, offsets).float().cpu().flatten())
            if hasattr(task, "prefix_losses"):          # the loss after every slot (Paint)
                slot_preds.append(every)
                slot_reals.append(task.prefix_losses(video, ids, offsets).float().cpu())
    if not n_clips:
        raise ValueError("evaluate: no clips")
    # (G, clips·T) per method
    merged = {name: (torch.cat([l.flatten(1) for l, _ in v], 1), torch.cat([c.flatten(1) for _, c in v], 1))
              for name, v in tables.items()}
    if target is None:
        ref = "random" if "random" in merged else next(iter(merged))
        target = float(merged[ref][0][budgets.index(ratio_budget(ratios[-1], num_tokens))].mean())
        target_source = f"mean loss of {ref} at ratio {ratios[-1]}"
    else:
        target_source = "given"

    per_method, extras = {}, {"curves": {}, "calibration_points": None}
    per_clip = [{} for _ in range(n_clips)]
    for name, (losses, counts) in merged.items():
        need = patches_needed(losses, counts, target, num_tokens)
        capped = torch.nan_to_num(need["per_frame"], nan=float(num_tokens)).view(n_clips, -1)
        for row, value in zip(per_clip, capped.mean(1).tolist()):
            row[name] = value
        per_method[name] = {
            "loss_at_ratio": loss_at_ratios(losses, budgets, ratios, num_tokens),
            "loss_curve": [float(v) for v in losses.mean(1)],
            "patches_needed": {k: _num(v) for k, v in need.items() if k != "per_frame"},
        }
        extras["curves"][name] = (list(budgets), losses.mean(1))
    results = {
        "num_tokens": num_tokens, "clips": n_clips, "frames": frames,
        "ratios": ratios, "budgets": budgets, "target": target, "target_source": target_source,
        "methods": per_method, "comparisons": _comparisons(per_method), "calibration": None,
        "per_clip": [{"patches_needed": row} for row in per_clip],
    }
    if preds:
        pred, real = torch.cat(preds), torch.cat(reals)
        results["calibration"] = {**{k: _num(v) for k, v in correlation(pred, real).items()},
                                  "bias": float((pred - real).mean()),
                                  "slots": ({f"slot_{k}": _num(v) for k, v in correlation(
                                      torch.cat(slot_preds), torch.cat(slot_reals)).items()}
                                      | {"points": int(sum(p.numel() for p in slot_preds))}
                                      if slot_preds else None),
                                  "points": int(pred.numel()), "bins": calibration(pred, real)}
        extras["calibration_points"] = (pred, real)
    return results, extras


def _comparisons(per_method: dict) -> dict:
    """Patches-needed ratios ``other / model`` (mean_capped) and the issue's target checks."""
    if "model" not in per_method:
        return {}
    mine = per_method["model"]["patches_needed"]["mean_capped"]
    out = {}
    for other in ("random", "uniform", "frame_difference", "run_length", "oracle"):
        if other in per_method and mine:
            out[f"{other}_over_model"] = per_method[other]["patches_needed"]["mean_capped"] / mine
    heuristics = [out[f"{h}_over_model"] for h in HEURISTICS if f"{h}_over_model" in out]
    if heuristics:
        out["best_heuristic_over_model"] = min(heuristics)
    return out


def fmt(v, digits: int = 4) -> str:
    """A number for the reports: ``digits`` significant digits; None, nan and inf → "n/a"."""
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}g}"
