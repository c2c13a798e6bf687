"""The training stack on a tiny model and tiny synthetic clips: config, data, oracle labels,
generation-consistent scoring, NTP/GRPO steps, checkpoints and bit-exact resume."""

from __future__ import annotations

import json
import math
import random
import sys

import pytest
import torch
from helpers import budget_of, random_model, random_video, small_config

from autogaze_ext import AutoGaze
from autogaze_ext.checkpoint import load_safetensors
from autogaze_ext.preprocess import ProcessorConfig
from autogaze_ext.tasks import PaintReconstruction
from autogaze_ext.training import cli
from autogaze_ext.training.algorithms import (grpo_loss_from_rollout, grpo_rollout, grpo_step,
                                              ntp_step, scheduled_temperature)
from autogaze_ext.training.config import (DataSection, TrainConfig, apply_overrides,
                                          load_config)
from autogaze_ext.training.data import ClipDataset, RankSampler
from autogaze_ext.training.labels import LabelStore
from autogaze_ext.training.policy import packed_to_padded, score_rollout
from autogaze_ext.training.trainer import Trainer

TINY_TOML = """
[model.build]
scales = "32+64"
input_img_size = 64
hidden_size = 64
intermediate_size = 128
num_layers = 2
num_heads = 4
num_multi_token_pred = 4
vision_hidden_dim = 32

[data]
synthetic = 2
synthetic_frames = 8
synthetic_size = 64
gaze_size = 64
clip_len = 3
batch_size = 2
val_windows = 1
val_fraction = 0.3

[algorithm]
label_ratio = 0.3
ratio = 0.3
group_size = 3

[optim]
lr = 1e-2
schedule = "constant"

[run]
steps = 4
log_interval = 1
val_interval = 2
save_interval = 2
"""


@pytest.fixture(autouse=True)
def cpu_training_settings():
    """Flush denormals as the Trainer does on the CPU, and use one thread: these tiny models
    gain nothing from more and are slowed down a lot by a busy machine. Restored after."""
    threads = torch.get_num_threads()
    torch.set_flush_denormal(True)
    torch.set_num_threads(1)
    yield
    torch.set_flush_denormal(False)
    torch.set_num_threads(threads)


@pytest.fixture()
def tiny_toml(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_TOML)
    return path


def tiny_cfg(tiny_toml, out, *overrides) -> TrainConfig:
    return load_config(tiny_toml, [f"run.out={out}", *overrides])


# ---- config ------------------------------------------------------------------------------------
def test_config_load_overrides_and_errors(tiny_toml, tmp_path):
    cfg = load_config(tiny_toml, ["optim.lr=0.5", "run.steps=7", "algorithm.name=grpo",
                                  "model.build.hidden_size=32", "data.paths=['a', 'b']",
                                  "run.val_requirement=0.4", "run.out=123"])
    assert cfg.optim.lr == 0.5 and isinstance(cfg.optim.lr, float)
    assert cfg.run.steps == 7 and cfg.algorithm.name == "grpo"
    assert cfg.model.build["hidden_size"] == 32 and cfg.model.build["scales"] == "32+64"
    assert cfg.data.paths == ["a", "b"] and cfg.run.val_requirement == 0.4
    assert cfg.run.out == "123"
    assert load_config(tiny_toml, ["run.val_requirement=none"]).run.val_requirement is None
    with pytest.raises(ValueError, match="unknown config key optim.lrr"):
        load_config(tiny_toml, ["optim.lrr=1"])
    with pytest.raises(ValueError, match="unknown config section"):
        load_config(tiny_toml, ["optimizer.lr=1"])
    with pytest.raises(TypeError, match="run.steps must be an integer"):
        load_config(tiny_toml, ["run.steps=1.5"])
    with pytest.raises(ValueError, match="algorithm.scoring must be one of"):
        load_config(tiny_toml, ["algorithm.scoring=exact"])
    bad = tmp_path / "bad.toml"
    bad.write_text("[run]\nstepz = 3\n")
    with pytest.raises(ValueError, match="run.stepz"):
        load_config(bad)
    with pytest.raises(ValueError, match="must look like"):
        apply_overrides(TrainConfig(), ["run.steps"])


def test_cli_print_config_and_error_exit(tiny_toml, capsys):
    assert cli.main([str(tiny_toml), "run.steps=9", "--print-config"]) == 0
    text = capsys.readouterr().out
    assert "steps = 9" in text and "[algorithm]" in text
    # the printed config round-trips
    import tomllib
    assert tomllib.loads(text)["run"]["steps"] == 9
    assert cli.main([str(tiny_toml), "run.nope=1"]) == 2
    assert "run.nope" in capsys.readouterr().err


def test_cli_until_stops_on_the_full_schedule(tiny_toml, tmp_path, capsys):
    def logged_lr(out):
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["lr"] for r in rows if "lr" in r}

    args = [str(tiny_toml), "run.steps=4", "run.val_interval=0", "optim.schedule=linear"]
    assert cli.main([*args, f"run.out={tmp_path / 'until'}", "--until", "2"]) == 0
    state = torch.load(tmp_path / "until" / "checkpoint_latest" / "trainer_state.pt",
                       weights_only=False)
    assert state["step"] == 2
    assert cli.main([*args, f"run.out={tmp_path / 'full'}"]) == 0
    until, full = logged_lr(tmp_path / "until"), logged_lr(tmp_path / "full")
    assert max(until) == 2 and max(full) == 4
    assert all(until[s] == full[s] for s in until)  # the 4-step schedule, stopped at 2
    assert cli.main([*args, f"run.out={tmp_path / 'bad'}", "--until", "0"]) == 2
    assert "--until" in capsys.readouterr().err


# ---- data --------------------------------------------------------------------------------------
def test_windows_split_and_rank_sampler():
    cfg = DataSection(synthetic=2, synthetic_frames=20, synthetic_size=64, gaze_size=64,
                      clip_len=3, frame_stride=2, val_fraction=0.3, val_windows=2)
    data = ClipDataset(cfg, ProcessorConfig.release(), task_size=64)
    assert len(data.sources) == 2 and data.sources[0].gaze is data.sources[0].task
    for w in data.train:  # training windows stay inside the first 70 % of their video
        idx = w.indices(3, 2)
        assert int(idx.max()) < 14 and idx.tolist() == sorted(idx.tolist())
    for w in data.val:
        assert int(w.indices(3, 2).min()) >= 14
    assert len(data.val) == 4 and len(data.train) >= 2
    clip = data.clip(data.train[0])
    assert clip["video"].shape == (3, 3, 64, 64)
    torch.testing.assert_close(clip["video"][1], data.sources[data.train[0].source].gaze[
        data.train[0].start + 2])
    # ranks split every epoch's permutation without overlap; draws are deterministic
    ranks = [RankSampler(6, seed=1, rank=r, world_size=2) for r in range(2)]
    drawn = [s.next(3) for s in ranks]
    assert sorted(drawn[0] + drawn[1]) == list(range(6))
    again = RankSampler(6, seed=1, rank=0, world_size=2)
    again.next(1)
    resumed = RankSampler(6, seed=1, rank=0, world_size=2)
    resumed.load_state_dict(again.state_dict())
    assert resumed.next(2) == drawn[0][1:]


# ---- labels ------------------------------------------------------------------------------------
def test_label_cache_reuse_and_invalidation(tmp_path):
    task = PaintReconstruction((32, 64), frame_size=64)
    clip = random_video(1, 3, 64, seed=2)[0]
    store = LabelStore(tmp_path, task, ratio=0.3)
    first = store.get(clip, "clip@0")
    assert store.computed == 1
    assert first["frame_offsets"].diff().tolist() == [budget_of(0.3, 20)] * 3
    # the targets are the task's own prefix losses
    torch.testing.assert_close(first["losses"], task.prefix_losses(
        clip[None], first["ids"], first["frame_offsets"]))
    reuse = LabelStore(tmp_path, task, ratio=0.3)
    second = reuse.get(clip, "clip@0")
    assert reuse.computed == 0
    for key in first:
        assert torch.equal(first[key], second[key])
    other_ratio = LabelStore(tmp_path, task, ratio=0.5)
    assert other_ratio.get(clip, "clip@0")["ids"].numel() == 3 * budget_of(0.5, 20)
    assert other_ratio.computed == 1
    changed = LabelStore(tmp_path, task, ratio=0.3)
    changed.get(clip + 1.0, "clip@0")  # same key, other content: recomputed
    assert changed.computed == 1
    with_req = LabelStore(tmp_path, task, ratio=0.3, requirement=10.0)
    lab = with_req.get(clip, "clip@0")
    assert with_req.computed == 1 and lab["frame_offsets"].diff().tolist() == [1, 1, 1]


# ---- generation-consistent scoring -----------------------------------------------------------
def test_policy_scores_greedy_argmax_and_differ_from_official():
    model = random_model(small_config(), seed=3)
    video = random_video(2, 3, 64, seed=1)
    out = model(video, gazing_ratio=0.5)
    scored = score_rollout(model, video, out["ids"], out["frame_offsets"], temperature=1.0,
                           top_k=None, return_distribution=True)
    # every greedy id is the argmax of the processed distribution it is scored under
    assert torch.equal(scored.log_dist.argmax(-1), out["ids"])
    assert bool((scored.log_probs <= 0).all())
    official = model.score(video, out)["log_action_probs"]
    mine = packed_to_padded(scored.log_probs, out["frame_offsets"], 2, 3)
    # the official teacher-forced pass (consecutive positions, raw softmax) scores them otherwise
    assert (official - mine).abs().max() > 1e-2


def _uniform_draws(seed, batch, frames, budget, k):
    gen = torch.Generator().manual_seed(seed)
    return [[torch.rand(batch, k, generator=gen) for _ in range(math.ceil(budget / k))]
            for _ in range(frames)]


def _inverse_cdf_mismatches(log_dist, ids, offsets, draws, batch, frames, k):
    """Slots whose id is not the inverse-CDF pick of ``log_dist`` at the sampler's uniform."""
    bad, offs = 0, offsets.tolist()
    for b in range(batch):
        for t in range(frames):
            lo = offs[b * frames + t]
            for j in range(offs[b * frames + t + 1] - lo):
                cdf = log_dist[lo + j].exp().cumsum(0)
                u = draws[t][j // k][b, j % k]
                pick = torch.searchsorted(cdf, (u * cdf[-1]).view(1), right=True).item()
                bad += pick != int(ids[lo + j])
    return bad


def test_policy_scores_are_the_sampler_distribution():
    """Temperature sampling with top-k active (N = 69 > 50): re-drawing every slot by inverse CDF
    from the scored distribution with the sampler's own uniforms reproduces every id; a wrong
    temperature does not."""
    model = random_model(small_config(scales="32+64+112"), seed=3)
    k, frames, ratio, tau = 4, 3, 0.5, 0.7
    video = random_video(2, frames, 64, seed=1)
    out = model(video, gazing_ratio=ratio, do_sample=True, temperature=tau,
                generator=torch.Generator().manual_seed(5))
    draws = _uniform_draws(5, 2, frames, budget_of(ratio, model.num_tokens), k)
    scored = score_rollout(model, video, out["ids"], out["frame_offsets"], temperature=tau,
                           return_distribution=True)
    assert torch.isfinite(scored.log_probs).all()
    assert _inverse_cdf_mismatches(scored.log_dist, out["ids"], out["frame_offsets"], draws, 2,
                                   frames, k) == 0
    wrong = score_rollout(model, video, out["ids"], out["frame_offsets"], temperature=1.0,
                          return_distribution=True)
    assert _inverse_cdf_mismatches(wrong.log_dist, out["ids"], out["frame_offsets"], draws, 2,
                                   frames, k) > 0
    # top-k 50: at most 50 ids have mass in each scored row
    assert int((scored.log_dist > float("-inf")).sum(-1).max()) <= 50
    # differentiable
    scored.log_probs.sum().backward()
    assert model.gazing_model.gaze_decoder.lm_head.weight.grad.abs().sum() > 0


def test_policy_scores_keep_the_drawn_id_under_a_narrower_top_k():
    """A pass that ranks an id below the k-th (here: scored with top-5 after a top-50 draw; in
    training, bf16 rounding) still gives it a finite log-probability; the other ids are cut."""
    model = random_model(small_config(scales="32+64+112"), seed=3)
    video = random_video(2, 3, 64, seed=1)
    out = model(video, gazing_ratio=0.5, do_sample=True, temperature=3.0,
                generator=torch.Generator().manual_seed(5))
    full = score_rollout(model, video, out["ids"], out["frame_offsets"], temperature=3.0,
                         top_k=None, return_distribution=True)
    narrow = score_rollout(model, video, out["ids"], out["frame_offsets"], temperature=3.0,
                           top_k=5, return_distribution=True)
    in_top5 = (full.log_dist > full.log_dist.gather(1, out["ids"][:, None])).sum(1) < 5
    assert not bool(in_top5.all())  # some draws lie outside the top 5
    assert torch.isfinite(narrow.log_probs).all()
    kept = (narrow.log_dist > float("-inf")).sum(-1)
    assert torch.equal(kept, torch.where(in_top5, 5, 6))
    assert bool((narrow.log_probs >= full.log_probs - 1e-6).all())


# ---- NTP / GRPO steps -------------------------------------------------------------------------
def test_ntp_steps_decrease_loss(tmp_path):
    torch.manual_seed(0)
    model = AutoGaze(small_config()).train()
    task = PaintReconstruction.from_config(model.config)
    video = random_video(2, 3, 64, seed=4)
    labels = LabelStore(tmp_path, task, ratio=0.3).batch(video, ["a", "b"])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for scoring in ("sampling", "official"):
        losses = []
        for _ in range(5):
            loss, metrics = ntp_step(model, {"video": video}, labels, scoring=scoring)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        assert losses[-1] < 0.7 * losses[0], (scoring, losses)
        assert metrics["tokens_per_frame"] == budget_of(0.3, 20)


def _tiny_grpo_rollout(tiny_toml, tmp_path, *overrides):
    """(algorithm config, model, task, batch, rollout): a seeded GRPO rollout of two random clips."""
    cfg = tiny_cfg(tiny_toml, tmp_path, "algorithm.name=grpo", *overrides).algorithm
    model = random_model(small_config(), seed=1, lm_head_scale=1.0).train()
    task = PaintReconstruction.from_config(model.config)
    video = random_video(2, 3, 64, seed=5)
    batch = {"video": video, "video_for_task": video}
    rollout = grpo_rollout(model, task, batch, cfg, temperature=2.0, rng=random.Random(0),
                           generator=torch.Generator().manual_seed(0))
    return cfg, model, task, batch, rollout


def test_grpo_step_groups_and_updates(tiny_toml, tmp_path):
    cfg, model, task, batch, rollout = _tiny_grpo_rollout(tiny_toml, tmp_path)
    g, b = cfg.group_size, 2
    adv = rollout["advantages"]
    assert adv.shape[0] == g * b and not rollout["has_pads"]
    # group-major: rows b, b+2, b+4 are the same clip; advantages sum to zero per group
    torch.testing.assert_close(adv.view(g, b, -1).sum(0), torch.zeros(b, adv.shape[1]),
                               atol=1e-5, rtol=0)
    assert adv.abs().sum() > 0
    assert torch.equal(rollout["video"][0], rollout["video"][b])
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    for scoring in ("sampling", "official"):
        cfg.scoring = scoring
        loss, metrics = grpo_loss_from_rollout(model, rollout, cfg)
        assert math.isfinite(loss.item()) and math.isfinite(metrics["logp"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    changed = sum(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert changed >= len(before) - 1
    # with a requirement rollouts have pad slots; both scorings still give finite losses
    cfg.requirement_strategy, cfg.requirement = "fixed", 0.0
    padded = grpo_rollout(model, task, batch, cfg, temperature=1.0, rng=random.Random(1),
                          generator=torch.Generator().manual_seed(1))
    assert padded["has_pads"]
    for scoring in ("sampling", "official"):
        cfg.scoring = scoring
        assert math.isfinite(grpo_loss_from_rollout(model, padded, cfg)[0].item())
    cfg.requirement_strategy = "none"
    # the public one-call step (rollout at τ(step) + loss) works as well
    cfg.group_size = 2
    loss, metrics = grpo_step(model, task, batch, cfg, step=5, total_steps=10,
                              generator=torch.Generator().manual_seed(1))
    assert math.isfinite(loss.item())
    assert metrics["temperature"] == pytest.approx(scheduled_temperature(cfg, 5, 10))
    assert scheduled_temperature(cfg, 0, 10) == 3.0
    assert scheduled_temperature(cfg, 10, 10) == pytest.approx(0.3)


# ---- trainer: checkpoints and resume ----------------------------------------------------------
def test_trainer_checkpoint_loads(tiny_toml, tmp_path):
    trainer = Trainer(tiny_cfg(tiny_toml, tmp_path / "run", "run.steps=2"))
    trainer.train()
    folder = tmp_path / "run" / "checkpoint_latest"
    loaded = AutoGaze.from_pretrained(folder)
    for (name, a), b in zip(trainer.model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert records[-1]["step"] == 2 and "loss" in records[-1]
    assert any("val_task_loss" in r for r in records)
    state = torch.load(folder / "trainer_state.pt", weights_only=False)
    assert state["step"] == 2 and state["sampler"]["position"] == 4


@pytest.mark.parametrize("algorithm,half", [("ntp", 2), ("grpo", 1)])
def test_resume_is_bit_exact(tiny_toml, tmp_path, algorithm, half):
    """2N steps in one run == N steps, stop, resume, N steps (weights, bit for bit)."""
    extra = [f"algorithm.name={algorithm}", f"run.steps={2 * half}", "run.val_interval=0",
             "optim.schedule=linear", "algorithm.label_cache=" + str(tmp_path / "labels")]
    Trainer(tiny_cfg(tiny_toml, tmp_path / "once", *extra)).train()
    Trainer(tiny_cfg(tiny_toml, tmp_path / "twice", *extra)).train(until=half)
    resumed = Trainer(tiny_cfg(tiny_toml, tmp_path / "twice", *extra, "run.resume=true"))
    assert resumed.step == half
    resumed.train()
    once = load_safetensors(tmp_path / "once" / "checkpoint_latest" / "model.safetensors")
    twice = load_safetensors(tmp_path / "twice" / "checkpoint_latest" / "model.safetensors")
    init = AutoGaze(small_config()).state_dict()
    assert once.keys() == twice.keys()
    for key in once:
        assert torch.equal(once[key], twice[key]), key
    assert any(not torch.equal(once[k], init[k]) for k in once if k in init)


def test_train_module_entry_point(tiny_toml, tmp_path):
    import os
    import subprocess

    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "autogaze_ext.train", str(tiny_toml),
                           f"run.out={out}", "run.steps=1", "run.val_interval=0"],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr
    assert "world_size=1" in proc.stdout
    assert (out / "checkpoint_latest" / "model.safetensors").is_file()


def test_frame_budget_strategies(tiny_toml, tmp_path):
    cfg = tiny_cfg(tiny_toml, tmp_path, "algorithm.name=grpo").algorithm
    from autogaze_ext.training.algorithms import frame_ratios, sample_ratio

    model = random_model(small_config(), seed=2).train()
    video = random_video(2, 4, 64, seed=6)
    rng = random.Random(0)
    cfg.ratio_strategy, cfg.ratio_min, cfg.ratio_max = "uniform", 0.2, 0.4
    ratios = [sample_ratio(cfg, rng) for _ in range(20)]
    assert all(0.2 <= r <= 0.4 for r in ratios) and len(set(ratios)) == 20
    cfg.ratio_strategy, cfg.ratio_lambda = "exponential", 5.0
    assert all(0.2 <= sample_ratio(cfg, rng) <= 0.4 for _ in range(20))
    cfg.frame_strategy = "uniform"
    assert frame_ratios(model, cfg, 0.3, video, rng, 1.0, None) == [0.3] * 4
    cfg.frame_strategy, cfg.dirichlet_alpha = "dirichlet", [3.0]
    per_frame = frame_ratios(model, cfg, 0.3, video, rng, 1.0, None)
    assert len(per_frame) == 4 and len(set(per_frame)) == 4
    assert sum(per_frame) == pytest.approx(1.2, abs=1e-5)
    cfg.frame_strategy = "self"  # the model's own gaze under a requirement in [0.5, 1]
    per_frame = frame_ratios(model, cfg, 0.5, video, rng, 1.0, torch.Generator().manual_seed(0))
    n = model.num_tokens
    assert len(per_frame) == 4 and all(1 <= round(r * n) <= budget_of(0.5, n) for r in per_frame)
    # the rollout with those ratios has exactly round(r·N) ids per frame
    out = model(video, gazing_ratio=per_frame)
    assert out["frame_offsets"].diff().view(2, 4)[0].tolist() == [round(r * n) for r in per_frame]


def test_task_outputs_duck_typed_task():
    from autogaze_ext.training.algorithms import task_outputs

    class FakeTask:  # any task returning the four fields works (e.g. MAEReconstruction)
        def __call__(self, video, ids, frame_offsets, generator=None):
            b = video.shape[0]
            return {"losses": torch.ones(b, 2), "frames": torch.tensor([0, 2]),
                    "slot_targets": torch.zeros(ids.numel()),
                    "slot_mask": torch.arange(ids.numel()) % 2 == 0}

    video = torch.zeros(2, 3, 3, 64, 64)
    ids, offs = torch.arange(6), torch.arange(7)
    losses, frames, targets, mask = task_outputs(FakeTask(), video, ids, offs)
    assert losses.shape == (2, 2) and frames.tolist() == [0, 2] and mask.dtype == torch.bool
    paint = PaintReconstruction((32, 64), frame_size=64)
    losses, frames, targets, mask = task_outputs(paint, random_video(2, 3, 64), ids % 20, offs)
    assert losses.shape == (2, 3) and frames.tolist() == [0, 1, 2] and bool(mask.all())
    torch.testing.assert_close(targets, paint.prefix_losses(random_video(2, 3, 64), ids % 20, offs))

    class Broken:
        def __call__(self, video, ids, frame_offsets):
            return {"losses": torch.ones(2, 3)}

    with pytest.raises(TypeError, match="frames"):
        task_outputs(Broken(), video, ids, offs)


def test_cli_minutes_stops_at_the_wall_time_and_checkpoints(tiny_toml, tmp_path, capsys):
    args = [str(tiny_toml), "run.steps=50", "run.val_interval=0", "run.save_interval=0"]
    # a deadline already past when the first step ends: the run stops there and checkpoints
    assert cli.main([*args, f"run.out={tmp_path / 'short'}", "--minutes", "1e-9"]) == 0
    state = torch.load(tmp_path / "short" / "checkpoint_latest" / "trainer_state.pt",
                       weights_only=False)
    assert state["step"] == 1
    assert "wall time reached at step 1" in capsys.readouterr().out
    for bad in ("0", "-1", "nan"):
        assert cli.main([*args, f"run.out={tmp_path / 'bad'}", "--minutes", bad]) == 2
        assert "--minutes" in capsys.readouterr().err


def test_grpo_anytime_reward_ranks_every_prefix(tiny_toml, tmp_path):
    from autogaze_ext.training.algorithms import prefix_mean
    from autogaze_ext.training.losses import grpo_advantages
    targets = torch.tensor([0.5, 0.3, 0.2, 0.9, 0.4, 0.1, 0.6])
    mask = torch.tensor([True, True, True, True, False, True, True])
    offsets = torch.tensor([0, 3, 4, 7])  # (B, T) = (1, 3): frames of 3, 1 and 3 slots
    assert torch.allclose(prefix_mean(targets, mask, offsets, (1, 3)),
                          torch.tensor([[1.0 / 3, 0.9, 0.35]]))
    cfg, model, task, _, rollout = _tiny_grpo_rollout(tiny_toml, tmp_path,
                                                      "algorithm.grpo_reward=anytime")
    # the advantages are those of −(mean prefix loss), not of −(frame loss)
    area = prefix_mean(rollout["slot_targets"], rollout["slot_mask"], rollout["frame_offsets"],
                       rollout["video"].shape[:2])
    fields = rollout["fields"]
    ends = fields["num_gazing_each_frame"].cumsum(0)
    pad = fields["if_padded_gazing"]
    expected = grpo_advantages(-area, cfg.group_size, pad, ends, cfg.gamma)
    torch.testing.assert_close(rollout["advantages"], expected)
    assert not torch.allclose(expected, grpo_advantages(-rollout["losses"].float(), cfg.group_size,
                                                        pad, ends, cfg.gamma))
    loss, _ = grpo_loss_from_rollout(model, rollout, cfg)
    assert math.isfinite(loss.item())
    with pytest.raises(ValueError, match="grpo_reward"):
        tiny_cfg(tiny_toml, tmp_path, "algorithm.grpo_reward=area")


def test_cli_warns_of_emulated_cpu_bf16(tiny_toml, tmp_path, capsys, monkeypatch):
    from autogaze_ext.training import trainer as trainer_module
    args = [str(tiny_toml), "run.steps=1", "run.val_interval=0", "run.save_interval=0"]
    for native in (False, True):
        monkeypatch.setattr(trainer_module, "native_cpu_bf16", lambda native=native: native)
        assert cli.main([*args, f"run.out={tmp_path / str(native)}", "run.bf16_cpu=true"]) == 0
        assert ("bf16 is emulated" in capsys.readouterr().err) == (not native)
    assert cli.main([*args, f"run.out={tmp_path / 'fp32'}", "run.bf16_cpu=false"]) == 0
    assert "bf16" not in capsys.readouterr().err
