"""MAEReconstruction (spec §10): shapes, gradients, block-causality, a dense reference of the
official forward, pre-training, frame selection, checkpoints and official key loading."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from autogaze_ext import preprocess, synthetic_video
from autogaze_ext.tasks.mae import MAEConfig, MAEReconstruction, random_gaze
from autogaze_ext.tasks.mae_model import sincos_2d

TINY = dict(scales=(32, 64), frame_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, decoder_hidden_size=24, decoder_num_hidden_layers=2,
            decoder_num_attention_heads=2, decoder_intermediate_size=48, max_frames=8)


def tiny(**overrides) -> MAEConfig:
    return MAEConfig(**{**TINY, **overrides})


def randomize(model: MAEReconstruction, seed: int) -> MAEReconstruction:
    """Weights with O(1) activations so every term of the computation matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 and "embed" not in name and "token" not in name:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p[0].numel()))
            elif "layernorm" in name or "norm.weight" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
    return model


def model(seed=0, **overrides) -> MAEReconstruction:
    return randomize(MAEReconstruction(tiny(**overrides)), seed)


def video(B=2, T=4, seed=0, S=64):
    return torch.randn(B, T, 3, S, S, generator=torch.Generator().manual_seed(seed))


def gaze(B=2, T=4, ratio=(0.1, 0.6), seed=1, cfg=None):
    cfg = cfg or tiny()
    return random_gaze(B, T, cfg.per_scale, ratio, torch.Generator().manual_seed(seed))


# ---- a dense reference of the official forward (§10.2), written independently ---------------------

def _dense_layer(layer, x, allowed):
    """Pre-LN ViT layer over x (B, n, D) with a bool visibility (B, n, n)."""
    sa = layer.attention.attention
    B, n, D = x.shape
    h = layer.layernorm_before(x)
    q, k, v = (proj(h).view(B, n, sa.num_heads, -1).transpose(1, 2) for proj in (sa.query, sa.key, sa.value))
    att = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    att = att.masked_fill(~allowed[:, None], float("-inf")).softmax(-1)
    x = x + layer.attention.output.dense((att @ v).transpose(1, 2).reshape(B, n, D))
    return x + layer.output.dense(F.gelu(layer.intermediate.dense(layer.layernorm_after(x))))


def _official_mask(frame_of_slot, pad):
    """(B, 1+L, 1+L) visibility of the official mask: CLS sees CLS, all see CLS, slots see earlier
    slots and their whole frame, pads hidden as keys, diagonal forced for indices 0..L−1."""
    B, L = pad.shape
    idx = torch.arange(L)
    slots = (idx[None, :] <= idx[:, None])[None] | (frame_of_slot[:, None, :] == frame_of_slot[:, :, None])
    slots = slots & ~pad[:, None, :]
    allowed = torch.zeros(B, L + 1, L + 1, dtype=torch.bool)
    allowed[:, 1:, 1:] = slots
    allowed[:, :, 0] = True
    allowed[:, torch.arange(L), torch.arange(L)] = True
    return allowed


def dense_reference(m, task_video, ids, offsets, frames):
    """Official-style forward: embed everything, gather padded slots, dense masks.
    Returns encoded non-pad slots (L, D) in packed order and predictions (B, R, 3, S, S)."""
    cfg, vit, dec = m.config, m.vit, m.decoder
    B, T, C, S, _ = task_video.shape
    N, p, D, side = cfg.num_tokens, cfg.patch_size, cfg.hidden_size, cfg.base_grid
    flat = task_video.flatten(0, 1)
    emb = vit.embeddings
    pos = emb.position_embeddings[0]
    parts = []
    for i, (s, g) in enumerate(zip(cfg.scales, cfg.grids)):
        x = F.interpolate(flat, size=(s, s), mode="bicubic", align_corners=False)
        x = F.conv2d(x, emb.patch_embeddings.projection.weight, emb.patch_embeddings.projection.bias, stride=p)
        pe = pos[1:].reshape(1, side, side, D).permute(0, 3, 1, 2)
        pe = F.interpolate(pe, size=(g, g), mode="bicubic", align_corners=False)
        parts.append(x.flatten(2).transpose(1, 2) + pe.flatten(2).transpose(1, 2) + emb.scale_embed[i])
    tokens = (torch.cat(parts, 1).view(B, T, N, D) + emb.time_embed[:T, None]).reshape(B, T * N, D)
    # Padded official layout: frame t has budget K_t = max_b n_{b,t}; pads at the frame's end.
    counts = offsets.diff().view(B, T)
    budget = counts.max(0).values
    L = int(budget.sum())
    gazing_pos = torch.full((B, L), T * N)
    pad = torch.ones(B, L, dtype=torch.bool)
    frame_of_slot = torch.repeat_interleave(torch.arange(T), budget)[None].expand(B, L)
    starts = torch.cat([torch.zeros(1, dtype=torch.long), budget.cumsum(0)])
    for b in range(B):
        for t in range(T):
            f = b * T + t
            n = int(counts[b, t])
            gazing_pos[b, starts[t]:starts[t] + n] = t * N + ids[offsets[f]:offsets[f + 1]]
            pad[b, starts[t]:starts[t] + n] = False
    src = torch.cat([tokens, tokens[:, :1]], 1)
    x = torch.gather(src, 1, gazing_pos[..., None].expand(B, L, D))
    cls = (emb.cls_token[0] + pos[:1]).expand(B, 1, D)
    x = torch.cat([cls, x], 1)
    allowed = _official_mask(frame_of_slot, pad)
    for layer in vit.encoder.layer:
        x = _dense_layer(layer, x, allowed)
    x = vit.layernorm(x)
    encoded = x[:, 1:][~pad]
    # Decoder.
    y = dec.decoder_embed(x)
    Dd = y.shape[-1]
    grid = dec.mask_token.expand(B, T * N + 1, Dd).clone()
    grid = grid.scatter(1, gazing_pos[..., None].expand(B, L, Dd), y[:, 1:])
    base = dec.decoder_pos_embed[0, 1:].t()[None, :, None, :]
    table = torch.cat([F.interpolate(base, size=(1, n), mode="bicubic", align_corners=False)[0, :, 0].t()
                       + dec.decoder_scale_embed[i] for i, n in enumerate(cfg.per_scale)], 0)
    grid = (grid[:, :T * N].view(B, T, N, Dd) + table + dec.time_embed[:T, None]).reshape(B, T * N, Dd)
    grid = torch.cat([grid, grid[:, :1]], 1)
    seq, seq_frame, seq_pad, out_index = [], [], [], {}
    recon = set(frames.tolist())
    for t in range(T):
        if t in recon:
            out_index[t] = sum(int(s.shape[1]) for s in seq)
            seq.append(grid[:, t * N:(t + 1) * N])
            seq_pad.append(torch.zeros(B, N, dtype=torch.bool))
            seq_frame.append(torch.full((N,), t))
        else:
            sl = slice(int(starts[t]), int(starts[t + 1]))
            seq.append(torch.gather(grid, 1, gazing_pos[:, sl, None].expand(B, sl.stop - sl.start, Dd)))
            seq_pad.append(pad[:, sl])
            seq_frame.append(torch.full((sl.stop - sl.start,), t))
    z = torch.cat([y[:, :1] + dec.decoder_pos_embed[0, :1], *seq], 1)
    z_pad = torch.cat(seq_pad, 1)
    allowed = _official_mask(torch.cat(seq_frame)[None].expand(B, -1), z_pad)
    for layer in dec.decoder_layers:
        z = _dense_layer(layer, z, allowed)
    z = dec.decoder_pred(dec.decoder_norm(z))[:, 1:]
    g = cfg.grids[-1]
    preds = []
    for t in frames.tolist():
        tok = z[:, out_index[t] + N - g * g: out_index[t] + N].view(B, g, g, p, p, 3)
        preds.append(torch.einsum("bhwpqc->bchpwq", tok).reshape(B, 3, g * p, g * p))
    return encoded, torch.stack(preds, 1)


# ---- tests -----------------------------------------------------------------------------------------

def test_shapes_finite_and_slot_targets():
    m = model()
    v = video()
    ids, offsets = gaze()
    out = m(v, ids, offsets, generator=torch.Generator().manual_seed(0))
    assert out.losses.shape == out.rewards.shape == (2, 1)          # int(4 · 0.125) → at least 1
    assert out.frames.shape == (1,) and out.frames.dtype == torch.long
    assert out.recon.shape == (2, 1, 3, 64, 64)
    assert torch.isfinite(out.losses).all() and torch.isfinite(out.recon).all()
    assert torch.equal(out.rewards, -out.losses.detach())
    # slot targets: the loss at the last slot of each reconstructed frame, nowhere else
    full = m(v, ids, offsets, frames="all")
    assert full.losses.shape == (2, 4) and torch.equal(full.frames, torch.arange(4))
    assert int(full.slot_mask.sum()) == 8
    last = offsets[1:] - 1
    assert torch.equal(full.slot_mask.nonzero().squeeze(1), last)
    assert torch.allclose(full.slot_targets[last], full.losses.detach().flatten())
    assert (full.slot_targets[~full.slot_mask] == 0).all()
    assert torch.allclose(m.frame_losses(v, ids, offsets), full.losses)


def test_matches_dense_official_reference():
    m = model(seed=3)
    v = video(seed=4)
    ids, offsets = gaze(ratio=(0.05, 0.7), seed=5)
    with torch.no_grad():
        for frames in (torch.tensor([2, 0]), torch.arange(4), torch.tensor([3])):
            out = m(v, ids, offsets, frames=frames)
            task = m.to_task_space(v)
            enc_ref, pred_ref = dense_reference(m, task, ids, offsets, frames)
            assert torch.allclose(out.recon, pred_ref, atol=1e-4, rtol=1e-4)
            assert torch.allclose(out.losses, (pred_ref - task[:, frames]).abs().mean((2, 3, 4)), atol=1e-5)
        # the sparse encoder alone (all frames) equals the dense masked encoder
        from autogaze_ext.varlen import pack
        enc, _ = m.encode(task, pack(ids, offsets, 2, 4, m.config.per_scale))
        assert torch.allclose(enc, enc_ref, atol=1e-4, rtol=1e-4)


def test_gradients_reach_every_parameter():
    m = model()
    ids, offsets = gaze()
    out = m(video(), ids, offsets, frames=torch.tensor([1, 3]))
    out.losses.sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert m.vit.embeddings.position_embeddings.requires_grad is False   # fixed sin-cos buffers


def test_bf16_autocast_matches_float32():
    m = model(seed=1)
    ids, offsets = gaze()
    v = video()
    frames = torch.tensor([1, 3])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = m(v, ids, offsets, frames=frames)
    low.losses.sum().backward()
    ref = m(v, ids, offsets, frames=frames)
    assert low.recon.dtype == torch.bfloat16
    assert torch.allclose(low.losses, ref.losses, rtol=2e-2)
    assert all(p.grad is not None for p in m.parameters())


def test_block_causal():
    m = model(seed=2)
    v = video(seed=2)
    ids, offsets = gaze(seed=3)
    with torch.no_grad():
        base = m.frame_losses(v, ids, offsets)
        # later frame's pixels and gaze changed → earlier losses unchanged
        v2 = v.clone()
        v2[:, 2:] = torch.randn_like(v2[:, 2:])
        ids2 = ids.clone()
        for b in range(2):
            f = b * 4 + 3
            ids2[offsets[f]:offsets[f + 1]] = torch.randperm(m.config.num_tokens)[:int(offsets[f + 1] - offsets[f])]
        changed = m.frame_losses(v2, ids2, offsets)
        assert torch.allclose(changed[:, :2], base[:, :2], atol=1e-6)
        assert not torch.allclose(changed[:, 2:], base[:, 2:], atol=1e-4)
        # earlier frame's gaze changed (frame 1 of clip 0) → later losses of clip 0 change
        ids3 = ids.clone()
        lo, hi = int(offsets[1]), int(offsets[2])
        ids3[lo:hi] = torch.randperm(m.config.num_tokens)[:hi - lo]
        third = m.frame_losses(v, ids3, offsets)
        assert torch.allclose(third[:, 0], base[:, 0], atol=1e-6)
        assert (third[0, 1:] - base[0, 1:]).abs().min() > 1e-6
        assert torch.allclose(third[1], base[1], atol=1e-6)          # clips never interact
        # which frames are reconstructed is part of the decoder input (full grids), but a later
        # reconstructed frame cannot change an earlier one (and the skipped tail changes nothing)
        part = m(v, ids, offsets, frames=torch.tensor([2, 1])).losses
        more = m(v, ids, offsets, frames=torch.tensor([1, 2, 3])).losses
        assert torch.allclose(part, more[:, [1, 0]], atol=1e-6)
        assert not torch.allclose(part[:, 0], base[:, 2], atol=1e-4)   # frame 0's grid is seen by 2


def test_frame_selection_and_reproducibility():
    m = model()
    v = video(T=8)
    ids, offsets = gaze(T=8)
    with torch.no_grad():
        a = m(v, ids, offsets, generator=torch.Generator().manual_seed(7))
        b = m(v, ids, offsets, generator=torch.Generator().manual_seed(7))
    assert a.frames.shape == (1,) and torch.equal(a.frames, b.frames) and torch.equal(a.losses, b.losses)
    seen = {int(m(v, ids, offsets, generator=torch.Generator().manual_seed(s)).frames[0]) for s in range(12)}
    assert len(seen) > 2
    m2 = model(sample_rate=0.5)
    with torch.no_grad():
        out = m2(v, ids, offsets, generator=torch.Generator().manual_seed(0))
    assert out.frames.shape == (4,) and out.frames.unique().numel() == 4
    with pytest.raises(ValueError, match="frames"):
        m(v, ids, offsets, frames=torch.tensor([8]))
    with pytest.raises(ValueError, match="frames"):
        m(v, ids, offsets, frames=torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="frames"):
        m(v, ids, offsets, frames="some")


def test_random_gaze():
    gen = torch.Generator().manual_seed(0)
    ids, offsets = random_gaze(3, 5, (4, 16), (0.1, 0.9), gen)
    counts = offsets.diff()
    assert offsets.shape == (16,) and int(offsets[-1]) == ids.shape[0]
    assert (counts >= 1).all() and (counts <= 20).all() and counts.unique().numel() > 1
    for f in range(15):
        frame = ids[offsets[f]:offsets[f + 1]]
        assert frame.unique().numel() == frame.numel() and frame.min() >= 0 and frame.max() < 20
    ids, offsets = random_gaze(1, 2, (4, 16), 1.0, gen)
    assert torch.equal(offsets, torch.tensor([0, 20, 40]))
    with pytest.raises(ValueError, match="ratio"):
        random_gaze(1, 2, (4, 16), (0.6, 0.2))


def test_task_space_conversion():
    frames = torch.from_numpy(synthetic_video(2, 64, 64, seed=1))
    gaze_space = preprocess(frames, size={"height": 64, "width": 64})          # release processor
    m = MAEReconstruction(tiny())                                             # 1/255 + ImageNet
    mean = torch.tensor(m.config.image_mean)[:, None, None]
    std = torch.tensor(m.config.image_std)[:, None, None]
    expected = (frames.permute(0, 3, 1, 2).float() / 255 - mean) / std
    assert torch.allclose(m.to_task_space(gaze_space), expected, atol=1e-5)
    large_space = MAEReconstruction(tiny(rescale_factor=1 / 127.5, offset=True))
    assert large_space.to_task_space(gaze_space) is gaze_space               # Vivit space = release


def test_pretraining_learns_and_more_gaze_helps():
    torch.manual_seed(0)
    frames = torch.from_numpy(synthetic_video(4, 64, 64, seed=3))
    clip = preprocess(frames, size={"height": 64, "width": 64})[None]
    m = MAEReconstruction(tiny(sample_rate=0.5))
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(40):
        loss = m.pretrain_loss(clip, gen, ratio=(0.05, 0.8))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5])
    full = random_gaze(1, 4, m.config.per_scale, 1.0, gen)
    sparse = random_gaze(1, 4, m.config.per_scale, 0.05, gen)
    assert m.frame_losses(clip, *full).mean() < 0.8 * m.frame_losses(clip, *sparse).mean()


def official_keys(cfg: MAEConfig) -> dict[str, tuple]:
    """The official names and shapes of §10.1, written out (without the 'mae.' prefix)."""
    D, Dd, M, Md = cfg.hidden_size, cfg.decoder_hidden_size, cfg.intermediate_size, cfg.decoder_intermediate_size
    P, K, F_ = cfg.base_grid ** 2 + 1, len(cfg.scales), cfg.max_frames
    keys = {"vit.embeddings.cls_token": (1, 1, D), "vit.embeddings.position_embeddings": (1, P, D),
            "vit.embeddings.scale_embed": (K, D), "vit.embeddings.time_embed": (F_, D),
            "vit.embeddings.patch_embeddings.projection.weight": (D, 3, 16, 16),
            "vit.embeddings.patch_embeddings.projection.bias": (D,),
            "vit.layernorm.weight": (D,), "vit.layernorm.bias": (D,),
            "decoder.mask_token": (1, 1, Dd), "decoder.decoder_pos_embed": (1, P, Dd),
            "decoder.decoder_scale_embed": (K, Dd), "decoder.time_embed": (F_, Dd),
            "decoder.decoder_embed.weight": (Dd, D), "decoder.decoder_embed.bias": (Dd,),
            "decoder.decoder_norm.weight": (Dd,), "decoder.decoder_norm.bias": (Dd,),
            "decoder.decoder_pred.weight": (768, Dd), "decoder.decoder_pred.bias": (768,)}

    def layer(prefix, d, m):
        for name in ("query", "key", "value"):
            keys[f"{prefix}.attention.attention.{name}.weight"] = (d, d)
            keys[f"{prefix}.attention.attention.{name}.bias"] = (d,)
        keys.update({f"{prefix}.attention.output.dense.weight": (d, d), f"{prefix}.attention.output.dense.bias": (d,),
                     f"{prefix}.intermediate.dense.weight": (m, d), f"{prefix}.intermediate.dense.bias": (m,),
                     f"{prefix}.output.dense.weight": (d, m), f"{prefix}.output.dense.bias": (d,)})
        for ln in ("layernorm_before", "layernorm_after"):
            keys[f"{prefix}.{ln}.weight"] = (d,)
            keys[f"{prefix}.{ln}.bias"] = (d,)

    for i in range(cfg.num_hidden_layers):
        layer(f"vit.encoder.layer.{i}", D, M)
    for i in range(cfg.decoder_num_hidden_layers):
        layer(f"decoder.decoder_layers.{i}", Dd, Md)
    return keys


def test_sincos_table_layout():
    """ViT-MAE's table: numpy meshgrid in 'xy' order, first half of the channels from the column."""
    dim, side = 16, 3
    col, row = np.meshgrid(np.arange(side, dtype=np.float64), np.arange(side, dtype=np.float64))

    def one(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2) / (d / 2.0))
        out = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], 1)

    ref = np.concatenate([np.zeros((1, dim)), np.concatenate([one(dim // 2, col), one(dim // 2, row)], 1)], 0)
    assert torch.allclose(sincos_2d(dim, side), torch.from_numpy(ref).float(), atol=1e-6)


def test_official_key_loading(tmp_path):
    cfg = tiny()
    keys = official_keys(cfg)
    gen = torch.Generator().manual_seed(11)
    state = {f"mae.{k}": 0.3 * torch.randn(shape, generator=gen) for k, shape in keys.items()}
    state["mae.dinov2_reg.embeddings.cls_token"] = torch.zeros(1, 1, 8)
    state["mae.siglip2.vision_model.post_layernorm.weight"] = torch.ones(8)
    m = MAEReconstruction(cfg)
    ignored = m.load_official_state_dict(state)
    assert ignored == ["mae.dinov2_reg.embeddings.cls_token", "mae.siglip2.vision_model.post_layernorm.weight"]
    # a module whose weights were copied one by one by attribute path
    direct = MAEReconstruction(cfg)
    with torch.no_grad():
        for name, value in state.items():
            if name.startswith(("mae.dinov2_reg", "mae.siglip2")):
                continue
            *path, leaf = name[4:].split(".")
            owner = direct
            for part in path:
                owner = owner[int(part)] if part.isdigit() else getattr(owner, part)
            getattr(owner, leaf).copy_(value)
    ids, offsets = gaze()
    v = video()
    with torch.no_grad():
        assert torch.equal(m(v, ids, offsets, frames="all").recon, direct(v, ids, offsets, frames="all").recon)
    # from a file
    torch.save(state, tmp_path / "videomae.pt")
    again = MAEReconstruction(cfg)
    again.load_official_state_dict(tmp_path / "videomae.pt")
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), m.state_dict().values()))
    # errors: wrong shape, missing, unexpected
    bad = dict(state)
    bad["mae.decoder.decoder_pred.weight"] = torch.zeros(768, cfg.decoder_hidden_size + 1)
    with pytest.raises(ValueError, match="decoder_pred.weight"):
        MAEReconstruction(cfg).load_official_state_dict(bad)
    missing = {k: v for k, v in state.items() if k != "mae.vit.layernorm.bias"}
    with pytest.raises(ValueError, match="missing"):
        MAEReconstruction(cfg).load_official_state_dict(missing)
    with pytest.raises(ValueError, match="unexpected"):
        MAEReconstruction(cfg).load_official_state_dict({**state, "mae.vit.extra": torch.zeros(1)})


def test_official_large_sizes():
    keys = official_keys(MAEConfig.official_large())
    assert keys["vit.embeddings.position_embeddings"] == (1, 197, 1024)
    assert keys["decoder.decoder_pred.weight"] == (768, 512)
    with torch.device("meta"):
        large = MAEReconstruction(MAEConfig.official_large())
    shapes = {k: tuple(v.shape) for k, v in large.state_dict().items()}
    assert shapes == keys


def test_save_load_round_trip(tmp_path):
    m = model(seed=5, sample_rate=0.25)
    m.save_pretrained(tmp_path / "mae")
    loaded = MAEReconstruction.from_pretrained(tmp_path / "mae")
    assert loaded.config == m.config
    ids, offsets = gaze()
    v = video()
    with torch.no_grad():
        assert torch.equal(loaded(v, ids, offsets, frames="all").recon, m(v, ids, offsets, frames="all").recon)
    with pytest.raises(FileNotFoundError):
        MAEReconstruction.from_pretrained(tmp_path / "missing")


def test_perceptual_term():
    calls = []

    def perceptual(pred, target):
        calls.append(pred.shape)
        return (pred - target).pow(2).mean((1, 2, 3))

    m = model()
    plain = model()
    m.perceptual, m.perceptual_weight = perceptual, 0.3
    ids, offsets = gaze()
    v = video()
    with torch.no_grad():
        out = m(v, ids, offsets, frames=torch.tensor([0, 2]))
        ref = plain(v, ids, offsets, frames=torch.tensor([0, 2]))
    mse = (ref.recon - m.to_task_space(v)[:, [0, 2]]).pow(2).mean((2, 3, 4))
    assert calls == [(4, 3, 64, 64)]
    assert torch.allclose(out.losses, ref.losses + 0.3 * mse, atol=1e-5)


def test_validation_errors():
    m = model()
    v = video()
    ids, offsets = gaze()
    with pytest.raises(ValueError, match="video"):
        m(v[0], ids, offsets)
    with pytest.raises(ValueError, match="video"):
        m(video(S=32), ids, offsets)
    with pytest.raises(TypeError, match="float"):
        m(v.to(torch.uint8), ids, offsets)
    with pytest.raises(ValueError, match="max_frames"):
        m(video(T=9), *gaze(T=9))
    with pytest.raises(ValueError, match="ids"):
        m(v, ids.float(), offsets)
    with pytest.raises(ValueError, match="ids must lie"):
        m(v, ids + m.config.num_tokens, offsets)
    with pytest.raises(ValueError, match="B\\*T\\+1"):
        m(v, ids, offsets[:-1])
    with pytest.raises(ValueError, match="frame_offsets"):
        m(v, ids[:-1], offsets)
    bad = offsets.clone()
    bad[2] = offsets[3] + 1
    with pytest.raises(ValueError, match="non-decreasing"):
        m(v, ids, bad)
    with pytest.raises(ValueError, match="frame_size"):
        MAEConfig(scales=(32, 64), frame_size=224)
    with pytest.raises(ValueError, match="divisible"):
        tiny(num_attention_heads=3)
    with pytest.raises(TypeError, match="MAEConfig"):
        MAEReconstruction({"hidden_size": 8})
