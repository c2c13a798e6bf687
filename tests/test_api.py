"""``gaze()``: whole videos of any length and size, with the fixture model (release architecture,
random weights)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from autogaze_ext import AutoGaze, gaze
from autogaze_ext.video import synthetic_video

from helpers import FIXTURE_MODEL, check_output, clip_frames, padded_frames

N = 265
PER_SCALE = [4, 16, 49, 196]
RATIO = 0.1
BUDGET = 26  # trunc(float32(0.1)·265)


@pytest.fixture(scope="module")
def model():
    return AutoGaze.from_pretrained(FIXTURE_MODEL)


@pytest.fixture(scope="module")
def frames20():
    return synthetic_video(20, 64, 64, seed=1)


@pytest.fixture(scope="module")
def result20(model, frames20):
    return gaze(frames20, model, gazing_ratio=RATIO)


def _same(a, b):
    for key in ("gazing_pos", "if_padded_gazing", "num_gazing_each_frame", "ids",
                "frame_offsets"):
        assert torch.equal(a[key], b[key]), key
    assert len(a["gazing_mask"]) == len(b["gazing_mask"])
    for x, y in zip(a["gazing_mask"], b["gazing_mask"]):
        assert torch.equal(x, y)
    for key in ("scales", "scale_grids", "num_vision_tokens_each_frame",
                "has_task_loss_requirement"):
        assert a[key] == b[key], key


def _pad_clip(video: torch.Tensor, length: int) -> torch.Tensor:
    """(t,3,H,W) → (1,length,3,H,W), repeating the last frame (as gaze() pads the last clip)."""
    pad = length - video.shape[0]
    return torch.cat([video, video[-1:].expand(pad, -1, -1, -1)])[None]


def test_covers_exactly_the_frames(result20):
    assert result20["num_gazing_each_frame"].shape == (20,)
    assert result20["frame_offsets"].shape == (21,)
    check_output(result20, 1, 20, N, [BUDGET] * 20, PER_SCALE, with_requirement=False)
    assert result20["gazing_pos"].shape == (1, 20 * BUDGET)
    assert result20["scales"] == [32, 64, 112, 224]
    assert result20["scale_grids"] == [(2, 2), (4, 4), (7, 7), (14, 14)]
    assert result20["num_vision_tokens_each_frame"] == N
    assert result20["has_task_loss_requirement"] is False
    # global ids: frame t's real ids + N·t
    frames = clip_frames(result20, 0, 20)
    assert result20["gazing_pos"][0].tolist() == [i + N * t for t, f in enumerate(frames) for i in f]


def test_clips_equal_the_model_called_directly(model, frames20, result20):
    """Frames 0–15 are the first clip; frames 16–19 the second clip, padded to 16 frames by
    repeating frame 19 (its padded frames are dropped)."""
    video = model.preprocess(frames20)
    first = model(video[:16][None], gazing_ratio=RATIO)
    second = model(_pad_clip(video[16:], 16), gazing_ratio=RATIO)
    got = clip_frames(result20, 0, 20)
    assert got[:16] == clip_frames(first, 0, 16)
    assert got[16:] == clip_frames(second, 0, 16)[:4]
    # the model is causal in time, so the padding after frame 19 changes nothing for 16–19
    alone = model(video[16:][None], gazing_ratio=RATIO)
    assert got[16:] == clip_frames(alone, 0, 4)


def test_batch_size_does_not_change_the_result(model, frames20, result20):
    _same(gaze(frames20, model, gazing_ratio=RATIO, batch_size=1), result20)


def test_numpy_and_torch_frames_agree(model):
    frames = synthetic_video(5, 48, 64, seed=2)
    a = gaze(frames, model, gazing_ratio=RATIO, clip_len=4)
    b = gaze(torch.from_numpy(frames), model, gazing_ratio=RATIO, clip_len=4)
    _same(a, b)
    check_output(a, 1, 5, N, [BUDGET] * 5, PER_SCALE, with_requirement=False)
    # a non-contiguous numpy array (every other frame) equals its contiguous copy
    doubled = np.repeat(frames, 2, axis=0)[::2]
    assert not doubled.flags["C_CONTIGUOUS"]
    _same(gaze(doubled, model, gazing_ratio=RATIO, clip_len=4), a)


def test_non_square_frames_in_resize_mode(model):
    frames = synthetic_video(3, 96, 160, seed=3)
    out = gaze(frames, model, gazing_ratio=RATIO, clip_len=4)
    check_output(out, 1, 3, N, [BUDGET] * 3, PER_SCALE, with_requirement=False)
    video = model.preprocess(frames)
    assert video.shape == (3, 3, 224, 373)  # shortest edge 224, aspect kept; model resizes
    direct = model(_pad_clip(video, 4), gazing_ratio=RATIO)
    assert clip_frames(out, 0, 3) == clip_frames(direct, 0, 4)[:3]


def test_requirement_and_its_output(model):
    frames = synthetic_video(6, 64, 64, seed=4)
    out = gaze(frames, model, gazing_ratio=0.3, task_loss_requirement=0.7, clip_len=4)
    budget = 79  # trunc(float32(0.3)·265)
    check_output(out, 1, 6, N, [budget] * 6, PER_SCALE, with_requirement=True)
    assert out["has_task_loss_requirement"] is True
    assert torch.equal(out["task_loss_requirement"], torch.full((1, 6), 0.7))
    video = model.preprocess(frames)
    first = model(video[:4][None], gazing_ratio=0.3, task_loss_requirement=0.7)
    second = model(_pad_clip(video[4:], 4), gazing_ratio=0.3, task_loss_requirement=0.7)
    assert clip_frames(out, 0, 6) == clip_frames(first, 0, 4) + clip_frames(second, 0, 4)[:2]


def test_sampling_is_reproducible(model):
    frames = synthetic_video(3, 64, 64, seed=5)

    def run(seed):
        return gaze(frames, model, gazing_ratio=RATIO, clip_len=4, do_sample=True,
                    generator=torch.Generator().manual_seed(seed))

    a = run(0)
    check_output(a, 1, 3, N, [BUDGET] * 3, PER_SCALE, with_requirement=False)
    _same(a, run(0))
    assert not torch.equal(a["ids"], run(1)["ids"])


# ---- tile mode ----------------------------------------------------------------------------------------

def _tile_expectation(model, frames, rows, cols, clip_len):
    """Per frame, the sorted full-grid ids obtained by running the model on every 224² tile of the
    zero-padded full-resolution frames and placing each tile's cells into the full grids."""
    size = 224
    video = model.preprocess_full(frames)  # (T,3,H,W), no resize
    t, _, h, w = video.shape
    video = torch.nn.functional.pad(video, (0, cols * size - w, 0, rows * size - h))
    clip = _pad_clip(video, clip_len)
    grids = [math.isqrt(n) for n in PER_SCALE]
    local_start = np.cumsum([0] + PER_SCALE)
    full_start = np.cumsum([0] + [rows * g * cols * g for g in grids])
    expected = [set() for _ in range(t)]
    for r in range(rows):
        for c in range(cols):
            tile = clip[..., r * size:(r + 1) * size, c * size:(c + 1) * size]
            out = model(tile, gazing_ratio=RATIO)
            for f, ids in enumerate(clip_frames(out, 0, clip_len)[:t]):
                for i in ids:
                    s = int(np.searchsorted(local_start, i, side="right")) - 1
                    row, col = divmod(i - int(local_start[s]), grids[s])
                    g = grids[s]
                    expected[f].add(int(full_start[s]) + (r * g + row) * (cols * g) + c * g + col)
    return [sorted(e) for e in expected]


@pytest.mark.parametrize("shape", [(3, 300, 200), (2, 230, 460)], ids=["2x1", "2x3"])
def test_tile_mode(model, shape):
    t, h, w = shape
    rows, cols = math.ceil(h / 224), math.ceil(w / 224)
    frames = synthetic_video(t, h, w, seed=6)
    out = gaze(frames, model, gazing_ratio=RATIO, mode="tile", clip_len=4)
    grids = [math.isqrt(n) for n in PER_SCALE]
    assert out["scale_grids"] == [(rows * g, cols * g) for g in grids]
    n_full = sum(rows * cols * g * g for g in grids)
    assert out["num_vision_tokens_each_frame"] == n_full
    assert [m.shape for m in out["gazing_mask"]] == [(1, t, rows * cols * g * g) for g in grids]
    mask = torch.cat(out["gazing_mask"], -1)[0]
    counts = out["num_gazing_each_frame"]
    offsets = out["frame_offsets"]
    assert counts.shape == (t,) and offsets.shape == (t + 1,)
    assert int(offsets[-1]) == out["ids"].numel() == int(counts.sum())  # batch 1: no pads
    assert not bool(out["if_padded_gazing"].any())
    frames_ids = clip_frames(out, 0, t)
    for f, ids in enumerate(frames_ids):
        assert ids == sorted(set(ids)), "ids sorted and distinct within a frame"
        assert all(0 <= i < n_full for i in ids)
        # every tile gazes at most the budget
        assert BUDGET <= len(ids) <= rows * cols * BUDGET
        assert len(ids) == int(counts[f]) == int(mask[f].sum())
        assert mask[f].nonzero().flatten().tolist() == ids
    assert padded_frames(out, 0, n_full) == frames_ids
    assert frames_ids == _tile_expectation(model, frames, rows, cols, clip_len=4)


@pytest.mark.parametrize("requirement", [None, 0.5])
def test_tile_mode_runs_batch_size_tiles_per_call_with_the_same_result(model, requirement,
                                                                        monkeypatch):
    frames = synthetic_video(5, 230, 460, seed=8)  # 2×3 tiles, clips of 4 frames: 12 tile clips
    kwargs = dict(gazing_ratio=RATIO, task_loss_requirement=requirement, mode="tile", clip_len=4)
    whole = gaze(frames, model, batch_size=16, **kwargs)
    calls = []
    inner = model.generate_frames
    monkeypatch.setattr(model, "generate_frames",
                        lambda video, *a: calls.append(video.shape[0]) or inner(video, *a))
    split = gaze(frames, model, batch_size=5, **kwargs)
    assert calls == [5, 5, 2]
    for field in ("ids", "frame_offsets", "gazing_pos", "if_padded_gazing"):
        assert torch.equal(whole[field], split[field]), field


def test_tile_mode_single_tile_equals_resize_mode(model):
    """A 224×224 video is one tile: the same gaze as resize mode, only sorted."""
    frames = synthetic_video(3, 224, 224, seed=7)
    tiled = gaze(frames, model, gazing_ratio=RATIO, mode="tile", clip_len=4)
    resized = gaze(frames, model, gazing_ratio=RATIO, clip_len=4)
    assert tiled["scale_grids"] == resized["scale_grids"]
    assert clip_frames(tiled, 0, 3) == [sorted(f) for f in clip_frames(resized, 0, 3)]


# ---- target scales (spec §8.1) ---------------------------------------------------------------

TARGET = dict(target_scales=[56, 112, 196, 392], target_patch_size=14)  # SigLIP2 at 392 px
TARGET_PER_SCALE = [16, 64, 196, 784]  # (target // patch)²


@pytest.fixture
def one_thread():
    """One intra-op thread: OpenMP threads spin badly on a small, busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_target_scales_equal_the_model_called_on_each_clip(model, one_thread):
    from autogaze_ext.preprocess import preprocess

    frames = synthetic_video(6, 48, 80, seed=5)
    out = gaze(frames, model, gazing_ratio=RATIO, clip_len=4, batch_size=1, **TARGET)
    assert out["scale_grids"] == [(4, 4), (8, 8), (14, 14), (28, 28)]
    assert out["num_vision_tokens_each_frame"] == sum(TARGET_PER_SCALE)
    assert out["frame_offsets"].shape == (7,)
    video = preprocess(frames, size=(392, 392), config=model.processor)
    for c, clip in enumerate((video[:4][None], _pad_clip(video[4:], 4))):  # clips of 4 frames
        expected = model(clip, gazing_ratio=RATIO, **TARGET)
        t = min(4, 6 - 4 * c)
        for got, want in zip(out["gazing_mask"], expected["gazing_mask"]):
            assert torch.equal(got[0, 4 * c : 4 * c + t], want[0, :t])
    counts = out["frame_offsets"].diff()
    assert bool((counts > 0).all())
    mask = torch.cat(out["gazing_mask"], -1)[0]
    assert mask.sum().item() == out["ids"].numel()


def test_target_scales_equal_to_the_model_layout_change_nothing(model, one_thread):
    frames = synthetic_video(3, 48, 80, seed=6)
    plain = gaze(frames, model, gazing_ratio=RATIO, clip_len=4)
    same = gaze(frames, model, gazing_ratio=RATIO, clip_len=4, target_scales=[32, 64, 112, 224],
                target_patch_size=16)
    _same(same, plain)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(target_scales=[56, 112, 196, 392]), ValueError, "given together"),
    (dict(target_patch_size=14), ValueError, "given together"),
    (dict(target_scales=[56, 112, 392], target_patch_size=14), ValueError, "4 ascending sizes"),
    (dict(target_scales=[112, 56, 196, 392], target_patch_size=14), ValueError, "ascending"),
    (dict(target_scales=[56, 112, 196, 400], target_patch_size=14), ValueError, "multiples"),
    (dict(target_scales=[56, 112, 196, 392], target_patch_size=0), ValueError, "target_patch_size"),
    (dict(target_scales=[56, 112, 196, -392], target_patch_size=14), ValueError, "positive"),
    (dict(target_scales="56", target_patch_size=14), TypeError, "target_scales"),
    (dict(mode="tile", **TARGET), ValueError, "mode='resize' only"),
])
def test_bad_target_scales(model, kwargs, error, message):
    with pytest.raises(error, match=message):
        gaze(synthetic_video(2, 32, 32), model, gazing_ratio=RATIO, **kwargs)


# ---- which weights: the bundled default model, a folder, a model ----------------------------------

def test_gaze_without_a_model_uses_the_bundled_default():
    from autogaze_ext.default_model import default_model_name, load_default_model

    frames = synthetic_video(3, 96, 128)
    out = gaze(frames, gazing_ratio=0.05)
    assert out["model"] == default_model_name()
    again = gaze(frames, load_default_model(), gazing_ratio=0.05)
    assert torch.equal(out["ids"], again["ids"])


def test_gaze_accepts_a_checkpoint_folder(model):
    frames = synthetic_video(3, 96, 128)
    by_path = gaze(frames, str(FIXTURE_MODEL), gazing_ratio=0.05)
    assert by_path["model"] == str(FIXTURE_MODEL)
    assert torch.equal(by_path["ids"], gaze(frames, model, gazing_ratio=0.05)["ids"])


def test_gaze_rejects_other_model_types():
    with pytest.raises(TypeError, match="model must be"):
        gaze(synthetic_video(1, 64, 64), model=3)
