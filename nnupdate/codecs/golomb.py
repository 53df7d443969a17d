"""``golomb``: positions of nonzero symbols as Golomb-Rice coded gaps, then their values (0x0022).

Made for sparse symbol arrays (top-k, SBC): the cost is driven by how many symbols are
nonzero, not by the array length. Gaps between consecutive nonzero positions are
roughly geometric, for which a Golomb code is optimal; we use the power-of-two
(Rice) member and choose its parameter by counting the exact bits of every candidate
``k`` in 0..31 on the actual gaps, rather than the closed-form estimate of Sattler et
al. (which assumes exactly geometric gaps). Values are either one constant (SBC sends
only the sign's mean, so the symbols are all 1) or Rice-coded with their own parameter.

Payload: uvarint K (nonzeros); if K > 0: u8 k_gap; u8 mode; mode 0: svarint constant
value; mode 1: u8 k_value; then one bit stream: K gap codes, then (mode 1) K value codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import CodecError
from .base import ArraySpec, ArrayToBytes, check_integer_symbols, register
from .rans import _to_spec
from .varint import Reader, write_uvarint, zigzag

MAX_K = 62  #: enough for any value below 2**62 to have a 1-bit quotient


def _rice_bits(u: np.ndarray, k: int, top: int) -> int:
    """Exact Rice(k) length of ``u`` in bits (sums cannot wrap: split when they could)."""
    q = u >> np.uint64(k)
    if top - k < 32 and u.size < 1 << 31:  # every quotient < 2**32: a uint64 sum is exact
        unary = int(np.sum(q, dtype=np.uint64))
    else:  # two 32-bit halves; an undercount would under-allocate the encoder's buffer
        unary = (int(np.sum(q >> np.uint64(32), dtype=np.uint64)) << 32) + int(np.sum(q & np.uint64(0xFFFFFFFF), dtype=np.uint64))
    return unary + u.size * (k + 1)


def best_rice_parameter(u: np.ndarray) -> tuple[int, int]:
    """(k, total bits) minimising the Rice code length of non-negative ``u`` (exact count).

    The length is convex in k with its minimum near log2(mean); the exact count is
    evaluated on a window around that estimate, widened while the minimum sits at its edge.
    """
    if u.size == 0:
        return 0, 0
    top = int(u.max()).bit_length()
    mean = float(np.mean(u, dtype=np.float64))
    guess = int(np.clip(np.floor(np.log2(mean)) if mean >= 1 else 0, 0, MAX_K))
    lo, hi = max(0, guess - 2), min(MAX_K, guess + 2, top)
    lo = min(lo, hi)
    bits = {k: _rice_bits(u, k, top) for k in range(lo, hi + 1)}
    while True:
        best = min(bits, key=lambda k: (bits[k], k))
        if best == lo and lo > 0:
            lo -= 1
            bits[lo] = _rice_bits(u, lo, top)
        elif best == hi and hi < min(MAX_K, top):
            hi += 1
            bits[hi] = _rice_bits(u, hi, top)
        else:
            return best, bits[best]


def _value_code(v: np.ndarray) -> np.ndarray:
    """Nonzero values -> non-negative ints: zigzag(v) - 1 (v != 0, so zigzag(v) >= 1)."""
    return np.where(v > 0, 2 * v - 2, -2 * v - 1).astype(np.uint64)


def _value_uncode(u: np.ndarray) -> np.ndarray:
    s = u.astype(np.int64)
    return np.where(s % 2 == 0, s // 2 + 1, -(s + 1) // 2)


@register
@dataclass(frozen=True)
class GolombRice(ArrayToBytes):
    """Rice-coded gaps between nonzero symbols plus Rice-coded (or constant) values; no parameters."""

    codec_id = 0x0022
    name = "golomb"
    lossless = True

    def encode(self, values: np.ndarray, spec: ArraySpec) -> tuple[bytes, GolombRice]:
        flat = check_integer_symbols(values, self.name)
        if flat.size and (int(flat.max()) >= 1 << 62 or int(flat.min()) <= -(1 << 62)):
            raise CodecError("golomb: values beyond +-2**62")
        nz = np.flatnonzero(flat)
        out = bytearray()
        write_uvarint(out, int(nz.size))
        if nz.size == 0:
            return bytes(out), self
        gaps = np.diff(nz, prepend=-1).astype(np.uint64) - np.uint64(1)
        k_gap, gap_bits = best_rice_parameter(gaps)
        vals = flat[nz]
        constant = bool(np.all(vals == vals[0]))
        out.append(k_gap)
        out.append(0 if constant else 1)
        value_bits = 0
        if constant:
            write_uvarint(out, zigzag(int(vals[0])))
        else:
            codes = _value_code(vals)
            k_val, value_bits = best_rice_parameter(codes)
            out.append(k_val)
        from . import _bits_kernel

        stream = np.zeros((gap_bits + value_bits) // 8 + 16, dtype=np.uint8)
        state = _bits_kernel.rice_encode(gaps, k_gap, stream, 0, np.uint64(0), 0)
        if not constant and state[0] >= 0:
            state = _bits_kernel.rice_encode(codes, k_val, stream, *state)
        nbytes, buf, nbits = state
        if nbytes < 0:
            raise CodecError("golomb: internal size estimate exceeded")  # never expected; guards memory
        if nbits:
            stream[nbytes] = int(buf) & 0xFF
            nbytes += 1
        out += stream[:nbytes].tobytes()
        return bytes(out), self

    def decode(self, data: bytes, spec: ArraySpec) -> np.ndarray:
        n = spec.size
        r = Reader(data)
        count = r.uvarint()
        flat = np.zeros(n, dtype=np.int64)
        if count > n:
            raise CodecError("golomb: more nonzeros than elements")
        if count == 0:
            if r.remaining:
                raise CodecError("golomb: trailing bytes after the stream")
            return _to_spec(flat, spec)
        k_gap = r.u8()
        mode = r.u8()
        if k_gap > MAX_K or mode > 1:
            raise CodecError("golomb: invalid header")
        constant = 0
        k_val = 0
        if mode == 0:
            constant = r.svarint()
            if constant == 0 or abs(constant) >= 1 << 62:
                raise CodecError("golomb: invalid constant value")
        else:
            k_val = r.u8()
            if k_val > MAX_K:
                raise CodecError("golomb: invalid value parameter")
        stream = np.frombuffer(bytes(r.rest()), dtype=np.uint8)
        from . import _bits_kernel

        gaps, pos = _bits_kernel.rice_decode(stream, 0, count, k_gap, np.uint64(n - 1))
        if pos < 0:
            raise CodecError("golomb: corrupt gap stream")
        positions = np.cumsum(gaps.astype(np.int64) + 1) - 1
        if positions[-1] >= n:
            raise CodecError("golomb: a position lies past the end of the array")
        if mode == 0:
            flat[positions] = constant
        else:
            codes, pos = _bits_kernel.rice_decode(stream, pos, count, k_val, np.uint64((1 << 63) - 3))
            if pos < 0:
                raise CodecError("golomb: corrupt value stream")
            flat[positions] = _value_uncode(codes)
        if (pos + 7) // 8 != stream.size or (pos % 8 and int(stream[-1]) >> (pos % 8)):
            raise CodecError("golomb: trailing bytes or nonzero padding after the stream")
        return _to_spec(flat, spec)

    def max_encoded_size(self, spec: ArraySpec) -> int:
        return 64 + 20 * spec.size
