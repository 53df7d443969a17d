"""Rate control on real encodes: --max-rel-error, --target-bits, --lambda and the CLI flags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import nnupdate
from nnupdate import rate
from nnupdate.codecs import parse_codec
from nnupdate.errors import InputError


def _with(codec: str, option: str) -> str:
    return f"{codec},{option}" if ":" in codec else f"{codec}:{option}"


def _update(seed: int = 0) -> nnupdate.Update:
    g = np.random.default_rng(seed)
    base = {"a": g.standard_normal((120, 160)).astype(np.float32), "b": g.standard_normal(30).astype(np.float32)}
    new = {k: v + (0.01 * g.laplace(size=v.shape)).astype(np.float32) for k, v in base.items()}
    return nnupdate.diff(base, new)


@pytest.mark.parametrize("codec", ["rd", "rd:coder=auto", "rd:rounding=nearest,coder=rans"])
@pytest.mark.parametrize("target", [0.02, 0.1, 0.3])
def test_max_rel_error_lands_in_band(codec: str, target: float) -> None:
    report = nnupdate.encode_with_report(_update(), _with(codec, f"max_rel_error={target}"))
    assert 0.9 * target <= report.relative_error <= target


@pytest.mark.parametrize("codec", ["rd", "rd:coder=rans"])
@pytest.mark.parametrize("bits", [0.5, 1.0, 2.0, 4.0])
def test_target_bits_within_two_percent(codec: str, bits: float) -> None:
    report = nnupdate.encode_with_report(_update(1), _with(codec, f"target_bits={bits}"))
    assert report.bits_per_parameter == pytest.approx(bits, rel=0.02)


def test_target_bits_below_header_cost_is_refused() -> None:
    with pytest.raises(InputError):
        nnupdate.encode_with_report(_update(), "rd:target_bits=0.0001")


def _bit_exact(update: nnupdate.Update, report: nnupdate.EncodeReport, base: dict[str, np.ndarray], new: dict[str, np.ndarray]) -> bool:
    applied = nnupdate.apply(base, nnupdate.decode(report.data))
    return all(np.array_equal(applied[k].view(np.uint8), new[k].view(np.uint8)) for k in new)


@pytest.mark.parametrize("codec", ["ctx", "ctx:quant=fast", "uniform", "rd"])
def test_error_target_below_the_types_precision_is_met_exactly(codec: str) -> None:
    """Levels for 1e-10 would cost more than float32 itself (or overflow): the tensors go
    exact, in fewer bytes than their levels, instead of an error or a missed target."""
    g = np.random.default_rng(4)
    base = {"w": g.standard_normal((128, 96)).astype(np.float32)}
    new = {"w": base["w"] + (1e-3 * g.standard_normal((128, 96))).astype(np.float32)}
    update = nnupdate.diff(base, new)
    report = nnupdate.encode_with_report(update, _with(codec, "max_rel_error=1e-10"))
    assert report.relative_error <= 1e-10
    assert report.bits_per_parameter < 32
    assert _bit_exact(update, report, base, new)


@pytest.mark.parametrize("codec", ["ctx", "rd"])
def test_target_bits_beyond_the_finest_step_returns_it(codec: str) -> None:
    """A budget above what the update can use (40 bits/param of float32) is not an error:
    the update comes back at its precision, exact, in fewer bits than allowed."""
    g = np.random.default_rng(5)
    base = {"w": g.standard_normal((64, 64)).astype(np.float32)}
    new = {"w": base["w"] + (1e-3 * g.standard_normal((64, 64))).astype(np.float32)}
    update = nnupdate.diff(base, new)
    report = nnupdate.encode_with_report(update, _with(codec, "target_bits=40"))
    assert report.bits_per_parameter < 32
    assert _bit_exact(update, report, base, new)


def test_target_bits_does_not_overrun_a_jump_in_the_rate_curve() -> None:
    """Values on three levels (+-c, 0): no step costs 0.5 bits/param, the rate jumps from
    ~0.9 to ~0. The search returns a step under the budget, not the closest one above."""
    g = np.random.default_rng(6)
    x = (np.sign(g.standard_normal((256, 256))) * 1e-3 * (g.random((256, 256)) < 0.3)).astype(np.float32)
    update = nnupdate.diff({"w": np.zeros_like(x)}, {"w": x})
    for codec in ("ctx", "rd"):
        report = nnupdate.encode_with_report(update, _with(codec, "target_bits=0.5"))
        assert report.bits_per_parameter <= 0.5 * 1.02


def test_step_within_budget_prefers_near_then_under() -> None:
    assert rate.step_within_budget({1.0: 2.05, 2.0: 1.99, 3.0: 0.5}, 2.0) == 2.0
    assert rate.step_within_budget({1.0: 3.0, 2.0: 1.2, 3.0: 0.5}, 2.0) == 2.0
    assert rate.step_within_budget({1.0: 3.0, 2.0: 2.5}, 2.0) == 2.0


def test_lambda_trades_rate_for_distortion() -> None:
    update = _update(2)
    results = []
    for lam in (1e4, 1e6, 1e8):
        report = nnupdate.encode_with_report(update, f"rd:lam={lam},coder=auto")
        results.append((len(report.data), report.relative_error))
    sizes, errors = zip(*results)
    assert sizes[0] < sizes[1] < sizes[2]
    assert errors[0] > errors[1] > errors[2]


def test_lambda_choice_is_the_grid_minimum() -> None:
    update = _update(3)
    lam = 1e6
    codec = parse_codec("rd:coder=rans")
    make = codec.with_step  # type: ignore[attr-defined]
    chosen = rate.step_for_lambda(update, make, lam)

    def cost(step: float) -> float:
        r = nnupdate.encode_with_report(update, make(step))
        return len(r.data) + lam * sum(t.squared_error for t in r.tensors)

    best = cost(chosen)
    for factor in (0.5, 0.7, 1.4, 2.0):
        assert best <= cost(chosen * factor)


def test_cli_flags(tmp_path: Path) -> None:
    from nnupdate.cli import app

    g = np.random.default_rng(4)
    base = {"w": g.standard_normal((100, 100)).astype(np.float32)}
    new = {"w": base["w"] + (0.01 * g.laplace(size=(100, 100))).astype(np.float32)}
    np.savez(tmp_path / "base.npz", **base)
    np.savez(tmp_path / "new.npz", **new)
    runner = CliRunner()
    out = tmp_path / "u.nnu"
    common = ["encode", str(tmp_path / "base.npz"), str(tmp_path / "new.npz"), "-o", str(out), "--json"]
    res = runner.invoke(app, [*common, "--codec", "rd", "--target-bits", "2"])
    assert res.exit_code == 0, res.output
    assert 8 * out.stat().st_size / 10_000 == pytest.approx(2.0, rel=0.02)
    res = runner.invoke(app, [*common, "--codec", "rd:target_bits=3", "--lambda", "1e6"])
    assert res.exit_code == 0, res.output
    assert "lam=1000000.0" in res.output and "target_bits=0.0" in res.output
    res = runner.invoke(app, [*common, "--codec", "rd", "--max-rel-error", "0.1"])
    assert res.exit_code == 0, res.output
    update = nnupdate.decode(out.read_bytes())
    err = np.linalg.norm(update.changes["w"].data.astype(np.float64) - (new["w"].astype(np.float64) - base["w"])) / np.linalg.norm(new["w"].astype(np.float64) - base["w"])
    assert 0.09 <= err <= 0.1


@pytest.mark.parametrize(
    "codec", ["uniform:max_rel_error=0.1", "ctx:max_rel_error=0.1", "ctx:quant=fast,max_rel_error=0.1", "rd:max_rel_error=0.5", "topk:fraction=0.5"]
)
def test_subnormal_float64_deltas_neither_crash_nor_hang(codec: str) -> None:
    """peak * 1e-9 underflows to 0 for a subnormal peak: rate control must still return a
    positive step (and the encode a decodable container), not divide by zero or loop."""
    base = {"w": np.zeros(4, dtype=np.float64)}
    new = {"w": np.array([5e-324, 0.0, -1e-323, 2.5e-322])}
    update = nnupdate.diff(base, new)
    assert rate.step_for_max_rel_error(update.float_deltas(), 0.1) > 0
    out = nnupdate.apply(base, nnupdate.decode(update.encode(codec)))
    assert out["w"].shape == (4,) and np.all(np.abs(out["w"]) <= 1e-300)


@pytest.mark.parametrize("codec", ["uniform", "ctx", "ctx:quant=fast", "rd:rounding=nearest"])
def test_error_target_holds_on_the_applied_float32_model(codec: str) -> None:
    """A delta 1e-6 the size of its weights is ~8 ULPs: apply's rounding to float32 is a
    visible part of the damage. The error reported (and targeted) is the applied model's."""
    g = np.random.default_rng(7)
    base = {"w": g.standard_normal((64, 128)).astype(np.float32)}
    new = {"w": (base["w"] + 1e-6 * g.standard_normal((64, 128))).astype(np.float32)}
    report = nnupdate.encode_with_report(nnupdate.diff(base, new), _with(codec, "max_rel_error=0.05"))
    applied = nnupdate.apply(base, nnupdate.decode(report.data))["w"].astype(np.float64)
    actual = np.linalg.norm(applied - new["w"]) / np.linalg.norm(new["w"].astype(np.float64) - base["w"])
    assert report.relative_error == pytest.approx(actual, rel=1e-9, abs=1e-12)
    assert actual <= 0.05
