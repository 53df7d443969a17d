"""The Flower engine (simulation runtime, Ray backend) against the in-process engine.

Same seed and codec must give the same bytes per message and the same accuracy curve:
both engines run the same client and server code, Flower only carries the bytes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("flwr")
pytest.importorskip("ray")

from nnupdate.fl import FLConfig, run  # noqa: E402
from nnupdate.fl.server import Server  # noqa: E402


def test_flower_simulation_matches_inproc(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = FLConfig(
        clients=3, per_round=3, rounds=3, local_epochs=1, error_feedback=True,
        codec="uniform:max_rel_error=0.3", downstream="uniform:max_rel_error=0.1", dropout=0.2, seed=2,
    )  # fmt: skip
    planner = Server.initial(config)  # the seeded plan: who is selected and who drops, per round
    plans = [planner.plan_round() for _ in range(2)]
    victim = min(a.client for a in plans[1] if not a.drop)
    corrupt = {(2, victim)}  # round 2: one replying client's message is damaged in transit

    def tamper(round_: int, client: int, data: bytes) -> bytes:
        return data[:-7] if (round_, client) in corrupt else data

    inproc = run(config, tamper=tamper)
    with caplog.at_level(logging.WARNING, logger="nnupdate.fl"):
        flower = run(config, engine="flower", out=tmp_path, tamper=tamper)
    assert [r["round"] for r in flower.history] == [1, 2, 3]
    for a, b in zip(inproc.history, flower.history):
        for key in ("bytes_up", "bytes_down", "selected", "dropped", "valid", "skipped"):
            assert a[key] == b[key], (key, a["round"])
        assert abs(a["accuracy"] - b["accuracy"]) < 0.02
    assert [x["client"] for x in flower.history[1]["rejected"]] == [victim]
    assert any(f"rejected update from client {victim}" in m for m in caplog.messages)
    assert sum(len(r["dropped"]) for r in flower.history) == sum(len(r["dropped"]) for r in inproc.history)
    assert (tmp_path / "summary.json").exists() and (tmp_path / "checkpoint" / "LATEST").exists()
