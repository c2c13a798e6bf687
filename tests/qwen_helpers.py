"""Tiny random Qwen2.5-VL models, a stand-in for its processor, and a dense masked reference of
its vision tower, for the integration tests (CPU, float32, eager attention).

The Hugging Face video processor needs torchvision, which this CI lacks; ``TinyQwenProcessor``
does what it does for frames already at a multiple of 28 px (no resize): rescale, CLIP
normalisation, the row order of ``Qwen2VLVideoProcessor.patchify`` (written here as an explicit
loop, independently of the package, and checked against transformers' own code in the tests),
and placeholder expansion with a real (tiny, in-memory) fast tokenizer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (BatchFeature, PreTrainedTokenizerFast, Qwen2_5_VLConfig,
                          Qwen2_5_VLForConditionalGeneration)
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision
from transformers.vision_utils import (get_vision_cu_seqlens, get_vision_position_ids,
                                       get_vision_window_index)

from autogaze_ext.integrations.qwen2_5_vl import CLIP_MEAN, CLIP_STD

WORDS = ["describe", "the", "video", "what", "is", "moving", "a", "cat", "dog", "red", "blue",
         "left", "right", "up", "down", "and", "then", "it", "there", "here"]
SPECIAL = {"<|image_pad|>": 60, "<|video_pad|>": 61, "<|vision_start|>": 62, "<|vision_end|>": 63}
VOCAB = 64
TEMPORAL, PATCH, MERGE = 2, 14, 2


def tiny_qwen(seed: int = 0, depth: int = 4, fullatt=(1, 3)) -> Qwen2_5_VLForConditionalGeneration:
    torch.manual_seed(seed)
    config = Qwen2_5_VLConfig(
        vision_config=dict(depth=depth, hidden_size=32, intermediate_size=64, num_heads=2,
                           out_hidden_size=32, patch_size=PATCH, temporal_patch_size=TEMPORAL,
                           spatial_merge_size=MERGE, window_size=112,
                           fullatt_block_indexes=list(fullatt), tokens_per_second=2,
                           initializer_range=0.15),
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB,
                         max_position_embeddings=4096, bos_token_id=2, eos_token_id=3,
                         pad_token_id=0, initializer_range=0.15,
                         rope_parameters={"rope_type": "default", "mrope_section": [2, 1, 1],
                                          "rope_theta": 10000.0}),
        image_token_id=SPECIAL["<|image_pad|>"], video_token_id=SPECIAL["<|video_pad|>"],
        vision_start_token_id=SPECIAL["<|vision_start|>"],
        vision_end_token_id=SPECIAL["<|vision_end|>"], bos_token_id=2, eos_token_id=3,
        pad_token_id=0)
    config._attn_implementation = "eager"
    # a wider init than the default 0.02, so that attention is far from uniform and a wrong key
    # set or order shows in the features
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 3
    return model


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<pad>": 0, "<unk>": 1, "<s>": 2, "</s>": 3}
    vocab.update({w: 4 + i for i, w in enumerate(WORDS)})
    vocab.update(SPECIAL)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<s>", eos_token="</s>",
                                   additional_special_tokens=list(SPECIAL))


def processor_rows(frames: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Frames (T,C,H,W) float → rows in the order of ``Qwen2VLVideoProcessor.patchify``, by an
    explicit loop: temporal group, unit row, unit column, patch row/col in the unit; each row
    flattened (channel, frame, y, x)."""
    t_frames, _, height, width = frames.shape
    gt, gh, gw = t_frames // TEMPORAL, height // PATCH, width // PATCH
    rows = []
    for t in range(gt):
        for uh in range(gh // MERGE):
            for uw in range(gw // MERGE):
                for dy in range(MERGE):
                    for dx in range(MERGE):
                        y, x = (uh * MERGE + dy) * PATCH, (uw * MERGE + dx) * PATCH
                        block = frames[t * TEMPORAL:(t + 1) * TEMPORAL, :, y:y + PATCH, x:x + PATCH]
                        rows.append(block.transpose(0, 1).flatten())
    return torch.stack(rows), [gt, gh, gw]


def normalize(frames_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (T,H,W,3) → float (T,3,H,W): rescale by 1/255 and CLIP mean/std."""
    x = frames_uint8.permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


class TinyQwenProcessor:
    """The call contract of ``Qwen2_5_VLProcessor`` for frames at multiples of 28 px."""

    video_token = "<|video_pad|>"
    chat_template = None

    def __init__(self, fps: float = 2.0):
        self.tokenizer = tiny_tokenizer()
        self.fps = fps

    def __call__(self, text, videos, return_tensors="pt", padding_side="right"):
        pixel_rows, grids, texts = [], [], []
        videos = iter(videos)
        for prompt in text:
            pieces = prompt.split(self.video_token)
            out = pieces[0]
            for piece in pieces[1:]:
                rows, grid = processor_rows(normalize(torch.as_tensor(next(videos))))
                pixel_rows.append(rows)
                grids.append(grid)
                out += self.video_token * (grid[0] * grid[1] * grid[2] // MERGE ** 2) + piece
            texts.append(out.replace("<|", " <|").replace("|>", "|> "))
        self.tokenizer.padding_side = padding_side
        enc = self.tokenizer(texts, return_tensors="pt", padding=True)
        ids = enc["input_ids"]
        return BatchFeature({
            "input_ids": ids, "attention_mask": enc["attention_mask"],
            "pixel_values_videos": torch.cat(pixel_rows), "video_grid_thw": torch.tensor(grids),
            "second_per_grid_ts": torch.tensor([TEMPORAL / self.fps] * len(grids)),
            "mm_token_type_ids": (ids == SPECIAL[self.video_token]).int() * 2})

    def batch_decode(self, ids, **kwargs):
        return self.tokenizer.batch_decode(ids, **kwargs)


def prompt(words: str = "describe the video") -> str:
    return f"<s> <|vision_start|><|video_pad|><|vision_end|> {words}"


def masked_dense_vision(visual, pixel_values: torch.Tensor, grid_thw: torch.Tensor,
                        keep: torch.Tensor) -> torch.Tensor:
    """The vision tower over every patch, in its own window order, with the patches of dropped
    units invisible as keys (a dropped query sees itself so that no row is empty). Returns the
    merged features of the kept units, in row order. Written with the tower's modules but not
    its forward: the reference the gathered path must equal."""
    merge_unit = MERGE * MERGE
    cfg = visual.config
    x = visual.patch_embed(pixel_values)
    window_index, cu_windows = get_vision_window_index(grid_thw, MERGE, cfg.window_size, PATCH)
    cu_full = get_vision_cu_seqlens(grid_thw)
    order = (window_index[:, None] * merge_unit + torch.arange(merge_unit)).flatten()
    x = x[order]
    cos, sin = visual.rotary_pos_emb(x, get_vision_position_ids(grid_thw, MERGE))
    cos, sin = cos[order], sin[order]
    visible_key = keep.repeat_interleave(merge_unit)[order]
    length = x.shape[0]

    def segment_of(bounds):
        return torch.repeat_interleave(torch.arange(bounds.shape[0] - 1), bounds.diff().long())

    eye = torch.eye(length, dtype=torch.bool)
    masks = {}
    for name, bounds in (("full", cu_full), ("window", cu_windows)):
        seg = segment_of(bounds)
        masks[name] = (seg[:, None] == seg[None, :]) & (visible_key[None, :] | eye)
    for i, block in enumerate(visual.blocks):
        mask = masks["full" if i in cfg.fullatt_block_indexes else "window"]
        attn = block.attn
        h = block.norm1(x)
        q, k, v = attn.qkv(h).reshape(length, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
        q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)
        out = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1),
                                             v.transpose(0, 1), attn_mask=mask,
                                             scale=attn.scaling)
        x = x + attn.proj(out.transpose(0, 1).reshape(length, -1))
        x = x + block.mlp(block.norm2(x))
    merged = visual.merger(x)[torch.argsort(window_index)]
    return merged[keep]
