"""Smoke test of the FD run and the soft-label benchmark on a tiny configuration (real torch training)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from nnupdate.distill import quantize_labels

pytest.importorskip("torch")
pytest.importorskip("sklearn")

TOOLS = Path(__file__).resolve().parent.parent / "tools"


def test_fd_run_and_bench_labels(tmp_path: Path) -> None:
    sys.path.insert(0, str(TOOLS))
    try:
        import bench_labels
        import fd_run
    finally:
        sys.path.remove(str(TOOLS))
    args = fd_run.parser().parse_args(
        ["--out", str(tmp_path), "--rounds", "3", "--clients", "3", "--public", "120", "--test", "60",
         "--local-steps", "3", "--distill-steps", "3", "--warmup", "2", "--bits", "2", "--quiet"]
    )  # fmt: skip
    summary = fd_run.run(args)
    assert len(summary["history"]) == 3
    # Labels really travelled as frames: every round has measured uplink/downlink bytes.
    assert all(h["uplink_bytes"] > 0 and h["downlink_bytes"] > 0 for h in summary["history"])
    assert json.loads((tmp_path / "run.json").read_text())["client_sizes"] == summary["client_sizes"]
    with np.load(tmp_path / "round_002.npz", allow_pickle=False) as z:
        labels = z["client_1"]
        assert labels.shape == (120, 10) and labels.dtype == np.float32
        assert np.allclose(labels.sum(axis=1), 1, atol=1e-5)
        # With --bits the server averages what it decoded: the clients' Q_2 labels.
        received = [quantize_labels(z[f"client_{k}"], 2).probs for k in range(3)]
        assert np.allclose(z["server"], np.mean(received, axis=0), atol=1e-6)

    bench_args = type("Args", (), {"run": str(tmp_path), "rounds": 3, "seeds": 1, "student_steps": 5})()
    result = bench_labels.bench(bench_args)
    rows = {r["scheme"]: r for r in result["rows"]}
    assert rows["float32"]["uplink_total"] == 3 * 3 * 120 * 10 * 4
    for bits in (1, 2, 4, 8):
        independent, delta = rows[f"Q{bits} independent"], rows[f"Q{bits} delta"]
        assert 0 < delta["uplink_total"] <= independent["uplink_total"]
        assert independent["uplink_total"] < rows["float16"]["uplink_total"]
        assert 0 <= delta["student_accuracy"] <= 1
    bench_labels.print_table(result)
