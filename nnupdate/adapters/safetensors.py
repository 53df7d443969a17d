"""``.safetensors`` files (no pickle by design); metadata is kept on write when ``like`` is given.

``safetensors.numpy`` has no bfloat16 (numpy lacks the type), yet bf16 checkpoints are
the common case for large models. BF16 tensors are therefore passed through the library
as U16 bit patterns: the header's ``dtype`` tag is rewritten before loading and after
saving, and the arrays are viewed as ``ml_dtypes.bfloat16``. Everything else (offsets,
bounds, overlap checks) stays the library's job.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from .. import dtypes
from ..errors import InputError
from ..io import atomic_path, atomic_write

#: the library's own header cap; checked before parsing the JSON ourselves
MAX_HEADER_BYTES = 100_000_000


def _header(prefix: bytes, file_size: int, path: str | os.PathLike[str]) -> tuple[dict[str, Any], int]:
    """The parsed JSON header of a safetensors file and its length, from the file's first
    bytes; refused (InputError) before anything large is read or allocated."""
    if file_size < 8 or len(prefix) < 8:
        raise InputError(f"{path}: not a readable .safetensors file (shorter than its header length)")
    size = int.from_bytes(prefix[:8], "little")
    if size > min(MAX_HEADER_BYTES, file_size - 8) or len(prefix) < 8 + size:
        raise InputError(f"{path}: not a readable .safetensors file (header length {size} out of bounds)")
    try:
        header = json.loads(prefix[8 : 8 + size])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable .safetensors file (header is not JSON: {exc})") from None
    if not isinstance(header, dict):
        raise InputError(f"{path}: not a readable .safetensors file (header is not an object)")
    return header, size


def _retag(data: bytes, header: dict[str, Any], size: int, source: str, target: str) -> tuple[bytes, list[str]]:
    """``data`` with every ``source`` dtype tag replaced by ``target``; the names retagged."""
    names = _tagged(header, source)
    if not names:
        return data, []
    for name in names:
        header[name]["dtype"] = target
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data section stays 8-byte aligned
    return len(encoded).to_bytes(8, "little") + encoded + data[8 + size :], names


def _tagged(header: dict[str, Any], dtype: str) -> list[str]:
    return [k for k, v in header.items() if k != "__metadata__" and isinstance(v, dict) and v.get("dtype") == dtype]


#: safetensors element types the container has a code for (spec/FORMAT.md, element types)
SUPPORTED_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8", "BOOL"})


def _check_dtypes(header: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Refuse float8, complex and other types up front: the library itself fails on some of
    them with a bare AttributeError (numpy has no float8) after reading the file."""
    for name, entry in header.items():
        if name != "__metadata__" and isinstance(entry, dict) and entry.get("dtype") not in SUPPORTED_DTYPES:
            raise InputError(f"{path}: tensor {name!r} has element type {entry.get('dtype')!r}, which nnupdate does not support")


def _file_order(header: dict[str, Any], loaded: Mapping[str, np.ndarray]) -> list[str]:
    """The tensor names in the order of their data in the file (its writer's)."""
    offset = {k: v.get("data_offsets", [0])[0] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}
    return sorted(loaded, key=lambda name: (offset.get(name, 0), name))


def _require() -> None:
    """Refuse a missing library with the extra to install, as the torch and onnx adapters do."""
    try:
        import safetensors  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the install
        raise InputError("safetensors is not installed: pip install 'nnupdate[safetensors]'") from None


def read(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every tensor, in file order (the library's dict comes from a hash map whose order
    changes from run to run; the update's record order and rate-control sample must not).

    Without bfloat16 tensors the library maps the file and copies each tensor out (one copy
    of the checkpoint in memory); with them the file is read whole to retag its header,
    since numpy has no bfloat16 for the library to produce."""
    _require()
    from safetensors import SafetensorError
    from safetensors.numpy import load, load_file

    try:
        file_size = os.path.getsize(path)
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) == 8:
                prefix += handle.read(min(int.from_bytes(prefix, "little"), MAX_HEADER_BYTES))
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None
    header, size = _header(prefix, file_size, path)
    _check_dtypes(header, path)
    bf16 = _tagged(header, "BF16")
    try:
        if bf16:
            with open(path, "rb") as handle:
                data, _ = _retag(handle.read(), header, size, "BF16", "U16")
            loaded = load(data)
        else:
            loaded = load_file(str(path))
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None
    except (SafetensorError, ValueError, KeyError) as exc:
        raise InputError(f"{path}: not a readable .safetensors file ({exc})") from None
    tensors = {name: loaded[name] for name in _file_order(header, loaded)}
    if bf16:
        for name in bf16:
            tensors[name] = dtypes.typed(tensors[name], dtypes.BFLOAT16)
    return tensors


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    _require()
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, ValueError, OSError) as exc:
        raise InputError(f"{path}: not a readable .safetensors file ({exc})") from None


def write(path: str | os.PathLike[str], tensors: Mapping[str, np.ndarray], *, like: str | os.PathLike[str] | None = None) -> None:
    _require()
    from safetensors.numpy import save, save_file

    metadata = read_metadata(like) if like is not None and str(like).endswith(".safetensors") else None
    arrays = {}
    bf16 = []
    for name, value in tensors.items():
        array = np.asarray(value, order="C")  # a copy only when not C-contiguous; 0-d stays 0-d
        if array.dtype.name == "bfloat16":
            array = array.view(np.uint16)
            bf16.append(name)
        arrays[name] = array
    if bf16:  # the header needs retagging: build it in memory
        atomic_write(path, _retag_names(save(arrays, metadata=metadata), bf16))
        return
    with atomic_path(path) as tmp:  # streamed to disk by the library, no copy of the whole file
        save_file(arrays, str(tmp), metadata=metadata)


def _retag_names(data: bytes, names: list[str]) -> bytes:
    """Tag exactly ``names`` (saved as U16) as BF16; other U16 tensors stay U16."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    for name in names:
        header[name]["dtype"] = "BF16"
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    return len(encoded).to_bytes(8, "little") + encoded + data[8 + size :]
