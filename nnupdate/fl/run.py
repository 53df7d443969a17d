"""Driving a run: the round loop shared by both engines, the in-process engine, and compare.

``drive`` is the only round loop. An engine supplies ``exchange(round, plan) -> replies``:
the in-process engine calls :func:`~nnupdate.fl.client.client_round` directly, the Flower
engine sends the same bytes as Flower Messages to ``ClientApp`` instances.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, NNUpdateError
from . import checkpoint, report
from .client import ClientReply, client_round
from .config import ENGINES, FLConfig
from .messages import ClientState, resolve_codec
from .peer import is_peer, nncodec_round
from .peer import parse as peer_parse
from .server import Assignment, Server

log = logging.getLogger("nnupdate.fl")

Exchange = Callable[[int, list[Assignment]], list[ClientReply]]
#: (round, client, bytes) -> bytes: corrupts messages in transit (fault injection for tests)
Tamper = Callable[[int, int, bytes], bytes]
OnRound = Callable[[dict[str, Any]], None]


class RunInterrupted(NNUpdateError):
    """Raised by ``stop_after``: simulates a run killed right after a round's checkpoint."""


@dataclass
class RunResult:
    config: FLConfig
    history: list[dict[str, Any]]
    weights: dict[str, np.ndarray] = field(repr=False, default_factory=dict)

    @property
    def summary(self) -> dict[str, Any]:
        return report.summary_of(self.config.to_json(), self.config.label, self.history)


class InprocEngine:
    """Clients run in this process, one after another: deterministic for a seed."""

    def __init__(self, config: FLConfig, clients: dict[int, ClientState] | None = None) -> None:
        self.config = config
        self.clients: dict[int, ClientState] = clients if clients is not None else {}

    def __call__(self, round: int, plan: list[Assignment]) -> list[ClientReply]:
        if is_peer(self.config.codec):
            return nncodec_round(self.config, round, plan, self.clients)
        replies = []
        for job in plan:
            state = self.clients.get(job.client) or ClientState()
            try:
                reply, state = client_round(self.config, job.client, round, state, job.messages, drop=job.drop)
            except Exception as exc:  # a failing client must not stall the round (as on Flower)
                reply = ClientReply(job.client, None, error=f"client failed: {type(exc).__name__}: {exc}")
                if not isinstance(exc, NNUpdateError):
                    log.warning("round %d: client %d raised", round, job.client, exc_info=True)
            self.clients[job.client] = state
            replies.append(reply)
        return replies


def drive(
    server: Server,
    exchange: Exchange,
    *,
    out: Path | None = None,
    clients: Callable[[], dict[int, ClientState] | None] = lambda: None,
    on_round: OnRound | None = None,
    tamper: Tamper | None = None,
    stop_after: int | None = None,
) -> None:
    """Rounds until ``config.rounds``; checkpoint + rounds.jsonl after each (when ``out``)."""
    while server.state.round < server.config.rounds:
        t = server.state.round + 1
        plan = server.plan_round()
        replies = exchange(t, plan)
        if tamper is not None:
            for reply in replies:
                if reply.data is not None:
                    reply.data = tamper(t, reply.client, reply.data)
        record = server.finish_round(plan, replies)
        if out is not None:
            checkpoint.save(out, server, clients())
            report.write_rounds(out, server.state.history)
        if on_round is not None:
            on_round(record)
        if stop_after is not None and t >= stop_after and t < server.config.rounds:
            raise RunInterrupted(f"stopped after round {t}")


def run(
    config: FLConfig | None = None,
    *,
    engine: str = "inproc",
    out: Path | str | None = None,
    resume: Path | str | None = None,
    rounds: int | None = None,
    on_round: OnRound | None = None,
    tamper: Tamper | None = None,
    stop_after: int | None = None,
    write_outputs: bool = True,
) -> RunResult:
    """Run (or resume) one configuration; returns the per-round history and final weights.

    With ``resume=DIR`` the config comes from DIR's checkpoint (``rounds`` may extend it)
    and outputs keep going to DIR.
    """
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    clients: dict[int, ClientState] | None
    if resume is not None:
        out = Path(resume)
        server, clients = checkpoint.load(out)
        if rounds is not None:
            server.config = server.config.replace(rounds=rounds)
        if engine != "inproc":  # Flower nodes start a new run without replicas: send everyone a FULL model
            server.state.client_versions.clear()
    else:
        if config is None:
            raise InputError("run() needs a config or resume=DIR")
        if config.mode == "distill":
            return _run_distill(config, engine, out, on_round, write_outputs)
        check_codec(config.codec, engine)  # refuse a bad spec before any work
        if config.downstream != "full":
            resolve_codec(config.downstream)
        server, clients = Server.initial(config), None
    out_path = Path(out) if out is not None else None
    if out_path is not None:
        out_path.mkdir(parents=True, exist_ok=True)
    if engine == "inproc":
        inproc = InprocEngine(server.config, clients)
        drive(server, inproc, out=out_path, clients=lambda: inproc.clients, on_round=on_round, tamper=tamper, stop_after=stop_after)
    else:
        from .flower import run_simulation

        run_simulation(server, out=out_path, on_round=on_round, tamper=tamper, stop_after=stop_after)
    result = RunResult(server.config, server.state.history, server.state.weights)
    if out_path is not None and write_outputs:
        report.write_rounds(out_path, result.history)
        report.write_summary(out_path, [result.summary])
        report.plot(out_path, {result.config.label: result.history})
    return result


def _run_distill(config: FLConfig, engine: str, out: Path | str | None, on_round: OnRound | None, write_outputs: bool) -> RunResult:
    from .distill import run_distill

    if engine != "inproc":
        raise InputError("mode distill runs on the inproc engine only")
    result = RunResult(config, run_distill(config, on_round))
    if out is not None and write_outputs:
        out_path = Path(out)
        out_path.mkdir(parents=True, exist_ok=True)
        report.write_rounds(out_path, result.history)
        report.write_summary(out_path, [result.summary])
        report.plot(out_path, {config.label: result.history})
    return result


def check_codec(spec: str, engine: str) -> None:
    """Refuse an unusable upstream codec spec early (the NNCodec peer: inproc only)."""
    if is_peer(spec):
        if engine != "inproc":
            raise InputError("the nncodec peer runs on the inproc engine only")
        peer_parse(spec)
        return
    resolve_codec(spec)


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", label).strip("_") or "config"


def parse_compare_entry(entry: str, base: FLConfig) -> FLConfig:
    """``SPEC[+ef|+noef][@down=SPEC]`` -> a config (the label is the entry as written)."""
    text = entry.strip()
    down = base.downstream
    if "@down=" in text:
        text, _, down = text.partition("@down=")
    ef = base.error_feedback
    while text.endswith(("+ef", "+noef")):
        ef = text.endswith("+ef")
        text = text.rsplit("+", 1)[0]
    if base.mode == "distill":
        from .distill import parse as labels_parse

        labels_parse(text)
        return base.replace(codec=text, error_feedback=False, name=entry.strip())
    check_codec(text, "inproc")
    if down != "full":
        resolve_codec(down)
    return base.replace(codec=text, error_feedback=ef, downstream=down, name=entry.strip())


def compare(
    entries: list[str],
    base: FLConfig,
    *,
    out: Path | str | None = None,
    engine: str = "inproc",
    on_round: OnRound | None = None,
    on_config: Callable[[FLConfig], None] | None = None,
) -> list[RunResult]:
    """Run every entry with otherwise identical settings; one table, one plot, one rounds.jsonl."""
    configs = [parse_compare_entry(e, base) for e in entries]  # validate all before running any
    out_path = Path(out) if out is not None else None
    results: list[RunResult] = []
    for config in configs:
        if on_config is not None:
            on_config(config)
        sub = out_path / "runs" / slug(config.label) if out_path is not None else None
        results.append(run(config, engine=engine, out=sub, on_round=on_round))
        if out_path is not None:
            report.write_rounds(out_path, [r for res in results for r in res.history])
            report.write_summary(out_path, [res.summary for res in results])
    if out_path is not None:
        report.plot(out_path, {res.config.label: res.history for res in results})
    return results
