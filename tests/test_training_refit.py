"""Refits of the linear heads on fixed decoder features: the task-loss head in closed form
(training/head.py ``fit_head``), the gaze readout by L-BFGS (training/readout.py), and their CLI
(training/refit.py)."""

from __future__ import annotations

import json
import random

import pytest
import torch
from helpers import random_video

from autogaze_ext import AutoGaze
from autogaze_ext.training import refit
from autogaze_ext.training.config import load_config
from autogaze_ext.training.head import fit_head, head_data, head_rollout, relative_error
from autogaze_ext.training.policy import score_rollout
from autogaze_ext.training.readout import fit_readout, pick_quality, readout_data, soft_cross_entropy
from autogaze_ext.training.trainer import Trainer

from test_training import TINY_TOML, cpu_training_settings  # noqa: F401  (fixture)


@pytest.fixture()
def tiny(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_TOML)
    return lambda *overrides: load_config(path, [f"run.out={tmp_path / 'run'}", *overrides])


def linear_data(n=400, dim=6, heads=(0, 1), noise=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, dim, generator=g, dtype=torch.float64) + 0.1
    true = torch.rand(3, dim, generator=g, dtype=torch.float64) * 0.1
    index = torch.tensor(heads)[torch.randint(len(heads), (n,), generator=g)]
    y = (x * true[index]).sum(1) * (1 + noise * torch.randn(n, generator=g, dtype=torch.float64))
    return {"inputs": x, "heads": index, "targets": y}, true


def objective(data, w, floor):
    pred = (data["inputs"] * w[data["heads"]]).sum(1)
    return (((pred - data["targets"]) / data["targets"].clamp(min=floor)) ** 2).sum()


def test_fit_recovers_an_exactly_linear_head_and_keeps_rows_without_samples():
    data, true = linear_data()
    old = torch.randn(3, 6, dtype=torch.float32)
    new = fit_head(data, old, floor=0.01, ridge=0.0)
    torch.testing.assert_close(new[:2].double(), true[:2], atol=1e-5, rtol=1e-4)
    assert torch.equal(new[2], old[2])  # head 2 had no sample
    assert relative_error(data, new, 0.01) < 1e-4 < relative_error(data, old, 0.01)


def test_fit_minimises_the_relative_error_and_ridge_pulls_to_the_current_head():
    data, _ = linear_data(noise=0.3, seed=1)
    old = torch.zeros(3, 6)
    new = fit_head(data, old, floor=0.05, ridge=0.0).double()
    # the solution is a minimum of the relative (weighted) squared error: no nearby weight is lower
    best = objective(data, new, 0.05)
    g = torch.Generator().manual_seed(2)
    for _ in range(20):
        nudged = new.clone()
        nudged[:2] += 1e-3 * torch.randn(2, 6, generator=g, dtype=torch.float64)
        assert objective(data, nudged, 0.05) >= best
    # a plain least-squares fit (all weights 1) is worse on the relative error
    x, y = data["inputs"], data["targets"]
    plain = new.clone()
    for k in (0, 1):
        rows = data["heads"] == k
        plain[k] = torch.linalg.lstsq(x[rows], y[rows][:, None]).solution[:, 0]
    assert objective(data, plain, 0.05) > best
    # a large ridge keeps the current head
    held = fit_head(data, old + 0.5, floor=0.05, ridge=1e6)
    torch.testing.assert_close(held, old + 0.5, atol=1e-3, rtol=0)


def test_fit_rejects_bad_input():
    data, _ = linear_data(n=20)
    w = torch.zeros(3, 6)
    with pytest.raises(ValueError, match="floor"):
        fit_head(data, w, floor=0.0)
    with pytest.raises(ValueError, match="ridge"):
        fit_head(data, w, ridge=-1.0)
    with pytest.raises(ValueError, match="inputs"):
        fit_head(data, torch.zeros(3, 5))
    with pytest.raises(ValueError, match="heads"):
        fit_head({**data, "heads": data["heads"][:-1]}, w)
    bad = data["targets"].clone()
    bad[3] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        fit_head({**data, "targets": bad}, w)


def head_cfg(tiny, *extra):
    return tiny("algorithm.name=head", "algorithm.train_params=head", "algorithm.ratio_strategy=uniform",
                "algorithm.ratio_min=0.1", "algorithm.ratio_max=0.6",
                "algorithm.requirement_strategy=uniform", "algorithm.requirement_fraction=0.5",
                "algorithm.requirement_min=0.05", "algorithm.requirement_max=0.5", *extra)


def test_head_data_are_what_the_head_reads(tiny):
    cfg = head_cfg(tiny)
    trainer = Trainer(cfg)
    model, video = trainer.model.eval(), random_video(2, 3, 64, seed=3)
    rollout = head_rollout(model, trainer.task, {"video": video, "video_for_task": video},
                           cfg.algorithm, random.Random(1))
    data = head_data(model, rollout)
    weight = model.gazing_model.gaze_decoder.task_loss_prediction_head.weight.double()
    predicted = (data["inputs"] * weight[data["heads"]]).sum(1)
    scored = score_rollout(model, video, rollout["ids"], rollout["frame_offsets"], top_k=None)
    torch.testing.assert_close(predicted.float(), scored.task_loss_prediction.float(), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(data["targets"].float(), rollout["slot_targets"].float())
    assert set(data["heads"].tolist()) <= set(range(model.gazing_model.gaze_decoder.cfg.num_multi_token_pred))


def test_cli_refits_only_the_head_and_lowers_the_holdout_error(tiny, tmp_path):
    cfg = head_cfg(tiny)
    trainer = Trainer(cfg)
    trainer.save()
    source = tmp_path / "run" / "checkpoint_latest"
    config = tmp_path / "tiny.toml"
    out = tmp_path / "refit"
    args = ["head", str(config), f"run.out={tmp_path / 'run'}", f"model.init={source}", "algorithm.name=head",
            "algorithm.ratio_strategy=uniform", "algorithm.ratio_min=0.1", "algorithm.ratio_max=0.6",
            "--batches", "40", "--holdout", "10", "--floor", "0.05", "--ridge", "0.01", "--out", str(out)]
    assert refit.main(args) == 0
    report = json.loads((out / "refit.json").read_text())
    assert report["fit_relative_error_after"] < report["fit_relative_error_before"]
    assert report["holdout_relative_error_after"] < report["holdout_relative_error_before"]
    before, after = AutoGaze.from_pretrained(source).state_dict(), AutoGaze.from_pretrained(out).state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"gazing_model.gaze_decoder.task_loss_prediction_head.weight"}


def test_cli_errors_name_the_argument(tiny, tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_TOML)
    assert refit.main(["head", str(config), "--out", str(tmp_path / "o")]) == 2
    assert "model.init" in capsys.readouterr().err
    assert refit.main(["readout", str(config), "model.init=x", "--floor", "0", "--out", str(tmp_path / "o")]) == 2
    assert "--floor" in capsys.readouterr().err


def test_readout_data_masks_what_generation_masks(tiny):
    cfg = tiny()
    trainer = Trainer(cfg)
    model, video = trainer.model.eval(), random_video(2, 3, 64, seed=4)
    data = readout_data(model, trainer.task, {"video": video, "video_for_task": video}, [0.3, 0.6])
    out = model(video[:1], gazing_ratio=0.3)
    n, vocab = data["gains"].shape
    assert data["inputs"].shape == (n, model.gazing_model.gaze_decoder.cfg.hidden_size)
    assert n == out["ids"].numel() + model(video[1:], gazing_ratio=0.6)["ids"].numel()
    # EOS and the frame's earlier ids are masked; the best allowed candidate has gain 1
    assert torch.isinf(data["gains"][:, vocab - 1]).all()
    first = out["ids"][: int(out["frame_offsets"][1])]
    assert torch.isinf(data["gains"][1, first[0]]) and torch.isfinite(data["gains"][0, first[0]])
    top = data["gains"].amax(1)
    helps = top > 0  # slots where some candidate lowers the loss
    assert helps.any()
    torch.testing.assert_close(top[helps], torch.ones(int(helps.sum())))
    # the model's own logits reproduce its greedy picks: pick quality of its own readout is the
    # oracle gain of the ids it chose
    weight = model.gazing_model.gaze_decoder.lm_head.weight
    k = model.gazing_model.gaze_decoder.cfg.num_multi_token_pred
    picks = data["gains"][torch.arange(out["ids"].numel()), out["ids"]]
    assert pick_quality({k_: v[: out["ids"].numel()] for k_, v in data.items()}, weight, k) == \
        pytest.approx(float(picks.clamp(min=-1).mean()), abs=1e-6)


def test_fit_readout_lowers_the_soft_cross_entropy_and_ridge_keeps_the_readout(tiny):
    cfg = tiny()
    trainer = Trainer(cfg)
    model = trainer.model.eval()
    k = model.gazing_model.gaze_decoder.cfg.num_multi_token_pred
    parts = [readout_data(model, trainer.task, {"video": v, "video_for_task": v}, [0.3, 0.5])
             for v in (random_video(2, 3, 64, seed=s) for s in range(4))]
    data = {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
    weight = model.gazing_model.gaze_decoder.lm_head.weight.detach()
    new = fit_readout(data, weight, k, temperature=0.1, ridge=0.0, iterations=30)
    assert soft_cross_entropy(data, new, k, 0.1) < 0.8 * soft_cross_entropy(data, weight, k, 0.1)
    assert pick_quality(data, new, k) > pick_quality(data, weight, k)
    kept = fit_readout(data, weight, k, temperature=0.1, ridge=1e4, iterations=10)
    torch.testing.assert_close(kept, weight, atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="temperature"):
        fit_readout(data, weight, k, temperature=0.0)
    with pytest.raises(ValueError, match="gains"):
        fit_readout({**data, "gains": data["gains"][:, :-1]}, weight, k)


def test_readout_cli_refits_only_the_gaze_logits(tiny, tmp_path):
    cfg = tiny()
    Trainer(cfg).save()
    source = tmp_path / "run" / "checkpoint_latest"
    out = tmp_path / "readout"
    args = ["readout", str(tmp_path / "tiny.toml"), f"run.out={tmp_path / 'run'}", f"model.init={source}",
            "--batches", "8", "--holdout", "4", "--iterations", "20", "--temperature", "0.1",
            "--out", str(out)]
    assert refit.main(args) == 0
    report = json.loads((out / "refit.json").read_text())
    assert report["fit_soft_cross_entropy_after"] < report["fit_soft_cross_entropy_before"]
    before, after = AutoGaze.from_pretrained(source).state_dict(), AutoGaze.from_pretrained(out).state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"gazing_model.gaze_decoder.lm_head.weight"}
