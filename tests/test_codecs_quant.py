"""Quantizing stages and named codecs of helper C: m22, qsgd, topk, sbc, rd.

Properties: shape/dtype preserved through the whole container; declared error bounds
for deterministic quantizers; stochastic rounding unbiased; Lloyd-Max centers sorted
and symmetric; the registry names and options the benchmark relies on.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nnupdate
from nnupdate.codecs import parse_codec, registered_codecs, registered_stages
from nnupdate.codecs.base import ArraySpec, stage_from_record
from nnupdate.codecs.m22 import M22
from nnupdate.codecs.qsgd import QSGD
from nnupdate.codecs.sbc import SBC
from nnupdate.codecs.topk import TopK
from nnupdate.codecs.uniform import Uniform
from nnupdate.errors import CodecError, InputError
from nnupdate.stats.lloyd import symmetric_quantizer

CODECS = [
    "m22:levels=16,M=2",
    "m22:levels=5,M=0,min_size=16",
    "m22:bits=2",
    "qsgd",
    "qsgd:s=16,bucket=0,coder=auto",
    "topk:fraction=0.1",
    "topk:fraction=0.02,coder=golomb",
    "sbc:fraction=0.05",
    "rd:step=0.001",
    "rd:step=0.001,coder=rans",
    "rd:max_rel_error=0.1,coder=auto",
]


def _models(seed: int, dtype: str = "float32") -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    g = np.random.default_rng(seed)
    base = {"w": g.standard_normal((64, 70)).astype(dtype), "b": g.standard_normal(12).astype(dtype), "s": np.array(1.5, dtype)}
    new = {k: (v + 0.01 * g.laplace(size=v.shape)).astype(dtype) for k, v in base.items()}
    return base, new


def test_registry_names_and_ids() -> None:
    stages = registered_stages()
    ids = {name: stages[name].codec_id for name in ("m22", "qsgd", "topk", "sbc", "elias", "golomb", "bitpack")}
    assert ids == {"m22": 0x11, "qsgd": 0x12, "topk": 0x13, "sbc": 0x14, "elias": 0x21, "golomb": 0x22, "bitpack": 0x23}
    assert {"m22", "rd", "topk", "sbc", "qsgd"} <= set(registered_codecs())
    assert parse_codec("m22:levels=16,M=2").options()["M"] == 2.0
    assert parse_codec("rd:target_bits=2").options()["target_bits"] == 2.0
    with pytest.raises(InputError):
        parse_codec("rd:coder=nonsense")
    with pytest.raises(InputError):
        parse_codec("m22:levels=1")


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
def test_codec_roundtrip_preserves_shape_dtype_and_reports_measured_error(codec: str, dtype: str) -> None:
    base, new = _models(1, dtype)
    update = nnupdate.diff(base, new)
    report = nnupdate.encode_with_report(update, codec)
    out = nnupdate.apply(base, nnupdate.decode(report.data))
    for name, value in new.items():
        assert out[name].shape == value.shape and out[name].dtype == value.dtype
    # the reported error is the real one
    num = sum(float(np.sum((out[k].astype(np.float64) - new[k].astype(np.float64)) ** 2)) for k in new)
    den = sum(float(np.sum((new[k].astype(np.float64) - base[k].astype(np.float64)) ** 2)) for k in new)
    if dtype == "float64":
        assert np.sqrt(num / den) == pytest.approx(report.relative_error, rel=1e-6, abs=1e-9)
    assert report.bits_per_parameter > 0


def _stage_roundtrip(stage, x: np.ndarray):  # type: ignore[no-untyped-def]
    spec = ArraySpec(x.shape, "float64")
    symbols, resolved = stage.encode(x, spec)
    assert symbols.shape == x.shape
    restored = stage_from_record(resolved.record())  # through the stored parameters
    return restored.decode(symbols, spec), resolved


finite = st.floats(-1e3, 1e3, allow_nan=False, width=64)


@settings(max_examples=40, deadline=None)
@given(x=hnp.arrays(np.float64, st.integers(1, 300), elements=finite), levels=st.integers(2, 64), m=st.sampled_from([0.0, 1.0, 2.0]))
def test_m22_decodes_to_its_centers_and_nearest_cell(x: np.ndarray, levels: int, m: float) -> None:
    y, resolved = _stage_roundtrip(M22(levels, m).design(x), x)
    centers, thresholds = resolved.center_values, resolved.threshold_values
    assert np.all(np.isin(y, centers))
    # each value lands in the cell its thresholds define
    cell = np.searchsorted(thresholds, x, side="left")
    np.testing.assert_array_equal(y, centers[cell])


@pytest.mark.parametrize("beta", [0.3, 0.8, 1.0, 2.0, 3.5])
@pytest.mark.parametrize("levels", [2, 3, 8, 17, 256])
@pytest.mark.parametrize("m", [0.0, 2.0])
def test_lloyd_max_centers_sorted_and_symmetric(beta: float, levels: int, m: float) -> None:
    c, t = symmetric_quantizer(levels, beta, m, 12.0)
    assert c.size == levels and t.size == levels - 1
    assert np.all(np.diff(c) > 0) and np.all(np.diff(t) > 0)
    np.testing.assert_allclose(c, -c[::-1], atol=1e-12)
    np.testing.assert_allclose(t, -t[::-1], atol=1e-12)
    assert np.all((t > c[:-1]) & (t < c[1:]))
    np.testing.assert_allclose(t, 0.5 * (c[1:] + c[:-1]), rtol=1e-9, atol=1e-12)


def test_lloyd_max_gaussian_reference_values() -> None:
    # Max (1960): unit-variance Gaussian, L=4: +-0.4528, +-1.510; L=8 outermost 2.152
    sigma = np.sqrt(0.5)  # GenNorm beta=2, alpha=1
    c4, _ = symmetric_quantizer(4, 2.0, 0.0, 12.0)
    np.testing.assert_allclose(c4[2:] / sigma, [0.4528, 1.510], atol=2e-3)
    c8, _ = symmetric_quantizer(8, 2.0, 0.0, 12.0)
    assert c8[-1] / sigma == pytest.approx(2.152, abs=3e-3)


def test_m22_larger_m_moves_levels_outward() -> None:
    c0, _ = symmetric_quantizer(8, 1.0, 0.0, 20.0)
    c2, _ = symmetric_quantizer(8, 1.0, 2.0, 20.0)
    assert c2[-1] > c0[-1] and c2[4] > c0[4]


@settings(max_examples=40, deadline=None)
@given(x=hnp.arrays(np.float64, st.integers(1, 500), elements=finite), frac=st.floats(0.001, 1.0), bits=st.integers(2, 12))
def test_topk_keeps_k_largest_within_declared_bound(x: np.ndarray, frac: float, bits: int) -> None:
    k = max(1, int(frac * x.size))
    y, resolved = _stage_roundtrip(TopK(k, 0.0, bits), x)
    kept = np.flatnonzero(y)
    assert kept.size <= k
    if kept.size:
        err = np.abs(y[kept] - x[kept])
        # nearest level, except that a kept value never becomes 0: |x| < step/2 goes to +-step
        bound = np.maximum(resolved.step / 2, resolved.step - np.abs(x[kept]))
        assert np.all(err <= bound * (1 + 1e-9) + 1e-300)
        # nothing dropped is larger than what was kept
        dropped = np.setdiff1d(np.arange(x.size), kept)
        if dropped.size:
            assert np.abs(x[dropped]).max() <= np.abs(x[kept]).max() + 1e-12


@settings(max_examples=40, deadline=None)
@given(x=hnp.arrays(np.float64, st.integers(1, 500), elements=finite), frac=st.floats(0.001, 1.0))
def test_sbc_sends_one_mean_of_the_dominant_sign(x: np.ndarray, frac: float) -> None:
    y, resolved = _stage_roundtrip(SBC(frac), x)
    values = np.unique(y[y != 0])
    assert values.size <= 1
    if values.size:
        assert values[0] == resolved.mean
        kept = np.flatnonzero(y)
        assert np.mean(x[kept]) == pytest.approx(resolved.mean)
        assert np.all(np.sign(x[kept]) == np.sign(resolved.mean))


def test_stochastic_rounding_is_unbiased() -> None:
    x = np.random.default_rng(0).uniform(-3, 3, 200)
    step = 1.0
    runs = 3000
    total = np.zeros_like(x)
    for seed in range(runs):
        total += Uniform(step, "stochastic", seed).decode(Uniform(step, "stochastic", seed).encode(x, ArraySpec(x.shape, "float64"))[0], ArraySpec(x.shape, "float64"))
    mean = total / runs
    # per-element std of the mean <= 0.5 / sqrt(runs) ~ 0.009; allow 5 sigma
    assert np.max(np.abs(mean - x)) < 0.05
    assert abs(float(np.mean(mean - x))) < 0.005


def test_qsgd_is_unbiased() -> None:
    x = np.random.default_rng(1).laplace(0, 1, 300)
    spec = ArraySpec(x.shape, "float64")
    runs = 2000
    total = np.zeros_like(x)
    for seed in range(runs):
        q, resolved = QSGD(4, 64, seed=seed).encode(x, spec)
        total += resolved.decode(q, spec)
    mean = total / runs
    bucket_norm = np.repeat(np.sqrt((x.reshape(-1) ** 2)[: 300 - 300 % 64].reshape(-1, 64).sum(1)), 64)
    tol = 5 * (bucket_norm.max() / 4) * 0.5 / np.sqrt(runs)
    assert np.max(np.abs(mean - x)) < tol


def test_qsgd_levels_bounded_and_zero_tensor() -> None:
    spec = ArraySpec((10,), "float64")
    q, resolved = QSGD(3, 0).encode(np.zeros(10), spec)
    assert not q.any() and resolved.decode(q, spec).tolist() == [0.0] * 10
    with pytest.raises(CodecError):
        QSGD(2, 0, np.array([1.0], '<f4').tobytes()).decode(np.array([3] * 10, np.int32), spec)


def test_decoders_refuse_inconsistent_parameters() -> None:
    spec = ArraySpec((4,), "float32")
    with pytest.raises(CodecError):
        M22.with_table(4, 0.0, 0.0, 1.0, 1.0, np.arange(4.0), np.arange(3.0) + 0.5).decode(np.array([0, 1, 2, 9], np.int16), spec)
    with pytest.raises(CodecError):
        TopK(1, 0.5).decode(np.array([1, 1, 0, 0], np.int32), spec)
    with pytest.raises(CodecError):
        SBC(0.5, 1.0).decode(np.array([2, 0, 0, 0], np.int8), spec)
    with pytest.raises(CodecError):
        M22(4, 0.0).encode(np.array([np.nan, 0, 0, 0]), spec)


def test_rd_uses_one_global_step_and_elias_by_default() -> None:
    base, new = _models(2)
    update = nnupdate.diff(base, new)
    decoded = nnupdate.decode(update.encode("rd:step=0.002"))
    stages = [c.pipeline.stages for c in decoded.changes.values() if c.pipeline is not None]
    assert {s[0].step for s in stages} == {0.002}
    assert "rounding" not in stages[0][0].params()  # encoder-only: decoding needs the step alone
    assert nnupdate.parse_codec("rd:step=0.002").rounding == "stochastic"  # type: ignore[attr-defined]
    assert {s[1].name for s in stages} == {"elias"}
