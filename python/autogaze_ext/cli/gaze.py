"""``autogaze gaze VIDEO``: gaze one video; a result folder (JSON, npz, summary, visuals) or
single result files."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from ..config import STOP_BY
from ..progress import Progress
from .common import (UsageError, _check_ratio_and_loss, _check_video_file, _frames_arg,
                     _load_model, _model_args, _model_ref, _open_video, _or_default,
                     _pick_device, _pix_fmt_notes, _sync, _to_cpu)
from .results import RESULT_SUFFIXES, _write_all_or_nothing, ids_per_frame, write_result


def add_parser(commands) -> None:
    """Register ``autogaze gaze`` on the subparsers ``commands``."""
    gaze = commands.add_parser("gaze", help="pick the gazed patches of a video")
    gaze.add_argument("video", help="video file (anything PyAV decodes)")
    _model_args(gaze)
    gaze.add_argument("--ratio", type=float, help="gazing ratio in (0, 1] (default: the model's)")
    gaze.add_argument("--loss", "--threshold", dest="loss", type=float,
                      help="task-loss requirement: stop gazing a frame once reconstruction "
                           "loss is predicted below it (--threshold is an alias)")
    gaze.add_argument("--stop-by", choices=tuple(STOP_BY),
                      help="under a requirement, stop each frame on the loss the model's head "
                           "predicts or on the measured Paint loss (default: the model's config)")
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


def _gaze_in_spans(frames, model, args, device: str, progress: Progress):
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
            progress.update(min(span, len(frames) - first),
                            f"{time.perf_counter() - clock:.2f} s")
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
    if args.stop_by:
        model.stop_by = args.stop_by
    for note in _check_frames_for_model(frames, source, model):
        print(f"autogaze: note: {note}", file=sys.stderr)

    clock = time.perf_counter()
    progress = Progress(len(frames), "gaze", "frame", quiet=args.quiet)
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
                     "requirement": (None if merged["loss"] is None
                                     else sorted({round(float(v), 6) for v in np.ravel(merged["loss"])})),
                     "stop_by": model.stop_by,
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
            from .. import visualize

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
        f"ratio {_or_default(st['ratio'])}, loss {_requirement_text(st)}, "
        f"batch {st['batch_size']}, {len(doc['chunks'])} chunks of {st['clip_len']} frames",
        f"tokens  {tok['kept']} of {tok['candidates']} kept ({tok['kept_percent']:.1f}%); "
        f"per scale {tok['per_scale']}",
        "frames  tokens per frame: " + " ".join(str(f["count"]) for f in doc["frames"]),
        "time    " + ", ".join(f"{k} {v:.2f} s" for k, v in tm.items()),
    ]
    return "\n".join(lines) + "\n"


def _requirement_text(settings: dict) -> str:
    """The requirement a run used and what stopped its frames ("none" when gazing by ratio)."""
    used = settings.get("requirement")
    if not used:
        return "none"
    source = "" if settings.get("loss") is not None else " (the model's default)"
    values = " ".join(f"{v:g}" for v in used)
    return f"{values}{source}, frames stopped by {STOP_BY[settings.get('stop_by', 'head')]}"


def _run_gaze_single(args: argparse.Namespace, model_ref: str, device: str) -> int:
    """The single-file form: print a summary; --out FILE.json/.safetensors, --png, --video."""
    import torch

    import autogaze_ext
    from .. import visualize

    first, stop = _frame_range(args)
    clock = time.perf_counter()
    frames, source = _decode(str(args.video), first, stop)
    read_s, clock = time.perf_counter() - clock, time.perf_counter()
    model = _load_model(model_ref, device)
    if args.stop_by:
        model.stop_by = args.stop_by
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
          f"threshold {_threshold_text(result)} (stop by {model.stop_by}): {gaze_s:.2f} s")
    print(f"tokens  per frame: {' '.join(map(str, stats['tokens_per_frame']))}")
    print(f"total   {stats['total_tokens']} of {stats['candidates']} candidates "
          f"({100 * stats['fraction']:.1f}%); per scale: {_per_scale_text(stats)}")

    run = {"video": str(args.video), "start": first, "num_frames": t, "frame_size": [h, w],
           "mode": args.mode, "model": str(model_ref), "ratio": args.ratio,
           "threshold": args.loss, "stop_by": model.stop_by, "device": device,
           "target_scales": args.target_scales, "target_patch_size": args.target_patch_size}
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
