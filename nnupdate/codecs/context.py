"""``ctx``: context-adaptive binary arithmetic coding of quantization levels.

Why: update magnitudes vary strongly from row to row and filter to filter, and dead
units leave whole rows at zero. An order-0 model (one histogram per tensor) cannot see
that; adaptive binary contexts built from the neighbouring levels can, which is how
DeepCABAC (MPEG NNC) beats order-0 coders. This stage is that idea with an integer-only
model (spec/CONTEXT.md): the decoder's context state is a function of already decoded
integers alone, so decoding is bit-exact everywhere.

Scan order follows the tensor layout: a tensor of shape ``(d0, d1, ...)`` is coded as
``d0`` rows (output channels of a Conv, output units of a Linear) of ``d1*d2*...``
levels in C order; 0-d and 1-d tensors are one row. Every row starts with a skip flag,
so an all-zero row costs a fraction of a bit.

A tensor of millions of elements is cut into segments of whole rows (``seg`` rows each;
a single row, runs of ``seg`` elements), each an independent stream: one huge embedding
or flattened update then encodes and decodes on every core, for a few hundred bytes of
relearned statistics per segment of ~2M elements.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from .. import parallel
from ..errors import CodecError
from ..format import ParamValue
from .base import ENCODER_ONLY, ArraySpec, ArrayToBytes, check_integer_symbols, register

MAX_NGT = 16
#: largest |level| the stream carries (the kernel's MAX_MAGNITUDE; its decoder refuses more)
MAX_LEVEL = (1 << 31) - 1
DEFAULT_NGT = 4
#: tensors up to this many elements are coded with both adaptation profiles (smaller wins);
#: above it profile 1 saves under 0.1% on the issue-7 workloads and would cost a second encode
FAST_PROFILE_MAX = 1 << 12
#: the encoder cuts tensors of at least twice this many elements into segments of about
#: this many (:func:`segment_size`)
SEGMENT_ELEMENTS = 1 << 21
T = TypeVar("T")
_STATUS = {
    2: "code value outside the coding interval",
    3: "level magnitude overflows",
    4: "trailing bytes after the stream",
    5: "check bits differ",
}


def segment_size(rows: int, rowlen: int, dq: int = 0) -> int:
    """The ``seg`` the encoder uses for a ``rows`` x ``rowlen`` scan: 0 (one stream) below
    2 * SEGMENT_ELEMENTS elements, else whole rows holding about SEGMENT_ELEMENTS elements,
    or for a single row runs of SEGMENT_ELEMENTS. RDOQ and the dq trellis follow the same
    cut, so RDOQ's model restarts with the coder's.

    A single row of ``dq`` levels stays whole: a run would restart the coder's copy of the
    dq state, which then disagrees with the quantizer's (running on through the row) to
    the run's end (+2.4% measured)."""
    if rows * rowlen < 2 * SEGMENT_ELEMENTS or (dq and rows == 1):
        return 0
    return SEGMENT_ELEMENTS if rows == 1 else max(1, SEGMENT_ELEMENTS // max(rowlen, 1))


def segment_count(rows: int, rowlen: int, seg: int) -> int:
    """How many segments ``seg`` cuts a ``rows`` x ``rowlen`` scan into (§2.6): rows of
    ``seg`` rows, or for a single row runs of ``seg`` elements."""
    span = rowlen if rows == 1 else rows
    return 1 if seg <= 0 or seg >= span else -(-span // seg)


def segments(rows: int, rowlen: int, seg: int) -> list[tuple[int, int, int]]:
    """(first element, rows, row length) of each segment of a ``rows`` x ``rowlen`` scan."""
    if segment_count(rows, rowlen, seg) == 1:
        return [(0, rows, rowlen)]
    if rows == 1:
        return [(start, 1, min(seg, rowlen - start)) for start in range(0, rowlen, seg)]
    return [(first * rowlen, min(seg, rows - first), rowlen) for first in range(0, rows, seg)]


def map_segments(fn: Callable[[int, int, int], T], parts: list[tuple[int, int, int]]) -> list[T]:
    """``fn(first element, rows, row length)`` of every segment, on threads, in order."""
    return parallel.ordered_map(lambda part: fn(*part), parts, [n * length for _, n, length in parts])


def filled_segments(
    fill: Callable[[int, int, int, np.ndarray], object], parts: list[tuple[int, int, int]], out: np.ndarray
) -> np.ndarray:
    """:func:`map_segments` of a per-segment kernel that writes its levels into its own
    slice of ``out`` (``fill(first element, rows, row length, slice)``); returns ``out``.

    Why not join per-segment arrays: on an 8M-element tensor the two joins of the dq
    trellis's passes alone took 7% of the encode, and every fresh array of that size
    pays its page faults again."""
    map_segments(lambda start, n, length: fill(start, n, length, out[start : start + n * length]), parts)
    return out


def layout(shape: tuple[int, ...]) -> tuple[int, int]:
    """(rows, row length) of the scan for a tensor of ``shape``."""
    if len(shape) >= 2:
        rows = int(shape[0])
        rowlen = 1
        for d in shape[1:]:
            rowlen *= int(d)
        return rows, rowlen
    n = 1
    for d in shape:
        n *= int(d)
    return 1, n


@register
@dataclass(frozen=True)
class Context(ArrayToBytes):
    """Context-adaptive binary range coder over integer levels (|q| < 2**31)."""

    codec_id = 0x0028
    name = "ctx"
    lossless = True
    #: greater-than-k flags before the exp-Golomb remainder
    ngt: int = DEFAULT_NGT
    #: check bits coded after the last level (0-32): the stage's own corruption check, on
    #: top of the container's CRC-32C; each bit costs one bit per tensor
    check: int = 0
    #: 1 when the levels come from dependent quantization: the coder then tracks the
    #: dq state machine and gives each of its two quantizers its own significance contexts
    dq: int = 0
    #: rows per segment, or elements per run of a single-row scan (spec/CONTEXT.md §2.6);
    #: 0: one stream. The encoder picks it for 2 * SEGMENT_ELEMENTS elements or more
    seg: int = 0
    #: low bits of every value sent raw, ahead of the coded high part (spec/CONTEXT.md
    #: §2.7): for wide integers (lossless float steps of ~2**17) whose low bits are noise,
    #: which would cost as much through the coder at one binary decision each
    low: int = 0
    #: the encoder picks ``low`` from the values' median magnitude (stored as ``low``)
    auto_low: int = field(default=0, metadata=ENCODER_ONLY)

    def __post_init__(self) -> None:
        if self.dq not in (0, 1):
            raise ValueError("dq must be 0 or 1")
        if self.seg < 0:
            raise ValueError("seg must be >= 0")
        if not 0 <= self.low <= MAX_LOW or (self.low and self.dq):
            raise ValueError(f"low must lie in [0, {MAX_LOW}] (0 with dq)")
        if not 1 <= self.ngt <= MAX_NGT:
            raise ValueError(f"ngt must lie in [1, {MAX_NGT}]")
        if not 0 <= self.check <= 32:
            raise ValueError("check must lie in [0, 32]")

    def params(self) -> dict[str, ParamValue]:
        """Only parameters that differ from their defaults are stored (a missing one reads as its default)."""
        out: dict[str, ParamValue] = {}
        if self.ngt != DEFAULT_NGT:
            out["ngt"] = self.ngt
        if self.check != 0:
            out["check"] = self.check
        if self.dq != 0:
            out["dq"] = self.dq
        if self.seg != 0:
            out["seg"] = self.seg
        if self.low != 0:
            out["low"] = self.low
        return out

    def encode(self, values: np.ndarray, spec: ArraySpec) -> tuple[bytes, Context]:
        symbols = check_integer_symbols(values, self.name)
        if symbols.size != spec.size:
            raise CodecError(f"ctx: {symbols.size} values for a {spec.shape} array")
        if symbols.size == 0:
            return b"", self
        if int(symbols.max()) > MAX_LEVEL or int(symbols.min()) < -MAX_LEVEL:
            raise CodecError("ctx: levels must lie in [-(2**31-1), 2**31-1]")
        levels = np.ascontiguousarray(symbols, dtype=np.int64).reshape(-1)
        low = _pick_low(levels) if self.auto_low and not self.dq else self.low
        if low:
            raw = _pack_low(levels, low)
            coded, stage = dataclasses.replace(self, low=0, auto_low=0)._encode_levels(levels >> low, spec)
            return raw + coded, dataclasses.replace(stage, low=low)
        return self._encode_levels(levels, spec)

    def _encode_levels(self, levels: np.ndarray, spec: ArraySpec) -> tuple[bytes, Context]:
        rows, rowlen = layout(spec.shape)
        from . import _context_kernel  # numba compiles on first use; keep CLI start-up fast
        seg = self.seg or segment_size(rows, rowlen, self.dq)
        if segment_count(rows, rowlen, seg) > 1:
            return self._encode_segments(levels, segments(rows, rowlen, seg), seg)
        data = _context_kernel.encode(levels, rows, rowlen, self.ngt, self.check, self.dq, 0)
        if levels.size <= FAST_PROFILE_MAX:
            # small tensors: also try fast adaptation (profile 1) and keep the smaller stream
            fast = _context_kernel.encode(levels, rows, rowlen, self.ngt, self.check, self.dq, 1)
            if fast.size < data.size:
                data = fast
        return data.tobytes(), dataclasses.replace(self, seg=0)

    def _encode_segments(self, levels: np.ndarray, parts: list[tuple[int, int, int]], seg: int) -> tuple[bytes, Context]:
        """Each segment an independent stream (on threads), after the byte lengths of all
        but the last as uint32 little-endian (§2.6)."""
        from . import _context_kernel

        def one(start: int, n: int, length: int) -> bytes:
            chunk = levels[start : start + n * length]
            return bytes(_context_kernel.encode(chunk, n, length, self.ngt, self.check, self.dq, 0))

        streams = map_segments(one, parts)
        if any(len(stream) >= 1 << 32 for stream in streams[:-1]):
            raise CodecError("ctx: a segment's stream exceeds 4 GiB; use smaller segments")
        head = np.array([len(stream) for stream in streams[:-1]], dtype="<u4").tobytes()
        return head + b"".join(streams), dataclasses.replace(self, seg=seg)

    def decode(self, data: bytes, spec: ArraySpec) -> np.ndarray:
        if spec.size == 0:
            if data:
                raise CodecError("ctx: payload for an empty array must be empty")
            return integer_levels(np.zeros(0, dtype=np.int64), spec)
        if self.low:
            size = -(-spec.size * self.low // 8)
            if len(data) < size:
                raise CodecError(f"ctx: payload too short for {self.low} raw low bits of {spec.size} values")
            high = dataclasses.replace(self, low=0)._decode_levels(data[size:], spec)
            return integer_levels((high << self.low) + _unpack_low(data[:size], spec.size, self.low), spec, wide=True)
        return integer_levels(self._decode_levels(data, spec), spec)

    def _decode_levels(self, data: bytes, spec: ArraySpec) -> np.ndarray:
        """The coded levels (int64, C order) of ``data``: one stream or segments (§2.6)."""
        rows, rowlen = layout(spec.shape)
        count = segment_count(rows, rowlen, self.seg)
        if count == 1:
            return self._decode_stream(np.frombuffer(data, dtype=np.uint8), rows, rowlen)
        if len(data) < 4 * (count - 1):  # checked before the segment list is built
            raise CodecError(f"ctx: payload too short for the lengths of {count} segments")
        lengths = np.frombuffer(data, dtype="<u4", count=count - 1).astype(np.int64)
        ends = 4 * (count - 1) + np.cumsum(lengths)
        if ends.size and int(ends[-1]) > len(data):
            raise CodecError("ctx: segment lengths exceed the payload")
        parts = segments(rows, rowlen, self.seg)
        body = np.frombuffer(data, dtype=np.uint8)
        stream = {start: body[lo:hi] for (start, _, _), lo, hi in zip(parts, [4 * (count - 1), *ends.tolist()], [*ends.tolist(), len(data)])}

        def one(start: int, n: int, length: int, out: np.ndarray) -> None:
            self._decode_stream(stream[start], n, length, out)

        return filled_segments(one, parts, np.empty(rows * rowlen, dtype=np.int64))

    def _decode_stream(self, data: np.ndarray, rows: int, rowlen: int, out: np.ndarray | None = None) -> np.ndarray:
        from . import _context_kernel

        out = np.empty(rows * rowlen, dtype=np.int64) if out is None else out
        status = _context_kernel.decode(data, rows, rowlen, self.ngt, self.check, self.dq, out)
        if status:
            raise CodecError(f"ctx: corrupt stream ({_STATUS.get(int(status), 'unknown defect')})")
        return out

    def max_encoded_size(self, spec: ArraySpec) -> int:
        # Worst case per level: (2 + ngt + 32) context bins of < 9 bits and 31 bypass bits.
        # and per segment (§2.6): a length, the coder's start and flush, its check bits
        rows, rowlen = layout(spec.shape)
        raw = -(-spec.size * self.low // 8)
        return raw + 80 * segment_count(rows, rowlen, self.seg) + spec.size * ((2 + self.ngt + 32) * 9 + 31 + 7) // 8 + 8 * rows


#: at most this many raw low bits per value (§2.7)
MAX_LOW = 31
#: ``auto_low`` keeps this many bits of the median magnitude for the coder: the high part
#: it codes then carries the distribution's shape, the raw low bits only noise
CODED_BITS = 3


def _pick_low(levels: np.ndarray) -> int:
    """Raw low bits for ``levels``: all but CODED_BITS of the median magnitude's (0 for
    levels under 2**(CODED_BITS + 1), where the coder is as fast as raw bits)."""
    if levels.size == 0:
        return 0
    every = max(1, levels.size // 65536)
    median = float(np.median(np.abs(levels[::every])))
    return max(0, min(MAX_LOW, int(np.floor(np.log2(median))) - CODED_BITS)) if median >= 1 << (CODED_BITS + 1) else 0


def _pack_low(levels: np.ndarray, low: int) -> bytes:
    """The low ``low`` bits of every value (two's complement), value after value, least
    significant bit first, bit j of the stream in bit j % 8 of byte j // 8 (§2.7): the
    fixed-width packing of ``bitpack``."""
    from . import _bits_kernel

    return _bits_kernel.pack((levels & ((1 << low) - 1)).astype(np.uint64), low).tobytes()


def _unpack_low(data: bytes, count: int, low: int) -> np.ndarray:
    """The inverse of :func:`_pack_low`: ``count`` values of ``low`` bits (int64)."""
    from . import _bits_kernel

    return _bits_kernel.unpack(np.frombuffer(data, dtype=np.uint8), count, low).astype(np.int64)


def integer_levels(values: np.ndarray, spec: ArraySpec, wide: bool = False, what: str = "ctx") -> np.ndarray:
    """``values`` in the spec's integer type, refused if one does not fit. Levels decoded
    by ``ctx`` (or predicted back by ``lpc``) lie within +-(2**31 - 1) plus one, so an int32
    or wider signed target needs no check; with raw low bits (``wide``, §2.7) they reach
    2**(31 + low), and every target is checked."""
    from .. import dtypes

    dtype = dtypes.storage_dtype(spec.dtype)
    if dtype.kind not in "iu":
        raise CodecError(f"{what}: cannot produce {spec.dtype}")
    info = np.iinfo(dtype)  # type: ignore[type-var]
    fits = not wide and info.min <= -MAX_LEVEL - 1 and info.max >= MAX_LEVEL
    if not fits and values.size and (int(values.min()) < info.min or int(values.max()) > info.max):
        raise CodecError(f"{what}: decoded values overflow {spec.dtype}")
    return values.astype(dtype).reshape(spec.shape)


def _register_coder() -> None:
    from .presets import register_coder

    register_coder("ctx", ((Context(),),))


_register_coder()
