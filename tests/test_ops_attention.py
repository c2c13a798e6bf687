"""Native varlen_attention (C++ / CUDA) against reference.varlen_attention and the colleague's
varlen.varlen_attention_reference, over packed layouts built with varlen.pack and key_ranges."""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from autogaze_ext import ops, reference, varlen

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
MODES = ops.ATTENTION_MODES
FLOAT32_ATOL = 1e-5
# Reduced precision: both sides compute in float32 from the same inputs and round once, so they
# may differ by one ulp of the output (plus the float32 error).
REDUCED_TOL = {torch.bfloat16: dict(rtol=2.0**-7, atol=1e-4), torch.float16: dict(rtol=2.0**-10, atol=1e-4)}


def layout(counts, frames, device="cpu"):
    """varlen.Packed for B = len(counts) / frames clips with the given tokens per frame."""
    counts = torch.tensor(counts, dtype=torch.long)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
    ids = torch.zeros(int(offsets[-1]), dtype=torch.long)
    return varlen.pack(ids.to(device), offsets.to(device), counts.numel() // frames, frames, [4])


def random_counts(batch, frames, high, seed, empty=0.2):
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(1, high + 1, (batch * frames,), generator=g)
    counts[torch.rand(batch * frames, generator=g) < empty] = 0
    return counts.tolist()


LAYOUTS = {
    "one-token-clips": ([1] * 7, 1),
    "empty-frames": ([3, 0, 2, 0, 0, 0, 0, 5, 0, 1, 1, 0], 4),  # clip 1 has no tokens at all
    "long-clip": ([300, 280, 250, 210], 4),  # 1040 tokens in one clip
    "batch1": (random_counts(1, 5, 9, seed=1), 5),
    "batch64": (random_counts(64, 3, 6, seed=2), 3),
    "tile-crossing": ([63, 2, 64, 65, 1, 129], 3),  # frame and clip edges off the 64-key tiles
}


def qkv(length, heads, kv_heads, dim, dtype=torch.float32, device="cpu", seed=0, contiguous=True):
    g = torch.Generator().manual_seed(seed)
    def rand(*shape):
        return torch.randn(shape, generator=g).to(device=device, dtype=dtype)

    if contiguous:
        q, k, v = rand(length, heads, dim), rand(length, kv_heads, dim), rand(length, kv_heads, dim)
    else:  # q (H, L, D) transposed, k every other head_dim column, v every other token
        q = rand(heads, length, dim).transpose(0, 1)
        k = rand(length, kv_heads, 2 * dim)[..., ::2]
        v = rand(2 * length, kv_heads, dim)[::2]
    if not contiguous:
        assert not (q.is_contiguous() or k.is_contiguous() or v.is_contiguous())
    return q, k, v


def check(actual, expected, dtype):
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    if dtype == torch.float32:
        torch.testing.assert_close(actual, expected, rtol=0, atol=FLOAT32_ATOL)
    else:
        torch.testing.assert_close(actual.float(), expected.float(), **REDUCED_TOL[dtype])


# --- numerics --------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(LAYOUTS))
@pytest.mark.parametrize("mode", MODES)
def test_matches_reference_every_mode(device, name, mode):
    packed = layout(*LAYOUTS[name], device=device)
    lo, hi = ops.key_ranges(packed, mode=mode)
    heads, kv_heads, dim = (4, 2, 16) if device == "cpu" else (8, 2, 64)
    q, k, v = qkv(packed.num_tokens, heads, kv_heads, dim, device=device)
    out = ops.varlen_attention(q, k, v, lo, hi)
    check(out, reference.varlen_attention(q, k, v, lo, hi), torch.float32)
    # the colleague's ground truth (no GQA: expand k / v to q's heads)
    group = heads // kv_heads
    kk, vv = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    torch.testing.assert_close(out, varlen.varlen_attention_reference(q, kk, vv, packed, mode), rtol=0,
                               atol=FLOAT32_ATOL)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("mode", MODES)
def test_reduced_precision_computes_in_float32(device, dtype, mode):
    packed = layout(*LAYOUTS["tile-crossing"], device=device)
    lo, hi = ops.key_ranges(packed, mode=mode)
    q, k, v = qkv(packed.num_tokens, 4, 1, 32, dtype=dtype, device=device, seed=3)
    check(ops.varlen_attention(q, k, v, lo, hi), reference.varlen_attention(q, k, v, lo, hi), dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("heads,kv_heads", [(1, 1), (3, 3), (6, 2), (8, 1)])
def test_gqa(device, heads, kv_heads):
    packed = layout(*LAYOUTS["batch64"], device=device)
    lo, hi = ops.key_ranges(packed, mode="block_causal")
    q, k, v = qkv(packed.num_tokens, heads, kv_heads, 8, device=device, seed=4)
    check(ops.varlen_attention(q, k, v, lo, hi), reference.varlen_attention(q, k, v, lo, hi), torch.float32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_non_contiguous_inputs(device, dtype):
    packed = layout(*LAYOUTS["tile-crossing"], device=device)
    lo, hi = ops.key_ranges(packed, mode="causal")
    q, k, v = qkv(packed.num_tokens, 4, 2, 16, dtype=dtype, device=device, seed=5, contiguous=False)
    lo_strided = torch.stack([lo, lo], 1)[:, 0]
    out = ops.varlen_attention(q, k, v, lo_strided, hi)
    assert out.is_contiguous()
    check(out, reference.varlen_attention(q, k, v, lo, hi), dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_arbitrary_ranges_and_scale(device):
    """Any ranges with 0 <= lo < hi <= L, not only those of the four modes; explicit scale."""
    g = torch.Generator().manual_seed(6)
    length = 300
    lo = torch.randint(0, length, (length,), generator=g)
    hi = lo + 1 + (torch.rand(length, generator=g) * (length - lo)).long()
    lo, hi = lo.to(device), hi.clamp(max=length).to(device)
    q, k, v = qkv(length, 2, 1, 24, device=device, seed=7)
    for scale, atol in ((None, FLOAT32_ATOL), (0.05, FLOAT32_ATOL), (3.0, 5e-5)):
        # scores of size s carry float32 rounding ~ s * 2^-24 into the weights: larger scale, larger error
        out = ops.varlen_attention(q, k, v, lo, hi, scale)
        torch.testing.assert_close(out, reference.varlen_attention(q, k, v, lo, hi, scale), rtol=0, atol=atol)


@pytest.mark.parametrize("device", DEVICES)
def test_large_scores_are_stable(device):
    """Max subtraction: scores far beyond float32 exp range give no inf / nan."""
    packed = layout(*LAYOUTS["tile-crossing"], device=device)
    lo, hi = ops.key_ranges(packed, mode="bidirectional")
    q, k, v = qkv(packed.num_tokens, 2, 2, 16, device=device, seed=8)
    out = ops.varlen_attention(q * 30, k * 30, v, lo, hi)
    assert torch.isfinite(out).all()
    ref = reference.varlen_attention(q * 30, k * 30, v, lo, hi)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-3)  # scores ~ 1e4: rounding ~ 1e4 * 2^-24


@pytest.mark.parametrize("device", DEVICES)
def test_empty_sequence(device):
    q, k, v = qkv(0, 2, 1, 8, device=device)
    lo = hi = torch.zeros(0, dtype=torch.long, device=device)
    assert ops.varlen_attention(q, k, v, lo, hi).shape == (0, 2, 8)


@pytest.mark.cuda
@pytest.mark.parametrize("dim", [20, 32, 64, 72, 80, 96, 128])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cuda_head_dims(dim, dtype):
    packed = layout(*LAYOUTS["tile-crossing"], device="cuda")
    lo, hi = ops.key_ranges(packed, mode="block_causal")
    q, k, v = qkv(packed.num_tokens, 4, 2, dim, dtype=dtype, device="cuda", seed=dim)
    check(ops.varlen_attention(q, k, v, lo, hi), reference.varlen_attention(q, k, v, lo, hi), dtype)


@pytest.mark.cuda
@pytest.mark.parametrize("mode", MODES)
def test_cuda_matches_cpu(mode):
    packed = layout(*LAYOUTS["long-clip"])
    lo, hi = ops.key_ranges(packed, mode=mode)
    q, k, v = qkv(packed.num_tokens, 4, 2, 64, seed=9)
    cpu = ops.varlen_attention(q, k, v, lo, hi)
    gpu = ops.varlen_attention(*(t.cuda() for t in (q, k, v, lo, hi)))
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=FLOAT32_ATOL)


# --- key_ranges ------------------------------------------------------------------------------


def test_key_ranges_values():
    packed = layout([2, 0, 1, 3, 1, 0], 3)  # clip 0: frames of 2, 0, 1 tokens; clip 1: 3, 1, 0
    expected = {
        "block_causal": ([0, 0, 0, 3, 3, 3, 3], [2, 2, 3, 6, 6, 6, 7]),
        "causal": ([0, 0, 0, 3, 3, 3, 3], [1, 2, 3, 4, 5, 6, 7]),
        "bidirectional": ([0, 0, 0, 3, 3, 3, 3], [3, 3, 3, 7, 7, 7, 7]),
        "frame": ([0, 0, 2, 3, 3, 3, 6], [2, 2, 3, 6, 6, 6, 7]),
    }
    for mode, (lo, hi) in expected.items():
        got_lo, got_hi = ops.key_ranges(packed, mode=mode)
        assert got_lo.dtype == got_hi.dtype == torch.int64
        assert (got_lo.tolist(), got_hi.tolist()) == (lo, hi), mode
        # the same from cu_seqlens / frame_offsets tensors
        alt = ops.key_ranges(packed.cu_seqlens, packed.frame_offsets, mode=mode)
        assert (alt[0].tolist(), alt[1].tolist()) == (lo, hi), mode


def test_key_ranges_errors():
    packed = layout([1, 2], 1)
    with pytest.raises(ValueError, match="mode must be one of"):
        ops.key_ranges(packed, mode="sliding")
    with pytest.raises(ValueError, match="needs frame_offsets"):
        ops.key_ranges(packed.cu_seqlens, mode="frame")
    lo, hi = ops.key_ranges(packed.cu_seqlens, mode="causal")
    assert hi.tolist() == [1, 2, 3]


# --- torch.compile and op registration ---------------------------------------------------------


def test_opcheck():
    packed = layout(*LAYOUTS["empty-frames"])
    lo, hi = ops.key_ranges(packed, mode="block_causal")
    q, k, v = qkv(packed.num_tokens, 4, 2, 8)
    torch.library.opcheck(torch.ops.autogaze_ext.varlen_attention, (q, k, v, lo, hi, 0.3))


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(device):
    packed = layout(*LAYOUTS["batch1"], device=device)
    q, k, v = qkv(packed.num_tokens, 4, 2, 16, device=device)

    def attend(q, k, v, cu_seqlens, frame_offsets):
        lo, hi = ops.key_ranges(cu_seqlens, frame_offsets, mode="block_causal", num_tokens=q.shape[0])
        return ops.varlen_attention(q, k, v, lo, hi) * 2

    compiled = torch.compile(attend, fullgraph=True, backend="aot_eager")
    args = (q, k, v, packed.cu_seqlens, packed.frame_offsets)
    torch.testing.assert_close(compiled(*args), attend(*args), rtol=0, atol=0)


# --- errors ----------------------------------------------------------------------------------


def _inputs(length=5, heads=4, kv_heads=2, dim=8):
    q, k, v = qkv(length, heads, kv_heads, dim)
    lo = torch.zeros(length, dtype=torch.long)
    hi = torch.arange(1, length + 1)
    return dict(q=q, k=k, v=v, key_lo=lo, key_hi=hi)


def _bad(**changes):
    inputs = _inputs()
    inputs.update(changes)
    return inputs


BAD = [
    (_bad(q=torch.randn(5, 32)), ValueError, r"q must be 3-D \(L, heads, head_dim\)"),
    (_bad(k=torch.randn(5, 2)), ValueError, r"k must be 3-D"),
    (_bad(q=torch.randn(5, 4, 8, dtype=torch.float64)), TypeError, "q must be float32, bfloat16 or float16"),
    (_bad(v=torch.randn(5, 2, 8, dtype=torch.bfloat16)), TypeError, "q, k and v must have the same dtype"),
    (_bad(k=torch.randn(5, 3, 8), v=torch.randn(5, 3, 8)), ValueError, r"q's heads \(4\) must be a multiple of k's and v's kv_heads \(3\)"),
    (_bad(k=torch.randn(6, 2, 8)), ValueError, r"k must be \(L, kv_heads, head_dim\) = \(5, kv_heads > 0, 8\)"),
    (_bad(v=torch.randn(5, 2, 4)), ValueError, r"v must have k's shape \[5, 2, 8\], got \[5, 2, 4\]"),
    (_bad(key_lo=torch.zeros(5, dtype=torch.int32)), TypeError, "key_lo must be int64"),
    (_bad(key_hi=torch.ones(4, dtype=torch.long)), ValueError, r"key_hi must have shape \(L,\) = \(5,\)"),
]

BAD_VALUES = [
    (_bad(key_hi=torch.tensor([1, 2, 3, 4, 6])), r"query 4 must see at least one key.*key_hi\[4\] = 6"),
    (_bad(key_lo=torch.tensor([0, 0, 0, 4, 0])), r"query 3 must see at least one key.*key_lo\[3\] = 4"),
    (_bad(key_lo=torch.tensor([-1, 0, 0, 0, 0])), r"query 0 must see at least one key"),
]


@pytest.mark.parametrize("inputs,error,message", BAD)
def test_bad_input_names_the_argument(inputs, error, message):
    with pytest.raises(error, match=message):
        ops.varlen_attention(**inputs)


@pytest.mark.parametrize("inputs,error,message", BAD)
def test_bad_input_while_tracing(inputs, error, message):
    """The fake implementation (torch.compile, FakeTensor) gives the same errors."""
    with FakeTensorMode(allow_non_fake_inputs=True), pytest.raises(error, match=message):
        ops.varlen_attention(**inputs)


@pytest.mark.parametrize("inputs,message", BAD_VALUES)
def test_bad_ranges(inputs, message):
    with pytest.raises(ValueError, match=message):
        ops.varlen_attention(**inputs)


@pytest.mark.cuda
def test_cuda_bad_input_names_the_argument():
    inputs = {name: t.cuda() for name, t in _inputs().items()}
    with pytest.raises(ValueError, match=r"key_lo must be on q's device \(cuda:0\), got cpu"):
        ops.varlen_attention(**{**inputs, "key_lo": inputs["key_lo"].cpu()})
    with pytest.raises(ValueError, match=r"v must be on q's device"):
        ops.varlen_attention(**{**inputs, "v": inputs["v"].cpu()})
    big = torch.randn(5, 2, 136, device="cuda")
    with pytest.raises(ValueError, match="head_dim must be at most 128 on CUDA"):
        ops.varlen_attention(big, big, big, inputs["key_lo"], inputs["key_hi"])


def test_cpu_only_build_rejects_cuda_tensors():
    if ops.build_info()["cuda"] or not torch.cuda.is_available():
        pytest.skip("needs a CPU-only build and a CUDA device")
    inputs = {name: t.cuda() for name, t in _inputs().items()}
    with pytest.raises(RuntimeError, match="built without CUDA kernels"):
        ops.varlen_attention(**inputs)
