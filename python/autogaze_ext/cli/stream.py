"""``autogaze stream VIDEO|-``: gaze frame by frame with bounded memory, one JSON line per frame."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..config import STOP_BY
from .common import (UsageError, _check_ratio_and_loss, _check_video_file, _load_model,
                     _model_args, _model_ref, _open_video, _or_default, _pick_device,
                     _pix_fmt_notes, _size_arg)


def add_parser(commands) -> None:
    """Register ``autogaze stream`` on the subparsers ``commands``."""
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
    stream.add_argument("--stop-by", choices=tuple(STOP_BY),
                        help="under a requirement, stop each frame on the head's predicted loss "
                             "or on the measured Paint loss (default: the model's config)")
    stream.add_argument("--window", type=int, metavar="N",
                        help="reset the stream state (KV cache, temporal context) every N frames "
                             "(default: the model's max_num_frames, 16); memory is bounded by it")
    stream.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    stream.add_argument("--jsonl", default="-", metavar="PATH",
                        help="where the per-frame JSON lines go: a file (written to a temporary "
                             "file, renamed at the end) or - for stdout (default)")
    stream.set_defaults(run=run_stream)


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

    from ..stream import GazeStream, latency_summary

    model_ref = _check_stream_args(args)
    device = _pick_device(args.device)
    model = _load_model(model_ref, device)
    if args.stop_by:
        model.stop_by = args.stop_by
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
