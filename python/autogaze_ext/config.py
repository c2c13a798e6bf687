"""AutoGaze configuration: the official ``config.json`` format, read without ``transformers``.

The raw JSON is kept as is (unknown keys round-trip); the fields the model needs are read from it
with the official class defaults as fallbacks (spec §2).
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

# What may stop a frame under a task-loss requirement (``task_loss_requirement_stop_by``, an
# autogaze_ext key), and how reports name it.
STOP_BY = {"head": "the task-loss head's predicted loss", "paint": "the measured Paint loss"}


def check_stop_by(value, name: str = "stop_by") -> str:
    """``value`` if it is one of ``STOP_BY``, else a ValueError naming ``name``."""
    if value not in STOP_BY:
        raise ValueError(f"{name} must be one of {tuple(STOP_BY)}, got {value!r}")
    return value


# Official class defaults (spec §2.2-2.4) for fields a config.json may omit.
_VISION_DEFAULTS = dict(hidden_dim=192, out_dim=192, depth=1, kernel_size=16, temporal_patch_size=1,
                        trunk_temporal_kernel_size=3, trunk_spatial_kernel_size=3)
_DECODER_DEFAULTS = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=None, head_dim=None,
                         hidden_act="silu", max_position_embeddings=2048, rms_norm_eps=1e-6,
                         rope_theta=10000.0, rope_scaling=None, attention_bias=False,
                         mlp_bias=False, num_multi_token_pred=1)
_TOP_DEFAULTS = dict(
    scales="224", num_vision_tokens_each_frame=196, attn_mode=None, use_flash_attn=True,
    max_num_frames=16,
    gazing_ratio_config={
        "sample_strategy_during_training": "fixed", "sample_strategy_during_inference": "fixed",
        "fixed": {"gazing_ratio": 0.5},
        "uniform": {"gazing_ratio_min": 0.0, "gazing_ratio_max": 1.0},
        "exponential": {"gazing_ratio_min": 0.0, "gazing_ratio_max": 1.0, "lambda": 10.0}},
    gazing_ratio_each_frame_config={
        "sample_strategy_during_training": "uniform", "sample_strategy_during_inference": "uniform",
        "dirichlet": {"alpha": 0.5}},
    has_task_loss_requirement_during_training=False,
    has_task_loss_requirement_during_inference=False,
    task_loss_requirement_config={
        "sample_strategy_during_training": "fixed", "sample_strategy_during_inference": "fixed",
        "fixed": {"task_loss_requirement": 0.7},
        "uniform": {"task_loss_requirement_min": 0.6, "task_loss_requirement_max": 0.9}},
    task_loss_requirement_stop_by="head",
)


@dataclass(frozen=True)
class DecoderConfig:
    """The LLaMA-style gaze decoder (spec §2.4, §4.4)."""
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict | None
    num_multi_token_pred: int
    vocab_size: int
    eos_token_id: int


@dataclass(frozen=True)
class VisionConfig:
    """The shallow video conv net and connector (spec §4.2-4.3)."""
    hidden_dim: int
    out_dim: int
    depth: int
    kernel_size: int
    temporal_patch_size: int
    trunk_temporal_kernel_size: int
    trunk_spatial_kernel_size: int
    input_img_size: int

    @property
    def grid(self) -> int:
        return self.input_img_size // self.kernel_size

    @property
    def num_tokens(self) -> int:
        return self.grid * self.grid


def parse_scales(scales) -> list[int]:
    """``"32+64+112+224"``, an int or a sequence of ints → sorted list of ints."""
    if isinstance(scales, str):
        try:
            values = [int(s) for s in scales.split("+") if s.strip()]
        except ValueError:
            raise ValueError(f"scales must be like '32+64+112+224', got {scales!r}") from None
    elif isinstance(scales, int):
        values = [scales]
    else:
        values = [int(s) for s in scales]
    if not values or any(s <= 0 for s in values):
        raise ValueError(f"scales must be positive integers, got {scales!r}")
    return sorted(values)


def tokens_per_scale(scales: list[int], num_tokens: int) -> list[int]:
    """Official split of the per-frame token budget: ``int(s² / Σs² · N)`` (spec §5)."""
    total = sum(s * s for s in scales)
    return [int(s * s / total * num_tokens) for s in scales]


class AutoGazeConfig:
    """An official AutoGaze ``config.json``, with typed views of what the model needs."""

    def __init__(self, raw: dict | None = None, **overrides):
        self.raw = copy.deepcopy(raw) if raw is not None else {"model_type": "autogaze"}
        self.raw.update(overrides)
        self._validate()

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "AutoGazeConfig":
        with open(path) as f:
            return cls(json.load(f))

    @classmethod
    def build(cls, scales="32+64+112+224", num_vision_tokens_each_frame=None, hidden_size=192,
              intermediate_size=384, num_layers=4, num_heads=6, num_multi_token_pred=10,
              vision_hidden_dim=192, input_img_size=224, kernel_size=16, depth=1,
              rope_scaling="llama3", rope_theta=500000.0, rms_norm_eps=1e-5, **top) -> "AutoGazeConfig":
        """A complete config for a model of the released family (defaults: the release)."""
        scale_list = parse_scales(scales)
        if num_vision_tokens_each_frame is None:
            num_vision_tokens_each_frame = sum((s // kernel_size) ** 2 for s in scale_list)
        n = num_vision_tokens_each_frame
        if rope_scaling == "llama3":
            rope_scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
        raw = {
            "model_type": "autogaze", "architectures": ["AutoGaze"], "attn_mode": "sdpa",
            "scales": "+".join(str(s) for s in scale_list), "num_vision_tokens_each_frame": n,
            "max_num_frames": 16,
            "gaze_model_config": {
                "input_img_size": input_img_size, "num_vision_tokens_each_frame": n,
                "vision_model_config": dict(_VISION_DEFAULTS, hidden_dim=vision_hidden_dim,
                                            out_dim=hidden_size, depth=depth, kernel_size=kernel_size),
                "connector_config": {"hidden_dim": hidden_size,
                                     "num_tokens": (input_img_size // kernel_size) ** 2},
                "gaze_decoder_config": {
                    "model_type": "llama", "hidden_size": hidden_size,
                    "intermediate_size": intermediate_size, "num_hidden_layers": num_layers,
                    "num_attention_heads": num_heads, "num_key_value_heads": num_heads,
                    "head_dim": hidden_size // num_heads, "hidden_act": "silu",
                    "max_position_embeddings": 131072, "rms_norm_eps": rms_norm_eps,
                    "rope_theta": rope_theta, "rope_scaling": rope_scaling,
                    "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": False,
                    "num_multi_token_pred": num_multi_token_pred, "vocab_size": n + 1,
                    "eos_token_id": n},
            },
            "gazing_ratio_config": {"sample_strategy_during_training": "fixed",
                                    "sample_strategy_during_inference": "fixed",
                                    "fixed": {"gazing_ratio": 0.75}},
            "gazing_ratio_each_frame_config": {"sample_strategy_during_training": "uniform",
                                               "sample_strategy_during_inference": "uniform"},
            "has_task_loss_requirement_during_training": False,
            "has_task_loss_requirement_during_inference": True,
            "task_loss_requirement_config": {"sample_strategy_during_training": "fixed",
                                             "sample_strategy_during_inference": "fixed",
                                             "fixed": {"task_loss_requirement": 0.7}},
        }
        raw.update(top)
        return cls(raw)

    def to_dict(self) -> dict:
        return copy.deepcopy(self.raw)

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.raw, indent=2, sort_keys=True) + "\n")

    # ---- typed views ----------------------------------------------------------------------
    def _get(self, key):
        return self.raw.get(key, copy.deepcopy(_TOP_DEFAULTS.get(key)))

    @property
    def scales(self) -> list[int]:
        return parse_scales(self._get("scales"))

    @property
    def num_tokens(self) -> int:
        """N: gaze candidates per frame (265 for the release)."""
        return int(self._get("num_vision_tokens_each_frame"))

    @property
    def tokens_per_scale(self) -> list[int]:
        return tokens_per_scale(self.scales, self.num_tokens)

    @property
    def max_num_frames(self) -> int:
        return int(self._get("max_num_frames") or 16)

    @property
    def gaze_model(self) -> dict:
        return self.raw.get("gaze_model_config", {}) or {}

    @property
    def vision(self) -> VisionConfig:
        v = dict(_VISION_DEFAULTS)
        v.update({k: val for k, val in (self.gaze_model.get("vision_model_config") or {}).items()
                  if k in _VISION_DEFAULTS})
        return VisionConfig(input_img_size=int(self.gaze_model.get("input_img_size", 224)),
                            **{k: int(val) for k, val in v.items()})

    @property
    def decoder(self) -> DecoderConfig:
        d = dict(_DECODER_DEFAULTS)
        d.update(self.gaze_model.get("gaze_decoder_config") or {})
        heads = int(d["num_attention_heads"])
        kv_heads = int(d["num_key_value_heads"] or heads)
        head_dim = int(d["head_dim"] or d["hidden_size"] // heads)
        n = self.num_tokens
        return DecoderConfig(
            hidden_size=int(d["hidden_size"]), intermediate_size=int(d["intermediate_size"]),
            num_layers=int(d["num_hidden_layers"]), num_heads=heads, num_kv_heads=kv_heads,
            head_dim=head_dim, rms_norm_eps=float(d["rms_norm_eps"]),
            rope_theta=float(d["rope_theta"]), rope_scaling=d["rope_scaling"],
            num_multi_token_pred=int(d["num_multi_token_pred"]),
            vocab_size=n + 1, eos_token_id=n)  # forced by the official config (spec §2.2)

    @property
    def attn_mode(self) -> str:
        mode = self._get("attn_mode")
        if mode is None:
            mode = "flash_attention_2" if self._get("use_flash_attn") else "sdpa"
        return mode

    def inference_setting(self, name: str) -> dict:
        """One of the sampling-strategy sub-configs (``gazing_ratio_config`` …), defaults filled."""
        merged = copy.deepcopy(_TOP_DEFAULTS[name])
        for key, value in (self.raw.get(name) or {}).items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key].update(value)
            else:
                merged[key] = value
        return merged

    @property
    def has_task_loss_requirement_during_inference(self) -> bool:
        return bool(self._get("has_task_loss_requirement_during_inference"))

    @property
    def task_loss_requirement_stop_by(self) -> str:
        """Which loss stops a frame under a requirement: ``"head"`` (the task-loss head's
        prediction, the official behaviour) or ``"paint"`` (the measured Paint loss of the
        frame's prefix; an autogaze_ext key that official loaders ignore)."""
        return check_stop_by(self._get("task_loss_requirement_stop_by"),
                             "config: task_loss_requirement_stop_by")

    # ---- checks -----------------------------------------------------------------------------
    def _validate(self) -> None:
        scales, n = self.scales, self.num_tokens
        per_scale = self.tokens_per_scale
        if sum(per_scale) != n:
            raise ValueError(f"config: scales {scales} split N={n} into {per_scale}, which does "
                             f"not add up to N")
        for s, count in zip(scales, per_scale):
            if math.isqrt(count) ** 2 != count:
                raise ValueError(f"config: scale {s} gets {count} tokens, not a square grid")
        dec, vis = self.decoder, self.vision
        if dec.num_heads % dec.num_kv_heads:
            raise ValueError("config: num_attention_heads must be a multiple of num_key_value_heads")
        if vis.input_img_size % vis.kernel_size:
            raise ValueError("config: input_img_size must be a multiple of the vision kernel_size")
        if vis.num_tokens < dec.num_multi_token_pred:
            raise ValueError("config: fewer vision tokens per frame than num_multi_token_pred")

    def __repr__(self) -> str:
        dec = self.decoder
        return (f"AutoGazeConfig(scales={self.scales}, N={self.num_tokens}, "
                f"K={dec.num_multi_token_pred}, hidden={dec.hidden_size}, layers={dec.num_layers}, "
                f"heads={dec.num_heads})")
