"""Vectors for helper C's stages (spec/CODECS.md): m22 (0x0011), qsgd (0x0012),
topk (0x0013), sbc (0x0014), elias (0x0021), golomb (0x0022), bitpack (0x0023), and
the named codecs rd / m22 / qsgd / topk / sbc on a small model delta.

Lossless entropy-stage vectors state their expected output independently (the input
integers); quantizer vectors carry a base so the applied result is checked too.
Negative vectors each break exactly one rule of CODECS.md.
"""

from __future__ import annotations

import numpy as np

import nnupdate
from nnupdate.codecs.base import ArraySpec, Stage
from nnupdate.codecs.bitpack import BitPack
from nnupdate.codecs.elias import EliasGammaRLE
from nnupdate.codecs.golomb import GolombRice
from nnupdate.codecs.lowrank import LowRank
from nnupdate.codecs.m22 import M22
from nnupdate.codecs.qsgd import QSGD
from nnupdate.codecs.rans import Rans
from nnupdate.codecs.sbc import SBC
from nnupdate.codecs.topk import TopK
from nnupdate.codecs.uniform import Uniform
from nnupdate.format import Combine, TensorRecord, UpdateKind

from . import Case, build, encode_tensor, reframe, rng

# ----------------------------------------------------------------------------- models


def _base() -> dict[str, np.ndarray]:
    g = rng(31)
    return {
        "conv.weight": g.standard_normal((16, 8, 3, 3)).astype(np.float32),
        "conv.bias": g.standard_normal(16).astype(np.float32),
        "fc.weight": g.standard_normal((10, 256)).astype(np.float32),
        "fc.half": g.standard_normal((4, 64)).astype(np.float16),
    }


def _new() -> dict[str, np.ndarray]:
    g = rng(32)
    return {k: (v + 0.01 * g.laplace(size=v.shape)).astype(v.dtype) for k, v in _base().items()}


def _m22_update() -> bytes:
    """The model delta through m22 (16 levels, M=2, pinned centers per tensor) with rans;
    the small bias through plain uniform, as the named codec does below min_size."""
    base, new = _base(), _new()
    records = []
    for name in base:
        delta = new[name].astype(np.float64) - base[name].astype(np.float64)
        dtype = str(base[name].dtype)
        if delta.size < 64:
            stages: list[Stage] = [Uniform(0.002), Rans()]
        else:
            scale = float(np.float32(np.abs(delta).mean()))  # any number: the centers are explicit
            stages = [_m22(_M22_16_M2, 2.0, scale / 4), GolombRice() if name == "fc.half" else Rans()]
        records.append(encode_tensor(name, delta, stages, dtype=dtype, combine=Combine.ADD))
    return build(records, base_fingerprint=nnupdate.fingerprint(base, list(base)))


def _codec(spec: str) -> bytes:
    return nnupdate.diff(_base(), _new(), metadata={"codec": spec}).encode(spec)


# ----------------------------------------------------------------------------- integer symbol streams


def _symbol_arrays() -> dict[str, np.ndarray]:
    g = rng(33)
    sparse = np.zeros(5000, np.int32)
    sparse[g.choice(5000, 60, replace=False)] = g.integers(-50, 50, 60)
    sparse[sparse == 0] = 0
    return {
        "empty": np.zeros(0, np.int32),
        "zeros": np.zeros((7, 9), np.int32),
        "one": np.array([-1], np.int32),
        "extremes": np.array([2**31 - 1, 0, -(2**31 - 1), 0, 0], np.int32),
        "laplace": np.rint(g.laplace(0, 3, 2000)).astype(np.int16),
        "sparse": sparse,
        "binary": (g.random(3000) < 0.02).astype(np.int8),
        "trailing-zeros": np.array([0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], np.int32),
    }


def _lossless(stage: Stage, extra: dict[str, np.ndarray] | None = None) -> tuple[bytes, dict[str, np.ndarray]]:
    arrays = {**_symbol_arrays(), **(extra or {})}
    records = [encode_tensor(name, a, [stage]) for name, a in arrays.items()]
    return build(records, kind=UpdateKind.FULL), arrays


def _wide() -> dict[str, np.ndarray]:
    return {"wide-int64": np.array([-(2**62) + 1, 2**62 - 1, 0, 12345], np.int64), "uint8": np.arange(256, dtype=np.uint8)}


# ----------------------------------------------------------------------------- pinned quantizer stages


# M22 designs (GenNorm beta=0.8, alpha=1, truncated at 12) rounded to 4 decimals and
# written out, so the vectors do not depend on the platform's exp/log in the encoder's
# fit and Lloyd iteration (the decoder only reads centers).
_M22_9_M2 = [-9.8864, -6.937, -4.576, -2.4605, 0.0, 2.4605, 4.576, 6.937, 9.8864]
_M22_4_M0 = [-4.2618, -0.8621, 0.8621, 4.2618]
_M22_16_M2 = [-10.8347, -8.9627, -7.3847, -6.006, -4.7634, -3.6072, -2.4846, -1.3008,
              1.3008, 2.4846, 3.6072, 4.7634, 6.006, 7.3847, 8.9627, 10.8347]


def _m22(centers: list[float], m: float, scale: float, mu: float = 0.0) -> M22:
    c = mu + scale * np.array(centers)
    return M22.with_table(len(centers), m, mu, scale, 0.8, c, 0.5 * (c[1:] + c[:-1]))


def _pinned_quantizers() -> bytes:
    g = rng(34)
    x = (0.01 * g.laplace(size=(32, 40))).astype(np.float32)
    records = [
        encode_tensor("m22-rans", x, [_m22(_M22_9_M2, 2.0, 0.004), Rans()], combine=Combine.REPLACE),
        encode_tensor("m22-even-bitpack", x, [_m22(_M22_4_M0, 0.0, 0.01, 1e-4), BitPack()], combine=Combine.REPLACE),
        encode_tensor("qsgd-elias", x, [QSGD(8, 100, seed=3), EliasGammaRLE()], combine=Combine.REPLACE),
        encode_tensor("qsgd-one-bucket", x[:3], [QSGD(2, 0, seed=4), Rans()], combine=Combine.REPLACE),
        encode_tensor("topk-golomb", x, [TopK(64, 0.0, 6), GolombRice()], combine=Combine.REPLACE),
        encode_tensor("sbc-golomb", x, [SBC(0.03), GolombRice()], combine=Combine.REPLACE),
        encode_tensor("sbc-f16", x.astype(np.float16), [SBC(0.1), Rans()], combine=Combine.REPLACE),
    ]
    return build(records, kind=UpdateKind.FULL)


# ----------------------------------------------------------------------------- negatives


def _record(name: str, dtype: str, shape: tuple[int, ...], stages: list[Stage], payload: bytes) -> bytes:
    rec = TensorRecord(name, dtype, shape, Combine.REPLACE, nnupdate.Role.UNKNOWN, [s.record() for s in stages], payload)
    return build([rec], kind=UpdateKind.FULL)


def _payload(stage: Stage, symbols: np.ndarray) -> bytes:
    data, _ = stage.encode(symbols, ArraySpec(symbols.shape, str(symbols.dtype)))  # type: ignore[attr-defined]
    return data


def _neg_m22_index() -> bytes:
    stage = M22.with_table(2, 0.0, 0.0, 1.0, 1.0, np.array([-1.0, 1.0]), np.array([0.0]))
    return _record("w", "float32", (3,), [stage, BitPack()], _payload(BitPack(), np.array([0, -1, 5], np.int16)))


def _neg_m22_unsorted() -> bytes:
    good = _record("w", "float32", (2,), [M22.with_table(2, 0.0, 0.0, 1.0, 1.0, np.array([-1.0, 1.0]), np.array([0.0])), BitPack()],
                   _payload(BitPack(), np.array([0, -1], np.int16)))
    swap = (np.array([-1.0, 1.0], "<f4").tobytes(), np.array([1.0, -1.0], "<f4").tobytes())
    return reframe(good, edit=lambda chunks: [(t, b.replace(*swap) if t == b"TNSR" else b) for t, b in chunks])


def _neg_qsgd_norms() -> bytes:
    stage = QSGD(4, 2, norms=np.array([1.0], "<f4").tobytes())  # 5 values in buckets of 2 need 3 norms
    return _record("w", "float32", (5,), [stage, BitPack()], _payload(BitPack(), np.array([1, 0, -4, 2, 0], np.int32)))


def _neg_topk_count() -> bytes:
    return _record("w", "float32", (4,), [TopK(1, 0.5), BitPack()], _payload(BitPack(), np.array([1, 0, 2, 0], np.int32)))


def _neg_sbc_symbol() -> bytes:
    return _record("w", "float32", (3,), [SBC(0.5, 0.25), BitPack()], _payload(BitPack(), np.array([0, 2, 1], np.int8)))


def _lowrank() -> bytes:
    """lowrank on a rank-3 matrix plus noise (float32, float16 and a 4-D conv-shaped tensor),
    rans- and bitpack-coded factor levels."""
    g = rng(41)
    m = g.standard_normal((12, 3)) @ g.standard_normal((3, 20)) * 0.01 + 1e-4 * g.standard_normal((12, 20))
    conv = g.standard_normal((6, 2)) @ g.standard_normal((2, 18)) * 0.02
    tensors = [
        encode_tensor("fc.f32", m.astype(np.float32), [LowRank(rank=3, step=4e-3), Rans()], combine=Combine.REPLACE),
        encode_tensor("fc.f16", m.astype(np.float16), [LowRank(rank=2, step=1e-2), BitPack()], combine=Combine.REPLACE),
        encode_tensor("conv.f32", conv.reshape(6, 2, 3, 3).astype(np.float32), [LowRank(rank=2, step=5e-3), Rans()],
                      combine=Combine.REPLACE),
    ]
    return build(tensors, kind=UpdateKind.FULL)


def _neg_lowrank_level() -> bytes:
    levels = np.zeros(2 * (3 + 4), dtype=np.int32)
    levels[5] = 1 << 20  # beyond +-(2**20 - 1)
    return _record("w", "float32", (3, 4), [LowRank(rank=2, scale=1e-4), BitPack()], _payload(BitPack(), levels))


def _neg_lowrank_rank() -> bytes:
    levels = np.zeros(4 * (3 + 4), dtype=np.int32)  # rank 4 > min(3, 4)
    return _record("w", "float32", (3, 4), [LowRank(rank=4, scale=1e-4), BitPack()], _payload(BitPack(), levels))


def _neg_elias_trailing() -> bytes:
    return _record("s", "int32", (7,), [EliasGammaRLE()], bytes([0x3E, 0x11, 0x00]))


def _neg_elias_overrun() -> bytes:
    return _record("s", "int32", (2,), [EliasGammaRLE()], bytes([0x3E, 0x11]))  # codes 7 elements


def _neg_golomb_count() -> bytes:
    return _record("s", "int32", (2,), [GolombRice()], bytes([3, 0, 0, 2, 0xFF]))  # K = 3 > N = 2


def _neg_bitpack_padding() -> bytes:
    return _record("s", "int8", (3,), [BitPack()], bytes([0, 2, 0b1100_0000]))  # 3 x 2 bits, pad bits set


def _elias_spec_example() -> bytes:
    return _record("s", "int32", (7,), [EliasGammaRLE()], bytes([0x3E, 0x11]))


_lossless_elias = lambda: _lossless(EliasGammaRLE())  # noqa: E731
_lossless_golomb = lambda: _lossless(GolombRice(), _wide())  # noqa: E731
_lossless_bitpack = lambda: _lossless(BitPack(), _wide())  # noqa: E731

# fmt: off
CASES = [
    Case("codecs-elias", "elias (tfc run_length_gamma) on int8/16/32 streams: empty, all-zero, extremes +-(2**31-1), "
         "sparse, trailing zero run", lambda: _lossless_elias()[0], expected=lambda: _lossless_elias()[1]),
    Case("codecs-elias-spec-example", "the CODECS.md example: bytes 3E 11 decode to [0,0,1,-2,0,0,0]",
         _elias_spec_example, expected=lambda: {"s": np.array([0, 0, 1, -2, 0, 0, 0], np.int32)}),
    Case("codecs-golomb", "golomb: constant mode (binary), value mode, empty, all-zero, int64 +-2**62, uint8",
         lambda: _lossless_golomb()[0], expected=lambda: _lossless_golomb()[1]),
    Case("codecs-bitpack", "bitpack: widths 0..63, negative offsets, empty, uint8", lambda: _lossless_bitpack()[0],
         expected=lambda: _lossless_bitpack()[1]),
    Case("codecs-quantizers-pinned", "m22 (odd L, M=2; even L), qsgd (buckets; one bucket), topk, sbc (f32, f16) "
         "with explicit entropy stages", _pinned_quantizers),
    Case("codecs-rd-elias", "codec rd: global step by max_rel_error, stochastic rounding, elias",
         lambda: _codec("rd:max_rel_error=0.1"), base=_base),
    Case("codecs-rd-rans", "codec rd with a server-set step and rans", lambda: _codec("rd:step=0.004,coder=rans"), base=_base),
    Case("codecs-m22", "m22 ADD deltas, 16 levels with M=2 centers, rans/golomb; a small bias through uniform",
         _m22_update, base=_base),
    Case("codecs-qsgd", "codec qsgd: s=4, buckets of 512, elias", lambda: _codec("qsgd"), base=_base),
    Case("codecs-topk", "codec topk: 5% kept, 8-bit values, auto coder", lambda: _codec("topk:fraction=0.05"), base=_base),
    Case("codecs-sbc", "codec sbc: 2% of the dominant sign, golomb gaps", lambda: _codec("sbc:fraction=0.02"), base=_base),
    Case("codecs-lowrank", "lowrank (0x0015): rank-3 and rank-2 factors of a 12x20 matrix (float32 via rans, float16 "
         "via bitpack), rank 2 of a 6x2x3x3 tensor as a 6x18 matrix", _lowrank),
    Case("codecs-neg-lowrank-level", "lowrank factor level 2**20", _neg_lowrank_level, error="CodecError"),
    Case("codecs-neg-lowrank-rank", "lowrank rank 4 on a 3x4 matrix", _neg_lowrank_rank, error="CodecError"),
    Case("codecs-neg-m22-index", "m22 symbol outside [-floor(L/2), L-1-floor(L/2)]", _neg_m22_index, error="CodecError"),
    Case("codecs-neg-m22-unsorted", "m22 centers not sorted", _neg_m22_unsorted, error="FormatError"),
    Case("codecs-neg-qsgd-norms", "qsgd with fewer norms than buckets", _neg_qsgd_norms, error="CodecError"),
    Case("codecs-neg-topk-count", "topk with more nonzero symbols than k", _neg_topk_count, error="CodecError"),
    Case("codecs-neg-sbc-symbol", "sbc symbol 2", _neg_sbc_symbol, error="CodecError"),
    Case("codecs-neg-elias-trailing", "elias payload with a byte after the padded stream", _neg_elias_trailing, error="CodecError"),
    Case("codecs-neg-elias-overrun", "elias zero run past the end of the array", _neg_elias_overrun, error="CodecError"),
    Case("codecs-neg-golomb-count", "golomb declaring more nonzeros than elements", _neg_golomb_count, error="CodecError"),
    Case("codecs-neg-bitpack-padding", "bitpack with nonzero padding bits", _neg_bitpack_padding, error="CodecError"),
]
# fmt: on
