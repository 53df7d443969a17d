"""Soft-label vectors (spec/LABELS.md): the Q_b quantizer stage ``simplex`` (0x0018) and
the delta stage ``rowsparse`` (0x0040) in full and delta frames of kind SOFT_LABELS.

Expected outputs are stated independently of the decoder: full frames decode to
``units / (2**b - 1)`` in float32 with the units written out or computed by the encoder's
Q_b (not by the decoder); delta frames are checked with ``apply``: the reference's units
as the base tensor ``labels.delta`` plus the decoded deltas give the new units.
"""

from __future__ import annotations

import numpy as np

from nnupdate.codecs.rans import Rans
from nnupdate.codecs.varint import write_uvarint
from nnupdate.distill import QuantizedLabels, full_frame
from nnupdate.distill.frames import delta_frame
from nnupdate.distill.rowsparse import RowSparse
from nnupdate.distill.simplex import SimplexQuantizer, quantize
from nnupdate.format import Combine, Role, StageRecord, TensorRecord, UpdateKind

from . import Case, build, encode_tensor, rng


def _probs(seed: int, n: int, c: int, conc: float = 0.4) -> np.ndarray:
    return rng(seed).dirichlet(np.full(c, conc), size=n)


def _grid(units: np.ndarray, bits: int) -> dict[str, np.ndarray]:
    return {"labels": (units.astype(np.float64) / ((1 << bits) - 1)).astype(np.float32)}


# Hand-checked Q_2 (M = 3) rows: x = 3p; floors, then remainders largest first, ties to the lower index.
_TIES = np.array(
    [
        [0.5, 0.5, 0.0, 0.0],  # x = (1.5, 1.5, 0, 0): one unit left, tie -> class 0
        [0.25, 0.25, 0.25, 0.25],  # x = 0.75 each: three units to classes 0, 1, 2
        [0.7, 0.2, 0.1, 0.0],  # x = (2.1, 0.6, 0.3, 0): floors (2, 0, 0, 0), one unit -> class 1
        [0.0, 0.0, 0.0, 1.0],
        [0.1, 0.1, 0.4, 0.4],  # x = (0.3, 0.3, 1.2, 1.2): floors (0, 0, 1, 1), one unit -> class 0
    ]
)
_TIES_UNITS = np.array([[2, 1, 0, 0], [1, 1, 1, 0], [2, 1, 0, 0], [0, 0, 0, 3], [1, 0, 1, 1]], dtype=np.int32)
# Q_1 is the one-hot argmax with ties to the lowest index.
_ARGMAX = np.array([[0.1, 0.6, 0.3], [0.4, 0.2, 0.4], [1 / 3, 1 / 3, 1 / 3], [0.0, 0.0, 1.0]])
_ARGMAX_UNITS = np.array([[0, 1, 0], [1, 0, 0], [1, 0, 0], [0, 0, 1]], dtype=np.int32)


def _full(probs: np.ndarray, bits: int, units: np.ndarray | None = None, round: int = 0) -> bytes:
    q = QuantizedLabels(quantize(probs, bits) if units is None else units, bits, round)
    return full_frame(q, round=round)


def _sequence() -> tuple[QuantizedLabels, QuantizedLabels]:
    """Two rounds of 4-bit labels where 6 of 40 rows change."""
    p0 = _probs(11, 40, 10)
    p1 = p0.copy()
    p1[[3, 4, 17, 25, 26, 39]] = _probs(12, 6, 10)
    return QuantizedLabels(quantize(p0, 4), 4, 4), QuantizedLabels(quantize(p1, 4), 4, 5)


def _delta(stages: list) -> bytes:  # type: ignore[type-arg]
    ref, new = _sequence()
    record = encode_tensor("labels.delta", (new.units - ref.units).astype(np.int32), stages, combine=Combine.ADD, role=Role.LABELS)
    return build(
        [record],
        kind=UpdateKind.SOFT_LABELS,
        base_fingerprint=ref.fingerprint,
        round=5,
        producer="nnupdate",
        metadata={"labels.bits": "4", "labels.reference_round": "4"},
    )


def _delta_auto() -> bytes:
    """What the library's encoder writes (it keeps the smallest of its candidate tails)."""
    ref, new = _sequence()
    return delta_frame(new, ref, round=5)


def _labels_record(units: np.ndarray, bits: int, payload: bytes) -> TensorRecord:
    return TensorRecord(
        "labels",
        "float32",
        tuple(units.shape),
        Combine.REPLACE,
        Role.LABELS,
        [SimplexQuantizer(bits).record(), Rans().record()],
        payload,
    )


def _bad_row_sum() -> bytes:
    units = np.array([[2, 1, 0], [2, 2, 0]], dtype=np.int32)  # second row holds 4 units, M = 3
    payload, _ = Rans().encode(units, None)  # type: ignore[arg-type]
    return build([_labels_record(units, 2, payload)], kind=UpdateKind.SOFT_LABELS, metadata={"labels.bits": "2"})


def _bad_bits_param() -> bytes:
    units = np.array([[1, 0]], dtype=np.int32)
    payload, _ = Rans().encode(units, None)  # type: ignore[arg-type]
    record = _labels_record(units, 1, payload)
    record.stages[0] = StageRecord(0x0018, {"bits": 17})
    return build([record], kind=UpdateKind.SOFT_LABELS, metadata={"labels.bits": "1"})


def _rowsparse_zero_row() -> bytes:
    """A rowsparse payload marking row 0 changed while its entries are all zero."""
    mask, _ = Rans().encode(np.array([1, 0], dtype=np.uint8), None)  # type: ignore[arg-type]
    entries, _ = Rans().encode(np.zeros(3, dtype=np.int64), None)  # type: ignore[arg-type]
    out = bytearray()
    write_uvarint(out, len(mask))
    record = TensorRecord("labels.delta", "int32", (2, 3), Combine.ADD, Role.LABELS, [RowSparse().record()], bytes(out) + mask + entries)
    return build([record], kind=UpdateKind.SOFT_LABELS, base_fingerprint=bytes(32), metadata={"labels.bits": "2", "labels.reference_round": "0"})


CASES = [
    Case(
        "labels-full-q1-argmax",
        "Q_1 full frame: one-hot argmax, ties to the lowest class index",
        build=lambda: _full(_ARGMAX, 1),
        expected=lambda: _grid(_ARGMAX_UNITS, 1),
    ),
    Case(
        "labels-full-q2-ties",
        "Q_2 full frame of hand-checked rows exercising the largest-remainder tie-break",
        build=lambda: _full(_TIES, 2),
        expected=lambda: _grid(_TIES_UNITS, 2),
    ),
    Case(
        "labels-full-q8",
        "Q_8 full frame, 64 x 10 Dirichlet rows, simplex | rans",
        build=lambda: _full(_probs(3, 64, 10), 8, round=2),
        expected=lambda: _grid(quantize(_probs(3, 64, 10), 8), 8),
    ),
    Case(
        "labels-full-q16",
        "Q_16 full frame (M = 65535), 16 x 5 rows: decoded value is float32(u / 65535)",
        build=lambda: _full(_probs(4, 16, 5), 16),
        expected=lambda: _grid(quantize(_probs(4, 16, 5), 16), 16),
    ),
    Case(
        "labels-delta-rowsparse",
        "Q_4 delta frame (6 of 40 rows changed) coded with rowsparse; base = reference units",
        build=lambda: _delta([RowSparse()]),
        base=lambda: {"labels.delta": _sequence()[0].units},
        applied=lambda: {"labels.delta": _sequence()[1].units},
    ),
    Case(
        "labels-delta-rans",
        "The same delta frame with the deltas coded by plain rans (any lossless tail is allowed)",
        build=lambda: _delta([Rans()]),
        base=lambda: {"labels.delta": _sequence()[0].units},
        applied=lambda: {"labels.delta": _sequence()[1].units},
    ),
    Case(
        "labels-delta-auto",
        "The delta frame exactly as nnupdate.distill writes it (header fields, chosen tail)",
        build=_delta_auto,
        base=lambda: {"labels.delta": _sequence()[0].units},
        applied=lambda: {"labels.delta": _sequence()[1].units},
    ),
    Case("labels-bad-row-sum", "simplex units whose row does not sum to 2**b - 1", build=_bad_row_sum, error="CodecError"),
    Case("labels-bad-bits", "simplex stage with bits = 17", build=_bad_bits_param, error="FormatError"),
    Case("labels-rowsparse-zero-row", "rowsparse marks a row changed whose entries are all zero", build=_rowsparse_zero_row, error="CodecError"),
]
