"""lowrank (0x0015): exact integer reconstruction, strict refusals, and the ctx codec's
choice between it and element-wise coding (kept only when smaller at no more error)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnupdate
from nnupdate.codecs.base import ArraySpec
from nnupdate.codecs.lowrank import LEVEL_LIMIT, LowRank, best_lowrank
from nnupdate.codecs.presets import entropy_tails
from nnupdate.errors import CodecError, FormatError
from nnupdate.format import parse


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(1, 6), st.integers(0, 2**31), st.sampled_from(["float32", "float16", "float64"]))
def test_decode_is_the_exact_integer_product_scaled_once(m: int, n: int, rank: int, seed: int, dtype: str) -> None:
    rank = min(rank, m, n)
    g = np.random.default_rng(seed)
    levels = g.integers(-LEVEL_LIMIT, LEVEL_LIMIT + 1, size=rank * (m + n)).astype(np.int32)
    stage = LowRank(rank=rank, scale=1.7e-9)
    out = stage.decode(levels, ArraySpec((m, n), dtype))
    a = [int(v) for v in levels[: m * rank]]
    b = [int(v) for v in levels[m * rank :]]
    for i in range(m):  # Python integers: no overflow, no rounding before the one multiply
        for j in range(n):
            p = sum(a[i * rank + k] * b[k * n + j] for k in range(rank))
            assert out[i, j] == np.asarray(float(p) * 1.7e-9, dtype=np.float64).astype(dtype)


def test_round_trip_of_a_low_rank_matrix_meets_the_step_bound() -> None:
    g = np.random.default_rng(1)
    x = (g.standard_normal((40, 3)) @ g.standard_normal((3, 70))) * 0.01
    spec = ArraySpec((40, 70), "float32")
    levels, resolved = LowRank(rank=3, step=1e-4).encode(x, spec)
    assert levels.dtype == np.int32 and levels.shape == (3 * 110,)
    assert resolved.scale == 1e-4 * 1e-4 and "step" not in resolved.params()
    out = LowRank.from_params(resolved.params()).decode(levels, spec)
    assert np.abs(out - x).max() < 1e-4


@pytest.mark.parametrize(
    ("shape", "rank", "levels", "error"),
    [
        ((3, 4), 2, np.zeros(13, np.int32), CodecError),  # wrong count
        ((3, 4), 2, np.full(14, LEVEL_LIMIT + 1, np.int32), CodecError),  # level out of range
        ((3, 4), 4, np.zeros(28, np.int32), CodecError),  # rank > min(m, n)
        ((12,), 1, np.zeros(13, np.int32), CodecError),  # one dimension
        ((1 << 16, 1 << 16), 2, np.zeros(0, np.int32), CodecError),  # rank x m x n > 2**32: refused before any work
    ],
)
def test_refusals(shape: tuple[int, ...], rank: int, levels: np.ndarray, error: type[Exception]) -> None:
    stage = LowRank(rank=rank, scale=1e-4)
    with pytest.raises(error):
        stage.decode(levels, ArraySpec(shape, "float32"))
    with pytest.raises(CodecError):
        stage.decode(np.zeros(2 * 7, np.int32), ArraySpec((3, 4), "int32"))


def test_non_finite_input_is_a_codec_error() -> None:
    x = np.ones((8, 8))
    x[2, 3] = np.nan
    with pytest.raises(CodecError):
        LowRank(rank=2, step=1e-3).encode(x, ArraySpec((8, 8), "float32"))


def test_bad_parameters_are_format_errors() -> None:
    for params in ({"rank": 0, "scale": 1.0}, {"rank": 257, "scale": 1.0}, {"rank": 2, "scale": -1.0}, {"rank": 2, "scale": float("nan")}):
        with pytest.raises(FormatError):
            LowRank.from_params(params)


def test_search_stays_within_the_error_budget_and_declines_full_rank_noise() -> None:
    g = np.random.default_rng(2)
    spec = ArraySpec((64, 128), "float32")
    low = ((g.standard_normal((64, 5)) @ g.standard_normal((5, 128))) * 0.01).astype(np.float32).astype(np.float64)
    budget = 0.0025 * float(np.sum(low**2))
    choice = best_lowrank(low, spec, budget, entropy_tails("auto", low.size))
    assert choice is not None and choice.squared_error <= budget
    assert choice.stages[0].rank <= 8  # type: ignore[attr-defined]
    noise = g.standard_normal((64, 128)) * 0.01
    assert best_lowrank(noise, spec, 0.0025 * float(np.sum(noise**2)), entropy_tails("auto", noise.size)) is None


def test_ctx_codes_a_low_rank_layer_as_factors_and_keeps_the_error_target() -> None:
    g = np.random.default_rng(3)
    base = {"fc.weight": g.standard_normal((64, 256)).astype(np.float32), "conv.weight": g.standard_normal((32, 16, 3, 3)).astype(np.float32)}
    delta = (g.standard_normal((64, 6)) @ g.standard_normal((6, 256))) * 0.01 + 1e-4 * g.standard_normal((64, 256))
    new = {"fc.weight": (base["fc.weight"] + delta).astype(np.float32),
           "conv.weight": (base["conv.weight"] + 0.01 * g.standard_normal((32, 16, 3, 3))).astype(np.float32)}
    update = nnupdate.diff(base, new)
    with_factors = nnupdate.encode_with_report(update, "ctx:max_rel_error=0.05")
    records = {r.name: r for r in parse(with_factors.data).tensors}
    assert [s.codec_id for s in records["fc.weight"].stages][0] == LowRank.codec_id
    assert [s.codec_id for s in records["conv.weight"].stages][0] != LowRank.codec_id  # full-rank noise
    assert 0.045 <= with_factors.relative_error <= 0.05
    plain = nnupdate.encode_with_report(update, "uniform:max_rel_error=0.05,coder=ctx")
    assert len(with_factors.data) < 0.8 * len(plain.data)
    applied = nnupdate.apply(base, nnupdate.decode(with_factors.data))
    err = applied["fc.weight"].astype(np.float64) - new["fc.weight"]
    assert np.linalg.norm(err) <= 0.06 * np.linalg.norm(delta)


@pytest.mark.parametrize("shape,rank", [((64, 40), 3), ((40, 64), 3), ((128, 128), 10), ((30, 200), 1)])
def test_gram_pretest_agrees_with_the_svd(shape: tuple[int, int], rank: int) -> None:
    """The cheap skip (eigenvalues of the smaller Gram matrix) says 'exceeds' only when the
    SVD's truncation error at that rank really exceeds the budget."""
    from nnupdate.codecs.lowrank import _truncation_exceeds

    g = np.random.default_rng(rank)
    x = g.normal(size=(shape[0], rank)) @ g.normal(size=(rank, shape[1])) + 0.01 * g.normal(size=shape)
    s = np.linalg.svd(x, compute_uv=False)
    for r in (1, rank, rank + 2):
        tail = float(np.sum(s[r:] ** 2))
        assert _truncation_exceeds(x, r, tail * 0.99)  # just under the truncation: exceeds
        assert not _truncation_exceeds(x, r, tail * 1.01)  # just over: the SVD must look


def test_best_lowrank_refuses_nan_with_a_codec_error() -> None:
    x = np.ones((16, 16))
    x[0, 0] = np.nan
    with pytest.raises(CodecError, match="NaN"):
        best_lowrank(x, ArraySpec((16, 16), "float32"), 1.0, entropy_tails("auto", 256))


def test_largest_step_passes_its_budget_and_is_near_the_largest() -> None:
    """The fitted step's real error is within the budget, and a step 2% larger is not (on
    a smooth low-rank case, where the error grows with the step)."""
    from nnupdate.codecs.lowrank import _error, _largest_step, balanced_factors

    rng = np.random.default_rng(3)
    x = rng.standard_normal((96, 3)) @ rng.standard_normal((3, 80)) + 0.01 * rng.standard_normal((96, 80))
    a, b = balanced_factors(x, 3)
    truncation = float(np.sum((x - a @ b) ** 2))
    for share in (1.5, 3.0, 10.0):
        budget = share * truncation
        step = _largest_step(x, a, b, budget, truncation)
        assert _error(x, a, b, step) <= budget
        assert _error(x, a, b, 1.02 * step) > budget or _error(x, a, b, 1.05 * step) > budget


def test_large_noise_layers_are_ruled_out_by_the_sketch_and_low_rank_ones_still_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """From SKETCH_ELEMENTS on, a random sketch screens layers before the Gram test: a
    full-rank noise layer is refused without any eigendecomposition, and a low-rank layer
    with a little noise still gets its factors."""
    from nnupdate.codecs import lowrank

    g = np.random.default_rng(11)
    n = 1024
    assert n * n >= lowrank.SKETCH_ELEMENTS
    spec = ArraySpec((n, n), "float32")
    noise = g.standard_normal((n, n)).astype(np.float32)

    def no_eigen(*args: object, **kwargs: object) -> None:
        raise AssertionError("the Gram test ran")

    with monkeypatch.context() as patch:
        patch.setattr(lowrank.np.linalg, "eigvalsh", no_eigen)
        assert best_lowrank(noise, spec, 0.01 * float(np.sum(noise.astype(np.float64) ** 2)), entropy_tails("auto", noise.size)) is None
    low = (g.standard_normal((n, 6)) @ g.standard_normal((6, n)) + 1e-3 * g.standard_normal((n, n))).astype(np.float32)
    budget = 0.0025 * float(np.sum(low.astype(np.float64) ** 2))
    choice = best_lowrank(low, spec, budget, entropy_tails("auto", low.size))
    assert choice is not None and choice.squared_error <= budget
    assert choice.stages[0].rank >= 6
