"""Native ``select_step`` (C++ / CUDA) against ``reference.select_step`` on random frame states."""

from __future__ import annotations

import itertools

import pytest
import torch

from autogaze_ext import ops, reference

STATE = ("used", "n", "finished", "done", "tokens", "leftover_ids", "leftover_len")


def random_state(batch, k, vocab, budget, seed, coupled, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    state = {
        "logits": torch.randn(batch, k, vocab, generator=g) * 3,
        "loss_pred": torch.rand(batch, k, generator=g),
        "requirement": torch.rand(batch, generator=g) * 0.5,
        "uniforms": torch.rand(batch, k, generator=g),
        "used": torch.rand(batch, vocab, generator=g) < 0.2,
        "n": torch.randint(0, budget, (batch,), generator=g),
        "finished": torch.rand(batch, generator=g) < 0.2,
        "done": torch.rand(batch, generator=g) < 0.2,
        "tokens": torch.randint(0, vocab, (batch, budget + k), generator=g),
        "leftover_ids": torch.randint(0, vocab, (batch, k), generator=g),
        "leftover_len": torch.randint(0, k + 1, (batch,), generator=g),
    }
    if coupled:  # the official mode shares the slot count (and the frame's end) across the batch
        state["n"].fill_(int(state["n"][0]))
        state["done"].fill_(False)
    # exact ties in a row are resolved by the first index: make some
    state["logits"][:, :, 3] = state["logits"][:, :, 1]
    return {name: t.to(device) for name, t in state.items()}


def run(fn, state, budget, first, coupled, requirement, sampling, temperature):
    s = {name: t.clone() for name, t in state.items()}
    fed = fn(s["logits"], s["loss_pred"], s["requirement"] if requirement else None,
             s["uniforms"] if sampling else None, *(s[name] for name in STATE), budget, first,
             coupled, temperature, 50)
    return fed, s


SHAPES = [(1, 10, 266, 26), (3, 4, 50, 7), (64, 10, 266, 198), (5, 1, 20, 3), (2, 10, 266, 1),
          (7, 10, 30, 30)]


@pytest.mark.parametrize("batch,k,vocab,budget", SHAPES)
@pytest.mark.parametrize("coupled", [False, True])
def test_select_step_matches_reference(batch, k, vocab, budget, coupled, device="cpu"):
    cases = itertools.product(range(6), [False, True], [False, True], [False, True], [1.0, 0.7])
    for seed, first, requirement, sampling, temperature in cases:
        if not sampling and temperature != 1.0:
            continue
        state = random_state(batch, k, vocab, budget, seed, coupled, device)
        args = (budget, first, coupled, requirement, sampling, temperature)
        fed_ref, ref = run(reference.select_step, state, *args)
        fed_nat, nat = run(ops.select_step, state, *args)
        label = dict(seed=seed, first=first, requirement=requirement, sampling=sampling)
        assert torch.equal(fed_ref, fed_nat), label
        for name in STATE:
            assert torch.equal(ref[name], nat[name]), (name, label)


@pytest.mark.cuda
@pytest.mark.parametrize("batch,k,vocab,budget", SHAPES)
@pytest.mark.parametrize("coupled", [False, True])
def test_select_step_matches_reference_cuda(batch, k, vocab, budget, coupled):
    test_select_step_matches_reference(batch, k, vocab, budget, coupled, device="cuda")


def test_exhausted_rows_stop_the_step():
    """With every id but two used, only two ids can be chosen; the step then ends the frame."""
    batch, k, vocab, budget = 2, 4, 10, 9
    state = random_state(batch, k, vocab, budget, 0, coupled=False)
    state["used"][:] = True
    state["used"][:, [2, 5]] = False
    state["n"].zero_()
    state["done"].zero_()
    state["finished"].zero_()
    for fn in (reference.select_step, ops.select_step):
        fed, s = run(fn, state, budget, True, False, False, False, 1.0)
        assert s["n"].tolist() == [2, 2]
        assert s["done"].all()
        assert sorted(s["tokens"][0, :2].tolist()) == [2, 5]
        assert (fed == vocab - 1).all()


def test_select_step_errors():
    state = random_state(2, 4, 10, 5, 0, coupled=False)
    args = [state[name] for name in ("logits", "loss_pred")] + [None, None]
    args += [state[name] for name in STATE]
    with pytest.raises(ValueError, match="logits must be"):
        ops.select_step(state["logits"][0], *args[1:], 5, True, False)
    with pytest.raises(TypeError, match="used must be"):
        bad = list(args)
        bad[4] = state["used"].long()
        ops.select_step(*bad, 5, True, False)
    with pytest.raises(ValueError, match="tokens must be"):
        bad = list(args)
        bad[8] = state["tokens"][:, :3].contiguous()
        ops.select_step(*bad, 5, True, False)
    with pytest.raises(ValueError, match="n is updated in place and must be contiguous"):
        bad = list(args)
        bad[5] = torch.zeros(2, 2, dtype=torch.long)[:, 0]
        ops.select_step(*bad, 5, True, False)
    with pytest.raises(ValueError, match="budget must be positive"):
        ops.select_step(*args, 0, True, False)


def test_select_step_opcheck():
    state = random_state(3, 4, 20, 6, 1, coupled=False)
    args = (state["logits"], state["loss_pred"], state["requirement"], None,
            *(state[name] for name in STATE), 6, True, False, 1.0, 50)
    torch.library.opcheck(torch.ops.autogaze_ext.select_step.default, args)


def test_negative_slot_count_is_rejected_not_written_out_of_bounds():
    """Regression (found by tests/test_fuzz_ops.py): a negative n made the CPU kernel write before
    the token rows (heap corruption, a crash). The reference raises too (negative scatter index)."""
    state = random_state(3, 4, 10, 6, 0, coupled=False)
    state["n"][1] = -2
    state["done"].zero_()
    with pytest.raises(ValueError, match=r"select_step: n\[1\] = -2 must be >= 0"):
        run(ops.select_step, state, 6, True, False, False, False, 1.0)
    with pytest.raises(RuntimeError):
        run(reference.select_step, state, 6, True, False, False, False, 1.0)
