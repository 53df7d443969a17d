"""Kernel transform of ``rdoq``/``dq`` (spec/CONTEXT.md §6): exact integer decode, the DCT
tables, parameter validation, and what the ``ctx`` codec does with it."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nnupdate.codecs import transform
from nnupdate.codecs.base import ArraySpec, stage_from_record
from nnupdate.codecs.context import Context
from nnupdate.codecs.dq import DependentQuantizer
from nnupdate.codecs.rdoq import RdoqQuantizer
from nnupdate.errors import CodecError, FormatError
from nnupdate.format import StageRecord
from nnupdate.update import decode, diff, encode_with_report


def _spec_taps(index: list[int], rows: int, taps: int, channels: int, b: list[list[int]], shift: int, step: float) -> list[float]:
    """§6 written out with Python integers and floats (binary64, correctly rounded)."""
    scale = step * 2.0**-shift
    out = [0.0] * (rows * taps * channels)
    for r in range(rows):
        for c in range(channels):
            for j in range(taps):
                z = sum(b[k][j] * index[r * taps * channels + k * channels + c] for k in range(taps))
                out[r * taps * channels + c * taps + j] = float(z) * scale
    return out


def test_dct_tables_are_the_rounded_orthonormal_dct() -> None:
    for n in range(1, transform.DCT_MAX_SIZE + 1):
        k = np.arange(n)[:, None]
        j = np.arange(n)[None, :]
        d = np.sqrt(np.where(k == 0, 1.0, 2.0) / n) * np.cos(np.pi * (2 * j + 1) * k / (2 * n)) * 256
        assert np.array_equal(np.array(transform.DCT_TABLES[n]), np.rint(d)), n
        # no entry sits near a rounding tie, so any libm's cosine rounds to the same table
        frac = np.abs(d) - np.floor(np.abs(d))
        assert n == 1 or np.abs(frac - 0.5).min() > 0.009
        # and the integer table is close to orthogonal (what the encoder relies on)
        t = np.array(transform.DCT_TABLES[n], dtype=np.float64) / 256
        assert np.abs(t @ t.T - np.eye(n)).max() < 0.02


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 3), st.sampled_from([(3,), (2, 2), (3, 3), (1, 5), (8, 8)]), st.integers(1, 4),
    st.integers(0, 2**32 - 1), st.sampled_from(["float32", "float64", "float16"]), st.booleans(),
)
def test_inverse_is_the_exact_integer_sum_then_one_multiply(rows: int, kernel: tuple[int, ...], channels: int, seed: int, dtype: str, huge: bool) -> None:
    rng = np.random.Generator(np.random.PCG64(seed))
    kt = transform.kernel_transform(b"", bytes(kernel), 0)
    assert kt is not None
    taps = kt.taps
    limit = transform.INDEX_LIMIT if huge and dtype != "float16" else 40
    index = rng.integers(-limit, limit + 1, size=rows * taps * channels)
    shape = (rows, channels, *kernel)
    got = transform.inverse(index, shape, kt, 0.01, dtype, "test")
    ref = _spec_taps(index.tolist(), rows, taps, channels, kt.matrix.tolist(), kt.shift, 0.01)
    expect = np.array(ref, dtype=np.float64).astype(dtype).reshape(shape)
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, expect)


def test_explicit_basis_decodes_by_the_same_rule() -> None:
    rng = np.random.default_rng(1)
    b = rng.integers(-32767, 32768, size=(4, 4))
    kt = transform.kernel_transform(b.astype("<i2").tobytes(), b"", 11)
    assert kt is not None and kt.shift == 11
    index = rng.integers(-(2**31) + 1, 2**31, size=2 * 4 * 3)
    got = transform.inverse(index, (2, 3, 2, 2), kt, 0.37, "float64", "test")
    ref = _spec_taps(index.tolist(), 2, 4, 3, b.tolist(), 11, 0.37)
    np.testing.assert_array_equal(got.reshape(-1), np.array(ref))


@pytest.mark.parametrize("stage_cls", [RdoqQuantizer, DependentQuantizer])
def test_quantizers_round_trip_smooth_kernels_at_the_expected_error(stage_cls: type) -> None:
    rng = np.random.default_rng(0)
    # smooth 3x3 kernels: one strong common component per kernel plus a little detail
    x = (rng.normal(size=(32, 16, 1, 1)) + 0.2 * rng.normal(size=(32, 16, 3, 3))).astype(np.float32)
    spec = ArraySpec(x.shape, "float32")
    plain = stage_cls(0.25)
    tf = stage_cls(0.25, dct=b"\x03\x03")
    lv, stored = tf.encode(x, spec)
    assert lv.shape == (32, 9, 16)
    assert stored.params() == {"step": 0.25, "dct": b"\x03\x03"}
    y = stored.decode(lv, spec)
    lv0, stored0 = plain.encode(x, spec)
    assert "dct" not in stored0.params() and "basis" not in stored0.params()
    y0 = stored0.decode(lv0, spec)
    err, err0 = float(np.sum((y - x) ** 2)), float(np.sum((y0 - x) ** 2))
    assert 0 < err < 1.3 * err0  # same step: about the same squared error ...
    # ... in far fewer bytes (the energy sits in the DC coefficients)
    ctx = Context(dq=int(stage_cls is DependentQuantizer))
    coded = len(ctx.encode(lv, ArraySpec(lv.shape, "int32"))[0])
    coded0 = len(ctx.encode(lv0, ArraySpec(lv0.shape, "int32"))[0])
    assert coded < 0.8 * coded0


@pytest.mark.parametrize(
    "params, message",
    [
        ({"step": 0.1, "dct": b"\x03\x03", "basis": b"\x01\x00" * 4}, "exclusive"),
        ({"step": 0.1, "shift": 3}, "without a basis"),
        ({"step": 0.1, "dct": b"\x03", "shift": 8}, "implied"),
        ({"step": 0.1, "dct": b"\x01"}, "one tap"),
        ({"step": 0.1, "dct": b"\x09"}, "axes of 1 to 8"),
        ({"step": 0.1, "dct": b"\x03\x03\x03"}, "axes of 1 to 8"),
        ({"step": 0.1, "dct": b""}, None),
        ({"step": 0.1, "basis": b"\x01\x00" * 3, "shift": 1}, "K\\*K"),
        ({"step": 0.1, "basis": b"\x01", "shift": 1}, "odd"),
        ({"step": 0.1, "basis": b"\x00\x80" + b"\x01\x00" * 3, "shift": 1}, "-32768"),
        ({"step": 0.1, "basis": b"\x01\x00" * 4, "shift": 31}, "shift"),
    ],
)
@pytest.mark.parametrize("codec_id", [0x001A, 0x001B])
def test_malformed_transform_parameters_are_format_errors(params: dict, message: str | None, codec_id: int) -> None:
    record = StageRecord(codec_id, params)
    if message is None:
        assert stage_from_record(record).params() == {"step": 0.1}
        return
    with pytest.raises(FormatError, match=message):
        stage_from_record(record)


def test_decode_refuses_row_length_and_out_of_range_levels() -> None:
    stage = RdoqQuantizer(0.1, dct=b"\x03\x03")
    with pytest.raises(CodecError, match="multiple of 9"):
        stage.encoded_spec(ArraySpec((4, 10), "float32"))
    with pytest.raises(CodecError, match="multiple of 9"):
        stage.decode(np.zeros(40, dtype=np.int32), ArraySpec((4, 10), "float32"))
    big = np.zeros(9, dtype=np.int64)
    big[3] = -(2**31)
    with pytest.raises(CodecError, match="out of range"):
        stage.decode(big, ArraySpec((1, 1, 3, 3), "float32"))
    with pytest.raises(CodecError, match="cannot reconstruct"):
        stage.decode(np.zeros(9, dtype=np.int32), ArraySpec((1, 1, 3, 3), "int32"))


def _conv_update(seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    base = {
        "c3.weight": rng.normal(size=(16, 8, 3, 3)).astype(np.float32),
        "c1.weight": rng.normal(size=(64, 72, 1, 1)).astype(np.float32),  # same row length (72) as c3
        "c3b.weight": rng.normal(size=(16, 8, 3, 3)).astype(np.float32),
        "c5.weight": rng.normal(size=(64, 16, 5)).astype(np.float32),  # Conv1d, kernel 5
    }
    new = {}
    for k, v in base.items():
        smooth = rng.normal(size=v.shape[:2] + (1,) * (v.ndim - 2))
        new[k] = (v + 0.01 * (smooth + 0.3 * rng.normal(size=v.shape))).astype(np.float32)
    return base, new


def test_ctx_codec_transforms_kernels_and_groups_by_kernel_shape() -> None:
    base, new = _conv_update()
    update = diff(base, new)
    report = encode_with_report(update, "ctx:max_rel_error=0.05")
    pipelines = " ".join(t.pipeline for t in report.tensors)
    names = [t.name for t in report.tensors]
    # the two 3x3 convolutions stack into one group; the 1x1 of equal row length does not join it
    assert any(n.startswith("group of 2 (c3.weight") for n in names), names
    assert "c1.weight" in names and "c5.weight" in names
    assert "dct=3x3" in pipelines and "dct=5)" in pipelines
    assert report.relative_error <= 0.05
    out = decode(report.data)
    for k in new:
        rec = np.asarray(out.changes[k].data, dtype=np.float64)
        assert rec.shape == new[k].shape
    plain = encode_with_report(update, "ctx:max_rel_error=0.05,transform=none")
    assert "dct" not in " ".join(t.pipeline for t in plain.tensors)
    assert len(report.data) < len(plain.data)  # smooth kernels: the transform pays
    klt = encode_with_report(update, "ctx:max_rel_error=0.05,transform=klt")
    assert "basis=9x9" in " ".join(t.pipeline for t in klt.tensors) and klt.relative_error <= 0.05


def test_transformed_encoding_is_deterministic_and_decodes_identically() -> None:
    base, new = _conv_update(3)
    a = diff(base, new).encode("ctx:step=0.002,quant=dq")
    b = diff(base, new).encode("ctx:step=0.002,quant=dq")
    assert a == b
    da, db = decode(a), decode(a)
    for k in new:
        assert np.array_equal(np.asarray(da.changes[k].data), np.asarray(db.changes[k].data))


def test_level_bound_keeps_the_sum_exact() -> None:
    # the largest |z| the limits allow is below 2^53: exact in binary64 whatever the order
    worst = transform.MAX_TAPS * max(256 * 209, 209 * 209, transform.BASIS_LIMIT) * transform.INDEX_LIMIT
    assert worst < 2**53
    assert math.prod((8, 8)) == transform.MAX_TAPS


def test_klt_covers_kernels_the_dct_tables_do_not() -> None:
    rng = np.random.default_rng(5)
    base = {"c3d.weight": rng.normal(size=(64, 32, 3, 3, 3)).astype(np.float32)}
    smooth = rng.normal(size=(64, 32, 1, 1, 1))
    new = {"c3d.weight": (base["c3d.weight"] + 0.01 * (smooth + 0.3 * rng.normal(size=(64, 32, 3, 3, 3)))).astype(np.float32)}
    update = diff(base, new)
    dct = encode_with_report(update, "ctx:step=0.001")  # three axes: no DCT table, tap by tap
    klt = encode_with_report(update, "ctx:step=0.001,transform=klt")
    assert "dct" not in dct.tensors[0].pipeline and "basis=27x27" in klt.tensors[0].pipeline
    assert len(klt.data) < len(dct.data)
    rec = np.asarray(decode(klt.data).changes["c3d.weight"].data, dtype=np.float64)
    delta = new["c3d.weight"].astype(np.float64) - base["c3d.weight"]
    assert np.sqrt(np.sum((rec - delta) ** 2) / np.sum(delta**2)) < 0.1


def test_transform_only_where_it_pays() -> None:
    """Uncorrelated taps lose their sparsity as coefficients (measured 2-7% more bytes): the
    codec keeps them tap by tap, and its bytes equal transform=none's."""
    rng = np.random.default_rng(11)
    shape = (128, 32, 3, 3)
    iid = 0.01 * rng.laplace(size=shape)
    smooth = 0.01 * (rng.normal(size=shape[:2] + (1, 1)) + 0.3 * rng.normal(size=shape))
    kt = transform.kernel_transform(dct=b"\x03\x03")
    assert kt is not None
    assert transform.estimated_cost_ratio(iid, shape, kt, 0.005) > 1.0
    assert transform.estimated_cost_ratio(smooth, shape, kt, 0.005) < transform.USE_BELOW
    zeros = {"w": np.zeros(shape, np.float32)}
    for e in (0.05, 0.3):
        update = diff(zeros, {"w": iid.astype(np.float32)})
        auto = encode_with_report(update, f"ctx:max_rel_error={e}")
        plain = encode_with_report(update, f"ctx:max_rel_error={e},transform=none")
        assert "dct" not in auto.tensors[0].pipeline and auto.data == plain.data
        update = diff(zeros, {"w": smooth.astype(np.float32)})
        assert "dct=3x3" in encode_with_report(update, f"ctx:max_rel_error={e}").tensors[0].pipeline


def test_inverse_refuses_a_level_count_that_does_not_match() -> None:
    kt = transform.kernel_transform(dct=b"\x03\x03")
    assert kt is not None
    with pytest.raises(CodecError, match="levels for a tensor"):
        transform.inverse(np.zeros(17, dtype=np.int64), (2, 1, 3, 3), kt, 0.1, "float32", "rdoq")
