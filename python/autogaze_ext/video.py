"""Video I/O (PyAV; OpenCV decodes where PyAV is missing), the bundled example clip, and synthetic test videos."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["VideoInfo", "read_video", "video_info", "write_video", "example_clip_path", "synthetic_video"]


def _import_av() -> Any:
    try:
        import av
    except ImportError as e:
        raise ImportError(
            "video decoding needs PyAV: `pip install av` or `pip install autogaze_ext[video]`"
        ) from e
    return av


def _existing_file(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"video file not found: {path!r}")
    return path


def _open(path: str | os.PathLike) -> Any:
    """Open ``path`` with PyAV, with errors that name the path."""
    av = _import_av()
    path = _existing_file(path)
    try:
        container = av.open(path)
    except av.error.FFmpegError as e:
        raise ValueError(f"cannot read video {path!r}: {e}") from e
    if not container.streams.video:
        container.close()
        raise ValueError(f"no video stream in {path!r}")
    return container


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    num_frames: int
    width: int
    height: int


def video_info(path: str | os.PathLike) -> VideoInfo:
    """Frame rate, frame count, width and height of the first video stream.

    The count comes from the container header, or from counting packets (no
    decoding) where the header has none.
    """
    with _open(path) as container:
        stream = container.streams.video[0]
        num_frames = stream.frames or sum(1 for p in container.demux(stream) if p.size)
        rate = stream.average_rate or stream.guessed_rate
        return VideoInfo(
            fps=float(rate) if rate else 0.0,
            num_frames=int(num_frames),
            width=stream.codec_context.width,
            height=stream.codec_context.height,
        )


def read_video(
    path: str | os.PathLike, start: int = 0, num_frames: int | None = None, stride: int = 1
) -> np.ndarray:
    """Decode frames ``start, start + stride, ...`` of a video as RGB.

    Args:
        path: video file.
        start: index of the first frame to return.
        num_frames: how many frames to return; None for all to the end.  A clip
            that ends early gives fewer frames.
        stride: step between returned frames.

    Returns:
        uint8 ``(T, H, W, 3)`` RGB.
    """
    if not isinstance(start, int) or start < 0:
        raise ValueError(f"start must be an int >= 0; got {start!r}")
    if num_frames is not None and (not isinstance(num_frames, int) or num_frames < 1):
        raise ValueError(f"num_frames must be None or an int >= 1; got {num_frames!r}")
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"stride must be an int >= 1; got {stride!r}")
    stop = None if num_frames is None else start + (num_frames - 1) * stride + 1

    try:
        _import_av()
        decoded, to_rgb = _pyav_frames(path), _pyav_rgb
    except ImportError:
        if not _has_opencv():
            raise
        decoded, to_rgb = _opencv_frames(path), _opencv_rgb
    frames = []
    # Decoding from the start (no seeking) keeps frame indices exact.
    with contextlib.closing(decoded):
        for index, frame in enumerate(decoded):
            if stop is not None and index >= stop:
                break
            if index >= start and (index - start) % stride == 0:
                frames.append(to_rgb(frame))
    if not frames:
        raise ValueError(f"video {os.fspath(path)!r} has no frame at index {start} (start)")
    return np.stack(frames)


def _pyav_frames(path) -> Iterator[Any]:
    """The decoded PyAV frames of ``path``, in order; decoding errors name the path."""
    av = _import_av()
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            yield from container.decode(stream)
        except av.error.FFmpegError as e:
            raise ValueError(f"cannot decode video {os.fspath(path)!r}: {e}") from e


def _pyav_rgb(frame) -> np.ndarray:
    return frame.to_ndarray(format="rgb24")


def _has_opencv() -> bool:
    try:
        import cv2  # noqa: F401
    except ImportError:
        return False
    return True


def _opencv_frames(path) -> Iterator[np.ndarray]:
    """The decoded BGR frames of ``path`` through OpenCV's FFmpeg backend, for machines with
    OpenCV and no PyAV (a GPU image, say). Frame indices are PyAV's; pixels may differ from
    PyAV's by its own YUV → RGB rounding, so exact comparisons with the official outputs need
    PyAV."""
    import cv2
    path = _existing_file(path)
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise ValueError(f"cannot read video {path!r} (OpenCV)")
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield frame
    finally:
        capture.release()


def _opencv_rgb(frame: np.ndarray) -> np.ndarray:
    import cv2
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def write_video(path: str | os.PathLike, frames: Any, fps: int = 25) -> None:
    """Encode uint8 RGB frames ``(T, H, W, 3)`` (numpy or torch) to an mp4 file
    with H.264 (libx264), or MPEG-4 part 2 where libx264 is unavailable.  H and W
    must be even (4:2:0 chroma)."""
    av = _import_av()
    if hasattr(frames, "detach"):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"frames must be non-empty uint8 (T, H, W, 3); got {frames.dtype} {frames.shape}")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"frames must have even height and width for yuv420p; got {height}x{width}")
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(os.fspath(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "18"}
        else:
            stream.bit_rate = 8_000_000
        for image in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())  # flush the encoder


def example_clip_path() -> Path:
    """Path of the bundled example clip (448×448, 64 frames, 25 fps)."""
    path = Path(str(resources.files("autogaze_ext") / "assets" / "example_input.mp4"))
    if not path.is_file():
        raise FileNotFoundError(f"bundled example clip missing (package data not installed?): {path}")
    return path


def synthetic_video(T: int, H: int, W: int, seed: int = 0) -> np.ndarray:
    """Deterministic moving-shapes video: a slowly drifting colour gradient with a
    few discs and rectangles bouncing at constant speed.

    Returns:
        uint8 ``(T, H, W, 3)``.
    """
    if min(T, H, W) < 1:
        raise ValueError(f"T, H, W must be >= 1; got {(T, H, W)}")
    rng = np.random.default_rng(seed)
    t = np.arange(T, dtype=np.float32)[:, None, None]
    y = np.arange(H, dtype=np.float32)[None, :, None]
    x = np.arange(W, dtype=np.float32)[None, None, :]

    video = np.empty((T, H, W, 3), dtype=np.float32)
    phase = rng.uniform(0, 2 * np.pi, size=3)
    for c in range(3):
        video[..., c] = 127.5 + 60 * np.sin(2 * np.pi * (x / W + y / H) + 0.1 * t + phase[c])

    for k in range(4):
        size = rng.uniform(0.08, 0.2) * min(H, W)
        # Bounce: fold the unbounded position back into [0, span] (triangle wave).
        cy = _bounce(rng.uniform(0, H) + rng.uniform(-3, 3) * t, H)
        cx = _bounce(rng.uniform(0, W) + rng.uniform(-3, 3) * t, W)
        if k % 2:
            inside = (np.abs(y - cy) <= size) & (np.abs(x - cx) <= size)
        else:
            inside = (y - cy) ** 2 + (x - cx) ** 2 <= size**2
        video[inside] = rng.uniform(0, 255, size=3)
    return np.clip(video, 0, 255).round().astype(np.uint8)


def _bounce(position: np.ndarray, span: int) -> np.ndarray:
    period = 2 * span
    folded = np.mod(position, period)
    return np.where(folded > span, period - folded, folded)
