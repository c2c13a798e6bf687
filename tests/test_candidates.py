"""``candidates``: restricting gaze decoding to a subset of ids (e.g. the finest scale)."""

import pytest
import torch

import autogaze_ext as ag
from helpers import random_model, random_video, small_config

CONFIG = small_config()  # tokens_per_scale [4, 16]: ids 4..19 are the finest scale


def _finest(model):
    n = model.num_tokens
    allowed = torch.zeros(n, dtype=torch.bool)
    allowed[n - model.config.tokens_per_scale[-1]:] = True
    return allowed


@pytest.mark.parametrize("backend", ["reference", "native"])
def test_only_allowed_ids_are_picked_and_budget_is_spent_there(backend):
    model = random_model(CONFIG, seed=3)
    video = random_video(2, 3, 64, seed=1)
    allowed = _finest(model)
    out = model(video, gazing_ratio=0.5, candidates=allowed, backend=backend)
    ids = out["ids"]
    assert bool(allowed[ids].all()), "an id outside the candidates was picked"
    # budget max(1, trunc(0.5·20)) = 10 per frame, all of it on the 16 finest ids
    assert out["frame_offsets"].diff().tolist() == [10] * 6
    free = model(video, gazing_ratio=0.5, backend=backend)
    assert not bool(allowed[free["ids"]].all()), "the unrestricted gaze should use coarse ids here"


def test_budget_beyond_the_allowed_count_stops_there():
    model = random_model(CONFIG, seed=4)
    video = random_video(1, 2, 64, seed=2)
    allowed = torch.zeros(model.num_tokens, dtype=torch.bool)
    allowed[[5, 9, 17]] = True
    out = model(video, gazing_ratio=1.0, candidates=allowed)
    for t in range(2):
        frame = out["ids"][out["frame_offsets"][t]:out["frame_offsets"][t + 1]]
        assert sorted(frame.tolist()) == [5, 9, 17]


def test_backends_agree_under_candidates():
    model = random_model(CONFIG, seed=5)
    video = random_video(3, 4, 64, seed=3)
    allowed = _finest(model)
    a = model(video, gazing_ratio=0.7, candidates=allowed, backend="reference")
    b = model(video, gazing_ratio=0.7, candidates=allowed, backend="native")
    assert torch.equal(a["ids"], b["ids"]) and torch.equal(a["frame_offsets"], b["frame_offsets"])


def test_all_true_candidates_equal_the_default():
    model = random_model(CONFIG, seed=6)
    video = random_video(2, 3, 64, seed=4)
    everything = torch.ones(model.num_tokens, dtype=torch.bool)
    a = model(video, gazing_ratio=0.6, candidates=everything)
    b = model(video, gazing_ratio=0.6)
    assert torch.equal(a["ids"], b["ids"])


def test_gaze_passes_candidates_through():
    model = random_model(CONFIG, seed=7)
    frames = torch.randint(0, 256, (5, 64, 64, 3), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    allowed = _finest(model)
    out = ag.gaze(frames, model, gazing_ratio=0.4, candidates=allowed)
    assert bool(allowed[out["ids"]].all())


@pytest.mark.parametrize("bad, error, match", [
    (torch.ones(19, dtype=torch.bool), ValueError, r"shape \(20,\)"),
    (torch.ones(20, dtype=torch.long), TypeError, "bool tensor"),
    ([True] * 20, TypeError, "bool tensor"),
    (torch.zeros(20, dtype=torch.bool), ValueError, "allows no id"),
])
def test_bad_candidates_are_rejected(bad, error, match):
    model = random_model(CONFIG, seed=0)
    with pytest.raises(error, match=match):
        model(random_video(1, 1, 64), gazing_ratio=0.5, candidates=bad)
