"""Training data and label extensions: the synthetic/real stream, multi-budget and soft oracle
labels, on-policy (rollout) labels and task-loss-head calibration, on tiny models."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import random_model, random_video, small_config

from autogaze_ext.checkpoint import load_safetensors
from autogaze_ext.tasks import PaintReconstruction, candidate_gains, greedy_oracle
from autogaze_ext.training.algorithms import ntp_step, rollout_labels
from autogaze_ext.training.config import load_config
from autogaze_ext.training.head import head_loss, head_rollout
from autogaze_ext.training.labels import LabelStore
from autogaze_ext.training.policy import score_rollout
from autogaze_ext.training.losses import regret_loss, soft_label_loss, soft_targets
from autogaze_ext.training.stream import (SOFTEN_RANGE, TrainStream, apply_freeze, apply_soften, batches,
                                          freeze_span, soften_factor)
from autogaze_ext.training.trainer import Trainer

from test_training import TINY_TOML, cpu_training_settings  # noqa: F401  (fixture)

SYNTH = ["data.synthetic_fraction=0.5", "data.synthetic_max_side=64", "data.synthetic_seed=5",
         "algorithm.label_ratios=[0.1, 0.3, 0.5]"]


@pytest.fixture()
def tiny(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_TOML)
    return lambda *overrides: load_config(path, [f"run.out={tmp_path / 'run'}", *overrides])


def test_stream_is_a_pure_function_of_the_draw(tiny):
    cfg = tiny(*SYNTH)
    trainer = Trainer(cfg)
    stream = trainer.stream
    kinds = [stream.draw(g)[0] for g in range(40)]
    assert 5 < kinds.count("synthetic") < 35 and "real" in kinds
    assert {stream.draw(g)[2] for g in range(40)} == {0.1, 0.3, 0.5}
    a, b = stream.batch(3), stream.batch(3)
    assert a["keys"] == b["keys"] and torch.equal(a["video"], b["video"])
    assert torch.equal(a["labels"]["ids"], b["labels"]["ids"])
    # budgets follow the drawn ratio: frames of a clip at ratio r have <= max(1, trunc(r·N)) ids
    n = trainer.model.num_tokens
    counts = a["labels"]["frame_offsets"].diff().view(len(a["keys"]), -1)
    for row, ratio in zip(counts, a["ratios"]):
        assert int(row.max()) <= max(1, int(ratio * n))
    # the worker process prepares exactly the batches the inline path does
    inline = batches(stream, 2, workers=0)
    worker = batches(stream, 2, workers=1)
    for _ in range(2):
        x, y = next(inline), next(worker)
        assert x["keys"] == y["keys"] and torch.equal(x["video"], y["video"])
        assert torch.equal(x["labels"]["ids"], y["labels"]["ids"])
    # synthetic clips are fresh (never cached), real ones are cached
    keys = [k for p in range(3, 5) for k in stream.batch(p)["keys"]]
    real = {(k, r) for p in range(3, 5) for k, r in zip(stream.batch(p)["keys"], stream.batch(p)["ratios"])
            if not k.startswith("synthetic:")}
    files = list((trainer.out / "labels").glob("*.json"))
    assert any(k.startswith("synthetic:") for k in keys)
    assert not any("synthetic:" in f.read_text() for f in files)
    assert {(f.read_text().count('"key"'),) for f in files} == {(1,)} and len(files) >= len(real)


def test_freeze_spans_are_seeded_and_hold_one_frame():
    spans = [freeze_span(g, seed=3, fraction=0.4, frames=8) for g in range(400)]
    assert spans == [freeze_span(g, seed=3, fraction=0.4, frames=8) for g in range(400)]
    frozen = [s for s in spans if s is not None]
    assert 0.3 < len(frozen) / len(spans) < 0.5
    assert all(1 <= a < b <= 8 for a, b in frozen)
    assert {b - a for a, b in frozen} >= {1, 7} and {a for a, _ in frozen} == set(range(1, 8))
    assert freeze_span(5, 3, 0.0, 8) is None and freeze_span(5, 3, 1.0, 1) is None
    video = torch.randn(8, 3, 4, 4)
    held = apply_freeze(video, (2, 5))
    assert torch.equal(held[2:5], video[1].expand(3, 3, 4, 4))
    assert torch.equal(held[:2], video[:2]) and torch.equal(held[5:], video[5:])
    assert apply_freeze(video, None) is video and not torch.equal(video[2], video[1])


def _freeze_draw(g, seed, frames):
    """(label-key suffix, transform of a view) of a freeze_fraction=0.5 draw, or None."""
    span = freeze_span(g, seed, 0.5, frames)
    if span is None:
        return None
    start, stop = span

    def check(plain, changed):
        assert torch.equal(changed, apply_freeze(plain, span))
        assert (changed[start:stop] == changed[start - 1]).all()
    return f":freeze{start}-{stop}", check


def _soften_draw(g, seed, frames):
    """(label-key suffix, transform of a view) of a soften_fraction=0.5 draw, or None."""
    factor = soften_factor(g, seed, 0.5)
    if factor is None:
        return None

    def check(plain, changed):
        assert torch.equal(changed, apply_soften(plain, factor))
    return f":soft{factor:.4f}", check


@pytest.mark.parametrize("option, draw", [("data.freeze_fraction=0.5", _freeze_draw),
                                          ("data.soften_fraction=0.5", _soften_draw)])
def test_stream_changes_its_share_of_draws_and_keeps_the_rest(tiny, option, draw):
    plain = Trainer(tiny(*SYNTH)).stream
    stream = Trainer(tiny(*SYNTH, option)).stream
    seen = 0
    for g in range(12):
        a, b = plain.clip(g)[0], stream.clip(g)[0]
        changed = draw(g, stream.cfg.run.seed, a["video"].shape[0])
        if changed is None:
            assert b["key"] == a["key"] and torch.equal(b["video"], a["video"])
            continue
        seen += 1
        suffix, check = changed
        assert b["key"] == a["key"] + suffix  # its own cached labels
        for view in ("video", "video_for_task"):
            check(a[view], b[view])
    assert 0 < seen < 12


def test_frozen_clips_get_labels_for_every_frame_and_bad_fractions_are_refused(tiny):
    stream = Trainer(tiny(*SYNTH, "data.freeze_fraction=0.5")).stream
    # a frozen clip gets its own oracle labels: every frame, held ones included, has some
    batch = next(stream.batch(p) for p in range(12) if any(":freeze" in k for k in stream.batch(p)["keys"]))
    counts = batch["labels"]["frame_offsets"].diff().view(len(batch["keys"]), -1)
    assert (counts >= 1).all()
    for bad in ("data.freeze_fraction=-0.1", "data.freeze_fraction=1.5", "data.freeze_fraction=nan"):
        with pytest.raises(ValueError, match="freeze_fraction"):
            tiny(bad)


def test_soften_factors_are_seeded_and_remove_detail():
    factors = [soften_factor(g, seed=3, fraction=0.4) for g in range(400)]
    assert factors == [soften_factor(g, seed=3, fraction=0.4) for g in range(400)]
    drawn = [f for f in factors if f is not None]
    assert 0.3 < len(drawn) / len(factors) < 0.5
    low, high = SOFTEN_RANGE
    assert all(low <= f <= high for f in drawn) and min(drawn) < 2 and max(drawn) > 6
    assert soften_factor(5, 3, 0.0) is None
    video = torch.randn(2, 3, 32, 48)
    assert apply_soften(video, None) is video
    detail = [float((apply_soften(video, f) - video).abs().mean()) for f in (1.5, 3.0, 8.0)]
    assert 0 < detail[0] < detail[1] < detail[2]               # softer and softer
    smooth = torch.linspace(0, 1, 48).expand(2, 3, 32, 48).contiguous()
    assert float((apply_soften(smooth, 4.0) - smooth).abs().max()) < 0.05  # a ramp stays itself


def test_soften_fraction_out_of_range_is_refused(tiny):
    for bad in ("data.soften_fraction=-0.1", "data.soften_fraction=1.5", "data.soften_fraction=nan"):
        with pytest.raises(ValueError, match="soften_fraction"):
            tiny(bad)


def test_all_synthetic_needs_no_video_and_val_paths_stay_out_of_training(tiny, tmp_path):
    from autogaze_ext.video import synthetic_video, write_video
    write_video(tmp_path / "val.mp4", synthetic_video(6, 64, 64, seed=9))
    cfg = tiny("data.synthetic=0", "data.synthetic_fraction=1.0", "data.split=none",
               f"data.val_paths=[\"{tmp_path / 'val.mp4'}\"]", "data.synthetic_max_side=64")
    trainer = Trainer(cfg)
    assert trainer.data.train == [] and len(trainer.data.val) == 1
    assert all(trainer.stream.draw(g)[0] == "synthetic" for g in range(20))
    assert trainer.train_step()["loss"] > 0
    both = f"[\"{tmp_path / 'val.mp4'}\"]"
    with pytest.raises(ValueError, match="training videos too"):
        Trainer(tiny(f"data.paths={both}", f"data.val_paths={both}"))
    for bad in ("data.synthetic_fraction=1.5", "data.workers=2", "algorithm.label_ratios=[0.0]",
                "algorithm.rollout_fraction=0.5"):
        with pytest.raises(ValueError):
            tiny(bad)


def test_candidate_gains_are_the_oracle_view_of_any_gaze():
    task = PaintReconstruction((32, 64), frame_size=64)
    video = random_video(2, 3, 64, seed=7)
    res = greedy_oracle(task, video, 8, return_gains=True)
    gains = candidate_gains(task, video, res.ids, res.frame_offsets)
    finite = torch.isfinite(res.gains)
    assert torch.equal(finite, torch.isfinite(gains))
    assert torch.equal(gains[finite], res.gains[finite])
    # the oracle's pick has the largest gain of its slot
    picked = gains.float().gather(1, res.ids[:, None]).squeeze(1)
    assert torch.allclose(picked, gains.float().max(1).values)
    # along another gaze: the gain of painting id j at slot j is the drop of the prefix loss
    ids = torch.randint(0, 20, (res.ids.numel(),))
    offs = res.frame_offsets
    for f in range(6):
        lo, hi = int(offs[f]), int(offs[f + 1])
        ids[lo:hi] = torch.randperm(20)[: hi - lo]
    g = candidate_gains(task, video, ids, offs).float()
    prefix = task.prefix_losses(video, ids, offs)
    for f in range(6):
        lo, hi = int(offs[f]), int(offs[f + 1])
        got = g[lo + 1:hi].gather(1, ids[lo + 1:hi, None]).squeeze(1)
        torch.testing.assert_close(got, prefix[lo:hi - 1] - prefix[lo + 1:hi], atol=2e-3, rtol=1e-2)
        seen = ids[lo:hi - 1]
        assert torch.isinf(g[hi - 1, seen]).all()          # earlier ids of the frame are banned


def test_soft_targets_and_soft_ntp(tmp_path):
    gains = torch.tensor([[0.2, 0.1, float("-inf"), 0.0], [-0.1, -0.3, -0.2, float("-inf")]])
    target = soft_targets(gains, 0.5, vocab=5)
    torch.testing.assert_close(target.sum(1), torch.ones(2))
    assert (target[:, 4] == 0).all() and target[0, 2] == 0 and target[1, 3] == 0
    assert target[0].argmax() == 0 and target[1].argmax() == 0
    log_q = torch.log_softmax(torch.tensor([[5.0, 1, float("-inf"), 0, 0]]), 1)
    assert torch.isfinite(soft_label_loss(log_q, target[:1])).all()
    # NTP with soft labels: the soft loss falls with training
    torch.manual_seed(0)
    model = random_model(small_config(), seed=2).train()
    task = PaintReconstruction.from_config(model.config)
    video = random_video(1, 3, 64, seed=4)
    labels = LabelStore(tmp_path, task, ratio=0.3, soft=True).batch(video, ["a"])
    assert labels["gains"].shape == (labels["ids"].numel(), model.num_tokens)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    soft = []
    for _ in range(6):
        loss, metrics = ntp_step(model, {"video": video}, labels, "sampling", True, 1.0, 0.2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        soft.append(metrics["soft_loss"])
    assert soft[-1] < 0.8 * soft[0], soft
    with pytest.raises(ValueError, match="soft labels"):
        ntp_step(model, {"video": video}, {k: v for k, v in labels.items() if k != "gains"},
                 "sampling", True, 1.0)
    # the regret term adds the expected regret of the same distributions, and training on it
    # lowers it
    scored = score_rollout(model, video, labels["ids"], labels["frame_offsets"], temperature=1.0,
                           top_k=None, return_distribution=True)
    regrets = regret_loss(scored.log_dist, labels["gains"]).detach()
    plain = ntp_step(model, {"video": video}, labels, "sampling", True, 1.0, 0.2)[1]
    with_regret = ntp_step(model, {"video": video}, labels, "sampling", True, 1.0, 0.2, regret_weight=2.0)[1]
    assert with_regret["regret_loss"] == pytest.approx(float(regrets.mean()), rel=1e-4)
    assert plain["regret_loss"] == 0.0 and with_regret["soft_loss"] == pytest.approx(plain["soft_loss"])
    assert with_regret["loss"] == pytest.approx(plain["loss"] + 2.0 * with_regret["regret_loss"], rel=1e-4)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(10):
        loss, _ = ntp_step(model, {"video": video}, labels, "sampling", False, 0.0, 0.2,
                           hard_weight=0.0, regret_weight=1.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    scored = score_rollout(model, video, labels["ids"], labels["frame_offsets"], temperature=1.0,
                           top_k=None, return_distribution=True)
    assert float(regret_loss(scored.log_dist, labels["gains"]).mean()) < 0.8 * float(regrets.mean())


def test_rollout_labels_are_the_models_own_gaze():
    model = random_model(small_config(), seed=3)
    task = PaintReconstruction.from_config(model.config)
    video = random_video(2, 3, 64, seed=8)
    batch = {"video": video, "video_for_task": video}
    labels = rollout_labels(model, task, batch, [0.2, 0.5])
    for b, ratio in enumerate((0.2, 0.5)):
        own = model.eval()(video[b:b + 1], gazing_ratio=ratio)
        lo, hi = 3 * b, 3 * b + 3
        offs = labels["frame_offsets"]
        assert torch.equal(labels["ids"][int(offs[lo]):int(offs[hi])], own["ids"])
    torch.testing.assert_close(labels["losses"], task.prefix_losses(video, labels["ids"], labels["frame_offsets"]))
    assert labels["gains"].shape == (labels["ids"].numel(), model.num_tokens)


def test_head_calibration_trains_only_the_head_and_fits_real_losses(tiny):
    cfg = tiny("algorithm.name=head", "algorithm.train_params=head", "algorithm.ratio_strategy=uniform",
               "algorithm.ratio_min=0.1", "algorithm.ratio_max=0.6", "algorithm.requirement_strategy=uniform",
               "algorithm.requirement_fraction=0.5", "algorithm.requirement_min=0.05",
               "algorithm.requirement_max=0.5", "optim.lr=5e-2", "run.steps=12", "run.val_interval=0",
               "run.save_interval=0")
    trainer = Trainer(cfg)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    video = random_video(2, 3, 64, seed=11)
    batch = {"video": video, "video_for_task": video}
    rollout = head_rollout(trainer.model, trainer.task, batch, cfg.algorithm, __import__("random").Random(0))
    first = head_loss(trainer.model, rollout)[1]["tlp_loss"]
    ids_before = trainer.model.eval()(video, gazing_ratio=0.3)["ids"]
    trainer.model.train()
    trainer.train()
    after = trainer.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"gazing_model.gaze_decoder.task_loss_prediction_head.weight"}
    last = head_loss(trainer.model, rollout)[1]["tlp_loss"]
    assert last < first, (first, last)
    # the gaze itself (without a requirement) is untouched
    assert torch.equal(trainer.model.eval()(video, gazing_ratio=0.3)["ids"], ids_before)


def test_decoder_tail_trains_the_last_layer_and_head_under_the_gaze_anchor(tiny):
    common = ("algorithm.name=head", "algorithm.train_params=decoder_tail",
              "algorithm.ratio_strategy=uniform", "algorithm.ratio_min=0.1", "algorithm.ratio_max=0.6",
              "algorithm.requirement_fraction=0.0", "algorithm.head_error=relative", "optim.lr=5e-3",
              "run.steps=3", "run.val_interval=0", "run.save_interval=0")
    video = random_video(2, 3, 64, seed=11)
    batch = {"video": video, "video_for_task": video}
    drift = {}
    for anchor in (0.0, 50.0):
        trainer = Trainer(tiny(*common, f"algorithm.anchor_kl={anchor}"))
        model = trainer.model
        initial = copy.deepcopy(model)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        trainer.train()
        after = model.state_dict()
        changed = {k for k in before if not torch.equal(before[k], after[k])}
        tail = f"gazing_model.gaze_decoder.model.layers.{len(model.gazing_model.gaze_decoder.model.layers) - 1}."
        assert "gazing_model.gaze_decoder.task_loss_prediction_head.weight" in changed
        assert any(k.startswith(tail) for k in changed)
        assert all(k.startswith((tail, "gazing_model.gaze_decoder.model.norm.",
                                 "gazing_model.gaze_decoder.task_loss_prediction_head.")) for k in changed), changed
        # the trainer's own loss, optimiser and parameters fit one rollout's relative error
        rollout = head_rollout(model, trainer.task, batch, trainer.cfg.algorithm, __import__("random").Random(0))
        first = head_loss(model, rollout, error="relative")[1]["tlp_loss"]
        for _ in range(15):
            trainer.optimizer.zero_grad()
            loss, _ = trainer.module("head", rollout)
            loss.backward()
            trainer.optimizer.step()
        assert head_loss(model, rollout, error="relative")[1]["tlp_loss"] < 0.7 * first
        _, metrics = head_loss(model, rollout, anchor=1.0, reference=initial)
        assert 0.0 <= metrics["greedy_agreement"] <= 1.0
        drift[anchor] = metrics["anchor_kl"]
    # the anchor keeps the gaze distribution nearer the initial model's
    assert drift[50.0] < 0.5 * drift[0.0], drift


def test_head_options_are_checked(tiny):
    with pytest.raises(ValueError, match="train_params"):
        tiny("algorithm.name=head", "algorithm.train_params=tail")
    with pytest.raises(ValueError, match="head_error"):
        tiny("algorithm.name=head", "algorithm.head_error=cube")
    with pytest.raises(ValueError, match="anchor_kl"):
        tiny("algorithm.name=head", "algorithm.anchor_kl=-1")
    with pytest.raises(ValueError, match="anchor_kl"):
        tiny("algorithm.name=ntp", "algorithm.anchor_kl=1")


def test_mixed_on_policy_training_resumes_bit_exact(tiny, tmp_path):
    extra = [*SYNTH, "algorithm.soft_label_weight=1.0", "algorithm.rollout_fraction=0.5",
             "run.val_interval=0", "optim.schedule=linear", "data.workers=1", "run.steps=4",
             "data.batch_size=1"]
    once = Trainer(tiny(*extra, f"run.out={tmp_path / 'once'}"))
    metrics = [once.train_step() for _ in range(4)]
    assert {m["on_policy"] for m in metrics} == {0.0, 1.0}
    once.save()
    Trainer(tiny(*extra, f"run.out={tmp_path / 'twice'}")).train(until=2)
    resumed = Trainer(tiny(*extra, f"run.out={tmp_path / 'twice'}", "run.resume=true"))
    resumed.train()
    a = load_safetensors(tmp_path / "once" / "checkpoint_latest" / "model.safetensors")
    b = load_safetensors(tmp_path / "twice" / "checkpoint_latest" / "model.safetensors")
    for key in a:
        assert torch.equal(a[key], b[key]), key
