"""``GazeStream``: gaze a live video frame by frame with bounded memory.

Each pushed frame is preprocessed as ``gaze()`` does in resize mode and gazed with
``model.stream_step``, which carries the decoder's KV cache and the conv cache from frame to frame.
The KV cache grows with every frame, so the stream state is reset every ``window`` frames (default:
the checkpoint's ``max_num_frames``, 16). A reset restarts the temporal context: frame ``k·window``
is gazed as the first frame of a new clip. The result is therefore exactly that of offline
``gaze(frames, model, clip_len=window)`` (consecutive clips of ``window`` frames), and memory is
bounded by one window.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .model import AutoGaze


@dataclass
class StreamFrame:
    """The gaze of one streamed frame.

    index: frame number in the stream (0, 1, ...); window_index: position within the current
    window (0 right after a reset); ids: gazed frame-local ids (0…N−1) in generation order;
    per_scale: gazed ids per scale; kept_percent: 100·len(ids)/N; latency_ms: wall time of
    preprocess + gaze of this frame (device synchronised); loss: the task-loss requirement used,
    when there is one.
    """
    index: int
    window_index: int
    ids: list[int]
    per_scale: list[int]
    kept_percent: float
    latency_ms: float
    loss: float | None = None

    @property
    def count(self) -> int:
        return len(self.ids)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["count"] = self.count
        if out["loss"] is None:
            del out["loss"]
        return out


class GazeStream:
    """Gaze uint8 RGB frames one at a time (``push``), resetting the context every ``window``.

    model: an ``AutoGaze``. gazing_ratio / task_loss_requirement: as in ``gaze()`` (one number
    each; neither → the checkpoint's inference settings). window: frames per temporal context
    (default ``model.config.max_num_frames``); memory is bounded by it. device: move the model
    there (default: where it is).
    """

    def __init__(self, model: AutoGaze, gazing_ratio=None, task_loss_requirement=None,
                 window: int | None = None, device=None):
        if not isinstance(model, AutoGaze):
            raise TypeError(f"model must be an AutoGaze, got {type(model).__name__}")
        window = model.config.max_num_frames if window is None else window
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive int, got {window!r}")
        if gazing_ratio is not None and (isinstance(gazing_ratio, bool) or
                                         not isinstance(gazing_ratio, (int, float)) or
                                         not 0 < gazing_ratio <= 1):
            raise ValueError(f"gazing_ratio must be a number in (0, 1], got {gazing_ratio!r}")
        if task_loss_requirement is not None and not isinstance(task_loss_requirement,
                                                                (int, float)):
            raise TypeError("task_loss_requirement must be one number, got "
                            f"{type(task_loss_requirement).__name__}")
        if device is not None:
            model.to(device)
        self.model, self.window = model, window
        self.gazing_ratio, self.task_loss_requirement = gazing_ratio, task_loss_requirement
        self.frames_pushed = 0
        self.state = None
        self.reset()

    def reset(self) -> None:
        """Start a new temporal context (the next frame is gazed like a clip's first frame).

        The KV cache grown during the previous window is cleared and kept, so a long stream
        allocates it once (its capacity never exceeds one window's worth)."""
        old = self.state
        self.state = self.model.init_stream(1)
        if old is not None and old.decode.cache.capacity > self.state.decode.cache.capacity:
            cache = old.decode.cache
            cache.k.zero_()
            cache.v.zero_()
            cache.key_mask.zero_()
            cache.length = 0
            self.state.decode.cache = cache

    @torch.no_grad()
    def push(self, frame) -> StreamFrame:
        """Gaze one uint8 frame (H,W,3), numpy or torch; returns its ``StreamFrame``."""
        frame = _check_frame(frame)
        if self.state.frames_seen >= self.window:
            self.reset()
        model = self.model
        cuda = model.device.type == "cuda"
        clock = time.perf_counter()
        video = model.preprocess(frame[None]).to(model.device)  # (1,3,S,S)
        out = model.stream_step(video, self.state, gazing_ratio=self.gazing_ratio,
                                task_loss_requirement=self.task_loss_requirement)
        ids = out["ids"].tolist()  # a host read: also synchronises the device
        if cuda:
            torch.cuda.synchronize(model.device)
        latency = 1000 * (time.perf_counter() - clock)
        per_scale = [int(m.sum()) for m in out["gazing_mask"]]
        req = out["task_loss_requirement"]
        result = StreamFrame(index=self.frames_pushed, window_index=self.state.frames_seen - 1,
                             ids=ids, per_scale=per_scale,
                             kept_percent=100 * len(ids) / model.num_tokens, latency_ms=latency,
                             loss=None if req is None else float(req.flatten()[0]))
        self.frames_pushed += 1
        return result


def _check_frame(frame) -> torch.Tensor:
    if isinstance(frame, np.ndarray):
        if not frame.flags.writeable:  # torch warns on read-only arrays
            frame = frame.copy()
        frame = torch.from_numpy(np.ascontiguousarray(frame))
    if not isinstance(frame, torch.Tensor):
        raise TypeError(f"frame must be a uint8 array (H,W,3), got {type(frame).__name__}")
    if frame.dim() != 3 or frame.shape[-1] != 3:
        raise ValueError(f"frame must have shape (H,W,3), got {tuple(frame.shape)}")
    if frame.dtype != torch.uint8:
        raise TypeError(f"frame must be uint8, got {frame.dtype}")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"frame is empty: shape {tuple(frame.shape)}")
    return frame


def latency_summary(latencies_ms: list[float]) -> dict:
    """``{"frames", "mean_ms", "p50_ms", "p95_ms", "max_ms"}`` of per-frame latencies."""
    if not latencies_ms:
        return {"frames": 0}
    values = np.asarray(latencies_ms, dtype=np.float64)
    return {"frames": int(values.size), "mean_ms": float(values.mean()),
            "p50_ms": float(np.percentile(values, 50)), "p95_ms": float(np.percentile(values, 95)),
            "max_ms": float(values.max())}
