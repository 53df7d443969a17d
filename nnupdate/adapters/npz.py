"""NumPy ``.npz`` archives, read with ``allow_pickle=False``."""

from __future__ import annotations

import io
import os
import zipfile

import numpy as np

from ..errors import InputError
from ..io import atomic_write


def read(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npz archive ({exc})") from None


def write(path: str | os.PathLike[str], tensors: dict[str, np.ndarray], *, like: object = None) -> None:
    """Refuses bfloat16: .npy has no such type and numpy would store it as opaque 2-byte
    voids, which nothing (this package included) reads back as numbers."""
    typeless = [name for name, value in tensors.items() if np.asarray(value).dtype.name == "bfloat16"]
    if typeless:
        raise InputError(f"{path}: .npz cannot hold bfloat16 tensors ({', '.join(typeless[:3])}); write .safetensors or .pt")
    buffer = io.BytesIO()
    np.savez(buffer, **{name: np.asarray(value) for name, value in tensors.items()})  # type: ignore[arg-type]
    atomic_write(path, buffer.getvalue())
