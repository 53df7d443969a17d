"""Kernels of the ``dq`` stage: dependent (trellis-coded) quantization, as in VVC / MPEG NNC.

Two scalar quantizers share one step ``d``: Q0 reconstructs even multiples ``2k*d``, Q1
reconstructs ``(2k - sgn(k))*d`` (odd multiples and zero). A 4-state machine driven by the
parity of each level picks the quantizer of the next value (Q0 in states 0 and 1, Q1 in
2 and 3), restarting at state 0 on every row. The union of both quantizers is every
multiple of ``d``, but each level only has to distinguish every other one, so at equal
distortion the levels are about half as large: the trellis search in the encoder finds
the level sequence with the lowest ``distortion + lam * rate``.

The decoder (:func:`reconstruct`) is integer-only: state machine and reconstruction index
in int64; the caller multiplies the index by ``d`` once in binary64.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: next state = TRANSITION[state, level & 1]
TRANSITION = np.array([[0, 2], [2, 0], [1, 3], [3, 1]], dtype=np.int64)
NUM_RATE_CLASSES = 3
MAX_RATE_LEVEL = 24
#: scale classes of a position (row activity 3 x column activity 4, as the ctx coder's
#: significance contexts see them), taken from the previous pass's levels
NUM_SCALE_CLASSES = 12


@njit(cache=True, nogil=True)
def scale_classes(levels: np.ndarray, rows: int, rowlen: int) -> np.ndarray:  # pragma: no cover - compiled
    """Per position, ``4 * row activity class + column activity class`` of the ctx coder
    (spec/CONTEXT.md 2.3) if ``levels`` were coded: what the entropy coder will see there."""
    out = np.zeros(rows * rowlen, dtype=np.int64)
    col = np.zeros(rowlen, dtype=np.int64)
    act = 0
    for r in range(rows):
        base = r * rowlen
        coded = False
        for i in range(rowlen):
            if levels[base + i] != 0:
                coded = True
                break
        for i in range(rowlen):
            ra = 0 if act < 16 else (1 if act < 128 else 2)
            cv = col[i]
            ca = 0 if cv < 24 else (1 if cv < 96 else (2 if cv < 320 else 3))
            out[base + i] = ra * 4 + ca
            if coded:
                m = levels[base + i]
                m = m if m >= 0 else -m
                v = m if m < 15 else 15
                col[i] += (256 * v - col[i]) >> 2
                act += (256 * v - act) >> 4
    return out


@njit(cache=True, nogil=True)
def rate_counts(levels: np.ndarray, rows: int, rowlen: int) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Counts of (quantizer, scale class, previous magnitude class, magnitude) over
    ``levels`` in one pass (C order of those four axes), and the scale classes."""
    scale = scale_classes(levels, rows, rowlen)
    counts = np.zeros(2 * NUM_SCALE_CLASSES * NUM_RATE_CLASSES * MAX_RATE_LEVEL, dtype=np.int64)
    for r in range(rows):
        s = 0
        prev = 0
        for i in range(rowlen):
            k = levels[r * rowlen + i]
            m = k if k >= 0 else -k
            pc = prev if prev < NUM_RATE_CLASSES - 1 else NUM_RATE_CLASSES - 1
            mm = m if m < MAX_RATE_LEVEL - 1 else MAX_RATE_LEVEL - 1
            counts[(((s >> 1) * NUM_SCALE_CLASSES + scale[r * rowlen + i]) * NUM_RATE_CLASSES + pc) * MAX_RATE_LEVEL + mm] += 1
            s = TRANSITION[s, k & 1]
            prev = m
    return counts, scale


@njit(cache=True, nogil=True)
def reconstruct(levels: np.ndarray, rows: int, rowlen: int, limit: int) -> tuple[np.ndarray, bool]:  # pragma: no cover - compiled
    """Reconstruction indices (multiples of ``d``) of ``levels`` (any integer type) in scan
    order, and whether every |level| <= ``limit`` (checked here, not in a pass of its own)."""
    out = np.empty(rows * rowlen, dtype=np.int64)
    for r in range(rows):
        s = 0
        base = r * rowlen
        for i in range(rowlen):
            k = np.int64(levels[base + i])
            if k > limit or k < -limit:
                return out, False
            if s < 2:
                out[base + i] = 2 * k
            elif k > 0:
                out[base + i] = 2 * k - 1
            elif k < 0:
                out[base + i] = 2 * k + 1
            else:
                out[base + i] = 0
            s = TRANSITION[s, k & 1]
    return out, True


@njit(cache=True, inline="always")
def _rate(rate: np.ndarray, cls: int, m: int) -> float:  # pragma: no cover - compiled
    if m < MAX_RATE_LEVEL:
        return rate[cls, m]
    # beyond the table: the last entry plus 2 bits per doubling (exp-Golomb-like)
    extra = 0.0
    v = m
    while v >= MAX_RATE_LEVEL:
        v >>= 1
        extra += 2.0
    return rate[cls, MAX_RATE_LEVEL - 1] + extra


@njit(cache=True, inline="always")
def _cls(prev: int) -> int:  # pragma: no cover - compiled
    return prev if prev < NUM_RATE_CLASSES - 1 else NUM_RATE_CLASSES - 1


@njit(cache=True, nogil=True)
def trellis(scaled: np.ndarray, rows: int, rowlen: int, lam: float, rate: np.ndarray, scale: np.ndarray) -> np.ndarray:  # pragma: no cover
    """Levels minimising sum (x/d - rec)^2 + lam * rate along each row (Viterbi, 4 states).

    ``rate[c, m]`` is the estimated bits of a level of magnitude ``m`` (sign included for
    m > 0) in rate class ``c``: quantizer x scale class of the position (``scale``, from
    the previous pass) x class of the previous magnitude; each survivor carries its own
    previous level, so the estimate follows the path.
    """
    out = np.zeros(rows * rowlen, dtype=np.int64)
    back_state = np.empty((rowlen, 4), dtype=np.int64)
    back_level = np.empty((rowlen, 4), dtype=np.int64)
    cost = np.empty(4, dtype=np.float64)
    new_cost = np.empty(4, dtype=np.float64)
    last = np.zeros(4, dtype=np.int64)
    new_last = np.zeros(4, dtype=np.int64)
    inf = 1e300
    for r in range(rows):
        base = r * rowlen
        cost[:] = inf
        cost[0] = 0.0
        last[:] = 0
        for i in range(rowlen):
            x = scaled[base + i]
            ax = x if x >= 0 else -x
            neg = x < 0
            new_cost[:] = inf
            for s in range(4):
                c0 = cost[s]
                if c0 >= inf:
                    continue
                cls = ((NUM_SCALE_CLASSES if s >= 2 else 0) + scale[base + i]) * NUM_RATE_CLASSES + _cls(last[s])
                q1 = s >= 2
                # candidate magnitudes m; reconstruction magnitude: Q0 -> 2m, Q1 -> 2m - 1 (m > 0)
                mc = int(np.floor((ax + 1.0) / 2.0)) if q1 else int(np.floor(ax / 2.0))
                for t in range(3):
                    if t == 0:
                        m = 0
                    elif t == 1:
                        m = mc
                        if m == 0:
                            continue
                    else:
                        m = mc + 1
                    if m == 0:
                        rec = 0.0
                    elif q1:
                        rec = 2.0 * m - 1.0
                    else:
                        rec = 2.0 * m
                    d = ax - rec
                    j = c0 + d * d + lam * _rate(rate, cls, m)
                    ns = TRANSITION[s, m & 1]
                    if j < new_cost[ns]:
                        new_cost[ns] = j
                        back_state[i, ns] = s
                        back_level[i, ns] = -m if neg else m
                        new_last[ns] = m
            cost[:] = new_cost
            last[:] = new_last
        # backtrack from the best final state
        s = 0
        for t in range(1, 4):
            if cost[t] < cost[s]:
                s = t
        for i in range(rowlen - 1, -1, -1):
            out[base + i] = back_level[i, s]
            s = back_state[i, s]
    return out
