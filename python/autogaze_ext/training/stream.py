"""The training clips of one rank, in a fixed order: real windows mixed with fresh synthetic clips.

Draw ``g`` of the run (``g = local_draw · world_size + rank``) is decided by a seeded hash of
``g`` alone: with probability ``data.synthetic_fraction`` it is synthetic clip ``g`` of
:class:`~autogaze_ext.synthetic.SyntheticVideos` (never seen before, so the stream never
repeats), otherwise real window ``RankSampler`` position ``g`` (a seeded permutation per epoch).
Its label budget is drawn from ``algorithm.label_ratios`` the same way, and so is, with
probability ``data.freeze_fraction``, a *freeze* (:func:`freeze_span`), and with probability
``data.soften_fraction`` a *softening* (:func:`soften_factor`). Every draw is therefore a
pure function of ``g``: resuming needs only the number of draws consumed, and the clips of a
batch can be prepared ahead in a worker process (``data.workers = 1``), labels included, while
the trainer computes the previous step.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..synthetic import FRAME_SIZES, SyntheticVideos
from .config import TrainConfig
from .data import ClipDataset, RankSampler, _views


def freeze_span(g: int, seed: int, fraction: float, frames: int) -> tuple[int, int] | None:
    """The freeze of draw ``g``: ``(start, stop)`` such that frames ``start … stop − 1`` repeat
    frame ``start − 1`` (1 ≤ start < stop ≤ frames), or None (probability ``1 − fraction``).

    Real video rarely holds a frame exactly (a paused player, a slide, a dropped frame) and the
    synthetic clips almost never do, yet a frame identical to the previous one should cost one
    token; the span runs from a single repeated frame to the rest of the clip.
    """
    if fraction <= 0 or frames < 2:
        return None
    rng = np.random.default_rng([seed, int(g), 0xF2E])  # its own stream: other draws unchanged
    if rng.random() >= fraction:
        return None
    start = int(rng.integers(1, frames))
    return start, int(rng.integers(start + 1, frames + 1))


SOFTEN_RANGE = (1.5, 8.0)  # down-scaling factors of a softened clip, drawn log-uniformly


def soften_factor(g: int, seed: int, fraction: float) -> float | None:
    """The softening of draw ``g``: a factor in ``SOFTEN_RANGE`` (probability ``fraction``) or
    None. A softened clip is down-scaled by it and brought back (:func:`apply_soften`), as
    footage from a low-resolution source, an upscaled webcam or a defocused lens looks.

    Without it, the training clips span too narrow a range of detail: the task-loss head then
    predicts about the same loss for a soft, detail-free clip (whose loss is several times
    lower) as for a sharp one, and a requirement stops neither where it should.
    """
    if fraction <= 0:
        return None
    rng = np.random.default_rng([seed, int(g), 0x50F7])  # its own stream: other draws unchanged
    if rng.random() >= fraction:
        return None
    low, high = SOFTEN_RANGE
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def apply_soften(frames: torch.Tensor, factor: float | None) -> torch.Tensor:
    """(T, C, H, W) frames down-scaled by ``factor`` (area) and up-scaled back (bilinear)."""
    if factor is None:
        return frames
    h, w = frames.shape[-2:]
    small = F.interpolate(frames, size=(max(1, round(h / factor)), max(1, round(w / factor))),
                          mode="area")
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


def apply_freeze(frames: torch.Tensor, span: tuple[int, int] | None) -> torch.Tensor:
    """(T, …) frames with ``span`` held (see :func:`freeze_span`); a new tensor when frozen."""
    if span is None:
        return frames
    start, stop = span
    out = frames.clone()
    out[start:stop] = frames[start - 1]
    return out


class TrainStream:
    """Batches of one rank: ``batch(position)`` is the ``position``-th batch (pure)."""

    def __init__(self, cfg: TrainConfig, data: ClipDataset, rank: int = 0, world: int = 1,
                 labels=None):
        self.cfg, self.data, self.rank, self.world = cfg, data, rank, world
        self.labels = labels  # a LabelStore (NTP) or None
        d = cfg.data
        self.fraction = float(d.synthetic_fraction) if d.synthetic_fraction > 0 else 0.0
        if not data.train and self.fraction < 1:
            raise ValueError("data: no real training window and data.synthetic_fraction < 1")
        self.windows = RankSampler(max(1, len(data.train)), cfg.run.seed)
        self.synthetic = None
        if self.fraction > 0:
            sizes = [s for s in FRAME_SIZES if max(s) <= d.synthetic_max_side] or [(224, 224)]
            self.synthetic = SyntheticVideos(d.synthetic_images, frames=d.clip_len,
                                             seed=d.synthetic_seed, sizes=sizes)
        self.ratios = [float(r) for r in cfg.algorithm.label_ratios] or [cfg.algorithm.label_ratio]

    def draw(self, g: int) -> tuple[str, int, float]:
        """("synthetic", clip index, label ratio) or ("real", train window index, label ratio)."""
        rng = np.random.default_rng([self.cfg.run.seed, int(g), 0xD8A])
        synthetic = rng.random() < self.fraction
        ratio = self.ratios[int(rng.integers(len(self.ratios)))]
        if synthetic:
            return "synthetic", int(g), ratio
        return "real", self.windows._global(int(g)), ratio

    def clip(self, g: int) -> tuple[dict, float]:
        kind, index, ratio = self.draw(g)
        if kind == "real":
            clip = self.data.clip(self.data.train[index])
        else:
            frames = self.synthetic.clip(index)
            gaze, task = _views(frames, self.data.processor, self.cfg.data.gaze_size,
                                self.data.task_size)
            clip = {"video": gaze, "video_for_task": task,
                    "key": f"synthetic:{self.cfg.data.synthetic_seed}:{index}"}
        factor = soften_factor(g, self.cfg.run.seed, self.cfg.data.soften_fraction)
        if factor is not None:
            for view in ("video", "video_for_task"):
                clip[view] = apply_soften(clip[view], factor)
            clip["key"] += f":soft{factor:.4f}"  # its own oracle labels
        span = freeze_span(g, self.cfg.run.seed, self.cfg.data.freeze_fraction,
                           clip["video"].shape[0])
        if span is not None:
            for view in ("video", "video_for_task"):
                clip[view] = apply_freeze(clip[view], span)
            clip["key"] += f":freeze{span[0]}-{span[1]}"  # its own oracle labels
        return clip, ratio

    def batch(self, position: int) -> dict:
        """Batch number ``position`` of this rank: video (B,T,3,Hg,Wg), video_for_task
        (B,T,3,Ht,Wt), keys, ratios, and "labels" when a LabelStore is attached."""
        size = self.cfg.data.batch_size
        draws = [(position * size + i) * self.world + self.rank for i in range(size)]
        clips, ratios = zip(*(self.clip(g) for g in draws))
        out = {"video": torch.stack([c["video"] for c in clips]),
               "video_for_task": torch.stack([c["video_for_task"] for c in clips]),
               "keys": [c["key"] for c in clips], "ratios": list(ratios)}
        if self.labels is not None:
            # fresh synthetic clips never come back: their labels are not cached
            cache = [not key.startswith("synthetic:") for key in out["keys"]]
            out["labels"] = self.labels.batch(out["video_for_task"], out["keys"], out["ratios"], cache)
        return out


class _Prefetch(torch.utils.data.IterableDataset):
    def __init__(self, stream: TrainStream, start: int):
        self.stream, self.start = stream, start

    def __iter__(self) -> Iterator[dict]:
        position = self.start
        while True:
            yield self.stream.batch(position)
            position += 1


def _one_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)


def batches(stream: TrainStream, start: int, workers: int) -> Iterator[dict]:
    """Batches ``start, start+1, …``; prepared in a worker process when ``workers`` > 0 (two
    batches ahead), inline otherwise. The order and content are the same either way."""
    if workers <= 0:
        position = start
        while True:
            yield stream.batch(position)
            position += 1
    loader = torch.utils.data.DataLoader(_Prefetch(stream, start), batch_size=None,
                                         num_workers=1, prefetch_factor=2,
                                         worker_init_fn=_one_thread, persistent_workers=False)
    yield from loader
