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
         temperature=1.0, generator=None, backend="auto") -> GazeOutput:
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
    clip_len = model.config.max_num_frames if clip_len is None else clip_len
    if isinstance(clip_len, bool) or not isinstance(clip_len, int) or clip_len < 1:
        raise ValueError(f"clip_len must be a positive int, got {clip_len!r}")
    if gazing_ratio is not None and not isinstance(gazing_ratio, (int, float)):
        raise TypeError("gazing_ratio of gaze() must be one number for the whole video; for "
                        "per-frame budgets call the model on a clip")
    if task_loss_requirement is not None and not isinstance(task_loss_requirement, (int, float)):
        raise TypeError("task_loss_requirement of gaze() must be one number for the whole video")
    if device is not None:
        model.to(device)
    sampling = budgets.check_sampling(do_sample, temperature, generator, backend)
    total = frames.shape[0]
    size = model.config.vision.input_img_size
    rows = cols = 1
    if mode == "tile":
        rows, cols = math.ceil(frames.shape[1] / size), math.ceil(frames.shape[2] / size)

    tokens, counts, requirement = [], [], []
    span = batch_size * clip_len  # frames per chunk; preprocessing per chunk bounds memory
    with exact_float32(model.dtype == torch.float32):
        for first in range(0, total, span):
            chunk = frames[first : first + span]
            if mode == "resize":
                video = _clips(model.preprocess(chunk), clip_len)
            else:
                video = cut_tiles(_clips(model.preprocess_full(chunk), clip_len), size, rows, cols)
            video = model._check_video(video.to(model.device), name="frames")
            tok, cnt, req = model.generate_frames(video, gazing_ratio, task_loss_requirement,
                                                  sampling, official_batching)
            tokens.append(torch.stack([_pad_to(t, model) for t in tok], 1))  # (b, L, N)
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
