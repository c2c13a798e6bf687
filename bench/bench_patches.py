"""CPU throughput of multiscale_patches and gather_patches: native kernels vs autogaze_ext.reference
on one AutoGaze clip (1, 16, 3, 224, 224), scales 32/64/112/224, patch 16 (265 ids per frame).

    python -m pytest bench/bench_patches.py --benchmark-group-by=group --benchmark-columns=min,median,mean,rounds
"""

import pytest
import torch

from autogaze_ext import ops, reference

SHAPE = (1, 16, 3, 224, 224)
SCALES = (32, 64, 112, 224)
NUM_IDS = 265
IMPLS = {"native": ops, "reference": reference}


@pytest.fixture(scope="module")
def video():
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))


def selection(fraction, frames=SHAPE[0] * SHAPE[1]):
    """The same share of random ids in every frame -> (ids, frame_offsets)."""
    generator = torch.Generator().manual_seed(0)
    count = round(fraction * NUM_IDS)
    ids = torch.cat([torch.randperm(NUM_IDS, generator=generator)[:count] for _ in range(frames)])
    return ids, torch.arange(0, frames * count + 1, count)


@pytest.mark.parametrize("impl", IMPLS)
def test_multiscale_patches(benchmark, video, impl):
    benchmark.group = "multiscale_patches, all 265 ids"
    benchmark(IMPLS[impl].multiscale_patches, video, SCALES, 16)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("fraction", [0.10, 0.75])
def test_gather_patches(benchmark, video, impl, fraction):
    benchmark.group = f"gather_patches, {fraction:.0%} of ids"
    ids, offsets = selection(fraction)
    benchmark(IMPLS[impl].gather_patches, video, ids, offsets, SCALES, 16)
