"""``qsgd``: QSGD's unbiased stochastic quantization to s levels of the tensor norm (0x0012).

Alistarh et al.: ``q_i = sign(x_i) * l_i`` with ``l_i = floor(s|x_i|/||x||) + Bernoulli(frac)``,
so E[q_i ||x|| / s] = x_i. The levels are coded by an entropy stage (Elias by default, as
in the paper: most levels are 0 and small magnitudes dominate). Decoding computes
``(q * norm) / s`` (the norm of q's bucket) in IEEE binary64, two basic operations, then rounds once to the
tensor's type.

As in the paper, the tensor is split into buckets of ``bucket`` consecutive values
(0 = one bucket), each with its own norm: variance grows with the bucket size, so the
default 512 keeps the error bounded at the cost of one float64 per bucket in the header.

Stage parameters: s (levels, >= 1), bucket, norms (one float32 per bucket, little-endian
bytes: the paper's 32-bit norm; rounded up so no level exceeds s), seed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .. import dtypes
from ..errors import CodecError
from ..format import Combine
from .base import ArraySpec, ArrayToArray, register
from .coders import tails
from .presets import Codec, Plan, _tensor_seed, register_codec

if TYPE_CHECKING:
    from ..update import TensorChange

MAX_S = 1 << 20


@register
@dataclass(frozen=True)
class QSGD(ArrayToArray):
    """Stochastic levels of s * |x| / (bucket norm) with the sign; ``norms`` are resolved by encode."""

    codec_id = 0x0012
    name = "qsgd"
    s: int = 4
    bucket: int = 512
    norms: bytes = b""
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.s <= MAX_S or self.bucket < 0:
            raise ValueError(f"s must lie in [1, {MAX_S}] and bucket be >= 0")
        if len(self.norms) % 4:
            raise ValueError("norms must be whole float32 values")
        norms = self.norm_values
        if not (np.isfinite(norms).all() and (norms >= 0).all()):
            raise ValueError("norms must be finite and >= 0")

    @property
    def norm_values(self) -> np.ndarray:
        return np.frombuffer(self.norms, dtype="<f4").astype(np.float64)

    def _buckets(self, n: int) -> int:
        if n == 0:
            return 0
        return 1 if self.bucket == 0 else -(-n // self.bucket)

    def _per_element(self, norms: np.ndarray, n: int) -> np.ndarray:
        size = n if self.bucket == 0 else self.bucket
        return np.repeat(norms, size)[:n]

    def encoded_spec(self, spec: ArraySpec) -> ArraySpec:
        return ArraySpec(spec.shape, "int32")

    def encode(self, values: np.ndarray, spec: ArraySpec) -> tuple[np.ndarray, QSGD]:
        x = np.asarray(values, dtype=np.float64)
        if not np.isfinite(x).all():
            raise CodecError("qsgd: input holds NaN or infinity")
        flat = x.reshape(-1)
        if flat.size == 0:
            return np.zeros(x.shape, dtype=np.int32), dataclasses.replace(self, norms=b"")
        nb = self._buckets(flat.size)
        padded = np.zeros(nb * (flat.size if self.bucket == 0 else self.bucket))
        padded[: flat.size] = flat
        exact = np.sqrt(np.sum(padded.reshape(nb, -1) ** 2, axis=1))
        norms32 = exact.astype(np.float32)
        if not np.isfinite(norms32).all():
            raise CodecError("qsgd: norm overflows float32")
        low = norms32.astype(np.float64) < exact  # round up: |x| <= norm keeps every level <= s
        norms32[low] = np.nextafter(norms32[low], np.float32(np.inf))
        norms = norms32.astype(np.float64)
        scale = self._per_element(norms, flat.size)
        safe = np.where(scale > 0, scale, 1.0)
        r = np.abs(flat) / safe * self.s
        low = np.floor(r)
        rng = np.random.Generator(np.random.PCG64(self.seed))
        level = low + (rng.random(r.shape) < (r - low))
        q = (np.sign(flat) * level).astype(np.int32).reshape(x.shape)
        return q, dataclasses.replace(self, norms=norms32.astype("<f4").tobytes())

    def decode(self, encoded: np.ndarray, spec: ArraySpec) -> np.ndarray:
        if not dtypes.is_float(spec.dtype):
            raise CodecError(f"qsgd: cannot reconstruct {spec.dtype}")
        q = encoded.astype(np.int64).reshape(-1)
        if q.size and int(np.abs(q).max()) > self.s:
            raise CodecError("qsgd: level beyond s")
        norms = self.norm_values
        if norms.size != self._buckets(q.size):
            raise CodecError(f"qsgd: {norms.size} norms for {self._buckets(q.size)} buckets")
        values = (q.astype(np.float64) * self._per_element(norms, q.size)) / float(self.s)
        return dtypes.from_float64(values.reshape(spec.shape), spec.dtype)


@register_codec
@dataclass(frozen=True)
class QSGDCodec(Codec):
    """QSGD (norm + s stochastic levels, unbiased) with Elias-coded levels by default."""

    name = "qsgd"
    summary = "QSGD: tensor norm + s unbiased stochastic levels, Elias coded"
    s: int = 4
    bucket: int = 512
    seed: int = 0
    coder: str = "elias"

    def __post_init__(self) -> None:
        tails(self.coder)
        if not 1 <= self.s <= MAX_S or self.bucket < 0:
            raise ValueError(f"s must lie in [1, {MAX_S}] and bucket be >= 0")

    def plan_float_delta(self, change: TensorChange) -> Plan:
        stage = QSGD(self.s, self.bucket, seed=_tensor_seed(self.seed, change.name))
        return Plan(Combine.ADD, (stage,), tails(self.coder))
