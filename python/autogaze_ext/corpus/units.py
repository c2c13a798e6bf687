"""Corpus settings, the model's identity, frame selection and the work units of a video.

A video's selected frames (``frames``, ``stride`` or ``fps``) are cut into clips of ``clip_len``
frames (the model's ``max_num_frames``) exactly as ``gaze()`` cuts them; a work unit is
``clips_per_unit`` consecutive whole clips, so a long video spreads over many workers. A unit's
key is a hash of the file's path and content hash, the settings hash and its clip range: the
same unit of the same file under the same settings always has the same key (and shard name).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

FORMAT = "autogaze-corpus/1"
DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True)
class CorpusSettings:
    """How a corpus is gazed: the ``gaze()`` options plus frame selection and unit size.

    A work unit holds ``clips_per_unit`` clips, fewer where their decoded RGB frames would pass
    ``max_unit_mib`` (e.g. one clip per unit at 4K), so that no unit's frames flood a worker.

    Every field except ``batch_size`` (clips per model call, which does not change results) is
    part of the settings hash, together with the model's weight hash and clip length.
    """

    mode: str = "resize"
    gazing_ratio: float | None = None
    task_loss_requirement: float | None = None
    target_scales: tuple[int, ...] | None = None
    target_patch_size: int | None = None
    dtype: str = "float32"
    frames: tuple[int, int | None] | None = None
    stride: int = 1
    fps: float | None = None
    clips_per_unit: int = 8
    max_unit_mib: int = 512
    batch_size: int = field(default=16, compare=False)

    def __post_init__(self):
        if self.target_scales is not None:
            object.__setattr__(self, "target_scales", tuple(int(s) for s in self.target_scales))
        if self.frames is not None:
            object.__setattr__(self, "frames", tuple(self.frames))
        self.check()

    def check(self) -> None:
        """ValueError naming the setting for any value ``gaze()`` or the planner can't use."""
        if self.mode not in ("resize", "tile"):
            raise ValueError(f"mode must be 'resize' or 'tile'; got {self.mode!r}")
        if self.gazing_ratio is not None and not 0 < self.gazing_ratio <= 1:
            raise ValueError(f"gazing_ratio must be in (0, 1]; got {self.gazing_ratio}")
        loss = self.task_loss_requirement
        if loss is not None and not (math.isfinite(loss) and loss >= 0):
            raise ValueError(f"task_loss_requirement must be a finite number >= 0; got {loss}")
        if (self.target_scales is None) != (self.target_patch_size is None):
            raise ValueError("target_scales and target_patch_size must be given together")
        if self.target_scales is not None and self.mode != "resize":
            raise ValueError("target_scales/target_patch_size work with mode='resize' only")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {self.dtype!r}")
        if self.frames is not None:
            first, stop = self.frames
            if first < 0 or (stop is not None and stop <= first):
                raise ValueError(f"frames must be (A, B) with 0 <= A < B; got {self.frames}")
        if not isinstance(self.stride, int) or self.stride < 1:
            raise ValueError(f"stride must be an int >= 1; got {self.stride!r}")
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps must be a number > 0; got {self.fps}")
        if self.fps is not None and self.stride != 1:
            raise ValueError("give stride or fps, not both")
        if not isinstance(self.clips_per_unit, int) or not 1 <= self.clips_per_unit <= 4096:
            raise ValueError(f"clips_per_unit must be an int in 1..4096; got {self.clips_per_unit!r}")
        if not isinstance(self.max_unit_mib, int) or self.max_unit_mib < 1:
            raise ValueError(f"max_unit_mib must be an int >= 1; got {self.max_unit_mib!r}")
        if not isinstance(self.batch_size, int) or not 1 <= self.batch_size <= 4096:
            raise ValueError(f"batch_size must be an int in 1..4096; got {self.batch_size!r}")

    def gaze_kwargs(self) -> dict:
        """Keyword arguments of ``autogaze_ext.gaze()`` for these settings."""
        kwargs = {"gazing_ratio": self.gazing_ratio,
                  "task_loss_requirement": self.task_loss_requirement, "mode": self.mode}
        if self.target_scales is not None:
            kwargs.update(target_scales=list(self.target_scales),
                          target_patch_size=self.target_patch_size)
        return kwargs

    def hashed(self, model_hash: str, clip_len: int) -> dict:
        """The settings that define a corpus's results (what the settings hash covers)."""
        fields = asdict(self)
        fields.pop("batch_size")
        fields["target_scales"] = list(self.target_scales) if self.target_scales else None
        fields["frames"] = list(self.frames) if self.frames else None
        return {"format": FORMAT, "model_hash": model_hash, "clip_len": clip_len, **fields}


def settings_hash(hashed: dict) -> str:
    return hashlib.blake2b(json.dumps(hashed, sort_keys=True).encode(), digest_size=16).hexdigest()


# ---- model identity -------------------------------------------------------------------------

CHECKPOINT_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")


def model_identity(model: str | os.PathLike | None) -> dict:
    """``{"ref", "name", "folder", "hash"}`` of a checkpoint folder or hub id, or of the
    bundled default model for None. ``hash`` covers config, weights and processor files."""
    from ..checkpoint import resolve_checkpoint_dir
    from ..default_model import default_model_name, default_model_path

    if model is None:
        folder, name, ref = default_model_path(), default_model_name(), None
    else:
        ref = os.fspath(model)
        folder, name = resolve_checkpoint_dir(ref, required=("config.json", "model.safetensors")), ref
    return {"ref": ref, "name": name, "folder": str(folder), "hash": checkpoint_hash(folder)}


def checkpoint_hash(folder: str | os.PathLike) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for name in CHECKPOINT_FILES:
        path = Path(folder) / name
        if path.is_file():
            digest.update(name.encode() + b"\0")
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
    return digest.hexdigest()


def load_model(identity: dict, dtype: str, device: str):
    """The model of ``identity`` (from :func:`model_identity`) in eval mode on ``device``; a
    RuntimeError when this machine's copy of the checkpoint has other weights."""
    import torch

    from ..default_model import load_default_model
    from ..model import AutoGaze

    here = model_identity(identity["ref"])
    if here["hash"] != identity["hash"]:
        raise RuntimeError(f"model {identity['name']} at {here['folder']} differs from the one "
                           f"the corpus was planned with (weight hash {here['hash']} != "
                           f"{identity['hash']}): give every node the same checkpoint")
    torch_dtype = getattr(torch, dtype)
    if identity["ref"] is None:
        model = load_default_model(device=device, dtype=torch_dtype)
    else:
        model = AutoGaze.from_pretrained(here["folder"], device=device, dtype=torch_dtype)
        model.name_or_path = identity["name"]
    return model.eval()


# ---- frames and units -----------------------------------------------------------------------

def select_frames(num_frames: int, fps: float, settings: CorpusSettings) -> list[int]:
    """Source frame indices gazed for a video of ``num_frames`` at ``fps``: ``frames`` A:B,
    then every ``stride``-th frame, or frames resampled to ``settings.fps`` (nearest earlier
    frame of each output time; no resampling when the video is not faster)."""
    first, stop = settings.frames or (0, None)
    stop = num_frames if stop is None else min(stop, num_frames)
    if first >= stop:
        return []
    if settings.fps is not None and fps > settings.fps:
        step, out = fps / settings.fps, []
        while (index := first + int(len(out) * step + 1e-9)) < stop:
            out.append(index)
        return out
    return list(range(first, stop, settings.stride))


def unit_key(path: str, content: str, settings_digest: str, first_clip: int, stop_clip: int) -> str:
    text = "\0".join([path, content, settings_digest, str(first_clip), str(stop_clip)])
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def plan_video(video: dict, settings: CorpusSettings, settings_digest: str,
               clip_len: int) -> list[dict]:
    """The work units of one probed video (a row of :func:`~.inputs.probe` without error).

    Each unit: ``key, path, content_hash, size, mtime_ns, first_clip, stop_clip, num_frames,
    frame_index`` (source indices of its frames), and ``seek_pts``/``seek_index``: the last key
    frame at or before its first frame (-1 when decoding starts at the beginning).
    """
    indices = select_frames(video["num_frames"], video["fps"], settings)
    num_clips = math.ceil(len(indices) / clip_len)
    keys = list(zip(video["keyframe_index"], video["keyframe_pts"]))
    clip_bytes = clip_len * max(1, video["width"] * video["height"]) * 3
    per_unit = max(1, min(settings.clips_per_unit, (settings.max_unit_mib << 20) // clip_bytes))
    units = []
    for first in range(0, num_clips, per_unit):
        stop = min(num_clips, first + per_unit)
        frame_index = indices[first * clip_len: stop * clip_len]
        seek_index, seek_pts = -1, -1
        for index, pts in keys:  # ascending
            if index > frame_index[0]:
                break
            if index > 0:
                seek_index, seek_pts = index, pts
        units.append({"key": unit_key(video["path"], video["content_hash"], settings_digest,
                                      first, stop),
                      "path": video["path"], "content_hash": video["content_hash"],
                      "size": video["size"], "mtime_ns": video["mtime_ns"], "first_clip": first,
                      "stop_clip": stop, "num_frames": len(frame_index),
                      "frame_index": frame_index, "seek_pts": seek_pts, "seek_index": seek_index})
    return units


def error_key(path: str, content: str, settings_digest: str) -> str:
    """Key of an input that could not be planned (unreadable, not a video, no frames)."""
    return unit_key(path, content, settings_digest, -1, -1)
