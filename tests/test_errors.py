"""Bad input gives a clear error that names the offending argument."""

from __future__ import annotations

import functools
import json
import math
import sys
import types

import numpy as np
import pytest
import torch

from autogaze_ext import AutoGaze, gaze
from autogaze_ext.checkpoint import load_safetensors, save_safetensors

from helpers import FIXTURE_MODEL, random_model, random_video, small_config


@functools.lru_cache(maxsize=None)
def _model() -> AutoGaze:
    return random_model(small_config(), seed=1)


@pytest.fixture
def model():
    return _model()


@pytest.fixture
def video():
    return random_video(1, 2, 64, seed=0)


# ---- the video argument -------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 3, 64, 64), (1, 2, 3, 64, 64, 1), (1, 2, 4, 64, 64),
                                   (1, 2, 1, 64, 64), (1, 2, 64, 64, 3)],
                         ids=["rank4", "rank6", "4ch", "1ch", "channels_last"])
def test_video_wrong_shape(model, shape):
    with pytest.raises(ValueError, match=r"video must have shape \(B,T,3,H,W\)"):
        model(torch.zeros(shape), gazing_ratio=0.5)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
def test_video_integer_dtype(model, dtype):
    with pytest.raises(TypeError, match="video must be a float tensor.*preprocess"):
        model(torch.zeros(1, 2, 3, 64, 64, dtype=dtype), gazing_ratio=0.5)


def test_video_not_a_tensor(model):
    with pytest.raises(TypeError, match="video must be a torch.Tensor"):
        model(np.zeros((1, 2, 3, 64, 64), np.float32), gazing_ratio=0.5)
    with pytest.raises(ValueError, match="video"):
        model({"frames": torch.zeros(1, 2, 3, 64, 64)}, gazing_ratio=0.5)


def test_video_dict_input_is_accepted(model, video):
    a = model({"video": video}, gazing_ratio=0.5)
    b = model(video, gazing_ratio=0.5)
    assert torch.equal(a["gazing_pos"], b["gazing_pos"])


@pytest.mark.parametrize("shape", [(1, 0, 3, 64, 64), (0, 2, 3, 64, 64), (1, 2, 3, 0, 64)],
                         ids=["T0", "B0", "H0"])
def test_video_empty(model, shape):
    with pytest.raises(ValueError, match="video has (no|empty) frames"):
        model(torch.zeros(shape), gazing_ratio=0.5)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_video_not_finite(model, video, bad):
    video = video.clone()
    video[0, 1, 2, 5, 7] = bad
    with pytest.raises(ValueError, match="video contains NaN or infinite"):
        model(video, gazing_ratio=0.5)


@pytest.mark.cuda
def test_video_wrong_device(model, video):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA to put the video on another device than the (CPU) model")
    with pytest.raises(ValueError, match="video is on cuda"):
        model(video.cuda(), gazing_ratio=0.5)


def test_non_contiguous_video_equals_contiguous(model, video):
    strided = video.transpose(3, 4).contiguous().transpose(3, 4)  # same values, other strides
    assert not strided.is_contiguous() and torch.equal(strided, video)
    sliced = torch.stack([video, torch.zeros_like(video)], 2).flatten(1, 2)[:, ::2]  # a view
    assert not sliced.is_contiguous() and torch.equal(sliced, video)
    ref = model(video, gazing_ratio=0.5, task_loss_requirement=-0.8)
    for other in (strided, sliced):
        out = model(other, gazing_ratio=0.5, task_loss_requirement=-0.8)
        assert torch.equal(out["gazing_pos"], ref["gazing_pos"])
        assert torch.equal(out["if_padded_gazing"], ref["if_padded_gazing"])


def test_float64_video_is_accepted(model, video):
    ref = model(video, gazing_ratio=0.5)
    out = model(video.double(), gazing_ratio=0.5)
    assert torch.equal(out["gazing_pos"], ref["gazing_pos"])


# ---- budgets, requirements, sampling ----------------------------------------------------------------

@pytest.mark.parametrize("ratio", [0, 0.0, -0.1, 1.5, math.nan, math.inf])
def test_gazing_ratio_out_of_range(model, video, ratio):
    with pytest.raises(ValueError, match=r"gazing_ratio must be in \(0, 1\]"):
        model(video, gazing_ratio=ratio)


@pytest.mark.parametrize("ratio", ["0.5", True, object()])
def test_gazing_ratio_wrong_type(model, video, ratio):
    with pytest.raises(TypeError, match="gazing_ratio"):
        model(video, gazing_ratio=ratio)


@pytest.mark.parametrize("ratios", [[0.5], [0.5, 0.5, 0.5], []])
def test_gazing_ratio_wrong_length(model, video, ratios):
    with pytest.raises(ValueError, match="gazing_ratio has .* values, the video 2 frames"):
        model(video, gazing_ratio=ratios)


def test_gazing_ratio_bad_value_in_list(model, video):
    with pytest.raises(ValueError, match="gazing_ratio"):
        model(video, gazing_ratio=[0.5, 0.0])
    with pytest.raises(ValueError, match="gazing_ratio"):
        model(video, gazing_ratio=torch.tensor([0.5, math.nan]))


def test_gazing_ratio_list_and_tensor_agree(model, video):
    a = model(video, gazing_ratio=[0.5, 0.25])
    b = model(video, gazing_ratio=torch.tensor([0.5, 0.25]))
    assert torch.equal(a["gazing_pos"], b["gazing_pos"])
    assert a["num_gazing_each_frame"].tolist() == [10, 5]


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_task_loss_requirement_not_finite(model, video, value):
    with pytest.raises(ValueError, match="task_loss_requirement"):
        model(video, gazing_ratio=0.5, task_loss_requirement=value)
    with pytest.raises(ValueError, match="task_loss_requirement"):
        model(video, gazing_ratio=0.5, task_loss_requirement=torch.full((1, 2), value))


@pytest.mark.parametrize("shape", [(2,), (1, 3), (2, 2), (1, 2, 1)])
def test_task_loss_requirement_wrong_shape(model, video, shape):
    with pytest.raises(ValueError, match=r"task_loss_requirement must be a number or a \(1,2\)"):
        model(video, gazing_ratio=0.5, task_loss_requirement=torch.zeros(shape))


def test_task_loss_requirement_wrong_type(model, video):
    with pytest.raises(TypeError, match="task_loss_requirement"):
        model(video, gazing_ratio=0.5, task_loss_requirement="0.5")


def test_task_loss_requirement_scalar_tensor(model, video):
    a = model(video, gazing_ratio=0.5, task_loss_requirement=torch.tensor(-0.8))
    b = model(video, gazing_ratio=0.5, task_loss_requirement=-0.8)
    assert torch.equal(a["gazing_pos"], b["gazing_pos"])


@pytest.mark.parametrize("temperature", [0, 0.0, -1.0, math.nan, math.inf, "1"])
def test_temperature_must_be_positive(model, video, temperature):
    with pytest.raises(ValueError, match="temperature must be a positive finite number"):
        model(video, gazing_ratio=0.5, do_sample=True, temperature=temperature)


def test_generator_type(model, video):
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        model(video, gazing_ratio=0.5, do_sample=True, generator=0)


def test_target_scales_need_patch_size(model, video):
    with pytest.raises(ValueError, match="target_scales and target_patch_size"):
        model(video, gazing_ratio=0.5, target_scales=[64, 128])
    with pytest.raises(ValueError, match="target_scales"):
        model(video, gazing_ratio=0.5, target_scales=[64, 96, 128], target_patch_size=16)
    with pytest.raises(ValueError, match="target_scales"):
        model(video, gazing_ratio=0.5, target_scales=[64, 120], target_patch_size=16)
    with pytest.raises(ValueError, match="video frames must be 128x128"):
        model(video, gazing_ratio=0.5, target_scales=[64, 128], target_patch_size=16)


# ---- checkpoints -------------------------------------------------------------------------------------

def test_missing_checkpoint_folder(tmp_path):
    missing = tmp_path / "nowhere" / "model"
    with pytest.raises(FileNotFoundError, match="checkpoint folder not found"):
        AutoGaze.from_pretrained(missing)


def test_folder_without_config(tmp_path, model):
    model.save_pretrained(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="lacks config.json"):
        AutoGaze.from_pretrained(tmp_path)


def test_folder_without_weights(tmp_path, model):
    model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="lacks model.safetensors"):
        AutoGaze.from_pretrained(tmp_path)


def test_folder_without_preprocessor_config_uses_release(tmp_path, model):
    model.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").unlink()
    assert AutoGaze.from_pretrained(tmp_path).processor.to_dict() == model.processor.to_dict()


def _save_state(folder, model, state):
    folder.mkdir(exist_ok=True)
    model.config.save(folder / "config.json")
    save_safetensors(state, folder / "model.safetensors")


def test_checkpoint_missing_key(tmp_path, model):
    state = dict(model.state_dict())
    del state["gazing_model.gaze_decoder.lm_head.weight"]
    _save_state(tmp_path, model, state)
    with pytest.raises(ValueError, match="missing.*gazing_model.gaze_decoder.lm_head.weight"):
        AutoGaze.from_pretrained(tmp_path)


def test_checkpoint_unexpected_key(tmp_path, model):
    state = dict(model.state_dict())
    state["gazing_model.extra.weight"] = torch.zeros(2)
    _save_state(tmp_path, model, state)
    with pytest.raises(ValueError, match="unexpected.*gazing_model.extra.weight"):
        AutoGaze.from_pretrained(tmp_path)


def test_checkpoint_wrong_shape(tmp_path, model):
    state = dict(model.state_dict())
    name = "gazing_model.connector.pos_embed"
    state[name] = torch.zeros(9, 64)
    _save_state(tmp_path, model, state)
    with pytest.raises(ValueError, match=rf"{name} has shape \(9, 64\).*expects \(16, 64\)"):
        AutoGaze.from_pretrained(tmp_path)


def test_checkpoint_of_another_config(tmp_path, model):
    # the fixture's weights (release architecture) with the small config
    state = load_safetensors(FIXTURE_MODEL / "model.safetensors")
    _save_state(tmp_path, model, state)
    with pytest.raises(ValueError, match="checkpoint"):
        AutoGaze.from_pretrained(tmp_path)


def test_config_not_a_valid_family_member(tmp_path, model):
    raw = model.config.to_dict()
    raw["num_vision_tokens_each_frame"] = 21  # 32+64 cannot split 21 into square grids
    raw["gaze_model_config"]["num_vision_tokens_each_frame"] = 21
    model.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="config"):
        AutoGaze.from_pretrained(tmp_path)


def test_truncated_safetensors(tmp_path, model):
    model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(ValueError, match="not a safetensors file"):
        AutoGaze.from_pretrained(tmp_path)


def test_hub_id_without_huggingface_hub(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # so that "someone/some-model" is no local folder
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails
    with pytest.raises(FileNotFoundError, match="huggingface_hub is not installed.*pass its folder"):
        AutoGaze.from_pretrained("someone/some-model")


def test_hub_id_offline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls = []

    def snapshot_download(repo_id, *args, **kwargs):
        calls.append(repo_id)
        raise ConnectionError("no network")

    fake = types.ModuleType("huggingface_hub")
    fake.snapshot_download = snapshot_download
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
    with pytest.raises(FileNotFoundError, match="could not fetch 'someone/some-model'.*local path"):
        AutoGaze.from_pretrained("someone/some-model")
    assert calls == ["someone/some-model"]


def test_hub_id_download_is_loaded(tmp_path, monkeypatch, model):
    """The folder snapshot_download returns is loaded like a local one."""
    model.save_pretrained(tmp_path / "snapshot")
    monkeypatch.chdir(tmp_path)
    fake = types.ModuleType("huggingface_hub")
    fake.snapshot_download = lambda repo_id, *a, **k: str(tmp_path / "snapshot")
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
    loaded = AutoGaze.from_pretrained("someone/some-model")
    assert loaded.config.to_dict() == model.config.to_dict()


# ---- streaming and scoring ----------------------------------------------------------------------

def test_stream_step_wrong_batch(model, video):
    state = model.init_stream(batch_size=2)
    with pytest.raises(ValueError, match="frame has batch 1, the stream was started with 2"):
        model.stream_step(video[:, 0], state, gazing_ratio=0.5)


def test_stream_step_wrong_frame(model, video):
    state = model.init_stream(batch_size=1)
    with pytest.raises(ValueError, match="frame must be a tensor"):
        model.stream_step(video, state, gazing_ratio=0.5)  # a clip, not a frame
    with pytest.raises(ValueError, match="frame must be a tensor"):
        model.stream_step(video[0, 0].numpy(), state, gazing_ratio=0.5)
    with pytest.raises(ValueError, match="frame contains NaN"):
        model.stream_step(torch.full((1, 3, 64, 64), math.nan), state, gazing_ratio=0.5)
    with pytest.raises(TypeError, match="frame must be a float tensor"):
        model.stream_step(torch.zeros((1, 3, 64, 64), dtype=torch.uint8), state, gazing_ratio=0.5)


@pytest.mark.parametrize("batch_size", [0, -1, 1.0, "2"])
def test_init_stream_bad_batch_size(model, batch_size):
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        model.init_stream(batch_size=batch_size)


def _stream_equals_offline(model, video, state):
    steps = [model.stream_step(video[:, t], state, gazing_ratio=0.5) for t in range(2)]
    offline = model(video, gazing_ratio=0.5)
    return torch.equal(torch.cat([s["gazing_pos"] + 20 * t for t, s in enumerate(steps)], 1),
                       offline["gazing_pos"])


def test_rejected_frame_leaves_the_stream_usable(model, video):
    """A rejected frame must not advance the stream: the next good frames continue it as if the
    bad call never happened."""
    state = model.init_stream(batch_size=1)
    with pytest.raises(ValueError):
        model.stream_step(torch.full((1, 3, 64, 64), math.nan), state, gazing_ratio=0.5)
    with pytest.raises(ValueError):
        model.stream_step(torch.zeros(2, 3, 64, 64), state, gazing_ratio=0.5)
    with pytest.raises(ValueError):
        model.stream_step(video[:, 0], state, gazing_ratio=0.5, temperature=0.0)
    assert _stream_equals_offline(model, video, state)


@pytest.mark.parametrize("bad", [dict(gazing_ratio=0.0), dict(task_loss_requirement=math.nan)])
def test_rejected_budget_leaves_the_stream_usable(model, video, bad):
    state = model.init_stream(batch_size=1)
    with pytest.raises(ValueError):
        model.stream_step(video[:, 0], state, **{"gazing_ratio": 0.5, **bad})
    assert _stream_equals_offline(model, video, state)


def test_score_mismatched_frames(model, video):
    out = model(video, gazing_ratio=0.5)
    three = torch.cat([video, video[:, :1]], dim=1)
    with pytest.raises(ValueError, match="gazing_info has 2 frames, the video 3"):
        model.score(three, out)


def test_score_missing_field(model, video):
    out = dict(model(video, gazing_ratio=0.5))
    del out["if_padded_gazing"]
    with pytest.raises(ValueError, match="gazing_info lacks 'if_padded_gazing'"):
        model.score(video, out)


def test_score_bad_video(model, video):
    out = model(video, gazing_ratio=0.5)
    with pytest.raises(ValueError, match="video"):
        model.score(video[0], out)


# ---- gaze() ----------------------------------------------------------------------------------------

@pytest.fixture
def frames():
    return np.random.default_rng(0).integers(0, 256, (3, 32, 40, 3), dtype=np.uint8)


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.uint16])
def test_gaze_non_uint8_frames(model, frames, dtype):
    with pytest.raises(TypeError, match="frames must be uint8"):
        gaze(frames.astype(dtype), model, gazing_ratio=0.5)


def test_gaze_non_uint8_torch_frames(model, frames):
    with pytest.raises(TypeError, match="frames must be uint8"):
        gaze(torch.from_numpy(frames).float(), model, gazing_ratio=0.5)


@pytest.mark.parametrize("shape", [(32, 40, 3), (1, 3, 32, 40, 3), (3, 32, 40), (3, 3, 32, 40)],
                         ids=["rank3", "rank5", "no_channels", "channels_first"])
def test_gaze_wrong_rank(model, shape):
    with pytest.raises(ValueError, match=r"frames must have shape \(T,H,W,3\)"):
        gaze(np.zeros(shape, np.uint8), model, gazing_ratio=0.5)


def test_gaze_not_an_array(model, frames):
    with pytest.raises(TypeError, match="frames must be a uint8 array"):
        gaze(frames.tolist(), model, gazing_ratio=0.5)


def test_gaze_empty(model):
    with pytest.raises(ValueError, match=r"frames is empty \(T=0\)"):
        gaze(np.zeros((0, 32, 40, 3), np.uint8), model, gazing_ratio=0.5)
    with pytest.raises(ValueError, match="frames has empty images"):
        gaze(np.zeros((2, 0, 40, 3), np.uint8), model, gazing_ratio=0.5)


@pytest.mark.parametrize("mode", ["crop", "", None, "RESIZE"])
def test_gaze_bad_mode(model, frames, mode):
    with pytest.raises(ValueError, match="mode must be 'resize' or 'tile'"):
        gaze(frames, model, gazing_ratio=0.5, mode=mode)


@pytest.mark.parametrize("batch_size", [0, -2, 1.5, "4", None])
def test_gaze_bad_batch_size(model, frames, batch_size):
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        gaze(frames, model, gazing_ratio=0.5, batch_size=batch_size)


@pytest.mark.parametrize("clip_len", [0, -1, 2.5, "4", True])
def test_gaze_bad_clip_len(model, frames, clip_len):
    with pytest.raises(ValueError, match="clip_len must be a positive int"):
        gaze(frames, model, gazing_ratio=0.5, clip_len=clip_len)


def test_gaze_bad_ratio_and_temperature(model, frames):
    with pytest.raises(ValueError, match="gazing_ratio"):
        gaze(frames, model, gazing_ratio=1.5)
    with pytest.raises(ValueError, match="temperature"):
        gaze(frames, model, gazing_ratio=0.5, do_sample=True, temperature=0.0)
    with pytest.raises(ValueError, match="task_loss_requirement"):
        gaze(frames, model, gazing_ratio=0.5, task_loss_requirement=math.nan)


def test_gaze_takes_one_ratio_and_requirement(model, frames):
    with pytest.raises(TypeError, match="gazing_ratio of gaze"):
        gaze(frames, model, gazing_ratio=[0.5] * len(frames))
    with pytest.raises(TypeError, match="task_loss_requirement of gaze"):
        gaze(frames, model, gazing_ratio=0.5, task_loss_requirement=torch.ones(1, len(frames)))


def test_bad_backend(model, video):
    with pytest.raises(ValueError, match="backend must be one of"):
        model(video, gazing_ratio=0.5, backend="fast")
