"""MAEReconstruction: the learned reconstruction task of AutoGaze (spec §10).

A multi-scale masked autoencoder rebuilds frames of a clip from the gazed patches only:

* **encoder** (pre-LN ViT) over the gazed tokens; token = patch projection of the frame resized
  (bicubic) to the token's scale + fixed sin-cos position (2-D bicubic-resampled to the scale's
  grid) + learned scale and time embeddings. Attention is block-causal: a token sees every token
  of its own and earlier frames of its clip.
* **CLS**: the official model prepends one CLS token that attends only to itself while every
  token attends to it. Here each clip's CLS is packed as an extra frame *before* frame 0, so plain
  ``block_causal`` attention gives exactly that visibility (no dense mask). The official mask's
  forced diagonal (quirk §13.13) only matters for padded slots, which the packed layout has none of.
* **decoder**: encoded tokens → decoder width, scattered into every reconstructed frame's full
  multi-scale grid (learned mask token elsewhere); non-reconstructed frames contribute their gazed
  tokens only; + decoder position (1-D resampling quirk, §10.2 step 5), scale and time embeddings;
  block-causal with the CLS as above; finest-scale tokens of the reconstructed frames → 16·16·3
  pixels each, unpatchified with vector index ``(p·16 + q)·3 + c``.
* **loss** per reconstructed frame: mean |pred − target| over C, H, W in the task space, plus an
  optional ``perceptual(pred, target) -> (n,)`` term (the official DINOv2/SigLIP2 terms need
  downloaded weights; pass such a callable to use them).

Because attention is block-causal, frames after the last reconstructed frame cannot change any
output; they are skipped (encoder and decoder run over frames ``0..max(frames)`` only).

Input video is in the **gaze model's** normalised space (``AutoGaze.preprocess``; the release
processor: ``(x/127.5 − 1 − mean)/std`` with ImageNet stats) and is mapped to the task space
(``MAEConfig`` fields) by a per-channel affine map; reconstructions and losses are in task space.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn

from ..checkpoint import load_matching, load_safetensors, save_safetensors
from ..varlen import Packed, pack
from .mae_model import MAEConfig, MAEDecoder, MAEViT, init_weights

__all__ = ["MAEConfig", "MAEOutput", "MAEReconstruction", "random_gaze"]

_IGNORED_PREFIXES = ("dinov2_reg.", "siglip2.")


class MAEOutput(NamedTuple):
    """losses (B, R) per reconstructed frame (differentiable w.r.t. the MAE); rewards (B, R) =
    −losses (detached); frames (R,) long indices of the reconstructed frames; slot_targets (L,) and
    slot_mask (L,) bool: a reconstructed frame's (detached) loss at that frame's last gaze slot
    (§9.4 step 6), mask False elsewhere; recon (B, R, 3, S, S) in the task space."""
    losses: torch.Tensor
    rewards: torch.Tensor
    frames: torch.Tensor
    slot_targets: torch.Tensor
    slot_mask: torch.Tensor
    recon: torch.Tensor


def _space(rescale: float, offset: bool, mean, std):
    """(scale, shift) per channel with normalised = x·scale + shift for uint8 values x."""
    mean = torch.tensor(mean, dtype=torch.float64, device="cpu")
    std = torch.tensor(std, dtype=torch.float64, device="cpu")
    return rescale / std, (-float(offset) - mean) / std


def random_gaze(batch: int, frames: int, per_scale: Sequence[int], ratio=(0.05, 0.5),
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random multi-scale gaze: per frame ``k = clamp(round(r·N), 1, N)`` distinct ids drawn
    uniformly from all N = Σ per_scale cells, r = ``ratio`` (a float) or uniform in ``ratio =
    (low, high)`` per frame. Returns ids (L,) in random order and frame_offsets (B·T+1,) on the
    generator's device (CPU without one)."""
    per_scale = [int(n) for n in per_scale]
    if not per_scale or any(n <= 0 for n in per_scale):
        raise ValueError(f"random_gaze: per_scale must list positive cell counts, got {per_scale}")
    if batch < 0 or frames < 0:
        raise ValueError(f"random_gaze: batch and frames must be non-negative, got {batch}, {frames}")
    if isinstance(ratio, (int, float)):
        low = high = float(ratio)
    else:
        try:
            low, high = (float(r) for r in ratio)
        except (TypeError, ValueError):
            raise ValueError(f"random_gaze: ratio must be a float or a (low, high) pair, got {ratio!r}") from None
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"random_gaze: ratio must satisfy 0 <= low <= high <= 1, got {ratio!r}")
    device = generator.device if generator is not None else torch.device("cpu")
    count, n = batch * frames, sum(per_scale)
    r = low + (high - low) * torch.rand(count, generator=generator, device=device, dtype=torch.float64)
    k = (r * n).round().long().clamp(1, n)
    order = torch.rand(count, n, generator=generator, device=device).argsort(1)
    ids = order[torch.arange(n, device=device)[None] < k[:, None]]
    offsets = torch.zeros(count + 1, dtype=torch.long, device=device)
    offsets[1:] = k.cumsum(0)
    return ids, offsets


class MAEReconstruction(nn.Module):
    """The MAE reconstruction task (see module docstring).

    Args:
        config: :class:`MAEConfig` (default ``MAEConfig.small()``).
        perceptual: optional ``f(pred (n,3,S,S), target (n,3,S,S)) -> (n,)`` in task space, added
            to every frame loss with weight ``perceptual_weight`` (the official DINOv2-reg and
            SigLIP2 terms, weights 0.3 each, are such callables; they are not bundled).
    """

    def __init__(self, config: MAEConfig | None = None,
                 perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 perceptual_weight: float = 1.0):
        super().__init__()
        self.config = cfg = config if config is not None else MAEConfig.small()
        if not isinstance(cfg, MAEConfig):
            raise TypeError(f"MAEReconstruction: config must be an MAEConfig, got {type(cfg).__name__}")
        self.vit = MAEViT(cfg)
        self.decoder = MAEDecoder(cfg)
        self.perceptual = perceptual
        self.perceptual_weight = float(perceptual_weight)
        init_weights(self, cfg.initializer_range)
        in_scale, in_shift = _space(cfg.input_rescale_factor, cfg.input_offset, cfg.input_mean, cfg.input_std)
        scale, shift = _space(cfg.rescale_factor, cfg.offset, cfg.image_mean, cfg.image_std)
        # task = input·a + b (exactly the identity when both spaces agree)
        a, b = scale / in_scale, shift - scale / in_scale * in_shift
        self._identity_space = bool((a == 1).all() and (b == 0).all())
        self.register_buffer("_to_task", torch.stack([a, b]).float()[:, :, None, None], persistent=False)

    # ---- checkpoints ----------------------------------------------------------------------------
    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write ``config.json`` and ``model.safetensors`` (keys = official names without ``mae.``)."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "config.json", "w", encoding="utf-8") as f:
            json.dump({"model_type": "autogaze_mae", **self.config.to_dict()}, f, indent=2)
            f.write("\n")
        save_safetensors(self.state_dict(), folder / "model.safetensors")

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs) -> "MAEReconstruction":
        folder = Path(path)
        for name in ("config.json", "model.safetensors"):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"MAEReconstruction.from_pretrained: {folder / name} not found")
        with open(folder / "config.json", encoding="utf-8") as f:
            config = MAEConfig.from_dict(json.load(f))
        model = cls(config, **kwargs)
        load_matching(model, load_safetensors(folder / "model.safetensors"), "the MAE config")
        return model

    def load_official_state_dict(self, state_or_path) -> list[str]:
        """Load the official task weights (``videomae.pt`` layout: ``mae.vit.*``, ``mae.decoder.*``).

        ``state_or_path``: a state dict or a ``.pt``/``.safetensors`` path. Keys of the perceptual
        helpers (``mae.dinov2_reg.*``, ``mae.siglip2.*``) are skipped and returned (sorted); any
        other missing, unexpected or mis-shaped key raises ValueError. A dict wrapped as
        ``{"state_dict": …}`` is unwrapped."""
        if isinstance(state_or_path, (str, os.PathLike)):
            path = Path(state_or_path)
            if path.suffix == ".safetensors":
                state = load_safetensors(path)
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            state = state_or_path
        if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
            state = state["state_dict"]
        if not isinstance(state, Mapping):
            raise TypeError(f"load_official_state_dict: expected a state dict, got {type(state).__name__}")
        ours, ignored, foreign = {}, [], []
        for key, value in state.items():
            if not key.startswith("mae."):
                foreign.append(key)
                continue
            name = key[len("mae."):]
            if name.startswith(_IGNORED_PREFIXES):
                ignored.append(key)
            else:
                ours[name] = value
        if foreign:
            raise ValueError(f"load_official_state_dict: keys outside 'mae.*': {sorted(foreign)[:8]}")
        load_matching(self, ours, "the MAE config (official keys without 'mae.')")
        return sorted(ignored)

    # ---- validation and spaces -----------------------------------------------------------------
    def _check_video(self, video, where: str) -> torch.Tensor:
        cfg = self.config
        if not isinstance(video, torch.Tensor):
            raise TypeError(f"{where}: video must be a tensor, got {type(video).__name__}")
        S = cfg.frame_size
        if video.dim() != 5 or video.shape[2] != 3 or tuple(video.shape[-2:]) != (S, S):
            raise ValueError(f"{where}: video must be (B, T, 3, {S}, {S}), got {tuple(video.shape)}")
        if not video.is_floating_point():
            raise TypeError(f"{where}: video must be a float tensor (preprocessed), got {video.dtype}")
        if video.shape[1] < 1 or video.shape[1] > cfg.max_frames:
            raise ValueError(f"{where}: T = {video.shape[1]} must lie in [1, max_frames = {cfg.max_frames}]")
        return video

    def _check_gaze(self, ids, frame_offsets, B: int, T: int, device, where: str):
        for name, t in (("ids", ids), ("frame_offsets", frame_offsets)):
            if not isinstance(t, torch.Tensor) or t.dim() != 1 or t.is_floating_point() or t.dtype == torch.bool:
                raise ValueError(f"{where}: {name} must be a 1-D integer tensor, got "
                                 f"{getattr(t, 'shape', type(t))} {getattr(t, 'dtype', '')}")
        if frame_offsets.shape[0] != B * T + 1:
            raise ValueError(f"{where}: frame_offsets must have B*T+1 = {B * T + 1} entries, got "
                             f"{frame_offsets.shape[0]}")
        ids, frame_offsets = ids.to(device).long(), frame_offsets.to(device).long()
        N = self.config.num_tokens
        if int(frame_offsets[0]) != 0 or int(frame_offsets[-1]) != ids.shape[0]:
            raise ValueError(f"{where}: frame_offsets must run from 0 to len(ids) = {ids.shape[0]}, got "
                             f"{int(frame_offsets[0])} .. {int(frame_offsets[-1])}")
        if bool((frame_offsets.diff() < 0).any()):
            raise ValueError(f"{where}: frame_offsets must be non-decreasing")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= N):
            raise ValueError(f"{where}: ids must lie in [0, {N}), got [{int(ids.min())}, {int(ids.max())}]")
        return ids, frame_offsets

    def _select_frames(self, frames, T: int, generator, device) -> torch.Tensor:
        if frames is None:
            count = min(T, max(1, int(T * self.config.sample_rate)))
            gen_device = generator.device if generator is not None else torch.device("cpu")
            return torch.randperm(T, generator=generator, device=gen_device)[:count].to(device)
        if isinstance(frames, str):
            if frames != "all":
                raise ValueError(f"frames must be None, 'all' or frame indices, got {frames!r}")
            return torch.arange(T, device=device)
        frames = torch.as_tensor(frames)
        if frames.dim() != 1 or frames.is_floating_point() or frames.dtype == torch.bool:
            raise ValueError(f"frames must be a 1-D integer tensor of frame indices, got "
                             f"{tuple(frames.shape)} {frames.dtype}")
        frames = frames.to(device).long()
        if frames.numel() and (int(frames.min()) < 0 or int(frames.max()) >= T):
            raise ValueError(f"frames must lie in [0, T = {T}), got {frames.tolist()}")
        if frames.unique().numel() != frames.numel():
            raise ValueError(f"frames must not repeat, got {frames.tolist()}")
        return frames

    def to_task_space(self, video: torch.Tensor) -> torch.Tensor:
        """Input (gaze-model) space → task space, per channel affine: (..., 3, H, W)."""
        if self._identity_space:
            return video
        a, b = self._to_task.to(video.dtype)
        return video * a + b

    # ---- the network ----------------------------------------------------------------------------
    def _with_cls(self, tokens: torch.Tensor, cls: torch.Tensor, counts: torch.Tensor, inner: Packed):
        """Prepend each clip's CLS as an extra frame 0: tokens (L, D), cls (B, D) or (D,), counts
        (B, T) → (x (B+L, D), packed over T+1 frames, token positions (L,), CLS positions (B,))."""
        B, T = counts.shape
        seq = torch.cat([torch.ones_like(counts[:, :1]), counts], 1).flatten()
        offsets = torch.cat([seq.new_zeros(1), seq.cumsum(0)])
        total = tokens.shape[0] + B
        packed = pack(torch.zeros(total, dtype=torch.long, device=tokens.device), offsets, B, T + 1, [1])
        cls_pos = offsets[:-1].view(B, T + 1)[:, 0]
        tok_pos = torch.arange(tokens.shape[0], device=tokens.device) + inner.clip + 1
        x = tokens.new_empty(total, tokens.shape[1])
        x = x.index_copy(0, cls_pos, cls.expand(B, -1).to(x.dtype)).index_copy(0, tok_pos, tokens)
        return x, packed, tok_pos, cls_pos

    def encode(self, task_video: torch.Tensor, packed: Packed) -> tuple[torch.Tensor, torch.Tensor]:
        """task_video (B, T, 3, S, S) in task space, packed gazed tokens of those frames →
        encoded tokens (L, D) and CLS outputs (B, D), both after the final LayerNorm."""
        B, T = packed.batch, packed.frames
        tokens = self.vit.embeddings(task_video, packed)
        counts = packed.frame_offsets.diff().view(B, T)
        x, packed_cls, tok_pos, cls_pos = self._with_cls(tokens, self.vit.embeddings.cls(), counts, packed)
        x = self.vit(x, packed_cls)
        return x[tok_pos], x[cls_pos]

    def _decode(self, enc: torch.Tensor, enc_cls: torch.Tensor, packed: Packed,
                recon_frames: torch.Tensor) -> torch.Tensor:
        """Decoder over (gazed tokens of other frames, full grids of recon_frames (R,) sorted)
        → (B, R, 3, S, S) predicted frames."""
        cfg, dec = self.config, self.decoder
        B, T, N, R = packed.batch, packed.frames, cfg.num_tokens, recon_frames.numel()
        device = enc.device
        e = dec.decoder_embed(enc)                                              # (L, Dd)
        cls = dec.decoder_embed(enc_cls) + dec.decoder_pos_embed[0, 0].to(e.dtype)
        table = dec.token_table()                                               # (N, Dd)
        rank = torch.full((T,), -1, dtype=torch.long, device=device)
        rank[recon_frames] = torch.arange(R, device=device)
        tok_rank = rank[packed.frame]
        in_grid = tok_rank >= 0
        counts = packed.frame_offsets.diff().view(B, T)
        dec_counts = torch.where(rank[None] >= 0, torch.full_like(counts, N), counts)
        # Grids of the reconstructed frames: mask token, encoded tokens at their gazed cells.
        grid = dec.mask_token.to(e.dtype).expand(B, R, N, -1)
        grid = grid.index_put((packed.clip[in_grid], tok_rank[in_grid], packed.ids[in_grid]), e[in_grid].to(grid.dtype))
        grid = grid + table + dec.time_embed[recon_frames][None, :, None]
        # Gazed tokens of the other frames, then everything packed with the CLS as frame 0.
        rest = ~in_grid
        sparse = e[rest] + table[packed.ids[rest]] + dec.time_embed[packed.frame[rest]]
        seq = torch.cat([torch.ones_like(dec_counts[:, :1]), dec_counts], 1)
        offsets = torch.cat([seq.new_zeros(1), seq.flatten().cumsum(0)])
        starts = offsets[:-1].view(B, T + 1)
        flat_frame = packed.clip * T + packed.frame
        rank_in_frame = torch.arange(packed.num_tokens, device=device) - packed.frame_offsets[flat_frame]
        sparse_pos = (starts[:, 1:][packed.clip, packed.frame] + rank_in_frame)[rest]
        grid_pos = starts[:, 1:][:, recon_frames][..., None] + torch.arange(N, device=device)   # (B, R, N)
        total = int(offsets[-1])
        x = e.new_empty(total, e.shape[1])
        x = x.index_copy(0, starts[:, 0], cls.expand(B, -1).to(x.dtype))
        x = x.index_copy(0, grid_pos.flatten(), grid.reshape(-1, e.shape[1]).to(x.dtype))
        x = x.index_copy(0, sparse_pos, sparse.to(x.dtype))
        dec_packed = pack(torch.zeros(total, dtype=torch.long, device=device), offsets, B, T + 1, [1])
        x = dec(x, dec_packed)
        # Finest-scale tokens of the reconstructed frames → pixels.
        finest = cfg.per_scale[-1]
        out = x[grid_pos[..., N - finest:].flatten()]
        pixels = dec.decoder_pred(dec.decoder_norm(out))                        # (B·R·g², p·p·3)
        g, p = cfg.grids[-1], cfg.patch_size
        pixels = pixels.view(B, R, g, g, p, p, 3).permute(0, 1, 6, 2, 4, 3, 5)
        return pixels.reshape(B, R, 3, g * p, g * p)

    def _reconstruct(self, task_video, ids, frame_offsets, frames) -> torch.Tensor:
        """(B, R, 3, S, S) predictions for ``frames`` (any order) in task space."""
        cfg = self.config
        B, T = task_video.shape[:2]
        R = frames.numel()
        S = cfg.frame_size
        if R == 0:
            return task_video.new_zeros(B, 0, 3, S, S)
        used = int(frames.max()) + 1                      # later frames cannot affect any output
        packed = pack(ids, frame_offsets, B, T, cfg.per_scale)
        if used < T:
            counts = frame_offsets.diff().view(B, T)[:, :used]
            ids = ids[packed.frame < used]
            frame_offsets = torch.cat([counts.new_zeros(1), counts.flatten().cumsum(0)])
            packed = pack(ids, frame_offsets, B, used, cfg.per_scale)
        enc, enc_cls = self.encode(task_video[:, :used], packed)
        ordered, order = frames.sort()
        pred = self._decode(enc, enc_cls, packed, ordered)
        return pred[:, order.argsort()]

    # ---- public API ------------------------------------------------------------------------------
    def forward(self, video: torch.Tensor, ids: torch.Tensor, frame_offsets: torch.Tensor,
                frames=None, generator: torch.Generator | None = None) -> MAEOutput:
        """video (B, T, 3, S, S) in the gaze model's space; gaze ids (L,) frame-local,
        frame_offsets (B·T+1,); ids within a frame are expected to be distinct (as the gaze model
        produces). ``frames``: None → ``max(1, int(T·sample_rate))`` distinct random frames
        (``randperm`` with ``generator``, shared by the batch, in random order), ``"all"``, or
        indices (any order; outputs follow it). Runs in the video's dtype, or under autocast."""
        video = self._check_video(video, "MAEReconstruction.forward")
        B, T = video.shape[:2]
        ids, frame_offsets = self._check_gaze(ids, frame_offsets, B, T, video.device, "MAEReconstruction.forward")
        frames = self._select_frames(frames, T, generator, video.device)
        task_video = self.to_task_space(video)
        recon = self._reconstruct(task_video, ids, frame_offsets, frames)
        target = task_video[:, frames]
        losses = (recon.float() - target.float()).abs().mean((2, 3, 4))
        if self.perceptual is not None and frames.numel():
            extra = self.perceptual(recon.flatten(0, 1), target.flatten(0, 1))
            losses = losses + self.perceptual_weight * extra.float().view(B, -1)
        # Task-loss-head targets: each reconstructed frame's loss at its last gaze slot.
        flat = (torch.arange(B, device=video.device)[:, None] * T + frames[None]).flatten()
        ends = frame_offsets[flat + 1]
        has = ends > frame_offsets[flat]
        slot_targets = losses.new_zeros(ids.shape[0])
        slot_mask = torch.zeros(ids.shape[0], dtype=torch.bool, device=video.device)
        slot_targets[ends[has] - 1] = losses.detach().flatten()[has]
        slot_mask[ends[has] - 1] = True
        return MAEOutput(losses, -losses.detach(), frames, slot_targets, slot_mask, recon)

    @torch.no_grad()
    def frame_losses(self, video: torch.Tensor, ids: torch.Tensor, frame_offsets: torch.Tensor) -> torch.Tensor:
        """(B, T) loss of every frame, without gradients. All frames are reconstructed in one
        pass, so every frame's decoder also sees the full (mask-token) grids of the earlier frames;
        a loss of :meth:`forward` with a sparse ``frames`` selection differs from it for that reason
        (the official decoder input depends on which frames are reconstructed)."""
        return self(video, ids, frame_offsets, frames="all").losses

    def pretrain_loss(self, video: torch.Tensor, generator: torch.Generator | None = None,
                      ratio=(0.05, 0.5), frames=None) -> torch.Tensor:
        """Scalar MAE loss under :func:`random_gaze` (``ratio`` per frame), for pre-training."""
        video = self._check_video(video, "MAEReconstruction.pretrain_loss")
        B, T = video.shape[:2]
        ids, offsets = random_gaze(B, T, self.config.per_scale, ratio, generator)
        return self(video, ids, offsets, frames=frames, generator=generator).losses.mean()
