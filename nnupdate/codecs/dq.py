"""``dq`` (0x001B): dependent (trellis-coded) quantization, decoded integer-only.

Why: with one scalar quantizer each level must tell apart every multiple of the step.
Dependent quantization (VVC, MPEG NNC) alternates two quantizers, Q0 on even and Q1 on
odd multiples of ``step``, chosen by a 4-state machine on the parity of the levels coded
so far; a trellis search in the encoder picks the level sequence minimising
``(x/step - rec)**2 + lam * bits``. At equal distortion the levels are smaller, so they
cost fewer bits (the packing gain of a trellis code, ~8% at high rate in video coding).

Decoding is the state machine in int64 then one binary64 multiply by ``step``
(spec/CONTEXT.md, "dq"). Only ``step`` is stored; ``lam`` steers the encoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import CodecError
from . import transform
from .base import ENCODER_ONLY, ArraySpec, ArrayToArray, register
from .context import filled_segments, layout, segment_size, segments
from .uniform import check_step, reconstruct

_LIMIT = (1 << 30) - 1


def _rate_table(levels: np.ndarray, rows: int, rowlen: int) -> tuple[np.ndarray, np.ndarray]:
    """Bits of magnitude m per rate class, from counts; and each position's scale class.

    A rate class is (quantizer, scale class of the position, class of the previous
    magnitude): the scale class is the ctx coder's row x column activity at that position
    on the previous pass's levels, so the trellis sees the rates the coder will charge in
    loud and quiet regions. Sparse classes back off to the (quantizer, previous
    magnitude) distribution.
    """
    from ._dq_kernel import MAX_RATE_LEVEL, NUM_RATE_CLASSES, NUM_SCALE_CLASSES, rate_counts

    counts, scale = rate_counts(np.ascontiguousarray(levels, dtype=np.int64).reshape(-1), rows, rowlen)
    dims = (2, NUM_SCALE_CLASSES, NUM_RATE_CLASSES, MAX_RATE_LEVEL)
    fine = counts.astype(np.float64).reshape(dims)
    coarse = fine.sum(axis=1, keepdims=True) + 0.5
    coarse /= coarse.sum(axis=-1, keepdims=True)
    prior = 8.0  # pseudo-counts of the coarse distribution in each fine class
    p = (fine + prior * coarse) / (fine.sum(axis=-1, keepdims=True) + prior)
    rate = -np.log2(p).reshape(2 * NUM_SCALE_CLASSES * NUM_RATE_CLASSES, MAX_RATE_LEVEL)
    rate[:, 1:] += 1.0  # sign
    return rate, scale


def dq_levels(values: np.ndarray, shape: tuple[int, ...], step: float, lam: float, passes: int = 2) -> np.ndarray:
    """Trellis levels (int64, C order) for ``values`` at ``step``."""
    from ._dq_kernel import scaled_values

    flat = np.ascontiguousarray(values).reshape(-1)
    if flat.dtype not in (np.float32, np.float64):  # the kernel reads binary32/64; others convert (bfloat16, ints)
        flat = flat.astype(np.float64)
    if flat.size == 0:
        return np.zeros(0, dtype=np.int64)
    scaled, levels, peak, finite = scaled_values(flat, float(step))  # levels: Q0 alone, a first guess for the rates
    if not finite:
        raise CodecError("dq: input holds NaN or infinity")
    if peak > _LIMIT:
        raise CodecError("dq: step too small, levels overflow")
    rows, rowlen = layout(shape)
    for _ in range(passes):
        rate, scale = _rate_table(levels, rows, rowlen)
        _trellis(scaled, rows, rowlen, float(lam), rate, scale, levels)  # the pass's levels replace the last
    return levels


def _trellis(scaled: np.ndarray, rows: int, rowlen: int, lam: float, rate: np.ndarray, scale: np.ndarray, out: np.ndarray) -> None:
    """The trellis over every row, into ``out``; rows are independent (each starts in
    state 0), so the ctx coder's segments of whole rows run on threads with the same
    result (a single row is never cut for dq levels: its state runs through it)."""
    from . import _dq_kernel

    def one(start: int, n: int, length: int, part: np.ndarray) -> None:
        end = start + n * length
        _dq_kernel.trellis(scaled[start:end], n, length, lam, rate, scale[start:end], part)

    filled_segments(one, segments(rows, rowlen, segment_size(rows, rowlen, dq=1)), out)


def dq_reconstruct(levels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Reconstruction indices (int64 multiples of the step) of ``levels``."""
    from . import _dq_kernel

    rows, rowlen = layout(shape)
    flat = np.ascontiguousarray(levels).reshape(-1)
    if flat.dtype.kind not in "iu":
        raise CodecError(f"dq: levels must be integers, not {flat.dtype}")
    if flat.size == 0:
        return np.zeros(0, dtype=np.int64)
    if flat.dtype.kind == "u":
        flat = flat.astype(np.int64)  # uint64 would not compare as signed in the kernel
    index, ok = _dq_kernel.reconstruct(flat, rows, rowlen, _LIMIT)
    if not ok:
        raise CodecError("dq: level out of range")
    return index


@register
@dataclass(frozen=True)
class DependentQuantizer(transform.TransformedQuantizer, ArrayToArray):
    """Levels from a 4-state trellis; decoded value ``index * step`` (see module doc)."""

    codec_id = 0x001B
    name = "dq"
    step: float = 1e-3
    lam: float = field(default=0.1, metadata=ENCODER_ONLY)
    #: trellis passes: the first prices levels by a rate table of plain rounding, each
    #: further one by the previous pass's levels (2: 0.1-0.2% smaller; levels coded
    #: through ``lpc`` gain nothing from the second, which prices them, not the residuals)
    passes: int = field(default=2, metadata=ENCODER_ONLY)
    #: kernel transform (spec/CONTEXT.md §6), stored only when set: the integer DCT of a
    #: kernel shape (``dct``, its dimensions as bytes) or an explicit int16 ``basis``
    dct: bytes = b""
    basis: bytes = b""
    shift: int = 0

    def __post_init__(self) -> None:
        check_step(self.step, self.lam)
        self.check_transform()
        if self.passes < 1:
            raise ValueError("passes must be >= 1")

    def encoded_spec(self, spec: ArraySpec) -> ArraySpec:
        return ArraySpec(transform.level_shape(spec.shape, self.kernel_transform), "int32")

    def encode(self, values: np.ndarray, spec: ArraySpec) -> tuple[np.ndarray, DependentQuantizer]:
        kernel = self.kernel_transform
        shape = transform.level_shape(spec.shape, kernel)
        if kernel is not None:
            values = transform.forward(values, spec.shape, kernel)
        levels = dq_levels(values, shape, self.step, self.lam, self.passes)
        return levels.astype(np.int32).reshape(shape), DependentQuantizer(self.step, dct=self.dct, basis=self.basis, shift=self.shift)

    def decode(self, encoded: np.ndarray, spec: ArraySpec) -> np.ndarray:
        kernel = self.kernel_transform
        index = dq_reconstruct(encoded, transform.level_shape(spec.shape, kernel))
        if kernel is not None:
            return transform.inverse(index, spec.shape, kernel, self.step, spec.dtype, self.name)
        return reconstruct(index, self.step, spec, self.name)
