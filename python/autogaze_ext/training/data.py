"""Training clips: videos decoded once into memory, fixed windows, a train/val split, and a
rank-aware deterministic sampler (the DistributedSampler analogue).

Every video (or synthetic clip) is decoded once (up to ``max_frames`` frames), preprocessed with
the model's processor (resize, rescale, normalise) into the square gaze view (``gaze_size``,
default the task's frame size; the model resizes it to its input inside) and the task view (the
task's frame size; the same tensor when the sides agree), and kept in memory. The train part of
a video is cut into windows of ``clip_len`` frames (``frame_stride`` apart, starting every
``window_step`` frames); short parts are edge-padded by repeating their last frame (as the
official loader).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..files import files_under
from ..preprocess import ProcessorConfig, preprocess
from ..video import read_video, synthetic_video
from .config import DataSection

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm")


@dataclass
class Source:
    """One decoded video: ``gaze`` (F,3,Hg,Wg) and ``task`` (F,3,Ht,Wt) float32, in memory."""
    name: str
    gaze: torch.Tensor
    task: torch.Tensor


@dataclass(frozen=True)
class Window:
    """A clip: frames ``start, start+stride, …`` (clip_len of them, clamped to ``stop − 1``)."""
    source: int
    start: int
    stop: int  # end (exclusive) of the split segment the window lives in

    def indices(self, clip_len: int, stride: int) -> torch.Tensor:
        idx = self.start + stride * torch.arange(clip_len)
        return idx.clamp(max=self.stop - 1)


def list_videos(paths: list) -> list[Path]:
    """Video files named directly or found (sorted, recursively) in folders."""
    return files_under(paths, VIDEO_EXTENSIONS, "data.paths", "video")


def _views(frames: np.ndarray, processor: ProcessorConfig, gaze_size: int, task_size: int):
    """Square gaze and task views (one tensor when the sides agree), so the gaze model sees
    exactly the frames the task reconstructs."""
    side = gaze_size or task_size
    gaze = preprocess(frames, size=(side, side), config=processor)
    if side == task_size:
        return gaze, gaze
    return gaze, preprocess(frames, size=(task_size, task_size), config=processor)


class ClipDataset:
    """All sources and the train/val windows of ``cfg`` (see module docstring).

    processor: the gaze model's processor; task_size: side of the task's square frames.
    """

    def __init__(self, cfg: DataSection, processor: ProcessorConfig, task_size: int):
        self.cfg = cfg
        self.processor, self.task_size = processor, task_size
        self.sources: list[Source] = []
        files = list_videos(cfg.paths) if cfg.paths else []
        val_files = list_videos(cfg.val_paths) if cfg.val_paths else []
        overlap = {f.resolve() for f in files} & {f.resolve() for f in val_files}
        if overlap:
            raise ValueError(f"data.val_paths: {sorted(map(str, overlap))} are training videos too")
        self.val_sources = set(range(len(files), len(files) + len(val_files)))
        for f in files + val_files:
            frames = read_video(f, 0, cfg.max_frames)
            gaze, task = _views(frames, processor, cfg.gaze_size, task_size)
            self.sources.append(Source(f.name, gaze, task))
        for i in range(cfg.synthetic):
            frames = synthetic_video(cfg.synthetic_frames, cfg.synthetic_size, cfg.synthetic_size,
                                     seed=i)
            gaze, task = _views(frames, processor, cfg.gaze_size, task_size)
            self.sources.append(Source(f"synthetic_{i}", gaze, task))
        self.train, self.val = self._split()
        if not self.train and cfg.synthetic_fraction < 1:
            raise ValueError("data: no training window (videos too short for clip_len?)")

    def _split(self) -> tuple[list[Window], list[Window]]:
        cfg = self.cfg
        span = (cfg.clip_len - 1) * cfg.frame_stride + 1
        step = cfg.window_step or max(1, cfg.clip_len // 2)
        train, val = [], []
        for i, src in enumerate(self.sources):
            n = src.gaze.shape[0]
            if i in self.val_sources:  # data.val_paths: whole videos for validation only
                segments = [(0, n, val)]
            elif cfg.split == "none":
                segments = [(0, n, train)]
            elif cfg.split == "file":
                every = max(1, round(1 / cfg.val_fraction)) if cfg.val_fraction > 0 else 0
                is_val = every and len(self.sources) > 1 and i % every == every - 1
                segments = [(0, n, val if is_val else train)]
            else:
                cut = n - int(round(n * cfg.val_fraction)) if n > 1 else n
                segments = [(0, max(cut, 1), train), (cut, n, val)]
            for lo, hi, bucket in segments:
                if hi <= lo:
                    continue
                if bucket is train:
                    starts = list(range(lo, max(lo + 1, hi - span + 1), step))
                else:  # a few fixed, evenly spread validation windows
                    last = max(lo, hi - span)
                    starts = sorted({int(s) for s in np.linspace(lo, last, cfg.val_windows)})
                bucket += [Window(i, s, hi) for s in starts]
        return train, val

    def clip(self, window: Window) -> dict:
        """{"video" (T,3,Hg,Wg), "video_for_task" (T,3,Ht,Wt), "key" str} of one window."""
        src = self.sources[window.source]
        idx = window.indices(self.cfg.clip_len, self.cfg.frame_stride)
        return {"video": src.gaze[idx], "video_for_task": src.task[idx],
                "key": f"{src.name}@{window.start}:{self.cfg.clip_len}x{self.cfg.frame_stride}"}

    def batch(self, windows: list[Window]) -> dict:
        """Stack clips: video (B,T,3,Hg,Wg), video_for_task (B,T,3,Ht,Wt), keys list[str]."""
        clips = [self.clip(w) for w in windows]
        return {"video": torch.stack([c["video"] for c in clips]),
                "video_for_task": torch.stack([c["video_for_task"] for c in clips]),
                "keys": [c["key"] for c in clips]}


def content_digest(tensor: torch.Tensor) -> str:
    """A short hash of a tensor's bytes (clip identity for the label cache)."""
    data = tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return hashlib.sha1(data).hexdigest()[:16]


class RankSampler:
    """Deterministic, resumable sampling of training windows, split by rank.

    Epochs are seeded permutations of all windows (the same on every rank); rank r takes positions
    r, r+W, r+2W, … of the concatenated epochs (DistributedSampler style). ``position`` counts the
    draws of this rank; it is all the state there is (``state_dict``/``load_state_dict``).
    """

    def __init__(self, num_windows: int, seed: int, rank: int = 0, world_size: int = 1):
        if num_windows < 1:
            raise ValueError("RankSampler needs at least one window")
        self.n, self.seed, self.rank, self.world = num_windows, seed, rank, world_size
        self.position = 0
        self._epoch, self._perm = -1, None

    def _global(self, g: int) -> int:
        epoch, offset = divmod(g, self.n)
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._epoch = torch.randperm(self.n, generator=gen).tolist(), epoch
        return self._perm[offset]

    def next(self, count: int) -> list[int]:
        out = [self._global((self.position + i) * self.world + self.rank) for i in range(count)]
        self.position += count
        return out

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])
