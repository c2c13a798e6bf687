"""``gaze()``: raw uint8 frames of any length and size in, gaze for the whole video out."""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from . import budget as budgets
from .layout import GazeOutput, assemble, cut_tiles, from_mask, merge_tile_masks
from .model import AutoGaze, exact_float32
from .preprocess import preprocess


_DEFAULT_MODELS: dict = {}


def resolve_model(model) -> AutoGaze:
    """An :class:`AutoGaze` from a model, a checkpoint folder / hub id, or None (the bundled
    default model, loaded once per process)."""
    if isinstance(model, AutoGaze):
        return model
    if model is None:
        if "default" not in _DEFAULT_MODELS:
            from .default_model import load_default_model

            _DEFAULT_MODELS["default"] = load_default_model().eval()
        return _DEFAULT_MODELS["default"]
    if isinstance(model, (str, os.PathLike)):
        return AutoGaze.from_pretrained(model)
    raise TypeError(f"model must be an AutoGaze, a checkpoint folder or hub id, or None; "
                    f"got {type(model).__name__}")


def model_name(model: AutoGaze) -> str:
    """What the result says about the weights that produced it."""
    return getattr(model, "name_or_path", None) or "AutoGaze (weights given in memory)"


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


def _check_target(model: AutoGaze, target_scales,
                  target_patch_size) -> tuple[list[int], int] | None:
    """Validate ``target_scales``/``target_patch_size`` (spec §8.1); None when neither is given or
    they name the model's own layout (no tiling then, as officially)."""
    if target_scales is None and target_patch_size is None:
        return None
    if target_scales is None or target_patch_size is None:
        raise ValueError("target_scales and target_patch_size must be given together")
    patch = target_patch_size
    if isinstance(patch, bool) or not isinstance(patch, int) or patch < 1:
        raise ValueError(f"target_patch_size must be a positive int, got {patch!r}")
    if isinstance(target_scales, (str, bytes)) or not hasattr(target_scales, "__len__"):
        raise TypeError(f"target_scales must be a sequence of ints, got "
                        f"{type(target_scales).__name__}")
    scales = list(target_scales)
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in scales):
        raise ValueError(f"target_scales must be positive ints, got {target_scales!r}")
    if len(scales) != len(model.scales) or sorted(set(scales)) != scales:
        raise ValueError(f"target_scales must be {len(model.scales)} ascending sizes (one per "
                         f"model scale {model.scales}), got {scales}")
    if any(s % patch for s in scales):
        raise ValueError(f"target_scales {scales} must be multiples of target_patch_size {patch}")
    own = [(s // patch) ** 2 for s in scales] == model.config.tokens_per_scale
    if scales == model.scales and own:
        return None
    return scales, patch


def gaze(frames, model: AutoGaze | str | os.PathLike | None = None, gazing_ratio=None, task_loss_requirement=None, mode="resize",
         device=None, clip_len=None, batch_size=16, official_batching=False, do_sample=False,
         temperature=1.0, generator=None, backend="auto", target_scales=None,
         target_patch_size=None, candidates=None) -> GazeOutput:
    """Gaze a whole video in one call.

    model: an :class:`AutoGaze`, a checkpoint folder or hub id, or None for the bundled default
    model (``autogaze_ext.default_model``; its name is in the result's ``model`` field).
    frames: uint8 (T,H,W,3), numpy or torch, any length and size. The video is cut into clips of
    ``clip_len`` frames (the checkpoint's ``max_num_frames``, 16), the last one padded by
    repeating its last frame; clips run as a batch (``batch_size`` at a time; in tile mode
    ``batch_size`` tile clips per model call, which bounds memory at 4K) and padded frames
    are dropped, so the result covers exactly the T real frames, ids offset by N·t.

    mode: ``"resize"`` preprocesses as the official processor (any aspect ratio; the model then
    resizes to its input size); ``"tile"`` keeps the full resolution, cuts each frame into
    model-size tiles (zero-padded bottom/right) and gazes every tile, giving per-scale grids of
    ``rows·g × cols·g`` cells (``scale_grids``); ids are then sorted within a frame.
    target_scales/target_patch_size (resize mode only): gaze for a downstream ViT of another
    resolution (spec §8.1), e.g. ``[56, 112, 196, 392]`` and 14 for SigLIP2 at 392 px. Frames are
    resized to the largest target scale, every clip is gazed as ``model(clip, target_scales=…,
    target_patch_size=…)`` would, and the per-scale grids become ``target // patch`` cells a side
    (ids sorted within a frame; generation order is lost, as officially).
    candidates: None or a (N,) bool tensor of the model's candidate ids the decoder may pick
    (e.g. only the finest scale); see ``AutoGaze.forward``.
    device: run there (the model is moved to it). Returns a ``GazeOutput`` with batch size 1.
    """
    model = resolve_model(model)
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
    target = _check_target(model, target_scales, target_patch_size)
    if target is not None and mode != "resize":
        raise ValueError("target_scales/target_patch_size work with mode='resize' only (tile mode "
                         "already gazes at full resolution)")
    if device is not None:
        model.to(device)
    sampling = budgets.check_sampling(do_sample, temperature, generator, backend, candidates,
                                      model.num_tokens)
    total = frames.shape[0]
    size = model.config.vision.input_img_size
    rows = cols = 1
    if mode == "tile":
        rows, cols = math.ceil(frames.shape[1] / size), math.ceil(frames.shape[2] / size)

    if target is not None:
        return _gaze_target(frames, model, gazing_ratio, task_loss_requirement, clip_len,
                            batch_size, sampling, official_batching, *target)

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
            # Tiles run batch_size clips per model call (bounds memory at 4K). Results are the
            # same as one call: clips are independent unless official_batching couples them or
            # sampling draws per batch.
            split = mode == "tile" and not official_batching and not sampling.do_sample
            for piece in video.split(batch_size) if split else [video]:
                tok, cnt, req = model.generate_frames(piece, gazing_ratio, task_loss_requirement,
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
    fields["model"] = model_name(model)
    return GazeOutput(fields)


def _gaze_target(frames, model, gazing_ratio, task_loss_requirement, clip_len, batch_size,
                 sampling, official_batching, scales, patch) -> GazeOutput:
    """``gaze()`` with target scales: frames resized to ``scales[-1]``² and clips of ``clip_len``
    frames gazed through ``model._tiled`` (``batch_size`` clips per call)."""
    total, side = frames.shape[0], scales[-1]
    masks, requirement = [], []
    with exact_float32(model.dtype == torch.float32):
        for first in range(0, total, batch_size * clip_len):
            chunk = frames[first : first + batch_size * clip_len]
            video = _clips(preprocess(chunk, size=(side, side), config=model.processor), clip_len)
            video = model._check_video(video.to(model.device), name="frames")
            out = model._tiled(video, gazing_ratio, task_loss_requirement, scales, patch, sampling,
                               official_batching)
            masks.append(torch.cat(out["gazing_mask"], -1))  # (b, L, N_new)
            requirement.append(out["task_loss_requirement"])
    grids = [(s // patch,) * 2 for s in scales]
    mask = torch.cat(masks).flatten(0, 1)[:total].unsqueeze(0)
    fields = from_mask(mask, [r * c for r, c in grids])
    req = None if requirement[0] is None else torch.cat(requirement).flatten()[:total].unsqueeze(0)
    fields.update(scales=list(model.scales), num_vision_tokens_each_frame=mask.shape[-1],
                  scale_grids=grids, frame_sampling_rate=model.config.vision.temporal_patch_size,
                  has_task_loss_requirement=req is not None, task_loss_requirement=req)
    fields["model"] = model_name(model)
    return GazeOutput(fields)


def _pad_to(tokens: torch.Tensor, model: AutoGaze) -> torch.Tensor:
    """Pad (B,M_t) to (B,N) with EOS so frames with different budgets stack."""
    eos = model.gazing_model.gaze_decoder.cfg.eos_token_id
    return torch.nn.functional.pad(tokens, (0, model.num_tokens - tokens.shape[1]), value=eos)
