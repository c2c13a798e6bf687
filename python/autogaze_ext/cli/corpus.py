"""``autogaze corpus INPUT... --out DIR``: gaze a whole corpus on Ray (see ``autogaze_ext.corpus``).

Exit codes: 0 every input gazed, 3 finished with entries in the errors table, 2 a usage
mistake (including other settings in --out, or Ray missing), 1 a failure of the run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import UsageError, _frames_arg

EXIT_WITH_ERRORS = 3


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0; got {text}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0; got {text}")
    return value


def add_parser(commands) -> None:
    """Register ``autogaze corpus`` on the subparsers ``commands``."""
    corpus = commands.add_parser(
        "corpus", help="gaze a whole video corpus on Ray into Parquet shards (resumable)",
        description="Gaze every 16-frame clip of every input video on Ray Data (decoding in CPU "
                    "tasks, gazing in an actor pool) into Parquet shards under --out, each "
                    "clip exactly once. Rerun the same command to resume. Needs "
                    "pip install 'autogaze_ext[corpus]'.")
    corpus.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="video files, folders (searched recursively), globs, or manifests "
                             "(.txt: a path a line; .csv/.tsv/.parquet with a path column)")
    corpus.add_argument("--out", type=Path, required=True, help="output folder of the corpus")
    corpus.add_argument("--model", help="checkpoint folder or hub id, the same on every node "
                                        "(default: the bundled default model)")
    corpus.add_argument("--ratio", type=float, help="gazing ratio in (0, 1] (default: the model's)")
    corpus.add_argument("--loss", "--threshold", dest="loss", type=float,
                        help="task-loss requirement (--threshold is an alias)")
    corpus.add_argument("--mode", choices=("resize", "tile"), default="resize")
    corpus.add_argument("--target-scales", type=int, nargs="+", metavar="PX",
                        help="gaze at these scales (resize mode only)")
    corpus.add_argument("--target-patch-size", type=int, metavar="P")
    corpus.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    corpus.add_argument("--frames", type=_frames_arg, metavar="A:B|N",
                        help="source frames A..B-1, or the first N, of every video (default: all)")
    sampling = corpus.add_mutually_exclusive_group()
    sampling.add_argument("--stride", type=int, default=1, help="every N-th frame (default: 1)")
    sampling.add_argument("--fps", type=_positive_float,
                          help="resample faster videos to this frame rate")
    corpus.add_argument("--clips-per-unit", type=int, default=8, metavar="N",
                        help="16-frame clips per work unit and shard (default: 8)")
    corpus.add_argument("--batch-size", type=int, default=16,
                        help="clips per model call (default: 16)")
    corpus.add_argument("--address", help="Ray cluster to join: auto or HOST:PORT (default: "
                                          "start Ray on this machine)")
    corpus.add_argument("--workers", type=int, help="gaze actors (default: one per GPU, "
                                                    "else half the CPUs)")
    corpus.add_argument("--gpus-per-worker", type=_fraction, metavar="G",
                        help="GPUs per gaze actor, fractional allowed (default: 1 when the "
                             "cluster has GPUs, else 0)")
    corpus.add_argument("--cpus-per-worker", type=_positive_float, default=1.0, metavar="C")
    corpus.add_argument("--decode-cpus", type=_positive_float, default=1.0, metavar="C",
                        help="CPUs per decode task (default: 1)")
    corpus.add_argument("--attempts", type=int, default=3,
                        help="tries per unit for decoding and for gazing (default: 3)")
    corpus.add_argument("--retry-errors", action="store_true",
                        help="try the units in the errors table again")
    corpus.add_argument("--overwrite", action="store_true",
                        help="replace a corpus with other settings in --out")
    corpus.add_argument("--quiet", action="store_true", help="no progress bars")
    corpus.set_defaults(run=run_corpus)


def _settings(args: argparse.Namespace):
    from ..corpus import CorpusSettings

    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be >= 1; got {args.workers}")
    if (args.target_scales is None) != (args.target_patch_size is None):
        raise UsageError("--target-scales and --target-patch-size must be given together")
    try:
        return CorpusSettings(mode=args.mode, gazing_ratio=args.ratio,
                              task_loss_requirement=args.loss,
                              target_scales=args.target_scales,
                              target_patch_size=args.target_patch_size, dtype=args.dtype,
                              frames=args.frames, stride=args.stride, fps=args.fps,
                              clips_per_unit=args.clips_per_unit, batch_size=args.batch_size)
    except ValueError as err:  # name the option, not the field
        names = {"gazing_ratio": "--ratio", "task_loss_requirement": "--loss",
                 "clips_per_unit": "--clips-per-unit", "batch_size": "--batch-size",
                 "target_scales": "--target-scales", "stride": "--stride", "frames": "--frames"}
        text = str(err)
        for field, option in names.items():
            text = text.replace(field, option)
        raise UsageError(text) from None


def run_corpus(args: argparse.Namespace) -> int:
    from .. import corpus  # ImportError names the extra to install

    settings = _settings(args)
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} exists and is not a folder")
    if args.model is None:
        print("autogaze: using the bundled default model; official checkpoints (--model "
              "nvidia/AutoGaze or a folder) are recommended when available", file=sys.stderr)
    try:
        summary = corpus.run(args.inputs, args.out, model=args.model, settings=settings,
                             address=args.address, workers=args.workers,
                             gpus_per_worker=args.gpus_per_worker,
                             cpus_per_worker=args.cpus_per_worker, decode_cpus=args.decode_cpus,
                             attempts=args.attempts, retry_errors=args.retry_errors,
                             overwrite=args.overwrite, progress=not args.quiet)
    except corpus.CorpusError as err:
        raise UsageError(str(err)) from None
    print(summary.text(), end="")
    return EXIT_WITH_ERRORS if summary.errors else 0
