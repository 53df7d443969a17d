"""``m22``: Lloyd-Max quantizer designed on a fitted GenNorm, M-weighted distortion (0x0011).

Liu et al.'s M22 observes that update entries follow a generalized normal law and that
what matters for training is the error weighted by magnitude, d_M = mean(|g|^M (g-ĝ)^2).
The encoder fits GenNorm(mu, alpha, beta) to the tensor (``nnupdate.stats``), designs
an L-level symmetric Lloyd-Max quantizer for d_M on that fit truncated to the observed
range (``nnupdate.stats.lloyd``), and emits signed level indices
``s = index - floor(L/2)`` (0 is the level nearest the center for odd L), which the
entropy stage after it codes. Decoding is a table lookup ``x̂ = centers[s + floor(L/2)]``,
no arithmetic at all, so it is bit-exact everywhere.

Stage parameters: mu, alpha, beta (the fit, informative), m, centers (L little-endian
float32 as bytes, sorted, absolute values), thresholds (L-1 float32 as bytes, the
encoder's cell edges, informative: a decoder needs only the centers). float32 halves
the header (a quantizer's levels need no more precision) and is what the
reconstruction of a float32 tensor is rounded to anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .. import dtypes
from ..errors import CodecError, InputError
from ..format import Combine
from .base import ArraySpec, ArrayToArray, register
from .coders import tails as entropy_tails
from .presets import Codec, Plan, register_codec
from .uniform import Uniform

if TYPE_CHECKING:
    from ..update import TensorChange

MIN_LEVELS = 2
MAX_LEVELS = 256


def _f32(values: np.ndarray) -> bytes:
    return np.ascontiguousarray(values, dtype="<f4").tobytes()


@register
@dataclass(frozen=True)
class M22(ArrayToArray):
    """Lloyd-Max levels on a GenNorm fit; ``levels`` and ``m`` choose the design, the rest is resolved."""

    codec_id = 0x0011
    name = "m22"
    levels: int = 16
    m: float = 0.0
    mu: float = 0.0
    alpha: float = 0.0
    beta: float = 0.0
    centers: bytes = b""
    thresholds: bytes = b""

    def __post_init__(self) -> None:
        if not MIN_LEVELS <= self.levels <= MAX_LEVELS:
            raise ValueError(f"levels must lie in [{MIN_LEVELS}, {MAX_LEVELS}]")
        if not (np.isfinite(self.m) and 0 <= self.m <= 8):
            raise ValueError("m must lie in [0, 8]")
        if self.centers or self.thresholds:
            if len(self.centers) != 4 * self.levels or len(self.thresholds) != 4 * (self.levels - 1):
                raise ValueError("need `levels` float32 centers and `levels - 1` float32 thresholds")
            c, t = self.center_values, self.threshold_values
            if not (np.isfinite(c).all() and np.isfinite(t).all()) or np.any(np.diff(c) < 0):
                raise ValueError("centers must be finite and sorted")

    @classmethod
    def with_table(cls, levels: int, m: float, mu: float, alpha: float, beta: float, centers: np.ndarray, thresholds: np.ndarray) -> M22:
        """A resolved stage from float arrays (stored rounded to float32, which keeps them sorted)."""
        return cls(levels, m, mu, alpha, beta, _f32(centers), _f32(thresholds))

    @property
    def center_values(self) -> np.ndarray:
        return np.frombuffer(self.centers, dtype="<f4").astype(np.float64)

    @property
    def threshold_values(self) -> np.ndarray:
        return np.frombuffer(self.thresholds, dtype="<f4").astype(np.float64)

    def encoded_spec(self, spec: ArraySpec) -> ArraySpec:
        return ArraySpec(spec.shape, "int16")

    def design(self, values: np.ndarray) -> M22:
        """The resolved stage for ``values``: fit, then Lloyd-Max on the fit."""
        from ..stats import fit_gennorm
        from ..stats.lloyd import symmetric_quantizer

        x = np.asarray(values, dtype=np.float64).reshape(-1)
        if x.size == 0:
            return M22.with_table(self.levels, self.m, 0.0, 0.0, 0.0, np.zeros(self.levels), np.zeros(self.levels - 1))
        fit = fit_gennorm(x)
        span = float(np.max(np.abs(x - fit.mu)))
        if fit.alpha <= 0 or span <= 0:
            zeros = np.full(self.levels, fit.mu)
            return M22.with_table(self.levels, self.m, fit.mu, 0.0, fit.beta, zeros, zeros[1:])
        cn, tn = symmetric_quantizer(self.levels, fit.beta, self.m, span / fit.alpha)
        centers = fit.mu + fit.alpha * cn
        thresholds = fit.mu + fit.alpha * tn
        return M22.with_table(self.levels, self.m, fit.mu, fit.alpha, fit.beta, centers, thresholds)

    def encode(self, values: np.ndarray, spec: ArraySpec) -> tuple[np.ndarray, M22]:
        x = np.asarray(values, dtype=np.float64)
        if not np.isfinite(x).all():
            raise CodecError("m22: input holds NaN or infinity")
        resolved = self if self.centers else self.design(x)
        index = np.searchsorted(resolved.threshold_values, x, side="left")
        # searchsorted keeps ties on the lower cell; either is a valid nearest-threshold choice
        return (index - self.levels // 2).astype(np.int16), resolved

    def decode(self, encoded: np.ndarray, spec: ArraySpec) -> np.ndarray:
        if not dtypes.is_float(spec.dtype):
            raise CodecError(f"m22: cannot reconstruct {spec.dtype}")
        centers = self.center_values
        if centers.size != self.levels:
            raise CodecError("m22: stage has no centers")
        index = encoded.astype(np.int64) + self.levels // 2
        if index.size and (index.min() < 0 or index.max() >= self.levels):
            raise CodecError("m22: level index out of range")
        return dtypes.from_float64(centers[index], spec.dtype)


def symbol_entropy(symbols: np.ndarray) -> float:
    """Empirical order-0 entropy in bits per symbol (the ideal entropy coder's rate)."""
    from ..stats import entropy_bits

    return entropy_bits(symbols)


@register_codec
@dataclass(frozen=True)
class M22Codec(Codec):
    """Per-tensor GenNorm fit + M-weighted Lloyd-Max levels + entropy coding.

    ``levels`` fixes L; ``bits > 0`` instead picks, per tensor, the largest L whose
    level entropy stays at or below ``bits`` per parameter. Tensors smaller than
    ``min_size`` (biases, norms) skip the fit, whose header would outweigh them, and use
    a uniform quantizer spanning the same range with the same number of levels.
    """

    name = "m22"
    summary = "GenNorm fit + M-weighted Lloyd-Max (M22) + entropy coding"
    levels: int = 16
    M: float = 0.0
    bits: float = 0.0
    coder: str = "auto"
    min_size: int = 1024

    def __post_init__(self) -> None:
        entropy_tails(self.coder)
        if not MIN_LEVELS <= self.levels <= MAX_LEVELS:
            raise ValueError(f"levels must lie in [{MIN_LEVELS}, {MAX_LEVELS}]")
        if not 0 <= self.M <= 8 or self.bits < 0 or self.bits > 8 or self.min_size < 0:
            raise ValueError("M must lie in [0, 8], bits in [0, 8], min_size >= 0")

    def _levels_for(self, x: np.ndarray) -> int:
        if self.bits <= 0:
            return self.levels
        lo, hi = MIN_LEVELS, MAX_LEVELS
        while lo < hi:  # entropy grows with L; largest L with H <= bits
            mid = (lo + hi + 1) // 2
            stage = M22(mid, self.M).design(x)
            symbols, _ = stage.encode(x, ArraySpec(x.shape, "float64"))
            if symbol_entropy(symbols) <= self.bits:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def plan_float_delta(self, change: TensorChange) -> Plan:
        x = change.values_for(Combine.ADD)
        tails = entropy_tails(self.coder)
        if change.size < self.min_size:
            peak = float(np.max(np.abs(x))) if x.size else 0.0
            if peak == 0.0 or not np.isfinite(peak):
                if not np.isfinite(peak):
                    raise InputError(f"{change.name}: delta holds NaN or infinity")
                peak = 1.0
            return Plan(Combine.ADD, (Uniform(2 * peak / max(1, self.levels - 1)),), tails)
        levels = self._levels_for(np.asarray(x, dtype=np.float64).reshape(-1))
        stage = M22(levels, self.M).design(x)
        return Plan(Combine.ADD, (stage,), tails)
