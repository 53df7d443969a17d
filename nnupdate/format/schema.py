"""Byte layouts of the container, declared once with ``construct`` and used both ways.

Each ``Struct`` below is the normative layout of one chunk body (spec/FORMAT.md mirrors
them field by field). All integers are little-endian.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from construct import (
    Adapter,
    Array,
    Bytes,
    Const,
    Construct,
    Float64l,
    GreedyBytes,
    Int8ul,
    Int16ul,
    Int32ul,
    Int64ul,
    PascalString,
    Prefixed,
    PrefixedArray,
    Struct,
    Switch,
    Terminated,
    VarInt,
    ZigZag,
    this,
)

from .constants import SIGNATURE


class _NumberArray(Adapter):  # type: ignore[misc]
    """A u32 count followed by packed little-endian numbers, exposed as a 1-D ndarray.

    Parsing goes through ``numpy.frombuffer`` instead of one construct object per item,
    so a table of a few thousand entries costs microseconds.
    """

    def __init__(self, dtype: str) -> None:
        self._dtype = np.dtype(dtype)
        super().__init__(
            Struct("count" / Int32ul, "data" / Bytes(this.count * self._dtype.itemsize))
        )

    def _decode(self, obj: Any, context: Any, path: Any) -> np.ndarray:
        return np.frombuffer(obj.data, dtype=self._dtype).copy()

    def _encode(self, obj: Any, context: Any, path: Any) -> dict[str, Any]:
        array = np.ascontiguousarray(obj, dtype=self._dtype)
        return {"count": array.size, "data": array.tobytes()}


# Tags of typed stage parameters.
TAG_INT = 1
TAG_FLOAT = 2
TAG_STR = 3
TAG_BYTES = 4
TAG_INT_ARRAY = 5
TAG_FLOAT_ARRAY = 6

Utf8Short: Construct = PascalString(Int16ul, "utf8")
Utf8Long: Construct = PascalString(Int32ul, "utf8")

Param = Struct(
    "key" / PascalString(Int8ul, "utf8"),
    "tag" / Int8ul,
    "value"
    / Switch(
        this.tag,
        {
            TAG_INT: ZigZag,
            TAG_FLOAT: Float64l,
            TAG_STR: Utf8Long,
            TAG_BYTES: Prefixed(Int32ul, GreedyBytes),
            TAG_INT_ARRAY: _NumberArray("<i8"),
            TAG_FLOAT_ARRAY: _NumberArray("<f8"),
        },
    ),
)

Stage = Struct(
    "codec_id" / Int16ul,
    "params" / PrefixedArray(Int8ul, Param),
)

Preamble = Struct(
    "signature" / Const(SIGNATURE),
    "major" / Int8ul,
    "minor" / Int8ul,
)

ChunkFrame = Struct(
    "length" / Int64ul,
    "type" / Bytes(4),
)
CHUNK_FRAME_SIZE = 12
CHUNK_CRC_SIZE = 4

HeadBody = Struct(
    "kind" / Int8ul,
    "flags" / Int8ul,  # bit 0: base_fingerprint is meaningful
    "round" / Int64ul,
    "base_fingerprint" / Bytes(32),
    "producer" / Utf8Short,
    "metadata" / PrefixedArray(Int32ul, Struct("key" / Utf8Short, "value" / Utf8Long)),
    "tensor_count" / Int32ul,
    Terminated,  # trailing bytes inside HEAD are a defect, not padding
)

TensorHeader = Struct(
    "name" / Utf8Short,
    "dtype" / Int8ul,
    "role" / Int8ul,
    "combine" / Int8ul,
    "ndim" / Int8ul,
    "shape" / Array(this.ndim, VarInt),
    "stages" / PrefixedArray(Int8ul, Stage),
)
GroupMember = Struct(
    "name" / PascalString(VarInt, "utf8"),
    "role" / Int8ul,
    "ndim" / Int8ul,
    "shape" / Array(this.ndim, VarInt),
)
#: The member table of a TGRP, stored plain or as one zstd frame (``GroupHeader.table_mode``).
GroupTable = Struct(
    "count" / VarInt,
    "dtype" / Int8ul,  # one element type for every member
    "members" / Array(this.count, GroupMember),
    Terminated,
)
TABLE_PLAIN = 0
TABLE_ZSTD = 1
GroupHeader = Struct(
    "table_mode" / Int8ul,
    "table" / Prefixed(VarInt, GreedyBytes),
    "combine" / Int8ul,
    "stages" / PrefixedArray(Int8ul, Stage),
)
GroupBody = Struct(
    "header" / GroupHeader,
    "payload" / GreedyBytes,
)

TensorBody = Struct(
    "header" / TensorHeader,
    "payload" / GreedyBytes,
)

IndexBody = Struct(
    "entries" / PrefixedArray(Int32ul, Struct("offset" / VarInt, "length" / VarInt)),
    Terminated,
)

EndBody = Struct(
    "index_offset" / Int64ul,  # 0: no index chunk
    "digest" / Bytes(32),  # SHA-256 of every byte before the IEND chunk
    Terminated,
)
END_CHUNK_SIZE = CHUNK_FRAME_SIZE + 8 + 32 + CHUNK_CRC_SIZE
