"""The gaze decoder: a small LLaMA with multi-token heads and a static KV cache (spec §4.4-4.5).

Module and parameter names follow the official checkpoint (``model.layers.{i}.self_attn.q_proj`` …)
so a state dict loads unchanged. This is the plain-PyTorch reference path: readable, exact in
float32, and the ground truth that fused kernels are checked against.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import DecoderConfig


def rope_inv_freq(head_dim: int, theta: float, scaling: dict | None) -> torch.Tensor:
    """Inverse RoPE frequencies (head_dim/2,) in float32, with the llama3 rescaling if configured."""
    exponent = torch.arange(0, head_dim, 2, dtype=torch.int64).to(torch.float32) / head_dim
    inv_freq = 1.0 / (theta ** exponent)
    if not scaling:
        return inv_freq
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind in (None, "default"):
        return inv_freq
    if kind != "llama3":
        raise NotImplementedError(f"rope_scaling type {kind!r} is not supported (only llama3)")
    factor = scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    original = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > original / low, inv_freq / factor, inv_freq)
    smooth = (original / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= original / high) & (wavelen <= original / low)
    return torch.where(medium, blended, scaled)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class KVCache:
    """Preallocated keys/values of every layer plus each slot's key mask.

    ``k``/``v``: (layers, B, kv_heads, capacity, head_dim); ``key_mask``: (B, capacity) bool, the
    *current* visibility of each slot; ``length``: slots written so far. Growing reallocates (rare:
    offline calls size the cache up front); steps never copy it.
    """

    def __init__(self, cfg: DecoderConfig, batch: int, capacity: int, device, dtype):
        shape = (cfg.num_layers, batch, cfg.num_kv_heads, capacity, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.key_mask = torch.zeros(batch, capacity, device=device, dtype=torch.bool)
        self.length = 0

    @property
    def capacity(self) -> int:
        return self.key_mask.shape[1]

    def reserve(self, extra: int) -> None:
        need = self.length + extra
        if need <= self.capacity:
            return
        new_cap = max(need, 2 * self.capacity)
        for name in ("k", "v"):
            old = getattr(self, name)
            grown = old.new_zeros(old.shape[:3] + (new_cap,) + old.shape[4:])
            grown[:, :, :, : self.length] = old[:, :, :, : self.length]
            setattr(self, name, grown)
        mask = self.key_mask.new_zeros(self.key_mask.shape[0], new_cap)
        mask[:, : self.length] = self.key_mask[:, : self.length]
        self.key_mask = mask


class Attention(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        d, h, kvh, hd = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = h, kvh, hd
        self.q_proj = nn.Linear(d, h * hd, bias=False)
        self.k_proj = nn.Linear(d, kvh * hd, bias=False)
        self.v_proj = nn.Linear(d, kvh * hd, bias=False)
        self.o_proj = nn.Linear(h * hd, d, bias=False)

    def forward(self, x, cos, sin, layer: int, cache: KVCache, allowed):
        """x (B,n,D); cos/sin (B,n,hd); allowed (B,n,start+n) bool, or None for plain causal
        attention over a cache that was empty → (B,n,D). Appends K/V."""
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        start, end = cache.length, cache.length + n
        if torch.is_grad_enabled() and (k.requires_grad or v.requires_grad):
            # training (the teacher-forced pass): the cache is written in place, which autograd
            # cannot differentiate through, so attend to a new tensor and store a detached copy
            keys = torch.cat((cache.k[layer, :, :, :start], k), dim=2)
            values = torch.cat((cache.v[layer, :, :, :start], v), dim=2)
            cache.k[layer, :, :, start:end] = k.detach()
            cache.v[layer, :, :, start:end] = v.detach()
        else:
            cache.k[layer, :, :, start:end] = k
            cache.v[layer, :, :, start:end] = v
            keys, values = cache.k[layer, :, :, :end], cache.v[layer, :, :, :end]
        if self.num_kv_heads != self.num_heads:
            repeat = self.num_heads // self.num_kv_heads
            keys = keys.repeat_interleave(repeat, dim=1)
            values = values.repeat_interleave(repeat, dim=1)
        if allowed is None:
            out = F.scaled_dot_product_attention(q, keys, values, is_causal=True)
        else:
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=allowed.unsqueeze(1))
        return self.o_proj(out.transpose(1, 2).reshape(b, n, -1))


class MLP(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, layer, cache, allowed):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, layer, cache, allowed)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaBody(nn.Module):
    """``model.*`` of the checkpoint: token embeddings, layers, final norm."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class GazeDecoder(nn.Module):
    """LLaMA body + ``lm_head`` (D → V·K) + ``task_loss_prediction_head`` (D → K)."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.cfg = cfg
        self.model = LlamaBody(cfg)
        k = cfg.num_multi_token_pred
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size * k, bias=False)
        self.task_loss_prediction_head = nn.Linear(cfg.hidden_size, k, bias=False)
        self.register_buffer("inv_freq", rope_inv_freq(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling),
                             persistent=False)

    def _apply(self, fn, *args, **kwargs):
        # .to(dtype) must not round the RoPE frequencies: keep them float32 on the new device.
        # When the device is unchanged the buffer itself is kept (same storage): a captured CUDA
        # graph reads it by address, and a re-created buffer would leave it reading freed memory.
        inv_freq = self.inv_freq
        super()._apply(fn, *args, **kwargs)
        device = self.lm_head.weight.device
        if inv_freq.device != device:
            inv_freq = rope_inv_freq(self.cfg.head_dim, self.cfg.rope_theta,
                                     self.cfg.rope_scaling).to(device)
        self.inv_freq = inv_freq
        return self

    def new_cache(self, batch: int, capacity: int) -> KVCache:
        w = self.lm_head.weight
        return KVCache(self.cfg, batch, capacity, w.device, w.dtype)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_tokens(ids)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, visible: torch.Tensor,
                cache: KVCache) -> torch.Tensor:
        """Feed ``x`` (B,n,D) at RoPE ``positions`` (B,n) with key visibility ``visible`` (B,n).

        Queries attend to cache slots ``j ≤ own slot`` whose key mask is set. The new slots are
        appended to ``cache``. Returns the final-normed hidden states (B,n,D).
        """
        b, n, _ = x.shape
        cache.reserve(n)
        start, end = cache.length, cache.length + n
        cache.key_mask[:, start:end] = visible
        if start == 0 and torch.is_grad_enabled() and bool(visible.all()):
            # Training's teacher-forced pass over whole clips: plain causal attention, which SDPA
            # runs without materialising an (n, n) mask and skipping the masked half. (Only with
            # gradients on: generation keeps one kernel path, so its numerics never change.)
            allowed = None
        else:
            slot = torch.arange(end, device=x.device)
            causal = slot[None, :] <= slot[start:end, None]  # (n, end)
            allowed = causal.unsqueeze(0) & cache.key_mask[:, None, :end]
            # A query that sees no key at all (an invisible slot with nothing visible before it)
            # would give a NaN softmax row that poisons later layers; let it see itself. Its
            # output is never read.
            allowed[:, torch.arange(n, device=x.device), slot[start:end]] |= ~allowed.any(-1)
        angles = positions.to(torch.float32).unsqueeze(-1) * self.inv_freq
        angles = torch.cat((angles, angles), dim=-1)
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        for i, layer in enumerate(self.model.layers):
            x = layer(x, cos, sin, i, cache, allowed)
        cache.length = end
        return self.model.norm(x)

    def heads(self, hidden: torch.Tensor):
        """hidden (…, D) → gaze logits (…, K, V) and task-loss predictions (…, K), float32."""
        k, v = self.cfg.num_multi_token_pred, self.cfg.vocab_size
        logits = self.lm_head(hidden).float().unflatten(-1, (k, v))
        return logits, self.task_loss_prediction_head(hidden).float()
