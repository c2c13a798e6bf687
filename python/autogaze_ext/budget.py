"""Per-frame token budgets and task-loss requirements from call arguments or the config (§6.1)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .config import AutoGazeConfig
from .generation import BACKENDS, Sampling, uniform_draws


def check_sampling(do_sample, temperature, generator, backend="auto", candidates=None,
                   num_tokens=None) -> Sampling:
    """Validated sampling settings. candidates: None or a (num_tokens,) bool tensor of the ids
    the decoder may pick (at least one True)."""
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if candidates is not None:
        if not isinstance(candidates, torch.Tensor) or candidates.dtype != torch.bool:
            raise TypeError(f"candidates must be a bool tensor ({num_tokens},), got "
                            f"{getattr(candidates, 'dtype', type(candidates).__name__)}")
        if candidates.dim() != 1 or (num_tokens is not None and candidates.shape[0] != num_tokens):
            raise ValueError(f"candidates must have shape ({num_tokens},) (one flag per candidate "
                             f"id), got {tuple(candidates.shape)}")
        if not bool(candidates.any()):
            raise ValueError("candidates allows no id")
    return Sampling(bool(do_sample), float(temperature), generator, backend, candidates)


def _check_ratio(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"gazing_ratio must be a float in (0, 1], got {value!r}")
    if not math.isfinite(value) or not 0 < value <= 1:
        raise ValueError(f"gazing_ratio must be in (0, 1], got {value!r}")
    return float(value)


def frame_budgets(gazing_ratio, frames: int, num_tokens: int) -> list[int]:
    """``max(1, trunc(float32(ratio)·N))`` per frame, with the official float32 arithmetic."""
    if isinstance(gazing_ratio, torch.Tensor):
        gazing_ratio = gazing_ratio.tolist()
    if isinstance(gazing_ratio, Sequence) and not isinstance(gazing_ratio, str):
        if len(gazing_ratio) != frames:
            raise ValueError(f"gazing_ratio has {len(gazing_ratio)} values, the video {frames} frames")
        ratios = torch.tensor([_check_ratio(r) for r in gazing_ratio], dtype=torch.float32)
    else:
        ratios = torch.ones(frames) * _check_ratio(gazing_ratio)
    return (ratios * num_tokens).long().clamp(min=1).tolist()


def requirement_tensor(value, batch: int, frames: int, device) -> torch.Tensor:
    """A scalar or (B,T) requirement → (B,T) float32 tensor; NaN is an error."""
    if isinstance(value, torch.Tensor):
        if value.dim() == 0:
            value = value.item()
        else:
            if tuple(value.shape) != (batch, frames):
                raise ValueError(f"task_loss_requirement must be a number or a ({batch},{frames}) "
                                 f"tensor, got shape {tuple(value.shape)}")
            if not bool(torch.isfinite(value).all()):
                raise ValueError("task_loss_requirement contains NaN or infinite values")
            return value.to(device=device, dtype=torch.float32)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"task_loss_requirement must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"task_loss_requirement must be finite, got {value!r}")
    return torch.full((batch, frames), float(value), dtype=torch.float32, device=device)


def _draw(generator) -> float:
    """One U[0,1) draw from ``generator`` (on its own device, CPU or CUDA) or the global RNG."""
    return uniform_draws((), "cpu", generator).item()


def _uniform(low: float, high: float, generator) -> float:
    return low + (high - low) * _draw(generator)


def _config_ratio(config: AutoGazeConfig, generator) -> float:
    cfg = config.inference_setting("gazing_ratio_config")
    strategy = cfg["sample_strategy_during_inference"]
    if strategy == "fixed":
        return float(cfg["fixed"]["gazing_ratio"])
    if strategy == "uniform":
        return _uniform(cfg["uniform"]["gazing_ratio_min"], cfg["uniform"]["gazing_ratio_max"],
                        generator)
    if strategy == "exponential":
        low, high, lam = (cfg["exponential"][k] for k in ("gazing_ratio_min", "gazing_ratio_max",
                                                          "lambda"))
        while True:
            u = _draw(generator)
            value = -math.log(1 - u) / lam
            if low <= value <= high:
                return value
    raise ValueError(f"config: unknown gazing ratio strategy {strategy!r}")


def _config_frame_ratios(config: AutoGazeConfig, ratio: float, frames: int) -> list[float]:
    cfg = config.inference_setting("gazing_ratio_each_frame_config")
    strategy = cfg["sample_strategy_during_inference"]
    if strategy == "uniform":
        return [ratio] * frames
    if strategy == "dirichlet":
        alpha = cfg["dirichlet"]["alpha"]
        if isinstance(alpha, str):
            alpha = [float(a) for a in alpha.split(",")]
        concentration = torch.as_tensor(alpha, dtype=torch.float32).expand(frames)
        sample = torch.distributions.Dirichlet(concentration).sample()
        return (sample * ratio * frames).clamp(0, 1).tolist()
    raise NotImplementedError(f"per-frame budget strategy {strategy!r} is a training strategy; "
                              f"pass gazing_ratio explicitly")


def _config_requirement(config: AutoGazeConfig, generator) -> float | None:
    if not config.has_task_loss_requirement_during_inference:
        return None
    cfg = config.inference_setting("task_loss_requirement_config")
    strategy = cfg["sample_strategy_during_inference"]
    if strategy == "fixed":
        return float(cfg["fixed"]["task_loss_requirement"])
    if strategy == "uniform":
        return _uniform(cfg["uniform"]["task_loss_requirement_min"],
                        cfg["uniform"]["task_loss_requirement_max"], generator)
    raise ValueError(f"config: unknown task-loss requirement strategy {strategy!r}")


def resolve(config: AutoGazeConfig, gazing_ratio, task_loss_requirement, batch: int, frames: int,
            device, generator=None):
    """Return (per-frame budgets list[int] of length T, requirement (B,T) float32 or None)."""
    n = config.num_tokens
    if gazing_ratio is None and task_loss_requirement is None:
        ratio = _config_ratio(config, generator)
        per_frame = [min(max(r, 0.0), 1.0) for r in _config_frame_ratios(config, ratio, frames)]
        budgets = (torch.tensor(per_frame, dtype=torch.float32) * n).long().clamp(min=1).tolist()
        requirement = _config_requirement(config, generator)
    else:
        budgets = frame_budgets(1.0 if gazing_ratio is None else gazing_ratio, frames, n)
        requirement = task_loss_requirement
    if requirement is not None:
        requirement = requirement_tensor(requirement, batch, frames, device)
    return budgets, requirement
