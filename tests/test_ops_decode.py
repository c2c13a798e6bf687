"""Native decode_step (C++ / CUDA) against the reference GazeDecoder.forward + heads, on random
decoders and random cache histories."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from autogaze_ext import ops
from autogaze_ext.config import AutoGazeConfig
from autogaze_ext.decoder import GazeDecoder

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
LOGITS_ATOL = 1e-4  # float32; logits are O(10) (lm_head scaled x8)
CACHE_ATOL = 1e-5


def make_decoder(seed=0, hidden=192, heads=6, kv_heads=None, k=10, layers=4, intermediate=None,
                 dtype=torch.float32, device="cpu"):
    cfg = AutoGazeConfig.build(hidden_size=hidden, num_heads=heads, num_multi_token_pred=k,
                               intermediate_size=intermediate or 2 * hidden, num_layers=layers).decoder
    if kv_heads is not None:
        cfg = dataclasses.replace(cfg, num_kv_heads=kv_heads)
    torch.manual_seed(seed)
    decoder = GazeDecoder(cfg).eval()
    with torch.no_grad():
        for name, p in decoder.named_parameters():
            if name.endswith("norm.weight"):
                p.normal_(1.0, 0.1)
            else:
                p.normal_(0.0, 0.05)
        decoder.lm_head.weight.mul_(8)
    return decoder.to(device=device, dtype=dtype)


def make_caches(decoder, batch, cache_len, n, seed=1, dead_rows=(), extra=3):
    """Two identical caches with a random history of cache_len slots (rows in dead_rows: all invisible)."""
    g = torch.Generator().manual_seed(seed)
    caches = [decoder.new_cache(batch, cache_len + n + extra) for _ in range(2)]
    shape = caches[0].k[:, :, :, :cache_len].shape
    k, v = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    mask = torch.rand(batch, cache_len, generator=g) < 0.7
    for row in dead_rows:
        mask[row] = False
    for cache in caches:
        cache.k[:, :, :, :cache_len] = k.to(cache.k)
        cache.v[:, :, :, :cache_len] = v.to(cache.v)
        cache.key_mask[:, :cache_len] = mask.to(cache.key_mask.device)
        cache.length = cache_len
    return caches


def run_both(decoder, batch, n, cache_len, seed=2, dead_rows=(), visible_p=0.8):
    device, dtype = decoder.lm_head.weight.device, decoder.lm_head.weight.dtype
    ref_cache, op_cache = make_caches(decoder, batch, cache_len, n, dead_rows=dead_rows)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, n, decoder.cfg.hidden_size, generator=g).to(device=device, dtype=dtype)
    positions = (cache_len + torch.arange(n) + torch.randint(0, 50, (batch, 1), generator=g)).to(device)
    visible = (torch.rand(batch, n, generator=g) < visible_p).to(device)
    for row in dead_rows:
        visible[row] = False
    with torch.no_grad():
        hidden = decoder(x, positions, visible, ref_cache)
        ref_logits, ref_loss = decoder.heads(hidden[:, -1])
    logits, loss = ops.decode_step(x, positions, visible, op_cache.k, op_cache.v, op_cache.key_mask, cache_len,
                                   ops.decoder_weights(decoder), decoder.inv_freq, decoder.cfg.rms_norm_eps)
    return (logits, loss, op_cache), (ref_logits, ref_loss, ref_cache)


def check(result, expected, cache_len, n, atol=LOGITS_ATOL, cache_atol=CACHE_ATOL):
    (logits, loss, cache), (ref_logits, ref_loss, ref_cache) = result, expected
    assert logits.dtype == torch.float32 and loss.dtype == torch.float32
    assert logits.shape == ref_logits.shape and loss.shape == ref_loss.shape
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=atol)
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=atol)
    span = slice(cache_len, cache_len + n)
    torch.testing.assert_close(cache.k[:, :, :, span].float(), ref_cache.k[:, :, :, span].float(), rtol=0,
                               atol=cache_atol)
    torch.testing.assert_close(cache.v[:, :, :, span].float(), ref_cache.v[:, :, :, span].float(), rtol=0,
                               atol=cache_atol)
    assert torch.equal(cache.key_mask, ref_cache.key_mask)
    # the history is untouched
    assert torch.equal(cache.k[:, :, :, :cache_len], ref_cache.k[:, :, :, :cache_len])
    assert torch.equal(cache.k[:, :, :, cache_len + n:], ref_cache.k[:, :, :, cache_len + n:])
    return (logits - ref_logits).abs().max().item()


# --- numerics --------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch", [1, 3, 16])
@pytest.mark.parametrize("n", [1, 10, 40])
@pytest.mark.parametrize("cache_len", [0, 1, 300, 2000])
def test_release_config_sweep(device, batch, n, cache_len):
    decoder = make_decoder(device=device)
    check(*run_both(decoder, batch, n, cache_len), cache_len, n)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cache_len", [0, 5, 130])
@pytest.mark.parametrize("n", [1, 10])
def test_rows_with_nothing_visible(device, cache_len, n):
    """Rows whose history and new slots are all invisible: each query sees only its own slot."""
    decoder = make_decoder(seed=3, device=device)
    check(*run_both(decoder, 4, n, cache_len, dead_rows=(0, 2)), cache_len, n)


@pytest.mark.parametrize("device", DEVICES)
def test_invisible_new_slots_after_visible_history(device):
    decoder = make_decoder(seed=4, device=device)
    check(*run_both(decoder, 3, 10, 70, visible_p=0.0), 70, 10)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("heads,kv_heads", [(6, 2), (6, 3), (4, 1)])
def test_grouped_query_attention(device, heads, kv_heads):
    hidden = 32 * heads
    decoder = make_decoder(seed=5, hidden=hidden, heads=heads, kv_heads=kv_heads, device=device)
    assert decoder.cfg.num_kv_heads == kv_heads
    check(*run_both(decoder, 3, 10, 150), 150, 10)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("k", [4, 10])
def test_multi_token_heads(device, k):
    decoder = make_decoder(seed=6, k=k, device=device)
    logits, loss, _ = run_both(decoder, 2, k, 40)[0]
    assert logits.shape == (2, k, decoder.cfg.vocab_size) and loss.shape == (2, k)
    check(*run_both(decoder, 2, k, 40), 40, k)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("hidden,heads,layers,intermediate", [(64, 2, 2, 96), (96, 1, 1, 200), (128, 8, 3, 256),
                                                              (16, 2, 1, 20)])
def test_other_sizes(device, hidden, heads, layers, intermediate):
    decoder = make_decoder(seed=7, hidden=hidden, heads=heads, layers=layers, intermediate=intermediate,
                           device=device)
    check(*run_both(decoder, 3, 7, 90), 90, 7)


@pytest.mark.parametrize("device", DEVICES)
def test_consecutive_steps_match_reference(device):
    """Several steps in a row, the cache advanced by the caller as in generation."""
    decoder = make_decoder(seed=8, device=device)
    ref_cache, op_cache = make_caches(decoder, 2, 20, 40, extra=0)
    weights = ops.decoder_weights(decoder)
    g = torch.Generator().manual_seed(9)
    for step in range(4):
        x = torch.randn(2, 10, decoder.cfg.hidden_size, generator=g).to(device)
        positions = (ref_cache.length + torch.arange(10)).expand(2, 10).contiguous().to(device)
        visible = (torch.rand(2, 10, generator=g) < 0.8).to(device)
        start = op_cache.length
        with torch.no_grad():
            ref_logits, ref_loss = decoder.heads(decoder(x, positions, visible, ref_cache)[:, -1])
        logits, loss = ops.decode_step(x, positions, visible, op_cache.k, op_cache.v, op_cache.key_mask, start,
                                       weights, decoder.inv_freq, decoder.cfg.rms_norm_eps)
        op_cache.length = start + 10
        torch.testing.assert_close(logits, ref_logits, rtol=0, atol=LOGITS_ATOL)
        torch.testing.assert_close(loss, ref_loss, rtol=0, atol=LOGITS_ATOL)
    torch.testing.assert_close(op_cache.k, ref_cache.k, rtol=0, atol=CACHE_ATOL)
    torch.testing.assert_close(op_cache.v, ref_cache.v, rtol=0, atol=CACHE_ATOL)
    assert torch.equal(op_cache.key_mask, ref_cache.key_mask)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision(device, dtype):
    """bf16 / fp16: the same rounding points as the reference; close within a few ulps of T."""
    decoder = make_decoder(seed=10, dtype=dtype, device=device)
    (logits, loss, cache), (ref_logits, ref_loss, ref_cache) = run_both(decoder, 3, 10, 200)
    scale = ref_logits.abs().max().item()
    tol = (2.0**-7 if dtype == torch.bfloat16 else 2.0**-10) * 8 * scale
    assert (logits - ref_logits).abs().max().item() <= tol
    assert (loss - ref_loss).abs().max().item() <= tol / 8 + 1e-2
    span = slice(200, 210)
    diff = (cache.k[:, :, :, span].float() - ref_cache.k[:, :, :, span].float()).abs().max().item()
    assert diff <= 0.1
    assert torch.equal(cache.key_mask, ref_cache.key_mask)


def test_fake_tensor_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    decoder = make_decoder(k=4)
    weights = ops.decoder_weights(decoder)
    with FakeTensorMode(allow_non_fake_inputs=True):
        cache = decoder.new_cache(2, 30)
        x = torch.empty(2, 4, 192)
        logits, loss = ops.decode_step(x, torch.zeros(2, 4, dtype=torch.long), torch.ones(2, 4, dtype=torch.bool),
                                       cache.k, cache.v, cache.key_mask, 0, weights, decoder.inv_freq, 1e-5)
        assert logits.shape == (2, 4, decoder.cfg.vocab_size) and loss.shape == (2, 4)


# --- bad inputs ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def setup():
    decoder = make_decoder(seed=11, layers=2)
    cache = decoder.new_cache(2, 20)
    args = dict(x=torch.randn(2, 3, 192), positions=torch.zeros(2, 3, dtype=torch.long),
                visible=torch.ones(2, 3, dtype=torch.bool), cache_k=cache.k, cache_v=cache.v,
                key_mask=cache.key_mask, cache_len=5, weights=ops.decoder_weights(decoder),
                inv_freq=decoder.inv_freq, eps=1e-5)
    return args


def call(args, **changes):
    a = dict(args, **changes)
    return ops.decode_step(**a)


def test_setup_is_valid(setup):
    call(setup)


@pytest.mark.parametrize("changes,error,match", [
    (lambda a: dict(x=a["x"][0]), ValueError, "x must be 3-D"),
    (lambda a: dict(x=a["x"].double()), TypeError, "x must be float32"),
    (lambda a: dict(positions=a["positions"].int()), TypeError, "positions must be int64"),
    (lambda a: dict(positions=a["positions"][:, :2]), ValueError, "positions must have shape"),
    (lambda a: dict(visible=a["visible"].long()), TypeError, "visible must be bool"),
    (lambda a: dict(visible=a["visible"][:1]), ValueError, "visible must have shape"),
    (lambda a: dict(inv_freq=a["inv_freq"].double()), TypeError, "inv_freq must be float32"),
    (lambda a: dict(inv_freq=a["inv_freq"][:5]), ValueError, "q_proj.weight\\) must be"),
    (lambda a: dict(weights=a["weights"][:-1]), ValueError, "weights must hold 9 tensors per layer"),
    (lambda a: dict(weights=a["weights"][:9] + a["weights"][-3:] + a["weights"][:1]), ValueError,
     "weights must hold"),
    (lambda a: dict(weights=[w.half() if i == 4 else w for i, w in enumerate(a["weights"])]), TypeError,
     r"weights\[4\] \(layer 0 o_proj.weight\) must have x's dtype"),
    (lambda a: dict(weights=[w[:, :100] if i == 15 else w for i, w in enumerate(a["weights"])]), ValueError,
     r"weights\[15\] \(layer 1 gate_proj.weight\) must have shape"),
    (lambda a: dict(weights=a["weights"][:-1] + [a["weights"][-1][:3]]), ValueError,
     "lm_head.weight\\) must be \\(K \\* V, D\\)"),
    (lambda a: dict(weights=a["weights"][:-2] + [a["weights"][-2][:, :10], a["weights"][-1]]), ValueError,
     "lm_head.weight\\) must be"),
    (lambda a: dict(cache_k=a["cache_k"][:1]), ValueError, "cache_k must be \\(layers, B, Hkv, capacity, head_dim\\)"),
    (lambda a: dict(cache_v=a["cache_v"][:, :, :, :10].contiguous()), ValueError, "cache_v must have cache_k's shape"),
    (lambda a: dict(cache_k=a["cache_k"].transpose(3, 4).contiguous().transpose(3, 4)), ValueError,
     "cache_k must be contiguous"),
    (lambda a: dict(cache_v=a["cache_v"].half()), TypeError, "cache_v must have x's dtype"),
    (lambda a: dict(key_mask=a["key_mask"][:, :10]), ValueError, "key_mask must have shape"),
    (lambda a: dict(key_mask=a["key_mask"].float()), TypeError, "key_mask must be bool"),
    (lambda a: dict(cache_len=18), ValueError, "cache is too small: cache_len \\+ n = 18 \\+ 3"),
    (lambda a: dict(cache_len=-1), ValueError, "cache_len must be >= 0"),
])
def test_bad_inputs(setup, changes, error, match):
    with pytest.raises(error, match=match):
        call(setup, **changes(setup))


@pytest.mark.cuda
def test_device_mismatch_is_named(setup):
    with pytest.raises(ValueError, match="positions must be on x's device"):
        call(setup, x=setup["x"].cuda())
