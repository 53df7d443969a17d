"""An independent pure-Python decoder written from spec/CONTEXT.md, checked against the kernel.

If the spec and the implementation drift apart, this fails: the spec alone must be enough
to decode a ``ctx`` payload and a ``dq`` level array.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nnupdate.codecs import _context_kernel
from nnupdate.codecs.base import ArraySpec
from nnupdate.codecs.context import Context
from nnupdate.codecs.dq import dq_levels, dq_reconstruct
from nnupdate.errors import CodecError

T = [[0, 2], [2, 0], [1, 3], [3, 1]]


def spec_decode(payload: bytes, shape: tuple[int, ...], ngt: int = 4, check: int = 0, dq: int = 0) -> list[int]:
    if len(shape) >= 2:
        rows, rowlen = shape[0], int(np.prod(shape[1:]))
    else:
        rows, rowlen = 1, int(np.prod(shape))
    size = len(payload)

    def byte(p: int) -> int:
        return payload[p] if p < size else 0

    st_ = {"code": (byte(0) << 24) | (byte(1) << 16) | (byte(2) << 8) | byte(3), "range": 2**32 - 1, "pos": 4}
    assert st_["code"] < st_["range"]
    models: dict[tuple, list[int]] = {}

    def bin_(p0: int) -> int:
        bound = (st_["range"] >> 15) * p0
        if st_["code"] < bound:
            st_["range"] = bound
            b = 0
        else:
            st_["code"] -= bound
            st_["range"] -= bound
            b = 1
        while st_["range"] < 2**24:
            st_["range"] <<= 8
            st_["code"] = (st_["code"] << 8) | byte(st_["pos"])
            st_["pos"] += 1
        return b

    def adapt(m: list[int], b: int) -> None:
        lg = (m[2] + 1).bit_length() - 1
        f, w = min(fast, 1 + lg), min(slow, 2 + lg)
        if b == 0:
            m[0] += (2**15 - m[0]) >> f
            m[1] += (2**15 - m[1]) >> w
        else:
            m[0] -= m[0] >> f
            m[1] -= m[1] >> w
        m[2] = min(m[2] + 1, 255)

    def model(key: tuple) -> list[int]:
        return models.setdefault(key, [2**14, 2**14, 0])

    def ctx(key: tuple, key2: tuple | None = None) -> int:
        m = model(key)
        p0 = (m[0] + m[1]) >> 1
        if key2 is not None:
            m2 = model(key2)
            p0 = (p0 + ((m2[0] + m2[1]) >> 1)) >> 1
        b = bin_(p0)
        adapt(m, b)
        if key2 is not None:
            adapt(m2, b)
        return b

    fast, slow = ((4, 7), (3, 6))[bin_(2**14)]  # adaptation profile
    out: list[int] = []
    prev = [0] * rowlen
    col = [0] * rowlen
    colsign = [0] * rowlen
    act = 0
    prev_skipped = 0
    for _ in range(rows):
        if ctx(("row", prev_skipped)) == 0:
            out += [0] * rowlen
            prev = [0] * rowlen
            prev_skipped = 1
            continue
        prev_skipped = 0
        a = b = sp = s = agree = 0
        row: list[int] = []
        for i in range(rowlen):
            c = prev[i]
            ca = 0 if col[i] < 24 else 1 if col[i] < 96 else 2 if col[i] < 320 else 3
            ra = 0 if act < 16 else 1 if act < 128 else 2
            qz = 1 if dq == 1 and s >= 2 else 0
            t = a + b + c
            g = t if t < 3 else 3 if t < 5 else 4 if t < 8 else 5 if t < 13 else 6 if t < 21 else 7
            e = 0 if t < 13 else 1 if t < 40 else 2
            m = q = 0
            h = 0
            while h < 7 and act >> (h + 3) != 0:
                h += 1
            cv = col[i]
            c6 = 0 if cv < 16 else 1 if cv < 48 else 2 if cv < 128 else 3 if cv < 256 else 4 if cv < 512 else 5
            if ctx(("sig", 60 * qz + 20 * ra + 5 * ca + min(a + b, 4)), ("sig2", 144 * qz + 18 * h + 3 * c6 + min(a, 2))):
                cs = colsign[i]
                pc = 0 if cs == 0 else 1 if cs > 0 else 2
                ac = 0 if agree < -4 else 1 if agree < -1 else 2 if agree <= 1 else 3 if agree <= 4 else 4
                neg = ctx(("sign", 15 * sp + 5 * pc + ac))
                if cs != 0:
                    agree = max(-16, min(16, agree + (1 if (cs > 0) == (neg == 0) else -1)))
                m = 1
                for k in range(1, ngt + 1):
                    cq = (col[i] >= 256 * k) + 2 * (col[i] >= 512 * k)
                    if not ctx(("gt", 8 * (k - 1) + g), ("gt2", 32 * (k - 1) + 4 * h + cq)):
                        break
                    m = k + 1
                if m > ngt:
                    n = 0
                    while ctx(("eg", 18 * e + min(n, 17))):
                        n += 1
                        assert n <= 31
                    v = 1
                    if n > 0:
                        v = 2 * v + ctx(("sfx", 3 * min(n, 15) + e))
                    for _ in range(n - 1):
                        v = 2 * v + bin_(2**14)
                    m = ngt + v
                q = -m if neg else m
            assert st_["code"] < st_["range"]
            out.append(q)
            row.append(q)
            sp = 0 if q == 0 else 1 if q > 0 else 2
            b, a = a, m
            prev[i] = m
            col[i] += (256 * min(m, 15) - col[i]) >> 2
            act += (256 * min(m, 15) - act) >> 4
            if dq == 1:
                s = T[s][m & 1]
        flip = 1 if agree >= 0 else -1
        for i, q in enumerate(row):
            if q != 0:
                colsign[i] = max(-64, min(64, colsign[i] + (flip if q > 0 else -flip)))
    got = 0
    for _ in range(check):
        got = (got << 1) | bin_(2**14)
    assert got == 0xA5C3F00F & ((1 << check) - 1)
    assert size <= st_["pos"] and (size == 0 or payload[-1] != 0)
    return out


def spec_decode_segments(payload: bytes, rows: int, rowlen: int, seg: int, ngt: int = 4, check: int = 0, dq: int = 0) -> list[int]:
    """spec/CONTEXT.md §2.6: K - 1 uint32 LE lengths, then K streams, each decoded alone
    (segments of seg rows, or for a single row runs of seg elements)."""
    span = rowlen if rows == 1 else rows
    if seg == 0 or seg >= span:
        return spec_decode(payload, (rows, rowlen), ngt, check, dq)
    count = -(-span // seg)
    lengths = [int.from_bytes(payload[4 * j : 4 * j + 4], "little") for j in range(count - 1)]
    pos = 4 * (count - 1)
    assert pos + sum(lengths) <= len(payload)
    out: list[int] = []
    for j in range(count):
        end = pos + lengths[j] if j < count - 1 else len(payload)
        n = min(seg, span - j * seg)
        out += spec_decode(payload[pos:end], (1, n) if rows == 1 else (n, rowlen), ngt, check, dq)
        pos = end
    return out


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 9), st.integers(1, 8), st.integers(1, 4), st.integers(0, 1), st.integers(0, 2**32 - 1))
def test_spec_decoder_agrees_on_segments(rows: int, rowlen: int, seg: int, dq: int, seed: int) -> None:
    rng = np.random.Generator(np.random.PCG64(seed))
    q = np.rint(rng.laplace(size=(rows, rowlen)) * 3).astype(np.int64)
    q[rng.integers(0, rows)] = 0
    data, stage = Context(check=5, dq=dq, seg=seg).encode(q, ArraySpec(q.shape, "int64"))
    assert stage.seg == (0 if seg >= (rowlen if rows == 1 else rows) else seg)
    assert spec_decode_segments(data, rows, rowlen, stage.seg, 4, 5, dq) == q.reshape(-1).tolist()


def spec_decode_low(payload: bytes, rows: int, rowlen: int, seg: int, low: int, check: int = 0) -> list[int]:
    """spec/CONTEXT.md §2.7: ceil(N*low/8) raw bytes (value after value, LSB first), then the
    high parts as §2.1-2.6; value = high * 2**low + raw bits."""
    n = rows * rowlen
    size = -(-n * low // 8)
    bits = int.from_bytes(payload[:size], "little")
    high = spec_decode_segments(payload[size:], rows, rowlen, seg, 4, check, 0)
    return [h * (1 << low) + ((bits >> (i * low)) & ((1 << low) - 1)) for i, h in enumerate(high)]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 9), st.integers(0, 3), st.integers(1, 31), st.integers(0, 2**32 - 1))
def test_spec_decoder_agrees_on_raw_low_bits(rows: int, rowlen: int, seg: int, low: int, seed: int) -> None:
    """Wide values, both signs, extremes: the library's payload decodes by the spec's rule."""
    rng = np.random.Generator(np.random.PCG64(seed))
    q = np.rint(rng.laplace(size=(rows, rowlen)) * 2.0 ** rng.integers(0, 30)).clip(-(2**31 - 1), 2**31 - 1).astype(np.int64)
    q.reshape(-1)[0] = rng.choice([2**31 - 1, -(2**31 - 1), 0, -1])
    data, stage = Context(check=3, seg=seg, low=low).encode(q, ArraySpec(q.shape, "int64"))
    assert stage.low == low
    assert spec_decode_low(data, rows, rowlen, stage.seg, low, 3) == q.reshape(-1).tolist()
    assert np.array_equal(stage.decode(data, ArraySpec(q.shape, "int64")), q)


def test_auto_low_keeps_small_levels_whole_and_splits_wide_ones() -> None:
    rng = np.random.Generator(np.random.PCG64(5))
    small = np.rint(rng.laplace(size=(40, 50)) * 3).astype(np.int64)
    wide = np.rint(rng.laplace(size=(40, 50)) * 2.0**17).astype(np.int64)
    assert Context(auto_low=1).encode(small, ArraySpec(small.shape, "int64"))[1].low == 0
    data, stage = Context(auto_low=1).encode(wide, ArraySpec(wide.shape, "int64"))
    assert 10 <= stage.low <= 15 and stage.params()["low"] == stage.low
    assert np.array_equal(stage.decode(data, ArraySpec(wide.shape, "int64")), wide)
    assert len(data) <= len(Context().encode(wide, ArraySpec(wide.shape, "int64"))[0])


def test_raw_low_bits_refuse_a_short_payload_and_an_overflow() -> None:
    q = np.array([[2**16, -5, 7]], dtype=np.int64)
    data, stage = Context(low=4).encode(q, ArraySpec(q.shape, "int64"))
    with pytest.raises(CodecError, match="too short"):
        stage.decode(data[:1], ArraySpec(q.shape, "int64"))
    with pytest.raises(CodecError, match="overflow"):
        stage.decode(data, ArraySpec(q.shape, "int16"))
    with pytest.raises(ValueError):
        Context(low=2, dq=1)


@st.composite
def cases(draw: st.DrawFn) -> tuple[np.ndarray, int, int, int]:
    rows = draw(st.integers(1, 5))
    rowlen = draw(st.integers(1, 12))
    scale = draw(st.sampled_from([0.3, 2.0, 30.0, 5000.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.Generator(np.random.PCG64(seed))
    q = np.rint(rng.laplace(size=(rows, rowlen)) * scale * rng.exponential(size=(rows, 1))).astype(np.int64)
    if rows > 1:
        q[draw(st.integers(0, rows - 1))] = 0
    return q, draw(st.integers(1, 6)), draw(st.sampled_from([0, 5, 32])), draw(st.integers(0, 1))


@settings(max_examples=50, deadline=None)
@given(cases())
def test_spec_decoder_agrees_with_kernel(case: tuple[np.ndarray, int, int, int]) -> None:
    q, ngt, check, dq = case
    for profile in (0, 1):
        data = _context_kernel.encode(q.reshape(-1), q.shape[0], q.shape[1], ngt, check, dq, profile).tobytes()
        assert spec_decode(data, q.shape, ngt, check, dq) == q.reshape(-1).tolist()
    data, _ = Context(ngt, check, dq).encode(q, ArraySpec(q.shape, "int64"))
    assert spec_decode(data, q.shape, ngt, check, dq) == q.reshape(-1).tolist()


def test_spec_decoder_on_a_conv_layout_and_huge_values() -> None:
    q = np.zeros((3, 2, 3, 3), np.int64)
    q[0, 1, 2, 2] = (1 << 31) - 1
    q[2, 0, 0, 1] = -12345
    data, _ = Context().encode(q, ArraySpec(q.shape, "int64"))
    assert spec_decode(data, q.shape) == q.reshape(-1).tolist()


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(1, 30), st.integers(0, 2**32 - 1))
def test_spec_dq_reconstruction(rows: int, rowlen: int, seed: int) -> None:
    rng = np.random.Generator(np.random.PCG64(seed))
    x = rng.laplace(size=(rows, rowlen)) * 4
    k = dq_levels(x, x.shape, 1.0, 0.1).reshape(rows, rowlen)
    expect = []
    for r in range(rows):
        s = 0
        for v in k[r].tolist():
            expect.append(2 * v if s < 2 else 2 * v - (v > 0) + (v < 0))
            s = T[s][v & 1]
    assert dq_reconstruct(k, x.shape).tolist() == expect
