"""What crosses the wire, as .nnu containers, and the client state kept between rounds.

Every message is a container: the server's downstream message is a FULL update (complete
weights, lossless) or a DELTA against the clients' replica; a client's reply is a DELTA
against the replica it trained from, with the number of training examples in the header
metadata. The receiver decodes it with :func:`nnupdate.decode`; nothing else crosses.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import dtypes
from ..codecs.presets import Codec, Plan, parse_codec
from ..codecs.raw import Raw
from ..errors import InputError
from ..fingerprint import tensor_dtype_name
from ..format import Combine, UpdateKind
from ..update import TensorChange, Update, apply, decode, diff, encode_with_report, full

#: lossless codec for FULL messages, states and checkpoints
LOSSLESS = "raw"


@dataclass(frozen=True)
class NoneCodec(Codec):
    """The uncompressed reference: float deltas as plain float32 (no entropy coding)."""

    name = "none"
    summary = "uncompressed float32 deltas (FL reference)"

    def plan_float_delta(self, change: TensorChange) -> Plan:
        return Plan(Combine.ADD, (), ((Raw("float32" if change.dtype == "float32" else ""),),))


def resolve_codec(spec: str) -> Codec:
    """A codec spec as the FL harness understands it: ``none`` plus every registered codec."""
    if spec.strip() == "none":
        return NoneCodec()
    return parse_codec(spec)


def encode_full(weights: Mapping[str, np.ndarray], *, round: int, kind: UpdateKind = UpdateKind.FULL, metadata: Mapping[str, str] | None = None) -> bytes:
    """Complete tensors, losslessly: a FULL (or STATE) container."""
    update = full(weights, round=round, producer="nnupdate-fl", metadata=dict(metadata or {}))
    update.kind = kind
    return encode_with_report(update, LOSSLESS).data


def decode_full(data: bytes, *, kind: UpdateKind = UpdateKind.FULL) -> tuple[dict[str, np.ndarray], Update]:
    update = decode(data)
    if update.kind != kind:
        raise InputError(f"expected a {kind.name} container, got {update.kind.name}")
    return apply({}, update), update


def float_names(weights: Mapping[str, np.ndarray]) -> list[str]:
    return [n for n, a in weights.items() if dtypes.is_float(tensor_dtype_name(np.asarray(a)))]


@dataclass
class ClientState:
    """What a client keeps between rounds: its replica of the global model and its EF residual."""

    version: int = -1
    replica: dict[str, np.ndarray] | None = None
    residual: dict[str, np.ndarray] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """A STATE container (lossless): ``replica/NAME`` and ``residual/NAME`` tensors."""
        tensors = {f"replica/{k}": v for k, v in (self.replica or {}).items()}
        tensors.update({f"residual/{k}": v for k, v in self.residual.items()})
        return encode_full(tensors, round=max(self.version, 0), kind=UpdateKind.STATE, metadata={"version": str(self.version)})

    @classmethod
    def from_bytes(cls, data: bytes) -> ClientState:
        tensors, update = decode_full(data, kind=UpdateKind.STATE)
        replica = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("replica/")}
        residual = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith("residual/")}
        return cls(int(update.metadata.get("version", "-1")), replica or None, residual)


def project(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Keep tensors in their valid domain after lossy coding: BatchNorm variances >= 0.

    A coarse quantizer can push a small ``running_var`` below zero, which turns every
    later forward pass into NaN. Server and clients apply this same projection to the
    replica after every downstream message, so their copies stay bit-identical.
    """
    for name, value in weights.items():
        if name.endswith("running_var") and dtypes.is_float(tensor_dtype_name(value)) and (value < 0).any():
            weights[name] = np.maximum(value, 0).astype(value.dtype)
    return weights


def receive_downstream(state: ClientState, messages: list[bytes]) -> tuple[ClientState, float]:
    """Apply the server's messages (oldest first) to the replica; returns (state, decode seconds).

    Messages for versions the client already holds are skipped, so a resend after a lost
    acknowledgement is harmless. A delta against a replica the client does not hold
    raises :class:`~nnupdate.errors.BaseMismatchError` (the fingerprint check).
    """
    import time

    seconds = 0.0
    for data in messages:
        started = time.perf_counter()
        update = decode(data)
        seconds += time.perf_counter() - started
        if update.round <= state.version:
            continue
        if update.kind == UpdateKind.FULL:
            state.replica = apply({}, update)
        elif update.kind == UpdateKind.DELTA:
            if state.replica is None:
                from ..errors import BaseMismatchError

                raise BaseMismatchError("a delta arrived before any full model")
            state.replica = project(apply(state.replica, update))
        else:
            raise InputError(f"unexpected downstream container kind {update.kind.name}")
        state.version = update.round
    return state, seconds


def client_update(
    replica: Mapping[str, np.ndarray],
    trained: Mapping[str, np.ndarray],
    residual: Mapping[str, np.ndarray],
    *,
    round: int,
    client: int,
    examples: int,
    error_feedback: bool,
) -> Update:
    """The DELTA a client sends: trained - replica (+ the EF residual on float tensors)."""
    update = diff(replica, trained, round=round, producer="nnupdate-fl", metadata={"client": str(client), "examples": str(examples)})
    if not error_feedback:
        return update
    for name, change in update.changes.items():
        if name not in residual or not dtypes.is_float(change.dtype):
            continue
        carried = np.asarray(residual[name], dtype=np.float64)
        if change.combine == Combine.KEEP:
            if not np.any(carried):
                continue
            change.combine, change.data = Combine.ADD, carried.copy()
        elif change.combine == Combine.ADD and change.data is not None:
            change.data = change.data + carried
        # the lossless codecs would otherwise code the XOR of base/target and drop the residual
        change.base = change.target = None
    return update


def new_residual(update: Update, decoded: Update) -> dict[str, np.ndarray]:
    """What coding lost on each float tensor: sent - decoded (float64), the next round's carry."""
    out: dict[str, np.ndarray] = {}
    for name, change in update.changes.items():
        if change.combine != Combine.ADD or not dtypes.is_float(change.dtype) or change.data is None:
            continue
        got = decoded.changes.get(name)
        sent = np.asarray(change.data, dtype=np.float64).reshape(change.shape)
        if got is not None and got.combine in (Combine.ULP, Combine.XOR):
            continue  # stored exactly (the exact code was smaller): nothing lost
        if got is None or got.combine != Combine.ADD or got.data is None:
            out[name] = sent
        else:
            out[name] = sent - dtypes.to_float64(got.data, got.dtype).reshape(change.shape)
    return out


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True).encode("utf-8")
