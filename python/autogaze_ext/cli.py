"""Command line: ``autogaze gaze VIDEO …`` and ``autogaze info`` (also ``python -m autogaze_ext``).

User mistakes (missing files, bad options, no model) print one line on stderr and exit with 2;
run-time failures (e.g. out of GPU memory) exit with 1; neither prints a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

MODEL_ENV = "AUTOGAZE_MODEL"
RESULT_SUFFIXES = (".json", ".safetensors")
NO_MODEL_MESSAGE = (
    "no model given: pass --model with a checkpoint folder (config.json, model.safetensors, "
    f"preprocessor_config.json) or a hub id such as nvidia/AutoGaze, or set ${MODEL_ENV}")


class UsageError(Exception):
    """A mistake in the command line: reported on stderr with exit code 2."""


# ---- parser ---------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autogaze", description="AutoGaze patch selection for videos.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    info = commands.add_parser("info", help="print build information as JSON")
    info.set_defaults(run=run_info)

    gaze = commands.add_parser("gaze", help="pick the gazed patches of a video")
    gaze.add_argument("video", help="video file (anything PyAV decodes)")
    gaze.add_argument("--model", help=f"checkpoint folder or hub id (default: ${MODEL_ENV})")
    gaze.add_argument("--ratio", type=float, help="gazing ratio in (0, 1] (default: the model's)")
    gaze.add_argument("--threshold", type=float,
                      help="task-loss requirement: stop gazing a frame once reconstruction "
                           "loss is predicted below it")
    gaze.add_argument("--mode", choices=("resize", "tile"), default="resize",
                      help="resize frames to the model input, or tile them at full resolution")
    gaze.add_argument("--device", choices=("cpu", "cuda"),
                      help="default: cuda when available, else cpu")
    gaze.add_argument("--frames", type=int, help="number of frames to read (default: all)")
    gaze.add_argument("--start", type=int, default=0, help="index of the first frame (default: 0)")
    gaze.add_argument("--out", type=Path, help="write the result: .json or .safetensors")
    gaze.add_argument("--png", type=Path, help="write a contact sheet of overlays (PNG)")
    gaze.add_argument("--video", dest="overlay_video", type=Path, help="write an overlay video (mp4)")
    gaze.set_defaults(run=run_gaze)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``autogaze`` / ``python -m autogaze_ext``; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, or argparse's own usage errors (code 2)
        return stop.code if isinstance(stop.code, int) else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.run(args)
    except (UsageError, OSError, ValueError, TypeError, ImportError) as err:
        print(f"autogaze: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        print(f"autogaze: failed: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


# ---- info -----------------------------------------------------------------------------------

def run_info(args: argparse.Namespace) -> int:
    """Print ``autogaze_ext.build_info()`` as JSON; basic versions when the native extension
    (or ``build_info`` itself) is unavailable."""
    import autogaze_ext

    try:
        info = autogaze_ext.build_info()
    except (AttributeError, ImportError, OSError) as err:
        import torch

        info = {"version": getattr(autogaze_ext, "__version__", None), "torch": torch.__version__,
                "cuda_available": torch.cuda.is_available(),
                "native_extension": f"unavailable ({type(err).__name__}: {err})"}
    print(json.dumps(info, indent=2, sort_keys=True, default=str))
    return 0


# ---- gaze -----------------------------------------------------------------------------------

def _check_gaze_args(args: argparse.Namespace) -> str:
    """Validate the options before any heavy work; returns the model reference."""
    if not os.path.isfile(args.video):
        raise UsageError(f"video file not found: {args.video}")
    if args.ratio is not None and not (0 < args.ratio <= 1):
        raise UsageError(f"--ratio must be in (0, 1]; got {args.ratio}")
    if args.threshold is not None and not math.isfinite(args.threshold):
        raise UsageError(f"--threshold must be a finite number; got {args.threshold}")
    if args.frames is not None and args.frames < 1:
        raise UsageError(f"--frames must be >= 1; got {args.frames}")
    if args.start < 0:
        raise UsageError(f"--start must be >= 0; got {args.start}")
    if args.out is not None and args.out.suffix.lower() not in RESULT_SUFFIXES:
        raise UsageError(f"--out must end in .json or .safetensors; got {args.out}")
    for path in (args.out, args.png, args.overlay_video):
        if path is not None and not path.resolve().parent.is_dir():
            raise UsageError(f"folder of {path} does not exist")
    model = args.model or os.environ.get(MODEL_ENV)
    if not model:
        raise UsageError(NO_MODEL_MESSAGE)
    return model


def _pick_device(name: str | None) -> str:
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda, but CUDA is not available to torch")
    return name or ("cuda" if torch.cuda.is_available() else "cpu")


def run_gaze(args: argparse.Namespace) -> int:
    """Read the video, gaze, print a summary and write the requested files."""
    model_ref = _check_gaze_args(args)
    device = _pick_device(args.device)
    import torch

    import autogaze_ext
    from . import visualize
    from .video import read_video, video_info

    if not hasattr(autogaze_ext, "gaze"):
        raise RuntimeError("this build of autogaze_ext has no gaze() function")
    clock = time.perf_counter()
    frames = read_video(args.video, start=args.start, num_frames=args.frames)
    read_s, clock = time.perf_counter() - clock, time.perf_counter()
    model = autogaze_ext.AutoGaze.from_pretrained(model_ref).to(device).eval()
    load_s, clock = time.perf_counter() - clock, time.perf_counter()
    with torch.no_grad():
        result = autogaze_ext.gaze(frames, model, gazing_ratio=args.ratio,
                                   task_loss_requirement=args.threshold, mode=args.mode,
                                   device=device)
        result = _to_cpu(result)
    gaze_s = time.perf_counter() - clock

    stats = visualize.coverage_stats(result)
    t, h, w = frames.shape[:3]
    print(f"video   {args.video}: frames {args.start}..{args.start + t - 1} ({t}), {w}x{h}, "
          f"read {read_s:.2f} s")
    print(f"model   {model_ref}: {stats['candidates_per_frame']} candidates per frame, "
          f"load {load_s:.2f} s, device {device}")
    print(f"gaze    mode {args.mode}, ratio {_or_default(args.ratio)}, "
          f"threshold {_threshold_text(result)}: {gaze_s:.2f} s")
    print(f"tokens  per frame: {' '.join(map(str, stats['tokens_per_frame']))}")
    print(f"total   {stats['total_tokens']} of {stats['candidates']} candidates "
          f"({100 * stats['fraction']:.1f}%); per scale: {_per_scale_text(stats)}")

    run = {"video": str(args.video), "start": args.start, "num_frames": t, "frame_size": [h, w],
           "mode": args.mode, "model": str(model_ref), "ratio": args.ratio,
           "threshold": args.threshold, "device": device}
    if args.out is not None:
        write_result(result, args.out, run)
        print(f"wrote   {args.out}")
    if args.png is not None:
        visualize.gaze_grid_image(frames, result, args.png)
        print(f"wrote   {args.png}")
    if args.overlay_video is not None:
        fps = round(video_info(args.video).fps) or 25
        visualize.save_overlay_video(frames, result, args.overlay_video, fps=fps)
        print(f"wrote   {args.overlay_video}")
    return 0


def _or_default(value) -> str:
    return "model default" if value is None else f"{value:g}"


def _threshold_text(result) -> str:
    """The task-loss requirement the result was made with ("none" when gazing by ratio only)."""
    used = result.get("task_loss_requirement")
    if used is None:
        return "none"
    values = sorted(set(used.flatten().tolist()))
    return " ".join(f"{v:g}" for v in values)


def _per_scale_text(stats: dict) -> str:
    labels = [f"{s}px" for s in stats["scales"] or []] or [f"grid {g}" for g in stats["grid_sides"]]
    return ", ".join(f"{label} {n}" for label, n in zip(labels, stats["tokens_per_scale"]))


# ---- result files ---------------------------------------------------------------------------

def _to_cpu(result):
    """The result with every tensor (also inside lists) moved to the CPU."""
    def move(value):
        if hasattr(value, "detach"):
            return value.detach().cpu()
        if isinstance(value, list):
            return [move(v) for v in value]
        return value
    return type(result)({key: move(value) for key, value in result.items()})


def ids_per_frame(result) -> list[list[int]]:
    """Local ids gazed in each frame, in generation order: ``ids[offsets[t]:offsets[t+1]]``."""
    ids, offsets = result["ids"].tolist(), result["frame_offsets"].tolist()
    return [ids[a:b] for a, b in zip(offsets, offsets[1:])]


def write_result(result, path: Path, run: dict) -> None:
    """Write a gaze result with the command's settings ``run``.

    ``.json``: ``{"run": …, "ids_per_frame": [[ids of frame 0], …], <every result field as
    lists, masks as 0/1 ints>}``. ``.safetensors``: the tensor fields (mask of scale i as
    ``gazing_mask.<i>``); ``run`` and the other fields as JSON strings in the metadata.
    """
    import torch

    if path.suffix.lower() == ".json":
        doc = {"run": run, "ids_per_frame": ids_per_frame(result)}
        for key, value in result.items():
            if key == "gazing_mask":
                value = [m.to(torch.uint8) for m in value]
            doc[key] = _jsonable(value)
        path.write_text(json.dumps(doc) + "\n")
        return
    from .checkpoint import save_safetensors

    tensors, metadata = {}, {"format": "pt", "run": json.dumps(run)}
    for key, value in result.items():
        if isinstance(value, torch.Tensor):
            tensors[key] = value
        elif isinstance(value, list) and value and all(isinstance(v, torch.Tensor) for v in value):
            tensors.update({f"{key}.{i}": v for i, v in enumerate(value)})
        else:
            metadata[key] = json.dumps(_jsonable(value), default=str)
    save_safetensors(tensors, path, metadata=metadata)


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
