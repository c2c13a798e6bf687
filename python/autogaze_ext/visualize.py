"""Pictures of a gaze result: per-frame overlays, a PNG contact sheet, an overlay video, and
coverage numbers.

Everything works from ``result["gazing_mask"]``: one 0/1 tensor per scale, ``(1, T, n_s)`` or
``(T, n_s)``, row-major over a ``g×g`` grid with ``g = sqrt(n_s)``. A scale with grid side ``g``
splits each frame into ``g×g`` cells in proportion to the frame, so the same code draws
``mode="resize"`` results (g = 2/4/7/14) and the larger full-resolution grids of ``mode="tile"``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["gaze_overlay", "gaze_grid_image", "save_overlay_video", "coverage_stats", "SCALE_COLORS",
           "kept_percent", "three_panel_frames", "save_three_panel_video"]

# RGB highlight per scale, coarse to fine (cycled when a model has more scales).
SCALE_COLORS = np.array([(255, 90, 60), (255, 200, 0), (60, 220, 90), (70, 160, 255)], np.float32)
_SHEET_BACKGROUND = (24, 24, 24)


# ---- inputs ---------------------------------------------------------------------------------

def _to_numpy(array: Any) -> np.ndarray:
    if hasattr(array, "detach"):  # torch tensor, any device
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def _scale_grids(result: Mapping | Sequence, num_frames: int | None = None) -> list[np.ndarray]:
    """``result["gazing_mask"]`` (or the list itself) → per-scale bool ``(T, g, g)`` grids."""
    masks = result["gazing_mask"] if isinstance(result, Mapping) else result
    shapes = result.get("scale_grids") if isinstance(result, Mapping) else None
    grids = []
    for i, mask in enumerate(masks):
        if shapes is not None:  # (rows, cols) per scale, e.g. the tiled grids of mode="tile"
            rows, cols = (int(v) for v in shapes[i])
            mask = _to_numpy(mask).reshape(-1, rows * cols)
            grids.append(mask.reshape(len(mask), rows, cols) > 0)
            continue
        mask = _to_numpy(mask)
        if mask.ndim == 3:
            if mask.shape[0] != 1:
                raise ValueError(f"gazing_mask[{i}] holds {mask.shape[0]} videos; visualize one at a time")
            mask = mask[0]
        if mask.ndim != 2:
            raise ValueError(f"gazing_mask[{i}] must be (1, T, n) or (T, n); got shape {mask.shape}")
        side = math.isqrt(mask.shape[1])
        if side * side != mask.shape[1]:
            raise ValueError(f"gazing_mask[{i}] has {mask.shape[1]} cells per frame, not a square grid")
        grids.append(mask.reshape(len(mask), side, side) > 0)
    if not grids:
        raise ValueError("result has no gazing_mask scales")
    if num_frames is not None and any(len(g) != num_frames for g in grids):
        raise ValueError(f"{num_frames} frames but gazing_mask covers {len(grids[0])} frames")
    return grids


def _target_size(height: int, width: int, frame_size) -> tuple[int, int]:
    """``frame_size``: None (keep), an int (the longer side, aspect kept) or ``(height, width)``."""
    if frame_size is None:
        return height, width
    if isinstance(frame_size, (int, np.integer)):
        scale = int(frame_size) / max(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))
    h, w = frame_size
    return int(h), int(w)


def _as_video(frames: Any, frame_size=None) -> np.ndarray:
    """uint8 ``(T, H, W, 3)`` numpy/torch → uint8 numpy, resized to ``frame_size`` if given."""
    video = _to_numpy(frames)
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3); got {video.dtype} {video.shape}")
    height, width = video.shape[1:3]
    size = _target_size(height, width, frame_size)
    if size == (height, width):
        return video
    resample = Image.Resampling.BILINEAR
    return np.stack([np.asarray(Image.fromarray(f).resize(size[::-1], resample)) for f in video])


# ---- overlay --------------------------------------------------------------------------------

def _cell_index(length: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel → cell index along one axis ``(length,)``, and whether the pixel is a cell edge."""
    cell = np.arange(length) * side // length
    change = cell[1:] != cell[:-1]
    edge = np.concatenate([[True], change]) | np.concatenate([change, [True]])
    return cell, edge


def _draw(video: np.ndarray, grids: list[np.ndarray], alpha: float, dim: float) -> np.ndarray:
    """Overlay per-scale grids ``(T, g, g)`` on uint8 ``(T, H, W, 3)`` frames → uint8, same shape.

    Ungazed pixels are dimmed (× ``dim``); gazed cells keep the frame tinted by the scale's
    color (weight ``alpha``) with a 1-pixel outline; finer scales are drawn over coarser ones.
    """
    _, height, width, _ = video.shape
    layers = []
    for i, grid in enumerate(grids):
        rows, row_edge = _cell_index(height, grid.shape[1])
        cols, col_edge = _cell_index(width, grid.shape[2])
        outline = row_edge[:, None] | col_edge[None, :]  # (H, W)
        layers.append((grid, rows, cols, outline, SCALE_COLORS[i % len(SCALE_COLORS)]))
    out = np.empty_like(video)
    for t, frame in enumerate(video):
        frame = frame.astype(np.float32)
        canvas = frame * dim
        for grid, rows, cols, outline, color in layers:
            cells = grid[t][rows[:, None], cols[None, :]]  # (H, W) bool
            if cells.any():
                canvas = np.where(cells[..., None], frame * (1 - alpha) + color * alpha, canvas)
                canvas = np.where((cells & outline)[..., None], color, canvas)
        out[t] = np.clip(np.rint(canvas), 0, 255)
    return out


def gaze_overlay(frames: Any, result: Mapping | Sequence, frame_size=None, alpha: float = 0.35,
                 dim: float = 0.3) -> np.ndarray:
    """Frames with their gazed cells highlighted.

    Args:
        frames: uint8 ``(T, H, W, 3)`` numpy or torch (the original video, any size).
        result: a ``GazeOutput`` (or any mapping with ``gazing_mask``), or the mask list itself.
        frame_size: draw at this size: an int (longer side) or ``(height, width)``; None keeps H, W.
        alpha: weight of the scale color inside gazed cells.
        dim: brightness factor of the ungazed area.

    Returns:
        uint8 ``(T, H', W', 3)`` numpy.
    """
    video = _as_video(frames, frame_size)
    return _draw(video, _scale_grids(result, len(video)), alpha, dim)


def _frame_counts(grids: list[np.ndarray]) -> np.ndarray:
    """Gazed cells per frame and scale: int64 ``(T, S)``."""
    return np.stack([g.reshape(len(g), -1).sum(1) for g in grids], axis=1).astype(np.int64)


def gaze_grid_image(frames: Any, result: Mapping | Sequence, path: str | os.PathLike,
                    max_frames: int = 16, cols: int = 4, thumb_size: int = 224,
                    alpha: float = 0.35) -> Path:
    """Write a contact sheet (any Pillow format, by suffix; PNG intended) of overlays.

    Shows up to ``max_frames`` frames evenly spread over the clip, ``cols`` per row, each drawn
    with its longer side ``thumb_size`` px and captioned ``t=<frame> n=<gazed> tokens``.
    """
    video = _as_video(frames)
    grids = _scale_grids(result, len(video))
    picks = np.unique(np.linspace(0, len(video) - 1, min(len(video), max_frames)).round().astype(int))
    thumbs = _draw(_as_video(video[picks], thumb_size), [g[picks] for g in grids], alpha, 0.3)
    counts = _frame_counts(grids).sum(1)

    font = ImageFont.load_default()
    caption_h = font.getbbox("t=0 n=0 tokens")[3] + 6
    pad, (_, h, w, _) = 4, thumbs.shape
    cols = max(1, min(cols, len(picks)))
    rows = math.ceil(len(picks) / cols)
    sheet = Image.new("RGB", (pad + cols * (w + pad), pad + rows * (h + caption_h + pad)),
                      _SHEET_BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for k, (t, thumb) in enumerate(zip(picks, thumbs)):
        x = pad + (k % cols) * (w + pad)
        y = pad + (k // cols) * (h + caption_h + pad)
        sheet.paste(Image.fromarray(thumb), (x, y))
        draw.text((x + 2, y + h + 3), f"t={t} n={counts[t]} tokens", fill=(235, 235, 235), font=font)
    sheet.save(path)
    return Path(path)


def save_overlay_video(frames: Any, result: Mapping | Sequence, path: str | os.PathLike,
                       fps: int = 25, frame_size=None, alpha: float = 0.35) -> Path:
    """Encode the overlays of all frames to a video file (``video.write_video``; needs PyAV).

    An odd height or width is cropped by one pixel (the encoder needs even sizes).
    """
    from .video import write_video

    overlay = gaze_overlay(frames, result, frame_size=frame_size, alpha=alpha)
    _, height, width, _ = overlay.shape
    write_video(path, overlay[:, : height - height % 2, : width - width % 2], fps=fps)
    return Path(path)


# ---- numbers --------------------------------------------------------------------------------

def coverage_stats(result: Mapping | Sequence) -> dict:
    """How much of the video the gaze covers.

    Returns a dict: ``num_frames`` T, ``tokens_per_frame`` (list of T ints), ``total_tokens``,
    ``candidates_per_frame`` N (cells of all scales), ``candidates`` N·T, ``fraction``
    (total / candidates), ``grid_sides`` (g per scale), ``tokens_per_scale`` (gazed cells per
    scale over all frames) and ``scales`` (from the result when it has them, else None).
    """
    grids = _scale_grids(result)
    counts = _frame_counts(grids)  # (T, S)
    num_frames = len(counts)
    per_frame = int(sum(g.shape[1] * g.shape[2] for g in grids))
    total = int(counts.sum())
    scales = result.get("scales") if isinstance(result, Mapping) else None
    return {
        "num_frames": num_frames,
        "tokens_per_frame": counts.sum(1).tolist(),
        "total_tokens": total,
        "candidates_per_frame": per_frame,
        "candidates": per_frame * num_frames,
        "fraction": total / (per_frame * num_frames) if num_frames else 0.0,
        "grid_sides": [int(g.shape[1]) for g in grids],
        "tokens_per_scale": counts.sum(0).tolist(),
        "scales": [int(s) for s in scales] if scales is not None else None,
    }


# ---- three-panel view: input | multi-scale mask | gazed pixels only ------------------------

def _even(n: int) -> int:
    return max(2, n - n % 2)


def _mask_panels(video: np.ndarray, grids: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: the multi-scale mask (each gazed cell filled over its full area in its scale's
    color, finer scales over coarser, dark 1-pixel cell borders) and the gazed pixels only (the
    frame where any scale gazes, black elsewhere). Both uint8 ``(T, H, W, 3)``."""
    _, height, width, _ = video.shape
    layers = []
    for i, grid in enumerate(grids):
        rows, row_edge = _cell_index(height, grid.shape[1])
        cols, col_edge = _cell_index(width, grid.shape[2])
        layers.append((grid, rows, cols, row_edge[:, None] | col_edge[None, :],
                       SCALE_COLORS[i % len(SCALE_COLORS)].astype(np.uint8)))
    mask_out = np.zeros_like(video)
    gazed_out = np.zeros_like(video)
    for t, frame in enumerate(video):
        canvas = np.full_like(frame, 32)
        anywhere = np.zeros(frame.shape[:2], bool)
        for grid, rows, cols, outline, color in layers:
            cells = grid[t][rows[:, None], cols[None, :]]
            if cells.any():
                canvas[cells] = color
                canvas[cells & outline] = (color * 0.55).astype(np.uint8)
                anywhere |= cells
        mask_out[t] = canvas
        gazed_out[t] = np.where(anywhere[..., None], frame, 0)
    return mask_out, gazed_out


def kept_percent(result: Mapping | Sequence) -> list[float]:
    """Per frame: gazed tokens as a percentage of the candidate tokens (all scales)."""
    return _kept(_scale_grids(result))


def _kept(grids: list[np.ndarray]) -> list[float]:
    per_frame = sum(g.shape[1] * g.shape[2] for g in grids)
    return [100.0 * n / per_frame for n in _frame_counts(grids).sum(1).tolist()]


def three_panel_frames(frames: Any, result: Mapping | Sequence, panel_size: int = 320,
                       first_index: int = 0) -> np.ndarray:
    """``input | multi-scale mask | gazed pixels only`` side by side, with the frame index and
    kept % written on each frame (frame numbers start at ``first_index``). Each panel has its longer side ``panel_size`` (aspect kept,
    sizes rounded down to even so the result encodes as yuv420p).

    Returns uint8 ``(T, h, 3·w, 3)`` numpy with h, w even.
    """
    video = _to_numpy(frames)
    grids = _scale_grids(result, len(video))
    h, w = _target_size(video.shape[1], video.shape[2], panel_size)
    video = _as_video(video, (_even(h), _even(w)))
    mask, gazed = _mask_panels(video, grids)
    out = np.concatenate([video, mask, gazed], axis=2)
    kept = _kept(grids)
    font = ImageFont.load_default()
    for t in range(len(out)):
        image = Image.fromarray(out[t])
        draw = ImageDraw.Draw(image)
        text = f"t={first_index + t}  kept {kept[t]:.1f}%"
        box = draw.textbbox((4, 4), text, font=font)
        draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
        draw.text((4, 4), text, fill=(255, 255, 255), font=font)
        out[t] = np.asarray(image)
    return out


def save_three_panel_video(frames: Any, result: Mapping | Sequence, path: str | os.PathLike,
                           fps: float = 25, panel_size: int = 320, first_index: int = 0) -> Path:
    """Encode ``three_panel_frames`` to an mp4 (needs PyAV)."""
    from .video import write_video

    write_video(path, three_panel_frames(frames, result, panel_size, first_index), fps=max(1, round(fps)))
    return Path(path)
