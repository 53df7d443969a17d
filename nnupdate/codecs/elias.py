"""``elias``: Elias-gamma zero-run-length coder of Mitchell et al. (0x0021).

Bit-compatible with tensorflow-compression's ``run_length_gamma_encode`` /
``run_length_gamma_decode`` ops, the coder their federated rate-distortion code used:
a payload written by that op decodes here and ours decodes there. For every nonzero
symbol: gamma(number of zeros before it + 1), one sign bit (1 = positive), gamma(|v|);
if the array ends in zeros, gamma(trailing zeros + 1); zero padding to a whole byte.
Gamma(v), v >= 1 with w = bit width of v: w-1 zero bits, a one bit, then the w-1 low
bits of v least significant first; bits fill bytes from the least significant bit up.

It wins on sparse or very peaked symbols (most values 0, a few small magnitudes), which
is exactly what stochastic rounding with a large step produces; an empty array codes
to zero bytes (the tfc decoder refuses an empty code; we accept it only for size 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import CodecError
from .base import ArraySpec, ArrayToBytes, check_integer_symbols, register
from .rans import _to_spec

#: tfc codes int32 tensors; the magnitude of INT32_MIN has no gamma code there.
MAX_MAGNITUDE = (1 << 31) - 1
#: zero-run counts are uint32 in tfc, so arrays stay below 2**32 - 1 elements.
MAX_ELEMENTS = (1 << 32) - 2

_ERRORS = {-1: "stream ends inside a code", -2: "gamma code longer than 32 bits", -3: "zero run past the end", -4: "magnitude out of range"}


def encode_symbols(symbols: np.ndarray) -> bytes:
    """The tfc ``run_length_gamma_encode`` bytes of an integer array (flattened)."""
    flat = check_integer_symbols(symbols, "elias")
    if flat.size > MAX_ELEMENTS:
        raise CodecError("elias: array too large for 32-bit run lengths")
    if flat.size and (int(flat.max()) > MAX_MAGNITUDE or int(flat.min()) < -MAX_MAGNITUDE):  # not abs(): INT64_MIN
        raise CodecError("elias: magnitudes above 2**31 - 1 have no code")
    if flat.size == 0:
        return b""
    from . import _bits_kernel

    return _bits_kernel.elias_rle_encode(np.ascontiguousarray(flat)).tobytes()


def decode_symbols(data: bytes, n: int) -> np.ndarray:
    """Inverse of :func:`encode_symbols`: ``n`` int64 values; strict about trailing bytes and padding."""
    if n == 0:
        if data:
            raise CodecError("elias: payload for an empty array must be empty")
        return np.zeros(0, dtype=np.int64)
    if n > MAX_ELEMENTS:
        raise CodecError("elias: array too large for 32-bit run lengths")
    if not data:
        raise CodecError("elias: empty payload")
    from . import _bits_kernel

    buf = np.frombuffer(data, dtype=np.uint8)
    values, pos = _bits_kernel.elias_rle_decode(buf, n)
    if pos < 0:
        raise CodecError(f"elias: corrupt stream ({_ERRORS.get(pos, 'error')})")
    if (pos + 7) // 8 != len(data):
        raise CodecError("elias: trailing bytes after the stream")
    if pos % 8 and int(buf[-1]) >> (pos % 8):
        raise CodecError("elias: nonzero padding bits")
    return values


@register
@dataclass(frozen=True)
class EliasGammaRLE(ArrayToBytes):
    """Zero runs and magnitudes in Elias-gamma codes (tfc ``run_length_gamma``); no parameters."""

    codec_id = 0x0021
    name = "elias"
    lossless = True

    def encode(self, values: np.ndarray, spec: ArraySpec) -> tuple[bytes, EliasGammaRLE]:
        return encode_symbols(values), self

    def decode(self, data: bytes, spec: ArraySpec) -> np.ndarray:
        return _to_spec(decode_symbols(data, spec.size), spec)

    def max_encoded_size(self, spec: ArraySpec) -> int:
        return 16 + 9 * spec.size
