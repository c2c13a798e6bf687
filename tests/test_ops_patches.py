"""multiscale_patches / gather_patches: native kernels against autogaze_ext.reference."""

import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode

from autogaze_ext import ops, reference

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
AUTOGAZE_SCALES = (32, 64, 112, 224)  # ids [0, 4), [4, 20), [20, 69), [69, 265) with p = 16

# video shape (B, T, C, H, W), scales, patch size
CASES = [
    pytest.param((1, 1, 3, 224, 224), AUTOGAZE_SCALES, 16, id="autogaze-224"),
    pytest.param((7, 1, 3, 37, 53), (48, 96), 16, id="odd-37x53"),
    pytest.param((1, 16, 3, 448, 448), AUTOGAZE_SCALES, 16, id="clip16-448"),
    pytest.param((2, 3, 1, 300, 200), (56, 112, 196, 392), 14, id="nonsquare-c1-p14"),
    pytest.param((7, 16, 3, 40, 24), (32, 64), 16, id="b7-t16"),
]

FLOAT32_MAX_ABS_DIFF = 1e-5
# Reduced precision: one rounding of the float32 result (half an ulp) on top of the float32 error.
REDUCED_RTOL = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


def make_video(shape, dtype=torch.float32, device="cpu", seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator).to(device=device, dtype=dtype)


def num_ids(scales, patch_size):
    return sum((side // patch_size) ** 2 for side in scales)


def random_selection(frames, n, seed=0, empty_every=3):
    """Random ids per frame (every `empty_every`-th frame empty) -> (ids, frame_offsets)."""
    generator = torch.Generator().manual_seed(seed)
    counts = torch.randint(1, n + 1, (frames,), generator=generator)
    counts[::empty_every] = 0
    ids = torch.cat([torch.randperm(n, generator=generator)[:c] for c in counts.tolist()])
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])
    return ids, offsets


def assert_float32_close(actual, expected):
    diff = (actual - expected).abs().max().item() if actual.numel() else 0.0
    assert diff <= FLOAT32_MAX_ABS_DIFF, f"max abs diff {diff:.3g} > {FLOAT32_MAX_ABS_DIFF}"


# --- multiscale_patches ---------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape, scales, patch", CASES)
def test_multiscale_matches_reference(device, shape, scales, patch):
    video = make_video(shape, device=device)
    out = ops.multiscale_patches(video, scales, patch)
    B, T, C = shape[:3]
    assert out.shape == (B, T, num_ids(scales, patch), C * patch * patch)
    assert out.dtype == video.dtype and out.device == video.device
    assert_float32_close(out, reference.multiscale_patches(video, scales, patch))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape, scales, patch", [CASES[0], CASES[1], CASES[3]])
def test_multiscale_reduced_precision_computes_in_float32(device, dtype, shape, scales, patch):
    video = make_video(shape, dtype=dtype, device=device)
    out = ops.multiscale_patches(video, scales, patch)
    assert out.dtype == dtype
    expected = reference.multiscale_patches(video.float(), scales, patch)
    torch.testing.assert_close(out.float(), expected, rtol=REDUCED_RTOL[dtype], atol=FLOAT32_MAX_ABS_DIFF)


@pytest.mark.parametrize("device", DEVICES)
def test_autogaze_layout(device):
    """265 ids: scale blocks in order, cells row-major, patches (c, ky, kx); 224 is the frame itself."""
    video = make_video((1, 2, 3, 224, 224), device=device)
    out = ops.multiscale_patches(video, AUTOGAZE_SCALES, 16)
    assert out.shape == (1, 2, 265, 768)
    for first, side in zip((0, 4, 20, 69), AUTOGAZE_SCALES):
        grid = side // 16
        frame = video[0, 1] if side == 224 else F.interpolate(video[0], size=(side, side), mode="bicubic")[1]
        for row, col in [(0, 0), (0, grid - 1), (grid - 1, 1)]:
            cell = frame[:, 16 * row : 16 * row + 16, 16 * col : 16 * col + 16]
            assert_float32_close(out[0, 1, first + row * grid + col], cell.reshape(-1))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_unresized_scale_is_exact_copy(device, dtype):
    video = make_video((2, 2, 3, 64, 64), dtype=dtype, device=device)
    out = ops.multiscale_patches(video, (32, 64), 16)
    assert torch.equal(out[:, :, 4:], reference.multiscale_patches(video, (64,), 16))


@pytest.mark.parametrize("device", DEVICES)
def test_strided_video(device):
    """Frames stored (B, T, H, W, C) and viewed as (B, T, C, H, W): strides are honoured."""
    video = make_video((2, 3, 45, 61, 3), device=device).permute(0, 1, 4, 2, 3)
    assert not video.is_contiguous()
    scales = (32, 64, 96)
    expected = reference.multiscale_patches(video.contiguous(), scales, 16)
    assert_float32_close(ops.multiscale_patches(video, scales, 16), expected)
    ids, offsets = random_selection(6, num_ids(scales, 16))
    out = ops.gather_patches(video, ids.to(device), offsets.to(device), scales, 16)
    assert_float32_close(out, reference.gather_patches(video.contiguous(), ids.to(device), offsets.to(device), scales, 16))


# --- gather_patches -------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape, scales, patch", CASES)
def test_gather_random_subsets_with_empty_frames(device, shape, scales, patch):
    video = make_video(shape, device=device)
    ids, offsets = random_selection(shape[0] * shape[1], num_ids(scales, patch), empty_every=2)
    ids, offsets = ids.to(device), offsets.to(device)
    out = ops.gather_patches(video, ids, offsets, scales, patch)
    assert out.shape == (ids.numel(), shape[2] * patch * patch)
    assert_float32_close(out, reference.gather_patches(video, ids, offsets, scales, patch))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch, frames, per_frame", [
    (64, 2, "random"),  # many clips, some frames empty
    (3, 1, "one"),  # clips of one token
    (1, 8, "all"),  # one clip of 8 * 265 = 2120 tokens
])
def test_gather_varlen_layouts(device, batch, frames, per_frame):
    side = 64 if per_frame == "random" else 224
    video = make_video((batch, frames, 3, side, side), device=device, seed=3)
    scales = (32, 64) if per_frame == "random" else AUTOGAZE_SCALES
    n = num_ids(scales, 16)
    if per_frame == "random":
        ids, offsets = random_selection(batch * frames, n, seed=4)
    else:
        count = 1 if per_frame == "one" else n
        ids = torch.cat([torch.randperm(n)[:count] for _ in range(batch * frames)])
        offsets = torch.arange(batch * frames + 1) * count
    ids, offsets = ids.to(device), offsets.to(device)
    out = ops.gather_patches(video, ids, offsets, scales, 16)
    assert_float32_close(out, reference.gather_patches(video, ids, offsets, scales, 16))


@pytest.mark.parametrize("device", DEVICES)
def test_gather_equals_rows_of_multiscale(device):
    video = make_video((2, 4, 3, 100, 80), device=device)
    full = ops.multiscale_patches(video, AUTOGAZE_SCALES, 16).flatten(0, 1)
    ids, offsets = random_selection(8, 265, seed=1)
    frame = torch.repeat_interleave(torch.arange(8), offsets.diff())
    out = ops.gather_patches(video, ids.to(device), offsets.to(device), AUTOGAZE_SCALES, 16)
    assert torch.equal(out, full[frame.to(device), ids.to(device)])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_gather_all_ids_is_multiscale(device, dtype):
    video = make_video((2, 3, 3, 50, 70), dtype=dtype, device=device)
    scales = (48, 96)
    n = num_ids(scales, 16)
    ids = torch.arange(n, device=device).repeat(6)
    offsets = torch.arange(0, 6 * n + 1, n, device=device)
    out = ops.gather_patches(video, ids, offsets, scales, 16)
    assert torch.equal(out, ops.multiscale_patches(video, scales, 16).reshape(6 * n, -1))


@pytest.mark.parametrize("device", DEVICES)
def test_gather_no_ids(device):
    video = make_video((2, 3, 3, 32, 32), device=device)
    ids = torch.zeros(0, dtype=torch.int64, device=device)
    offsets = torch.zeros(7, dtype=torch.int64, device=device)
    out = ops.gather_patches(video, ids, offsets, (32,), 16)
    assert out.shape == (0, 768) and out.device == video.device


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch(device):
    video = make_video((0, 3, 3, 32, 32), device=device)
    assert ops.multiscale_patches(video, (16, 32), 16).shape == (0, 3, 5, 768)


# --- torch.compile and op registration ------------------------------------------------------


def test_opcheck():
    video = make_video((2, 2, 3, 37, 53))
    ids, offsets = random_selection(4, num_ids((32, 64), 16))
    torch.library.opcheck(torch.ops.autogaze_ext.multiscale_patches, (video, [32, 64], 16))
    torch.library.opcheck(torch.ops.autogaze_ext.gather_patches, (video, ids, offsets, [32, 64], 16))


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(device):
    scales = (32, 64, 112)

    def embed(video, ids, offsets):
        dense = ops.multiscale_patches(video, scales, 16)
        packed = ops.gather_patches(video, ids, offsets, scales, 16)
        return dense.sum(dim=-1), packed * 2

    video = make_video((1, 4, 3, 96, 96), device=device)
    ids, offsets = random_selection(4, num_ids(scales, 16))
    ids, offsets = ids.to(device), offsets.to(device)
    compiled = torch.compile(embed, fullgraph=True, backend="aot_eager")
    for actual, expected in zip(compiled(video, ids, offsets), embed(video, ids, offsets)):
        assert torch.equal(actual, expected)


# --- bad input ------------------------------------------------------------------------------


def _gather_args(**changes):
    args = dict(
        video=make_video((1, 2, 3, 32, 32)),
        ids=torch.tensor([0, 4, 1], dtype=torch.int64),
        frame_offsets=torch.tensor([0, 2, 3], dtype=torch.int64),
        scales=(16, 32),
        patch_size=16,
    )
    args.update(changes)
    return args


# op, arguments, error, message, checked while tracing (shape-level) too
BAD_INPUTS = [
    (ops.multiscale_patches, dict(video=torch.zeros(2, 3, 32, 32), scales=(32,)), ValueError, r"video must be 5-D \(B, T, C, H, W\), got shape \[2, 3, 32, 32\]", True),
    (ops.multiscale_patches, dict(video=torch.zeros(1, 1, 3, 32, 32, dtype=torch.uint8), scales=(32,)), TypeError, "video must be float32, bfloat16 or float16, got torch.uint8", True),
    (ops.multiscale_patches, dict(video=torch.zeros(1, 1, 0, 32, 32), scales=(32,)), ValueError, "video needs C, H, W > 0", False),
    (ops.multiscale_patches, dict(video=torch.zeros(1, 1, 3, 32, 32), scales=(32, 40)), ValueError, r"scales\[1\] = 40 must be a positive multiple of patch_size = 16", True),
    (ops.multiscale_patches, dict(video=torch.zeros(1, 1, 3, 32, 32), scales=()), ValueError, "scales must hold 1 to 16 sizes", True),
    (ops.multiscale_patches, dict(video=torch.zeros(1, 1, 3, 32, 32), scales=(32,), patch_size=0), ValueError, "patch_size must be positive, got 0", True),
    (ops.gather_patches, _gather_args(ids=torch.tensor([0, 4, 1], dtype=torch.int32)), TypeError, "ids must be int64, got torch.int32", True),
    (ops.gather_patches, _gather_args(ids=torch.zeros(3, 1, dtype=torch.int64)), ValueError, r"ids must be 1-D, got shape \[3, 1\]", True),
    (ops.gather_patches, _gather_args(frame_offsets=torch.tensor([0.0, 2.0, 3.0])), TypeError, "frame_offsets must be int64, got torch.float32", True),
    (ops.gather_patches, _gather_args(frame_offsets=torch.tensor([0, 3])), ValueError, r"frame_offsets must have B\*T \+ 1 = 3 elements .* got 2", True),
    (ops.gather_patches, _gather_args(ids=torch.tensor([0, 5, 1])), IndexError, r"ids\[1\] = 5 is out of range \[0, 5\)", False),
    (ops.gather_patches, _gather_args(ids=torch.tensor([0, 1, -1])), IndexError, r"ids\[2\] = -1 is out of range \[0, 5\)", False),
    (ops.gather_patches, _gather_args(frame_offsets=torch.tensor([1, 2, 3])), ValueError, r"frame_offsets\[0\] must be 0, got 1", False),
    (ops.gather_patches, _gather_args(frame_offsets=torch.tensor([0, 3, 2])), ValueError, "frame_offsets must be non-decreasing", False),
    (ops.gather_patches, _gather_args(frame_offsets=torch.tensor([0, 1, 2])), ValueError, r"frame_offsets\[-1\] must equal len\(ids\) = 3, got 2", False),
    (ops.gather_patches, _gather_args(scales=(16, 24)), ValueError, r"scales\[1\] = 24 must be a positive multiple of patch_size = 16", True),
    (ops.gather_patches, _gather_args(ids=torch.tensor([0, 4, 1], device="meta")), ValueError, r"ids must be on video's device \(cpu\), got meta", True),
]


@pytest.mark.parametrize("op, kwargs, error, message, traced", BAD_INPUTS)
def test_bad_input_names_the_argument(op, kwargs, error, message, traced):
    with pytest.raises(error, match=message):
        op(**kwargs)


@pytest.mark.parametrize("op, kwargs, error, message", [case[:4] for case in BAD_INPUTS if case[4]])
def test_bad_input_while_tracing(op, kwargs, error, message):
    """The fake implementations (torch.compile, FakeTensor) give the same errors."""
    with FakeTensorMode() as mode:
        kwargs = {k: mode.from_tensor(v) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        with pytest.raises(error, match=message):
            op(**kwargs)


@pytest.mark.cuda
def test_cuda_bad_input_names_the_argument():
    video = make_video((1, 2, 3, 32, 32), device="cuda")
    ids = torch.tensor([0, 4, 1], device="cuda")
    offsets = torch.tensor([0, 2, 3], device="cuda")
    with pytest.raises(ValueError, match=r"ids must be on video's device \(cuda:0\), got cpu"):
        ops.gather_patches(video, ids.cpu(), offsets, (16, 32), 16)
    with pytest.raises(ValueError, match=r"frame_offsets must be on video's device \(cuda:0\), got cpu"):
        ops.gather_patches(video, ids, offsets.cpu(), (16, 32), 16)
    with pytest.raises(ValueError, match=r"frame_offsets must have B\*T \+ 1 = 3 elements"):
        ops.gather_patches(video, ids, offsets[:2], (16, 32), 16)
    with pytest.raises(TypeError, match="video must be float32, bfloat16 or float16, got torch.float64"):
        ops.multiscale_patches(video.double(), (32,), 16)
