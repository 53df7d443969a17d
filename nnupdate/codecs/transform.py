"""Kernel transform of the step quantizers: code a convolution's kernels as transform coefficients.

Why: a fine-tuning or client update of a convolution is spatially smooth (its gradient
correlates input activations with output gradients at neighbouring pixels), so the taps
of one kernel are strongly correlated: on a ResNet-56 fine-tuning diff, 82% of the
energy of the 3x3 kernels lies along one direction (all taps alike). Coding the taps one
by one spends bits on that redundancy; an orthonormal transform of each kernel (a 2-D
DCT) compacts it into few coefficients at the same squared error: 4-5% fewer bits at
relative error 0.05-0.3 on that workload.

The transform is an option of ``rdoq`` and ``dq`` (spec/CONTEXT.md §6): the quantizer's
levels are transform coefficients, and the decoder forms each tap as an exact integer sum
``z = sum_k B[k, j] * index_k`` (|z| < 2^53, so any order of summation gives the same
integer) before the one binary64 multiply by ``step * 2^-shift`` that every step
quantizer does. The basis ``B`` is either the integer DCT of the kernel's shape (param
``dct``: two bytes of header; the integer tables are part of the spec, so no decoder ever
evaluates a cosine, whose libm result differs across platforms) or any K x K int16
matrix sent in the header (param ``basis``, e.g. the kernels' own KLT).

The levels are laid out coefficient-major within each row, ``(rows, K, L / K)``: the
``ctx`` coder's column contexts then see one coefficient of every input channel side by
side, and each coefficient's scale apart (measured: 1% smaller than tap-major).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from .. import dtypes
from ..errors import CodecError
from ..format import ParamValue
from .context import layout

#: a kernel of at most this many taps (an 8 x 8 kernel) may be transformed
MAX_TAPS = 64
#: an explicit basis holds int16 values other than -32768
BASIS_LIMIT = (1 << 15) - 1
MAX_SHIFT = 30
#: the DCT tables: round(2^DCT_SHIFT * orthonormal DCT-II), axes of 1 to DCT_MAX_SIZE taps,
#: at most DCT_MAX_AXES axes (a Kronecker product of two tables stays below 2^16)
DCT_SHIFT = 8
DCT_MAX_SIZE = 8
DCT_MAX_AXES = 2
#: |index| < 2^31, |B| < 2^16 and at most 64 taps: |z| < 2^53, exact in binary64
INDEX_LIMIT = (1 << 31) - 1


def _dct_rows(n: int) -> tuple[tuple[int, ...], ...]:
    k = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    d = np.sqrt(np.where(k == 0, 1.0, 2.0) / n) * np.cos(np.pi * (2 * j + 1) * k / (2 * n))
    return tuple(tuple(int(v) for v in row) for row in np.rint(d * (1 << DCT_SHIFT)))


#: DCT_TABLES[n][k][j] = round(256 * c_k * cos(pi * (2j + 1) * k / (2n))), c_0 = sqrt(1/n),
#: c_k = sqrt(2/n): spec/CONTEXT.md §6 lists the same integers (every entry lies at least
#: 0.009 from a rounding tie, so any libm gives these values; tests check them)
DCT_TABLES: dict[int, tuple[tuple[int, ...], ...]] = {
    1: ((256,),),
    2: ((181, 181), (181, -181)),
    3: ((148, 148, 148), (181, 0, -181), (105, -209, 105)),
    4: ((128, 128, 128, 128), (167, 69, -69, -167), (128, -128, -128, 128), (69, -167, 167, -69)),
    5: (
        (114, 114, 114, 114, 114),
        (154, 95, 0, -95, -154),
        (131, -50, -162, -50, 131),
        (95, -154, 0, 154, -95),
        (50, -131, 162, -131, 50),
    ),
    6: (
        (105, 105, 105, 105, 105, 105),
        (143, 105, 38, -38, -105, -143),
        (128, 0, -128, -128, 0, 128),
        (105, -105, -105, 105, 105, -105),
        (74, -148, 74, 74, -148, 74),
        (38, -105, 143, -143, 105, -38),
    ),
    7: (
        (97, 97, 97, 97, 97, 97, 97),
        (133, 107, 59, 0, -59, -107, -133),
        (123, 30, -85, -137, -85, 30, 123),
        (107, -59, -133, 0, 133, 59, -107),
        (85, -123, -30, 137, -30, -123, 85),
        (59, -133, 107, 0, -107, 133, -59),
        (30, -85, 123, -137, 123, -85, 30),
    ),
    8: (
        (91, 91, 91, 91, 91, 91, 91, 91),
        (126, 106, 71, 25, -25, -71, -106, -126),
        (118, 49, -49, -118, -118, -49, 49, 118),
        (106, -25, -126, -71, 71, 126, 25, -106),
        (91, -91, -91, 91, 91, -91, -91, 91),
        (71, -126, 25, 106, -106, -25, 126, -71),
        (49, -118, 118, -49, -49, 118, -118, 49),
        (25, -71, 106, -126, 126, -106, 71, -25),
    ),
}


@dataclass(frozen=True)
class KernelTransform:
    """A K x K integer basis (row k = coefficient k) and the exponent of its scale."""

    matrix: np.ndarray
    shift: int

    @property
    def taps(self) -> int:
        return int(self.matrix.shape[0])

    @functools.cached_property
    def inverse(self) -> np.ndarray:
        """``matrix^-1`` in binary64 (encoder side), computed once per basis: the instances
        are cached, and every trial encode of rate control transforms with them."""
        try:
            return np.linalg.inv(self.matrix.astype(np.float64))
        except np.linalg.LinAlgError:
            raise CodecError("kernel transform: basis is singular") from None


@functools.lru_cache(maxsize=64)
def _from_dct(dims: bytes) -> KernelTransform:
    if not 1 <= len(dims) <= DCT_MAX_AXES or not all(1 <= n <= DCT_MAX_SIZE for n in dims):
        raise CodecError(f"kernel transform: dct needs 1 to {DCT_MAX_AXES} axes of 1 to {DCT_MAX_SIZE} taps")
    matrix = np.ones((1, 1), dtype=np.int64)
    for n in dims:
        matrix = np.kron(matrix, np.array(DCT_TABLES[n], dtype=np.int64))
    if matrix.shape[0] < 2:
        raise CodecError("kernel transform: a kernel of one tap has nothing to transform")
    matrix.setflags(write=False)
    return KernelTransform(matrix, DCT_SHIFT * len(dims))


@functools.lru_cache(maxsize=64)
def _from_basis(basis: bytes, shift: int) -> KernelTransform:
    if len(basis) % 2:
        raise CodecError("kernel transform: basis has an odd number of bytes")
    values = np.frombuffer(basis, dtype="<i2").astype(np.int64)
    taps = math.isqrt(values.size)
    if taps * taps != values.size or not 2 <= taps <= MAX_TAPS:
        raise CodecError(f"kernel transform: basis must hold K*K int16 values with 2 <= K <= {MAX_TAPS}")
    if int(np.abs(values).max()) > BASIS_LIMIT:
        raise CodecError("kernel transform: basis entry -32768 is not allowed")
    matrix = values.reshape(taps, taps)
    matrix.setflags(write=False)
    return KernelTransform(matrix, shift)


def kernel_transform(basis: bytes = b"", dct: bytes = b"", shift: int = 0) -> KernelTransform | None:
    """The transform a quantizer's parameters describe, or None (refusing malformed ones)."""
    if not 0 <= shift <= MAX_SHIFT:
        raise CodecError(f"kernel transform: shift must lie in [0, {MAX_SHIFT}]")
    if basis and dct:
        raise CodecError("kernel transform: basis and dct are exclusive")
    if dct:
        if shift:
            raise CodecError("kernel transform: shift is implied by dct")
        return _from_dct(dct)
    if basis:
        return _from_basis(basis, shift)
    if shift:
        raise CodecError("kernel transform: shift without a basis")
    return None


def check_params(basis: bytes, dct: bytes, shift: int) -> None:
    """:func:`kernel_transform` for a stage constructor (ValueError -> FormatError when read)."""
    try:
        kernel_transform(basis, dct, shift)
    except CodecError as exc:
        raise ValueError(str(exc)) from None


def stored_params(step: float, basis: bytes, dct: bytes, shift: int) -> dict[str, ParamValue]:
    """A step quantizer's stored parameters: the transform's only when one is set."""
    params: dict[str, ParamValue] = {"step": step}
    if dct:
        params["dct"] = dct
    elif basis:
        params["basis"] = basis
        params["shift"] = shift
    return params


class TransformedQuantizer:
    """Mixin of the step quantizers that take a kernel transform (``rdoq``, ``dq``): their
    ``dct``/``basis``/``shift`` fields are validated, stored only when set, and resolved."""

    step: float
    dct: bytes
    basis: bytes
    shift: int

    def check_transform(self) -> None:
        check_params(self.basis, self.dct, self.shift)

    def params(self) -> dict[str, ParamValue]:
        return stored_params(self.step, self.basis, self.dct, self.shift)

    @property
    def kernel_transform(self) -> KernelTransform | None:
        return kernel_transform(self.basis, self.dct, self.shift)

    def describe(self) -> str:
        """``rdoq(step=0.001, dct=3x3)``, ``dq(step=0.001, basis=9x9, shift=8)``."""
        name = getattr(self, "name", type(self).__name__)
        shown = [f"step={self.step:.6g}"]
        if self.dct:
            shown.append("dct=" + "x".join(str(n) for n in self.dct))
        elif self.basis:
            taps = math.isqrt(len(self.basis) // 2)
            shown.append(f"basis={taps}x{taps}, shift={self.shift}")
        return f"{name}({', '.join(shown)})"


def coefficient_shape(shape: tuple[int, ...], taps: int) -> tuple[int, int, int]:
    """``(rows, K, L / K)``: the level layout of a tensor of ``shape`` under a K-tap transform."""
    rows, rowlen = layout(shape)
    if rowlen % taps:
        raise CodecError(f"kernel transform: row length {rowlen} is not a multiple of {taps} taps")
    return rows, taps, rowlen // taps


def level_shape(shape: tuple[int, ...], transform: KernelTransform | None) -> tuple[int, ...]:
    """Shape of a quantizer's levels: ``shape`` itself, or the coefficient shape."""
    return shape if transform is None else coefficient_shape(shape, transform.taps)


def dct_param(kernel: tuple[int, ...]) -> bytes:
    """The ``dct`` parameter for kernels of spatial shape ``kernel``, or b"" when none applies."""
    if not 1 <= len(kernel) <= DCT_MAX_AXES or not all(1 <= n <= DCT_MAX_SIZE for n in kernel) or math.prod(kernel) < 2:
        return b""
    return bytes(kernel)


def klt_basis(values: np.ndarray, shape: tuple[int, ...], taps: int, shift: int = DCT_SHIFT) -> bytes:
    """Stored form of the Karhunen-Loeve transform of this tensor's kernels: the eigenvectors
    of their K x K second-moment matrix, largest first, scaled by ``2^shift`` and rounded."""
    rows, _, channels = coefficient_shape(shape, taps)
    x = np.asarray(values, dtype=np.float64).reshape(rows * channels, taps)
    _, vectors = np.linalg.eigh(np.einsum("nj,nk->jk", x, x))
    matrix = vectors[:, ::-1].T  # row k = k-th principal direction
    # a sign per row is free: make each row's largest entry positive, so equal inputs give equal bytes
    signs = np.sign(matrix[np.arange(taps), np.abs(matrix).argmax(axis=1)])
    return np.rint(matrix * signs[:, None] * (1 << shift)).astype("<i2").tobytes()


#: use a transform when its estimated cost ratio (:func:`estimated_cost_ratio`) is at most this:
#: the context coder exploits part of the taps' correlation itself, so the real ratio is
#: higher than the order-0 estimate (calibrated on mixtures of smooth and iid Laplacian
#: kernels and on ResNet-56: break-even near 0.965)
USE_BELOW = 0.96


def estimated_cost_ratio(values: np.ndarray, shape: tuple[int, ...], transform: KernelTransform, step: float) -> float:
    """Order-0 entropy of the nearest levels at ``step`` as coefficients over as taps, each side
    with one histogram per coefficient (per tap): below 1 when the transform compacts the
    kernels' energy, above 1 when the taps are uncorrelated and the transform only turns
    sparse (Laplacian-like) values into denser (Gaussian-like) ones."""
    if not (step > 0 and math.isfinite(step)):
        return 1.0
    taps = transform.taps
    kernels = np.asarray(values, dtype=np.float64).reshape(-1, taps)
    if kernels.shape[0] > ESTIMATE_KERNELS:  # an even sample: the ratio, not the bits, decides
        kernels = kernels[:: -(-kernels.shape[0] // ESTIMATE_KERNELS)]
    coefficients = kernels @ transform.inverse * math.ldexp(1.0, transform.shift)
    coded = sum(_entropy_bits(np.rint(coefficients[:, k] / step)) for k in range(taps))
    plain = sum(_entropy_bits(np.rint(kernels[:, j] / step)) for j in range(taps))
    return coded / plain if plain > 0 else 1.0


#: kernels :func:`estimated_cost_ratio` looks at, at most (an even stride through the rest)
ESTIMATE_KERNELS = 8192


def _entropy_bits(levels: np.ndarray) -> float:
    flat = levels.reshape(-1)
    if flat.size == 0:
        return 0.0
    lo = float(flat.min())
    if float(flat.max()) - lo < 1 << 20:
        counts = np.bincount((flat - lo).astype(np.int64))
        counts = counts[counts > 0]
    else:  # a huge range: fall back to sorting
        counts = np.unique(flat, return_counts=True)[1]
    p = counts / flat.size
    return float(-(counts * np.log2(p)).sum())


def forward(values: np.ndarray, shape: tuple[int, ...], transform: KernelTransform) -> np.ndarray:
    """Coefficients (float64, coefficient shape) in units of the taps: quantizing them with
    step ``s`` and decoding with ``s * 2^-shift`` reproduces ``values`` up to the
    quantization error (through the exact inverse of the integer basis)."""
    rows, taps, channels = coefficient_shape(shape, transform.taps)
    x = np.asarray(values, dtype=np.float64).reshape(rows, channels, taps)
    return np.ascontiguousarray(np.einsum("rcj,jk->rkc", x, transform.inverse) * math.ldexp(1.0, transform.shift))


def inverse(index: np.ndarray, shape: tuple[int, ...], transform: KernelTransform, step: float, dtype: str, stage: str) -> np.ndarray:
    """Taps ``RN_T(RN64(z * (step * 2^-shift)))``, ``z`` the exact integer sum over the
    coefficients (``index`` in the coefficient shape); the result has ``shape``."""
    from ._transform_kernel import inverse_into

    if not dtypes.is_float(dtype):
        raise CodecError(f"{stage}: cannot reconstruct {dtype}")
    rows, taps, channels = coefficient_shape(shape, transform.taps)
    flat = np.ascontiguousarray(index, dtype=np.int64).reshape(-1)
    if flat.size != rows * taps * channels:
        raise CodecError(f"{stage}: {flat.size} levels for a tensor of {rows * taps * channels} elements")
    if flat.size and (int(flat.max()) > INDEX_LIMIT or int(flat.min()) < -INDEX_LIMIT):
        raise CodecError(f"{stage}: level out of range for the kernel transform")
    scale = step * math.ldexp(1.0, -transform.shift)
    out = np.empty(rows * taps * channels, dtype=np.float32 if dtype == "float32" else np.float64)
    inverse_into(flat, taps, channels, transform.matrix, scale, out)
    if dtype == "float32":
        return out.reshape(shape)
    return dtypes.from_float64(out.reshape(shape), dtype)
