"""Atomic per-round checkpoints of a run, without pickle.

Layout of ``DIR/checkpoint/``::

    LATEST                      name of the newest complete round directory (atomic rename)
    round-00007/state.json      config, round, RNG state, history, client versions
    round-00007/global.nnu      x_t, FULL container (lossless)
    round-00007/replica.nnu     x̂_t, FULL container (lossless)
    round-00007/optimizer.nnu   server optimizer moments, STATE container ("m/NAME", "v/NAME")
    round-00007/downstream/R.nnu  downstream DELTA messages kept for client catch-up
    round-00007/clients/C.nnu   in-process client states (replica + EF residual), STATE

A round directory is written completely, then ``LATEST`` is replaced atomically, then
older round directories are deleted: a kill at any instant leaves a consistent
checkpoint (the previous one if the new one was not finished).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..format import UpdateKind
from ..io import atomic_write
from .config import FLConfig
from .messages import ClientState, decode_full, encode_full
from .server import Server, ServerState

LATEST = "LATEST"


def save(out: Path, server: Server, clients: dict[int, ClientState] | None = None) -> Path:
    root = Path(out) / "checkpoint"
    state = server.state
    target = root / f"round-{state.round:05d}"
    if target.exists():
        shutil.rmtree(target)
    (target / "downstream").mkdir(parents=True)
    atomic_write(target / "global.nnu", encode_full(state.weights, round=state.round))
    atomic_write(target / "replica.nnu", encode_full(state.replica, round=state.round))
    moments = {f"{key}/{name}": value for key, table in state.moments.items() for name, value in table.items()}
    atomic_write(target / "optimizer.nnu", encode_full(moments, round=state.round, kind=UpdateKind.STATE))
    for r, data in state.downstream_log.items():
        atomic_write(target / "downstream" / f"{r}.nnu", data)
    if clients is not None:
        (target / "clients").mkdir()
        for c, client_state in clients.items():
            atomic_write(target / "clients" / f"{c}.nnu", client_state.to_bytes())
    meta = {
        "config": server.config.to_json(),
        "round": state.round,
        "rng_state": server.rng.bit_generator.state,
        "history": state.history,
        "client_versions": {str(k): v for k, v in state.client_versions.items()},
        "downstream_rounds": sorted(state.downstream_log),
        "clients": sorted(clients) if clients is not None else None,
    }
    atomic_write(target / "state.json", json.dumps(meta, sort_keys=True).encode("utf-8"))
    atomic_write(root / LATEST, target.name.encode("ascii"))
    for old in root.glob("round-*"):
        if old.is_dir() and old.name != target.name:
            shutil.rmtree(old, ignore_errors=True)
    return target


def exists(out: Path) -> bool:
    return (Path(out) / "checkpoint" / LATEST).is_file()


def load(out: Path) -> tuple[Server, dict[int, ClientState] | None]:
    """The server (and in-process client states) of the newest complete checkpoint."""
    root = Path(out) / "checkpoint"
    try:
        name = (root / LATEST).read_text("ascii").strip()
    except FileNotFoundError:
        raise InputError(f"{out}: no checkpoint to resume (missing checkpoint/{LATEST})") from None
    target = root / name
    if not name.startswith("round-") or not target.is_dir():
        raise InputError(f"{out}: checkpoint/{LATEST} names a missing directory {name!r}")
    try:
        meta = json.loads((target / "state.json").read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{target}: unreadable state.json ({exc})") from None
    config = FLConfig.from_json(meta["config"])
    weights, _ = decode_full((target / "global.nnu").read_bytes())
    replica, _ = decode_full((target / "replica.nnu").read_bytes())
    flat, _ = decode_full((target / "optimizer.nnu").read_bytes(), kind=UpdateKind.STATE)
    moments: dict[str, dict[str, np.ndarray]] = {}
    for key, value in flat.items():
        kind, _, tensor = key.partition("/")
        moments.setdefault(kind, {})[tensor] = value
    log = {int(r): (target / "downstream" / f"{r}.nnu").read_bytes() for r in meta["downstream_rounds"]}
    state = ServerState(
        int(meta["round"]),
        weights,
        replica,
        meta["rng_state"],
        moments,
        list(meta["history"]),
        {int(k): int(v) for k, v in meta["client_versions"].items()},
        log,
    )
    clients = None
    if meta.get("clients") is not None:
        clients = {int(c): ClientState.from_bytes((target / "clients" / f"{c}.nnu").read_bytes()) for c in meta["clients"]}
    return Server(config, state), clients
