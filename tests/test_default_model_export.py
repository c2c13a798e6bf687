"""scripts/export_default_model.py: the inference defaults it writes (gazing ratio, task-loss
requirement) are what ``gaze()`` then uses without arguments."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from autogaze_ext import AutoGaze, gaze
from autogaze_ext.tasks.paint import PaintReconstruction
from autogaze_ext.video import synthetic_video

from helpers import FIXTURE_MODEL

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "export_default_model.py"


@pytest.fixture(scope="module")
def export():
    spec = importlib.util.spec_from_file_location("export_default_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_requirement_default_is_used_by_gaze_without_arguments(export, tmp_path):
    out = tmp_path / "with_requirement"
    export([str(FIXTURE_MODEL), "--name", "t", "--ratio", "0.5", "--requirement", "0.7",
            "--meta", "steps=3", "--out", str(out)])
    assert json.loads((out / "training.json").read_text())["steps"] == "3"
    model = AutoGaze.from_pretrained(out)
    frames = synthetic_video(4, 64, 64, seed=2)
    result = gaze(frames, model, clip_len=4)
    assert result["has_task_loss_requirement"] is True
    assert torch.equal(result["task_loss_requirement"], torch.full((1, 4), 0.7))
    # the same as asking for it explicitly, and different from no requirement
    explicit = gaze(frames, model, gazing_ratio=0.5, task_loss_requirement=0.7, clip_len=4)
    assert torch.equal(result["ids"], explicit["ids"])
    assert torch.equal(result["frame_offsets"], explicit["frame_offsets"])
    # a ratio given alone means no requirement (the config's defaults apply only when neither is
    # given, as officially); the fixture's random head predicts ~0.6, so 0.7 stops frames early
    unbounded = gaze(frames, model, gazing_ratio=0.5, clip_len=4)
    assert unbounded["frame_offsets"].diff().tolist() == [132] * 4  # trunc(0.5·265)
    assert int(result["frame_offsets"].diff().max()) < 132


def test_paint_stop_default_meets_the_requirement_per_frame(export, tmp_path):
    out = tmp_path / "paint"
    export([str(FIXTURE_MODEL), "--name", "t", "--ratio", "0.75", "--requirement", "0.12",
            "--stop-by", "paint", "--out", str(out)])
    model = AutoGaze.from_pretrained(out)
    assert model.stop_by == "paint"
    frames = synthetic_video(6, 224, 224, seed=4)
    frames[4:] = frames[3]  # two frames identical to the one before
    result = gaze(frames, model, clip_len=6)
    assert torch.equal(result["task_loss_requirement"], torch.full((1, 6), 0.12))
    task = PaintReconstruction.from_config(model.config)
    video = model.preprocess(frames)[None]
    losses = task.frame_losses(video, result["ids"], result["frame_offsets"])[0]
    counts = result["frame_offsets"].diff()
    assert bool((losses <= 0.12).all())  # the fixture's random gaze still gets there under 199
    assert counts[4:].tolist() == [1, 1]  # nothing changed: one id, and the loss kept
    assert int(counts[:4].min()) > 1
    head = gaze(frames, AutoGaze.from_pretrained(FIXTURE_MODEL), gazing_ratio=0.75,
                task_loss_requirement=0.12, clip_len=6)
    assert not torch.equal(head["frame_offsets"], result["frame_offsets"])


def test_no_requirement_means_a_fixed_ratio(export, tmp_path):
    out = tmp_path / "fixed"
    export([str(FIXTURE_MODEL), "--name", "t", "--ratio", "0.1", "--requirement", "none",
            "--out", str(out)])
    result = gaze(synthetic_video(3, 64, 64, seed=3), AutoGaze.from_pretrained(out), clip_len=4)
    assert result["has_task_loss_requirement"] is False
    assert result["frame_offsets"].diff().tolist() == [26, 26, 26]  # trunc(float32(0.1)·265)


@pytest.mark.parametrize("args, message", [(["--ratio", "0", "--requirement", "none"], "--ratio"),
                                           (["--ratio", "0.3", "--requirement", "-1"], "--requirement"),
                                           (["--ratio", "0.3", "--requirement", "low"], "--requirement"),
                                           (["--ratio", "0.3", "--requirement", "0.1", "--stop-by",
                                             "oracle"], "--stop-by")])
def test_bad_defaults_are_refused(export, tmp_path, capsys, args, message):
    with pytest.raises(SystemExit):
        export([str(FIXTURE_MODEL), "--name", "t", *args, "--out", str(tmp_path / "x")])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
