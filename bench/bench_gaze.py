"""End-to-end gaze latency of one 16-frame 224² clip (fixture model, greedy).

Run: ``python -m pytest bench/bench_gaze.py --benchmark-only`` (add ``--device cuda`` semantics by
setting ``AUTOGAZE_BENCH_DEVICE=cuda``). Stages are timed separately: preprocessing of raw frames,
the conv encoder, and the whole model call (encoder + decode).
"""

from __future__ import annotations

import os

import pytest
import torch

from autogaze_ext import AutoGaze, example_clip_path, read_video
from common import MODEL, first_clip

DEVICE = os.environ.get("AUTOGAZE_BENCH_DEVICE", "cpu")


@pytest.fixture(scope="module")
def model():
    return AutoGaze.from_pretrained(MODEL, device=DEVICE)


@pytest.fixture(scope="module")
def frames():
    pytest.importorskip("av", reason="reading the clip needs PyAV")
    return read_video(example_clip_path(), num_frames=16)


@pytest.fixture(scope="module")
def clip(model):
    return first_clip(model).to(DEVICE)


def _run(fn):
    out = fn()
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    return out


def test_preprocess_16x448(benchmark, model, frames):
    benchmark(lambda: model.preprocess(frames))


def test_encoder(benchmark, model, clip):
    with torch.no_grad():
        benchmark(lambda: _run(lambda: model.embed(clip)))


@pytest.mark.parametrize("ratio", [0.75, 0.1])
def test_gaze_clip(benchmark, model, clip, ratio):
    out = benchmark.pedantic(lambda: _run(lambda: model(clip, gazing_ratio=ratio)), rounds=3,
                             warmup_rounds=1)
    assert out["num_gazing_each_frame"].tolist() == [max(1, int(ratio * 265))] * 16


def test_gaze_clip_release_settings(benchmark, model, clip):
    """The recommended call: ratio 0.75 with task-loss requirement 0.7 (the config default)."""
    benchmark.pedantic(lambda: _run(lambda: model(clip)), rounds=3, warmup_rounds=1)


@pytest.fixture(scope="module")
def default_model():
    from autogaze_ext.default_model import load_default_model
    return load_default_model(device=DEVICE)


@pytest.mark.parametrize("stop_by", ["head", "paint"])
def test_gaze_clip_bundled_defaults(benchmark, default_model, clip, stop_by):
    """The bundled default model at its defaults (requirement 0.07, cap 0.75): frames stopped by
    the head's predicted loss or by the measured Paint loss (one extra selection per step)."""
    default_model.stop_by = stop_by
    try:
        out = benchmark.pedantic(lambda: _run(lambda: default_model(clip)), rounds=3,
                                 warmup_rounds=1)
    finally:
        default_model.stop_by = default_model.config.task_loss_requirement_stop_by
    benchmark.extra_info["tokens"] = int(out["frame_offsets"][-1])
