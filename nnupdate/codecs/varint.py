"""LEB128 varints and zigzag mapping, used in stage payloads for small tables.

Unsigned LEB128: 7 bits per byte, least significant group first, high bit set on every
byte but the last. Zigzag maps signed to unsigned: 0,-1,1,-2,... -> 0,1,2,3,...
"""

from __future__ import annotations

from ..errors import CodecError

_MAX_VARINT_BYTES = 10


def zigzag(value: int) -> int:
    return (value << 1) if value >= 0 else ((-value) << 1) - 1


def unzigzag(value: int) -> int:
    return (value >> 1) if not value & 1 else -((value + 1) >> 1)


def write_uvarint(out: bytearray, value: int) -> None:
    if value < 0:
        raise ValueError("uvarint must be non-negative")
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


class Reader:
    """Sequential reader over a payload; every overrun raises :class:`CodecError`."""

    def __init__(self, data: bytes | memoryview, pos: int = 0) -> None:
        self.data = memoryview(data)
        self.pos = pos

    def uvarint(self) -> int:
        result = 0
        shift = 0
        for _ in range(_MAX_VARINT_BYTES):
            if self.pos >= len(self.data):
                raise CodecError("payload ends inside a varint")
            byte = self.data[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7
        raise CodecError("varint longer than 10 bytes")

    def svarint(self) -> int:
        return unzigzag(self.uvarint())

    def u8(self) -> int:
        return self.take(1)[0]

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise CodecError("payload ends before a declared field")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def rest(self) -> memoryview:
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos
