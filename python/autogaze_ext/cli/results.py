"""Result files of ``autogaze gaze``: ids per frame, the single-file writers (JSON /
safetensors) and all-or-nothing writing of several outputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

RESULT_SUFFIXES = (".json", ".safetensors")


def ids_per_frame(result) -> list[list[int]]:
    """Local ids gazed in each frame, in generation order: ``ids[offsets[t]:offsets[t+1]]``."""
    ids, offsets = result["ids"].tolist(), result["frame_offsets"].tolist()
    return [ids[a:b] for a, b in zip(offsets, offsets[1:])]


def write_result(result, path: Path, run: dict) -> None:
    """Write a gaze result with the command's settings ``run``.

    ``.json``: ``{"run": …, "ids_per_frame": [[ids of frame 0], …], <every result field as
    lists, masks as 0/1 ints>}``. ``.safetensors``: the tensor fields (mask of scale i as
    ``gazing_mask.<i>``); ``run`` and the other fields as JSON strings in the metadata.
    """
    import torch

    if path.suffix.lower() == ".json":
        doc = {"run": run, "ids_per_frame": ids_per_frame(result)}
        for key, value in result.items():
            if key == "gazing_mask":
                value = [m.to(torch.uint8) for m in value]
            doc[key] = _jsonable(value)
        path.write_text(json.dumps(doc) + "\n")
        return
    from ..checkpoint import save_safetensors

    tensors, metadata = {}, {"format": "pt", "run": json.dumps(run)}
    for key, value in result.items():
        if isinstance(value, torch.Tensor):
            tensors[key] = value
        elif isinstance(value, list) and value and all(isinstance(v, torch.Tensor) for v in value):
            tensors.update({f"{key}.{i}": v for i, v in enumerate(value)})
        else:
            metadata[key] = json.dumps(_jsonable(value), default=str)
    save_safetensors(tensors, path, metadata=metadata)


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _write_all_or_nothing(writers) -> list[Path]:
    """Run ``write(tmp_path)`` for each ``(path, write)`` into a temporary file next to ``path``
    (same suffix), then rename them all into place; on any failure no output is left behind."""
    import tempfile

    done = []
    try:
        for path, write in writers:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.tmp-", suffix=path.suffix,
                                       dir=path.resolve().parent)
            os.close(fd)
            done.append((path, Path(tmp)))
            write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        for path, tmp in done:
            tmp.chmod(0o666 & ~umask)  # mkstemp makes 0600 files
            os.replace(tmp, path)
    except BaseException:
        for _, tmp in done:
            tmp.unlink(missing_ok=True)
        raise
    return [path for path, _ in done]
