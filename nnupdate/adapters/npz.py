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
    buffer = io.BytesIO()
    np.savez(buffer, **{name: np.asarray(value) for name, value in tensors.items()})  # type: ignore[arg-type]
    atomic_write(path, buffer.getvalue())
