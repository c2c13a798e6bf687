"""The package's own gaze model: used when no checkpoint is given.

It is a release-architecture AutoGaze (3.3 M parameters, scales 32/64/112/224, K = 10) trained by
this project on a handful of openly licensed clips with NTP on greedy-oracle labels of
``PaintReconstruction`` and then GRPO (see ``assets/default_model/MODEL_CARD.md`` for the data,
recipe, metrics and limits). Official checkpoints (``--model nvidia/AutoGaze`` or a folder) remain
the recommended weights when available.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["DEFAULT_MODEL_DIR", "default_model_name", "default_model_path", "load_default_model"]

DEFAULT_MODEL_DIR = Path(__file__).parent / "assets" / "default_model"


def default_model_path() -> Path:
    """The folder of the bundled model (config.json, model.safetensors, preprocessor_config.json,
    MODEL_CARD.md)."""
    if not (DEFAULT_MODEL_DIR / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"the bundled default model is missing from {DEFAULT_MODEL_DIR} (a broken install?): "
            "pass a checkpoint folder or hub id instead")
    return DEFAULT_MODEL_DIR


def default_model_name() -> str:
    """A one-line name of the bundled weights (from its ``training.json``)."""
    meta = DEFAULT_MODEL_DIR / "training.json"
    if meta.is_file():
        return json.loads(meta.read_text()).get("name", "autogaze_ext default model")
    return "autogaze_ext default model"


def load_default_model(device=None, dtype=None):
    """``AutoGaze.from_pretrained`` of the bundled model (float32 unless ``dtype`` is given)."""
    from .model import AutoGaze

    model = AutoGaze.from_pretrained(default_model_path(), device=device, dtype=dtype)
    model.name_or_path = default_model_name()
    return model
