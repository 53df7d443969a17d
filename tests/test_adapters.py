"""PyTorch, safetensors and npz adapters: round trips, live-module apply, partial and structural updates.

Real torch and safetensors; small models trained a few steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
nn = torch.nn

import nnupdate  # noqa: E402
from nnupdate.adapters import read_tensors, write_tensors  # noqa: E402
from nnupdate.adapters.namemap import apply_with_name_map, attach_tensor_digests  # noqa: E402
from nnupdate.adapters.safetensors import read_metadata  # noqa: E402
from nnupdate.adapters.torch import apply_to_module, from_module, from_state_dict  # noqa: E402
from nnupdate.cli import EXIT_BASE_MISMATCH, main  # noqa: E402
from nnupdate.errors import BaseMismatchError, InputError  # noqa: E402
from nnupdate.format import Combine  # noqa: E402
from nnupdate.io import load  # noqa: E402
from nnupdate.update import decode, diff  # noqa: E402


class LoRALinear(nn.Module):
    """A frozen Linear plus a low-rank adapter ``B @ A`` (B starts at zero, as in LoRA)."""

    def __init__(self, base: nn.Linear, rank: int = 2) -> None:
        super().__init__()
        self.base = base
        self.lora_A = nn.Parameter(torch.randn(rank, base.in_features) * 0.1)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + x @ self.lora_A.T @ self.lora_B.T


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.hidden = nn.Linear(4 * 6 * 6, 16)
        self.out = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x))).flatten(1)
        return self.out(torch.relu(self.hidden(x)))


def _train(model: nn.Module, params, steps: int = 4, seed: int = 0) -> None:  # type: ignore[no-untyped-def]
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(params, lr=0.05)
    model.train()
    for _ in range(steps):
        x, y = torch.randn(16, 1, 8, 8, generator=gen), torch.randint(0, 10, (16,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()


@pytest.fixture()
def pair(tmp_path: Path) -> dict:
    torch.manual_seed(0)
    model = Net()
    model.eval()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save(base, tmp_path / "base.pt")
    _train(model, model.parameters())
    torch.save(model.state_dict(), tmp_path / "tuned.pt")
    return {"dir": tmp_path, "model": model, "base": base, "tuned": {k: v.clone() for k, v in model.state_dict().items()}}


def _run(*argv: object) -> int:
    return main([str(a) for a in argv])


def test_torch_reader_keeps_buffers_and_integer_types(pair: dict) -> None:
    tensors = read_tensors(pair["dir"] / "tuned.pt")
    assert set(tensors) == set(pair["tuned"])
    assert tensors["bn.num_batches_tracked"].dtype == np.int64
    assert int(tensors["bn.num_batches_tracked"]) == 4
    np.testing.assert_array_equal(tensors["bn.running_var"], pair["tuned"]["bn.running_var"].numpy())


def test_apply_to_live_module_in_place(pair: dict) -> None:
    update = diff(read_tensors(pair["dir"] / "base.pt"), from_module(pair["model"]))
    update = decode(update.encode("raw"))
    model = Net()
    model.load_state_dict(pair["base"])
    weight = model.hidden.weight
    assert apply_to_module(model, update) is model
    assert model.hidden.weight is weight  # same Parameter object, values copied in place
    for name, value in model.state_dict().items():
        assert torch.equal(value, pair["tuned"][name]), name
    assert model.bn.num_batches_tracked.dtype == torch.int64 and int(model.bn.num_batches_tracked) == 4


def test_apply_to_wrong_module_leaves_it_untouched(pair: dict) -> None:
    update = decode(diff(read_tensors(pair["dir"] / "base.pt"), from_module(pair["model"])).encode("raw"))
    torch.manual_seed(99)
    other = Net()
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(BaseMismatchError):
        apply_to_module(other, update)
    for name, value in other.state_dict().items():
        assert torch.equal(value, before[name])


def test_partial_update_last_layer_only(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = Net().eval()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save(base, tmp_path / "base.pt")
    _train(model, model.out.parameters())  # fine-tune the head only (BN statistics move too in train mode)
    model.bn.load_state_dict({k.removeprefix("bn."): v for k, v in base.items() if k.startswith("bn.")})
    torch.save(model.state_dict(), tmp_path / "tuned.pt")
    assert _run("encode", tmp_path / "base.pt", tmp_path / "tuned.pt", "-o", tmp_path / "u.nnu", "--codec", "uniform") == 0
    update = load(tmp_path / "u.nnu")
    assert {n for n, c in update.changes.items() if c.combine != Combine.KEEP} == {"out.weight", "out.bias"}
    info = _info_json(tmp_path / "u.nnu")
    assert info["touched"]["changed"] == ["out.weight", "out.bias"]
    assert "hidden.weight" in info["touched"]["unchanged"]
    assert _run("apply", tmp_path / "base.pt", tmp_path / "u.nnu", "-o", tmp_path / "new.pt") == 0
    new = read_tensors(tmp_path / "new.pt")
    for name, value in base.items():
        if not name.startswith("out."):
            np.testing.assert_array_equal(new[name], value.numpy())
    step = update.changes["out.weight"].pipeline.stages[0].step  # type: ignore[union-attr]
    assert np.abs(new["out.weight"] - model.out.weight.detach().numpy()).max() <= step / 2 + 1e-6


def _info_json(path: Path) -> dict:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert _run("info", path, "--json") == 0
    return json.loads(buffer.getvalue())


def test_lora_adapter_tensors_added(tmp_path: Path) -> None:
    torch.manual_seed(2)
    model = Net().eval()
    torch.save(model.state_dict(), tmp_path / "base.pt")
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    model.hidden = LoRALinear(model.hidden)  # type: ignore[assignment]
    for p in model.parameters():
        p.requires_grad_(False)
    adapters = [model.hidden.lora_A, model.hidden.lora_B]
    for p in adapters:
        p.requires_grad_(True)
    _train(model, adapters)
    model.bn.load_state_dict({k.removeprefix("bn."): v for k, v in base_state.items() if k.startswith("bn.")})
    tuned = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save(tuned, tmp_path / "tuned.pt")
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        expected = model(x)

    assert _run("encode", tmp_path / "base.pt", tmp_path / "tuned.pt", "-o", tmp_path / "u.nnu", "--codec", "raw") == 0
    info = _info_json(tmp_path / "u.nnu")
    assert sorted(info["touched"]["added"]) == ["hidden.base.bias", "hidden.base.weight", "hidden.lora_A", "hidden.lora_B"]
    assert sorted(info["touched"]["removed"]) == ["hidden.bias", "hidden.weight"]

    # Onto a file: the result loads strictly into the LoRA-wrapped module and reproduces it.
    assert _run("apply", tmp_path / "base.pt", tmp_path / "u.nnu", "-o", tmp_path / "new.pt") == 0
    fresh = Net().eval()
    fresh.hidden = LoRALinear(fresh.hidden)  # type: ignore[assignment]
    fresh.load_state_dict(torch.load(tmp_path / "new.pt", weights_only=True), strict=True)
    with torch.no_grad():
        assert torch.equal(fresh(x), expected)

    # Onto a live module that already has (zero) adapters: apply_to_module refuses nothing.
    live = Net().eval()
    live.load_state_dict(base_state)
    update = load(tmp_path / "u.nnu")
    with pytest.raises(InputError, match="not in the module"):
        apply_to_module(live, update)  # plain module: no room for the adapters, left unchanged
    assert torch.equal(live.hidden.weight, base_state["hidden.weight"])


def test_removed_tensors(tmp_path: Path) -> None:
    base = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4, dtype=np.float32)}
    write_tensors(tmp_path / "base.safetensors", base)
    write_tensors(tmp_path / "new.safetensors", {"a": base["a"] + 1})
    assert _run("encode", tmp_path / "base.safetensors", tmp_path / "new.safetensors", "-o", tmp_path / "u.nnu", "--codec", "raw") == 0
    assert _info_json(tmp_path / "u.nnu")["touched"]["removed"] == ["b"]
    assert _run("apply", tmp_path / "base.safetensors", tmp_path / "u.nnu", "-o", tmp_path / "out.npz") == 0
    out = read_tensors(tmp_path / "out.npz")
    assert set(out) == {"a"}
    np.testing.assert_array_equal(out["a"], base["a"] + 1)


def test_safetensors_pytorch_round_trip_keeps_metadata(pair: dict) -> None:
    from safetensors.torch import save_file

    d = pair["dir"]
    save_file({k: v.contiguous() for k, v in pair["base"].items()}, str(d / "base.safetensors"), metadata={"arch": "Net", "step": "0"})
    # Mixed formats: base as safetensors, new as .pt; apply onto safetensors and onto .pt.
    assert _run("encode", d / "base.safetensors", d / "tuned.pt", "-o", d / "u.nnu", "--codec", "raw") == 0
    assert _run("apply", d / "base.safetensors", d / "u.nnu", "-o", d / "new.safetensors") == 0
    assert _run("apply", d / "base.pt", d / "u.nnu", "-o", d / "new.pt") == 0
    assert read_metadata(d / "new.safetensors") == {"arch": "Net", "step": "0"}
    from safetensors.torch import load_file

    for loaded in (load_file(str(d / "new.safetensors")), torch.load(d / "new.pt", weights_only=True)):
        assert set(loaded) == set(pair["tuned"])
        for name, value in pair["tuned"].items():
            assert loaded[name].dtype == value.dtype and torch.equal(loaded[name], value), name
    model = Net().eval()
    model.load_state_dict(load_file(str(d / "new.safetensors")), strict=True)


def test_bfloat16_and_half_state_dicts(tmp_path: Path) -> None:
    torch.manual_seed(4)
    base = {"w": torch.randn(8, 8, dtype=torch.bfloat16), "h": torch.randn(5, dtype=torch.float16)}
    new = {"w": base["w"] + 0.125, "h": base["h"] * 2}
    torch.save(base, tmp_path / "b.pt")
    torch.save(new, tmp_path / "n.pt")
    assert _run("encode", tmp_path / "b.pt", tmp_path / "n.pt", "-o", tmp_path / "u.nnu", "--codec", "raw") == 0
    assert _run("apply", tmp_path / "b.pt", tmp_path / "u.nnu", "-o", tmp_path / "o.pt") == 0
    out = torch.load(tmp_path / "o.pt", weights_only=True)
    assert out["w"].dtype == torch.bfloat16 and torch.equal(out["w"], new["w"])
    assert out["h"].dtype == torch.float16 and torch.equal(out["h"], new["h"])


class Sneaky:
    """Not a tensor: loading it needs arbitrary unpickling."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (print, ("executed!",))


def test_pt_needing_pickle_is_refused(pair: dict, capsys: pytest.CaptureFixture[str]) -> None:
    d = pair["dir"]
    torch.save({"w": torch.zeros(2), "evil": Sneaky()}, d / "evil.pt")
    torch.save(pair["model"], d / "whole_module.pt")  # a pickled nn.Module, not a state dict
    for bad in ("evil.pt", "whole_module.pt"):
        capsys.readouterr()
        assert _run("encode", d / bad, d / "tuned.pt", "-o", d / "u.nnu") == 1
        captured = capsys.readouterr()
        assert "not a weights-only PyTorch checkpoint" in captured.err
        assert "executed!" not in captured.out
        assert not (d / "u.nnu").exists()


@pytest.mark.parametrize(
    "kind, tensor",
    [
        ("quantized", lambda: torch.quantize_per_tensor(torch.randn(4, 4), 0.1, 0, torch.qint8)),
        ("sparse", lambda: torch.randn(4, 4).to_sparse()),
        ("float8", lambda: torch.randn(4).to(torch.float8_e4m3fn)),
        ("meta", lambda: torch.empty(4, device="meta")),
    ],
)
def test_tensors_numpy_cannot_hold_are_refused_by_name(tmp_path: Path, kind: str, tensor) -> None:  # type: ignore[no-untyped-def]
    """torch raises a bare TypeError (or NotImplementedError) converting these; the CLI
    and the API must answer with InputError naming the tensor and what to store instead."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized tensor creation is deprecated
        state = {"ok": torch.ones(2), "odd": tensor()}
    with pytest.raises(InputError, match="odd"):
        from_state_dict(state)
    if kind != "meta":  # a meta tensor cannot be saved with data
        torch.save(state, tmp_path / "odd.pt")
        with pytest.raises(InputError, match="odd"):
            read_tensors(tmp_path / "odd.pt")


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.complex64])
def test_safetensors_of_unsupported_element_types_is_refused_by_name(tmp_path: Path, dtype) -> None:  # type: ignore[no-untyped-def]
    from safetensors.torch import save_file

    save_file({"ok": torch.ones(2), "odd": torch.ones(3).to(dtype)}, str(tmp_path / "odd.safetensors"))
    with pytest.raises(InputError, match="'odd'"):
        read_tensors(tmp_path / "odd.safetensors")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_state_dicts_of_torch_tensors_go_straight_into_diff_and_apply(dtype) -> None:  # type: ignore[no-untyped-def]
    """numpy's conversion fails on bfloat16 and on parameters that require grad; the core
    takes torch tensors through the adapter and copies them (training goes on after diff)."""
    torch.manual_seed(0)
    model = nn.Linear(5, 3).to(dtype)
    base = {name: p.detach().clone() for name, p in model.named_parameters()}
    with torch.no_grad():
        model.weight.add_(0.25)
    new = dict(model.named_parameters())  # requires_grad, shares memory with the model
    update = nnupdate.decode(nnupdate.diff(base, new).encode("raw"))
    assert nnupdate.fingerprint(base) == nnupdate.fingerprint(from_state_dict(base))
    with torch.no_grad():
        model.weight.add_(1.0)  # the model moves on; the update must not
    applied = nnupdate.apply(base, update)
    assert np.array_equal(applied["weight"].astype(np.float32), (base["weight"].float() + 0.25).to(dtype).float().numpy())


@pytest.mark.parametrize("suffix, package", [(".safetensors", "safetensors"), (".onnx", "onnx"), (".pt", "torch")])
def test_a_format_whose_package_is_missing_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str, package: str) -> None:
    import sys

    monkeypatch.setitem(sys.modules, package, None)  # 'import package' now raises ImportError
    path = tmp_path / f"m{suffix}"
    path.write_bytes(b"0" * 64)
    with pytest.raises(InputError, match=rf"pip install 'nnupdate\[{package}\]'"):
        read_tensors(path)


def test_npz_refuses_to_write_bfloat16_and_leaves_no_file(tmp_path: Path) -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    with pytest.raises(InputError, match="bfloat16"):
        write_tensors(tmp_path / "out.npz", {"w": np.ones(3, ml_dtypes.bfloat16)})
    assert not (tmp_path / "out.npz").exists()


def test_wrong_base_file_is_refused_and_output_untouched(pair: dict) -> None:
    d = pair["dir"]
    assert _run("encode", d / "base.pt", d / "tuned.pt", "-o", d / "u.nnu", "--codec", "raw") == 0
    other = {k: v + 1 if v.is_floating_point() else v for k, v in pair["base"].items()}
    torch.save(other, d / "other.pt")
    (d / "out.pt").write_bytes(b"old")
    assert _run("apply", d / "other.pt", d / "u.nnu", "-o", d / "out.pt") == EXIT_BASE_MISMATCH
    assert _run("apply", d / "other.pt", d / "u.nnu", "-o", d / "out.pt", "--name-map", "auto") == EXIT_BASE_MISMATCH
    assert (d / "out.pt").read_bytes() == b"old"


def test_shape_mismatch_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = {"w": np.ones((3, 4), dtype=np.float32)}
    write_tensors(tmp_path / "b.npz", base)
    write_tensors(tmp_path / "n.npz", {"w": base["w"] * 2})
    write_tensors(tmp_path / "wrong.npz", {"w": np.ones((4, 4), dtype=np.float32)})
    assert _run("encode", tmp_path / "b.npz", tmp_path / "n.npz", "-o", tmp_path / "u.nnu", "--codec", "raw") == 0
    capsys.readouterr()
    assert _run("apply", tmp_path / "wrong.npz", tmp_path / "u.nnu", "-o", tmp_path / "o.npz", "--name-map", "auto") == 1
    assert "float32[3, 4]" in capsys.readouterr().err
    assert not (tmp_path / "o.npz").exists()


def test_renamed_base_matched_by_value_and_ambiguity_listed(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    base = {"enc.w": rng.standard_normal((4, 6)).astype(np.float32), "enc.b": rng.standard_normal(4).astype(np.float32)}
    new = {k: v + np.float32(0.5) for k, v in base.items()}
    update = diff(base, new)
    attach_tensor_digests(update, base)
    update = decode(update.encode("raw"))
    # A base that stores the matrix transposed under another name, the bias renamed.
    renamed = {"W_t": base["enc.w"].T.copy(), "bias0": base["enc.b"], "unrelated": np.zeros(4, dtype=np.float32)}
    result = apply_with_name_map(tmp_path / "x.npz", renamed, update, "auto")
    assert result.name_map.entries["enc.w"].transpose == (1, 0)
    assert result.name_map.verified
    np.testing.assert_array_equal(result.tensors["W_t"], new["enc.w"].T)
    np.testing.assert_array_equal(result.tensors["bias0"], new["enc.b"])
    np.testing.assert_array_equal(result.tensors["unrelated"], renamed["unrelated"])
    # Two candidates holding identical values cannot be told apart: refused, candidates listed.
    twice = {**renamed, "bias1": base["enc.b"].copy()}
    with pytest.raises(InputError, match=r"enc\.b .*ambiguous: candidates bias0, bias1"):
        apply_with_name_map(tmp_path / "x.npz", twice, update, "auto")


# ----------------------------------------------------------------------------- properties

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def renamed_models(draw):  # type: ignore[no-untyped-def]
    """Distinct random tensors, a new name for each (but tiny ones), some matrices stored transposed."""
    count = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    base, renamed, layout = {}, {}, {}
    for i in range(count):
        shape = tuple(draw(st.lists(st.integers(1, 4), min_size=0, max_size=3)))
        base[f"layer{i}.w"] = rng.standard_normal(shape).astype(np.float32)
        small = int(np.prod(shape)) < 4  # matched by name only, so kept under its name and layout
        transpose = not small and len(shape) == 2 and shape[0] != shape[1] and draw(st.booleans())
        stored = base[f"layer{i}.w"].T.copy() if transpose else base[f"layer{i}.w"]
        renamed[f"layer{i}.w" if small else f"t{draw(st.integers(0, 10**6))}_{i}"] = stored
        layout[f"layer{i}.w"] = transpose
    return base, renamed, layout, seed


@given(renamed_models())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_value_matching_places_every_tensor(tmp_path: Path, case) -> None:  # type: ignore[no-untyped-def]
    base, renamed, layout, seed = case
    rng = np.random.default_rng(seed + 1)
    new = {n: (v + rng.standard_normal(v.shape).astype(np.float32)).astype(np.float32) for n, v in base.items()}
    update = diff(base, new)
    attach_tensor_digests(update, base)
    update = decode(update.encode("raw"))
    result = apply_with_name_map(tmp_path / "x.npz", renamed, update, "auto")
    assert set(result.tensors) == set(renamed)
    for name, target in result.name_map.entries.items():
        assert (target.transpose is not None) == layout[name]
        expected = new[name].T if layout[name] else new[name]
        np.testing.assert_array_equal(result.tensors[target.dest], expected)


@given(st.binary(max_size=300))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_arbitrary_bytes_as_onnx_give_input_error(tmp_path: Path, payload: bytes) -> None:
    pytest.importorskip("onnx")
    path = tmp_path / "fuzz.onnx"
    path.write_bytes(payload)
    with pytest.raises(InputError):
        read_tensors(path)


def test_integer_and_tiny_tensors_never_matched_under_other_names(tmp_path: Path) -> None:
    base = {"count": np.array(3, dtype=np.int64), "scale": np.array([1.0], dtype=np.float32), "w": np.ones((4, 4), np.float32)}
    new = {"count": np.array(4, dtype=np.int64), "scale": np.array([2.0], dtype=np.float32), "w": np.ones((4, 4), np.float32)}
    update = diff(base, new)
    attach_tensor_digests(update, base)
    update = decode(update.encode("raw"))
    # An exported graph's constants that happen to hold the same values under other names.
    graph = {"onnx::Reshape_7": np.array(3, dtype=np.int64), "onnx::Mul_9": np.array([1.0], dtype=np.float32), "w": base["w"]}
    with pytest.raises(InputError, match="scale .*too small to be recognised"):
        apply_with_name_map(tmp_path / "g.npz", graph, update, "auto")
    result = apply_with_name_map(tmp_path / "g.npz", {**graph, "scale": base["scale"]}, update, "auto")
    assert "count" in result.name_map.skipped
    np.testing.assert_array_equal(result.tensors["onnx::Reshape_7"], graph["onnx::Reshape_7"])
    np.testing.assert_array_equal(result.tensors["scale"], new["scale"])


def test_training_checkpoint_wrappers(tmp_path: Path) -> None:
    sd = {"w": torch.ones(3), "n": torch.tensor(2)}
    torch.save({"model": sd, "epoch": 3, "optimizer": {"state": {}, "param_groups": []}}, tmp_path / "wrapped.pt")
    assert set(read_tensors(tmp_path / "wrapped.pt")) == {"w", "n"}
    torch.save({"state_dict": sd, "meta": "x"}, tmp_path / "sd.pt")
    assert set(read_tensors(tmp_path / "sd.pt")) == {"w", "n"}
    torch.save({"model": sd, "ema": sd}, tmp_path / "two.pt")
    with pytest.raises(InputError, match="several state dicts"):
        read_tensors(tmp_path / "two.pt")
    torch.save({"epoch": 3}, tmp_path / "none.pt")
    with pytest.raises(InputError, match="no tensors"):
        read_tensors(tmp_path / "none.pt")


@pytest.mark.parametrize("key", ["model", "state_dict", None])
def test_apply_to_a_training_checkpoint_keeps_its_structure(tmp_path: Path, key: str | None) -> None:
    """`nnupdate apply` on {"model": sd, "epoch": 3, "optimizer": ...} writes the same
    structure with the new weights (it wrote a bare state dict, which no longer loaded
    where the base did); a plain state dict stays plain."""
    base_sd = {"w": torch.ones(4, 3), "n": torch.tensor(2)}
    new_sd = {"w": torch.ones(4, 3) * 1.5, "n": torch.tensor(3)}
    extra = {"epoch": 3, "optimizer": {"state": {0: {"momentum_buffer": torch.full((4, 3), 0.25)}}, "param_groups": []}}
    wrap = (lambda sd: {key: sd, **extra}) if key else (lambda sd: sd)
    torch.save(wrap(base_sd), tmp_path / "base.pt")
    torch.save(wrap(new_sd), tmp_path / "new.pt")
    assert main(["encode", str(tmp_path / "base.pt"), str(tmp_path / "new.pt"), "-o", str(tmp_path / "u.nnu"), "--codec", "raw"]) == 0
    assert main(["apply", str(tmp_path / "base.pt"), str(tmp_path / "u.nnu"), "-o", str(tmp_path / "out.pt")]) == 0
    out = torch.load(tmp_path / "out.pt", weights_only=True)
    if key is None:
        assert set(out) == {"w", "n"}
        weights = out
    else:
        assert list(out) == [key, "epoch", "optimizer"] and out["epoch"] == 3
        assert torch.equal(out["optimizer"]["state"][0]["momentum_buffer"], extra["optimizer"]["state"][0]["momentum_buffer"])
        weights = out[key]
    assert torch.equal(weights["w"], new_sd["w"]) and torch.equal(weights["n"], new_sd["n"])


def test_bfloat16_safetensors_from_pytorch(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    torch.manual_seed(7)
    base = {"w": torch.randn(6, 5, dtype=torch.bfloat16), "bits": torch.arange(4, dtype=torch.int32).to(torch.uint16)}
    new = {"w": base["w"] * 1.5, "bits": (base["bits"].to(torch.int32) + 1).to(torch.uint16)}  # U16 stays U16
    save_file(base, str(tmp_path / "b.safetensors"), metadata={"dtype": "bf16"})
    save_file(new, str(tmp_path / "n.safetensors"))
    assert read_tensors(tmp_path / "b.safetensors")["w"].dtype.name == "bfloat16"
    assert _run("encode", tmp_path / "b.safetensors", tmp_path / "n.safetensors", "-o", tmp_path / "u.nnu", "--codec", "raw") == 0
    assert _run("apply", tmp_path / "b.safetensors", tmp_path / "u.nnu", "-o", tmp_path / "o.safetensors") == 0
    out = load_file(str(tmp_path / "o.safetensors"))  # PyTorch reads what we wrote, types intact
    assert out["w"].dtype == torch.bfloat16 and torch.equal(out["w"], new["w"])
    assert out["bits"].dtype == new["bits"].dtype and torch.equal(out["bits"], new["bits"])
    assert read_metadata(tmp_path / "o.safetensors") == {"dtype": "bf16"}


@given(st.binary(max_size=200))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_arbitrary_bytes_as_safetensors_give_input_error(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(payload)
    with pytest.raises(InputError):
        read_tensors(path)


def test_safetensors_tensors_come_back_in_file_order_every_time(tmp_path: Path) -> None:
    """The safetensors library hands back a hash map whose order changes between loads; the
    reader keeps the file's order (its data offsets), so the same checkpoints give the same
    update bytes."""
    import nnupdate

    g = np.random.default_rng(5)
    names = [f"layer{i}.{kind}" for i in g.permutation(40) for kind in ("weight", "bias")]
    base = {n: g.standard_normal(300).astype(np.float32) for n in names}
    new = {n: v + np.float32(0.01) * g.standard_normal(300).astype(np.float32) for n, v in base.items()}
    write_tensors(tmp_path / "base.safetensors", base)
    write_tensors(tmp_path / "new.safetensors", new)
    orders = {tuple(read_tensors(tmp_path / "new.safetensors")) for _ in range(5)}
    assert len(orders) == 1 and set(next(iter(orders))) == set(names)
    encoded = {
        nnupdate.diff(read_tensors(tmp_path / "base.safetensors"), read_tensors(tmp_path / "new.safetensors")).encode("uniform")
        for _ in range(3)
    }
    assert len(encoded) == 1
