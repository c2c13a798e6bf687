"""autogaze-eval: baselines, metrics, plots and the CLI on tiny models and synthetic clips."""

from __future__ import annotations

import json
import shutil
import math

import numpy as np
import pytest
import torch
from PIL import Image

from autogaze_ext.evaluation import baselines, metrics
from autogaze_ext.evaluation.cli import main
from autogaze_ext.evaluation.plot import SIZE
from autogaze_ext.tasks import PaintReconstruction
from autogaze_ext.video import synthetic_video

from helpers import random_model, small_config

PER_SCALE = (4, 16)
N = sum(PER_SCALE)
S = 64


@pytest.fixture(scope="module")
def model():
    return random_model(small_config(), seed=3)


@pytest.fixture(scope="module")
def paint():
    return PaintReconstruction((32, 64), frame_size=S)


@pytest.fixture(scope="module")
def video(model):
    clips = [model.preprocess(synthetic_video(4, S, S, seed=k)) for k in range(2)]
    clips = [torch.nn.functional.interpolate(c, size=(S, S), mode="bicubic", align_corners=False)
             for c in clips]
    return torch.stack(clips)                                             # (2, 4, 3, 64, 64)


@pytest.fixture(scope="module")
def methods(model, paint):
    return baselines.make_methods(baselines.METHODS, PER_SCALE, paint=paint, model=model)


def moving_square(T=4, step=16):
    """(1, T, 3, S, S): flat background, a 16 px square moving right by ``step`` per frame."""
    video = torch.full((1, T, 3, S, S), -0.5)
    for t in range(T):
        video[0, t, :, 16:32, t * step:(t * step) + 16] = 1.5
    return video


def cell_masks():
    """(N, S, S) bool: the pixels each candidate covers."""
    masks = []
    for n in PER_SCALE:
        g = math.isqrt(n)
        c = S // g
        for i in range(n):
            m = torch.zeros(S, S, dtype=torch.bool)
            m[(i // g) * c:(i // g + 1) * c, (i % g) * c:(i % g + 1) * c] = True
            masks.append(m)
    return torch.stack(masks)


def frames_of(ids, offsets):
    return [ids[int(offsets[i]):int(offsets[i + 1])].tolist() for i in range(len(offsets) - 1)]


@pytest.mark.parametrize("budget", [1, 5, 13, N, [2, 7, 20, 4]])
def test_every_method_gives_valid_gaze(methods, video, budget):
    B, T = video.shape[:2]
    want = [budget] * T if isinstance(budget, int) else budget
    for name, method in methods.items():
        ids, offsets = method(video, budget, torch.Generator().manual_seed(0))
        assert ids.dtype == torch.long and offsets.shape == (B * T + 1,), name
        assert int(offsets[0]) == 0 and int(offsets[-1]) == ids.numel(), name
        for f, frame in enumerate(frames_of(ids, offsets)):
            assert len(set(frame)) == len(frame), (name, frame)
            assert all(0 <= i < N for i in frame), (name, frame)
            if name == "oracle":          # stops early when nothing lowers the loss
                assert 1 <= len(frame) <= want[f % T], (name, frame)
            else:
                assert len(frame) == want[f % T], (name, frame)


def test_bad_budgets_are_rejected(methods, video):
    for bad in (0, N + 1, [1, 2], 2.5):
        with pytest.raises((ValueError, TypeError), match="budget"):
            methods["random"](video, bad, None)
    with pytest.raises(ValueError, match="unknown method"):
        baselines.make_methods(["nope"], PER_SCALE)
    with pytest.raises(ValueError, match="oracle"):
        baselines.make_methods(["oracle"], PER_SCALE)


def test_frame_difference_picks_the_moving_square():
    video = moving_square()
    change = video.diff(dim=1).abs().sum(2)[0] > 0                       # (T-1, S, S)
    masks = cell_masks()
    changed = [set(torch.nonzero((masks & c).flatten(1).any(1)).flatten().tolist()) for c in change]
    assert all(0 < len(c) < N // 2 for c in changed)
    # with a budget of exactly the number of cells that saw change, those are the picks
    budget = [1] + [len(c) for c in changed]
    ids, offsets = baselines.frame_difference_gaze(video, budget, per_scale=PER_SCALE)
    for t, frame in enumerate(frames_of(ids, offsets)[1:]):
        assert set(frame) == changed[t], (t, frame, changed[t])
    # one patch: the coarse cell holding both square positions in frame 1 (most change covered)
    ids, offsets = baselines.frame_difference_gaze(video, 1, per_scale=PER_SCALE)
    assert frames_of(ids, offsets)[1] == [0]


def test_run_length_drops_static_patches():
    video = moving_square()
    change = baselines.cell_change(video, PER_SCALE)[0]                   # (T, N)
    static = change <= 0.05
    moving = (~static).sum(-1)
    assert bool((moving[1:] < N).all()) and bool((moving[1:] > 2).all())
    ids, offsets = baselines.run_length_gaze(video, 2, per_scale=PER_SCALE, tol=0.05)
    for t, frame in enumerate(frames_of(ids, offsets)):
        assert not any(bool(static[t, i]) for i in frame), (t, frame)
    # a budget above the non-static count keeps all of them and fills with static ones
    ids, offsets = baselines.run_length_gaze(video, N - 1, per_scale=PER_SCALE, tol=0.05)
    for t, frame in enumerate(frames_of(ids, offsets)[1:], start=1):   # frame 0: nothing static
        k = int(moving[t])
        assert set(frame[:k]) == set(torch.nonzero(~static[t]).flatten().tolist())
        assert all(bool(static[t, i]) for i in frame[k:])
        # finest scale first among the non-static
        scales = [int(i >= PER_SCALE[0]) for i in frame[:k]]
        assert scales == sorted(scales, reverse=True)


def test_oracle_beats_every_method_and_losses_fall_with_the_ratio(methods, video, paint):
    budgets = [2, 6, 12, N]
    tables = metrics.loss_tables(paint, methods, video, budgets, torch.Generator().manual_seed(1))
    mean = {name: losses.mean((1, 2)) for name, (losses, _) in tables.items()}
    for name, curve in mean.items():
        assert bool((mean["oracle"] <= curve + 1e-6).all()), (name, mean["oracle"], curve)
        assert bool((curve.diff() <= 1e-6).all()), (name, curve)
    # with every candidate gazed all methods paint the same frame
    full = torch.stack([c[-1] for c in mean.values()])
    torch.testing.assert_close(full, full[:1].expand_as(full))


def test_patches_needed_matches_brute_force(methods, video, paint):
    budgets = list(range(1, N + 1, 3))
    tables = metrics.loss_tables(paint, {"fd": methods["frame_difference"], "or": methods["oracle"]},
                                 video, budgets)
    for name, (losses, counts) in tables.items():
        target = float(losses.median())
        got = metrics.patches_needed(losses, counts, target, N)
        method = methods["frame_difference" if name == "fd" else "oracle"]
        runs = [method(video, m, None) for m in budgets]
        runs = [(paint.frame_losses(video, ids, offs), offs.diff().view(video.shape[:2])) for ids, offs in runs]
        expected = []
        for b in range(video.shape[0]):
            for t in range(video.shape[1]):
                need = float("nan")
                for loss, used in runs:                  # ascending budgets: the first that works
                    if loss[b, t] <= target:
                        need = float(used[b, t])
                        break
                expected.append(need)
        expected = torch.tensor(expected)
        torch.testing.assert_close(got["per_frame"], expected, equal_nan=True)
        assert got["not_reached"] == int(expected.isnan().sum())
        capped = torch.where(expected.isnan(), torch.tensor(float(N)), expected)
        assert got["mean_capped"] == pytest.approx(float(capped.mean()))
        assert got["not_reached"] < expected.numel()           # the median target is reachable


def test_correlation_and_calibration():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, generator=gen)
    y = 2 * x + 0.5 * torch.randn(200, generator=gen)
    c = metrics.correlation(x, y)
    assert c["pearson"] == pytest.approx(float(np.corrcoef(x.numpy(), y.numpy())[0, 1]), abs=1e-9)
    assert metrics.correlation(x, x.exp())["spearman"] == pytest.approx(1.0)
    assert metrics.correlation(x, -x ** 3)["spearman"] == pytest.approx(-1.0)
    bins = metrics.calibration(x, y, bins=4)
    assert [b["count"] for b in bins] == [50] * 4
    preds = [b["pred"] for b in bins]
    assert preds == sorted(preds)
    assert sum(b["real"] * b["count"] for b in bins) / 200 == pytest.approx(float(y.mean()))


def test_head_predictions_are_the_last_slot_of_each_frame(model, video):
    ids, offsets = baselines.model_gaze(video, [3, 5, 2, 4], model=model)
    pred = metrics.head_predictions(model, video, ids, offsets)
    from autogaze_ext.training.policy import score_rollout
    full = score_rollout(model, video, ids, offsets, top_k=None).task_loss_prediction.detach()
    ends = offsets[1:] - 1
    torch.testing.assert_close(pred, full[ends].view(2, 4))
    assert pred.shape == (2, 4)
    from autogaze_ext.layout import from_ids
    info = from_ids(ids, offsets, 2, 4, N, list(PER_SCALE))
    official = model.score(video, info)["task_loss_prediction"][:, info["num_gazing_each_frame"].cumsum(0) - 1]
    assert not torch.allclose(pred, official.float())   # the teacher-forced positions differ


def run_cli(tmp_path, *extra, model_dir=None):
    return main(["--model", str(model_dir), "--synthetic", "2", "--synthetic-size", "64",
                 "--frames", "4", "--batch-size", "1", *extra])


@pytest.fixture(scope="module")
def model_dir(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    model.save_pretrained(path)
    return path


def test_cli_end_to_end(tmp_path, model_dir, capsys):
    out = tmp_path / "eval"
    assert run_cli(tmp_path, "--ratios", "0.1", "0.3", "--out", str(out), model_dir=model_dir) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["results.json", "results.md", "loss_vs_ratio.png", "calibration.png",
         "threshold_loss.png", "threshold_tokens.png"])
    for name in ("loss_vs_ratio.png", "calibration.png", "threshold_loss.png", "threshold_tokens.png"):
        with Image.open(out / name) as im:
            im.load()
            assert im.size == SIZE and im.format == "PNG"
            assert len(im.getcolors(1 << 16) or []) > 5                  # something was drawn
    res = json.loads((out / "results.json").read_text())
    assert {"task", "model", "clips", "frames", "num_tokens", "ratios", "budgets", "target",
            "target_source", "methods", "comparisons", "checks", "calibration"} <= set(res)
    assert res["task"] == "paint" and res["clips"] == 2 and res["frames"] == 4 and res["num_tokens"] == N
    assert set(res["methods"]) == set(baselines.METHODS)
    for m in res["methods"].values():
        assert set(m["loss_at_ratio"]) == {"0.1", "0.3"}
        assert len(m["loss_curve"]) == len(res["budgets"])
        assert {"mean", "median", "mean_capped", "not_reached", "frames"} == set(m["patches_needed"])
        assert m["patches_needed"]["frames"] == 8
    # the test model's config has an inference requirement (0.7): the threshold checks run too
    assert set(res["checks"]) == {"model_1.2x_fewer_than_best_heuristic", "model_2x_fewer_than_random",
                                  "model_within_1.6x_of_oracle", "head_spearman_at_least_0.6",
                                  "70pct_of_frames_within_30pct_of_requirement"}
    best = min(res["comparisons"][f"{h}_over_model"] for h in ("uniform", "frame_difference", "run_length"))
    assert res["comparisons"]["best_heuristic_over_model"] == pytest.approx(best)
    thr = res["threshold"]
    assert thr["requirement"] == pytest.approx(0.7) and thr["frames"] == 8 and 0 <= thr["within"] <= 1
    # per-clip rows: names, and their mean is the overall figure (all clips have 4 frames)
    assert [row["name"] for row in res["per_clip"]] == ["synthetic#0", "synthetic#1"]
    for name, m in res["methods"].items():
        per_clip = [row["patches_needed"][name] for row in res["per_clip"]]
        assert sum(per_clip) / 2 == pytest.approx(m["patches_needed"]["mean_capped"])
    assert sum(row["tokens_per_frame"] for row in res["per_clip"]) / 2 == pytest.approx(thr["tokens_per_frame"])
    assert res["comparisons"]["random_over_model"] == pytest.approx(
        res["methods"]["random"]["patches_needed"]["mean_capped"]
        / res["methods"]["model"]["patches_needed"]["mean_capped"])
    cal = res["calibration"]
    assert cal["points"] == 2 * 4 * 2 and -1 <= cal["pearson"] <= 1 and sum(b["count"] for b in cal["bins"]) == 16
    # after every slot, too: as many points as ids the model gazed at the two ratio budgets
    budgets = [max(1, int(r * N)) for r in (0.1, 0.3)]
    assert cal["slots"]["points"] == 2 * 4 * sum(budgets) and -1 <= cal["slots"]["slot_spearman"] <= 1
    md = (out / "results.md").read_text()
    assert "| method |" in md and "| oracle |" in md and "loss@0.3" in md
    # a given target is used as is; without the model there is no calibration
    out2 = tmp_path / "eval2"
    assert run_cli(tmp_path, "--methods", "random", "oracle", "--target", "0.5", "--out", str(out2),
                   model_dir=model_dir) == 0
    res2 = json.loads((out2 / "results.json").read_text())
    assert res2["target"] == 0.5 and res2["calibration"] is None and res2["checks"] == {}
    assert not (out2 / "calibration.png").exists()


@pytest.mark.parametrize("args, message", [
    (["--synthetic", "0"], "no clips"),
    (["--ratios", "0"], "--ratios"),
    (["--methods", "model", "magic"], "--methods"),
    (["--task", "mae"], "--mae"),
    (["--videos", "/nonexistent.mp4"], "not found"),
    (["--clips", "0"], "--clips"),
    (["--target", "nan"], "--target"),
])
def test_cli_bad_arguments(tmp_path, model_dir, capsys, args, message):
    out = tmp_path / "never"
    argv = ["--model", str(model_dir), "--synthetic", "1", "--synthetic-size", "64", "--frames", "2",
            *args, "--out", str(out)]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_cli_bad_model_and_too_short_video(tmp_path, model_dir, capsys):
    out = tmp_path / "never"
    assert main(["--model", str(tmp_path), "--synthetic", "1", "--out", str(out)]) == 2
    assert "--model" in capsys.readouterr().err
    from autogaze_ext.video import write_video
    clip = tmp_path / "short.mp4"
    write_video(clip, synthetic_video(3, 64, 64))
    assert main(["--model", str(model_dir), "--videos", str(clip), "--frames", "4", "--out", str(out)]) == 2
    assert "fewer than --frames" in capsys.readouterr().err
    assert not out.exists()


def test_cli_mae_task(tmp_path, model_dir):
    from autogaze_ext.tasks.mae import MAEConfig, MAEReconstruction
    cfg = MAEConfig(scales=(32, 64), frame_size=64, hidden_size=32, num_hidden_layers=1,
                    num_attention_heads=2, intermediate_size=64, decoder_hidden_size=32,
                    decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
                    decoder_intermediate_size=64)
    MAEReconstruction(cfg).save_pretrained(tmp_path / "mae")
    out = tmp_path / "eval"
    assert run_cli(tmp_path, "--task", "mae", "--mae", str(tmp_path / "mae"), "--ratios", "0.2", "0.5",
                   "--methods", "model", "random", "frame_difference", "--out", str(out),
                   model_dir=model_dir) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["task"] == "mae"
    assert set(res["checks"]) == {"model_1.2x_fewer_than_best_heuristic", "model_2x_fewer_than_random",
                                  "head_spearman_at_least_0.6",
                                  "70pct_of_frames_within_30pct_of_requirement"}
    # the losses are the MAE's: a frame gazed fully is not reconstructed exactly by a random MAE
    assert res["methods"]["random"]["loss_curve"][-1] > 1e-3
    # a task whose candidates differ from the model's is refused
    MAEReconstruction(MAEConfig(**{**cfg.to_dict(), "scales": (64,)})).save_pretrained(tmp_path / "mae1")
    assert run_cli(tmp_path, "--task", "mae", "--mae", str(tmp_path / "mae1"), "--out",
                   str(tmp_path / "never"), model_dir=model_dir) == 2
    assert not (tmp_path / "never").exists()


def test_cli_tail_windows(tmp_path, model_dir, capsys):
    from autogaze_ext.video import write_video
    clip = tmp_path / "clip.mp4"
    write_video(clip, synthetic_video(20, 64, 64))
    common = ["--model", str(model_dir), "--videos", str(clip), "--frames", "4", "--clips", "5",
              "--methods", "random", "uniform", "--ratios", "0.5"]
    # last half of 20 frames: frames 10..19 → 2 windows of 4
    assert main([*common, "--tail", "0.5", "--out", str(tmp_path / "a")]) == 0
    assert json.loads((tmp_path / "a" / "results.json").read_text())["clips"] == 2
    # counted over the first 12 frames: frames 6..11 → 1 window
    assert main([*common, "--tail", "0.5", "--max-frames", "12", "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / "results.json").read_text())["clips"] == 1
    # a tail too short for a window, next to a synthetic clip: skipped with a warning
    capsys.readouterr()
    assert main([*common, "--tail", "0.1", "--synthetic", "1", "--synthetic-size", "64",
                 "--out", str(tmp_path / "c")]) == 0
    assert "skipped" in capsys.readouterr().err
    assert json.loads((tmp_path / "c" / "results.json").read_text())["clips"] == 1
    assert main([*common, "--tail", "1.5", "--out", str(tmp_path / "d")]) == 2


class _StubModel:
    """Gives frame f of the flattened batch ``tokens[f]`` ids (0, 1, ...)."""
    num_tokens = N
    device, dtype = torch.device("cpu"), torch.float32

    def __init__(self, tokens):
        self.tokens = tokens
        self.calls = []

    def __call__(self, video, gazing_ratio=None, task_loss_requirement=None):
        self.calls.append((gazing_ratio, task_loss_requirement))
        counts = torch.tensor(self.tokens[: video.shape[0] * video.shape[1]])
        ids = torch.cat([torch.arange(int(c)) for c in counts])
        return {"ids": ids, "frame_offsets": torch.nn.functional.pad(counts.cumsum(0), (1, 0))}


class _LossTask:
    """frame_losses: a fixed (B,T) table."""

    def __init__(self, losses):
        self.losses = torch.tensor(losses)

    def frame_losses(self, video, ids, offsets):
        return self.losses[: video.shape[0]]


def test_threshold_report_counts_within_static_and_change():
    from autogaze_ext.evaluation.threshold import frame_change, threshold_report
    video = torch.zeros(1, 4, 3, 8, 8)
    video[0, 1] = 1.0                     # frame 1 changes by 1, frame 2 by 1, frame 3 is frame 2
    video[0, 2] = 0.0
    video[0, 3] = 0.0
    change = frame_change(video)
    assert math.isnan(change[0, 0]) and change[0, 1:].tolist() == [1.0, 1.0, 0.0]
    model = _StubModel([20, 12, 10, 1])
    task = _LossTask([[0.10, 0.125, 0.2, 0.075]])  # R = 0.1: within ±30 %: 0.1, 0.125, 0.075
    summary, frames = threshold_report(model, task, [video], requirement=0.1, ratio=0.5)
    assert model.calls == [(0.5, 0.1)]
    assert summary["frames"] == 4 and summary["within"] == pytest.approx(3 / 4)
    assert summary["above"] == pytest.approx(1 / 4) and summary["below"] == 0
    assert summary["static"]["frames"] == 1
    assert summary["static"]["tokens_mean_percent"] == pytest.approx(100 / N)
    assert summary["tokens_per_frame"] == pytest.approx(43 / 4)
    # tokens fall with change: the static frame has the fewest
    tvc = summary["tokens_vs_change"]
    assert tvc["spearman"] > 0 and tvc["bins"][0]["tokens"] == 1
    assert frames["tokens"].tolist() == [20, 12, 10, 1] and frames["clip"].tolist() == [0] * 4
    with pytest.raises(ValueError, match="requirement"):
        threshold_report(model, task, [video], requirement=0.0, ratio=0.5)


def test_cut_on_real_loss_stops_at_the_first_prefix_that_meets_it(model, paint, video):
    from autogaze_ext.evaluation.threshold import cut_on_real_loss
    out = model(video, gazing_ratio=0.5)
    ids, offs = out["ids"], out["frame_offsets"]
    requirement = float(paint.prefix_losses(video, ids, offs).median())
    cut_ids, cut_offs = cut_on_real_loss(paint, video, ids, offs, requirement)
    counts, full = cut_offs.diff(), offs.diff()
    assert bool((counts >= 1).all()) and bool((counts <= full).all()) and bool((counts < full).any())
    # frames are cut, not reordered; then, painted over the cut frames before them, each frame's
    # last kept slot meets the requirement (unless it kept every id) and no earlier slot does
    losses = paint.prefix_losses(video, cut_ids, cut_offs)
    for f in range(counts.numel()):
        lo, n = int(cut_offs[f]), int(counts[f])
        assert torch.equal(cut_ids[lo:lo + n], ids[int(offs[f]):int(offs[f]) + n])
        mine = losses[lo:lo + n]
        assert not bool((mine[:-1] <= requirement).any())
        if n < int(full[f]):
            assert float(mine[-1]) <= requirement
    # a requirement every prefix meets keeps one id per frame; one none meets keeps them all
    assert cut_on_real_loss(paint, video, ids, offs, 1e9)[1].diff().tolist() == [1] * counts.numel()
    same_ids, same_offs = cut_on_real_loss(paint, video, ids, offs, 0.0)
    assert torch.equal(same_ids, ids) and torch.equal(same_offs, offs)


def test_cli_spread_and_static_clips(tmp_path, model_dir):
    from autogaze_ext.video import write_video
    clip = tmp_path / "clip.mp4"
    write_video(clip, synthetic_video(40, 64, 64))
    out = tmp_path / "eval"
    argv = ["--model", str(model_dir), "--videos", str(clip), "--frames", "4", "--clips", "3",
            "--spread", "--static-clips", "--methods", "model", "random", "--ratios", "0.5",
            "--requirement", "0.3", "--requirement-ratio", "0.5", "--stop-bound", "--out", str(out)]
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    names = [row["name"] for row in res["per_clip"]]
    assert names == ["clip.mp4#0", "clip.mp4#1", "clip.mp4#2", "clip.mp4#0 (frozen)",
                     "clip.mp4#1 (frozen)", "clip.mp4#2 (frozen)"]
    thr = res["threshold"]
    assert thr["requirement"] == 0.3 and thr["ratio"] == 0.5
    # each frozen copy repeats its frame 1 in frames 2 and 3: 2 identical frames per copy
    assert thr["static"]["frames"] >= 6
    assert "static_frames_at_most_10pct_tokens" in res["checks"]
    assert "## Threshold behaviour" in (out / "results.md").read_text()
    # --stop-bound: the cap gaze cut on the real loss, over the same frames, within the cap
    bound = thr["stop_bound"]
    assert bound["frames"] == thr["frames"] and 1 <= bound["tokens_per_frame"] <= 0.5 * N
    assert bound["static"]["frames"] == thr["static"]["frames"]
    assert "Stop bound" in (out / "results.md").read_text()
    assert main([*argv[:-2], "--requirement", "-1", "--out", str(tmp_path / "never")]) == 2


def test_cli_stop_bound_refuses_mae_and_no_requirement(tmp_path, model_dir, capsys):
    base = ["--synthetic", "1", "--synthetic-size", "64", "--frames", "2", "--methods", "model",
            "--ratios", "0.5", "--stop-bound", "--out", str(tmp_path / "out")]
    assert main(["--model", str(model_dir), *base, "--task", "mae", "--mae", str(tmp_path)]) == 2
    assert "--stop-bound needs --task paint" in capsys.readouterr().err
    # a model without an inference requirement
    raw = json.loads((model_dir / "config.json").read_text())
    raw["has_task_loss_requirement_during_inference"] = False
    plain = tmp_path / "plain"
    shutil.copytree(model_dir, plain)
    (plain / "config.json").write_text(json.dumps(raw))
    assert main(["--model", str(plain), *base]) == 2
    assert "--stop-bound needs a requirement" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_stop_by_paint_meets_the_requirement_in_every_frame(tmp_path, model_dir, capsys):
    out = tmp_path / "eval"
    args = ["--model", str(model_dir), "--synthetic", "2", "--synthetic-size", "64", "--frames",
            "4", "--methods", "model", "--ratios", "0.5", "--requirement", "0.3",
            "--requirement-ratio", "1.0", "--out", str(out)]
    assert main([*args, "--stop-by", "paint"]) == 0
    thr = json.loads((out / "results.json").read_text())["threshold"]
    assert thr["stop_by"] == "paint"
    assert thr["above"] == 0  # with every candidate allowed, each frame can reach any R
    assert "measured Paint loss" in (out / "results.md").read_text()
    assert main([*args, "--stop-by", "head"]) == 0
    assert json.loads((out / "results.json").read_text())["threshold"]["stop_by"] == "head"
