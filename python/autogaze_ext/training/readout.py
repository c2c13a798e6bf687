"""Refit of the gaze readout (``lm_head``) on the decoder's fixed features, DAgger style.

The gaze logits are linear in the decoder's final hidden state (``lm_head``: D → K·V). With the
decoder fixed, fitting that readout to the oracle's soft targets at the states the model's own
greedy gaze visits is a convex problem (multinomial regression with soft labels and the
generation masks), solved here full-batch with L-BFGS over every collected slot at once, where
NTP training moves it a noisy step per clip. Changing the readout changes the rollouts (and so
the states), so it is a DAgger round: collect, fit, and collect again with the new readout.
"""

from __future__ import annotations

import torch

from ..model import AutoGaze
from .algorithms import rollout_labels
from .losses import soft_targets
from .policy import score_rollout


@torch.no_grad()
def readout_data(model: AutoGaze, task, batch: dict, ratios) -> dict:
    """One batch's readout data: the model gazes greedily at ``ratios`` (B floats), the oracle
    scores every candidate at every visited state. Returns inputs (n,D) float32, heads (n,) the
    K-block row of each slot's draw, and gains (n,V) float32: each candidate's oracle gain over
    the slot's best gain, −inf where generation masks it (earlier ids of the frame, EOS)."""
    labels = rollout_labels(model, task, batch, ratios)
    scored = score_rollout(model, batch["video"], labels["ids"], labels["frame_offsets"],
                           temperature=1.0, top_k=None, return_distribution=True,
                           return_inputs=True)
    vocab = scored.log_dist.shape[1]
    gains = labels["gains"].float()
    best = gains.amax(1, keepdim=True).clamp(min=1e-6)
    rel = torch.nn.functional.pad(gains / best, (0, vocab - gains.shape[1]), value=float("-inf"))
    rel = rel.masked_fill(~torch.isfinite(scored.log_dist), float("-inf"))
    return {"inputs": scored.gaze_inputs.float().cpu(), "heads": scored.gaze_index.cpu(),
            "gains": rel.cpu()}


def _blocks(weight: torch.Tensor, k: int) -> torch.Tensor:
    return weight.view(k, weight.shape[0] // k, weight.shape[1])  # (K,V,D)


def slot_logits(inputs: torch.Tensor, heads: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """Logits (n,V) of every slot: inputs (n,D) through row block ``heads[j]`` of the readout
    ``blocks`` (K,V,D)."""
    heads = heads.long()
    logits = inputs.new_empty(inputs.shape[0], blocks.shape[1])
    for r in range(blocks.shape[0]):
        rows = heads == r
        if rows.any():
            logits[rows] = inputs[rows] @ blocks[r].T
    return logits


def _logits(data: dict, blocks: torch.Tensor) -> torch.Tensor:
    """Masked logits (n,V) of every slot under the readout ``blocks`` (K,V,D)."""
    logits = slot_logits(data["inputs"], data["heads"], blocks)
    return logits.masked_fill(~torch.isfinite(data["gains"]), float("-inf"))


def _targets(gains: torch.Tensor, temperature: float) -> torch.Tensor:
    """NTP's soft targets (``losses.soft_targets``) of the relative gains (n,V); 0 where masked."""
    return soft_targets(gains, temperature, gains.shape[1]).nan_to_num(0.0)


def pick_quality(data: dict, weight: torch.Tensor, k: int) -> float:
    """Mean oracle gain of the greedy pick over the slot's best gain (1 = the oracle's pick)."""
    with torch.no_grad():
        picks = _logits(data, _blocks(weight.float(), k)).argmax(1)
        return float(data["gains"].gather(1, picks[:, None]).clamp(min=-1.0).mean())


def soft_cross_entropy(data: dict, weight: torch.Tensor, k: int, temperature: float) -> float:
    with torch.no_grad():
        logp = _logits(data, _blocks(weight.float(), k)).log_softmax(1)
        target = _targets(data["gains"], temperature)
        return float(-(target * logp.clamp(min=-1e4)).sum(1).mean())


def fit_readout(data: dict, weight: torch.Tensor, k: int, temperature: float = 0.05,
                ridge: float = 1e-4, iterations: int = 100) -> torch.Tensor:
    """Fit ``lm_head.weight`` (K·V, D) to the soft oracle targets of ``data`` (``readout_data``,
    concatenated): minimise the mean soft cross-entropy of the masked softmax plus
    ``ridge·‖W − W₀‖²`` with L-BFGS (``iterations`` steps), from and towards the current ``weight``.
    Returns the new weight, float32, on ``weight``'s device."""
    if temperature <= 0 or ridge < 0 or iterations < 1:
        raise ValueError(f"fit_readout: temperature must be > 0, ridge ≥ 0 and iterations ≥ 1, "
                         f"got {temperature}, {ridge}, {iterations}")
    x, heads, gains = data["inputs"], data["heads"], data["gains"]
    if x.dim() != 2 or x.shape[1] != weight.shape[1] or weight.shape[0] % k:
        raise ValueError(f"fit_readout: inputs (n,{weight.shape[1]}) and a weight of K·V rows "
                         f"expected, got {tuple(x.shape)} and {tuple(weight.shape)}")
    if tuple(heads.shape) != (x.shape[0],) or tuple(gains.shape) != (x.shape[0], weight.shape[0] // k):
        raise ValueError(f"fit_readout: heads (n,) and gains (n,V) expected, got "
                         f"{tuple(heads.shape)}, {tuple(gains.shape)}")
    if not torch.isfinite(x).all() or torch.isnan(gains).any() or not torch.isfinite(gains).any(1).all():
        raise ValueError("fit_readout: inputs must be finite and every slot needs an allowed candidate")
    start = weight.detach().float().cpu()
    blocks0 = _blocks(start, k)
    target = _targets(gains, temperature)
    param = blocks0.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([param], lr=1.0, max_iter=iterations, history_size=20,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        logp = _logits(data, param).log_softmax(1).clamp(min=-1e4)
        loss = -(target * logp).sum(1).mean() + ridge * (param - blocks0).pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return param.detach().reshape(weight.shape).to(weight.device, torch.float32)
