"""Numeric codes for tensor element types, as stored in the container.

The codes are part of the format (spec/FORMAT.md, "Element types"); never renumber.
bfloat16 has no numpy dtype, so it is carried as ``uint16`` bit patterns in memory and
tagged with its own code on disk.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from .errors import FormatError, InputError

BFLOAT16: Final = "bfloat16"

#: code -> (name, numpy storage dtype, itemsize)
_BY_CODE: Final[dict[int, tuple[str, np.dtype[np.generic]]]] = {
    1: ("float32", np.dtype("<f4")),
    2: ("float16", np.dtype("<f2")),
    3: (BFLOAT16, np.dtype("<u2")),
    4: ("float64", np.dtype("<f8")),
    5: ("int8", np.dtype("i1")),
    6: ("uint8", np.dtype("u1")),
    7: ("int16", np.dtype("<i2")),
    8: ("int32", np.dtype("<i4")),
    9: ("int64", np.dtype("<i8")),
    10: ("bool", np.dtype("?")),
    11: ("uint16", np.dtype("<u2")),
    12: ("uint32", np.dtype("<u4")),
    13: ("uint64", np.dtype("<u8")),
}
_BY_NAME: Final[dict[str, int]] = {name: code for code, (name, _) in _BY_CODE.items()}


def code_of(name: str) -> int:
    """The on-disk code of a dtype name such as ``"float32"``."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise InputError(f"unsupported element type {name!r}") from None


def name_of(code: int) -> str:
    try:
        return _BY_CODE[code][0]
    except KeyError:
        raise FormatError(f"unknown element type code {code}") from None


def storage_dtype(name: str) -> np.dtype[np.generic]:
    """The little-endian numpy dtype that holds elements of ``name`` in memory and on disk."""
    return _BY_CODE[code_of(name)][1]


def name_of_array(array: np.ndarray) -> str:
    """The dtype name of a numpy array (bfloat16 cannot be inferred and must be given explicitly)."""
    kind = array.dtype
    for name, code in _BY_NAME.items():
        if name != BFLOAT16 and _BY_CODE[code][1] == kind.newbyteorder("<"):
            return name
    raise InputError(f"unsupported numpy dtype {kind}")


def is_float(name: str) -> bool:
    return name in ("float32", "float16", BFLOAT16, "float64")


def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """Widen bfloat16 bit patterns (uint16) to float32 exactly."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def float32_to_bfloat16(values: np.ndarray) -> np.ndarray:
    """Round float32 to bfloat16 bit patterns, nearest-even, NaN kept quiet; same shape
    (``np.ascontiguousarray`` alone turns a 0-d array into shape (1,))."""
    shape = np.shape(values)
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).reshape(-1)
    rounding = ((bits >> 16) & 1) + 0x7FFF
    out = ((bits + rounding) >> 16).astype(np.uint16)
    nan = np.isnan(bits.view(np.float32))
    if nan.any():
        out[nan] = ((bits[nan] >> 16) | 0x40).astype(np.uint16)
    return out.reshape(shape)


def typed(storage: np.ndarray, name: str) -> np.ndarray:
    """The in-memory tensor of storage bits: bfloat16 viewed as ``ml_dtypes.bfloat16``.

    Callers pass bfloat16 in typed (PyTorch and safetensors adapters, ml_dtypes users) and
    must get it back typed: uint16 bits would be loaded by value into a bfloat16 model
    (48219 -> 48128.0, silently) and refused as the base of the next update. Without
    ml_dtypes nobody can hold a typed bfloat16 array, so the bits are returned as they are.
    """
    if name != BFLOAT16:
        return storage
    try:
        import ml_dtypes
    except ImportError:  # pragma: no cover - ml_dtypes ships with onnx and jax
        return storage
    return storage.view(ml_dtypes.bfloat16)


def to_float64(array: np.ndarray, name: str) -> np.ndarray:
    """Values of a float tensor as float64 (exact for every supported float type)."""
    if name == BFLOAT16:
        return bfloat16_to_float32(array).astype(np.float64)
    return array.astype(np.float64)


def difference_float64(target: np.ndarray, source: np.ndarray, name: str) -> np.ndarray:
    """``to_float64(target) - to_float64(source)``, without the two binary64 copies: numpy
    converts inside the subtraction, value by value (the same exact conversions, the same
    binary64 subtraction; a large checkpoint diff no longer allocates three times its size)."""
    if name == BFLOAT16:
        return to_float64(target, name) - to_float64(source, name)
    return np.subtract(target, source, dtype=np.float64)


def from_float64(values: np.ndarray, name: str) -> np.ndarray:
    """Round float64 values to tensor type ``name`` (round-to-nearest-even, IEEE).

    Values beyond the type's range become infinities, as IEEE rounding defines; callers
    that must not produce them check (raw's narrowing cast refuses), so numpy's overflow
    warning would only be noise to the user."""
    with np.errstate(over="ignore"):
        if name == BFLOAT16:
            return float32_to_bfloat16(values.astype(np.float32))
        return values.astype(storage_dtype(name))
