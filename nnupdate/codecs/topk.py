"""``topk``: keep the k largest-magnitude entries, quantize them, zero the rest (0x0013).

The classic sparsification baseline (with error feedback, see ``nnupdate.feedback``).
Kept values are quantized to nonzero multiples of ``step``
(``q = sign(x) * max(1, round(|x| / step))``, so a kept entry never collides with the
zeros of dropped ones); the entropy stage after it codes positions and levels
together: ``golomb`` (Rice-coded gaps + Rice-coded levels), ``elias`` (zero runs), or
rans, the smallest measured payload winning with ``coder=auto``. Positions are never
sent as raw indices.

Stage parameters: k (entries kept), step. Decoding: ``q * step`` in binary64.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .. import dtypes
from ..errors import CodecError
from ..format import Combine
from .base import ArraySpec, ArrayToArray, register
from .coders import tails
from .presets import Codec, Plan, register_codec

if TYPE_CHECKING:
    from ..update import TensorChange

_Q_LIMIT = (1 << 31) - 1


def top_indices(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest |x| , sorted (which of equal magnitudes is kept is an encoder choice)."""
    if k >= x.size:
        return np.arange(x.size)
    part = np.argpartition(-np.abs(x), k - 1, kind="introselect")[:k]
    return np.sort(part)


@register
@dataclass(frozen=True)
class TopK(ArrayToArray):
    """Top-k by magnitude, kept values as nonzero integer multiples of ``step`` (0 = resolve from bits)."""

    codec_id = 0x0013
    name = "topk"
    k: int = 0
    step: float = 0.0
    bits: int = 8

    def __post_init__(self) -> None:
        if self.k < 0 or not (np.isfinite(self.step) and self.step >= 0) or not 2 <= self.bits <= 24:
            raise ValueError("k >= 0, step >= 0 finite, bits in [2, 24]")

    def encoded_spec(self, spec: ArraySpec) -> ArraySpec:
        return ArraySpec(spec.shape, "int32")

    def encode(self, values: np.ndarray, spec: ArraySpec) -> tuple[np.ndarray, TopK]:
        x = np.asarray(values, dtype=np.float64).reshape(-1)
        if not np.isfinite(x).all():
            raise CodecError("topk: input holds NaN or infinity")
        out = np.zeros(x.size, dtype=np.int32)
        idx = top_indices(x, min(self.k, x.size))
        kept = x[idx]
        peak = float(np.abs(kept).max()) if kept.size else 0.0
        if peak == 0.0:
            return out.reshape(spec.shape), dataclasses.replace(self, step=self.step or 1.0)
        step = self.step or peak / ((1 << (self.bits - 1)) - 1)
        if step == 0.0:  # a subnormal peak: the division underflowed; code every kept value as the peak
            step = peak
        q = np.maximum(1.0, np.rint(np.abs(kept) / step))
        if q.max() > _Q_LIMIT:
            raise CodecError("topk: step too small, levels overflow int32")
        out[idx] = (np.sign(kept) * q).astype(np.int32)
        return out.reshape(spec.shape), dataclasses.replace(self, step=step)

    def decode(self, encoded: np.ndarray, spec: ArraySpec) -> np.ndarray:
        if not dtypes.is_float(spec.dtype) or self.step <= 0:
            raise CodecError(f"topk: cannot reconstruct {spec.dtype} (step {self.step})")
        if int(np.count_nonzero(encoded)) > self.k:
            raise CodecError("topk: more nonzero entries than k")
        return dtypes.from_float64(encoded.astype(np.float64) * self.step, spec.dtype)


@register_codec
@dataclass(frozen=True)
class TopKCodec(Codec):
    """Top-k sparsification (fraction of each tensor), values quantized to ``bits``, positions entropy coded."""

    name = "topk"
    summary = "top-k magnitude sparsification + quantized values + gap/run-length coded positions"
    fraction: float = 0.01
    bits: int = 8
    coder: str = "auto"

    def __post_init__(self) -> None:
        tails(self.coder)
        if not 0 < self.fraction <= 1 or not 2 <= self.bits <= 24:
            raise ValueError("fraction must lie in (0, 1], bits in [2, 24]")

    def plan_float_delta(self, change: TensorChange) -> Plan:
        k = max(1, math.ceil(self.fraction * change.size))
        return Plan(Combine.ADD, (TopK(k, 0.0, self.bits),), tails(self.coder))
