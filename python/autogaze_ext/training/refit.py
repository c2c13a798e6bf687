"""``python -m autogaze_ext.training.refit {head,readout,scale-prior} CONFIG.toml [section.key=value ...] --out DIR``

Refit one linear head of ``model.init`` on the decoder's fixed features, from the model's own
greedy rollouts of the config's training stream, and save the model with the new head:

* ``head``: the task-loss head, in closed form (``head.fit_head``: relative squared error
  against the real loss after every prefix). Rollouts are drawn as the ``head`` algorithm draws
  them (``algorithm.ratio_*``, ``algorithm.requirement_*``). The gaze without a requirement is
  unchanged; with one, only where frames stop.
* ``readout``: the gaze logits (``lm_head``), by full-batch L-BFGS on the oracle's soft targets at
  every visited state (``readout.fit_readout``), rollouts at the stream's label ratios (one DAgger
  round; rerun on the output for another).

* ``scale-prior``: the gaze logits plus one offset per scale (``--offsets``, coarsest first),
  folded into ``lm_head`` along the direction w with h·w ≈ 1 on the visited states
  (``scale_prior``); the report gives how often the folded readout picks what the exact
  offsets pick.

``--holdout`` further batches of the same stream judge the fit on clips it was not fitted on.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import torch

from ..progress import Progress
from .config import load_config
from .data import ClipDataset
from .head import fit_head, head_data, head_rollout, relative_error
from .readout import fit_readout, pick_quality, readout_data, soft_cross_entropy
from .scale_prior import (constant_direction, fold_report, fold_scale_prior, prior_data,
                          scale_bias)
from .stream import TrainStream
from .trainer import build_model, build_task, task_frame_size


def collect(one, model, stream: TrainStream, positions: range, desc: str) -> dict:
    """``one(batch, position) -> dict of tensors`` over the batches at ``positions``, concatenated."""
    parts = []
    with Progress(len(positions), desc, "batch", every=25) as progress:
        for position in positions:
            batch = stream.batch(position)
            batch = {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            parts.append(one(batch, position))
            progress.update()
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m autogaze_ext.training.refit",
                                     description=__doc__.split("\n\n")[1])
    parser.add_argument("which", choices=("head", "readout", "scale-prior"),
                        help="the head to refit")
    parser.add_argument("config", help="TOML config (data, algorithm; model.init = the model)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides")
    parser.add_argument("--out", required=True, help="folder for the model with the refitted head")
    parser.add_argument("--batches", type=int, default=200, help="batches to fit on (200)")
    parser.add_argument("--holdout", type=int, default=40, help="further batches to judge on (40)")
    parser.add_argument("--ridge", type=float, default=None,
                        help="pull towards the current head (head: 1e-3 per sample; readout: 1e-4); "
                             "scale-prior: the ridge of the fit of w (1e-4)")
    parser.add_argument("--floor", type=float, default=0.02,
                        help="head: losses below it count as it in the relative error (0.02)")
    parser.add_argument("--temperature", type=float, default=0.05,
                        help="readout: soft-target temperature, relative to the best gain (0.05)")
    parser.add_argument("--iterations", type=int, default=100, help="readout: L-BFGS steps (100)")
    parser.add_argument("--offsets", type=_floats, default=None,
                        help="scale-prior: one logit offset per scale, coarsest first, e.g. 0,-2,0,0")
    return parser


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated numbers expected, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    ridge = args.ridge if args.ridge is not None else (1e-3 if args.which == "head" else 1e-4)
    if (args.which == "scale-prior") != (args.offsets is not None):
        print("refit: error: --offsets is given with scale-prior, and only there", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config, list(args.overrides))
        if not cfg.model.init:
            raise ValueError("model.init: the model whose head is refitted must be given")
        if args.batches < 1 or args.holdout < 0:
            raise ValueError(f"--batches must be ≥ 1 and --holdout ≥ 0, got {args.batches}, "
                             f"{args.holdout}")
        if args.floor <= 0 or ridge < 0 or args.temperature <= 0 or args.iterations < 1:
            raise ValueError(f"--floor and --temperature must be > 0, --ridge ≥ 0 and --iterations ≥ 1, "
                             f"got {args.floor}, {args.temperature}, {ridge}, {args.iterations}")
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"refit: error: {e}", file=sys.stderr)
        return 2
    torch.set_flush_denormal(True)
    model = build_model(cfg).eval()
    task = build_task(cfg, model, model.device)
    stream = TrainStream(cfg, ClipDataset(cfg.data, model.processor, task_frame_size(task, model)))
    decoder = model.gazing_model.gaze_decoder
    k = decoder.cfg.num_multi_token_pred
    if args.which == "head":
        module = decoder.task_loss_prediction_head

        def one(batch, position):
            rng = random.Random(cfg.run.seed * 1_000_003 + position)
            return head_data(model, head_rollout(model, task, batch, cfg.algorithm, rng))

        def fit(data, w):
            return fit_head(data, w, floor=args.floor, ridge=ridge)

        def scores(data, w):
            return {"relative_error": relative_error(data, w, args.floor)}
    elif args.which == "scale-prior":
        module = decoder.lm_head
        try:
            bias = scale_bias(model.config.tokens_per_scale, args.offsets, decoder.cfg.vocab_size)
        except ValueError as e:
            print(f"refit: error: --offsets: {e}", file=sys.stderr)
            return 2
        direction = None

        def one(batch, position):
            return prior_data(model, batch["video"], batch["ratios"])

        def fit(data, w):
            nonlocal direction
            direction = constant_direction(data["inputs"], ridge)
            return fold_scale_prior(w, k, bias, direction)

        def scores(data, w):
            if w is before:
                return {}
            return fold_report(data, before, w, k, bias, direction)
    else:
        module = decoder.lm_head

        def one(batch, position):
            return readout_data(model, task, batch, batch["ratios"])

        def fit(data, w):
            return fit_readout(data, w, k, args.temperature, ridge, args.iterations)

        def scores(data, w):
            return {"soft_cross_entropy": soft_cross_entropy(data, w, k, args.temperature),
                    "pick_quality": pick_quality(data, w, k)}

    fitted = collect(one, model, stream, range(args.batches), "rollouts (fit)")
    held = collect(one, model, stream, range(args.batches, args.batches + args.holdout),
                   "rollouts (holdout)") if args.holdout else None
    before = module.weight.detach().clone()
    after = fit(fitted, before)
    report = {"which": args.which, "model": cfg.model.init, "batches": args.batches,
              "holdout": args.holdout, "ridge": ridge, "slots": int(fitted["heads"].numel())}
    report |= ({"floor": args.floor} if args.which == "head" else
               {"offsets": args.offsets} if args.which == "scale-prior" else
               {"temperature": args.temperature, "iterations": args.iterations})
    for name, data in (("fit", fitted), ("holdout", held)):
        if data is not None:
            for key, value in scores(data, before).items():
                report[f"{name}_{key}_before"] = value
            for key, value in scores(data, after).items():
                report[f"{name}_{key}_after"] = value
    with torch.no_grad():
        module.weight.copy_(after.to(module.weight.dtype))
    out = Path(args.out)
    model.save_pretrained(out)
    (out / "refit.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
