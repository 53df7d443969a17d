"""The ULP combine (spec/FORMAT.md §4.3): float tensors moved by whole representable
values. Exact for every bit pattern, smaller than XOR on real updates, and what the
lossy codecs fall back to when it costs no more than their levels."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nnupdate
from nnupdate import dtypes
from nnupdate.fl.messages import new_residual
from nnupdate.format import Combine
from nnupdate.update import _ordered, moved_by_ulps, ulp_steps

#: element type -> the unsigned type of its bit patterns
WIDTHS = {"float16": np.uint16, "bfloat16": np.uint16, "float32": np.uint32, "float64": np.uint64}


def _as_type(bits: np.ndarray, dtype: str) -> np.ndarray:
    """Bit patterns as the arrays the library takes (bfloat16 via ml_dtypes)."""
    if dtype == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        return bits.view(ml_dtypes.bfloat16)
    return bits.view(dtypes.storage_dtype(dtype))


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(WIDTHS)), st.data())
def test_steps_move_any_pattern_to_any_other(dtype: str, data: st.DataObject) -> None:
    """Random bit patterns cover NaN payloads, infinities, both zeros and subnormals."""
    bits = hnp.arrays(WIDTHS[dtype], st.integers(1, 64))
    base = data.draw(bits)
    target = data.draw(hnp.arrays(WIDTHS[dtype], base.shape))
    steps = ulp_steps(base, target, dtype)
    assert steps.dtype == np.dtype(f"i{base.dtype.itemsize}")
    assert np.array_equal(moved_by_ulps(base, steps), target)


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float32, st.integers(2, 64), elements=st.floats(allow_nan=False, width=32)))
def test_order_map_follows_the_values(values: np.ndarray) -> None:
    """U is monotone: a larger value has a larger image; equal values (+0 and -0 aside,
    which are adjacent) have equal images."""
    by_value = np.argsort(values, kind="stable")
    v, order = values[by_value], _ordered(values.view(np.uint32))[by_value].astype(np.int64)
    rising = v[1:] > v[:-1]
    assert np.all(order[1:][rising] > order[:-1][rising])
    assert np.all(np.abs(order[1:] - order[:-1])[~rising] <= 1)


def test_adjacent_values_are_one_step_apart() -> None:
    x = np.array([0.0, -0.0, 1.0, -1.0, np.inf, 3.0e-45], dtype=np.float32)
    up = np.nextafter(x, np.float32(np.inf))
    assert list(ulp_steps(x, up, "float32")) == [1, 2, 1, 1, 0, 1]  # -0 -> +0 -> subnormal; inf stays


@pytest.mark.parametrize("dtype", sorted(WIDTHS))
def test_raw_codec_is_bit_exact_through_the_container(dtype: str) -> None:
    """Finite values (diff stores a change to or from inf/NaN as XOR): small moves, sign
    flips, both zeros and subnormals."""
    g = np.random.default_rng(1)
    width = WIDTHS[dtype]
    top = width(1 << (8 * np.dtype(width).itemsize - 1))
    base_bits = g.integers(0, 1 << 10, size=(16, 24), dtype=width)  # +0 and subnormals (and small normals)
    base_bits[8:] |= top  # negatives, -0 among them
    new_bits = base_bits.copy()
    new_bits[::2] += width(3)  # small moves (crossing into normals) ...
    new_bits[1, :4] ^= top  # ... and sign flips
    new_bits[3, :2] = [0, top]  # to +0 and -0
    base, new = {"w": _as_type(base_bits, dtype)}, {"w": _as_type(new_bits, dtype)}
    decoded = nnupdate.decode(nnupdate.diff(base, new).encode("raw:combine=ulp"))
    assert decoded.changes["w"].combine == Combine.ULP
    assert np.array_equal(nnupdate.apply(base, decoded)["w"].view(WIDTHS[dtype]), new_bits)


def _bf16_finetune(scale: float) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A bfloat16 layer whose weights moved by a small update, rounded to bfloat16 again."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    g = np.random.default_rng(3)
    w = (0.02 * g.standard_normal((256, 512))).astype(np.float32)
    moved = w + (scale * g.standard_normal(w.shape)).astype(np.float32)
    return {"w": w.astype(ml_dtypes.bfloat16)}, {"w": moved.astype(ml_dtypes.bfloat16)}


def test_ulp_steps_beat_xor_on_a_bfloat16_finetune() -> None:
    base, new = _bf16_finetune(1e-4)
    update = nnupdate.diff(base, new)
    assert nnupdate.decode(update.encode("raw")).changes["w"].combine == Combine.ULP  # auto: 16-bit
    ulp = len(update.encode("raw"))
    xor = len(update.encode("raw:combine=xor"))
    assert ulp < 0.8 * xor  # measured 3.6 against 5.7 bits/param


def test_lossy_codecs_store_a_small_bfloat16_update_exactly() -> None:
    """Most weights moved by 0 or 1 ULP: the exact code is smaller than levels at 5%."""
    base, new = _bf16_finetune(3e-5)
    update = nnupdate.diff(base, new)
    lossy = nnupdate.encode_with_report(update, "uniform:max_rel_error=0.05,coder=rans")
    report = nnupdate.encode_with_report(update, "ctx:max_rel_error=0.05")
    assert report.tensors[0].combine == Combine.ULP and report.relative_error == 0.0
    assert len(report.data) <= len(lossy.data)
    assert np.array_equal(nnupdate.apply(base, nnupdate.decode(report.data))["w"].view(np.uint16), new["w"].view(np.uint16))


def test_lossy_codecs_keep_levels_where_they_are_smaller() -> None:
    g = np.random.default_rng(4)
    base = {"w": g.standard_normal((128, 128)).astype(np.float32)}
    new = {"w": base["w"] + (0.01 * g.standard_normal((128, 128))).astype(np.float32)}
    report = nnupdate.encode_with_report(nnupdate.diff(base, new), "ctx:max_rel_error=0.05")
    assert report.tensors[0].combine == Combine.ADD


def test_error_feedback_carries_nothing_for_an_exact_tensor() -> None:
    base, new = _bf16_finetune(3e-5)
    update = nnupdate.diff(base, new)
    decoded = nnupdate.decode(update.encode("ctx:max_rel_error=0.05"))
    assert decoded.changes["w"].combine == Combine.ULP
    assert new_residual(update, decoded) == {}


@pytest.mark.parametrize("codec", ["ctx:max_rel_error=0.1", "uniform:max_rel_error=0.1"])
def test_error_of_a_16_bit_update_is_the_applied_models(codec: str) -> None:
    """apply rounds base + delta to bfloat16 again, often onto the new value: the reported
    error is the applied model's, and ctx's rate control spends what that allows."""
    base, new = _bf16_finetune(2e-4)
    report = nnupdate.encode_with_report(nnupdate.diff(base, new), codec)
    applied = dtypes.to_float64(nnupdate.apply(base, nnupdate.decode(report.data))["w"].view(np.uint16), "bfloat16")
    b, n = base["w"].astype(np.float64), new["w"].astype(np.float64)
    assert report.relative_error == pytest.approx(np.linalg.norm(applied - n) / np.linalg.norm(n - b), rel=1e-9)
    if codec.startswith("ctx"):
        assert 0.098 <= report.relative_error <= 0.1


def test_baseline_codecs_stay_what_they_are() -> None:
    """zstd and the casts stand for fixed peers in benchmarks: no exact substitution."""
    base, new = _bf16_finetune(3e-5)
    update = nnupdate.diff(base, new)
    for codec in ("zstd", "fp16", "bf16"):
        assert nnupdate.encode_with_report(update, codec).tensors[0].combine == Combine.ADD


def test_a_group_of_small_tensors_is_measured_on_the_applied_model() -> None:
    g = np.random.default_rng(9)
    base = {f"b{i}": g.standard_normal(40).astype(np.float32) for i in range(5)}
    new = {k: (v + 1e-6 * g.standard_normal(40)).astype(np.float32) for k, v in base.items()}
    report = nnupdate.encode_with_report(nnupdate.diff(base, new), "uniform:max_rel_error=0.05")
    assert len(report.tensors) == 1  # one TGRP group
    applied = nnupdate.apply(base, nnupdate.decode(report.data))
    num = sum(float(np.sum((applied[k].astype(np.float64) - new[k]) ** 2)) for k in new)
    den = sum(float(np.sum((new[k].astype(np.float64) - base[k]) ** 2)) for k in new)
    assert report.relative_error == pytest.approx(np.sqrt(num / den), rel=1e-9) and report.relative_error <= 0.05


def test_uniform_grows_its_step_when_rounding_leaves_room() -> None:
    """bfloat16: the applied error at the delta's step is well below the target (rounding
    lands on the new value), so uniform spends fewer bytes for the same promise."""
    base, new = _bf16_finetune(1e-4)
    update = nnupdate.diff(base, new)
    report = nnupdate.encode_with_report(update, "uniform:max_rel_error=0.05")
    from nnupdate.rate import step_for_max_rel_error

    delta_step = step_for_max_rel_error(update.float_deltas(), 0.05)
    fixed = nnupdate.encode_with_report(update, f"uniform:step={delta_step}")
    assert report.relative_error <= 0.05 and len(report.data) < len(fixed.data)


def test_raw_refuses_an_unknown_combine() -> None:
    from nnupdate.errors import InputError

    with pytest.raises(InputError, match="combine"):
        nnupdate.diff({"w": np.zeros(3, np.float32)}, {"w": np.ones(3, np.float32)}).encode("raw:combine=add")


def test_the_container_refuses_ulp_on_an_integer_tensor() -> None:
    """The format check, independent of the conformance vector (a hand-built record)."""
    from nnupdate.codecs.raw import Raw
    from nnupdate.errors import FormatError
    from nnupdate.format import Container, Header, TensorRecord, UpdateKind, serialize

    steps = np.array([1, -2, 3], dtype=np.int32)
    payload = Raw().encode(steps, nnupdate.codecs.base.ArraySpec((3,), "int32"))[0]
    record = TensorRecord("count", "int32", (3,), Combine.ULP, stages=[Raw().record()], payload=payload)
    data = serialize(Container(Header(UpdateKind.DELTA, None, 0, "test", {}), [record], []))
    with pytest.raises(FormatError, match="ULP"):
        nnupdate.decode(data)
