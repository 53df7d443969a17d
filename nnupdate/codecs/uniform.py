"""``uniform``: scalar quantization to integer multiples of a step.

Nearest rounding minimises the error for a given step; stochastic rounding (round up
with probability equal to the fractional part) is unbiased, as Mitchell et al. use for
federated updates. Reconstruction is ``q * step`` computed in IEEE binary64 and rounded
once to the tensor's type, which every platform does identically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .. import dtypes
from ..errors import CodecError
from .base import ENCODER_ONLY, ArraySpec, ArrayToArray, register

_Q_LIMIT = (1 << 31) - 1
#: below this many levels numpy's three passes cost less than a compiled call
_FUSED_MIN = 256


def quantize(values: np.ndarray, step: float, rounding: str, seed: int) -> np.ndarray:
    """Integer levels of ``values / step``; refuses levels outside int32."""
    if not np.isfinite(values).all():
        raise CodecError("uniform: input holds NaN or infinity")
    scaled = values / step
    if rounding == "nearest":
        levels = np.rint(scaled)
    elif rounding == "stochastic":
        floor = np.floor(scaled)
        rng = np.random.Generator(np.random.PCG64(seed))
        levels = floor + (rng.random(scaled.shape) < (scaled - floor))
    else:
        raise CodecError(f"uniform: unknown rounding {rounding!r}")
    if levels.size and np.abs(levels).max() > _Q_LIMIT:
        raise CodecError("uniform: step too small, levels overflow int32")
    return levels.astype(np.int32)


def reconstruct(levels: np.ndarray, step: float, spec: ArraySpec, stage: str) -> np.ndarray:
    """``levels * step`` computed in binary64 and rounded once to the tensor's float type.

    The reconstruction of every step quantizer (uniform, rdoq, dq): one IEEE
    multiplication and one rounding, identical on every platform.
    """
    if not dtypes.is_float(spec.dtype):
        raise CodecError(f"{stage}: cannot reconstruct {spec.dtype}")
    if spec.dtype == "float32" and levels.dtype.kind == "i" and levels.size >= _FUSED_MIN:
        from ._step_kernel import scale_to_float32  # numba: loaded on first decode, not at import

        return scale_to_float32(np.ascontiguousarray(levels), float(step)).reshape(spec.shape)  # type: ignore[no-any-return]
    return dtypes.from_float64((levels.astype(np.float64) * step).reshape(spec.shape), spec.dtype)


def check_step(step: float, lam: float = 0.0) -> None:
    """Refuse a step that is not positive and finite, or a negative/non-finite lambda."""
    if not (math.isfinite(step) and step > 0):
        raise ValueError("step must be a positive finite number")
    if not (math.isfinite(lam) and lam >= 0):
        raise ValueError("lam must be a finite number >= 0")


@register
@dataclass(frozen=True)
class Uniform(ArrayToArray):
    """Levels ``q = round(x / step)``; decoded value ``q * step``."""

    codec_id = 0x0010
    name = "uniform"
    step: float = 1e-3
    #: the decoder only needs the step; how levels were rounded is the encoder's business
    rounding: str = field(default="nearest", metadata=ENCODER_ONLY)
    seed: int = field(default=0, metadata=ENCODER_ONLY)

    def __post_init__(self) -> None:
        check_step(self.step)
        if self.rounding not in ("nearest", "stochastic"):
            raise ValueError(f"rounding must be nearest or stochastic, not {self.rounding!r}")

    def encoded_spec(self, spec: ArraySpec) -> ArraySpec:
        return ArraySpec(spec.shape, "int32")

    def encode(self, values: np.ndarray, spec: ArraySpec) -> tuple[np.ndarray, Uniform]:
        return quantize(np.asarray(values, dtype=np.float64), self.step, self.rounding, self.seed), self

    def decode(self, encoded: np.ndarray, spec: ArraySpec) -> np.ndarray:
        return reconstruct(encoded, self.step, spec, self.name)

    def scale_step(self, spec: ArraySpec) -> float | None:
        return self.step if spec.dtype == "float32" else None

    def max_abs_error(self) -> float:
        """Worst-case absolute error per element before rounding to the tensor type."""
        return self.step / 2 if self.rounding == "nearest" else self.step
