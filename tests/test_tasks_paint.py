import pytest
import torch
import torch.nn.functional as F

from autogaze_ext import AutoGazeConfig, preprocess, synthetic_video
from autogaze_ext.tasks import PaintReconstruction, greedy_oracle

LAYOUTS = [((32, 64, 112, 224), 224), ((64, 128), 128), ((48, 64), 48)]


def _slow_upsampled(frame, scales, S):
    """(C,S,S) -> list of (C,S,S): bicubic down to s, nearest-exact back to S."""
    out = []
    for s in scales:
        x = frame[None]
        if s != S:
            x = F.interpolate(x, size=(s, s), mode="bicubic", align_corners=False)
            x = F.interpolate(x, size=(S, S), mode="nearest-exact")
        out.append(x[0])
    return out


def _slow_paint(prev, ups, ids, scales, S, p=16):
    """Paint ids (any order) coarse-first on a copy of prev, one cell at a time."""
    recon = prev.clone()
    grids = [s // p for s in scales]
    starts = [0]
    for g in grids:
        starts.append(starts[-1] + g * g)
    for k, g in enumerate(grids):
        cell = S // g
        for i in ids:
            if starts[k] <= i < starts[k + 1]:
                r, c = divmod(i - starts[k], g)
                recon[:, r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = \
                    ups[k][:, r * cell:(r + 1) * cell, c * cell:(c + 1) * cell]
    return recon


def _slow_prefix(video, ids, offsets, scales, S, fill):
    B, T, C = video.shape[:3]
    out, frame_loss, recons = [], torch.zeros(B, T), torch.zeros_like(video)
    for b in range(B):
        prev = torch.full((C, S, S), fill)
        for t in range(T):
            f = b * T + t
            fid = ids[offsets[f]:offsets[f + 1]].tolist()
            ups = _slow_upsampled(video[b, t], scales, S)
            for j in range(len(fid)):
                rec = _slow_paint(prev, ups, fid[:j + 1], scales, S)
                out.append((rec - video[b, t]).abs().mean())
            prev = _slow_paint(prev, ups, fid, scales, S)
            recons[b, t] = prev
            frame_loss[b, t] = (prev - video[b, t]).abs().mean()
    return torch.stack(out) if out else torch.zeros(0), frame_loss, recons


def _random_gaze(B, T, N, gen, max_len=30, allow_empty=True):
    ids, counts = [], []
    for _ in range(B * T):
        n = int(torch.randint(0 if allow_empty else 1, max_len, (1,), generator=gen))
        ids.append(torch.randperm(N, generator=gen)[:n])
        counts.append(n)
    offsets = torch.zeros(B * T + 1, dtype=torch.long)
    offsets[1:] = torch.tensor(counts).cumsum(0)
    return torch.cat(ids), offsets


def _video(B, T, S, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, 3, S, S, generator=gen)


def test_block_geometry():
    assert PaintReconstruction().block == 8 and PaintReconstruction().num_blocks == 28 * 28
    assert PaintReconstruction((64, 128), 128).block == 16
    assert PaintReconstruction((48, 64), 48).block == 4
    task = PaintReconstruction.from_config(AutoGazeConfig.build())
    assert task.num_tokens == 265 and task.per_scale == (4, 16, 49, 196)


def test_scale_images():
    task = PaintReconstruction()
    video = _video(1, 2, 224)
    up = task.scale_images(video)
    assert up.shape == (1, 2, 4, 3, 224, 224)
    assert torch.equal(up[:, :, 3], video)
    ref = _slow_upsampled(video[0, 1], task.scales, 224)
    for k in range(4):
        torch.testing.assert_close(up[0, 1, k], ref[k])
    # nearest: a 32-scale cell is 112 px of 16x16 source pixels, each a constant 7x7 block
    assert torch.equal(up[0, 0, 0, :, :7, :7], up[0, 0, 0, :, :1, :1].expand(3, 7, 7))


def test_all_ids_gives_finest_and_no_ids_keeps_previous():
    task = PaintReconstruction(fill=0.25)
    B, T = 2, 2
    video = _video(B, T, 224)
    all_ids = torch.randperm(265).repeat(B * T)
    offsets = torch.arange(B * T + 1) * 265
    recon = task.reconstruct(video, all_ids, offsets)
    torch.testing.assert_close(recon, video, rtol=0, atol=0)
    assert task.frame_losses(video, all_ids, offsets).abs().max() == 0
    fine = torch.arange(69, 265).repeat(B * T)
    assert task.frame_losses(video, fine, torch.arange(B * T + 1) * 196).abs().max() == 0
    # no ids: frame 0 = constant fill, frame 1 = frame 0's reconstruction
    recon = task.reconstruct(video, torch.zeros(0, dtype=torch.long), torch.zeros(B * T + 1, dtype=torch.long))
    assert torch.all(recon == 0.25)
    ids = torch.tensor([3, 100, 5])          # clip 0 frame 0: [3, 100]; clip 1 frame 0: [5]
    offsets = torch.tensor([0, 2, 2, 3, 3])
    recon = task.reconstruct(video, ids, offsets)
    assert torch.equal(recon[:, 1], recon[:, 0])
    out = task(video, ids, offsets)
    torch.testing.assert_close(out.rewards, -out.losses)
    torch.testing.assert_close(out.losses, (recon - video).abs().mean((2, 3, 4)))


@pytest.mark.parametrize("scales,S", LAYOUTS)
def test_prefix_losses_match_slow_loop(scales, S):
    task = PaintReconstruction(scales, S, fill=-0.5)
    B, T = 2, 3
    gen = torch.Generator().manual_seed(1)
    video = _video(B, T, S, seed=2)
    ids, offsets = _random_gaze(B, T, task.num_tokens, gen, max_len=min(30, task.num_tokens))
    ref, ref_frame, ref_recon = _slow_prefix(video, ids, offsets, scales, S, -0.5)
    out = task(video, ids, offsets)
    torch.testing.assert_close(out.slot_targets, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(task.prefix_losses(video, ids, offsets), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.losses, ref_frame, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.recon, ref_recon)
    # the last prefix loss of each non-empty frame is the frame loss
    last = offsets[1:] - 1
    nonempty = offsets.diff() > 0
    torch.testing.assert_close(out.slot_targets[last[nonempty]], out.losses.flatten()[nonempty])


def test_prefix_chunking_matches():
    task = PaintReconstruction()
    gen = torch.Generator().manual_seed(3)
    video = _video(2, 3, 224, seed=4)
    ids, offsets = _random_gaze(2, 3, 265, gen, max_len=60)
    levels = task._frame_levels(ids, offsets, 6).view(2, 3, -1)
    errs, _ = task._tables(video, levels)
    full = task._prefix_from_tables(errs, ids, offsets, task._norm(video))
    small = task._prefix_from_tables(errs, ids, offsets, task._norm(video), chunk_elems=1)
    torch.testing.assert_close(full, small, rtol=0, atol=0)


def _slow_cut(video, ids, offsets, scales, S, fill, requirement):
    """Per clip and frame: the shortest prefix whose loss, painted (slowly) over the cut frame
    before, is ≤ requirement (all ids if none is)."""
    B, T = video.shape[:2]
    kept, counts = [], []
    for b in range(B):
        prev = torch.full(video.shape[2:], fill)
        for t in range(T):
            f = b * T + t
            fid = ids[offsets[f]:offsets[f + 1]].tolist()
            ups = _slow_upsampled(video[b, t], scales, S)
            n = len(fid)
            for j in range(len(fid)):
                if (_slow_paint(prev, ups, fid[:j + 1], scales, S) - video[b, t]).abs().mean() <= requirement:
                    n = j + 1
                    break
            kept += fid[:n]
            counts.append(n)
            prev = _slow_paint(prev, ups, fid[:n], scales, S)
    offs = torch.zeros(B * T + 1, dtype=torch.long)
    offs[1:] = torch.tensor(counts).cumsum(0)
    return torch.tensor(kept, dtype=torch.long), offs


@pytest.mark.parametrize("scales,S", LAYOUTS[1:])
def test_cut_at_requirement_matches_slow_loop(scales, S):
    task = PaintReconstruction(scales, S, fill=0.0)
    gen = torch.Generator().manual_seed(5)
    video = _video(2, 4, S, seed=6).clamp(-1, 1) * 0.5
    ids, offsets = _random_gaze(2, 4, task.num_tokens, gen, max_len=min(30, task.num_tokens),
                                allow_empty=False)
    # midway between two losses, so rounding differences of the slow loop cannot flip a stop
    losses = task.prefix_losses(video, ids, offsets).unique()
    requirement = float(losses[losses.numel() // 2:][:2].mean())
    cut_ids, cut_offs = task.cut_at_requirement(video, ids, offsets, requirement)
    ref_ids, ref_offs = _slow_cut(video, ids, offsets, scales, S, 0.0, requirement)
    assert torch.equal(cut_offs.cpu(), ref_offs) and torch.equal(cut_ids, ref_ids)
    assert bool((cut_offs.diff() < offsets.diff()).any())  # the requirement cut something
    with pytest.raises(ValueError, match="cut_at_requirement"):
        task.cut_at_requirement(video[0], ids, offsets, requirement)


def _moving_shapes(T):
    return preprocess(synthetic_video(T, 160, 200), size=(224, 224))[None]  # (1,T,3,224,224)


def test_oracle_first_pick_is_best_and_prefix_non_increasing():
    task = PaintReconstruction()
    video = _video(1, 2, 224, seed=5) * 0.5 + _moving_shapes(2)
    res = greedy_oracle(task, video, budget=12)
    counts = res.frame_offsets.diff()
    assert counts.sum() == res.ids.numel() and (counts >= 1).all() and (counts <= 12).all()
    torch.testing.assert_close(res.losses, task.prefix_losses(video, res.ids, res.frame_offsets))
    for f in range(2):
        seg = res.losses[res.frame_offsets[f]:res.frame_offsets[f + 1]]
        assert (seg.diff() <= 1e-6).all()
        fid = res.ids[res.frame_offsets[f]:res.frame_offsets[f + 1]]
        assert len(set(fid.tolist())) == len(fid)
    # brute force over every single candidate for frame 0: 265 clips of one frame, one id each
    many = video[:, :1].expand(265, 1, 3, 224, 224)
    single = task.frame_losses(many, torch.arange(265), torch.arange(266))[:, 0]
    assert int(res.ids[0]) == int(single.argmin())
    torch.testing.assert_close(res.losses[0], single.min())
    # brute force second pick given the first
    first = int(res.ids[0])
    pairs = torch.stack([torch.full((265,), first), torch.arange(265)], 1).flatten()
    two = task.frame_losses(many, pairs, torch.arange(266) * 2)[:, 0]
    two[first] = float("inf")
    assert int(res.ids[1]) == int(two.argmin())


def test_oracle_beats_random_and_options():
    task = PaintReconstruction()
    video = torch.cat([_moving_shapes(4), _moving_shapes(4).flip(-1)], 0)   # B=2, T=4
    res = greedy_oracle(task, video, budget=26)
    counts = res.frame_offsets.diff()
    oracle = task.frame_losses(video, res.ids, res.frame_offsets)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        rand_ids = torch.cat([torch.randperm(265, generator=gen)[:int(n)] for n in counts])
        rand = task.frame_losses(video, rand_ids, res.frame_offsets)
        assert oracle.mean() < rand.mean()
    # per-frame budgets and k > 1
    res2 = greedy_oracle(task, video, budget=[1, 2, 3, 4], k=3)
    c2 = res2.frame_offsets.diff().view(2, 4)
    assert (c2 <= torch.tensor([1, 2, 3, 4])).all() and (c2 >= 1).all()
    torch.testing.assert_close(res2.losses, task.prefix_losses(video, res2.ids, res2.frame_offsets))
    # requirement: stop once the loss is at most the requirement
    req = float(oracle.mean())
    res3 = greedy_oracle(task, video, budget=265, requirement=req)
    ends = res3.losses[res3.frame_offsets[1:] - 1]
    starts = res3.frame_offsets[:-1]
    assert (ends <= req + 1e-6).all() or (res3.frame_offsets.diff() == 265).any()
    # each frame stopped at the first token that reached the requirement
    for f in range(8):
        seg = res3.losses[starts[f]:res3.frame_offsets[f + 1]]
        assert (seg[:-1] > req).all()


def test_non_release_layout_oracle():
    task = PaintReconstruction((64, 128), 128)
    video = _video(2, 2, 128, seed=7)
    res = greedy_oracle(task, video, budget=80)        # 80 = every cell of both scales
    assert (task.frame_losses(video, res.ids, res.frame_offsets) < 1e-6).all()
    torch.testing.assert_close(res.losses, task.prefix_losses(video, res.ids, res.frame_offsets))


def test_errors():
    task = PaintReconstruction()
    with pytest.raises(ValueError):
        PaintReconstruction((64, 32))
    with pytest.raises(ValueError):
        task.frame_losses(torch.zeros(1, 1, 3, 128, 128), torch.zeros(0, dtype=torch.long),
                          torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError):
        task.frame_losses(torch.zeros(1, 1, 3, 224, 224), torch.tensor([265]), torch.tensor([0, 1]))
    with pytest.raises(ValueError):
        greedy_oracle(task, torch.zeros(1, 2, 3, 224, 224), budget=[1, 2, 3])
