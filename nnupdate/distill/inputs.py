"""Checking and normalising soft-label arrays before they are quantized.

Soft labels arrive from user code, files and other machines, so malformed input is
refused with an :class:`~nnupdate.errors.InputError` naming the first bad row instead
of being silently quantized into something that is not a distribution.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from ..errors import InputError

#: largest |row sum - 1| accepted without ``normalize``; float16 soft labels of a few
#: hundred classes still pass, a forgotten softmax does not
DEFAULT_TOLERANCE = 1e-3

Normalize = bool | Literal["softmax", "sum"]


def _first_bad_row(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))[0])


def as_probabilities(values: object, *, normalize: Normalize = False, tolerance: float = DEFAULT_TOLERANCE) -> np.ndarray:
    """``values`` as a float64 (samples, classes) array of probability rows.

    ``normalize``: ``False`` requires rows that are already distributions (finite,
    non-negative, summing to 1 within ``tolerance``); ``"softmax"`` treats rows as
    logits; ``"sum"`` divides non-negative rows by their sum; ``True`` picks
    ``"softmax"`` when any entry is negative and ``"sum"`` otherwise.
    """
    try:
        array = np.asarray(values)
    except (TypeError, ValueError) as exc:
        raise InputError(f"soft labels are not an array: {exc}") from None
    if array.dtype.kind not in "fiu" or array.dtype.kind == "b":
        raise InputError(f"soft labels must be a float array, got dtype {array.dtype}")
    if array.ndim != 2:
        raise InputError(f"soft labels must have shape (samples, classes), got {array.shape}")
    if array.shape[1] < 1:
        raise InputError("soft labels need at least one class")
    p = array.astype(np.float64)
    finite = np.isfinite(p)
    if not finite.all():
        raise InputError(f"soft labels hold NaN or infinity (row {_first_bad_row(~finite)})")
    mode = normalize
    if mode is True:
        mode = "softmax" if (p < 0).any() else "sum"
    if mode == "softmax":
        shifted = np.exp(p - p.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)
    if (p < 0).any():
        raise InputError(f"soft labels hold negative values (row {_first_bad_row(p < 0)}); pass normalize='softmax' for logits")
    sums = p.sum(axis=1)
    if mode == "sum":
        if (sums <= 0).any():
            raise InputError(f"a soft-label row sums to zero (row {_first_bad_row(sums <= 0)})")
        return p / sums[:, None]
    if mode is not False:
        raise InputError(f"normalize must be False, True, 'softmax' or 'sum', not {normalize!r}")
    off = np.abs(sums - 1.0) > tolerance
    if off.any():
        row = _first_bad_row(off)
        raise InputError(
            f"soft-label row {row} sums to {sums[row]:.6g}, not 1 (tolerance {tolerance:g}); "
            "pass normalize=True for logits or unnormalised scores"
        )
    return p
