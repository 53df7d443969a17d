"""``lpc`` (0x001C): lossless linear prediction of integer levels across rows.

Why: the rows of an update (output units of a layer) are not independent draws. A
layer's gradient is a sum of outer products with its inputs, whose channels are
correlated, so the rows lie near a low-dimensional subspace: on ResNet-56's 1x1
convolutions, on rows it was not fitted to, their eigenbasis concentrates the energy by
0.3-0.7 bits per value, per-column scales by 0.06-0.09 (tools/bench_layer_groups.py).
Sending a basis costs more than it saves; this stage learns the predictor from the rows
already coded instead (a running LDL^T factor of their second moment), so the decoder
rebuilds it from the levels alone and the entropy coder sees only what the earlier
levels of the row did not predict.

The stage is lossless (integers in, integers out) and sits between a quantizer and the
entropy coder, so it changes no distortion. Its arithmetic is specified to the rounding
(spec/CONTEXT.md §7): binary64 operations in a fixed order, no library calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import CodecError
from ..format import ParamValue
from ..format.bodies import uvarint
from .base import ArraySpec, ArrayToArray, check_integer_symbols, register
from .context import integer_levels, layout

#: levels of a row predicted from the innovations of its first ``order`` levels
DEFAULT_ORDER = 64
MAX_ORDER = 256
#: at most this many planes per row (a kernel transform has at most 64 coefficients)
MAX_PLANES = 64
#: the predictor's factor holds min(order, row length) x row length binary64 values:
#: a decoder refuses more than this many (128 MiB) rather than allocate them
MAX_FACTOR = 1 << 24
#: :func:`histogram_bits` counts values beyond +-this in one bin each side
HISTOGRAM_CLIP = 64


def histogram_bits(levels: np.ndarray) -> float:
    """Bits of ``levels`` under their own order-0 histogram (values clipped to +-64): a
    cheap stand-in for what an adaptive coder spends, to compare levels with their
    residuals before coding either. Measured against ctx payloads on ResNet-56, FedAvg
    and transformer records at e = 0.05-0.3, the ratio residuals / levels lies within
    0.01 above and 0.05 below (rarely 0.3 below, where prediction pays anyway) the ratio
    of the payloads."""
    from . import _lpc_kernel

    return float(_lpc_kernel.histogram_bits(np.ascontiguousarray(levels).reshape(-1), HISTOGRAM_CLIP))


def pack_blocks(rows: list[int]) -> bytes:
    """The ``blocks`` parameter for blocks of ``rows`` rows each (uvarints)."""
    return b"".join(uvarint(r) for r in rows)


def block_starts(blocks: bytes, rows: int) -> np.ndarray:
    """First row of every block (int64, from 0); refuses a list that does not cover exactly
    ``rows`` rows with blocks of at least one row."""
    if not blocks:
        return np.zeros(1, dtype=np.int64)
    starts = []
    at = value = shift = 0
    for byte in blocks:
        if shift >= 35:
            raise CodecError("lpc: block row count too long")
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            if value < 1 or at + value > rows:
                raise CodecError(f"lpc: blocks do not cover the {rows} rows")
            starts.append(at)
            at += value
            value = shift = 0
    if shift or at != rows:
        raise CodecError(f"lpc: blocks do not cover the {rows} rows")
    return np.array(starts, dtype=np.int64)


@register
@dataclass(frozen=True)
class LinearPrediction(ArrayToArray):
    """Residuals of each level against its prediction from the row's earlier levels."""

    codec_id = 0x001C
    name = "lpc"
    lossless = True
    #: levels whose innovations predict the rest of the row (1-256)
    order: int = DEFAULT_ORDER
    #: row counts of the blocks the rows are cut into (uvarints; empty: one block); the
    #: predictor restarts at each block, e.g. at each member of a stacked TGRP group
    blocks: bytes = b""
    #: rows cut into this many equal planes, each predicted on its own: the coefficients of
    #: a kernel transform (CONTEXT.md §6) lie coefficient by coefficient along a row, and
    #: one coefficient's values across input channels share a subspace, another's not
    planes: int = 1
    #: 1: predict each block's columns from its earlier columns instead (the block's matrix
    #: transposed): a wide matrix has more columns than rows to learn a predictor from
    columns: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.order <= MAX_ORDER:
            raise ValueError(f"order must lie in [1, {MAX_ORDER}]")
        if not 1 <= self.planes <= MAX_PLANES:
            raise ValueError(f"planes must lie in [1, {MAX_PLANES}]")
        if self.columns not in (0, 1):
            raise ValueError("columns must be 0 or 1")

    def params(self) -> dict[str, ParamValue]:
        """Only non-default parameters are stored (a missing one reads as its default)."""
        out: dict[str, ParamValue] = {}
        if self.order != DEFAULT_ORDER:
            out["order"] = self.order
        if self.blocks:
            out["blocks"] = self.blocks
        if self.planes != 1:
            out["planes"] = self.planes
        if self.columns:
            out["columns"] = self.columns
        return out

    def encoded_spec(self, spec: ArraySpec) -> ArraySpec:
        return ArraySpec(spec.shape, "int32")

    def encode(self, values: np.ndarray, spec: ArraySpec) -> tuple[np.ndarray, LinearPrediction]:
        levels = check_integer_symbols(values, self.name)
        if levels.size and (int(levels.min()) < -(1 << 31) or int(levels.max()) >= 1 << 31):
            raise CodecError("lpc: levels outside the int32 range")
        residuals = self._run(levels, spec, forward=True)
        return residuals.astype(np.int32).reshape(spec.shape), self

    def decode(self, encoded: np.ndarray, spec: ArraySpec) -> np.ndarray:
        levels = self._run(check_integer_symbols(encoded, self.name), spec, forward=False)
        return integer_levels(levels, spec, what=self.name)  # the kernel kept them within int32

    def _run(self, values: np.ndarray, spec: ArraySpec, forward: bool) -> np.ndarray:
        from . import _lpc_kernel

        rows, rowlen = layout(spec.shape)
        if values.size != rows * rowlen:
            raise CodecError("lpc: value count does not match the shape")
        if rowlen % self.planes:
            raise CodecError(f"lpc: rows of {rowlen} do not split into {self.planes} planes")
        width = rowlen // self.planes
        starts = block_starts(self.blocks, rows)
        bounds = np.append(starts, rows)
        sizes = [(int(b - a), width) for a, b in zip(bounds[:-1], bounds[1:])]  # (rows, row length) per block
        if self.columns:
            sizes = [(n, length) for length, n in sizes]
        for count, length in sizes:
            if min(self.order, length) * length > MAX_FACTOR and count > _lpc_kernel.START_ROWS:
                raise CodecError(f"lpc: a row of {length} with order {self.order} exceeds the predictor's size limit")
        # plane-major: plane k of every row, as one R x width matrix after another
        planes = np.ascontiguousarray(values.reshape(rows, self.planes, width).transpose(1, 0, 2)).reshape(self.planes, rows, width)
        out = np.empty_like(planes, dtype=np.int64)
        for plane, result in zip(planes, out):
            if not self.columns:
                self._kernel(plane, rows, width, starts, forward, result)
                continue
            for a, b in zip(bounds[:-1], bounds[1:]):  # each block transposed on its own
                done = np.empty((width, int(b - a)), dtype=np.int64)
                self._kernel(np.ascontiguousarray(plane[a:b].T), width, int(b - a), np.zeros(1, dtype=np.int64), forward, done)
                result[a:b] = done.T
        return out.transpose(1, 0, 2).reshape(-1)

    def _kernel(self, matrix: np.ndarray, rows: int, rowlen: int, starts: np.ndarray, forward: bool, out: np.ndarray) -> None:
        from . import _lpc_kernel

        if _lpc_kernel.run(matrix.reshape(-1), rows, rowlen, self.order, starts, int(forward), out.reshape(-1)):
            raise CodecError("lpc: a level or residual leaves the int32 range")


@dataclass(frozen=True, eq=False)
class PredictedLevels(ArrayToArray):
    """The residuals of ``stage`` on the levels at hand, computed already (an encoder that
    looked at them to choose its tails): encoding hands them over as the stage's output
    instead of predicting twice. Never stored; its resolved stage is ``stage``."""

    codec_id = LinearPrediction.codec_id
    name = LinearPrediction.name
    lossless = True
    stage: LinearPrediction
    residuals: np.ndarray

    def encoded_spec(self, spec: ArraySpec) -> ArraySpec:
        return self.stage.encoded_spec(spec)

    def encode(self, values: np.ndarray, spec: ArraySpec) -> tuple[np.ndarray, LinearPrediction]:  # type: ignore[override]
        if self.residuals.shape != spec.shape:
            raise CodecError("lpc: precomputed residuals of another shape")
        return self.residuals, self.stage

    def decode(self, encoded: np.ndarray, spec: ArraySpec) -> np.ndarray:
        return self.stage.decode(encoded, spec)
