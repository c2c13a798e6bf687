"""Training configuration: typed dataclass sections, TOML loading and ``key.sub=value`` overrides.

Sections: ``model`` (architecture or a checkpoint to start from), ``data``, ``task``,
``algorithm`` (NTP or GRPO and their strategies, spec §9.3-9.6), ``optim`` and ``run``.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ModelSection:
    build: dict = field(default_factory=dict)  # AutoGazeConfig.build kwargs (release defaults)
    config: str = ""  # a config.json: fresh model of that architecture (overrides ``build``)
    init: str = ""  # checkpoint folder to start from (overrides ``config`` and ``build``)


@dataclass
class DataSection:
    paths: list = field(default_factory=list)  # video files or folders (mp4/avi/mkv)
    val_paths: list = field(default_factory=list)  # videos used whole for validation only
    synthetic: int = 0  # number of synthetic clips added (autogaze_ext.video.synthetic_video)
    synthetic_frames: int = 32
    synthetic_size: int = 64
    clip_len: int = 16
    frame_stride: int = 1
    window_step: int = 0  # distance between training windows; 0 = clip_len // 2
    max_frames: int = 128  # frames decoded per video (decoded frames stay in memory)
    split: str = "time"  # "time": last val_fraction of every video; "file": every k-th file;
    # "none": all of data.paths trains (validation from data.val_paths only)
    val_fraction: float = 0.2
    val_windows: int = 2  # validation windows per video
    batch_size: int = 2  # clips per rank and micro-step
    gaze_size: int = 0  # side of the square gaze view; 0 = the task's frame size
    # fresh clips of autogaze_ext.synthetic.SyntheticVideos (camera motion over still images,
    # objects, cuts, lighting, noise) mixed into training: this fraction of all training draws
    synthetic_fraction: float = 0.0
    synthetic_images: list = field(default_factory=list)  # still-image files or folders
    synthetic_seed: int = 0
    synthetic_max_side: int = 640  # frame sizes (FRAME_SIZES) with a longer side are not drawn
    # this fraction of all training draws (real or synthetic) gets a *freeze*: one frame held for
    # a random span, frames identical to the previous one, as in a paused video or a slide
    freeze_fraction: float = 0.0
    # this fraction of all training draws is *softened*: down-scaled by 1.5-8x and brought back,
    # as a low-resolution source or a defocused lens (training.stream.soften_factor)
    soften_fraction: float = 0.0
    workers: int = 0  # 1: prepare batches (clips, labels) one step ahead in a worker process


@dataclass
class TaskSection:
    name: str = "paint"  # "paint" | "mae"
    kwargs: dict = field(default_factory=dict)


@dataclass
class AlgorithmSection:
    name: str = "ntp"  # "ntp" | "grpo"
    # NTP labels (greedy oracle on the Paint task)
    label_ratio: float = 0.1
    label_ratios: list = field(default_factory=list)  # per clip, one drawn at random (else label_ratio)
    label_requirement: float | None = None
    label_k: int = 1
    label_cache: str = ""  # folder; "" = <run.out>/labels
    # soft labels: cross-entropy with softmax(gain / (τ·best gain)) of the oracle's candidate
    # gains at every pick (τ = soft_label_temperature), weighted soft_label_weight, beside the
    # hard-label NTP loss (needs scoring = "sampling")
    soft_label_weight: float = 0.0
    soft_label_temperature: float = 0.2
    # with soft labels: weight of the expected regret of the gaze distribution against the same
    # gains (losses.regret_loss), which pushes mass off harmful candidates, not only onto the best
    regret_weight: float = 0.0
    # on-policy (DAgger) steps: this share of NTP steps labels the model's own greedy gaze with
    # the oracle's gains at every visited state (soft loss + head targets, no hard-label NLL)
    rollout_fraction: float = 0.0
    # of those, this share gazes under a loss requirement drawn uniformly from
    # [requirement_min, requirement_max] (histories with frames that stopped early)
    rollout_requirement_fraction: float = 0.0
    tlp_weight: float = 1.0  # weight of the task-loss head's squared error (NTP and head steps)
    optimize_task_loss_prediction: bool = True
    # GRPO
    group_size: int = 12
    gamma: float = 0.995
    # GRPO reward per frame: "frame" −(its loss) (official), or "anytime" −(mean loss after each
    # prefix of its gaze): every budget up to the rollout's counts, not only the rollout's own
    grpo_reward: str = "frame"
    temperature_start: float = 3.0
    temperature_end: float = 0.3
    ratio_strategy: str = "fixed"  # fixed | uniform | exponential (spec §9.5)
    ratio: float = 0.75
    ratio_min: float = 0.05
    ratio_max: float = 0.75
    ratio_lambda: float = 10.0
    frame_strategy: str = "uniform"  # uniform | dirichlet | self
    dirichlet_alpha: list = field(default_factory=lambda: [3.0])  # one value or T values
    requirement_strategy: str = "none"  # none | fixed | uniform (rollouts; `self` always samples)
    requirement: float = 0.7
    requirement_min: float = 0.5
    requirement_max: float = 1.0
    requirement_fraction: float = 1.0  # head calibration: share of rollouts given a requirement
    # "all" | "head" (only the task-loss head is updated) | "decoder_tail" (the head, the last
    # decoder layer and the final norm: the head reads features fitted to it; the gaze logits
    # read them too, so pair it with anchor_kl)
    train_params: str = "all"
    # head steps: weight of KL(initial model's gaze distribution ‖ current) per slot, which keeps
    # the gaze where it was while shared layers train for the head
    anchor_kl: float = 0.0
    # the task-loss head's error in every algorithm (algorithms.head_error): "absolute" squared
    # error (official), "relative" ((pred − real) / max(real, floor))², or "log"
    # (log pred − log max(real, floor))²: a requirement is met or missed by a ratio
    head_error: str = "absolute"
    head_error_floor: float = 0.02
    scoring: str = "sampling"  # "sampling" (generation-consistent) | "official" (model.score)


@dataclass
class OptimSection:
    name: str = "adam"  # adam | sgd
    lr: float = 5e-4
    min_lr: float = 1e-5  # end of the "linear" schedule
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    momentum: float = 0.0
    weight_decay: float = 0.0
    schedule: str = "linear"  # linear | linear_w_warmup | constant
    warmup_fraction: float = 0.1
    grad_clip: float = 0.0  # 0 = off
    grad_accum: int = 1


@dataclass
class RunSection:
    out: str = "runs/autogaze"
    steps: int = 100  # optimizer steps
    seed: int = 666
    log_interval: int = 10
    val_interval: int = 50  # 0 = never
    save_interval: int = 50  # 0 = only at the end
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    bf16: bool = True  # bf16 autocast of the training passes (CUDA only)
    bf16_cpu: bool = False  # bf16 autocast on the CPU too (AMX/AVX-512-BF16 CPUs: ~1.4x faster)
    resume: bool = False
    val_ratio: float = 0.0  # gazing ratio of validation; 0 = the algorithm's ratio
    val_requirement: float | None = None


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    task: TaskSection = field(default_factory=TaskSection)
    algorithm: AlgorithmSection = field(default_factory=AlgorithmSection)
    optim: OptimSection = field(default_factory=OptimSection)
    run: RunSection = field(default_factory=RunSection)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> "TrainConfig":
        choices = {("task", "name"): ("paint", "mae"), ("algorithm", "name"): ("ntp", "grpo", "head"),
                   ("algorithm", "ratio_strategy"): ("fixed", "uniform", "exponential"),
                   ("algorithm", "frame_strategy"): ("uniform", "dirichlet", "self"),
                   ("algorithm", "requirement_strategy"): ("none", "fixed", "uniform"),
                   ("algorithm", "scoring"): ("sampling", "official"),
                   ("algorithm", "train_params"): ("all", "head", "decoder_tail"),
                   ("algorithm", "head_error"): ("absolute", "relative", "log"),
                   ("algorithm", "grpo_reward"): ("frame", "anytime"),
                   ("optim", "name"): ("adam", "sgd"),
                   ("optim", "schedule"): ("linear", "linear_w_warmup", "constant"),
                   ("data", "split"): ("time", "file", "none")}
        for (section, key), allowed in choices.items():
            value = getattr(getattr(self, section), key)
            if value not in allowed:
                raise ValueError(f"{section}.{key} must be one of {allowed}, got {value!r}")
        positive = [("data", "clip_len"), ("data", "frame_stride"), ("data", "batch_size"),
                    ("algorithm", "group_size"), ("optim", "grad_accum"), ("run", "steps"),
                    ("run", "log_interval")]
        for section, key in positive:
            if getattr(getattr(self, section), key) < 1:
                raise ValueError(f"{section}.{key} must be >= 1")
        if not 0 <= self.data.synthetic_fraction <= 1:
            raise ValueError("data.synthetic_fraction must be in [0, 1]")
        if not 0 <= self.data.freeze_fraction <= 1:
            raise ValueError("data.freeze_fraction must be in [0, 1]")
        if not 0 <= self.data.soften_fraction <= 1:
            raise ValueError("data.soften_fraction must be in [0, 1]")
        if not self.data.paths and self.data.synthetic < 1 and self.data.synthetic_fraction < 1:
            raise ValueError("data: give data.paths (videos or folders), data.synthetic > 0 or "
                             "data.synthetic_fraction = 1")
        if self.data.workers not in (0, 1):
            raise ValueError("data.workers must be 0 or 1")
        if self.algorithm.anchor_kl < 0 or self.algorithm.head_error_floor <= 0:
            raise ValueError("algorithm.anchor_kl must be >= 0 and head_error_floor > 0")
        if self.algorithm.anchor_kl > 0 and self.algorithm.name != "head":
            raise ValueError("algorithm.anchor_kl applies to head steps: set algorithm.name = 'head'")
        if self.algorithm.soft_label_weight < 0 or self.algorithm.soft_label_temperature <= 0:
            raise ValueError("algorithm.soft_label_weight must be >= 0, soft_label_temperature > 0")
        if not 0 <= self.algorithm.rollout_fraction <= 1:
            raise ValueError("algorithm.rollout_fraction must be in [0, 1]")
        if self.algorithm.regret_weight < 0 or (self.algorithm.regret_weight > 0
                                                and self.algorithm.soft_label_weight <= 0):
            raise ValueError("algorithm.regret_weight must be >= 0 and needs soft labels "
                             "(algorithm.soft_label_weight > 0)")
        if self.algorithm.rollout_fraction > 0 and self.algorithm.soft_label_weight <= 0:
            raise ValueError("algorithm.rollout_fraction needs algorithm.soft_label_weight > 0")
        if self.algorithm.soft_label_weight > 0 and self.algorithm.scoring != "sampling":
            raise ValueError('algorithm.soft_label_weight needs algorithm.scoring = "sampling"')
        if any(not 0 < float(r) <= 1 for r in self.algorithm.label_ratios):
            raise ValueError("algorithm.label_ratios must all be in (0, 1]")
        if not 0 < self.algorithm.ratio <= 1 or not 0 < self.algorithm.label_ratio <= 1:
            raise ValueError("algorithm.ratio and algorithm.label_ratio must be in (0, 1]")
        if self.algorithm.temperature_start <= 0 or self.algorithm.temperature_end <= 0:
            raise ValueError("algorithm.temperature_start/end must be > 0")
        return self


def _section_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """Check/convert a TOML value to the field type ``hint``."""
    optional = typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType"))
    if optional:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        hint = args[0]
    if hint is bool:
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a string, got {value!r}")
        return value
    if hint is list:
        return list(value) if isinstance(value, (list, tuple)) else [value]
    if hint is dict:
        if not isinstance(value, dict):
            raise TypeError(f"{name} must be a table, got {value!r}")
        return dict(value)
    return value


def from_dict(raw: dict) -> TrainConfig:
    """A validated config from nested dicts; unknown sections/keys are errors."""
    config = TrainConfig()
    sections = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for name, values in raw.items():
        if name not in sections:
            raise ValueError(f"unknown config section {name!r}; known: {sorted(sections)}")
        if not isinstance(values, dict):
            raise TypeError(f"config section {name!r} must be a table")
        section = getattr(config, name)
        hints = _section_types(type(section))
        for key, value in values.items():
            if key not in hints:
                raise ValueError(f"unknown config key {name}.{key}; known: {sorted(hints)}")
            setattr(section, key, _coerce(value, hints[key], f"{name}.{key}"))
    return config


def _parse_literal(text: str) -> Any:
    """A TOML literal (1, 0.5, true, "x", [1, 2]) or, failing that, the raw string;
    ``none``/``null`` → None."""
    if text.strip().lower() in ("none", "null"):
        return None
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(config: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply ``section.key=value`` (or ``section.dictkey.sub=value`` inside a table field)."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.key=value")
        path, text = item.split("=", 1)
        parts = path.strip().split(".")
        if len(parts) < 2:
            raise ValueError(f"override {item!r}: the key must name a section, e.g. run.steps=10")
        section_name, key, rest = parts[0], parts[1], parts[2:]
        if not hasattr(config, section_name) or section_name.startswith("_"):
            raise ValueError(f"unknown config section {section_name!r} in override {item!r}")
        section = getattr(config, section_name)
        hints = _section_types(type(section))
        if key not in hints:
            raise ValueError(f"unknown config key {section_name}.{key} in override {item!r}; "
                             f"known: {sorted(hints)}")
        value = _parse_literal(text)
        if rest:
            if hints[key] is not dict:
                raise ValueError(f"{section_name}.{key} is not a table; cannot set {path}")
            table = getattr(section, key)
            for part in rest[:-1]:
                table = table.setdefault(part, {})
            table[rest[-1]] = value
            continue
        hint = hints[key]
        if hint is str and not isinstance(value, str):
            value = text  # e.g. run.out=123 is a folder name
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        setattr(section, key, _coerce(value, hint, f"{section_name}.{key}"))
    return config


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Load a TOML file (or defaults when ``path`` is None), apply overrides, validate."""
    raw = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    config = from_dict(raw)
    return apply_overrides(config, overrides or []).validate()


def to_toml(config: TrainConfig) -> str:
    """A TOML rendering (for ``--print-config``); None values are written as comments."""
    lines = []

    def literal(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(literal(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {literal(x)}" for k, x in v.items()) + "}"
        return repr(v)

    for name, section in config.to_dict().items():
        lines.append(f"[{name}]")
        for key, value in section.items():
            lines.append(f"# {key} = none" if value is None else f"{key} = {literal(value)}")
        lines.append("")
    return "\n".join(lines)
