"""Every case of the official reference fixtures (tests/data/reference, see its README)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from autogaze_ext import AutoGaze
from autogaze_ext.checkpoint import load_safetensors

DATA = Path(__file__).parent / "data" / "reference"
PADDED_FIELDS = ("gazing_pos", "if_padded_gazing", "num_gazing_each_frame")


@pytest.fixture(scope="module")
def model():
    return AutoGaze.from_pretrained(DATA / "autogaze_model")


@pytest.fixture(scope="module")
def cases():
    return load_safetensors(DATA / "cases.safetensors")


@pytest.fixture(scope="module")
def calls():
    return json.loads((DATA / "cases.json").read_text())


@pytest.fixture(scope="module")
def clip(cases):
    return cases["pixel_values"].float()


def assert_case(out, cases, case):
    for field in PADDED_FIELDS:
        expected, got = cases[f"{case}.{field}"], out[field]
        assert got.shape == expected.shape, (case, field, got.shape, expected.shape)
        mismatch = (got != expected).nonzero()
        assert mismatch.numel() == 0, f"{case}.{field}: first mismatches at {mismatch[:5].tolist()}"
    for i, mask in enumerate(out["gazing_mask"]):
        assert mask.dtype == torch.float32
        assert torch.equal(mask, cases[f"{case}.gazing_mask.{i}"]), (case, "gazing_mask", i)
    assert_padding_free_form_agrees(out)


def assert_padding_free_form_agrees(out):
    """``ids``/``frame_offsets`` hold exactly the real slots of the padded form, in order."""
    n = out["num_vision_tokens_each_frame"]
    counts = out["num_gazing_each_frame"].tolist()
    batch = out["gazing_pos"].shape[0]
    expected, offsets = [], [0]
    for b in range(batch):
        start = 0
        for t, c in enumerate(counts):
            seg = out["gazing_pos"][b, start : start + c]
            real = ~out["if_padded_gazing"][b, start : start + c]
            expected.append(seg[real] - n * t)
            offsets.append(offsets[-1] + int(real.sum()))
            start += c
    assert torch.equal(out["ids"], torch.cat(expected))
    assert out["frame_offsets"].tolist() == offsets


BACKENDS = pytest.mark.parametrize("backend", ["reference", "native"])


@BACKENDS
def test_ratio05_with_requirement(model, cases, calls, clip, backend):
    out = model(clip, gazing_ratio=0.5, task_loss_requirement=calls["task_loss_requirement"],
                backend=backend)
    assert_case(out, cases, "ratio05_tlr")
    real = out["frame_offsets"].diff().tolist()
    assert real == calls["cases"]["ratio05_tlr"]["real_per_frame"]
    assert torch.equal(out["task_loss_requirement"], torch.full((1, 16), 0.45))


@BACKENDS
def test_ratio01(model, cases, clip, backend):
    out = model(clip, gazing_ratio=0.1, backend=backend)
    assert_case(out, cases, "ratio01")
    assert out["num_gazing_each_frame"].tolist() == [26] * 16
    assert not out["if_padded_gazing"].any()
    assert out["task_loss_requirement"] is None


def test_official_dict_input(model, cases, clip):
    out = model({"video": clip}, gazing_ratio=0.1)
    assert torch.equal(out["gazing_pos"], cases["ratio01.gazing_pos"])


@BACKENDS
def test_batch2_official_batching(model, cases, clip, backend):
    video = torch.cat([clip, clip.flip(-1)])
    out = model(video, gazing_ratio=0.5, task_loss_requirement=0.45, official_batching=True,
                backend=backend)
    assert_case(out, cases, "batch2_ratio05_tlr")


def test_batch2_default_is_batch_invariant(model, clip):
    video = torch.cat([clip, clip.flip(-1)])
    together = model(video, gazing_ratio=0.5, task_loss_requirement=0.45)
    alone = [model(v[None], gazing_ratio=0.5, task_loss_requirement=0.45) for v in video]
    assert torch.equal(together["ids"], torch.cat([a["ids"] for a in alone]))
    per_frame = together["frame_offsets"].diff().view(2, 16)
    for row, a in zip(per_frame, alone):
        assert torch.equal(row, a["frame_offsets"].diff())


def test_teacher_forced_score(model, cases, clip):
    info = {f: cases[f"teacher_forced_ratio05_tlr.{f}"] for f in PADDED_FIELDS}
    out = model.score(clip, info)
    for field in ("log_action_probs", "task_loss_prediction"):
        expected = cases[f"teacher_forced_ratio05_tlr.{field}"]
        assert out[field].dtype == torch.float32
        assert out[field].shape == expected.shape
        torch.testing.assert_close(out[field], expected, atol=1e-4, rtol=0)


def test_score_accepts_generation_output(model, cases, clip):
    gen = model(clip, gazing_ratio=0.5, task_loss_requirement=0.45)
    out = model.score(clip, gen)
    expected = cases["teacher_forced_ratio05_tlr.log_action_probs"]
    torch.testing.assert_close(out["log_action_probs"], expected, atol=1e-4, rtol=0)


@BACKENDS
def test_streaming_equals_offline(model, cases, clip, backend):
    state = model.init_stream(1)
    pieces = []
    for t in range(clip.shape[1]):
        out = model.stream_step(clip[:, t], state, gazing_ratio=0.1, backend=backend)
        assert out["gazing_pos"].max() < model.num_tokens  # frame-local ids
        pieces.append(out["gazing_pos"] + model.num_tokens * t)
    assert torch.equal(torch.cat(pieces, 1), cases["streaming_ratio01.gazing_pos"])


@BACKENDS
@pytest.mark.parametrize("official_batching", [True, False])
def test_res392_patch14_tiling(model, cases, official_batching, backend):
    video = cases["pixel_values_392"].float()
    out = model(video, gazing_ratio=0.5, task_loss_requirement=0.45,
                target_scales=[56, 112, 196, 392], target_patch_size=14,
                official_batching=official_batching, backend=backend)
    assert out["num_vision_tokens_each_frame"] == 1060
    assert [m.shape[-1] for m in out["gazing_mask"]] == [16, 64, 196, 784]
    assert_case(out, cases, "res392_p14")


def test_target_scales_equal_to_own_layout_is_untiled(model, cases, clip):
    out = model(clip, gazing_ratio=0.1, target_scales=[32, 64, 112, 224], target_patch_size=16)
    assert torch.equal(out["gazing_pos"], cases["ratio01.gazing_pos"])


def test_fixture_checkpoint_is_bfloat16_and_loads_as_float32(model):
    stored = load_safetensors(DATA / "autogaze_model" / "model.safetensors")
    assert {t.dtype for t in stored.values()} == {torch.bfloat16}
    state = model.state_dict()
    assert set(state) == set(stored)
    for name, tensor in stored.items():
        assert state[name].dtype == torch.float32
        assert torch.equal(state[name], tensor.float()), name


def test_config_inference_defaults_apply(model, clip):
    """No ratio and no requirement: the checkpoint's settings (fixed 0.75, requirement 0.7)."""
    default = model(clip)
    explicit = model(clip, gazing_ratio=0.75, task_loss_requirement=0.7)
    for field in PADDED_FIELDS + ("ids", "frame_offsets", "task_loss_requirement"):
        assert torch.equal(default[field], explicit[field]), field
    assert int(default["frame_offsets"].diff().max()) <= 198


@pytest.mark.cuda
def test_fixture_cases_on_cuda(cases, calls, clip):
    """The same exact ids on a GPU (no early exit there: the no-op steps run on device)."""
    model = AutoGaze.from_pretrained(DATA / "autogaze_model", device="cuda")
    video = clip.cuda()
    for backend in ("reference", "native"):
        out = model(video, gazing_ratio=0.5, task_loss_requirement=calls["task_loss_requirement"],
                    backend=backend)
        assert_case(_cpu(out), cases, "ratio05_tlr")
        assert_case(_cpu(model(video, gazing_ratio=0.1, backend=backend)), cases, "ratio01")
        pair = torch.cat([video, video.flip(-1)])
        out = model(pair, gazing_ratio=0.5, task_loss_requirement=0.45, official_batching=True,
                    backend=backend)
        assert_case(_cpu(out), cases, "batch2_ratio05_tlr")
    out = model(cases["pixel_values_392"].float().cuda(), gazing_ratio=0.5,
                task_loss_requirement=0.45, target_scales=[56, 112, 196, 392],
                target_patch_size=14, official_batching=True)
    assert_case(_cpu(out), cases, "res392_p14")
    info = {f: cases[f"teacher_forced_ratio05_tlr.{f}"].cuda() for f in PADDED_FIELDS}
    scored = model.score(video, info)
    torch.testing.assert_close(scored["log_action_probs"].cpu(),
                               cases["teacher_forced_ratio05_tlr.log_action_probs"],
                               atol=1e-4, rtol=0)


def _cpu(out):
    moved = {}
    for key, value in out.items():
        if isinstance(value, torch.Tensor):
            value = value.cpu()
        elif isinstance(value, list) and value and isinstance(value[0], torch.Tensor):
            value = [v.cpu() for v in value]
        moved[key] = value
    return moved
