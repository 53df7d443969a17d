"""Q_b: the L1-nearest point of the probability-simplex grid, and its pipeline stage.

With ``M = 2**b - 1`` units, the grid is every vector ``u / M`` with ``u`` a vector of
non-negative integers summing to ``M``. For a probability row ``p`` let ``x = p * M``.
The quantizer takes ``f = floor(x)``, leaving ``k = M - sum(f)`` units, and gives one
unit each to the ``k`` entries with the largest remainders ``r = x - f``; equal
remainders go to the lower class index first. ``b = 1`` (``M = 1``) is therefore the
one-hot argmax with ties to the lowest index.

Why this is L1-optimal: ``sum_i |x_i - u_i|`` is separable and convex in each integer
``u_i``, so minimising it under ``sum_i u_i = M`` is a separable convex resource
allocation, which the greedy "take the cheapest marginal step" solves exactly. From
``f`` the marginal cost of a first extra unit on entry ``i`` is ``(1 - r_i) - r_i =
1 - 2 r_i <= 1``, every further unit on the same entry costs ``+1``, and removing a unit
below the floor costs ``+1`` and must be repaid by a unit elsewhere (net ``>= 0``).
Hence the ``k`` cheapest steps are first units on the ``k`` entries with the largest
``r_i``; ``0 <= k <= C`` holds because ``sum(x) = M`` up to rounding (rows are
renormalised in float64 first). spec/LABELS.md states the algorithm normatively.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import dtypes
from ..codecs.base import ArraySpec, ArrayToArray, register
from ..errors import CodecError

MIN_BITS = 1
MAX_BITS = 16


def units_for(bits: int) -> int:
    """``M = 2**bits - 1``: how many 1/M units every quantized row holds."""
    if not (isinstance(bits, int) and MIN_BITS <= bits <= MAX_BITS):
        raise CodecError(f"simplex: bits must be an integer in [{MIN_BITS}, {MAX_BITS}], got {bits!r}")
    return (1 << bits) - 1


def quantize(probs: np.ndarray, bits: int) -> np.ndarray:
    """Units ``u`` (int32, same shape, rows summing to ``2**bits - 1``) of probability rows.

    ``probs`` is (..., C), finite and non-negative with positive row sums; each row is
    first divided by its float64 sum so that small deviations from 1 do not bias the
    result. The last axis is the class axis.
    """
    m = units_for(bits)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim < 1 or p.shape[-1] < 1:
        raise CodecError("simplex: input needs a non-empty class axis")
    if not np.isfinite(p).all() or (p < 0).any():
        raise CodecError("simplex: probabilities must be finite and non-negative")
    shape = p.shape
    rows = p.reshape(-1, shape[-1])
    if rows.shape[0] == 0:
        return np.zeros(shape, dtype=np.int32)
    # Row sums strictly left to right (cumsum), so the result is specified bit for bit
    # (numpy's pairwise sum is not an order the spec could state).
    sums = np.cumsum(rows, axis=1)[:, -1:]
    if (sums <= 0).any():
        raise CodecError("simplex: a row sums to zero")
    x = (rows / sums) * m
    f = np.floor(x)
    r = x - f
    units = f.astype(np.int64)
    k = m - units.sum(axis=1)
    if (k < 0).any() or (k > rows.shape[1]).any():  # pragma: no cover - excluded by the renormalisation
        raise CodecError("simplex: row does not sum to 1")
    # Rank entries by remainder, largest first; a stable sort on -r keeps lower indices
    # first among equal remainders (the specified tie-break).
    order = np.argsort(-r, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(rows.shape[1]), order.shape), axis=1)
    units += rank < k[:, None]
    return units.astype(np.int32).reshape(shape)


def dequantize(units: np.ndarray, bits: int, dtype: str = "float32") -> np.ndarray:
    """``u / M`` as ``dtype``: IEEE binary64 division rounded once to ``dtype``.

    Refuses units that are not a valid grid point (entries outside [0, M] or rows not
    summing to M), so a corrupt payload cannot yield something that is not a distribution.
    """
    m = units_for(bits)
    check_units(units, bits)
    return dtypes.from_float64(np.asarray(units, dtype=np.float64) / m, dtype)


def check_units(units: np.ndarray, bits: int) -> None:
    """Raise :class:`CodecError` unless every row of ``units`` lies on the Q_b grid."""
    m = units_for(bits)
    u = np.asarray(units)
    if u.dtype.kind not in "iu":
        raise CodecError(f"simplex: units must be integers, got {u.dtype}")
    if u.ndim < 1 or u.shape[-1] < 1:
        raise CodecError("simplex: units need a non-empty class axis")
    if u.size and (u.min() < 0 or u.max() > m):
        raise CodecError(f"simplex: units outside [0, {m}]")
    rows = u.reshape(-1, u.shape[-1]).astype(np.int64)
    if rows.shape[0] and (rows.sum(axis=1) != m).any():
        raise CodecError(f"simplex: a row does not sum to {m} units")


def units_from_probs(probs: np.ndarray, bits: int) -> np.ndarray:
    """Recover the exact units of already-quantized probabilities (e.g. a decoded float32 array).

    ``rint(p * M)`` is exact for b <= 16 because float32 keeps 24 bits; the result is
    checked to lie on the grid and to reproduce ``p`` within float32 rounding, so an
    array that was not produced by Q_b with these bits is refused.
    """
    m = units_for(bits)
    p = np.asarray(probs, dtype=np.float64)
    if not np.isfinite(p).all():
        raise CodecError("simplex: reference holds NaN or infinity")
    units = np.rint(p * m)
    if p.size and np.abs(units - p * m).max() > 1e-2:
        raise CodecError(f"simplex: reference is not on the {bits}-bit simplex grid")
    out = units.astype(np.int32)
    check_units(out, bits)
    return out


@register
@dataclass(frozen=True)
class SimplexQuantizer(ArrayToArray):
    """Q_b: probability rows (last axis = classes) to int32 units summing to ``2**bits - 1``."""

    codec_id = 0x0018
    name = "simplex"
    bits: int = 4

    def __post_init__(self) -> None:
        if not MIN_BITS <= self.bits <= MAX_BITS:
            raise ValueError(f"bits must be in [{MIN_BITS}, {MAX_BITS}]")

    def encoded_spec(self, spec: ArraySpec) -> ArraySpec:
        return ArraySpec(spec.shape, "int32")

    def encode(self, values: np.ndarray, spec: ArraySpec) -> tuple[np.ndarray, SimplexQuantizer]:
        if not dtypes.is_float(spec.dtype):
            raise CodecError(f"simplex: codes float probabilities, not {spec.dtype}")
        return quantize(values, self.bits), self

    def decode(self, encoded: np.ndarray, spec: ArraySpec) -> np.ndarray:
        if not dtypes.is_float(spec.dtype):
            raise CodecError(f"simplex: cannot reconstruct {spec.dtype}")
        return dequantize(encoded, self.bits, spec.dtype)
