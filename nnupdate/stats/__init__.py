"""Distribution models of update values: GenNorm and double-Weibull fits, goodness of fit.

Encoder-side only: these fits shape quantizers (M22) and feed reports; nothing a
decoder computes depends on them (whatever it needs travels as stage parameters).
"""

from .fit import DoubleWeibull, GenNorm, best_fit, fit_double_weibull, fit_gennorm
from .gof import ks_statistic, wasserstein2
from .measures import entropy_bits, gennorm_rd_bound, m_weighted, relative_l2, shannon_lower_bound

__all__ = [
    "DoubleWeibull",
    "GenNorm",
    "best_fit",
    "entropy_bits",
    "fit_double_weibull",
    "fit_gennorm",
    "gennorm_rd_bound",
    "ks_statistic",
    "m_weighted",
    "relative_l2",
    "shannon_lower_bound",
    "wasserstein2",
]
