"""Error feedback: residual bookkeeping, convergence, and stop/resume through a STATE container."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nnupdate
from nnupdate.errors import InputError, NNUpdateError
from nnupdate.feedback import ErrorFeedback
from nnupdate.format import UpdateKind


def _stream(seed: int, rounds: int) -> list[dict[str, np.ndarray]]:
    g = np.random.default_rng(seed)
    models = [{"w": g.standard_normal((40, 50)).astype(np.float32), "b": np.zeros(5, np.float32)}]
    for _ in range(rounds):
        models.append({k: (v + 0.01 * g.laplace(size=v.shape) + 0.003).astype(np.float32) for k, v in models[-1].items()})
    return models


def _run(ef: ErrorFeedback, models: list[dict[str, np.ndarray]], server: dict[str, np.ndarray]) -> tuple[list[bytes], dict[str, np.ndarray]]:
    sent = []
    for prev, new in zip(models, models[1:]):
        target = {k: server[k] + (new[k] - prev[k]) for k in new}
        report = ef.compress(server, target)
        sent.append(report.data)
        server = nnupdate.apply(server, nnupdate.decode(report.data))
    return sent, server


@pytest.mark.parametrize("codec", ["topk:fraction=0.05", "sbc:fraction=0.05", "rd:step=0.01", "m22:levels=4"])
def test_residual_is_exactly_what_the_server_lacks(codec: str) -> None:
    models = _stream(0, 5)
    ef = ErrorFeedback(codec)
    server = dict(models[0])
    client = dict(models[0])
    for prev, new in zip(models, models[1:]):
        delta = {k: new[k].astype(np.float64) - prev[k] for k in new}
        report = ef.compress(server, {k: (server[k] + delta[k]).astype(np.float32) for k in new})
        server = nnupdate.apply(server, nnupdate.decode(report.data))
        client = {k: client[k] + delta[k] for k in new}
    for name in models[0]:
        owed = ef.residual.get(name, np.zeros(models[0][name].shape))
        # server + residual == where the client wants the server (up to float32 rounding of each apply)
        np.testing.assert_allclose(server[name] + owed, client[name], atol=5e-5)


def test_feedback_beats_no_feedback_for_sparsifiers() -> None:
    models = _stream(1, 8)
    start = dict(models[0])
    _, with_ef = _run(ErrorFeedback("topk:fraction=0.02"), models, dict(start))
    without = dict(start)
    for prev, new in zip(models, models[1:]):
        target = {k: without[k] + (new[k] - prev[k]) for k in new}
        without = nnupdate.apply(without, nnupdate.decode(nnupdate.diff(without, target).encode("topk:fraction=0.02")))
    final = models[-1]
    err_ef = np.linalg.norm(with_ef["w"] - final["w"])
    err_plain = np.linalg.norm(without["w"] - final["w"])
    assert err_ef < err_plain


def test_stop_and_resume_gives_identical_bytes(tmp_path: Path) -> None:
    models = _stream(2, 6)
    straight, _ = _run(ErrorFeedback("topk:fraction=0.05"), models, dict(models[0]))

    first = ErrorFeedback("topk:fraction=0.05")
    sent_a, server = _run(first, models[:4], dict(models[0]))
    first.save(tmp_path / "state.nnu")
    resumed = ErrorFeedback.load(tmp_path / "state.nnu")
    assert resumed.rounds == 3 and resumed.codec == first.codec
    sent_b, _ = _run(resumed, models[3:], server)
    assert sent_a + sent_b == straight


def test_state_is_a_state_container() -> None:
    ef = ErrorFeedback("sbc")
    ef.compress(*_stream(3, 1))
    data = ef.state_bytes()
    update = nnupdate.decode(data)
    assert update.kind == UpdateKind.STATE
    assert update.metadata["codec"].startswith("sbc:")
    assert set(update.changes) == set(ef.residual)


def test_load_refuses_other_files(tmp_path: Path) -> None:
    models = _stream(4, 1)
    delta_file = tmp_path / "delta.nnu"
    delta_file.write_bytes(nnupdate.diff(models[0], models[1]).encode("raw"))
    with pytest.raises(InputError):
        ErrorFeedback.load(delta_file)
    (tmp_path / "junk").write_bytes(b"not a container")
    with pytest.raises(NNUpdateError):
        ErrorFeedback.load(tmp_path / "junk")
    with pytest.raises(InputError):
        ErrorFeedback.load(tmp_path / "missing")
