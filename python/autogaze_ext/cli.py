"""Command line: ``autogaze gaze|stream VIDEO …``, ``autogaze info|bench`` (also
``python -m autogaze_ext``).

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
    "no model: pass --model with a checkpoint folder (config.json, model.safetensors, "
    f"preprocessor_config.json) or a hub id such as nvidia/AutoGaze, or set ${MODEL_ENV}")


class UsageError(Exception):
    """A mistake in the command line: reported on stderr with exit code 2."""


# ---- parser ---------------------------------------------------------------------------------

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autogaze", description="AutoGaze patch selection for videos.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    info = commands.add_parser("info", help="print build information, devices and default model as JSON")
    info.set_defaults(run=run_info)

    bench = commands.add_parser("bench", help="time preprocess and gaze on a synthetic 16x224x224 clip")
    _model_args(bench)
    bench.add_argument("--repeat", type=int, default=3, help="timed runs per stage (default: 3)")
    bench.add_argument("--mode", choices=("resize", "tile"), default="resize")
    bench.add_argument("--ratio", type=float, help="gazing ratio in (0, 1] (default: the model's)")
    bench.set_defaults(run=run_bench)

    gaze = commands.add_parser("gaze", help="pick the gazed patches of a video")
    gaze.add_argument("video", help="video file (anything PyAV decodes)")
    _model_args(gaze)
    gaze.add_argument("--ratio", type=float, help="gazing ratio in (0, 1] (default: the model's)")
    gaze.add_argument("--loss", "--threshold", dest="loss", type=float,
                      help="task-loss requirement: stop gazing a frame once reconstruction "
                           "loss is predicted below it (--threshold is an alias)")
    gaze.add_argument("--mode", choices=("resize", "tile"), default="resize",
                      help="resize frames to the model input, or tile them at full resolution")
    gaze.add_argument("--batch-size", type=int, default=16,
                      help="16-frame chunks (or tiles) per model call (default: 16)")
    gaze.add_argument("--target-scales", type=int, nargs="+", metavar="PX",
                      help="gaze at these scales (resize mode only)")
    gaze.add_argument("--target-patch-size", type=int, metavar="P",
                      help="patch size of the target scales (resize mode only)")
    gaze.add_argument("--frames", type=_frames_arg, metavar="A:B|N",
                      help="frames A..B-1, or the first N frames (default: all)")
    gaze.add_argument("--start", type=int, default=0, help="index of the first frame (default: 0)")
    gaze.add_argument("--out", type=Path,
                      help="output folder (gaze.json, gaze.npz, summary.txt); a path ending in "
                           ".json or .safetensors writes that single result file instead")
    gaze.add_argument("--visualize", action="store_true",
                      help="also write overlay.mp4 (input | mask | gazed pixels) and sheet.png "
                           "into the --out folder")
    gaze.add_argument("--force", action="store_true", help="replace an existing --out folder")
    gaze.add_argument("--quiet", action="store_true", help="no progress line")
    gaze.add_argument("--png", type=Path, help="write a contact sheet of overlays (PNG)")
    gaze.add_argument("--video", dest="overlay_video", type=Path, help="write an overlay video (mp4)")
    gaze.set_defaults(run=run_gaze)

    stream = commands.add_parser(
        "stream", help="gaze a video frame by frame (a file, or raw RGB24 frames on stdin)",
        description="Gaze frame by frame with bounded memory; one JSON line per frame. The "
                    "temporal context restarts every --window frames, so the result equals "
                    "offline gazing of consecutive --window-frame clips.")
    stream.add_argument("video", help="video file (anything PyAV decodes), or - for raw RGB24 "
                                      "frames on stdin (needs --size)")
    _model_args(stream)
    stream.add_argument("--size", type=_size_arg, metavar="WxH",
                        help="frame size of raw RGB24 frames on stdin (W*H*3 bytes each)")
    stream.add_argument("--ratio", type=float, help="gazing ratio in (0, 1] (default: the model's)")
    stream.add_argument("--loss", "--threshold", dest="loss", type=float,
                        help="task-loss requirement (--threshold is an alias)")
    stream.add_argument("--window", type=int, metavar="N",
                        help="reset the stream state (KV cache, temporal context) every N frames "
                             "(default: the model's max_num_frames, 16); memory is bounded by it")
    stream.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    stream.add_argument("--jsonl", default="-", metavar="PATH",
                        help="where the per-frame JSON lines go: a file (written to a temporary "
                             "file, renamed at the end) or - for stdout (default)")
    stream.set_defaults(run=run_stream)
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
        print(f"autogaze: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        print(f"autogaze: failed: {_one_line(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


# ---- info -----------------------------------------------------------------------------------

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
    from .default_model import DEFAULT_MODEL_DIR, default_model_name

    if os.environ.get(MODEL_ENV):
        info["default_model"] = os.environ[MODEL_ENV]
        info["default_model_note"] = f"from ${MODEL_ENV}"
    else:
        info["default_model"] = str(DEFAULT_MODEL_DIR)
        info["default_model_note"] = (f"bundled: {default_model_name()} "
                                      f"(see MODEL_CARD.md there; set ${MODEL_ENV} or --model)")
    print(json.dumps(info, indent=2, sort_keys=True, default=str))
    return 0


# ---- shared ---------------------------------------------------------------------------------

def _model_ref(args: argparse.Namespace) -> str:
    """--model, else $AUTOGAZE_MODEL, else the bundled default model (named on stderr)."""
    model = args.model or os.environ.get(MODEL_ENV)
    if model:
        return model
    from .default_model import default_model_name, default_model_path

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


# ---- bench ----------------------------------------------------------------------------------

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
    from .video import synthetic_video

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


# ---- gaze -----------------------------------------------------------------------------------

def _frame_range(args: argparse.Namespace) -> tuple[int, int | None]:
    """First frame and stop (exclusive, None = to the end) from --start and --frames."""
    if args.frames is None:
        return args.start, None
    first, stop = args.frames
    if stop is None:
        return args.start + first, None
    return args.start + first, args.start + stop


def _is_dir_out(out: Path | None) -> bool:
    return out is not None and out.suffix.lower() not in RESULT_SUFFIXES and not out.suffix


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


def _check_gaze_args(args: argparse.Namespace) -> str:
    """Validate the options before any heavy work; returns the model reference."""
    _check_video_file(args.video)
    _check_ratio_and_loss(args)
    if not 1 <= args.batch_size <= 4096:
        raise UsageError(f"--batch-size must be in 1..4096; got {args.batch_size}")
    if args.start < 0:
        raise UsageError(f"--start must be >= 0; got {args.start}")
    if args.target_scales is not None or args.target_patch_size is not None:
        if args.mode != "resize":
            raise UsageError("--target-scales/--target-patch-size work with --mode resize only")
        if args.target_scales is None or args.target_patch_size is None:
            raise UsageError("--target-scales and --target-patch-size must be given together")
        if any(s < 1 for s in [*args.target_scales, args.target_patch_size]):
            raise UsageError("--target-scales/--target-patch-size must be positive")
        if max(args.target_scales) > 8192:
            raise UsageError(f"--target-scales must be at most 8192 px; got {max(args.target_scales)}")
    if args.out is not None and args.out.suffix and not args.out.suffix.lower() in RESULT_SUFFIXES:
        raise UsageError(f"--out must be a folder (no suffix), or end in .json or .safetensors; "
                         f"got {args.out}")
    if args.visualize and not _is_dir_out(args.out):
        raise UsageError("--visualize needs --out FOLDER (overlay.mp4 and sheet.png go there)")
    if _is_dir_out(args.out) and (args.png is not None or args.overlay_video is not None):
        raise UsageError("--png/--video go with --out FILE.json/.safetensors (or no --out); "
                         "with --out FOLDER use --visualize")
    if _is_dir_out(args.out):
        out = args.out
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {out} exists and is not a folder")
        if out.is_dir() and any(out.iterdir()) and not args.force:
            raise UsageError(f"--out {out} exists and is not empty (pass --force to replace it)")
    for path in (args.out, args.png, args.overlay_video):
        if path is not None and not path.resolve().parent.is_dir():
            raise UsageError(f"folder of {path} does not exist")
    return _model_ref(args)


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


def _decode(path: str, first: int, stop: int | None):
    """Decode frames ``first..stop-1`` as RGB; also the source facts. Raises ValueError with a
    one-line reason for unreadable, truncated or empty videos."""
    import av
    import numpy as np

    container = _open_video(path)
    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        ctx = stream.codec_context
        pix_fmt = ctx.pix_fmt or (stream.format.name if stream.format else None)
        header_frames = int(stream.frames or 0)
        rate = stream.average_rate or stream.guessed_rate
        time_base = float(stream.time_base) if stream.time_base else 0.0
        frames, pts, index = [], [], -1
        try:
            for index, frame in enumerate(container.decode(stream)):
                if frame.pts is not None:
                    pts.append(frame.pts)
                if stop is not None and index >= stop:
                    break
                if index >= first:
                    frames.append(frame.to_ndarray(format="rgb24"))
        except av.error.FFmpegError as e:
            raise ValueError(f"cannot decode video {path} (truncated or corrupt?): {e}") from None
        decoded = index + 1
        pix_fmt = pix_fmt or (frame.format.name if decoded else None)
    if decoded == 0:
        raise ValueError(f"video {path} has zero frames")
    if stop is None and header_frames and decoded < header_frames * 0.98 - 1:
        raise ValueError(f"video {path} is truncated: header says {header_frames} frames, "
                         f"only {decoded} decode")
    if not frames:
        raise ValueError(f"video {path} has {decoded} frames; none at index {first} or later")
    steps = np.diff(np.asarray(sorted(pts), dtype=np.float64)) if len(pts) > 2 else np.zeros(0)
    vfr = bool(len(steps) and (steps.max() - steps.min()) > 0.1 * max(np.median(steps), 1))
    fps = float(rate) if rate else 0.0
    if vfr and time_base:  # the typical rate, from the median frame step
        fps = 1.0 / (float(np.median(steps)) * time_base)
    source = {"path": str(path), "width": int(frames[0].shape[1]), "height": int(frames[0].shape[0]),
              "pix_fmt": pix_fmt, "fps": fps, "variable_frame_rate": vfr,
              "frames_in_file": header_frames or None}
    return np.stack(frames), source


def _check_frames_for_model(frames, source: dict, model) -> list[str]:
    """Reject frames the model can't use; return warnings (one line each) for odd inputs."""
    h, w = frames.shape[1:3]
    smallest = min(model.scales)
    if min(h, w) < smallest:
        raise UsageError(f"frames are {w}x{h}, smaller than the model's smallest scale "
                         f"({smallest}x{smallest} px)")
    notes = _pix_fmt_notes(source["pix_fmt"])
    if h % 2 or w % 2:
        notes.append(f"odd frame size {w}x{h}: kept as is (visual outputs are cropped to even)")
    if source["variable_frame_rate"]:
        notes.append(f"variable frame rate: frames used in decode order, overlay at "
                     f"{source['fps']:.2f} fps")
    return notes


class _Progress:
    """One stderr line per chunk batch (tqdm when installed and stderr is a terminal)."""

    def __init__(self, total: int, quiet: bool):
        self.total, self.done, self.quiet, self.bar = total, 0, quiet, None
        if not quiet and sys.stderr.isatty():
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="frame", desc="gaze", file=sys.stderr)
            except ImportError:
                pass

    def update(self, n: int, seconds: float) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif not self.quiet:
            print(f"gaze    {self.done}/{self.total} frames ({100 * self.done / self.total:.0f}%), "
                  f"{seconds:.2f} s", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _gaze_in_spans(frames, model, args, device: str, progress: _Progress):
    """``gaze()`` span by span (``batch_size`` 16-frame chunks each, as gaze() batches them
    itself) so progress can be shown; returns per-span results on the CPU."""
    import torch

    import autogaze_ext

    clip_len = model.config.max_num_frames
    span = clip_len * args.batch_size
    parts = []
    with torch.no_grad():
        for first in range(0, len(frames), span):
            clock = time.perf_counter()
            part = autogaze_ext.gaze(frames[first:first + span], model, gazing_ratio=args.ratio,
                                     task_loss_requirement=args.loss, mode=args.mode,
                                     device=device, batch_size=args.batch_size,
                                     **_target_kwargs(args))
            _sync(device)
            parts.append(_to_cpu(part))
            progress.update(min(span, len(frames) - first), time.perf_counter() - clock)
    return parts


def _target_kwargs(args: argparse.Namespace) -> dict:
    """``target_scales``/``target_patch_size`` for ``gaze()`` (none when not asked for)."""
    if args.target_scales is None:
        return {}
    return {"target_scales": args.target_scales, "target_patch_size": args.target_patch_size}


def _merge(parts) -> dict:
    """Per-span results → ``{"masks": [(T, n_s) uint8], "ids": [[ids of frame t]], "loss": (T,)|None}``."""
    import numpy as np

    masks = [np.concatenate([p["gazing_mask"][s].reshape(-1, p["gazing_mask"][s].shape[-1]).numpy()
                             for p in parts]).astype(np.uint8)
             for s in range(len(parts[0]["gazing_mask"]))]
    ids = [row for p in parts for row in ids_per_frame(p)]
    loss = None
    if parts[0].get("task_loss_requirement") is not None:
        loss = np.concatenate([p["task_loss_requirement"].reshape(-1).float().numpy() for p in parts])
    return {"masks": masks, "ids": ids, "loss": loss, "first": parts[0]}


def _tile_counts(masks, grids, rows: int, cols: int):
    """Gazed cells per frame and tile: int ``(T, rows, cols)``."""
    import numpy as np

    total = 0
    for mask, (gr, gc) in zip(masks, grids):
        g = mask.reshape(len(mask), rows, gr // rows, cols, gc // cols)
        total = total + g.sum((2, 4))
    return np.asarray(total, dtype=np.int64)


def run_gaze(args: argparse.Namespace) -> int:
    model_ref = _check_gaze_args(args)
    device = _pick_device(args.device)
    if not _is_dir_out(args.out):
        return _run_gaze_single(args, model_ref, device)
    return _run_gaze_dir(args, model_ref, device)


def _run_gaze_dir(args: argparse.Namespace, model_ref: str, device: str) -> int:
    """Gaze, then write gaze.json, gaze.npz, summary.txt (and the visuals) into a temporary
    folder next to --out, renamed into place only when everything is written."""
    import shutil
    import tempfile

    import numpy as np

    import autogaze_ext

    timing = {}
    clock = time.perf_counter()
    first, stop = _frame_range(args)
    frames, source = _decode(str(args.video), first, stop)
    timing["decode"] = time.perf_counter() - clock
    clock = time.perf_counter()
    model = _load_model(model_ref, device)
    timing["load_model"] = time.perf_counter() - clock
    for note in _check_frames_for_model(frames, source, model):
        print(f"autogaze: note: {note}", file=sys.stderr)

    clock = time.perf_counter()
    progress = _Progress(len(frames), args.quiet)
    try:
        parts = _gaze_in_spans(frames, model, args, device, progress)
    finally:
        progress.close()
    timing["gaze"] = time.perf_counter() - clock
    merged = _merge(parts)
    masks, ids, T = merged["masks"], merged["ids"], len(frames)
    grids = [tuple(int(v) for v in g) for g in merged["first"]["scale_grids"]]
    per_frame_total = sum(r * c for r, c in grids)
    counts = np.stack([m.sum(1) for m in masks], 1).astype(np.int64)  # (T, S)
    kept = int(counts.sum())
    clip_len = int(model.config.max_num_frames)
    size = int(model.config.vision.input_img_size)
    rows = cols = 1
    if args.mode == "tile":
        rows, cols = math.ceil(frames.shape[1] / size), math.ceil(frames.shape[2] / size)
    tiles = _tile_counts(masks, grids, rows, cols)
    num_chunks = math.ceil(T / clip_len)

    doc = {
        "format": "autogaze-gaze/1",
        "autogaze_ext_version": getattr(autogaze_ext, "__version__", None),
        "source": source,
        "settings": {"mode": args.mode, "ratio": args.ratio, "loss": args.loss,
                     "batch_size": args.batch_size, "device": device, "clip_len": clip_len,
                     "target_scales": args.target_scales,
                     "target_patch_size": args.target_patch_size,
                     "frames": [first, first + T]},
        "model": {"ref": str(model_ref), "scales": [int(s) for s in model.scales],
                  "input_size": size, "tokens_per_frame": per_frame_total,
                  "scale_grids": [list(g) for g in grids]},
        "tiles": {"rows": rows, "cols": cols, "size": size},
        "chunks": [{"index": c, "frames": [first + c * clip_len, first + min(T, (c + 1) * clip_len)],
                    "padded_frames": max(0, (c + 1) * clip_len - T),
                    "tokens": int(counts[c * clip_len:(c + 1) * clip_len].sum())}
                   for c in range(num_chunks)],
        "frames": [{"index": first + t, "ids": ids[t], "count": int(counts[t].sum()),
                    "per_scale": counts[t].tolist(),
                    "kept_percent": 100 * float(counts[t].sum()) / per_frame_total,
                    **({"tiles": tiles[t].tolist()} if args.mode == "tile" else {}),
                    **({"loss": float(merged["loss"][t])} if merged["loss"] is not None else {})}
                   for t in range(T)],
        "tokens": {"kept": kept, "candidates": per_frame_total * T,
                   "kept_percent": 100 * kept / (per_frame_total * T),
                   "per_scale": counts.sum(0).tolist()},
        "timing_s": timing,
    }

    out = args.out
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.resolve().parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)
    try:
        clock = time.perf_counter()
        flat_ids = np.asarray([i for row in ids for i in row], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum([len(r) for r in ids])]).astype(np.int64)
        arrays = {"ids": flat_ids, "frame_offsets": offsets, "counts": counts,
                  "frame_index": np.arange(first, first + T, dtype=np.int64),
                  "tile_counts": tiles}
        arrays.update({f"gazing_mask_{s}": m for s, m in enumerate(masks)})
        if merged["loss"] is not None:
            arrays["task_loss_requirement"] = merged["loss"]
        np.savez_compressed(tmp / "gaze.npz", **arrays)
        timing["write"] = time.perf_counter() - clock
        outputs = ["gaze.json", "gaze.npz", "summary.txt"]
        if args.visualize:
            from . import visualize

            clock = time.perf_counter()
            visual = {"gazing_mask": masks, "scale_grids": grids}
            visualize.save_three_panel_video(frames, visual, tmp / "overlay.mp4",
                                             fps=source["fps"] or 25, first_index=first)
            visualize.gaze_grid_image(frames, visual, tmp / "sheet.png", max_frames=8)
            timing["visualize"] = time.perf_counter() - clock
            outputs += ["overlay.mp4", "sheet.png"]
        doc["outputs"] = outputs
        summary = _summary_text(doc)
        (tmp / "gaze.json").write_text(json.dumps(doc, indent=1) + "\n")
        (tmp / "summary.txt").write_text(summary)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(summary, end="")
    print(f"wrote   {out}/ ({', '.join(outputs)})")
    return 0


def _summary_text(doc: dict) -> str:
    src, st, tok, tm = doc["source"], doc["settings"], doc["tokens"], doc["timing_s"]
    lines = [
        f"video   {src['path']}: frames {st['frames'][0]}..{st['frames'][1] - 1} "
        f"({st['frames'][1] - st['frames'][0]}), {src['width']}x{src['height']}, {src['fps']:.2f} fps",
        f"model   {doc['model']['ref']}: scales {doc['model']['scales']}, "
        f"{doc['model']['tokens_per_frame']} candidates per frame, device {st['device']}",
        f"gaze    mode {st['mode']} ({doc['tiles']['rows']}x{doc['tiles']['cols']} tiles), "
        f"ratio {_or_default(st['ratio'])}, loss {'none' if st['loss'] is None else st['loss']}, "
        f"batch {st['batch_size']}, {len(doc['chunks'])} chunks of {st['clip_len']} frames",
        f"tokens  {tok['kept']} of {tok['candidates']} kept ({tok['kept_percent']:.1f}%); "
        f"per scale {tok['per_scale']}",
        "time    " + ", ".join(f"{k} {v:.2f} s" for k, v in tm.items()),
    ]
    return "\n".join(lines) + "\n"


def _run_gaze_single(args: argparse.Namespace, model_ref: str, device: str) -> int:
    """The single-file form: print a summary; --out FILE.json/.safetensors, --png, --video."""
    import torch

    import autogaze_ext
    from . import visualize

    first, stop = _frame_range(args)
    clock = time.perf_counter()
    frames, source = _decode(str(args.video), first, stop)
    read_s, clock = time.perf_counter() - clock, time.perf_counter()
    model = _load_model(model_ref, device)
    load_s, clock = time.perf_counter() - clock, time.perf_counter()
    for note in _check_frames_for_model(frames, source, model):
        print(f"autogaze: note: {note}", file=sys.stderr)
    with torch.no_grad():
        result = autogaze_ext.gaze(frames, model, gazing_ratio=args.ratio,
                                   task_loss_requirement=args.loss, mode=args.mode,
                                   device=device, batch_size=args.batch_size,
                                   **_target_kwargs(args))
        result = _to_cpu(result)
    gaze_s = time.perf_counter() - clock

    stats = visualize.coverage_stats(result)
    t, h, w = frames.shape[:3]
    print(f"video   {args.video}: frames {first}..{first + t - 1} ({t}), {w}x{h}, "
          f"read {read_s:.2f} s")
    print(f"model   {model_ref}: {stats['candidates_per_frame']} candidates per frame, "
          f"load {load_s:.2f} s, device {device}")
    print(f"gaze    mode {args.mode}, ratio {_or_default(args.ratio)}, "
          f"threshold {_threshold_text(result)}: {gaze_s:.2f} s")
    print(f"tokens  per frame: {' '.join(map(str, stats['tokens_per_frame']))}")
    print(f"total   {stats['total_tokens']} of {stats['candidates']} candidates "
          f"({100 * stats['fraction']:.1f}%); per scale: {_per_scale_text(stats)}")

    run = {"video": str(args.video), "start": first, "num_frames": t, "frame_size": [h, w],
           "mode": args.mode, "model": str(model_ref), "ratio": args.ratio,
           "threshold": args.loss, "device": device, "target_scales": args.target_scales,
           "target_patch_size": args.target_patch_size}
    writers = []
    if args.out is not None:
        writers.append((args.out, lambda path: write_result(result, path, run)))
    if args.png is not None:
        writers.append((args.png, lambda path: visualize.gaze_grid_image(frames, result, path)))
    if args.overlay_video is not None:
        writers.append((args.overlay_video, lambda path: visualize.save_overlay_video(
            frames, result, path, fps=round(source["fps"]) or 25)))
    for path in _write_all_or_nothing(writers):
        print(f"wrote   {path}")
    return 0


def _write_all_or_nothing(writers) -> list[Path]:
    """Run ``write(tmp_path)`` for each ``(path, write)`` into a temporary file next to ``path``
    (same suffix), then rename them all into place; on any failure no output is left behind."""
    import tempfile

    done = []
    try:
        for path, write in writers:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.tmp-", suffix=path.suffix,
                                       dir=path.resolve().parent)
            os.close(fd)
            done.append((path, Path(tmp)))
            write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        for path, tmp in done:
            tmp.chmod(0o666 & ~umask)  # mkstemp makes 0600 files
            os.replace(tmp, path)
    except BaseException:
        for _, tmp in done:
            tmp.unlink(missing_ok=True)
        raise
    return [path for path, _ in done]


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


# ---- stream ---------------------------------------------------------------------------------

def _check_stream_args(args: argparse.Namespace) -> str:
    """Validate ``autogaze stream`` options before any heavy work; returns the model reference."""
    if args.video == "-":
        if args.size is None:
            raise UsageError("reading raw RGB24 frames from stdin (-) needs --size WxH")
    else:
        if args.size is not None:
            raise UsageError("--size is for raw frames on stdin (VIDEO = -); a video file knows "
                             "its size")
        _check_video_file(args.video)
    _check_ratio_and_loss(args)
    if args.window is not None and not 1 <= args.window <= 4096:
        raise UsageError(f"--window must be in 1..4096; got {args.window}")
    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError(f"--max-frames must be >= 1; got {args.max_frames}")
    if args.jsonl != "-":
        path = Path(args.jsonl)
        if path.is_dir():
            raise UsageError(f"--jsonl {path} is a folder")
        if not path.resolve().parent.is_dir():
            raise UsageError(f"folder of --jsonl {path} does not exist")
    return _model_ref(args)


def _file_frames(path: str):
    """Decode a video file frame by frame as uint8 (H,W,3) RGB; one-line ValueErrors."""
    import av

    container = _open_video(path)
    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        index = -1
        try:
            for index, frame in enumerate(container.decode(stream)):
                if index == 0:
                    for note in _pix_fmt_notes(frame.format.name):
                        print(f"autogaze: note: {note}", file=sys.stderr)
                yield frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as e:
            raise ValueError(f"cannot decode video {path} after {index + 1} frames (truncated or "
                             f"corrupt?): {e}") from None
    if index < 0:
        raise ValueError(f"video {path} has zero frames")


def _raw_frames(source, width: int, height: int):
    """Raw RGB24 frames of ``width``×``height`` from a binary stream, until it ends."""
    import numpy as np

    size, index = width * height * 3, 0
    while True:
        data = bytearray()
        while len(data) < size:
            piece = source.read(size - len(data))
            if not piece:
                break
            data += piece
        if not data:
            break
        if len(data) < size:
            raise ValueError(f"stdin ended inside frame {index}: got {len(data)} of {size} bytes "
                             f"(is --size {width}x{height} right?)")
        yield np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)
        index += 1
    if index == 0:
        raise ValueError("stdin held no frame (zero bytes)")


def run_stream(args: argparse.Namespace) -> int:
    """``autogaze stream``: one JSON line per frame, then a latency summary."""
    import tempfile

    from .stream import GazeStream, latency_summary

    model_ref = _check_stream_args(args)
    device = _pick_device(args.device)
    model = _load_model(model_ref, device)
    window = args.window or int(model.config.max_num_frames)
    smallest = min(model.scales)
    if args.size is not None and min(args.size) < smallest:
        raise UsageError(f"--size {args.size[0]}x{args.size[1]} is smaller than the model's "
                         f"smallest scale ({smallest}x{smallest} px)")
    if args.video == "-":
        frames = _raw_frames(getattr(sys.stdin, "buffer", sys.stdin), *args.size)
    else:
        frames = _file_frames(args.video)
    gazer = GazeStream(model, gazing_ratio=args.ratio, task_loss_requirement=args.loss,
                       window=window)

    to_stdout = args.jsonl == "-"
    tmp = None
    if to_stdout:
        sink = sys.stdout
    else:
        out = Path(args.jsonl)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.tmp-", dir=out.resolve().parent)
        sink = os.fdopen(fd, "w")
    latencies, kept, interrupted = [], [], False
    try:
        try:
            for index, frame in enumerate(frames):
                if index == 0 and min(frame.shape[:2]) < smallest:
                    h, w = frame.shape[:2]
                    raise UsageError(f"frames are {w}x{h}, smaller than the model's smallest "
                                     f"scale ({smallest}x{smallest} px)")
                result = gazer.push(frame)
                latencies.append(result.latency_ms)
                kept.append(result.kept_percent)
                sink.write(json.dumps(result.to_dict()) + "\n")
                sink.flush()
                if args.max_frames is not None and index + 1 >= args.max_frames:
                    break
        except KeyboardInterrupt:  # the usual end of a live stream: keep what was gazed
            interrupted = True
        if tmp is not None:
            sink.close()
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files
            os.replace(tmp, args.jsonl)
            tmp = None
    finally:
        if tmp is not None:
            sink.close()
            os.unlink(tmp)
    stats = latency_summary(latencies)
    summary = (f"stream  {args.video}: {stats['frames']} frames, window {window} "
               f"({-(-stats['frames'] // window)} windows), device {device}, "
               f"ratio {_or_default(args.ratio)}\n"
               f"latency mean {stats['mean_ms']:.1f} ms, p50 {stats['p50_ms']:.1f} ms, "
               f"p95 {stats['p95_ms']:.1f} ms, max {stats['max_ms']:.1f} ms per frame; "
               f"kept {sum(kept) / len(kept):.1f}% of the candidates on average\n")
    if interrupted:
        summary += "stopped by Ctrl-C\n"
    if not to_stdout:
        summary += f"wrote   {args.jsonl}\n"
    print(summary, end="", file=sys.stderr if to_stdout else sys.stdout)
    return 0


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
