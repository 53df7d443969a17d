"""``rans``: order-0 range asymmetric numeral system coder over integer symbols.

The frequency table travels in the payload, quantized to integers summing to 2**P, so
the decoder rebuilds the model from integers alone: no floating point, no libm.
Symbols far from the bulk are escaped (coded as one escape symbol plus a zigzag varint)
so arbitrarily large values round-trip without a huge table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import dtypes
from ..errors import CodecError
from ..format import ParamValue
from .base import ENCODER_ONLY, ArraySpec, ArrayToBytes, check_integer_symbols, register
from .varint import Reader, uvarint_bytes, write_uvarint, zigzag, zigzag_array

#: Largest model alphabet, escape symbol included; larger ranges use escapes.
MAX_ALPHABET = 4096
MIN_PRECISION = 10
#: the decoder's slot->symbol table has 2**_BUCKET_BITS entries (fits in L1/L2)
_BUCKET_BITS = 12
_NO_BUCKET = np.zeros(0, dtype=np.int32)
MAX_PRECISION = 20
MAX_LANES = 32
#: Interleaved coding pays its extra states (8 bytes per lane) only on larger tensors.
LANE_POLICY: tuple[tuple[int, int], ...] = ((1 << 13, 8),)
#: with lanes, the encoder keeps precision at most this, so the decoder's full slot
#: table (2**P uint16) stays in L1; the rate cost is a few hundredths of a percent
LANES_MAX_PRECISION = 14


def lanes_for(n: int) -> int:
    """The encoder's lane count for ``n`` symbols (informative: any 1..32 decodes)."""
    return next((lanes for size, lanes in LANE_POLICY if n >= size), 1)


def choose_precision(n: int, alphabet: int) -> int:
    """Bits of frequency precision: enough to resolve 1/n probabilities, at most 20."""
    need = max(n.bit_length() + 1, alphabet.bit_length() + 1, MIN_PRECISION)
    return min(need, MAX_PRECISION)


def normalize_counts(counts: np.ndarray, precision: int) -> np.ndarray:
    """Integer frequencies summing to ``2**precision``; every present symbol keeps >= 1.

    Scales proportionally, then hands the rounding surplus or deficit to the symbols
    whose cost changes least (largest counts first). Encoder-side only: the decoder
    reads the result and never recomputes it.
    """
    total = int(counts.sum())
    target = 1 << precision
    present = counts > 0
    freq = np.zeros(counts.shape, dtype=np.int64)
    freq[present] = np.maximum(1, (counts[present].astype(np.float64) * target / total).astype(np.int64))
    diff = target - int(freq.sum())
    order = np.argsort(-counts, kind="stable")
    if diff > 0:
        freq[order[0]] += diff
        diff = 0
    for s in order:
        if diff >= 0:
            break
        take = min(-diff, int(freq[s]) - 1)
        freq[s] -= take
        diff += take
    if diff != 0:
        raise CodecError("rans: alphabet too large for the frequency precision")
    return freq


_LANE_DEFECTS = {1: "stream length is inconsistent", 2: "initial state out of range", 3: "corrupt stream (words exhausted)",
                 4: "corrupt stream (final state check failed)"}
_INT32_MIN = -(1 << 31)
_INT32_MAX = (1 << 31) - 1
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1


def _window(values: np.ndarray) -> tuple[int, int]:
    """[lo, hi] of symbols modelled directly: everything if it fits, else the densest window.

    The window never reaches past the int64 range, so ``lo + index`` cannot overflow in
    the decoder (spec/FORMAT.md requires decoders to refuse a header that would).
    """
    lo, hi = int(values.min()), int(values.max())
    if hi - lo + 1 <= MAX_ALPHABET:
        return lo, hi
    uniq, counts = np.unique(values, return_counts=True)
    width = MAX_ALPHABET - 1  # one slot is the escape symbol
    csum = np.concatenate(([0], np.cumsum(counts)))
    # uniq + width in exact integers: clip the ends at int64 max instead of wrapping.
    limit = np.minimum(uniq, np.int64(_INT64_MAX - width)) + width
    ends = np.searchsorted(uniq, limit, side="left")
    covered = csum[ends] - csum[np.arange(len(uniq))]
    best = int(np.argmax(covered))
    start = min(int(uniq[best]), _INT64_MAX - width + 1)
    return start, start + width - 1


@register
@dataclass(frozen=True)
class Rans(ArrayToBytes):
    """Static order-0 rANS; the model is the symbol histogram, sent in the payload.

    ``lanes`` > 1 interleaves that many rANS states over the symbols (symbol ``i`` in lane
    ``i mod lanes``), so a decoder keeps several independent state updates in flight:
    3-4x faster decoding for 8 bytes per extra lane. ``auto_lanes`` (1: the encoder's
    switch, not stored) picks the count from the tensor size.
    """

    codec_id = 0x0020
    name = "rans"
    lossless = True
    lanes: int = 1
    auto_lanes: int = field(default=1, metadata=ENCODER_ONLY)

    def __post_init__(self) -> None:
        if not 1 <= self.lanes <= MAX_LANES:
            raise ValueError(f"lanes must lie in [1, {MAX_LANES}]")

    def params(self) -> dict[str, ParamValue]:
        """``lanes`` is stored only when it is not 1, so single-lane streams keep their bytes."""
        return {"lanes": self.lanes} if self.lanes != 1 else {}

    def encode(self, values: np.ndarray, spec: ArraySpec) -> tuple[bytes, Rans]:
        symbols = check_integer_symbols(values, self.name)
        out = bytearray()
        lanes = lanes_for(symbols.size) if self.auto_lanes else self.lanes
        resolved = Rans(lanes=lanes, auto_lanes=0)
        if symbols.size == 0:
            return bytes(out), resolved
        lo, hi = _window(symbols)
        escaped = (symbols < lo) | (symbols > hi)
        has_escape = bool(escaped.any())
        alphabet = hi - lo + 1 + int(has_escape)
        index = symbols - lo
        if has_escape:
            index = np.where(escaped, alphabet - 1, index)
        counts = np.bincount(index, minlength=alphabet)
        precision = choose_precision(symbols.size, alphabet)
        if lanes > 1:
            precision = min(precision, LANES_MAX_PRECISION)
        freq = normalize_counts(counts, precision)
        write_uvarint(out, zigzag(lo))
        write_uvarint(out, alphabet)
        out.append(int(has_escape))
        out.append(precision)
        from . import _rans_kernel  # numba compiles on first use; keep CLI start-up fast

        out += _rans_kernel.write_uvarints(freq.astype(np.int64)).tobytes()
        if np.count_nonzero(freq) > 1:
            cum = np.concatenate(([0], np.cumsum(freq)[:-1])).astype(np.uint32)

            states, words = _rans_kernel.encode(index.astype(np.int32), freq.astype(np.uint32), cum, precision, lanes)
            write_uvarint(out, len(words))
            out += states.astype("<u8").tobytes()
            out += words.astype("<u4").tobytes()
        if has_escape:
            out += uvarint_bytes(zigzag_array(symbols[escaped]))
        return bytes(out), resolved

    def decode(self, data: bytes, spec: ArraySpec) -> np.ndarray:
        n = spec.size
        if n == 0:
            if data:
                raise CodecError("rans: payload for an empty array must be empty")
            return np.zeros(spec.shape, dtype=spec.dtype if spec.dtype != "bfloat16" else np.uint16)
        r, m = _read_model(data)
        lo, alphabet, has_escape, precision, freq, cum = m.lo, m.alphabet, m.has_escape, m.precision, m.freq, m.cum
        only = int(np.argmax(freq)) if m.nonzero == 1 else -1
        if only >= 0 and not (has_escape and only == alphabet - 1):
            # One symbol, no stream: a few bytes may stand for N elements, so build the
            # output directly in its own type (no N-sized int64 intermediates).
            if r.remaining:
                raise CodecError("rans: trailing bytes after the stream")
            return _constant(only + lo, spec)
        if only >= 0:
            index = np.full(n, only, dtype=np.int64)
        elif self.lanes > 1:
            fits32 = lo >= _INT32_MIN and lo + alphabet - 1 <= _INT32_MAX
            table = np.arange(alphabet, dtype=np.int64)
            if fits32:
                table += lo
            values32, r.pos = self._decode_lanes(data, r.pos, n, freq, cum, precision, table.astype(np.int32))
            if not has_escape:
                if r.remaining:
                    raise CodecError("rans: trailing bytes after the stream")
                if fits32 and dtypes.storage_dtype(spec.dtype) == np.dtype("<i4"):
                    return values32.reshape(spec.shape)
            index = values32.astype(np.int64)
            if fits32:
                index -= lo
        else:
            decoded = self._decode_serial(r, n, freq, cum, precision, alphabet)
            if not has_escape:
                if r.remaining:
                    raise CodecError("rans: trailing bytes after the stream")
                fast = _window_in_type(decoded, lo, alphabet, spec)
                if fast is not None:
                    return fast
            index = decoded.astype(np.int64)
        values = index + lo
        if has_escape:
            esc = index == alphabet - 1
            values[esc] = r.svarints(int(esc.sum()))  # every uint64 zigzag is an int64
        if r.remaining:
            raise CodecError("rans: trailing bytes after the stream")
        return _to_spec(values, spec)

    def _decode_lanes(
        self, data: bytes, pos: int, n: int, freq: np.ndarray, cum: np.ndarray, precision: int, symbol_values: np.ndarray
    ) -> tuple[np.ndarray, int]:
        from . import _rans_kernel

        out, status, end = _rans_kernel.decode_lanes(
            np.frombuffer(data, dtype=np.uint8), pos, n, self.lanes, freq, cum, precision, symbol_values
        )
        if status:
            raise CodecError(f"rans: {_LANE_DEFECTS[status]}")
        return out, end

    def decode_scaled(self, data: bytes, spec: ArraySpec, step: float) -> np.ndarray | None:
        """float32 ``RN(q * step)`` straight from a multi-lane stream without escapes."""
        if self.lanes == 1 or spec.size == 0:
            return None
        r, m = _read_model(data)
        if m.has_escape or m.nonzero < 2 or not (m.lo >= -(1 << 53) and m.lo + m.alphabet <= 1 << 53):
            return None  # escapes and constants take the general path; levels must be exact in binary64
        reconstructions = (np.arange(m.lo, m.lo + m.alphabet, dtype=np.int64).astype(np.float64) * step).astype(np.float32)
        out, r.pos = self._decode_lanes(data, r.pos, spec.size, m.freq, m.cum, m.precision, reconstructions)
        if r.remaining:
            raise CodecError("rans: trailing bytes after the stream")
        return out

    @staticmethod
    def _decode_serial(r: Reader, n: int, freq: np.ndarray, cum: np.ndarray, precision: int, alphabet: int) -> np.ndarray:
        """Symbol indices of a single-lane stream."""
        from . import _rans_kernel

        nwords = r.uvarint()
        if nwords > n + 1 or r.remaining < 8 + 4 * nwords:
            raise CodecError("rans: stream length is inconsistent")
        state = int.from_bytes(r.take(8), "little")
        if not (1 << 31) <= state < (1 << 63):
            raise CodecError("rans: initial state out of range")
        words = np.frombuffer(r.take(4 * nwords), dtype="<u4")
        # bucket table size: ~4 slots ranges per symbol, at most 2**_BUCKET_BITS
        bucket_bits = min(precision, _BUCKET_BITS, max(6, alphabet.bit_length() + 2))
        decoded, used, final = _rans_kernel.decode(np.uint64(state), words, n, freq, cum, _NO_BUCKET, precision, bucket_bits)
        if used != nwords or int(final) != 1 << 31:
            raise CodecError("rans: corrupt stream")
        return decoded  # type: ignore[no-any-return]

    def max_encoded_size(self, spec: ArraySpec) -> int:
        return 64 + 8 * self.lanes + 10 * MAX_ALPHABET + 12 * spec.size


@dataclass(frozen=True)
class _Model:
    """The model header of a rans payload, validated."""

    lo: int
    alphabet: int
    has_escape: int
    precision: int
    freq: np.ndarray
    cum: np.ndarray
    nonzero: int


def _read_model(data: bytes) -> tuple[Reader, _Model]:
    """Read and check the model header (spec/FORMAT.md 7.3); the reader is left after the
    frequency table."""
    r = Reader(data)
    lo = r.svarint()
    alphabet = r.uvarint()
    has_escape = r.u8()
    precision = r.u8()
    if not 1 <= alphabet <= MAX_ALPHABET or has_escape > 1 or not MIN_PRECISION <= precision <= MAX_PRECISION:
        raise CodecError("rans: invalid model header")
    if lo < _INT64_MIN or lo + alphabet - 1 - has_escape > _INT64_MAX:
        raise CodecError("rans: symbol window outside the int64 range")
    from . import _rans_kernel  # numba compiles on first use; keep CLI start-up fast

    freq, cum, r.pos, status, nonzero = _rans_kernel.read_model(np.frombuffer(data, dtype=np.uint8), r.pos, alphabet, precision)
    if status == 3:
        raise CodecError("rans: frequencies do not sum to 2**precision")
    if status:
        raise CodecError("rans: malformed frequency table")
    return r, _Model(lo, alphabet, has_escape, precision, freq, cum, nonzero)


def _window_in_type(index: np.ndarray, lo: int, alphabet: int, spec: ArraySpec) -> np.ndarray | None:
    """``index + lo`` computed directly in the output type when the whole symbol window
    fits it (no int64 intermediate, no range scan); None when it does not."""
    from .. import dtypes

    dtype = dtypes.storage_dtype(spec.dtype)
    if dtype.kind not in "iu" or dtype == np.dtype("<u8"):
        return None
    info = np.iinfo(dtype)  # type: ignore[type-var]
    if not (int(info.min) <= lo and lo + alphabet - 1 <= int(info.max)):
        return None
    out = index.astype(dtype)
    if lo:
        out += dtype.type(lo)
    return out.reshape(spec.shape)


def _constant(value: int, spec: ArraySpec) -> np.ndarray:
    """An array of ``spec`` filled with ``value`` (range-checked like :func:`_to_spec`)."""
    one = _to_spec(np.array([value], dtype=np.int64), ArraySpec((1,), spec.dtype))
    return np.full(spec.shape, one[0], dtype=one.dtype)


def _to_spec(values: np.ndarray, spec: ArraySpec) -> np.ndarray:
    """Symbols (int64) as the output element type, refusing values it cannot hold.

    uint64 is the exception: its symbols are the two's-complement int64 reading of the
    bits (``check_integer_symbols`` wraps the same way), so every int64 is valid.
    """
    from .. import dtypes

    dtype = dtypes.storage_dtype(spec.dtype)
    if dtype.kind not in "iub":
        raise CodecError(f"rans: cannot produce {spec.dtype}")
    if dtype == np.dtype("<u8"):
        return values.astype(dtype).reshape(spec.shape)
    lo, hi = (0, 1) if dtype.kind == "b" else (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))  # type: ignore[type-var]
    if values.size and (values.min() < lo or values.max() > hi):
        raise CodecError(f"rans: decoded values overflow {spec.dtype}")
    return values.astype(dtype).reshape(spec.shape)
