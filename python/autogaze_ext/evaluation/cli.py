"""``autogaze-eval``: compare a gaze model with baselines on held-out clips.

Example (held-out windows: the last 20 % of each clip's first 128 frames)::

    autogaze-eval --model DIR --videos a.mp4 b.mp4 --tail 0.2 --clips 2 --task paint --out eval/

Clips are ``--frames``-long windows starting at ``--start-frame`` (then every ``--frames`` frames,
``--clips`` per video; ``--tail 0.2`` starts them instead where ``autogaze-train``'s held-out part
of each video begins: the last 20 % of its first 128 frames) and/or ``--synthetic N`` synthetic
clips; a video too short for one window is skipped with a warning; each is preprocessed as the model
does (``model.preprocess``, then bicubic to the largest scale). Methods are run at every budget of
a grid (see :mod:`.metrics`), scored by the task (``paint``: ``PaintReconstruction``; ``mae``: the
MAE reconstruction task loaded from ``--mae DIR``). The greedy oracle always optimises the paint
loss (a greedy search under the MAE would be prohibitively slow).

Writes into ``--out`` (only once everything is computed; nothing is half-written):

* ``results.json``: ``{"task", "model", "clips", "frames", "num_tokens", "ratios", "budgets",
  "target", "target_source", "methods": {name: {"loss_at_ratio": {ratio: loss},
  "loss_curve": [loss per budget], "patches_needed": {"mean", "median", "mean_capped",
  "not_reached", "frames"}}}, "comparisons": {"<other>_over_model": ratio of patches needed},
  "checks": {name: bool} (the issue's targets), "calibration": {"pearson", "spearman", "points",
  "bins": [{"pred", "real", "count"}]} or null}``;
* ``results.md``: the same as a markdown table;
* ``loss_vs_ratio.png``: mean frame loss vs gazing ratio per method;
* ``calibration.png``: the task-loss head's prediction vs the real loss (only with ``model``).

Bad arguments print one line on stderr and exit with 2.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from ..config import STOP_BY
from .baselines import METHODS, make_methods
from .metrics import DEFAULT_RATIOS, evaluate, fmt
from .plot import line_chart, scatter_chart
from .threshold import threshold_markdown, threshold_report

FILES = ("results.json", "results.md", "loss_vs_ratio.png", "calibration.png",
         "threshold_loss.png", "threshold_tokens.png")
# The targets of the default model (issue 11, "must" column): (name, comparisons key, the least
# other/model ratio of patches needed, tasks). The threshold targets are in THRESHOLD_CHECKS.
CHECKS = (("model_1.2x_fewer_than_best_heuristic", "best_heuristic_over_model", 1.2, ("paint", "mae")),
          ("model_2x_fewer_than_random", "random_over_model", 2.0, ("paint", "mae")),
          ("model_within_1.6x_of_oracle", "oracle_over_model", 1 / 1.6, ("paint",)))
HEAD_SPEARMAN = 0.6          # task-loss head vs the real loss
WITHIN_SHARE = 0.7           # frames within ±30 % of the requirement
STATIC_TOKENS_PERCENT = 10.0  # tokens in frames identical to the previous one, % of N


class UsageError(Exception):
    """A mistake in the command line (exit code 2)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="autogaze-eval",
                                description="Compare a gaze model with baselines on held-out clips.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="gaze model folder (official format)")
    p.add_argument("--videos", nargs="+", default=[], metavar="PATH", help="video files")
    p.add_argument("--synthetic", type=int, default=0, metavar="N", help="add N synthetic clips")
    p.add_argument("--synthetic-size", type=int, default=256, help="side of the synthetic clips")
    p.add_argument("--clips", type=int, default=1, metavar="N", help="windows per video")
    p.add_argument("--frames", type=int, default=16, help="frames per clip")
    p.add_argument("--start-frame", type=int, default=0, help="first frame of the first window")
    p.add_argument("--tail", type=float, metavar="FRACTION",
                   help="instead of --start-frame: cut the windows from the last FRACTION of each "
                   "video's first --max-frames frames (autogaze-train's held-out 'time' split: 0.2)")
    p.add_argument("--max-frames", type=int, default=128, help="frames per video --tail counts "
                   "(autogaze-train decodes 128)")
    p.add_argument("--frame-stride", type=int, default=1, help="step between frames of a window")
    p.add_argument("--spread", action="store_true", help="spread the --clips windows evenly over "
                   "each video (or its --tail) instead of taking consecutive windows")
    p.add_argument("--static-clips", action="store_true", help="add, for every clip, a copy whose "
                   "second half repeats its middle frame (frames identical to the previous one)")
    p.add_argument("--requirement", type=float, help="threshold behaviour under this task-loss "
                   "requirement (default: the model's own inference requirement, if it has one)")
    p.add_argument("--requirement-ratio", type=float, help="per-frame budget cap with "
                   "--requirement (default: the model's inference gazing ratio)")
    p.add_argument("--stop-by", choices=tuple(STOP_BY), help="under a requirement, stop frames "
                   "on the head's predicted loss or on the measured Paint loss (default: the "
                   "model's config.json setting)")
    p.add_argument("--stop-bound", action="store_true", help="with a requirement, also report "
                   "where a perfect task-loss head would stop the model's gaze at the cap")
    p.add_argument("--task", choices=("paint", "mae"), default="paint")
    p.add_argument("--mae", metavar="DIR", help="MAE task folder (needed for --task mae)")
    p.add_argument("--ratios", type=float, nargs="+", default=list(DEFAULT_RATIOS))
    p.add_argument("--target", type=float, help="loss target; none: random's mean loss at the "
                   "largest ratio")
    p.add_argument("--methods", nargs="+", default=list(METHODS), metavar="NAME",
                   help=f"from {', '.join(METHODS)}")
    p.add_argument("--tol", type=float, default=0.05, help="run-length static tolerance")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("cpu", "cuda"), help="none: cuda when available")
    p.add_argument("--out", required=True, metavar="DIR")
    return p


def check_args(args) -> None:
    """Raise UsageError for every argument mistake that can be seen before loading anything."""
    for name in ("clips", "frames", "frame_stride", "batch_size"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.synthetic < 0 or args.start_frame < 0 or args.synthetic_size < 16:
        raise UsageError("--synthetic and --start-frame must be >= 0, --synthetic-size >= 16")
    if args.tail is not None and not 0 < args.tail <= 1:
        raise UsageError(f"--tail must be a fraction in (0, 1], got {args.tail}")
    if args.max_frames < 1:
        raise UsageError(f"--max-frames must be >= 1, got {args.max_frames}")
    if not args.videos and not args.synthetic:
        raise UsageError("no clips: pass --videos PATH... and/or --synthetic N")
    for path in args.videos:
        if not os.path.isfile(path):
            raise UsageError(f"--videos: file not found: {path}")
    if not os.path.isdir(args.model) or not os.path.isfile(os.path.join(args.model, "config.json")):
        raise UsageError(f"--model: {args.model!r} is not a model folder with config.json")
    if any(not (0 < r <= 1) or not math.isfinite(r) for r in args.ratios):
        raise UsageError(f"--ratios must lie in (0, 1], got {args.ratios}")
    if args.requirement is not None and not (math.isfinite(args.requirement) and args.requirement > 0):
        raise UsageError(f"--requirement must be a finite loss > 0, got {args.requirement}")
    if args.requirement_ratio is not None and not 0 < args.requirement_ratio <= 1:
        raise UsageError(f"--requirement-ratio must lie in (0, 1], got {args.requirement_ratio}")
    if args.target is not None and not (math.isfinite(args.target) and args.target >= 0):
        raise UsageError(f"--target must be a finite loss >= 0, got {args.target}")
    bad = [m for m in args.methods if m not in METHODS]
    if bad or len(set(args.methods)) != len(args.methods):
        raise UsageError(f"--methods: unknown or repeated {bad or args.methods}; choose from {', '.join(METHODS)}")
    if not args.tol >= 0:
        raise UsageError(f"--tol must be >= 0, got {args.tol}")
    if args.stop_bound and args.task != "paint":
        raise UsageError("--stop-bound needs --task paint (it cuts frames on the Paint loss of every prefix)")
    if args.task == "mae" and not args.mae:
        raise UsageError("--task mae needs --mae DIR (the MAE reconstruction task)")
    if args.mae and not os.path.isdir(args.mae):
        raise UsageError(f"--mae: not a folder: {args.mae}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"--out: {args.out} exists and is not a folder")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: CUDA is not available")


def _window_start(args, path) -> tuple[int, int | None]:
    """(first frame, end or None) of the part of ``path`` the windows are cut from."""
    if args.tail is None:
        return args.start_frame, None
    from ..video import video_info
    n = min(video_info(path).num_frames, args.max_frames)
    return n - int(round(n * args.tail)), n


def _window_starts(args, path, start: int, end: int | None) -> list[int]:
    """First frames of the windows cut from ``path``: consecutive from ``start``, or with
    ``--spread`` evenly spaced over [start, end) (end: the video's length)."""
    span = (args.frames - 1) * args.frame_stride + 1
    if not args.spread:
        return [start + i * args.frames * args.frame_stride for i in range(args.clips)]
    from ..video import video_info
    if end is None:
        end = video_info(path).num_frames
    last = end - span
    if last < start:
        return []
    count = min(args.clips, last - start + 1)
    return sorted({round(start + i * (last - start) / max(1, count - 1)) for i in range(count)})


def _cut(args, path) -> tuple[list, str | None]:
    """The windows (uint8 arrays) of one video and, when none could be cut, why."""
    from ..video import read_video
    start, end = _window_start(args, path)
    span = (args.frames - 1) * args.frame_stride + 1
    if args.spread:
        windows = []
        for first in _window_starts(args, path, start, end):
            try:
                frames = read_video(path, start=first, num_frames=args.frames, stride=args.frame_stride)
            except ValueError as e:
                return windows, str(e)
            if len(frames) == args.frames:
                windows.append(frames)
        if not windows:
            return [], f"{path} has no {args.frames}-frame window (span {span}) from frame {start}"
        return windows, None
    try:
        frames = read_video(path, start=start, num_frames=args.clips * args.frames,
                            stride=args.frame_stride)
    except ValueError as e:
        return [], str(e)
    if end is not None:                              # keep inside the tail
        frames = frames[: max(0, (end - start - 1) // args.frame_stride + 1)]
    count = len(frames) // args.frames
    if count == 0:
        return [], (f"{path} has {len(frames)} frames from frame {start}, fewer than "
                    f"--frames {args.frames} (span {span})")
    return [frames[i * args.frames:(i + 1) * args.frames] for i in range(count)], None


def frozen(frames):
    """A copy of a clip whose second half repeats its middle frame (no change at all)."""
    out = frames.copy()
    middle = len(frames) // 2
    out[middle:] = frames[middle - 1]
    return out


def load_clips(args, model, size: int) -> tuple[torch.Tensor, list[str]]:
    """(C, T, 3, size, size) preprocessed clips (video windows, synthetic clips, then the
    ``--static-clips`` copies) and their names. A video too short for one window is skipped with
    a warning (an error when no clip is left)."""
    from ..video import synthetic_video
    raw, names, skipped = [], [], []
    for path in args.videos:
        windows, reason = _cut(args, path)
        if reason and not windows:
            skipped.append(reason)
        raw += windows
        names += [f"{os.path.basename(path)}#{i}" for i in range(len(windows))]
    for reason in skipped:
        print(f"autogaze-eval: warning: skipped: {reason}", file=sys.stderr)
    for k in range(args.synthetic):
        raw.append(synthetic_video(args.frames, args.synthetic_size, args.synthetic_size,
                                   seed=args.seed + k))
        names.append(f"synthetic#{k}")
    if not raw:
        raise UsageError("--videos: no clip could be cut: " + "; ".join(skipped))
    if args.static_clips:
        raw += [frozen(frames) for frames in raw]
        names += [f"{name} (frozen)" for name in names]
    clips = []
    for frames in raw:
        video = model.preprocess(frames)                                 # (T, 3, H, W)
        if tuple(video.shape[-2:]) != (size, size):
            video = F.interpolate(video, size=(size, size), mode="bicubic", align_corners=False)
        clips.append(video)
    return torch.stack(clips), names


def load_mae(path: str, model, device):
    """The MAE reconstruction task saved by ``MAEReconstruction.save_pretrained``; its candidate
    layout (scales, patch size) must be the model's."""
    try:
        from ..tasks.mae import MAEReconstruction
    except ImportError:
        raise UsageError("--task mae: this build has no autogaze_ext.tasks.mae.MAEReconstruction") from None
    try:
        task = MAEReconstruction.from_pretrained(path)
    except (OSError, ValueError, KeyError) as e:
        raise UsageError(f"--mae: cannot load {path}: {e}") from None
    cfg = task.config
    per_scale = [(s // cfg.patch_size) ** 2 for s in cfg.scales]
    if per_scale != list(model.config.tokens_per_scale):
        raise UsageError(f"--mae: the task's scales {list(cfg.scales)} (patch {cfg.patch_size}) give "
                         f"candidates {per_scale}, the model's are {model.config.tokens_per_scale}")
    return task.to(device).eval()


def add_checks(results: dict, task: str) -> dict:
    """The issue's targets that this run measured: name -> met."""
    comp = results["comparisons"]
    checks = {name: bool(comp[key] >= need) for name, key, need, tasks in CHECKS
              if task in tasks and key in comp}
    cal = results.get("calibration")
    if cal and cal.get("spearman") is not None:
        checks[f"head_spearman_at_least_{HEAD_SPEARMAN}"] = bool(cal["spearman"] >= HEAD_SPEARMAN)
    thr = results.get("threshold")
    if thr:
        checks[f"{round(100 * WITHIN_SHARE)}pct_of_frames_within_30pct_of_requirement"] = \
            bool(thr["within"] >= WITHIN_SHARE)
        static = thr["static"]["tokens_mean_percent"]
        if static is not None:
            checks[f"static_frames_at_most_{STATIC_TOKENS_PERCENT:g}pct_tokens"] = \
                bool(static <= STATIC_TOKENS_PERCENT)
    return checks


def markdown(results: dict) -> str:
    """The results as a markdown report (table per method, checks, calibration)."""
    ratios = results["ratios"]
    lines = [f"# AutoGaze evaluation ({results['task']} task)", "",
             f"{results['clips']} clips × {results['frames']} frames, N = {results['num_tokens']} "
             f"candidates per frame; loss target {fmt(results['target'])} ({results['target_source']}).",
             "", "Loss = mean per-frame task loss at a gazing ratio. Patches needed = per frame, ids at "
             "the smallest grid budget with loss ≤ target (mean; not-reached frames count N). "
             "×X = X's patches needed / this method's (> 1: fewer patches than X).", ""]
    others = [o for o in ("random", "frame_difference", "oracle") if o in results["methods"]]
    head = ["method", *[f"loss@{r:g}" for r in ratios], "patches needed", "not reached",
            *[f"×{o}" for o in others]]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in results["methods"].items():
        need = m["patches_needed"]
        row = [name, *[fmt(m["loss_at_ratio"][str(r)]) for r in ratios],
               fmt(need["mean_capped"], 3), f"{need['not_reached']}/{need['frames']}"]
        for o in others:
            mine = need["mean_capped"]
            row.append(fmt(results["methods"][o]["patches_needed"]["mean_capped"] / mine, 3) if mine else "n/a")
        lines.append("| " + " | ".join(row) + " |")
    if results["checks"]:
        lines += ["", "## Targets", ""]
        lines += [f"- {name}: {'PASS' if ok else 'FAIL'}" for name, ok in results["checks"].items()]
    cal = results["calibration"]
    if cal:
        lines += ["", "## Task-loss head", "",
                  f"At each frame's last slot: Pearson {fmt(cal['pearson'], 3)}, Spearman "
                  f"{fmt(cal['spearman'], 3)}, mean bias (predicted − real) {fmt(cal.get('bias'), 3)} "
                  f"over {cal['points']} frames." + (
                      f" After every slot: Pearson {fmt(cal['slots']['slot_pearson'], 3)}, Spearman "
                      f"{fmt(cal['slots']['slot_spearman'], 3)} over {cal['slots']['points']} slots."
                      if cal.get("slots") else ""), "", "| predicted | real | frames |", "|---|---|---|"]
        lines += [f"| {fmt(b['pred'])} | {fmt(b['real'])} | {b['count']} |" for b in cal["bins"]]
    thr = results.get("threshold")
    if thr:
        lines += threshold_markdown(thr)
    if results.get("per_clip"):
        methods = list(results["methods"])
        with_thr = bool(thr) and "tokens_per_frame" in results["per_clip"][0]
        head = ["clip", *methods, *(["tokens/frame at R", "loss at R"] if with_thr else [])]
        lines += ["", "## Per clip", "", "Patches needed (mean over the clip's frames; not reached "
                  "counts N)" + (f"; tokens and loss per frame under requirement {fmt(thr['requirement'])}"
                                 if with_thr else "") + ".", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in results["per_clip"]:
            cells = [row.get("name", "?"), *[fmt(row["patches_needed"][m], 3) for m in methods]]
            if with_thr:
                cells += [fmt(row["tokens_per_frame"], 3), fmt(row["loss"], 3)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def render(results: dict, extras: dict) -> dict[str, bytes]:
    """File name -> bytes of every output."""
    n = results["num_tokens"]
    curves = {name: ([m / n for m in budgets], [float(v) for v in losses])
              for name, (budgets, losses) in extras["curves"].items()}
    files = {
        "results.json": (json.dumps(results, indent=2) + "\n").encode(),
        "results.md": markdown(results).encode(),
        "loss_vs_ratio.png": _png(line_chart(curves, title=f"{results['task']} loss vs gazing ratio",
                                             xlabel="gazing ratio (patches / N)", ylabel="mean frame loss")),
    }
    if extras["calibration_points"] is not None:
        pred, real = extras["calibration_points"]
        bins = [(b["pred"], b["real"]) for b in results["calibration"]["bins"]]
        files["calibration.png"] = _png(scatter_chart(pred.tolist(), real.tolist(), bins,
                                                      title="task-loss head calibration",
                                                      xlabel="predicted loss", ylabel="real loss"))
    if extras.get("threshold_points") is not None:
        pts, thr = extras["threshold_points"], results["threshold"]
        r, tol = thr["requirement"], thr["tolerance"]
        files["threshold_loss.png"] = _png(scatter_chart(
            pts["frame"].tolist(), pts["loss"].tolist(), title="realised loss per frame under the requirement",
            xlabel="frame index in its clip", ylabel="frame loss", diagonal=False,
            hlines=[(r, "requirement"), ((1 - tol) * r, f"-{round(100 * tol)} %"),
                    ((1 + tol) * r, f"+{round(100 * tol)} %")]))
        later = ~torch.isnan(pts["change"])
        bins = [(b["change"], b["tokens"]) for b in (thr["tokens_vs_change"] or {}).get("bins", [])]
        files["threshold_tokens.png"] = _png(scatter_chart(
            pts["change"][later].tolist(), pts["tokens"][later].tolist(), bins,
            title="tokens per frame vs the frame's change", xlabel="mean |frame - previous frame|",
            ylabel="tokens", diagonal=False))
    return files


def write_all(out: Path, files: dict[str, bytes]) -> None:
    """Write every file to a temporary name first, then rename them all."""
    out.mkdir(parents=True, exist_ok=True)
    temps = []
    try:
        for name, data in files.items():
            tmp = out / f".{name}.tmp"
            tmp.write_bytes(data)
            temps.append((tmp, out / name))
        for tmp, final in temps:
            os.replace(tmp, final)
    finally:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)


def run(args) -> dict:
    check_args(args)
    from .. import AutoGaze
    from ..tasks import PaintReconstruction
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        model = AutoGaze.from_pretrained(args.model, device=device)
    except (OSError, ValueError, KeyError) as e:
        raise UsageError(f"--model: cannot load {args.model}: {e}") from None
    if args.stop_by:
        model.stop_by = args.stop_by
    requirement, cap = threshold_settings(args, model)
    if args.stop_bound and requirement is None:
        raise UsageError("--stop-bound needs a requirement: --requirement R (the model has none)")
    paint = PaintReconstruction.from_config(model.config)
    task = paint if args.task == "paint" else load_mae(args.mae, model, device)
    size = max(model.scales)
    clips, names = load_clips(args, model, size)
    methods = make_methods(args.methods, model.config.tokens_per_scale, paint=paint, model=model,
                           tol=args.tol)

    def batches():
        return (clips[i:i + args.batch_size].to(device) for i in range(0, len(clips), args.batch_size))

    results, extras = evaluate(task, methods, batches(), model.num_tokens, ratios=args.ratios,
                               target=args.target, model=model, seed=args.seed)
    results = {"task": args.task, "model": str(args.model), **results}
    for row, name in zip(results["per_clip"], names):
        row["name"] = name
    results["threshold"] = None
    if requirement is not None and "model" in methods:
        summary, points = threshold_report(model, task, batches(), requirement, cap,
                                           stop_bound=args.stop_bound)
        results["threshold"] = _finite(summary)
        extras["threshold_points"] = points
        for c, row in enumerate(results["per_clip"]):
            mine = points["clip"] == c
            row["tokens_per_frame"] = float(points["tokens"][mine].mean())
            row["loss"] = float(points["loss"][mine].mean())
    results["checks"] = add_checks(results, args.task)
    write_all(Path(args.out), render(results, extras))
    return results


def threshold_settings(args, model) -> tuple[float | None, float]:
    """(requirement or None, budget cap ratio) of the threshold report: the arguments, else the
    model's own inference settings (its fixed requirement and gazing ratio)."""
    cfg = model.config
    requirement = args.requirement
    if requirement is None and cfg.has_task_loss_requirement_during_inference:
        setting = cfg.inference_setting("task_loss_requirement_config")
        if setting["sample_strategy_during_inference"] == "fixed":
            requirement = float(setting["fixed"]["task_loss_requirement"])
    cap = args.requirement_ratio
    if cap is None:
        setting = cfg.inference_setting("gazing_ratio_config")
        fixed = setting["sample_strategy_during_inference"] == "fixed"
        cap = float(setting["fixed"]["gazing_ratio"]) if fixed else 1.0
    return requirement, cap


def _finite(value):
    """NaN/inf floats (anywhere in nested dicts/lists) → None, so the JSON stays standard."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        results = run(args)
    except UsageError as e:
        print(f"autogaze-eval: error: {e}", file=sys.stderr)
        return 2
    print(markdown(results), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
