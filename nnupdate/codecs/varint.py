"""LEB128 varints and zigzag mapping, used in stage payloads for small tables.

Unsigned LEB128: 7 bits per byte, least significant group first, high bit set on every
byte but the last. Zigzag maps signed to unsigned: 0,-1,1,-2,... -> 0,1,2,3,...
"""

from __future__ import annotations

import numpy as np

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


def uvarint_bytes(values: np.ndarray) -> bytes:
    """LEB128 of every value of a non-negative integer array (< 2**64), concatenated."""
    v = np.asarray(values).astype(np.uint64).reshape(-1)
    if v.size <= 64:  # short tables: the plain loop is faster than the array passes below
        out = bytearray()
        for value in v.tolist():
            write_uvarint(out, value)
        return bytes(out)
    width = max(1, -(-int(v.max()).bit_length() // 7))  # bytes of the longest varint
    groups = np.empty((v.size, width), dtype=np.uint8)
    for k in range(width):
        groups[:, k] = ((v >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
    nbytes = np.ones(v.size, dtype=np.int64)
    for k in range(1, width):
        nbytes += v >= np.uint64(1 << (7 * k))
    cols = np.arange(width)
    groups[cols < (nbytes - 1)[:, None]] |= 0x80
    return groups[cols < nbytes[:, None]].tobytes()


def zigzag_array(values: np.ndarray) -> np.ndarray:
    """Zigzag of an int64 array as uint64 (two's-complement arithmetic, no overflow)."""
    v = np.asarray(values, dtype=np.int64)
    return ((v << 1) ^ (v >> 63)).view(np.uint64)


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
                if result >> 64:
                    raise CodecError("varint exceeds 64 bits")
                return result
            shift += 7
        raise CodecError("varint longer than 10 bytes")

    def uvarints(self, count: int) -> np.ndarray:
        """``count`` consecutive uvarints as uint64, vectorized (same rules as :meth:`uvarint`)."""
        if count <= 0:
            return np.zeros(0, dtype=np.uint64)
        if count <= 64:  # a Python loop beats ~20 numpy calls on short tables
            return np.array([self.uvarint() for _ in range(count)], dtype=np.uint64)
        window = np.frombuffer(self.data[self.pos : self.pos + _MAX_VARINT_BYTES * count], dtype=np.uint8)
        ends = np.flatnonzero(window < 0x80)[:count]
        if len(ends) < count:
            raise CodecError("payload ends inside a varint")
        starts = np.empty_like(ends)
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
        lengths = ends - starts + 1
        longest = int(lengths.max())
        if longest > _MAX_VARINT_BYTES:
            raise CodecError("varint longer than 10 bytes")
        values = np.zeros(count, dtype=np.uint64)
        for k in range(longest):
            has = lengths > k
            group = window[starts[has] + k] & 0x7F
            if k == _MAX_VARINT_BYTES - 1 and group.size and int(group.max()) > 1:
                raise CodecError("varint exceeds 64 bits")
            values[has] |= group.astype(np.uint64) << np.uint64(7 * k)
        self.pos += int(ends[-1]) + 1
        return values

    def svarints(self, count: int) -> np.ndarray:
        """``count`` zigzag varints as int64."""
        z = self.uvarints(count)
        return ((z >> np.uint64(1)) ^ (np.uint64(0) - (z & np.uint64(1)))).view(np.int64)

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
