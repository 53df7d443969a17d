"""``ctx`` codec: rate-distortion optimised quantization (RDOQ) + the context-adaptive coder.

Why: at a given step, rounding to nearest is the minimum-distortion choice but not the
minimum-cost one. RDOQ picks each level minimising ``(x/step - q)**2 + lam * bits(q)``
with ``bits`` taken from the live adaptive model of the ``ctx`` coder (the same
contexts, the same probability states), so a value is rounded towards zero exactly when
the bits saved are worth the added error in *its* neighbourhood; whole rows fall to the
skip flag when coding them is not worth it.

RDOQ is an encoder decision: the ``rdoq`` stage (0x001A) decodes exactly like
``uniform`` (``q * step``); it exists so the header stores only the step.

Step allocation: one global step and one ``lam`` (in units of step**2 per bit) give
every tensor the same Lagrangian slope ``lam * step**2`` for squared error, which is
the equal-RD-slope condition for minimising total squared error at a total rate; the
rate controller therefore searches a single step.

Between the quantizer and the coder, each matrix record may pass through ``lpc``
(0x001C): the levels of a row predicted from the row's earlier levels, with coefficients
learned from the rows before. It is lossless, so it changes rates, not the error the
step search fits; it is kept where the payload comes out smaller.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import parallel, progress
from ..errors import CodecError, InputError
from ..format import Combine
from . import transform
from .base import ENCODER_ONLY, ArraySpec, ArrayToArray, Stage, register
from .context import MAX_LEVEL, Context, filled_segments, layout, segment_size, segments
from .presets import Codec, Plan, register_codec
from .uniform import check_step, quantize, reconstruct

if TYPE_CHECKING:
    from ..update import EncodeReport, TensorChange, Update
    from .lpc import LinearPrediction


@lru_cache(maxsize=1)
def _cost_table() -> np.ndarray:
    from ._context_kernel import bit_cost_table

    return bit_cost_table()


def rdoq_levels(
    values: np.ndarray, shape: tuple[int, ...], step: float, lam: float, ngt: int = 4, static: bool = False
) -> np.ndarray:
    """RDOQ levels (int64, C order) of ``values`` for ``step``; ``lam = 0`` is nearest rounding.

    ``static`` prices levels with the tensor's own order-0 histogram instead of the live
    context model (:func:`static_rdoq_levels`): vectorised, several times faster, a few
    percent larger.
    """
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.isfinite(flat).all():
        raise CodecError("rdoq: input holds NaN or infinity")
    if flat.size and float(np.abs(flat).max()) / step > (1 << 31) - 2:
        raise CodecError("rdoq: step too small, levels overflow int32")
    if lam <= 0 or flat.size == 0:
        return quantize(flat, step, "nearest", 0).astype(np.int64)
    if static:
        return static_rdoq_levels(flat / step, lam)
    from . import _context_kernel

    rows, rowlen = layout(shape)
    scaled = flat / step

    def one(start: int, n: int, length: int, out: np.ndarray) -> None:  # the coder's segments: its model restarts there too
        _context_kernel.rdoq(scaled[start : start + n * length], n, length, ngt, float(lam), _cost_table(), out)

    return filled_segments(one, segments(rows, rowlen, segment_size(rows, rowlen)), np.empty(rows * rowlen, dtype=np.int64))


#: levels above this share the static model's last rate step (the tail is rare and flat)
STATIC_LEVELS = 64


def static_rdoq_levels(scaled: np.ndarray, lam: float) -> np.ndarray:
    """Levels of ``scaled`` (values / step) minimising ``(x - q)**2 + lam * bits(q)`` with
    ``bits`` from the order-0 histogram of the nearest levels (plus a sign bit).

    Why: most of RDOQ's gain is the rate-aware choice between neighbouring levels, above
    all between 0 and 1, and an order-0 model already prices that: at a coarse step zeros
    are cheap and ones dear, so the zero bin widens (threshold 0.5 + lam/2 * (bits(1) -
    bits(0))); at a fine step it barely moves. The thresholds are vectorised, so this
    runs at memory speed where the live-model RDOQ walks the tensor bin by bin. The
    offsets are clipped below 1/2, so one step from the nearest level always suffices.
    """
    from . import _rdoq_static_kernel

    counts = _rdoq_static_kernel.nearest_histogram(scaled, STATIC_LEVELS).astype(np.float64)
    bits = -np.log2((counts + 0.5) / (counts.sum() + 0.5 * counts.size))
    bits[1:] += 1.0  # sign
    # threshold between q and q + 1, in units of the step, for q = 0 .. STATIC_LEVELS
    offset = np.clip(0.5 * lam * np.diff(bits, append=bits[-1]), -0.49, 0.49)
    threshold = np.arange(STATIC_LEVELS + 1, dtype=np.float64) + 0.5 + offset
    return _rdoq_static_kernel.choose_levels(scaled, threshold)


@register
@dataclass(frozen=True)
class RdoqQuantizer(transform.TransformedQuantizer, ArrayToArray):
    """``rdoq`` (0x001A): levels chosen by RDOQ; decoded value ``q * step``.

    The decoder is the uniform one (``q * step`` in binary64, rounded once to the tensor
    type). Only ``step`` is stored: ``lam`` and ``ngt`` steer the encoder and are left
    out of the header (the decoder's defaults stand in for them), so a tensor pays 14
    header bytes for its quantizer instead of uniform's 49.
    """

    codec_id = 0x001A
    name = "rdoq"
    step: float = 1e-3
    lam: float = field(default=0.1, metadata=ENCODER_ONLY)
    ngt: int = field(default=4, metadata=ENCODER_ONLY)
    #: price levels with the tensor's order-0 histogram instead of the live model (fast)
    static: int = field(default=0, metadata=ENCODER_ONLY)
    #: kernel transform (spec/CONTEXT.md §6), stored only when set: the integer DCT of a
    #: kernel shape (``dct``, its dimensions as bytes) or an explicit int16 ``basis``
    dct: bytes = b""
    basis: bytes = b""
    shift: int = 0

    def __post_init__(self) -> None:
        check_step(self.step, self.lam)
        self.check_transform()

    def encoded_spec(self, spec: ArraySpec) -> ArraySpec:
        return ArraySpec(transform.level_shape(spec.shape, self.kernel_transform), "int32")

    def encode(self, values: np.ndarray, spec: ArraySpec) -> tuple[np.ndarray, RdoqQuantizer]:
        kernel = self.kernel_transform
        shape = transform.level_shape(spec.shape, kernel)
        if kernel is not None:
            values = transform.forward(values, spec.shape, kernel)
        levels = rdoq_levels(values, shape, self.step, self.lam, self.ngt, bool(self.static))
        return levels.astype(np.int32).reshape(shape), RdoqQuantizer(self.step, dct=self.dct, basis=self.basis, shift=self.shift)

    def decode(self, encoded: np.ndarray, spec: ArraySpec) -> np.ndarray:
        kernel = self.kernel_transform
        if kernel is not None:
            return transform.inverse(encoded, spec.shape, kernel, self.step, spec.dtype, self.name)
        return reconstruct(encoded, self.step, spec, self.name)

    def scale_step(self, spec: ArraySpec) -> float | None:
        return self.step if spec.dtype == "float32" and self.kernel_transform is None else None

    def max_abs_error(self) -> float:
        """RDOQ may round a value to zero: the error is bounded by the value itself, not step/2."""
        return float("inf")


def rdoq_relative_error(
    deltas: list[np.ndarray],
    step: float,
    lam: float,
    ngt: int = 4,
    quant: str = "rdoq",
    weights: list[float] | None = None,
    passes: int = 2,
) -> float:
    """Relative L2 error of RDOQ (or dq, with ``passes`` trellis passes) at ``step`` over
    all deltas, before rounding to the tensor type; ``weights`` count each delta's squares
    that many times (a sample's rows standing for the rows left out)."""
    from .dq import dq_levels, dq_reconstruct

    def squares(d: np.ndarray) -> tuple[float, float]:
        x = np.asarray(d, dtype=np.float64).reshape(-1)
        if quant == "dq":
            index = dq_reconstruct(dq_levels(x, d.shape, step, lam, passes), d.shape)
        else:
            index = rdoq_levels(x, d.shape, step, lam, ngt, static=quant == "fast")
        r = index * step - x
        return float(np.einsum("i,i->", r, r)), float(np.einsum("i,i->", x, x))

    parts = parallel.ordered_map(squares, deltas, [d.size for d in deltas])
    weights = weights or [1.0] * len(parts)
    err = sum(w * e for w, (e, _) in zip(weights, parts))
    norm = sum(w * n for w, (_, n) in zip(weights, parts))
    return float(np.sqrt(err / norm)) if norm > 0 else 0.0


#: the error search stops within this fraction below the target
SEARCH_TOLERANCE = 2e-3

#: RDOQ lambdas of ``lam=-1``: the default, and the one for error targets >= COARSE_ERROR
DEFAULT_LAM = 0.1
COARSE_LAM = 0.15
COARSE_ERROR = 0.2


@register_codec
@dataclass(frozen=True)
class CtxCodec(Codec):
    """Global step, RDOQ under the adaptive model, context-adaptive binary arithmetic coding.

    Step from, in order: ``step`` (server-set), ``target_bits`` (bits/param of the whole
    container, headers included, bisection on measured bytes to within 0.5%), or
    ``max_rel_error`` (largest step whose measured relative L2 error is at most it).
    """

    name = "ctx"
    summary = "global step + RDOQ/trellis + DCT of conv kernels + row prediction + context-adaptive binary arithmetic coding (best rate)"
    row_groups = True
    adaptive_scan = True
    try_lowrank = True
    step: float = 0.0
    max_rel_error: float = 0.05
    target_bits: float = 0.0
    #: RDOQ's lambda (units of step**2 per bit); -1 (default) picks it from the target:
    #: 0.15 when ``max_rel_error`` >= COARSE_ERROR (no step or bit target given), else 0.1
    lam: float = -1.0
    ngt: int = 4
    check: int = 0
    #: ``rdoq`` (scalar levels, RDOQ under the live context model), ``dq`` (dependent
    #: trellis-coded quantization, 4 states, with dq-aware significance contexts) or
    #: ``auto``: with a rate or error target, both are tuned to it and the smaller
    #: container wins (measured); with a fixed step, ``rdoq``. ``fast``: RDOQ priced by
    #: each tensor's order-0 histogram (vectorised; a few percent larger, encodes several
    #: times faster; its rate control runs on vectorised passes too)
    quant: str = "auto"
    #: the trellis's lambda (``quant=dq``), in the same units as ``lam``
    dq_lam: float = 0.2
    #: kernel transform of convolutions (spec/CONTEXT.md §6; spatially smooth updates
    #: compact into few coefficients): ``dct`` (the integer DCT of kernels with 1-2 axes of
    #: <= 8 taps, two header bytes), ``klt`` (the kernels' own eigenbasis, sent in the
    #: header; any kernel of 2 to 64 taps) or ``none`` (tap by tap)
    transform: str = "dct"
    #: ``lpc`` (spec/CONTEXT.md §7: each level predicted from its row's earlier levels,
    #: learned from the rows before) on the levels of each matrix record where it saves at
    #: least PREDICTION_MIN_SAVING: 1 (default) on records without a kernel transform, 2
    #: also on kernel-transform coefficients, one predictor per coefficient (ResNet-56 at
    #: e = 0.05: 1.5% smaller, encodes ~10-20% and decodes ~15-25% slower), 0 never (as
    #: fast to encode, since the trellis then makes its second pass; decodes ~15% faster;
    #: 0-26% larger on the issue-7 workloads). ``quant=fast`` never predicts
    pred: int = 1

    def __post_init__(self) -> None:
        if self.quant not in ("rdoq", "dq", "auto", "fast"):
            raise ValueError("quant must be rdoq, dq, auto or fast")
        if self.transform not in ("dct", "klt", "none"):
            raise ValueError("transform must be dct, klt or none")
        if self.pred not in (0, 1, 2):
            raise ValueError("pred must be 0, 1 or 2")
        if self.step < 0 or self.target_bits < 0 or (self.lam < 0 and self.lam != -1.0) or not 0 < self.max_rel_error < 1:
            raise ValueError("step, target_bits must be >= 0, lam >= 0 or -1 (automatic), max_rel_error in (0, 1)")
        Context(self.ngt, self.check)  # validates ngt and check

    def with_step(self, step: float) -> CtxCodec:
        return dataclasses.replace(self, step=step)

    @property
    def dq_passes(self) -> int:
        """Trellis passes: one when levels may be predicted (a second pass prices the levels
        the coder would see without ``lpc``; measured with it, one pass is within 0.1% of
        two on ResNet-56, FedAvg and the transformer, and the encode 8-10% faster)."""
        return 1 if self.pred and self.quant == "dq" else 2

    def resolved_lam(self) -> float:
        """The RDOQ lambda in use: ``lam``, or for -1 the measured best for the target.

        At coarse error targets most levels sit at 0 or 1, where a slightly stronger pull
        towards zero pays: measured on the issue-7 workloads, lam 0.15 beats 0.1 by up to
        1.4% at e = 0.3 and loses up to 0.7% at e <= 0.1.
        """
        if self.lam >= 0:
            return self.lam
        coarse = self.step <= 0 and self.target_bits <= 0 and self.max_rel_error >= COARSE_ERROR
        return COARSE_LAM if coarse else DEFAULT_LAM

    def prepare(self, update: Update) -> CtxCodec:
        return self._prepare(update, {})

    def prepare_measured(self, update: Update) -> tuple[CtxCodec, EncodeReport | None]:
        measured: dict[CtxCodec, EncodeReport] = {}
        chosen = self._prepare(update, measured)
        return chosen, measured.get(chosen)  # quant=auto encoded both candidates in full

    def _prepare(self, update: Update, measured: dict[CtxCodec, EncodeReport]) -> CtxCodec:
        """:meth:`prepare`, with ``measured`` holding every trial encode of this call (the
        rate search's last trial is the comparison's candidate: it is not encoded twice)."""
        if self.lam < 0:
            return dataclasses.replace(self, lam=self.resolved_lam())._prepare(update, measured)
        if self.quant == "auto":
            if self.step > 0:
                return dataclasses.replace(self, quant="rdoq")
            size = _data_size(update)
            if size > 2 * SAMPLE_ELEMENTS:
                sample = _sampled_update(update)
                if _data_size(sample) <= size // 2:
                    # a large update: pick the quantizer on a row sample (both tuned and
                    # encoded there), then tune only that one on everything
                    pick = self._better_quantizer(sample, {})
                    return dataclasses.replace(self, quant=pick.quant)._prepare(update, measured)
            return self._better_quantizer(update, measured)
        if self.step > 0:
            return self
        deltas = self.error_inputs(update)
        if not deltas:
            return self.with_step(1.0)
        if self.target_bits > 0:
            return self.with_step(_step_for_bits(update, self, self.target_bits, measured))
        tuned = self.with_step(_step_for_error(update, self, deltas, self.max_rel_error, measured))
        aligned = self._grid_candidate(update) if self.quant != "dq" else None
        if aligned is None or _measure(update, aligned, measured).relative_error > self.max_rel_error:
            return tuned
        return min((tuned, aligned), key=lambda c: len(_measure(update, c, measured).data))

    def _better_quantizer(self, update: Update, measured: dict[CtxCodec, EncodeReport]) -> CtxCodec:
        """rdoq and dq each tuned to the target on ``update``: the smaller container at equal
        error, or (``target_bits``, equal rate) the smaller error."""
        tuned = [dataclasses.replace(self, quant=q)._prepare(update, measured) for q in ("rdoq", "dq")]
        if self.target_bits > 0:
            return min(tuned, key=lambda c: _measure(update, c, measured).relative_error)
        return min(tuned, key=lambda c: len(_measure(update, c, measured).data))

    def _grid_candidate(self, update: Update) -> CtxCodec | None:
        """Plain rounding on the grid the deltas sit on, if they do (a sign update, values
        from an integer-quantized model, a re-encoded update): every value is then an
        exact multiple of the smallest magnitude, and a step there codes them without
        error as small levels. The step search, which assumes error smooth in the step,
        finds a fine step instead, whose levels are the same few values relabelled as
        large numbers (values on 7 levels at 1% error: 5.4 bits/param where the grid's
        step needs 2.8). None unless a sample's values sit on that grid."""
        deltas = [np.asarray(d).reshape(-1) for d in update.float_deltas() if d.size]
        total = sum(d.size for d in deltas)
        if not total:
            return None
        every = max(1, total // GRID_SAMPLE)
        sample = np.concatenate([d[::every] for d in deltas])
        sample = np.abs(sample[sample != 0])
        if sample.size == 0:
            return None
        grid = float(sample.min())
        levels = sample / grid
        if float(levels.max()) > GRID_LEVELS or float(np.max(np.abs(levels - np.rint(levels)))) > 1e-3:
            return None
        return dataclasses.replace(self, lam=0.0, step=grid, transform="none")  # lam 0: plain rounding

    def plan_float_delta(self, change: TensorChange) -> Plan:
        if self.step <= 0:
            raise InputError("ctx: no step chosen (call prepare() or pass step=...)")
        if self.quant == "auto":
            raise InputError("ctx: quant=auto is resolved by prepare()")
        kernel = self.kernel_params(change)
        quantizer: ArrayToArray
        if self.quant == "dq":
            from .dq import DependentQuantizer

            quantizer = DependentQuantizer(self.step, self.dq_lam, passes=self.dq_passes, **kernel)
        else:
            quantizer = RdoqQuantizer(self.step, self.resolved_lam(), self.ngt, int(self.quant == "fast"), **kernel)
        coder = Context(self.ngt, self.check, int(self.quant == "dq"))
        if self.pred and self.quant != "fast" and (self.pred == 2 or not kernel):
            taps = transform.kernel_transform(**kernel)
            level_shape = quantizer.encoded_spec(ArraySpec(change.shape, "float32")).shape
            predictor = _predictor(change, level_shape, taps.taps if taps is not None else 1)
            if predictor is not None:
                narrow = functools.partial(_narrow_prediction, predictor, coder)
                return Plan(Combine.ADD, (quantizer,), ((coder,), (predictor, coder)), narrow)
        return Plan(Combine.ADD, (quantizer,), ((coder,),))

    def kernel_params(self, change: TensorChange, step: float = 0.0) -> dict[str, Any]:
        """The quantizer's kernel-transform parameters for ``change`` at ``step`` (default: the
        codec's), or none (tap by tap) when the transform would not pay: kernels whose taps
        are not correlated lose their sparsity in a transform (measured: iid Laplacian taps
        cost 2-7% more as DCT coefficients), so it is used only where the estimate of
        :func:`transform.estimated_cost_ratio` says the coefficients are clearly cheaper."""
        from ..update import kernel_shape

        kernel = kernel_shape(change)
        taps = int(np.prod(kernel)) if kernel else 1
        if self.transform == "none" or change.data is None or not 2 <= taps <= transform.MAX_TAPS:
            return {}
        params: dict[str, Any]
        if self.transform == "klt":  # any kernel shape, e.g. 3x3x3
            params = {"basis": transform.klt_basis(change.data, change.shape, taps), "shift": transform.DCT_SHIFT}
        else:
            dct = transform.dct_param(kernel)  # 1 or 2 axes of <= 8 taps
            if not dct:
                return {}
            params = {"dct": dct}
        kt = transform.kernel_transform(**params)
        assert kt is not None
        ratio = transform.estimated_cost_ratio(change.data, change.shape, kt, step or self.step)
        return params if ratio <= transform.USE_BELOW else {}

    def error_inputs(self, update: Update) -> list[np.ndarray]:
        """What the quantizer sees of each float delta rate control fits the step to: the
        delta, or its kernel-transform coefficients (near-orthonormal: same squared norm
        and error up to ~1%, and the final step is checked on the real decode)."""
        from ..rate import step_for_max_rel_error

        pairs = [(c, c.data) for c in update.float_delta_changes() if c.data is not None and c.data.size]
        # the transform decision depends on the step, not known yet: use nearest rounding's
        guess = self.step or (step_for_max_rel_error([d for _, d in pairs], self.max_rel_error) if pairs else 1.0)
        out = []
        for change, data in pairs:
            kernel = transform.kernel_transform(**self.kernel_params(change, guess))
            if kernel is None:
                out.append(data)
            else:
                shape = transform.coefficient_shape(change.shape, kernel.taps)
                out.append(transform.forward(data, change.shape, kernel).reshape(shape))
        return out


def _predictor(change: TensorChange, level_shape: tuple[int, ...], planes: int = 1) -> LinearPrediction | None:
    """The ``lpc`` stage for ``change``'s levels, or None when they have too few rows to
    learn from. A stacked group restarts it at each member: members are different layers,
    whose rows share no subspace. Kernel-transform coefficients (``planes`` of them per
    kernel, coefficient-major along a row) are predicted coefficient by coefficient."""
    from . import _lpc_kernel
    from .lpc import LinearPrediction, pack_blocks

    rows, rowlen = layout(level_shape)
    if len(level_shape) < 2 or rows <= 2 * _lpc_kernel.START_ROWS:
        return None
    parts = [p for p in change.parts if p.size]
    counts = [p.size // rowlen for p in parts]
    planes = planes if planes > 1 and rowlen % planes == 0 else 1
    if len(parts) > 1 and sum(counts) == rows and all(p.size % rowlen == 0 for p in parts):
        return LinearPrediction(blocks=pack_blocks(counts), planes=planes)
    # a wide matrix is predicted column by column: more of them to learn from, each shorter
    return LinearPrediction(planes=planes, columns=int(rows < rowlen // planes))


#: The payload saving ``lpc`` must bring to be used: decoding through it costs ~20 ns per
#: value at order 64, about two fifths of the ctx decoder's time, which a saving under a
#: percent does not repay.
PREDICTION_MIN_SAVING = 0.01
#: Bounds on the ratio of :func:`lpc.histogram_bits` of a record's residuals to that of
#: its levels, which reads at most 0.01 above the ratio of their ctx payloads (measured on
#: every ResNet-56, FedAvg and transformer record at e = 0.05-0.3) and mostly 0-0.05
#: below it. Above 1 - PREDICTION_MIN_SAVING + 0.01 the saving cannot reach the minimum;
#: below 0.90 every measured record saved it.
PREDICTION_SURELY_PAYS = 0.90
PREDICTION_NEVER_PAYS = 1.0 - PREDICTION_MIN_SAVING + 0.01
#: In between, the last eighth of the record's rows (at least this many) is coded both
#: ways and decides: ``lpc`` is causal, so those rows' residuals are what the whole
#: record's would be there, and later rows are predicted best, so an eighth decides with
#: a quarter of a pass instead of a whole one.
PREDICTION_SAMPLE_ROWS = 32


#: A record of more than four times this many rows is first predicted on its first rows
#: alone (``lpc`` is causal: their residuals are the whole record's there); if those show
#: no gain, the full pass (~20 ns per value, on one core) is skipped.
PREDICTION_HEAD_ROWS = 256


def _head_says_no(predictor: LinearPrediction, levels: np.ndarray, spec: ArraySpec) -> bool:
    """True when prediction does not pay on the record's first PREDICTION_HEAD_ROWS rows
    (past the rows that only set the predictor's prior)."""
    from . import _lpc_kernel
    from .lpc import histogram_bits

    head = levels[:PREDICTION_HEAD_ROWS]
    try:
        residuals, _ = predictor.encode(head, ArraySpec(head.shape, spec.dtype))
    except CodecError:
        return True
    learned = slice(_lpc_kernel.START_ROWS, None)
    return histogram_bits(residuals[learned]) > PREDICTION_NEVER_PAYS * histogram_bits(head[learned])


def _narrow_prediction(predictor: LinearPrediction, coder: Context, levels: np.ndarray, spec: ArraySpec) -> tuple[tuple[Stage, ...], ...]:
    """The one tail to encode ``levels`` with: through the predictor, or directly."""
    from .lpc import PredictedLevels, histogram_bits

    direct: tuple[tuple[Stage, ...], ...] = ((coder,),)
    rows = levels.shape[0] if levels.ndim >= 2 else 1
    if rows > 4 * PREDICTION_HEAD_ROWS and not predictor.blocks and _head_says_no(predictor, levels, spec):
        return direct
    try:
        residuals, _ = predictor.encode(levels, spec)
    except CodecError:
        return direct
    if residuals.size == 0 or int(np.min(residuals)) <= -MAX_LEVEL:
        return direct  # a residual ctx cannot code
    predicted: tuple[tuple[Stage, ...], ...] = ((PredictedLevels(predictor, residuals), coder),)
    ratio = histogram_bits(residuals) / max(histogram_bits(levels), 1.0)
    if ratio < PREDICTION_SURELY_PAYS:
        return predicted
    if ratio > PREDICTION_NEVER_PAYS:
        return direct
    sample = max(PREDICTION_SAMPLE_ROWS, rows // 8)
    part = slice(max(0, rows - sample), rows)
    part_spec = ArraySpec((len(range(rows)[part]), *levels.shape[1:]), spec.dtype)
    plain = len(coder.encode(levels[part], part_spec)[0])
    through = len(coder.encode(residuals[part], part_spec)[0])
    return predicted if through <= (1.0 - PREDICTION_MIN_SAVING) * plain else direct


# The error search above evaluates RDOQ/dq directly (no container); ``auto`` tunes both
# quantizers to the target and keeps the better one, so it costs about twice the encode.


def _measure(update: Update, codec: CtxCodec, measured: dict[CtxCodec, EncodeReport]) -> EncodeReport:
    """The encode of ``update`` by ``codec`` (prepared), from ``measured`` if already done."""
    from ..update import encode_with_report

    if codec not in measured:
        measured[codec] = encode_with_report(update, codec)
    return measured[codec]


def _error(update: Update, codec: CtxCodec, measured: dict[CtxCodec, EncodeReport]) -> float:
    """The container's relative error at ``codec`` (prepared): from a full encode already
    made, else from a dry one (quantizers and transforms only: the ctx coder is lossless,
    and the low-rank alternative it skips only ever lowers the error, so this bound is safe)."""
    from ..update import dry_relative_error

    if codec in measured:
        return measured[codec].relative_error
    return dry_relative_error(update, codec)


def _step_for_error(
    update: Update, codec: CtxCodec, deltas: list[np.ndarray], target: float, measured: dict[CtxCodec, EncodeReport]
) -> float:
    """Largest step with RDOQ error <= target: a secant search on the quantizer alone (on a
    sample of rows when the update is large), then measured checks on dry encodes; on a
    large update the first check is the full encode, which is usually the one returned."""
    from ..rate import finest_step, peak_magnitude, step_for_max_rel_error

    peak = peak_magnitude(deltas)
    if peak == 0.0:
        return 1.0
    lam = codec.dq_lam if codec.quant == "dq" else codec.resolved_lam()

    trials = progress.Trials(f"ctx: searching the step ({codec.quant})")

    def error_of(arrays: list[np.ndarray], weights: list[float] | None = None) -> Callable[[float], float]:
        def error(step: float) -> float:
            err = rdoq_relative_error(arrays, step, lam, codec.ngt, codec.quant, weights, codec.dq_passes)
            trials(f"step {step:.4g}: error {err:.4g}")
            return err

        return error

    step = step_for_max_rel_error(deltas, target)
    deltas = _pooled(deltas)
    large = sum(d.size for d in deltas) > 2 * SAMPLE_ELEMENTS
    if large:
        # the step a sample of rows needs is within a percent or so of the full one
        step = _secant_search(error_of(*_row_sample(deltas)), step, target, peak, SAMPLE_TOLERANCE)
    else:
        step = _secant_search(error_of(deltas), step, target, peak, SEARCH_TOLERANCE)
    # then on what the decoder will produce (row groups, the transform's rounding, the
    # tensor type): dry encodes of the container, from the step found above
    dry: dict[float, float] = {}

    def container_error(trial: float) -> float:
        if trial not in dry:
            if large and not dry:
                # the sample's step usually lands in the band at once: encode it in full,
                # so the search's first trial is also the container returned
                dry[trial] = _measure(update, codec.with_step(trial), measured).relative_error
            else:
                dry[trial] = _error(update, codec.with_step(trial), measured)
            trials(f"step {trial:.4g}: error {dry[trial]:.4g} (container)")
        return dry[trial]

    # a large update settles for a wider band: each trial is a pass over all of it
    step = _secant_search(container_error, step, target, peak, LARGE_TOLERANCE if large else SEARCH_TOLERANCE)
    finest = finest_step(peak)
    for _ in range(100):  # the search found nothing at or below the target: shrink until it holds
        if container_error(step) <= target:
            return step
        if step <= finest:
            break
        step = max(step * 0.995, finest)
    # a target below what levels reach (near the type's precision): at the finest step the
    # tensors are stored exactly where that is smaller, which may meet it
    if _measure(update, codec.with_step(finest), measured).relative_error <= target:
        return finest
    raise InputError(f"ctx: no step reaches relative error {target}")


#: values of an update ctx samples to tell whether its deltas sit on a grid, and the most
#: grid steps a sampled value may span (beyond, the levels are not "small")
GRID_SAMPLE = 1 << 16
GRID_LEVELS = 1 << 12

#: rate control first fits the step on about this many elements (whole rows) of a larger update
SAMPLE_ELEMENTS = 1 << 19
SAMPLE_TOLERANCE = 2e-3
#: ... and accepts a container error this close below the target (rate control's promise
#: is 2%); 0.2% needed four passes over 120M parameters where this needs one or two
LARGE_TOLERANCE = 1e-2


#: the step search quantizes the tensors smaller than this as one pooled vector
POOL_ELEMENTS = 1 << 12


def _pooled(deltas: list[np.ndarray]) -> list[np.ndarray]:
    """The large deltas as they are and the small ones concatenated into one vector.

    A ResNet's or transformer's norm and bias vectors are most of its tensors and few of its
    elements: quantized one by one, their per-call overhead was half of each trial pass of
    the step search. Their pooled error is an estimate like the rest of the search (which
    also skips the kernel transform); the dry container encodes that follow code them as
    the container will."""
    small = [np.asarray(d).reshape(-1) for d in deltas if d.size < POOL_ELEMENTS]
    if len(small) < 2:
        return deltas
    return [d for d in deltas if d.size >= POOL_ELEMENTS] + [np.concatenate(small)]


def _sampled_update(update: Update) -> Update:
    """Every k-th row of the update's large tensors (every k-th run of a long vector; small
    ones whole, kernels kept whole), about SAMPLE_ELEMENTS elements: where ``quant=auto``
    compares its quantizers on a large update before tuning the one it keeps on everything."""
    stride = _sample_stride(_data_size(update))
    changes = {}
    for name, change in update.changes.items():
        rows = None if change.data is None else _sampling_rows(np.asarray(change.data), stride)
        if rows is not None:
            if len(change.shape) >= 2:  # in the tensor's own shape: a kernel transform still fits
                data = np.asarray(change.data).reshape(change.shape)[::stride]
            else:
                data = rows[::stride].reshape(-1)
            change = dataclasses.replace(change, shape=tuple(int(n) for n in data.shape), data=data, base=None, target=None)
        changes[name] = change
    return dataclasses.replace(update, changes=changes)


def _data_size(update: Update) -> int:
    """Elements of the update's tensors that carry data (what its coding passes walk)."""
    return sum(c.size for c in update.changes.values() if c.data is not None)


def _sample_stride(elements: int) -> int:
    """Take every k-th row so that about SAMPLE_ELEMENTS of ``elements`` remain."""
    return -(-elements // SAMPLE_ELEMENTS)


#: a vector (one scan row) is sampled in runs of this many elements
SAMPLE_RUN = 1024


def _sampling_rows(data: np.ndarray, stride: int) -> np.ndarray | None:
    """``data`` as the matrix whose rows a sample takes whole, or None to keep it whole.

    A tensor's rows are its scan rows, when it has at least 4 * stride of them. A vector
    is one scan row, so it is cut into runs of SAMPLE_RUN elements (its last partial run
    left out of the sample); a flattened 20M-parameter update was otherwise searched whole,
    75 s where the same values as a matrix took 6.
    """
    rows, rowlen = layout(data.shape)
    if rows >= 4 * stride:
        return data.reshape(rows, rowlen)
    if rows == 1 and rowlen >= 4 * stride * SAMPLE_RUN:
        return data.reshape(-1)[: rowlen - rowlen % SAMPLE_RUN].reshape(-1, SAMPLE_RUN)
    return None


def _row_sample(deltas: list[np.ndarray]) -> tuple[list[np.ndarray], list[float]]:
    """About SAMPLE_ELEMENTS elements of the large deltas, in whole rows (as the ctx coder
    scans them; runs of a long vector), with the weight each part stands for; small deltas
    whole (weight 1).

    Why stratified: update energy often sits in a few rows (an embedding's frequent
    tokens, a layer's loud output channels), and every k-th row missed enough of it to put
    the sample's error 7% off the whole's on rows with log-normal scales. So a quarter of
    the budget takes the loudest rows whole (weight 1), and the rest is every k'-th of the
    other rows in order of energy (each standing for k' rows: systematic sampling over
    that order covers quiet and loud alike); both parts keep their rows in scan order.
    """
    stride = _sample_stride(sum(d.size for d in deltas))
    arrays: list[np.ndarray] = []
    weights: list[float] = []
    for d in deltas:
        m = _sampling_rows(np.asarray(d), stride)
        if m is None:
            arrays.append(d)
            weights.append(1.0)
            continue
        energy = np.einsum("ij,ij->i", m, m, dtype=np.float64)
        order = np.argsort(-energy, kind="stable")
        budget = -(-len(m) // stride)
        loud = order[: budget // 4]
        rest = order[budget // 4 :]
        k = -(-len(rest) // (budget - len(loud)))
        picked = rest[k // 2 :: k]
        parts = [m[np.sort(loud)], m[np.sort(picked)]]
        arrays += parts if d.ndim >= 2 else [part.reshape(-1) for part in parts]
        weights += [1.0, len(rest) / len(picked)]
    return arrays, weights


def _power_law_step(
    step: float,
    value: float,
    previous: tuple[float, float] | None,
    aim: float,
    exponent: float,
    bounds: tuple[float, float],
    lo: float,
    hi: float,
    widen: float,
) -> float:
    """The next trial step of a secant search in log-log: the power law ``value ~ step**k``
    through ``previous`` and ``(step, value)`` (``k`` clamped to ``bounds``; ``exponent``
    when there is no usable previous point) solved for ``aim``. Outside the bracket
    ``(lo, hi)`` it is replaced by the bracket's geometric middle, or, with one side still
    open, by the known end moved ``widen`` times further out. ``value`` must be > 0."""
    if previous is not None and previous[1] > 0 and previous[1] != value and previous[0] != step:
        exponent = min(max(math.log(value / previous[1]) / math.log(step / previous[0]), bounds[0]), bounds[1])
    proposal = step * (aim / value) ** (1 / exponent)
    if not lo < proposal < hi:
        proposal = math.sqrt(lo * hi) if lo > 0 and hi < math.inf else (lo * widen if lo > 0 else hi / widen)
    return proposal


def _secant_search(error: Callable[[float], float], step: float, target: float, peak: float, tolerance: float) -> float:
    """Largest step with ``error(step) <= target`` to within ``tolerance`` (relative, on the
    error), from the guess ``step``.

    Error grows about like a power of the step (err ~ c * step**alpha, alpha near 1):
    secant steps in log-log, aimed a hair below the target so they tend to land on the
    feasible side, kept inside the bracket known so far; two to four passes where a
    bisection took six to nine. Returns the smallest step tried if none met the target.
    """
    from ..rate import finest_step

    seen: dict[float, float] = {}
    lo, e_lo = 0.0, 0.0  # largest step known to meet the target, and its error
    hi = math.inf  # smallest step known to miss it
    err = seen[step] = error(step)
    previous: tuple[float, float] | None = None
    for _ in range(40):
        if err <= target:
            if step > lo:
                lo, e_lo = step, err
        else:
            hi = min(hi, step)
        if e_lo >= target * (1 - tolerance) or (lo > 0 and hi / lo < 1 + tolerance):
            break
        if err > 0:
            proposal = _power_law_step(step, err, previous, target * (1 - tolerance / 2), 1.0, (0.3, 3.0), lo, hi, 2.0)
        else:
            proposal = step * 4
        proposal = min(max(proposal, finest_step(peak)), peak * 4)
        if proposal in seen:
            break
        previous = (step, err)
        step, err = proposal, error(proposal)
        seen[step] = err
    return lo if lo > 0 else min(seen)


def _step_for_bits(
    update: Update, codec: CtxCodec, bits: float, measured: dict[CtxCodec, EncodeReport], tolerance: float = 0.005
) -> float:
    """Step whose container costs ``bits`` per coded parameter (measured, within ``tolerance``).

    Secant steps on log(bits) against log(step) (a power law over a few octaves), kept
    inside the bracket measured so far: every trial is a full encode, and this needs three
    to five where bisecting from a x4 bracket took about seven.
    """
    seen: dict[float, float] = {}
    trials = progress.Trials(f"ctx: searching the step for {bits} bits/param ({codec.quant})")

    def rate(step: float) -> float:
        if step not in seen:
            seen[step] = _measure(update, codec.with_step(step), measured).bits_per_parameter
            trials(f"step {step:.4g}: {seen[step]:.4g} bits/param")
        return seen[step]

    from ..rate import finest_step, peak_magnitude, step_for_max_rel_error, step_within_budget

    deltas = [d for d in update.float_deltas() if d.size]
    start = step_for_max_rel_error(deltas, 0.1)
    # finer than finest_step only spends bits on rounding noise (and overflows the levels):
    # a target beyond what it costs gets it, the update at its precision or exact
    smallest, largest = max(start * 4.0**-40, finest_step(peak_magnitude(deltas))), start * 4.0**40
    lo, hi = 0.0, math.inf  # largest step known to cost >= bits, smallest known to cost <= bits
    step, r = start, rate(start)
    previous: tuple[float, float] | None = None
    for _ in range(80):
        if abs(r - bits) <= tolerance * bits:
            return step
        if r >= bits:
            lo = max(lo, step)
        else:
            hi = min(hi, step)
            if step <= smallest:
                return step
        if lo > 0 and hi < math.inf and hi / lo < 1 + 1e-9:
            break
        # a first guess of the exponent: bits fall a little slower than the step grows
        proposal = max(_power_law_step(step, r, previous, bits, -0.7, (-4.0, -0.05), lo, hi, 4.0), smallest)
        if proposal > largest:
            raise InputError(f"ctx: {bits} bits/param is below what the container's headers cost")
        previous = (step, r)
        step, r = proposal, rate(proposal)
    return step_within_budget(seen, bits)
