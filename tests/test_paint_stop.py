"""stop_by="paint": a frame stops on its measured Paint loss instead of the head's prediction."""

from __future__ import annotations

import json

import pytest
import torch

from autogaze_ext import AutoGaze, AutoGazeConfig
from autogaze_ext.stream import GazeStream
from autogaze_ext.tasks.paint import PaintReconstruction
from autogaze_ext.video import synthetic_video

from helpers import FIXTURE_MODEL, random_model, random_video, small_config

CAP = 0.75


def _native_available() -> bool:
    try:
        from autogaze_ext import ops  # noqa: F401
    except ImportError:
        return False
    return True


BACKENDS = ["reference", pytest.param("native", marks=pytest.mark.skipif(
    not _native_available(), reason="native ops not built"))]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return AutoGaze.from_pretrained(FIXTURE_MODEL)


@pytest.fixture(scope="module")
def video(model):
    frames = torch.from_numpy(synthetic_video(2 * 5, 224, 224, seed=7))
    return model.preprocess(frames.view(2, 5, 224, 224, 3))


@pytest.fixture(scope="module")
def task(model):
    return PaintReconstruction.from_config(model.config)


def _gaze(model, video, stop_by, **kwargs):
    before = model.stop_by
    model.stop_by = stop_by
    try:
        return model(video, **kwargs)
    finally:
        model.stop_by = before


def _frames(out):
    ids, offs = out["ids"].tolist(), out["frame_offsets"].tolist()
    return [ids[a:b] for a, b in zip(offs, offs[1:])]


def _requirement_between(task, video, out) -> float:
    """A requirement that the capped gaze meets part-way in most frames."""
    losses = task.prefix_losses(video, out["ids"], out["frame_offsets"])
    return float(losses.median())


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_frame_stops_where_the_cut_of_the_capped_gaze_does(model, video, task, backend):
    for b in range(video.shape[0]):
        clip = video[b:b + 1, :1]
        capped = _gaze(model, clip, "head", gazing_ratio=CAP, backend=backend)
        prefix = task.prefix_losses(clip, capped["ids"], capped["frame_offsets"])
        for requirement in (float(prefix[len(prefix) // 3]), float(prefix.min()) - 1e-3, 10.0):
            want_ids, want_offs = task.cut_at_requirement(clip, capped["ids"],
                                                          capped["frame_offsets"], requirement)
            got = _gaze(model, clip, "paint", gazing_ratio=CAP, task_loss_requirement=requirement,
                        backend=backend)
            assert got["ids"].tolist() == want_ids.tolist()
            assert got["frame_offsets"].tolist() == want_offs.tolist()


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_frame_ends_at_its_first_prefix_that_meets_the_requirement(model, video, task,
                                                                         backend):
    capped = _gaze(model, video, "head", gazing_ratio=CAP, backend=backend)
    requirement = _requirement_between(task, video, capped)
    out = _gaze(model, video, "paint", gazing_ratio=CAP, task_loss_requirement=requirement,
                backend=backend)
    budget = int(CAP * model.num_tokens)
    prefix = task.prefix_losses(video, out["ids"], out["frame_offsets"])
    offs = out["frame_offsets"].tolist()
    stopped = 0
    for a, b in zip(offs, offs[1:]):
        frame = prefix[a:b]
        assert 1 <= len(frame) <= budget
        assert not bool((frame[:-1] <= requirement).any())  # no shorter prefix meets it
        if len(frame) < budget:
            assert float(frame[-1]) <= requirement
            stopped += 1
    assert stopped >= 3  # the requirement was chosen so that frames do stop early
    # the realised frame loss is the last prefix's: stops hold the requirement
    losses = task.frame_losses(video, out["ids"], out["frame_offsets"]).flatten()
    assert torch.allclose(losses, prefix[torch.tensor(offs[1:]) - 1], atol=1e-6)


def test_frozen_frames_keep_one_id(model, video, task):
    frozen = video[:1, :1].expand(1, 6, *video.shape[2:]).contiguous()
    out = _gaze(model, frozen, "paint", gazing_ratio=CAP, task_loss_requirement=10.0)
    counts = out["frame_offsets"].diff().tolist()
    assert counts == [1] * 6
    capped = _gaze(model, frozen[:, :1], "head", gazing_ratio=CAP)
    requirement = float(task.frame_losses(frozen[:, :1], capped["ids"],
                                          capped["frame_offsets"])) * 1.5
    out = _gaze(model, frozen, "paint", gazing_ratio=CAP, task_loss_requirement=requirement)
    counts = out["frame_offsets"].diff().tolist()
    assert counts[0] > 1 and counts[1:] == [1] * 5  # nothing changed: nothing more to gaze


def test_batch_clips_stop_as_if_alone(model, video, task):
    capped = _gaze(model, video, "head", gazing_ratio=CAP)
    requirement = _requirement_between(task, video, capped)
    both = _gaze(model, video, "paint", gazing_ratio=CAP, task_loss_requirement=requirement)
    alone = [_frames(_gaze(model, video[b:b + 1], "paint", gazing_ratio=CAP,
                           task_loss_requirement=requirement)) for b in range(2)]
    assert _frames(both) == alone[0] + alone[1]


def test_without_a_requirement_paint_changes_nothing(model, video):
    head = _gaze(model, video, "head", gazing_ratio=0.2)
    paint = _gaze(model, video, "paint", gazing_ratio=0.2)
    assert torch.equal(head["ids"], paint["ids"])
    assert torch.equal(head["frame_offsets"], paint["frame_offsets"])


def test_stream_equals_the_offline_clip(model, video, task):
    capped = _gaze(model, video[:1], "head", gazing_ratio=CAP)
    requirement = _requirement_between(task, video[:1], capped)
    offline = _frames(_gaze(model, video[:1], "paint", gazing_ratio=CAP,
                            task_loss_requirement=requirement))
    model.stop_by = "paint"
    try:
        state = model.init_stream(1)
        streamed = [model.stream_step(video[:1, t], state, gazing_ratio=CAP,
                                      task_loss_requirement=requirement)["ids"].tolist()
                    for t in range(video.shape[1])]
        # a frame without a requirement still paints, so the next stop stays exact
        state = model.init_stream(1)
        mixed = [model.stream_step(video[:1, t], state, gazing_ratio=CAP,
                                   task_loss_requirement=None if t == 1 else requirement)
                 for t in range(video.shape[1])]
    finally:
        model.stop_by = "head"
    assert streamed == offline
    ids = [m["ids"] for m in mixed]
    sizes = torch.tensor([0] + [len(i) for i in ids]).cumsum(0)
    prefix = task.prefix_losses(video[:1], torch.cat(ids), sizes)
    for t in (2, 3, 4):
        frame = prefix[int(sizes[t]):int(sizes[t + 1])]
        assert not bool((frame[:-1] <= requirement).any())


def test_gaze_stream_and_small_models_use_the_config_setting(tmp_path):
    config = small_config()
    raw = config.to_dict()
    raw["task_loss_requirement_stop_by"] = "paint"
    model = random_model(AutoGazeConfig(raw), seed=2)
    assert model.stop_by == "paint"
    model.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())[
        "task_loss_requirement_stop_by"] == "paint"
    assert AutoGaze.from_pretrained(tmp_path / "m").stop_by == "paint"
    clip = random_video(1, 4, 64, seed=1)
    task = PaintReconstruction.from_config(model.config)
    out = model(clip, gazing_ratio=1.0, task_loss_requirement=0.5)
    prefix = task.prefix_losses(clip, out["ids"], out["frame_offsets"])
    offs = out["frame_offsets"].tolist()
    for a, b in zip(offs, offs[1:]):
        assert not bool((prefix[a:b - 1] <= 0.5).any())
    stream = GazeStream(model, gazing_ratio=1.0, task_loss_requirement=0.5, window=4)
    frames = (clip[0].permute(0, 2, 3, 1) * 40 + 128).clamp(0, 255).to(torch.uint8)
    assert all(1 <= stream.push(f.numpy()).count <= 20 for f in frames)


def test_bad_stop_by_is_refused(model):
    with pytest.raises(ValueError, match="stop_by must be one of"):
        model.stop_by = "oracle"
    raw = small_config().to_dict()
    raw["task_loss_requirement_stop_by"] = "loss"
    with pytest.raises(ValueError, match="task_loss_requirement_stop_by"):
        AutoGaze(AutoGazeConfig(raw))
    assert AutoGaze.from_pretrained(FIXTURE_MODEL).stop_by == "head"  # the official default


def test_other_cell_sizes_stop_on_their_own_paint_loss():
    # a 392/14-like layout in small: scales 28+56 with 14-px cells, 56² frames
    config = AutoGazeConfig.build(scales="28+56", input_img_size=56, kernel_size=14,
                                  hidden_size=64, intermediate_size=128, num_layers=2,
                                  num_heads=4, num_multi_token_pred=4, vision_hidden_dim=32)
    model = random_model(config, seed=3)
    model.stop_by = "paint"
    clip = random_video(2, 3, 56, seed=4)
    task = PaintReconstruction.from_config(config, patch_size=14)
    out = model(clip, gazing_ratio=1.0, task_loss_requirement=0.6)
    prefix = task.prefix_losses(clip, out["ids"], out["frame_offsets"])
    offs = out["frame_offsets"].tolist()
    for a, b in zip(offs, offs[1:]):
        assert float(prefix[b - 1]) <= 0.6 and not bool((prefix[a:b - 1] <= 0.6).any())
