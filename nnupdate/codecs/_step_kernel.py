"""The reconstruction ``q * step`` of the step quantizers, fused into one pass (numba).

numpy needs three passes and two temporaries for it (levels to binary64, multiply, round
to binary32); on a decode that is otherwise one table-driven pass, those passes cost
as much as the entropy decoding. The arithmetic is the same: one binary64 multiply of
the exactly converted level, one round-to-nearest-even to binary32.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def scale_to_float32(levels: np.ndarray, step: float) -> np.ndarray:  # pragma: no cover - compiled
    flat = levels.ravel()
    out = np.empty(flat.shape[0], dtype=np.float32)
    for i in range(flat.shape[0]):
        out[i] = np.float32(np.float64(flat[i]) * step)
    return out
