"""``raw``: little-endian packing of an array, optionally cast to a narrower float type.

With ``dtype`` equal to the input's type it is lossless; ``float16``/``bfloat16`` give
the classic half-precision baselines (round to nearest even).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import dtypes
from ..errors import CodecError, InputError
from .base import ArraySpec, ArrayToBytes, register


@register
@dataclass(frozen=True)
class Raw(ArrayToBytes):
    """Pack values as ``dtype`` (empty string: the array's own type)."""

    codec_id = 0x0001
    name = "raw"
    #: lossless when the storage type is the array's own (always for integers); a float
    #: cast (``dtype="float16"`` on float32) rounds
    lossless = True
    dtype: str = ""

    def __post_init__(self) -> None:
        if self.dtype:
            try:
                dtypes.code_of(self.dtype)
            except InputError:
                raise ValueError(f"raw: unknown storage type {self.dtype!r}") from None

    def _storage(self, spec: ArraySpec) -> str:
        return self.dtype or spec.dtype

    def encode(self, values: np.ndarray, spec: ArraySpec) -> tuple[bytes, Raw]:
        storage = self._storage(spec)
        if storage != spec.dtype and not (dtypes.is_float(storage) and dtypes.is_float(spec.dtype)):
            raise CodecError(f"raw: cannot store {spec.dtype} as {storage}")
        if dtypes.is_float(storage):  # float specs arrive as float64 values
            wide = np.asarray(values, dtype=np.float64)
            packed = dtypes.from_float64(wide, storage)
            if storage != spec.dtype:  # a narrowing cast must not turn finite values into infinities
                flat = wide.reshape(-1)
                overflow = np.isinf(dtypes.to_float64(packed, storage).reshape(-1)) & np.isfinite(flat)
                if overflow.any():
                    peak = float(np.abs(flat[overflow]).max())
                    raise CodecError(f"raw: {int(overflow.sum())} values overflow {storage} (|x| up to {peak:.3g})")
        else:
            packed = np.ascontiguousarray(values, dtype=dtypes.storage_dtype(storage))
        return packed.tobytes(), Raw(storage)

    def decode(self, data: bytes, spec: ArraySpec) -> np.ndarray:
        storage = self._storage(spec)
        dtype = dtypes.storage_dtype(storage)
        if len(data) != spec.size * dtype.itemsize:
            raise CodecError(f"raw: payload has {len(data)} bytes, {spec.size} x {storage} needs {spec.size * dtype.itemsize}")
        values = np.frombuffer(data, dtype=dtype).reshape(spec.shape)
        if storage == spec.dtype:
            return values.copy()
        if dtypes.is_float(storage) and dtypes.is_float(spec.dtype):
            return dtypes.from_float64(dtypes.to_float64(values, storage), spec.dtype)
        raise CodecError(f"raw: cannot widen {storage} to {spec.dtype}")

    def max_encoded_size(self, spec: ArraySpec) -> int:
        return spec.size * dtypes.storage_dtype(self._storage(spec)).itemsize
