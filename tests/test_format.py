"""The container layer against spec/FORMAT.md: byte layout, version rules, chunks, limits."""

from __future__ import annotations

import hashlib
import struct
import time

import crc32c
import numpy as np
import pytest

import nnupdate
from nnupdate.codecs.raw import Raw
from nnupdate.errors import ChecksumError, FormatError, LimitError, TruncatedError, UnsupportedError
from nnupdate.format import (
    SIGNATURE,
    Combine,
    Container,
    Header,
    Limits,
    Role,
    StageRecord,
    TensorRecord,
    UpdateKind,
    parse,
    read_index,
    read_tensor,
    serialize,
)
from nnupdate.format.container import INDEX_MIN_CHUNKS


def _chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack("<Q", len(body)) + ctype + body + struct.pack("<I", crc32c.crc32c(ctype + body))


def _s16(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<H", len(raw)) + raw


def _simple() -> Container:
    header = Header(UpdateKind.DELTA, bytes(range(32)), 7, "me", {"k": "v"})
    record = TensorRecord(
        "w", "float32", (2,), Combine.ADD, Role.WEIGHT, [StageRecord(0x0001, {"dtype": "float32"})], b"\x00" * 8
    )
    return Container(header, [record])


def test_crc32c_is_castagnoli() -> None:
    assert crc32c.crc32c(b"123456789") == 0xE3069283  # the check value quoted in the spec


def test_serialize_matches_the_spec_byte_for_byte() -> None:
    """A container assembled by hand from spec/FORMAT.md equals the library's output."""
    head = (
        bytes([0, 1]) + struct.pack("<Q", 7) + bytes(range(32)) + _s16("me")
        + struct.pack("<I", 1) + _s16("k") + struct.pack("<I", 1) + b"v" + struct.pack("<I", 1)
    )
    param = bytes([5]) + b"dtype" + bytes([3]) + struct.pack("<I", 7) + b"float32"
    shape = bytes([2])  # one uvarint dimension
    tnsr = _s16("w") + bytes([1, 1, 0, 1]) + shape + bytes([1]) + struct.pack("<H", 1) + bytes([1]) + param
    tnsr += b"\x00" * 8
    pre = SIGNATURE + bytes([1, 0])
    head_chunk = _chunk(b"HEAD", head)
    tnsr_chunk = _chunk(b"TNSR", tnsr)
    body = pre + head_chunk + tnsr_chunk  # one tensor chunk: no index (index_offset 0)
    expected = body + _chunk(b"IEND", struct.pack("<Q", 0) + hashlib.sha256(body).digest())
    assert serialize(_simple()) == expected


def test_parse_round_trip_and_fields() -> None:
    c = parse(serialize(_simple()))
    assert c.version == (1, 0)
    assert c.header.round == 7 and c.header.producer == "me" and c.header.metadata == {"k": "v"}
    assert c.header.base_fingerprint == bytes(range(32))
    (t,) = c.tensors
    assert (t.name, t.dtype, t.shape, t.combine, t.role) == ("w", "float32", (2,), Combine.ADD, Role.WEIGHT)
    assert t.stages[0].params == {"dtype": "float32"}


def test_no_base_fingerprint_flag() -> None:
    c = _simple()
    c.header.base_fingerprint = None
    assert parse(serialize(c)).header.base_fingerprint is None


def test_all_param_types_round_trip() -> None:
    params = {
        "i": -(2**63), "f": -0.0, "s": "ünï", "b": b"\x00\xff", "ia": np.array([1, -2], dtype=np.int64),
        "fa": np.array([0.5, np.inf]), "empty": np.zeros(0, dtype=np.int64),
    }
    c = _simple()
    c.tensors[0].stages = [StageRecord(0x7FFF, params)]
    got = parse(serialize(c)).tensors[0].stages[0].params
    assert got["i"] == params["i"] and got["s"] == params["s"] and got["b"] == params["b"]
    assert str(got["f"]) == "-0.0"
    np.testing.assert_array_equal(got["ia"], params["ia"])
    np.testing.assert_array_equal(got["fa"], params["fa"])
    assert got["empty"].size == 0  # type: ignore[union-attr]


def _reframe(data: bytes, major: int | None = None, minor: int | None = None, insert: list | None = None) -> bytes:
    """Re-chunk ``data`` (fixing CRCs and the digest) with a new version and extra chunks after HEAD."""
    pos, chunks = 10, []
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos : pos + 8])
        chunks.append((data[pos + 8 : pos + 12], data[pos + 12 : pos + 12 + length]))
        pos += 16 + length
    body = [c for c in chunks if c[0] not in (b"IEND", b"indx")]
    body = body[:1] + list(insert or []) + body[1:]
    out = SIGNATURE + bytes([data[8] if major is None else major, data[9] if minor is None else minor])
    for ctype, b in body:
        out += _chunk(ctype, b)
    return out + _chunk(b"IEND", bytes(8) + hashlib.sha256(out).digest())


def test_version_rules() -> None:
    data = serialize(_simple())
    assert parse(_reframe(data, minor=77)).version == (1, 77)
    with pytest.raises(UnsupportedError):
        parse(_reframe(data, major=2))
    with pytest.raises(UnsupportedError):
        parse(_reframe(data, major=0))


def test_unknown_ancillary_skipped_unknown_critical_refused() -> None:
    data = serialize(_simple())
    c = parse(_reframe(data, insert=[(b"xyZw", b"whatever")]))
    assert c.extra_chunks == [(b"xyZw", b"whatever")]
    with pytest.raises(UnsupportedError, match="critical"):
        parse(_reframe(data, insert=[(b"XyZw", b"")]))
    with pytest.raises(FormatError, match="chunk type"):
        parse(_reframe(data, insert=[(b"ab1d", b"")]))


def test_ancillary_chunks_survive_update_round_trip() -> None:
    update = nnupdate.diff({"a": np.zeros(3, np.float32)}, {"a": np.ones(3, np.float32)})
    update.extra_chunks.append((b"noTe", b"hello"))
    assert nnupdate.decode(update.encode("raw")).extra_chunks == [(b"noTe", b"hello")]


def test_signature_damage_is_named() -> None:
    data = serialize(_simple())
    with pytest.raises(FormatError, match="text mode"):
        parse(data.replace(b"\r\n", b"\n", 1))
    with pytest.raises(FormatError, match="not an .nnu"):
        parse(b"GIF89a" + data[6:])
    with pytest.raises(TruncatedError):
        parse(data[:9])


def test_crc_and_digest() -> None:
    data = bytearray(serialize(_simple()))
    data[30] ^= 1
    with pytest.raises(ChecksumError):
        parse(bytes(data))
    good = serialize(_simple())
    bad_digest = good[:-56] + _chunk(b"IEND", good[-44:-36] + bytes(32))
    with pytest.raises(ChecksumError, match="digest"):
        parse(bad_digest)


def test_trailing_bytes_inside_head_refused() -> None:
    data = serialize(_simple())
    pos = 10
    (length,) = struct.unpack("<Q", data[pos : pos + 8])
    head = data[pos + 12 : pos + 12 + length]
    rest = data[pos + 16 + length :]
    patched = data[:pos] + _chunk(b"HEAD", head + b"\x00") + rest
    with pytest.raises(FormatError):
        parse(_reframe(patched))


@pytest.mark.parametrize("count", [5, INDEX_MIN_CHUNKS + 3])  # without an index (frames walked) and with one
def test_index_points_at_every_tensor(count: int) -> None:
    update = nnupdate.full({f"t{i:02d}": np.full(i + 1, i, dtype=np.int32) for i in range(count)})
    data = update.encode("raw")
    assert (b"indx" in data) == (count > INDEX_MIN_CHUNKS)
    index = read_index(data)
    assert sorted(index) == [f"t{i:02d}" for i in range(count)]
    for name, (offset, length) in index.items():
        assert data[offset + 8 : offset + 12] == b"TNSR"
        assert int.from_bytes(data[offset : offset + 8], "little") + 16 == length
        assert read_tensor(data, name).name == name
    with pytest.raises(nnupdate.InputError):
        read_tensor(data, "missing")


def _declaring(shape: tuple[int, ...]) -> bytes:
    rec = TensorRecord("big", "float32", shape, Combine.REPLACE, Role.UNKNOWN, [Raw().record()], b"")
    return serialize(Container(Header(UpdateKind.FULL), [rec]))


def test_huge_declared_tensor_refused_before_allocating() -> None:
    data = _declaring((2**20, 2**20))  # 2**40 elements, no payload
    started = time.perf_counter()
    with pytest.raises(LimitError):
        nnupdate.decode(data)
    assert time.perf_counter() - started < 5  # refusal, not an attempted 4 TiB allocation


def test_limits_are_configurable() -> None:
    data = nnupdate.full({"a": np.zeros(1000, np.float32)}).encode("raw")
    with pytest.raises(LimitError):
        parse(data, limits=Limits(max_elements=999))
    with pytest.raises(LimitError):
        parse(data, limits=Limits(max_total_bytes=3999))
    with pytest.raises(LimitError):
        parse(data, limits=Limits(max_name_bytes=0))
    with pytest.raises(LimitError):
        parse(data, limits=Limits(max_tensors=0))
    assert parse(data, limits=Limits(max_elements=1000)).tensors[0].size == 1000


def test_rank_limit_checked_before_shape() -> None:
    rec = TensorRecord("r", "float32", (1,) * 33, Combine.REPLACE, Role.UNKNOWN, [Raw().record()], b"\x00" * 4)
    with pytest.raises(LimitError, match="rank"):
        parse(serialize(Container(Header(UpdateKind.FULL), [rec])))


def test_unknown_enum_values_refused() -> None:
    data = serialize(_simple())
    with pytest.raises(UnsupportedError):
        parse(_reframe_head_byte(data, 0, 9))  # kind 9


def _reframe_head_byte(data: bytes, at: int, value: int) -> bytes:
    pos = 10
    (length,) = struct.unpack("<Q", data[pos : pos + 8])
    head = bytearray(data[pos + 12 : pos + 12 + length])
    head[at] = value
    return _reframe(data[:pos] + _chunk(b"HEAD", bytes(head)) + data[pos + 16 + length :])


def test_duplicate_metadata_keys_refused() -> None:
    c = _simple()
    data = serialize(c)
    pos = 10
    (length,) = struct.unpack("<Q", data[pos : pos + 8])
    head = data[pos + 12 : pos + 12 + length]
    entry = _s16("k") + struct.pack("<I", 1) + b"v"
    dup = head.replace(struct.pack("<I", 1) + entry, struct.pack("<I", 2) + entry + entry)
    with pytest.raises(FormatError, match="duplicate"):
        parse(_reframe(data[:pos] + _chunk(b"HEAD", dup) + data[pos + 16 + length :]))
