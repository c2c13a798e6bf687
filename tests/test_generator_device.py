"""Sampling with a torch.Generator: draws are taken on the generator's device and moved, so a CPU
or a CUDA generator works for a model on any device (the config's uniform/exponential ratio and
uniform requirement strategies, and the sampler's draws)."""

from __future__ import annotations

import pytest
import torch

from autogaze_ext import AutoGazeConfig, budget, generation
from autogaze_ext.generation import uniform_draws
from helpers import random_model, random_video, small_config


def test_uniform_draws_come_from_the_generator_and_land_on_the_target_device():
    expected = torch.rand(3, 4, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    assert torch.equal(uniform_draws((3, 4), "cpu", g), expected)
    g = torch.Generator().manual_seed(5)
    on_meta = uniform_draws((3, 4), torch.device("meta"), g)  # a device other than the generator's
    assert on_meta.device.type == "meta" and on_meta.shape == (3, 4)
    after = torch.Generator().manual_seed(5)
    torch.rand(3, 4, generator=after)
    assert torch.equal(g.get_state(), after.get_state())  # drawn on the CPU, not skipped


def test_uniform_draws_without_generator_use_the_global_rng():
    torch.manual_seed(9)
    first = uniform_draws((5,), "cpu")
    torch.manual_seed(9)
    assert torch.equal(first, torch.rand(5)) and first.dtype == torch.float32


def _strategy_config(ratio_strategy: str, requirement_strategy: str) -> AutoGazeConfig:
    raw = small_config().to_dict()
    raw["gazing_ratio_config"] = {"sample_strategy_during_inference": ratio_strategy,
                                  "uniform": {"gazing_ratio_min": 0.2, "gazing_ratio_max": 0.9},
                                  "exponential": {"gazing_ratio_min": 0.05, "gazing_ratio_max": 0.9,
                                                  "lambda": 4.0}}
    raw["has_task_loss_requirement_during_inference"] = True
    raw["task_loss_requirement_config"] = {
        "sample_strategy_during_inference": requirement_strategy,
        "uniform": {"task_loss_requirement_min": -0.5, "task_loss_requirement_max": 0.5}}
    return AutoGazeConfig(raw)


@pytest.mark.parametrize("ratio_strategy", ["uniform", "exponential"])
def test_config_strategies_draw_from_the_generator(monkeypatch, ratio_strategy):
    config = _strategy_config(ratio_strategy, "uniform")
    calls = []
    real = generation.uniform_draws

    def spy(shape, device, generator=None):
        calls.append(generator)
        return real(shape, device, generator)

    monkeypatch.setattr(budget, "uniform_draws", spy)
    runs = [budget.resolve(config, None, None, 2, 3, "cpu", torch.Generator().manual_seed(s))
            for s in (1, 1, 2)]
    assert all(isinstance(g, torch.Generator) for g in calls) and calls
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1])
    assert (runs[0][0], runs[0][1][0, 0].item()) != (runs[2][0], runs[2][1][0, 0].item())


@pytest.mark.parametrize("backend", ["reference", "native"])
def test_sampled_gaze_through_the_public_api_uses_the_generator(backend):
    model = random_model(_strategy_config("uniform", "uniform"), seed=4)
    video = random_video(2, 3, 64, seed=5)
    outs = [model(video, do_sample=True, backend=backend, generator=torch.Generator().manual_seed(s))
            for s in (3, 3, 4)]
    assert torch.equal(outs[0]["ids"], outs[1]["ids"])
    assert torch.equal(outs[0]["task_loss_requirement"], outs[1]["task_loss_requirement"])
    assert not torch.equal(outs[0]["task_loss_requirement"], outs[2]["task_loss_requirement"])


@pytest.mark.cuda
@pytest.mark.parametrize("generator_device", ["cpu", "cuda"])
@pytest.mark.parametrize("backend", ["reference", "native"])
def test_cuda_model_samples_with_a_cpu_or_cuda_generator(generator_device, backend):
    model = random_model(_strategy_config("exponential", "uniform"), seed=4).cuda()
    video = random_video(2, 3, 64, seed=5).cuda()
    runs = [model(video, do_sample=True, backend=backend,
                  generator=torch.Generator(device=generator_device).manual_seed(7))
            for _ in range(2)]
    assert torch.equal(runs[0]["ids"], runs[1]["ids"])
    if generator_device == "cpu":  # the same draws as the CPU model takes from the same seed
        cpu_model = random_model(_strategy_config("exponential", "uniform"), seed=4)
        cpu = cpu_model(video.cpu(), do_sample=True, backend=backend,
                        generator=torch.Generator().manual_seed(7))
        assert torch.equal(cpu["task_loss_requirement"], runs[0]["task_loss_requirement"].cpu())
