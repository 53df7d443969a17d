"""Core vectors: the container itself and the stages raw (0x0001), uniform (0x0010),
rans (0x0020) and zstd (0x0030). Every chunk type, combine mode and element type
appears at least once; negative vectors each carry exactly one defect.
"""

from __future__ import annotations

import numpy as np

import nnupdate
from nnupdate.codecs.rans import Rans
from nnupdate.codecs.raw import Raw
from nnupdate.codecs.uniform import Uniform
from nnupdate.codecs.zstd import Zstd
from nnupdate.format import Combine, Member, Role, UpdateKind

from . import Case, build, encode_tensor, reframe, rng, uvarint

# ----------------------------------------------------------------------------- models


def _base() -> dict[str, np.ndarray]:
    g = rng(1)
    return {
        "conv.weight": g.standard_normal((8, 3, 3, 3)).astype(np.float32),
        "conv.bias": g.standard_normal(8).astype(np.float32),
        "bn.running_mean": g.standard_normal(8).astype(np.float32),
        "bn.num_batches_tracked": np.array(100, dtype=np.int64),
        "fc.weight": g.standard_normal((10, 32)).astype(np.float32),
        "old.head": g.standard_normal(4).astype(np.float32),
    }


def _new() -> dict[str, np.ndarray]:
    base = _base()
    g = rng(2)
    new = {
        "conv.weight": base["conv.weight"] + (0.01 * g.laplace(size=(8, 3, 3, 3))).astype(np.float32),
        "conv.bias": base["conv.bias"] + (0.001 * g.standard_normal(8)).astype(np.float32),
        "bn.running_mean": base["bn.running_mean"].copy(),  # unchanged: KEEP
        "bn.num_batches_tracked": np.array(160, dtype=np.int64),  # integer ADD
        "fc.weight": base["fc.weight"] + (0.02 * g.standard_normal((10, 32))).astype(np.float32),
        "new.head": g.standard_normal(5).astype(np.float32),  # added: REPLACE
    }
    return new  # "old.head" is gone: REMOVE


def _update(**header: object) -> nnupdate.Update:
    return nnupdate.diff(_base(), _new(), **header)  # type: ignore[arg-type]


def _encode(codec: str, **header: object) -> bytes:
    return _update(**header).encode(codec)


# ----------------------------------------------------------------------------- hand-built containers


def _heavy_tail() -> np.ndarray:
    """Levels spanning far more than rans' 4096-symbol window, so escapes occur."""
    g = rng(3)
    x = (0.001 * g.standard_t(1.5, size=3000)).astype(np.float64)
    x[::500] *= 5000.0
    return x.astype(np.float32)


def _rans_escapes() -> bytes:
    g = rng(4)
    bulk = g.integers(-20, 20, size=2000)
    spread = np.concatenate([bulk, [10**6, -(10**6), 5000, -5000, 123456789]]).astype(np.int32)
    extremes = np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max, 0, 1, -1, 0, 0, 0], dtype=np.int64)
    u64 = np.array([0, 2**64 - 1, 2**63, 2**63 - 1, 7, 7, 7], dtype=np.uint64)
    tensors = [
        encode_tensor("spread.int32", spread, [Rans()]),
        encode_tensor("extremes.int64", extremes, [Rans()]),
        encode_tensor("wrap.uint64", u64, [Rans()]),
        encode_tensor(
            "heavy.weight",
            _heavy_tail(),
            [Uniform(step=1e-4), Rans()],
            combine=Combine.REPLACE,
            role=Role.WEIGHT,
        ),
    ]
    return build(tensors, kind=UpdateKind.FULL)


def _rans_single_symbol() -> bytes:
    tensors = [
        encode_tensor("constant.int16", np.full((4, 5), -7, dtype=np.int16), [Rans()]),
        encode_tensor("zeros.float32", np.full(300, 1e-6, dtype=np.float32), [Uniform(step=0.5), Rans()]),
        encode_tensor("one.int32", np.array([42], dtype=np.int32), [Rans()]),
    ]
    return build(tensors, kind=UpdateKind.FULL)


def _rans_lanes() -> bytes:
    """Interleaved rANS: lane counts that do and do not divide N, N below the lane count,
    escapes and a window beyond int32 with lanes, and uniform levels decoded to floats."""
    g = rng(11)
    laplace = np.rint(g.laplace(0, 4.0, size=1001)).astype(np.int32)
    tensors = [
        encode_tensor(f"lanes{k}.int32", laplace, [Rans(lanes=k, auto_lanes=0)], role=Role.INT_BUFFER)
        for k in (2, 3, 4, 8, 32)
    ]
    tensors.append(encode_tensor("lanes8.short", laplace[:5], [Rans(lanes=8, auto_lanes=0)], role=Role.INT_BUFFER))
    spread = np.concatenate([laplace[:500], [10**6, -(10**6), 123456789]]).astype(np.int32)
    tensors.append(encode_tensor("lanes4.escapes", spread, [Rans(lanes=4, auto_lanes=0)], role=Role.INT_BUFFER))
    wide = (np.int64(1) << 40) + laplace[:300].astype(np.int64)
    tensors.append(encode_tensor("lanes4.int64", wide, [Rans(lanes=4, auto_lanes=0)], role=Role.INT_BUFFER))
    tensors.append(encode_tensor("lanes4.int16", laplace[:400].astype(np.int16), [Rans(lanes=4, auto_lanes=0)]))
    x = g.standard_normal((64, 130)).astype(np.float32)
    tensors.append(encode_tensor("auto.weight", x, [Uniform(step=0.02), Rans()], combine=Combine.REPLACE, role=Role.WEIGHT))
    return build(tensors, kind=UpdateKind.FULL)


def _indexed() -> bytes:
    """70 tensor chunks: enough for the reference writer to add the indx chunk."""
    g = rng(13)
    tensors = [encode_tensor(f"t{i:02d}", g.integers(-9, 9, size=1 + i % 5).astype(np.int8), [Raw()]) for i in range(70)]
    return build(tensors, kind=UpdateKind.FULL)


def _two_lanes() -> bytes:
    values = np.rint(rng(12).laplace(0, 4.0, size=257)).astype(np.int32)
    return build([encode_tensor("lanes2", values, [Rans(lanes=2, auto_lanes=0)], role=Role.INT_BUFFER)], kind=UpdateKind.FULL)


def _set_lanes(lanes: int):  # type: ignore[no-untyped-def]
    def edit(body: bytes) -> bytes:
        param = b"\x05lanes\x01\x04"  # key "lanes", TAG_INT, zigzag(2)
        assert body.count(param) == 1
        return body.replace(param, b"\x05lanes\x01" + uvarint(2 * lanes))

    return edit


def _int_types() -> bytes:
    g = rng(5)
    tensors = []
    for name in ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"):
        info = np.iinfo(name)
        values = g.integers(int(info.min), int(info.max), size=33, dtype=name, endpoint=True)
        tensors.append(encode_tensor(f"raw.{name}", values, [Raw()], role=Role.INT_BUFFER))
        tensors.append(encode_tensor(f"rans.{name}", values, [Rans()], role=Role.INT_BUFFER))
    flags = g.integers(0, 2, size=40).astype(bool)
    tensors.append(encode_tensor("flags.raw", flags, [Raw()]))
    tensors.append(encode_tensor("flags.rans", flags, [Rans()]))
    return build(tensors, kind=UpdateKind.FULL)


def _float_types() -> bytes:
    g = rng(6)
    x = g.standard_normal(64)
    bf16 = (np.ascontiguousarray(x.astype(np.float32)).view(np.uint32) >> 16).astype(np.uint16)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, 3.4e38, -1.5], dtype=np.float32)
    tensors = [
        encode_tensor("f64", x, [Raw()]),
        encode_tensor("f32", x.astype(np.float32), [Raw()]),
        encode_tensor("f16", x.astype(np.float16), [Raw()]),
        encode_tensor("bf16", bf16, [Raw()], dtype="bfloat16"),
        encode_tensor("f32.special", special, [Raw()]),
        encode_tensor("f32.as.f16", x.astype(np.float32), [Raw("float16")]),
        encode_tensor("f32.as.bf16", x.astype(np.float32), [Raw("bfloat16")]),
        encode_tensor("f64.as.f32.zstd", x, [Raw("float32"), Zstd(level=19)]),
        encode_tensor("bf16.uniform", bf16, [Uniform(step=0.01), Rans()], dtype="bfloat16"),
        encode_tensor("f16.uniform", x.astype(np.float16), [Uniform(step=0.003), Rans()]),
        encode_tensor("f32.stochastic", x.astype(np.float32), [Uniform(step=0.05, rounding="stochastic", seed=9), Rans()]),
    ]
    return build(tensors, kind=UpdateKind.FULL, metadata={"note": "element types"})


def _ulp_pairs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(base, new) per tensor of the ULP vector: small moves, and every crossing a decoder
    could get wrong (the two zeros, subnormals, infinities, NaN, sign wrap-around)."""
    g = rng(8)
    x = g.standard_normal(48)
    specials32 = np.array([0.0, -0.0, -1e-45, 1.0, np.inf, np.nan, 3.4e38, -np.inf], dtype=np.float32)
    after32 = np.array([-0.0, 0.0, 1e-45, np.inf, np.nan, 1.0, -3.4e38, np.inf], dtype=np.float32)
    return {
        "f32": (x.astype(np.float32), (x + 1e-4 * g.standard_normal(48)).astype(np.float32)),
        "f32.special": (specials32, after32),
        "f16": (x.astype(np.float16), (x + 0.01 * g.standard_normal(48)).astype(np.float16)),
        "f64": (x, x + 1e-12 * g.standard_normal(48)),
    }


def _ulp() -> bytes:
    from nnupdate.update import ulp_steps

    stages = {"f32": [Raw(), Zstd()], "f32.special": [Raw()], "f16": [Rans()], "f64": [Raw()]}
    records = []
    for name, (base, new) in _ulp_pairs().items():
        steps = ulp_steps(base, new, str(base.dtype))
        records.append(encode_tensor(name, steps, stages[name], dtype=str(base.dtype), combine=Combine.ULP, pipeline_dtype=str(steps.dtype)))
    return build(records, metadata={"note": "ULP combine"})


def _ulp_bf16_steps() -> np.ndarray:
    """bfloat16 steps, stated from FORMAT.md §4.3 with Python integers: bits 0x3F80 (1.0)
    moved by 1, -2 and to -1.0 (0xBF80), -0 to +0, and the largest finite to +inf."""
    def order(u: int) -> int:
        return u ^ 0xFFFF if u & 0x8000 else u | 0x8000

    pairs = [(0x3F80, 0x3F81), (0x3F80, 0x3F7E), (0x3F80, 0xBF80), (0x8000, 0x0000), (0x7F7F, 0x7F80)]
    return np.array([(order(b) - order(a) + 0x8000) % 0x10000 - 0x8000 for a, b in pairs], dtype=np.int16)


def _ulp_bf16() -> bytes:
    return build([encode_tensor("bf16", _ulp_bf16_steps(), [Raw()], dtype="bfloat16", combine=Combine.ULP, pipeline_dtype="int16")])


def _ulp_int() -> bytes:
    steps = np.array([1, -2, 3], dtype=np.int32)
    return build([encode_tensor("count", steps, [Raw()], combine=Combine.ULP)])


def _shapes() -> bytes:
    tensors = [
        encode_tensor("scalar.f32", np.array(3.25, dtype=np.float32), [Raw()]),
        encode_tensor("scalar.rans", np.array(-5, dtype=np.int32), [Rans()]),
        encode_tensor("empty.1d", np.zeros(0, dtype=np.float32), [Raw()]),
        encode_tensor("empty.3d", np.zeros((3, 0, 5), dtype=np.int64), [Rans()]),
        encode_tensor("empty.uniform", np.zeros((0, 4), dtype=np.float32), [Uniform(step=0.1), Rans()]),
        encode_tensor("empty.zstd", np.zeros((2, 0), dtype=np.float32), [Raw(), Zstd()]),
        encode_tensor("huge.dim.zero", np.zeros((2**40, 0), dtype=np.float32), [Raw()]),
        encode_tensor("rank8", np.arange(256, dtype=np.int16).reshape((2,) * 8), [Rans()]),
    ]
    return build(tensors, kind=UpdateKind.FULL)


def _unicode() -> bytes:
    g = rng(7)
    tensors = [
        encode_tensor("блок.вес", g.standard_normal(6).astype(np.float32), [Raw()]),
        encode_tensor("层/权重", g.integers(0, 5, size=9).astype(np.int32), [Rans()]),
        encode_tensor("emoji.🙂.bias", g.standard_normal(3).astype(np.float32), [Raw(), Zstd()]),
        encode_tensor("e\u0301", np.array([1.0], dtype=np.float32), [Raw()]),  # combining accent: bytes, not NFC
    ]
    return build(tensors, kind=UpdateKind.FULL, producer="生产者", metadata={"ключ": "значение", "": "empty key"})


def _ancillary() -> bytes:
    data = _encode("uniform:step=0.002,coder=rans", round=3)
    return reframe(
        data,
        edit=lambda chunks: chunks[:2] + [(b"zzZz", b"must be skipped")] + chunks[2:] + [(b"tEXt", b"\x00\x01")],
    )


def _tensor_digests() -> bytes:
    """An update carrying the ancillary ``tdig`` chunk (spec/ADAPTERS.md §1), as ``nnupdate
    encode`` writes by default: a decoder that does not use it must skip it."""
    from nnupdate.adapters.namemap import attach_tensor_digests

    update = _update(round=2)
    attach_tensor_digests(update, _base())
    return update.encode("raw:combine=xor")


def _newer_minor() -> bytes:
    return reframe(_encode("raw:combine=xor"), minor=200)


def _full_kind() -> bytes:
    new = _new()
    new.pop("bn.num_batches_tracked")
    return nnupdate.full(new, round=9, producer="full-test").encode("raw:combine=xor")


# ----------------------------------------------------------------------------- negative vectors


def _small() -> bytes:
    return _encode("uniform:step=0.002,coder=rans")  # FORMAT.md stages only, for the reference decoder


def _flip_byte(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x10
    return bytes(out)


def _tnsr_offset(data: bytes) -> int:
    return data.index(b"TNSR") + 8  # first byte of the first TNSR body


def _edit_first_tnsr(fn):  # type: ignore[no-untyped-def]
    def edit(chunks: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        out, done = [], False
        for ctype, body in chunks:
            if ctype == b"TNSR" and not done and _stage_count(body) > 0:
                body, done = fn(body), True
            out.append((ctype, body))
        return out

    return edit


def _skip_shape(body: bytes, at: int, ndim: int) -> int:
    """Offset just past ``ndim`` uvarint dimensions starting at ``at``."""
    for _ in range(ndim):
        while body[at] & 0x80:
            at += 1
        at += 1
    return at


def _stage_count(body: bytes) -> int:
    name_len = int.from_bytes(body[:2], "little")
    at = 2 + name_len + 3
    return body[_skip_shape(body, at + 1, body[at])]


def _set_shape(body: bytes, dims: list[int]) -> bytes:
    name_len = int.from_bytes(body[:2], "little")
    at = 2 + name_len + 3
    ndim = body[at]
    end = _skip_shape(body, at + 1, ndim)
    return body[:at] + bytes([len(dims)]) + b"".join(uvarint(d) for d in dims) + body[end:]


def _set_codec_id(body: bytes, codec_id: int) -> bytes:
    name_len = int.from_bytes(body[:2], "little")
    at = 2 + name_len + 3
    ndim = body[at]
    stages_at = _skip_shape(body, at + 1, ndim) + 1  # skip the stage count
    return body[:stages_at] + codec_id.to_bytes(2, "little") + body[stages_at + 2 :]


def _corrupt_rans_word(body: bytes) -> bytes:
    out = bytearray(body)
    out[-3] ^= 0x5A  # inside the last rANS word (the tensor has no escapes)
    return bytes(out)


def _first_tensor_rans() -> bytes:
    g = rng(8)
    record = encode_tensor("w", g.integers(-3, 4, size=500).astype(np.int32), [Rans()])
    return build([record], kind=UpdateKind.FULL)


def _group() -> bytes:
    """A TGRP of a 3x2 and a 4-element tensor: uniform levels -7..7 through rans."""
    g = rng(21)
    levels = g.integers(-7, 8, size=10).astype(np.int32)
    record = encode_tensor("", levels.astype(np.float64) * 0.25, [Uniform(0.25), Rans()], dtype="float32",
                           combine=Combine.ADD)
    record.members = [Member("grp.a", "float32", (3, 2), Role.WEIGHT), Member("grp.b", "float32", (4,), Role.BIAS)]
    return build([record])


def _group_zstd_table() -> bytes:
    """A TGRP of 40 BatchNorm-like members, whose repetitive member table is stored as zstd."""
    members = [Member(f"layer{i // 8}.{i // 2 % 4}.bn.{'weight' if i % 2 == 0 else 'bias'}", "float32", (4 + i % 3,),
                      Role.WEIGHT if i % 2 == 0 else Role.BIAS) for i in range(40)]
    n = sum(m.size for m in members)
    levels = rng(22).integers(-5, 6, size=n).astype(np.int32)
    record = encode_tensor("", levels.astype(np.float64) * 0.5, [Uniform(0.5), Rans()], dtype="float32", combine=Combine.ADD)
    record.members = members
    return build([record])


def _set_table_mode(chunks: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(t, bytes([7]) + b[1:] if t == b"TGRP" else b) for t, b in chunks]


def _group_expected() -> dict[str, np.ndarray]:
    levels = rng(21).integers(-7, 8, size=10).astype(np.float32) * np.float32(0.25)
    return {"grp.a": levels[:6].reshape(3, 2), "grp.b": levels[6:]}


NEGATIVE = [
    Case("core-neg-signature-text-mode", "CR LF in the signature turned into LF (text-mode transfer)",
         lambda: _small().replace(b"\r\n", b"\n", 1), error="FormatError"),
    Case("core-neg-not-nnu", "a zip file header instead of the signature",
         lambda: b"PK\x03\x04" + _small()[4:], error="FormatError"),
    Case("core-neg-truncated", "file cut in the middle of a TNSR chunk",
         lambda: _small()[: len(_small()) // 2], error="TruncatedError"),
    Case("core-neg-truncated-iend", "last byte of the IEND CRC missing",
         lambda: _small()[:-1], error="TruncatedError"),
    Case("core-neg-crc", "one payload bit flipped in a TNSR chunk (CRC-32C mismatch)",
         lambda: _flip_byte(_small(), _tnsr_offset(_small()) + 5), error="ChecksumError"),
    Case("core-neg-digest", "IEND digest does not match the preceding bytes (CRCs valid)",
         lambda: _bad_digest(), error="ChecksumError"),
    Case("core-neg-major-version", "format version 2.0", lambda: reframe(_small(), major=2), error="UnsupportedError"),
    Case("core-neg-critical-chunk", "an unknown critical chunk ZZZZ",
         lambda: reframe(_small(), edit=lambda c: c[:1] + [(b"ZZZZ", b"")] + c[1:]), error="UnsupportedError"),
    Case("core-neg-unknown-codec", "a stage with unregistered codec id 0x0FFF",
         lambda: reframe(_small(), edit=_edit_first_tnsr(lambda b: _set_codec_id(b, 0x0FFF))), error="UnsupportedError"),
    Case("core-neg-group-table-mode", "a TGRP whose member table mode is 7 (only 0 plain and 1 zstd exist)",
         lambda: reframe(_group(), edit=_set_table_mode), error="UnsupportedError"),
    Case("core-neg-elements-limit", "a tensor declaring 2**40 elements (refused before allocating)",
         lambda: reframe(_small(), edit=_edit_first_tnsr(lambda b: _set_shape(b, [2**20, 2**20]))), error="LimitError"),
    Case("core-neg-dim-product", "an empty tensor whose non-zero dimensions multiply past 2**53",
         lambda: reframe(_full_raw(), edit=_edit_first_tnsr(lambda b: _set_shape(b, [2**40, 0, 2**20]))), error="LimitError"),
    Case("core-neg-after-iend", "bytes after the IEND chunk",
         lambda: _small() + _small()[10:], error="FormatError"),
    Case("core-neg-head-not-first", "a TNSR chunk before HEAD",
         lambda: reframe(_small(), edit=lambda c: [c[1], c[0], *c[2:]]), error="FormatError"),
    Case("core-neg-duplicate-name", "two TNSR chunks with the same name",
         lambda: reframe(_first_tensor_rans(), edit=lambda c: [_bump_count(c[0]), c[1], c[1], *c[2:]]), error="FormatError"),
    Case("core-neg-tensor-count", "HEAD declares one tensor more than the file holds",
         lambda: reframe(_first_tensor_rans(), edit=lambda c: [_bump_count(c[0]), *c[1:]]), error="FormatError"),
    Case("core-neg-rans-stream", "a corrupted rANS word (frame and CRCs valid): the final-state check fails",
         lambda: reframe(_first_tensor_rans(), edit=_edit_first_tnsr(_corrupt_rans_word)), error="CodecError"),
    Case("core-neg-rans-lanes-zero", "rans with lanes = 0 (valid range 1..32)",
         lambda: reframe(_two_lanes(), edit=_edit_first_tnsr(_set_lanes(0))), error="FormatError"),
    Case("core-neg-rans-lanes-stream", "a 2-lane rans stream read as 3 lanes: inconsistent length or failed final-state check",
         lambda: reframe(_two_lanes(), edit=_edit_first_tnsr(_set_lanes(3))), error="CodecError"),
    Case("core-neg-raw-size", "raw payload one byte short of shape x element size",
         lambda: reframe(_full_raw(), edit=_edit_first_tnsr(lambda b: b[:-1])), error="CodecError"),
    Case("core-neg-ulp-int", "combine ULP on an int32 tensor (float types only)", _ulp_int, error="FormatError"),
]


def _full_raw() -> bytes:
    return build([encode_tensor("w", np.arange(10, dtype=np.float32), [Raw()])], kind=UpdateKind.FULL)


def _bad_digest() -> bytes:
    data = _small()
    body = data[-44:-4]
    bad = body[:8] + bytes(32)
    from . import frame

    return data[:-56] + frame(b"IEND", bad)


def _bump_count(head: tuple[bytes, bytes]) -> tuple[bytes, bytes]:
    ctype, body = head
    count = int.from_bytes(body[-4:], "little")
    return ctype, body[:-4] + (count + 1).to_bytes(4, "little")


# ----------------------------------------------------------------------------- cases

CASES = [
    Case("core-tdig", "the ancillary tdig chunk (8-byte digests of every referenced base tensor, spec/ADAPTERS.md §1) "
         "beside a lossless update; apply gives NEW bit-exactly", _tensor_digests, base=_base, applied=_new),
    Case("core-group", "a TGRP group: uniform(0.25) | rans over a 3x2 and a 4-element member, split in member order",
         _group, expected=_group_expected),
    Case("core-group-zstd-table", "a TGRP of 40 members whose member table is one zstd frame (table mode 1)",
         _group_zstd_table),
    Case("core-lossless-xor", "codec raw: float deltas as XOR of bit patterns (raw or raw|zstd), KEEP, REMOVE, "
         "REPLACE, integer ADD; apply reproduces NEW bit-exactly", lambda: _encode("raw:combine=xor", round=1), base=_base,
         applied=_new),
    Case("core-lossless-ulp", "combine ULP: float32, float16 and float64 moved by whole ULPs, across +-0, "
         "subnormals, infinities, NaN and a sign flip (raw, raw|zstd, rans); apply gives NEW bit-exactly",
         _ulp, base=lambda: {k: b for k, (b, _) in _ulp_pairs().items()},
         applied=lambda: {k: n for k, (_, n) in _ulp_pairs().items()}),
    Case("core-lossless-ulp-bf16", "combine ULP on bfloat16 (decoded steps stated from the spec's integer map)",
         _ulp_bf16, expected=lambda: {"bf16": _ulp_bf16_steps()}),
    Case("core-fp16", "codec fp16: float32 deltas stored as float16 (ADD)", lambda: _encode("fp16"), base=_base),
    Case("core-bf16", "codec bf16: float32 deltas stored as bfloat16 (ADD)", lambda: _encode("bf16"), base=_base),
    Case("core-zstd", "codec zstd: float32 deltas, raw float32 | zstd", lambda: _encode("zstd"), base=_base),
    Case("core-uniform-rans", "codec uniform (global step from max_rel_error=0.05) with rans",
         lambda: _encode("uniform:coder=rans", metadata={"task": "conformance"}), base=_base),
    Case("core-uniform-stochastic", "uniform with stochastic rounding (seeded), auto coder",
         lambda: _encode("uniform:step=0.003,rounding=stochastic,seed=5"), base=_base),
    Case("core-rans-escapes", "rans with escape symbols: wide int32 range, int64 extremes, uint64 wrap, "
         "uniform levels of a heavy-tailed tensor", _rans_escapes),
    Case("core-rans-single-symbol", "rans whose model has one symbol (no stream), incl. all-zero levels",
         _rans_single_symbol),
    Case("core-rans-lanes", "interleaved rans (lanes 2..32, N not a multiple of the lanes, N < lanes, escapes, "
         "a window beyond int32, int16 output; a default-encoded 64x130 tensor, which the encoder gives 8 lanes)",
         _rans_lanes),
    Case("core-indexed", "70 tensor chunks with the indx chunk (random access: offsets and lengths in file order)",
         _indexed),
    Case("core-int-types", "every integer type and bool, raw and rans, FULL kind", _int_types),
    Case("core-float-types", "float64/32/16 and bfloat16, specials, raw casts, zstd level 19, uniform on f16/bf16",
         _float_types),
    Case("core-shapes", "scalars, empty tensors, zero-size dims, a 2**40 x 0 tensor, rank 8", _shapes),
    Case("core-unicode", "UTF-8 tensor names, producer and metadata", _unicode),
    Case("core-ancillary", "unknown ancillary chunks zzZz and tEXt, which readers must skip", _ancillary, base=_base),
    Case("core-newer-minor", "format version 1.200: a 1.x reader reads it", _newer_minor, base=_base, applied=_new),
    Case("core-full", "update kind FULL (no base fingerprint), lossless REPLACE", _full_kind, base=lambda: {}),
    *NEGATIVE,
]

