"""One exception hierarchy for everything nnupdate refuses.

Callers catch :class:`NNUpdateError` to handle any refusal; the subclasses say
which layer refused, so a CLI can map them to exit codes and a server can log a
precise reason for a rejected client message.
"""

from __future__ import annotations


class NNUpdateError(Exception):
    """Root of every error nnupdate raises on purpose."""


class FormatError(NNUpdateError):
    """The bytes are not a well-formed container (bad signature, framing, checksum, field)."""


class TruncatedError(FormatError):
    """The container ends before a declared field or chunk does."""


class ChecksumError(FormatError):
    """A chunk CRC or the file digest does not match the bytes."""


class UnsupportedError(FormatError):
    """A well-formed file needs something this reader does not implement.

    Raised for an unknown major version, an unknown critical chunk, or an unknown codec id.
    """


class LimitError(FormatError):
    """A declared size exceeds a hard limit; refused before any allocation."""


class CodecError(NNUpdateError):
    """A codec stage cannot encode the input or its payload does not decode to the declared array."""


class BaseMismatchError(NNUpdateError):
    """The base model given to ``apply`` is not the one the update was made against."""


class ShapeMismatchError(NNUpdateError):
    """A tensor of the base does not have the shape or dtype the update expects."""


class InputError(NNUpdateError):
    """User-supplied input (a checkpoint, an option, an array) is unusable."""
