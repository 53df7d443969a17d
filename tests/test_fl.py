"""The FL harness on the in-process engine: real training, real .nnu bytes, faults, resume."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("torch")
pytest.importorskip("sklearn")

from nnupdate import decode, diff, encode_with_report  # noqa: E402
from nnupdate.errors import BaseMismatchError, InputError, ShapeMismatchError  # noqa: E402
from nnupdate.fl import FLConfig, RunInterrupted, run  # noqa: E402
from nnupdate.fl.config import FLConfig as Config  # noqa: E402
from nnupdate.fl.messages import ClientState  # noqa: E402
from nnupdate.fl.server import Server  # noqa: E402
from nnupdate.fl.task import weights_of  # noqa: E402
from nnupdate.format import UpdateKind  # noqa: E402
from nnupdate.tasks import digits  # noqa: E402

SMALL = FLConfig(clients=3, per_round=3, rounds=2, local_epochs=1, codec="uniform:max_rel_error=0.3", error_feedback=True)
TIMING = ("encode_s", "decode_s")


def _strip_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in history]


def test_inproc_run_moves_real_bytes_and_learns(tmp_path: Path) -> None:
    seen: list[tuple[int, int, int]] = []

    def spy(round_: int, client: int, data: bytes) -> bytes:
        update = decode(data)  # every upstream message is a complete, valid container
        assert update.kind == UpdateKind.DELTA and update.round == round_
        seen.append((round_, client, len(data)))
        return data

    result = run(SMALL, out=tmp_path, tamper=spy)
    assert [r["round"] for r in result.history] == [1, 2]
    for record in result.history:
        assert record["bytes_up"] == sum(n for r, _, n in seen if r == record["round"])
        assert record["valid"] == 3 and not record["rejected"] and not record["skipped"]
        assert record["bytes_down"] > 0
    # uncompressed float32 of this model is ~155 KB per client; the codec must really compress
    assert result.history[0]["bytes_up"] < 3 * 40_000
    assert result.history[-1]["accuracy"] > 0.3  # chance is 0.1
    lines = [json.loads(line) for line in (tmp_path / "rounds.jsonl").read_text().splitlines()]
    assert [line["round"] for line in lines] == [1, 2]
    for key in ("config", "round", "accuracy", "loss", "bytes_up", "bytes_down", "encode_s", "decode_s"):
        assert key in lines[0]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary[0]["total_bytes_up"] == sum(n for _, _, n in seen)
    assert summary[0]["final_accuracy"] == result.history[-1]["accuracy"]
    assert (tmp_path / "accuracy_vs_bytes.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("codec, downstream", [("ctx", "full"), ("uniform:max_rel_error=0.1", "ctx:max_rel_error=0.05")])
def test_a_bfloat16_model_is_averaged_as_values_and_learns(codec: str, downstream: str) -> None:
    """The server took ml_dtypes' bfloat16 (numpy kind "V") for an integer type: deltas
    became value-to-int casts and the global model collapsed to uniform logits (loss ln 10);
    before apply returned bfloat16 typed, every update was rejected instead."""
    config = FLConfig(clients=3, per_round=3, rounds=3, local_epochs=2, lr=0.1, codec=codec, downstream=downstream, task="bf16_task")
    result = run(config, write_outputs=False)
    assert all(r["valid"] == 3 and not r["rejected"] for r in result.history)
    assert str(result.weights["1.weight"].dtype) == "bfloat16"
    losses = [r["loss"] for r in result.history]
    assert losses[-1] < losses[0] < 2.2 and result.history[-1]["accuracy"] > 0.3


def test_same_seed_same_bytes_and_curve() -> None:
    a, b = run(SMALL), run(SMALL)
    assert _strip_timing(a.history) == _strip_timing(b.history)


def test_kill_and_resume_reaches_the_same_final_state(tmp_path: Path) -> None:
    """Partial participation, dropout, EF on both sides, FedAdam: all state must survive a restart."""
    config = FLConfig(
        clients=4, per_round=3, rounds=4, local_epochs=1, dropout=0.25, mode="fedadam", error_feedback=True,
        codec="uniform:max_rel_error=0.4", downstream="uniform:max_rel_error=0.1", seed=3,
    )  # fmt: skip
    whole = run(config, out=tmp_path / "whole")
    with pytest.raises(RunInterrupted):
        run(config, out=tmp_path / "killed", stop_after=2)
    assert len((tmp_path / "killed" / "rounds.jsonl").read_text().splitlines()) == 2
    resumed = run(resume=tmp_path / "killed")
    assert _strip_timing(resumed.history) == _strip_timing(whole.history)
    assert resumed.weights.keys() == whole.weights.keys()
    for name in whole.weights:
        assert np.array_equal(resumed.weights[name], whole.weights[name]), name
    assert _strip_timing([json.loads(x) for x in (tmp_path / "killed" / "rounds.jsonl").read_text().splitlines()]) == _strip_timing(
        whole.history
    )


def test_resume_without_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no checkpoint"):
        run(resume=tmp_path)


def _foreign_update(round_: int, seed: int) -> bytes:
    base, new = weights_of(digits.make_model(seed)), weights_of(digits.make_model(seed + 1))
    return encode_with_report(diff(base, new, round=round_, metadata={"examples": "10"}), "raw").data


def _reshaped_update(config: FLConfig, round_: int) -> bytes:
    base = weights_of(digits.make_model(config.seed))  # the replica in round 1 (downstream=full)
    new = dict(base)
    new["9.bias"] = np.zeros(11, dtype=np.float32)
    return encode_with_report(diff(base, new, round=round_, metadata={"examples": "10"}), "raw").data


@pytest.mark.parametrize("fault", ["truncate", "flip", "wrong_base", "wrong_shape", "garbage"])
def test_corrupted_client_message_is_rejected_and_logged(fault: str, caplog: pytest.LogCaptureFixture) -> None:
    config = SMALL.replace(rounds=1)

    def corrupt(round_: int, client: int, data: bytes) -> bytes:
        if client != 1:
            return data
        if fault == "truncate":
            return data[: len(data) // 2]
        if fault == "flip":
            flipped = bytearray(data)
            flipped[len(data) // 2] ^= 0x40
            return bytes(flipped)
        if fault == "wrong_base":
            return _foreign_update(round_, seed=41)
        if fault == "wrong_shape":
            return _reshaped_update(config, round_)
        return b"\x00" * 64

    with caplog.at_level(logging.WARNING, logger="nnupdate.fl"):
        result = run(config, tamper=corrupt)
    record = result.history[0]
    assert record["valid"] == 2 and not record["skipped"]
    assert [r["client"] for r in record["rejected"]] == [1]
    reason = record["rejected"][0]["reason"]
    expected = {
        "truncate": ("Truncated", "Format", "Checksum"),
        "flip": ("Checksum", "Format"),
        "wrong_base": ("BaseMismatchError",),
        "wrong_shape": ("ShapeMismatchError",),
        "garbage": ("Format",),
    }[fault]
    assert any(word in reason for word in expected), reason
    assert any("rejected update from client 1" in m and reason in m for m in caplog.messages)


def test_round_with_no_valid_update_is_skipped_not_crashed() -> None:
    result = run(SMALL.replace(rounds=2), tamper=lambda r, c, d: d[:10] if r == 1 else d)
    first, second = result.history
    assert first["skipped"] and first["valid"] == 0 and len(first["rejected"]) == 3
    assert not second["skipped"] and second["valid"] == 3


def test_dropouts_do_not_stall_rounds() -> None:
    result = run(SMALL.replace(clients=4, per_round=4, rounds=3, dropout=0.5, seed=1))
    assert len(result.history) == 3
    dropped = [c for r in result.history for c in r["dropped"]]
    assert dropped, "with p=0.5 over 12 client-rounds some client drops"
    for record in result.history:
        assert record["valid"] + len(record["dropped"]) == 4
        assert record["skipped"] == (record["valid"] == 0)


def test_server_validation_refuses_wrong_kind_round_and_examples() -> None:
    config = SMALL.replace(rounds=1)
    server = Server.initial(config)
    base = server.state.replica
    new = {k: (v + 0.01 if v.dtype.kind == "f" else v) for k, v in base.items()}
    good = encode_with_report(diff(base, new, round=1, metadata={"examples": "5"}), "raw").data
    deltas, n = server.validate(good)
    assert n == 5 and np.allclose(deltas["9.bias"], 0.01, atol=1e-6)
    with pytest.raises(InputError, match="round"):
        server.validate(encode_with_report(diff(base, new, round=7, metadata={"examples": "5"}), "raw").data)
    with pytest.raises(InputError, match="examples"):
        server.validate(encode_with_report(diff(base, new, round=1), "raw").data)
    with pytest.raises(BaseMismatchError):
        server.validate(_foreign_update(1, seed=5))
    with pytest.raises(ShapeMismatchError):
        server.validate(_reshaped_update(config, 1))
    bad = dict(new)
    bad["9.bias"] = np.full(10, np.nan, dtype=np.float32)
    with pytest.raises(InputError, match="non-finite"):
        server.validate(encode_with_report(diff(base, bad, round=1, metadata={"examples": "5"}), "raw").data)


def test_client_state_roundtrips_through_a_state_container() -> None:
    rng = np.random.default_rng(0)
    state = ClientState(4, {"w": rng.normal(size=(3, 2)).astype(np.float32)}, {"w": rng.normal(size=(3, 2))})
    again = ClientState.from_bytes(state.to_bytes())
    assert again.version == 4
    assert again.replica is not None and np.array_equal(again.replica["w"], state.replica["w"])  # type: ignore[index]
    assert again.residual["w"].dtype == np.float64 and np.array_equal(again.residual["w"], state.residual["w"])


@pytest.mark.parametrize("mode", ["fedavgm", "fedadam"])
def test_server_optimizers_run(mode: str) -> None:
    result = run(SMALL.replace(mode=mode, codec="none", error_feedback=False))
    assert result.history[-1]["accuracy"] > 0.2
    assert all(np.isfinite(v).all() for v in result.weights.values() if v.dtype.kind == "f")


def test_config_refuses_bad_values_and_bad_codecs() -> None:
    with pytest.raises(InputError):
        Config(per_round=11)
    with pytest.raises(InputError):
        Config(dropout=1.0)
    with pytest.raises(InputError):
        Config(mode="fedsgd")
    with pytest.raises(InputError):
        run(SMALL.replace(codec="nosuchcodec"))
    assert Config.from_json(SMALL.to_json()) == SMALL


@settings(max_examples=25, deadline=None)
@given(
    split=st.sampled_from(["iid", "dirichlet", "shards"]),
    clients=st.integers(1, 12),
    alpha=st.floats(0.1, 10.0),
    seed=st.integers(0, 2**16),
)
def test_client_splits_partition_the_training_set(split: str, clients: int, alpha: float, seed: int) -> None:
    y = np.arange(300) % 10
    parts = digits.split_indices(y, clients, split=split, alpha=alpha, seed=seed)
    assert len(parts) == clients
    joined = np.sort(np.concatenate(parts))
    assert np.array_equal(joined, np.arange(len(y)))
    assert min(len(p) for p in parts) >= 1


def test_cli_fl_run_json_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nnupdate.cli import main

    args = ["fl", "run", "--clients", "2", "--rounds", "1", "--local-epochs", "1", "--codec", "fp16", "--out", str(tmp_path), "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["summary"]["rounds"] == 1 and first["rounds"][0]["bytes_up"] > 0
    assert main(["fl", "run", "--resume", str(tmp_path), "--rounds", "2", "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert [r["round"] for r in second["rounds"]] == [1, 2]
    assert main(["fl", "run", "--codec", "nosuch", "--rounds", "1"]) != 0


def test_cli_fl_compare_writes_table_plot_and_jsonl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nnupdate.cli import main

    args = ["fl", "compare", "--codecs", "none,rd:max_rel_error=0.5+ef", "--clients", "2", "--rounds", "1", "--local-epochs", "1", "--out", str(tmp_path)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "none" in printed and "rd:max_rel_error=0.5+ef" in printed
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [s["config"] for s in summary] == ["none", "rd:max_rel_error=0.5+ef"]
    assert summary[1]["total_bytes_up"] * 4 < summary[0]["total_bytes_up"]
    lines = [json.loads(line) for line in (tmp_path / "rounds.jsonl").read_text().splitlines()]
    assert {line["config"] for line in lines} == {"none", "rd:max_rel_error=0.5+ef"}
    assert (tmp_path / "accuracy_vs_bytes.png").exists()


def test_distill_mode_sends_soft_label_containers() -> None:
    pytest.importorskip("nnupdate.distill")
    base = FLConfig(clients=3, per_round=3, rounds=2, local_epochs=1, mode="distill")
    plain = run(base.replace(codec="none"))
    coded = run(base.replace(codec="labels:bits=2"))
    assert [r["round"] for r in coded.history] == [1, 2]
    for a, b in zip(plain.history, coded.history):
        assert 0 < b["bytes_up"] * 5 < a["bytes_up"]  # 2-bit labels vs float32
        assert b["bytes_down"] > 0 and b["valid"] == 3
    with pytest.raises(InputError):
        run(base.replace(codec="rd:max_rel_error=0.5"))
