"""Seeded random cases of every native op, checked against ``autogaze_ext.reference`` (or the
reference decoder): the fuzzing of ``tests/test_fuzz_ops.py`` and the CUDA cases that
``scripts/sanitizer_cases.py`` runs under compute-sanitizer.

``run_case(op, seed, device, variant)`` builds one case from ``seed`` alone (reproducible: the
failing seed is in the error), runs the native op and the reference, and raises AssertionError on
any difference beyond the op's documented tolerance. Variants stress one corner each:

* ``random``: odd sizes, batch 1 to 5, float32/bfloat16/float16, strided inputs;
* ``empty``: empty id lists / frames / cache history / nothing visible;
* ``full``: every id of a frame, full attention ranges, every slot visible;
* ``large``: batch 33 to 70;
* ``extreme``: values near the float32 range ends (1e-20, 1e15), ties, -inf rows, peaked softmax;
* ``invalid`` (CPU only): malformed values the op must reject with an error, never read past
  its buffers (what the ASan build checks).

NaN inputs are out of scope: the ops document finite inputs (the models check them).
"""

from __future__ import annotations

import random

import torch

from autogaze_ext import ops, reference
from autogaze_ext.config import DecoderConfig
from autogaze_ext.decoder import GazeDecoder

OPS = ("multiscale_patches", "gather_patches", "select_step", "decode_step", "varlen_attention")
VARIANTS = ("random", "empty", "full", "large", "extreme", "invalid")
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_REDUCED_RTOL = {torch.bfloat16: 2.0**-7, torch.float16: 2.0**-10}
_OP_ERRORS = (ValueError, TypeError, IndexError, RuntimeError)


def run_case(op: str, seed: int, device="cpu", variant: str | None = None) -> str:
    """Run one case; returns its description. ``variant`` None: drawn from the seed."""
    rng = random.Random(f"{op}:{seed}")
    if variant is None:
        choices = VARIANTS if torch.device(device).type == "cpu" else VARIANTS[:-1]
        variant = rng.choices(choices, weights=(10, 2, 2, 1, 2, 1)[: len(choices)])[0]
    if variant == "invalid" and torch.device(device).type != "cpu":
        raise ValueError("invalid-input cases run on the CPU only (CUDA does not validate values)")
    gen = torch.Generator().manual_seed(rng.getrandbits(63))
    case = _CASES[op](rng, gen, torch.device(device), variant)
    return f"{op} seed={seed} variant={variant} {case}"


def _dtype(rng, variant):
    if variant in ("extreme", "invalid"):
        return torch.float32
    return rng.choices(_DTYPES, weights=(6, 2, 2))[0]


def _close(actual, expected, what, rtol=0.0, atol_scale=1e-5):
    """|actual - expected| <= atol_scale * |expected|max + rtol * |expected|, in float32."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    if expected.numel() == 0:
        return
    a, e = actual.float().cpu(), expected.float().cpu()
    finite = torch.isfinite(e)
    assert torch.equal(torch.isfinite(a), finite), f"{what}: non-finite values differ"
    assert torch.equal(a[~finite], e[~finite]), f"{what}: infinities differ"
    a, e = a[finite], e[finite]
    if e.numel() == 0:
        return
    peak = e.abs().max().item()
    bound = atol_scale * max(peak, 1e-30) + rtol * e.abs()
    err = (a - e).abs()
    worst = (err - bound).max().item()
    assert worst <= 0, f"{what}: max abs error {err.max().item():.3g} over bound (peak {peak:.3g})"


def _expect_error(fn, what):
    try:
        fn()
    except _OP_ERRORS:
        return
    raise AssertionError(f"{what}: accepted malformed input without an error")


# ---- multiscale_patches / gather_patches --------------------------------------------------------

def _video(rng, gen, device, variant):
    p = rng.choice((1, 2, 3, 4, 5, 8, 16))
    multiples = sorted(rng.sample(range(1, max(2, 48 // p) + 1), rng.randint(1, min(4, max(1, 48 // p)))))
    scales = [p * m for m in multiples]
    batch = rng.randint(33, 70) if variant == "large" else rng.choice((1, 1, 2, 3, 5))
    frames, channels = rng.randint(1, 3), rng.randint(1, 4)
    if rng.random() < 0.2:
        h = w = scales[-1]  # the largest scale is the frame itself (no resize)
    else:
        h, w = rng.randint(1, 47), rng.randint(1, 47)
    if variant == "large":
        h, w = min(h, 12), min(w, 12)
    dtype = _dtype(rng, variant)
    scale = rng.choice((1e-20, 1e15, 0.0)) if variant == "extreme" else rng.choice((1.0, 3.0))
    shape = (batch, frames, channels, h, w)
    if rng.random() < 0.3:  # channels-last storage: a strided (B,T,C,H,W) view
        video = torch.randn((batch, frames, h, w, channels), generator=gen).permute(0, 1, 4, 2, 3)
    else:
        video = torch.randn(shape, generator=gen)
    video = (video * scale).to(device=device, dtype=dtype)
    return video, scales, p


def _patch_tolerance(video):
    return dict(rtol=_REDUCED_RTOL.get(video.dtype, 0.0), atol_scale=2e-5)


def _case_multiscale(rng, gen, device, variant):
    video, scales, p = _video(rng, gen, device, variant)
    desc = f"video={tuple(video.shape)} {video.dtype} scales={scales} p={p}"
    if variant == "invalid":
        bad = rng.choice(("scale", "patch", "dims"))
        wrong_side = scales[-1] + 1 if p > 1 else 0  # not a positive multiple of p
        args = {"scale": (video, scales + [wrong_side], p), "patch": (video, scales, 0),
                "dims": (video[0], scales, p)}[bad]
        _expect_error(lambda: ops.multiscale_patches(*args), desc + f" bad={bad}")
        return desc + f" bad={bad}"
    out = ops.multiscale_patches(video, scales, p)
    assert out.dtype == video.dtype and out.device == video.device, desc
    _close(out, reference.multiscale_patches(video.float(), scales, p), desc, **_patch_tolerance(video))
    return desc


def _case_gather(rng, gen, device, variant):
    video, scales, p = _video(rng, gen, device, variant)
    n = sum((s // p) ** 2 for s in scales)
    frames = video.shape[0] * video.shape[1]
    counts, pieces = [], []
    for _ in range(frames):
        if variant == "empty":
            count = 0 if rng.random() < 0.8 else rng.randint(1, n)
        elif variant == "full":
            count = n
        else:
            count = rng.choice((0, n, rng.randint(1, n), rng.randint(1, n)))
        if rng.random() < 0.3:  # repeats allowed by the op
            ids = torch.randint(0, n, (count,), generator=gen)
        else:
            ids = torch.randperm(n, generator=gen)[:count] if count <= n else torch.randint(0, n, (count,), generator=gen)
        counts.append(count)
        pieces.append(ids)
    ids = torch.cat(pieces).to(device)
    offsets = torch.tensor([0] + counts).cumsum(0).to(device)
    desc = f"video={tuple(video.shape)} {video.dtype} scales={scales} p={p} L={ids.numel()}"
    if variant == "invalid":
        bad = rng.choice(("id_high", "id_low", "offset_start", "offset_order", "offset_end"))
        ids_bad, off_bad = ids.clone(), offsets.clone()
        if bad in ("id_high", "id_low") and ids.numel():
            ids_bad[rng.randrange(ids.numel())] = n if bad == "id_high" else -1
        elif bad == "offset_start":
            off_bad[0] = 1
        elif bad == "offset_order" and frames > 1:
            off_bad[1] = off_bad[-1] + 1
        else:
            off_bad[-1] += 1
        if torch.equal(ids_bad, ids) and torch.equal(off_bad, offsets):
            off_bad[-1] += 1
        _expect_error(lambda: ops.gather_patches(video, ids_bad, off_bad, scales, p), desc + f" bad={bad}")
        return desc + f" bad={bad}"
    out = ops.gather_patches(video, ids, offsets, scales, p)
    expected = reference.gather_patches(video.float(), ids, offsets, scales, p)
    _close(out, expected, desc, **_patch_tolerance(video))
    return desc


# ---- select_step --------------------------------------------------------------------------------

_STATE = ("used", "n", "finished", "done", "tokens", "leftover_ids", "leftover_len")


def _case_select(rng, gen, device, variant):
    batch = rng.randint(33, 70) if variant == "large" else rng.choice((1, 1, 2, 3, 5, 8))
    k = rng.choice((1, 2, 3, 4, 10))
    vocab = rng.choice((2, 3, 5, 11, 30, 97, 266))
    budget = rng.randint(1, vocab + 3)
    coupled, first = rng.random() < 0.4, rng.random() < 0.5
    sampling, with_req = rng.random() < 0.4, rng.random() < 0.5
    temperature = rng.choice((1.0, 1.0, 0.7, 2.0, 0.05)) if sampling else 1.0
    top_k = rng.choice((1, 3, 50, 50, vocab + 7))
    logits = torch.randn(batch, k, vocab, generator=gen) * rng.choice((0.1, 3.0, 30.0))
    if variant == "extreme" or rng.random() < 0.2:
        logits = torch.randint(0, 3, (batch, k, vocab), generator=gen).float()  # many exact ties
    if variant == "extreme":
        logits[torch.rand(batch, k, vocab, generator=gen) < 0.3] = float("-inf")
        logits[0, 0] = float("-inf")  # a dead row
        logits *= rng.choice((1.0, 1e30))
    used_p = {"empty": 0.0, "full": 0.97}.get(variant, rng.choice((0.0, 0.2, 0.6)))
    state = {
        "logits": logits,
        "loss_pred": torch.randn(batch, k, generator=gen),
        "requirement": torch.randn(batch, generator=gen) * 0.5,
        "uniforms": torch.rand(batch, k, generator=gen),
        "used": torch.rand(batch, vocab, generator=gen) < used_p,
        "n": torch.randint(0, budget + k + 1, (batch,), generator=gen),
        "finished": torch.rand(batch, generator=gen) < 0.2,
        "done": torch.rand(batch, generator=gen) < 0.2,
        "tokens": torch.randint(0, vocab, (batch, budget + k + rng.choice((0, 0, 2))), generator=gen),
        "leftover_ids": torch.randint(0, vocab, (batch, k), generator=gen),
        "leftover_len": torch.randint(0, k + 1, (batch,), generator=gen),
    }
    if variant == "extreme":
        state["uniforms"][0] = 0.0
        state["uniforms"][-1] = 1.0 - 2.0**-24  # the largest float32 below 1
    if coupled:  # the official mode: the batch shares the slot count and the frame's end
        state["n"].fill_(int(state["n"][0]))
        state["done"].fill_(False)
    state = {name: t.to(device) for name, t in state.items()}
    desc = (f"B={batch} K={k} V={vocab} budget={budget} coupled={coupled} first={first} "
            f"sampling={sampling} requirement={with_req} temperature={temperature} top_k={top_k}")

    def call(fn, s):
        return fn(s["logits"], s["loss_pred"], s["requirement"] if with_req else None,
                  s["uniforms"] if sampling else None, *(s[name] for name in _STATE), budget, first,
                  coupled, temperature, top_k)

    if variant == "invalid":
        bad = rng.choice(("n_negative", "budget", "tokens_narrow", "top_k"))
        s = {name: t.clone() for name, t in state.items()}
        b, kk, tk = budget, top_k, s["tokens"]
        if bad == "n_negative":
            s["n"][rng.randrange(batch)] = -rng.randint(1, 5)
        elif bad == "budget":
            b = 0
        elif bad == "tokens_narrow":
            tk = s["tokens"][:, : budget + k - 1].contiguous()
        else:
            kk = 0
        _expect_error(lambda: ops.select_step(
            s["logits"], s["loss_pred"], s["requirement"] if with_req else None,
            s["uniforms"] if sampling else None, s["used"], s["n"], s["finished"], s["done"], tk,
            s["leftover_ids"], s["leftover_len"], b, first, coupled, temperature, kk), desc + f" bad={bad}")
        return desc + f" bad={bad}"
    ref_state = {name: t.clone() for name, t in state.items()}
    nat_state = {name: t.clone() for name, t in state.items()}
    fed_ref = call(reference.select_step, ref_state)
    fed_nat = call(ops.select_step, nat_state)
    assert torch.equal(fed_ref.cpu(), fed_nat.cpu()), f"{desc}: fed differs"
    for name in _STATE:
        assert torch.equal(ref_state[name].cpu(), nat_state[name].cpu()), f"{desc}: {name} differs"
    return desc


# ---- decode_step --------------------------------------------------------------------------------

def _random_decoder(rng, gen, dtype, device):
    heads = rng.randint(1, 4)
    kv_heads = rng.choice([d for d in range(1, heads + 1) if heads % d == 0])
    k = rng.randint(1, 5)
    vocab = rng.randint(2, 40)
    cfg = DecoderConfig(hidden_size=rng.choice((8, 12, 16, 24, 40)), intermediate_size=rng.choice((4, 8, 20, 48)),
                        num_layers=rng.randint(1, 3), num_heads=heads, num_kv_heads=kv_heads,
                        head_dim=rng.choice((2, 4, 6, 8, 16, 34)), rms_norm_eps=rng.choice((1e-6, 1e-5)),
                        rope_theta=rng.choice((10000.0, 500000.0)), rope_scaling=None,
                        num_multi_token_pred=k, vocab_size=vocab, eos_token_id=vocab - 1)
    decoder = GazeDecoder(cfg).eval()
    with torch.no_grad():
        for name, p in decoder.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
        decoder.lm_head.weight.mul_(4)
    return decoder.to(device=device, dtype=dtype), cfg


def _case_decode(rng, gen, device, variant):
    dtype = _dtype(rng, variant)
    decoder, cfg = _random_decoder(rng, gen, dtype, device)
    batch = rng.randint(33, 70) if variant == "large" else rng.choice((1, 1, 2, 3, 4))
    n = rng.randint(1, 12)
    cache_len = 0 if variant == "empty" else rng.choice((0, 1, rng.randint(2, 40), rng.randint(40, 90)))
    extra = rng.choice((0, 0, 3))
    caches = [decoder.new_cache(batch, cache_len + n + extra) for _ in range(2)]
    hist = caches[0].k[:, :, :, :cache_len].shape
    k_hist, v_hist = torch.randn(hist, generator=gen), torch.randn(hist, generator=gen)
    visible_p = {"empty": 0.0, "full": 1.0}.get(variant, rng.choice((0.0, 0.3, 0.8, 1.0)))
    mask = torch.rand(batch, cache_len, generator=gen) < visible_p
    for cache in caches:
        cache.k[:, :, :, :cache_len] = k_hist.to(cache.k)
        cache.v[:, :, :, :cache_len] = v_hist.to(cache.v)
        cache.key_mask[:, :cache_len] = mask.to(device)
        cache.length = cache_len
    x_scale = rng.choice((1e-3, 1e3)) if variant == "extreme" else 1.0
    x = (torch.randn(batch, n, cfg.hidden_size, generator=gen) * x_scale).to(device=device, dtype=dtype)
    offset = rng.choice((0, rng.randint(0, 60), rng.randint(0, 100000)))
    positions = (cache_len + torch.arange(n) + offset + torch.randint(0, 5, (batch, 1), generator=gen)).to(device)
    visible = (torch.rand(batch, n, generator=gen) < visible_p).to(device)
    desc = (f"B={batch} n={n} cache_len={cache_len} D={cfg.hidden_size} H={cfg.num_heads}/{cfg.num_kv_heads} "
            f"hd={cfg.head_dim} I={cfg.intermediate_size} layers={cfg.num_layers} K={cfg.num_multi_token_pred} "
            f"V={cfg.vocab_size} {dtype}")
    weights = ops.decoder_weights(decoder)
    ref_cache, op_cache = caches
    if variant == "invalid":
        bad = rng.choice(("cache_len", "capacity", "positions", "weights"))
        args = dict(x=x, positions=positions, visible=visible, cache_k=op_cache.k, cache_v=op_cache.v,
                    key_mask=op_cache.key_mask, cache_len=cache_len, weights=weights,
                    inv_freq=decoder.inv_freq, eps=cfg.rms_norm_eps)
        args.update({"cache_len": dict(cache_len=-1), "capacity": dict(cache_len=cache_len + extra + 1),
                     "positions": dict(positions=positions[:, :-1]), "weights": dict(weights=weights[:-1])}[bad])
        _expect_error(lambda: ops.decode_step(**args), desc + f" bad={bad}")
        return desc + f" bad={bad}"
    with torch.no_grad():
        hidden = decoder(x, positions, visible, ref_cache)
        ref_logits, ref_loss = decoder.heads(hidden[:, -1])
    logits, loss = ops.decode_step(x, positions, visible, op_cache.k, op_cache.v, op_cache.key_mask, cache_len,
                                   weights, decoder.inv_freq, cfg.rms_norm_eps)
    if dtype == torch.float32:
        tol = dict(atol_scale=2e-5)
    else:  # the same rounding points; differences of a few ulps of the activations compound
        tol = dict(atol_scale=16 * _REDUCED_RTOL[dtype])
    _close(logits, ref_logits, desc + " logits", **tol)
    _close(loss, ref_loss, desc + " loss_pred", **tol)
    span = slice(cache_len, cache_len + n)
    cache_tol = dict(atol_scale=2e-5) if dtype == torch.float32 else dict(atol_scale=4 * _REDUCED_RTOL[dtype])
    _close(op_cache.k[:, :, :, span], ref_cache.k[:, :, :, span], desc + " new keys", **cache_tol)
    _close(op_cache.v[:, :, :, span], ref_cache.v[:, :, :, span], desc + " new values", **cache_tol)
    assert torch.equal(op_cache.key_mask.cpu(), ref_cache.key_mask.cpu()), desc + " key_mask"
    untouched = torch.cat([op_cache.k[:, :, :, :cache_len].flatten(), op_cache.k[:, :, :, cache_len + n:].flatten()])
    expected = torch.cat([ref_cache.k[:, :, :, :cache_len].flatten(), ref_cache.k[:, :, :, cache_len + n:].flatten()])
    assert torch.equal(untouched, expected), desc + " slots outside [cache_len, cache_len + n) changed"
    return desc


# ---- varlen_attention ---------------------------------------------------------------------------

def _ranges(rng, gen, length, variant):
    if variant == "full":
        return torch.zeros(length, dtype=torch.long), torch.full((length,), length, dtype=torch.long)
    if rng.random() < 0.5:  # a packed layout in one of the four modes
        counts = [rng.choice((0, 1, rng.randint(1, 20))) for _ in range(rng.randint(1, 12))]
        counts[-1] += max(0, length - sum(counts))
        while sum(counts) > length:
            i = max(range(len(counts)), key=counts.__getitem__)
            counts[i] -= min(counts[i], sum(counts) - length)
        offsets = torch.tensor([0] + counts).cumsum(0)
        frames = rng.choice([f for f in range(1, len(counts) + 1) if len(counts) % f == 0])
        cu = offsets[::frames]
        mode = rng.choice(ops.ATTENTION_MODES)
        lo, hi = ops.key_ranges(cu, offsets, mode=mode, num_tokens=length)
        if lo is None:
            lo = torch.zeros(length, dtype=torch.long)
        return lo, hi
    lo = torch.randint(0, length, (length,), generator=gen)
    width = torch.randint(1, length + 1, (length,), generator=gen)
    return lo, torch.minimum(lo + width, torch.tensor(length))


def _case_attention(rng, gen, device, variant):
    length = rng.randint(300, 700) if variant == "large" else rng.choice((1, 2, 7, rng.randint(1, 150)))
    heads = rng.randint(1, 4)
    kv_heads = rng.choice([d for d in range(1, heads + 1) if heads % d == 0])
    dim = rng.choice((1, 3, 8, 16, 33, 64, 128))
    dtype = _dtype(rng, variant)
    value_scale = rng.choice((1e-3, 8.0)) if variant == "extreme" else 1.0
    scale = rng.choice((None, None, 0.01, 1.0)) if variant != "extreme" else rng.choice((None, 4.0 / dim))

    def rand(*shape):
        return (torch.randn(shape, generator=gen) * value_scale).to(device=device, dtype=dtype)

    if rng.random() < 0.3:  # strided: q transposed, k every other column, v every other token
        q = rand(heads, length, dim).transpose(0, 1)
        k = rand(length, kv_heads, 2 * dim)[..., ::2]
        v = rand(2 * length, kv_heads, dim)[::2]
    else:
        q, k, v = rand(length, heads, dim), rand(length, kv_heads, dim), rand(length, kv_heads, dim)
    lo, hi = _ranges(rng, gen, length, variant)
    lo, hi = lo.to(device), hi.to(device)
    desc = f"L={length} H={heads}/{kv_heads} D={dim} {dtype} scale={scale} value_scale={value_scale}"
    if variant == "invalid":
        bad = rng.choice(("empty_range", "hi_past_end", "lo_negative"))
        lo_bad, hi_bad = lo.clone(), hi.clone()
        i = rng.randrange(length)
        if bad == "empty_range":
            hi_bad[i] = lo_bad[i]
        elif bad == "hi_past_end":
            hi_bad[i] = length + 1
        else:
            lo_bad[i] = -1
        _expect_error(lambda: ops.varlen_attention(q, k, v, lo_bad, hi_bad, scale), desc + f" bad={bad}")
        return desc + f" bad={bad}"
    out = ops.varlen_attention(q, k, v, lo, hi, scale)
    expected = reference.varlen_attention(q, k, v, lo, hi, scale)
    assert out.dtype == q.dtype, desc
    # float32 rounding of a score s moves its softmax weight by ~|s|·2^-24 per ulp: allow 16 ulps
    # of the largest score on top of the plain float32 error
    keys = k.float().repeat_interleave(heads // kv_heads, dim=1)
    top_score = (torch.einsum("lhd,mhd->hlm", q.float(), keys).abs().max().item() * (scale or dim ** -0.5)
                 if length else 0.0)
    atol_scale = 2e-5 + top_score * 2.0**-20
    if dtype == torch.float32:
        _close(out, expected, desc, atol_scale=atol_scale)
    else:  # both round once from float32: one ulp of the output
        _close(out, expected, desc, rtol=_REDUCED_RTOL[dtype], atol_scale=max(1e-4, atol_scale))
    return desc


_CASES = {"multiscale_patches": _case_multiscale, "gather_patches": _case_gather,
          "select_step": _case_select, "decode_step": _case_decode, "varlen_attention": _case_attention}
assert set(_CASES) == set(OPS)
