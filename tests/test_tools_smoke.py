"""Smoke tests of the benchmark tools in ``tools/`` (workloads, NNCodec runner, bench).

They must pass without NNCodec installed: the NNCodec round trip is skipped when its
venv is absent. Heavy work (training, full sweeps) is not done here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tools import nncodec_runner, workloads  # noqa: E402


@pytest.mark.skipif(not nncodec_runner.available(), reason="NNCodec venv not installed")
def test_nncodec_round_trip_is_lossy_but_close_and_deterministic() -> None:
    rng = np.random.default_rng(1)
    tensors = {
        "conv.weight": (rng.standard_normal((8, 4, 3, 3)) * 1e-3).astype(np.float32),
        "conv.bias": (rng.standard_normal(8) * 1e-3).astype(np.float32),
        "scalar": np.array(2e-3, dtype=np.float32),
    }
    configs = [
        nncodec_runner.NNCodecConfig(qp=-44, dq=True, repeats=2),
        nncodec_runner.NNCodecConfig(qp=-44, dq=False, lambda_scale=1.0),
        nncodec_runner.NNCodecConfig(qp=-20, dq=False),
    ]
    fine, rdo, coarse = nncodec_runner.encode_many(tensors, configs)
    for result in (fine, rdo, coarse):
        assert set(result.reconstructed) == set(tensors)
        for name, value in tensors.items():
            assert result.reconstructed[name].shape == value.shape
            assert result.reconstructed[name].dtype == np.float32
        assert result.encode_s > 0 and result.decode_s > 0
    assert len(fine.encode_seconds) == 2

    def rel_err(result: nncodec_runner.NNCodecResult) -> float:
        num = sum(float(np.sum((result.reconstructed[k] - v).astype(np.float64) ** 2)) for k, v in tensors.items())
        den = sum(float(np.sum(v.astype(np.float64) ** 2)) for v in tensors.values())
        return (num / den) ** 0.5

    # A step of 2^-11 on values of scale 1e-3 is a modest error; QP -20 (step 2^-5) zeroes everything.
    assert rel_err(fine) < 0.6
    assert rel_err(coarse) == pytest.approx(1.0, abs=1e-6)
    assert len(coarse.bitstream) < len(fine.bitstream)
    # The 1-D tensor gets the weights' QP (qp_1d_offset=0), not NNCodec's near-lossless -75.
    bias_err = np.abs(fine.reconstructed["conv.bias"] - tensors["conv.bias"]).max()
    assert bias_err > 1e-5


def test_nncodec_unavailable_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NNCODEC_PYTHON", str(tmp_path / "missing-python"))
    assert not nncodec_runner.available()
    with pytest.raises(nncodec_runner.NNCodecUnavailable):
        nncodec_runner.encode_tensors({"w": np.zeros(4, np.float32)}, qp=-40)


def test_dirichlet_split_partitions_every_index() -> None:
    labels = np.repeat(np.arange(10), 30)
    parts = workloads.dirichlet_split(labels, clients=10, alpha=0.5, seed=3)
    joined = np.sort(np.concatenate(parts))
    assert np.array_equal(joined, np.arange(len(labels)))
    # alpha=0.5 is non-IID: some client's label histogram is far from uniform
    shares = [np.bincount(labels[p], minlength=10) / max(len(p), 1) for p in parts if len(p)]
    assert max(float(s.max()) for s in shares) > 0.3


def test_gennorm_item_shape_and_spread() -> None:
    base, new = workloads.gennorm_item(1.0)
    assert base["x"].shape == new["x"].shape == workloads.GENNORM_SHAPE
    assert not base["x"].any()
    assert 5e-4 < float(np.mean(np.abs(new["x"]))) < 2e-3  # Laplace(scale=1e-3): E|x| = 1e-3


def test_workload_cache_round_trip(tmp_path: Path) -> None:
    items = [workloads.gennorm_item(2.0, seed=5)]
    path = tmp_path / "w.npz"
    workloads._save(path, items)
    (loaded,) = workloads._load(path)
    assert np.array_equal(loaded[1]["x"], items[0][1]["x"])
    assert np.array_equal(loaded[0]["x"], items[0][0]["x"])


@pytest.mark.skipif(not workloads.RESNET_CHECKPOINT.exists(), reason="../shared checkpoint absent")
def test_resnet56_architecture_matches_checkpoint() -> None:
    torch = pytest.importorskip("torch")
    state = torch.load(workloads.RESNET_CHECKPOINT, weights_only=True, map_location="cpu")
    model = workloads.build_resnet56()
    model.load_state_dict(state, strict=True)
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 32, 32))
    assert tuple(out.shape) == (2, 100)


# ----------------------------------------------------------------------------- bench_codecs


def _tiny_workload() -> workloads.Workload:
    rng = np.random.default_rng(7)
    items = []
    for _ in range(2):
        base = {
            "conv.weight": rng.standard_normal((16, 8, 3, 3)).astype(np.float32),
            "conv.bias": rng.standard_normal(16).astype(np.float32),
        }
        new = {n: (v + rng.laplace(0, 1e-3, v.shape)).astype(np.float32) for n, v in base.items()}
        new["conv.bias"][:4] = base["conv.bias"][:4]  # partly unchanged
        items.append((base, new))
    return workloads.Workload("tiny", "synthetic laplace deltas", items)


def test_order0_bits_matches_closed_form() -> None:
    from tools import bench_codecs

    symbols = np.array([0] * 6 + [1] * 2, dtype=np.int32)
    p = np.array([0.75, 0.25])
    assert bench_codecs.order0_bits(symbols) == pytest.approx(-8 * float(p @ np.log2(p)))
    assert bench_codecs.order0_bits(np.zeros(0, np.int32)) == 0.0


def test_envelope_interpolates_in_log_rate() -> None:
    from tools import bench_codecs

    pts = [(0.4, 1.0), (0.1, 4.0), (0.2, 2.0), (0.25, 3.0)]  # (0.25, 3.0) is dominated
    assert bench_codecs.pareto(pts) == [(0.1, 4.0), (0.2, 2.0), (0.4, 1.0)]
    # halfway in log-error between 0.1 and 0.2 -> geometric mean of 4 and 2
    assert bench_codecs.bpp_at(pts, float(np.sqrt(0.02))) == pytest.approx(np.sqrt(8.0))
    assert np.isnan(bench_codecs.bpp_at(pts, 0.05))  # no extrapolation below the finest point


def test_measure_ours_counts_real_bytes_and_error() -> None:
    from nnupdate.update import diff, encode_with_report
    from tools import bench_codecs

    w = _tiny_workload()
    updates = [diff(b, n) for b, n in w.items]
    p = bench_codecs.measure_ours(w, "uniform", "uniform:max_rel_error=0.1", updates, repeats=1)
    assert not p.error
    expected = sum(len(encode_with_report(u, "uniform:max_rel_error=0.1").data) for u in updates)
    assert p.bytes == expected  # deterministic, and the figure is the container size
    assert p.params == w.num_parameters
    assert p.bpp == pytest.approx(8 * expected / w.num_parameters)
    assert 0.09 <= p.rel_err <= 0.1
    assert p.h0_bits > 0 and 8 * p.coded_payload_bytes >= 0.9 * p.h0_bits
    assert p.encode_mbs > 0 and p.decode_mbs > 0
    lossless = bench_codecs.measure_ours(w, "zstd", "zstd:level=3", updates, repeats=1)
    assert lossless.rel_err < 1e-6 and np.isnan(lossless.h0_bits)  # float32 deltas: rounding only
    assert lossless.bpp > p.bpp


def test_bench_run_writes_all_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")  # the run draws rd.png
    from tools import bench_codecs

    monkeypatch.setattr(workloads, "load", lambda names, cache, log=print: [_tiny_workload()])
    args = bench_codecs.parse_args(
        ["--workloads", "tiny", "--codecs", "uniform,fp16,zstd", "--quick", "--no-nncodec", "--out", str(tmp_path)]
    )
    result = bench_codecs.run(args)
    for name in ("results.json", "results.csv", "summary.md", "rd.png"):
        assert (tmp_path / name).stat().st_size > 0
    specs = {p["spec"] for p in result["points"]}
    assert {"fp16", "zstd:level=3", "zstd:level=19", "zstd-f32:level=19", "uniform:max_rel_error=0.1"} <= specs
    direct = next(p for p in result["points"] if p["spec"] == "zstd-f32:level=3")
    assert direct["rel_err"] < 1e-6 and 16 < direct["bpp"] < 33  # float32 bytes, barely compressible
    (row,) = [r for r in result["rd_summary"] if r["target_rel_err"] == 0.1]
    assert row["best_codec"] == "uniform" and row["best_bpp"] > 0
    assert "NNCodec skipped" in result["nncodec"]


def test_shannon_bound_matches_gaussian_rate_distortion() -> None:
    """On i.i.d. Gaussian deltas the memoryless bound is R(D) = log2(1 / e) per element
    (D = e^2 sigma^2), and a tensor whose energy lies below the water level costs nothing."""
    from tools import bench_vs_nncodec

    rng = np.random.default_rng(0)
    gauss = rng.standard_normal(1 << 17)
    item = ({"w": np.zeros(gauss.size, np.float32)}, {"w": gauss.astype(np.float32)})
    bits = bench_vs_nncodec.shannon_bound_bits(item, 0.1) / gauss.size
    assert bits == pytest.approx(np.log2(10.0), abs=0.03)

    quiet = 1e-3 * rng.standard_normal(1 << 12)  # far below D: water-filling gives it no bits
    both = (
        {"w": item[0]["w"], "quiet.weight": np.zeros(quiet.size, np.float32)},
        {"w": item[1]["w"], "quiet.weight": quiet.astype(np.float32)},
    )
    alone = bench_vs_nncodec.shannon_bound_bits(item, 0.1)
    assert bench_vs_nncodec.shannon_bound_bits(both, 0.1) == pytest.approx(alone, rel=1e-3)  # the histogram grid moves a little
    assert bench_vs_nncodec.shannon_bound_bits(({"w": np.zeros(8, np.float32)}, {"w": np.zeros(8, np.float32)}), 0.1) == 0.0


def test_bench_lossless_measures_both_lossless_modes() -> None:
    """Both modes are measured from written bytes and checked bit-exact by the tool itself."""
    pytest.importorskip("ml_dtypes")
    from tools import bench_lossless

    g = np.random.default_rng(0)
    w = (0.02 * g.standard_normal((64, 96))).astype(np.float32)
    base, new = {"w": w.astype(np.float16)}, {"w": (w + 1e-3 * g.standard_normal(w.shape)).astype(np.float16)}
    result = bench_lossless.measure(base, new)
    assert set(result) == {"xor", "ulp"}
    assert result["ulp"]["bits_per_param"] < result["xor"]["bits_per_param"]
    assert all(r["encode_mb_s"] > 0 and r["decode_mb_s"] > 0 for r in result.values())


def test_layer_groups_split_by_kind_and_measure_row_structure() -> None:
    from tools import bench_layer_groups

    rng = np.random.default_rng(4)
    deltas = {"a.weight": np.zeros((8, 4, 1, 1)), "b.weight": np.zeros((6, 4, 1, 1)), "c.weight": np.zeros((5, 9)), "a.bias": np.zeros(8)}
    assert bench_layer_groups.groups(deltas) == {"4-D, rows of 4": ["a.weight", "b.weight"], "2-D, rows of 9": ["c.weight"], "1-D": ["a.bias"]}
    structured = rng.normal(size=(400, 2)) @ rng.normal(size=(2, 32)) + 0.05 * rng.normal(size=(400, 32))
    cols, basis = bench_layer_groups.held_out_gain([structured])
    assert basis > cols + 1.0  # two directions hold the energy: the basis compacts it, column scales cannot
    cols, basis = bench_layer_groups.held_out_gain([rng.normal(size=(400, 32))])
    assert abs(cols) < 0.05 and abs(basis) < 0.1  # independent values: nothing to gain either way
    assert all(np.isnan(bench_layer_groups.held_out_gain([rng.normal(size=(10, 32))])))
