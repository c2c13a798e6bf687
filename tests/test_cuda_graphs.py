"""Whole-clip CUDA graphs: replaying a captured clip equals eager generation (CUDA only), and
the flag is harmless elsewhere."""

from __future__ import annotations

import pytest
import torch

from autogaze_ext.graphs import ClipGraph, GraphCache
from helpers import random_model, random_video, small_config


def test_flag_is_eager_on_cpu():
    model = random_model(small_config(), seed=1)
    video = random_video(2, 3, 64, seed=2)
    eager = model(video, gazing_ratio=0.4)
    flagged = model(video, gazing_ratio=0.4, cuda_graph=True)
    assert torch.equal(eager["ids"], flagged["ids"]) and len(model.cuda_graphs) == 0


def test_clip_graph_rejects_cpu_tensors():
    with pytest.raises(ValueError, match="CUDA"):
        ClipGraph(lambda v, r: ([], []), torch.zeros(1, 1, 3, 64, 64), None)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["reference", "native"])
@pytest.mark.parametrize("requirement", [None, 0.1])
def test_replay_equals_eager(backend, requirement):
    model = random_model(small_config(), seed=3).cuda()
    clips = [random_video(4, 5, 64, seed=s).cuda() for s in (4, 5)]
    for clip in clips:  # the second clip replays the graph captured with the first
        eager = model(clip, gazing_ratio=0.5, task_loss_requirement=requirement, backend=backend)
        graphed = model(clip, gazing_ratio=0.5, task_loss_requirement=requirement,
                        backend=backend, cuda_graph=True)
        for field in ("ids", "frame_offsets", "gazing_pos", "if_padded_gazing"):
            assert torch.equal(eager[field], graphed[field]), field
    assert len(model.cuda_graphs) == 1


@pytest.mark.cuda
def test_new_weights_get_a_new_graph():
    model = random_model(small_config(), seed=6).cuda()
    clip = random_video(2, 3, 64, seed=7).cuda()
    model(clip, gazing_ratio=0.5, cuda_graph=True)
    model.to(torch.bfloat16)
    model(clip.bfloat16(), gazing_ratio=0.5, cuda_graph=True)
    assert len(model.cuda_graphs) == 2


def test_graph_cache_captures_once_per_key_and_drops_the_least_recent(monkeypatch):
    captured = []

    class FakeGraph:
        def __init__(self, program, video, requirement):
            captured.append(program)
            self.program = program

        def __call__(self, video, requirement):
            return self.program(video, requirement)

    monkeypatch.setattr("autogaze_ext.graphs.ClipGraph", FakeGraph)
    cache = GraphCache(max_graphs=2)
    for key in "abab":
        assert cache.run(key, lambda v, r, key=key: ([key], []), None, None) == ([key], [])
    assert len(captured) == 2
    cache.run("c", lambda v, r: ([], []), None, None)   # drops "a", the least recently used
    assert list(cache.graphs) == ["b", "c"]
    cache.run("a", lambda v, r: ([], []), None, None)
    assert len(captured) == 4
