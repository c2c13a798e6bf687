"""Training tasks: cheap reconstruction losses/rewards and oracle gaze labels (spec §9, §10)."""

from .oracle import OracleResult, greedy_oracle
from .paint import PaintOutput, PaintReconstruction

__all__ = ["OracleResult", "PaintOutput", "PaintReconstruction", "greedy_oracle"]
