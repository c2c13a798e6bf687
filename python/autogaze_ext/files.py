"""Finding input files: names given directly, or found (sorted, recursively) in folders."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["files_under"]


def files_under(paths: Iterable[str | Path], extensions: Sequence[str], what: str,
                noun: str = "file") -> list[Path]:
    """Files named in ``paths`` plus, for each folder, every file below it whose suffix
    (lower-cased) is in ``extensions``, folder by folder in sorted order.

    ``what`` names the argument and ``noun`` the kind of file in errors: a path that is neither
    a file nor a folder raises ``FileNotFoundError``; paths given but no file found raises
    ``ValueError``.
    """
    paths = list(paths)
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in extensions)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{what}: {p} is neither a {noun} file nor a folder")
    if paths and not files:
        raise ValueError(f"{what}: no {noun} ({', '.join(extensions)}) in {[str(p) for p in paths]}")
    return files
