"""Codec stages (the registry) and named codecs built from them.

Importing this package registers every built-in stage and codec.
"""

from . import (  # noqa: F401  (registration side effects)
    bitpack,
    coders,
    context,
    dq,
    elias,
    golomb,
    lowrank,
    lpc,
    m22,
    qsgd,
    rans,
    raw,
    rd,
    rdoq,
    sbc,
    topk,
    uniform,
    zstd,
)
from .base import ArraySpec, ArrayToArray, ArrayToBytes, BytesToBytes, Stage, StageKind, register, registered_stages
from .pipeline import Pipeline
from .presets import (
    Codec,
    Plan,
    codec_table,
    entropy_tails,
    parse_codec,
    register_codec,
    register_coder,
    registered_codecs,
)

__all__ = [
    "ArraySpec",
    "ArrayToArray",
    "ArrayToBytes",
    "BytesToBytes",
    "Codec",
    "Pipeline",
    "Plan",
    "Stage",
    "StageKind",
    "codec_table",
    "entropy_tails",
    "parse_codec",
    "register",
    "register_codec",
    "register_coder",
    "registered_codecs",
    "registered_stages",
]
