"""The .nnu container: framing, headers, checksums and limits. Knows nothing of codecs."""

from .constants import (
    DEFAULT_LIMITS,
    FILE_EXTENSION,
    MEDIA_TYPE,
    SIGNATURE,
    VERSION_MAJOR,
    VERSION_MINOR,
    Combine,
    Limits,
    Role,
    UpdateKind,
)
from .container import (
    Container,
    Header,
    Member,
    ParamValue,
    StageRecord,
    TensorRecord,
    parse,
    read_index,
    read_tensor,
    serialize,
)

__all__ = [
    "DEFAULT_LIMITS",
    "FILE_EXTENSION",
    "MEDIA_TYPE",
    "SIGNATURE",
    "VERSION_MAJOR",
    "VERSION_MINOR",
    "Combine",
    "Container",
    "Header",
    "Limits",
    "Member",
    "ParamValue",
    "Role",
    "StageRecord",
    "TensorRecord",
    "UpdateKind",
    "parse",
    "read_index",
    "read_tensor",
    "serialize",
]
