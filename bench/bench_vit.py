"""Sparse (gazed) SigLIP-B/16 vs dense SigLIP-B/16 on a 16-frame 224² clip (issue 4).

Run: ``python bench/bench_vit.py [--device cpu] [--batch 1] [--layers N] [--repeats R]``.

The model is a randomly initialised (seeded) SigLIP-B/16 vision tower (hidden 768, MLP 3072,
12 heads, patch 16, image 224, scales 32+64+112+224, block-causal), built from
``SiglipVisionSettings`` directly. Rows:

* ``dense/frame``: plain per-image SigLIP: B·T sequences of 196 patches (224², one scale),
  bidirectional SDPA, same weights (patch conv, position table, encoder layers, post-LN, head).
* ``dense/clip``: the same 3136 = 16·196 tokens of a clip as one bidirectional SDPA sequence.
* ``gazed r``: ``SparseSiglipVisionModel(video, gaze)`` with synthetic gaze of exactly
  max(1, trunc(r·265)) distinct ids per frame (198 / 66 / 26 for r = 0.75 / 0.25 / 0.1), drawn
  at random (seeded) in the padding-free form (``ids``, ``frame_offsets``).
* ``e2e r``: the fixture AutoGaze model (random weights) gazing the clip at ratio r, then the
  gazed ViT on its output (float32).

Times are medians of ``--repeats`` runs after one warm-up, in ms. "attn" is the summed time of
the attention core alone (SDPA / varlen attention on the same shapes, × layers), measured
separately; "gather" is ``ops.gather_patches`` alone.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from autogaze_ext import AutoGaze, ops  # noqa: E402
from autogaze_ext.siglip import SiglipVisionSettings, SparseSiglipVisionModel  # noqa: E402
from autogaze_ext.varlen import pack, varlen_attention  # noqa: E402
from common import MODEL, first_clip  # noqa: E402

SCALES = [32, 64, 112, 224]
FRAMES = 16
RATIOS = (0.75, 0.25, 0.1)


def build_vit(layers: int, device, dtype) -> SparseSiglipVisionModel:
    torch.manual_seed(0)
    cfg = SiglipVisionSettings(hidden_size=768, intermediate_size=3072, num_hidden_layers=layers,
                               num_attention_heads=12, image_size=224, patch_size=16,
                               scales=list(SCALES), attn_type="block_causal")
    model = SparseSiglipVisionModel(cfg)
    # SigLIP-like init scale (nn.Linear defaults are fine; give embeddings a sane scale)
    with torch.no_grad():
        model.vision_model.embeddings.position_embedding.weight.normal_(0, 0.02)
    return model.to(device=device, dtype=dtype).eval()


def dense_forward(model: SparseSiglipVisionModel, video: torch.Tensor, per_clip: bool):
    """Plain SigLIP on every frame at 224² (196 patches), the model's own modules, SDPA, no mask.

    per_clip=False: B·T independent sequences of 196; True: B sequences of T·196."""
    vm = model.vision_model
    b, t = video.shape[:2]
    x = vm.embeddings.patch_embedding(video.flatten(0, 1).to(model.dtype))  # (B·T, D, 14, 14)
    x = x.flatten(2).transpose(1, 2) + vm.embeddings.position_embedding.weight  # (B·T, 196, D)
    if per_clip:
        x = x.reshape(b, t * x.shape[1], -1)
    x = vm.post_layernorm(vm.encoder(x, mask=None))
    x = x.reshape(b, -1, x.shape[-1])
    pooled = vm.head(x) if model.config.vision_use_head else None
    return x, pooled


def synthetic_gaze(batch: int, frames: int, per_frame: int, n: int, device):
    gen = torch.Generator().manual_seed(1234 + per_frame)
    ids = torch.stack([torch.randperm(n, generator=gen)[:per_frame] for _ in range(batch * frames)])
    offsets = torch.arange(batch * frames + 1) * per_frame
    return {"ids": ids.flatten().to(device), "frame_offsets": offsets.to(device)}


def timeit(fn, repeats: int, device) -> float:
    def once():
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) * 1e3

    once()  # warm-up
    return statistics.median(once() for _ in range(repeats))


def attn_time_dense(model, shape, repeats, device, dtype) -> float:
    """Attention core of all layers: SDPA over (S, heads, seq, hd) × layers."""
    heads = model.config.num_attention_heads
    hd = model.config.hidden_size // heads
    seqs, length = shape
    q, k, v = (torch.randn(seqs, heads, length, hd, device=device, dtype=dtype) for _ in range(3))
    ms = timeit(lambda: F.scaled_dot_product_attention(q, k, v, scale=hd ** -0.5), repeats, device)
    return ms * model.config.num_hidden_layers


def attn_time_gazed(model, gaze, batch, repeats, device, dtype) -> float:
    heads = model.config.num_attention_heads
    hd = model.config.hidden_size // heads
    packed = pack(gaze["ids"], gaze["frame_offsets"], batch, FRAMES, model.per_scale)
    q, k, v = (torch.randn(packed.num_tokens, heads, hd, device=device, dtype=dtype) for _ in range(3))
    ms = timeit(lambda: varlen_attention(q, k, v, packed, model.config.attention_mode, scale=hd ** -0.5),
                repeats, device)
    return ms * model.config.num_hidden_layers


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtypes", default="float32,bfloat16", help="comma list of float32,bfloat16")
    p.add_argument("--no-e2e", action="store_true", help="skip the gaze-model end-to-end rows")
    p.add_argument("--no-attn", action="store_true", help="skip the separate attention timings")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtypes = [getattr(torch, d) for d in args.dtypes.split(",") if d]
    gaze_model = AutoGaze.from_pretrained(MODEL, device=device)
    clip = first_clip(gaze_model).to(device)  # (1, 16, 3, 224, 224)
    video = clip.expand(args.batch, -1, -1, -1, -1).contiguous()
    n = sum((s // 16) ** 2 for s in SCALES)

    rows = []  # (name, dtype, tokens/clip, total ms, gather ms, attn ms, gaze ms)
    dense_ms = {}
    with torch.no_grad():  # not inference_mode: position_table reads weight._version
        for dtype in dtypes:
            model = build_vit(args.layers, device, dtype)
            vid = video.to(dtype)
            dname = str(dtype).replace("torch.", "")
            for per_clip, name in ((False, "dense/frame (B·T×196)"), (True, "dense/clip (B×3136)")):
                ms = timeit(lambda: dense_forward(model, vid, per_clip), args.repeats, device)
                shape = (args.batch, FRAMES * 196) if per_clip else (args.batch * FRAMES, 196)
                attn = None if args.no_attn else attn_time_dense(model, shape, args.repeats, device, dtype)
                dense_ms[(dname, per_clip)] = ms
                rows.append((name, dname, FRAMES * 196, ms, None, attn, None))
                print(f"  {name} {dname}: {ms:.1f} ms", flush=True)
            for r in RATIOS:
                k = max(1, int(r * n))
                gaze = synthetic_gaze(args.batch, FRAMES, k, n, device)
                ms = timeit(lambda: model(vid, gaze), args.repeats, device)
                gather = timeit(lambda: ops.gather_patches(vid, gaze["ids"], gaze["frame_offsets"], SCALES, 16),
                                args.repeats, device)
                attn = None if args.no_attn else attn_time_gazed(model, gaze, args.batch, args.repeats,
                                                                 device, dtype)
                rows.append((f"gazed {r}", dname, FRAMES * k, ms, gather, attn, None))
                print(f"  gazed {r} {dname}: {ms:.1f} ms", flush=True)
            if not args.no_e2e and dtype == torch.float32:
                for r in (0.75, 0.1):
                    out = gaze_model(video, gazing_ratio=r)
                    gaze = {"ids": out["ids"], "frame_offsets": out["frame_offsets"]}
                    g_ms = timeit(lambda: gaze_model(video, gazing_ratio=r), args.repeats, device)
                    v_ms = timeit(lambda: model(vid, gaze), args.repeats, device)
                    tokens = out["ids"].shape[0] // args.batch
                    rows.append((f"e2e {r} (gaze+ViT)", dname, tokens, g_ms + v_ms, None, None, g_ms))
                    print(f"  e2e {r}: gaze {g_ms:.1f} + ViT {v_ms:.1f} ms", flush=True)

    print(f"\nSigLIP-B/16 random init, {args.layers} layers, B={args.batch}, T={FRAMES}, 224², "
          f"device {args.device}, {args.threads} threads, median of {args.repeats} after a warm-up (ms)\n")
    print("| row | dtype | tokens/clip | total ms | gather ms | attn ms | gaze ms | × vs dense/frame "
          "| × vs dense/clip |")
    print("|---|---|---|---|---|---|---|---|---|")
    fmt = lambda v: "—" if v is None else f"{v:.1f}"  # noqa: E731
    for name, dname, tokens, ms, gather, attn, g_ms in rows:
        vs_f = dense_ms[(dname, False)] / ms
        vs_c = dense_ms[(dname, True)] / ms
        print(f"| {name} | {dname} | {tokens} | {ms:.1f} | {fmt(gather)} | {fmt(attn)} | {fmt(g_ms)} "
              f"| {vs_f:.2f}× | {vs_c:.2f}× |")


if __name__ == "__main__":
    main()
