"""``.safetensors`` files (no pickle by design); metadata is kept on write when ``like`` is given."""

from __future__ import annotations

import os

import numpy as np

from ..errors import InputError
from ..io import atomic_write


def read(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        with open(path, "rb") as handle:
            return dict(load(handle.read()))
    except (SafetensorError, ValueError, OSError) as exc:
        raise InputError(f"{path}: not a readable .safetensors file ({exc})") from None


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as handle:
        return dict(handle.metadata() or {})


def write(path: str | os.PathLike[str], tensors: dict[str, np.ndarray], *, like: str | os.PathLike[str] | None = None) -> None:
    from safetensors.numpy import save

    metadata = read_metadata(like) if like is not None and str(like).endswith(".safetensors") else None
    arrays = {name: np.array(value, order="C", copy=True) for name, value in tensors.items()}
    atomic_write(path, save(arrays, metadata=metadata))
