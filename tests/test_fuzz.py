"""Damaged input: every refusal is an NNUpdateError, never a crash, hang or big allocation.

Two layers: raw damage (truncation, bit flips), which the CRCs and digest catch, and
damage *behind* valid checksums (chunk bodies mutated, then re-framed with correct
CRCs and digest), which exercises every field parser and stage decoder.
"""

from __future__ import annotations

import contextlib
import hashlib
import resource
import struct
from pathlib import Path

import crc32c
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nnupdate
from nnupdate.codecs.base import ArraySpec
from nnupdate.codecs.rans import Rans
from nnupdate.codecs.zstd import Zstd
from nnupdate.errors import CodecError, FormatError, NNUpdateError


def _sample() -> bytes:
    g = np.random.default_rng(0)
    base = {
        "conv.weight": g.standard_normal((4, 3, 3)).astype(np.float32),
        "fc.bias": g.standard_normal(5).astype(np.float32),
        "steps": np.array(10, dtype=np.int64),
        "gone": np.zeros(2, np.float32),
        "same": np.ones(3, np.float16),
    }
    new = {k: v.copy() for k, v in base.items() if k != "gone"}
    new["conv.weight"] += (0.01 * g.laplace(size=(4, 3, 3))).astype(np.float32)
    new["fc.bias"] += np.float32(0.003)
    new["steps"] = np.array(12, dtype=np.int64)
    new["added"] = np.arange(4, dtype=np.int32)
    return nnupdate.diff(base, new, metadata={"k": "v"}).encode("uniform:step=0.001")


SAMPLE = _sample()
def _sample_ctx(transform: str) -> bytes:
    """A ctx container whose convolution goes through the kernel transform (dct or an explicit basis)."""
    g = np.random.default_rng(1)
    base = {"conv.weight": g.standard_normal((32, 16, 3, 3)).astype(np.float32), "conv1d.weight": g.standard_normal((64, 16, 5)).astype(np.float32)}
    new = {k: (v + 0.01 * g.standard_normal(v.shape[:2] + (1,) * (v.ndim - 2)) + 0.003 * g.standard_normal(v.shape)).astype(np.float32)
           for k, v in base.items()}
    return nnupdate.diff(base, new).encode(f"ctx:step=0.002,transform={transform}")


SAMPLE_CTX = [_sample_ctx("dct"), _sample_ctx("klt")]
#: row prediction (spec/CONTEXT.md §7): blocks per group member, planes of DCT coefficients,
#: columns of a wide matrix, and the stage alone with several orders
CONFORMANCE = Path(__file__).resolve().parent.parent / "conformance"
SAMPLE_LPC = [(CONFORMANCE / name).read_bytes() for name in ("context-codec-ctx-lpc.nnu", "context-lpc.nnu")]
SAMPLE_RAW = nnupdate.full({"w": np.linspace(0, 1, 40, dtype=np.float32), "i": np.arange(30, dtype=np.int8)}).encode(
    "zstd"
)


def _sample_ulp() -> bytes:
    """ULP records (spec/FORMAT.md §4.3): float16 steps through ctx, float32 steps through zstd."""
    g = np.random.default_rng(2)
    base = {"h": g.standard_normal((6, 9)).astype(np.float16), "f": g.standard_normal(20).astype(np.float32), "n": np.arange(3)}
    new = {"h": (base["h"] + 0.01 * g.standard_normal((6, 9))).astype(np.float16), "f": base["f"] * np.float32(1.0001), "n": np.arange(3) + 1}
    return nnupdate.diff(base, new).encode("raw:combine=ulp")


SAMPLE_ULP = _sample_ulp()


@pytest.fixture(autouse=True, scope="module")
def _memory_cap():  # type: ignore[no-untyped-def]
    """A decoder that tries a multi-GB allocation fails the test instead of the machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = 6 << 30
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (min(cap, hard) if hard > 0 else cap, hard))
    yield
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _decode_refuses_cleanly(data: bytes) -> None:
    with contextlib.suppress(NNUpdateError):  # anything else propagates and fails the test
        nnupdate.decode(data)


@pytest.mark.parametrize("data", [SAMPLE, SAMPLE_RAW], ids=["uniform", "zstd"])
def test_every_truncation_point_is_a_format_error(data: bytes) -> None:
    for cut in range(len(data)):
        with pytest.raises(FormatError):
            nnupdate.decode(data[:cut])


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_random_bit_flips_are_format_errors(data: st.DataObject) -> None:
    raw = bytearray(SAMPLE)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] ^= 1 << data.draw(st.integers(0, 7))
    if bytes(raw) == SAMPLE:
        return
    with pytest.raises(FormatError):
        nnupdate.decode(bytes(raw))


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    pos, out = 10, []
    while pos < len(data):
        (length,) = struct.unpack("<Q", data[pos : pos + 8])
        out.append((data[pos + 8 : pos + 12], data[pos + 12 : pos + 12 + length]))
        pos += 16 + length
    return out


def _frame(ctype: bytes, body: bytes) -> bytes:
    return struct.pack("<Q", len(body)) + ctype + body + struct.pack("<I", crc32c.crc32c(ctype + body))


def _rebuild(preamble: bytes, chunks: list[tuple[bytes, bytes]]) -> bytes:
    out = preamble + b"".join(_frame(t, b) for t, b in chunks if t != b"IEND")
    return out + _frame(b"IEND", bytes(8) + hashlib.sha256(out).digest())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutations_behind_valid_checksums_raise_only_nnupdate_errors(data: st.DataObject) -> None:
    source = data.draw(st.sampled_from([SAMPLE, SAMPLE_RAW, SAMPLE_ULP, *SAMPLE_CTX, *SAMPLE_LPC]))
    chunks = _chunks(source)
    which = data.draw(st.integers(0, len(chunks) - 2))  # any chunk but IEND
    ctype, body = chunks[which]
    body = bytearray(body)
    op = data.draw(st.sampled_from(["flip", "set", "cut", "insert"]))
    if body and op in ("flip", "set"):
        for _ in range(data.draw(st.integers(1, 3))):
            pos = data.draw(st.integers(0, len(body) - 1))
            body[pos] = body[pos] ^ (1 << data.draw(st.integers(0, 7))) if op == "flip" else data.draw(st.sampled_from([0, 0xFF, 0x7F, 0x80, 1]))
    elif op == "cut" and body:
        pos = data.draw(st.integers(0, len(body) - 1))
        body = body[:pos]
    else:
        pos = data.draw(st.integers(0, len(body)))
        body[pos:pos] = data.draw(st.binary(min_size=1, max_size=9))
    chunks[which] = (ctype, bytes(body))
    _decode_refuses_cleanly(_rebuild(source[:10], chunks))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 5000), st.sampled_from(["int32", "int8", "uint64", "bool"]))
def test_rans_decoder_on_arbitrary_bytes(payload: bytes, n: int, dtype: str) -> None:
    try:
        out = Rans().decode(payload, ArraySpec((n,), dtype))
    except CodecError:
        return
    assert out.shape == (n,) and out.dtype == np.dtype(dtype)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=100))
def test_zstd_decoder_on_arbitrary_bytes(payload: bytes) -> None:
    try:
        out = Zstd().decode(payload, 1000)
    except CodecError:
        return
    assert len(out) <= 1000


def test_zstd_bomb_refused() -> None:
    bomb, _ = Zstd(level=19).encode(bytes(10**7))
    with pytest.raises(CodecError):
        Zstd().decode(bomb, 10**6)


def test_single_symbol_rans_cannot_exceed_element_limit() -> None:
    """A 20-byte payload may legitimately expand to N symbols; N itself is bounded by the limits."""
    values = np.zeros(1000, np.int32)
    payload, _ = Rans().encode(values, ArraySpec((1000,), "int32"))
    assert len(payload) < 20
    with pytest.raises(FormatError):
        from nnupdate.format import Combine as C
        from nnupdate.format import Container, Header, Limits, TensorRecord, UpdateKind, serialize

        rec = TensorRecord("z", "int32", (2**33,), C.REPLACE, stages=[Rans().record()], payload=payload)
        nnupdate.decode(serialize(Container(Header(UpdateKind.FULL), [rec])), limits=Limits())
