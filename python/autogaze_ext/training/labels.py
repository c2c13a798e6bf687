"""Oracle gaze labels for NTP (the greedy oracle on the Paint task), cached on disk.

A label is, per clip, ``ids`` (L,) frame-local ids in pick order, ``frame_offsets`` (T+1,) and
``losses`` (L,) the frame's Paint loss once tokens 0..j are painted (task-loss-head targets).
Each clip's label is stored as ``<folder>/<hash>.safetensors`` with a ``.json`` holding the
settings and the clip identity (name, window, content digest); a cached label is reused only
when that JSON matches exactly, otherwise it is recomputed and overwritten.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from ..checkpoint import load_safetensors, save_safetensors
from ..tasks import PaintReconstruction, greedy_oracle
from .data import content_digest


class LabelStore:
    """Greedy-oracle labels at ``ratio`` (budget ``max(1, trunc(ratio·N))`` per frame), optional
    loss ``requirement`` and ``k`` ids per greedy step, cached in ``folder``."""

    def __init__(self, folder: str | Path, task: PaintReconstruction, ratio: float,
                 requirement: float | None = None, k: int = 1, soft: bool = False):
        if not isinstance(task, PaintReconstruction):
            raise TypeError("LabelStore: oracle labels need a PaintReconstruction task")
        self.folder = Path(folder)
        self.task = task
        self.requirement, self.k, self.soft = requirement, int(k), bool(soft)
        self.settings = self._settings(ratio)
        self.budget = self.settings["budget"]
        self.computed = 0  # labels computed (not read from the cache) by this store

    def _settings(self, ratio: float) -> dict:
        budget = int(torch.tensor(ratio, dtype=torch.float32).mul(self.task.num_tokens).item())
        return {"oracle": "greedy_paint", "ratio": float(ratio), "budget": max(1, budget),
                "requirement": self.requirement, "k": self.k, "gains": self.soft,
                "scales": list(self.task.scales),
                "frame_size": self.task.frame_size, "fill": self.task.fill}

    def _paths(self, settings: dict, identity: dict) -> tuple[Path, Path]:
        text = json.dumps({"settings": settings, "clip": identity}, sort_keys=True)
        name = hashlib.sha1(text.encode()).hexdigest()[:20]
        return self.folder / f"{name}.safetensors", self.folder / f"{name}.json"

    def get(self, video_for_task: torch.Tensor, key: str, ratio: float | None = None,
            cache: bool = True) -> dict:
        """Label of one clip ``video_for_task`` (T,3,S,S) named ``key`` at ``ratio`` (default:
        the store's): {ids, frame_offsets, losses, and gains (L,N) with ``soft``} on the clip's
        device. ``cache=False``: compute it and write nothing (clips that never come back)."""
        settings = self.settings if ratio is None else self._settings(ratio)
        identity = {"key": key, "digest": content_digest(video_for_task),
                    "shape": list(video_for_task.shape)}
        tensors, meta = self._paths(settings, identity)
        wanted = {"settings": settings, "clip": identity}
        if cache and tensors.is_file() and meta.is_file():
            try:
                if json.loads(meta.read_text()) == wanted:
                    label = load_safetensors(tensors)
                    return {k: v.to(video_for_task.device) for k, v in label.items()}
            except (OSError, ValueError):
                pass  # unreadable: recompute
        result = greedy_oracle(self.task, video_for_task[None], settings["budget"], k=self.k,
                               requirement=self.requirement, return_gains=self.soft)
        label = {"ids": result.ids, "frame_offsets": result.frame_offsets,
                 "losses": result.losses.float()}
        if self.soft:
            label["gains"] = result.gains
        self.computed += 1
        if not cache:
            return label
        self.folder.mkdir(parents=True, exist_ok=True)
        # write-then-rename: DDP ranks may compute the same clip's label at the same time
        suffix = f".{os.getpid()}.tmp"
        save_safetensors({k: v.contiguous().cpu() for k, v in label.items()},
                         tensors.with_name(tensors.name + suffix))
        meta.with_name(meta.name + suffix).write_text(json.dumps(wanted, sort_keys=True, indent=1))
        os.replace(tensors.with_name(tensors.name + suffix), tensors)
        os.replace(meta.with_name(meta.name + suffix), meta)
        return label

    def batch(self, videos_for_task: torch.Tensor, keys: list[str],
              ratios: list[float] | None = None, cache: list[bool] | None = None) -> dict:
        """Labels of a batch (B,T,3,S,S), each clip at its ratio of ``ratios`` (default: the
        store's) and cached or not (``cache``, default all): packed ids (L,), frame_offsets
        (B·T+1,), losses (L,), and gains (L,N) with ``soft``."""
        ratios = ratios or [None] * len(keys)
        cache = cache or [True] * len(keys)
        labels = [self.get(v, k, r, c) for v, k, r, c in zip(videos_for_task, keys, ratios, cache)]
        ids = torch.cat([lab["ids"] for lab in labels])
        losses = torch.cat([lab["losses"] for lab in labels])
        counts = torch.cat([lab["frame_offsets"].diff() for lab in labels])
        offsets = torch.zeros(counts.numel() + 1, dtype=torch.long, device=ids.device)
        offsets[1:] = counts.cumsum(0)
        out = {"ids": ids, "frame_offsets": offsets, "losses": losses}
        if self.soft:
            out["gains"] = torch.cat([lab["gains"] for lab in labels])
        return out
