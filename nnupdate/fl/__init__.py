"""Federated-learning harness over real .nnu bytes: FedAvg / FedAvgM / FedAdam, in process or on Flower.

One client logic (:mod:`.client`), one server logic (:mod:`.server`), one round loop
(:func:`.run.drive`); engines only move bytes. See spec/FL.md.
"""

from __future__ import annotations

from .config import FLConfig
from .messages import ClientState, resolve_codec
from .run import RunInterrupted, RunResult, compare, run

__all__ = ["ClientState", "FLConfig", "RunInterrupted", "RunResult", "compare", "resolve_codec", "run"]
