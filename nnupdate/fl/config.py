"""One federated run's configuration: a frozen dataclass that round-trips through JSON.

The checkpoint stores it, so ``--resume`` continues with exactly the settings the run
started with; two engines given the same config run the same experiment.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from ..errors import InputError

MODES = ("fedavg", "fedadam", "fedavgm", "distill")
ENGINES = ("inproc", "flower")
SPLITS = ("iid", "dirichlet", "shards")
#: server learning rate when the user leaves it at 0 (Reddi et al. 2021 use 1e-2 .. 1e-1.5 for Adam)
DEFAULT_SERVER_LR = {"fedavg": 1.0, "fedavgm": 1.0, "fedadam": 0.01, "distill": 1.0}


@dataclass(frozen=True)
class FLConfig:
    """Everything that determines a run. ``codec``/``downstream`` are codec specs.

    ``downstream="full"`` sends complete weights (lossless); any other codec spec sends
    the global delta against the clients' replica, which gives server-side error feedback
    for free (the next delta is taken against what clients really hold).
    """

    task: str = "nnupdate.tasks.digits"
    clients: int = 10
    per_round: int = 10
    rounds: int = 20
    split: str = "dirichlet"
    alpha: float = 0.5
    codec: str = "none"
    downstream: str = "full"
    error_feedback: bool = False
    dropout: float = 0.0
    mode: str = "fedavg"
    local_epochs: int = 2
    lr: float = 0.05
    batch_size: int = 16
    server_lr: float = 0.0
    server_momentum: float = 0.9
    min_updates: int = 1
    seed: int = 0
    name: str = ""
    #: seconds the Flower server waits for replies (0: wait for all)
    timeout_s: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"unknown mode {self.mode!r}; choose from {', '.join(MODES)}")
        if self.split not in SPLITS:
            raise InputError(f"unknown split {self.split!r}; choose from {', '.join(SPLITS)}")
        if self.clients < 1:
            raise InputError("need at least one client")
        if not 1 <= self.per_round <= self.clients:
            raise InputError(f"per-round must lie in [1, {self.clients}], got {self.per_round}")
        if self.rounds < 0 or self.local_epochs < 1 or self.batch_size < 1:
            raise InputError("rounds >= 0, local epochs >= 1 and batch size >= 1 are required")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"dropout must lie in [0, 1), got {self.dropout}")
        if self.min_updates < 1:
            raise InputError("min-updates must be >= 1")
        if not self.lr > 0 or self.server_lr < 0:
            raise InputError("learning rates must be positive")

    @property
    def label(self) -> str:
        """The name shown in tables and written as ``config`` in rounds.jsonl."""
        if self.name:
            return self.name
        return self.codec + ("+ef" if self.error_feedback else "")

    @property
    def effective_server_lr(self) -> float:
        return self.server_lr or DEFAULT_SERVER_LR[self.mode]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: Any) -> FLConfig:
        if not isinstance(obj, dict):
            raise InputError("config must be a JSON object")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(obj) - set(known))
        if unknown:
            raise InputError(f"unknown config keys: {', '.join(unknown)}")
        return cls(**obj)

    def replace(self, **changes: Any) -> FLConfig:
        return dataclasses.replace(self, **changes)

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)
