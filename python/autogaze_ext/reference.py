"""Plain-PyTorch reference implementations: the ground truth the native kernels are tested against.

Each function defines the behaviour of the op of the same name in ``autogaze_ext.ops``, written
for readability rather than speed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["multiscale_patches", "gather_patches"]


def multiscale_patches(video: torch.Tensor, scales: Sequence[int], patch_size: int = 16) -> torch.Tensor:
    """All patches of every scale of every frame.

    video (B, T, C, H, W) -> (B, T, N, C*p*p), N = sum((s // p) ** 2 for s in scales).
    For each scale s in order, every frame is resized to s x s with torch bicubic
    (align_corners=False, no antialias; skipped when the frame already is s x s) and cut into
    non-overlapping p x p cells, row-major; each patch is flattened channel-major (c, ky, kx).
    """
    B, T, C, H, W = video.shape
    p = patch_size
    frames = video.reshape(B * T, C, H, W)
    blocks = []
    for side in scales:
        resized = frames
        if (H, W) != (side, side):
            resized = F.interpolate(frames, size=(side, side), mode="bicubic", align_corners=False)
        cells = F.unfold(resized, kernel_size=p, stride=p)  # (B*T, C*p*p, cells), (c, ky, kx) order
        blocks.append(cells.transpose(1, 2).reshape(B, T, -1, C * p * p))
    return torch.cat(blocks, dim=2)


def gather_patches(
    video: torch.Tensor,
    ids: torch.Tensor,
    frame_offsets: torch.Tensor,
    scales: Sequence[int],
    patch_size: int = 16,
) -> torch.Tensor:
    """Selected patches of every frame, packed.

    video (B, T, C, H, W); ids (L,) int64 frame-local ids in [0, N); frame_offsets (B*T + 1,)
    int64: ids[frame_offsets[f]:frame_offsets[f + 1]] belong to frame f = b*T + t.
    Returns (L, C*p*p): row j = multiscale_patches(video)[b, t, ids[j]] for the frame of j.
    """
    patches = multiscale_patches(video, scales, patch_size).flatten(0, 1)  # (B*T, N, C*p*p)
    frames = torch.arange(patches.shape[0], device=ids.device)
    frame_of_row = torch.repeat_interleave(frames, frame_offsets.diff())
    return patches[frame_of_row, ids]
