"""Lloyd-Max quantizer design on a fitted GenNorm under M-magnitude-weighted L2 distortion.

Minimises E[|g|^M (g - Q(g))^2] for g ~ GenNorm(0, alpha, beta) truncated to the observed
range: centers are weighted centroids c_i = int g^{M+1} p / int g^M p over each cell,
thresholds the midpoints between neighbouring centers, alternated until the centers
stop moving. M = 0 is the classic MSE Lloyd-Max quantizer; larger M spends levels on
large magnitudes (M22, Liu et al.). The design is symmetric by construction: only the
positive half-line is optimised and mirrored, with a center at 0 for odd L.

Integrals are cumulative trapezoid sums on a log-spaced grid (the density of small
beta is extremely peaked at 0), evaluated at arbitrary thresholds by interpolation.
Encoder-side only: the decoder receives the centers as numbers.
"""

from __future__ import annotations

import numpy as np

GRID_POINTS = 8192


def _cumulatives(beta: float, m: float, upper: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid u in [0, upper] (units of alpha) with F0 = int u^M p, F1 = int u^{M+1} p."""
    lo = max(upper * 1e-9, 1e-12)
    u = np.concatenate(([0.0], np.geomspace(lo, upper, GRID_POINTS)))
    w = np.exp(-(u**beta))
    if m:
        w = w * u**m
    f0 = np.concatenate(([0.0], np.cumsum(0.5 * (w[1:] + w[:-1]) * np.diff(u))))
    uw = u * w
    f1 = np.concatenate(([0.0], np.cumsum(0.5 * (uw[1:] + uw[:-1]) * np.diff(u))))
    return u, f0, f1


def design_half(levels: int, beta: float, m: float, upper: float, iterations: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Positive-half centers and thresholds (normalised by alpha) of an L-level symmetric quantizer.

    Returns (centers >= 0, thresholds > 0), both sorted; for odd L the first center is 0.
    """
    if levels < 2:
        raise ValueError("a quantizer needs at least 2 levels")
    odd = levels % 2 == 1
    cells = levels // 2  # positive cells (beyond the zero cell for odd L)
    u, f0, f1 = _cumulatives(beta, m, upper)
    total = f0[-1]
    # start from cells of equal weighted mass
    edges = np.interp(np.linspace(0, total, cells + 1), f0, u) if total > 0 else np.linspace(0, upper, cells + 1)
    edges[0], edges[-1] = 0.0, upper
    centers = 0.5 * (edges[1:] + edges[:-1])
    for _ in range(iterations):
        a0, b0 = np.interp(edges[:-1], u, f0), np.interp(edges[1:], u, f0)
        a1, b1 = np.interp(edges[:-1], u, f1), np.interp(edges[1:], u, f1)
        mass = b0 - a0
        mid = 0.5 * (edges[1:] + edges[:-1])
        new = np.where(mass > 1e-300, (b1 - a1) / np.where(mass > 1e-300, mass, 1.0), mid)
        new = np.clip(new, edges[:-1], edges[1:])
        if odd:
            inner = np.concatenate(([0.0], new))
            edges = np.concatenate((0.5 * (inner[1:] + inner[:-1]), [upper]))
        else:
            edges = np.concatenate(([0.0], 0.5 * (new[1:] + new[:-1]), [upper]))
        moved = float(np.max(np.abs(new - centers)))
        centers = new
        if moved <= 1e-12 * upper:
            break
    if odd:
        return np.concatenate(([0.0], centers)), edges[:-1]
    return centers, edges[1:-1]


def symmetric_quantizer(levels: int, beta: float, m: float, upper: float) -> tuple[np.ndarray, np.ndarray]:
    """Full sorted (centers, thresholds) in alpha units, mirrored about 0 (L centers, L-1 thresholds)."""
    half_c, half_t = design_half(levels, beta, m, upper)
    if levels % 2:
        centers = np.concatenate((-half_c[:0:-1], half_c))
        thresholds = np.concatenate((-half_t[::-1], half_t))
    else:
        centers = np.concatenate((-half_c[::-1], half_c))
        thresholds = np.concatenate((-half_t[::-1], [0.0], half_t))
    return centers, thresholds
