"""Video I/O, the bundled clip and synthetic videos."""

from pathlib import Path

import numpy as np
import pytest
import torch

from autogaze_ext.video import example_clip_path, read_video, synthetic_video, video_info, write_video

REFERENCE = Path(__file__).parent / "data" / "reference"


def require_av():
    return pytest.importorskip("av", reason="PyAV not installed (pip install autogaze_ext[video])")


@pytest.fixture(scope="module")
def clip():
    require_av()
    return read_video(example_clip_path())


def test_example_clip_is_bundled():
    path = example_clip_path()
    assert path.is_file() and path.name == "example_input.mp4"


def test_read_bundled_clip(clip):
    assert clip.shape == (64, 448, 448, 3) and clip.dtype == np.uint8
    info = video_info(example_clip_path())
    assert (info.num_frames, info.width, info.height, info.fps) == (64, 448, 448, 25.0)


def test_clip_decodes_like_the_reference(clip):
    from autogaze_ext.checkpoint import load_safetensors
    from autogaze_ext.preprocess import preprocess

    cases = load_safetensors(REFERENCE / "cases.safetensors")
    assert np.array_equal(clip[:2], cases["video_uint8_first2"].numpy())
    # The reference model input is the processed first 16 frames rounded to float16.
    assert torch.equal(preprocess(clip[:16]).half(), cases["pixel_values"][0])


@pytest.mark.parametrize("start, num_frames, stride", [(0, 16, 1), (10, 5, 3), (60, None, 1), (1, None, 7)])
def test_frame_selection(clip, start, num_frames, stride):
    stop = None if num_frames is None else start + num_frames * stride
    expected = clip[start:stop:stride]
    assert np.array_equal(read_video(example_clip_path(), start, num_frames, stride), expected)


def test_short_read_at_end(clip):
    assert read_video(example_clip_path(), start=62, num_frames=10).shape[0] == 2


def test_bad_read_arguments(clip):
    with pytest.raises(ValueError, match="start"):
        read_video(example_clip_path(), start=64)
    with pytest.raises(ValueError, match="start"):
        read_video(example_clip_path(), start=-1)
    with pytest.raises(ValueError, match="num_frames"):
        read_video(example_clip_path(), num_frames=0)
    with pytest.raises(ValueError, match="stride"):
        read_video(example_clip_path(), stride=0)


def test_missing_and_unreadable_files(tmp_path):
    require_av()
    missing = tmp_path / "nope.mp4"
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        read_video(missing)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 100)
    with pytest.raises(ValueError, match="garbage.mp4"):
        read_video(garbage)
    with pytest.raises(ValueError, match="garbage.mp4"):
        video_info(garbage)


def test_write_read_round_trip(tmp_path):
    require_av()
    video = synthetic_video(12, 96, 160, seed=3)
    path = tmp_path / "synthetic.mp4"
    write_video(path, torch.from_numpy(video), fps=10)
    decoded = read_video(path)
    assert decoded.shape == video.shape
    # Lossy codec with 4:2:0 chroma: only loosely equal.
    assert np.abs(decoded.astype(np.int16) - video).mean() < 8
    info = video_info(path)
    assert (info.num_frames, info.width, info.height, info.fps) == (12, 160, 96, 10.0)


def test_write_rejects_bad_frames(tmp_path):
    require_av()
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", synthetic_video(2, 33, 64))
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "float.mp4", np.zeros((2, 32, 32, 3), np.float32))


def test_synthetic_video_is_deterministic_and_moving():
    video = synthetic_video(8, 64, 80, seed=1)
    assert video.shape == (8, 64, 80, 3) and video.dtype == np.uint8
    assert np.array_equal(video, synthetic_video(8, 64, 80, seed=1))
    assert not np.array_equal(video, synthetic_video(8, 64, 80, seed=2))
    assert all(not np.array_equal(video[t], video[t + 1]) for t in range(7))


@pytest.fixture
def without_pyav(monkeypatch):
    """``import av`` fails, as on a machine with OpenCV and no PyAV."""
    import sys
    monkeypatch.setitem(sys.modules, "av", None)


@pytest.mark.parametrize("start,num_frames,stride", [(0, None, 1), (5, 7, 3), (60, 10, 1)])
def test_opencv_fallback_decodes_like_pyav(clip, without_pyav, start, num_frames, stride):
    pytest.importorskip("cv2", reason="OpenCV not installed (pip install opencv-python-headless)")
    frames = read_video(example_clip_path(), start, num_frames, stride)
    expected = clip[start::stride][:num_frames]
    assert frames.shape == expected.shape and frames.dtype == np.uint8
    # both decode with FFmpeg; allow for a different YUV -> RGB rounding
    assert np.abs(frames.astype(np.int16) - expected).mean() < 1.0


def test_opencv_fallback_errors_name_the_file(tmp_path, without_pyav):
    pytest.importorskip("cv2", reason="OpenCV not installed (pip install opencv-python-headless)")
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        read_video(tmp_path / "nope.mp4")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 100)
    with pytest.raises(ValueError, match="garbage.mp4"):
        read_video(garbage)
    with pytest.raises(ValueError, match="no frame at index 500"):
        read_video(example_clip_path(), 500)


def test_no_decoder_says_what_to_install(monkeypatch, without_pyav):
    import sys
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(ImportError, match="pip install av"):
        read_video(example_clip_path())
