"""GenNorm and double-Weibull MLE fits and goodness-of-fit measures (nnupdate.stats)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import dweibull, gennorm

from nnupdate.errors import InputError
from nnupdate.stats import best_fit, fit_double_weibull, fit_gennorm, ks_statistic, wasserstein2


@pytest.mark.parametrize("beta", [0.3, 0.5, 1.0, 2.0, 3.5])
def test_gennorm_fit_recovers_parameters(beta: float) -> None:
    x = gennorm.rvs(beta, loc=0.002, scale=0.01, size=200_000, random_state=int(beta * 10))
    fit = fit_gennorm(x)
    assert fit.beta == pytest.approx(beta, rel=0.05)
    assert fit.alpha == pytest.approx(0.01, rel=0.1)  # alpha and beta trade off for small beta
    assert fit.mu == pytest.approx(0.002, abs=0.001)  # median of a 64K subsample
    assert ks_statistic(x, fit) < 0.01


def test_gennorm_fit_agrees_with_scipy_mle() -> None:
    x = gennorm.rvs(0.8, scale=2.0, size=20_000, random_state=3)
    ours = fit_gennorm(x, zero_mean=True)
    b, _, s = gennorm.fit(x, floc=0.0)
    # same likelihood maximum (scipy's optimiser is the slow reference here)
    ll_ours = np.mean(gennorm.logpdf(x, ours.beta, 0, ours.alpha))
    ll_ref = np.mean(gennorm.logpdf(x, b, 0, s))
    assert ll_ours >= ll_ref - 1e-4
    assert ours.loglik == pytest.approx(ll_ours, abs=1e-6)


def test_gennorm_beta_stays_in_range() -> None:
    x = np.random.default_rng(0).uniform(-1, 1, 10_000)  # beta -> infinity
    assert fit_gennorm(x).beta <= 4.0
    spiky = np.concatenate([np.zeros(9000), np.random.default_rng(1).standard_cauchy(1000)])
    assert fit_gennorm(spiky).beta >= 0.1


def test_large_tensors_are_fitted_on_a_bounded_subsample() -> None:
    # the work is bounded by max_samples: a 4M-value tensor gives exactly the fit of its
    # 64K strided subsample (speed itself is measured in tools/, never asserted here)
    x = gennorm.rvs(1.0, size=4_000_000, random_state=0)
    fit = fit_gennorm(x)
    assert fit == fit_gennorm(x[:: x.size // (1 << 16)])
    assert fit.beta == pytest.approx(1.0, rel=0.05)


def test_double_weibull_fit_and_model_choice() -> None:
    x = dweibull.rvs(0.7, scale=0.5, size=100_000, random_state=5)
    w = fit_double_weibull(x)
    assert w.c == pytest.approx(0.7, rel=0.05) and w.scale == pytest.approx(0.5, rel=0.05)
    assert ks_statistic(x, w) < 0.01
    g = gennorm.rvs(2.0, size=100_000, random_state=6)
    assert type(best_fit(g)).__name__ == "GenNorm"


def test_goodness_of_fit_orders_good_and_bad_models() -> None:
    x = gennorm.rvs(1.0, scale=1.0, size=50_000, random_state=9)
    good = fit_gennorm(x)
    bad = fit_gennorm(gennorm.rvs(2.0, scale=3.0, size=50_000, random_state=10))
    assert wasserstein2(x, good) < wasserstein2(x, bad)
    assert ks_statistic(x, good) < ks_statistic(x, bad)
    assert 0 <= ks_statistic(x, good) <= 1


def test_refuses_empty_and_non_finite() -> None:
    with pytest.raises(InputError):
        fit_gennorm(np.zeros(0))
    with pytest.raises(InputError):
        fit_double_weibull(np.array([1.0, np.nan]))


def test_constant_input_does_not_crash() -> None:
    fit = fit_gennorm(np.full(100, 0.5))
    assert fit.alpha == 0.0 and fit.mu == 0.5


def test_rate_distortion_bound_matches_closed_forms() -> None:
    from nnupdate.stats import GenNorm, gennorm_rd_bound, shannon_lower_bound

    gauss = GenNorm(0.0, float(np.sqrt(2.0)), 2.0)  # unit variance
    d = np.array([0.5, 0.1, 0.01])
    np.testing.assert_allclose(gennorm_rd_bound(gauss, d, points=151), 0.5 * np.log2(1 / d), atol=0.02)
    laplace = GenNorm(0.0, 1.0, 1.0)
    r = gennorm_rd_bound(laplace, [0.5, 0.05], points=151)
    slb = [shannon_lower_bound(laplace, 0.5), shannon_lower_bound(laplace, 0.05)]
    assert r[0] >= slb[0] and abs(r[1] - slb[1]) < 0.02  # SLB tight at small D
    assert gennorm_rd_bound(laplace, [100.0])[0] == 0.0


def test_measures() -> None:
    from nnupdate.stats import entropy_bits, m_weighted, relative_l2

    x = np.array([1.0, -2.0, 0.0, 4.0])
    y = np.array([1.0, -1.0, 0.0, 4.5])
    assert m_weighted(x, y, 0) == pytest.approx((1 + 0.25) / 4)
    assert m_weighted(x, y, 2) == pytest.approx((4 * 1 + 16 * 0.25) / 4)
    assert relative_l2(x, y) == pytest.approx(np.sqrt(1.25) / np.sqrt(21))
    assert entropy_bits(np.array([0, 0, 1, 1])) == pytest.approx(1.0)
    assert entropy_bits(np.zeros(0)) == 0.0


@pytest.mark.parametrize("scale", [1e-300, 1e-200, 1e200, 1e300])
def test_fits_are_scale_equivariant_down_to_the_limits_of_binary64(scale: float) -> None:
    """Fitting x * scale gives the shape of x and the scale times its scale parameter, with
    no overflow or NaN on the way (powers of |x| near 1e300 used to become infinite)."""
    import warnings

    x = np.random.default_rng(8).laplace(size=4000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g, g_scaled = fit_gennorm(x, zero_mean=True), fit_gennorm(x * scale, zero_mean=True)
        d, d_scaled = fit_double_weibull(x, zero_mean=True), fit_double_weibull(x * scale, zero_mean=True)
    assert g_scaled.beta == pytest.approx(g.beta, abs=2e-3)
    assert g_scaled.alpha == pytest.approx(g.alpha * scale, rel=1e-2)
    assert d_scaled.c == pytest.approx(d.c, abs=2e-3)
    assert d_scaled.scale == pytest.approx(d.scale * scale, rel=1e-2)
