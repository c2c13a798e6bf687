"""``gaze()``: raw uint8 frames of any length and size in, gaze for the whole video out."""

from __future__ import annotations

import math

import numpy as np
import torch

from . import budget as budgets
from .layout import GazeOutput, assemble, cut_tiles, from_mask, merge_tile_masks
from .model import AutoGaze, exact_float32


def _check_frames(frames) -> torch.Tensor:
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    if not isinstance(frames, torch.Tensor):
        raise TypeError(f"frames must be a uint8 array (T,H,W,3), got {type(frames).__name__}")
    if frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (T,H,W,3), got {tuple(frames.shape)}")
    if frames.dtype != torch.uint8:
        raise TypeError(f"frames must be uint8, got {frames.dtype}")
    if frames.shape[0] == 0:
        raise ValueError("frames is empty (T=0)")
    if frames.shape[1] == 0 or frames.shape[2] == 0:
        raise ValueError(f"frames has empty images: shape {tuple(frames.shape)}")
    return frames


def _clips(video: torch.Tensor, clip_len: int) -> torch.Tensor:
    """(T,3,H,W) → (ceil(T/L), L, 3, H, W), the last clip padded by repeating its last frame."""
    t = video.shape[0]
    n = math.ceil(t / clip_len)
    pad = n * clip_len - t
    if pad:
        video = torch.cat((video, video[-1:].expand(pad, *video.shape[1:])))
    return video.view(n, clip_len, *video.shape[1:])


def gaze(frames, model: AutoGaze, gazing_ratio=None, task_loss_requirement=None, mode="resize",
         device=None, clip_len=None, batch_size=16, official_batching=False, do_sample=False,
         temperature=1.0, generator=None) -> GazeOutput:
    """Gaze a whole video in one call.

    frames: uint8 (T,H,W,3), numpy or torch, any length and size. The video is cut into clips of
    ``clip_len`` frames (the checkpoint's ``max_num_frames``, 16), the last one padded by
    repeating its last frame; clips run as a batch (``batch_size`` at a time) and padded frames
    are dropped, so the result covers exactly the T real frames, ids offset by N·t.

    mode: ``"resize"`` preprocesses as the official processor (any aspect ratio; the model then
    resizes to its input size); ``"tile"`` keeps the full resolution, cuts each frame into
    model-size tiles (zero-padded bottom/right) and gazes every tile, giving per-scale grids of
    ``rows·g × cols·g`` cells (``scale_grids``); ids are then sorted within a frame.
    device: run there (the model is moved to it). Returns a ``GazeOutput`` with batch size 1.
    """
    if mode not in ("resize", "tile"):
        raise ValueError(f"mode must be 'resize' or 'tile', got {mode!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    frames = _check_frames(frames)
    clip_len = clip_len or model.config.max_num_frames
    if not isinstance(clip_len, int) or clip_len < 1:
        raise ValueError(f"clip_len must be a positive int, got {clip_len!r}")
    if device is not None:
        model.to(device)
    sampling = budgets.check_sampling(do_sample, temperature, generator)
    total = frames.shape[0]
    if mode == "resize":
        video = model.preprocess(frames).to(model.device)
        rows = cols = 1
    else:
        h, w = frames.shape[1:3]
        video = model.preprocess_full(frames).to(model.device)
        size = model.config.vision.input_img_size
        rows, cols = math.ceil(h / size), math.ceil(w / size)
    clips = _clips(video, clip_len)  # (C, L, 3, H, W)
    if mode == "tile":
        clips = cut_tiles(clips, model.config.vision.input_img_size, rows, cols)
    clips = model._check_video(clips, name="frames")

    tokens, counts, requirement = [], [], []
    with exact_float32(model.dtype == torch.float32):
        for start in range(0, clips.shape[0], batch_size):
            tok, cnt, req = model.generate_frames(clips[start : start + batch_size], gazing_ratio,
                                                  task_loss_requirement, sampling,
                                                  official_batching)
            tokens.append(torch.stack([_pad_to(t, model) for t in tok], 1))  # (b, L, M)
            counts.append(torch.stack(cnt, 1))  # (b, L)
            requirement.append(req)
    tokens, counts = torch.cat(tokens), torch.cat(counts)
    req = None if requirement[0] is None else torch.cat(requirement)
    eos = model.gazing_model.gaze_decoder.cfg.eos_token_id
    per_scale = model.config.tokens_per_scale

    if mode == "resize":
        # clip c, frame t → video frame c·L + t; keep the first `total`
        tok = tokens.flatten(0, 1)[:total]
        cnt = counts.flatten(0, 1)[:total]
        fields = assemble([tok[i : i + 1] for i in range(total)], [cnt[i : i + 1] for i in range(total)],
                          model.num_tokens, per_scale, eos)
        grids = [(math.isqrt(n),) * 2 for n in per_scale]
        n_total = model.num_tokens
    else:
        per_clip = assemble(list(tokens.unbind(1)), list(counts.unbind(1)), model.num_tokens,
                            per_scale, eos)
        tile_g = [math.isqrt(n) for n in per_scale]
        mask = merge_tile_masks(per_clip["gazing_mask"], tokens.shape[0] // (rows * cols),
                                tile_g, rows, cols)  # (C, L, N_full)
        mask = mask.flatten(0, 1)[:total].unsqueeze(0)
        grids = [(rows * g, cols * g) for g in tile_g]
        fields = from_mask(mask, [r * c for r, c in grids])
        n_total = sum(r * c for r, c in grids)
    if req is not None:
        req = req[:: rows * cols].flatten()[:total].unsqueeze(0)
    fields.update(scales=list(model.scales), num_vision_tokens_each_frame=n_total,
                  scale_grids=grids, frame_sampling_rate=model.config.vision.temporal_patch_size,
                  has_task_loss_requirement=req is not None, task_loss_requirement=req)
    return GazeOutput(fields)


def _pad_to(tokens: torch.Tensor, model: AutoGaze) -> torch.Tensor:
    """Pad (B,M_t) to (B,N) with EOS so frames with different budgets stack."""
    eos = model.gazing_model.gaze_decoder.cfg.eos_token_id
    return torch.nn.functional.pad(tokens, (0, model.num_tokens - tokens.shape[1]), value=eos)
