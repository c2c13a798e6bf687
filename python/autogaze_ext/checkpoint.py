"""Reading and writing checkpoint folders: safetensors files and hub ids.

The safetensors format is small enough to handle directly (8-byte little-endian header length,
a JSON header ``{name: {dtype, shape, data_offsets}}``, then raw little-endian bytes), which keeps
the package free of extra run-time dependencies.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import torch

_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_NAMES = {v: k for k, v in _DTYPES.items()}


def load_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read every tensor of a ``.safetensors`` file into CPU tensors (dtypes as stored)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"safetensors file not found: {path}")
    data = path.read_bytes()
    if len(data) < 8:
        raise ValueError(f"{path} is not a safetensors file (too short)")
    (header_len,) = struct.unpack("<Q", data[:8])
    if 8 + header_len > len(data):
        raise ValueError(f"{path} is not a safetensors file (bad header length)")
    header = json.loads(data[8 : 8 + header_len])
    body = memoryview(data)[8 + header_len :]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _DTYPES:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
        dtype = _DTYPES[info["dtype"]]
        start, end = info["data_offsets"]
        shape = info["shape"]
        if end == start:
            tensors[name] = torch.empty(shape, dtype=dtype)
            continue
        flat = torch.frombuffer(bytearray(body[start:end]), dtype=dtype)
        tensors[name] = flat.reshape(shape)
    return tensors


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                     metadata: dict[str, str] | None = None) -> None:
    """Write CPU copies of ``tensors`` to ``path`` in the safetensors format."""
    header: dict = {"__metadata__": dict(metadata or {"format": "pt"})}
    blobs, offset = [], 0
    for name, tensor in tensors.items():
        if tensor.dtype not in _NAMES:
            raise ValueError(f"tensor {name!r} has unsupported dtype {tensor.dtype}")
        raw = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": _NAMES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # align the body to 8 bytes as the reference writer does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for raw in blobs:
            f.write(raw)


def load_matching(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load ``state`` into ``module`` after checking that keys and shapes match exactly.

    Tensors are cast to the dtype of the parameter they replace; ``what`` names the config in
    errors ("the config", "the SigLIP config").
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"checkpoint does not match {what}: missing {missing[:8]}"
                         f"{' …' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}"
                         f"{' …' if len(unexpected) > 8 else ''}")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(own[name].shape):
            raise ValueError(f"checkpoint tensor {name} has shape {tuple(tensor.shape)}, {what} "
                             f"expects {tuple(own[name].shape)}")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def resolve_checkpoint_dir(path_or_id: str | os.PathLike, required=("config.json",)) -> Path:
    """Return a local folder for ``path_or_id``: an existing folder, or a Hugging Face hub id.

    A hub id is fetched with ``huggingface_hub.snapshot_download`` when that package is installed
    and the network is reachable; otherwise the error says how to pass a local folder.
    """
    path = Path(path_or_id)
    if path.is_dir():
        missing = [name for name in required if not (path / name).is_file()]
        if missing:
            raise FileNotFoundError(f"checkpoint folder {path} lacks {', '.join(missing)}")
        return path
    text = str(path_or_id)
    looks_like_hub_id = text.count("/") == 1 and not text.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise FileNotFoundError(f"checkpoint folder not found: {text}")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise FileNotFoundError(
            f"{text!r} is not a local folder, and huggingface_hub is not installed to fetch it "
            f"from the hub. Install it (pip install huggingface_hub) or download the checkpoint "
            f"(config.json, model.safetensors, preprocessor_config.json) and pass its folder."
        ) from None
    try:
        return Path(snapshot_download(text))
    except Exception as err:  # network errors come in many types
        raise FileNotFoundError(
            f"could not fetch {text!r} from the Hugging Face hub ({type(err).__name__}: {err}). "
            f"Download the checkpoint folder (config.json, model.safetensors, "
            f"preprocessor_config.json) elsewhere and pass its local path."
        ) from err
