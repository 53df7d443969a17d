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


@njit(cache=True, nogil=True)
def nearest_error(values: np.ndarray, step: float, err: float = 0.0, norm: float = 0.0) -> tuple[float, float]:  # pragma: no cover
    """(sum of squared errors of nearest rounding to multiples of ``step``, sum of squares)
    over binary64 ``values``, added in order to ``err`` and ``norm`` (so a list of arrays
    sums exactly as their concatenation would), in one pass: rate control evaluates this
    per trial step, and numpy's four passes and three temporaries made it the slowest part
    of encoding a large update with the default codec."""
    for i in range(values.shape[0]):
        v = values[i]
        r = v - np.rint(v / step) * step
        err += r * r
        norm += v * v
    return err, norm
