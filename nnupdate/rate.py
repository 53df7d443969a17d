"""Rate control: choosing a quantizer step from a distortion or rate target."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .codecs.uniform import quantize
from .errors import InputError


def relative_error(deltas: Sequence[np.ndarray], step: float, rounding: str = "nearest", seed: int = 0) -> float:
    """||x - Q(x)|| / ||x|| over all arrays, with the same quantizer the codec uses."""
    err = 0.0
    norm = 0.0
    for i, x in enumerate(deltas):
        q = quantize(x, step, rounding, seed + i)
        err += float(np.sum((x - q * step) ** 2))
        norm += float(np.sum(x * x))
    return float(np.sqrt(err / norm)) if norm > 0 else 0.0


def step_for_max_rel_error(
    deltas: Sequence[np.ndarray], target: float, rounding: str = "nearest", seed: int = 0, iterations: int = 40
) -> float:
    """Largest step (to bisection precision) whose relative L2 error is at most ``target``.

    Bisects on a strided subsample of at most ~256K values for speed, then checks the
    step on the full data and shrinks it until it meets the target there.
    """
    deltas = [np.asarray(d, dtype=np.float64).reshape(-1) for d in deltas if np.size(d)]
    total = sum(d.size for d in deltas)
    stride = max(1, total // (1 << 18))
    sample = [d[::stride] for d in deltas] if stride > 1 else deltas
    if not 0 < target < 1:
        raise InputError("max_rel_error must lie in (0, 1)")
    peak = max((float(np.abs(d).max()) for d in deltas), default=0.0)
    if peak == 0.0:
        return 1.0
    lo, hi = peak * 1e-9, peak * 4.0  # error(lo) ~ 0, error(hi) = 1 (everything rounds to 0)
    for _ in range(iterations):
        mid = float(np.sqrt(lo * hi))
        if relative_error(sample, mid, rounding, seed) <= target:
            lo = mid
        else:
            hi = mid
        if hi / lo < 1.0 + 1e-4:
            break
    while stride > 1 and relative_error(deltas, lo, rounding, seed) > target:
        lo *= 0.995
    return lo
