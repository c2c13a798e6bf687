"""Gaze latency per stage (conv encoder, prefill, decode), native vs reference in one process.

    python bench/gaze_stages.py [--device cpu|cuda] [--batch 1] [--ratios 0.75 0.1] [--repeats 3]

Uses the fixture model (release architecture, random weights) on the first 16 frames of the
bundled clip, greedy float32. Prints one row per (ratio, backend) with medians in ms and the ratio
of each stage to the reference path's.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import autogaze_ext as ag
from autogaze_ext import generation
from common import MODEL, first_clip


class StageClock:
    """Accumulates wall time of the prefill calls (synchronising on CUDA)."""

    def __init__(self, device):
        self.device, self.prefill = device, 0.0
        self._inner = generation._prefill

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def __enter__(self):
        def timed(*args, **kwargs):
            self._sync()
            start = time.perf_counter()
            out = self._inner(*args, **kwargs)
            self._sync()
            self.prefill += time.perf_counter() - start
            return out

        generation._prefill = timed
        return self

    def __exit__(self, *exc):
        generation._prefill = self._inner


def measure(model, clip, ratio, backend, repeats):
    device = clip.device
    rows = []
    for _ in range(repeats + 1):  # the first run warms up
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        with torch.no_grad():
            model.embed(clip)
        sync()
        encoder = time.perf_counter() - start
        with StageClock(device) as clock:
            start = time.perf_counter()
            model(clip, gazing_ratio=ratio, backend=backend)
            sync()
            total = time.perf_counter() - start
        rows.append((encoder, clock.prefill, total - encoder - clock.prefill, total))
    return [statistics.median(col) * 1e3 for col in zip(*rows[1:])]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.75, 0.1])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = ag.AutoGaze.from_pretrained(MODEL, device=args.device)
    clip = first_clip(model).expand(args.batch, -1, -1, -1, -1).to(args.device)
    print(f"device {args.device} ({torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu'}), "
          f"batch {args.batch}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{'ratio':>5} {'backend':>9} | {'encoder':>8} {'prefill':>8} {'decode':>8} {'total':>8} "
          f"| decode vs ref  total vs ref")
    for ratio in args.ratios:
        ref = measure(model, clip, ratio, "reference", args.repeats)
        for backend, ms in (("reference", ref), ("native", measure(model, clip, ratio, "native",
                                                                     args.repeats))):
            print(f"{ratio:>5} {backend:>9} | {ms[0]:8.1f} {ms[1]:8.1f} {ms[2]:8.1f} {ms[3]:8.1f} "
                  f"| {ref[2] / ms[2]:13.2f}x {ref[3] / ms[3]:11.2f}x")


if __name__ == "__main__":
    main()
