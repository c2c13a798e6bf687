"""``autogaze bench``: time preprocess and gaze on a synthetic clip."""

from __future__ import annotations

import argparse
import time

from .common import UsageError, _load_model, _model_args, _model_ref, _or_default, _pick_device, _sync


def add_parser(commands) -> None:
    """Register ``autogaze bench`` on the subparsers ``commands``."""
    bench = commands.add_parser("bench", help="time preprocess and gaze on a synthetic 16x224x224 clip")
    _model_args(bench)
    bench.add_argument("--repeat", type=int, default=3, help="timed runs per stage (default: 3)")
    bench.add_argument("--mode", choices=("resize", "tile"), default="resize")
    bench.add_argument("--ratio", type=float, help="gazing ratio in (0, 1] (default: the model's)")
    bench.set_defaults(run=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    """Time ``model.preprocess`` and ``gaze()`` on a synthetic 16×224×224 clip; print ms/clip."""
    if not 1 <= args.repeat <= 1000:
        raise UsageError(f"--repeat must be in 1..1000; got {args.repeat}")
    if args.ratio is not None and not (0 < args.ratio <= 1):
        raise UsageError(f"--ratio must be in (0, 1]; got {args.ratio}")
    model_ref = _model_ref(args)
    device = _pick_device(args.device)
    import torch

    import autogaze_ext
    from ..video import synthetic_video

    clock = time.perf_counter()
    model = _load_model(model_ref, device)
    load_ms = 1000 * (time.perf_counter() - clock)
    frames = torch.from_numpy(synthetic_video(16, 224, 224))
    stages = {"preprocess": lambda: model.preprocess(frames),
              "gaze": lambda: autogaze_ext.gaze(frames, model, gazing_ratio=args.ratio,
                                                mode=args.mode, device=device)}
    print(f"bench   model {model_ref}, device {device}, clip 16x224x224, mode {args.mode}, "
          f"ratio {_or_default(args.ratio)}, "
          f"load {load_ms:.0f} ms")
    with torch.no_grad():
        for name, stage in stages.items():
            stage()  # warm-up
            _sync(device)
            times = []
            for _ in range(args.repeat):
                clock = time.perf_counter()
                stage()
                _sync(device)
                times.append(1000 * (time.perf_counter() - clock))
            times.sort()
            print(f"{name:<10} {times[len(times) // 2]:9.1f} ms/clip (median of {args.repeat}, "
                  f"min {times[0]:.1f})")
    return 0
