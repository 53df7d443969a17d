"""``bitpack``: fixed-width packing of integer symbols (0x0023).

The cheapest coder to run and the reference point for "no modelling at all": each
symbol minus the minimum in ``w`` bits, where ``w`` is the bit width of max - min.
It beats entropy coders only when symbols are close to uniform over a power-of-two
range (e.g. QSGD with many levels on heavy-tailed data is not that case).

Payload: svarint lo; u8 w (0..64); ceil(n*w/8) bytes, value i occupying bits
[i*w, (i+1)*w) of the stream, least significant bit first, zero padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import CodecError
from .base import ArraySpec, ArrayToBytes, check_integer_symbols, register
from .rans import _to_spec
from .varint import Reader, write_uvarint, zigzag


@register
@dataclass(frozen=True)
class BitPack(ArrayToBytes):
    """Offset plus fixed-width little-endian bit fields; no parameters."""

    codec_id = 0x0023
    name = "bitpack"
    lossless = True

    def encode(self, values: np.ndarray, spec: ArraySpec) -> tuple[bytes, BitPack]:
        flat = check_integer_symbols(values, self.name)
        out = bytearray()
        if flat.size == 0:
            return b"", self
        lo = int(flat.min())
        span = int(flat.max()) - lo
        width = span.bit_length()
        write_uvarint(out, zigzag(lo))
        out.append(width)
        if width:
            from . import _bits_kernel

            u = flat.astype(np.uint64) - np.uint64(lo & ((1 << 64) - 1))  # modulo 2**64, exact for any span
            out += _bits_kernel.pack(u, width).tobytes()
        return bytes(out), self

    def decode(self, data: bytes, spec: ArraySpec) -> np.ndarray:
        n = spec.size
        if n == 0:
            if data:
                raise CodecError("bitpack: payload for an empty array must be empty")
            return _to_spec(np.zeros(0, dtype=np.int64), spec)
        r = Reader(data)
        lo = r.svarint()
        width = r.u8()
        if width > 64 or not -(1 << 63) <= lo < 1 << 63:
            raise CodecError("bitpack: invalid header")
        body = bytes(r.rest())
        if len(body) != (n * width + 7) // 8:
            raise CodecError(f"bitpack: payload has {len(body)} bytes, {n} x {width} bits needs {(n * width + 7) // 8}")
        if width == 0:
            return _to_spec(np.full(n, lo, dtype=np.int64), spec)
        if (n * width) % 8 and body[-1] >> ((n * width) % 8):
            raise CodecError("bitpack: nonzero padding bits")
        from . import _bits_kernel

        u = _bits_kernel.unpack(np.frombuffer(body, dtype=np.uint8), n, width)
        if width < 63 and lo + (1 << width) <= 1 << 63:
            values = u.astype(np.int64) + lo
        else:  # exact wide arithmetic; rare (spans of 63-64 bits)
            wide = [lo + int(x) for x in u.tolist()]
            if min(wide) < -(1 << 63) or max(wide) >= 1 << 63:
                raise CodecError("bitpack: decoded values overflow int64")
            values = np.array(wide, dtype=np.int64)
        return _to_spec(values, spec)

    def max_encoded_size(self, spec: ArraySpec) -> int:
        return 12 + 8 * spec.size
