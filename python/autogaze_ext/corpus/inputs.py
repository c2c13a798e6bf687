"""Corpus inputs: expanding files, folders, globs and manifests into video paths, and probing a
video (content hash, frame count, size, frame rate, key frames) without decoding it."""

from __future__ import annotations

import csv
import glob
import hashlib
import os
from pathlib import Path

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts",
                    ".mts", ".m2ts", ".flv", ".wmv", ".3gp", ".ogv", ".y4m")
MANIFEST_EXTENSIONS = (".txt", ".csv", ".tsv", ".parquet")
HASH_CHUNK = 1 << 20


def list_inputs(inputs, extensions=VIDEO_EXTENSIONS, path_column: str = "path") -> list[str]:
    """Absolute paths of the videos named by ``inputs``, sorted and without repeats.

    Each input is a file (taken whatever its extension, so that a non-video becomes an error
    row rather than being skipped), a folder (searched recursively for ``extensions``), a glob
    pattern, or a manifest: ``.txt`` (one path a line, ``#`` comments), ``.csv``/``.tsv`` or
    ``.parquet`` with a ``path_column``. Relative paths in a manifest are taken relative to it.
    Raises ValueError naming the input when it matches nothing.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    extensions = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    found: set[str] = set()
    for item in inputs:
        text = os.fspath(item)
        path = Path(text).expanduser()
        if path.is_dir():
            hits = [p for p in path.rglob("*") if p.suffix.lower() in extensions and p.is_file()]
            if not hits:
                raise ValueError(f"input folder {text} holds no video file "
                                 f"({', '.join(extensions)})")
            found.update(str(p.resolve()) for p in hits)
        elif path.is_file() and path.suffix.lower() in MANIFEST_EXTENSIONS:
            found.update(read_manifest(path, path_column))
        elif path.is_file():
            found.add(str(path.resolve()))
        elif any(c in text for c in "*?["):
            hits = [Path(p) for p in glob.glob(os.path.expanduser(text), recursive=True)]
            hits = [p for p in hits if p.is_file()]
            if not hits:
                raise ValueError(f"input pattern {text} matches no file")
            found.update(str(p.resolve()) for p in hits)
        else:
            raise ValueError(f"input not found: {text}")
    return sorted(found)


def read_manifest(path: Path, path_column: str = "path") -> list[str]:
    """The video paths listed in a manifest file (see :func:`list_inputs`)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if path_column not in table.column_names:
            raise ValueError(f"manifest {path} has no {path_column!r} column "
                             f"(columns: {', '.join(table.column_names)})")
        entries = [str(v) for v in table.column(path_column).to_pylist() if v]
    elif suffix in (".csv", ".tsv"):
        with open(path, newline="") as f:
            rows = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
            if path_column not in (rows.fieldnames or []):
                raise ValueError(f"manifest {path} has no {path_column!r} column "
                                 f"(header: {', '.join(rows.fieldnames or [])})")
            entries = [row[path_column].strip() for row in rows if row[path_column].strip()]
    else:
        lines = (line.strip() for line in path.read_text().splitlines())
        entries = [line for line in lines if line and not line.startswith("#")]
    if not entries:
        raise ValueError(f"manifest {path} lists no video")
    base = path.resolve().parent
    return [str((base / Path(e).expanduser()).resolve()) for e in entries]


def content_hash(path: str) -> str:
    """BLAKE2b-128 of the file's bytes (hex)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def probe(path: str, previous: dict | None = None) -> dict:
    """Facts about one input file; never raises for a bad file.

    Returns ``{path, size, mtime_ns, content_hash, num_frames, width, height, fps,
    keyframe_pts, keyframe_index, error}``. The frame count is the number of video packets
    (demuxed, not decoded); ``keyframe_index[i]`` is the presentation index of the key frame
    with timestamp ``keyframe_pts[i]`` (where a decoder may start). ``error`` is "" for a
    usable video, else a one-line reason (unreadable, not a video, no frames). ``previous``:
    an earlier probe of the same path, reused when size and mtime are unchanged.
    """
    row = {"path": path, "size": -1, "mtime_ns": -1, "content_hash": "", "num_frames": 0,
           "width": 0, "height": 0, "fps": 0.0, "keyframe_pts": [], "keyframe_index": [],
           "error": ""}
    try:
        stat = os.stat(path)
        row.update(size=stat.st_size, mtime_ns=stat.st_mtime_ns)
        if (previous and previous["size"] == stat.st_size
                and previous["mtime_ns"] == stat.st_mtime_ns):
            return {**row, **{k: previous[k] for k in row if k in previous}}
        row["content_hash"] = content_hash(path)
        row.update(_probe_stream(path))
    except (OSError, ValueError) as err:
        row["error"] = " ".join(str(err).split()) or type(err).__name__
    return row


def _probe_stream(path: str) -> dict:
    """Packet count, size, rate and key frames of the first video stream (ValueError if none)."""
    import av

    try:
        container = av.open(path)
    except (av.error.FFmpegError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read video {path}: not a video file or truncated ({err})") from None
    with container:
        if not container.streams.video:
            raise ValueError(f"no video stream in {path}")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        pts, keys = [], []
        try:
            for packet in container.demux(stream):
                if not packet.size:
                    continue
                pts.append(packet.pts)
                if packet.is_keyframe and packet.pts is not None:
                    keys.append(packet.pts)
        except av.error.FFmpegError as err:
            raise ValueError(f"cannot demux video {path} (truncated or corrupt?): {err}") from None
        width, height = stream.codec_context.width, stream.codec_context.height
    if not pts:
        raise ValueError(f"video {path} has zero frames")
    keyframe_pts, keyframe_index = [], []
    if all(p is not None for p in pts):
        rank = {p: i for i, p in enumerate(sorted(pts))}
        if len(rank) == len(pts):  # unique timestamps: key frames can be placed exactly
            keyframe_pts = sorted(set(keys))
            keyframe_index = [rank[p] for p in keyframe_pts]
    return {"num_frames": len(pts), "width": int(width), "height": int(height),
            "fps": float(rate) if rate else 0.0, "keyframe_pts": keyframe_pts,
            "keyframe_index": keyframe_index}
