"""Shared pieces of the ``autogaze`` commands: argument types and groups, the usage-error type,
model and device resolution, video opening and pixel-format notes."""

from __future__ import annotations

import argparse
import math
import os
import sys

MODEL_ENV = "AUTOGAZE_MODEL"
NO_MODEL_MESSAGE = (
    "no model: pass --model with a checkpoint folder (config.json, model.safetensors, "
    f"preprocessor_config.json) or a hub id such as nvidia/AutoGaze, or set ${MODEL_ENV}")


class UsageError(Exception):
    """A mistake in the command line: reported on stderr with exit code 2."""


def _frames_arg(text: str) -> tuple[int, int | None]:
    """``--frames``: ``N`` (the first N frames from --start) or ``A:B`` (frames A..B-1; B may be
    left out for "to the end"). Returns ``(A, B)`` with A relative to --start when N is given."""
    try:
        if ":" not in text:
            n = int(text)
            if n < 1:
                raise argparse.ArgumentTypeError(f"must be >= 1; got {text}")
            return (0, n)
        a, b = text.split(":", 1)
        first, stop = int(a or 0), (int(b) if b else None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or A:B (frame indices); got {text!r}") from None
    if first < 0 or (stop is not None and stop <= first):
        raise argparse.ArgumentTypeError(f"A:B needs 0 <= A < B; got {text!r}")
    return (first, stop)


def _size_arg(text: str) -> tuple[int, int]:
    """``--size WxH`` → ``(W, H)``."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH (e.g. 640x480); got {text!r}") from None
    if not (1 <= w <= 16384 and 1 <= h <= 16384):
        raise argparse.ArgumentTypeError(f"width and height must be in 1..16384; got {text!r}")
    return w, h


def _model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help=f"checkpoint folder or hub id (default: ${MODEL_ENV}, "
                        "else the bundled default model)")
    parser.add_argument("--device", choices=("cpu", "cuda"),
                        help="default: cuda when available, else cpu")


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _model_ref(args: argparse.Namespace) -> str:
    """--model, else $AUTOGAZE_MODEL, else the bundled default model (named on stderr)."""
    model = args.model or os.environ.get(MODEL_ENV)
    if model:
        return model
    from ..default_model import default_model_name, default_model_path

    try:
        path = default_model_path()
    except FileNotFoundError as err:
        raise UsageError(f"{NO_MODEL_MESSAGE} ({err})") from None
    print(f"autogaze: using the bundled default model ({default_model_name()}); official "
          "checkpoints (--model nvidia/AutoGaze or a folder) are recommended when available",
          file=sys.stderr)
    return str(path)


def _pick_device(name: str | None) -> str:
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda, but CUDA is not available to torch")
    return name or ("cuda" if torch.cuda.is_available() else "cpu")


def _load_model(model_ref: str, device: str):
    import autogaze_ext

    if not hasattr(autogaze_ext, "gaze"):
        raise RuntimeError("this build of autogaze_ext has no gaze() function")
    looks_like_path = model_ref.startswith((".", "/", "~")) or model_ref.count("/") != 1
    if os.path.exists(model_ref) and not os.path.isdir(model_ref):
        raise UsageError(f"--model {model_ref}: not a checkpoint folder")
    if not os.path.exists(model_ref) and looks_like_path:
        raise UsageError(f"--model {model_ref}: checkpoint folder not found")
    return autogaze_ext.AutoGaze.from_pretrained(model_ref).to(device).eval()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _check_video_file(path: str) -> None:
    if not os.path.exists(path):
        raise UsageError(f"video file not found: {path}")
    if not os.path.isfile(path):
        raise UsageError(f"not a file: {path}")
    if not os.access(path, os.R_OK):
        raise UsageError(f"video file not readable: {path}")


def _check_ratio_and_loss(args: argparse.Namespace) -> None:
    if args.ratio is not None and not (0 < args.ratio <= 1):
        raise UsageError(f"--ratio must be in (0, 1]; got {args.ratio}")
    if args.loss is not None and not (math.isfinite(args.loss) and args.loss >= 0):
        raise UsageError(f"--loss/--threshold must be a finite number >= 0; got {args.loss}")


def _open_video(path: str):
    """An open PyAV container with at least one video stream; one-line ValueErrors."""
    import av

    try:
        container = av.open(path)
    except (av.error.FFmpegError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read video {path}: not a video file or truncated ({e})") from None
    if not container.streams.video:
        container.close()
        raise ValueError(f"no video stream in {path}")
    return container


def _pix_fmt_notes(fmt: str | None) -> list[str]:
    """One-line notes for pixel formats that are converted (grayscale, alpha)."""
    fmt = (fmt or "").lower()
    notes = []
    if fmt.startswith(("gray", "ya", "y8", "mono")) or fmt == "pal8":
        notes.append(f"grayscale video ({fmt}): gazing on it as RGB")
    if fmt.startswith(("rgba", "bgra", "argb", "abgr", "yuva", "ya", "gbrap", "rgb32", "bgr32")):
        notes.append(f"video has an alpha channel ({fmt}): alpha dropped")
    return notes


def _or_default(value) -> str:
    return "model default" if value is None else f"{value:g}"


def _to_cpu(result):
    """The result with every tensor (also inside lists) moved to the CPU."""
    def move(value):
        if hasattr(value, "detach"):
            return value.detach().cpu()
        if isinstance(value, list):
            return [move(v) for v in value]
        return value
    return type(result)({key: move(value) for key, value in result.items()})
