"""Rate control: choosing a quantizer step from a distortion or rate target."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from . import dtypes
from .codecs.uniform import quantize
from .errors import InputError


def relative_error(deltas: Sequence[np.ndarray], step: float, rounding: str = "nearest", seed: int = 0) -> float:
    """||x - Q(x)|| / ||x|| over all arrays, with the same quantizer the codec uses."""
    err = 0.0
    norm = 0.0
    if rounding == "nearest":  # the same levels as quantize(), without its per-call checks
        from .codecs._step_kernel import nearest_error  # numba: loaded on first use, not at import

        for x in deltas:
            err, norm = nearest_error(np.ascontiguousarray(x, dtype=np.float64).reshape(-1), step, err, norm)
        return float(np.sqrt(err / norm)) if norm > 0 else 0.0
    for i, x in enumerate(deltas):
        q = quantize(x, step, rounding, seed + i)
        err += float(np.sum((x - q * step) ** 2))
        norm += float(np.sum(x * x))
    return float(np.sqrt(err / norm)) if norm > 0 else 0.0


#: the smallest positive binary64 (subnormal): no step is finer
SMALLEST_STEP = 5e-324


def step_for_max_rel_error(
    deltas: Sequence[np.ndarray], target: float, rounding: str = "nearest", seed: int = 0, iterations: int = 40
) -> float:
    """Largest step (to bisection precision) whose relative L2 error is at most ``target``.

    Bisects on a sample, then checks the step on the full data and shrinks it until it
    meets the target there. For nearest rounding the sample keeps the ~16K largest
    values exactly (they dominate both norms of heavy-tailed updates) plus a weighted
    stride through the rest, so a ~80K-value sample tracks the full error closely; for
    stochastic rounding it is a plain stride of at most ~256K values.
    """
    deltas = [np.asarray(d, dtype=np.float64).reshape(-1) for d in deltas if np.size(d)]
    if not 0 < target < 1:
        raise InputError("max_rel_error must lie in (0, 1)")
    peak = peak_magnitude(deltas)
    if peak == 0.0:
        return 1.0
    total = sum(d.size for d in deltas)
    if rounding == "nearest":
        estimate, exact = _nearest_error_estimator(deltas)
    else:
        stride = max(1, total // (1 << 18))
        sample = [d[::stride] for d in deltas] if stride > 1 else deltas
        exact = stride == 1

        def estimate(step: float) -> float:
            return relative_error(sample, step, rounding, seed)

    # error(lo) ~ 0, error(hi) = 1 (everything rounds to 0); lo stays above 0 when the peak
    # is subnormal (float64 deltas can be), where peak * 1e-9 would underflow
    lo, hi = max(peak * 1e-9, SMALLEST_STEP), peak * 4.0
    for _ in range(iterations):
        product = lo * hi
        mid = math.sqrt(product) if product > 0 else math.sqrt(lo) * math.sqrt(hi)  # a subnormal lo * hi underflows
        if estimate(mid) <= target:
            lo = mid
        else:
            hi = mid
        if hi / lo < 1.0 + 1e-4:
            break
    while not exact and relative_error(deltas, lo, rounding, seed) > target:
        if lo * 0.995 == lo:  # a subnormal step that no longer shrinks: the finest there is
            break
        lo *= 0.995
    return lo


def _nearest_error_estimator(deltas: list[np.ndarray]) -> tuple[Callable[[float], float], bool]:
    """(step -> estimated relative error under nearest rounding, whether it is exact).

    Works array by array (a concatenated copy of a large update cost more than the whole
    search), picking the same values, in the same order, as it would from their
    concatenation: the cut between "large" values and the rest comes from a strided probe,
    the large ones are kept whole, the rest is a strided sample, weighted."""
    from .codecs._step_kernel import nearest_error

    keep_top, keep_rest = 1 << 14, 1 << 16
    total = sum(d.size for d in deltas)
    if total <= keep_top + keep_rest:
        return (lambda step: relative_error(deltas, step)), True
    every = max(1, total // keep_rest)
    probe = np.abs(np.concatenate(_strided(deltas, every)))
    rank = max(0, min(probe.size - 1, probe.size - round(keep_top * probe.size / total)))
    cut = np.partition(probe, rank)[rank]
    large = np.concatenate([d[(d >= cut) | (d <= -cut)] for d in deltas])  # |d| >= cut, no binary64 copy
    # a stride through everything, then the small ones of it: selecting the ~all-small
    # rest first would copy the whole update
    stride = max(1, (total - large.size) // keep_rest)
    sample = np.concatenate([s[(s < cut) & (s > -cut)] for s in _strided(deltas, stride)])
    weight = (total - large.size) / sample.size if sample.size else 0.0
    norm = nearest_error(large, 1.0)[1] + weight * nearest_error(sample, 1.0)[1]

    def estimate(step: float) -> float:
        err = nearest_error(large, step)[0] + weight * nearest_error(sample, step)[0]
        return float(np.sqrt(err / norm)) if norm > 0 else 0.0

    return estimate, False


def _strided(deltas: list[np.ndarray], stride: int) -> list[np.ndarray]:
    """Every ``stride``-th value of the arrays' concatenation, array by array."""
    out, offset = [], 0
    for d in deltas:
        out.append(d[(-offset) % stride :: stride])
        offset += d.size
    return out


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
#: ... and that bound: a search whose rate curve jumps over the target (a representation
#: switch, values on a few levels) keeps the costliest step at most this far above it
TARGET_BITS_SLACK = 0.02


def finest_step(peak: float) -> float:
    """The finest step a rate search tries for deltas of largest magnitude ``peak``.

    Levels of the largest delta then stay below 2**29, inside every quantizer's range
    (dq and rdoq stop at 2**30 - 1), and finer than a float32 value's own precision: a
    finer step only spends bits on rounding noise. At that step the codecs store a tensor
    bit-exactly whenever that is smaller (``update._exact_if_smaller``), so a target beyond
    it is met, or bettered, by the exact update.
    """
    return max(peak * 2.0**-29, SMALLEST_STEP)


def step_within_budget(seen: Mapping[float, float], bits: float) -> float:
    """Of the steps tried (step -> measured bits/param), the one to return for ``bits``.

    The closest to ``bits`` among those within TARGET_BITS_SLACK of it; when none is (the
    rate curve jumps over the target), the costliest one under the target, so a budget is
    not overrun by the jump; when every step tried costs more, the cheapest.
    """
    near = [s for s in seen if abs(seen[s] - bits) <= TARGET_BITS_SLACK * bits]
    if near:
        return min(near, key=lambda s: abs(seen[s] - bits))
    under = [s for s in seen if seen[s] <= bits]
    if under:
        return max(under, key=lambda s: seen[s])
    return min(seen, key=lambda s: seen[s])


def _measure(update: Update, make: Callable[[float], Codec], step: float) -> EncodeReport:
    from .update import encode_with_report

    return encode_with_report(update, make(step))


class _Tensors:
    """Measured (payload bytes, squared error) of the update's tensors at a step.

    Runs the real per-tensor encoder (every tail, real bytes, real decode for the error)
    but skips assembling the container, whose framing adds the same bytes at every step
    (stage parameters are fixed-size numbers; only a different winning tail changes it,
    by a few bytes). That ``overhead`` is measured once from a full encode, so
    payload + overhead is the file size to within those few bytes.
    """

    def __init__(self, update: Update, make: Callable[[float], Codec], start: float) -> None:
        self.update, self.make = update, make
        full = _measure(update, make, start)
        self.parameters = full.coded_parameters
        self.overhead = len(full.data) - sum(t.payload_bytes for t in full.tensors)
        self._cache: dict[float, tuple[int, float]] = {}

    def __call__(self, step: float) -> tuple[int, float]:
        """(file bytes, total squared error) at ``step``."""
        if step not in self._cache:
            from .update import encode_records

            codec = self.make(step).prepare(self.update)
            size, err = self.overhead, 0.0
            for report in encode_records(self.update, codec)[1]:
                size += report.payload_bytes
                if not report.statistic:  # as EncodeReport.relative_error
                    err += report.squared_error
            self._cache[step] = (size, err)
        return self._cache[step]

    def bits(self, step: float) -> float:
        return 8 * self(step)[0] / self.parameters if self.parameters else 0.0


def _start_step(update: Update) -> float:
    deltas = update.float_deltas()
    if not deltas:
        raise InputError("the update has no float deltas to quantize")
    return step_for_max_rel_error(deltas, 0.1)


def step_for_rel_error(
    update: Update, make: Callable[[float], Codec], target: float, rounding: str = "nearest", seed: int = 0
) -> tuple[float, EncodeReport | None]:
    """The step whose MEASURED relative error (the applied model's: real quantization,
    rounding to the tensor type included) is at most ``target`` and within
    MEASURED_BAND of it, and the full encode at that step when one was made.

    Starts from the estimate on the deltas (a sample of a large update). A float32 update
    usually lands in the band at once: that encode is the result. Otherwise (16-bit
    floats, whose rounding often lands on the new value: 3.6% for a 5% target; float32
    deltas of a few ULPs; stochastic rounding on a sample) dry encodes move the step:
    finer until it holds, aimed below as rounding is a floor the step does not shrink,
    coarser while it holds, bisected between the largest that held and the smallest that
    missed. If none holds (rounding alone above the target), the finest step, where the
    tensors are stored exactly.
    """
    from .update import dry_relative_error

    deltas = update.float_deltas()
    if not deltas:
        return 1.0, None
    step = step_for_max_rel_error(deltas, target, rounding, seed)
    if not any(dtypes.storage_dtype(c.dtype).itemsize == 2 for c in update.float_delta_changes()):
        report = _measure(update, make, step)
        if MEASURED_BAND * target <= report.relative_error <= target:
            return step, report
    feasible, missed = 0.0, math.inf  # largest step seen to hold, smallest seen to miss
    for _ in range(MEASURED_CHECKS):
        error = dry_relative_error(update, make(step))
        if error <= target:
            feasible = max(feasible, step)
            if error >= MEASURED_BAND * target or error == 0.0:
                return feasible, None
            proposal = step * min(2.0, 0.995 * target / error)
        else:
            missed = min(missed, step)
            proposal = step * min(0.99, max(0.5, (0.999 * target / error) ** 2))
        if feasible > 0 and missed < math.inf and not feasible < proposal < missed:
            proposal = math.sqrt(feasible * missed)
        step = proposal
    return (feasible or finest_step(peak_magnitude(deltas))), None


#: dry encodes :func:`step_for_rel_error` makes before it settles
MEASURED_CHECKS = 8
#: ... and the fraction of the target from which it accepts a measured error (below, the
#: step grows; the estimate lands within it on float32 updates: one encode)
MEASURED_BAND = 0.97


def step_for_target_bits(update: Update, make: Callable[[float], Codec], bits: float, iterations: int = 40) -> float:
    """The step whose container costs ``bits`` per coded parameter (headers included), by bisection.

    Brackets the target by expanding geometrically from a moderate step, then bisects on
    log(step) until the measured bits/param is within 0.5% of ``bits``; a rate curve that
    jumps over the target ends at :func:`step_within_budget`. A target beyond what
    :func:`finest_step` costs returns that step (the update at its type's precision, or
    exact, in fewer bits than asked); one below what headers alone cost raises
    :class:`InputError`.
    """
    if not bits > 0:
        raise InputError("target bits must be positive")
    lo = hi = _start_step(update)  # rate(lo) >= bits >= rate(hi)
    finest = finest_step(peak_magnitude(update.float_deltas()))
    measure = _Tensors(update, make, lo)
    rate = measure.bits
    while rate(lo) < bits:
        if lo <= finest:
            return lo
        lo = max(lo / 4, finest)
    for _ in range(40):
        if rate(hi) <= bits:
            break
        hi *= 4
    else:
        raise InputError(f"{bits} bits/param is below what the container's headers cost")
    seen: dict[float, float] = {lo: rate(lo), hi: rate(hi)}
    for _ in range(iterations):
        best = min(seen, key=lambda s: abs(seen[s] - bits))
        if abs(seen[best] - bits) <= TARGET_BITS_TOLERANCE * bits:
            return best
        if hi / lo < 1 + 1e-9:
            break
        mid = float(np.sqrt(lo * hi))
        seen[mid] = rate(mid)
        if seen[mid] >= bits:
            lo = mid
        else:
            hi = mid
    return step_within_budget(seen, bits)


def peak_magnitude(deltas: Sequence[np.ndarray]) -> float:
    """Largest magnitude over ``deltas`` (no ``abs`` copy of a large update)."""
    return max((max(float(d.max()), -float(d.min())) for d in deltas if d.size), default=0.0)


def step_for_lambda(update: Update, make: Callable[[float], Codec], lam: float) -> float:
    """The step minimising ``bytes + lam * squared_error`` (sum over all coded deltas).

    A coarse grid of half-octave steps (2**(k/2) around a start step, k = -12..12), then
    a fine grid of eighth-octave steps around the coarse minimum; every point is a real
    encode. ``lam`` is bytes per unit of squared error: large lam buys fidelity.
    """
    if not lam > 0:
        raise InputError("lambda must be positive")
    start = _start_step(update)

    measure = _Tensors(update, make, start)

    def cost(step: float) -> float:
        size, err = measure(step)
        return size + lam * err

    coarse = {k: cost(start * 2.0 ** (k / 2)) for k in range(-12, 13)}
    best_k = min(coarse, key=lambda k: coarse[k])
    fine = {j: cost(start * 2.0 ** (best_k / 2 + j / 8)) for j in range(-3, 4) if j}
    fine[0] = coarse[best_k]
    best_j = min(fine, key=lambda j: fine[j])
    return start * 2.0 ** (best_k / 2 + best_j / 8)
