"""Export a trained checkpoint as the package's bundled default model.

    python scripts/export_default_model.py CHECKPOINT --name NAME --ratio R --requirement L
        [--stop-by head|paint] [--meta training.json-fields as key=value ...] [--out DIR]

Writes python/autogaze_ext/assets/default_model/ (or --out DIR): config.json (with the given inference defaults:
fixed gazing ratio R and, unless L is "none", a fixed task-loss requirement L that frames meet
by the head's predicted loss or by their measured Paint loss, --stop-by), bf16
model.safetensors (half the size; loaded back as float32), preprocessor_config.json and
training.json (name and the given metadata). MODEL_CARD.md is written by hand.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from autogaze_ext import AutoGaze, AutoGazeConfig
from autogaze_ext.config import STOP_BY

OUT = Path(__file__).resolve().parents[1] / "python" / "autogaze_ext" / "assets" / "default_model"


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--name", required=True)
    parser.add_argument("--ratio", type=float, required=True)
    parser.add_argument("--requirement", required=True, help='a float, or "none"')
    parser.add_argument("--stop-by", choices=tuple(STOP_BY), default="head",
                        help="which loss stops a frame under the requirement (default: head)")
    parser.add_argument("--meta", nargs="*", default=[], help="key=value pairs for training.json")
    parser.add_argument("--out", type=Path, default=OUT, help="folder to write (the bundled model's)")
    args = parser.parse_args(argv)
    if not 0 < args.ratio <= 1:
        parser.error(f"--ratio must lie in (0, 1], got {args.ratio}")
    if args.requirement.lower() != "none":
        try:
            if float(args.requirement) <= 0:
                raise ValueError
        except ValueError:
            parser.error(f'--requirement must be a positive float or "none", got {args.requirement!r}')
    model = AutoGaze.from_pretrained(args.checkpoint)
    raw = model.config.to_dict()
    raw["gazing_ratio_config"].update(sample_strategy_during_inference="fixed",
                                      fixed={"gazing_ratio": args.ratio})
    with_requirement = args.requirement.lower() != "none"
    raw["has_task_loss_requirement_during_inference"] = with_requirement
    if with_requirement:
        raw["task_loss_requirement_config"].update(
            sample_strategy_during_inference="fixed",
            fixed={"task_loss_requirement": float(args.requirement)})
    raw["task_loss_requirement_stop_by"] = args.stop_by
    model.config = AutoGazeConfig(raw)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(out)
    meta = {"name": args.name, "source_checkpoint": str(args.checkpoint)}
    meta.update(item.split("=", 1) for item in args.meta)
    (out / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {out}: {sorted(p.name for p in out.iterdir())}")


if __name__ == "__main__":
    main()
