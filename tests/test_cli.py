"""The CLI on a real checkpoint diff: ResNet-56 (../shared) against a perturbed copy, in
.pt, .safetensors and .npz; exit codes and one-line errors on bad input."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnupdate import adapters
from nnupdate.cli import main

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "resnet56_cifar100.pt"


def _base_model() -> dict[str, np.ndarray]:
    if SHARED.is_file() and importlib.util.find_spec("torch") is not None:
        return adapters.read_tensors(SHARED)
    g = np.random.default_rng(0)  # a small synthetic state dict when the shared checkpoint is absent
    return {  # index 3 is a float tensor, which _fine_tuned leaves untouched (a KEEP)
        "conv.weight": g.standard_normal((16, 3, 3, 3)).astype(np.float32),
        "bn.weight": np.ones(16, np.float32),
        "bn.running_var": np.ones(16, np.float32),
        "bn.bias": np.zeros(16, np.float32),
        "bn.num_batches_tracked": np.array(1000, dtype=np.int64),
        "fc.weight": g.standard_normal((100, 64)).astype(np.float32),
    }


def _fine_tuned(base: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A deterministic stand-in for a short fine-tune: small heavy-tailed steps scaled per tensor,
    running statistics drift, step counters advance, one tensor untouched."""
    g = np.random.default_rng(42)
    new = {}
    for i, (name, value) in enumerate(base.items()):
        if value.dtype.kind in "iu":
            new[name] = value + 50
        elif i % 7 == 3:
            new[name] = value.copy()
        else:
            scale = 1e-3 * (float(np.std(value)) or 1.0)
            new[name] = (value + scale * g.standard_t(3, size=value.shape)).astype(value.dtype)
    return new


@pytest.fixture(scope="module")
def models() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    base = _base_model()
    return base, _fine_tuned(base)


def _write(path: Path, tensors: dict[str, np.ndarray]) -> Path:
    if path.suffix == ".pt":
        torch = pytest.importorskip("torch")
        torch.save({k: torch.from_numpy(np.asarray(v).copy()) for k, v in tensors.items()}, path)
    else:
        if path.suffix == ".safetensors":
            pytest.importorskip("safetensors")
        adapters.write_tensors(path, tensors)
    return path


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return set(a) == set(b) and all(
        np.asarray(a[k]).dtype == np.asarray(b[k]).dtype
        and np.asarray(a[k]).shape == np.asarray(b[k]).shape
        and np.asarray(a[k]).tobytes() == np.asarray(b[k]).tobytes()
        for k in a
    )


@pytest.mark.parametrize("suffix", [".pt", ".safetensors", ".npz"])
def test_round_trip_real_checkpoint(tmp_path: Path, models, suffix: str, capsys) -> None:  # type: ignore[no-untyped-def]
    base, new = models
    base_file = _write(tmp_path / f"base{suffix}", base)
    new_file = _write(tmp_path / f"new{suffix}", new)
    lossless, lossy = tmp_path / "raw.nnu", tmp_path / "u.nnu"

    assert main(["encode", str(base_file), str(new_file), "-o", str(lossless), "--codec", "raw"]) == 0
    assert main(["verify", str(lossless)]) == 0
    assert main(["apply", str(base_file), str(lossless), "-o", str(tmp_path / f"out{suffix}")]) == 0
    assert _same(adapters.read_tensors(tmp_path / f"out{suffix}"), adapters.read_tensors(new_file))  # bit-exact

    assert main(["encode", str(base_file), str(new_file), "-o", str(lossy), "--max-rel-error", "0.02", "--json"]) == 0
    report = json.loads(_json_tail(capsys.readouterr().out))
    assert 0 < report["relative_l2_error"] <= 0.02 and report["bits_per_parameter"] < 8
    assert main(["info", str(lossy), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "delta" and len(info["tensors"]) == len(new)
    assert {t["combine"] for t in info["tensors"]} >= {"ADD", "KEEP"}
    assert any(s["codec"] == "uniform" for t in info["tensors"] for s in t["pipeline"])
    assert main(["decode", str(lossy), "-o", str(tmp_path / "d.npz")]) == 0
    decoded = adapters.read_tensors(tmp_path / "d.npz")
    assert set(decoded) == {t["name"] for t in info["tensors"] if t["combine"] not in ("KEEP", "REMOVE")}
    capsys.readouterr()
    assert main(["decode", str(lossy), "-o", str(tmp_path / "d2.npz"), "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["tensors"]) == set(decoded)
    assert main(["apply", str(base_file), str(lossy), "-o", str(tmp_path / f"out2{suffix}"), "--json"]) == 0
    applied = json.loads(capsys.readouterr().out)
    assert applied["output"].endswith(f"out2{suffix}") and applied["tensors"] == len(new) and applied["base_fingerprint_checked"]
    assert sum(applied["changes"].values()) == len(info["tensors"])
    assert main(["apply", str(base_file), str(lossy), "-o", str(tmp_path / f"lossy{suffix}")]) == 0
    approx = adapters.read_tensors(tmp_path / f"lossy{suffix}")
    num = sum(float(np.sum((approx[k].astype(np.float64) - new[k]) ** 2)) for k in new if new[k].dtype.kind == "f")
    den = sum(float(np.sum((new[k].astype(np.float64) - base[k]) ** 2)) for k in new if new[k].dtype.kind == "f")
    assert np.sqrt(num / den) <= 0.021


def _json_tail(out: str) -> str:
    """The JSON document at the end of captured output (earlier commands printed text)."""
    return out[out.index("{") :]


def test_wrong_base_exits_3_and_force_overrides(tmp_path: Path, models, capsys) -> None:  # type: ignore[no-untyped-def]
    base, new = models
    base_file = _write(tmp_path / "base.npz", base)
    new_file = _write(tmp_path / "new.npz", new)
    other = dict(base)
    first = next(k for k, v in base.items() if v.dtype.kind == "f")
    other[first] = base[first] + np.float32(1.0)
    other_file = _write(tmp_path / "other.npz", other)
    update = tmp_path / "u.nnu"
    assert main(["encode", str(base_file), str(new_file), "-o", str(update), "--codec", "raw"]) == 0
    capsys.readouterr()
    assert main(["apply", str(other_file), str(update), "-o", str(tmp_path / "x.npz")]) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fingerprint" in err and "--force" in err
    assert not (tmp_path / "x.npz").exists()
    assert main(["apply", str(other_file), str(update), "-o", str(tmp_path / "x.npz"), "--force"]) == 0


@pytest.mark.parametrize("verb", ["info", "verify", "decode", "apply"])
@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped", "missing"])
def test_bad_files_give_one_line_and_nonzero_exit(tmp_path: Path, verb: str, damage: str, capsys) -> None:  # type: ignore[no-untyped-def]
    base = {"w": np.zeros(10, np.float32)}
    base_file = _write(tmp_path / "base.npz", base)
    from nnupdate import diff

    good = diff(base, {"w": np.ones(10, np.float32)}).encode("raw")
    bad = tmp_path / "bad.nnu"
    if damage == "garbage":
        bad.write_bytes(b"hello, I am not an update\n")
    elif damage == "truncated":
        bad.write_bytes(good[:-7])
    elif damage == "flipped":
        bad.write_bytes(good[:40] + bytes([good[40] ^ 4]) + good[41:])
    args = {
        "info": ["info", str(bad)],
        "verify": ["verify", str(bad)],
        "decode": ["decode", str(bad), "-o", str(tmp_path / "o.npz")],
        "apply": ["apply", str(base_file), str(bad), "-o", str(tmp_path / "o.npz")],
    }[verb]
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code not in (0, None)
    assert len(err.splitlines()) == 1 and err.startswith("nnupdate: error:"), err
    assert "Traceback" not in err


def test_conformance_verb(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["conformance", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results and all(r["passed"] for r in results)


@pytest.mark.parametrize("args", [["no-such-verb"], ["encode", "--no-such-option"], ["info"]])
def test_usage_errors_exit_2_whichever_click_typer_uses(args: list[str], capsys) -> None:  # type: ignore[no-untyped-def]
    """typer vendors click as typer._click since 0.2x; a handler that imported click itself
    crashed with ModuleNotFoundError on a core-only install (no other package pulls click)."""
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Usage:" in err and "Traceback" not in err


def test_a_command_run_without_its_extra_names_the_extra(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    import nnupdate.demo

    def missing(**_: object) -> None:
        raise ModuleNotFoundError("No module named 'sklearn'", name="sklearn")

    monkeypatch.setattr(nnupdate.demo, "run_demo", missing)
    assert main(["demo"]) == 1
    assert capsys.readouterr().err.strip() == "nnupdate: error: this command needs sklearn: pip install 'nnupdate[demo]'"


def test_real_subprocess(tmp_path: Path) -> None:
    exe = shutil.which("nnupdate") or str(Path(sys.executable).parent / "nnupdate")
    base = _write(tmp_path / "b.npz", {"w": np.zeros(100, np.float32), "n": np.array(1, dtype=np.int64)})
    new = _write(tmp_path / "n.npz", {"w": np.linspace(0, 1, 100, dtype=np.float32), "n": np.array(2, dtype=np.int64)})
    env = dict(os.environ, COLUMNS="200")
    run = subprocess.run([exe, "encode", str(base), str(new), "-o", str(tmp_path / "u.nnu")], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert "bits/param" in run.stdout
    (tmp_path / "bad.nnu").write_bytes(b"\x89NNU\r\n\x1a\n\x01\x00junk")
    run = subprocess.run([exe, "verify", str(tmp_path / "bad.nnu")], capture_output=True, text=True, env=env)
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_encode_reports_the_ratio_against_the_tensors_as_stored(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """A float16 checkpoint is half the bytes of float32: the summary gives both ratios."""
    g = np.random.default_rng(3)
    base = {"w": g.standard_normal((64, 64)).astype(np.float16)}
    new = {"w": (base["w"].astype(np.float32) + 0.01 * g.standard_normal((64, 64))).astype(np.float16)}
    np.savez(tmp_path / "b.npz", w=base["w"])
    np.savez(tmp_path / "n.npz", w=new["w"])
    assert main(["encode", str(tmp_path / "b.npz"), str(tmp_path / "n.npz"), "-o", str(tmp_path / "u.nnu"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ratio_vs_stored"] == pytest.approx(summary["ratio_vs_float32"] / 2)


@pytest.mark.parametrize("codec", ["uniform", "raw"])
def test_demo_runs_the_main_job_end_to_end(codec: str, capsys) -> None:  # type: ignore[no-untyped-def]
    """The README's first command: train, encode, apply, and the rebuilt model behaves."""
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    assert main(["demo", "--steps", "10", "--codec", codec, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["bytes"] * 8 == pytest.approx(result["bits_per_parameter"] * result["parameters"], rel=0.01)
    if codec == "raw":
        assert result["relative_l2_error"] == 0 and result["max_logit_diff"] == 0
        assert result["accuracy_reconstructed"] == result["accuracy_exact"]
    else:
        assert result["relative_l2_error"] <= 0.05 * 1.02 and result["ratio_vs_float32"] > 4
        assert abs(result["accuracy_reconstructed"] - result["accuracy_exact"]) < 0.05
