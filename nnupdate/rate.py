"""Rate control: choosing a quantizer step from a distortion or rate target."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

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


# ----------------------------------------------------------------------------- whole-update rate control
#
# These searches measure every candidate step by encoding the real update with the real
# codec (container bytes from ``encode_with_report``, distortion from its actual decode),
# so the rate they hit is the rate written, never an estimate.

if TYPE_CHECKING:
    from .codecs.presets import Codec
    from .update import EncodeReport, Update

#: bits/param tolerance the target-bits bisection aims at (the acceptance bound is 2%)
TARGET_BITS_TOLERANCE = 0.005


def _measure(update: Update, make: Callable[[float], Codec], step: float) -> EncodeReport:
    from .update import encode_with_report

    return encode_with_report(update, make(step))


def _start_step(update: Update) -> float:
    deltas = update.float_deltas()
    if not deltas:
        raise InputError("the update has no float deltas to quantize")
    return step_for_max_rel_error(deltas, 0.1)


def step_for_rel_error(
    update: Update, make: Callable[[float], Codec], target: float, rounding: str = "nearest", seed: int = 0
) -> float:
    """Largest step whose MEASURED relative L2 error (real encode + decode) is at most ``target``.

    Bisection on a subsample picks the step; the real codec then checks it and the step
    shrinks by 1% until the measured error is within the target (stochastic rounding in
    the codec uses per-tensor seeds the subsample cannot reproduce exactly).
    """
    deltas = update.float_deltas()
    if not deltas:
        return 1.0
    step = step_for_max_rel_error(deltas, target, rounding, seed)
    for _ in range(200):
        if _measure(update, make, step).relative_error <= target:
            return step
        step *= 0.99
    raise InputError(f"no step reaches relative error {target}")


def step_for_target_bits(update: Update, make: Callable[[float], Codec], bits: float, iterations: int = 40) -> float:
    """The step whose container costs ``bits`` per coded parameter (headers included), by bisection.

    Brackets the target by expanding geometrically from a moderate step, then bisects on
    log(step) until the measured bits/param is within 0.5% of ``bits``; returns the
    closest step seen. Raises :class:`InputError` if the target is below what headers
    alone cost or above what the smallest step reaches.
    """
    if not bits > 0:
        raise InputError("target bits must be positive")
    cache: dict[float, float] = {}

    def rate(step: float) -> float:
        if step not in cache:
            cache[step] = _measure(update, make, step).bits_per_parameter
        return cache[step]

    lo = hi = _start_step(update)  # rate(lo) >= bits >= rate(hi)
    for _ in range(40):
        if rate(lo) >= bits:
            break
        lo /= 4
    else:
        raise InputError(f"{bits} bits/param is beyond what the smallest step reaches")
    for _ in range(40):
        if rate(hi) <= bits:
            break
        hi *= 4
    else:
        raise InputError(f"{bits} bits/param is below what the container's headers cost")
    for _ in range(iterations):
        best = min(cache, key=lambda s: abs(cache[s] - bits))
        if abs(cache[best] - bits) <= TARGET_BITS_TOLERANCE * bits or hi / lo < 1 + 1e-9:
            return best
        mid = float(np.sqrt(lo * hi))
        if rate(mid) >= bits:
            lo = mid
        else:
            hi = mid
    return min(cache, key=lambda s: abs(cache[s] - bits))


def step_for_lambda(update: Update, make: Callable[[float], Codec], lam: float) -> float:
    """The step minimising ``bytes + lam * squared_error`` (sum over all coded deltas).

    A coarse grid of half-octave steps (2**(k/2) around a start step, k = -12..12), then
    a fine grid of eighth-octave steps around the coarse minimum; every point is a real
    encode. ``lam`` is bytes per unit of squared error: large lam buys fidelity.
    """
    if not lam > 0:
        raise InputError("lambda must be positive")
    start = _start_step(update)

    def cost(step: float) -> float:
        report = _measure(update, make, step)
        return len(report.data) + lam * sum(t.squared_error for t in report.tensors)

    coarse = {k: cost(start * 2.0 ** (k / 2)) for k in range(-12, 13)}
    best_k = min(coarse, key=lambda k: coarse[k])
    fine = {j: cost(start * 2.0 ** (best_k / 2 + j / 8)) for j in range(-3, 4) if j}
    fine[0] = coarse[best_k]
    best_j = min(fine, key=lambda j: fine[j])
    return start * 2.0 ** (best_k / 2 + best_j / 8)
