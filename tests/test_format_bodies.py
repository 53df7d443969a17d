"""The hand-written TNSR/TGRP body readers agree with the construct schemas they mirror.

The writer builds bodies from ``schema.py``; the reader (``format/bodies.py``) is written
by hand for speed. On random headers, and on every truncation of them, both must give
the same record or both must refuse.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from nnupdate.errors import FormatError, LimitError, UnsupportedError
from nnupdate.format import Combine, Member, Role, StageRecord, TensorRecord, bodies, schema
from nnupdate.format import container as c
from nnupdate.format.constants import DEFAULT_LIMITS, Limits

names = st.text(min_size=0, max_size=12)
shapes = st.lists(st.integers(0, 100), min_size=0, max_size=4).map(tuple)  # within the element limit
param_values = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=5).map(lambda v: np.array(v, dtype=np.int64)),
    st.lists(st.floats(allow_nan=False), max_size=5).map(lambda v: np.array(v, dtype=np.float64)),
)
stages = st.lists(
    st.builds(StageRecord, st.integers(0, 0xFFFF), st.dictionaries(st.text(min_size=1, max_size=6), param_values, max_size=3)),
    max_size=3,
)
roles = st.sampled_from(list(Role))
combines = st.sampled_from([Combine.ADD, Combine.REPLACE, Combine.XOR])


def _via_construct_tensor(body: bytes) -> TensorRecord:
    raw: Any = c._parse_struct(schema.TensorBody, body, "TNSR chunk")
    h = raw.header
    return TensorRecord(
        h.name, c.dtypes.name_of(h.dtype), tuple(int(d) for d in h.shape), Combine(h.combine), c._role(h.role),
        [StageRecord(s.codec_id, {p.key: p.value for p in s.params}) for s in h.stages], bytes(raw.payload),
    )


def _same(a: TensorRecord, b: TensorRecord) -> None:
    assert (a.name, a.dtype, a.shape, a.combine, a.role, a.payload) == (b.name, b.dtype, b.shape, b.combine, b.role, b.payload)
    assert [m.__dict__ for m in a.members] == [m.__dict__ for m in b.members]
    assert len(a.stages) == len(b.stages)
    for sa, sb in zip(a.stages, b.stages):
        assert sa.codec_id == sb.codec_id and sa.params.keys() == sb.params.keys()
        for k in sa.params:
            np.testing.assert_array_equal(sa.params[k], sb.params[k])


def _outcome(fn: Any, body: bytes) -> TensorRecord | None:
    try:
        return fn(body)  # type: ignore[no-any-return]
    except FormatError:
        return None


@settings(max_examples=150, deadline=None)
@given(names, st.sampled_from(["float32", "int8", "bfloat16", "uint64"]), roles, combines, shapes, stages, st.binary(max_size=6))
def test_tensor_reader_matches_construct(name, dtype, role, combine, shape, stage_list, payload) -> None:  # type: ignore[no-untyped-def]
    record = TensorRecord(name, dtype, shape, combine, role, stage_list, payload)
    body = c._tensor_body(record)
    _same(c._tensor_from(memoryview(body), DEFAULT_LIMITS), _via_construct_tensor(body))
    for cut in range(len(body)):
        # Every truncation: what the reader accepts (a shorter payload) construct reads the
        # same way, and what construct refuses the reader refuses. The reader is stricter
        # in one place: compiled construct returns a cut-off string short instead of failing.
        fast = _outcome(lambda b: c._tensor_from(memoryview(b), DEFAULT_LIMITS), body[:cut])
        slow = _outcome(_via_construct_tensor, body[:cut])
        if fast is not None:
            assert slow is not None
            _same(fast, slow)
        if slow is None:
            assert fast is None


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(names, roles, shapes), min_size=1, max_size=5), combines, stages, st.binary(max_size=4))
def test_group_reader_matches_construct(members, combine, stage_list, payload) -> None:  # type: ignore[no-untyped-def]
    ms = [Member(n, "float32", s, r) for n, r, s in members]
    record = TensorRecord("", "float32", c.group_shape(ms), combine, Role.UNKNOWN, stage_list, payload, ms)
    body = c._group_body(record)
    raw: Any = c._parse_struct(schema.GroupBody, body, "TGRP chunk")
    table = raw.header.table
    if raw.header.table_mode == schema.TABLE_ZSTD:
        table = zstandard.ZstdDecompressor().decompress(table)
    parsed: Any = schema.GroupTable.parse(table)
    assert [(m.name, m.role, tuple(m.shape)) for m in parsed.members] == [(m.name, int(m.role), m.shape) for m in ms]
    _same(c._group_from(memoryview(body), DEFAULT_LIMITS), record)
    for cut in range(len(body) - len(payload)):  # cut inside the header: refused
        try:
            c._group_from(memoryview(body[:cut]), DEFAULT_LIMITS)
        except FormatError:
            continue
        raise AssertionError(f"a TGRP body cut at {cut} was accepted")


@settings(max_examples=120, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=200), roles, st.lists(st.integers(0, 2**40), max_size=6).map(tuple)), max_size=8),
       st.integers(0, 255))
def test_hand_packed_group_table_is_the_bytes_construct_builds(members, dtype) -> None:  # type: ignore[no-untyped-def]
    rows = [(name, int(role), shape) for name, role, shape in members]
    expected = schema.GroupTable.build(
        {"count": len(rows), "dtype": dtype, "members": [{"name": n, "role": r, "ndim": len(s), "shape": list(s)} for n, r, s in rows]}
    )
    assert bodies.group_table(dtype, rows) == expected


def test_group_shape_stacks_rows_of_one_length_only() -> None:
    m = lambda *shape: Member("x", "float32", shape)  # noqa: E731
    assert c.group_shape([m(3, 2), m(5, 2)]) == (8, 2)
    assert c.group_shape([m(4, 2, 3), m(1, 6)]) == (5, 6)
    assert c.group_shape([m(3, 2), m(4,)]) == (10,)  # a 1-D member: one row
    assert c.group_shape([m(3, 2), m(2, 3)]) == (12,)  # row lengths differ
    assert c.group_shape([m(3, 0), m(2, 0)]) == (0,)
    assert c.group_shape([m(0, 5), m(2, 5)]) == (2, 5)


def test_group_table_is_compressed_when_that_is_smaller() -> None:
    names = [f"layer{i // 9}.{i % 3}.bn{i % 3 + 1}.{'weight' if i % 2 else 'bias'}" for i in range(120)]
    ms = [Member(n, "float32", (16,), Role.WEIGHT) for n in names]
    big = TensorRecord("", "float32", (16 * 120,), Combine.ADD, Role.UNKNOWN, [], b"", ms)
    mode, table = c._group_table(big)
    assert mode == schema.TABLE_ZSTD and len(table) < sum(len(n) for n in names) / 3
    small = TensorRecord("", "float32", (3,), Combine.ADD, Role.UNKNOWN, [], b"", [Member("a", "float32", (3,))])
    assert c._group_table(small)[0] == schema.TABLE_PLAIN
    assert [m.name for m in c._group_from(memoryview(c._group_body(big)), DEFAULT_LIMITS).members] == names


def test_group_table_bombs_and_damage_are_refused() -> None:
    ms = [Member(f"m{i}", "float32", (4,)) for i in range(50)]
    body = c._group_body(TensorRecord("", "float32", (200,), Combine.ADD, Role.UNKNOWN, [], b"", ms))
    tight = Limits(max_header_bytes=64)
    with pytest.raises(LimitError):  # declared content size checked before decompressing
        c._group_from(memoryview(body), tight)
    with pytest.raises(UnsupportedError):
        c._group_from(memoryview(bytes([7]) + body[1:]), DEFAULT_LIMITS)
    no_size = zstandard.ZstdCompressor(write_content_size=False).compress(b"\x01\x0a\x01a\x00\x00")
    with pytest.raises(FormatError):
        c._group_from(memoryview(bytes([1, len(no_size)]) + no_size + bytes([0, 0])), DEFAULT_LIMITS)


def test_chunk_frame_unpacking_matches_the_schema() -> None:
    frame = schema.ChunkFrame.build({"length": 0x0102030405060708, "type": b"TNSR"})
    assert len(frame) == schema.CHUNK_FRAME_SIZE == c._FRAME.size
    assert c._FRAME.unpack_from(frame) == (0x0102030405060708, b"TNSR")
