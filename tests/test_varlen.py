"""Packed varlen helpers: per-token indices, frame-aware attention vs the dense reference and a
naive softmax, scatter/gather round trips, and bad inputs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from autogaze_ext.varlen import (MODES, gather_tokens, pack, scatter_tokens, varlen_attention,
                                 varlen_attention_reference)

PER_SCALE = [4, 16, 49, 196]


def random_gaze(counts: torch.Tensor, per_scale=PER_SCALE, seed: int = 0):
    """counts (B, T) tokens per frame → ids (L,) (distinct per frame, random order), offsets."""
    gen = torch.Generator().manual_seed(seed)
    n = sum(per_scale)
    ids = [torch.randperm(n, generator=gen)[: int(c)] for c in counts.flatten()]
    ids = torch.cat(ids) if ids else torch.zeros(0, dtype=torch.long)
    return ids, F.pad(counts.flatten().cumsum(0), (1, 0))


def qkv(length: int, heads: int = 2, dim: int = 4, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(length, heads, dim, generator=gen) for _ in range(3)]


def naive_attention(q, k, v, packed, mode):
    """Token-by-token softmax with visibility written out from the definitions."""
    out = torch.zeros_like(q)
    clip, frame = packed.clip.tolist(), packed.frame.tolist()
    for i in range(q.shape[0]):
        keys = []
        for j in range(q.shape[0]):
            if clip[j] != clip[i]:
                continue
            if mode == "block_causal" and frame[j] > frame[i]:
                continue
            if mode == "causal" and j > i:
                continue
            if mode == "frame" and frame[j] != frame[i]:
                continue
            keys.append(j)
        s = torch.einsum("hd,khd->hk", q[i], k[keys]) / math.sqrt(q.shape[-1])
        out[i] = torch.einsum("hk,khd->hd", s.softmax(-1), v[keys])
    return out


def test_pack_indices():
    # B=2, T=3, tokens per frame [[2, 0, 3], [1, 1, 0]]
    ids = torch.tensor([0, 3, 4, 19, 20, 68, 264])
    offsets = torch.tensor([0, 2, 2, 5, 6, 7, 7])
    p = pack(ids, offsets, 2, 3, PER_SCALE)
    assert p.cu_seqlens.tolist() == [0, 5, 7]
    assert p.clip.tolist() == [0, 0, 0, 0, 0, 1, 1]
    assert p.frame.tolist() == [0, 0, 2, 2, 2, 0, 1]
    assert p.scale.tolist() == [0, 0, 1, 1, 2, 2, 3]
    assert p.row.tolist() == [0, 1, 0, 3, 0, 6, 13]
    assert p.col.tolist() == [0, 1, 0, 3, 0, 6, 13]
    assert p.grid_sides == (2, 4, 7, 14)


def test_pack_matches_loop():
    counts = torch.randint(0, 30, (5, 4), generator=torch.Generator().manual_seed(1))
    ids, offsets = random_gaze(counts)
    p = pack(ids, offsets, 5, 4, PER_SCALE)
    starts = [0, 4, 20, 69]
    k = 0
    for b in range(5):
        for t in range(4):
            for _ in range(int(counts[b, t])):
                i = int(ids[k])
                s = max(j for j in range(4) if starts[j] <= i)
                g = math.isqrt(PER_SCALE[s])
                assert (p.clip[k], p.frame[k], p.scale[k], p.row[k], p.col[k]) == \
                    (b, t, s, (i - starts[s]) // g, (i - starts[s]) % g)
                k += 1
    assert p.cu_seqlens.tolist() == offsets[::4].tolist()


# ---- attention ------------------------------------------------------------------------------

def _cases():
    g = torch.Generator().manual_seed(7)
    return {
        "one_token_clips": torch.tensor([[1, 0, 0], [0, 0, 1], [0, 1, 0]]),
        "empty_frames": torch.tensor([[3, 0, 0, 4, 0], [0, 0, 0, 0, 0], [0, 5, 0, 0, 2]]),
        "long_clip": torch.tensor([[150, 260, 0, 265, 200, 180]]),  # 1055 tokens
        "batch64": torch.randint(0, 8, (64, 3), generator=g),
        "batch1": torch.tensor([[5, 7]]),
    }


CASES = _cases()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_varlen_matches_dense_reference(case, mode):
    counts = CASES[case]
    ids, offsets = random_gaze(counts)
    p = pack(ids, offsets, *counts.shape, PER_SCALE)
    q, k, v = qkv(p.num_tokens)
    got = varlen_attention(q, k, v, p, mode)
    want = varlen_attention_reference(q, k, v, p, mode)
    assert got.shape == q.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_varlen_matches_naive(mode):
    counts = torch.tensor([[2, 0, 3], [1, 0, 0], [0, 4, 1]])
    ids, offsets = random_gaze(counts)
    p = pack(ids, offsets, 3, 3, PER_SCALE)
    q, k, v = qkv(p.num_tokens, heads=3, dim=5, seed=3)
    want = naive_attention(q, k, v, p, mode)
    torch.testing.assert_close(varlen_attention(q, k, v, p, mode), want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(varlen_attention_reference(q, k, v, p, mode), want, atol=1e-5, rtol=1e-5)


def test_varlen_clips_are_independent():
    counts = torch.tensor([[3, 4], [2, 5]])
    ids, offsets = random_gaze(counts)
    p = pack(ids, offsets, 2, 2, PER_SCALE)
    q, k, v = qkv(p.num_tokens)
    full = varlen_attention(q, k, v, p)
    alone = pack(ids[7:], offsets[2:] - 7, 1, 2, PER_SCALE)
    torch.testing.assert_close(full[7:], varlen_attention(q[7:], k[7:], v[7:], alone))


def test_varlen_empty_and_bf16():
    p = pack(torch.zeros(0, dtype=torch.long), torch.zeros(7, dtype=torch.long), 2, 3, PER_SCALE)
    q, k, v = qkv(0)
    assert varlen_attention(q, k, v, p).shape == (0, 2, 4)
    assert varlen_attention_reference(q, k, v, p).shape == (0, 2, 4)
    counts = torch.tensor([[3, 4], [2, 5]])
    ids, offsets = random_gaze(counts)
    p = pack(ids, offsets, 2, 2, PER_SCALE)
    q, k, v = qkv(p.num_tokens)
    got = varlen_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), p)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), varlen_attention(q, k, v, p), atol=3e-2, rtol=3e-2)


# ---- scatter ---------------------------------------------------------------------------------

SCATTER_COUNTS = {
    "random": torch.randint(0, 40, (3, 4), generator=torch.Generator().manual_seed(2)),
    "batch64": torch.randint(0, 6, (64, 2), generator=torch.Generator().manual_seed(3)),
    "one_token_clips": torch.ones(5, 1, dtype=torch.long),
    "clip_1000_plus": torch.full((1, 5), 265),
}


@pytest.mark.parametrize("case", sorted(SCATTER_COUNTS))
def test_scatter_round_trip(case):
    counts = SCATTER_COUNTS[case]
    b, t = counts.shape
    ids, offsets = random_gaze(counts)
    p = pack(ids, offsets, b, t, PER_SCALE)
    feats = torch.randn(p.num_tokens, 6)
    grids, masks = scatter_tokens(feats, p, PER_SCALE, b, t)
    assert [tuple(g.shape) for g in grids] == [(b, t, s, s, 6) for s in (2, 4, 7, 14)]
    assert [tuple(m.shape) for m in masks] == [(b, t, s, s) for s in (2, 4, 7, 14)]
    torch.testing.assert_close(gather_tokens(grids, p), feats, atol=0, rtol=0)
    # coverage = the set of gazed ids per frame; ungazed cells are zero
    cover = torch.cat([m.flatten(2) for m in masks], -1)  # (B,T,N)
    want = torch.zeros(b * t, sum(PER_SCALE), dtype=torch.bool)
    frame_index = torch.repeat_interleave(torch.arange(b * t), counts.flatten())
    want[frame_index, ids] = True
    assert torch.equal(cover, want.view(b, t, -1))
    for g, m in zip(grids, masks):
        assert bool((g[~m] == 0).all())


def test_bad_inputs():
    ids, offsets = random_gaze(torch.tensor([[2, 3]]))
    with pytest.raises(ValueError, match="frame_offsets"):
        pack(ids, offsets[:-1], 1, 2, PER_SCALE)
    with pytest.raises(ValueError, match="ids"):
        pack(ids + 300, offsets, 1, 2, PER_SCALE)
    with pytest.raises(ValueError, match="per_scale"):
        pack(ids, offsets, 1, 2, [4, 15])
    p = pack(ids, offsets, 1, 2, PER_SCALE)
    q, k, v = qkv(p.num_tokens)
    with pytest.raises(ValueError, match="mode"):
        varlen_attention(q, k, v, p, "sliding")
    with pytest.raises(ValueError, match="q must"):
        varlen_attention(q[:-1], k, v, p)
    with pytest.raises(ValueError, match="features"):
        scatter_tokens(torch.randn(2, 3), p)
