"""``sbc``: Sparse Binary Compression (Sattler et al.), one mean and a set of positions (0x0014).

Take the fraction p of largest positive entries and of most negative entries; keep only
the group whose mean has the larger magnitude; every kept entry becomes that mean, the
rest zero. What remains to send is one float and the kept positions, which the
``golomb`` stage codes as Rice-coded gaps with the bit-optimal parameter (its constant
mode: the symbols are all 1, so no value bits at all).

Stage parameters: fraction, mean (signed, the reconstruction value). Symbols: int8 {0, 1}.
Decoding: ``symbol * mean`` in binary64.
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


@register
@dataclass(frozen=True)
class SBC(ArrayToArray):
    """Top-p of the dominant sign, all set to their mean."""

    codec_id = 0x0014
    name = "sbc"
    fraction: float = 0.01
    mean: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1 or not np.isfinite(self.mean):
            raise ValueError("fraction must lie in (0, 1] and mean be finite")

    def encoded_spec(self, spec: ArraySpec) -> ArraySpec:
        return ArraySpec(spec.shape, "int8")

    def encode(self, values: np.ndarray, spec: ArraySpec) -> tuple[np.ndarray, SBC]:
        x = np.asarray(values, dtype=np.float64).reshape(-1)
        if not np.isfinite(x).all():
            raise CodecError("sbc: input holds NaN or infinity")
        out = np.zeros(x.size, dtype=np.int8)
        k = max(1, math.ceil(self.fraction * x.size))
        best: tuple[float, np.ndarray] = (0.0, np.zeros(0, dtype=np.int64))
        for sign in (1.0, -1.0):
            candidates = np.flatnonzero(sign * x > 0)
            if candidates.size == 0:
                continue
            if candidates.size > k:
                part = np.argpartition(-sign * x[candidates], k - 1)[:k]
                candidates = np.sort(candidates[part])
            mean = float(np.mean(x[candidates]))
            if abs(mean) > abs(best[0]):
                best = (mean, candidates)
        out[best[1]] = 1
        return out.reshape(spec.shape), dataclasses.replace(self, mean=best[0])

    def decode(self, encoded: np.ndarray, spec: ArraySpec) -> np.ndarray:
        if not dtypes.is_float(spec.dtype):
            raise CodecError(f"sbc: cannot reconstruct {spec.dtype}")
        if encoded.size and (int(encoded.min()) < 0 or int(encoded.max()) > 1):
            raise CodecError("sbc: symbols must be 0 or 1")
        return dtypes.from_float64(encoded.astype(np.float64) * self.mean, spec.dtype)


@register_codec
@dataclass(frozen=True)
class SBCCodec(Codec):
    """Sparse Binary Compression: dominant-sign top-p mean + Golomb-coded positions."""

    name = "sbc"
    summary = "SBC (Sattler et al.): top-p of the dominant sign as one mean + Golomb-coded gaps"
    fraction: float = 0.01
    coder: str = "golomb"

    def __post_init__(self) -> None:
        tails(self.coder)
        if not 0 < self.fraction <= 1:
            raise ValueError("fraction must lie in (0, 1]")

    def plan_float_delta(self, change: TensorChange) -> Plan:
        return Plan(Combine.ADD, (SBC(self.fraction),), tails(self.coder))
