"""Fixed values of the .nnu container: signature, versions, chunk types, enumerations.

Every value here is normative (spec/FORMAT.md); changing one changes the format.
"""

from __future__ import annotations

import enum
from typing import Final

#: PNG-style signature: a high-bit byte catches 7-bit transports, CR LF and LF catch
#: newline translation, 0x1A stops DOS ``type``.
SIGNATURE: Final = b"\x89NNU\r\n\x1a\n"
VERSION_MAJOR: Final = 1
VERSION_MINOR: Final = 0
#: the product of a shape's non-zero dimensions may not exceed this (so a 2**40 x 0 tensor
#: is fine but dimensions no array library can address are refused)
MAX_DIM_PRODUCT: Final = 1 << 53
MEDIA_TYPE: Final = "application/vnd.nnupdate"
FILE_EXTENSION: Final = ".nnu"

# Chunk types. As in PNG, bit 5 of the first byte (lower case) marks a chunk a reader may skip.
HEAD: Final = b"HEAD"
TNSR: Final = b"TNSR"
TGRP: Final = b"TGRP"
INDX: Final = b"indx"
IEND: Final = b"IEND"


def is_ancillary(chunk_type: bytes) -> bool:
    """True when a reader that does not know ``chunk_type`` may skip it."""
    return bool(chunk_type[0] & 0x20)


class UpdateKind(enum.IntEnum):
    """What the tensors of a container mean."""

    DELTA = 0  #: changes against a base model, identified by its fingerprint
    FULL = 1  #: complete weights, no base
    SOFT_LABELS = 2  #: class-probability arrays for federated distillation
    STATE = 3  #: codec state a client keeps between rounds (error-feedback residuals)


class Combine(enum.IntEnum):
    """How a decoded tensor combines with the base tensor of the same name."""

    ADD = 0  #: new = base + decoded (element type of the base)
    REPLACE = 1  #: new = decoded; also how tensors absent from the base are added
    XOR = 2  #: new bits = base bits XOR decoded bits (lossless deltas)
    KEEP = 3  #: new = base; no payload
    REMOVE = 4  #: the tensor is dropped; no payload
    #: new = base moved by decoded representable values (units in the last place); float
    #: tensors only, bit-exact (lossless float deltas: small updates are small integers)
    ULP = 5


class Role(enum.IntEnum):
    """What a tensor is for, when the producer knows; codecs may treat roles differently."""

    UNKNOWN = 0
    WEIGHT = 1
    BIAS = 2
    NORM = 3  #: normalisation scale/shift
    INT_BUFFER = 4  #: integer buffers such as BatchNorm's num_batches_tracked
    EMBEDDING = 5
    LABELS = 6  #: soft labels
    STATISTIC = 7  #: running statistics (BatchNorm running_mean/var): observed, not learned


class Limits:
    """Hard limits a reader checks before allocating. Instances may lower or raise them.

    The defaults bound what an untrusted file can make a decoder allocate to about 2 GiB
    of declared output (models up to ~500M float32 parameters per update); applications
    decoding bigger updates pass ``Limits(max_elements=..., max_total_bytes=...)``.
    """

    def __init__(
        self,
        *,
        max_header_bytes: int = 1 << 20,
        max_tensors: int = 1 << 20,
        max_elements: int = 1 << 29,
        max_total_bytes: int = 1 << 31,
        max_ndim: int = 32,
        max_name_bytes: int = 4096,
        max_stages: int = 16,
        max_params: int = 64,
        max_param_items: int = 1 << 20,
    ) -> None:
        self.max_header_bytes = max_header_bytes
        self.max_tensors = max_tensors
        self.max_elements = max_elements
        self.max_total_bytes = max_total_bytes
        self.max_ndim = max_ndim
        self.max_name_bytes = max_name_bytes
        self.max_stages = max_stages
        self.max_params = max_params
        self.max_param_items = max_param_items


DEFAULT_LIMITS: Final = Limits()
