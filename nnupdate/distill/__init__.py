"""Federated-distillation soft labels: Q_b simplex quantization and delta coding (CFD).

Clients in federated distillation exchange class-probability rows on a shared public
set instead of weights. This package quantizes each row to the L1-nearest point of the
``b``-bit simplex grid (:mod:`.simplex`) and codes a round either on its own (full
frame) or as the rows that changed since the previous round's quantized labels (delta
frame), in ``.nnu`` containers of kind ``SOFT_LABELS`` (spec/LABELS.md).

Stable API (the FL harness uses it)::

    data = encode_labels(probs, bits=2, reference=prev, round=r)   # -> bytes
    probs_q = decode_labels(data, reference=prev)                  # -> float32 (N, C)
    q = decode_quantized(data, reference=prev)                     # -> QuantizedLabels (units)

``prev`` is the receiver's copy of the previous quantized labels (a ``QuantizedLabels``
or the float32 array ``decode_labels`` returned). :class:`LabelEncoder` and
:class:`LabelDecoder` keep that state for a link.
"""

from __future__ import annotations

from .frames import (
    FrameInfo,
    QuantizedLabels,
    decode_labels,
    decode_quantized,
    delta_frame,
    encode_labels,
    encode_quantized,
    frame_info,
    full_frame,
    labels_fingerprint,
    quantize_labels,
)
from .inputs import as_probabilities
from .simplex import SimplexQuantizer, dequantize, quantize
from .stream import LabelDecoder, LabelEncoder

__all__ = [
    "FrameInfo",
    "LabelDecoder",
    "LabelEncoder",
    "QuantizedLabels",
    "SimplexQuantizer",
    "as_probabilities",
    "decode_labels",
    "decode_quantized",
    "delta_frame",
    "dequantize",
    "encode_labels",
    "encode_quantized",
    "frame_info",
    "full_frame",
    "labels_fingerprint",
    "quantize",
    "quantize_labels",
]
