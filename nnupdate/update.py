"""The domain object: an update is a set of named tensor changes plus metadata.

``diff(base, new)`` makes one; ``encode`` turns it into container bytes through a
codec; ``decode`` reads it back; ``apply(base, update)`` rebuilds the new tensors.
Nothing here knows which framework produced the tensors.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from . import dtypes, parallel
from .codecs import pipeline as pipelines
from .codecs.base import ArraySpec, ArrayToArray, Stage
from .codecs.lowrank import best_lowrank
from .codecs.pipeline import Pipeline
from .codecs.presets import Codec, Plan, entropy_tails, parse_codec, plan_statistic, statistic_step, ulp_tails
from .errors import BaseMismatchError, CodecError, InputError, LimitError, ShapeMismatchError
from .fingerprint import as_numpy_tensors, fingerprint, storage_view, tensor_dtype_name
from .format import (
    DEFAULT_LIMITS,
    Combine,
    Container,
    Header,
    Limits,
    Member,
    Role,
    TensorRecord,
    UpdateKind,
    parse,
    serialize,
)
from .format.container import group_shape

PRODUCER = "nnupdate"
#: combine modes whose tensor must be in the base (its fingerprint covers them)
REFERENCING = (Combine.ADD, Combine.XOR, Combine.ULP, Combine.KEEP, Combine.REMOVE)


@dataclass(slots=True)
class TensorChange:
    """How one tensor changes.

    ``data`` depends on ``combine``: ADD, the delta (float64 for float tensors, the
    wrapped integer difference for integer tensors); REPLACE, the new values; XOR, the
    XOR of the bit patterns; ULP, the steps between representable values (signed ints);
    KEEP and REMOVE, nothing. ``base``/``target`` are kept on the encoding side so a
    lossless code (ULP, XOR) can replace a float ADD.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    combine: Combine
    data: np.ndarray | None = None
    role: Role = Role.UNKNOWN
    base: np.ndarray | None = None
    target: np.ndarray | None = None
    #: the pipeline that produced ``data``, for decoded updates
    pipeline: Pipeline | None = None
    #: bytes of the TNSR payload, for decoded updates
    payload_bytes: int = 0
    #: spatial shape of the kernels when this is a stack of convolutions of one kernel
    #: shape (a row group, whose own shape is only ``(rows, L)``); see :func:`kernel_shape`
    kernel: tuple[int, ...] = ()
    #: encoder-side facts of ``base``/``target``, computed once (rate control encodes many
    #: times): the largest magnitude of a new value, and the exact code's estimated
    #: bits/element (see :func:`_target_peak`, :func:`_exact_bits`)
    target_peak: float | None = field(default=None, repr=False, compare=False)
    exact_bits: float | None = field(default=None, repr=False, compare=False)
    #: the exact code (ULP payload and tail) once made: it does not depend on the step
    exact_code: tuple[bytes, list[Stage]] | None = field(default=None, repr=False, compare=False)
    #: the members of a TGRP group coded as this one change: their base and target are
    #: joined only when needed (see :func:`_has_reference`, :func:`_join_reference`)
    parts: tuple[TensorChange, ...] = field(default=(), repr=False, compare=False)

    @property
    def size(self) -> int:
        return math.prod(self.shape)  # Python ints: called per member when planning groups

    def values_for(self, combine: Combine) -> np.ndarray:
        """The array a pipeline must code when the change is stored as ``combine``."""
        if combine == self.combine and self.data is not None:
            return self.data
        if combine == Combine.XOR and self.base is not None and self.target is not None:
            return xor_bits(self.base, self.target, self.dtype)
        if combine == Combine.ULP and self.base is not None and self.target is not None and dtypes.is_float(self.dtype):
            return ulp_steps(self.base, self.target, self.dtype)
        raise CodecError(f"{self.name}: cannot store a {self.combine.name} change as {combine.name}")


@dataclass
class Update:
    """Named tensor changes plus the header fields of the container."""

    changes: dict[str, TensorChange] = field(default_factory=dict)
    kind: UpdateKind = UpdateKind.DELTA
    base_fingerprint: bytes | None = None
    round: int = 0
    producer: str = PRODUCER
    metadata: dict[str, str] = field(default_factory=dict)
    #: ancillary chunks carried through unchanged
    extra_chunks: list[tuple[bytes, bytes]] = field(default_factory=list)

    def float_deltas(self, *, include_statistics: bool = False) -> list[np.ndarray]:
        """The float ADD deltas a lossy codec's rate control works on.

        Running statistics (role STATISTIC) are left out unless asked for: their deltas
        can be orders of magnitude larger than the learned parameters' (a BatchNorm
        running_var moving to new data), so one global step fitted to all of them would
        round every weight delta to zero. Codecs code them separately (``Codec.plan``).
        """
        return [c.data for c in self.float_delta_changes(include_statistics=include_statistics) if c.data is not None]

    def float_delta_changes(self, *, include_statistics: bool = False) -> list[TensorChange]:
        """The changes behind :meth:`float_deltas` (for codecs that need names or shapes too)."""
        return [
            c
            for c in self.changes.values()
            if c.combine == Combine.ADD
            and dtypes.is_float(c.dtype)
            and c.data is not None
            and (include_statistics or c.role != Role.STATISTIC)
        ]

    def encode(self, codec: Codec | str = "uniform") -> bytes:
        """The container bytes of this update coded with ``codec``."""
        return encode_with_report(self, codec).data

    @property
    def num_parameters(self) -> int:
        """Elements of every tensor the update carries (KEEP/REMOVE excluded)."""
        return sum(c.size for c in self.changes.values() if c.combine not in (Combine.KEEP, Combine.REMOVE))


def guess_role(name: str, array: np.ndarray) -> Role:
    """A tensor's role from its name and type (PyTorch/Keras naming); UNKNOWN if unsure."""
    if array.dtype.kind in "iub":
        return Role.INT_BUFFER
    lowered = name.lower()
    if any(key in lowered for key in ("running_mean", "running_var", "moving_mean", "moving_variance")):
        return Role.STATISTIC
    if "norm" in lowered or ".bn" in lowered:
        return Role.NORM
    if lowered.endswith("bias"):
        return Role.BIAS
    if "embed" in lowered:
        return Role.EMBEDDING
    if lowered.endswith("weight"):
        return Role.WEIGHT
    return Role.UNKNOWN


def _as_array(value: object, name: str) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype == object:
        raise InputError(f"tensor {name!r} is not numeric")
    try:
        tensor_dtype_name(array)  # refuses unsupported types
    except InputError as exc:
        raise InputError(f"tensor {name!r}: {exc}") from None
    return array


def diff(
    base: Mapping[str, np.ndarray],
    new: Mapping[str, np.ndarray],
    *,
    round: int = 0,
    producer: str = PRODUCER,
    metadata: Mapping[str, str] | None = None,
) -> Update:
    """The update turning ``base`` into ``new`` (both name -> array mappings).

    Tensors only in ``new`` are added (REPLACE), tensors only in ``base`` are removed,
    bitwise-equal tensors are KEEP, others are deltas. A tensor whose dtype or shape
    changed is replaced outright. Values may be numpy arrays or torch tensors (a
    ``state_dict()`` as it is).
    """
    base = as_numpy_tensors(base)
    new = as_numpy_tensors(new)
    changes: dict[str, TensorChange] = {}
    referenced: list[str] = []
    for name, value in new.items():
        target = _as_array(value, name)
        dtype = tensor_dtype_name(target)
        shape = tuple(int(d) for d in target.shape)
        role = guess_role(name, target)
        if name not in base:
            changes[name] = TensorChange(name, dtype, shape, Combine.REPLACE, storage_view(target), role)
            continue
        source = _as_array(base[name], name)
        if tensor_dtype_name(source) != dtype or source.shape != target.shape:
            changes[name] = TensorChange(name, dtype, shape, Combine.REPLACE, storage_view(target), role)
            continue
        referenced.append(name)
        if _same_bits(source, target):
            changes[name] = TensorChange(name, dtype, shape, Combine.KEEP, None, role)
            continue
        if dtype == "bool":  # no arithmetic on booleans: store which elements flipped
            changes[name] = TensorChange(name, dtype, shape, Combine.XOR, xor_bits(source, target, dtype), role, base=source, target=target)
            continue
        if dtypes.is_float(dtype):
            with np.errstate(invalid="ignore"):  # inf - inf: caught just below
                delta = dtypes.difference_float64(storage_view(target), storage_view(source), dtype)
            if not np.isfinite(delta).all():
                # An infinity or NaN where the tensor changed (a -inf attention mask that
                # grew, a diverged weight) has no finite delta to quantize: store the bit
                # patterns' XOR instead, which every codec codes losslessly, so the rest of
                # the update stays lossy and the error target is met on the finite tensors.
                changes[name] = TensorChange(name, dtype, shape, Combine.XOR, xor_bits(source, target, dtype), role, base=source, target=target)
                continue
        else:
            delta = storage_view(target) - storage_view(source)  # wraps, exactly invertible
        changes[name] = TensorChange(name, dtype, shape, Combine.ADD, delta, role, base=source, target=target)
    for name in base:
        if name not in new:
            source = _as_array(base[name], name)
            referenced.append(name)
            changes[name] = TensorChange(
                name, tensor_dtype_name(source), tuple(source.shape), Combine.REMOVE, None, guess_role(name, source)
            )
    return Update(
        changes,
        kind=UpdateKind.DELTA,
        base_fingerprint=fingerprint(base, referenced),
        round=round,
        producer=producer,
        metadata=dict(metadata or {}),
    )


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Bitwise equality: -0.0 differs from 0.0 and NaN payloads count (value equality would
    mark such tensors KEEP and break bit-exact lossless updates)."""
    sa, sb = storage_view(a), storage_view(b)
    unsigned = np.dtype(f"u{sa.dtype.itemsize}")
    return bool(np.array_equal(sa.view(unsigned), sb.view(unsigned)))


def full(tensors: Mapping[str, np.ndarray], **header: object) -> Update:
    """An update of kind FULL carrying complete weights (no base)."""
    changes = {}
    for name, value in tensors.items():
        array = _as_array(value, name)
        changes[name] = TensorChange(
            name, tensor_dtype_name(array), tuple(array.shape), Combine.REPLACE, storage_view(array), guess_role(name, array)
        )
    return Update(changes, kind=UpdateKind.FULL, **header)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- encoding


@dataclass
class TensorReport:
    """What coding one tensor cost and how much it damaged it."""

    name: str
    combine: Combine
    elements: int
    payload_bytes: int
    pipeline: str
    squared_error: float = 0.0
    squared_norm: float = 0.0
    #: a running statistic: coded with a step of its own, kept out of the update's error
    statistic: bool = False


@dataclass
class EncodeReport:
    data: bytes
    codec: str
    tensors: list[TensorReport]
    seconds: float

    @property
    def coded_parameters(self) -> int:
        return sum(t.elements for t in self.tensors if t.combine not in (Combine.KEEP, Combine.REMOVE))

    @property
    def bits_per_parameter(self) -> float:
        n = self.coded_parameters
        return 8 * len(self.data) / n if n else 0.0

    @property
    def relative_error(self) -> float:
        """||delta - decoded|| / ||delta|| over the learned float tensors.

        Running statistics are left out, as in rate control (``Update.float_deltas``):
        their deltas can dwarf the weights', and they are coded at a fixed 1% error of
        their own (:attr:`statistics_relative_error`).
        """
        return _relative([t for t in self.tensors if not t.statistic])

    @property
    def statistics_relative_error(self) -> float:
        return _relative([t for t in self.tensors if t.statistic])

    @property
    def mse(self) -> float:
        learned = [t for t in self.tensors if not t.statistic and t.squared_norm > 0]
        n = sum(t.elements for t in learned)
        return sum(t.squared_error for t in learned) / n if n else 0.0


def _relative(reports: list[TensorReport]) -> float:
    norm = sum(t.squared_norm for t in reports)
    return float(np.sqrt(sum(t.squared_error for t in reports) / norm)) if norm > 0 else 0.0


def encode_change(
    change: TensorChange, codec: Codec, plan: Plan | None = None, factor: bool = True, dry: bool = False
) -> tuple[TensorRecord, TensorReport]:
    """Code one tensor change: run the plan's array stages once, keep the smallest tail.

    With a codec that tries ``lowrank`` (and ``factor``), a matrix delta is also coded as
    two quantized factors at no more than the plan's measured error; the smaller wins.
    ``dry`` measures only the distortion: when every tail is lossless the entropy coding
    cannot change it, so it is skipped (payload empty), as is the low-rank trial (which
    only ever lowers the error).
    """
    plan = plan or codec.plan(change)
    record = TensorRecord(change.name, change.dtype, change.shape, plan.combine, change.role)
    report = TensorReport(change.name, plan.combine, change.size, 0, "", statistic=change.role == Role.STATISTIC)
    if plan.combine in (Combine.KEEP, Combine.REMOVE):
        return record, report
    values = change.values_for(plan.combine)
    spec = ArraySpec(change.shape, pipeline_dtype(change.dtype, plan.combine))
    symbols, symbol_spec, prefix = pipelines.run_array_stages(plan.prefix, values.reshape(change.shape), spec)
    # dry only where the distortion can be had without the tail: integer symbols from array
    # stages, then lossless stages only
    dry = dry and bool(prefix) and not dtypes.is_float(symbol_spec.dtype) and all(s.lossless for tail in plan.tails for s in tail)
    if dry:
        best = (b"", list(plan.tails[0]))
    else:
        tails = plan.narrow(symbols, symbol_spec) if plan.narrow is not None else plan.tails
        best = pipelines.smallest_tail(tails, symbols, symbol_spec, change.name)
    stages = Pipeline(tuple(prefix + best[1]))
    record.stages = [s.record() for s in stages.stages]
    record.payload = best[0]
    report.payload_bytes = len(best[0])
    report.pipeline = stages.describe()
    if plan.combine == Combine.ADD and dtypes.is_float(change.dtype):
        # Distortion is measured on what the decoder will actually produce.
        if prefix and not dtypes.is_float(symbol_spec.dtype) and all(s.lossless for s in best[1]):
            # Integer symbols through a lossless tail (exhaustively round-trip tested) come
            # back unchanged, so the decoder's output is the array stages' inverse of the
            # symbols we hold: skip re-decoding the bytes.
            decoded = symbols
            for stage, out_spec in zip(reversed(prefix), reversed(_specs(prefix, spec))):
                assert isinstance(stage, ArrayToArray)
                decoded = stage.decode(decoded, out_spec)
        else:
            decoded = pipelines.decode(stages, record.payload, spec)
        x = np.asarray(values, dtype=np.float64).reshape(-1)
        err = dtypes.to_float64(decoded, change.dtype).reshape(-1) - x
        # einsum, not ``@``: BLAS dot spins up its thread pool per call, which costs more
        # than the arithmetic on the small tensors of a typical model.
        report.squared_error = float(np.einsum("i,i->", err, err))
        if _rounding_may_matter(change, report.squared_error):
            _join_reference(change)
            err = _applied_error(change, decoded)
            report.squared_error = float(np.einsum("i,i->", err, err))
        report.squared_norm = float(np.einsum("i,i->", x, x))
        if not dry and factor and codec.try_lowrank and change.role != Role.STATISTIC and len(change.shape) >= 2 and report.squared_error > 0:
            choice = best_lowrank(values, spec, report.squared_error, entropy_tails("auto", change.size))
            if choice is not None and len(choice.payload) < len(record.payload):
                factored = Pipeline(tuple(choice.stages))
                record.stages = [s.record() for s in factored.stages]
                record.payload = choice.payload
                report.payload_bytes = len(choice.payload)
                report.pipeline = factored.describe()
                report.squared_error = choice.squared_error
        if not dry and not codec.lossless and codec.exact_when_smaller:  # zero error is no reason to keep a larger payload
            _exact_if_smaller(change, record, report)
    return record, report


def _exact_if_smaller(change: TensorChange, record: TensorRecord, report: TensorReport) -> None:
    """Store a float ``change`` bit-exactly (ULP steps, lossless tails) when that is no larger.

    Two cases make the exact code win. Small updates of 16-bit checkpoints: a bfloat16
    fine-tune moves most weights by 0 or 1 ULP, exactly coded in about 2.2 bits/param,
    where levels at 5% error took 2.3. And error targets near the type's own precision
    (``max_rel_error=1e-10``), where levels cost more than the values themselves. The
    exact code has no error, so when it is no larger it dominates. A sampled estimate,
    which runs below the measured size, skips the trial where it cannot pay.
    """
    if not _has_reference(change) or not dtypes.is_float(change.dtype):
        return
    if _exact_bits(change) * change.size > 8 * report.payload_bytes:
        return
    if change.exact_code is None:
        _join_reference(change)
        steps = change.values_for(Combine.ULP).reshape(change.shape)
        spec = ArraySpec(change.shape, pipeline_dtype(change.dtype, Combine.ULP))
        change.exact_code = pipelines.smallest_tail(ulp_tails(), steps, spec, change.name)
    payload, tail = change.exact_code
    if len(payload) > report.payload_bytes:
        return
    exact = Pipeline(tuple(tail))
    record.combine = report.combine = Combine.ULP
    record.stages = [s.record() for s in exact.stages]
    record.payload = payload
    report.payload_bytes = len(payload)
    report.pipeline = exact.describe()
    report.squared_error = 0.0


#: elements whose ULP steps estimate the exact code's size
EXACT_SAMPLE = 1 << 12


def _exact_bits(change: TensorChange) -> float:
    """Bits/element of the exact code of ``change``, from below (cached): on a strided
    sample of the ULP steps, their mean bit length plus a sign bit per nonzero step
    (measured 1.2-2.5 bits under the ctx coder's size)."""
    if change.exact_bits is None:
        assert change.base is not None and change.target is not None
        base, target = np.asarray(change.base).reshape(-1), np.asarray(change.target).reshape(-1)
        every = max(1, base.size // EXACT_SAMPLE)
        magnitude = np.abs(ulp_steps(base[::every], target[::every], change.dtype).astype(np.float64))
        change.exact_bits = float(np.mean(np.log2(1.0 + magnitude)) + np.mean(magnitude > 0)) if magnitude.size else 0.0
    return change.exact_bits


def _target_peak(change: TensorChange) -> float:
    """Largest magnitude of a new value of a float32/float64 ``change`` (cached)."""
    if change.target_peak is None:
        from .rate import peak_magnitude

        change.target_peak = peak_magnitude([np.asarray(change.target)])
    return change.target_peak


def _has_reference(change: TensorChange) -> bool:
    """Whether the base and new values of ``change`` are known (a group: every member's);
    a decoded update re-encoded, or a residual carried by error feedback, has none."""
    if change.base is not None and change.target is not None:
        return True
    return bool(change.parts) and all(p.base is not None and p.target is not None for p in change.parts)


def _join_reference(change: TensorChange) -> None:
    """A group's base and target: its members' storage, joined in member order (once)."""
    if change.base is None and change.parts:
        change.base = np.concatenate([storage_view(np.asarray(p.base)).reshape(-1) for p in change.parts]).reshape(change.shape)
        change.target = np.concatenate([storage_view(np.asarray(p.target)).reshape(-1) for p in change.parts]).reshape(change.shape)


def _rounding_may_matter(change: TensorChange, squared_error: float) -> bool:
    """Whether the applied model's error (:func:`_applied_error`) can differ from the
    delta's by more than 0.005%: always for 16-bit floats; for wider ones only when half
    a ULP of the largest new value, on every element, is not negligible against the
    delta's error (rounding moves each element by at most that; a float32 update at a few
    percent error is spared the extra passes). Needs base and target (a
    decoded update re-encoded, or a residual carried by error feedback, has none)."""
    if not _has_reference(change):
        return False
    if dtypes.storage_dtype(change.dtype).itemsize == 2:
        return True
    half_ulp = _target_peak(change) * (2.0**-24 if change.dtype == "float32" else 2.0**-53)
    if not np.isfinite(half_ulp) or squared_error <= 0.0:
        return True
    # |a + r|^2 - |a|^2 = 2 a.r + |r|^2 with every |r_i| <= half_ulp: relative to |a|^2,
    # at most 2 half_ulp / |a| + n half_ulp^2 / |a|^2
    bound = 2.0 * half_ulp / math.sqrt(squared_error) + change.size * half_ulp * half_ulp / squared_error
    return bound > 1e-4


def _applied_error(change: TensorChange, decoded: np.ndarray) -> np.ndarray:
    """Element-wise ``apply(base, decoded) - target`` in binary64: the error a user of the
    new model sees (``decoded`` is the pipeline's output in the tensor's storage type).

    Why not ``decoded - delta``: ``apply`` rounds base + delta to the tensor's type. For
    16-bit floats that often lands on the new value exactly (a bfloat16 layer coded at 5%
    delta error came out at 3.8%); for float32 it adds up to half a ULP of each weight,
    which is visible when the delta is a few ULPs (a fine-tune at a low learning rate: a
    5% target came out at 5.4%)."""
    assert change.base is not None and change.target is not None
    applied = _add_float(storage_view(change.base), np.asarray(decoded).reshape(change.shape), change.dtype)
    return (dtypes.to_float64(applied, change.dtype) - dtypes.to_float64(storage_view(change.target), change.dtype)).reshape(-1)


def _specs(prefix: list, spec: ArraySpec) -> list[ArraySpec]:
    """Input spec of every array stage of ``prefix``."""
    specs = [spec]
    for stage in prefix[:-1]:
        specs.append(stage.encoded_spec(specs[-1]))
    return specs


def kernel_shape(change: TensorChange) -> tuple[int, ...]:
    """Spatial shape of a convolution's kernels (its dimensions after the first two), or of
    the kernels of a row group; ``()`` for anything else."""
    if change.kernel:
        return change.kernel
    return tuple(change.shape[2:]) if len(change.shape) >= 3 else ()


#: Float deltas with at most this many elements are coded together in one TGRP group.
GROUP_MAX_ELEMENTS = 4096
#: ... at most this many per group, so a member table stays far below the readers'
#: max_header_bytes even with long names (huge models get several groups).
GROUP_MAX_MEMBERS = 2048


def _groupable(change: TensorChange, codec: Codec, any_size: bool = False) -> bool:
    return (
        codec.groupable
        and not codec.lossless
        and change.combine == Combine.ADD
        and change.data is not None
        and dtypes.is_float(change.dtype)
        and change.role != Role.STATISTIC
        and change.size > 0
        and (any_size or change.size <= GROUP_MAX_ELEMENTS)
    )


def _plan_groups(update: Update, codec: Codec) -> dict[str, list[TensorChange]]:
    """First member's name -> members, for every dtype with two or more small float deltas.

    Biases and normalisation parameters are tiny: coded alone, each would pay a chunk
    frame, a name, a pipeline and an entropy model for a few dozen values. Together they
    share all of that (spec/FORMAT.md, TGRP). Codecs with ``row_groups`` first stack the
    convolution weights that share a row length into groups of their own, which their
    pipeline codes as one matrix of those rows (linear layers stay apart: their deltas
    may be worth a low-rank code, which a stack of layers is not).
    """
    groups: dict[str, list[TensorChange]] = {}
    taken: set[str] = set()
    if codec.row_groups:
        by_rows: dict[tuple[str, int, tuple[int, ...]], list[TensorChange]] = {}
        for change in update.changes.values():
            # convolutions only: linear layers stay on their own, where a low-rank code may pay;
            # one kernel shape per group, so a kernel transform fits every member
            if _groupable(change, codec, any_size=True) and len(change.shape) >= 3 and change.size:
                by_rows.setdefault((change.dtype, change.size // change.shape[0], kernel_shape(change)), []).append(change)
        for members in by_rows.values():
            for chunk in _chunks(members, ROW_GROUP_MAX_ELEMENTS):
                groups[chunk[0].name] = chunk
                taken.update(m.name for m in chunk)
    by_dtype: dict[str, list[TensorChange]] = {}
    for change in update.changes.values():
        if change.name not in taken and _groupable(change, codec):
            by_dtype.setdefault(change.dtype, []).append(change)
    for members in by_dtype.values():
        if codec.adaptive_scan:
            # quietest first: an adaptive coder then sees the magnitudes of the concatenation
            # rise steadily instead of jumping between, say, a BatchNorm scale and a bias
            # (ctx on ResNet-56: the group 3-5% smaller, 0.1-0.5% of the container). By
            # factor-4 class of RMS, stable: members of one scale keep the update's order, so
            # the member table (names, zstd-packed) is not shuffled where nothing is gained
            members.sort(key=_scale_class)
        for chunk in _chunks(members, GROUP_MAX_ELEMENTS * GROUP_MAX_MEMBERS):
            groups[chunk[0].name] = chunk
    return groups


def _scale_class(change: TensorChange) -> float:
    """floor(log4 RMS) of the change's data (-inf for an all-zero one)."""
    data = np.asarray(change.data, dtype=np.float64).reshape(-1)
    rms = float(np.sqrt(np.einsum("i,i->", data, data) / max(data.size, 1)))
    return math.floor(math.log2(rms) / 2) if rms > 0 else -math.inf


#: a row group holds at most this many elements (one record's decode stays small)
ROW_GROUP_MAX_ELEMENTS = 1 << 22


def _chunks(members: list[TensorChange], max_elements: int) -> list[list[TensorChange]]:
    """``members`` cut into runs of at most GROUP_MAX_MEMBERS members and ``max_elements``
    elements; runs of a single member are dropped (it is coded alone)."""
    runs: list[list[TensorChange]] = [[]]
    size = 0
    for m in members:
        if runs[-1] and (len(runs[-1]) >= GROUP_MAX_MEMBERS or size + m.size > max_elements):
            runs.append([])
            size = 0
        runs[-1].append(m)
        size += m.size
    return [run for run in runs if len(run) > 1]


def _statistic_groups(update: Update, codec: Codec) -> tuple[list[tuple[list[TensorChange], float]], dict[str, float]]:
    """Groups of small running statistics, each with the one step they share (their smallest),
    and the own step of every small statistic (the ungrouped ones are coded with it).

    Coded alone, each statistic vector pays a record (~55 bytes: frame, name, pipeline,
    model) for a few dozen values. In a group every member is quantized with the smallest
    member step, so each stays within its own error target, at ``n log2(step / smallest)``
    extra bits; walking them by increasing step, a member joins the current group while
    that costs less than the record it saves.
    """
    if not codec.separate_statistics or codec.lossless:
        return [], {}
    candidates = [
        c for c in update.changes.values()
        if c.role == Role.STATISTIC and c.combine == Combine.ADD and c.data is not None
        and dtypes.is_float(c.dtype) and 0 < c.size <= GROUP_MAX_ELEMENTS
    ]
    own = {c.name: statistic_step(np.asarray(c.data)) for c in candidates}
    by_dtype: dict[str, list[tuple[float, TensorChange]]] = {}
    for c in candidates:
        by_dtype.setdefault(c.dtype, []).append((own[c.name], c))
    groups: list[tuple[list[TensorChange], float]] = []
    for items in by_dtype.values():
        items.sort(key=lambda t: t[0])
        current: list[TensorChange] = []
        smallest = 0.0
        for step, change in items:
            if current and change.size * math.log2(step / smallest) <= RECORD_BITS and len(current) < GROUP_MAX_MEMBERS:
                current.append(change)
                continue
            if len(current) > 1:
                groups.append((current, smallest))
            current, smallest = [change], step
        if len(current) > 1:
            groups.append((current, smallest))
    return groups, own


#: roughly what a record of its own costs a small tensor (frame, name, pipeline, model)
RECORD_BITS = 8 * 48


def _encode_group(
    members: list[TensorChange], codec: Codec, shared_step: float | None = None, dry: bool = False
) -> tuple[TensorRecord, TensorReport]:
    """One TGRP record for ``members``; a group of running statistics (``shared_step``
    given) is quantized with that step instead of the codec's plan."""
    first = members[0]
    stored = [Member(m.name, m.dtype, m.shape, m.role) for m in members]
    shape = group_shape(stored)
    data = np.concatenate([np.asarray(m.data).reshape(-1) for m in members]).reshape(shape)
    combined = TensorChange(f"group:{first.name}", first.dtype, shape, Combine.ADD, data, first.role)
    combined.parts = tuple(members)
    if _has_reference(combined):
        # the members' cached facts, so the group (rebuilt per encode) does not recompute them
        combined.exact_bits = sum(_exact_bits(m) * m.size for m in members) / max(1, sum(m.size for m in members))
        if first.dtype in ("float32", "float64"):
            combined.target_peak = max(_target_peak(m) for m in members)
    kernels = {kernel_shape(m) for m in members}
    if len(shape) == 2 and len(kernels) == 1:
        combined.kernel = kernels.pop()
    plan = None if shared_step is None else plan_statistic(combined, shared_step)
    try:
        record, report = encode_change(combined, codec, plan, factor=False, dry=dry)  # stacked layers are not one matrix
    except CodecError as exc:  # "group:<first name>" alone would not say where the tensor went
        listed = ", ".join(m.name for m in members[:4]) + (", ..." if len(members) > 4 else "")
        raise CodecError(f"{exc} (coded as one group of {len(members)} small tensors: {listed})") from exc
    record.name = ""
    record.members = stored
    report.name = f"group of {len(members)} ({first.name}, ...)"
    return record, report


def encode_records(update: Update, codec: Codec, dry: bool = False) -> tuple[list[TensorRecord], list[TensorReport]]:
    """Every record of the container (tensors and groups, in update order) with its report.

    ``codec`` must already be prepared; rate control calls this directly to measure
    payloads at a trial step without assembling a container, or (``dry``) only the
    distortion each record would have (see :func:`encode_change`).
    """
    groups = _plan_groups(update, codec)
    steps: dict[str, float] = {}
    statistic_groups, own_steps = _statistic_groups(update, codec)
    for members, step in statistic_groups:
        groups[members[0].name] = members
        steps[members[0].name] = step
    grouped = {m.name for members in groups.values() for m in members}
    jobs: list[Callable[[], tuple[TensorRecord, TensorReport]]] = []
    weights: list[int] = []
    for change in update.changes.values():
        if change.name in groups:
            members = groups[change.name]
            jobs.append(functools.partial(_encode_group, members, codec, steps.get(change.name), dry))
            weights.append(sum(m.size for m in members))
        elif change.name in grouped:
            continue
        elif change.name in own_steps:  # a small statistic alone: its step is already known
            jobs.append(functools.partial(encode_change, change, codec, plan_statistic(change, own_steps[change.name]), dry=dry))
            weights.append(change.size)
        else:
            jobs.append(functools.partial(encode_change, change, codec, dry=dry))
            weights.append(change.size)
    done = parallel.ordered_map(lambda job: job(), jobs, weights, phase=None if dry else "encoding")
    return [record for record, _ in done], [report for _, report in done]


def dry_relative_error(update: Update, codec: Codec) -> float:
    """The relative error ``codec`` (prepared) would give ``update``, from a dry encode:
    quantizers and transforms only where the tails are lossless (see :func:`encode_change`).
    The exact and low-rank substitutions it skips only ever lower the error: a safe bound."""
    return EncodeReport(b"", codec.spec(), encode_records(update, codec, dry=True)[1], 0.0).relative_error


def encode_with_report(update: Update, codec: Codec | str = "uniform") -> EncodeReport:
    """Encode ``update`` and report per-tensor bytes and distortion (measured, not estimated)."""
    started = time.perf_counter()
    chosen, done = parse_codec(codec).prepare_measured(update)
    if done is not None:
        return dataclasses.replace(done, seconds=time.perf_counter() - started)
    records, reports = encode_records(update, chosen)
    header = Header(update.kind, update.base_fingerprint, update.round, update.producer, dict(update.metadata))
    data = serialize(Container(header, records, list(update.extra_chunks)))
    return EncodeReport(data, chosen.spec(), reports, time.perf_counter() - started)


def xor_bits(source: np.ndarray, target: np.ndarray, dtype: str) -> np.ndarray:
    """The XOR of two tensors' bit patterns, as the unsigned type an XOR pipeline codes."""
    bits = np.dtype(pipeline_dtype(dtype, Combine.XOR))
    return storage_view(source).view(bits) ^ storage_view(target).view(bits)


def ulp_steps(source: np.ndarray, target: np.ndarray, dtype: str) -> np.ndarray:
    """How many representable values of ``dtype`` each target element lies above its source
    (two's complement of the element width, wrapping), the array a ULP pipeline codes.

    Why: a fine-tuning step moves a weight by a few units in its last place, so the
    steps are small integers (median 3 for a ResNet-56 diff stored as bfloat16), where
    the XOR of the bit patterns flips every bit a carry crosses. Exact for every pattern,
    NaN and infinity included (spec/FORMAT.md §4.3).
    """
    unsigned = np.dtype(pipeline_dtype(dtype, Combine.XOR))
    a = _ordered(storage_view(source).view(unsigned))
    b = _ordered(storage_view(target).view(unsigned))
    return np.subtract(b, a).view(pipeline_dtype(dtype, Combine.ULP))  # unsigned: wraps


def _ordered(bits: np.ndarray) -> np.ndarray:
    """IEEE bit patterns -> unsigned integers in the order of the values they encode
    (negatives inverted, positives above them with the sign bit set; -0 and +0 adjacent)."""
    top = bits.dtype.type(1 << (8 * bits.dtype.itemsize - 1))
    return np.where(bits & top, ~bits, bits | top)


def _unordered(order: np.ndarray) -> np.ndarray:
    """The inverse of :func:`_ordered`."""
    top = order.dtype.type(1 << (8 * order.dtype.itemsize - 1))
    return np.where(order & top, order ^ top, ~order)


def moved_by_ulps(stored: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Bit patterns of ``stored`` (float storage) moved by ``steps`` (ULP pipeline type)."""
    unsigned = np.dtype(f"u{stored.dtype.itemsize}")
    order = _ordered(stored.view(unsigned)) + np.asarray(steps).view(unsigned)  # wraps
    return _unordered(order).view(stored.dtype)


def pipeline_dtype(dtype: str, combine: Combine) -> str:
    """Element type a tensor's pipeline produces: XOR codes bit patterns as unsigned ints,
    ULP the steps as signed ints, of the element's width."""
    if combine == Combine.XOR:
        return {1: "uint8", 2: "uint16", 4: "uint32", 8: "uint64"}[dtypes.storage_dtype(dtype).itemsize]
    if combine == Combine.ULP:
        return {2: "int16", 4: "int32", 8: "int64"}[dtypes.storage_dtype(dtype).itemsize]
    return dtype


# ----------------------------------------------------------------------------- decoding


def decode_record(record: TensorRecord) -> list[TensorChange]:
    """Decode one stored record into its changes (data in the pipeline's element type).

    A TNSR gives one change; a TGRP gives one per member, split from the decoded
    concatenation in member order.
    """
    change = TensorChange(record.name, record.dtype, record.shape, record.combine, None, record.role)
    if record.combine in (Combine.KEEP, Combine.REMOVE):
        if record.stages or record.payload or record.members:
            raise CodecError(f"{record.name}: a {record.combine.name} tensor carries no pipeline, payload or members")
        return [change]
    stages = pipelines.pipeline_of(record.stages)
    spec = ArraySpec(record.shape, pipeline_dtype(record.dtype, record.combine))
    try:
        data = pipelines.decode(stages, record.payload, spec)
    except MemoryError:  # within the limits, but not within this machine's memory
        raise LimitError(f"{record.name}: not enough memory to decode {record.size} elements") from None
    if not record.members:
        change.data = data
        change.pipeline = stages
        change.payload_bytes = len(record.payload)
        return [change]
    changes = []
    start = 0
    total = max(record.size, 1)
    data = data.reshape(-1)
    for m in record.members:
        part = data[start : start + m.size].reshape(m.shape)
        start += m.size
        changes.append(
            TensorChange(
                m.name, m.dtype, m.shape, record.combine, part, m.role,
                pipeline=stages, payload_bytes=len(record.payload) * m.size // total,
            )
        )
    return changes


def from_container(container: Container) -> Update:
    h = container.header
    decoded = parallel.ordered_map(decode_record, container.tensors, [r.size for r in container.tensors], phase="decoding")
    changes = {c.name: c for changes in decoded for c in changes}
    return Update(changes, h.kind, h.base_fingerprint, h.round, h.producer, dict(h.metadata), list(container.extra_chunks))


def decode(data: bytes | bytearray | memoryview, *, limits: Limits = DEFAULT_LIMITS) -> Update:
    """Parse and decode a whole container; raises a :class:`~nnupdate.errors.NNUpdateError` on any defect."""
    return from_container(parse(data, limits=limits))


# ----------------------------------------------------------------------------- applying


def referenced_names(update: Update) -> list[str]:
    """Names the update expects in its base (the ones its fingerprint covers)."""
    return [n for n, c in update.changes.items() if c.combine in REFERENCING]


def check_base(base: Mapping[str, np.ndarray], update: Update) -> None:
    """Raise :class:`BaseMismatchError` unless ``base`` is the model the update was made against."""
    names = referenced_names(update)
    missing = [n for n in names if n not in base]
    if missing:
        raise BaseMismatchError(f"base lacks {len(missing)} tensors the update changes, e.g. {missing[:3]}")
    if update.base_fingerprint is not None and fingerprint(base, names) != update.base_fingerprint:
        raise BaseMismatchError("base fingerprint does not match the update's (wrong base model?)")


def apply(base: Mapping[str, np.ndarray], update: Update, *, force: bool = False) -> dict[str, np.ndarray]:
    """The new tensors: ``base`` with ``update`` applied. ``base`` is not modified.

    Refuses a base whose fingerprint differs unless ``force``; tensors of the base that
    the update does not mention are carried over unchanged (partial updates). bfloat16
    tensors come back as ``ml_dtypes.bfloat16``, like the base they were given in. The base
    may hold torch tensors; the result is numpy (``adapters.torch.to_state_dict`` turns it
    back, ``adapters.torch.apply_to_module`` updates a live module in place).
    """
    base = as_numpy_tensors(base)
    if update.kind == UpdateKind.DELTA and not force:
        check_base(base, update)
    out: dict[str, np.ndarray] = {}
    for name, value in base.items():
        out[name] = np.asarray(value)
    for name, change in update.changes.items():
        if change.combine == Combine.REMOVE:
            out.pop(name, None)
            continue
        if change.combine == Combine.REPLACE:
            out[name] = _from_storage(change.data, change.dtype, change.shape)
            continue
        if name not in out:
            raise BaseMismatchError(f"base has no tensor {name!r}")
        current = out[name]
        if tensor_dtype_name(current) != change.dtype or tuple(current.shape) != change.shape:
            raise ShapeMismatchError(
                f"{name}: base is {tensor_dtype_name(current)}{list(current.shape)}, update expects {change.dtype}{list(change.shape)}"
            )
        if change.combine == Combine.KEEP:
            continue
        assert change.data is not None
        stored = storage_view(current)
        if change.combine == Combine.XOR:
            bits = stored.view(change.data.dtype) ^ change.data
            out[name] = _from_storage(bits.view(stored.dtype), change.dtype, change.shape)
        elif change.combine == Combine.ULP:
            out[name] = _from_storage(moved_by_ulps(stored, change.data), change.dtype, change.shape)
        elif dtypes.is_float(change.dtype):
            out[name] = _from_storage(_add_float(stored, change.data, change.dtype), change.dtype, change.shape)
        else:
            out[name] = _from_storage((stored + change.data.astype(stored.dtype)).astype(stored.dtype), change.dtype, change.shape)
    return out


def _add_float(stored: np.ndarray, delta: np.ndarray, dtype: str) -> np.ndarray:
    """base + delta in the tensor's own precision (bfloat16 via float32), IEEE round-to-nearest."""
    if dtype == dtypes.BFLOAT16:
        total = dtypes.bfloat16_to_float32(stored) + dtypes.bfloat16_to_float32(delta)
        return dtypes.float32_to_bfloat16(total)
    return (stored + delta.astype(stored.dtype)).astype(stored.dtype)


def _from_storage(data: np.ndarray | None, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """A result tensor from its storage: bfloat16 typed again, as the caller's base was."""
    assert data is not None
    return dtypes.typed(np.asarray(data).reshape(shape), dtype)
