#!/usr/bin/env python
"""An independent decoder for the stages of spec/CODECS.md, written only from that text.

Like tools/reference_decoder.py (whose container parsing and core stages it reuses) it
imports nothing from ``nnupdate``: plain Python integers and floats, a bit reader per
the "Bit streams" section, and the decode rules of m22 (0x0011), qsgd (0x0012), topk
(0x0013), sbc (0x0014), lowrank (0x0015), elias (0x0021), golomb (0x0022) and bitpack (0x0023). Agreement
with the library on the conformance vectors (tests/test_codecs_reference.py) shows the
spec is complete. Slow; meant for small files.

    python tools/reference_codecs.py FILE.nnu
    python tools/reference_codecs.py --npz FILE.nnu DECODED.npz [BASE.npz APPLIED.npz]   # spec/FORMAT.md §11
"""

from __future__ import annotations

import math
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reference_decoder as ref  # noqa: E402
from reference_decoder import BY_NAME, FLOATS, RefError, Tensor  # noqa: E402

INT32_MAX = (1 << 31) - 1

# ----------------------------------------------------------------------------- bit streams


class Bits:
    """Bit ``i`` is bit ``i mod 8`` (LSB first) of byte ``i // 8``."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos, self.total = data, 0, 8 * len(data)

    def bit(self) -> int:
        if self.pos >= self.total:
            raise RefError("bit stream ends inside a code")
        b = (self.data[self.pos >> 3] >> (self.pos & 7)) & 1
        self.pos += 1
        return b

    def field(self, width: int) -> int:
        return sum(self.bit() << j for j in range(width))

    def gamma(self) -> int:
        zeros = 0
        while self.bit() == 0:
            zeros += 1
            if zeros > 31:
                raise RefError("gamma code longer than 32 bits")
        return (1 << zeros) + self.field(zeros)

    def rice(self, k: int, limit: int) -> int:
        q = 0
        while self.bit() == 1:
            q += 1
            if q > limit >> k:
                raise RefError("rice quotient too large")
        v = (q << k) | self.field(k)
        if v > limit:
            raise RefError("rice value too large")
        return v

    def end(self) -> None:
        """Zero padding to the byte boundary, nothing after it."""
        if (self.pos + 7) // 8 != len(self.data):
            raise RefError("bytes after the bit stream")
        while self.pos % 8:
            if self.bit():
                raise RefError("nonzero padding")


def _params(params: dict[str, object], spec: dict[str, tuple[type, object]], stage: str) -> dict[str, object]:
    """Parameters with defaults, refusing unknown keys and wrong kinds (int accepted for float)."""
    if set(params) - set(spec):
        raise RefError(f"{stage}: unknown parameter")
    out = {}
    for key, (kind, default) in spec.items():
        value = params.get(key, default)
        if value is None:
            raise RefError(f"{stage}: missing {key}")
        if kind is float and isinstance(value, int):
            value = float(value)
        if not isinstance(value, kind):
            raise RefError(f"{stage}: {key} has the wrong kind")
        out[key] = value
    return out


# ----------------------------------------------------------------------------- array->bytes


def stage_elias(params: dict[str, object], payload: bytes, n: int) -> list[int]:
    _params(params, {}, "elias")
    if n == 0:
        if payload:
            raise RefError("elias: payload for an empty array")
        return []
    if not payload:
        raise RefError("elias: empty payload")
    out = [0] * n
    b = Bits(payload)
    i = 0
    while i < n:
        i += b.gamma() - 1
        if i == n:
            break
        if i > n:
            raise RefError("elias: zero run past the end")
        positive = b.bit()
        m = b.gamma()
        if m > INT32_MAX:
            raise RefError("elias: magnitude out of range")
        out[i] = m if positive else -m
        i += 1
    b.end()
    return out


def stage_golomb(params: dict[str, object], payload: bytes, n: int) -> list[int]:
    _params(params, {}, "golomb")
    r = ref.Reader(payload)
    k_count = r.uvarint()
    out = [0] * n
    if k_count > n:
        raise RefError("golomb: more nonzeros than elements")
    if k_count == 0:
        r.done()
        return out
    k_gap, mode = r.uint(1), r.uint(1)
    if k_gap > 62 or mode > 1:
        raise RefError("golomb: bad header")
    const = k_val = 0
    if mode == 0:
        const = r.svarint()
        if const == 0 or abs(const) >= 1 << 62:
            raise RefError("golomb: bad constant")
    else:
        k_val = r.uint(1)
        if k_val > 62:
            raise RefError("golomb: bad value parameter")
    b = Bits(r.data[r.pos :])
    positions, p = [], -1
    for _ in range(k_count):
        p += b.rice(k_gap, n - 1) + 1
        if p >= n:
            raise RefError("golomb: position past the end")
        positions.append(p)
    for p in positions:
        if mode == 0:
            out[p] = const
        else:
            u = b.rice(k_val, (1 << 63) - 3)
            out[p] = u // 2 + 1 if u % 2 == 0 else -(u + 1) // 2
    b.end()
    return out


def stage_bitpack(params: dict[str, object], payload: bytes, n: int) -> list[int]:
    _params(params, {}, "bitpack")
    if n == 0:
        if payload:
            raise RefError("bitpack: payload for an empty array")
        return []
    r = ref.Reader(payload)
    lo, w = r.svarint(), r.uint(1)
    if w > 64 or not -(1 << 63) <= lo < 1 << 63:
        raise RefError("bitpack: bad header")
    body = r.data[r.pos :]
    if len(body) != (n * w + 7) // 8:
        raise RefError("bitpack: wrong payload length")
    b = Bits(body)
    out = [lo + b.field(w) for _ in range(n)]
    b.end()
    if any(not -(1 << 63) <= v < 1 << 63 for v in out):
        raise RefError("bitpack: value outside int64")
    return out


# ----------------------------------------------------------------------------- array->array


def _f32s(data: bytes) -> list[float]:
    if len(data) % 4:
        raise RefError("not whole float32 values")
    return [v for (v,) in struct.iter_unpack("<f", data)]


def stage_m22(params: dict[str, object], symbols: list[int], dtype: str) -> bytes:
    p = _params(params, {"levels": (int, 16), "m": (float, 0.0), "mu": (float, 0.0), "alpha": (float, 0.0),
                         "beta": (float, 0.0), "centers": (bytes, b""), "thresholds": (bytes, b"")}, "m22")
    levels = p["levels"]
    assert isinstance(levels, int)
    m = p["m"]
    if not 2 <= levels <= 256 or not (isinstance(m, float) and math.isfinite(m) and 0 <= m <= 8):
        raise RefError("m22: bad levels or m")
    centers, thresholds = _f32s(p["centers"]), _f32s(p["thresholds"])  # type: ignore[arg-type]
    if len(centers) != levels or len(thresholds) != levels - 1:
        raise RefError("m22: table sizes")
    if not all(math.isfinite(v) for v in centers + thresholds) or any(a > b for a, b in zip(centers, centers[1:])):
        raise RefError("m22: centers not finite and sorted")
    if dtype not in FLOATS:
        raise RefError("m22: not a float type")
    out = []
    for s in symbols:
        j = s + levels // 2
        if not 0 <= j < levels:
            raise RefError("m22: symbol out of range")
        out.append(ref.round_to(centers[j], dtype))
    return b"".join(out)


def stage_qsgd(params: dict[str, object], levels: list[int], dtype: str) -> bytes:
    p = _params(params, {"s": (int, 4), "bucket": (int, 512), "norms": (bytes, b""), "seed": (int, 0)}, "qsgd")
    s, bucket = p["s"], p["bucket"]
    assert isinstance(s, int) and isinstance(bucket, int)
    if not 1 <= s <= 1 << 20 or bucket < 0:
        raise RefError("qsgd: bad s or bucket")
    norms = _f32s(p["norms"])  # type: ignore[arg-type]
    if not all(math.isfinite(v) and v >= 0 for v in norms):
        raise RefError("qsgd: bad norm")
    n = len(levels)
    buckets = 0 if n == 0 else (1 if bucket == 0 else -(-n // bucket))
    if len(norms) != buckets:
        raise RefError("qsgd: norm count")
    if dtype not in FLOATS:
        raise RefError("qsgd: not a float type")
    out = []
    for i, q in enumerate(levels):
        if abs(q) > s:
            raise RefError("qsgd: level beyond s")
        norm = norms[0 if bucket == 0 else i // bucket]
        out.append(ref.round_to((q * norm) / s, dtype))
    return b"".join(out)


def stage_topk(params: dict[str, object], levels: list[int], dtype: str) -> bytes:
    p = _params(params, {"k": (int, 0), "step": (float, 0.0), "bits": (int, 8)}, "topk")
    k, step, bits = p["k"], p["step"], p["bits"]
    assert isinstance(k, int) and isinstance(step, float) and isinstance(bits, int)
    if k < 0 or not (math.isfinite(step) and step > 0) or not 2 <= bits <= 24:
        raise RefError("topk: bad parameters")
    if sum(1 for q in levels if q) > k:
        raise RefError("topk: more than k nonzero")
    if dtype not in FLOATS:
        raise RefError("topk: not a float type")
    return b"".join(ref.round_to(q * step, dtype) for q in levels)


def stage_sbc(params: dict[str, object], symbols: list[int], dtype: str) -> bytes:
    p = _params(params, {"fraction": (float, 0.01), "mean": (float, 0.0)}, "sbc")
    fraction, mean = p["fraction"], p["mean"]
    assert isinstance(fraction, float) and isinstance(mean, float)
    if not 0 < fraction <= 1 or not math.isfinite(mean):
        raise RefError("sbc: bad parameters")
    if any(s not in (0, 1) for s in symbols):
        raise RefError("sbc: symbol not 0 or 1")
    if dtype not in FLOATS:
        raise RefError("sbc: not a float type")
    return b"".join(ref.round_to(s * mean, dtype) for s in symbols)


def stage_lowrank(params: dict[str, object], levels: list[int], dtype: str, shape: tuple[int, ...]) -> bytes:
    """0x0015: x[i, j] = RN_T(RN64(sum_k A[i, k] B[k, j] * scale)), the sum in exact integers."""
    p = _params(params, {"rank": (int, 1), "scale": (float, 1e-6)}, "lowrank")
    rank, scale = p["rank"], p["scale"]
    assert isinstance(rank, int) and isinstance(scale, float)
    if len(shape) < 2:
        raise RefError("lowrank: needs two or more dimensions")
    m, n = shape[0], math.prod(shape[1:])
    if not 1 <= rank <= 256 or rank > min(m, n) or rank * m * n > 1 << 32 or not (math.isfinite(scale) and scale > 0):
        raise RefError("lowrank: bad parameters")
    if len(levels) != rank * (m + n) or any(abs(q) > (1 << 20) - 1 for q in levels):
        raise RefError("lowrank: bad factor levels")
    if dtype not in FLOATS:
        raise RefError("lowrank: not a float type")
    a, b = levels[: m * rank], levels[m * rank :]
    out = []
    for i in range(m):
        row = a[i * rank : (i + 1) * rank]
        for j in range(n):
            product = sum(row[k] * b[k * n + j] for k in range(rank))
            out.append(ref.round_to(float(product) * scale, dtype))
    return b"".join(out)


# ----------------------------------------------------------------------------- pipeline

#: array->array stages and the element type they emit
ARRAY_STAGES = {0x0010: "int32", 0x0011: "int16", 0x0012: "int32", 0x0013: "int32", 0x0014: "int8", 0x0015: "int32"}
SERIALIZERS = {0x0001, 0x0020, 0x0021, 0x0022, 0x0023}
BYTE_STAGES = {0x0030}


def _bound(cid: int, n: int, inner: str) -> int:
    return {
        0x0001: n * BY_NAME[inner][1],
        0x0020: 64 + 40960 + 12 * n,
        0x0021: 16 + 9 * n,
        0x0022: 64 + 20 * n,
        0x0023: 12 + 8 * n,
    }[cid]


def run_pipeline(rec: ref.Record) -> Tensor:
    ptype = ref.pipeline_type(rec)
    n = math.prod(rec.shape)
    ids = [cid for cid, _ in rec.stages]
    serial = [i for i, cid in enumerate(ids) if cid in SERIALIZERS]
    if any(c not in ARRAY_STAGES.keys() | SERIALIZERS | BYTE_STAGES for c in ids):
        raise RefError("unknown codec id")
    if len(serial) != 1 or any(c not in ARRAY_STAGES for c in ids[: serial[0]]) or any(
        c not in BYTE_STAGES for c in ids[serial[0] + 1 :]
    ):
        raise RefError("bad stage order")
    k = serial[0]
    specs = [ptype] + [ARRAY_STAGES[c] for c in ids[:k]]
    for cid, params in rec.stages[:k]:  # lowrank emits rank x (rows + columns) symbols, not n
        if cid == 0x0015:
            rank = params.get("rank", 1)
            if len(rec.shape) < 2 or not isinstance(rank, int) or not 1 <= rank <= 256:
                raise RefError("lowrank: bad parameters")
            n = rank * (rec.shape[0] + math.prod(rec.shape[1:]))
    inner = specs[-1]
    sid, sparams = rec.stages[k]
    data = rec.payload
    for _cid, params in reversed(rec.stages[k + 1 :]):
        data = ref.zstd_decode(params, data, _bound(sid, n, inner))
    if sid == 0x0001:
        out = ref.stage_raw(sparams, data, inner, n)
    else:
        if inner in FLOATS:
            raise RefError("entropy stage needs an integer type")
        decoders = {0x0020: ref.stage_rans, 0x0021: stage_elias, 0x0022: stage_golomb, 0x0023: stage_bitpack}
        out = ref.pack_ints(decoders[sid](sparams, data, n), inner)
    array_decoders = {0x0010: ref.stage_uniform, 0x0011: stage_m22, 0x0012: stage_qsgd, 0x0013: stage_topk, 0x0014: stage_sbc,
                      0x0015: lambda p, q, t: stage_lowrank(p, q, t, rec.shape)}
    for (cid, params), out_type, in_type in zip(reversed(rec.stages[:k]), reversed(specs[:-1]), reversed(specs[1:])):
        out = array_decoders[cid](params, ref.unpack_ints(out, in_type), out_type)
    return Tensor(ptype, rec.shape, out)


def decode(data: bytes) -> ref.Decoded:
    """reference_decoder.decode (same container rules) with this module's pipeline."""
    return ref.decode(data, run_pipeline)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--npz"]:  # the conformance runner's protocol, as in reference_decoder.py
        return ref.npz_main(argv[1:], decode)
    for path in argv:
        dec = decode(Path(path).read_bytes())
        for rec in dec.tensors:
            stages = " | ".join(f"{cid:#06x}" for cid, _ in rec.stages)
            print(f"{rec.name}: {rec.dtype}{list(rec.shape)} {rec.combine} [{stages}]")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
