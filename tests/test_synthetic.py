"""autogaze_ext.synthetic: seeded, reproducible synthetic training video."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from autogaze_ext.synthetic import FRAME_SIZES, ImageBank, SyntheticVideos


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three small still images (gradients and noise) in a folder."""
    folder = tmp_path_factory.mktemp("stills")
    rng = np.random.default_rng(0)
    for k in range(3):
        y, x = np.mgrid[0:120, 0:160]
        img = np.stack([(x * (k + 1)) % 256, (y * 2) % 256, rng.integers(0, 256, (120, 160))], -1)
        Image.fromarray(img.astype(np.uint8)).save(folder / f"still{k}.png")
    return folder


SMALL = [(48, 64), (64, 48), (40, 40)]


def test_same_seed_same_bytes_other_seed_other_clip(images):
    a = SyntheticVideos([images], frames=6, seed=3, sizes=SMALL)
    b = SyntheticVideos([images], frames=6, seed=3, sizes=SMALL)
    for i in range(4):
        clip = a.clip(i)
        assert clip.dtype == np.uint8 and clip.ndim == 4 and clip.shape[0] == 6 and clip.shape[3] == 3
        assert tuple(clip.shape[1:3]) in SMALL
        assert np.array_equal(clip, b.clip(i))            # reproducible
        assert a.describe(i) == b.describe(i)
    assert not np.array_equal(a.clip(0), a.clip(1))
    other = SyntheticVideos([images], frames=6, seed=4, sizes=SMALL)
    assert any(not np.array_equal(a.clip(i), other.clip(i)) for i in range(3))


def test_variety_over_many_clips(images):
    videos = SyntheticVideos([images], frames=8, seed=0, sizes=SMALL)
    infos = [videos.describe(i) for i in range(60)]
    motions = {m for info in infos for m in info["motions"]}
    assert {"static", "pan", "zoom", "shake", "rotate", "mixed"} <= motions
    assert any(info["cuts"] for info in infos) and any(not info["cuts"] for info in infos)
    assert {info["size"] for info in infos} == set(SMALL)
    assert any(info["noise"] > 0 for info in infos) and any(info["noise"] == 0 for info in infos)
    assert any(info["jpeg"] for info in infos)
    assert len({info["lighting"] for info in infos}) >= 3
    assert any(sum(info["sprites"]) > 0 for info in infos)


def test_static_clips_repeat_frames_and_moving_clips_change(images):
    """A static camera with no objects, noise or lighting gives identical frames; a pan does not;
    a cut changes the picture more than the motion around it."""
    videos = SyntheticVideos([images], frames=8, seed=1, sizes=SMALL, max_sprites=0)
    still = moving = cut = None
    for i in range(300):
        info = videos.describe(i)
        quiet = info["noise"] == 0 and info["lighting"] == "none" and not info["jpeg"]
        if quiet and not info["cuts"] and info["motions"] == ["static"] and still is None:
            still = i
        if info["motions"] == ["pan"] and not info["cuts"] and moving is None:
            moving = i
        if len(info["cuts"]) == 1 and quiet and cut is None:
            cut = i
    assert None not in (still, moving, cut)
    clip = videos.clip(still).astype(int)
    assert all(np.array_equal(clip[t], clip[0]) for t in range(8))
    pan = videos.clip(moving).astype(int)
    assert np.abs(np.diff(pan, axis=0)).sum() > 0
    frames = videos.clip(cut).astype(float)
    diffs = np.abs(np.diff(frames, axis=0)).mean((1, 2, 3))
    c = videos.describe(cut)["cuts"][0]
    assert diffs[c - 1] > np.median(np.delete(diffs, c - 1))


def test_procedural_only_and_bad_arguments(tmp_path):
    clip = SyntheticVideos([], frames=3, seed=0, sizes=[(32, 40)]).clip(0)
    assert clip.shape == (3, 32, 40, 3) and clip.std() > 0
    with pytest.raises(ValueError, match="frames"):
        SyntheticVideos([], frames=0)
    with pytest.raises(ValueError, match="sizes"):
        SyntheticVideos([], sizes=[(8, 8)])
    with pytest.raises(FileNotFoundError):
        ImageBank([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image"):
        ImageBank([tmp_path / "empty"])
    assert all(min(s) >= 16 for s in FRAME_SIZES)
