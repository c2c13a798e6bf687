"""Network of the MAE reconstruction task (spec §10): a multi-scale, block-causal ViT-MAE.

Module and parameter names follow transformers' ``ViTMAEForPreTraining`` plus the AutoGaze
additions (``scale_embed``, ``time_embed``, ``decoder_scale_embed``), so the official
``videomae.pt`` keys (``mae.vit.*``, ``mae.decoder.*``) map onto this model's ``state_dict`` by
dropping the ``mae.`` prefix. All attention runs over packed token sequences
(:func:`autogaze_ext.varlen.varlen_attention`); nothing builds a dense N×N mask.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..varlen import Packed, varlen_attention

__all__ = ["MAEConfig", "MAEViT", "MAEDecoder", "sincos_2d", "init_weights", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _triple(value, name: str) -> tuple[float, float, float]:
    value = tuple(float(v) for v in value)
    if len(value) != 3:
        raise ValueError(f"MAEConfig: {name} must have 3 channel values, got {value}")
    return value


@dataclass
class MAEConfig:
    """Sizes of the MAE and the two pixel spaces it works between.

    Task space (the space reconstructions and losses live in): ``x · rescale_factor − offset``
    then ``(· − image_mean) / image_std`` for uint8 pixel values ``x`` (``offset`` True subtracts 1,
    the Vivit convention). Input space (what :meth:`AutoGaze.preprocess` returns, the release
    processor by default): the same with the ``input_*`` fields. Frames are square with side
    ``frame_size`` = the largest scale.
    """

    scales: tuple = (32, 64, 112, 224)
    patch_size: int = 16
    frame_size: int = 224
    num_channels: int = 3
    hidden_size: int = 192
    num_hidden_layers: int = 4
    num_attention_heads: int = 3
    intermediate_size: int = 768
    decoder_hidden_size: int = 128
    decoder_num_hidden_layers: int = 2
    decoder_num_attention_heads: int = 4
    decoder_intermediate_size: int = 512
    max_frames: int = 256
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    sample_rate: float = 0.125
    image_mean: tuple = IMAGENET_MEAN
    image_std: tuple = IMAGENET_STD
    rescale_factor: float = 1 / 255
    offset: bool = False
    input_mean: tuple = IMAGENET_MEAN
    input_std: tuple = IMAGENET_STD
    input_rescale_factor: float = 1 / 127.5
    input_offset: bool = True

    def __post_init__(self) -> None:
        self.scales = tuple(int(s) for s in self.scales)
        for name in ("image_mean", "image_std", "input_mean", "input_std"):
            setattr(self, name, _triple(getattr(self, name), name))
        p = self.patch_size
        if not self.scales or any(s <= 0 or s % p for s in self.scales):
            raise ValueError(f"MAEConfig: scales must be positive multiples of patch_size {p}, got {self.scales}")
        if list(self.scales) != sorted(set(self.scales)):
            raise ValueError(f"MAEConfig: scales must be strictly ascending, got {self.scales}")
        if self.frame_size != self.scales[-1]:
            raise ValueError(f"MAEConfig: frame_size ({self.frame_size}) must equal the largest scale "
                             f"({self.scales[-1]}): the finest scale's tokens are unpatchified to the frame")
        if self.num_channels != 3:
            raise ValueError(f"MAEConfig: num_channels must be 3, got {self.num_channels}")
        for width, heads, what in ((self.hidden_size, self.num_attention_heads, ""),
                                   (self.decoder_hidden_size, self.decoder_num_attention_heads, "decoder_")):
            if width % heads:
                raise ValueError(f"MAEConfig: {what}hidden_size {width} must be divisible by "
                                 f"{what}num_attention_heads {heads}")
            if width % 4:
                raise ValueError(f"MAEConfig: {what}hidden_size {width} must be a multiple of 4 (2-D sin-cos)")
        if self.max_frames < 1:
            raise ValueError(f"MAEConfig: max_frames must be >= 1, got {self.max_frames}")
        if not 0.0 <= self.sample_rate <= 1.0:
            raise ValueError(f"MAEConfig: sample_rate must lie in [0, 1], got {self.sample_rate}")
        if any(s <= 0 for s in self.image_std + self.input_std):
            raise ValueError("MAEConfig: image_std and input_std must be positive")

    # ---- derived sizes ------------------------------------------------------------------------
    @property
    def grids(self) -> tuple[int, ...]:
        return tuple(s // self.patch_size for s in self.scales)

    @property
    def per_scale(self) -> tuple[int, ...]:
        return tuple(g * g for g in self.grids)

    @property
    def num_tokens(self) -> int:
        return sum(self.per_scale)

    @property
    def base_grid(self) -> int:
        """Side of the grid the sin-cos tables are built for (image_size / patch, 14 for 224)."""
        return self.frame_size // self.patch_size

    # ---- presets and serialisation --------------------------------------------------------------
    @classmethod
    def small(cls, **overrides) -> "MAEConfig":
        """A model that trains on a small CPU: 192 wide, 4 layers; decoder 128 wide, 2 layers;
        task space 1/255 + ImageNet mean/std."""
        return cls(**overrides)

    @classmethod
    def official_large(cls, **overrides) -> "MAEConfig":
        """facebook/vit-mae-large sizes (§10.1) and the Vivit task space ``x/127.5 − 1`` + ImageNet
        mean/std (which equals the release gaze model's space, so the conversion is the identity)."""
        base = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                    decoder_hidden_size=512, decoder_num_hidden_layers=8, decoder_num_attention_heads=16,
                    decoder_intermediate_size=2048, rescale_factor=1 / 127.5, offset=True)
        return cls(**{**base, **overrides})

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "MAEConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - names - {"model_type"})
        if unknown:
            raise ValueError(f"MAEConfig: unknown fields {unknown}")
        return cls(**{k: v for k, v in raw.items() if k in names})


def sincos_2d(dim: int, side: int) -> torch.Tensor:
    """(1 + side², dim) fixed 2-D sin-cos table of ViT-MAE (row 0 = CLS = zeros).

    The first half of the channels encodes the column, the second half the row (MAE's meshgrid
    order); each half is [sin(pos·ω), cos(pos·ω)] with ω_k = 10000^(−k / (dim/4)).
    """
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    coords = torch.arange(side, dtype=torch.float64)
    row = coords.repeat_interleave(side)
    col = coords.repeat(side)

    def encode(pos):
        out = pos[:, None] * omega[None]
        return torch.cat([out.sin(), out.cos()], 1)

    table = torch.cat([encode(col), encode(row)], 1)
    return torch.cat([table.new_zeros(1, dim), table], 0).float()


# ---- transformer layers (HF ViT names: attention.attention.query, intermediate.dense, …) ----------

class _Dense(nn.Module):
    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)


class MAESelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.num_heads = heads
        self.head_dim = width // heads
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, packed: Packed) -> torch.Tensor:
        """x (L, D) packed tokens → (L, D) block-causal attention context."""
        shape = (x.shape[0], self.num_heads, self.head_dim)
        q, k, v = (proj(x).view(shape) for proj in (self.query, self.key, self.value))
        out = varlen_attention(q, k, v, packed, "block_causal", scale=self.head_dim ** -0.5)
        return out.reshape(x.shape)


class MAEAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attention = MAESelfAttention(width, heads)
        self.output = _Dense(width, width)


class MAELayer(nn.Module):
    """Pre-LN ViT block: x + attn(LN(x)), then + MLP(LN(·)) with exact (erf) GELU."""

    def __init__(self, width: int, heads: int, mlp: int, eps: float):
        super().__init__()
        self.attention = MAEAttention(width, heads)
        self.intermediate = _Dense(width, mlp)
        self.output = _Dense(mlp, width)
        self.layernorm_before = nn.LayerNorm(width, eps=eps)
        self.layernorm_after = nn.LayerNorm(width, eps=eps)

    def forward(self, x: torch.Tensor, packed: Packed) -> torch.Tensor:
        context = self.attention.attention(self.layernorm_before(x), packed)
        x = x + self.attention.output.dense(context)
        hidden = F.gelu(self.intermediate.dense(self.layernorm_after(x)))
        return x + self.output.dense(hidden)


# ---- encoder -------------------------------------------------------------------------------------

class _PatchEmbeddings(nn.Module):
    def __init__(self, cfg: MAEConfig):
        super().__init__()
        self.projection = nn.Conv2d(cfg.num_channels, cfg.hidden_size, cfg.patch_size, cfg.patch_size)


def _scale_of_id(cfg: MAEConfig) -> torch.Tensor:
    return torch.tensor([i for i, n in enumerate(cfg.per_scale) for _ in range(n)], dtype=torch.long)


class MAEEmbeddings(nn.Module):
    """CLS token, patch projection, and the per-token additive embeddings of the encoder."""

    def __init__(self, cfg: MAEConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.register_buffer("position_embeddings", sincos_2d(d, cfg.base_grid)[None])
        self.scale_embed = nn.Parameter(torch.zeros(len(cfg.scales), d))
        self.time_embed = nn.Parameter(torch.zeros(cfg.max_frames, d))
        self.patch_embeddings = _PatchEmbeddings(cfg)
        self.register_buffer("scale_of_id", _scale_of_id(cfg), persistent=False)

    def token_table(self) -> torch.Tensor:
        """(N, D): the sin-cos table bicubic-resampled (2-D) to each scale's grid + scale_embed."""
        cfg, side = self.cfg, self.cfg.base_grid
        base = self.position_embeddings[0, 1:].float().reshape(side, side, -1).permute(2, 0, 1)[None]
        blocks = []
        for g in cfg.grids:
            grid = base if g == side else F.interpolate(base, size=(g, g), mode="bicubic", align_corners=False)
            blocks.append(grid[0].permute(1, 2, 0).reshape(g * g, -1))
        table = torch.cat(blocks, 0).to(self.scale_embed.dtype)
        return table + self.scale_embed[self.scale_of_id]

    def cls(self) -> torch.Tensor:
        """(D,) the CLS input: cls_token + position_embeddings[0]."""
        return self.cls_token[0, 0] + self.position_embeddings[0, 0].to(self.cls_token.dtype)

    def forward(self, video: torch.Tensor, packed: Packed) -> torch.Tensor:
        """video (B, T, C, S, S) task space; packed gazed tokens → (L, D) token embeddings.

        Only the gazed patches are projected (the conv as a matmul on gathered patches)."""
        cfg = self.cfg
        B, T, C, S, _ = video.shape
        p = cfg.patch_size
        weight = self.patch_embeddings.projection.weight
        flat = video.reshape(B * T, C, S, S).to(weight.dtype)
        out = flat.new_zeros(packed.num_tokens, cfg.hidden_size)
        for i, (s, g) in enumerate(zip(cfg.scales, cfg.grids)):
            sel = torch.nonzero(packed.scale == i).squeeze(1)
            if sel.numel() == 0:
                continue
            frames = flat if s == S else F.interpolate(flat, size=(s, s), mode="bicubic", align_corners=False)
            cells = frames.view(B, T, C, g, p, g, p).permute(0, 1, 3, 5, 2, 4, 6)
            patches = cells[packed.clip[sel], packed.frame[sel], packed.row[sel], packed.col[sel]]
            emb = F.linear(patches.reshape(sel.numel(), -1), weight.reshape(weight.shape[0], -1),
                           self.patch_embeddings.projection.bias)
            out = out.index_copy(0, sel, emb.to(out.dtype))
        return out + self.token_table()[packed.ids] + self.time_embed[packed.frame]


class _Encoder(nn.Module):
    def __init__(self, cfg: MAEConfig):
        super().__init__()
        self.layer = nn.ModuleList(
            MAELayer(cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size, cfg.layer_norm_eps)
            for _ in range(cfg.num_hidden_layers))


class MAEViT(nn.Module):
    """``vit.*``: embeddings, block-causal encoder layers, final LayerNorm."""

    def __init__(self, cfg: MAEConfig):
        super().__init__()
        self.embeddings = MAEEmbeddings(cfg)
        self.encoder = _Encoder(cfg)
        self.layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, packed: Packed) -> torch.Tensor:
        """x (L', D) packed sequence (CLS included as its own frame) → (L', D) after the final LN."""
        for layer in self.encoder.layer:
            x = layer(x, packed)
        return self.layernorm(x)


# ---- decoder -------------------------------------------------------------------------------------

class MAEDecoder(nn.Module):
    """``decoder.*``: embedding to decoder width, mask token, embeddings, layers, pixel head."""

    def __init__(self, cfg: MAEConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.decoder_hidden_size
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.register_buffer("decoder_pos_embed", sincos_2d(d, cfg.base_grid)[None])
        self.decoder_scale_embed = nn.Parameter(torch.zeros(len(cfg.scales), d))
        self.time_embed = nn.Parameter(torch.zeros(cfg.max_frames, d))
        self.decoder_embed = nn.Linear(cfg.hidden_size, d)
        self.decoder_layers = nn.ModuleList(
            MAELayer(d, cfg.decoder_num_attention_heads, cfg.decoder_intermediate_size, cfg.layer_norm_eps)
            for _ in range(cfg.decoder_num_hidden_layers))
        self.decoder_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.decoder_pred = nn.Linear(d, cfg.patch_size ** 2 * cfg.num_channels)
        self.register_buffer("scale_of_id", _scale_of_id(cfg), persistent=False)

    def token_table(self) -> torch.Tensor:
        """(N, Dd): per scale the flattened sin-cos table resampled by **1-D** bicubic
        interpolation to length (s/p)² (the HF ViTMAE decoder quirk, §10.2 step 5; the identity at
        the base grid), + decoder_scale_embed."""
        base = self.decoder_pos_embed[0, 1:].float().t()[None, :, None, :]   # (1, Dd, 1, G²)
        blocks = []
        for n in self.cfg.per_scale:
            line = base if n == base.shape[-1] else F.interpolate(base, size=(1, n), mode="bicubic",
                                                                  align_corners=False)
            blocks.append(line[0, :, 0].t())
        table = torch.cat(blocks, 0).to(self.decoder_scale_embed.dtype)
        return table + self.decoder_scale_embed[self.scale_of_id]

    def forward(self, x: torch.Tensor, packed: Packed) -> torch.Tensor:
        """x (L', Dd) packed decoder sequence → (L', Dd) after the layers (no norm, no head)."""
        for layer in self.decoder_layers:
            x = layer(x, packed)
        return x


def init_weights(module: nn.Module, std: float) -> None:
    """ViT-MAE style init: linears/conv N(0, std) with zero bias, LayerNorm (1, 0), learned tokens
    and scale/time embeddings N(0, std)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(m.weight, std=std)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for name, p in module.named_parameters():
        if name.rsplit(".", 1)[-1] in ("cls_token", "mask_token", "scale_embed", "time_embed",
                                       "decoder_scale_embed"):
            nn.init.normal_(p, std=std)

