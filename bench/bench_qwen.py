"""Time to first token of Qwen2.5-VL on a gazed video vs the dense video, split into gaze, ViT
and LLM prefill, on the CPU.

    python bench/bench_qwen.py [--frames 16] [--size 392] [--ratios 1 0.5 0.25 0.1] [--threads 1]

The Qwen model is random-init with the real Qwen2.5-VL-3B widths (vision 1280 wide, 16 heads, MLP
3420, window 112 px; LLM 2048 wide, 16 heads, 2 KV heads, MLP 11008, vocabulary 151,936) at
reduced depth: 2 vision blocks (one windowed, one full-attention) and 2 LLM layers. Forward
hooks time every block, so the per-layer figures project to the full depth (32 vision blocks:
28 windowed + 4 full; 36 LLM layers) as rest + depth × per-layer. The gaze model is the bundled
default (real depth), on the first frames of the bundled clip resized to ``size``². Kept tokens
are listed for every coarse-gaze policy; the timings use the default (``expand``).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch
from PIL import Image
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutputWithPooling

import autogaze_ext as ag
from autogaze_ext.api import resolve_model
from autogaze_ext.integrations import qwen2_5_vl as gq
from autogaze_ext.integrations.qwen_layout import patchify

FULL_VISION = {"window": 28, "full": 4}
FULL_LLM = 36
VIDEO, START, END = 151656, 151652, 151653


def qwen_3b_widths() -> Qwen2_5_VLForConditionalGeneration:
    config = Qwen2_5_VLConfig(
        vision_config=dict(depth=2, hidden_size=1280, intermediate_size=3420, num_heads=16,
                           out_hidden_size=2048, patch_size=14, temporal_patch_size=2,
                           spatial_merge_size=2, window_size=112, fullatt_block_indexes=[1],
                           tokens_per_second=2),
        text_config=dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=2,
                         num_attention_heads=16, num_key_value_heads=2, vocab_size=151936,
                         max_position_embeddings=128000, tie_word_embeddings=True,
                         rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24],
                                          "rope_theta": 1000000.0}),
        video_token_id=VIDEO, vision_start_token_id=START, vision_end_token_id=END,
        image_token_id=151655, tie_word_embeddings=True)
    config._attn_implementation = "sdpa"
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def video_inputs(frames: np.ndarray, prompt_tokens: int = 24) -> dict:
    """Processor-equivalent inputs for frames already at a multiple of 28 px (no resize)."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(gq.CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(gq.CLIP_STD).view(1, 3, 1, 1)
    rows, grid = patchify((x - mean) / std)
    n = grid[0] * grid[1] * grid[2] // 4
    text = torch.randint(1000, 2000, (prompt_tokens,), generator=torch.Generator().manual_seed(0))
    ids = torch.cat([text[:4], torch.tensor([START]), torch.full((n,), VIDEO), torch.tensor([END]),
                     text[4:]])[None]
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values_videos": rows,
            "video_grid_thw": torch.tensor([grid]), "second_per_grid_ts": torch.tensor([1.0]),
            "mm_token_type_ids": (ids == VIDEO).int() * 2}


class BlockClock:
    """Wall time per module of a list, summed by kind, via forward hooks."""

    def __init__(self, modules, kinds):
        self.kinds, self.total, self._start = kinds, {}, {}
        self.handles = []
        for i, module in enumerate(modules):
            self.handles.append(module.register_forward_pre_hook(self._pre(i)))
            self.handles.append(module.register_forward_hook(self._post(i)))

    def _pre(self, i):
        def hook(*_):
            self._start[i] = time.perf_counter()
        return hook

    def _post(self, i):
        def hook(*_):
            kind = self.kinds[i]
            self.total[kind] = self.total.get(kind, 0.0) + time.perf_counter() - self._start[i]
        return hook

    def take(self) -> dict:
        out, self.total = self.total, {}
        return out


def project(total: float, per_kind: dict, counts_now: dict, counts_full: dict) -> tuple:
    """Measured total → (rest, per-layer by kind, projected total at full depth)."""
    per_layer = {k: per_kind.get(k, 0.0) / counts_now[k] for k in counts_now}
    rest = total - sum(per_kind.values())
    return rest, per_layer, rest + sum(per_layer[k] * counts_full[k] for k in counts_full)


@torch.no_grad()
def run(args):
    torch.set_num_threads(args.threads)
    gazer = resolve_model(None)  # the bundled default model
    clip = ag.read_video(ag.example_clip_path(), num_frames=args.frames)
    frames = np.stack([np.asarray(Image.fromarray(f).resize((args.size, args.size), Image.BICUBIC))
                       for f in np.asarray(clip)])
    qwen = qwen_3b_widths()
    inputs = video_inputs(frames)
    vis = qwen.model.visual
    vis_kinds = ["full" if i in vis.config.fullatt_block_indexes else "window"
                 for i in range(len(vis.blocks))]
    vis_clock = BlockClock(vis.blocks, vis_kinds)
    llm_layers = qwen.model.language_model.layers
    llm_clock = BlockClock(llm_layers, ["layer"] * len(llm_layers))
    vis_counts = {k: vis_kinds.count(k) for k in ("window", "full")}

    def prefill(model_inputs):
        llm_clock.take()
        start = time.perf_counter()
        logits = qwen(**model_inputs, logits_to_keep=1).logits
        elapsed = time.perf_counter() - start
        assert logits.shape[1] == 1
        return elapsed, llm_clock.take()

    rows = []
    # dense: the tower on every row, then the prefill on precomputed embeddings
    vis_clock.take()
    start = time.perf_counter()
    dense_embeds = vis(inputs["pixel_values_videos"], grid_thw=inputs["video_grid_thw"]).pooler_output
    dense_vit, dense_vit_kinds = time.perf_counter() - start, vis_clock.take()
    dense = {k: v for k, v in inputs.items() if k != "pixel_values_videos"}
    dense["mm_encoder_outputs"] = {"video": BaseModelOutputWithPooling(pooler_output=(dense_embeds,))}
    llm, llm_kinds = prefill(dense)  # positions from transformers' get_rope_index
    dense_tokens = dense_embeds.shape[0]
    rows.append(("dense", None, dense_tokens, 0.0, dense_vit, dense_vit_kinds, llm, llm_kinds))
    settings = [(f"ratio {r:g}", r) for r in args.ratios] + [("bundled defaults", None)]
    kept = {}
    for name, ratio in settings:
        for policy in gq.POLICIES:
            vis_clock.take()
            g = gq.prepare_gazed_inputs(qwen, inputs, gazer, gazing_ratio=ratio, policy=policy)
            kept[name, policy] = (g.num_video_tokens, g.gazed_cells)
            if policy == "expand":
                vit_kinds = vis_clock.take()
                llm, llm_kinds = prefill(g.model_inputs())
                rows.append((name, ratio, g.num_video_tokens, g.timings["gaze_s"],
                             g.timings["vit_s"], vit_kinds, llm, llm_kinds))
    report(args, rows, kept, dense_tokens, vis_counts, len(llm_layers))


def report(args, rows, kept, dense_tokens, vis_counts, llm_now):
    load = os.getloadavg()
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} thread(s), load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"# video: {args.frames} frames of {args.size}², {dense_tokens} dense video tokens")
    print("\n| setting | video tokens | gaze s | ViT s (2 blocks) | LLM prefill s (2 layers) | "
          "ViT ms/window block | ViT ms/full block | LLM ms/layer | projected ViT s (32) | "
          "projected LLM s (36) | projected TTFT s | vs dense |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    dense_ttft = None
    for name, _, tokens, gaze_s, vit, vit_kinds, llm, llm_kinds in rows:
        _, vit_layer, vit_full = project(vit, vit_kinds, vis_counts, FULL_VISION)
        _, llm_layer, llm_full = project(llm, llm_kinds, {"layer": llm_now}, {"layer": FULL_LLM})
        ttft = gaze_s + vit_full + llm_full
        dense_ttft = dense_ttft or ttft
        print(f"| {name} | {tokens} | {gaze_s:.2f} | {vit:.2f} | {llm:.2f} | "
              f"{1e3 * vit_layer['window']:.0f} | {1e3 * vit_layer['full']:.0f} | "
              f"{1e3 * llm_layer['layer']:.0f} | {vit_full:.1f} | {llm_full:.1f} | {ttft:.1f} | "
              f"{dense_ttft / ttft:.2f}× |")
    print(f"\n| setting | gazed cells | kept tokens (of {dense_tokens}): expand | drop | finest |")
    print("|---|---|---|---|---|")
    for name in dict.fromkeys(n for n, _ in kept):
        cells = kept[name, "expand"][1]
        print(f"| {name} | {cells} | " + " | ".join(str(kept[name, p][0]) for p in gq.POLICIES)
              + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=392)
    parser.add_argument("--ratios", type=float, nargs="+", default=[1.0, 0.5, 0.25, 0.1])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.size % 28 or args.frames % 2:
        parser.error("--size must be a multiple of 28 and --frames even")
    run(args)


if __name__ == "__main__":
    main()
