"""Gaze-aware SigLIP vision tower that encodes only the gazed patches (spec §11).

Loads HF SigLIP/SigLIP2 fixed-resolution vision checkpoints unchanged (same parameter names as
transformers' ``SiglipVisionModel``). The forward gathers the gazed patches of every scale
directly (``ops.gather_patches``, or ``reference.gather_patches`` on the reference backend), adds
the per-scale position embeddings, and runs the encoder over the packed tokens with frame-aware
varlen attention: no padding work, no dense batch mask.
``official_pooling=True`` additionally reproduces the official padded run (padded slots are
dummy tokens that the pooling head attends to), so its ``pooler_output`` matches the official.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import reference
from .checkpoint import load_matching, load_safetensors
from .config import parse_scales
from .generation import native_ops
from .layout import AttrDict, unpad
from .varlen import Packed, pack, varlen_attention

__all__ = ["SiglipVisionSettings", "SparseSiglipVisionModel", "SiglipOutput"]

_ACTS = {
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),
    "gelu": F.gelu,
    "relu": F.relu,
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
}


class SiglipOutput(AttrDict):
    """Result of ``SparseSiglipVisionModel``: packed features, pooled output, official layout."""


@dataclass
class SiglipVisionSettings:
    """The fields of a (gaze-aware) SigLIP vision config.json that the model uses."""

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 16
    layer_norm_eps: float = 1e-6
    hidden_act: str = "gelu_pytorch_tanh"
    scales: list[int] = field(default_factory=list)
    attn_type: str = "block_causal"
    frame_independent_encoding: bool = False
    vision_use_head: bool = True

    @classmethod
    def from_dict(cls, raw: Mapping, scales=None) -> "SiglipVisionSettings":
        raw = dict(raw)
        if "vision_config" in raw and isinstance(raw["vision_config"], Mapping):  # full SiglipConfig
            raw = {**raw["vision_config"], **{k: raw[k] for k in ("scales", "attn_type") if k in raw}}
        names = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "num_channels", "image_size", "patch_size", "layer_norm_eps", "hidden_act",
                 "attn_type", "frame_independent_encoding", "vision_use_head")
        kwargs = {k: raw[k] for k in names if raw.get(k) is not None}
        settings = cls(**kwargs)
        scales = scales if scales is not None else raw.get("scales")
        settings.scales = parse_scales(settings.image_size if scales is None else scales)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                             f"{self.num_attention_heads}")
        if self.hidden_act not in _ACTS:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not supported; expected one of {sorted(_ACTS)}")
        if self.attn_type not in ("block_causal", "causal", "bidirectional"):
            raise ValueError(f"attn_type must be 'block_causal', 'causal' or 'bidirectional', got {self.attn_type!r}")
        for s in self.scales:
            if s <= 0 or s % self.patch_size:
                raise ValueError(f"scales {self.scales}: each must be a positive multiple of patch_size "
                                 f"{self.patch_size}, got {s}")

    @property
    def per_scale(self) -> list[int]:
        return [(s // self.patch_size) ** 2 for s in self.scales]

    @property
    def num_tokens(self) -> int:
        return sum(self.per_scale)

    @property
    def attention_mode(self) -> str:
        if self.attn_type == "block_causal" and self.frame_independent_encoding:
            return "frame"
        return self.attn_type


# ---- modules (names follow transformers' SiglipVisionModel so checkpoints load unchanged) -------

class SiglipVisionEmbeddings(nn.Module):
    def __init__(self, cfg: SiglipVisionSettings):
        super().__init__()
        self.cfg = cfg
        self.patch_embedding = nn.Conv2d(cfg.num_channels, cfg.hidden_size, cfg.patch_size, cfg.patch_size)
        self.num_positions = (cfg.image_size // cfg.patch_size) ** 2
        self.position_embedding = nn.Embedding(self.num_positions, cfg.hidden_size)
        self._pos_cache: dict = {}

    def position_table(self, dtype: torch.dtype) -> torch.Tensor:
        """(N, D): per scale the learned table resampled to (s/p)², concatenated in id order.

        Computed once per (dtype, device, weight version) when no gradient is needed."""
        weight = self.position_embedding.weight
        cacheable = not (torch.is_grad_enabled() and weight.requires_grad)
        # inference tensors (made under torch.inference_mode) have no version counter
        version = None if weight.is_inference() else weight._version
        key = (dtype, weight.device, weight.data_ptr(), version)
        if cacheable and key in self._pos_cache:
            return self._pos_cache[key]
        side = math.isqrt(self.num_positions)
        blocks = []
        for s in self.cfg.scales:
            g = s // self.cfg.patch_size
            if g * g == self.num_positions and side * side == self.num_positions:
                blocks.append(weight)
                continue
            grid = weight.float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=(g, g), mode="bicubic", align_corners=False)
            blocks.append(grid.permute(0, 2, 3, 1).reshape(g * g, -1).to(weight.dtype))
        table = torch.cat(blocks, 0).to(dtype)
        if cacheable:
            self._pos_cache = {key: table}
        return table

    def embed_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """(L, C·p·p) channel-major patches → (L, D) (the patch conv as a matmul)."""
        w = self.patch_embedding.weight
        return F.linear(patches.to(w.dtype), w.reshape(w.shape[0], -1), self.patch_embedding.bias)


class SiglipAttention(nn.Module):
    def __init__(self, cfg: SiglipVisionSettings):
        super().__init__()
        d = cfg.hidden_size
        self.num_heads = cfg.num_attention_heads
        self.head_dim = d // self.num_heads
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.q_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)
        self.backend = "auto"  # of varlen_attention; set by SparseSiglipVisionModel.forward

    def forward(self, x: torch.Tensor, packed: Packed | None = None, mode: str = "block_causal",
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """Packed: x (L, D) with ``packed``; dense: x (B, S, D) with a bool ``mask`` (B,1,S,S)."""
        shape = x.shape[:-1] + (self.num_heads, self.head_dim)
        q, k, v = (proj(x).view(shape) for proj in (self.q_proj, self.k_proj, self.v_proj))
        scale = self.head_dim ** -0.5
        if packed is not None:
            out = varlen_attention(q, k, v, packed, mode, scale=scale, backend=self.backend)
        else:
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                 attn_mask=mask, scale=scale).transpose(1, 2)
        return self.out_proj(out.reshape(x.shape))


class SiglipMLP(nn.Module):
    def __init__(self, cfg: SiglipVisionSettings):
        super().__init__()
        self.act = _ACTS[cfg.hidden_act]
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class SiglipEncoderLayer(nn.Module):
    def __init__(self, cfg: SiglipVisionSettings):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.self_attn = SiglipAttention(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = SiglipMLP(cfg)

    def forward(self, x, packed=None, mode="block_causal", mask=None):
        x = x + self.self_attn(self.layer_norm1(x), packed, mode, mask)
        return x + self.mlp(self.layer_norm2(x))


class SiglipEncoder(nn.Module):
    def __init__(self, cfg: SiglipVisionSettings):
        super().__init__()
        self.layers = nn.ModuleList(SiglipEncoderLayer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, x, packed=None, mode="block_causal", mask=None):
        for layer in self.layers:
            x = layer(x, packed, mode, mask)
        return x


class SiglipMultiheadAttentionPoolingHead(nn.Module):
    def __init__(self, cfg: SiglipVisionSettings):
        super().__init__()
        self.probe = nn.Parameter(torch.randn(1, 1, cfg.hidden_size))
        self.attention = nn.MultiheadAttention(cfg.hidden_size, cfg.num_attention_heads, batch_first=True)
        self.layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = SiglipMLP(cfg)

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.layernorm(x))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """The official head: hidden (B, S, D), every slot attended (no mask) → (B, D)."""
        probe = self.probe.expand(hidden.shape[0], -1, -1)
        x = self.attention(probe, hidden, hidden, need_weights=False)[0]
        return self._finish(x)[:, 0]

    def forward_packed(self, features: torch.Tensor, packed: Packed) -> torch.Tensor:
        """The probe attends to each clip's real tokens only: features (L, D) → (B, D).

        Segment softmax over clips, vectorized (no loop, no padding); an empty clip attends to
        nothing (zero attention output)."""
        attn = self.attention
        d = features.shape[-1]
        heads = attn.num_heads
        hd = d // heads
        wq, wk, wv = attn.in_proj_weight.split(d)
        bq, bk, bv = attn.in_proj_bias.split(d) if attn.in_proj_bias is not None else (None,) * 3
        q = F.linear(self.probe.reshape(1, d), wq, bq).view(heads, hd)
        k = F.linear(features, wk, bk).view(-1, heads, hd)
        v = F.linear(features, wv, bv).view(-1, heads, hd)
        scores = (k * q).sum(-1) * hd ** -0.5  # (L, heads)
        clip = packed.clip
        batch = packed.batch
        peak = scores.new_full((batch, heads), float("-inf"))
        peak = peak.scatter_reduce(0, clip[:, None].expand_as(scores), scores, "amax", include_self=True)
        weights = torch.exp(scores - peak[clip])
        denom = scores.new_zeros(batch, heads).index_add(0, clip, weights)
        summed = v.new_zeros(batch, heads, hd).index_add(0, clip, weights[..., None] * v)
        out = summed / denom.clamp_min(torch.finfo(denom.dtype).tiny)[..., None]
        out = attn.out_proj(out.reshape(batch, d))
        return self._finish(out)


class SiglipVisionTransformer(nn.Module):
    def __init__(self, cfg: SiglipVisionSettings):
        super().__init__()
        self.embeddings = SiglipVisionEmbeddings(cfg)
        self.encoder = SiglipEncoder(cfg)
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        if cfg.vision_use_head:
            self.head = SiglipMultiheadAttentionPoolingHead(cfg)


# ---- the model ---------------------------------------------------------------------------------

class SparseSiglipVisionModel(nn.Module):
    """SigLIP vision tower over gazed multi-scale patches.

    ``model(video, gaze)``: video (B, T, C, H, W) preprocessed with the SigLIP normalisation;
    gaze: a mapping with ``ids`` (L,) and ``frame_offsets`` (B·T+1,) (an ``AutoGaze`` output), or
    with only the official ``gazing_pos``, ``if_padded_gazing``, ``num_gazing_each_frame``.
    """

    def __init__(self, config: SiglipVisionSettings):
        super().__init__()
        config.validate()
        self.config = config
        self.vision_model = SiglipVisionTransformer(config)

    # -- loading --
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, scales=None, device=None,
                        dtype: torch.dtype | None = None) -> "SparseSiglipVisionModel":
        """Folder with config.json and model.safetensors (float32/bf16/fp16 weights; loaded as
        float32 unless ``dtype``). ``scales`` overrides the config's (e.g. '32+64+112+224')."""
        from .checkpoint import resolve_checkpoint_dir

        folder = resolve_checkpoint_dir(path, required=("config.json", "model.safetensors"))
        raw = json.loads((Path(folder) / "config.json").read_text())
        model = cls(SiglipVisionSettings.from_dict(raw, scales=scales))
        model.load_weights(load_safetensors(Path(folder) / "model.safetensors"))
        model = model.to(device=device, dtype=dtype or torch.float32)
        return model.eval()

    def load_weights(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load a transformers-named state dict (``vision_model.*``; other keys of a full SigLIP
        checkpoint, such as ``text_model.*``, and the ``position_ids`` buffer are ignored)."""
        picked = {}
        for name, tensor in state.items():
            if name.startswith("model.vision_model."):  # some exports prefix the tower
                name = name[len("model."):]
            if not name.startswith("vision_model.") or name.endswith("position_ids"):
                continue
            if name.startswith("vision_model.head.") and not self.config.vision_use_head:
                continue
            picked[name] = tensor
        load_matching(self, picked, "the SigLIP config")

    @property
    def scales(self) -> list[int]:
        return list(self.config.scales)

    @property
    def per_scale(self) -> list[int]:
        return self.config.per_scale

    @property
    def num_tokens(self) -> int:
        return self.config.num_tokens

    @property
    def dtype(self) -> torch.dtype:
        return self.vision_model.embeddings.patch_embedding.weight.dtype

    # -- input handling --
    def _check_video(self, video) -> torch.Tensor:
        if not isinstance(video, torch.Tensor):
            raise TypeError(f"video must be a tensor (B, T, C, H, W), got {type(video).__name__}")
        if video.dim() != 5:
            raise ValueError(f"video must be 5-D (B, T, C, H, W), got shape {list(video.shape)}")
        if video.shape[2] != self.config.num_channels:
            raise ValueError(f"video must have C = {self.config.num_channels} channels (dim 2), got shape "
                             f"{list(video.shape)}")
        if not video.is_floating_point():
            raise TypeError(f"video must be floating point (preprocessed), got {video.dtype}")
        if video.dtype not in (torch.float32, torch.bfloat16, torch.float16):
            video = video.float()
        return video

    def _gaze_fields(self, gaze, batch: int, frames: int, device):
        """→ ids (L,), frame_offsets (B·T+1,), if_padded (B,S) bool, num_gazing_each_frame (T,)."""
        if not isinstance(gaze, Mapping):
            raise TypeError(f"gaze must be a mapping (an AutoGaze output or dict), got {type(gaze).__name__}")
        n = self.num_tokens
        if "scales" in gaze and gaze["scales"] is not None:
            gscales = sorted(int(s) for s in gaze["scales"])
            gn = gaze.get("num_vision_tokens_each_frame")
            if gn is None or int(gn) == sum((s // self.config.patch_size) ** 2 for s in gscales):
                if gscales != self.scales:
                    raise ValueError(f"gaze['scales'] = {gscales} does not match the ViT's scales {self.scales}")
        if gaze.get("num_vision_tokens_each_frame") is not None and int(gaze["num_vision_tokens_each_frame"]) != n:
            raise ValueError(f"gaze has N = {int(gaze['num_vision_tokens_each_frame'])} ids per frame "
                             f"(num_vision_tokens_each_frame), but the ViT's scales {self.scales} with patch "
                             f"{self.config.patch_size} give N = {n}")
        if gaze.get("gazing_mask") is not None:
            got = [int(m.shape[-1]) for m in gaze["gazing_mask"]]
            if got != self.per_scale:
                raise ValueError(f"gaze['gazing_mask'] has cells per scale {got}, but the ViT's scales "
                                 f"{self.scales} give {self.per_scale}")
        official = ("gazing_pos", "if_padded_gazing", "num_gazing_each_frame")
        has_official = all(gaze.get(k) is not None for k in official)
        has_packed = gaze.get("ids") is not None and gaze.get("frame_offsets") is not None
        if not has_packed and not has_official:
            raise KeyError("gaze must hold 'ids' and 'frame_offsets' (padding-free) or 'gazing_pos', "
                           "'if_padded_gazing' and 'num_gazing_each_frame' (official); got keys "
                           f"{sorted(gaze.keys())}")
        if has_official:
            pos = torch.as_tensor(gaze["gazing_pos"], device=device)
            pad = torch.as_tensor(gaze["if_padded_gazing"], device=device).bool()
            counts_t = torch.as_tensor(gaze["num_gazing_each_frame"], device=device).long()
            if pos.dim() != 2 or pos.shape != pad.shape:
                raise ValueError(f"gaze['gazing_pos'] and gaze['if_padded_gazing'] must both be (B, S), got "
                                 f"{list(pos.shape)} and {list(pad.shape)}")
            if pos.shape[0] != batch:
                raise ValueError(f"gaze['gazing_pos'] has batch {pos.shape[0]}, video has B = {batch}")
            if counts_t.shape != (frames,) or int(counts_t.sum()) != pos.shape[1]:
                raise ValueError(f"gaze['num_gazing_each_frame'] must be (T = {frames},) summing to S = "
                                 f"{pos.shape[1]}, got {counts_t.tolist()}")
        if has_packed:
            ids = torch.as_tensor(gaze["ids"], device=device)
            offsets = torch.as_tensor(gaze["frame_offsets"], device=device)
            if offsets.dim() != 1 or offsets.shape[0] != batch * frames + 1:
                raise ValueError(f"gaze['frame_offsets'] must have B*T + 1 = {batch * frames + 1} elements "
                                 f"for video (B={batch}, T={frames}), got shape {list(offsets.shape)}")
            if ids.dim() != 1:
                raise ValueError(f"gaze['ids'] must be 1-D (L,), got shape {list(ids.shape)}")
            ids, offsets = ids.long(), offsets.long()
        else:
            grid = unpad(pos, pad, counts_t.tolist(), n, n)  # (B,T,W), EOS = n at pads
            real = grid != n
            ids = grid[real]
            offsets = F.pad(real.sum(-1).flatten().cumsum(0), (1, 0))
        if ids.device.type == "cpu" and ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= n):
            raise ValueError(f"gaze ids must lie in [0, N = {n}) for the ViT's scales {self.scales}, got values "
                             f"in [{int(ids.min())}, {int(ids.max())}]")
        if not has_official:
            pad, counts_t = _padded_layout(offsets.diff().view(batch, frames))
        elif int((~pad).sum()) != ids.shape[0]:
            raise ValueError(f"gaze: {int((~pad).sum())} non-padded slots in 'if_padded_gazing' but "
                             f"{ids.shape[0]} 'ids'")
        return ids, offsets, pad, counts_t

    # -- forward --
    def forward(self, video: torch.Tensor, gaze: Mapping, official_pooling: bool = False,
                backend: str = "auto") -> SiglipOutput:
        """Encode the gazed patches.

        ``backend``, as for the gaze model: ``reference`` runs plain PyTorch only (patches from
        ``reference.gather_patches``, per-clip SDPA; never the native extension); ``native`` the
        native ops (``ops.gather_patches``, ``ops.varlen_attention``); ``auto`` (default) gathers
        with the native op on the CPU and with the reference on CUDA (until the CUDA kernels are
        verified on a GPU), and attends with per-clip SDPA.

        Returns ``features`` (L, D) (real tokens, clip-major, generation order), ``cu_seqlens``
        (B+1,), ``frame_offsets``, ``packed`` (per-token indices), ``pooler_output`` (B, D) (None
        without a head) and ``last_hidden_state`` (B, S, D) in the official padded layout (padded
        rows are zeros unless ``official_pooling`` computed them).

        ``official_pooling=False``: the head attends to each clip's real tokens only.
        ``official_pooling=True``: reproduce the official run, whose head also attends to the
        padded slots (dummy copies of frame 0's id 0 encoded as tokens, spec §11).
        """
        from .model import exact_float32

        if backend not in ("auto", "reference", "native"):
            raise ValueError(f"backend must be 'auto', 'reference' or 'native', got {backend!r}")
        for layer in self.vision_model.encoder.layers:
            layer.self_attn.backend = backend
        video = self._check_video(video)
        gather = self._gather_op(backend, video.device)
        batch, frames = video.shape[:2]
        ids, offsets, pad, counts_t = self._gaze_fields(gaze, batch, frames, video.device)
        packed = pack(ids, offsets, batch, frames, self.per_scale)
        vm = self.vision_model
        with exact_float32(self.dtype == torch.float32):
            table = vm.embeddings.position_table(self.dtype)
            patches = gather(video, ids, offsets, self.scales, self.config.patch_size)
            x = vm.embeddings.embed_patches(patches) + table[ids]
            if official_pooling:
                dense = self._official_embeddings(video, x, pad, table, gather)
                mask = self._official_mask(pad, counts_t)
                dense = vm.post_layernorm(vm.encoder(dense, mask=mask))
                hidden = dense
                features = dense[~pad]
                pooled = vm.head(dense) if self.config.vision_use_head else None
            else:
                features = vm.post_layernorm(vm.encoder(x, packed, self.config.attention_mode))
                hidden = x.new_zeros(batch, pad.shape[1], x.shape[-1]).masked_scatter((~pad)[..., None], features)
                pooled = vm.head.forward_packed(features, packed) if self.config.vision_use_head else None
        return SiglipOutput(features=features, cu_seqlens=packed.cu_seqlens, frame_offsets=offsets,
                            packed=packed, pooler_output=pooled, last_hidden_state=hidden,
                            if_padded_gazing=pad)

    @staticmethod
    def _gather_op(backend: str, device: torch.device):
        """``ops.gather_patches`` where ``backend`` takes the native ops on ``device``, else the
        reference (computed in float32 like the native op, then cast to the video's dtype)."""
        ops = native_ops(backend, device)
        if ops is not None:
            return ops.gather_patches

        def gather(video, ids, offsets, scales, patch_size):
            return reference.gather_patches(video.float(), ids, offsets, scales,
                                            patch_size).to(video.dtype)

        return gather

    def _official_embeddings(self, video, x, pad, table, gather):
        """(B, S, D): real slots from ``x`` in order, padded slots = frame 0's id 0 of the clip."""
        batch = video.shape[0]
        zero_ids = torch.zeros(batch, dtype=torch.long, device=video.device)
        first = gather(video[:, :1], zero_ids, torch.arange(batch + 1, device=video.device),
                       self.scales, self.config.patch_size)
        dummy = self.vision_model.embeddings.embed_patches(first) + table[0]  # (B, D)
        dense = dummy[:, None, :].expand(batch, pad.shape[1], -1).clone()
        return dense.masked_scatter((~pad)[..., None], x)

    def _official_mask(self, pad: torch.Tensor, counts_t: torch.Tensor) -> torch.Tensor:
        """The official (B, 1, S, S) boolean visibility of the padded layout (True = attend)."""
        width = pad.shape[1]
        device = pad.device
        mode = self.config.attention_mode
        frame = torch.repeat_interleave(torch.arange(counts_t.shape[0], device=device), counts_t,
                                        output_size=width)
        eye = torch.eye(width, dtype=torch.bool, device=device)
        if mode in ("block_causal", "frame"):
            base = frame[None, :] == frame[:, None]
            if mode == "block_causal":
                base = base | torch.ones(width, width, dtype=torch.bool, device=device).tril()
            mask = (base[None] & ~pad[:, None, :]) | eye
        elif mode == "causal":  # flash path: pads moved to the end (stable), then causal
            order = torch.sort(pad.to(torch.int8), dim=1, stable=True).indices
            rank = torch.empty_like(order).scatter_(1, order, torch.arange(width, device=device).expand_as(order))
            mask = rank[:, None, :] <= rank[:, :, None]
        else:
            raise NotImplementedError("official_pooling=True reproduces the official run for "
                                      "attn_type 'block_causal' and 'causal' only")
        return mask[:, None]


def _padded_layout(counts: torch.Tensor):
    """Per-frame token counts (B, T) → the official-style padded layout: per frame max_b slots,
    each clip's tokens first then pads. Returns (if_padded (B, S) bool, num_gazing_each_frame)."""
    batch, frames = counts.shape
    slots = counts.max(0).values if batch else counts.new_zeros(frames)
    width = int(slots.sum())
    frame = torch.repeat_interleave(torch.arange(frames, device=counts.device), slots, output_size=width)
    start = F.pad(slots.cumsum(0), (1, 0))[:-1]
    offset = torch.arange(width, device=counts.device) - start[frame]
    return offset[None, :] >= counts[:, frame], slots
