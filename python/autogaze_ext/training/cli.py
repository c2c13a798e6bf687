"""``autogaze-train CONFIG.toml [section.key=value ...] [--until STEP] [--minutes M] [--print-config]``."""

from __future__ import annotations

import argparse
import sys

from .config import load_config, to_toml


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="autogaze-train",
        description="Train the AutoGaze gaze model (NTP on oracle labels, then GRPO).")
    parser.add_argument("config", nargs="?", help="TOML config file (defaults if omitted)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. "
                        "run.steps=10 optim.lr=1e-3 model.build.hidden_size=64")
    parser.add_argument("--until", type=int, metavar="STEP",
                        help="stop (and checkpoint) at this step, keeping the schedule of "
                        "run.steps, as an interrupted run would; resume later with run.resume=true")
    parser.add_argument("--minutes", type=float, metavar="M",
                        help="stop (and checkpoint) at the first step that ends after M minutes of "
                        "wall time, like --until; for machines lent for a fixed time")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config as TOML and exit")
    args = parser.parse_args(argv)
    config_path = args.config
    overrides = list(args.overrides)
    if config_path is not None and "=" in config_path and not config_path.endswith(".toml"):
        overrides.insert(0, config_path)
        config_path = None
    try:
        cfg = load_config(config_path, overrides)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"autogaze-train: error: {e}", file=sys.stderr)
        return 2
    if args.until is not None and args.until < 1:
        print(f"autogaze-train: error: --until must be a positive step, got {args.until}",
              file=sys.stderr)
        return 2
    if args.minutes is not None and not args.minutes > 0:
        print(f"autogaze-train: error: --minutes must be > 0, got {args.minutes}", file=sys.stderr)
        return 2
    if args.print_config:
        print(to_toml(cfg))
        return 0
    from .trainer import Trainer

    trainer = Trainer(cfg)
    try:
        trainer.train(until=args.until, minutes=args.minutes)
    finally:
        trainer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
