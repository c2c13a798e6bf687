"""Training: losses of the NTP and GRPO stages (spec §9.3-9.4)."""

from .losses import grpo_advantages, grpo_loss, ntp_loss

__all__ = ["grpo_advantages", "grpo_loss", "ntp_loss"]
