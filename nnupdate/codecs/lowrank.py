"""``lowrank``: a matrix delta as the product of two small quantized factors.

Why: the update of a dense layer after a few local SGD steps is close to low rank (the
gradient of ``W`` is a sum of outer products ``delta x^T`` over a batch). On the FedAvg
CNN's 64x512 linear layer, 16 of 64 singular values carry 99.75% of the energy: two
quantized factors of 16 x (64 + 512) values cost 0.3-0.4x the bytes of coding the 32,768
entries one by one, at the same error. Convolution deltas are close to full rank and keep
the element-wise path; the encoder tries this one where it may pay and keeps it only when
its measured bytes are smaller at no more error.

Decoding is integer-exact: the factors are integer levels ``A`` (m x r) and ``B`` (r x n),
their product is formed in 64-bit integers (no floating-point sums whose order could
differ), and only then scaled: ``x = RN_T(RN64(P * scale))``, one binary64 multiply per
element, as ``uniform`` does.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from dataclasses import dataclass, field

import numpy as np

from .. import dtypes
from ..errors import CodecError
from .base import ENCODER_ONLY, ArraySpec, ArrayToArray, Stage, register
from .uniform import check_step

#: factor levels lie in [-LEVEL_LIMIT, LEVEL_LIMIT], so |A @ B| < rank * 2**40 <= 2**48
#: converts to binary64 exactly
LEVEL_LIMIT = (1 << 20) - 1
#: the decoder's work is rank x m x n multiply-adds: at most 256 per element and 2**32
#: in all, so a hostile header cannot make a decode run for minutes
MAX_RANK = 256
MAX_WORK = 1 << 32
#: the encoder searches matrices up to this size (an SVD of a larger one costs seconds)
MAX_SEARCH_ELEMENTS = 1 << 22


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """(rows, columns) a tensor of ``shape`` is factored as: dim 0 by the product of the rest."""
    if len(shape) < 2:
        raise CodecError("lowrank: needs a tensor of two or more dimensions")
    return int(shape[0]), int(math.prod(shape[1:]))


@register
@dataclass(frozen=True)
class LowRank(ArrayToArray):
    """Levels of the factors A (m x rank) then B (rank x n), row-major; decoded ``(A @ B) * scale``."""

    codec_id = 0x0015
    name = "lowrank"
    rank: int = 1
    #: the reconstruction multiplier: the square of the factors' quantization step
    scale: float = 1e-6
    #: the factors' quantization step (the encoder's; the decoder needs only ``scale``)
    step: float = field(default=1e-3, metadata=ENCODER_ONLY)

    def __post_init__(self) -> None:
        if not 1 <= self.rank <= MAX_RANK:
            raise ValueError(f"rank must lie in [1, {MAX_RANK}]")
        check_step(self.scale)
        check_step(self.step)

    def encoded_spec(self, spec: ArraySpec) -> ArraySpec:
        m, n = matrix_shape(spec.shape)
        if self.rank > min(m, n):
            raise CodecError(f"lowrank: rank {self.rank} exceeds the matrix's {min(m, n)}")
        return ArraySpec((self.rank * (m + n),), "int32")

    def encode(self, values: np.ndarray, spec: ArraySpec) -> tuple[np.ndarray, LowRank]:
        m, n = matrix_shape(spec.shape)
        a, b = balanced_factors(np.asarray(values, dtype=np.float64).reshape(m, n), self.rank)
        return factor_levels(a, b, self.step), LowRank(self.rank, self.step * self.step, self.step)

    def decode(self, encoded: np.ndarray, spec: ArraySpec) -> np.ndarray:
        if not dtypes.is_float(spec.dtype):
            raise CodecError(f"lowrank: cannot reconstruct {spec.dtype}")
        m, n = matrix_shape(spec.shape)
        if self.rank > min(m, n):
            raise CodecError(f"lowrank: rank {self.rank} exceeds the matrix's {min(m, n)}")
        if self.rank * m * n > MAX_WORK:
            raise CodecError("lowrank: rank x rows x columns exceeds 2**32")
        levels = np.asarray(encoded, dtype=np.int64).reshape(-1)
        if levels.size != self.rank * (m + n):
            raise CodecError("lowrank: factor sizes do not match the rank and shape")
        if levels.size and int(np.abs(levels).max()) > LEVEL_LIMIT:
            raise CodecError("lowrank: factor level outside +-(2**20 - 1)")
        product = integer_product(levels[: m * self.rank].reshape(m, self.rank), levels[m * self.rank :].reshape(self.rank, n))
        return dtypes.from_float64((product * self.scale).reshape(spec.shape), spec.dtype)


def factor_levels(a: np.ndarray, b: np.ndarray, step: float) -> np.ndarray:
    """The stage's symbols: nearest levels of A then B (row-major), as int32."""
    qa, qb = np.rint(a / step), np.rint(b / step)
    if max(float(np.abs(qa).max(initial=0)), float(np.abs(qb).max(initial=0))) > LEVEL_LIMIT:
        raise CodecError("lowrank: step too small, factor levels overflow")
    return np.concatenate([qa.reshape(-1), qb.reshape(-1)]).astype(np.int32)


def integer_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` of integer matrices, exactly, as binary64.

    Every product and every partial sum is an integer below ``rank * 2**40 <= 2**48``, so
    binary64 holds each one exactly: no rounding happens in any order of summation, with
    or without FMA, on any number of BLAS threads. The result is the exact integer
    product. (einsum, not ``@``: BLAS wakes its thread pool per call, which costs more
    than the arithmetic on the matrices of a model update; numpy's integer matmul is slower
    still.)
    """
    return np.einsum("ik,kj->ij", a.astype(np.float64), b.astype(np.float64))


def balanced_factors(matrix: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """The best rank-``rank`` approximation as A (m x r) @ B (r x n) with ``sqrt(s)`` on both
    sides, so both factors' entries have the same scale and share one step."""
    u, s, vt = _checked_svd(matrix)
    root = np.sqrt(s[:rank])
    return u[:, :rank] * root, root[:, None] * vt[:rank]


# ----------------------------------------------------------------------------- encoder search


@dataclass
class LowRankChoice:
    payload: bytes
    stages: list[Stage]
    squared_error: float


def best_lowrank(values: np.ndarray, spec: ArraySpec, max_squared_error: float, tails: tuple) -> LowRankChoice | None:  # type: ignore[type-arg]
    """The smallest ``lowrank`` coding of ``values`` whose decoded squared error is at most
    ``max_squared_error``, over a few ranks and the largest step each allows; None when no
    rank can pay (the truncation alone costs the budget, or factors are not smaller).

    Encoder-side search: SVD and float estimates choose candidates, but every candidate's
    error is measured on the real decode and its size on the real entropy-coded bytes.
    """
    from . import pipeline as pipelines

    m, n = matrix_shape(spec.shape)
    if min(m, n) < 8 or m * n > MAX_SEARCH_ELEMENTS or max_squared_error <= 0:
        return None
    x = np.asarray(values, dtype=np.float64).reshape(m, n)
    if not np.isfinite(x).all():
        raise CodecError("lowrank: input holds NaN or infinity")
    limit = min(MAX_RANK, (m * n) // (2 * (m + n)), MAX_WORK // (m * n))  # factors at most half the elements
    if limit < 1 or _truncation_exceeds(x, limit, 0.9 * max_squared_error):
        return None
    u, s, vt = _svd(values, x)
    tail_energy = np.concatenate([np.cumsum((s**2)[::-1])[::-1], [0.0]])  # tail_energy[r] = sum of s[r:]**2
    ranks = [r for r in range(1, limit + 1) if tail_energy[r] <= 0.9 * max_squared_error]
    if not ranks:
        return None
    first = ranks[0]
    candidates = sorted({min(limit, max(first, round(first * f))) for f in (1.0, 1.2, 1.45, 1.8)})
    best: LowRankChoice | None = None
    for rank in candidates:
        root = np.sqrt(s[:rank])
        a, b = u[:, :rank] * root, root[:, None] * vt[:rank]
        step = _largest_step(x, a, b, max_squared_error, float(tail_energy[rank]))
        for _ in range(8):  # the real decode decides; shrink the step if rounding to T overshoots
            try:
                levels = factor_levels(a, b, step)
                resolved = LowRank(rank, step * step, step)
            except (CodecError, ValueError):
                break
            decoded = resolved.decode(levels, spec)
            err = float(np.sum((dtypes.to_float64(decoded, spec.dtype).reshape(m, n) - x) ** 2))
            if err <= max_squared_error:
                payload, tail = pipelines.smallest_tail(tails, levels, resolved.encoded_spec(spec), "lowrank")
                if best is not None and len(payload) >= len(best.payload):
                    return best  # bytes grow with the rank from here on
                best = LowRankChoice(payload, [resolved, *tail], err)
                break
            step *= 0.97
    return best


#: matrices from this size on are first screened by a random sketch (the Gram test below
#: costs over a second on a 2048 x 2048 layer)
SKETCH_ELEMENTS = 1 << 20
SKETCH_OVERSAMPLING = 16


def _truncation_exceeds(x: np.ndarray, rank: int, budget: float) -> bool:
    """Whether the best rank-``rank`` approximation of ``x`` already misses ``budget`` (squared
    error), judged from the eigenvalues of the smaller Gram matrix: a few times cheaper than
    the SVD, which most dense layers (full rank at the target error) would otherwise pay for
    nothing. The eigenvalues' rounding is allowed for, so a borderline case goes on to the SVD.

    A large matrix is first screened by a randomized range finder: the energy outside a
    sketched subspace of ``rank`` + 16 dimensions is at least the energy beyond the top
    ``rank + 16`` singular values and, when the spectrum decays, not much more. When it
    exceeds twice the budget the layer is ruled out at a tenth of the Gram test's cost (a
    noise-like full-rank update, the usual case); otherwise the exact test decides."""
    if x.size >= SKETCH_ELEMENTS and _sketched_tail(x, rank + SKETCH_OVERSAMPLING) > 2.0 * budget:
        return True
    gram = x.T @ x if x.shape[0] >= x.shape[1] else x @ x.T
    try:
        energy = np.clip(np.linalg.eigvalsh(gram), 0.0, None)  # ascending
    except np.linalg.LinAlgError:  # (finite input, e.g. an overflowing Gram matrix): let the SVD judge
        return False
    total = float(energy.sum())
    tail = float(energy[: max(energy.size - rank, 0)].sum())  # energy beyond the top ``rank``
    return tail - 1e-9 * total > budget


def _sketched_tail(x: np.ndarray, width: int) -> float:
    """Energy of ``x`` outside the span of ``x`` applied to ``width`` Gaussian vectors (fixed
    seed: the encoder's choices do not depend on chance)."""
    tall = x if x.shape[0] >= x.shape[1] else x.T
    if width >= tall.shape[1]:
        return 0.0
    omega = np.random.default_rng(0).standard_normal((tall.shape[1], width))
    basis, _ = np.linalg.qr(tall @ omega)
    captured = basis.T @ tall
    total = float(np.einsum("ij,ij->", tall, tall))
    return max(0.0, total - float(np.einsum("ij,ij->", captured, captured)))


def _largest_step(x: np.ndarray, a: np.ndarray, b: np.ndarray, budget: float, truncation: float) -> float:
    """Largest factor step whose reconstruction error stays within ``budget``, to ~0.4%.

    Rounding noise of variance step**2/12 on A and B adds about
    ``step**2/12 * (m |B|^2 + n |A|^2)`` to the truncation error. The search starts from
    that estimate and corrects it on measured errors, fitting ``error = truncation +
    c * step**2`` through the last one (2-4 products instead of a bisection's 11: each
    product costs as much as the matrix); a bisection between the best passing and the
    smallest failing step finishes when the model misleads.
    """
    m, n = x.shape
    spread = m * float(np.sum(b * b)) + n * float(np.sum(a * a))
    room = max(budget - truncation, budget * 1e-6)
    step = math.sqrt(12.0 * room / max(spread, 1e-300))
    passing, failing = 0.0, math.inf
    for _ in range(12):
        err = _error(x, a, b, step)
        if err <= budget:
            passing = max(passing, step)
        else:
            failing = min(failing, step)
        if failing < math.inf and passing > 0 and failing <= 1.004 * passing:
            break
        noise = err - truncation
        proposal = step * math.sqrt(0.999 * room / noise) if noise > 0 else 2 * step
        if passing > 0 and failing < math.inf and not passing < proposal < failing:
            proposal = math.sqrt(passing * failing)
        elif passing == 0 and failing < math.inf and proposal >= failing:
            proposal = failing / 2
        if passing > 0 and abs(proposal / passing - 1) < 0.002:
            break  # the model lands on a step already known to pass
        step = proposal
    return passing if passing > 0 else 1e-12


def _error(x: np.ndarray, a: np.ndarray, b: np.ndarray, step: float) -> float:
    r = x - integer_product(np.rint(a / step), np.rint(b / step)) * (step * step)
    return float(np.einsum("ij,ij->", r, r))


def _checked_svd(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not np.isfinite(matrix).all():
        raise CodecError("lowrank: input holds NaN or infinity")
    try:
        return np.linalg.svd(matrix, full_matrices=False)  # type: ignore[no-any-return]
    except np.linalg.LinAlgError as exc:
        raise CodecError(f"lowrank: {exc}") from None


_SVDS: dict[int, tuple[weakref.ref, tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}  # type: ignore[type-arg]


def _svd(values: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SVD of ``x``, remembered (weakly) for the array ``values`` it came from: rate control
    encodes the same update at a dozen trial steps, and the SVD would dominate each."""
    hit = _SVDS.get(id(values))
    if hit is not None and hit[0]() is values:
        return hit[1]
    result = _checked_svd(x)
    if len(_SVDS) >= 16:
        _SVDS.clear()
    with contextlib.suppress(TypeError):  # an object without weak references: not remembered
        _SVDS[id(values)] = (weakref.ref(values), result)
    return result  # type: ignore[no-any-return]
