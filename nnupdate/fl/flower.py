"""The Flower engine: the same client and server logic as Flower ``ClientApp``/``ServerApp``.

Every model message is a .nnu container carried as ``bytes`` in a Flower ``ConfigRecord``;
nothing else of substance crosses (the round number, client index and the run's JSON
config ride along as small control fields and are not counted as model bytes).

- :data:`client_app` decodes the downstream messages, trains, encodes its delta with the
  run's codec (compression inside the app) and keeps its replica and error-feedback
  residual in ``context.state`` (a STATE container), which Flower keeps on the node.
- :data:`server_app` discovers which node holds which data partition (one ``query``
  message), then runs :func:`nnupdate.fl.run.drive` with an exchange that sends
  ``train`` messages through the ``Grid``.

Simulation (Ray backend, one machine): ``nnupdate fl run --engine flower``. Deployment:
the same two objects, referenced as ``nnupdate.fl.flower:server_app`` and
``nnupdate.fl.flower:client_app``; see spec/FL.md for the SuperLink/SuperNode commands.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from ..errors import InputError, NNUpdateError
from .client import ClientReply, client_round
from .config import FLConfig
from .messages import ClientState
from .server import Assignment, Server

log = logging.getLogger("nnupdate.fl")

RECORD = "nnupdate"
DROPOUT_CODE = 7301  # a simulated client dropout: treated as silence, not as a rejection
CLIENT_FAILED_CODE = 7302  # the client could not produce an update (logged as a rejection)
NODE_WAIT_S = 120.0

#: set by :func:`run_simulation` for the ServerApp thread of an in-process simulation
_JOB: dict[str, Any] = {}


def _flwr() -> Any:
    try:
        import flwr  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the install
        raise InputError("the flower engine needs Flower: pip install 'nnupdate[fl]'") from None
    import flwr.app
    import flwr.clientapp
    import flwr.serverapp

    return flwr


def _partition_of(context: Any) -> int | None:
    value = context.node_config.get("partition-id")
    return None if value is None else int(value)


# ----------------------------------------------------------------------------- client side


def _client_train(msg: Any, context: Any) -> Any:
    from flwr.app import ConfigRecord, Error, Message, RecordDict

    rec = msg.content[RECORD]
    config = FLConfig.from_json(json.loads(str(rec["config"])))
    client, round_ = int(rec["client"]), int(rec["round"])
    own = _partition_of(context)
    if own is not None and own != client:
        return Message(Error(CLIENT_FAILED_CODE, f"node holds partition {own}, asked for {client}"), reply_to=msg)
    if bool(rec["drop"]):
        return Message(Error(DROPOUT_CODE, "dropped out (simulated)"), reply_to=msg)
    downstream = [bytes(rec[f"down{i}"]) for i in range(int(rec["n_down"]))]
    saved = context.state.get(RECORD)
    try:
        state = ClientState.from_bytes(bytes(saved["state"])) if saved is not None else ClientState()
        reply, state = client_round(config, client, round_, state, downstream)
    except NNUpdateError as exc:
        return Message(Error(CLIENT_FAILED_CODE, f"client failed: {type(exc).__name__}: {exc}"), reply_to=msg)
    context.state[RECORD] = ConfigRecord({"state": state.to_bytes()})
    assert reply.data is not None
    content = ConfigRecord(
        {
            "update": reply.data,
            "encode_s": reply.encode_s,
            "decode_s": reply.decode_s,
            "train_loss": reply.train_loss,
            "relative_error": reply.relative_error,
        }
    )
    return Message(RecordDict({RECORD: content}), reply_to=msg)


def _client_query(msg: Any, context: Any) -> Any:
    from flwr.app import ConfigRecord, Message, RecordDict

    partition = _partition_of(context)
    return Message(RecordDict({RECORD: ConfigRecord({"partition": -1 if partition is None else partition})}), reply_to=msg)


def make_client_app() -> Any:
    flwr = _flwr()
    app = flwr.clientapp.ClientApp()
    app.train()(_client_train)
    app.query()(_client_query)
    return app


# ----------------------------------------------------------------------------- server side


class GridExchange:
    """Sends a round's assignments as ``train`` messages and turns replies into ClientReply."""

    def __init__(self, grid: Any, nodes: dict[int, int], config: FLConfig) -> None:
        self.grid = grid
        self.nodes = nodes
        self.partition_of_node = {n: p for p, n in nodes.items()}
        self.config = config

    def __call__(self, round: int, plan: list[Assignment]) -> list[ClientReply]:
        from flwr.app import ConfigRecord, Message, MessageType, RecordDict

        messages = []
        for job in plan:
            fields: dict[str, Any] = {
                "round": round,
                "client": job.client,
                "drop": job.drop,
                "config": self.config.dumps(),
                "n_down": len(job.messages),
            }
            fields.update({f"down{i}": m for i, m in enumerate(job.messages)})
            content = RecordDict({RECORD: ConfigRecord(fields)})
            messages.append(Message(content, dst_node_id=self.nodes[job.client], message_type=MessageType.TRAIN))
        timeout = self.config.timeout_s or None
        replies = []
        for message in self.grid.send_and_receive(messages, timeout=timeout):
            client = self.partition_of_node.get(message.metadata.src_node_id)
            if client is None:
                continue
            if message.has_error():
                error = message.error
                reason = "" if error.code == DROPOUT_CODE else str(error.reason or f"Flower error {error.code}")[:500]
                replies.append(ClientReply(client, None, error=reason))
                continue
            rec = message.content[RECORD]
            replies.append(
                ClientReply(
                    client,
                    bytes(rec["update"]),
                    float(rec["encode_s"]),
                    float(rec["decode_s"]),
                    float(rec["train_loss"]),
                    float(rec["relative_error"]),
                )
            )
        return replies


def discover(grid: Any, clients: int, wait_s: float = NODE_WAIT_S) -> dict[int, int]:
    """partition id -> node id, asked of every connected node with one ``query`` message."""
    from flwr.app import ConfigRecord, Message, MessageType, RecordDict

    deadline = time.monotonic() + wait_s
    while len(list(grid.get_node_ids())) < clients:
        if time.monotonic() > deadline:
            raise InputError(f"only {len(list(grid.get_node_ids()))} of {clients} Flower nodes connected")
        time.sleep(0.2)
    nodes = sorted(grid.get_node_ids())
    queries = [Message(RecordDict({RECORD: ConfigRecord({"ask": "partition"})}), dst_node_id=n, message_type=MessageType.QUERY) for n in nodes]
    mapping: dict[int, int] = {}
    unassigned = []
    for reply in grid.send_and_receive(queries, timeout=wait_s):
        if reply.has_error():
            continue
        partition = int(reply.content[RECORD]["partition"])
        if partition >= 0:
            mapping[partition] = reply.metadata.src_node_id
        else:
            unassigned.append(reply.metadata.src_node_id)
    for node in sorted(unassigned):  # nodes started without --node-config partition-id
        free = next(p for p in range(clients + len(unassigned)) if p not in mapping)
        mapping[free] = node
    missing = [p for p in range(clients) if p not in mapping]
    if missing:
        raise InputError(f"no Flower node holds partitions {missing[:5]}")
    return mapping


def _server_main(grid: Any, context: Any) -> None:
    from .run import drive

    job = dict(_JOB)
    if job:
        server: Server = job["server"]
    else:  # deployment: the config comes from the run config (`flwr run --run-config`)
        from . import checkpoint

        out = context.run_config.get("out")
        resume = bool(context.run_config.get("resume", False))
        if resume and out and checkpoint.exists(Path(str(out))):
            server, _ = checkpoint.load(Path(str(out)))
        else:
            server = Server.initial(FLConfig.from_json(json.loads(str(context.run_config.get("config", "{}")))))
        job = {"server": server, "out": Path(str(out)) if out else None}
    try:
        nodes = discover(grid, server.config.clients)
        drive(
            server,
            GridExchange(grid, nodes, server.config),
            out=job.get("out"),
            on_round=job.get("on_round"),
            tamper=job.get("tamper"),
            stop_after=job.get("stop_after"),
        )
    except BaseException as exc:
        job.setdefault("errors", []).append(exc)
        if _JOB:
            _JOB.setdefault("errors", []).append(exc)
        raise
    if not _JOB and job.get("out") is not None:  # deployment: nobody else writes the summary
        from . import report

        out = job["out"]
        summary = report.summary_of(server.config.to_json(), server.config.label, server.state.history)
        report.write_summary(out, [summary])
        report.plot(out, {server.config.label: server.state.history})


def make_server_app() -> Any:
    flwr = _flwr()
    app = flwr.serverapp.ServerApp()
    app.main()(_server_main)
    return app


def run_simulation(server: Server, *, out: Path | None = None, on_round: Any = None, tamper: Any = None, stop_after: int | None = None) -> None:
    """Run ``server``'s config on Flower's simulation engine (Ray), one virtual node per client."""
    _flwr()
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise InputError("Flower simulation needs Ray: pip install 'nnupdate[fl]' (flwr[simulation])")
    from flwr.simulation import run_simulation as flwr_run_simulation

    logging.getLogger("flwr").setLevel(logging.WARNING)
    _JOB.clear()
    _JOB.update({"server": server, "out": out, "on_round": on_round, "tamper": tamper, "stop_after": stop_after})
    try:
        flwr_run_simulation(
            make_server_app(),
            make_client_app(),
            num_supernodes=server.config.clients,
            backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": 2, "log_to_driver": False}},
        )
        errors = list(_JOB.get("errors", []))
    finally:
        _JOB.clear()
    if errors:
        raise errors[0]


# The objects Flower's deployment engine loads (``nnupdate.fl.flower:server_app`` /
# ``:client_app``); this module is imported only when Flower is wanted.
server_app = make_server_app()
client_app = make_client_app()
