"""Shared inputs of the benchmarks: the fixture model and the first 16 frames of the bundled clip."""

from __future__ import annotations

from pathlib import Path

import torch

import autogaze_ext as ag

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "reference"
MODEL = DATA / "autogaze_model"


def first_clip(model) -> torch.Tensor:
    """The first 16 frames of the bundled clip, preprocessed (1,16,3,224,224); without PyAV, the
    same frames as stored in the test fixtures (the official processor's output, float16)."""
    try:
        return model.preprocess(ag.read_video(ag.example_clip_path(), num_frames=16))[None]
    except ImportError:
        from autogaze_ext.checkpoint import load_safetensors
        return load_safetensors(DATA / "cases.safetensors")["pixel_values"].float()
