"""Training tasks: reconstruction losses/rewards and oracle gaze labels (spec §9, §10)."""

from .mae import MAEConfig, MAEOutput, MAEReconstruction, random_gaze
from .oracle import OracleResult, candidate_gains, greedy_oracle
from .paint import PaintOutput, PaintReconstruction

__all__ = ["MAEConfig", "MAEOutput", "MAEReconstruction", "OracleResult", "PaintOutput",
           "PaintReconstruction", "candidate_gains", "greedy_oracle", "random_gaze"]
