"""Client logic, shared by every engine: receive, train, diff, encode.

``client_round`` is a pure function of (config, client id, round, state, downstream
bytes): engines only move its inputs and outputs around, so the in-process engine and
the Flower ``ClientApp`` produce the same bytes for the same seed.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from ..codecs.presets import Codec
from ..update import Update, decode, encode_with_report
from .config import FLConfig
from .messages import ClientState, client_update, new_residual, receive_downstream, resolve_codec
from .task import client_data, load_task, load_weights, local_train, single_thread, weights_of


@dataclass
class ClientReply:
    """A client's answer for one round; ``data`` is None when it dropped out."""

    client: int
    data: bytes | None
    encode_s: float = 0.0
    decode_s: float = 0.0
    train_loss: float = 0.0
    relative_error: float = 0.0
    #: bytes that crossed when they differ from ``len(data)`` (a peer codec's own bitstream)
    wire_bytes: int | None = None
    #: why the client produced nothing (engine-reported failure); empty for a silent dropout
    error: str = ""


def train_seed(config: FLConfig, round: int, client: int) -> int:
    return (config.seed * 1_000_003 + round * 1009 + client) & 0x7FFFFFFF


def reseeded(codec: Codec, seed: int) -> Codec:
    """Give a stochastic codec (one with a ``seed`` option) fresh randomness per client and round.

    With one fixed seed every client would dither with the same pattern each round, so
    stochastic-rounding errors would be correlated and would not average out at the server.
    """
    if "seed" not in {f.name for f in dataclasses.fields(codec)}:
        return codec
    return dataclasses.replace(codec, seed=(int(codec.seed) * 1_000_003 + seed) & 0x7FFFFFFF)  # type: ignore[attr-defined,call-arg]


@dataclass
class Trained:
    """A client's update before coding (what a peer codec outside nnupdate receives)."""

    update: Update
    state: ClientState
    decode_s: float
    loss: float


def train_update(config: FLConfig, client: int, round: int, state: ClientState, downstream: list[bytes]) -> Trained:
    """Receive the downstream messages, train locally, and form the DELTA (+ EF residual)."""
    state, decode_s = receive_downstream(state, downstream)
    assert state.replica is not None
    task = load_task(config.task)
    x, y = client_data(config.task, config.clients, config.split, config.alpha, config.seed)[client]
    with single_thread():
        model = load_weights(task.make_model(config.seed), state.replica)
        loss = local_train(
            task, model, x, y, epochs=config.local_epochs, lr=config.lr, batch_size=config.batch_size, seed=train_seed(config, round, client)
        )
        trained = weights_of(model)
    update = client_update(
        state.replica, trained, state.residual, round=round, client=client, examples=len(y), error_feedback=config.error_feedback
    )
    return Trained(update, state, decode_s, loss)


def client_round(config: FLConfig, client: int, round: int, state: ClientState, downstream: list[bytes], *, drop: bool = False) -> tuple[ClientReply, ClientState]:
    """One round on one client. ``drop`` simulates a client that leaves before replying."""
    if drop:
        return ClientReply(client, None), state
    done = train_update(config, client, round, state, downstream)
    state, decode_s, update = done.state, done.decode_s, done.update
    report = encode_with_report(update, reseeded(resolve_codec(config.codec), train_seed(config, round, client)))
    if config.error_feedback:
        started = time.perf_counter()
        decoded = decode(report.data)
        decode_s += time.perf_counter() - started
        state.residual = new_residual(update, decoded)
    return ClientReply(client, report.data, report.seconds, decode_s, done.loss, report.relative_error), state
