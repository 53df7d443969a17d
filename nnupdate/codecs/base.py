"""The stage abstraction every codec is built from, in the zarr v3 sense.

A tensor's pipeline is ``array→array* , array→bytes , bytes→bytes*``. Encoding runs the
stages left to right and returns, for each stage, a *resolved* copy holding every
parameter its decoder needs (a chosen step size, a frequency table); those parameters
are what the container stores. Decoding runs the resolved stages right to left.

A stage is a frozen dataclass: its fields are its parameters, typed as ``int``,
``float``, ``str``, ``bytes`` or a 1-D ``numpy`` array, so they serialize without any
per-codec code. Adding a codec means one class and one ``@register`` line.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np

from .. import dtypes
from ..errors import CodecError, FormatError, UnsupportedError
from ..format import ParamValue, StageRecord

S = TypeVar("S", bound="Stage")


@dataclass(frozen=True)
class ArraySpec:
    """Shape and element type of an array flowing between stages."""

    shape: tuple[int, ...]
    dtype: str

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def itemsize(self) -> int:
        return dtypes.storage_dtype(self.dtype).itemsize


class StageKind(enum.Enum):
    ARRAY_TO_ARRAY = "array->array"
    ARRAY_TO_BYTES = "array->bytes"
    BYTES_TO_BYTES = "bytes->bytes"


_PARAM_TYPES = (int, float, str, bytes, np.ndarray)

#: ``dataclasses.field`` metadata of a stage field the decoder does not need (not stored).
ENCODER_ONLY = {"stored": False}


@dataclass(frozen=True)
class Stage(ABC):
    """Base of all stages. Subclasses set ``codec_id``, ``name`` and ``kind``."""

    codec_id: ClassVar[int]
    name: ClassVar[str]
    kind: ClassVar[StageKind]
    #: True when decode(encode(x)) == x bit for bit
    lossless: ClassVar[bool] = False

    def params(self) -> dict[str, ParamValue]:
        """The parameters as stored in the tensor header.

        Fields declared with ``dataclasses.field(metadata=ENCODER_ONLY)`` steer the encoder
        (a rounding mode, a random seed) but are not needed to decode, so they are not
        stored: every byte of header is paid once per tensor.
        """
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata.get("stored", True)}

    @classmethod
    def from_params(cls: type[S], params: dict[str, ParamValue]) -> S:
        """Rebuild a stage from stored parameters, refusing missing, unknown or mistyped ones."""
        hints = _field_types(cls)
        unknown = set(params) - set(hints)
        if unknown:
            raise FormatError(f"{cls.name}: unknown parameters {sorted(unknown)}")
        kwargs: dict[str, Any] = {}
        for name, expected in hints.items():
            if name not in params:
                field = next(f for f in dataclasses.fields(cls) if f.name == name)
                if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                    raise FormatError(f"{cls.name}: missing parameter {name!r}")
                continue
            value = params[name]
            if expected is float and isinstance(value, int):
                value = float(value)
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise FormatError(f"{cls.name}: parameter {name!r} has the wrong type")
            kwargs[name] = value
        try:
            return cls(**kwargs)
        except (ValueError, TypeError) as exc:
            raise FormatError(f"{cls.name}: invalid parameters: {exc}") from None

    def record(self) -> StageRecord:
        return StageRecord(self.codec_id, self.params())

    def describe(self) -> str:
        """Short human-readable form, e.g. ``uniform(step=0.001)``."""
        shown = []
        for key, value in self.params().items():
            if isinstance(value, (bytes, np.ndarray)):
                shown.append(f"{key}=<{len(value)}>")
            elif isinstance(value, float):
                shown.append(f"{key}={value:.6g}")
            else:
                shown.append(f"{key}={value}")
        return f"{self.name}({', '.join(shown)})" if shown else self.name


@functools.cache
def _field_types(cls: type[Stage]) -> dict[str, type]:
    hints = typing.get_type_hints(cls)
    out: dict[str, type] = {}
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if t not in _PARAM_TYPES:
            raise TypeError(f"{cls.__name__}.{f.name}: stage parameters must be one of {_PARAM_TYPES}")
        out[f.name] = t
    return out


class ArrayToArray(Stage):
    """Maps an array to another array (quantizers, sparsifiers, transforms)."""

    kind = StageKind.ARRAY_TO_ARRAY

    @abstractmethod
    def encoded_spec(self, spec: ArraySpec) -> ArraySpec:
        """Shape and type of what :meth:`encode` returns for an input of ``spec``.

        The decoder calls this on resolved stages to know what each stage must produce.
        """

    @abstractmethod
    def encode(self: S, values: np.ndarray, spec: ArraySpec) -> tuple[np.ndarray, S]:
        """Transform ``values`` (float64 for float specs); return the output and the resolved stage."""

    @abstractmethod
    def decode(self, encoded: np.ndarray, spec: ArraySpec) -> np.ndarray:
        """Invert :meth:`encode`, returning an array in ``spec``'s storage dtype."""

    def scale_step(self, spec: ArraySpec) -> float | None:
        """``step`` when :meth:`decode` of an integer input is exactly ``RN_float32(q * step)``
        into a float32 ``spec`` (the step quantizers), so the pipeline may let the entropy
        decoder write the floats directly; None otherwise."""
        return None


class ArrayToBytes(Stage):
    """Serializes an array (entropy coders, raw packing). Exactly one per pipeline."""

    kind = StageKind.ARRAY_TO_BYTES

    @abstractmethod
    def encode(self: S, values: np.ndarray, spec: ArraySpec) -> tuple[bytes, S]:
        """Serialize ``values`` of ``spec``; return the bytes and the resolved stage."""

    @abstractmethod
    def decode(self, data: bytes, spec: ArraySpec) -> np.ndarray:
        """Rebuild exactly ``spec`` from ``data`` or raise :class:`CodecError`."""

    def max_encoded_size(self, spec: ArraySpec) -> int:
        """Upper bound of the payload size for ``spec``; bounds bytes→bytes decoders."""
        return 64 + 16 * spec.size + 65536

    def decode_scaled(self, data: bytes, spec: ArraySpec, step: float) -> np.ndarray | None:
        """Optionally ``RN_float32(decode(data, spec) * step)`` in one pass, the fused form
        of a step quantizer's reconstruction (see :meth:`ArrayToArray.scale_step`); None
        when this stage or this payload has no fused path. Must raise exactly what
        :meth:`decode` would on a defective payload."""
        return None


class BytesToBytes(Stage):
    """Transforms bytes (general-purpose compressors, checksums)."""

    kind = StageKind.BYTES_TO_BYTES

    @abstractmethod
    def encode(self: S, data: bytes) -> tuple[bytes, S]: ...

    @abstractmethod
    def decode(self, data: bytes, max_size: int) -> bytes:
        """Invert :meth:`encode`; refuse to produce more than ``max_size`` bytes."""


_BY_ID: dict[int, type[Stage]] = {}
_BY_NAME: dict[str, type[Stage]] = {}


def register(cls: type[S]) -> type[S]:
    """Class decorator adding a stage to the registry (ids are part of the format)."""
    if cls.codec_id in _BY_ID and _BY_ID[cls.codec_id] is not cls:
        raise ValueError(f"codec id {cls.codec_id:#06x} already taken by {_BY_ID[cls.codec_id].__name__}")
    _field_types(cls)  # fail at import time on unsupported parameter types
    _BY_ID[cls.codec_id] = cls
    _BY_NAME[cls.name] = cls
    return cls


def stage_class(codec_id: int) -> type[Stage]:
    try:
        return _BY_ID[codec_id]
    except KeyError:
        raise UnsupportedError(f"unknown codec id {codec_id:#06x}") from None


def stage_from_record(record: StageRecord) -> Stage:
    """The stage a stored record describes.

    Stages are immutable, and the records of one file mostly repeat a few pipelines
    (one global step, one coder), so stages with scalar parameters are memoised: on a
    ResNet-sized decode, rebuilding and re-validating each one cost more than
    reconstructing its tensor.
    """
    key = stage_key(record)
    if key is None:
        return stage_class(record.codec_id).from_params(record.params)
    return _cached_stage(key, tuple(record.params.items()))


_HASHABLE = (int, float, str, bytes)


def stage_key(record: StageRecord) -> tuple[object, ...] | None:
    """A hashable identity of a stored stage, or None when a parameter is an array.

    Each value keeps its type and a float its exact bits: 1 == 1.0 == True and
    0.0 == -0.0 in Python, but not as stored parameters.
    """
    params = record.params
    if not all(type(v) in _HASHABLE for v in params.values()):
        return None
    return (record.codec_id, *((k, type(v), v.hex() if type(v) is float else v) for k, v in sorted(params.items())))  # type: ignore[union-attr]


@functools.lru_cache(maxsize=256)
def _cached_stage(key: tuple[object, ...], items: tuple[tuple[str, ParamValue], ...]) -> Stage:
    return stage_class(key[0]).from_params(dict(items))  # type: ignore[arg-type]


def registered_stages() -> dict[str, type[Stage]]:
    """Name -> class of every registered stage."""
    return dict(_BY_NAME)


def check_integer_symbols(values: np.ndarray, what: str) -> np.ndarray:
    """``values`` as int64, refusing non-integer input (entropy stages code integers only)."""
    if values.dtype.kind not in "iub":
        raise CodecError(f"{what} codes integer arrays, got {values.dtype}")
    return values.astype(np.int64, copy=False).reshape(-1)
