"""Overlays, contact sheet, overlay video and coverage numbers, from hand-built results."""

import numpy as np
import pytest
import torch
from PIL import Image

from autogaze_ext.visualize import coverage_stats, gaze_grid_image, gaze_overlay, save_overlay_video

PER_SCALE = [4, 16, 49, 196]  # the release: grids 2, 4, 7, 14


def make_result(num_frames, chosen, per_scale=PER_SCALE, batched=True):
    """A GazeOutput-like dict; ``chosen[t]`` lists (scale index, cell id) gazed in frame t."""
    masks = [torch.zeros(num_frames, n) for n in per_scale]
    for t, cells in enumerate(chosen):
        for scale, cell in cells:
            masks[scale][t, cell] = 1.0
    if batched:
        masks = [m[None] for m in masks]
    return {"gazing_mask": masks, "scales": [32, 64, 112, 224][: len(per_scale)],
            "num_vision_tokens_each_frame": sum(per_scale)}


def gray_video(num_frames, height, width, level=128):
    return np.full((num_frames, height, width, 3), level, dtype=np.uint8)


def test_overlay_shape_dtype_and_inputs():
    result = make_result(3, [[(0, 0)], [(3, 5)], []])
    frames = gray_video(3, 90, 160)
    out = gaze_overlay(frames, result)
    assert out.shape == (3, 90, 160, 3) and out.dtype == np.uint8
    # torch frames and unbatched (T, n_s) masks give the same picture
    same = gaze_overlay(torch.from_numpy(frames), make_result(3, [[(0, 0)], [(3, 5)], []], batched=False))
    assert np.array_equal(out, same)
    assert gaze_overlay(frames, result, frame_size=80).shape == (3, 45, 80, 3)
    assert gaze_overlay(frames, result["gazing_mask"], frame_size=(32, 48)).shape == (3, 32, 48, 3)


def test_gazed_cell_is_brighter_and_proportional():
    # frame 0: top-left cell of the 2x2 scale; frame 1: bottom-right cell of the 14x14 scale
    result = make_result(2, [[(0, 0)], [(3, 195)]])
    out = gaze_overlay(gray_video(2, 100, 140), result).astype(int).sum(-1)
    # the 2x2 cell covers rows [0, 50) and columns [0, 70) (inside: away from the outline)
    assert out[0, 10:40, 10:60].min() > out[0, 60:, 80:].max()
    assert out[0, 60:, 80:].std() == 0  # uniformly dimmed
    # the 14x14 cell 195 covers rows [93, 100) and columns [130, 140)
    assert out[1, 95:99, 132:139].min() > out[1, :90, :].max()
    assert out[1, :90].std() == 0


def test_tile_sized_grid_is_derived_from_the_mask():
    result = make_result(1, [[(0, 27 * 28 + 27)]], per_scale=[28 * 28])  # last cell of 28x28
    out = gaze_overlay(gray_video(1, 56, 56), result).astype(int).sum(-1)
    assert out[0, 54:, 54:].min() > out[0, :54, :54].max()


def test_mismatched_frames_and_bad_masks_raise():
    with pytest.raises(ValueError, match="frames"):
        gaze_overlay(gray_video(2, 32, 32), make_result(3, [[], [], []]))
    with pytest.raises(ValueError, match="square"):
        gaze_overlay(gray_video(1, 32, 32), {"gazing_mask": [torch.zeros(1, 1, 5)]})
    with pytest.raises(ValueError, match="uint8"):
        gaze_overlay(np.zeros((1, 32, 32, 3), np.float32), make_result(1, [[]]))


def test_grid_image_png(tmp_path):
    chosen = [[(0, t % 4), (3, t)] for t in range(20)]
    path = gaze_grid_image(gray_video(20, 64, 96), make_result(20, chosen), tmp_path / "sheet.png",
                           max_frames=6, cols=4, thumb_size=48)
    with Image.open(path) as sheet:
        assert sheet.format == "PNG" and sheet.mode == "RGB"
        width, height = sheet.size
    # 6 thumbnails of 48x32, 4 per row: 2 rows, each with a caption strip
    assert width == 4 + 4 * (48 + 4)
    assert height > 4 + 2 * (32 + 4)


def test_coverage_stats_numbers():
    result = make_result(2, [[(0, 1), (1, 3), (3, 10)], [(3, 0)]])
    stats = coverage_stats(result)
    assert stats["num_frames"] == 2
    assert stats["tokens_per_frame"] == [3, 1]
    assert stats["total_tokens"] == 4
    assert stats["candidates_per_frame"] == 265 and stats["candidates"] == 530
    assert stats["fraction"] == pytest.approx(4 / 530)
    assert stats["tokens_per_scale"] == [1, 1, 0, 2]
    assert stats["grid_sides"] == [2, 4, 7, 14]
    assert stats["scales"] == [32, 64, 112, 224]


def test_overlay_video_roundtrip(tmp_path):
    pytest.importorskip("av", reason="PyAV not installed (pip install autogaze_ext[video])")
    from autogaze_ext.video import read_video

    frames = gray_video(4, 63, 81)  # odd sizes are cropped to even
    path = save_overlay_video(frames, make_result(4, [[(0, 0)]] * 4), tmp_path / "overlay.mp4", fps=10)
    back = read_video(path)
    assert back.shape == (4, 62, 80, 3)


# ---- three-panel view -----------------------------------------------------------------------

def test_three_panel_frames_layout_and_crisp_cells():
    from autogaze_ext.visualize import SCALE_COLORS, kept_percent, three_panel_frames

    frames = np.full((2, 100, 200, 3), 120, np.uint8)
    # frame 0: the top-left coarse cell (2x2 grid); frame 1: the bottom-right finest cell
    result = make_result(2, [[(0, 0)], [(3, 195)]])
    out = three_panel_frames(frames, result, panel_size=200)
    assert out.shape == (2, 100, 600, 3) and out.dtype == np.uint8
    mask0, gazed0 = out[0, :, 200:400], out[0, :, 400:]
    # the coarse cell is drawn over its full area (25 px below the caption to its edge)
    inner = mask0[25:48, 2:98]
    assert (inner == SCALE_COLORS[0].astype(np.uint8)).all()
    assert (mask0[52:, 102:] == 32).all()  # the rest is background
    assert (gazed0[25:48, 2:98] == 120).all() and (gazed0[52:, 102:] == 0).all()
    mask1 = out[1, :, 200:400]
    assert (mask1[94:99, 187:199] == SCALE_COLORS[3].astype(np.uint8)).all()
    assert kept_percent(result) == pytest.approx([100 / 265, 100 / 265])


def test_three_panel_frames_even_sizes_and_tiled_grids(tmp_path):
    pytest.importorskip("av")
    from autogaze_ext.visualize import save_three_panel_video, three_panel_frames

    frames = np.random.default_rng(0).integers(0, 255, (3, 49, 65, 3), dtype=np.uint8)
    masks = [torch.zeros(3, 2 * 4), torch.ones(3, 4 * 8)]  # non-square grids, as mode="tile"
    result = {"gazing_mask": masks, "scale_grids": [(2, 4), (4, 8)]}
    out = three_panel_frames(frames, result, panel_size=65)
    assert out.shape[1] % 2 == 0 and out.shape[2] % 6 == 0 and out.shape[0] == 3
    path = save_three_panel_video(frames, result, tmp_path / "v.mp4", fps=10, panel_size=65,
                                  first_index=7)
    import av

    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 3 and decoded[0].shape == out.shape[1:]
    stats = coverage_stats(result)
    assert stats["candidates_per_frame"] == 8 + 32 and stats["tokens_per_frame"] == [32] * 3
