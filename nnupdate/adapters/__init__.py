"""Framework files <-> ``{name: ndarray}``. Each adapter converts and knows no codec.

``read_tensors(path)`` and ``write_tensors(path, tensors, like=...)`` dispatch on the file
suffix. Heavy frameworks (torch, onnx) are imported only when their format is used.

Modules: ``npz``, ``safetensors`` (metadata kept), ``torch`` (state dicts, live modules,
``weights_only`` loading), ``onnx`` (initializers, external data, Identity aliases, an
``export`` that records a name map) and ``namemap`` (placing an update's tensors in a base
that renames or transposes them; spec/ADAPTERS.md).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from . import npz

Tensors = dict[str, np.ndarray]

_SUFFIXES = {
    ".npz": "npz",
    ".pt": "torch",
    ".pth": "torch",
    ".bin": "torch",
    ".safetensors": "safetensors",
    ".onnx": "onnx",
}


def format_of(path: str | os.PathLike[str]) -> str:
    suffix = Path(path).suffix.lower()
    try:
        return _SUFFIXES[suffix]
    except KeyError:
        raise InputError(f"{path}: unknown checkpoint format {suffix!r}; use one of {', '.join(sorted(_SUFFIXES))}") from None


def _module(kind: str) -> Any:
    """The adapter module of ``kind``, imported on first use (torch and onnx are heavy).

    Each adapter refuses its own missing library with the extra to install, so direct
    calls (``adapters.torch.from_state_dict``) get the same error as file I/O here.
    """
    if kind == "npz":
        return npz
    if kind in ("torch", "safetensors", "onnx"):
        return importlib.import_module(f"{__name__}.{kind}")
    raise InputError(f"unknown format {kind}")  # pragma: no cover


def read_tensors(path: str | os.PathLike[str]) -> Tensors:
    """Every tensor of a checkpoint file as numpy arrays (never unpickles)."""
    if not Path(path).is_file():
        raise InputError(f"{path}: no such file")
    return _module(format_of(path)).read(path)  # type: ignore[no-any-return]


def write_tensors(path: str | os.PathLike[str], tensors: Tensors, *, like: str | os.PathLike[str] | None = None) -> None:
    """Write ``tensors`` atomically in the format of ``path``'s suffix.

    ``like`` names a file of the same format to copy structure and metadata from (an ONNX
    graph, safetensors metadata); required for ONNX.
    """
    _module(format_of(path)).write(path, tensors, like=like)
