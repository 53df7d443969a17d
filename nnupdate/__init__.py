"""nnupdate: compress incremental neural-network updates into a versioned, checksummed container.

The data path, left to right::

    {name: ndarray} --diff--> Update --encode(codec)--> .nnu bytes
    .nnu bytes --decode--> Update --apply(base)--> {name: ndarray}
"""

from __future__ import annotations

from . import (
    codecs,  # noqa: F401  (registers built-in stages and codecs)
    distill,  # noqa: F401  (registers the soft-label stages simplex and rowsparse)
    progress,  # noqa: F401  (nnupdate.progress.listening: progress events of long calls)
)
from .codecs import parse_codec
from .errors import (
    BaseMismatchError,
    ChecksumError,
    CodecError,
    FormatError,
    InputError,
    LimitError,
    NNUpdateError,
    ShapeMismatchError,
    TruncatedError,
    UnsupportedError,
)
from .fingerprint import fingerprint
from .format import Combine, Limits, Role, UpdateKind
from .io import atomic_write, inspect, load, save
from .update import TensorChange, Update, apply, decode, diff, encode_with_report, full

__version__ = "0.1.0"

__all__ = [
    "BaseMismatchError",
    "ChecksumError",
    "CodecError",
    "Combine",
    "FormatError",
    "InputError",
    "LimitError",
    "Limits",
    "NNUpdateError",
    "Role",
    "ShapeMismatchError",
    "TensorChange",
    "TruncatedError",
    "UnsupportedError",
    "Update",
    "UpdateKind",
    "apply",
    "atomic_write",
    "decode",
    "diff",
    "encode_with_report",
    "fingerprint",
    "full",
    "inspect",
    "load",
    "parse_codec",
    "save",
]
