"""Maximum-likelihood fits of GenNorm(mu, alpha, beta) and double-Weibull(mu, scale, c).

Why profile likelihood: for a fixed shape the scale has a closed-form MLE
(alpha^beta = beta * mean|x - mu|^beta), so the fit is a 1-D bounded search over the
shape, a few dozen vectorised passes over at most ``max_samples`` values (a strided
subsample of large tensors). The location is the sample median: the exact MLE for
beta <= 1 (Laplace-like updates, the common case) and within noise of it above.
Measured: ~2 ms for a 64K subsample, independent of tensor size beyond that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

BETA_RANGE = (0.1, 4.0)
MAX_SAMPLES = 1 << 16


@dataclass(frozen=True)
class GenNorm:
    """Density beta / (2 alpha Gamma(1/beta)) * exp(-(|x - mu| / alpha)^beta)."""

    mu: float
    alpha: float
    beta: float
    loglik: float = 0.0  #: mean log-likelihood per sample of the fit

    def pdf(self, x: np.ndarray) -> np.ndarray:
        c = self.beta / (2 * self.alpha * math.gamma(1 / self.beta))
        return c * np.exp(-((np.abs(x - self.mu) / self.alpha) ** self.beta))

    def cdf(self, x: np.ndarray) -> np.ndarray:
        from scipy.special import gammainc

        z = np.asarray(x, dtype=np.float64) - self.mu
        half = 0.5 * gammainc(1 / self.beta, (np.abs(z) / self.alpha) ** self.beta)
        return 0.5 + np.sign(z) * half

    def ppf(self, q: np.ndarray) -> np.ndarray:
        from scipy.stats import gennorm

        return gennorm.ppf(q, self.beta, loc=self.mu, scale=self.alpha)


@dataclass(frozen=True)
class DoubleWeibull:
    """Density c / (2 scale) * |z/scale|^(c-1) * exp(-|z/scale|^c), z = x - mu."""

    mu: float
    scale: float
    c: float
    loglik: float = 0.0

    def cdf(self, x: np.ndarray) -> np.ndarray:
        z = np.asarray(x, dtype=np.float64) - self.mu
        return 0.5 + np.sign(z) * 0.5 * (1 - np.exp(-((np.abs(z) / self.scale) ** self.c)))

    def ppf(self, q: np.ndarray) -> np.ndarray:
        from scipy.stats import dweibull

        return dweibull.ppf(q, self.c, loc=self.mu, scale=self.scale)


def _sample(x: np.ndarray, max_samples: int) -> np.ndarray:
    flat = np.asarray(x, dtype=np.float64).reshape(-1)
    if flat.size == 0:
        raise InputError("cannot fit a distribution to an empty array")
    if not np.isfinite(flat).all():
        raise InputError("cannot fit a distribution to NaN or infinite values")
    stride = max(1, flat.size // max_samples)
    return flat[::stride]


def _gennorm_profile(a: np.ndarray, log_a: np.ndarray, beta: float) -> tuple[float, float]:
    """(alpha_hat, mean log-likelihood) at shape ``beta`` for the magnitudes exp(log_a)."""
    m = float(np.mean(np.exp(beta * log_a)))  # mean a^beta; a = 0 gives exp(-inf) = 0
    if m <= 0:
        return 0.0, -math.inf
    alpha = (beta * m) ** (1 / beta)
    ll = math.log(beta / (2 * alpha)) - math.lgamma(1 / beta) - 1 / beta
    return alpha, ll


def fit_gennorm(x: np.ndarray, *, max_samples: int = MAX_SAMPLES, zero_mean: bool = False) -> GenNorm:
    """MLE GenNorm fit (beta bounded to [0.1, 4]); ``zero_mean`` fixes mu = 0."""
    from scipy.optimize import minimize_scalar

    s = _sample(x, max_samples)
    mu = 0.0 if zero_mean else float(np.median(s))
    a = np.abs(s - mu)
    if not (a > 0).any():
        return GenNorm(mu, 0.0, 2.0, math.inf)
    with np.errstate(divide="ignore"):
        log_a = np.log(a)
    # The fit is scale-equivariant: fit a / max(a), whose powers neither overflow nor all
    # underflow (the largest is 1), then scale back. Unscaled, values near 1e300 or 1e-300
    # made the likelihood infinite and the optimizer's steps NaN.
    shift = float(log_a.max())
    log_a = log_a - shift
    res = minimize_scalar(
        lambda b: -_gennorm_profile(a, log_a, b)[1], bounds=BETA_RANGE, method="bounded", options={"xatol": 1e-3}
    )
    beta = float(res.x)
    alpha, ll = _gennorm_profile(a, log_a, beta)
    return GenNorm(mu, alpha * math.exp(shift), beta, ll - shift)


def fit_double_weibull(x: np.ndarray, *, max_samples: int = MAX_SAMPLES, zero_mean: bool = False) -> DoubleWeibull:
    """MLE double-Weibull fit (shape c in [0.1, 4]); exact zeros are dropped (density 0 or inf there)."""
    from scipy.optimize import minimize_scalar

    s = _sample(x, max_samples)
    mu = 0.0 if zero_mean else float(np.median(s))
    a = np.abs(s - mu)
    a = a[a > 0]
    if a.size == 0:
        return DoubleWeibull(mu, 0.0, 1.0, math.inf)
    log_a = np.log(a)
    shift = float(log_a.max())  # scale-equivariant, as in fit_gennorm: fit a / max(a)
    log_a -= shift
    mean_log = float(log_a.mean())

    def profile(c: float) -> tuple[float, float]:
        m = float(np.mean(np.exp(c * log_a)))
        scale = m ** (1 / c)
        ll = math.log(c / (2 * scale)) + (c - 1) * (mean_log - math.log(scale)) - 1
        return scale, ll

    res = minimize_scalar(lambda c: -profile(c)[1], bounds=BETA_RANGE, method="bounded", options={"xatol": 1e-3})
    c = float(res.x)
    scale, ll = profile(c)
    return DoubleWeibull(mu, scale * math.exp(shift), c, ll - shift)


def best_fit(x: np.ndarray) -> GenNorm | DoubleWeibull:
    """The family with the higher likelihood on ``x`` (zeros excluded for the comparison)."""
    g = fit_gennorm(x)
    w = fit_double_weibull(x)
    return g if g.loglik >= w.loglik else w
