"""Gazed video into Qwen2.5-VL (Hugging Face transformers ≥ 5.23): only the kept video tokens
reach the vision tower and the LLM, each at its dense position.

``prepare_gazed_inputs(model, inputs, ...)`` takes the processor's output for a prompt with a
video (``input_ids``, ``pixel_values_videos``, ``video_grid_thw``, ...), gazes the video and
returns the inputs of ``model(**g.model_inputs())`` / ``model.generate(**g.model_inputs())``:
shortened ``input_ids`` with one placeholder per kept token, the kept tokens' vision embeddings
(``mm_encoder_outputs``), 4-row ``position_ids`` (text row, then the dense M-RoPE (t,h,w) ids of
every kept token) and ``rope_deltas``. ``generate(model, processor, frames, prompt)`` is the
one-call form. transformers' source is not touched: the vision tower takes the kept rows with
precomputed ``position_ids``/``cu_seqlens``/``window_index``/``cu_window_seqlens`` kwargs, and
the model takes precomputed embeddings through ``mm_encoder_outputs``.

Mapping gaze onto Qwen's grid: a merge unit (2×2 patches of 14 px over 2 frames, one LLM token)
is a 28-px cell. The gaze model runs at ``target_patch_size=28`` with target scales whose finest
grid is the merge grid (56/112/196/392 for the official 32/64/112/224 model), on 392-px tiles of
the frame (zero-padded bottom/right; tiles beyond the first where the frame is larger), and the
two frames of a temporal pair are united. Coarse-scale gazes follow ``policy``:

* ``"expand"`` (default): a coarse gaze keeps every merge unit its cell overlaps;
* ``"drop"``: only finest-scale gazes keep units (coarse gazes are discarded);
* ``"finest"``: gaze decoding is restricted to finest-scale candidates, so the whole budget
  lands there (``candidates`` of :func:`autogaze_ext.gaze`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

try:
    from transformers.modeling_outputs import BaseModelOutputWithPooling
    from transformers.vision_utils import (get_vision_cu_seqlens, get_vision_position_ids,
                                           get_vision_window_index)
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError("autogaze_ext.integrations.qwen2_5_vl needs transformers>=5.23: "
                      "pip install 'autogaze_ext[transformers]'") from error

from ..api import gaze, resolve_model
from .qwen_layout import pair_union, restrict_vision_metadata, unpatchify, units_from_scale_masks

POLICIES = ("expand", "drop", "finest")
# The Qwen2-VL processors' defaults (OpenAI CLIP), used when no processor is given.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class GazedVideoInputs:
    """Model inputs for the kept video tokens, and what was kept.

    input_ids/attention_mask (B,L'): the prompt with one placeholder per kept token.
    position_ids (4,B,L'): row 0 the text positions 0…L'−1 (for the mask), rows 1-3 the dense
    M-RoPE (t,h,w) ids of every kept token (``get_rope_index`` of the dense prompt).
    rope_deltas (B,1): dense ``rope_deltas`` plus the tokens dropped, so that later tokens get the
    positions they would have had after the dense prompt.
    video_embeds (K,D): vision tower output of the K kept units, in row order.
    pixel_values_videos (K·4, C·2·14²): the kept rows (block-major) and ``vision_kwargs`` the
    vision tower metadata over them: ``model.model.visual(pixel_values_videos, video_grid_thw,
    **vision_kwargs)`` reproduces ``video_embeds``. keep: per video a (t, h/2, w/2) bool grid.
    """
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    rope_deltas: torch.Tensor
    video_embeds: torch.Tensor
    video_splits: list[int]
    pixel_values_videos: torch.Tensor
    video_grid_thw: torch.Tensor
    vision_kwargs: dict
    keep: list[torch.Tensor]
    policy: str | None
    num_video_tokens: int
    num_dense_video_tokens: int
    gazed_cells: int | None = None
    timings: dict = field(default_factory=dict)

    def model_inputs(self) -> dict:
        """Keyword arguments of ``model(...)`` and ``model.generate(...)``."""
        video = BaseModelOutputWithPooling(pooler_output=tuple(self.video_embeds.split(self.video_splits)))
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask,
                "position_ids": self.position_ids, "mm_encoder_outputs": {"video": video}}


@dataclass
class GazedGeneration:
    """``generate`` result: decoded text, new token ids (B,n), and the inputs used."""
    text: list[str]
    new_tokens: torch.Tensor
    inputs: GazedVideoInputs


# ---- checks -------------------------------------------------------------------------------------

def _parts(model):
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "visual") or not hasattr(inner, "get_rope_index"):
        raise TypeError(f"model must be a Qwen2_5_VLForConditionalGeneration, got "
                        f"{type(model).__name__}")
    return inner, model.config.vision_config


def _check_policy(policy):
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")


def _check_grid(grid: torch.Tensor, rows: torch.Tensor, vision) -> list[tuple[int, int, int]]:
    merge, patch, temporal = vision.spatial_merge_size, vision.patch_size, vision.temporal_patch_size
    width = vision.in_channels * temporal * patch * patch
    if not isinstance(grid, torch.Tensor) or grid.dim() != 2 or grid.shape[1] != 3:
        raise ValueError(f"video_grid_thw must be a (V, 3) tensor, got "
                         f"{tuple(grid.shape) if isinstance(grid, torch.Tensor) else type(grid)}")
    if not isinstance(rows, torch.Tensor) or rows.dim() != 2 or rows.shape[1] != width:
        raise ValueError(f"pixel_values_videos must be (P, {width}) (channels·temporal patch·"
                         f"{patch}²), got {tuple(getattr(rows, 'shape', ()))}")
    if not rows.is_floating_point() or not bool(torch.isfinite(rows).all()):
        raise ValueError("pixel_values_videos must be finite floats")
    grids = [tuple(int(v) for v in g) for g in grid.tolist()]
    for i, (t, h, w) in enumerate(grids):
        if t < 1 or h < merge or w < merge or h % merge or w % merge:
            raise ValueError(f"video_grid_thw[{i}] = {(t, h, w)}: Qwen needs t ≥ 1 and h, w "
                             f"positive multiples of the spatial merge {merge}")
    total = sum(t * h * w for t, h, w in grids)
    if total != rows.shape[0]:
        raise ValueError(f"pixel_values_videos has {rows.shape[0]} rows, video_grid_thw implies "
                         f"{total}")
    return grids


def _check_keep(keep, shapes: list[tuple[int, int, int]]) -> list[torch.Tensor]:
    if isinstance(keep, torch.Tensor):
        keep = [keep]
    if not isinstance(keep, (list, tuple)) or len(keep) != len(shapes):
        raise ValueError(f"keep must be a list of {len(shapes)} bool tensors (one per video)")
    out = []
    for i, (k, shape) in enumerate(zip(keep, shapes)):
        if not isinstance(k, torch.Tensor) or k.dtype != torch.bool or tuple(k.shape) != shape:
            got = (tuple(k.shape), k.dtype) if isinstance(k, torch.Tensor) else type(k).__name__
            raise ValueError(f"keep[{i}] must be a bool tensor of shape {shape} (temporal groups, "
                             f"merge rows, merge cols of video_grid_thw[{i}]), got {got}")
        out.append(k)
    return out


# ---- gaze → merge units -------------------------------------------------------------------------

def video_frames(pixel_values_videos: torch.Tensor, grid_thw, vision, image_mean=CLIP_MEAN,
                 image_std=CLIP_STD) -> torch.Tensor:
    """The uint8 frames (T,H,W,3) that one video's processor rows encode (the frames Qwen sees,
    after its resize; T = 2·t, a padded last frame included)."""
    frames = unpatchify(pixel_values_videos.float(), grid_thw, vision.patch_size,
                        vision.spatial_merge_size, vision.temporal_patch_size, vision.in_channels)
    mean = torch.tensor(image_mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(image_std, dtype=torch.float32).view(1, -1, 1, 1)
    pixels = ((frames * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).contiguous()


def _gaze_geometry(gaze_model, unit_px: int):
    grids = [math.isqrt(n) for n in gaze_model.config.tokens_per_scale]
    if any(g * g != n for g, n in zip(grids, gaze_model.config.tokens_per_scale)):
        raise ValueError("the gaze model's scales must be square grids")
    return grids, [unit_px * g for g in grids]


def gaze_units(frames, gaze_model=None, policy: str = "expand", gazing_ratio=None,
               task_loss_requirement=None, unit_px: int = 28, **gaze_kwargs):
    """Gaze uint8 frames (T,H,W,3) (H, W multiples of ``unit_px``) and return the merge units
    each frame keeps, (T, H/unit_px, W/unit_px) bool, and the number of gazed cells.

    The frame is cut into tiles of ``unit_px``·(finest grid) px (392 for the official model,
    zero-padded bottom/right) and each tile is gazed by :func:`autogaze_ext.gaze` at
    ``target_patch_size=unit_px``, so its finest cells are the merge units.
    """
    _check_policy(policy)
    gaze_model = resolve_model(gaze_model)
    frames = torch.as_tensor(np.asarray(frames)) if not isinstance(frames, torch.Tensor) else frames
    if frames.dim() != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8 (T,H,W,3), got {tuple(frames.shape)} {frames.dtype}")
    t, height, width, _ = frames.shape
    if height % unit_px or width % unit_px:
        raise ValueError(f"frames must be multiples of {unit_px} px, got {height}x{width}")
    grids, scales = _gaze_geometry(gaze_model, unit_px)
    finest, tile = grids[-1], scales[-1]
    rows, cols = math.ceil(height / tile), math.ceil(width / tile)
    padded = F.pad(frames, (0, 0, 0, cols * tile - width, 0, rows * tile - height))
    candidates = None
    if policy == "finest":
        candidates = torch.zeros(gaze_model.num_tokens, dtype=torch.bool)
        candidates[gaze_model.num_tokens - finest * finest:] = True
    per_scale = [torch.zeros(t, rows * g, cols * g, dtype=torch.bool) for g in grids]
    cells = 0
    for r in range(rows):
        for c in range(cols):
            clip = padded[:, r * tile:(r + 1) * tile, c * tile:(c + 1) * tile]
            out = gaze(clip, gaze_model, gazing_ratio, task_loss_requirement, target_scales=scales,
                       target_patch_size=unit_px, candidates=candidates, **gaze_kwargs)
            cells += int(out["ids"].numel())
            for grid, g, mask in zip(per_scale, grids, out["gazing_mask"]):
                grid[:, r * g:(r + 1) * g, c * g:(c + 1) * g] = mask[0].view(t, g, g) > 0
    used = per_scale if policy == "expand" else per_scale[-1:]
    units = units_from_scale_masks(used, (rows * finest, cols * finest))
    return units[:, : height // unit_px, : width // unit_px].contiguous(), cells


# ---- the kept sequence --------------------------------------------------------------------------

def _shorten(values: torch.Tensor, select: torch.Tensor, length: int, left: bool, fill):
    """values (...,B,L): per row b the entries where select[b] (B,L) holds, padded to
    ``length`` on the left or the right."""
    out = values.new_full((*values.shape[:-1], length), fill)
    for b in range(select.shape[0]):
        kept = values[..., b, :][..., select[b]]
        n = kept.shape[-1]
        if left:
            out[..., b, length - n:] = kept
        else:
            out[..., b, :n] = kept
    return out


def _sequence(inner, inputs: dict, keep_flat: torch.Tensor, video_token: int, pad_token: int):
    input_ids = inputs["input_ids"]
    attention = inputs.get("attention_mask")
    attention = torch.ones_like(input_ids) if attention is None else attention
    is_video = input_ids == video_token
    if int(is_video.sum()) != keep_flat.shape[0]:
        raise ValueError(f"input_ids hold {int(is_video.sum())} video placeholders, "
                         f"video_grid_thw implies {keep_flat.shape[0]} tokens")
    types = inputs.get("mm_token_type_ids")
    if types is None:
        types = is_video.int() * 2
    positions, deltas = inner.get_rope_index(
        input_ids, mm_token_type_ids=types, video_grid_thw=inputs["video_grid_thw"],
        second_per_grid_ts=inputs.get("second_per_grid_ts"), attention_mask=attention)
    select = torch.ones_like(is_video)
    select[is_video] = keep_flat
    left = bool((attention[:, 0] == 0).any()) and bool((attention[:, -1] == 1).all())
    length = int(select.sum(1).max())
    ids = _shorten(input_ids, select, length, left, pad_token)
    mask = _shorten(attention, select, length, left, 0)
    rope = _shorten(positions, select, length, left, 1)
    text = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)
    dropped = (attention.sum(1) - mask.sum(1)).view(-1, 1).to(deltas.dtype)
    return ids, mask, torch.cat((text[None].to(rope.dtype), rope)), deltas + dropped


@torch.no_grad()
def prepare_gazed_inputs(model, inputs, gaze_model=None, gazing_ratio=None,
                         task_loss_requirement=None, policy: str = "expand", keep=None,
                         processor=None, image_mean=None, image_std=None,
                         **gaze_kwargs) -> GazedVideoInputs:
    """Gaze the videos of a processed Qwen2.5-VL prompt and build the inputs of the kept tokens.

    model: ``Qwen2_5_VLForConditionalGeneration``. inputs: the processor's output (a dict or
    ``BatchFeature``) with ``input_ids`` (B,L), ``pixel_values_videos``, ``video_grid_thw`` (V,3)
    and optionally ``attention_mask``, ``second_per_grid_ts``, ``mm_token_type_ids``.
    gaze_model: an :class:`~autogaze_ext.AutoGaze`, a checkpoint, or None for the bundled
    default; gazing_ratio/task_loss_requirement as in :func:`autogaze_ext.gaze` (per frame and
    392-px tile; None: the gaze model's defaults). policy: ``expand``/``drop``/``finest``.
    keep: instead of gazing, per video a (t, h/2, w/2) bool grid of the merge units to keep.
    processor (or image_mean/image_std): the normalisation to undo to recover the frames for
    gazing (default: the CLIP constants of the Qwen processors).
    """
    inner, vision = _parts(model)
    if not isinstance(inputs, dict) and not hasattr(inputs, "keys"):
        raise TypeError("inputs must be the processor's output (a dict / BatchFeature)")
    inputs = dict(inputs)
    for key in ("input_ids", "pixel_values_videos", "video_grid_thw"):
        if inputs.get(key) is None:
            raise ValueError(f"inputs lacks {key!r} (a prompt with a video, processed)")
    if inputs.get("pixel_values") is not None:
        raise NotImplementedError("images in the same prompt are not supported yet; pass videos only")
    merge = vision.spatial_merge_size
    unit = merge * merge
    rows_all, grid = inputs["pixel_values_videos"], inputs["video_grid_thw"]
    grids = _check_grid(grid, rows_all, vision)
    shapes = [(t, h // merge, w // merge) for t, h, w in grids]
    timings = {}

    cells = None
    if keep is not None:
        if gaze_model is not None:
            raise ValueError("give either keep or gaze_model, not both")
        keep = _check_keep(keep, shapes)
        policy = None
    else:
        _check_policy(policy)
        if processor is not None and image_mean is None:
            vp = getattr(processor, "video_processor", None)
            image_mean, image_std = getattr(vp, "image_mean", None), getattr(vp, "image_std", None)
        mean, std = image_mean or CLIP_MEAN, image_std or CLIP_STD
        start = time.perf_counter()
        keep, cells, offset = [], 0, 0
        for (t, h, w) in grids:
            frames = video_frames(rows_all[offset:offset + t * h * w], (t, h, w), vision, mean, std)
            offset += t * h * w
            units, n = gaze_units(frames, gaze_model, policy, gazing_ratio, task_loss_requirement,
                                  unit_px=vision.patch_size * merge, **gaze_kwargs)
            keep.append(pair_union(units, vision.temporal_patch_size))
            cells += n
        timings["gaze_s"] = time.perf_counter() - start

    device = rows_all.device
    keep_flat = torch.cat([k.flatten() for k in keep]).to(device)
    grid_dev = grid.to(device)
    window_index, cu_windows = get_vision_window_index(grid_dev, merge, vision.window_size,
                                                       vision.patch_size)
    meta = restrict_vision_metadata(
        keep_flat, get_vision_position_ids(grid_dev, merge), get_vision_cu_seqlens(grid_dev),
        window_index.to(device), cu_windows.to(device), unit)
    kept_rows = rows_all[meta.pop("rows")]
    splits = [int(k.sum()) for k in keep]

    start = time.perf_counter()
    visual = inner.visual
    if kept_rows.shape[0]:
        embeds = visual(kept_rows.to(visual.dtype), grid_thw=grid_dev, **dict(meta)).pooler_output
    else:
        embeds = torch.zeros(0, vision.out_hidden_size, dtype=visual.dtype, device=device)
    timings["vit_s"] = time.perf_counter() - start

    pad = model.config.text_config.pad_token_id
    ids, mask, positions, deltas = _sequence(inner, inputs, keep_flat, model.config.video_token_id,
                                             0 if pad is None else pad)
    return GazedVideoInputs(
        input_ids=ids, attention_mask=mask, position_ids=positions, rope_deltas=deltas,
        video_embeds=embeds, video_splits=splits, pixel_values_videos=kept_rows,
        video_grid_thw=grid, vision_kwargs=meta, keep=keep, policy=policy,
        num_video_tokens=int(keep_flat.sum()), num_dense_video_tokens=int(keep_flat.numel()),
        gazed_cells=cells, timings=timings)


# ---- one call -----------------------------------------------------------------------------------

def _check_frames(frames, temporal: int) -> None:
    shape = tuple(getattr(frames, "shape", ()))
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"frames must be (T,H,W,3), got shape {shape}")
    if shape[0] % temporal:
        raise ValueError(f"frames has {shape[0]} frames, not a multiple of Qwen's temporal patch "
                         f"{temporal}: pass an even count (the processor would repeat the last)")
    if min(shape[1:3]) < 1 or max(shape[1:3]) / min(shape[1:3]) > 200:
        raise ValueError(f"frame size {shape[1]}x{shape[2]} is one Qwen rejects (empty, or an "
                         f"aspect ratio above 200)")


def _prompt_text(processor, prompt: str) -> str:
    if getattr(processor, "chat_template", None):
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]}]
        return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return f"<|vision_start|>{processor.video_token}<|vision_end|>{prompt}"


def generate(model, processor, frames, prompt: str, gaze_model=None, gazing_ratio=None,
             task_loss_requirement=None, policy: str = "expand", processor_kwargs=None,
             **generate_kwargs) -> GazedGeneration:
    """Gaze ``frames`` (uint8 (T,H,W,3), T even) and answer ``prompt`` about them with the kept
    tokens only: processor → :func:`prepare_gazed_inputs` → ``model.generate``. The prompt goes
    through the processor's chat template when it has one. ``generate_kwargs`` go to
    ``model.generate`` (e.g. ``max_new_tokens``)."""
    _, vision = _parts(model)
    _check_frames(frames, vision.temporal_patch_size)
    _check_policy(policy)
    batch = processor(text=[_prompt_text(processor, prompt)], videos=[frames], return_tensors="pt",
                      **(processor_kwargs or {}))
    gazed = prepare_gazed_inputs(model, batch, gaze_model, gazing_ratio, task_loss_requirement,
                                 policy, processor=processor)
    model.model.rope_deltas = gazed.rope_deltas  # later forwards without position_ids continue right
    sequences = model.generate(**gazed.model_inputs(), **generate_kwargs)
    new = sequences[:, gazed.input_ids.shape[1]:]
    decode = getattr(processor, "batch_decode", None) or processor.tokenizer.batch_decode
    return GazedGeneration(decode(new, skip_special_tokens=True), new, gazed)
