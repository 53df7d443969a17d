"""Read and write whole containers: chunk framing, checksums, the index and the digest.

The container layer moves :class:`TensorRecord` objects (headers plus opaque payload
bytes) and never interprets a payload; codecs do that one layer up.
"""

from __future__ import annotations

import functools
import hashlib
import math
import struct as pystruct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Union

import crc32c
import numpy as np
import zstandard
from construct import Construct, ConstructError

from .. import dtypes
from ..errors import (
    ChecksumError,
    FormatError,
    InputError,
    LimitError,
    TruncatedError,
    UnsupportedError,
)
from . import bodies, schema
from .constants import (
    DEFAULT_LIMITS,
    HEAD,
    IEND,
    INDX,
    MAX_DIM_PRODUCT,
    SIGNATURE,
    TGRP,
    TNSR,
    VERSION_MAJOR,
    VERSION_MINOR,
    Combine,
    Limits,
    Role,
    UpdateKind,
    is_ancillary,
)

ParamValue = Union[int, float, str, bytes, np.ndarray]  # noqa: UP007  (a runtime alias; | fails on 3.10 here)
"""A stage parameter: a scalar, a string, raw bytes, or a 1-D int64/float64 array."""

_NO_FINGERPRINT = bytes(32)


@dataclass
class StageRecord:
    """One stage of a tensor's pipeline as stored: a registered codec id and its parameters."""

    codec_id: int
    params: dict[str, ParamValue] = field(default_factory=dict)


@dataclass
class Member:
    """One tensor of a group: the pipeline codes the members' elements concatenated."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    role: Role = Role.UNKNOWN

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass
class TensorRecord:
    """One tensor (TNSR) or a group of small tensors (TGRP) as stored.

    A group has ``members``; its ``dtype`` is theirs, its ``shape`` is
    :func:`group_shape` of them and its ``name`` is empty: the pipeline codes every
    member's elements, concatenated in member order, so tensors share one header and one
    model.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    combine: Combine
    role: Role = Role.UNKNOWN
    stages: list[StageRecord] = field(default_factory=list)
    payload: bytes = b""
    members: list[Member] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        """The tensor names this record carries."""
        return [m.name for m in self.members] if self.members else [self.name]

    @property
    def size(self) -> int:
        """Number of elements."""
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class Header:
    """The update header (HEAD chunk)."""

    kind: UpdateKind = UpdateKind.DELTA
    base_fingerprint: bytes | None = None
    round: int = 0
    producer: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class Container:
    """A parsed container: header, tensors in file order, and ancillary chunks kept verbatim."""

    header: Header
    tensors: list[TensorRecord] = field(default_factory=list)
    #: (type, data) of ancillary chunks other than the index, in file order
    extra_chunks: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: (major, minor) read from the file; None for containers built in memory
    version: tuple[int, int] | None = None


# ----------------------------------------------------------------------------- writing


def _chunk(chunk_type: bytes, data: bytes) -> bytes:
    crc = crc32c.crc32c(data, crc32c.crc32c(chunk_type))
    return b"".join(
        (_compiled(schema.ChunkFrame).build({"length": len(data), "type": chunk_type}), data, crc.to_bytes(4, "little"))
    )


def _param_entry(key: str, value: ParamValue) -> dict[str, object]:
    if isinstance(value, (bool, int, np.integer)):
        return {"key": key, "tag": schema.TAG_INT, "value": int(value)}
    if isinstance(value, (float, np.floating)):
        return {"key": key, "tag": schema.TAG_FLOAT, "value": float(value)}
    if isinstance(value, str):
        return {"key": key, "tag": schema.TAG_STR, "value": value}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"key": key, "tag": schema.TAG_BYTES, "value": bytes(value)}
    if isinstance(value, np.ndarray) and value.ndim == 1:
        if value.dtype.kind in "iub":
            return {"key": key, "tag": schema.TAG_INT_ARRAY, "value": value.astype(np.int64)}
        if value.dtype.kind == "f":
            return {"key": key, "tag": schema.TAG_FLOAT_ARRAY, "value": value.astype(np.float64)}
    raise TypeError(f"stage parameter {key!r} has unsupported type {type(value).__name__}")


def _stage_entries(record: TensorRecord) -> list[dict[str, object]]:
    return [
        {"codec_id": stage.codec_id, "params": [_param_entry(k, v) for k, v in stage.params.items()]}
        for stage in record.stages
    ]


def _group_table(record: TensorRecord) -> tuple[int, bytes]:
    """(table mode, stored bytes) of a group's member table: zstd when that is smaller.

    Member names repeat heavily (``layer2.3.bn1.weight``, ``layer2.3.bn1.bias``, ...):
    on ResNet-56's 149-member group zstd cuts the table from 3.8 KB to well under 1 KB,
    which at 0.75 bits/param is 4% of the whole update.
    """
    dtype_codes = {dtypes.code_of(m.dtype) for m in record.members}
    if len(dtype_codes) != 1:
        raise InputError("TGRP members must share one element type")
    plain = bodies.group_table(dtype_codes.pop(), [(m.name, int(m.role), m.shape) for m in record.members])
    packed = zstandard.ZstdCompressor(level=19, write_content_size=True, write_checksum=False).compress(plain)
    return (schema.TABLE_ZSTD, packed) if len(packed) < len(plain) else (schema.TABLE_PLAIN, plain)


def _group_body(record: TensorRecord) -> bytes:
    mode, table = _group_table(record)
    header = _compiled(schema.GroupHeader).build(
        {"table_mode": mode, "table": table, "combine": int(record.combine), "stages": _stage_entries(record)}
    )
    return header + record.payload


def _tensor_body(record: TensorRecord) -> bytes:
    header = _compiled(schema.TensorHeader).build(
        {
            "name": record.name,
            "dtype": dtypes.code_of(record.dtype),
            "role": int(record.role),
            "combine": int(record.combine),
            "ndim": len(record.shape),
            "shape": list(record.shape),
            "stages": [
                {
                    "codec_id": stage.codec_id,
                    "params": [_param_entry(k, v) for k, v in stage.params.items()],
                }
                for stage in record.stages
            ],
        }
    )
    return header + record.payload


#: The index is written only when the tensor chunks exceed this many bytes or this many
#: chunks: below that a reader finds a tensor by hopping over the chunk frames of a file
#: it holds in memory anyway, while the index costs ~5 bytes per tensor (0.3% of a
#: ResNet-56 update at 0.7 bits/param, 0.7% of a small CNN's).
INDEX_MIN_BYTES = 1 << 20
INDEX_MIN_CHUNKS = 64


def serialize(container: Container) -> bytes:
    """The container's bytes: preamble, HEAD, TNSR chunks, extra chunks, index, IEND."""
    h = container.header
    parts: list[bytes] = [
        _compiled(schema.Preamble).build({"major": VERSION_MAJOR, "minor": VERSION_MINOR}),
        _chunk(
            HEAD,
            _compiled(schema.HeadBody).build(
                {
                    "kind": int(h.kind),
                    "flags": 1 if h.base_fingerprint is not None else 0,
                    "round": h.round,
                    "base_fingerprint": h.base_fingerprint or _NO_FINGERPRINT,
                    "producer": h.producer,
                    "metadata": [{"key": k, "value": v} for k, v in h.metadata.items()],
                    "tensor_count": len(container.tensors),
                }
            ),
        ),
    ]
    offset = sum(map(len, parts))
    index = []
    for record in container.tensors:
        chunk = _chunk(TGRP, _group_body(record)) if record.members else _chunk(TNSR, _tensor_body(record))
        index.append({"offset": offset, "length": len(chunk)})
        parts.append(chunk)
        offset += len(chunk)
    for chunk_type, data in container.extra_chunks:
        chunk = _chunk(chunk_type, data)
        parts.append(chunk)
        offset += len(chunk)
    index_offset = 0
    if len(index) > INDEX_MIN_CHUNKS or offset > INDEX_MIN_BYTES:
        index_offset = offset
        parts.append(_chunk(INDX, _compiled(schema.IndexBody).build({"entries": index})))
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    parts.append(_chunk(IEND, _compiled(schema.EndBody).build({"index_offset": index_offset, "digest": digest.digest()})))
    return b"".join(parts)


# ----------------------------------------------------------------------------- reading


_FRAME = pystruct.Struct("<Q4s")


def _iter_chunks(data: memoryview, start: int) -> Iterator[tuple[int, bytes, memoryview]]:
    """Yield (offset, type, body) of every chunk from ``start``, checking framing and CRC."""
    pos = start
    end = len(data)
    while pos < end:
        if end - pos < schema.CHUNK_FRAME_SIZE + schema.CHUNK_CRC_SIZE:
            raise TruncatedError(f"chunk at offset {pos} is cut off")
        # schema.ChunkFrame, unpacked directly: this runs once per chunk of every read
        length, chunk_type = _FRAME.unpack_from(data, pos)
        body_start = pos + schema.CHUNK_FRAME_SIZE
        if length > end - body_start - schema.CHUNK_CRC_SIZE:
            raise TruncatedError(f"chunk {chunk_type!r} at offset {pos} declares {length} bytes, file has fewer")
        if not chunk_type.isalpha():  # bytes.isalpha: ASCII letters only
            raise FormatError(f"invalid chunk type {chunk_type!r} at offset {pos}")
        body = data[body_start : body_start + length]
        stored = int.from_bytes(data[body_start + length : body_start + length + 4], "little")
        if crc32c.crc32c(body, crc32c.crc32c(chunk_type)) != stored:
            raise ChecksumError(f"CRC mismatch in chunk {chunk_type.decode('ascii')} at offset {pos}")
        yield pos, chunk_type, body
        pos = body_start + length + schema.CHUNK_CRC_SIZE


def _check_preamble(data: memoryview) -> None:
    if len(data) < len(SIGNATURE) + 2:
        raise TruncatedError("file is shorter than the .nnu preamble")
    if bytes(data[: len(SIGNATURE)]) != SIGNATURE:
        sig = bytes(data[: len(SIGNATURE)])
        if sig.replace(b"\r\n", b"\n") == SIGNATURE.replace(b"\r\n", b"\n")[: len(sig)] or b"NNU" in sig:
            raise FormatError("damaged .nnu signature (was the file transferred in text mode?)")
        raise FormatError("not an .nnu file (signature mismatch)")
    major, minor = data[len(SIGNATURE)], data[len(SIGNATURE) + 1]
    if major != VERSION_MAJOR:
        raise UnsupportedError(f"format version {major}.{minor} is not supported (this reader knows {VERSION_MAJOR}.x)")


@functools.cache
def _compiled(struct: Construct) -> Construct:
    """``struct`` compiled by construct to plain Python (same bytes, 2-3x faster parsing).

    Compiled on first use, not at import, so the CLI starts fast.
    """
    return struct.compile()


def _parse_struct(struct: Construct, body: memoryview | bytes, what: str) -> object:
    try:
        return _compiled(struct).parse(bytes(body))
    except UnicodeDecodeError:
        raise FormatError(f"malformed {what}: invalid UTF-8") from None
    except (ConstructError, pystruct.error, ValueError, IndexError, OverflowError) as exc:
        # compiled parsers report short input as struct.error rather than StreamError
        raise FormatError(f"malformed {what}: {exc.__class__.__name__}") from None


def _header_from(body: memoryview, limits: Limits) -> tuple[Header, int]:
    if len(body) > limits.max_header_bytes:
        raise LimitError(f"HEAD chunk of {len(body)} bytes exceeds the limit of {limits.max_header_bytes}")
    raw = _parse_struct(schema.HeadBody, body, "HEAD chunk")
    try:
        kind = UpdateKind(raw.kind)  # type: ignore[attr-defined]
    except ValueError:
        raise UnsupportedError(f"unknown update kind {raw.kind}") from None  # type: ignore[attr-defined]
    has_base = bool(raw.flags & 1)  # type: ignore[attr-defined]
    header = Header(
        kind=kind,
        base_fingerprint=bytes(raw.base_fingerprint) if has_base else None,  # type: ignore[attr-defined]
        round=raw.round,  # type: ignore[attr-defined]
        producer=raw.producer,  # type: ignore[attr-defined]
        metadata={m.key: m.value for m in raw.metadata},  # type: ignore[attr-defined]
    )
    if len(header.metadata) != len(raw.metadata):  # type: ignore[attr-defined]
        raise FormatError("duplicate metadata keys in HEAD")
    return header, raw.tensor_count  # type: ignore[attr-defined]


def _check_shape(name: str, shape: tuple[int, ...], limits: Limits) -> int:
    """Element count of ``shape``, refusing counts over the limits before anything is allocated."""
    size = 1
    extent = 1
    for d in shape:
        size *= d
        extent *= d or 1
    if size > limits.max_elements:
        raise LimitError(f"tensor {name!r} declares {size} elements, over the limit of {limits.max_elements}")
    if extent > MAX_DIM_PRODUCT:  # an empty tensor's other dims must still be addressable
        raise LimitError(f"tensor {name!r} has dimensions whose product exceeds 2**53")
    return size


def _stages_from(r: bodies.BodyReader, name: str, limits: Limits) -> list[StageRecord]:
    return [StageRecord(codec_id, params) for codec_id, params in bodies.read_stages(r, name, limits)]


_ROLES = {int(role): role for role in Role}


def _role(value: int) -> Role:
    return _ROLES.get(value, Role.UNKNOWN)


def _tensor_from(body: memoryview, limits: Limits) -> TensorRecord:
    r = bodies.BodyReader(bytes(body), "TNSR chunk")
    name = bodies.read_name(r, limits)
    dtype, role, combine = r.u8(), r.u8(), r.u8()
    shape = bodies.read_shape(r, limits)
    _check_shape(name, shape, limits)
    return TensorRecord(
        name=name,
        dtype=dtypes.name_of(dtype),
        shape=shape,
        combine=_combine(combine, dtypes.name_of(dtype), name),
        role=_role(role),
        stages=_stages_from(r, name, limits),
        payload=r.rest(),
    )


def _combine(code: int, dtype: str, name: str) -> Combine:
    combine = _enum(Combine, code, "combine mode")
    if combine == Combine.ULP and not dtypes.is_float(dtype):
        raise FormatError(f"{name}: combine ULP on a {dtype} tensor (float types only)")
    return combine


def group_shape(members: list[Member]) -> tuple[int, ...]:
    """The shape a TGRP's pipeline codes (spec/FORMAT.md §4.4).

    ``(N / L, L)`` when every member has at least two dimensions and they all share one
    row length ``L > 0`` (the product of the dimensions after the first): the members'
    rows stacked into one matrix, so a stage that scans rows (``ctx``, ``dq``) sees rows
    of the members' own layout. Otherwise ``(N,)``, the concatenation as one row.
    """
    total = sum(m.size for m in members)
    lengths = {math.prod(m.shape[1:]) if len(m.shape) >= 2 else -1 for m in members}
    if len(lengths) == 1:
        (rowlen,) = lengths
        if rowlen > 0:
            return (total // rowlen, rowlen)
    return (total,)


def _group_from(body: memoryview, limits: Limits) -> TensorRecord:
    r = bodies.BodyReader(bytes(body), "TGRP chunk")
    members = _group_members(r, limits)
    combine = r.u8()
    return TensorRecord(
        name="",
        dtype=members[0].dtype,
        shape=group_shape(members),
        combine=_combine(combine, members[0].dtype, members[0].name),
        stages=_stages_from(r, members[0].name, limits),
        payload=r.rest(),
        members=members,
    )


def _group_members(r: bodies.BodyReader, limits: Limits) -> list[Member]:
    dtype_code, entries = bodies.read_group_table(r, limits)
    if not entries:
        raise FormatError("TGRP chunk has no members")
    dtype = dtypes.name_of(dtype_code)
    members = []
    total = 0
    for name, role, shape in entries:
        total += _check_shape(name, shape, limits)
        members.append(Member(name, dtype, shape, _ROLES.get(role, Role.UNKNOWN)))
    if total > limits.max_elements:
        raise LimitError(f"group declares {total} elements, over the limit of {limits.max_elements}")
    return members


def _enum(cls: type[Combine], value: int, what: str) -> Combine:
    try:
        return cls(value)
    except ValueError:
        raise UnsupportedError(f"unknown {what} {value}") from None


def parse(data: bytes | bytearray | memoryview, *, limits: Limits = DEFAULT_LIMITS) -> Container:
    """Parse a whole container, verifying every CRC, the digest and the limits.

    Raises a :class:`~nnupdate.errors.FormatError` subclass for any defect; never
    returns a partially read container.
    """
    view = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
    _check_preamble(view)
    start = len(SIGNATURE) + 2
    header: Header | None = None
    expected_tensors = 0
    tensors: list[TensorRecord] = []
    extra: list[tuple[bytes, bytes]] = []
    total_bytes = 0
    ended = False
    for offset, chunk_type, body in _iter_chunks(view, start):
        if ended:
            raise FormatError(f"data after the IEND chunk at offset {offset}")
        if header is None and chunk_type != HEAD:
            raise FormatError("the first chunk must be HEAD")
        if chunk_type == HEAD:
            if header is not None:
                raise FormatError("more than one HEAD chunk")
            header, expected_tensors = _header_from(body, limits)
            if expected_tensors > limits.max_tensors:
                raise LimitError(f"{expected_tensors} tensors exceed the limit of {limits.max_tensors}")
        elif chunk_type in (TNSR, TGRP):
            record = _tensor_from(body, limits) if chunk_type == TNSR else _group_from(body, limits)
            total_bytes += record.size * dtypes.storage_dtype(record.dtype).itemsize
            if total_bytes > limits.max_total_bytes:
                raise LimitError(f"declared output exceeds {limits.max_total_bytes} bytes")
            tensors.append(record)
        elif chunk_type == IEND:
            end = _parse_struct(schema.EndBody, body, "IEND chunk")
            digest = hashlib.sha256(view[: offset]).digest()
            if digest != end.digest:  # type: ignore[attr-defined]
                raise ChecksumError("file digest mismatch")
            ended = True
        elif chunk_type == INDX:
            pass  # the index is redundant with the chunk sequence; parse() does not need it
        elif is_ancillary(chunk_type):
            extra.append((chunk_type, bytes(body)))
        else:
            raise UnsupportedError(f"unknown critical chunk {chunk_type.decode('ascii')}")
    if not ended:
        raise TruncatedError("file ends before the IEND chunk")
    assert header is not None
    if len(tensors) != expected_tensors:
        raise FormatError(f"HEAD declares {expected_tensors} tensors, file holds {len(tensors)}")
    names = [name for t in tensors for name in t.names]
    if len(set(names)) != len(names):
        raise FormatError("duplicate tensor names")
    return Container(header, tensors, extra, (VERSION_MAJOR, view[len(SIGNATURE) + 1]))


def read_index(data: bytes | memoryview) -> dict[str, tuple[int, int]]:
    """Name -> (offset, length) of every tensor chunk, read from the tail without scanning
    (small files carry no index: then by walking the chunk frames).

    Checks the IEND and INDX chunk CRCs but not the file digest (that needs every byte).
    """
    view = memoryview(data)
    _check_preamble(view)
    if len(view) < schema.END_CHUNK_SIZE + len(SIGNATURE) + 2:
        raise TruncatedError("file too short to hold an IEND chunk")
    tail = len(view) - schema.END_CHUNK_SIZE
    chunks = list(_iter_chunks(view[: len(view)], tail))
    if len(chunks) != 1 or chunks[0][1] != IEND:
        raise FormatError("file does not end with an IEND chunk")
    end = _parse_struct(schema.EndBody, chunks[0][2], "IEND chunk")
    index_offset = end.index_offset  # type: ignore[attr-defined]
    out: dict[str, tuple[int, int]] = {}
    if index_offset == 0:  # no index (small files): hop over the chunk frames instead
        for offset, chunk_type, body in _iter_chunks(view[:tail], len(SIGNATURE) + 2):
            if chunk_type in (TNSR, TGRP):
                length = schema.CHUNK_FRAME_SIZE + len(body) + schema.CHUNK_CRC_SIZE
                out.update((name, (offset, length)) for name in _peek_names(view, offset, length, tail))
        return out
    if not (len(SIGNATURE) + 2 <= index_offset < tail):
        raise FormatError("IEND points at an index outside the file")
    first = next(_iter_chunks(view[:tail], index_offset))
    if first[1] != INDX:
        raise FormatError("IEND does not point at an index chunk")
    entries = _parse_struct(schema.IndexBody, first[2], "index chunk")
    for e in entries.entries:  # type: ignore[attr-defined]
        for name in _peek_names(view, e.offset, e.length, tail):
            out[name] = (e.offset, e.length)
    return out


def _peek_names(view: memoryview, offset: int, length: int, tail: int) -> list[str]:
    """The tensor names of the TNSR or TGRP chunk an index entry points at.

    The index stores no names (they would double the per-tensor overhead); a reader
    peeks at the names at the start of the chunk body (a TNSR's name right after the
    12-byte frame; a TGRP's member list). The chunk CRC is checked later, when the
    chosen tensor is actually read.
    """
    start = offset + schema.CHUNK_FRAME_SIZE
    end = offset + length - schema.CHUNK_CRC_SIZE
    if offset < len(SIGNATURE) + 2 or length < schema.CHUNK_FRAME_SIZE + schema.CHUNK_CRC_SIZE + 2 or offset + length > tail:
        raise FormatError("index entry points outside the tensor chunks")
    chunk_type = bytes(view[offset + 8 : offset + 12])
    if chunk_type == TGRP:
        return [m.name for m in _group_members(bodies.BodyReader(bytes(view[start:end]), "TGRP chunk"), DEFAULT_LIMITS)]
    if chunk_type != TNSR:
        raise FormatError("index entry does not point at a tensor chunk")
    name_len = int.from_bytes(view[start : start + 2], "little")
    if start + 2 + name_len > end:
        raise FormatError("index entry points at a malformed TNSR chunk")
    try:
        return [bytes(view[start + 2 : start + 2 + name_len]).decode("utf-8")]
    except UnicodeDecodeError:
        raise FormatError("tensor name is not valid UTF-8") from None


def read_tensor(data: bytes | memoryview, name: str, *, limits: Limits = DEFAULT_LIMITS) -> TensorRecord:
    """The record holding tensor ``name`` (a TNSR, or the TGRP group it belongs to),
    found through the index: the other tensors are not read."""
    index = read_index(data)
    if name not in index:
        raise InputError(f"no tensor named {name!r} in the index")
    offset, length = index[name]
    view = memoryview(data)
    if offset + length > len(view):
        raise FormatError("index entry points past the end of the file")
    offset_chunk = next(_iter_chunks(view[: offset + length], offset))
    if offset_chunk[1] == TNSR:
        record = _tensor_from(offset_chunk[2], limits)
    elif offset_chunk[1] == TGRP:
        record = _group_from(offset_chunk[2], limits)
    else:
        raise FormatError("index entry does not point at a tensor chunk")
    if name not in record.names:
        raise FormatError("index entry names a different tensor")
    return record
