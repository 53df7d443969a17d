"""Soft-label frames: full (every row coded) and delta (only rows changed since a reference).

A frame is an ordinary container of kind ``SOFT_LABELS`` (spec/LABELS.md) with one tensor:

* full frame -- ``labels``: float32 (N, C), REPLACE, pipeline
  ``simplex(bits) | <entropy coder>``; it decodes on its own.
* delta frame -- ``labels.delta``: int32 (N, C), ADD: new units minus the reference's
  units, coded losslessly (normally ``rowsparse``: a change mask plus the changed rows).
  The header's ``base_fingerprint`` is the fingerprint of the reference (the previous
  *quantized* labels) and metadata ``labels.reference_round`` names its round; decoding
  refuses a missing or different reference.

The encoder codes every candidate (full/delta, each with every entropy tail) and keeps
the smallest by measured bytes, so a delta frame is never larger than a full one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..codecs import pipeline as pipelines
from ..codecs.base import ArraySpec, Stage, stage_from_record
from ..codecs.pipeline import Pipeline
from ..codecs.presets import LOSSLESS_INT_TAILS, Tail, entropy_tails
from ..errors import BaseMismatchError, CodecError, FormatError, InputError
from ..fingerprint import fingerprint as tensors_fingerprint
from ..format import (
    DEFAULT_LIMITS,
    Combine,
    Container,
    Header,
    Limits,
    Role,
    TensorRecord,
    UpdateKind,
    parse,
    serialize,
)
from .inputs import DEFAULT_TOLERANCE, Normalize, as_probabilities
from .rowsparse import RowSparse
from .simplex import (
    MAX_BITS,
    MIN_BITS,
    SimplexQuantizer,
    check_units,
    dequantize,
    quantize,
    units_for,
    units_from_probs,
)

PRODUCER = "nnupdate"

LABELS = "labels"
DELTA = "labels.delta"

META_BITS = "labels.bits"
META_REFERENCE_ROUND = "labels.reference_round"

#: candidate lossless tails for the unit deltas; measured bytes pick one per frame
DELTA_TAILS: tuple[Tail, ...] = ((RowSparse(),), *LOSSLESS_INT_TAILS)

FULL_FRAME = "full"
DELTA_FRAME = "delta"


@dataclass(frozen=True, eq=False)
class QuantizedLabels:
    """Soft labels on the Q_b grid: integer ``units`` (N, C) with rows summing to ``2**bits - 1``.

    This is what both ends of a link hold after a frame: the encoder keeps it as the
    reference of its next delta frame, the decoder rebuilds it exactly.
    """

    units: np.ndarray
    bits: int
    round: int | None = None

    def __post_init__(self) -> None:
        units_for(self.bits)
        check_units(self.units, self.bits)
        if self.units.ndim != 2:
            raise InputError(f"quantized labels must be (samples, classes), got shape {self.units.shape}")

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.units.shape[0]), int(self.units.shape[1]))

    @property
    def probs(self) -> np.ndarray:
        """The quantized probabilities as float32 (what ``decode_labels`` returns)."""
        return dequantize(self.units, self.bits, "float32")

    @property
    def fingerprint(self) -> bytes:
        """SHA-256 of the canonical form: units as uint16 plus the bit depth (spec/LABELS.md)."""
        return labels_fingerprint(self.units, self.bits)

    @classmethod
    def from_probs(cls, probs: np.ndarray, bits: int, round: int | None = None) -> QuantizedLabels:
        """Wrap already-quantized probabilities (e.g. an earlier ``decode_labels`` result)."""
        array = np.asarray(probs)
        if array.ndim != 2:
            raise InputError(f"reference labels must be (samples, classes), got shape {array.shape}")
        try:
            units = units_from_probs(array, bits)
        except CodecError as exc:
            raise InputError(f"reference is not {bits}-bit quantized labels: {exc}") from None
        return cls(units, bits, round)


def labels_fingerprint(units: np.ndarray, bits: int) -> bytes:
    """Fingerprint of quantized labels: the package fingerprint of two tensors.

    ``labels.bits`` (uint8, shape (1,)) and ``labels.units`` (uint16, shape (N, C)), so
    the same integers at another bit depth never match.
    """
    return tensors_fingerprint(
        {"labels.bits": np.array([bits], dtype=np.uint8), "labels.units": np.asarray(units).astype("<u2")}
    )


def quantize_labels(
    probs: object,
    bits: int,
    *,
    normalize: Normalize = False,
    tolerance: float = DEFAULT_TOLERANCE,
    round: int | None = None,
) -> QuantizedLabels:
    """Check ``probs`` (samples, classes) and map every row to its L1-nearest Q_b grid point."""
    if not (isinstance(bits, int) and MIN_BITS <= bits <= MAX_BITS):
        raise InputError(f"bits must be an integer in [{MIN_BITS}, {MAX_BITS}], got {bits!r}")
    p = as_probabilities(probs, normalize=normalize, tolerance=tolerance)
    return QuantizedLabels(quantize(p, bits), bits, round)


# ----------------------------------------------------------------------------- encoding

def _as_reference(reference: object, bits: int) -> QuantizedLabels | None:
    if reference is None or isinstance(reference, QuantizedLabels):
        return reference
    if isinstance(reference, (bytes, bytearray, memoryview)):
        return decode_quantized(bytes(reference))
    return QuantizedLabels.from_probs(np.asarray(reference), bits)


def _best_record(
    name: str,
    dtype: str,
    shape: tuple[int, ...],
    combine: Combine,
    prefix: Sequence[Stage],
    symbols: np.ndarray,
    tails: Sequence[Tail],
) -> TensorRecord:
    """The tensor record with the smallest payload over ``tails`` (measured bytes)."""
    spec = ArraySpec(tuple(int(d) for d in symbols.shape), str(symbols.dtype))
    best = pipelines.smallest_tail(tails, symbols, spec, name)
    stages = list(prefix) + best[1]
    return TensorRecord(name, dtype, shape, combine, Role.LABELS, [s.record() for s in stages], best[0])


def _container(records: list[TensorRecord], meta: dict[str, str], round: int, base: bytes | None) -> bytes:
    if not (isinstance(round, int) and 0 <= round < 1 << 64):
        raise InputError(f"round must be an integer in [0, 2**64), got {round!r}")
    header = Header(UpdateKind.SOFT_LABELS, base, round, PRODUCER, meta)
    return serialize(Container(header, records))


def full_frame(labels: QuantizedLabels, *, round: int = 0, coder: str = "auto", metadata: Mapping[str, str] | None = None) -> bytes:
    """A frame that decodes on its own."""
    meta = {**dict(metadata or {}), META_BITS: str(labels.bits)}
    record = _best_record(
        LABELS, "float32", labels.shape, Combine.REPLACE, [SimplexQuantizer(labels.bits)], labels.units, entropy_tails(coder)
    )
    return _container([record], meta, round, None)


def delta_frame(
    labels: QuantizedLabels,
    reference: QuantizedLabels,
    *,
    round: int = 0,
    reference_round: int | None = None,
    metadata: Mapping[str, str] | None = None,
) -> bytes:
    """A frame holding only the rows that differ from ``reference``."""
    if reference.bits != labels.bits:
        raise InputError(f"reference has {reference.bits} bits, labels have {labels.bits}; send a full frame")
    if reference.shape != labels.shape:
        raise InputError(f"reference has shape {reference.shape}, labels {labels.shape}; send a full frame")
    ref_round = reference_round if reference_round is not None else reference.round
    if ref_round is None:
        ref_round = round - 1
    meta = {**dict(metadata or {}), META_BITS: str(labels.bits), META_REFERENCE_ROUND: str(ref_round)}
    delta = labels.units.astype(np.int32) - reference.units.astype(np.int32)
    records = [_best_record(DELTA, "int32", labels.shape, Combine.ADD, [], delta, DELTA_TAILS)]
    return _container(records, meta, round, reference.fingerprint)


def encode_quantized(
    labels: QuantizedLabels,
    *,
    reference: QuantizedLabels | None = None,
    round: int = 0,
    full: bool = False,
    reference_round: int | None = None,
    metadata: Mapping[str, str] | None = None,
) -> bytes:
    """The smaller of a full frame and (given a reference, unless ``full``) a delta frame."""
    best = full_frame(labels, round=round, metadata=metadata)
    if reference is not None and not full:
        delta = delta_frame(labels, reference, round=round, reference_round=reference_round, metadata=metadata)
        if len(delta) < len(best):
            best = delta
    return best


def encode_labels(
    probs: object,
    bits: int = 4,
    reference: QuantizedLabels | np.ndarray | bytes | None = None,
    round: int = 0,
    *,
    normalize: Normalize = False,
    tolerance: float = DEFAULT_TOLERANCE,
    full: bool = False,
    reference_round: int | None = None,
    metadata: Mapping[str, str] | None = None,
) -> bytes:
    """Quantize soft labels (samples, classes) with Q_b and code them as a ``.nnu`` frame.

    ``reference`` is the receiver's copy of the previous quantized labels of this link
    (a :class:`QuantizedLabels`, the float32 array ``decode_labels`` returned for it, or
    a full frame's bytes); with it the frame is a delta frame whenever that is smaller.
    ``full=True`` forces a self-contained frame. ``normalize`` accepts logits or
    unnormalised scores (see :func:`~nnupdate.distill.inputs.as_probabilities`).
    """
    labels = quantize_labels(probs, bits, normalize=normalize, tolerance=tolerance, round=round)
    ref = None if full else _as_reference(reference, bits)
    return encode_quantized(labels, reference=ref, round=round, full=full, reference_round=reference_round, metadata=metadata)


# ----------------------------------------------------------------------------- decoding


@dataclass(frozen=True)
class FrameInfo:
    """Header facts of a soft-label frame, readable without its reference."""

    frame: str
    bits: int
    round: int
    shape: tuple[int, int]
    reference_round: int | None
    reference_fingerprint: bytes | None
    metadata: dict[str, str] = field(default_factory=dict)


def _int_meta(meta: Mapping[str, str], key: str) -> int:
    try:
        return int(meta[key])
    except KeyError:
        raise FormatError(f"soft-label frame lacks metadata {key!r}") from None
    except ValueError:
        raise FormatError(f"soft-label metadata {key!r} is not an integer") from None


def _tensor(container: Container, name: str, dtype: str, ndim: int, combine: Combine) -> TensorRecord:
    found = [t for t in container.tensors if t.name == name]
    if len(found) != 1:
        raise FormatError(f"soft-label frame needs exactly one tensor {name!r}")
    record = found[0]
    if record.dtype != dtype or len(record.shape) != ndim or record.combine != combine:
        raise FormatError(f"{name}: expected {dtype} rank {ndim} {combine.name}, got {record.dtype}{list(record.shape)} {record.combine.name}")
    return record


def _frame_info(container: Container) -> FrameInfo:
    h = container.header
    if h.kind != UpdateKind.SOFT_LABELS:
        raise InputError(f"not a soft-label frame (update kind {h.kind.name.lower()})")
    bits = _int_meta(h.metadata, META_BITS)
    if not MIN_BITS <= bits <= MAX_BITS:
        raise FormatError(f"soft-label bits {bits} outside [{MIN_BITS}, {MAX_BITS}]")
    names = [t.name for t in container.tensors]
    if names == [LABELS]:
        if h.base_fingerprint is not None:
            raise FormatError("a full soft-label frame has no reference fingerprint")
        record = _tensor(container, LABELS, "float32", 2, Combine.REPLACE)
        shape = (record.shape[0], record.shape[1])
        return FrameInfo(FULL_FRAME, bits, h.round, shape, None, None, dict(h.metadata))
    if names == [DELTA]:
        if h.base_fingerprint is None:
            raise FormatError("delta soft-label frame has no reference fingerprint")
        record = _tensor(container, DELTA, "int32", 2, Combine.ADD)
        ref_round = _int_meta(h.metadata, META_REFERENCE_ROUND)
        shape = (record.shape[0], record.shape[1])
        return FrameInfo(DELTA_FRAME, bits, h.round, shape, ref_round, h.base_fingerprint, dict(h.metadata))
    raise FormatError(f"a soft-label frame holds exactly one tensor, {LABELS!r} or {DELTA!r}; this one has {names}")


def frame_info(data: bytes | bytearray | memoryview, *, limits: Limits = DEFAULT_LIMITS) -> FrameInfo:
    """What a frame is (full/delta, bits, round, reference) without decoding payloads."""
    return _frame_info(parse(data, limits=limits))


def _decode_symbols(record: TensorRecord, expect_prefix: type[Stage] | None) -> tuple[np.ndarray, list[Stage]]:
    stages = [stage_from_record(s) for s in record.stages]
    prefix: list[Stage] = []
    if expect_prefix is not None:
        if not stages or not isinstance(stages[0], expect_prefix):
            raise FormatError(f"{record.name}: pipeline must start with {expect_prefix.name}")
        prefix, stages = stages[:1], stages[1:]
    pipeline = Pipeline(tuple(stages))
    if pipeline.array_stages:
        raise FormatError(f"{record.name}: unexpected array stages {[s.name for s in pipeline.array_stages]}")
    dtype = "int32" if expect_prefix is not None else record.dtype
    values = pipelines.decode(pipeline, record.payload, ArraySpec(record.shape, dtype))
    return values, prefix


def decode_quantized(
    data: bytes | bytearray | memoryview,
    reference: QuantizedLabels | np.ndarray | None = None,
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> QuantizedLabels:
    """Decode a frame to its exact integer units.

    A delta frame needs ``reference``: the quantized labels it was coded against (a
    :class:`QuantizedLabels` or the float32 array ``decode_labels`` gave for them).
    A missing, differently shaped, differently quantized or otherwise different
    reference raises :class:`~nnupdate.errors.BaseMismatchError`.
    """
    container = parse(data, limits=limits)
    info = _frame_info(container)
    if info.frame == FULL_FRAME:
        record = _tensor(container, LABELS, "float32", 2, Combine.REPLACE)
        units, prefix = _decode_symbols(record, SimplexQuantizer)
        stage = prefix[0]
        assert isinstance(stage, SimplexQuantizer)
        if stage.bits != info.bits:
            raise FormatError(f"simplex stage has {stage.bits} bits, header says {info.bits}")
        check_units(units, info.bits)
        return QuantizedLabels(units.astype(np.int32), info.bits, info.round)
    if reference is None:
        raise BaseMismatchError(
            f"round {info.round} is a delta frame against round {info.reference_round} "
            f"(fingerprint {info.reference_fingerprint.hex()[:16] if info.reference_fingerprint else '?'}...); "
            "give the reference labels"
        )
    ref = reference if isinstance(reference, QuantizedLabels) else _reference_from_array(reference, info.bits)
    if ref.bits != info.bits:
        raise BaseMismatchError(f"reference has {ref.bits} bits, the frame {info.bits}")
    if ref.shape != info.shape:
        raise BaseMismatchError(f"reference has shape {ref.shape}, the frame {info.shape}")
    if ref.round is not None and info.reference_round is not None and ref.round != info.reference_round:
        raise BaseMismatchError(f"reference is round {ref.round}, the frame was coded against round {info.reference_round}")
    if ref.fingerprint != info.reference_fingerprint:
        raise BaseMismatchError(f"reference labels differ from the ones round {info.round} was coded against (fingerprint mismatch)")
    delta, _ = _decode_symbols(_tensor(container, DELTA, "int32", 2, Combine.ADD), None)
    units = ref.units.astype(np.int64) + delta
    check_units(units, info.bits)
    return QuantizedLabels(units.astype(np.int32), info.bits, info.round)


def _reference_from_array(reference: np.ndarray, bits: int) -> QuantizedLabels:
    try:
        return QuantizedLabels.from_probs(reference, bits)
    except InputError as exc:
        raise BaseMismatchError(str(exc)) from None


def decode_labels(
    data: bytes | bytearray | memoryview,
    reference: QuantizedLabels | np.ndarray | None = None,
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> np.ndarray:
    """Decode a frame to the quantized probabilities, float32 (samples, classes)."""
    return decode_quantized(data, reference, limits=limits).probs
