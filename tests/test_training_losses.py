"""NTP and GRPO losses, and a few NTP steps through the teacher-forced pass of a tiny model."""

from __future__ import annotations

import math

import pytest
import torch

from autogaze_ext import AutoGaze, AutoGazeConfig
from autogaze_ext.layout import from_ids
from autogaze_ext.training import grpo_advantages, grpo_loss, ntp_loss


def tiny_model(seed=0):
    torch.manual_seed(seed)
    config = AutoGazeConfig.build(scales="32+64", hidden_size=64, intermediate_size=128,
                                  num_layers=2, num_heads=2, num_multi_token_pred=4,
                                  vision_hidden_dim=32, input_img_size=64)
    return AutoGaze(config)


def test_from_ids_round_trip():
    model = tiny_model()
    video = torch.randn(2, 3, 3, 64, 64)
    out = model(video, gazing_ratio=0.5)
    fields = from_ids(out["ids"], out["frame_offsets"], 2, 3, model.num_tokens,
                      model.config.tokens_per_scale)
    for key in ("gazing_pos", "if_padded_gazing", "num_gazing_each_frame", "ids", "frame_offsets"):
        assert torch.equal(fields[key], out[key]), key


def test_ntp_loss_normalisation_and_padding():
    logp = torch.tensor([[-1.0, -2.0, -5.0], [-1.0, -1.0, -1.0]])
    pad = torch.tensor([[False, False, True], [False, False, False]])
    loss = ntp_loss(logp, pad)
    average_valid = 5 / 2
    expected = torch.tensor([3.0, 3.0]) / (average_valid + 1e-6)
    torch.testing.assert_close(loss, expected)
    pred, target = torch.ones(2, 3), torch.zeros(2, 3)
    with_head = ntp_loss(logp, pad, pred, target)
    torch.testing.assert_close(with_head - loss, torch.tensor([2.0, 3.0]) / (average_valid + 1e-6))


def test_grpo_advantages_discount_and_groups():
    # group of 2 copies of one clip; one reward at a trajectory of 3 slots
    rewards = torch.tensor([[1.0], [3.0]])
    pad = torch.tensor([[False, True, False, False], [False, False, False, False]])
    adv = grpo_advantages(rewards, 2, pad, torch.tensor([3]), gamma=0.5)
    # row 0: advantage −1; valid slots before 3 are 0 and 2: slot 2 is the last (γ^0), slot 0 has
    # one valid slot after it (γ^1); slot 1 is a pad, slot 3 is past the end
    torch.testing.assert_close(adv[0], torch.tensor([-0.5, 0.0, -1.0, 0.0]))
    torch.testing.assert_close(adv[1], torch.tensor([0.25, 0.5, 1.0, 0.0]))


def test_grpo_loss_value_and_gradient():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    adv = torch.tensor([[2.0, -1.0]])
    loss = grpo_loss(logp, adv, torch.zeros(1, 2, dtype=torch.bool))
    assert loss.item() == -1.0
    loss.sum().backward()
    torch.testing.assert_close(logp.grad, -adv)


def test_ntp_steps_learn_oracle_labels():
    """A few Adam steps on fixed labels raise their teacher-forced likelihood (gradients flow
    through score: embeddings, decoder, conv encoder)."""
    model = tiny_model(1).train()
    video = torch.randn(2, 2, 3, 64, 64)
    n = model.num_tokens
    ids = torch.cat([torch.randperm(n)[:5] for _ in range(4)])
    labels = from_ids(ids, torch.arange(5) * 5, 2, 2, n, model.config.tokens_per_scale)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        scored = model.score(video, labels)
        loss = ntp_loss(scored["log_action_probs"], labels["if_padded_gazing"]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert model.gazing_model.vision_model.temporal_conv.weight.grad.abs().sum() > 0


def test_head_error_forms():
    from autogaze_ext.training.algorithms import head_error, masked_sq_error, soft_log
    target = torch.tensor([[0.1, 0.05, 0.012, 0.2]])
    mask = torch.tensor([[True, True, True, False]])
    # every form is zero at the target (above the floor) and ignores masked slots
    for kind in ("absolute", "relative", "log"):
        assert float(head_error(target.clone(), target, mask, kind, 0.01)[0]) == 0.0
    pred = torch.tensor([[0.2, 0.025, 0.004, 9.0]])
    assert torch.allclose(head_error(pred, target, mask, "absolute"), masked_sq_error(pred, target, mask))
    # log: twice and half the target cost the same; below the floor the target counts as the floor
    one = torch.tensor([[True]])
    up = head_error(torch.tensor([[0.2]]), torch.tensor([[0.1]]), one, "log", 0.01)
    down = head_error(torch.tensor([[0.05]]), torch.tensor([[0.1]]), one, "log", 0.01)
    assert torch.allclose(up, down) and torch.allclose(up, torch.tensor([math.log(2) ** 2]))
    assert float(head_error(torch.tensor([[0.01]]), torch.tensor([[0.001]]), one, "log", 0.01)[0]) == 0.0
    # relative punishes over-prediction of a small loss more than under-prediction, log does not
    rel_up = head_error(torch.tensor([[0.2]]), torch.tensor([[0.1]]), one, "relative", 0.01)
    rel_down = head_error(torch.tensor([[0.05]]), torch.tensor([[0.1]]), one, "relative", 0.01)
    assert float(rel_up[0]) == pytest.approx(4 * float(rel_down[0]))
    # soft_log: log above the floor, its tangent below (finite and increasing for any prediction)
    x = torch.tensor([-1.0, 0.0, 0.005, 0.01, 0.02], requires_grad=True)
    y = soft_log(x, 0.01)
    assert torch.allclose(y[3:], torch.tensor([0.01, 0.02]).log())
    assert torch.isfinite(y).all() and bool((y.diff() > 0).all())
    y.sum().backward()
    assert torch.allclose(x.grad[:4], torch.full((4,), 100.0)) and x.grad[4] == pytest.approx(50.0)
    with pytest.raises(ValueError, match="kind"):
        head_error(pred, target, mask, "cube")


def test_regret_loss_tells_harmful_from_useless():
    from autogaze_ext.training.losses import regret_loss
    gains = torch.tensor([[0.2, 0.1, 0.0, -0.2, float("-inf")],
                          [-0.1, -0.3, float("-inf"), -0.05, -0.4]])
    log_dist = torch.full((2, 6), float("-inf"))

    def at(row, q):
        d = log_dist.clone()
        d[row, : len(q)] = torch.tensor(q).log()
        return regret_loss(d, gains)[row]

    # all mass on the best: no regret; on a useless candidate: 1; on a harmful one: more
    assert float(at(0, [1.0, 0, 0, 0, 0, 0])) == 0.0
    assert float(at(0, [0, 0, 1.0, 0, 0, 0])) == pytest.approx(1.0)
    assert float(at(0, [0, 0, 0, 1.0, 0, 0])) == pytest.approx(2.0)
    assert float(at(0, [0.5, 0.5, 0, 0, 0, 0])) == pytest.approx(0.25)
    # where nothing helps, regret is measured against the largest loss, capped
    assert float(at(1, [0, 0, 0, 1.0, 0, 0])) == 0.0
    assert float(at(1, [0, 0, 0, 0, 1.0, 0])) == pytest.approx(0.35 / 0.4)
    assert float(regret_loss(log_dist.clone().index_fill_(1, torch.tensor([3]), 0.0),
                             gains * torch.tensor([[1.0], [1.0]]), cap=0.5)[0]) == pytest.approx(0.5)
    # its gradient moves mass from the harmful candidate to the useless one, not only to the best
    logits = torch.tensor([[0.0, 0.0, 0.0, 2.0, -1e9, -1e9]], requires_grad=True)
    regret_loss(torch.log_softmax(logits, 1), gains[:1]).sum().backward()
    g = logits.grad[0]
    assert g[3] > 0 and g[2] < 0 and g[0] < g[1] < g[2]
