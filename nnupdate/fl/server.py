"""Server logic, shared by every engine: select, send, decode, validate, aggregate, step.

The server keeps two models: ``weights`` (its own global model x_t) and ``replica``
(x̂_t, what clients reconstruct from the downstream messages). With ``downstream=full``
they are equal. With a lossy downstream codec the server sends Q(x_t - x̂_{t-1}) and
sets x̂_t = x̂_{t-1} + Q(...): the coding error stays in x_t - x̂_t and is re-sent next
round, i.e. server-side error feedback (Seide et al. 2014; Tang et al., DoubleSqueeze).
Client deltas are always relative to x̂, and every client message is checked against
x̂'s fingerprint before it is used.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import dtypes
from ..errors import InputError, NNUpdateError, ShapeMismatchError
from ..fingerprint import storage_view, tensor_dtype_name
from ..format import UpdateKind
from ..update import apply, decode, diff, encode_with_report
from .client import ClientReply
from .config import FLConfig
from .messages import encode_full, project, resolve_codec
from .task import evaluate, load_task, single_thread, weights_of

log = logging.getLogger("nnupdate.fl")

ADAM_BETAS = (0.9, 0.99)
ADAM_TAU = 1e-3


@dataclass
class Assignment:
    """One selected client's work order for a round."""

    client: int
    messages: list[bytes]
    drop: bool = False


@dataclass
class ServerState:
    round: int
    weights: dict[str, np.ndarray]
    replica: dict[str, np.ndarray]
    rng_state: dict[str, Any]
    moments: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    client_versions: dict[int, int] = field(default_factory=dict)
    #: round -> DELTA message that moved the replica to that round (lossy downstream only)
    downstream_log: dict[int, bytes] = field(default_factory=dict)


def _finite(arrays: dict[str, np.ndarray]) -> bool:
    return all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == "f")


def _is_optimized(name: str) -> bool:
    """Server optimizers act on learned tensors; BatchNorm statistics are plainly averaged."""
    return "running_" not in name


class Server:
    """Round bookkeeping over bytes; engines call :meth:`plan_round` then :meth:`finish_round`."""

    def __init__(self, config: FLConfig, state: ServerState) -> None:
        self.config = config
        self.state = state
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state.rng_state
        self.task = load_task(config.task)
        self._full_cache: tuple[int, bytes] | None = None
        self._downstream_encode_s = 0.0

    @classmethod
    def initial(cls, config: FLConfig) -> Server:
        task = load_task(config.task)
        with single_thread():
            weights = weights_of(task.make_model(config.seed))
        rng = np.random.default_rng(config.seed)
        state = ServerState(0, weights, {k: v.copy() for k, v in weights.items()}, dict(rng.bit_generator.state))
        return cls(config, state)

    # ------------------------------------------------------------------ sending

    def full_message(self) -> bytes:
        """The replica as a FULL container (cached per version)."""
        version = self.state.round
        if self._full_cache is None or self._full_cache[0] != version:
            started = time.perf_counter()
            self._full_cache = (version, encode_full(self.state.replica, round=version))
            self._downstream_encode_s += time.perf_counter() - started
        return self._full_cache[1]

    def messages_for(self, client: int) -> list[bytes]:
        """What ``client`` needs to hold the current replica: nothing, the missed deltas, or a FULL model."""
        have, current = self.state.client_versions.get(client, -1), self.state.round
        if have == current:
            return []
        if self.config.downstream == "full" or have < 0:
            return [self.full_message()]
        missed = [self.state.downstream_log[r] for r in range(have + 1, current + 1) if r in self.state.downstream_log]
        full = self.full_message()
        return missed if sum(len(m) for m in missed) < len(full) else [full]

    def plan_round(self) -> list[Assignment]:
        """Seeded choice of m of K clients, and which of them drop out (simulated faults)."""
        cfg = self.config
        chosen = np.sort(self.rng.choice(cfg.clients, size=cfg.per_round, replace=False))
        drops = self.rng.random(cfg.per_round) < cfg.dropout
        self._downstream_encode_s = 0.0
        return [Assignment(int(c), self.messages_for(int(c)), bool(d)) for c, d in zip(chosen, drops)]

    # ------------------------------------------------------------------ receiving

    def validate(self, data: bytes) -> tuple[dict[str, np.ndarray], int]:
        """Decode one client message into (float64/int deltas, example count); raises NNUpdateError."""
        update = decode(data)
        if update.kind != UpdateKind.DELTA:
            raise InputError(f"expected a DELTA container, got {update.kind.name}")
        if update.round != self.state.round + 1:
            raise InputError(f"update is for round {update.round}, this is round {self.state.round + 1}")
        try:
            examples = int(update.metadata.get("examples", ""))
        except ValueError:
            raise InputError("update lacks a valid 'examples' count") from None
        if examples <= 0:
            raise InputError(f"examples must be positive, got {examples}")
        base = self.state.replica
        trained = apply(base, update)  # checks the base fingerprint and every shape
        if set(trained) != set(base):
            extra, lost = sorted(set(trained) - set(base)), sorted(set(base) - set(trained))
            raise ShapeMismatchError(f"update changes the tensor set (added {extra[:3]}, removed {lost[:3]})")
        deltas: dict[str, np.ndarray] = {}
        for name, value in trained.items():
            reference = base[name]
            if value.shape != reference.shape or value.dtype != reference.dtype:
                raise ShapeMismatchError(f"{name}: got {value.dtype}{list(value.shape)}, model has {reference.dtype}{list(reference.shape)}")
            kind = tensor_dtype_name(value)
            if dtypes.is_float(kind):  # bfloat16 (kind "V" to numpy) included, through its storage bits
                deltas[name] = dtypes.difference_float64(storage_view(value), storage_view(reference), kind)
            else:
                deltas[name] = value.astype(np.int64) - reference.astype(np.int64)
        if not _finite(deltas):
            raise InputError("update holds non-finite values")
        return deltas, examples

    def finish_round(self, plan: list[Assignment], replies: list[ClientReply]) -> dict[str, Any]:
        """Aggregate the valid replies, step the global model, prepare the downstream message."""
        cfg = self.config
        t = self.state.round + 1
        sent = {a.client: a for a in plan}
        bytes_down = sum(len(m) for a in plan for m in a.messages)
        bytes_up = sum(len(r.data) if r.wire_bytes is None else r.wire_bytes for r in replies if r.data is not None)
        encode_s = self._downstream_encode_s + sum(r.encode_s for r in replies)
        decode_s = sum(r.decode_s for r in replies)
        valid: list[tuple[dict[str, np.ndarray], int]] = []
        rejected: list[dict[str, Any]] = []
        replied: set[int] = set()
        silent: set[int] = set()
        for reply in replies:
            if reply.client not in sent:
                rejected.append({"client": reply.client, "reason": "reply from a client not selected this round"})
                continue
            replied.add(reply.client)
            if reply.data is None:
                if reply.error:  # the engine reported a failure (client crashed, stale replica)
                    rejected.append({"client": reply.client, "reason": reply.error})
                    log.warning("round %d: client %d failed: %s", t, reply.client, reply.error)
                    self.state.client_versions.pop(reply.client, None)
                else:
                    silent.add(reply.client)
                continue
            started = time.perf_counter()
            try:
                valid.append(self.validate(reply.data))
                self.state.client_versions[reply.client] = self.state.round
            except NNUpdateError as exc:
                reason = f"{type(exc).__name__}: {exc}"
                rejected.append({"client": reply.client, "reason": reason})
                log.warning("round %d: rejected update from client %d: %s", t, reply.client, reason)
            decode_s += time.perf_counter() - started
        dropped = sorted(c for c in sent if c not in replied or c in silent)
        skipped = len(valid) < cfg.min_updates
        if skipped:
            log.warning("round %d skipped: %d valid updates, need %d", t, len(valid), cfg.min_updates)
        else:
            self._step(valid)
        self.state.round = t
        if not skipped:
            encode_s += self._prepare_downstream(t)
        accuracy, loss = evaluate(self.task, self.state.weights, cfg.seed, cfg.task)
        record: dict[str, Any] = {
            "config": cfg.label,
            "round": t,
            "accuracy": accuracy,
            "loss": loss if np.isfinite(loss) else None,
            "bytes_up": bytes_up,
            "bytes_down": bytes_down,
            "encode_s": encode_s,
            "decode_s": decode_s,
            "selected": sorted(sent),
            "valid": len(valid),
            "dropped": dropped,
            "rejected": rejected,
            "skipped": skipped,
            "train_loss": float(np.mean([r.train_loss for r in replies if r.data is not None])) if bytes_up else None,
            "upstream_rel_error": float(np.mean([r.relative_error for r in replies if r.data is not None])) if bytes_up else None,
        }
        if cfg.downstream != "full":
            record["replica_accuracy"] = evaluate(self.task, self.state.replica, cfg.seed, cfg.task)[0]
        previous = self.state.history[-1] if self.state.history else {"cum_bytes_up": 0, "cum_bytes_down": 0}
        record["cum_bytes_up"] = previous["cum_bytes_up"] + bytes_up
        record["cum_bytes_down"] = previous["cum_bytes_down"] + bytes_down
        self.state.history.append(record)
        return record

    # ------------------------------------------------------------------ updating

    def _step(self, valid: list[tuple[dict[str, np.ndarray], int]]) -> None:
        """Example-weighted mean of the deltas, then the server optimizer (FedAvg/FedAvgM/FedAdam)."""
        cfg = self.config
        total = float(sum(n for _, n in valid))
        lr = cfg.effective_server_lr
        weights = self.state.weights
        new: dict[str, np.ndarray] = {}
        for name, current in weights.items():
            mean = np.zeros(current.shape, dtype=np.float64)
            for deltas, n in valid:
                mean += deltas[name] * (n / total)
            kind = tensor_dtype_name(current)
            if not dtypes.is_float(kind):
                new[name] = (current.astype(np.int64) + np.rint(mean).astype(np.int64)).astype(current.dtype)
                continue
            step = mean
            if _is_optimized(name) and cfg.mode == "fedavgm":
                m = self.state.moments.setdefault("m", {}).get(name, np.zeros_like(mean))
                m = cfg.server_momentum * m + mean
                self.state.moments["m"][name] = m
                step = lr * m
            elif _is_optimized(name) and cfg.mode == "fedadam":
                b1, b2 = ADAM_BETAS
                m = b1 * self.state.moments.setdefault("m", {}).get(name, np.zeros_like(mean)) + (1 - b1) * mean
                v = b2 * self.state.moments.setdefault("v", {}).get(name, np.zeros_like(mean)) + (1 - b2) * mean * mean
                self.state.moments["m"][name], self.state.moments["v"][name] = m, v
                step = lr * m / (np.sqrt(v) + ADAM_TAU)
            elif _is_optimized(name):
                step = lr * mean
            moved = dtypes.to_float64(storage_view(current), kind) + step
            new[name] = dtypes.typed(dtypes.from_float64(moved, kind), kind).reshape(current.shape)
        self.state.weights = project(new)

    def _prepare_downstream(self, t: int) -> float:
        """Move the replica to round ``t``; returns the seconds spent encoding."""
        if self.config.downstream == "full":
            self.state.replica = {k: v.copy() for k, v in self.state.weights.items()}
            return 0.0
        started = time.perf_counter()
        update = diff(self.state.replica, self.state.weights, round=t, producer="nnupdate-fl server")
        report = encode_with_report(update, resolve_codec(self.config.downstream))
        seconds = time.perf_counter() - started
        self.state.replica = project(apply(self.state.replica, decode(report.data)))
        self.state.downstream_log[t] = report.data
        return seconds
