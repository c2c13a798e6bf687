"""Preprocessing: bit-exact with the official processor (fixture) and with Pillow."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autogaze_ext.checkpoint import load_safetensors
from autogaze_ext.preprocess import RELEASE_PREPROCESSING, ProcessorConfig, output_size, preprocess

REFERENCE = Path(__file__).parent / "data" / "reference"
CONFIG_JSON = REFERENCE / "autogaze_model" / "preprocessor_config.json"


@pytest.fixture(scope="module")
def cases():
    return load_safetensors(REFERENCE / "cases.safetensors")


@pytest.fixture(scope="module")
def release_config():
    return ProcessorConfig.from_json_file(CONFIG_JSON)


def random_frames(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def pillow_reference(frames, height, width, mean, std, resample=Image.Resampling.BILINEAR):
    """Official per-frame recipe written out directly: Pillow resize, then float64
    rescale cast to float32, float32 offset and normalisation. (T,H,W,3) -> (T,3,h,w)."""
    out = []
    for frame in frames:
        image = np.asarray(Image.fromarray(frame).resize((width, height), resample, reducing_gap=None))
        x = (image.astype(np.float64) * (1 / 127.5)).astype(np.float32) - np.float32(1)
        x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
        out.append(x.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(out))


def test_fixture_bit_exact(cases, release_config):
    out = preprocess(cases["video_uint8_first2"], config=release_config)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 224, 224)
    assert torch.equal(out, cases["preprocessed_first2"])


def test_default_is_release(cases):
    assert torch.equal(preprocess(cases["video_uint8_first2"]), cases["preprocessed_first2"])
    assert ProcessorConfig.release().to_dict() == RELEASE_PREPROCESSING


def test_config_json_round_trip(release_config, tmp_path):
    expected = json.loads(CONFIG_JSON.read_text())
    assert release_config.to_dict() == expected
    assert release_config.extra == {"image_processor_type": "AutoGazeImageProcessor"}
    release_config.to_json_file(tmp_path / "p.json")
    assert ProcessorConfig.from_json_file(tmp_path / "p.json").to_dict() == expected


def test_class_defaults_are_official():
    config = ProcessorConfig()
    assert config.size == {"shortest_edge": 256} and config.resample == 2
    assert config.image_mean == config.image_std == [0.5, 0.5, 0.5]
    assert config.do_rescale and config.offset and config.do_normalize and not config.do_center_crop


def test_int_sizes_normalised():
    config = ProcessorConfig(size=224, crop_size=112)
    assert config.size == {"shortest_edge": 224}
    assert config.crop_size == {"height": 112, "width": 112}


@pytest.mark.parametrize(
    "hw, expected",
    [((1080, 1920), (224, 398)), ((1920, 1080), (398, 224)), ((272, 640), (224, 527)), ((448, 448), (224, 224))],
)
def test_shortest_edge_size(hw, expected):
    assert int(224 * 640 / 272) == 527  # truncation, not rounding (527.06)
    assert output_size(*hw, {"shortest_edge": 224}) == expected
    assert preprocess(random_frames((1, *hw, 3)), size=224).shape == (1, 3, *expected)


@pytest.mark.parametrize("hw", [(480, 640), (37, 101), (720, 1280), (100, 50)])
def test_matches_pillow(hw):
    frames = random_frames((3, *hw, 3), seed=hw[0])
    mean, std = RELEASE_PREPROCESSING["image_mean"], RELEASE_PREPROCESSING["image_std"]
    h, w = output_size(*hw, {"shortest_edge": 224})
    assert torch.equal(preprocess(frames), pillow_reference(frames, h, w, mean, std))


def test_fixed_size_and_overrides():
    frames = random_frames((5, 120, 200, 3))
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.6, 0.7)
    out = preprocess(frames, size=(64, 96), mean=mean, std=std)
    assert torch.equal(out, pillow_reference(frames, 64, 96, mean, std))
    assert torch.equal(preprocess(frames, size={"height": 64, "width": 96}, mean=mean, std=std), out)


def test_fixed_392_fixture(cases, release_config):
    # pixel_values_392 are the first 4 clip frames processed at 392x392, rounded to float16;
    # upscaling frames 0-1 must agree with its first two frames.
    out = preprocess(cases["video_uint8_first2"], size=(392, 392), config=release_config)
    assert torch.equal(out.half(), cases["pixel_values_392"][0, :2])


def test_bicubic_matches_pillow():
    frames = random_frames((2, 90, 160, 3))
    config = ProcessorConfig.from_dict({**RELEASE_PREPROCESSING, "resample": 3})
    mean, std = config.image_mean, config.image_std
    expected = pillow_reference(frames, 224, 398, mean, std, Image.Resampling.BICUBIC)
    assert torch.equal(preprocess(frames, config=config), expected)


def test_center_crop():
    frames = random_frames((2, 300, 400, 3))
    config = ProcessorConfig.from_dict({**RELEASE_PREPROCESSING, "do_center_crop": True})
    full = preprocess(frames)  # (2, 3, 224, 298)
    left = (298 - 224) // 2
    assert torch.equal(preprocess(frames, config=config), full[..., :, left : left + 224])
    # A crop larger than the image pads with uint8 zeros before normalisation.
    config.crop_size = {"height": 230, "width": 224}
    padded = preprocess(frames, config=config)
    zero_value = preprocess(np.zeros((1, 1, 1, 3), np.uint8), config={**RELEASE_PREPROCESSING, "do_resize": False})
    assert padded.shape == (2, 3, 230, 224)
    assert torch.equal(padded[:, :, :3], zero_value.view(1, 3, 1, 1).expand(2, 3, 3, 224))
    assert torch.equal(padded[:, :, 3:227], full[..., left : left + 224])


def test_batch_equals_per_clip():
    clips = random_frames((2, 4, 90, 120, 3))
    out = preprocess(clips)
    assert out.shape == (2, 4, 3, 224, 298)
    for b in range(2):
        assert torch.equal(out[b], preprocess(clips[b]))


def test_numpy_torch_and_noncontiguous_inputs_agree():
    frames = random_frames((6, 100, 140, 3))
    expected = preprocess(frames)
    assert torch.equal(preprocess(torch.from_numpy(frames)), expected)
    strided = np.ascontiguousarray(frames[:, ::-1])[:, ::-1]  # same pixels, negative strides
    assert not strided.flags.c_contiguous
    assert torch.equal(preprocess(strided), expected)
    assert torch.equal(preprocess(torch.from_numpy(frames).flip(0)).flip(0), expected)


@pytest.mark.cuda
def test_cuda_input_returns_on_device():
    frames = random_frames((2, 64, 64, 3))
    out = preprocess(torch.from_numpy(frames).cuda())
    assert out.is_cuda and torch.equal(out.cpu(), preprocess(frames))


@pytest.mark.parametrize(
    "frames, match",
    [
        (np.zeros((64, 64, 3), np.uint8), "frames"),
        (np.zeros((2, 64, 64, 4), np.uint8), "frames"),
        (np.zeros((2, 64, 64, 3), np.float32), "frames"),
        (torch.zeros((2, 64, 64, 3)), "frames"),
        (np.zeros((0, 64, 64, 3), np.uint8), "frames"),
        ([[[[0, 0, 0]]]], "frames"),
    ],
)
def test_bad_frames(frames, match):
    with pytest.raises((TypeError, ValueError), match=match):
        preprocess(frames)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"size": 0}, "size"),
        ({"size": (224, -1)}, "size"),
        ({"size": 22.4}, "size"),
        ({"size": True}, "size"),
        ({"size": {"longest_edge": 224}}, "size"),
        ({"mean": (0.5, 0.5)}, "mean"),
        ({"std": (0.5, 0.0, 0.5)}, "std"),
        ({"std": "abc"}, "std"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        preprocess(random_frames((1, 8, 8, 3)), **kwargs)


def test_unsupported_resample():
    with pytest.raises(NotImplementedError, match="resample"):
        ProcessorConfig(resample=7)
