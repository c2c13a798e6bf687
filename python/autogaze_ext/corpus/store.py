"""The output folder of a corpus: its layout, schemas and atomic writes.

```
DIR/corpus.json           settings, settings hash and model (written once; a run with other
                          settings is refused)
DIR/inputs.parquet        one row per input file: size, mtime, content hash, probe facts, error
DIR/units.parquet         the plan: one row per work unit (and per unusable input)
DIR/clips/ab/<key>.parquet   one shard per work unit, one row per clip (CLIP_SCHEMA)
DIR/errors/ab/<key>.parquet  one record per unit or input that failed (ERROR_SCHEMA)
DIR/_SUCCESS.json         written last: every unit of the plan has a shard or an error record
```

Every file is written under a temporary name in its folder, then renamed into place, so a
reader (or a rerun) sees a whole file or none. A shard's name is its unit's key (content hash,
settings hash, clip range), so writing a unit twice, e.g. when Ray retries a task whose worker
died after the rename, replaces the shard with an identical one: a clip can never appear twice.
A unit is done when its shard exists.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

CLIP_SCHEMA = pa.schema([
    ("path", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64()),
    ("content_hash", pa.string()), ("unit", pa.string()), ("clip", pa.int32()),
    ("num_frames", pa.int32()), ("frame_start", pa.int64()), ("frame_stop", pa.int64()),
    ("frame_index", pa.list_(pa.int64())), ("ids", pa.list_(pa.int64())),
    ("frame_offsets", pa.list_(pa.int64())), ("tokens", pa.list_(pa.int32())),
    ("tokens_per_scale", pa.list_(pa.int64())), ("candidates_per_frame", pa.int32()),
    ("scale_grids", pa.list_(pa.list_(pa.int32()))),
    ("task_loss_requirement", pa.list_(pa.float32())),
    ("settings", pa.string()), ("settings_hash", pa.string()), ("model_name", pa.string()),
    ("model_hash", pa.string()),
])
ERROR_SCHEMA = pa.schema([
    ("path", pa.string()), ("unit", pa.string()), ("first_clip", pa.int32()),
    ("stop_clip", pa.int32()), ("stage", pa.string()), ("message", pa.string()),
    ("attempts", pa.int32()), ("content_hash", pa.string()), ("settings_hash", pa.string()),
])
INPUT_SCHEMA = pa.schema([
    ("path", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64()),
    ("content_hash", pa.string()), ("num_frames", pa.int64()), ("width", pa.int32()),
    ("height", pa.int32()), ("fps", pa.float64()), ("keyframe_pts", pa.list_(pa.int64())),
    ("keyframe_index", pa.list_(pa.int64())), ("error", pa.string()),
])
UNIT_SCHEMA = pa.schema([
    ("key", pa.string()), ("kind", pa.string()), ("path", pa.string()),
    ("content_hash", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64()),
    ("first_clip", pa.int32()), ("stop_clip", pa.int32()), ("num_frames", pa.int64()),
    ("frame_index", pa.list_(pa.int64())), ("seek_pts", pa.int64()), ("seek_index", pa.int64()),
])
TMP_PREFIX = ".tmp-"
SETTINGS_FILE, INPUTS_FILE, UNITS_FILE, SUCCESS_FILE = ("corpus.json", "inputs.parquet",
                                                        "units.parquet", "_SUCCESS.json")
OWN_NAMES = (SETTINGS_FILE, INPUTS_FILE, UNITS_FILE, SUCCESS_FILE, "clips", "errors", ".lock")


def shard_path(out, key: str) -> Path:
    return Path(out) / "clips" / key[:2] / f"{key}.parquet"


def error_path(out, key: str) -> Path:
    return Path(out) / "errors" / key[:2] / f"{key}.parquet"


def _commit(path: Path, write) -> None:
    """``write(file object)`` into a temporary file beside ``path``, flushed to disk, then
    renamed to ``path`` (atomic on POSIX file systems)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f"{TMP_PREFIX}{path.name}-{uuid.uuid4().hex}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_table(path: Path, table: pa.Table, metadata: dict | None = None) -> None:
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               **{k: str(v) for k, v in metadata.items()}})
    _commit(Path(path), lambda f: pq.write_table(table, f))


def write_json(path: Path, doc: dict) -> None:
    _commit(Path(path), lambda f: f.write((json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()))


def write_shard(out, key: str, table: pa.Table, tokens: int, candidates: int,
                node: str = "") -> None:
    """Commit a unit's clips; its totals and the writer's Ray node go into the file's metadata
    (not into the rows, which are the same whoever wrote them)."""
    write_table(shard_path(out, key), table, {"autogaze.tokens": tokens,
                                              "autogaze.candidates": candidates,
                                              "autogaze.node": node})
    error_path(out, key).unlink(missing_ok=True)  # a retried unit that now succeeded


def error_record(unit: dict, message: str, attempts: int, settings_digest: str) -> dict:
    stage, _, text = message.partition(": ")
    return {"path": str(unit["path"]), "unit": str(unit["key"]),
            "first_clip": int(unit.get("first_clip", -1)), "stop_clip": int(unit.get("stop_clip", -1)),
            "stage": stage, "message": text, "attempts": int(attempts),
            "content_hash": str(unit.get("content_hash", "")), "settings_hash": settings_digest}


def write_error(out, record: dict) -> None:
    table = pa.Table.from_pylist([record], schema=ERROR_SCHEMA)
    write_table(error_path(out, record["unit"]), table)


def existing_keys(out, folder: str) -> set[str]:
    """Keys of the committed files under ``DIR/clips`` or ``DIR/errors``."""
    root = Path(out) / folder
    if not root.is_dir():
        return set()
    return {entry.name[:-len(".parquet")] for sub in os.scandir(root) if sub.is_dir()
            for entry in os.scandir(sub.path)
            if entry.name.endswith(".parquet") and not entry.name.startswith(TMP_PREFIX)}


def remove_temporaries(out) -> int:
    """Delete the temporary files a killed run left behind; returns how many."""
    count = 0
    for root, _, files in os.walk(out):
        for name in files:
            if name.startswith(TMP_PREFIX):
                Path(root, name).unlink(missing_ok=True)
                count += 1
    return count


def read_table(path: Path, schema: pa.Schema | None = None) -> pa.Table | None:
    if not Path(path).is_file():
        return None
    return pq.read_table(path, schema=schema)


def clear(out) -> None:
    """Remove everything a corpus run writes into ``out`` (and nothing else)."""
    for name in OWN_NAMES:
        path = Path(out) / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
