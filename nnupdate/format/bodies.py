"""Readers of the TNSR and TGRP chunk bodies (the per-tensor headers), and the writer of
the TGRP member table, written by hand.

``schema.py`` declares these layouts once with construct, and the writer builds the rest
from there. Reading is the hot path of every decode, though: a ResNet-sized update has a
few dozen records and a group of a hundred-odd members, and construct's generic
machinery cost more per decode than the entropy decoding itself. So the reader walks the
same layout with ``struct.unpack_from`` on the body bytes, and the member table (one
entry per grouped tensor) is packed directly: built by construct it was a tenth of a
ResNet-56 ``ctx`` encode, all of it after the records' threads had finished.
tests/test_format_bodies.py checks both against the construct schema on random headers,
and that the reader refuses the same damaged ones.
"""

from __future__ import annotations

import struct

import numpy as np
import zstandard

from ..errors import FormatError, LimitError, TruncatedError, UnsupportedError
from . import schema
from .constants import Limits

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_F64 = struct.Struct("<d")
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1

ParamScalar = int | float | str | bytes | np.ndarray


class BodyReader:
    """A cursor over one chunk body; every read past the end raises :class:`TruncatedError`."""

    __slots__ = ("data", "pos", "what")

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def _need(self, n: int) -> int:
        start = self.pos
        if n > len(self.data) - start:
            raise TruncatedError(f"malformed {self.what}: cut off")
        self.pos = start + n
        return start

    def u8(self) -> int:
        return self.data[self._need(1)]

    def u16(self) -> int:
        return int(_U16.unpack_from(self.data, self._need(2))[0])

    def u32(self) -> int:
        return int(_U32.unpack_from(self.data, self._need(4))[0])

    def f64(self) -> float:
        return float(_F64.unpack_from(self.data, self._need(8))[0])

    def take(self, n: int) -> bytes:
        start = self._need(n)
        return self.data[start : start + n]

    def text(self, length: int) -> str:
        try:
            return self.take(length).decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"malformed {self.what}: invalid UTF-8") from None

    def uvarint(self) -> int:
        """LEB128 without a length cap, as construct's ``VarInt`` reads it (callers bound
        the value); a varint is at most as long as the body, so this cannot run away."""
        data = self.data
        value = shift = 0
        pos = self.pos
        while True:
            if pos >= len(data):
                raise TruncatedError(f"malformed {self.what}: cut off")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                self.pos = pos
                return value

    def rest(self) -> bytes:
        return self.data[self.pos :]


def read_shape(r: BodyReader, limits: Limits) -> tuple[int, ...]:
    ndim = r.u8()
    if ndim > limits.max_ndim:
        raise LimitError(f"tensor rank {ndim} exceeds the limit of {limits.max_ndim}")
    return tuple(r.uvarint() for _ in range(ndim))


def read_name(r: BodyReader, limits: Limits) -> str:
    length = r.u16()
    if length > limits.max_name_bytes:
        raise LimitError(f"tensor name of {length} bytes exceeds the limit of {limits.max_name_bytes}")
    return r.text(length)


def uvarint(value: int) -> bytes:
    """``value`` (>= 0) as construct's ``VarInt`` writes it: LEB128, 7 bits per byte, low first."""
    if value < 0:
        raise ValueError("a varint is unsigned")
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def group_table(dtype: int, members: list[tuple[str, int, tuple[int, ...]]]) -> bytes:
    """The TGRP member table (``schema.GroupTable``) of ``members`` = [(name, role code,
    shape)], one element type ``dtype`` for all: the bytes construct would build."""
    out = bytearray(uvarint(len(members)))
    out.append(dtype)
    for name, role, shape in members:
        raw = name.encode("utf-8")
        out += uvarint(len(raw))
        out += raw
        out.append(role)
        out.append(len(shape))
        for d in shape:
            out += uvarint(d)
    return bytes(out)


def read_group_table(r: BodyReader, limits: Limits) -> tuple[int, list[tuple[str, int, tuple[int, ...]]]]:
    """(dtype code, [(name, role code, shape)]) of a TGRP's member table, plain or zstd.

    The unpacked table may not exceed ``max_header_bytes``: the zstd frame must declare
    its content size, checked before anything is decompressed.
    """
    mode = r.u8()
    table = r.take(r.uvarint())
    if mode == schema.TABLE_ZSTD:
        table = _unpack_table(table, limits.max_header_bytes)
    elif mode != schema.TABLE_PLAIN:
        raise UnsupportedError(f"unknown TGRP member table mode {mode}")
    elif len(table) > limits.max_header_bytes:
        raise LimitError(f"TGRP member table of {len(table)} bytes exceeds the limit of {limits.max_header_bytes}")
    t = BodyReader(table, "TGRP member table")
    count = t.uvarint()
    dtype = t.u8()
    members = read_members(t, count, limits)
    if t.pos != len(table):
        raise FormatError("malformed TGRP member table: trailing bytes")
    return dtype, members


def _unpack_table(frame: bytes, bound: int) -> bytes:
    try:
        size = zstandard.frame_content_size(frame)
    except zstandard.ZstdError:
        raise FormatError("malformed TGRP member table: not a zstd frame") from None
    if size < 0:
        raise FormatError("TGRP member table: the zstd frame must declare its content size")
    if size > bound:
        raise LimitError(f"TGRP member table of {size} bytes exceeds the limit of {bound}")
    try:
        obj = zstandard.ZstdDecompressor().decompressobj()
        out = obj.decompress(frame)
    except zstandard.ZstdError as exc:
        raise FormatError(f"malformed TGRP member table: {exc}") from None
    if len(out) != size or not obj.eof or obj.unused_data:
        raise FormatError("malformed TGRP member table: not exactly one complete zstd frame")
    return out


def read_members(r: BodyReader, count: int, limits: Limits) -> list[tuple[str, int, tuple[int, ...]]]:
    """(name, role code, shape) of ``count`` table entries.

    The member table is the longest header of a file (a hundred-odd entries for the
    small tensors of a ResNet), so this loop reads it inline instead of through the
    cursor's methods; it refuses exactly what they would.
    """
    data, pos, end = r.data, r.pos, len(r.data)
    out = []
    max_name, max_ndim = limits.max_name_bytes, limits.max_ndim
    try:
        for _ in range(count):
            length, shift = 0, 0
            while True:  # uvarint name length
                byte = data[pos]
                pos += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if byte < 0x80:
                    break
            if length > max_name:
                raise LimitError(f"tensor name of {length} bytes exceeds the limit of {max_name}")
            name_end = pos + length
            if name_end + 2 > end:
                raise IndexError
            name = data[pos:name_end].decode("utf-8")
            role, ndim = data[name_end], data[name_end + 1]
            if ndim > max_ndim:
                raise LimitError(f"tensor rank {ndim} exceeds the limit of {max_ndim}")
            pos = name_end + 2
            dims = []
            for _ in range(ndim):
                byte = data[pos]
                pos += 1
                if byte < 0x80:
                    dims.append(byte)
                    continue
                value, shift = byte & 0x7F, 7
                while byte >= 0x80:
                    byte = data[pos]
                    pos += 1
                    value |= (byte & 0x7F) << shift
                    shift += 7
                dims.append(value)
            out.append((name, role, tuple(dims)))
    except IndexError:
        raise TruncatedError(f"malformed {r.what}: cut off") from None
    except UnicodeDecodeError:
        raise FormatError(f"malformed {r.what}: invalid UTF-8") from None
    r.pos = pos
    return out


def _param_value(r: BodyReader, tag: int, limits: Limits) -> ParamScalar:
    if tag == schema.TAG_INT:
        z = r.uvarint()
        value = (z >> 1) ^ -(z & 1)
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise FormatError("integer parameter outside the signed 64-bit range")
        return value
    if tag == schema.TAG_FLOAT:
        return r.f64()
    if tag == schema.TAG_STR:
        return r.text(r.u32())
    if tag == schema.TAG_BYTES:
        return r.take(r.u32())
    if tag in (schema.TAG_INT_ARRAY, schema.TAG_FLOAT_ARRAY):
        count = r.u32()
        if count > limits.max_param_items:
            raise LimitError(f"parameter array of {count} items exceeds the limit")
        dtype = "<i8" if tag == schema.TAG_INT_ARRAY else "<f8"
        return np.frombuffer(r.take(8 * count), dtype=dtype).astype(dtype[1:])
    raise UnsupportedError(f"unknown parameter type tag {tag}")


def read_stages(r: BodyReader, name: str, limits: Limits) -> list[tuple[int, dict[str, ParamScalar]]]:
    """(codec id, params) of every stage, refusing duplicate keys and over-limit counts."""
    count = r.u8()
    if count > limits.max_stages:
        raise LimitError(f"pipeline of {count} stages exceeds the limit of {limits.max_stages}")
    stages = []
    for _ in range(count):
        codec_id = r.u16()
        nparams = r.u8()
        if nparams > limits.max_params:
            raise LimitError(f"stage with {nparams} parameters exceeds the limit")
        params: dict[str, ParamScalar] = {}
        for _ in range(nparams):
            key = r.text(r.u8())
            value = _param_value(r, r.u8(), limits)
            if key in params:
                raise FormatError(f"duplicate parameter {key!r} in tensor {name!r}")
            params[key] = value
        stages.append((codec_id, params))
    return stages
