"""Shared helpers for the model tests: small random AutoGaze models, random clips, and a checker
of the invariants every generation result must satisfy."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch

from autogaze_ext import AutoGaze, AutoGazeConfig

DATA = Path(__file__).parent / "data" / "reference"
FIXTURE_MODEL = DATA / "autogaze_model"

# A small member of the family: 64×64 input, 16 px kernel → 16 vision tokens; scales 32+64 give
# tokens_per_scale [4, 16], N = 20 candidates (+ EOS = 20); K = 4 heads; 2 decoder layers.
SMALL = dict(scales="32+64", input_img_size=64, hidden_size=64, intermediate_size=128,
             num_layers=2, num_heads=4, num_multi_token_pred=4, vision_hidden_dim=32)


def small_config(num_key_value_heads=None, trunk_temporal_kernel_size=None,
                 trunk_spatial_kernel_size=None, **overrides) -> AutoGazeConfig:
    """``AutoGazeConfig.build`` of SMALL with ``overrides``; the few fields ``build`` does not take
    (GQA, trunk kernels) are set in the raw config, which is then re-validated."""
    config = AutoGazeConfig.build(**{**SMALL, **overrides})
    raw = config.to_dict()
    gm = raw["gaze_model_config"]
    if num_key_value_heads is not None:
        gm["gaze_decoder_config"]["num_key_value_heads"] = num_key_value_heads
    if trunk_temporal_kernel_size is not None:
        gm["vision_model_config"]["trunk_temporal_kernel_size"] = trunk_temporal_kernel_size
    if trunk_spatial_kernel_size is not None:
        gm["vision_model_config"]["trunk_spatial_kernel_size"] = trunk_spatial_kernel_size
    return AutoGazeConfig(raw)


def randomize(model: AutoGaze, seed: int, lm_head_scale: float = 4.0) -> AutoGaze:
    """Seeded random weights with enough spread that greedy decisions have margins and the
    task-loss predictions straddle 0 (so requirements around 0 stop some frames early).

    The default init leaves pos_embed at zero and makes logits near-uniform; here every matrix is
    N(0, 1/fan_in), norms are perturbed around 1, pos_embed is N(0, 1) and lm_head is scaled."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
            elif name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
        model.gazing_model.connector.pos_embed.copy_(
            torch.randn(model.gazing_model.connector.pos_embed.shape, generator=gen))
        model.gazing_model.gaze_decoder.lm_head.weight.mul_(lm_head_scale)
    return model.eval()


def random_model(config: AutoGazeConfig, seed: int = 0, lm_head_scale: float = 4.0) -> AutoGaze:
    return randomize(AutoGaze(config), seed, lm_head_scale)


def random_video(batch: int, frames: int, size, seed: int = 0) -> torch.Tensor:
    """(B,T,3,H,W) float32 clips; every clip has its own scale and offset so clips differ."""
    h, w = (size, size) if isinstance(size, int) else size
    gen = torch.Generator().manual_seed(seed)
    video = torch.randn(batch, frames, 3, h, w, generator=gen)
    scale = 0.5 + 1.5 * torch.rand(batch, 1, 1, 1, 1, generator=gen)
    shift = 0.5 * torch.randn(batch, 1, 3, 1, 1, generator=gen)
    return video * scale + shift


def clone(model: AutoGaze) -> AutoGaze:
    return copy.deepcopy(model)


def budget_of(ratio: float, n: int) -> int:
    """``max(1, trunc(float32(ratio)·N))`` (spec §0.10)."""
    return max(1, int(torch.tensor(ratio, dtype=torch.float32).mul(n).item()))


def frame_ids(out, b: int, t: int, frames: int) -> list[int]:
    """Real (local) ids of clip b, frame t from the padding-free ``ids``/``frame_offsets``."""
    i = b * frames + t
    lo, hi = int(out["frame_offsets"][i]), int(out["frame_offsets"][i + 1])
    return out["ids"][lo:hi].tolist()


def clip_frames(out, b: int, frames: int) -> list[list[int]]:
    return [frame_ids(out, b, t, frames) for t in range(frames)]


def padded_frames(out, b: int, n: int):
    """Per frame of row b of the padded form: (list of local ids or None for a pad slot)."""
    result, start = [], 0
    for t, count in enumerate(out["num_gazing_each_frame"].tolist()):
        pos = out["gazing_pos"][b, start:start + count].tolist()
        pad = out["if_padded_gazing"][b, start:start + count].tolist()
        result.append([None if p else g - n * t for g, p in zip(pos, pad)])
        start += count
    return result


def check_output(out, batch: int, frames: int, n: int, budgets, per_scale,
                 with_requirement: bool) -> None:
    """Assert every invariant of a generation result (spec §5, §6.4, §6.5).

    budgets: the per-frame budgets M_t. Without a requirement every frame has exactly M_t real ids
    and no pads; with one, at most M_t slots and a real first slot (first-step exception)."""
    ids, offsets = out["ids"], out["frame_offsets"]
    pos, pad, counts = out["gazing_pos"], out["if_padded_gazing"], out["num_gazing_each_frame"]
    assert ids.dtype == torch.long and ids.dim() == 1
    assert offsets.shape == (batch * frames + 1,) and int(offsets[0]) == 0
    assert int(offsets[-1]) == ids.numel()
    assert bool((offsets[1:] >= offsets[:-1]).all())
    assert counts.shape == (frames,)
    assert pos.shape == pad.shape == (batch, int(counts.sum()))
    assert pad.dtype == torch.bool
    masks = out["gazing_mask"]
    assert [m.shape for m in masks] == [torch.Size((batch, frames, s)) for s in per_scale]
    mask = torch.cat(masks, dim=-1)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    for t in range(frames):
        assert 1 <= int(counts[t]) <= budgets[t]
    for b in range(batch):
        padded = padded_frames(out, b, n)
        start = 0
        for t in range(frames):
            real = frame_ids(out, b, t, frames)
            assert real, f"clip {b} frame {t} has no real id"
            assert len(set(real)) == len(real), f"repeated id in clip {b} frame {t}: {real}"
            assert all(0 <= i < n for i in real), real
            assert len(real) <= budgets[t]
            # the padded form holds the same ids in the same order, pads after or between them
            assert [i for i in padded[t] if i is not None] == real
            # pad slots carry the official value N + N·t (spec §0.6)
            count = int(counts[t])
            frame_pos = pos[b, start:start + count]
            frame_pad = pad[b, start:start + count]
            assert bool((frame_pos[frame_pad] == n + n * t).all())
            start += count
            # coverage mask: exactly the real ids
            expected = torch.zeros(n)
            expected[real] = 1
            assert torch.equal(mask[b, t], expected)
            if with_requirement:
                assert padded[t][0] is not None, "a frame's first slot must be real"
            else:
                assert len(real) == budgets[t] == count and not bool(frame_pad.any())
