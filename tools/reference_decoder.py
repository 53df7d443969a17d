#!/usr/bin/env python
"""An independent .nnu decoder written only from spec/FORMAT.md.

It imports nothing from ``nnupdate`` (standard library, the ``crc32c`` package for
CRC-32C and ``zstandard`` for the zstd stage) and implements the container and the
stages raw, uniform, rans and zstd in plain Python integers and floats, so that
agreement with the library on the conformance vectors shows the spec is complete.
It is slow (a Python loop per rANS symbol) and meant for small files.

    python tools/reference_decoder.py FILE.nnu          # prints every tensor
    python tools/reference_decoder.py --npz FILE.nnu DECODED.npz [BASE.npz APPLIED.npz]
        # the conformance runner's protocol: nnupdate conformance --decoder "python tools/reference_decoder.py --npz"
    decode(data) -> Decoded ; apply(base, decoded) -> {name: Tensor}

Tensors are ``Tensor(dtype, shape, data)`` with ``data`` the little-endian element
bytes (bfloat16 as 16-bit patterns). Any defect raises ``RefError``.
"""

from __future__ import annotations

import hashlib
import math
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import crc32c
import zstandard

SIGNATURE = b"\x89NNU\r\n\x1a\n"
# §4.1: code -> (name, element size, struct format or None for bfloat16)
TYPES = {
    1: ("float32", 4, "f"), 2: ("float16", 2, "e"), 3: ("bfloat16", 2, "H"), 4: ("float64", 8, "d"),
    5: ("int8", 1, "b"), 6: ("uint8", 1, "B"), 7: ("int16", 2, "h"), 8: ("int32", 4, "i"),
    9: ("int64", 8, "q"), 10: ("bool", 1, "B"), 11: ("uint16", 2, "H"), 12: ("uint32", 4, "I"),
    13: ("uint64", 8, "Q"),
}
BY_NAME = {v[0]: (code, v[1], v[2]) for code, v in TYPES.items()}
FLOATS = ("float32", "float16", "bfloat16", "float64")
COMBINES = ("ADD", "REPLACE", "XOR", "KEEP", "REMOVE", "ULP")
MAX_ELEMENTS = 1 << 29
MAX_HEADER_BYTES = 1 << 20


class RefError(Exception):
    """The file is refused (the spec's "refuse")."""


@dataclass
class Tensor:
    dtype: str
    shape: tuple[int, ...]
    data: bytes

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass
class Record:
    name: str
    dtype: str
    role: int
    combine: str
    shape: tuple[int, ...]
    stages: list[tuple[int, dict[str, object]]]
    payload: bytes
    decoded: Tensor | None = None  # in the pipeline type
    members: list[tuple[str, str, int, tuple[int, ...]]] | None = None  # TGRP: (name, dtype, role, shape)


@dataclass
class Decoded:
    version: tuple[int, int]
    kind: int
    has_base: bool
    round: int
    base_fingerprint: bytes
    producer: str
    metadata: dict[str, str]
    tensors: list[Record] = field(default_factory=list)
    skipped: list[bytes] = field(default_factory=list)


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise RefError("field runs past the end")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "little")

    def sint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "little", signed=True)

    def f64(self) -> float:
        return float(struct.unpack("<d", self.take(8))[0])

    def text(self, n: int) -> str:
        try:
            return self.take(self.uint(n)).decode("utf-8")
        except UnicodeDecodeError:
            raise RefError("invalid UTF-8") from None

    def uvarint(self) -> int:
        value = 0
        for i in range(10):
            byte = self.uint(1)
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if value >> 64:
                    raise RefError("varint exceeds 64 bits")
                return value
        raise RefError("varint longer than 10 bytes")

    def svarint(self) -> int:
        z = self.uvarint()
        return z >> 1 if not z & 1 else -((z + 1) >> 1)

    def done(self) -> None:
        if self.pos != len(self.data):
            raise RefError("trailing bytes")


# ----------------------------------------------------------------------------- §7.5 rounding


def round_to(value: float, dtype: str) -> bytes:
    """RN_T of a binary64 value, as the element bytes of T."""
    if dtype == "float64":
        return struct.pack("<d", value)
    if dtype == "bfloat16":
        bits = int.from_bytes(round_to(value, "float32"), "little")
        if math.isnan(value):
            return ((bits >> 16) | 0x0040).to_bytes(2, "little")
        return (((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFFFFFF) >> 16).to_bytes(2, "little")
    fmt = "<f" if dtype == "float32" else "<e"
    try:
        return struct.pack(fmt, value)
    except OverflowError:  # rounds to infinity (struct refuses instead of rounding)
        return struct.pack(fmt, math.copysign(math.inf, value))


def to_float(element: bytes, dtype: str) -> float:
    if dtype == "bfloat16":
        return float(struct.unpack("<f", b"\x00\x00" + element)[0])
    return float(struct.unpack("<" + BY_NAME[dtype][2], element)[0])


def elements(t: Tensor) -> list[bytes]:
    size = BY_NAME[t.dtype][1]
    return [t.data[i : i + size] for i in range(0, len(t.data), size)]


# ----------------------------------------------------------------------------- §7 stages


def stage_raw(params: dict[str, object], payload: bytes, dtype: str, n: int) -> bytes:
    storage = params.get("dtype", "")
    if not isinstance(storage, str) or (storage and storage not in BY_NAME) or set(params) - {"dtype"}:
        raise RefError("raw: bad parameters")
    storage = storage or dtype
    size = BY_NAME[storage][1]
    if len(payload) != n * size:
        raise RefError("raw: payload size")
    if storage == dtype:
        return payload
    if storage not in FLOATS or dtype not in FLOATS:
        raise RefError("raw: incompatible storage type")
    return b"".join(round_to(to_float(payload[i : i + size], storage), dtype) for i in range(0, len(payload), size))


def stage_uniform(params: dict[str, object], levels: list[int], dtype: str) -> bytes:
    if set(params) - {"step", "rounding", "seed"}:
        raise RefError("uniform: unknown parameter")
    step = params.get("step", 0.001)
    step = float(step) if isinstance(step, int) and not isinstance(step, bool) else step
    if not isinstance(step, float) or not (math.isfinite(step) and step > 0):
        raise RefError("uniform: bad step")
    if params.get("rounding", "nearest") not in ("nearest", "stochastic") or not isinstance(params.get("seed", 0), int):
        raise RefError("uniform: bad parameters")
    if dtype not in FLOATS:
        raise RefError("uniform: not a float type")
    return b"".join(round_to(q * step, dtype) for q in levels)


def stage_rans(params: dict[str, object], payload: bytes, n: int) -> list[int]:
    if set(params) - {"lanes"}:
        raise RefError("rans: unknown parameters")
    lanes = params.get("lanes", 1)
    if not isinstance(lanes, int) or not 1 <= lanes <= 32:
        raise RefError("rans: lanes must be 1..32")
    if n == 0:
        if payload:
            raise RefError("rans: payload for an empty array")
        return []
    r = Reader(payload)
    lo, alphabet, esc, prec = r.svarint(), r.uvarint(), r.uint(1), r.uint(1)
    if not (1 <= alphabet <= 4096 and esc <= 1 and 10 <= prec <= 20):
        raise RefError("rans: bad model header")
    if lo < -(1 << 63) or lo + alphabet - 1 - esc > (1 << 63) - 1:
        raise RefError("rans: window outside int64")
    freq = [r.uvarint() for _ in range(alphabet)]
    if sum(freq) != 1 << prec:
        raise RefError("rans: frequencies do not sum to 2^P")
    cum = [0] * alphabet
    for s in range(1, alphabet):
        cum[s] = cum[s - 1] + freq[s - 1]
    nonzero = [s for s in range(alphabet) if freq[s]]
    if len(nonzero) == 1:
        symbols = [nonzero[0]] * n
    else:
        nwords = r.uvarint()
        if nwords > n + 1:
            raise RefError("rans: too many words")
        states = [r.uint(8) for _ in range(lanes)]
        if not all((1 << 31) <= x < (1 << 63) for x in states):
            raise RefError("rans: bad initial state")
        words = [r.uint(4) for _ in range(nwords)]
        slot_symbol = [s for s in range(alphabet) for _ in range(freq[s])]
        mask, p, symbols = (1 << prec) - 1, 0, []
        for i in range(n):
            x = states[i % lanes]
            slot = x & mask
            s = slot_symbol[slot]
            symbols.append(s)
            x = freq[s] * (x >> prec) + slot - cum[s]
            if x < 1 << 31:
                if p == nwords:
                    raise RefError("rans: stream exhausted")
                x = (x << 32) | words[p]
                p += 1
            states[i % lanes] = x
        if any(x != 1 << 31 for x in states) or p != nwords:
            raise RefError("rans: termination check failed")
    values = []
    for s in symbols:
        if esc and s == alphabet - 1:
            v = r.svarint()
            if not -(1 << 63) <= v < 1 << 63:
                raise RefError("rans: escaped value outside int64")
            values.append(v)
        else:
            values.append(lo + s)
    r.done()
    return values


def pack_ints(values: list[int], dtype: str) -> bytes:
    code, size, fmt = BY_NAME[dtype]
    if dtype == "uint64":
        return b"".join((v & ((1 << 64) - 1)).to_bytes(8, "little") for v in values)
    lo, hi = (0, 1) if dtype == "bool" else ((0, (1 << 8 * size) - 1) if fmt.isupper() else (-(1 << 8 * size - 1), (1 << 8 * size - 1) - 1))
    if any(v < lo or v > hi for v in values):
        raise RefError(f"value does not fit {dtype}")
    return b"".join(v.to_bytes(size, "little", signed=not fmt.isupper()) for v in values)


def unpack_ints(data: bytes, dtype: str) -> list[int]:
    size = BY_NAME[dtype][1]
    signed = not BY_NAME[dtype][2].isupper()
    return [int.from_bytes(data[i : i + size], "little", signed=signed) for i in range(0, len(data), size)]


def zstd_decode(params: dict[str, object], payload: bytes, bound: int) -> bytes:
    if set(params) - {"level"}:
        raise RefError("zstd: unknown parameter")
    try:
        size = zstandard.frame_content_size(payload)
        if size < 0 or size > bound:
            raise RefError("zstd: missing or too large content size")
        stream = zstandard.ZstdDecompressor().decompressobj()
        out = stream.decompress(payload)
    except zstandard.ZstdError as exc:
        raise RefError(f"zstd: {exc}") from None
    if not stream.eof or stream.unused_data or len(out) != size:
        raise RefError("zstd: not exactly one complete frame")
    return out


ARRAY_TO_ARRAY, ARRAY_TO_BYTES, BYTES_TO_BYTES = {0x0010}, {0x0001, 0x0020}, {0x0030}


def pipeline_type(rec: Record) -> str:
    """§4.3: XOR decodes to the unsigned, ULP to the signed integer of the element width."""
    if rec.combine == "XOR":
        return {1: "uint8", 2: "uint16", 4: "uint32", 8: "uint64"}[BY_NAME[rec.dtype][1]]
    if rec.combine == "ULP":
        return {2: "int16", 4: "int32", 8: "int64"}[BY_NAME[rec.dtype][1]]
    return rec.dtype


def run_pipeline(rec: Record) -> Tensor:
    """§7: decode the payload right to left into the pipeline type."""
    ptype = pipeline_type(rec)
    n = math.prod(rec.shape)
    ids = [cid for cid, _ in rec.stages]
    for cid in ids:
        if cid not in ARRAY_TO_ARRAY | ARRAY_TO_BYTES | BYTES_TO_BYTES:
            raise RefError(f"unknown codec id {cid:#06x}")
    serial = [i for i, cid in enumerate(ids) if cid in ARRAY_TO_BYTES]
    if len(serial) != 1 or any(c not in ARRAY_TO_ARRAY for c in ids[: serial[0]]) or any(
        c not in BYTES_TO_BYTES for c in ids[serial[0] + 1 :]
    ):
        raise RefError("bad stage order")
    k = serial[0]
    # specs forward: uniform maps a float type to int32
    specs = [ptype]
    for _ in rec.stages[:k]:
        specs.append("int32")
    inner_type = specs[-1]
    sid, sparams = rec.stages[k]
    bound = n * BY_NAME[inner_type][1] if sid == 0x0001 else 64 + 40960 + 12 * n
    data = rec.payload
    for _cid, params in reversed(rec.stages[k + 1 :]):
        data = zstd_decode(params, data, bound)
    if sid == 0x0001:
        out = stage_raw(sparams, data, inner_type, n)
    else:
        if inner_type in FLOATS:
            raise RefError("rans: needs an integer type")
        out = pack_ints(stage_rans(sparams, data, n), inner_type)
    for (_cid, params), out_type, in_type in zip(reversed(rec.stages[:k]), reversed(specs[:-1]), reversed(specs[1:])):
        out = stage_uniform(params, unpack_ints(out, in_type), out_type)
    return Tensor(ptype, rec.shape, out)


# ----------------------------------------------------------------------------- §2–§5 container


def chunk_iter(data: bytes, pos: int):  # type: ignore[no-untyped-def]
    while pos < len(data):
        if len(data) - pos < 16:
            raise RefError("truncated chunk frame")
        length = int.from_bytes(data[pos : pos + 8], "little")
        ctype = data[pos + 8 : pos + 12]
        if length > len(data) - pos - 16:
            raise RefError("truncated chunk")
        if not all(65 <= c <= 90 or 97 <= c <= 122 for c in ctype):
            raise RefError("bad chunk type")
        body = data[pos + 12 : pos + 12 + length]
        crc = int.from_bytes(data[pos + 12 + length : pos + 16 + length], "little")
        if crc32c.crc32c(ctype + body) != crc:
            raise RefError("CRC mismatch")
        yield pos, ctype, body
        pos += 16 + length


def parse_head(body: bytes) -> tuple[Decoded, int]:
    r = Reader(body)
    kind, flags, rnd, fp = r.uint(1), r.uint(1), r.uint(8), r.take(32)
    if kind > 3:
        raise RefError("unknown update kind")
    producer = r.text(2)
    metadata: dict[str, str] = {}
    for _ in range(r.uint(4)):
        key = r.text(2)
        if key in metadata:
            raise RefError("duplicate metadata key")
        metadata[key] = r.text(4)
    count = r.uint(4)
    r.done()
    return Decoded((0, 0), kind, bool(flags & 1), rnd, fp, producer, metadata), count


def parse_param(r: Reader) -> tuple[str, object]:
    key = r.text(1)
    tag = r.uint(1)
    if tag == 1:
        value = r.svarint()
        if not -(1 << 63) <= value < 1 << 63:
            raise RefError("integer parameter outside i64")
        return key, value
    if tag == 2:
        return key, r.f64()
    if tag == 3:
        return key, r.text(4)
    if tag == 4:
        return key, r.take(r.uint(4))
    if tag in (5, 6):
        count = r.uint(4)
        if count > 1 << 20:
            raise RefError("parameter array too long")
        return key, [r.sint(8) if tag == 5 else r.f64() for _ in range(count)]
    raise RefError("unknown parameter tag")


def parse_stages(r: Reader) -> list[tuple[int, dict[str, object]]]:
    stages = []
    for _ in range(r.uint(1)):
        cid = r.uint(2)
        params: dict[str, object] = {}
        for _ in range(r.uint(1)):
            key, value = parse_param(r)
            if key in params:
                raise RefError("duplicate parameter")
            params[key] = value
        stages.append((cid, params))
    return stages


def parse_group(body: bytes) -> Record:
    """§4.4: the member table (plain or one zstd frame), then one combine mode, pipeline
    and payload for the members' concatenation."""
    r = Reader(body)
    mode, table = r.uint(1), r.take(r.uvarint())
    if mode == 1:
        table = zstd_decode({}, table, MAX_HEADER_BYTES)  # same framing rules as the zstd stage
    elif mode != 0 or len(table) > MAX_HEADER_BYTES:
        raise RefError("group table: unknown mode or too long")
    t = Reader(table)
    count, code = t.uvarint(), t.uint(1)
    if code not in TYPES:
        raise RefError("bad group element type")
    members = []
    for _ in range(count):
        name = t.take(t.uvarint()).decode("utf-8")
        role, ndim = t.uint(1), t.uint(1)
        if ndim > 32 or len(name.encode()) > 4096:
            raise RefError("bad group member")
        shape = tuple(t.uvarint() for _ in range(ndim))
        members.append((name, TYPES[code][0], role, shape))
    t.done()
    combine = r.uint(1)
    if not members or combine in (3, 4) or combine > 5 or (combine == 5 and members[0][1] not in FLOATS):
        raise RefError("bad group header")
    total = sum(math.prod(m[3]) for m in members)
    if total > MAX_ELEMENTS:
        raise RefError("too many elements")
    stages = parse_stages(r)
    return Record("", members[0][1], 0, COMBINES[combine], (total,), stages, body[r.pos :], members=members)


def split_group(rec: Record) -> list[Record]:
    """The members of a decoded group, each with its slice of the decoded elements."""
    assert rec.decoded is not None and rec.members is not None
    size = len(rec.decoded.data) // max(math.prod(rec.shape), 1)
    out, start = [], 0
    for name, dtype, role, shape in rec.members:
        n = math.prod(shape)
        part = Tensor(rec.decoded.dtype, shape, rec.decoded.data[start * size : (start + n) * size])
        out.append(Record(name, dtype, role, rec.combine, shape, rec.stages, b"", part))
        start += n
    return out


def parse_tensor(body: bytes) -> Record:
    r = Reader(body)
    name = r.text(2)
    code, role, combine, ndim = r.uint(1), r.uint(1), r.uint(1), r.uint(1)
    if code not in TYPES or combine > 5 or ndim > 32 or (combine == 5 and TYPES[code][0] not in FLOATS):
        raise RefError("bad tensor header")
    shape = tuple(r.uvarint() for _ in range(ndim))
    if math.prod(shape) > MAX_ELEMENTS or math.prod(d or 1 for d in shape) > 1 << 53:
        raise RefError("too many elements or dimensions too large")
    stages = parse_stages(r)
    return Record(name, TYPES[code][0], role, COMBINES[combine], shape, stages, body[r.pos :])


def decode(data: bytes, pipeline: Callable[[Record], Tensor] | None = None) -> Decoded:
    """Parse and decode a container; ``pipeline`` decodes one record (default: the
    stages of this spec; tools/reference_codecs.py passes one that knows more stages)."""
    pipeline = pipeline or run_pipeline
    if data[:8] != SIGNATURE:
        raise RefError("bad signature")
    if len(data) < 10 or data[8] != 1:
        raise RefError("unsupported major version")
    out: Decoded | None = None
    count, ended, names = 0, False, set()
    for pos, ctype, body in chunk_iter(data, 10):
        if ended:
            raise RefError("data after IEND")
        if out is None and ctype != b"HEAD":
            raise RefError("HEAD must come first")
        if ctype == b"HEAD":
            if out is not None:
                raise RefError("second HEAD")
            out, count = parse_head(body)
            out.version = (data[8], data[9])
        elif ctype in (b"TNSR", b"TGRP"):
            rec = parse_tensor(body) if ctype == b"TNSR" else parse_group(body)
            for name in [m[0] for m in rec.members] if rec.members else [rec.name]:
                if name in names:
                    raise RefError("duplicate tensor name")
                names.add(name)
            out.tensors.append(rec)  # type: ignore[union-attr]
        elif ctype == b"IEND":
            if len(body) != 40 or hashlib.sha256(data[:pos]).digest() != body[8:]:
                raise RefError("bad IEND or digest mismatch")
            ended = True
        elif ctype[0] & 0x20:
            out.skipped.append(ctype)  # type: ignore[union-attr]
        else:
            raise RefError("unknown critical chunk")
    if not ended or out is None:
        raise RefError("no IEND")
    if len(out.tensors) != count:
        raise RefError("tensor count mismatch")
    expanded = []
    for rec in out.tensors:
        if rec.combine in ("KEEP", "REMOVE"):
            if rec.stages or rec.payload:
                raise RefError("KEEP/REMOVE with a payload")
            expanded.append(rec)
        else:
            rec.decoded = pipeline(rec)
            expanded.extend(split_group(rec) if rec.members else [rec])
    out.tensors = expanded
    return out


# ----------------------------------------------------------------------------- §4.3 apply, §6 fingerprint


def fingerprint(base: dict[str, Tensor], names: list[str]) -> bytes:
    h = hashlib.sha256()
    for name in sorted(names, key=lambda n: n.encode("utf-8")):
        t, raw = base[name], name.encode("utf-8")
        h.update(len(raw).to_bytes(2, "little") + raw + bytes([BY_NAME[t.dtype][0], len(t.shape)]))
        h.update(b"".join(d.to_bytes(8, "little") for d in t.shape) + len(t.data).to_bytes(8, "little") + t.data)
    return h.digest()


def ulp_move(base: bytes, steps: bytes, size: int) -> bytes:
    """§4.3 ULP: each base bit pattern moved by its step through the order map U."""
    w = 8 * size
    s, ones = 1 << (w - 1), (1 << w) - 1
    out = []
    for i in range(0, len(base), size):
        u = int.from_bytes(base[i : i + size], "little")
        d = int.from_bytes(steps[i : i + size], "little")  # two's complement read as unsigned
        v = ((u ^ ones if u >= s else u + s) + d) % (1 << w)
        out.append((v - s if v >= s else v ^ ones).to_bytes(size, "little"))
    return b"".join(out)


def apply(base: dict[str, Tensor], dec: Decoded) -> dict[str, Tensor]:
    if dec.kind == 0:
        referenced = [r.name for r in dec.tensors if r.combine != "REPLACE"]
        if any(n not in base for n in referenced):
            raise RefError("base lacks a referenced tensor")
        if dec.has_base and fingerprint(base, referenced) != dec.base_fingerprint:
            raise RefError("base fingerprint mismatch")
    out = dict(base)
    for rec in dec.tensors:
        if rec.combine == "REMOVE":
            out.pop(rec.name, None)
            continue
        if rec.combine == "REPLACE":
            assert rec.decoded is not None
            out[rec.name] = Tensor(rec.dtype, rec.shape, rec.decoded.data)
            continue
        b = out.get(rec.name)
        if b is None or b.dtype != rec.dtype or b.shape != rec.shape:
            raise RefError("base tensor missing or of another type/shape")
        if rec.combine == "KEEP":
            continue
        assert rec.decoded is not None
        d = rec.decoded.data
        if rec.combine == "XOR":
            out[rec.name] = Tensor(rec.dtype, rec.shape, bytes(x ^ y for x, y in zip(b.data, d)))
        elif rec.combine == "ULP":
            out[rec.name] = Tensor(rec.dtype, rec.shape, ulp_move(b.data, d, BY_NAME[rec.dtype][1]))
        elif rec.dtype in FLOATS:  # RN_T(b + d): the binary64 sum rounds once more, innocuously (53 >= 2p+2)
            pairs = zip(elements(b), elements(rec.decoded))
            out[rec.name] = Tensor(rec.dtype, rec.shape, b"".join(
                round_to(to_float(x, rec.dtype) + to_float(y, rec.dtype), rec.dtype) for x, y in pairs))
        elif rec.dtype == "bool":
            out[rec.name] = Tensor(rec.dtype, rec.shape, bytes(x | y for x, y in zip(b.data, d)))
        else:
            bits = 8 * BY_NAME[rec.dtype][1]
            total = [(x + y) % (1 << bits) for x, y in zip(unpack_ints(b.data, rec.dtype), unpack_ints(d, rec.dtype))]
            unsigned = BY_NAME[rec.dtype][2].upper()
            out[rec.name] = Tensor(rec.dtype, rec.shape, b"".join(struct.pack("<" + unsigned, v) for v in total))
    return out


# --------------------------------------------------------------- .npz files (spec §11 protocol)
#: numpy's type strings of the element types; bfloat16 travels as its 16-bit patterns
NPY_DESCR = {
    "float32": "<f4", "float16": "<f2", "bfloat16": "<u2", "float64": "<f8", "int8": "|i1", "uint8": "|u1",
    "int16": "<i2", "int32": "<i4", "int64": "<i8", "bool": "|b1", "uint16": "<u2", "uint32": "<u4", "uint64": "<u8",
}
DESCR_TYPE = {d: n for n, d in NPY_DESCR.items() if n != "bfloat16"}


def write_npz(path: str, tensors: dict[str, Tensor]) -> None:
    """An .npz of ``tensors`` (format 1.0 .npy members), written with the standard library."""
    import zipfile

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, t in tensors.items():
            header = f"{{'descr': '{NPY_DESCR[t.dtype]}', 'fortran_order': False, 'shape': {tuple(t.shape)!r}, }}"
            header += " " * (63 - (10 + len(header)) % 64) + "\n"  # pad so the data starts 64-aligned
            zf.writestr(f"{name}.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1") + t.data)


def read_npz(path: str) -> dict[str, Tensor]:
    """The tensors of an .npz written as above (or by numpy, format 1.0/2.0, C order)."""
    import ast
    import zipfile

    out = {}
    with zipfile.ZipFile(path) as zf:
        for member in zf.namelist():
            raw = zf.read(member)
            if raw[:6] != b"\x93NUMPY":
                raise RefError(f"{member}: not an .npy array")
            size, start = (struct.unpack_from("<H", raw, 8)[0], 10) if raw[6] == 1 else (struct.unpack_from("<I", raw, 8)[0], 12)
            header = ast.literal_eval(raw[start : start + size].decode("latin1"))
            if header["fortran_order"] or header["descr"] not in DESCR_TYPE:
                raise RefError(f"{member}: unsupported array layout {header}")
            out[member.removesuffix(".npy")] = Tensor(DESCR_TYPE[header["descr"]], tuple(header["shape"]), raw[start + size :])
    return out


def npz_main(files: list[str], decoder: Callable[[bytes], Decoded] | None = None) -> int:
    """The conformance runner's external-decoder protocol (spec/FORMAT.md §11):
    ``FILE.nnu DECODED.npz [BASE.npz APPLIED.npz]``; exit status 1 refuses the file."""
    if len(files) not in (2, 4):
        print("usage: --npz FILE.nnu DECODED.npz [BASE.npz APPLIED.npz]", file=sys.stderr)
        return 2
    try:
        decode_to_npz(files[0], files[1], *(files[2:] or [None, None]), decoder=decoder or decode)
    except RefError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


def decode_to_npz(
    source: str, decoded_path: str, base_path: str | None, applied_path: str | None, decoder: Callable[[bytes], Decoded]
) -> None:
    """The decoded tensors to ``decoded_path``, and with a base, the applied model to ``applied_path``."""
    with open(source, "rb") as fh:
        dec = decoder(fh.read())
    write_npz(decoded_path, {r.name: r.decoded for r in dec.tensors if r.decoded is not None})
    if base_path and applied_path:
        stored = {r.name: r.dtype for r in dec.tensors}
        base = {  # bfloat16 travels as uint16: typed again from the records
            name: Tensor("bfloat16", t.shape, t.data) if t.dtype == "uint16" and stored.get(name) == "bfloat16" else t
            for name, t in read_npz(base_path).items()
        }
        write_npz(applied_path, apply(base, dec))


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Decode .nnu files with the reference decoder (written from spec/ alone) and list their records.")
    parser.add_argument("files", nargs="+", metavar="FILE.nnu")
    parser.add_argument(
        "--npz", action="store_true",
        help="conformance protocol (spec §11): FILE.nnu DECODED.npz [BASE.npz APPLIED.npz]; exit 1 on refusal",
    )
    args = parser.parse_args(argv)
    if args.npz:
        return npz_main(args.files)
    status = 0
    for path in args.files:
        try:
            with open(path, "rb") as fh:
                dec = decode(fh.read())
        except OSError as exc:
            print(f"{path}: cannot read: {exc.strerror}")
            status = 1
            continue
        except RefError as exc:
            print(f"{path}: refused: {exc}")
            status = 1
            continue
        print(f"{path}: version {dec.version}, kind {dec.kind}, round {dec.round}, skipped {dec.skipped}")
        for rec in dec.tensors:
            ids = ",".join(f"{cid:#06x}" for cid, _ in rec.stages)
            print(f"  {rec.name!r} {rec.dtype}{list(rec.shape)} {rec.combine} [{ids}] {len(rec.payload)} B")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
