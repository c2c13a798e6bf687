"""Typed wrappers around the native ops ``torch.ops.autogaze_ext.*``.

The dispatcher runs the CPU or CUDA kernel by the inputs' device. Each op has a fake (shape-only)
implementation registered here, so the ops trace under ``torch.compile(fullgraph=True)``.
Ground truth for every op: ``autogaze_ext.reference``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

try:
    from . import _C  # loads the op library (links against torch's libraries: import torch first)
except ImportError as error:  # pragma: no cover - depends on the install
    raise ImportError(
        "autogaze_ext._C is missing or does not load; build it with "
        "`pip install --no-build-isolation .` in the environment of the torch you use"
    ) from error

__all__ = ["build_info", "multiscale_patches", "gather_patches", "select_step"]

_VIDEO_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_MAX_SCALES = 16  # patches::kMaxScales


def build_info() -> dict[str, Any]:
    """How the extension was built (version, cuda, cuda_version, cuda_archs, torch_version,
    cxx_compiler, sanitizers), plus torch_runtime_version, the torch imported now."""
    info = dict(_C.build_info())
    info["torch_runtime_version"] = torch.__version__
    return info


def multiscale_patches(video: torch.Tensor, scales: Sequence[int], patch_size: int = 16) -> torch.Tensor:
    """All patches of every scale of every frame.

    Args:
        video: (B, T, C, H, W) float32, bfloat16 or float16, any strides.
        scales: output sides, each a multiple of ``patch_size`` (ascending by convention, e.g.
            (32, 64, 112, 224): ids [0, 4), [4, 20), [20, 69), [69, 265)).
        patch_size: p.

    Returns:
        (B, T, N, C*p*p) of video's dtype, N = sum((s // p) ** 2). Scale blocks in the given
        order; within a scale, cells row-major; each patch channel-major (c, ky, kx). Each frame
        is resized with torch bicubic (align_corners=False, no antialias), computed in float32.
    """
    return torch.ops.autogaze_ext.multiscale_patches(video, list(scales), patch_size)


def gather_patches(
    video: torch.Tensor,
    ids: torch.Tensor,
    frame_offsets: torch.Tensor,
    scales: Sequence[int],
    patch_size: int = 16,
) -> torch.Tensor:
    """Only the requested patches, packed across frames (varlen): nothing else is computed.

    Args:
        video: (B, T, C, H, W) as for ``multiscale_patches``.
        ids: (L,) int64 frame-local ids in [0, N), the frames' lists concatenated.
        frame_offsets: (B*T + 1,) int64, non-decreasing, from 0 to L: ids[frame_offsets[f]:
            frame_offsets[f + 1]] belong to frame f = b*T + t.
        scales, patch_size: as for ``multiscale_patches``.

    Returns:
        (L, C*p*p): row j equals ``multiscale_patches(video)[b, t, ids[j]]`` for the frame of j.

    The values of ids and frame_offsets are validated for CPU tensors. On CUDA (no host sync) an
    out-of-range id traps on the device, and malformed frame_offsets give wrong rows but never
    out-of-bounds reads.
    """
    return torch.ops.autogaze_ext.gather_patches(video, ids, frame_offsets, list(scales), patch_size)


def _check_video_and_scales(op: str, video: torch.Tensor, scales: Sequence[int], patch_size: int) -> int:
    """The shape-level checks of the native ops, for tracing; returns N."""
    if video.dim() != 5:
        raise ValueError(f"{op}: video must be 5-D (B, T, C, H, W), got shape {list(video.shape)}")
    if video.dtype not in _VIDEO_DTYPES:
        raise TypeError(f"{op}: video must be float32, bfloat16 or float16, got {video.dtype}")
    if patch_size <= 0:
        raise ValueError(f"{op}: patch_size must be positive, got {patch_size}")
    if not 1 <= len(scales) <= _MAX_SCALES:
        raise ValueError(f"{op}: scales must hold 1 to {_MAX_SCALES} sizes, got {list(scales)}")
    for k, side in enumerate(scales):
        if side <= 0 or side % patch_size:
            raise ValueError(f"{op}: scales[{k}] = {side} must be a positive multiple of patch_size = {patch_size}")
    return sum((side // patch_size) ** 2 for side in scales)


@torch.library.register_fake("autogaze_ext::multiscale_patches")
def _multiscale_patches_fake(video, scales, patch_size):
    num_ids = _check_video_and_scales("multiscale_patches", video, scales, patch_size)
    B, T, C = video.shape[:3]
    return video.new_empty((B, T, num_ids, C * patch_size * patch_size))


@torch.library.register_fake("autogaze_ext::gather_patches")
def _gather_patches_fake(video, ids, frame_offsets, scales, patch_size):
    _check_video_and_scales("gather_patches", video, scales, patch_size)
    for name, t in (("ids", ids), ("frame_offsets", frame_offsets)):
        if t.dtype != torch.int64:
            raise TypeError(f"gather_patches: {name} must be int64, got {t.dtype}")
        if t.dim() != 1:
            raise ValueError(f"gather_patches: {name} must be 1-D, got shape {list(t.shape)}")
        if t.device != video.device:
            raise ValueError(f"gather_patches: {name} must be on video's device ({video.device}), got {t.device}")
    B, T, C = video.shape[:3]
    if frame_offsets.shape[0] != B * T + 1:
        raise ValueError(
            f"gather_patches: frame_offsets must have B*T + 1 = {B * T + 1} elements for video of shape "
            f"{list(video.shape)}, got {frame_offsets.shape[0]}"
        )
    return video.new_empty((ids.shape[0], C * patch_size * patch_size))


def select_step(logits, loss_pred, requirement, uniforms, used, n, finished, done, tokens,
                leftover_ids, leftover_len, budget: int, first: bool, coupled: bool,
                temperature: float = 1.0, top_k: int = 50) -> torch.Tensor:
    """One gaze selection step, updating the frame state in place; returns the ids to feed (B,K).

    Same arguments and semantics as ``autogaze_ext.reference.select_step`` (see there). The state
    tensors (used, n, finished, done, tokens, leftover_ids, leftover_len) must be contiguous, and
    ``n`` non-negative (checked for CPU tensors; on CUDA, without a host sync, a negative count
    writes its slots into column 0 rather than out of bounds).
    """
    return torch.ops.autogaze_ext.select_step(logits, loss_pred, requirement, uniforms, used, n,
                                              finished, done, tokens, leftover_ids, leftover_len,
                                              budget, first, coupled, temperature, top_k)


@torch.library.register_fake("autogaze_ext::select_step")
def _select_step_fake(logits, loss_pred, requirement, uniforms, used, n, finished, done, tokens,
                      leftover_ids, leftover_len, budget, first, coupled, temperature, top_k):
    if logits.dim() != 3:
        raise ValueError(f"select_step: logits must be (B, K, V), got shape {list(logits.shape)}")
    return logits.new_empty(logits.shape[:2], dtype=torch.int64)


# ---- varlen_attention ---------------------------------------------------------------------------

__all__ += ["varlen_attention", "key_ranges", "ATTENTION_MODES"]

ATTENTION_MODES = ("block_causal", "causal", "bidirectional", "frame")


def key_ranges(layout, frame_offsets: torch.Tensor | None = None, mode: str = "block_causal",
               num_tokens: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each packed token's visible key range [key_lo, key_hi) for ``varlen_attention``.

    Tokens are packed clip-major, then frame-major, so every mode is one contiguous range:

    * ``block_causal``: [clip start, end of the token's frame)
    * ``causal``: [clip start, i + 1)
    * ``bidirectional``: [clip start, clip end)
    * ``frame``: [start of the token's frame, end of the token's frame)

    Args:
        layout: a ``autogaze_ext.varlen.Packed`` (its ``cu_seqlens`` and ``frame_offsets`` are
            used), or ``cu_seqlens`` (B+1,) integer clip token offsets from 0 to L.
        frame_offsets: (F+1,) integer frame token offsets from 0 to L, frames nested in the clips
            (e.g. B·T + 1 offsets of B clips of T frames); needed with ``cu_seqlens`` for the
            ``block_causal`` and ``frame`` modes, ignored with a ``Packed``.
        mode: one of ``ATTENTION_MODES``.
        num_tokens: L; read from the offsets (a host sync on GPU) when not given.

    Returns:
        (key_lo, key_hi), two (L,) int64 tensors on the offsets' device. Vectorized, no loop.
    """
    if mode not in ATTENTION_MODES:
        raise ValueError(f"key_ranges: mode must be one of {ATTENTION_MODES}, got {mode!r}")
    if hasattr(layout, "cu_seqlens") and hasattr(layout, "frame_offsets"):  # a varlen.Packed
        cu_seqlens, frame_offsets = layout.cu_seqlens, layout.frame_offsets
        if num_tokens is None:
            num_tokens = layout.num_tokens
    else:
        cu_seqlens = layout
    for name, t in (("cu_seqlens", cu_seqlens), ("frame_offsets", frame_offsets)):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor) or t.dim() != 1 or t.shape[0] < 1 or t.is_floating_point():
            raise ValueError(f"key_ranges: {name} must be a non-empty 1-D integer tensor, got "
                             f"{getattr(t, 'shape', type(t))} {getattr(t, 'dtype', '')}")
    if frame_offsets is None and mode in ("block_causal", "frame"):
        raise ValueError(f"key_ranges: mode {mode!r} needs frame_offsets")
    cu_seqlens = cu_seqlens.long()
    device = cu_seqlens.device
    if num_tokens is None:
        num_tokens = int(cu_seqlens[-1])
    clip = torch.repeat_interleave(torch.arange(cu_seqlens.shape[0] - 1, device=device), cu_seqlens.diff(),
                                   output_size=num_tokens)
    if mode == "frame":
        key_lo = None
    else:
        key_lo = cu_seqlens[clip]
    if mode == "causal":
        key_hi = torch.arange(1, num_tokens + 1, device=device)
    elif mode == "bidirectional":
        key_hi = cu_seqlens[clip + 1]
    else:
        frame_offsets = frame_offsets.to(device=device, dtype=torch.long)
        frame = torch.repeat_interleave(torch.arange(frame_offsets.shape[0] - 1, device=device),
                                        frame_offsets.diff(), output_size=num_tokens)
        key_hi = frame_offsets[frame + 1]
        if mode == "frame":
            key_lo = frame_offsets[frame]
    return key_lo, key_hi


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_lo: torch.Tensor,
                     key_hi: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Attention over packed varlen tokens, each query seeing one contiguous range of keys.

    Args:
        q: (L, H, D) float32, bfloat16 or float16.
        k, v: (L, Hkv, D) of q's dtype, H % Hkv == 0 (grouped-query attention: head h reads kv
            head h // (H // Hkv)). Any strides (non-contiguous inputs are copied).
        key_lo, key_hi: (L,) int64: query i attends to keys [key_lo[i], key_hi[i]); every query
            must see at least one key (0 <= lo < hi <= L). Checked for CPU tensors; trusted on
            CUDA. See ``key_ranges`` for the block_causal / causal / bidirectional / frame modes.
        scale: multiplies q·k; default 1/sqrt(D).

    Returns:
        (L, H, D) of q's dtype: softmax(scale · q kᵀ) v over each query's range, with float32
        accumulation and a streaming (max-subtracted) softmax. CUDA: head_dim <= 128.
        Ground truth: ``autogaze_ext.reference.varlen_attention``.
    """
    if scale is None:
        scale = q.shape[-1] ** -0.5
    return torch.ops.autogaze_ext.varlen_attention(q, k, v, key_lo, key_hi, float(scale))


@torch.library.register_fake("autogaze_ext::varlen_attention")
def _varlen_attention_fake(q, k, v, key_lo, key_hi, scale):
    op = "varlen_attention"
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 3:
            raise ValueError(f"{op}: {name} must be 3-D (L, heads, head_dim), got shape {list(t.shape)}")
        if t.device != q.device:
            raise ValueError(f"{op}: {name} must be on q's device ({q.device}), got {t.device}")
    if q.dtype not in _VIDEO_DTYPES:
        raise TypeError(f"{op}: q must be float32, bfloat16 or float16, got {q.dtype}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"{op}: q, k and v must have the same dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    L, H, D = q.shape
    if H == 0 or D == 0:
        raise ValueError(f"{op}: q needs heads > 0 and head_dim > 0, got shape {list(q.shape)}")
    if k.shape[0] != L or k.shape[2] != D or k.shape[1] == 0:
        raise ValueError(f"{op}: k must be (L, kv_heads, head_dim) = ({L}, kv_heads > 0, {D}) for q of shape "
                         f"{list(q.shape)}, got {list(k.shape)}")
    if v.shape != k.shape:
        raise ValueError(f"{op}: v must have k's shape {list(k.shape)}, got {list(v.shape)}")
    if H % k.shape[1]:
        raise ValueError(f"{op}: q's heads ({H}) must be a multiple of k's and v's kv_heads ({k.shape[1]})")
    for name, t in (("key_lo", key_lo), ("key_hi", key_hi)):
        if t.dtype != torch.int64:
            raise TypeError(f"{op}: {name} must be int64, got {t.dtype}")
        if t.dim() != 1 or t.shape[0] != L:
            raise ValueError(f"{op}: {name} must have shape (L,) = ({L},), got {list(t.shape)}")
    return q.new_empty((L, H, D))


# ---- decode_step --------------------------------------------------------------------------------

__all__ += ["decode_step", "decoder_weights"]

_DECODER_LAYER_WEIGHTS = ("input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                          "self_attn.o_proj", "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj",
                          "mlp.down_proj")


def decoder_weights(decoder) -> list[torch.Tensor]:
    """The flat weight list of ``decode_step`` from a ``autogaze_ext.decoder.GazeDecoder``.

    Per layer, in order: input_layernorm (D), q_proj (H·hd, D), k_proj (Hkv·hd, D), v_proj
    (Hkv·hd, D), o_proj (D, H·hd), post_attention_layernorm (D), gate_proj (I, D), up_proj (I, D),
    down_proj (D, I); then model.norm (D), lm_head (V·K, D), task_loss_prediction_head (K, D).
    The op derives the sizes from the shapes: hd = 2·len(inv_freq), H = q rows / hd, Hkv = k rows
    / hd, I = gate rows, K = task_loss_prediction_head rows, V = lm_head rows / K. The tensors are
    the module's own (no copies): build the list once and reuse it while the weights are unchanged.
    """
    weights = []
    for layer in decoder.model.layers:
        for name in _DECODER_LAYER_WEIGHTS:
            weights.append(layer.get_submodule(name).weight.detach())
    weights += [decoder.model.norm.weight.detach(), decoder.lm_head.weight.detach(),
                decoder.task_loss_prediction_head.weight.detach()]
    return weights


def decode_step(x: torch.Tensor, positions: torch.Tensor, visible: torch.Tensor, cache_k: torch.Tensor,
                cache_v: torch.Tensor, key_mask: torch.Tensor, cache_len: int, weights: Sequence[torch.Tensor],
                inv_freq: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One fused decoder step: ``GazeDecoder.forward(x, positions, visible, cache)`` with
    ``cache.length == cache_len``, then ``heads(hidden[:, -1])``.

    Args:
        x: (B, n, D) float32, bfloat16 or float16 input embeddings of the n fed tokens (n >= 1).
        positions: (B, n) int64 RoPE positions.
        visible: (B, n) bool key visibility of the new slots.
        cache_k, cache_v: (layers, B, Hkv, capacity, hd) contiguous, of x's dtype (``KVCache.k`` /
            ``.v``); key_mask: (B, capacity) bool contiguous (``KVCache.key_mask``). Slots
            [cache_len, cache_len + n) of all three are written in place (key_mask from
            ``visible``); capacity >= cache_len + n. The caller advances ``cache.length``.
        cache_len: slots already in the cache.
        weights: ``decoder_weights(decoder)``, of x's dtype and device.
        inv_freq: (hd/2,) float32 RoPE inverse frequencies (``decoder.inv_freq``).
        eps: RMSNorm epsilon (``cfg.rms_norm_eps``).

    Returns:
        logits (B, K, V) float32 and loss_pred (B, K) float32: the heads at the last fed token.
        CUDA: head_dim <= 128.
    """
    return torch.ops.autogaze_ext.decode_step(x, positions, visible, cache_k, cache_v, key_mask, int(cache_len),
                                              list(weights), inv_freq, float(eps))


@torch.library.register_fake("autogaze_ext::decode_step")
def _decode_step_fake(x, positions, visible, cache_k, cache_v, key_mask, cache_len, weights, inv_freq, eps):
    op = "decode_step"
    if x.dim() != 3:
        raise ValueError(f"{op}: x must be 3-D (B, n, D), got shape {list(x.shape)}")
    if (len(weights) - 3) % 9 or len(weights) < 12:
        raise ValueError(f"{op}: weights must hold 9 tensors per layer then final norm, lm_head and "
                         f"task_loss_prediction_head (9 * layers + 3, layers >= 1), got {len(weights)} tensors")
    tlp, lm = weights[-1], weights[-2]
    if tlp.dim() != 2 or lm.dim() != 2 or tlp.shape[0] == 0 or lm.shape[0] % tlp.shape[0]:
        raise ValueError(f"{op}: lm_head must be (K * V, D) and task_loss_prediction_head (K, D), got shapes "
                         f"{list(lm.shape)} and {list(tlp.shape)}")
    b, k = x.shape[0], tlp.shape[0]
    return (x.new_empty((b, k, lm.shape[0] // k), dtype=torch.float32),
            x.new_empty((b, k), dtype=torch.float32))
