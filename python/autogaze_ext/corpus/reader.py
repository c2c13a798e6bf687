"""Reading a corpus folder: clip rows, error records, and per-video results equal to ``gaze()``.

Only the units of the folder's plan (``units.parquet``) are read, by their shard names, so a
reader never sees a clip twice nor a shard of another run's inputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from . import store


def _plan(out, partial: bool) -> list[dict]:
    out = Path(out)
    units_file, success_file = out / store.UNITS_FILE, out / store.SUCCESS_FILE
    if not units_file.is_file():
        raise FileNotFoundError(f"{out} is not a corpus folder (no {store.UNITS_FILE})")
    units = store.read_table(units_file)
    if not success_file.is_file():
        if not partial:
            raise FileNotFoundError(f"{out} has no {store.SUCCESS_FILE}: its run has not finished "
                                    "(rerun it, or read with partial=True what is committed)")
    else:
        success = json.loads(success_file.read_text())
        digest = (units.schema.metadata or {}).get(b"autogaze.plan_digest", b"").decode()
        if success.get("plan_digest") != digest:
            raise ValueError(f"{out}: {store.SUCCESS_FILE} belongs to another plan than "
                             f"{store.UNITS_FILE} (a run was interrupted while planning?); "
                             "rerun the corpus command")
    return units.to_pylist()


def read_clips(out, partial: bool = False) -> pa.Table:
    """Every committed clip row of the folder's plan (:data:`store.CLIP_SCHEMA`), sorted by
    path and clip. ``partial``: read a folder whose run has not finished."""
    import pyarrow.dataset as ds

    done = store.existing_keys(out, "clips")
    files = [str(store.shard_path(out, u["key"])) for u in _plan(out, partial)
             if u["kind"] == "unit" and u["key"] in done]
    if not files:
        return store.CLIP_SCHEMA.empty_table()
    table = ds.dataset(files, format="parquet", schema=store.CLIP_SCHEMA).to_table()
    return table.sort_by([("path", "ascending"), ("clip", "ascending")])


def read_errors(out, partial: bool = False) -> pa.Table:
    """The error records of the folder's plan (:data:`store.ERROR_SCHEMA`): path, unit,
    clip range, stage (probe, decode, gaze, worker), message, attempts."""
    done = store.existing_keys(out, "clips")
    errors = store.existing_keys(out, "errors")
    keys = [u["key"] for u in _plan(out, partial) if u["key"] in errors and u["key"] not in done]
    tables = [store.read_table(store.error_path(out, k), store.ERROR_SCHEMA) for k in keys]
    if not tables:
        return store.ERROR_SCHEMA.empty_table()
    return pa.concat_tables(tables).sort_by([("path", "ascending"), ("first_clip", "ascending")])


def read(out, partial: bool = False) -> dict:
    """Per-video gaze results of a corpus folder: ``{path: GazeOutput}``.

    Each result holds what ``gaze(frames, model, **settings)`` returns for the video's selected
    frames: ``ids`` and ``frame_offsets`` (int64 tensors; frame t's ids are
    ``ids[frame_offsets[t]:frame_offsets[t+1]]``),
    ``num_vision_tokens_each_frame`` (N), ``scale_grids``, ``task_loss_requirement`` ((1,T) or
    None) and ``model``; plus ``frame_index`` (source frame of each gazed frame) and
    ``tokens`` (per frame). Videos with a unit in the errors table are left out (see
    :func:`read_errors`).
    """
    import torch

    from ..layout import GazeOutput

    table = read_clips(out, partial)
    plan = _plan(out, partial)
    expected: dict[str, int] = {}
    for unit in plan:
        if unit["kind"] == "unit":
            expected[unit["path"]] = expected.get(unit["path"], 0) + unit["stop_clip"] - unit["first_clip"]
    by_path: dict[str, list[dict]] = {}
    for row in table.to_pylist():
        by_path.setdefault(row["path"], []).append(row)
    results = {}
    for path, rows in by_path.items():
        if len(rows) != expected.get(path):
            continue
        ids, offsets, requirement = [], [0], []
        for row in rows:
            offsets += [offsets[-1] + o for o in row["frame_offsets"][1:]]
            ids += row["ids"]
            if row["task_loss_requirement"] is not None:
                requirement += row["task_loss_requirement"]
        results[path] = GazeOutput(
            ids=torch.tensor(ids, dtype=torch.long),
            frame_offsets=torch.tensor(offsets, dtype=torch.long),
            num_vision_tokens_each_frame=rows[0]["candidates_per_frame"],
            scale_grids=[tuple(g) for g in rows[0]["scale_grids"]],
            task_loss_requirement=(torch.tensor(requirement, dtype=torch.float32)[None]
                                   if requirement else None),
            model=rows[0]["model_name"],
            frame_index=torch.tensor([i for row in rows for i in row["frame_index"]]),
            tokens=torch.tensor([t for row in rows for t in row["tokens"]]))
    return results
