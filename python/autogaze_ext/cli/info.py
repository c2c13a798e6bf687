"""``autogaze info``: build information, devices and the default model as JSON."""

from __future__ import annotations

import argparse
import json
import os

from .common import MODEL_ENV


def add_parser(commands) -> None:
    """Register ``autogaze info`` on the subparsers ``commands``."""
    info = commands.add_parser("info", help="print build information, devices and default model as JSON")
    info.set_defaults(run=run_info)


def _devices() -> list[str]:
    import torch

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    return devices


def run_info(args: argparse.Namespace) -> int:
    """Print ``autogaze_ext.build_info()`` plus devices and default model as JSON; basic versions
    when the native extension (or ``build_info`` itself) is unavailable."""
    import autogaze_ext

    try:
        info = dict(autogaze_ext.build_info())
    except (AttributeError, ImportError, OSError) as err:
        import torch

        info = {"version": getattr(autogaze_ext, "__version__", None), "torch": torch.__version__,
                "cuda_available": torch.cuda.is_available(),
                "native_extension": f"unavailable ({type(err).__name__}: {err})"}
    info["devices"] = _devices()
    from ..default_model import DEFAULT_MODEL_DIR, default_model_name

    if os.environ.get(MODEL_ENV):
        info["default_model"] = os.environ[MODEL_ENV]
        info["default_model_note"] = f"from ${MODEL_ENV}"
    else:
        info["default_model"] = str(DEFAULT_MODEL_DIR)
        info["default_model_note"] = (f"bundled: {default_model_name()} "
                                      f"(see MODEL_CARD.md there; set ${MODEL_ENV} or --model)")
    print(json.dumps(info, indent=2, sort_keys=True, default=str))
    return 0
