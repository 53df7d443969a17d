"""Inverse kernel transform (numba): exact integer sums, then one binary64 multiply per tap.

Input ``index`` is laid out ``(rows, K, C)`` (coefficient-major), output ``(rows, C, K)``
(the tensor's own order). ``z`` is summed in int64 and is below 2^52 (checked by the
caller's bounds), so converting it to binary64 is exact and the result does not depend on
the order of the sum.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _sums(index: np.ndarray, rows: int, taps: int, channels: int, basis: np.ndarray, r: int, c: int, z: np.ndarray) -> None:  # pragma: no cover - compiled
    base = r * taps * channels + c
    for j in range(taps):
        z[j] = 0
    for k in range(taps):
        q = index[base + k * channels]
        if q != 0:
            for j in range(taps):
                z[j] += basis[k, j] * q


@njit(cache=True, nogil=True)
def inverse_float32(index: np.ndarray, rows: int, taps: int, channels: int, basis: np.ndarray, scale: float) -> np.ndarray:  # pragma: no cover - compiled
    out = np.empty(rows * channels * taps, dtype=np.float32)
    z = np.zeros(taps, dtype=np.int64)
    for r in range(rows):
        for c in range(channels):
            _sums(index, rows, taps, channels, basis, r, c, z)
            o = (r * channels + c) * taps
            for j in range(taps):
                out[o + j] = np.float32(np.float64(z[j]) * scale)
    return out


@njit(cache=True, nogil=True)
def inverse_float64(index: np.ndarray, rows: int, taps: int, channels: int, basis: np.ndarray, scale: float) -> np.ndarray:  # pragma: no cover - compiled
    out = np.empty(rows * channels * taps, dtype=np.float64)
    z = np.zeros(taps, dtype=np.int64)
    for r in range(rows):
        for c in range(channels):
            _sums(index, rows, taps, channels, basis, r, c, z)
            o = (r * channels + c) * taps
            for j in range(taps):
                out[o + j] = np.float64(z[j]) * scale
    return out
