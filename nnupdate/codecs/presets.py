"""Named codecs: the strategies a user picks with ``--codec NAME[:key=value,...]``.

A codec turns each tensor change into a *plan*: how the decoded tensor combines with
the base, the array→array stages, and one or more candidate tails (array→bytes plus
bytes→bytes stages). The encoder runs the array stages once, encodes every tail and
keeps the smallest result, so "which entropy coder is best here" is decided by measured
bytes, never by a formula.

Policy shared by every codec (see :meth:`Codec.plan`): unchanged tensors are ``KEEP``,
integer tensors and newly added tensors are coded losslessly, running statistics get a
step of their own (:func:`plan_statistic`), and only the other float deltas go through
the codec's own (possibly lossy) pipeline.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np

from .. import dtypes
from ..errors import InputError
from ..format import Combine, Role
from .base import ArraySpec, ArrayToArray, Stage
from .bitpack import BitPack
from .golomb import GolombRice
from .rans import Rans
from .raw import Raw
from .uniform import Uniform
from .zstd import Zstd

if TYPE_CHECKING:
    from ..update import EncodeReport, TensorChange, Update

C = TypeVar("C", bound="Codec")

Tail = tuple[Stage, ...]


@dataclass(frozen=True)
class Plan:
    combine: Combine
    prefix: tuple[ArrayToArray, ...] = ()
    tails: tuple[Tail, ...] = ()
    #: optional shortcut of the encoder: given the prefix's symbols, the candidate tails
    #: still worth encoding (a cheap look at the symbols can rule out a tail that would
    #: lose, or one that another clearly beats); None: every tail is encoded
    narrow: Callable[[np.ndarray, ArraySpec], tuple[Tail, ...]] | None = None


LOSSLESS_INT_TAILS: tuple[Tail, ...] = ((Rans(),), (Raw(), Zstd()), (Raw(),))
LOSSLESS_BYTES_TAILS: tuple[Tail, ...] = ((Raw(), Zstd()), (Raw(),))


def ulp_tails() -> tuple[Tail, ...]:
    """Tails of a ULP change's steps: the ctx coder adapts to each row's scale, and sends
    the low bits of wide steps raw (``auto_low``: a float32 diff's steps are ~2**17, whose
    low bits are noise); zstd and raw take steps beyond its range (float64)."""
    from .context import Context  # context.py registers itself with this module

    return ((Context(auto_low=1),), (Raw(), Zstd()), (Raw(),))


#: Above this many symbols ``auto`` tries rans alone: its frequency table is then a small
#: fraction of the payload, and on ResNet-56 and the FedAvg CNN every tensor or group
#: above it went to rans anyway, while trying the others cost a third of the encode.
#: Below it, ``auto`` also tries raw+zstd, Golomb-Rice and bit-packing, whose headers are
#: a few bytes: on a few dozen values (BatchNorm statistics, biases) a frequency table
#: costs more than the values (ResNet-56's running statistics at 1% error: rans 31.1 KB,
#: bitpack 9.6 KB).
AUTO_SMALL_MAX_SYMBOLS = 1 << 12


def entropy_tails(coder: str, size: int | None = None) -> tuple[Tail, ...]:
    """Candidate tails for ``size`` integer symbols; ``auto`` lets measured bytes decide."""
    options: dict[str, tuple[Tail, ...]] = {
        "rans": ((Rans(),),),
        "zstd": ((Raw(), Zstd()),),
        "raw": ((Raw(),),),
    }
    large = size is not None and size > AUTO_SMALL_MAX_SYMBOLS
    options["auto"] = options["rans"] if large else options["rans"] + options["zstd"] + ((GolombRice(),), (BitPack(),))
    try:
        return options[coder]
    except KeyError:
        extra = _extra_coders()
        if coder in extra:
            return extra[coder]
        raise InputError(f"unknown coder {coder!r}; choose from {sorted(options) + sorted(extra)}") from None


_EXTRA_CODERS: dict[str, tuple[Tail, ...]] = {}


def register_coder(name: str, tails: tuple[Tail, ...]) -> None:
    """Make an entropy stage selectable as ``coder=name`` in every quantizing codec."""
    _EXTRA_CODERS[name] = tails


def _extra_coders() -> dict[str, tuple[Tail, ...]]:
    return dict(_EXTRA_CODERS)


@dataclass(frozen=True)
class Codec:
    """Base of named codecs. Fields are the options accepted after ``NAME:``."""

    name: ClassVar[str]
    lossless: ClassVar[bool] = False
    summary: ClassVar[str] = ""
    #: whether small float deltas may be coded together as one TGRP group
    groupable: ClassVar[bool] = True
    #: whether weights of any size that share a row length are also grouped, stacked as
    #: one matrix of their rows (for row-scanning coders, whose adaptive models then
    #: learn across layers instead of restarting per tensor)
    row_groups: ClassVar[bool] = False
    #: whether the entropy coder adapts along the scan, so that small tensors sharing a
    #: group are best ordered quietest first (an order-0 coder gains nothing from it)
    adaptive_scan: ClassVar[bool] = False
    #: whether a matrix delta is also tried as two quantized low-rank factors (kept when
    #: smaller at no more error; spec/CODECS.md ``lowrank``)
    try_lowrank: ClassVar[bool] = False
    #: whether running statistics get their own step (quantizers whose step or sparsity is
    #: set for the weights); casts and lossless-ish coders treat them like any tensor
    separate_statistics: ClassVar[bool] = True
    #: whether a float tensor is stored exactly (ULP steps) where that is no larger than the
    #: codec's own code; off for the codecs that stand for a fixed baseline (zstd, casts)
    exact_when_smaller: ClassVar[bool] = True

    def prepare(self: C, update: Update) -> C:
        """Resolve update-wide choices (a global step from a rate target); default: none."""
        return self

    def prepare_measured(self: C, update: Update) -> tuple[C, EncodeReport | None]:
        """:meth:`prepare`, plus the encode of ``update`` by the prepared codec when preparing
        already made it (a rate search's final trial), so it is not made twice; default: none."""
        return self.prepare(update), None

    def plan(self, change: TensorChange) -> Plan:
        if change.combine in (Combine.KEEP, Combine.REMOVE):
            return Plan(change.combine)
        if not dtypes.is_float(change.dtype):
            return Plan(change.combine, (), LOSSLESS_INT_TAILS)
        if change.combine == Combine.REPLACE:
            return Plan(Combine.REPLACE, (), LOSSLESS_BYTES_TAILS)
        if change.combine == Combine.XOR:  # a float change with no finite delta (see diff): bit-exact
            return Plan(Combine.XOR, (), LOSSLESS_BYTES_TAILS)
        if change.role == Role.STATISTIC and self.separate_statistics and not self.lossless and change.data is not None:
            return plan_statistic(change)
        return self.plan_float_delta(change)

    def plan_float_delta(self, change: TensorChange) -> Plan:
        """The plan for a float tensor's delta; codecs override this."""
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def spec(self) -> str:
        """The ``NAME:key=value`` string that rebuilds this codec."""
        opts = ",".join(f"{k}={v}" for k, v in self.options().items())
        return f"{self.name}:{opts}" if opts else self.name


_CODECS: dict[str, type[Codec]] = {}


def register_codec(cls: type[C]) -> type[C]:
    _CODECS[cls.name] = cls
    return cls


def registered_codecs() -> dict[str, type[Codec]]:
    return dict(_CODECS)


def _convert(value: str, kind: Any, key: str, codec: str) -> Any:
    try:
        if kind is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        return kind(value)
    except ValueError:
        raise InputError(f"codec {codec}: option {key}={value!r} is not a valid {kind.__name__}") from None


def parse_codec(spec: str | Codec) -> Codec:
    """``"uniform:step=1e-3,coder=rans"`` -> a codec instance (codec objects pass through)."""
    if isinstance(spec, Codec):
        return spec
    name, _, rest = spec.strip().partition(":")
    if name not in _CODECS:
        raise InputError(f"unknown codec {name!r}; registered: {', '.join(sorted(_CODECS))}")
    cls = _CODECS[name]
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            raise InputError(f"codec {name}: unknown option {item!r}; options: {', '.join(sorted(fields)) or 'none'}")
        kwargs[key] = _convert(value, hints[key], key, name)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise InputError(f"codec {name}: {exc}") from None


# ----------------------------------------------------------------------------- codecs


@register_codec
@dataclass(frozen=True)
class RawCodec(Codec):
    """Lossless: each float moved by a whole number of representable values (ULP), the
    steps context-coded; or the XOR of the bit patterns, then zstd. Reproduces NEW bit-exactly."""

    name = "raw"
    lossless = True
    summary = "lossless; bit-exact (16-bit floats: steps in units of the last place, ctx-coded; wider: XOR + zstd)"
    #: ``ulp``: steps between representable values, ctx-coded (small integers for a small
    #: update); ``xor``: the bit patterns' XOR, then zstd (a carry flips every bit it
    #: crosses); ``auto``: ulp for 16-bit floats, xor for wider ones. Measured on
    #: fine-tuning diffs (tools/bench_lossless.py): ulp is 24-46% smaller on bfloat16 at
    #: 19-55 MB/s against xor's 130-245; on float32 18-19% smaller, but at 18-37 MB/s
    #: against 75-145 (its steps are ~2**17, even with their low bits raw), so float32
    #: takes it only when asked
    combine: str = "auto"

    def __post_init__(self) -> None:
        if self.combine not in ("auto", "ulp", "xor"):
            raise ValueError("combine must be auto, ulp or xor")

    def plan_float_delta(self, change: TensorChange) -> Plan:
        if change.base is not None and change.target is not None:
            narrow = dtypes.storage_dtype(change.dtype).itemsize == 2
            if self.combine == "ulp" or (self.combine == "auto" and narrow):
                return Plan(Combine.ULP, (), ulp_tails())
            return Plan(Combine.XOR, (), LOSSLESS_BYTES_TAILS)
        return Plan(Combine.ADD, (), LOSSLESS_BYTES_TAILS)


@register_codec
@dataclass(frozen=True)
class ZstdCodec(Codec):
    """zstd on the float deltas in the tensor's own type (the general-purpose baseline)."""

    name = "zstd"
    separate_statistics = False
    exact_when_smaller = False
    summary = "zstd on raw float deltas"
    level: int = 3

    def plan_float_delta(self, change: TensorChange) -> Plan:
        return Plan(Combine.ADD, (), ((Raw(), Zstd(self.level)),))


@register_codec
@dataclass(frozen=True)
class Fp16Codec(Codec):
    """Deltas cast to IEEE half precision; a tensor whose delta overflows it (|x| > 65504)
    is stored in its own type instead, so one outlier does not fail the whole update."""

    name = "fp16"
    separate_statistics = False
    exact_when_smaller = False
    summary = "deltas cast to float16"

    def plan_float_delta(self, change: TensorChange) -> Plan:
        return Plan(Combine.ADD, (), ((Raw("float16"),), (Raw(),)))


@register_codec
@dataclass(frozen=True)
class Bf16Codec(Codec):
    """Deltas cast to bfloat16."""

    name = "bf16"
    separate_statistics = False
    exact_when_smaller = False
    summary = "deltas cast to bfloat16"

    def plan_float_delta(self, change: TensorChange) -> Plan:
        return Plan(Combine.ADD, (), ((Raw("bfloat16"),),))


@register_codec
@dataclass(frozen=True)
class UniformCodec(Codec):
    """One global step for every float delta, levels entropy coded.

    ``step > 0`` fixes the step (e.g. one a server sets for all clients); otherwise the
    step is the largest that keeps the update's relative L2 error at or below
    ``max_rel_error`` (bisection, measured on the actual quantization).
    """

    name = "uniform"
    summary = "global-step scalar quantization + entropy coding"
    step: float = 0.0
    max_rel_error: float = 0.05
    rounding: str = "nearest"
    seed: int = 0
    coder: str = "auto"

    def __post_init__(self) -> None:
        entropy_tails(self.coder)
        if self.step < 0 or not 0 < self.max_rel_error < 1:
            raise ValueError("step must be >= 0 and max_rel_error in (0, 1)")

    def prepare(self, update: Update) -> UniformCodec:
        return self.prepare_measured(update)[0]

    def prepare_measured(self, update: Update) -> tuple[UniformCodec, EncodeReport | None]:
        """The largest step whose measured error, the applied model's, meets
        ``max_rel_error`` (:func:`rate.step_for_rel_error`), with its encode if one was made."""
        if self.step > 0:
            return self, None
        from ..rate import step_for_rel_error

        step, report = step_for_rel_error(update, self.with_step, self.max_rel_error, self.rounding, self.seed)
        return self.with_step(step), report

    def with_step(self, step: float) -> UniformCodec:
        return dataclasses.replace(self, step=step)

    def plan_float_delta(self, change: TensorChange) -> Plan:
        if self.step <= 0:
            raise InputError("uniform: no step chosen (call prepare() or pass step=...)")
        seed = _tensor_seed(self.seed, change.name)
        return Plan(Combine.ADD, (Uniform(self.step, self.rounding, seed),), entropy_tails(self.coder, change.size))


#: Relative L2 error at which running statistics are coded by every lossy codec.
STATISTIC_REL_ERROR = 0.01


def plan_statistic(change: TensorChange, step: float | None = None) -> Plan:
    """Running statistics get their own step: 1% relative error of that tensor's delta.

    They are few (two vectors per BatchNorm layer) but their deltas dwarf the learned
    parameters'; a step of their own keeps them accurate without dragging the global
    step of the weights (see ``Update.float_deltas``). Sparsifying or sign-coding them
    would corrupt the model's normalisation, so no codec's own pipeline sees them.
    ``step`` overrides the tensor's own (a group of statistics shares its members'
    smallest step, which keeps every member within its target).
    """
    assert change.data is not None
    size = int(np.size(change.data))
    if step is None:
        step = statistic_step(np.asarray(change.data))
    return Plan(Combine.ADD, (Uniform(float(step)),), entropy_tails("auto", size))


def statistic_step(data: np.ndarray) -> float:
    """The largest power-of-two fraction of the high-rate step that keeps a statistic's
    delta within ``STATISTIC_REL_ERROR`` relative L2 error."""
    from ..rate import relative_error

    x = np.asarray(data, dtype=np.float64).reshape(-1)
    norm = float(np.sqrt(np.einsum("i,i->", x, x)))
    if norm == 0.0:
        return 1.0
    # At 1% error the step is far below the values' spread, where rounding error is
    # uniform: rms = step / sqrt(12). Start there and halve until the target holds.
    step = STATISTIC_REL_ERROR * norm * np.sqrt(12.0 / x.size)
    while relative_error([x], step) > STATISTIC_REL_ERROR:
        step /= 2
    return float(step)


def _tensor_seed(seed: int, name: str) -> int:
    """A per-tensor seed, so stochastic rounding differs between tensors but is reproducible."""
    import zlib

    return (seed * 1_000_003 + zlib.crc32(name.encode("utf-8"))) & 0x7FFFFFFF


def codec_table() -> list[dict[str, Any]]:
    """Registered codecs with their options and defaults (for ``nnupdate codecs``)."""
    rows = []
    for name, cls in sorted(_CODECS.items()):
        hints = typing.get_type_hints(cls)
        rows.append(
            {
                "name": name,
                "lossless": cls.lossless,
                "summary": cls.summary or (cls.__doc__ or "").strip().splitlines()[0],
                "options": {
                    f.name: {"type": hints[f.name].__name__, "default": f.default}
                    for f in dataclasses.fields(cls)
                },
            }
        )
    return rows


__all__ = [
    "Codec",
    "Plan",
    "codec_table",
    "entropy_tails",
    "parse_codec",
    "register_codec",
    "register_coder",
    "registered_codecs",
]
