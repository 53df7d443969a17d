"""Kernel of the ``lpc`` stage: backward-adaptive linear prediction across the rows.

The rows of a weight update lie near a low-dimensional subspace (a layer's gradient is a
sum of outer products with its inputs, whose channels are correlated), so within a row
each level is partly predictable from the row's earlier levels, with coefficients learned
from the rows before. The predictor is the LDL^T factor of the rows' running second
moment (a prior ``delta * I`` plus the sum of ``x x^T`` over the block's rows so far),
kept by a rank-one update per row and truncated to its first ``order`` columns: level
``i`` is predicted from the innovations of the first ``min(i, order)`` levels of its row,
which is the least-squares prediction from those levels. Causal prediction reaches the
coding gain of the rows' eigenbasis (Karhunen-Loeve) without sending a basis.

Both directions run the same arithmetic (spec/CONTEXT.md §7): IEEE 754 binary64, each
operation rounded to nearest even, in the order written, no fused multiply-add (numba
compiles without fast-math, so LLVM neither contracts nor reorders); elementwise loops
may be vectorised since that changes no result. No library function is called.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: rows of a block coded before the predictor starts (they set its prior)
START_ROWS = 4
#: the prior's weight: ``delta = 1 + PRIOR * (energy of the first START_ROWS rows) / rowlen``
PRIOR = 16.0
#: a prediction is used only if its magnitude is at most this (else 0)
MAX_PREDICTION = float(1 << 31)


@njit(cache=True, nogil=True)
def run(values: np.ndarray, rows: int, rowlen: int, order: int, starts: np.ndarray, forward: int, out: np.ndarray) -> int:  # pragma: no cover - compiled
    """Residuals of ``values`` (``forward``) or levels from residuals, into ``out`` (int64,
    C order, ``rows * rowlen``); ``starts``: first row of each block, ascending, from 0.
    Returns 0, or 1 when a level or residual leaves the int32 range.

    Row ``t``'s rank-one update runs in the same pass as row ``t + 1``'s prediction: column
    ``j`` of the factor is final once the update has passed it, and the prediction reads it
    right then, so each factor entry is loaded and stored once per row instead of three
    times (the loop is bound by that traffic). Every value sees the operations of §7 in
    their order; only independent operations interleave.
    """
    if rowlen == 0:
        return 0  # empty rows: nothing to predict (and no prior to divide by their length)
    width = min(order, rowlen)
    nblocks = starts.shape[0]
    predicted = False  # a block long enough to predict: only then allocate the factor
    for bi in range(nblocks):
        if (starts[bi + 1] if bi + 1 < nblocks else rows) - starts[bi] > START_ROWS:
            predicted = True
    size = rowlen if predicted else 1
    fac = np.zeros((max(width, 1), size), dtype=np.float64)  # fac[j, i]: L[i][j], j < min(i, width)
    dia = np.zeros(max(width, 1), dtype=np.float64)
    acc = np.zeros(size, dtype=np.float64)
    w = np.zeros(size, dtype=np.float64)
    levels = values if forward else out
    for bi in range(nblocks):
        first = starts[bi]
        end = starts[bi + 1] if bi + 1 < nblocks else rows
        for t in range(first, min(end, first + START_ROWS)):
            for i in range(rowlen):
                out[t * rowlen + i] = values[t * rowlen + i]
        if end - first <= START_ROWS:
            continue
        _start(levels, first, rowlen, width, fac, dia, w)
        for t in range(first + START_ROWS, end):
            if not _predict_row(values, out, levels, t * rowlen, (t - 1) * rowlen, rowlen, width, forward, fac, dia, acc, w):
                return 1
    return 0


@njit(cache=True, nogil=True, inline="always")
def _predict_row(
    values: np.ndarray, out: np.ndarray, levels: np.ndarray, base: int, prev: int, rowlen: int, width: int, forward: int,
    fac: np.ndarray, dia: np.ndarray, acc: np.ndarray, w: np.ndarray,
) -> bool:  # pragma: no cover - compiled
    """Update the factor by the row at ``prev`` and predict the row at ``base``, fused;
    False when a level or residual leaves the int32 range."""
    for i in range(rowlen):
        w[i] = float(levels[prev + i])
        acc[i] = 0.0
    a = 1.0
    for j in range(rowlen):
        pw = 0.0
        b = 0.0
        if j < width:  # column j of the update by the previous row (§7 ``update``)
            pw = w[j]
            d = dia[j] + a * pw * pw
            b = pw * a / d
            a = a * dia[j] / d
            dia[j] = d
        p = acc[j]
        pred = 0
        if abs(p) <= MAX_PREDICTION:
            pred = int(np.rint(p))
        if forward:
            x = values[base + j]
            r = x - pred
            if r > 2147483647 or r < -2147483648:
                return False
            out[base + j] = r
        else:
            x = values[base + j] + pred
            if x > 2147483647 or x < -2147483648:
                return False
            out[base + j] = x
        if j < width:
            _column(w[j + 1 :], fac[j, j + 1 :], acc[j + 1 :], pw, b, float(x) - p)
    return True


@njit(cache=True, nogil=True, inline="always")
def _column(w: np.ndarray, col: np.ndarray, acc: np.ndarray, p: float, b: float, e: float) -> None:  # pragma: no cover - compiled
    """Column ``j`` of the update (``w -= p * col``, then ``col += b * w``), then its term
    of the prediction (``acc += col * e``), element by element: a loop over slices from 0,
    which vectorises."""
    for i in range(w.size):
        wi = w[i] - p * col[i]
        w[i] = wi
        f = col[i] + b * wi
        col[i] = f
        acc[i] = acc[i] + f * e


@njit(cache=True, nogil=True, inline="always")
def _start(levels: np.ndarray, first: int, rowlen: int, width: int, fac: np.ndarray, dia: np.ndarray, w: np.ndarray) -> None:  # pragma: no cover - compiled
    """The block's prior from its first START_ROWS rows, then those rows added to it."""
    energy = 0.0
    for t in range(START_ROWS):
        base = (first + t) * rowlen
        for i in range(rowlen):
            v = float(levels[base + i])
            energy = energy + v * v
    delta = 1.0 + PRIOR * energy / float(rowlen)
    for j in range(width):
        dia[j] = delta
        for i in range(rowlen):
            fac[j, i] = 0.0
    for t in range(START_ROWS - 1):  # the last of them updates in the first prediction's pass
        _update(levels, (first + t) * rowlen, rowlen, width, fac, dia, w)


@njit(cache=True, nogil=True, inline="always")
def _update(levels: np.ndarray, base: int, rowlen: int, width: int, fac: np.ndarray, dia: np.ndarray, w: np.ndarray) -> None:  # pragma: no cover - compiled
    """Rank-one update of the factor by the row at ``base`` (Gill, Golub, Murray and
    Saunders 1974, method C1), on its first ``width`` columns."""
    for i in range(rowlen):
        w[i] = float(levels[base + i])
    a = 1.0
    for j in range(width):
        p = w[j]
        d = dia[j] + a * p * p
        b = p * a / d
        a = a * dia[j] / d
        dia[j] = d
        _rotate(w[j + 1 :], fac[j, j + 1 :], p, b)


@njit(cache=True, nogil=True, inline="always")
def _rotate(w: np.ndarray, col: np.ndarray, p: float, b: float) -> None:  # pragma: no cover - compiled
    """One column of the rank-one update: ``w -= p * col`` then ``col += b * w``."""
    for i in range(w.size):
        wi = w[i] - p * col[i]
        w[i] = wi
        col[i] = col[i] + b * wi


@njit(cache=True, nogil=True)
def histogram_bits(values: np.ndarray, clip: int) -> float:  # pragma: no cover - compiled
    """Bits of ``values`` under their own order-0 histogram, values beyond +-``clip`` in
    one bin each side. Encoder only (it guides a choice, so libm's log2 is fine here)."""
    counts = np.zeros(2 * clip + 1, dtype=np.int64)
    for v in values:
        counts[min(max(v, -clip), clip) + clip] += 1
    total = 0.0
    bits = 0.0
    for c in counts:
        if c:
            total += float(c)
            bits -= c * np.log2(c)
    return bits + total * np.log2(total) if total else 0.0
