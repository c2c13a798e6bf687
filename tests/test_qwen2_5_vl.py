"""Gazed video into Qwen2.5-VL (transformers), proven against the dense model on tiny random
configs (CPU, float32, eager attention)."""

import importlib.util

import numpy as np
import pytest
import torch

transformers = pytest.importorskip(
    "transformers", minversion="5.23",
    reason="needs the transformers extra: pip install 'autogaze_ext[transformers]'")

import autogaze_ext as ag  # noqa: E402
from autogaze_ext.integrations import qwen2_5_vl as gq  # noqa: E402
from autogaze_ext.integrations import qwen_layout as layout  # noqa: E402
from helpers import FIXTURE_MODEL  # noqa: E402
from qwen_helpers import (MERGE, PATCH, SPECIAL, TEMPORAL, TinyQwenProcessor, masked_dense_vision,  # noqa: E402
                          normalize, processor_rows, prompt, tiny_qwen)

VIDEO = SPECIAL["<|video_pad|>"]


def _frames(t=4, h=392, w=392, seed=0):
    return torch.randint(0, 256, (t, h, w, 3), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def qwen():
    return tiny_qwen(seed=0)


@pytest.fixture(scope="module")
def gazer():
    return ag.AutoGaze.from_pretrained(FIXTURE_MODEL)


@pytest.fixture(scope="module")
def processor():
    return TinyQwenProcessor(fps=1.0)  # second_per_grid_ts 2 → temporal ids step 4


@pytest.fixture(scope="module")
def batch(processor):
    return processor(text=[prompt("what is moving and then")], videos=[_frames()])


def _dense_vision(model, batch):
    with torch.no_grad():
        return model.model.visual(batch["pixel_values_videos"],
                                  grid_thw=batch["video_grid_thw"]).pooler_output


def _grid_shape(batch, i=0):
    t, h, w = batch["video_grid_thw"][i].tolist()
    return t, h // MERGE, w // MERGE


# ---- the processor's order ----------------------------------------------------------------------

def test_reference_rows_match_transformers_image_processor():
    """The loop reference of the row order equals transformers' own (PIL, no torchvision)
    patchify on a static pair of frames; the package's patchify/unpatchify equal the loop."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    image = torch.randn(3, 56, 84)
    hf, gh, gw = Qwen2VLImageProcessorPil.patchify(None, image.numpy(), PATCH, MERGE, TEMPORAL)
    ours, grid = processor_rows(torch.stack([image, image]))
    assert grid == [1, gh, gw]
    assert torch.equal(ours, torch.from_numpy(np.ascontiguousarray(hf)))

    video = torch.randn(6, 3, 56, 84)
    rows, thw = layout.patchify(video)
    assert torch.equal(rows, processor_rows(video)[0]) and thw == (3, 4, 6)
    assert torch.equal(layout.unpatchify(rows, thw), video)


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None,
                    reason="transformers' video processor module needs torchvision (not installed)")
def test_reference_rows_match_transformers_video_processor():
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    video = torch.randn(1, 4, 3, 56, 84)
    hf, *grid = Qwen2VLVideoProcessor.patchify(None, video, PATCH, MERGE, TEMPORAL)
    assert torch.equal(hf[0], processor_rows(video[0])[0]) and grid == [2, 4, 6]


def test_frames_are_recovered_from_the_processor_rows(qwen, batch):
    frames = gq.video_frames(batch["pixel_values_videos"], batch["video_grid_thw"][0],
                             qwen.config.vision_config)
    assert torch.equal(frames, _frames())


# ---- equality with the dense model --------------------------------------------------------------

def test_keep_everything_equals_the_dense_model(qwen, batch):
    keep = torch.ones(_grid_shape(batch), dtype=torch.bool)
    gazed = gq.prepare_gazed_inputs(qwen, batch, keep=[keep])
    assert torch.equal(gazed.video_embeds, _dense_vision(qwen, batch))
    assert torch.equal(gazed.input_ids, batch["input_ids"])
    with torch.no_grad():
        dense = qwen(**batch).logits
        sparse = qwen(**gazed.model_inputs()).logits
    assert torch.equal(dense, sparse)


def test_gaze_at_ratio_one_keeps_everything(qwen, gazer, processor):
    batch = processor(text=[prompt()], videos=[_frames(t=2, seed=1)])
    gazed = gq.prepare_gazed_inputs(qwen, batch, gazer, gazing_ratio=1.0)
    assert gazed.num_video_tokens == gazed.num_dense_video_tokens == 196
    assert gazed.gazed_cells == 2 * 265
    assert torch.equal(gazed.video_embeds, _dense_vision(qwen, batch))


def test_dropping_whole_temporal_groups_keeps_the_others_exact(qwen, batch):
    t, h, w = _grid_shape(batch)
    assert t == 2
    keep = torch.zeros(t, h, w, dtype=torch.bool)
    keep[1] = True
    gazed = gq.prepare_gazed_inputs(qwen, batch, keep=[keep])
    dense = _dense_vision(qwen, batch)
    assert gazed.num_video_tokens == h * w
    torch.testing.assert_close(gazed.video_embeds, dense[h * w:], rtol=0, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_partial_gaze_equals_dense_with_dropped_keys_masked(qwen, batch, seed):
    gen = torch.Generator().manual_seed(seed)
    keep = torch.rand(_grid_shape(batch), generator=gen) < 0.4
    keep[0, :4, :4] = False  # an emptied window
    gazed = gq.prepare_gazed_inputs(qwen, batch, keep=[keep])
    with torch.no_grad():
        reference = masked_dense_vision(qwen.model.visual, batch["pixel_values_videos"],
                                        batch["video_grid_thw"], keep.flatten())
    assert gazed.video_embeds.shape == reference.shape == (int(keep.sum()), 32)
    torch.testing.assert_close(gazed.video_embeds, reference, rtol=0, atol=1e-5)
    # the masking matters: the dense features of the kept units differ
    dense = _dense_vision(qwen, batch)[keep.flatten()]
    assert (dense - reference).abs().max() > 1e-3


def test_mrope_ids_are_the_dense_ids_of_the_kept_tokens(qwen, batch):
    keep = torch.rand(_grid_shape(batch), generator=torch.Generator().manual_seed(3)) < 0.3
    gazed = gq.prepare_gazed_inputs(qwen, batch, keep=[keep])
    dense, dense_deltas = qwen.model.get_rope_index(
        batch["input_ids"], batch["mm_token_type_ids"], video_grid_thw=batch["video_grid_thw"],
        second_per_grid_ts=batch["second_per_grid_ts"], attention_mask=batch["attention_mask"])
    is_video = batch["input_ids"][0] == VIDEO
    kept = ~is_video
    kept[is_video] = keep.flatten()
    assert torch.equal(gazed.position_ids[1:, 0], dense[:, 0, kept])
    assert torch.equal(gazed.position_ids[0, 0], torch.arange(int(kept.sum())))
    dropped = int((~keep).sum())
    assert torch.equal(gazed.rope_deltas, dense_deltas + dropped)
    assert gazed.position_ids.dtype == torch.long


def test_generate_continues_at_the_dense_positions(qwen, batch):
    keep = torch.ones(_grid_shape(batch), dtype=torch.bool)
    gazed = gq.prepare_gazed_inputs(qwen, batch, keep=[keep])
    with torch.no_grad():
        dense = qwen.generate(**batch, max_new_tokens=4, do_sample=False)
        sparse = qwen.generate(**gazed.model_inputs(), max_new_tokens=4, do_sample=False)
    assert torch.equal(dense, sparse)


# ---- order of the gathered rows, proven by pixel content ----------------------------------------

def _coded_frames(t=4, h=392, w=392):
    """Every 14-px patch painted with (10·frame + 1, 8·patch row + 4, 8·patch col + 4)."""
    f = torch.arange(t).view(t, 1, 1)
    rows = (torch.arange(h) // PATCH).view(1, h, 1)
    cols = (torch.arange(w) // PATCH).view(1, 1, w)
    return torch.stack(torch.broadcast_tensors(10 * f + 1, 8 * rows + 4, 8 * cols + 4),
                       -1).to(torch.uint8)


def test_gathered_rows_and_positions_follow_the_kept_units(qwen, gazer, processor):
    batch = processor(text=[prompt("describe")], videos=[_coded_frames()])
    gazed = gq.prepare_gazed_inputs(qwen, batch, gazer, gazing_ratio=0.3, policy="expand")
    keep = gazed.keep[0]
    assert 0 < gazed.num_video_tokens < gazed.num_dense_video_tokens
    units = keep.nonzero()  # (K, 3): t, unit row, unit col in row order
    rows = gazed.pixel_values_videos.view(-1, 3, TEMPORAL, PATCH, PATCH)[:, :, :, 0, 0]
    pixels = rows * torch.tensor(gq.CLIP_STD).view(1, 3, 1) + torch.tensor(gq.CLIP_MEAN).view(1, 3, 1)
    code = (pixels * 255).round().long()  # (K·4, channel, frame)
    sub = torch.arange(code.shape[0]) % 4
    unit = units.repeat_interleave(4, 0)
    prow, pcol = 2 * unit[:, 1] + sub // 2, 2 * unit[:, 2] + sub % 2
    assert torch.equal(code[:, 0, 0], 10 * (2 * unit[:, 0]) + 1)
    assert torch.equal(code[:, 0, 1], 10 * (2 * unit[:, 0] + 1) + 1)
    assert torch.equal(code[:, 1, 0], 8 * prow + 4)
    assert torch.equal(code[:, 2, 0], 8 * pcol + 4)
    assert torch.equal(gazed.vision_kwargs["position_ids"], torch.stack([prow, pcol], 1))
    # LLM token k sits at (start + t·interval, start + row, start + col), interval 2·2 = 4
    is_video = gazed.input_ids[0] == VIDEO
    start = int(is_video.nonzero()[0])
    mrope = gazed.position_ids[1:, 0, is_video]
    assert torch.equal(mrope, torch.stack([start + 4 * units[:, 0], start + units[:, 1],
                                           start + units[:, 2]]))


# ---- policies and token accounting --------------------------------------------------------------

def test_cell_cover_counts_every_touched_unit():
    cover = layout.cell_cover(4, 14)  # 98-px cells over 28-px units: 3.5 units each
    assert cover[0].nonzero().flatten().tolist() == [0, 1, 2, 3]
    assert cover[1].nonzero().flatten().tolist() == [3, 4, 5, 6]
    assert layout.cell_cover(2, 14).sum(1).tolist() == [7, 7]
    assert torch.equal(layout.cell_cover(14, 14), torch.eye(14, dtype=torch.bool))


def test_policies_account_for_their_tokens(gazer):
    frames = _frames(t=1, seed=4)
    expand, cells = gq.gaze_units(frames, gazer, "expand", gazing_ratio=0.2)
    drop, cells_drop = gq.gaze_units(frames, gazer, "drop", gazing_ratio=0.2)
    finest, cells_finest = gq.gaze_units(frames, gazer, "finest", gazing_ratio=0.2)
    budget = int(0.2 * 265)
    assert cells == cells_drop == cells_finest == budget
    assert bool((drop <= expand).all()) and int(drop.sum()) < int(expand.sum())
    # finest: every gazed id is one unit, so kept units per frame = the budget per frame
    assert finest.sum((1, 2)).tolist() == [budget]
    out = ag.gaze(frames, gazer, gazing_ratio=0.2, target_scales=[56, 112, 196, 392],
                  target_patch_size=28)
    finest_mask = out["gazing_mask"][3][0].view(1, 14, 14) > 0
    assert torch.equal(drop, finest_mask)


def test_non_square_frames_tile_and_crop(gazer):
    frames = _frames(t=1, h=252, w=448, seed=5)  # 9 × 16 merge units → 1 × 2 tiles of 392 px
    units, cells = gq.gaze_units(frames, gazer, "expand", gazing_ratio=1.0)
    assert units.shape == (1, 9, 16) and bool(units.all())
    assert cells == 2 * 265


def test_padded_batch_of_two_prompts(qwen, processor):
    batch = processor(text=[prompt("describe"), prompt("what is moving and then it")],
                      videos=[_frames(t=2, h=224, w=224, seed=6), _frames(t=2, h=224, w=224, seed=7)])
    assert bool((batch["attention_mask"] == 0).any())
    full = [torch.ones(1, 8, 8, dtype=torch.bool)] * 2
    gazed = gq.prepare_gazed_inputs(qwen, batch, keep=full)
    with torch.no_grad():
        dense = qwen(**batch).logits
        sparse = qwen(**gazed.model_inputs()).logits
    valid = batch["attention_mask"].bool()
    torch.testing.assert_close(sparse[valid], dense[valid], rtol=0, atol=1e-6)
    keep = [torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(s)) < 0.5 for s in (1, 2)]
    gazed = gq.prepare_gazed_inputs(qwen, batch, keep=keep)
    counts = (gazed.input_ids == VIDEO).sum(1).tolist()
    assert counts == [int(k.sum()) for k in keep] == gazed.video_splits
    assert gazed.attention_mask.sum(1).tolist() == [
        int(m.sum()) - 64 + c for m, c in zip(batch["attention_mask"], counts)]


# ---- placeholders and generation ----------------------------------------------------------------

def test_placeholder_count_equals_embeddings_and_generate_runs(qwen, gazer, processor):
    frames = _frames(t=4, seed=8)
    result = gq.generate(qwen, processor, frames, "describe the video", gaze_model=gazer,
                         gazing_ratio=0.1, policy="drop", max_new_tokens=3, do_sample=False)
    gazed = result.inputs
    assert int((gazed.input_ids == VIDEO).sum()) == gazed.video_embeds.shape[0] == gazed.num_video_tokens
    assert 0 < gazed.num_video_tokens < 392
    assert result.new_tokens.shape == (1, 3) and isinstance(result.text[0], str)
    assert torch.equal(qwen.model.rope_deltas, gazed.rope_deltas)
    # the vision kwargs reproduce the embeddings through the tower itself
    with torch.no_grad():
        again = qwen.model.visual(gazed.pixel_values_videos, grid_thw=gazed.video_grid_thw,
                                  **dict(gazed.vision_kwargs)).pooler_output
    assert torch.equal(again, gazed.video_embeds)


def test_nothing_kept_leaves_a_text_only_prompt(qwen, batch):
    keep = torch.zeros(_grid_shape(batch), dtype=torch.bool)
    gazed = gq.prepare_gazed_inputs(qwen, batch, keep=[keep])
    assert gazed.num_video_tokens == 0 and not bool((gazed.input_ids == VIDEO).any())
    with torch.no_grad():
        logits = qwen(**gazed.model_inputs()).logits
    assert logits.shape[1] == gazed.input_ids.shape[1] and bool(torch.isfinite(logits).all())


# ---- bad input ----------------------------------------------------------------------------------

def test_odd_frame_count_is_rejected(qwen, processor):
    with pytest.raises(ValueError, match="not a multiple of Qwen's temporal patch 2"):
        gq.generate(qwen, processor, _frames(t=3), "describe", max_new_tokens=1)


def test_grid_qwen_rejects_is_rejected(qwen, batch):
    bad = dict(batch, video_grid_thw=torch.tensor([[2, 28, 27]]))
    with pytest.raises(ValueError, match="multiples of the spatial merge 2"):
        gq.prepare_gazed_inputs(qwen, bad, keep=[torch.ones(2, 14, 13, dtype=torch.bool)])
    bad = dict(batch, video_grid_thw=torch.tensor([[2, 28, 30]]))
    with pytest.raises(ValueError, match="video_grid_thw implies"):
        gq.prepare_gazed_inputs(qwen, bad, keep=[torch.ones(2, 14, 15, dtype=torch.bool)])
    with pytest.raises(ValueError, match=r"pixel_values_videos must be \(P, 1176\)"):
        gq.prepare_gazed_inputs(qwen, dict(batch, pixel_values_videos=batch["pixel_values_videos"][:, :-1]),
                                keep=[torch.ones(2, 14, 14, dtype=torch.bool)])


@pytest.mark.parametrize("keep, match", [
    (torch.ones(2, 14, 13, dtype=torch.bool), r"keep\[0\] must be a bool tensor of shape \(2, 14, 14\)"),
    (torch.ones(2, 14, 14), r"keep\[0\] must be a bool tensor"),
    ([torch.ones(2, 14, 14, dtype=torch.bool)] * 2, "list of 1 bool tensors"),
])
def test_gaze_result_of_the_wrong_shape_is_rejected(qwen, batch, keep, match):
    with pytest.raises(ValueError, match=match):
        gq.prepare_gazed_inputs(qwen, batch, keep=keep)


def test_other_mistakes_are_named(qwen, batch, gazer):
    with pytest.raises(ValueError, match="policy must be one of"):
        gq.prepare_gazed_inputs(qwen, batch, gazer, policy="coarse")
    with pytest.raises(ValueError, match="multiples of 28 px"):
        gq.gaze_units(_frames(t=2, h=100, w=112), gazer)
    with pytest.raises(ValueError, match="video placeholders"):
        ids = batch["input_ids"].clone()
        ids[0, ids[0] == VIDEO] = 5
        gq.prepare_gazed_inputs(qwen, dict(batch, input_ids=ids),
                                keep=[torch.ones(2, 14, 14, dtype=torch.bool)])
    with pytest.raises(TypeError, match="Qwen2_5_VLForConditionalGeneration"):
        gq.prepare_gazed_inputs(gazer, batch, keep=[torch.ones(2, 14, 14, dtype=torch.bool)])
    with pytest.raises(ValueError, match="lacks 'pixel_values_videos'"):
        gq.prepare_gazed_inputs(qwen, {"input_ids": batch["input_ids"]})


def test_normalize_matches_the_recovery_constants():
    frames = _frames(t=2, h=28, w=28)
    x = normalize(frames)
    mean = torch.tensor(gq.CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(gq.CLIP_STD).view(1, 3, 1, 1)
    assert torch.equal(((x * std + mean) * 255).round().to(torch.uint8).permute(0, 2, 3, 1), frames)
