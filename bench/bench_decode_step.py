"""One gaze decode call (n = K = 10 fed tokens after a cache of 3300 slots, release decoder config):
native decode_step vs the reference GazeDecoder.forward + heads; median microseconds and ratio.

    python bench/bench_decode_step.py [--device cuda] [--cache-len 3300] [--repeats 50]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from autogaze_ext import ops
from autogaze_ext.config import AutoGazeConfig
from autogaze_ext.decoder import GazeDecoder


def median_us(fn, repeats, device):
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e6)
    return statistics.median(times)


def bench(batch, cache_len, n, repeats, device, dtype):
    torch.manual_seed(0)
    decoder = GazeDecoder(AutoGazeConfig.build().decoder).eval().to(device=device, dtype=dtype)
    cfg = decoder.cfg
    cache = decoder.new_cache(batch, cache_len + n)
    cache.k.normal_()
    cache.v.normal_()
    cache.key_mask[:, :cache_len] = torch.rand(batch, cache_len, device=device) < 0.9
    x = torch.randn(batch, n, cfg.hidden_size, device=device, dtype=dtype)
    positions = (cache_len + torch.arange(n, device=device)).expand(batch, n).contiguous()
    visible = torch.ones(batch, n, dtype=torch.bool, device=device)
    weights = ops.decoder_weights(decoder)

    def reference():
        cache.length = cache_len
        with torch.no_grad():
            return decoder.heads(decoder(x, positions, visible, cache)[:, -1])

    def native():
        return ops.decode_step(x, positions, visible, cache.k, cache.v, cache.key_mask, cache_len, weights,
                               decoder.inv_freq, cfg.rms_norm_eps)

    ref_logits = reference()[0]
    err = (native()[0] - ref_logits).abs().max().item()
    t_ref = median_us(reference, repeats, device)
    t_nat = median_us(native, repeats, device)
    print(f"B={batch:3d} n={n} cache_len={cache_len} {device} {str(dtype).removeprefix('torch.')}: "
          f"native {t_nat:9.1f} us  reference {t_ref:9.1f} us  speedup {t_ref / t_nat:5.2f}x  "
          f"(max |logits diff| {err:.2e}, threads {torch.get_num_threads()})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--cache-len", type=int, default=3300)
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    for batch in args.batch:
        bench(batch, args.cache_len, args.n, args.repeats, args.device, getattr(torch, args.dtype))


if __name__ == "__main__":
    main()
