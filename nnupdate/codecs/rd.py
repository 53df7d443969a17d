"""``rd``: Mitchell et al.'s rate-distortion codec for model updates.

Stochastic rounding to integer multiples of ONE global step (unbiased, so a server
averaging many clients sees no quantization bias), then an entropy stage: their
Elias-gamma zero-run-length coder (``coder=elias``, bit-compatible with
tensorflow-compression), our rANS (``coder=rans``), or whichever is smaller per tensor
(``coder=auto``), so the difference between them is measured, not assumed.

The step comes, in order of precedence, from ``step`` (a server-set Δ), ``target_bits``
(bisection on Δ until the container's bits/param is within 0.5% of the target),
``lam`` (grid search minimising bytes + lam * squared error, see ``nnupdate.rate``), or
``max_rel_error`` (largest Δ whose relative L2 error is at most the target).
Uses the ``uniform`` stage (0x0010) with ``rounding=stochastic``; no new stage id.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import InputError
from ..format import Combine
from .coders import tails
from .presets import Codec, Plan, _tensor_seed, register_codec
from .uniform import Uniform

if TYPE_CHECKING:
    from ..update import EncodeReport, TensorChange, Update


@register_codec
@dataclass(frozen=True)
class RDCodec(Codec):
    """Global-step stochastic rounding + Elias-gamma RLE or rANS, with rate control."""

    name = "rd"
    summary = "Mitchell et al.: global-step stochastic rounding + Elias-gamma RLE / rANS; rate control"
    step: float = 0.0
    max_rel_error: float = 0.05
    target_bits: float = 0.0
    lam: float = 0.0
    rounding: str = "stochastic"
    seed: int = 0
    coder: str = "elias"

    def __post_init__(self) -> None:
        tails(self.coder)
        if self.step < 0 or self.target_bits < 0 or self.lam < 0 or not 0 < self.max_rel_error < 1:
            raise ValueError("step, target_bits, lam must be >= 0 and max_rel_error in (0, 1)")
        if self.rounding not in ("nearest", "stochastic"):
            raise ValueError("rounding must be nearest or stochastic")

    def with_step(self, step: float) -> RDCodec:
        return dataclasses.replace(self, step=step)

    def prepare(self, update: Update) -> RDCodec:
        return self.prepare_measured(update)[0]

    def prepare_measured(self, update: Update) -> tuple[RDCodec, EncodeReport | None]:
        if self.step > 0:
            return self, None
        from .. import rate

        if self.target_bits > 0:
            return self.with_step(rate.step_for_target_bits(update, self.with_step, self.target_bits)), None
        if self.lam > 0:
            return self.with_step(rate.step_for_lambda(update, self.with_step, self.lam)), None
        step, report = rate.step_for_rel_error(update, self.with_step, self.max_rel_error, self.rounding, self.seed)
        return self.with_step(step), report

    def plan_float_delta(self, change: TensorChange) -> Plan:
        if self.step <= 0:
            raise InputError("rd: no step chosen (call prepare() or pass step=...)")
        stage = Uniform(self.step, self.rounding, _tensor_seed(self.seed, change.name))
        return Plan(Combine.ADD, (stage,), tails(self.coder))
