"""Command line: ``autogaze gaze|stream VIDEO …``, ``autogaze corpus INPUT… --out DIR``,
``autogaze info|bench`` (also ``python -m autogaze_ext``).

One module per command (``gaze``, ``stream``, ``corpus``, ``info``, ``bench``), each with an
``add_parser(commands)`` and its ``run_*`` function; ``common`` holds the shared argument
types, model/device resolution and video opening, ``results`` the result-file writers.

User mistakes (missing files, bad options, no model) print one line on stderr and exit with 2;
run-time failures (e.g. out of GPU memory) exit with 1; neither prints a traceback.
"""

from __future__ import annotations

import argparse
import sys

from . import bench, corpus, gaze, info, stream
# Re-exported so that code importing them from the former single-module cli keeps working.
from .bench import run_bench
from .common import (MODEL_ENV, NO_MODEL_MESSAGE, UsageError, _check_ratio_and_loss,
                     _check_video_file, _frames_arg, _load_model, _model_args, _model_ref,
                     _one_line, _open_video, _or_default, _pick_device, _pix_fmt_notes,
                     _size_arg, _sync, _to_cpu)  # noqa: F401
from .corpus import run_corpus
from .gaze import _decode, run_gaze  # noqa: F401
from .info import run_info
from .results import RESULT_SUFFIXES, _write_all_or_nothing, ids_per_frame, write_result  # noqa: F401
from .stream import _file_frames, _raw_frames, run_stream  # noqa: F401

__all__ = ["MODEL_ENV", "NO_MODEL_MESSAGE", "RESULT_SUFFIXES", "UsageError", "build_parser",
           "ids_per_frame", "main", "run_bench", "run_corpus", "run_gaze", "run_info",
           "run_stream", "write_result"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autogaze", description="AutoGaze patch selection for videos.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in (info, bench, gaze, stream, corpus):
        command.add_parser(commands)
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
