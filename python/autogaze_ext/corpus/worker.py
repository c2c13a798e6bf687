"""What runs on the Ray workers: decoding a unit's frames (a CPU task per unit) and gazing
batches of units (an actor per worker, the model loaded once), which writes one shard per unit.

Both stages retry an exception a bounded number of times and then hand on an error row, so a
bad video never stops the run; a crashed worker or lost node is retried by Ray.
"""

from __future__ import annotations

import time

import numpy as np

from . import store
from .units import CorpusSettings, load_model


def _one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


def with_retries(fn, attempts: int):
    """``(fn(), None, tries)`` on the first success within ``attempts`` tries, else ``(None,
    message of the last exception, attempts)``."""
    message = ""
    for attempt in range(1, attempts + 1):
        try:
            return fn(), None, attempt
        except Exception as err:  # any failure of one video must not stop the others
            message = _one_line(err)
    return None, message, attempts


# ---- decode ---------------------------------------------------------------------------------

def decode_frames(path: str, frame_index, seek_pts: int = -1, seek_index: int = -1) -> np.ndarray:
    """uint8 ``(len(frame_index), H, W, 3)`` RGB frames at the ascending presentation indices
    ``frame_index``, decoded as ``read_video`` decodes them. With a key frame (``seek_pts``
    at presentation index ``seek_index`` > 0) decoding starts there; when the decoder's first
    frame after the seek is not that key frame, it decodes from the start instead."""
    wanted = [int(i) for i in frame_index]
    if not wanted:
        raise ValueError("no frame to decode")
    if seek_index > 0 and seek_index <= wanted[0]:
        frames = _decode(path, wanted, seek_pts, seek_index)
        if frames is not None:
            return frames
    return _decode(path, wanted, None, 0)


def _decode(path: str, wanted: list[int], seek_pts, base: int):
    import av

    out, index = [], base - 1
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            placed = seek_pts is None
            if not placed:
                container.seek(int(seek_pts), stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                if not placed:  # frames before the key frame (open GOP) are not ours
                    if frame.pts is None or frame.pts > seek_pts:
                        return None
                    if frame.pts < seek_pts:
                        continue
                    placed = True
                index += 1
                if index == wanted[len(out)]:
                    out.append(frame.to_ndarray(format="rgb24"))
                    if len(out) == len(wanted):
                        break
    except av.error.FFmpegError as err:
        raise ValueError(f"cannot decode video {path} (truncated or corrupt?): {err}") from None
    if len(out) < len(wanted):
        raise ValueError(f"video {path} ended after {index + 1} frames; its packets promised "
                         f"frame {wanted[-1]}")
    return np.stack(out)


EMPTY_FRAMES = np.zeros((0, 1, 1, 3), dtype=np.uint8)


def decode_unit(unit: dict, attempts: int) -> dict:
    """Ray Data ``map`` function: the unit's row plus ``frames`` (uint8 (n,H,W,3)),
    ``error`` ("" when decoded) and ``attempts``."""
    frames, error, tries = with_retries(
        lambda: decode_frames(unit["path"], unit["frame_index"], int(unit["seek_pts"]),
                              int(unit["seek_index"])), attempts)
    return {**unit, "frames": EMPTY_FRAMES if frames is None else frames,
            "error": "" if error is None else f"decode: {error}", "attempts": tries}


# ---- gaze -----------------------------------------------------------------------------------

def gaze_clips(model, clips: list[np.ndarray], settings: CorpusSettings, device: str) -> list[dict]:
    """``gaze()`` of every clip (uint8 (n_i,H,W,3), n_i <= clip_len) with as few calls as
    possible: clips of one frame size are gazed as one video, which ``gaze()`` cuts back into the
    same clips and batches ``batch_size`` at a time (a clip's gaze does not depend on its batch).
    A clip shorter than ``clip_len`` is padded by ``gaze()``, so it goes last in its call.

    Returns per clip ``{ids, frame_offsets, requirement, candidates, scale_grids}`` exactly as
    ``gaze(clip)`` gives them (frame t's ids, local to the frame, are
    ``ids[frame_offsets[t]:frame_offsets[t+1]]``).
    """
    import torch

    from ..api import gaze

    clip_len = int(model.config.max_num_frames)
    by_size: dict = {}
    for i, clip in enumerate(clips):
        by_size.setdefault(clip.shape[1:3], []).append(i)
    calls = []
    for members in by_size.values():
        full = [i for i in members if len(clips[i]) == clip_len]
        short = [i for i in members if len(clips[i]) < clip_len]
        calls.append(full + short[:1])
        calls += [[i] for i in short[1:]]
    results: list = [None] * len(clips)
    with torch.no_grad():
        for call in calls:
            frames = np.concatenate([clips[i] for i in call])
            out = gaze(frames, model, device=device, batch_size=settings.batch_size,
                       **settings.gaze_kwargs())
            ids, offsets = out["ids"].cpu().numpy(), out["frame_offsets"].cpu().numpy()
            req = out["task_loss_requirement"]
            req = None if req is None else req.reshape(-1).float().cpu().numpy()
            n_all = int(out["num_vision_tokens_each_frame"])
            grids = [[int(r), int(c)] for r, c in out["scale_grids"]]
            start = 0
            for i in call:
                n = len(clips[i])
                a, b = offsets[start], offsets[start + n]
                results[i] = {"ids": ids[a:b],
                              "frame_offsets": offsets[start:start + n + 1] - a,
                              "requirement": None if req is None else req[start:start + n],
                              "candidates": n_all, "scale_grids": grids}
                start += n
    return results


def unit_table(unit: dict, results: list[dict], clip_len: int, meta: dict):
    """The shard of one unit: one row per clip (:data:`store.CLIP_SCHEMA`)."""
    rows = {name: [] for name in store.CLIP_SCHEMA.names}
    frame_index = np.asarray(unit["frame_index"], dtype=np.int64)
    for c, res in enumerate(results):
        index = frame_index[c * clip_len:(c + 1) * clip_len]
        ids, offsets = res["ids"], res["frame_offsets"]
        counts = np.diff(offsets)
        bounds = np.cumsum([r * c_ for r, c_ in res["scale_grids"]])
        per_scale = np.bincount(np.searchsorted(bounds, ids, side="right"),
                                minlength=len(bounds))
        values = {"path": unit["path"], "size": int(unit["size"]),
                  "mtime_ns": int(unit["mtime_ns"]), "content_hash": unit["content_hash"],
                  "unit": unit["key"], "clip": int(unit["first_clip"]) + c,
                  "num_frames": len(index), "frame_start": int(index[0]),
                  "frame_stop": int(index[-1]) + 1, "frame_index": index.tolist(),
                  "ids": ids.tolist(), "frame_offsets": offsets.tolist(),
                  "tokens": counts.tolist(), "tokens_per_scale": per_scale.tolist(),
                  "candidates_per_frame": res["candidates"], "scale_grids": res["scale_grids"],
                  "task_loss_requirement": (None if res["requirement"] is None
                                            else res["requirement"].tolist()),
                  **meta}
        for name in rows:
            rows[name].append(values[name])
    import pyarrow as pa

    return pa.Table.from_pydict(rows, schema=store.CLIP_SCHEMA)


class GazeWorker:
    """Ray Data actor: loads the model once, gazes batches of decoded units, writes each unit's
    shard (or its error record) and returns one status row per unit."""

    def __init__(self, out: str, identity: dict, settings: dict, settings_digest: str,
                 hashed: dict, attempts: int, threads: int, use_gpu: bool):
        import json

        import torch

        if use_gpu and not torch.cuda.is_available():
            raise RuntimeError("a GPU worker was placed where torch sees no CUDA device")
        if not use_gpu:
            torch.set_num_threads(max(1, threads))
        self.device = "cuda" if use_gpu else "cpu"
        import ray

        self.node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
        self.out, self.attempts = out, attempts
        self.settings = CorpusSettings(**settings)
        self.model = load_model(identity, self.settings.dtype, self.device)
        self.clip_len = int(self.model.config.max_num_frames)
        self.meta = {"settings": json.dumps(hashed, sort_keys=True),
                     "settings_hash": settings_digest, "model_name": identity["name"],
                     "model_hash": identity["hash"]}

    def __call__(self, batch: dict) -> dict:
        names = [k for k in batch if k not in ("frames",)]
        units = [{k: batch[k][i] for k in names} for i in range(len(batch["key"]))]
        for unit in units:
            unit["key"], unit["path"] = str(unit["key"]), str(unit["path"])
            unit["content_hash"], unit["error"] = str(unit["content_hash"]), str(unit["error"])
        frames = list(batch["frames"])
        status = {"key": [], "status": [], "clips": [], "frames": [], "tokens": [],
                  "candidates": [], "seconds": [], "node": []}
        good = [i for i, u in enumerate(units) if not u["error"]]
        clock = time.perf_counter()
        results = {}
        clips, owner = [], []
        for i in good:
            for c in range(0, len(frames[i]), self.clip_len):
                clips.append(frames[i][c:c + self.clip_len])
                owner.append(i)
        try:  # all units together; on any failure each unit alone, with retries
            for i, res in zip(owner, gaze_clips(self.model, clips, self.settings, self.device)):
                results.setdefault(i, []).append(res)
        except Exception:
            results = {}
            for i in good:
                pieces = [frames[i][c:c + self.clip_len] for c in range(0, len(frames[i]), self.clip_len)]
                res, error, tries = with_retries(
                    lambda: gaze_clips(self.model, pieces, self.settings, self.device), self.attempts)
                if error is None:
                    results[i] = res
                else:
                    units[i]["error"], units[i]["attempts"] = f"gaze: {error}", tries
        seconds = (time.perf_counter() - clock) / max(1, len(units))
        for i, unit in enumerate(units):
            if unit["error"]:
                store.write_error(self.out, store.error_record(unit, unit["error"],
                                                               int(unit["attempts"]),
                                                               self.meta["settings_hash"]))
                row = ("error", 0, 0, 0, 0)
            else:
                table = unit_table(unit, results[i], self.clip_len, self.meta)
                tokens = int(sum(sum(t) for t in table.column("tokens").to_pylist()))
                candidates = int(sum(n * c for n, c in zip(
                    table.column("num_frames").to_pylist(),
                    table.column("candidates_per_frame").to_pylist())))
                store.write_shard(self.out, unit["key"], table, tokens=tokens,
                                  candidates=candidates, node=self.node)
                row = ("done", table.num_rows, int(sum(table.column("num_frames").to_pylist())),
                       tokens, candidates)
            for name, value in zip(("status", "clips", "frames", "tokens", "candidates"), row):
                status[name].append(value)
            status["key"].append(unit["key"])
            status["seconds"].append(seconds)
            status["node"].append(self.node)
        return {k: np.asarray(v) for k, v in status.items()}
