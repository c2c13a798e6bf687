"""Frame preprocessing, bit-exact with the official ``AutoGazeImageProcessor``.

Per frame (uint8 HWC RGB): Pillow resize (shortest edge or fixed size), optional
center crop, then rescale / offset / normalize.  The last three steps are a pure
function of the uint8 value, so they are applied as a 256-entry lookup table per
channel computed with exactly the official float64/float32 arithmetic.
"""

from __future__ import annotations

import copy
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

__all__ = ["RELEASE_PREPROCESSING", "ProcessorConfig", "preprocess", "output_size"]

# The released AutoGaze ``preprocessor_config.json`` (spec §4.1(a)): the defaults
# of ``preprocess`` when no config is given.
RELEASE_PREPROCESSING: dict[str, Any] = {
    "do_resize": True,
    "size": {"shortest_edge": 224},
    "resample": 2,
    "do_center_crop": False,
    "crop_size": {"height": 224, "width": 224},
    "do_rescale": True,
    "rescale_factor": 1 / 127.5,
    "offset": True,
    "do_normalize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "image_processor_type": "AutoGazeImageProcessor",
}

# Pillow filter codes as stored in ``resample``; the official processor hands
# the code straight to ``Image.resize``, so every Pillow filter is reproduced.
_PIL_FILTERS = {
    0: Image.Resampling.NEAREST,
    1: Image.Resampling.LANCZOS,
    2: Image.Resampling.BILINEAR,
    3: Image.Resampling.BICUBIC,
    4: Image.Resampling.BOX,
    5: Image.Resampling.HAMMING,
}

# From this many frames on, frames are processed on threads: Pillow's resize and
# numpy's take release the GIL (16 frames of 1280x720 on 2 cores: 62 -> 37 ms).
_THREADING_MIN_FRAMES = 4


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _size_dict(value: Any, name: str, int_is_shortest_edge: bool) -> dict[str, int]:
    """Normalise an int, ``(h, w)`` pair or size dict to ``{"shortest_edge": s}`` or
    ``{"height": h, "width": w}`` (an int means a shortest edge for ``size`` and a
    square for ``crop_size``, as in the official processor)."""
    if _is_int(value):
        value = {"shortest_edge": value} if int_is_shortest_edge else {"height": value, "width": value}
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        value = {"height": value[0], "width": value[1]}
    if not isinstance(value, Mapping):
        raise TypeError(
            f"{name} must be an int, a (height, width) pair or a dict with 'shortest_edge' "
            f"or 'height'/'width'; got {value!r}"
        )
    keys = set(value)
    if keys not in ({"shortest_edge"}, {"height", "width"}):
        raise ValueError(
            f"{name} must have the key 'shortest_edge' or the keys 'height' and 'width'; "
            f"got keys {sorted(keys)}"
        )
    for key, v in value.items():
        if not _is_int(v) or v <= 0:
            raise ValueError(f"{name}[{key!r}] must be a positive int; got {v!r}")
    return {k: int(v) for k, v in value.items()}


def _channel_stats(value: Any, name: str) -> list[float]:
    try:
        stats = [float(v) for v in np.asarray(value, dtype=np.float64).reshape(-1)]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a sequence of 3 numbers; got {value!r}") from None
    if len(stats) != 3:
        raise ValueError(f"{name} must hold 3 values (one per RGB channel); got {len(stats)}")
    if not all(math.isfinite(v) for v in stats):
        raise ValueError(f"{name} must be finite; got {stats}")
    if name.endswith("std") and any(v == 0 for v in stats):
        raise ValueError(f"{name} must not contain 0; got {stats}")
    return stats


@dataclass
class ProcessorConfig:
    """The fields of an official ``preprocessor_config.json``.

    Defaults are the official class defaults (spec §4.1(a)); use
    :meth:`release` for the released AutoGaze settings.  Keys the processor does
    not use (e.g. ``image_processor_type``) are kept in ``extra`` and written back
    by :meth:`to_dict`.
    """

    do_resize: bool = True
    size: dict = field(default_factory=lambda: {"shortest_edge": 256})
    resample: int = 2
    do_center_crop: bool = False
    crop_size: dict = field(default_factory=lambda: {"height": 224, "width": 224})
    do_rescale: bool = True
    rescale_factor: float = 1 / 127.5
    offset: bool = True
    do_normalize: bool = True
    image_mean: list = field(default_factory=lambda: [0.5, 0.5, 0.5])
    image_std: list = field(default_factory=lambda: [0.5, 0.5, 0.5])
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.size = _size_dict(self.size, "size", int_is_shortest_edge=True)
        self.crop_size = _size_dict(self.crop_size, "crop_size", int_is_shortest_edge=False)
        if "shortest_edge" in self.crop_size:
            raise ValueError(f"crop_size must have 'height' and 'width'; got {self.crop_size}")
        if not _is_int(self.resample) or int(self.resample) not in _PIL_FILTERS:
            raise NotImplementedError(
                f"resample={self.resample!r} is not a Pillow filter code; supported: "
                + ", ".join(f"{k} ({f.name})" for k, f in _PIL_FILTERS.items())
            )
        self.resample = int(self.resample)
        self.rescale_factor = float(self.rescale_factor)
        self.image_mean = _channel_stats(self.image_mean, "image_mean")
        self.image_std = _channel_stats(self.image_std, "image_std")

    @classmethod
    def release(cls) -> "ProcessorConfig":
        """The released AutoGaze preprocessing (:data:`RELEASE_PREPROCESSING`)."""
        return cls.from_dict(RELEASE_PREPROCESSING)

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "ProcessorConfig":
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: copy.deepcopy(v) for k, v in config.items() if k in names}
        extra = {k: copy.deepcopy(v) for k, v in config.items() if k not in names}
        return cls(**known, extra=extra)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "ProcessorConfig":
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name != "extra"}
        out.update(copy.deepcopy(self.extra))
        return out

    def to_json_file(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
            f.write("\n")


def output_size(height: int, width: int, size: Mapping[str, int]) -> tuple[int, int]:
    """Resized ``(height, width)`` of a frame: the short side becomes
    ``shortest_edge`` and the long side ``int(s * long / short)`` (truncated), or
    exactly ``(size["height"], size["width"])``."""
    if "shortest_edge" in size:
        s = size["shortest_edge"]
        if height <= width:
            return s, int(s * width / height)
        return int(s * height / width), s
    return size["height"], size["width"]


def _value_lut(config: ProcessorConfig) -> np.ndarray:
    """``(3, 256)`` float32: the rescaled/normalised value of each uint8 level per
    channel, with the official arithmetic (float64 rescale cast to float32, then
    float32 offset and normalisation)."""
    values = np.arange(256, dtype=np.float64)
    if config.do_rescale:
        values = (values * config.rescale_factor).astype(np.float32)
        if config.offset:
            values = values - np.float32(1)
    values = np.broadcast_to(values.astype(np.float32), (3, 256))
    if config.do_normalize:
        mean = np.asarray(config.image_mean, dtype=np.float32)[:, None]
        std = np.asarray(config.image_std, dtype=np.float32)[:, None]
        values = (values - mean) / std
    return np.ascontiguousarray(values, dtype=np.float32)


def _center_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Center crop of an ``(H, W, 3)`` image to ``(height, width)``, zero padding
    where the crop is larger than the image (the official behaviour)."""
    h, w = image.shape[:2]
    top, left = (h - height) // 2, (w - width) // 2
    if top >= 0 and left >= 0:
        return image[top : top + height, left : left + width]
    # Pad to at least the crop size (extra pixel on the top/left when odd), then crop.
    ph, pw = max(height, h), max(width, w)
    pad_top, pad_left = -(-(ph - h) // 2), -(-(pw - w) // 2)
    padded = np.zeros((ph, pw, 3), dtype=image.dtype)
    padded[pad_top : pad_top + h, pad_left : pad_left + w] = image
    top, left = top + pad_top, left + pad_left
    return padded[max(top, 0) : top + height, max(left, 0) : left + width]


def _as_uint8_frames(frames: Any) -> tuple[np.ndarray, torch.device | None]:
    """Validate ``frames`` and return it as a numpy uint8 array ``(..., H, W, 3)``
    plus the torch device to return the result on (None for numpy input)."""
    device = None
    if isinstance(frames, torch.Tensor):
        device = frames.device
        if frames.dtype != torch.uint8:
            raise TypeError(f"frames must have dtype uint8; got {frames.dtype}")
        frames = frames.detach().cpu().numpy()
    elif not isinstance(frames, np.ndarray):
        raise TypeError(f"frames must be a numpy array or torch tensor; got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise TypeError(f"frames must have dtype uint8; got {frames.dtype}")
    if frames.ndim not in (4, 5):
        raise ValueError(
            f"frames must have shape (T, H, W, 3) or (B, T, H, W, 3); got shape {tuple(frames.shape)}"
        )
    if frames.shape[-1] != 3:
        raise ValueError(f"frames must be RGB with last dim 3 (channels last); got shape {tuple(frames.shape)}")
    if 0 in frames.shape:
        raise ValueError(f"frames must not be empty; got shape {tuple(frames.shape)}")
    return frames, device


def preprocess(
    frames: np.ndarray | torch.Tensor,
    size: int | tuple[int, int] | Mapping[str, int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    config: ProcessorConfig | Mapping[str, Any] | None = None,
) -> torch.Tensor:
    """Preprocess uint8 RGB frames exactly as the official processor does.

    Args:
        frames: uint8 ``(T, H, W, 3)`` or ``(B, T, H, W, 3)``, numpy or torch.
        size: overrides ``config.size`` (and turns resizing on): an int (shortest
            edge), a ``(height, width)`` pair, or a dict like the config's.
        mean, std: per-channel normalisation statistics overriding the config's.
        config: a :class:`ProcessorConfig` or its dict form; defaults to
            :data:`RELEASE_PREPROCESSING`.

    Returns:
        float32 ``(T, 3, H', W')`` or ``(B, T, 3, H', W')``; on the device of a torch
        input (the work itself runs on CPU with Pillow).
    """
    if config is None:
        config = ProcessorConfig.release()
    elif not isinstance(config, ProcessorConfig):
        config = ProcessorConfig.from_dict(config)
    overrides = {}
    if size is not None:
        overrides.update(do_resize=True, size=_size_dict(size, "size", int_is_shortest_edge=True))
    if mean is not None:
        overrides["image_mean"] = _channel_stats(mean, "mean")
    if std is not None:
        overrides["image_std"] = _channel_stats(std, "std")
    if overrides:
        config = ProcessorConfig.from_dict({**config.to_dict(), **overrides})

    array, device = _as_uint8_frames(frames)
    lead_shape = array.shape[:-3]
    flat = array.reshape(-1, *array.shape[-3:])
    h, w = flat.shape[1:3]
    resize_h, resize_w = output_size(h, w, config.size) if config.do_resize else (h, w)
    if config.do_center_crop:
        out_h, out_w = config.crop_size["height"], config.crop_size["width"]
    else:
        out_h, out_w = resize_h, resize_w

    out = np.empty((flat.shape[0], 3, out_h, out_w), dtype=np.float32)
    lut = _value_lut(config)
    pil_filter = _PIL_FILTERS[config.resample]

    def process_one(i: int) -> None:
        image = np.ascontiguousarray(flat[i])
        if (resize_h, resize_w) != (h, w):  # Pillow returns a same-size resize unchanged
            image = Image.fromarray(image).resize((resize_w, resize_h), pil_filter, reducing_gap=None)
            image = np.asarray(image)
        if config.do_center_crop:
            image = _center_crop(image, out_h, out_w)
        for c in range(3):
            np.take(lut[c], image[..., c], out=out[i, c])

    if flat.shape[0] >= _THREADING_MIN_FRAMES and (os.cpu_count() or 1) > 1:
        with ThreadPoolExecutor(max_workers=min(os.cpu_count() or 1, 8)) as pool:
            list(pool.map(process_one, range(flat.shape[0])))
    else:
        for i in range(flat.shape[0]):
            process_one(i)

    result = torch.from_numpy(out).reshape(*lead_shape, 3, out_h, out_w)
    return result if device is None or device.type == "cpu" else result.to(device)
