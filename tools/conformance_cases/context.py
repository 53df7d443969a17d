"""Vectors for spec/CONTEXT.md: the ``ctx`` entropy stage (0x0028), the ``rdoq`` (0x001A)
and ``dq`` (0x001B) quantizers, and the ``ctx`` codec.

Lossless ``ctx`` vectors state their expected output independently (the input levels),
across layouts (1-D, Linear, Conv with empty rows), parameters (ngt, check bits, dq
contexts) and extremes (+-(2**31-1)). Quantizer vectors carry a base so the applied
model is checked too. Each negative vector breaks exactly one rule of CONTEXT.md.
"""

from __future__ import annotations

import numpy as np

import nnupdate
from nnupdate.codecs.base import ArraySpec, Stage
from nnupdate.codecs.context import Context
from nnupdate.codecs.dq import DependentQuantizer
from nnupdate.codecs.lpc import LinearPrediction, pack_blocks
from nnupdate.codecs.rdoq import RdoqQuantizer
from nnupdate.format import Combine, StageRecord, TensorRecord, UpdateKind

from . import Case, build, encode_tensor, rng


def _base() -> dict[str, np.ndarray]:
    g = rng(71)
    return {
        "conv.weight": g.standard_normal((16, 8, 3, 3)).astype(np.float32),
        "conv.bias": g.standard_normal(16).astype(np.float32),
        "fc.weight": g.standard_normal((24, 96)).astype(np.float32),
        "fc.half": g.standard_normal((4, 64)).astype(np.float16),
    }


def _new() -> dict[str, np.ndarray]:
    g = rng(72)
    out = {}
    for k, v in _base().items():
        scale = np.exp(g.standard_normal((v.shape[0],) + (1,) * (v.ndim - 1)))
        d = 0.01 * g.laplace(size=v.shape) * scale
        if v.ndim > 1:
            d[::4] = 0  # dead units: all-zero rows
        out[k] = (v + d).astype(v.dtype)
    return out


def _codec(spec: str) -> bytes:
    return nnupdate.diff(_base(), _new(), metadata={"codec": spec}).encode(spec)


def _levels() -> dict[str, np.ndarray]:
    g = rng(73)
    conv = np.rint(g.laplace(size=(12, 4, 3, 3)) * 2 * g.exponential(size=(12, 1, 1, 1))).astype(np.int32)
    conv[[1, 2, 7]] = 0
    linear = np.rint(g.laplace(size=(20, 50)) * np.outer(g.exponential(size=20), g.exponential(size=50))).astype(np.int16)
    single = np.zeros((30, 40), np.int32)
    single[13, 27] = -1
    return {
        "empty": np.zeros(0, np.int32),
        "empty-rows": np.zeros((5, 0), np.int32),
        "scalar": np.array(7, np.int32),
        "zeros": np.zeros((9, 11), np.int32),
        "single": single,
        "extremes": np.array([2**31 - 1, 0, -(2**31 - 1), 1, -1, 0, 1000], np.int32),
        "conv": conv,
        "linear": linear,
        "int8": np.clip(conv.reshape(12, -1), -128, 127).astype(np.int8),
    }


def _lossless(stage: Context) -> tuple[bytes, dict[str, np.ndarray]]:
    arrays = _levels()
    records = [encode_tensor(name, a, [stage]) for name, a in arrays.items()]
    return build(records, kind=UpdateKind.FULL), arrays


def _pinned_quantizers() -> bytes:
    g = rng(74)
    x = (0.01 * g.laplace(size=(32, 40)) * g.exponential(size=(32, 1))).astype(np.float32)
    records = [
        encode_tensor("rdoq-ctx", x, [RdoqQuantizer(0.004, 0.1), Context()], combine=Combine.REPLACE),
        encode_tensor("rdoq-ctx-f16", x.astype(np.float16), [RdoqQuantizer(0.002, 0.3), Context(2, 8)], combine=Combine.REPLACE),
        encode_tensor("dq-ctx", x, [DependentQuantizer(0.002, 0.2), Context(dq=1)], combine=Combine.REPLACE),
        encode_tensor("dq-ctx-1d", x[0], [DependentQuantizer(0.001, 0.2), Context(dq=1)], combine=Combine.REPLACE),
    ]
    return build(records, kind=UpdateKind.FULL)


def _smooth_kernels(g: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Kernels with a strong common component per kernel, as spatially smooth updates have."""
    common = g.standard_normal(shape[:2] + (1,) * (len(shape) - 2))
    return 0.01 * (common + 0.3 * g.standard_normal(shape))


def _transform_quantizers() -> bytes:
    g = rng(75)
    conv = _smooth_kernels(g, (16, 8, 3, 3)).astype(np.float32)
    conv1d = _smooth_kernels(g, (8, 4, 5)).astype(np.float16)
    wide = _smooth_kernels(g, (6, 5, 1, 3)).astype(np.float32)
    small = _smooth_kernels(g, (5, 3, 2, 2))
    basis = (np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]]) * 256 + np.eye(4, dtype=int) * 3)
    records = [
        encode_tensor("rdoq-dct3x3", conv, [RdoqQuantizer(0.002, 0.1, dct=b"\x03\x03"), Context()], combine=Combine.REPLACE),
        encode_tensor("dq-dct5-f16", conv1d, [DependentQuantizer(0.001, 0.2, dct=b"\x05"), Context(dq=1)], combine=Combine.REPLACE),
        encode_tensor("dq-dct1x3", wide, [DependentQuantizer(0.0015, 0.2, dct=b"\x01\x03"), Context(dq=1)], combine=Combine.REPLACE),
        encode_tensor("rdoq-basis-f64", small, [RdoqQuantizer(0.003, 0.1, basis=basis.astype("<i2").tobytes(), shift=9), Context()],
                      combine=Combine.REPLACE),
    ]
    return build(records, kind=UpdateKind.FULL)


# ----------------------------------------------------------------------------- negatives


def _record(name: str, dtype: str, shape: tuple[int, ...], stages: list[Stage], payload: bytes) -> bytes:
    rec = TensorRecord(name, dtype, shape, Combine.REPLACE, nnupdate.Role.UNKNOWN, [s.record() for s in stages], payload)
    return build([rec], kind=UpdateKind.FULL)


def _ctx_payload(q: np.ndarray, stage: Context) -> bytes:
    data, _ = stage.encode(q, ArraySpec(q.shape, str(q.dtype)))
    return data


def _neg_trailing_zero() -> bytes:
    q = np.array([[3, 0, -1], [0, 0, 2]], np.int32)
    return _record("s", "int32", (2, 3), [Context()], _ctx_payload(q, Context()) + b"\x00")


def _neg_check_bits() -> bytes:
    q = np.array([[3, 0, -1], [0, 0, 2]], np.int32)
    good = _ctx_payload(q, Context(check=16))
    return _record("s", "int32", (2, 3), [Context(check=16)], good[:-1])  # last byte cut: check bits differ


def _neg_overflow_type() -> bytes:
    q = np.array([300, -5], np.int32)
    return _record("s", "int8", (2,), [Context()], _ctx_payload(q, Context()))  # 300 does not fit int8


def _neg_dq_level() -> bytes:
    q = np.array([1 << 30, 0], np.int32)  # |k| > 2**30 - 1
    return _record("w", "float32", (2,), [DependentQuantizer(0.5), Context(dq=1)], _ctx_payload(q, Context(dq=1)))


def _neg_ngt() -> bytes:
    q = np.array([1, 2], np.int32)
    rec = TensorRecord("s", "int32", (2,), Combine.REPLACE, nnupdate.Role.UNKNOWN,
                       [Context(ngt=16).record()], _ctx_payload(q, Context(ngt=16)))
    data = build([rec], kind=UpdateKind.FULL)
    from . import reframe

    return reframe(data, edit=lambda chunks: [(t, b.replace(b"\x03ngt\x01\x20", b"\x03ngt\x01\x22") if t == b"TNSR" else b)
                                              for t, b in chunks])


def _neg_transform_rowlen() -> bytes:
    q = np.zeros((4, 10), np.int32)
    return _record("w", "float32", (4, 10), [RdoqQuantizer(0.5, dct=b"\x03\x03"), Context()], _ctx_payload(q, Context()))


def _neg_transform_params(params: dict[str, object]) -> bytes:
    from nnupdate.format import StageRecord

    q = np.zeros((2, 9), np.int32)
    rec = TensorRecord("w", "float32", (2, 1, 3, 3), Combine.REPLACE, nnupdate.Role.UNKNOWN,
                       [StageRecord(0x001A, {"step": 0.5, **params}), Context().record()], _ctx_payload(q, Context()))
    return build([rec], kind=UpdateKind.FULL)


_ctx_default = lambda: _lossless(Context())  # noqa: E731
_ctx_options = lambda: _lossless(Context(ngt=1, check=32, dq=1))  # noqa: E731
_ctx_segments = lambda: _lossless(Context(check=8, seg=2))  # noqa: E731


def _wide_levels() -> dict[str, np.ndarray]:
    """Steps of a lossless float32 update are ~2**17: values whose low bits are noise."""
    g = rng(75)
    wide = np.rint(g.laplace(size=(24, 40)) * 2.0**17 * g.exponential(size=(24, 1))).astype(np.int32)
    wide[3] = 0
    return {**_levels(), "wide": wide, "wide-1d": wide[5].copy()}


def _ctx_low() -> tuple[bytes, dict[str, np.ndarray]]:
    arrays = _wide_levels()
    stages = {"wide": Context(low=12, check=4), "wide-1d": Context(low=31, seg=16)}
    records = [encode_tensor(name, a, [stages.get(name, Context(low=5))]) for name, a in arrays.items()]
    return build(records, kind=UpdateKind.FULL), arrays


def _neg_low_short() -> bytes:
    q = np.array([[3, 0, -1], [0, 0, 2]], np.int32)
    return _record("s", "int32", (2, 3), [Context(low=9)], _ctx_payload(q, Context(low=9))[:6])


def _neg_low_overflow() -> bytes:
    q = np.array([2**20, -3], np.int32)
    return _record("s", "int16", (2,), [Context(low=8)], _ctx_payload(q, Context(low=8)))


def _neg_segment_lengths() -> bytes:
    q = np.array([[3, 0, -1], [0, 0, 2], [1, 1, 1]], np.int32)
    good = _ctx_payload(q, Context(seg=1))
    return _record("s", "int32", (3, 3), [Context(seg=1)], (len(good)).to_bytes(4, "little") + good[4:])

def _predicted_levels() -> dict[str, np.ndarray]:
    """Levels whose rows share a few directions (what ``lpc`` predicts), and edge cases."""
    g = rng(76)
    linear = np.rint(g.standard_normal((40, 3)) @ g.standard_normal((3, 24)) * 9 + g.laplace(size=(40, 24))).astype(np.int32)
    conv = np.rint(g.standard_normal((20, 2)) @ g.standard_normal((2, 9)) * 5).astype(np.int16).reshape(20, 1, 3, 3)
    wide = np.rint(g.standard_normal((9, 2)) @ g.standard_normal((2, 6)) * 2.0**28).astype(np.int32)
    planes = np.rint(g.standard_normal((16, 2)) @ g.standard_normal((2, 27)) * 6).astype(np.int32)
    columns = np.rint(g.standard_normal((14, 3)) @ g.standard_normal((3, 30)) * 7).astype(np.int32)
    return {"linear": linear, "conv": conv, "wide": wide, "four-rows": linear[:4].copy(), "one-row": linear[0].copy(),
            "planes": planes, "columns": columns, "empty-rows": np.zeros((10, 0), np.int32)}


def _lpc() -> tuple[bytes, dict[str, np.ndarray]]:
    arrays = _predicted_levels()
    stages = {"linear": LinearPrediction(), "conv": LinearPrediction(order=3, blocks=pack_blocks([6, 10, 4])),
              "wide": LinearPrediction(order=2), "four-rows": LinearPrediction(), "one-row": LinearPrediction(),
              "planes": LinearPrediction(order=2, blocks=pack_blocks([9, 7]), planes=9),
              "columns": LinearPrediction(order=5, blocks=pack_blocks([8, 6]), columns=1), "empty-rows": LinearPrediction()}
    records = [encode_tensor(name, a, [stages[name], Context()]) for name, a in arrays.items()]
    return build(records, kind=UpdateKind.FULL), arrays


def _correlated_models() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A linear layer and two 1x1 convolutions whose delta rows share four directions."""
    g = rng(77)
    shapes = {"fc.weight": (48, 40), "p1.weight": (24, 16, 1, 1), "p2.weight": (20, 16, 1, 1), "c3.weight": (40, 16, 3, 3),
              "wide.weight": (24, 200)}
    base = {k: g.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    new = {}
    for k, v in base.items():
        rows, cols = v.shape[0], v.shape[1]
        rank, noise = (12, 1.0) if k == "wide.weight" else (4, 0.3)  # wide: no low-rank code beats prediction
        d = g.standard_normal((rows, rank)) @ g.standard_normal((rank, cols)) + noise * g.standard_normal((rows, cols))
        d = d.reshape(v.shape[:2] + (1,) * (v.ndim - 2)) + 0.2 * g.standard_normal(v.shape)  # 3x3: smooth kernels
        new[k] = (v + 0.002 * d).astype(np.float32)
    return base, new


def _neg_lpc(stage_params: dict[str, object], residuals: np.ndarray, dtype: str = "int32") -> bytes:
    payload = _ctx_payload(residuals.astype(np.int32), Context())
    rec = TensorRecord("p", dtype, residuals.shape, Combine.REPLACE, nnupdate.Role.UNKNOWN,
                       [StageRecord(LinearPrediction.codec_id, stage_params), Context().record()], payload)
    return build([rec], kind=UpdateKind.FULL)


# fmt: off
def _row_group_models() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Convolutions sharing row lengths (72 and 96, the latter 1x1): the ctx codec stacks
    each set into one TGRP whose pipeline shape is (total rows, row length), FORMAT.md 4.4.
    The 3x3 deltas are spatially smooth (a common part per kernel), so the codec codes them
    through the kernel transform (CONTEXT.md §6)."""
    g = rng(73)
    shapes = {"c1.weight": (16, 8, 3, 3), "c2.weight": (8, 8, 3, 3), "c3.weight": (4, 8, 3, 3),
              "p1.weight": (24, 96, 1, 1), "p2.weight": (12, 96, 1, 1), "p1.bias": (24,)}
    base = {k: g.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    new = {}
    for k, v in base.items():
        scale = np.exp(g.standard_normal((v.shape[0],) + (1,) * (v.ndim - 1)))
        d = 0.01 * g.laplace(size=v.shape) * scale
        if v.ndim == 4 and v.shape[2] > 1:
            d = 0.01 * (g.laplace(size=v.shape[:2] + (1, 1)) + 0.3 * g.laplace(size=v.shape)) * scale
        if v.ndim > 1:
            d[::3] = 0
        new[k] = (v + d).astype(np.float32)
    return base, new


def _low_rank_models() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A 64x96 linear layer whose delta has rank 4 plus a little noise, and its bias."""
    g = rng(42)
    base = {"fc.weight": g.standard_normal((64, 96)).astype(np.float32), "fc.bias": g.standard_normal(64).astype(np.float32)}
    delta = (g.standard_normal((64, 4)) @ g.standard_normal((4, 96))) * 0.01 + 2e-4 * g.standard_normal((64, 96))
    new = {"fc.weight": (base["fc.weight"] + delta).astype(np.float32), "fc.bias": base["fc.bias"] + np.float32(0.01)}
    return base, new


CASES = [
    Case("context-raw-ulp", "codec raw: float32 and float16 deltas as ULP steps (FORMAT.md §4.3) coded by ctx; "
         "apply gives NEW bit-exactly", lambda: _codec("raw:combine=ulp"), base=_base, applied=_new),
    Case("context-ctx", "ctx (0x0028), default parameters, on int8/16/32 levels: empty, empty rows, scalar, all-zero, "
         "a single nonzero, +-(2**31-1), conv with zero rows, linear with row/column scales",
         lambda: _ctx_default()[0], expected=lambda: _ctx_default()[1]),
    Case("context-ctx-options", "ctx with ngt=1, check=32, dq=1 on the same levels", lambda: _ctx_options()[0],
         expected=lambda: _ctx_options()[1]),
    Case("context-ctx-segments", "ctx with seg=2 and check=8 on the same levels: tensors of more than two rows as "
         "independent streams of two rows, one-row tensors as runs of two elements, byte lengths first (CONTEXT.md §2.6)", lambda: _ctx_segments()[0],
         expected=lambda: _ctx_segments()[1]),
    Case("context-ctx-low", "ctx with raw low bits (CONTEXT.md §2.7): low=5 on the levels above, low=12 with check "
         "bits on wide int32 values, low=31 with seg=16 on a wide 1-D tensor", lambda: _ctx_low()[0], expected=lambda: _ctx_low()[1]),
    Case("context-quantizers-pinned", "rdoq (0x001A) + ctx on float32 and float16; dq (0x001B) + ctx(dq=1), 2-D and 1-D",
         _pinned_quantizers),
    Case("context-quantizers-transform", "kernel transform (CONTEXT.md §6): rdoq + dct 3x3 (float32), dq + dct 5 "
         "(float16 Conv1d), dq + dct 1x3, rdoq + an explicit 2x2 basis with shift 9 (float64)", _transform_quantizers),
    Case("context-codec-ctx-klt", "codec ctx with transform=klt: row groups with explicit KLT bases",
         lambda: nnupdate.diff(*_row_group_models()).encode("ctx:step=0.004,transform=klt"), base=lambda: _row_group_models()[0]),
    Case("context-codec-ctx", "codec ctx: global step by max_rel_error=0.1, RDOQ, ctx", lambda: _codec("ctx:max_rel_error=0.1"),
         base=_base),
    Case("context-codec-ctx-dq", "codec ctx with a server-set step and dependent quantization",
         lambda: _codec("ctx:step=0.004,quant=dq"), base=_base),
    Case("context-codec-ctx-row-groups", "codec ctx with dependent quantization on weights sharing row lengths: two TGRP "
         "row groups, (28, 72) and (36, 96), whose dq state machine restarts on every stacked row; the 3x3 group "
         "through the integer DCT (dct=3x3, levels of shape (28, 9, 8))",
         lambda: nnupdate.diff(*_row_group_models()).encode("ctx:step=0.004,quant=dq"), base=lambda: _row_group_models()[0]),
    Case("context-codec-ctx-lowrank", "codec ctx on an update whose 64x96 linear layer is close to low rank: the layer "
         "as lowrank (0x0015, CODECS.md) factors, the bias through rdoq + ctx",
         lambda: nnupdate.diff(*_low_rank_models()).encode("ctx:max_rel_error=0.05"), base=lambda: _low_rank_models()[0]),
    Case("context-codec-uniform-ctx", "codec uniform with coder=ctx", lambda: _codec("uniform:max_rel_error=0.05,coder=ctx"),
         base=_base),
    Case("context-lpc", "lpc (0x001C, CONTEXT.md §7) + ctx: rows near a 3-D subspace (order 64), a 3x3 conv in "
         "three blocks with order 3 (int16), values near 2**30 with order 2, four rows (nothing predicted), one row, "
         "rows of 27 in 9 planes of 3 with two blocks, a 14x30 matrix predicted by columns in two blocks (order 5), "
         "ten rows of no elements",
         lambda: _lpc()[0], expected=lambda: _lpc()[1]),
    Case("context-codec-ctx-lpc", "codec ctx (pred=2) with dependent quantization on layers whose rows share four directions: "
         "dq | lpc | ctx(dq=1), the 1x1 convolutions as one TGRP row group with one lpc block per member, a 3x3 "
         "convolution through the DCT with one lpc plane per coefficient, a 24x200 layer predicted by columns",
         lambda: nnupdate.diff(*_correlated_models()).encode("ctx:step=0.0015,quant=dq,pred=2"), base=lambda: _correlated_models()[0]),
    Case("context-neg-lpc-blocks", "lpc whose blocks (6, 6) do not add up to the 10 rows",
         lambda: _neg_lpc({"blocks": b"\x06\x06"}, np.zeros((10, 4), np.int32)), error="CodecError"),
    Case("context-neg-lpc-order", "lpc with order 0", lambda: _neg_lpc({"order": 0}, np.zeros((10, 4), np.int32)),
         error="FormatError"),
    Case("context-neg-lpc-overflow", "lpc residuals at 2**31-1 whose prediction takes the level past the int32 range",
         lambda: _neg_lpc({}, np.full((8, 2), 2**31 - 1, np.int32)), error="CodecError"),
    Case("context-neg-trailing-zero", "ctx payload ending in a zero byte", _neg_trailing_zero, error="CodecError"),
    Case("context-neg-check-bits", "ctx with check=16 whose last byte is missing", _neg_check_bits, error="CodecError"),
    Case("context-neg-overflow", "ctx level 300 in an int8 tensor", _neg_overflow_type, error="CodecError"),
    Case("context-neg-dq-level", "dq level 2**30 (beyond +-(2**30-1))", _neg_dq_level, error="CodecError"),
    Case("context-neg-low-short", "ctx with low=9 on 6 values whose payload ends inside the 7 raw bytes",
         _neg_low_short, error="CodecError"),
    Case("context-neg-low-overflow", "ctx with low=8 whose value 2**20 does not fit the int16 tensor",
         _neg_low_overflow, error="CodecError"),
    Case("context-neg-segment-lengths", "ctx with seg=1 whose first segment length overruns the payload",
         _neg_segment_lengths, error="CodecError"),
    Case("context-neg-ngt", "ctx with ngt=17 (beyond 16)", _neg_ngt, error="FormatError"),
    Case("context-neg-transform-rowlen", "rdoq with dct 3x3 on rows of 10 elements (not a multiple of 9 taps)",
         _neg_transform_rowlen, error="CodecError"),
    Case("context-neg-transform-both", "rdoq with both dct and basis", lambda: _neg_transform_params(
        {"dct": b"\x03\x03", "basis": b"\x01\x00" * 81, "shift": 8}), error="FormatError"),
    Case("context-neg-transform-dct-axes", "rdoq with dct of three axes", lambda: _neg_transform_params(
        {"dct": b"\x01\x03\x03"}), error="FormatError"),
    Case("context-neg-transform-basis-min", "rdoq with a basis entry -32768", lambda: _neg_transform_params(
        {"basis": b"\x00\x80" + b"\x01\x00" * 80, "shift": 8}), error="FormatError"),
]
# fmt: on
