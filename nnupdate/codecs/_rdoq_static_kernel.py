"""The two passes of the static-model RDOQ (:func:`nnupdate.codecs.rdoq.static_rdoq_levels`), compiled.

In numpy the decision needs about ten whole-tensor temporaries (magnitude, nearest
level, capped level, two threshold gathers, two masks...) and costs as much as the
entropy coder it feeds; here it is one pass for the histogram and one for the levels.
Encoder only: what it computes never reaches the decoder except as the chosen levels.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def nearest_histogram(scaled: np.ndarray, cap: int) -> np.ndarray:  # pragma: no cover - compiled
    """Counts of ``min(round(|x|), cap)`` over ``scaled``."""
    counts = np.zeros(cap + 1, dtype=np.int64)
    for i in range(scaled.shape[0]):
        m = np.rint(abs(scaled[i]))
        counts[int(m) if m < cap else cap] += 1
    return counts


@njit(cache=True, nogil=True)
def choose_levels(scaled: np.ndarray, threshold: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """Each value's level: the nearest, moved one towards zero when its magnitude lies
    below the threshold between that level and the one under it, or one away when at or
    above the next threshold. ``threshold[q]`` separates q and q + 1; beyond the table
    the last entry's offset from ``q + 1/2`` holds."""
    cap = threshold.shape[0] - 1
    out = np.empty(scaled.shape[0], dtype=np.int64)
    for i in range(scaled.shape[0]):
        x = scaled[i]
        a = abs(x)
        m = int(np.rint(a))
        c = m if m < cap else cap
        extra = m - c
        if m > 0 and a < threshold[c - 1] + extra:
            m -= 1
        elif a >= threshold[c] + extra:
            m += 1
        out[i] = -m if x < 0 else m
    return out
