"""Training: NTP and GRPO (spec §9) with a config-driven trainer (``autogaze-train``)."""

from .algorithms import grpo_step, ntp_step, task_outputs
from .config import TrainConfig, load_config
from .losses import grpo_advantages, grpo_loss, ntp_loss
from .policy import score_rollout
from .trainer import Trainer

__all__ = ["TrainConfig", "Trainer", "grpo_advantages", "grpo_loss", "grpo_step", "load_config",
           "ntp_loss", "ntp_step", "score_rollout", "task_outputs"]
