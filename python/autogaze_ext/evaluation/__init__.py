"""Evaluation of gaze models against baselines (``autogaze-eval``): selection baselines, metrics
(loss at fixed budgets, patches needed for a loss target, task-loss-head calibration) and plots."""

from .baselines import (METHODS, frame_difference_gaze, make_methods, model_gaze, oracle_gaze,
                        random_gaze, run_length_gaze, uniform_gaze)
from .metrics import (DEFAULT_RATIOS, calibration, correlation, evaluate, head_predictions,
                      loss_at_ratios, loss_tables, patches_needed)

__all__ = ["METHODS", "DEFAULT_RATIOS", "random_gaze", "uniform_gaze", "frame_difference_gaze",
           "run_length_gaze", "oracle_gaze", "model_gaze", "make_methods", "evaluate",
           "loss_tables", "loss_at_ratios", "patches_needed", "head_predictions", "correlation",
           "calibration"]
