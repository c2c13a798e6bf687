"""The shallow video conv net and the connector: frames → vision tokens (spec §4.2-4.3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import VisionConfig


class TrunkBlock(nn.Module):
    """Causal temporal conv + ReLU; no residual, no norm. Caches its last input slices."""

    def __init__(self, dim: int, temporal_kernel: int, spatial_kernel: int):
        super().__init__()
        self.temporal_kernel = temporal_kernel
        self.conv3d = nn.Conv3d(dim, dim, (temporal_kernel, spatial_kernel, spatial_kernel),
                                padding=(0, spatial_kernel // 2, spatial_kernel // 2))

    def forward(self, x: torch.Tensor, cache: torch.Tensor | None):
        """x (B,C,T,h,w); cache (B,C,kt-1,h,w) or None (zero history) → (y, new cache)."""
        history = self.temporal_kernel - 1
        if cache is None:
            cache = x.new_zeros(x.shape[:2] + (history,) + x.shape[3:])
        x = torch.cat((cache, x), dim=2)
        new_cache = x[:, :, x.shape[2] - history :]
        return F.relu(self.conv3d(x)), new_cache


class ShallowVideoConvNet(nn.Module):
    """Patch conv (kernel = stride) → channel LayerNorm → causal trunk blocks → 1×1×1 projection."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        k, tp = cfg.kernel_size, cfg.temporal_patch_size
        self.temporal_conv = nn.Conv3d(3, cfg.hidden_dim, (tp, k, k), stride=(tp, k, k))
        self.norm = nn.LayerNorm(cfg.hidden_dim, eps=1e-5)
        self.blocks = nn.ModuleList(
            TrunkBlock(cfg.hidden_dim, cfg.trunk_temporal_kernel_size, cfg.trunk_spatial_kernel_size)
            for _ in range(cfg.depth))
        self.out_proj = nn.Conv3d(cfg.hidden_dim, cfg.out_dim, 1)

    def forward(self, video: torch.Tensor, cache: list | None = None):
        """video (B,T,3,H,W) at the model size → tokens (B,T',h·w,D), per-block caches."""
        x = self.temporal_conv(video.transpose(1, 2))
        x = self.norm(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)
        new_cache = []
        for i, block in enumerate(self.blocks):
            x, c = block(x, None if cache is None else cache[i])
            new_cache.append(c)
        x = self.out_proj(x)  # (B,D,T',h,w)
        return x.flatten(3).permute(0, 2, 3, 1), new_cache


class Connector(nn.Module):
    """Adds a learned spatial position embedding to every frame's tokens (no temporal one)."""

    def __init__(self, num_tokens: int, dim: int):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(num_tokens, dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens + self.pos_embed
