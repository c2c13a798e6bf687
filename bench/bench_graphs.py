"""Gaze latency and throughput with whole-clip CUDA graphs vs eager, in one process (CUDA only).

    python bench/bench_graphs.py [--batches 1 64] [--ratios 0.75 0.1] [--dtypes float32 bfloat16]

Fixture model (release architecture, random weights), the bundled clip repeated to the batch,
greedy. One row per (dtype, batch, ratio, backend): eager and graph-replay medians in ms per call,
clips/s, and the speed-up over the eager reference path of the same row group.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import autogaze_ext as ag
from common import MODEL, first_clip


def median_ms(fn, repeats):
    fn()  # warm-up (and capture for graphs)
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.75, 0.1])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_graphs.py needs a CUDA device")
    print(f"device: {torch.cuda.get_device_name()}")
    print(f"{'dtype':9} {'B':>4} {'ratio':>5} {'backend':9} {'eager ms':>9} {'graph ms':>9} "
          f"{'clips/s':>9} {'vs ref eager':>12}")
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        model = ag.AutoGaze.from_pretrained(MODEL, device="cuda", dtype=dtype)
        one = first_clip(model).to("cuda", dtype)
        for batch in args.batches:
            clip = one.expand(batch, *one.shape[1:]).contiguous()
            for ratio in args.ratios:
                base = None
                for backend in ("reference", "native"):
                    call = lambda graph: model(clip, gazing_ratio=ratio, backend=backend,
                                               cuda_graph=graph)
                    eager = median_ms(lambda: call(False), args.repeats)
                    graph = median_ms(lambda: call(True), args.repeats)
                    base = base or eager
                    print(f"{dtype_name:9} {batch:4d} {ratio:5.2f} {backend:9} {eager:9.2f} "
                          f"{graph:9.2f} {batch / graph * 1e3:9.1f} {base / graph:11.1f}×",
                          flush=True)
        model.cuda_graphs.clear()


if __name__ == "__main__":
    main()
