"""Goodness of fit of a fitted model to samples: Wasserstein-2 distance and the KS statistic.

Both are computed on a strided subsample (default 64K values) of the sorted data, so
they cost one sort of the subsample plus one vectorised quantile/CDF evaluation.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class _Model(Protocol):
    def cdf(self, x: np.ndarray) -> np.ndarray: ...

    def ppf(self, q: np.ndarray) -> np.ndarray: ...


def _sorted_sample(x: np.ndarray, max_samples: int) -> np.ndarray:
    flat = np.asarray(x, dtype=np.float64).reshape(-1)
    stride = max(1, flat.size // max_samples)
    return np.sort(flat[::stride])


def wasserstein2(x: np.ndarray, model: _Model, *, max_samples: int = 1 << 16) -> float:
    """W2 between the empirical distribution of ``x`` and ``model`` (quantile coupling, midpoint rule)."""
    s = _sorted_sample(x, max_samples)
    if s.size == 0:
        return 0.0
    q = (np.arange(s.size) + 0.5) / s.size
    return float(np.sqrt(np.mean((s - model.ppf(q)) ** 2)))


def ks_statistic(x: np.ndarray, model: _Model, *, max_samples: int = 1 << 16) -> float:
    """sup |F_n - F| (two-sided Kolmogorov-Smirnov statistic)."""
    s = _sorted_sample(x, max_samples)
    n = s.size
    if n == 0:
        return 0.0
    f = model.cdf(s)
    i = np.arange(1, n + 1)
    return float(max(np.max(i / n - f), np.max(f - (i - 1) / n)))
