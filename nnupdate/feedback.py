"""Error feedback: a client-side compressor that remembers what compression dropped.

Biased compressors (top-k, SBC, coarse quantizers) lose part of every update; error
feedback (Seide et al., Stich et al., as used by Sattler's SBC) adds that loss, the
residual, to the next update before compressing it, so nothing is lost for good, only
delayed. It works with any codec because the residual is measured from the real
decode of the bytes sent: ``residual = (delta + residual) - decode(encode(delta + residual))``.

The state (residuals, round counter, codec) saves as an ordinary container of kind
STATE (float64 tensors, coded losslessly), so a client can stop and resume exactly:
resuming from a saved state produces the same bytes as never having stopped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from . import dtypes
from .codecs.presets import Codec, parse_codec
from .errors import InputError
from .format import Combine, Role, UpdateKind
from .update import EncodeReport, TensorChange, Update, decode, diff, encode_with_report

STATE_PRODUCER = "nnupdate.feedback"


class ErrorFeedback:
    """Compress successive updates with ``codec``, carrying each round's residual into the next."""

    def __init__(self, codec: Codec | str, residual: Mapping[str, np.ndarray] | None = None, rounds: int = 0) -> None:
        self.codec = parse_codec(codec)
        self.residual: dict[str, np.ndarray] = {k: np.asarray(v, dtype=np.float64) for k, v in (residual or {}).items()}
        self.rounds = rounds

    # -------------------------------------------------------------------------- compressing

    def encode(self, update: Update) -> EncodeReport:
        """Encode ``update`` plus the carried residual; update the residual from the real decode."""
        corrected = self._corrected(update)
        report = encode_with_report(corrected, self.codec)
        decoded = decode(report.data)
        residual: dict[str, np.ndarray] = {}
        for name, change in corrected.changes.items():
            if change.combine != Combine.ADD or not dtypes.is_float(change.dtype) or change.data is None:
                continue
            got = decoded.changes[name]
            sent = (
                dtypes.to_float64(got.data, change.dtype).reshape(change.shape)
                if got.combine == Combine.ADD and got.data is not None
                else np.zeros(change.shape)
            )
            left = np.asarray(change.data, dtype=np.float64).reshape(change.shape) - sent
            if np.any(left):
                residual[name] = left
        self.residual = residual
        self.rounds += 1
        return report

    def compress(self, base: Mapping[str, np.ndarray], new: Mapping[str, np.ndarray], **header: object) -> EncodeReport:
        """``diff(base, new)`` then :meth:`encode` (header fields such as ``round`` pass through)."""
        return self.encode(diff(base, new, **header))  # type: ignore[arg-type]

    def _corrected(self, update: Update) -> Update:
        changes: dict[str, TensorChange] = {}
        for name, change in update.changes.items():
            carry = self.residual.get(name)
            if carry is None or not dtypes.is_float(change.dtype) or change.combine not in (Combine.ADD, Combine.KEEP):
                changes[name] = change
                continue
            if carry.shape != change.shape:
                raise InputError(f"{name}: residual has shape {carry.shape}, the update {change.shape}")
            data = carry if change.combine == Combine.KEEP else np.asarray(change.data, dtype=np.float64).reshape(change.shape) + carry
            changes[name] = dataclasses.replace(change, combine=Combine.ADD, data=data, base=None, target=None)
        return dataclasses.replace(update, changes=changes)

    # -------------------------------------------------------------------------- state

    def state_bytes(self) -> bytes:
        """The residuals and counters as a container of kind STATE (lossless)."""
        changes = {
            name: TensorChange(name, "float64", tuple(r.shape), Combine.REPLACE, np.ascontiguousarray(r, dtype=np.float64), Role.UNKNOWN)
            for name, r in sorted(self.residual.items())
        }
        state = Update(
            changes,
            kind=UpdateKind.STATE,
            round=self.rounds,
            producer=STATE_PRODUCER,
            metadata={"codec": self.codec.spec(), "feedback": "error-feedback residual"},
        )
        return encode_with_report(state, "raw").data

    @classmethod
    def from_state_bytes(cls, data: bytes, codec: Codec | str | None = None) -> ErrorFeedback:
        """Resume from :meth:`state_bytes`; ``codec`` defaults to the one recorded in the state."""
        state = decode(data)
        if state.kind != UpdateKind.STATE:
            raise InputError(f"not an error-feedback state (kind {state.kind.name})")
        residual = {}
        for name, change in state.changes.items():
            if change.combine != Combine.REPLACE or change.dtype != "float64" or change.data is None:
                raise InputError(f"state tensor {name!r} is not a float64 residual")
            residual[name] = np.asarray(change.data, dtype=np.float64).reshape(change.shape)
        spec = codec if codec is not None else state.metadata.get("codec")
        if spec is None:
            raise InputError("the state records no codec; pass one")
        return cls(spec, residual, state.round)

    def save(self, path: str | Path) -> None:
        from .io import atomic_write

        atomic_write(Path(path), self.state_bytes())

    @classmethod
    def load(cls, path: str | Path, codec: Codec | str | None = None) -> ErrorFeedback:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc}") from None
        return cls.from_state_bytes(data, codec)

    @property
    def residual_norm(self) -> float:
        """L2 norm of everything still owed to the server."""
        return float(np.sqrt(sum(float(np.sum(r * r)) for r in self.residual.values())))
