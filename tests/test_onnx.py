"""PyTorch -> .nnu -> ONNX: updates made from state dicts, applied to the *base* .onnx, run in onnxruntime.

Real torch, onnx and onnxruntime throughout; models are tiny and trained a few steps so the
whole file stays within a few seconds.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
nn = torch.nn

from nnupdate.adapters import onnx as onnx_adapter  # noqa: E402
from nnupdate.adapters import read_tensors  # noqa: E402
from nnupdate.adapters.torch import apply_to_module  # noqa: E402
from nnupdate.cli import EXIT_BASE_MISMATCH, main  # noqa: E402
from nnupdate.io import load  # noqa: E402


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 8, 3)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 3 * 3, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.max_pool2d(torch.relu(self.bn2(self.conv2(x))), 2)
        return self.fc(x.flatten(1))


class Block(nn.Module):
    """A pre-norm transformer block: LayerNorm, multi-head attention, MLP, then a head."""

    def __init__(self, d: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 32), nn.GELU(), nn.Linear(32, d))
        self.head = nn.Linear(d, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        x = x + self.mlp(self.ln2(x))
        return self.head(x.mean(1))


def _train(model: nn.Module, make_batch, steps: int, seed: int) -> None:  # type: ignore[no-untyped-def]
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    for _ in range(steps):
        x, y = make_batch(gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()


def _export(model: nn.Module, example: torch.Tensor, path: Path, **kwargs: object) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=False, **kwargs)


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _case(tmp: Path, model: nn.Module, make_batch, example: torch.Tensor, *, pretrain: int) -> dict:  # type: ignore[no-untyped-def]
    """Base (.pt + .onnx without constant folding + default .onnx), fine-tuned .pt and its outputs."""
    torch.manual_seed(0)
    if pretrain:
        _train(model, make_batch, pretrain, seed=1)
    model.eval()
    torch.save(model.state_dict(), tmp / "base.pt")
    _export(model, example, tmp / "base.onnx", do_constant_folding=False)
    _export(model, example, tmp / "base_folded.onnx")
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    _train(model, make_batch, 4, seed=2)
    torch.save(model.state_dict(), tmp / "tuned.pt")
    with torch.no_grad():
        tuned_out = model(example).numpy()
    return {"dir": tmp, "model": model, "base_state": base_state, "x": example.numpy(), "tuned_out": tuned_out}


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> dict:
    torch.manual_seed(0)

    def batch(gen):  # type: ignore[no-untyped-def]
        return torch.randn(16, 1, 8, 8, generator=gen), torch.randint(0, 10, (16,), generator=gen)

    return _case(tmp_path_factory.mktemp("cnn"), SmallCNN(), batch, torch.randn(3, 1, 8, 8), pretrain=3)


@pytest.fixture(scope="module")
def block(tmp_path_factory: pytest.TempPathFactory) -> dict:
    torch.manual_seed(0)

    def batch(gen):  # type: ignore[no-untyped-def]
        return torch.randn(8, 6, 16, generator=gen), torch.randint(0, 5, (8,), generator=gen)

    # No pretraining: fresh LayerNorms are all ones/zeros, so the exporter de-duplicates them
    # into Identity aliases, which the update must un-share.
    return _case(tmp_path_factory.mktemp("block"), Block(), batch, torch.randn(2, 6, 16), pretrain=0)


def _run(*argv: object) -> int:
    return main([str(a) for a in argv])


def _encode_apply(case: dict, codec: str, *extra: str, onnx_name: str = "base.onnx") -> Path:
    d = case["dir"]
    tag = codec.replace(":", "_").replace("=", "_").replace(",", "_")
    update = d / f"u_{tag}{'_'.join(extra)}.nnu"
    out = d / f"tuned_{tag}{'_'.join(extra)}.onnx"
    assert _run("encode", d / "base.pt", d / "tuned.pt", "-o", update, "--codec", codec, *extra) == 0
    assert _run("apply", d / onnx_name, update, "-o", out, "--name-map", "auto") == 0
    return out


@pytest.mark.parametrize("codec", ["raw", "raw:combine=ulp"])  # float32: XOR, or ULP steps through transposes
@pytest.mark.parametrize("name", ["cnn", "block"])
def test_lossless_update_applied_to_base_onnx_matches_pytorch(name: str, codec: str, request: pytest.FixtureRequest) -> None:
    case = request.getfixturevalue(name)
    out = _encode_apply(case, codec)
    np.testing.assert_allclose(_ort(out, case["x"]), case["tuned_out"], rtol=1e-5, atol=1e-5)
    onnx.checker.check_model(str(out), full_check=True)
    # The graph is untouched apart from un-shared Identity aliases.
    before, after = onnx.load(str(case["dir"] / "base.onnx")), onnx.load(str(out))
    assert [n.op_type for n in after.graph.node if n.op_type != "Identity"] == [
        n.op_type for n in before.graph.node if n.op_type != "Identity"
    ]
    # Every initializer is bit-exact the fine-tuned tensor (transposed where export transposed it).
    tuned = read_tensors(case["dir"] / "tuned.pt")
    written = read_tensors(out)
    for torch_name, value in tuned.items():
        if torch_name in written:
            np.testing.assert_array_equal(written[torch_name], value)


@pytest.mark.parametrize("name", ["cnn", "block"])
def test_lossy_update_within_declared_error(name: str, request: pytest.FixtureRequest) -> None:
    case = request.getfixturevalue(name)
    out = _encode_apply(case, "uniform:max_rel_error=0.02")
    update = load(next(case["dir"].glob("u_uniform*.nnu")))
    tuned = read_tensors(case["dir"] / "tuned.pt")
    base = read_tensors(case["dir"] / "base.pt")
    written = read_tensors(out)
    checked = 0
    for torch_name, change in update.changes.items():
        if torch_name not in written or change.pipeline is None or not change.dtype.startswith("float"):
            continue
        step = change.pipeline.stages[0].step
        bound = step / 2 + 4 * np.finfo(np.float32).eps * (np.abs(tuned[torch_name]) + np.abs(base[torch_name]))
        assert np.all(np.abs(written[torch_name].astype(np.float64) - tuned[torch_name]) <= bound), torch_name
        checked += 1
    assert checked >= 4
    # Same update applied to the live PyTorch base module: both frameworks agree.
    model = case["model"]
    model.load_state_dict(case["base_state"])
    apply_to_module(model, update)
    with torch.no_grad():
        expected = model(torch.from_numpy(case["x"])).numpy()
    np.testing.assert_allclose(_ort(out, case["x"]), expected, rtol=1e-4, atol=1e-5)
    assert np.abs(expected - case["tuned_out"]).max() < 0.05 * np.abs(case["tuned_out"]).max()


def test_transposes_and_aliases_are_reported_and_saved(block: dict, capsys: pytest.CaptureFixture[str]) -> None:
    d = block["dir"]
    assert _run("encode", d / "base.pt", d / "tuned.pt", "-o", d / "m.nnu", "--codec", "raw") == 0
    capsys.readouterr()
    assert _run("apply", d / "base_folded.onnx", d / "m.nnu", "-o", d / "m.onnx", "--name-map", "auto", "--save-name-map", d / "map.json") == 0
    printed = capsys.readouterr().out
    assert "transposed [1, 0]" in printed and "mlp.0.weight" in printed
    assert "exported as an Identity alias" in printed
    saved = json.loads((d / "map.json").read_text())
    assert saved["format"] == "nnupdate-name-map/1"
    assert saved["tensors"]["mlp.0.weight"]["transpose"] == [1, 0]
    np.testing.assert_allclose(_ort(d / "m.onnx", block["x"]), block["tuned_out"], rtol=1e-5, atol=1e-5)
    # The saved map, passed back as a file, reproduces the same model.
    assert _run("apply", d / "base_folded.onnx", d / "m.nnu", "-o", d / "m2.onnx", "--name-map", d / "map.json") == 0
    assert (d / "m2.onnx").read_bytes() == (d / "m.onnx").read_bytes()


def test_update_of_an_aliased_source_keeps_the_alias(tmp_path: Path) -> None:
    """ln2.weight is exported as Identity(ln1.weight): changing ln1 alone must not move ln2."""
    torch.manual_seed(5)
    model = Block().eval()
    example = torch.randn(2, 6, 16)
    torch.save(model.state_dict(), tmp_path / "b.pt")
    _export(model, example, tmp_path / "b.onnx")
    assert "ln2.weight" in onnx_adapter.graph_info(tmp_path / "b.onnx").aliases
    with torch.no_grad():
        model.ln1.weight.mul_(1.5)
        expected = model(example).numpy()
    torch.save(model.state_dict(), tmp_path / "t.pt")
    assert _run("encode", tmp_path / "b.pt", tmp_path / "t.pt", "-o", tmp_path / "u.nnu", "--codec", "raw") == 0
    assert load(tmp_path / "u.nnu").changes["ln2.weight"].combine.name == "KEEP"
    assert _run("apply", tmp_path / "b.onnx", tmp_path / "u.nnu", "-o", tmp_path / "t.onnx", "--name-map", "auto") == 0
    np.testing.assert_allclose(_ort(tmp_path / "t.onnx", example.numpy()), expected, rtol=1e-5, atol=1e-5)
    assert "ln2.weight" not in onnx_adapter.graph_info(tmp_path / "t.onnx").aliases


def test_without_digests_shape_guess_is_checked_by_fingerprint(block: dict) -> None:
    out = _encode_apply(block, "raw", "--no-tensor-digests", onnx_name="base_folded.onnx")
    np.testing.assert_allclose(_ort(out, block["x"]), block["tuned_out"], rtol=1e-5, atol=1e-5)


def test_folded_batchnorm_is_refused_not_misapplied(cnn: dict, capsys: pytest.CaptureFixture[str]) -> None:
    d = cnn["dir"]
    assert _run("encode", d / "base.pt", d / "tuned.pt", "-o", d / "f.nnu", "--codec", "raw") == 0
    capsys.readouterr()
    assert _run("apply", d / "base_folded.onnx", d / "f.nnu", "-o", d / "f.onnx", "--name-map", "auto") == 1
    err = capsys.readouterr().err
    assert "conv1.weight" in err and "folded" in err
    assert not (d / "f.onnx").exists()


def test_wrong_onnx_base_is_refused_and_output_untouched(cnn: dict, tmp_path: Path) -> None:
    d = cnn["dir"]
    other = SmallCNN().eval()
    _export(other, torch.from_numpy(cnn["x"]), tmp_path / "other.onnx", do_constant_folding=False)
    assert _run("encode", d / "base.pt", d / "tuned.pt", "-o", tmp_path / "u.nnu", "--codec", "raw") == 0
    target = tmp_path / "out.onnx"
    target.write_bytes(b"previous contents")
    assert _run("apply", tmp_path / "other.onnx", tmp_path / "u.nnu", "-o", target, "--name-map", "auto") == EXIT_BASE_MISMATCH
    assert target.read_bytes() == b"previous contents"


def test_external_data_models(cnn: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = cnn["dir"]
    model = onnx.load(str(d / "base.onnx"))
    onnx.save_model(model, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.weights", size_threshold=0)
    assert (tmp_path / "ext.onnx").stat().st_size < 4096  # the weights really live outside
    assert _run("encode", d / "base.pt", d / "tuned.pt", "-o", tmp_path / "u.nnu", "--codec", "raw") == 0
    assert _run("apply", tmp_path / "ext.onnx", tmp_path / "u.nnu", "-o", tmp_path / "out.onnx", "--name-map", "auto") == 0
    assert (tmp_path / "out.onnx.data").stat().st_size > 1000
    np.testing.assert_allclose(_ort(tmp_path / "out.onnx", cnn["x"]), cnn["tuned_out"], rtol=1e-5, atol=1e-5)
    # A model above the protobuf limit goes to external data even from an inline base:
    # exercised by lowering the threshold instead of allocating 2 GB.
    monkeypatch.setattr(onnx_adapter, "EXTERNAL_DATA_THRESHOLD", 1024)
    assert _run("apply", d / "base.onnx", tmp_path / "u.nnu", "-o", tmp_path / "big.onnx", "--name-map", "auto") == 0
    assert (tmp_path / "big.onnx.data").is_file()
    np.testing.assert_allclose(_ort(tmp_path / "big.onnx", cnn["x"]), cnn["tuned_out"], rtol=1e-5, atol=1e-5)


def test_external_data_outside_model_directory_is_refused(cnn: dict, tmp_path: Path) -> None:
    model = onnx.load(str(cnn["dir"] / "base.onnx"))
    (tmp_path / "sub").mkdir()
    onnx.save_model(model, str(tmp_path / "sub" / "m.onnx"), save_as_external_data=True, location="w.bin", size_threshold=0)
    (tmp_path / "w.bin").write_bytes((tmp_path / "sub" / "w.bin").read_bytes())
    hostile = onnx.load(str(tmp_path / "sub" / "m.onnx"), load_external_data=False)
    for tensor in hostile.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../w.bin"  # a real file, but outside the model's directory
    (tmp_path / "sub" / "m.onnx").write_bytes(hostile.SerializeToString())
    from nnupdate.errors import InputError

    with pytest.raises(InputError, match="outside the model directory"):
        read_tensors(tmp_path / "sub" / "m.onnx")


@pytest.mark.parametrize("payload", [b"", b"not an onnx model at all \x00\x01", b"\x08\x07"])
def test_file_that_is_not_a_model(cnn: dict, tmp_path: Path, payload: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(payload)
    d = cnn["dir"]
    assert _run("encode", d / "base.pt", d / "tuned.pt", "-o", tmp_path / "u.nnu", "--codec", "raw") == 0
    capsys.readouterr()
    assert _run("apply", bad, tmp_path / "u.nnu", "-o", tmp_path / "out.onnx", "--name-map", "auto") == 1
    assert "not an ONNX model" in capsys.readouterr().err
    assert not (tmp_path / "out.onnx").exists()


def test_name_map_file_errors(block: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = block["dir"]
    assert _run("encode", d / "base.pt", d / "tuned.pt", "-o", tmp_path / "u.nnu", "--codec", "raw") == 0
    assert _run("apply", d / "base_folded.onnx", tmp_path / "u.nnu", "-o", tmp_path / "ok.onnx", "--name-map", "auto", "--save-name-map", tmp_path / "map.json") == 0
    good = json.loads((tmp_path / "map.json").read_text())

    def attempt(tensors: dict) -> str:
        (tmp_path / "edited.json").write_text(json.dumps({"format": "nnupdate-name-map/1", "tensors": tensors}))
        capsys.readouterr()
        code = _run("apply", d / "base_folded.onnx", tmp_path / "u.nnu", "-o", tmp_path / "bad.onnx", "--name-map", tmp_path / "edited.json")
        assert code != 0 and not (tmp_path / "bad.onnx").exists()
        return capsys.readouterr().err

    missing = {k: v for k, v in good["tensors"].items() if k != "attn.in_proj_weight"}
    assert "no entry for 'attn.in_proj_weight'" in attempt(missing)
    assert "both map to base tensor" in attempt({**good["tensors"], "ln1.bias": "ln1.weight"})
    assert "which the base does not have" in attempt({**good["tensors"], "head.bias": "no.such.tensor"})
    shape = attempt({**good["tensors"], "head.weight": "attn.out_proj.weight"})
    assert "head.weight" in shape and "[5, 16]" in shape
    (tmp_path / "edited.json").write_text("{not json")
    capsys.readouterr()
    assert _run("apply", d / "base_folded.onnx", tmp_path / "u.nnu", "-o", tmp_path / "bad.onnx", "--name-map", tmp_path / "edited.json") == 1
    assert "not valid JSON" in capsys.readouterr().err


def test_export_helper_records_name_map_metadata(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = Block().eval()
    example = torch.randn(2, 6, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stored = onnx_adapter.export(model, (example,), tmp_path / "b.onnx")
    assert stored["tensors"]["mlp.0.weight"]["transpose"] == [1, 0]
    info = onnx_adapter.graph_info(tmp_path / "b.onnx")
    assert info.name_map == stored["tensors"]
    # The metadata alone resolves the renamed tensors of an update without digests.
    torch.save(model.state_dict(), tmp_path / "b.pt")
    with torch.no_grad():
        model.mlp[0].weight.add_(0.01)
        model.attn.in_proj_weight.mul_(1.1)
        expected = model(example).numpy()
    torch.save(model.state_dict(), tmp_path / "t.pt")
    assert _run("encode", tmp_path / "b.pt", tmp_path / "t.pt", "-o", tmp_path / "u.nnu", "--codec", "raw", "--no-tensor-digests") == 0
    assert _run("apply", tmp_path / "b.onnx", tmp_path / "u.nnu", "-o", tmp_path / "t.onnx", "--name-map", "auto") == 0
    np.testing.assert_allclose(_ort(tmp_path / "t.onnx", example.numpy()), expected, rtol=1e-5, atol=1e-5)


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@given(cut=st.integers(0, 10**6), flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), max_size=4))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_damaged_onnx_files_read_or_refuse_cleanly(cnn: dict, tmp_path: Path, cut: int, flips: list) -> None:
    from nnupdate.errors import InputError

    data = bytearray((cnn["dir"] / "base.onnx").read_bytes())
    for pos, mask in flips:
        data[pos % len(data)] ^= mask
    data = data[: len(data) - cut % (len(data) // 2)]
    path = tmp_path / "damaged.onnx"
    path.write_bytes(bytes(data))
    try:
        tensors = read_tensors(path)
    except InputError:
        return
    assert all(isinstance(v, np.ndarray) for v in tensors.values())


def test_encode_across_formats_with_export_metadata(tmp_path: Path) -> None:
    """encode base.onnx tuned.pt and base.pt tuned.onnx, names aligned by the export's map."""
    torch.manual_seed(6)
    model = Block().eval()
    example = torch.randn(2, 6, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_adapter.export(model, (example,), tmp_path / "b.onnx")
        torch.save(model.state_dict(), tmp_path / "b.pt")
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
            expected = model(example).numpy()
        torch.save(model.state_dict(), tmp_path / "t.pt")
        onnx_adapter.export(model, (example,), tmp_path / "t.onnx")
    # ONNX base, PyTorch new: the update speaks ONNX names and applies without a map.
    assert _run("encode", tmp_path / "b.onnx", tmp_path / "t.pt", "-o", tmp_path / "u1.nnu", "--codec", "raw", "--name-map", "auto") == 0
    assert "onnx::MatMul" in " ".join(load(tmp_path / "u1.nnu").changes)
    assert _run("apply", tmp_path / "b.onnx", tmp_path / "u1.nnu", "-o", tmp_path / "o1.onnx") == 0
    np.testing.assert_allclose(_ort(tmp_path / "o1.onnx", example.numpy()), expected, rtol=1e-5, atol=1e-5)
    # PyTorch base, ONNX new: the update speaks torch names and rebuilds the tuned state dict.
    assert _run("encode", tmp_path / "b.pt", tmp_path / "t.onnx", "-o", tmp_path / "u2.nnu", "--codec", "raw", "--name-map", "auto") == 0
    assert _run("apply", tmp_path / "b.pt", tmp_path / "u2.nnu", "-o", tmp_path / "o2.pt") == 0
    rebuilt = torch.load(tmp_path / "o2.pt", weights_only=True)
    for name, value in model.state_dict().items():
        assert torch.equal(rebuilt[name], value), name


def test_bfloat16_initializers_round_trip(tmp_path: Path) -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    from onnx import TensorProto, helper, numpy_helper

    w = np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4).astype(ml_dtypes.bfloat16)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [3, 4])],
        [numpy_helper.from_array(w, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "b.onnx"))
    new = (w.astype(np.float32) + np.float32(0.25)).astype(ml_dtypes.bfloat16)
    onnx_adapter.write(tmp_path / "n.onnx", {"w": new}, like=tmp_path / "b.onnx")
    assert _run("encode", tmp_path / "b.onnx", tmp_path / "n.onnx", "-o", tmp_path / "u.nnu", "--codec", "raw") == 0
    assert _run("apply", tmp_path / "b.onnx", tmp_path / "u.nnu", "-o", tmp_path / "o.onnx") == 0
    out = read_tensors(tmp_path / "o.onnx")["w"]
    assert out.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(out.view(np.uint16), new.view(np.uint16))


SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.mark.slow
def test_resnet56_checkpoint_update_applied_in_onnxruntime(tmp_path: Path) -> None:
    """The shared ResNet-56 (350 tensors, BatchNorm, bottlenecks): torch update -> base .onnx -> onnxruntime."""
    checkpoint = SHARED / "data" / "resnet56_cifar100.pt"
    if not checkpoint.is_file():
        pytest.skip("../shared/data/resnet56_cifar100.pt is absent")
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    try:
        from workloads import build_resnet56
    finally:
        sys.path.pop(0)
    torch.manual_seed(0)
    model = build_resnet56()
    model.load_state_dict(torch.load(checkpoint, weights_only=True, map_location="cpu"))
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    torch.save(model.state_dict(), tmp_path / "base.pt")
    _export(model, x, tmp_path / "base.onnx", do_constant_folding=False)
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    opt.zero_grad()
    nn.functional.cross_entropy(model(torch.randn(8, 3, 32, 32)), torch.randint(0, 100, (8,))).backward()
    opt.step()
    model.eval()
    torch.save(model.state_dict(), tmp_path / "tuned.pt")
    assert _run("encode", tmp_path / "base.pt", tmp_path / "tuned.pt", "-o", tmp_path / "u.nnu", "--codec", "uniform:max_rel_error=0.01") == 0
    assert _run("apply", tmp_path / "base.onnx", tmp_path / "u.nnu", "-o", tmp_path / "tuned.onnx", "--name-map", "auto") == 0
    model.load_state_dict(base_state)
    apply_to_module(model, load(tmp_path / "u.nnu"))
    with torch.no_grad():
        expected = model(x).numpy()
    got = _ort(tmp_path / "tuned.onnx", x.numpy())
    assert np.abs(got - expected).max() <= 1e-5 * max(1.0, float(np.abs(expected).max())) * 10


def test_export_metadata_of_folded_model_never_drops_changes(cnn: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = SmallCNN().eval()
    model.load_state_dict(cnn["base_state"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stored = onnx_adapter.export(model, (torch.from_numpy(cnn["x"]),), tmp_path / "folded.onnx")  # BN fused
    assert "conv1.weight" not in stored["tensors"] and None not in stored["tensors"].values()
    d = cnn["dir"]
    assert _run("encode", d / "base.pt", d / "tuned.pt", "-o", tmp_path / "u.nnu", "--codec", "raw") == 0
    capsys.readouterr()
    assert _run("apply", tmp_path / "folded.onnx", tmp_path / "u.nnu", "-o", tmp_path / "o.onnx", "--name-map", "auto") == 1
    assert "folded into Conv" in capsys.readouterr().err
    # A hand-written map may not drop a change either.
    unused = {"bn1.num_batches_tracked": None, "bn2.num_batches_tracked": None}  # explicit in a FILE
    (tmp_path / "m.json").write_text(json.dumps({"format": "nnupdate-name-map/1", "tensors": {**unused, "fc.bias": None}}))
    assert _run("apply", d / "base.onnx", tmp_path / "u.nnu", "-o", tmp_path / "o.onnx", "--name-map", tmp_path / "m.json") == 1
    assert "may not silently drop a change" in capsys.readouterr().err
    assert not (tmp_path / "o.onnx").exists()
