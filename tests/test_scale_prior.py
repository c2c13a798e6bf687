"""A per-scale prior on the gaze logits folded into ``lm_head`` (training/scale_prior.py) and
its CLI (``refit scale-prior``)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import FIXTURE_MODEL

from autogaze_ext import AutoGaze
from autogaze_ext import decoder as decoder_module
from autogaze_ext import generation, model as model_module
from autogaze_ext.training import refit
from autogaze_ext.training.scale_prior import (constant_direction, fold_report, fold_scale_prior,
                                               prior_data, scale_bias)
from autogaze_ext.video import synthetic_video

from test_training import TINY_TOML, cpu_training_settings  # noqa: F401  (fixture)
from test_training_refit import tiny  # noqa: F401  (fixture)


def hyperplane_data(n=300, dim=8, k=3, vocab=7, seed=0):
    """Inputs with x·w = 1 exactly, random K-rows, every candidate allowed but EOS."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, generator=g, dtype=torch.float64)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64)
    x = x / (x @ w)[:, None]
    allowed = torch.ones(n, vocab, dtype=torch.bool)
    allowed[:, -1] = False
    return {"inputs": x.float(), "heads": torch.randint(k, (n,), generator=g), "allowed": allowed}, w


def test_scale_bias_puts_one_offset_on_each_scale_and_none_on_eos():
    bias = scale_bias([4, 16, 49, 196], [0.5, -2, 0, 1], 266)
    assert bias.shape == (266,)
    assert bias[:4].eq(0.5).all() and bias[4:20].eq(-2).all() and bias[20:69].eq(0).all()
    assert bias[69:265].eq(1).all() and bias[265] == 0
    with pytest.raises(ValueError, match="one per scale"):
        scale_bias([4, 16], [0.0], 21)
    with pytest.raises(ValueError, match="add up"):
        scale_bias([4, 16], [0.0, 1.0], 30)
    with pytest.raises(ValueError, match="finite"):
        scale_bias([4, 16], [float("nan"), 1.0], 21)


def test_constant_direction_finds_the_hyperplane_the_inputs_lie_on():
    data, w = hyperplane_data()
    found = constant_direction(data["inputs"], ridge=0.0)
    torch.testing.assert_close(data["inputs"] @ found, torch.ones(300), atol=1e-4, rtol=0)
    torch.testing.assert_close(found.double(), w, atol=1e-3, rtol=1e-3)
    # ridge shrinks it
    assert constant_direction(data["inputs"], ridge=10.0).norm() < found.norm()
    with pytest.raises(ValueError, match="finite"):
        constant_direction(torch.full((3, 2), float("nan")))
    with pytest.raises(ValueError, match="ridge"):
        constant_direction(data["inputs"], ridge=-1.0)


def test_folded_readout_gives_the_logits_plus_the_bias_on_the_hyperplane():
    data, _ = hyperplane_data(seed=1)
    k, vocab, dim = 3, 7, 8
    weight = torch.randn(k * vocab, dim, generator=torch.Generator().manual_seed(2))
    bias = scale_bias([2, 4], [3.0, -1.5], vocab)
    direction = constant_direction(data["inputs"], ridge=0.0)
    folded = fold_scale_prior(weight, k, bias, direction)
    x, heads = data["inputs"], data["heads"]
    blocks, new = weight.view(k, vocab, dim), folded.view(k, vocab, dim)
    exact = torch.einsum("nvd,nd->nv", blocks[heads], x) + bias
    torch.testing.assert_close(torch.einsum("nvd,nd->nv", new[heads], x), exact, atol=1e-3, rtol=0)
    assert torch.equal(new[:, -1], blocks[:, -1])  # EOS rows untouched
    report = fold_report(data, weight, folded, k, bias, direction)
    assert report["same_greedy_pick"] == 1.0 and report["hw_minus_1_rms"] < 1e-4
    # zero offsets change nothing; a wrong direction size is refused
    assert torch.equal(fold_scale_prior(weight, k, torch.zeros(vocab), direction), weight)
    with pytest.raises(ValueError, match="direction"):
        fold_scale_prior(weight, k, bias, direction[:-1])


def offset_gaze(model, video, ratio, bias):
    """The model's greedy gaze with ``bias`` added to its gaze logits (the reference decode)."""
    original = decoder_module.GazeDecoder.heads

    def heads(self, hidden):
        logits, loss = original(self, hidden)
        return logits + bias.to(logits.device), loss

    saved = generation.decode_op, model_module.decode_op
    reference = lambda backend, decoder: generation.ReferenceStep(decoder)  # noqa: E731
    decoder_module.GazeDecoder.heads = heads
    generation.decode_op = model_module.decode_op = reference
    try:
        return model(video, gazing_ratio=ratio)
    finally:
        decoder_module.GazeDecoder.heads = original
        generation.decode_op, model_module.decode_op = saved


def test_folded_model_gazes_as_the_exact_offsets_do_on_a_clip_it_was_not_fitted_on():
    model = AutoGaze.from_pretrained(FIXTURE_MODEL).eval()
    clip = lambda seed: model.preprocess(synthetic_video(4, 224, 224, seed=seed))[None]  # noqa: E731
    decoder = model.gazing_model.gaze_decoder
    k = decoder.cfg.num_multi_token_pred
    bias = scale_bias(model.config.tokens_per_scale, [0.0, -1.0, 0.5, 0.0], decoder.cfg.vocab_size)
    data = prior_data(model, torch.cat([clip(1), clip(2)]), [0.3, 0.15])
    direction = constant_direction(data["inputs"])
    before = decoder.lm_head.weight.detach().clone()
    video = clip(3)
    want = offset_gaze(model, video, 0.2, bias)
    plain = model(video, gazing_ratio=0.2)
    with torch.no_grad():
        decoder.lm_head.weight.copy_(fold_scale_prior(before, k, bias, direction))
    got = model(video, gazing_ratio=0.2)
    assert not torch.equal(want["ids"], plain["ids"])  # the offsets do move the gaze
    assert torch.equal(got["frame_offsets"], want["frame_offsets"])
    agree = (got["ids"] == want["ids"]).float().mean()
    assert agree >= 0.95, float(agree)


def test_cli_folds_a_rank_one_change_per_scale_into_lm_head_only(tiny, tmp_path):  # noqa: F811
    from autogaze_ext.training.trainer import Trainer
    Trainer(tiny()).save()
    source = tmp_path / "run" / "checkpoint_latest"
    out = tmp_path / "prior"
    args = ["scale-prior", str(tmp_path / "tiny.toml"), f"run.out={tmp_path / 'run'}",
            f"model.init={source}", "--offsets", "1.5,-3", "--batches", "4", "--holdout", "2",
            "--out", str(out)]
    assert refit.main(args) == 0
    report = json.loads((out / "refit.json").read_text())
    assert report["offsets"] == [1.5, -3.0]
    assert 0 <= report["holdout_same_greedy_pick_after"] <= 1
    assert report["fit_hw_minus_1_rms_after"] >= 0 and report["slots"] > 0
    before, after = AutoGaze.from_pretrained(source), AutoGaze.from_pretrained(out)
    changed = {n for n, v in before.state_dict().items() if not torch.equal(v, after.state_dict()[n])}
    assert changed == {"gazing_model.gaze_decoder.lm_head.weight"}
    k = before.gazing_model.gaze_decoder.cfg.num_multi_token_pred
    w0 = before.gazing_model.gaze_decoder.lm_head.weight.detach()
    diff = (after.gazing_model.gaze_decoder.lm_head.weight.detach() - w0).view(k, -1, w0.shape[1])
    coarse, fine = before.config.tokens_per_scale
    # every row of a scale moves by offset·w: the coarse rows by −0.5× the fine rows; EOS not at all
    torch.testing.assert_close(diff[:, :coarse], -0.5 * diff[:, coarse:coarse + 1].expand(-1, coarse, -1),
                               atol=1e-5, rtol=1e-4)
    assert diff[:, coarse:coarse + fine].std(1).max() < 1e-5
    assert diff[:, -1].abs().max() == 0


def test_cli_takes_offsets_with_scale_prior_only(tiny, tmp_path, capsys):  # noqa: F811
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_TOML)
    assert refit.main(["readout", str(config), "model.init=x", "--offsets", "0,1",
                       "--out", str(tmp_path / "o")]) == 2
    assert "--offsets" in capsys.readouterr().err
    assert refit.main(["scale-prior", str(config), "model.init=x", "--out", str(tmp_path / "o")]) == 2
    assert "--offsets" in capsys.readouterr().err
