"""Sparse SigLIP: parity with the official gaze-aware SigLIP fixture, padding-free vs official
pooling, AutoGaze outputs as input, batch independence, bf16, loading and bad inputs."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from autogaze_ext import AutoGaze
from autogaze_ext.checkpoint import load_safetensors
from autogaze_ext.layout import unpad
from autogaze_ext.siglip import SparseSiglipVisionModel
from autogaze_ext.varlen import pack, scatter_tokens

from helpers import DATA, FIXTURE_MODEL

SIGLIP = DATA / "siglip_small"
N = 265


@pytest.fixture(scope="module")
def cases():
    return load_safetensors(DATA / "cases.safetensors")


@pytest.fixture(scope="module")
def model():
    return SparseSiglipVisionModel.from_pretrained(SIGLIP)


@pytest.fixture(scope="module")
def official_gaze(cases):
    return {k: cases[f"ratio05_tlr.{k}"] for k in ("gazing_pos", "if_padded_gazing", "num_gazing_each_frame")}


@pytest.fixture(scope="module")
def video(cases):
    return cases["pixel_values"].float()


@pytest.fixture(scope="module")
def run_free(model, video, official_gaze):
    with torch.no_grad():
        return model(video, official_gaze)


@pytest.fixture(scope="module")
def run_official(model, video, official_gaze):
    with torch.no_grad():
        return model(video, official_gaze, official_pooling=True)


def test_config_and_weights(model):
    cfg = model.config
    assert cfg.scales == [32, 64, 112, 224] and model.per_scale == [4, 16, 49, 196]
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (192, 2, 3)
    assert cfg.attention_mode == "block_causal"
    assert model.dtype == torch.float32
    state = load_safetensors(SIGLIP / "model.safetensors")
    own = model.state_dict()
    assert set(own) == set(state)
    for k, v in state.items():
        assert torch.equal(own[k], v.float()), k


def test_position_table(model):
    emb = model.vision_model.embeddings
    with torch.no_grad():
        table = emb.position_table(torch.float32)
        assert emb.position_table(torch.float32) is table  # cached, computed once per scale set
    assert table.shape == (N, 192)
    # the 224 scale (14x14 = num_positions) uses the learned table as is
    assert torch.equal(table[69:], emb.position_embedding.weight)
    grid = emb.position_embedding.weight.reshape(1, 14, 14, 192).permute(0, 3, 1, 2)
    want = F.interpolate(grid, size=(7, 7), mode="bicubic", align_corners=False)
    torch.testing.assert_close(table[20:69], want.permute(0, 2, 3, 1).reshape(49, 192))


def test_parity_last_hidden_state(cases, official_gaze, run_free, run_official):
    ref = cases["siglip_small.ratio05_tlr.last_hidden_state"]
    real = ~official_gaze["if_padded_gazing"]
    for out in (run_free, run_official):
        assert out.last_hidden_state.shape == ref.shape
        torch.testing.assert_close(out.last_hidden_state[real], ref[real], atol=1e-4, rtol=0)
        torch.testing.assert_close(out.features, ref[real], atol=1e-4, rtol=0)
    assert bool((run_free.last_hidden_state[~real] == 0).all())
    assert run_free.cu_seqlens.tolist() == [0, int(real.sum())]


def test_parity_pooler_official(cases, run_official):
    ref = cases["siglip_small.ratio05_tlr.pooler_output"]
    torch.testing.assert_close(run_official.pooler_output, ref, atol=1e-4, rtol=0)
    # the padded rows, dummy tokens, are encoded as officially too
    torch.testing.assert_close(run_official.last_hidden_state,
                               cases["siglip_small.ratio05_tlr.last_hidden_state"], atol=1e-4, rtol=0)


def test_padding_free_pooler(model, cases, run_free):
    ref = cases["siglip_small.ratio05_tlr.pooler_output"]
    assert (run_free.pooler_output - ref).abs().max() > 1e-3  # pads are not attended
    with torch.no_grad():  # = the official head over the real tokens only
        want = model.vision_model.head(run_free.features[None])
    torch.testing.assert_close(run_free.pooler_output, want, atol=1e-5, rtol=1e-5)


def test_official_mask_equals_block_causal_on_real_tokens(model, official_gaze):
    pad = official_gaze["if_padded_gazing"]
    counts = official_gaze["num_gazing_each_frame"]
    mask = model._official_mask(pad, counts)[0, 0]  # (S, S)
    real = ~pad[0]
    grid = unpad(official_gaze["gazing_pos"], pad, counts, N, N)
    ids = grid[grid != N]
    offsets = F.pad((grid != N).sum(-1).flatten().cumsum(0), (1, 0))
    p = pack(ids, offsets, 1, 16, model.per_scale)
    block_causal = p.frame[None, :] <= p.frame[:, None]
    assert torch.equal(mask[real][:, real], block_causal)
    assert not bool(mask[real][:, ~real].any())  # real queries never see padded keys


def test_ids_input_equals_official_fields(model, video, official_gaze, run_free):
    pad = official_gaze["if_padded_gazing"]
    grid = unpad(official_gaze["gazing_pos"], pad, official_gaze["num_gazing_each_frame"], N, N)
    gaze = {"ids": grid[grid != N], "frame_offsets": F.pad((grid != N).sum(-1).flatten().cumsum(0), (1, 0))}
    with torch.no_grad():
        out = model(video, gaze)
    torch.testing.assert_close(out.features, run_free.features, atol=0, rtol=0)
    torch.testing.assert_close(out.pooler_output, run_free.pooler_output, atol=0, rtol=0)
    # without the official fields the padded layout is rebuilt: per frame the batch's max count
    assert out.last_hidden_state.shape[1] == gaze["ids"].shape[0]
    assert not bool(out.if_padded_gazing.any())


@pytest.fixture(scope="module")
def autogaze_run(video):
    clip = video[:, :3]
    clips = torch.cat([clip, clip.flip(-1)])
    gaze = AutoGaze.from_pretrained(FIXTURE_MODEL)(clips, gazing_ratio=0.3, task_loss_requirement=0.45)
    return clips, gaze


def test_autogaze_output_batch(model, autogaze_run):
    clips, gaze = autogaze_run
    with torch.no_grad():
        out = model(clips, gaze)
        official = model(clips, gaze, official_pooling=True)
    real = ~gaze["if_padded_gazing"]
    assert out.features.shape == (gaze["ids"].shape[0], 192)
    torch.testing.assert_close(out.last_hidden_state[real], out.features, atol=0, rtol=0)
    torch.testing.assert_close(official.features, out.features, atol=1e-4, rtol=0)
    # scatter coverage = the gaze mask of the model output; scatter/gather round trip
    p = out.packed
    grids, masks = scatter_tokens(out.features, p, model.per_scale, 2, 3)
    for m, want in zip(masks, gaze["gazing_mask"]):
        assert torch.equal(m.flatten(2), want.bool())
    # each clip is encoded as if alone (no attention across clips)
    off = gaze["frame_offsets"]
    for b in range(2):
        lo, hi = int(off[3 * b]), int(off[3 * b + 3])
        alone = {"ids": gaze["ids"][lo:hi], "frame_offsets": off[3 * b: 3 * b + 4] - lo}
        with torch.no_grad():
            single = model(clips[b: b + 1], alone)
        torch.testing.assert_close(single.features, out.features[lo:hi], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(single.pooler_output, out.pooler_output[b: b + 1], atol=1e-5, rtol=1e-5)


def test_bfloat16(video, official_gaze, run_free):
    model = SparseSiglipVisionModel.from_pretrained(SIGLIP, dtype=torch.bfloat16)
    with torch.no_grad():
        out = model(video[:, :4].bfloat16(), _first_frames(official_gaze, 4))
    assert out.features.dtype == torch.bfloat16
    n = out.features.shape[0]
    err = (out.features.float() - run_free.features[:n]).abs().max()
    assert err < 0.1 * run_free.features.abs().max()


def _first_frames(gaze, t):
    s = int(gaze["num_gazing_each_frame"][:t].sum())
    return {"gazing_pos": gaze["gazing_pos"][:, :s], "if_padded_gazing": gaze["if_padded_gazing"][:, :s],
            "num_gazing_each_frame": gaze["num_gazing_each_frame"][:t]}


def test_no_head_config(tmp_path, video, official_gaze, run_free):
    shutil.copy(SIGLIP / "model.safetensors", tmp_path / "model.safetensors")
    cfg = json.loads((SIGLIP / "config.json").read_text())
    cfg["vision_use_head"] = False
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    model = SparseSiglipVisionModel.from_pretrained(tmp_path)
    assert not hasattr(model.vision_model, "head")
    with torch.no_grad():
        out = model(video[:, :2], _first_frames(official_gaze, 2))
    assert out.pooler_output is None
    torch.testing.assert_close(out.features, run_free.features[: out.features.shape[0]], atol=1e-5, rtol=0)


def test_gradients_flow(video, official_gaze):
    model = SparseSiglipVisionModel.from_pretrained(SIGLIP).train()
    out = model(video[:, :2], _first_frames(official_gaze, 2))
    out.pooler_output.sum().backward()
    assert model.vision_model.embeddings.position_embedding.weight.grad.abs().sum() > 0
    assert model.vision_model.embeddings.patch_embedding.weight.grad.abs().sum() > 0


def test_bad_inputs(model, video, official_gaze):
    gaze = _first_frames(official_gaze, 2)
    clip = video[:, :2]
    with pytest.raises(KeyError, match="ids"):
        model(clip, {"gazing_pos": gaze["gazing_pos"]})
    with pytest.raises(TypeError, match="gaze"):
        model(clip, [1, 2])
    with pytest.raises(ValueError, match="video must be 5-D"):
        model(clip[0], gaze)
    with pytest.raises(ValueError, match="channels"):
        model(clip[:, :, :2], gaze)
    with pytest.raises(ValueError, match="num_gazing_each_frame"):
        model(video[:, :3], gaze)
    with pytest.raises(ValueError, match="frame_offsets"):
        model(clip, {"ids": torch.zeros(3, dtype=torch.long), "frame_offsets": torch.tensor([0, 3])})
    coarse = SparseSiglipVisionModel.from_pretrained(SIGLIP, scales="112+224")
    with pytest.raises(ValueError, match="N = 265"):
        coarse(clip, {**gaze, "num_vision_tokens_each_frame": 265})
    with pytest.raises(ValueError, match="scales"):
        coarse(clip, {**gaze, "scales": [32, 64, 112, 224]})
    with pytest.raises(ValueError, match="gazing_mask"):
        coarse(clip, {**gaze, "gazing_mask": [torch.zeros(1, 2, 4), torch.zeros(1, 2, 16)]})
    with pytest.raises(ValueError, match=r"ids must lie in \[0, N = 245\)"):
        coarse(video, official_gaze)


def test_native_attention_backend_matches(model, video, official_gaze):
    """The packed tower with the native varlen attention kernel equals the per-clip SDPA path."""
    ref = model(video, official_gaze, backend="reference")
    nat = model(video, official_gaze, backend="native")
    torch.testing.assert_close(nat["features"], ref["features"], atol=1e-4, rtol=0)
    torch.testing.assert_close(nat["pooler_output"], ref["pooler_output"], atol=1e-4, rtol=0)


def _forbid_native_ops(monkeypatch):
    from autogaze_ext import ops

    def forbidden(*args, **kwargs):
        raise AssertionError("the reference backend reached the native extension")

    for name in ("gather_patches", "multiscale_patches", "varlen_attention"):
        monkeypatch.setattr(ops, name, forbidden)


@pytest.mark.parametrize("official_pooling", [False, True])
def test_reference_backend_never_reaches_native_ops(monkeypatch, model, video, official_gaze,
                                                     official_pooling):
    """backend='reference' is plain PyTorch (as for the gaze model), and gives what the native
    gather gives."""
    gaze = _first_frames(official_gaze, 3)
    with torch.no_grad():
        native = model(video[:, :3], gaze, official_pooling=official_pooling, backend="native")
        _forbid_native_ops(monkeypatch)
        ref = model(video[:, :3], gaze, official_pooling=official_pooling, backend="reference")
        with pytest.raises(AssertionError, match="native extension"):
            model(video[:, :3], gaze, official_pooling=official_pooling, backend="native")
    torch.testing.assert_close(ref.features, native.features, atol=1e-5, rtol=0)
    torch.testing.assert_close(ref.pooler_output, native.pooler_output, atol=1e-5, rtol=0)


def test_auto_backend_gathers_natively_on_cpu(monkeypatch, model, video, official_gaze):
    _forbid_native_ops(monkeypatch)
    with pytest.raises(AssertionError, match="native extension"):
        model(video[:, :2], _first_frames(official_gaze, 2))


def test_reference_gather_keeps_the_video_dtype(video, official_gaze):
    model = SparseSiglipVisionModel.from_pretrained(SIGLIP, dtype=torch.bfloat16)
    gaze = _first_frames(official_gaze, 2)
    with torch.no_grad():
        ref = model(video[:, :2].bfloat16(), gaze, backend="reference")
        nat = model(video[:, :2].bfloat16(), gaze, backend="native")
    assert ref.features.dtype == torch.bfloat16
    torch.testing.assert_close(ref.features.float(), nat.features.float(), atol=0.05, rtol=0.02)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["auto", "reference", "native"])
def test_cuda_backends_match_cpu(model, video, official_gaze, run_free, backend):
    gpu = SparseSiglipVisionModel.from_pretrained(SIGLIP, device="cuda")
    with torch.no_grad():
        out = gpu(video.cuda(), {k: v.cuda() for k, v in official_gaze.items()}, backend=backend)
    torch.testing.assert_close(out.features.cpu(), run_free.features, atol=1e-4, rtol=0)
