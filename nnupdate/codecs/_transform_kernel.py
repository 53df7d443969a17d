"""Inverse kernel transform (numba): exact integer sums, then one binary64 multiply per tap.

Input ``index`` is laid out ``(rows, K, C)`` (coefficient-major), output ``(rows, C, K)``
(the tensor's own order). ``z`` is summed in int64 and is below 2^53 (the caller's
bounds), so converting it to binary64 is exact and the result does not depend on the
order of the sum. ``out`` is float32 (each product rounded once more, to binary32, as
the spec's ``RN_T(RN64(...))``) or float64.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def inverse_into(index: np.ndarray, taps: int, channels: int, basis: np.ndarray, scale: float, out: np.ndarray) -> None:  # pragma: no cover - compiled
    rows = out.shape[0] // (taps * channels)
    z = np.zeros(taps, dtype=np.int64)
    for r in range(rows):
        for c in range(channels):
            base = r * taps * channels + c
            for j in range(taps):
                z[j] = 0
            for k in range(taps):
                q = index[base + k * channels]
                if q != 0:
                    for j in range(taps):
                        z[j] += basis[k, j] * q
            o = (r * channels + c) * taps
            for j in range(taps):
                out[o + j] = np.float64(z[j]) * scale
