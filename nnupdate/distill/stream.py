"""Stateful ends of one soft-label link (a client's uplink or the server's broadcast).

Both ends keep the last quantized labels; the sender codes each round against them
(delta frame) unless a full frame is due, and the receiver decodes against its copy.
Because both copies are the exact integer units, they never drift apart.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .frames import QuantizedLabels, decode_quantized, encode_quantized, frame_info, quantize_labels
from .inputs import DEFAULT_TOLERANCE, Normalize


class LabelEncoder:
    """Sender side: quantize, then code against the previous round's quantized labels.

    ``keyframe_interval=N`` forces a full frame every N rounds (round % N == 0), so a
    receiver that joins late or lost a frame resynchronises; 0 never forces one.
    """

    def __init__(self, bits: int, *, keyframe_interval: int = 0, normalize: Normalize = False, tolerance: float = DEFAULT_TOLERANCE) -> None:
        if keyframe_interval < 0:
            raise InputError("keyframe_interval must be >= 0")
        self.bits = bits
        self.keyframe_interval = keyframe_interval
        self.normalize = normalize
        self.tolerance = tolerance
        self.reference: QuantizedLabels | None = None

    def encode(self, probs: object, round: int, *, full: bool = False) -> bytes:
        labels = quantize_labels(probs, self.bits, normalize=self.normalize, tolerance=self.tolerance, round=round)
        forced = full or (self.keyframe_interval > 0 and round % self.keyframe_interval == 0)
        reference = self.reference
        if forced or (reference is not None and reference.shape != labels.shape):
            reference = None  # e.g. the public set changed: only a full frame makes sense
        data = encode_quantized(labels, reference=reference, round=round)
        self.reference = labels
        return data

    def reset(self) -> None:
        """Forget the reference: the next frame is full."""
        self.reference = None


class LabelDecoder:
    """Receiver side: decodes each frame against the labels of the previous one."""

    def __init__(self) -> None:
        self.reference: QuantizedLabels | None = None

    def decode(self, data: bytes) -> np.ndarray:
        """The float32 quantized probabilities of the frame."""
        return self.decode_quantized(data).probs

    def decode_quantized(self, data: bytes) -> QuantizedLabels:
        labels = decode_quantized(data, self.reference)
        self.reference = labels
        return labels


__all__ = ["LabelDecoder", "LabelEncoder", "frame_info"]
