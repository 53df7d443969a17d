"""SHA-256 fingerprints of tensor collections, so ``apply`` can refuse the wrong base.

Canonical serialisation (spec/FORMAT.md, "Base fingerprint"): tensors sorted by the
UTF-8 bytes of their names; for each: u16 name length, name, u8 element-type code,
u8 rank, u64 dims, u64 byte count, then the elements little-endian in C order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

import numpy as np

from . import dtypes


def tensor_dtype_name(array: np.ndarray) -> str:
    """Element-type name of an in-memory tensor (ml_dtypes' bfloat16 recognised by name)."""
    if array.dtype.name == "bfloat16":
        return dtypes.BFLOAT16
    return dtypes.name_of_array(array)


def storage_view(array: np.ndarray) -> np.ndarray:
    """The tensor as contiguous little-endian storage (bfloat16 as uint16 bits), same shape.

    (``np.ascontiguousarray`` alone would turn a 0-d scalar into shape (1,).)
    """
    name = tensor_dtype_name(array)
    if name == dtypes.BFLOAT16:
        return np.ascontiguousarray(array).view(np.uint16).reshape(array.shape)
    return np.ascontiguousarray(array, dtype=dtypes.storage_dtype(name)).reshape(array.shape)


def _is_torch_tensor(value: object) -> bool:
    """True for a torch.Tensor (or Parameter), told without importing torch."""
    return type(value).__module__.partition(".")[0] == "torch" and hasattr(value, "detach")


def as_numpy_tensors(tensors: Mapping[str, object]) -> Mapping[str, np.ndarray]:
    """``tensors`` with torch tensors (a ``state_dict()`` passed straight in) turned into
    numpy arrays by the torch adapter; a mapping without any is returned as it is.

    numpy's own conversion fails on bfloat16 and on parameters that require grad, and
    would share memory with a model that goes on training after ``diff`` returned.
    """
    if not any(_is_torch_tensor(v) for v in tensors.values()):
        return tensors  # type: ignore[return-value]
    from .adapters.torch import tensor_to_numpy

    return {name: tensor_to_numpy(v, True, name) if _is_torch_tensor(v) else v for name, v in tensors.items()}  # type: ignore[misc]


def fingerprint(tensors: Mapping[str, np.ndarray], names: Iterable[str] | None = None) -> bytes:
    """SHA-256 over the canonical serialisation of ``tensors`` (restricted to ``names``)."""
    tensors = as_numpy_tensors(tensors)
    chosen = sorted(names if names is not None else tensors.keys(), key=lambda n: n.encode("utf-8"))
    digest = hashlib.sha256()
    for name in chosen:
        array = tensors[name]
        storage = storage_view(array)
        encoded = name.encode("utf-8")
        digest.update(len(encoded).to_bytes(2, "little"))
        digest.update(encoded)
        digest.update(bytes([dtypes.code_of(tensor_dtype_name(array)), array.ndim]))
        for d in array.shape:
            digest.update(int(d).to_bytes(8, "little"))
        digest.update(storage.nbytes.to_bytes(8, "little"))
        digest.update(storage.reshape(-1).view(np.uint8).data)
    return digest.digest()
