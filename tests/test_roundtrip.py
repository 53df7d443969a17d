"""Round-trip properties: lossless stages exact, lossy ones within their declared bound."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nnupdate
from nnupdate import dtypes
from nnupdate.codecs.base import ArraySpec
from nnupdate.codecs.rans import MAX_ALPHABET, Rans
from nnupdate.codecs.raw import Raw
from nnupdate.errors import CodecError, FormatError
from nnupdate.fingerprint import storage_view
from nnupdate.format import Combine

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

INT_TYPES = ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "bool"]
FLOAT_TYPES = ["float16", "float32", "float64"]

names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20
).filter(lambda s: len(s.encode("utf-8")) <= 4096)
shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)


def _arrays(dtype: str) -> st.SearchStrategy[np.ndarray]:
    elements = None
    if dtype in FLOAT_TYPES:
        elements = st.floats(width=int(dtype[5:]), allow_nan=False, allow_infinity=False)
    return hnp.arrays(np.dtype(dtype), shapes, elements=elements)


def _bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and storage_view(a).tobytes() == storage_view(b).tobytes()


@st.composite
def models(draw: st.DrawFn) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(base, new) with changed, unchanged, added, removed and retyped tensors."""
    tensor_names = draw(st.lists(names, min_size=1, max_size=5, unique=True))
    base, new = {}, {}
    for name in tensor_names:
        dtype = draw(st.sampled_from(INT_TYPES + FLOAT_TYPES))
        b = draw(_arrays(dtype))
        fate = draw(st.sampled_from(["change", "keep", "add", "remove", "retype"]))
        if fate in ("change", "keep", "remove", "retype"):
            base[name] = b
        if fate == "change":
            new[name] = draw(hnp.arrays(b.dtype, b.shape, elements=None if dtype not in FLOAT_TYPES else st.floats(width=int(dtype[5:]), allow_nan=False, allow_infinity=False)))
        elif fate in ("keep", "add"):
            new[name] = b.copy()
        elif fate == "retype":
            with np.errstate(over="ignore"):  # float64 -> float32 may overflow to inf: a valid retyped tensor
                new[name] = b.astype(np.float64) if dtype != "float64" else b.astype(np.float32)
    return base, new


@FAST
@given(models())
def test_lossless_codec_reproduces_new_bit_exactly(pair: tuple[dict, dict]) -> None:
    base, new = pair
    update = nnupdate.diff(base, new, metadata={"ü": "ß"})
    data = update.encode("raw")
    decoded = nnupdate.decode(data)
    result = nnupdate.apply(base, decoded)
    assert set(result) == set(new)
    for name in new:
        assert _bits_equal(result[name], new[name]), name
    assert decoded.metadata == {"ü": "ß"}


@FAST
@given(st.sampled_from(FLOAT_TYPES), st.integers(1, 2000), st.floats(1e-6, 1.0), st.booleans(), st.integers(0, 2**31 - 1))
def test_uniform_error_within_declared_bound(dtype: str, n: int, step: float, stochastic: bool, seed: int) -> None:
    g = np.random.default_rng(seed)
    base = g.standard_normal(n).astype(dtype)
    new = (base.astype(np.float64) + g.laplace(scale=0.01, size=n)).astype(dtype)
    rounding = "stochastic" if stochastic else "nearest"
    update = nnupdate.diff({"w": base}, {"w": new})
    assume(update.changes["w"].combine == Combine.ADD)  # tiny float16 changes may round away: KEEP
    delta = update.changes["w"].data
    assume(np.abs(delta).max() / step < 2**30)
    decoded = nnupdate.decode(update.encode(f"uniform:step={step},rounding={rounding},seed={seed % 1000}"))
    if decoded.changes["w"].combine != Combine.ADD:  # levels would cost more than the exact code
        assert np.array_equal(nnupdate.apply({"w": base}, decoded)["w"].view(np.uint8), new.view(np.uint8))
        return
    d = dtypes.to_float64(decoded.changes["w"].data, dtype)
    # Declared bound: step/2 (nearest) or step (stochastic), plus one rounding to the tensor type.
    bound = (step if stochastic else step / 2) + np.abs(d) * float(np.finfo(dtype).eps) + float(np.finfo(dtype).smallest_subnormal)
    assert np.all(np.abs(d - delta) <= bound)


def test_max_rel_error_target_met_on_measured_decode() -> None:
    g = np.random.default_rng(1)
    base = {"a": g.standard_normal((64, 64)).astype(np.float32), "b": g.standard_normal(100).astype(np.float32)}
    new = {k: v + (0.01 * g.standard_t(3, size=v.shape)).astype(np.float32) for k, v in base.items()}
    for target in (0.01, 0.05, 0.2):
        report = nnupdate.encode_with_report(nnupdate.diff(base, new), f"uniform:max_rel_error={target}")
        assert 0 < report.relative_error <= target * 1.001
        applied = nnupdate.apply(base, nnupdate.decode(report.data))
        err = np.sqrt(sum(np.sum((applied[k].astype(np.float64) - new[k]) ** 2) for k in new))
        norm = np.sqrt(sum(np.sum((new[k].astype(np.float64) - base[k]) ** 2) for k in new))
        assert err / norm <= target * 1.01  # includes the float32 rounding of base + delta


@pytest.mark.parametrize("codec,tol", [("fp16", 1e-3), ("bf16", 8e-3), ("zstd", 1e-7)])
def test_cast_codecs(codec: str, tol: float) -> None:
    g = np.random.default_rng(2)
    base = {"w": g.standard_normal(500).astype(np.float32)}
    new = {"w": base["w"] + (0.01 * g.standard_normal(500)).astype(np.float32)}
    report = nnupdate.encode_with_report(nnupdate.diff(base, new), codec)
    assert report.relative_error <= tol


def test_fp16_never_turns_a_finite_delta_into_infinity() -> None:
    """A narrowing cast must not write inf for a finite delta (silent garbage on apply): the
    float16 cast refuses it, and the fp16 codec then stores that tensor in its own type."""
    base = {"w": np.zeros(3, dtype=np.float32)}
    new = {"w": np.array([1e30, 1.0, -2.0], dtype=np.float32)}
    with pytest.raises(CodecError, match="overflow float16"):
        Raw("float16").encode(new["w"].astype(np.float64), ArraySpec((3,), "float32"))
    out = nnupdate.apply(base, nnupdate.decode(nnupdate.diff(base, new).encode("fp16")))
    np.testing.assert_array_equal(out["w"], new["w"])
    out = nnupdate.apply(base, nnupdate.decode(nnupdate.diff(base, new).encode("bf16")))  # bf16 has the range
    assert np.all(np.isfinite(out["w"]))


@pytest.mark.parametrize("codec", ["uniform", "ctx", "ctx:quant=fast", "rd", "m22", "topk", "fp16", "zstd"])
def test_changes_without_a_finite_delta_are_stored_bit_exactly(codec: str) -> None:
    """A -inf attention mask that grew, a NaN that stays while its neighbours move, a weight
    that overflowed float16: no finite delta exists, so diff stores the bit patterns' XOR
    and every codec codes it losslessly; the other tensors stay lossy at their target,
    and numpy's invalid-value warnings do not leak."""
    g = np.random.default_rng(4)
    w = g.standard_normal((48, 40)).astype(np.float32)
    mask = np.triu(np.full((12, 12), -np.inf, np.float32), 1)
    grown = mask.copy()
    grown[6, 2] = -np.inf
    half = w[:6, :6].astype(np.float16)
    blown = half.copy()
    blown[1, 1] = np.inf
    base = {"w": w, "mask": mask, "stats": np.array([1.0, np.nan, 2.0], np.float32), "half": half}
    new = {
        "w": w + (0.01 * g.standard_normal(w.shape)).astype(np.float32),
        "mask": grown,
        "stats": np.array([1.5, np.nan, 2.0], np.float32),
        "half": blown,
    }
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        update = nnupdate.diff(base, new)
        assert [n for n, c in update.changes.items() if c.combine == Combine.XOR] == ["mask", "stats", "half"]
        report = nnupdate.encode_with_report(update, codec)
        out = nnupdate.apply(base, nnupdate.decode(report.data))
    for name in ("mask", "stats", "half"):
        assert storage_view(out[name]).tobytes() == storage_view(new[name]).tobytes()
    if codec in ("uniform", "ctx", "ctx:quant=fast"):
        assert 0 < report.relative_error <= 0.05  # the default target, on the finite tensor


# ----------------------------------------------------------------------------- rANS


def _rans_roundtrip(values: np.ndarray, lanes: int = 0) -> bytes:
    """Round trip through rans; ``lanes`` 0 = the encoder's own choice, else forced."""
    spec = ArraySpec(values.shape, dtypes.name_of_array(values))
    payload, stage = (Rans(lanes=lanes, auto_lanes=0) if lanes else Rans()).encode(values, spec)
    if lanes:
        assert stage.lanes == lanes
    out = Rans.from_params(stage.params()).decode(payload, spec)  # as a reader rebuilds it
    assert out.dtype == values.dtype and out.shape == values.shape
    assert out.tobytes() == values.tobytes()
    return payload


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(INT_TYPES).flatmap(lambda t: hnp.arrays(np.dtype(t), hnp.array_shapes(min_dims=0, max_dims=2, max_side=300))))
def test_rans_exact_on_arbitrary_integer_streams(values: np.ndarray) -> None:
    _rans_roundtrip(values)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=200), st.integers(0, 5000))
def test_rans_int64_extremes_and_escapes(extra: list[int], bulk: int) -> None:
    values = np.concatenate([np.random.default_rng(bulk).integers(-3, 3, size=bulk), np.array(extra, dtype=np.int64)])
    _rans_roundtrip(values.astype(np.int64))


def test_rans_special_streams() -> None:
    assert _rans_roundtrip(np.zeros(0, dtype=np.int32)) == b""
    _rans_roundtrip(np.full(10000, 7, dtype=np.int32))  # single symbol, no stream
    _rans_roundtrip(np.array([5], dtype=np.int64))
    _rans_roundtrip(np.arange(3 * MAX_ALPHABET, dtype=np.int32))  # flat, wider than the window
    _rans_roundtrip(np.array([np.iinfo(np.int64).max] * 5 + [np.iinfo(np.int64).max - 1], dtype=np.int64))
    _rans_roundtrip(np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max] * 3, dtype=np.int64))
    _rans_roundtrip(np.array([2**64 - 1, 0, 2**63], dtype=np.uint64))
    g = np.random.default_rng(0)
    _rans_roundtrip(g.integers(-(2**31), 2**31 - 1, size=5000, dtype=np.int32))  # huge alphabet: escapes


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(INT_TYPES).flatmap(lambda t: hnp.arrays(np.dtype(t), hnp.array_shapes(min_dims=0, max_dims=2, max_side=120))),
    st.integers(1, 32),
)
def test_rans_lanes_exact_on_arbitrary_integer_streams(values: np.ndarray, lanes: int) -> None:
    _rans_roundtrip(values, lanes)


def test_rans_lanes_special_streams() -> None:
    g = np.random.default_rng(5)
    laplace = np.rint(g.laplace(scale=4.0, size=10_000)).astype(np.int32)
    for lanes in (2, 3, 8, 32):
        _rans_roundtrip(laplace, lanes)
        _rans_roundtrip(laplace[: lanes - 1], lanes)  # fewer symbols than lanes
    _rans_roundtrip(np.concatenate([laplace, [2**31 - 1, -(2**31)]]).astype(np.int32), 4)  # escapes
    _rans_roundtrip((np.int64(1) << 45) + laplace.astype(np.int64), 4)  # window beyond int32
    _rans_roundtrip(laplace.astype(np.int16), 4)
    _rans_roundtrip(np.full(5000, 3, dtype=np.int32), 4)  # single symbol: no states at all


def test_rans_encoder_picks_lanes_by_size() -> None:
    g = np.random.default_rng(6)
    for n, lanes in ((1000, 1), (10_000, 8), (70_000, 8)):
        values = np.rint(g.laplace(scale=4.0, size=n)).astype(np.int32)
        _, stage = Rans().encode(values, ArraySpec((n,), "int32"))
        assert stage.lanes == lanes
        assert stage.params() == ({} if lanes == 1 else {"lanes": lanes})


def test_rans_lanes_corruption_is_refused() -> None:
    values = np.rint(np.random.default_rng(7).laplace(scale=4.0, size=3000)).astype(np.int32)
    spec = ArraySpec(values.shape, "int32")
    payload, stage = Rans(lanes=4, auto_lanes=0).encode(values, spec)
    for lanes in (1, 2, 3, 5, 8):  # read with the wrong lane count
        with pytest.raises(CodecError):
            Rans(lanes=lanes).decode(payload, spec)
    bad = bytearray(payload)
    bad[-5] ^= 0x41
    with pytest.raises(CodecError):
        stage.decode(bytes(bad), spec)
    with pytest.raises(FormatError):
        Rans.from_params({"lanes": 0})
    with pytest.raises(FormatError):
        Rans.from_params({"lanes": 33})


def test_rans_rate_near_entropy() -> None:
    g = np.random.default_rng(3)
    symbols = np.clip(np.rint(g.laplace(scale=3.0, size=200_000)), -200, 200).astype(np.int32)
    payload = _rans_roundtrip(symbols)
    _, counts = np.unique(symbols, return_counts=True)
    p = counts / counts.sum()
    entropy_bytes = float(-(p * np.log2(p)).sum()) * symbols.size / 8
    assert len(payload) < entropy_bytes * 1.01 + 600  # model header + final state


# ----------------------------------------------------------------------------- stages and shapes


@FAST
@given(st.sampled_from(["float16", "bfloat16"]), hnp.arrays(np.float32, shapes, elements=st.floats(width=32)))
@example("bfloat16", np.array(3.3961775e38, dtype=np.float32))  # a 0-d array that overflows
@example("float16", np.array([1.0, 7e4, -np.inf], dtype=np.float32))
def test_raw_cast_rounds_to_nearest(storage: str, values: np.ndarray) -> None:
    """IEEE round-to-nearest into the narrow type, except that a finite value the cast
    would turn into an infinity is refused instead of stored."""
    spec = ArraySpec(values.shape, "float32")
    wide = values.astype(np.float64)
    overflows = np.isinf(dtypes.to_float64(dtypes.from_float64(wide, storage), storage)) & np.isfinite(wide)
    if overflows.any():
        with pytest.raises(CodecError, match="overflow"):
            Raw(storage).encode(wide, spec)
        return
    payload, stage = Raw(storage).encode(wide, spec)
    out = stage.decode(payload, spec)
    expected = dtypes.from_float64(values.astype(np.float64), storage)
    back = dtypes.to_float64(expected, storage).astype(np.float32)
    assert out.tobytes() == back.tobytes()


@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (2**40, 0), (1,) * 10])
@pytest.mark.parametrize("codec", ["raw", "uniform:step=0.01", "zstd", "fp16", "bf16"])
def test_degenerate_shapes(shape: tuple[int, ...], codec: str) -> None:
    size = int(np.prod(shape))
    base = {"x": np.zeros(shape, np.float32), "n": np.array(3, dtype=np.int64)}
    new = {"x": np.full(shape, 0.5, np.float32) if size else np.zeros(shape, np.float32), "n": np.array(4, dtype=np.int64)}
    result = nnupdate.apply(base, nnupdate.decode(nnupdate.diff(base, new).encode(codec)))
    assert result["x"].shape == shape and result["n"].shape == ()
    assert np.array_equal(result["x"], new["x"]) and int(result["n"]) == 4


def test_bool_and_bfloat16_tensors() -> None:
    base = {"mask": np.array([True, False, True]), "h": np.array([0x3F80, 0x4000], dtype=np.uint16)}
    new = {"mask": np.array([False, False, True]), "h": np.array([0x3F80, 0x4040], dtype=np.uint16)}
    update = nnupdate.diff(base, new)
    assert update.changes["mask"].combine == Combine.XOR
    result = nnupdate.apply(base, nnupdate.decode(update.encode("raw")))
    assert result["mask"].tolist() == [False, False, True]
    assert result["h"].tolist() == [0x3F80, 0x4040]


def test_wrong_base_refused_and_force() -> None:
    base = {"w": np.zeros(4, np.float32)}
    update = nnupdate.decode(nnupdate.diff(base, {"w": np.ones(4, np.float32)}).encode("raw"))
    with pytest.raises(nnupdate.BaseMismatchError):
        nnupdate.apply({"w": np.full(4, 2.0, np.float32)}, update)
    with pytest.raises(nnupdate.BaseMismatchError):
        nnupdate.apply({}, update)
    forced = nnupdate.apply({"w": np.full(4, 2.0, np.float32)}, update, force=True)
    assert forced["w"].dtype == np.float32
    with pytest.raises(nnupdate.ShapeMismatchError):
        nnupdate.apply({"w": np.zeros(5, np.float32)}, update, force=True)


def test_save_load_atomic(tmp_path) -> None:  # type: ignore[no-untyped-def]
    update = nnupdate.full({"a": np.arange(5, dtype=np.int16)})
    path = tmp_path / "u.nnu"
    n = nnupdate.save(path, update, "raw")
    assert path.stat().st_size == n and path.stat().st_mode & 0o777 != 0o600
    assert nnupdate.load(path).changes["a"].data.tolist() == [0, 1, 2, 3, 4]
    assert [p.name for p in tmp_path.iterdir()] == ["u.nnu"]  # no temp file left behind
    info = nnupdate.inspect(path)
    assert info.kind == "full" and info.tensors[0].name == "a"


def test_atomic_path_replaces_only_on_success(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A writer that wants a file name gets a temporary one: a failure leaves the old file
    and no temporary behind; a success gets a plain file's mode even when the writer
    replaced the temporary file instead of writing into it (safetensors does)."""
    import os

    from nnupdate.io import atomic_path

    path = tmp_path / "model.safetensors"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
    fresh = tmp_path / "fresh.bin"
    with atomic_path(fresh) as tmp:
        os.unlink(tmp)  # a writer that replaces the file, private mode and all
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY, 0o600)
        os.write(fd, b"new")
        os.close(fd)
    assert fresh.read_bytes() == b"new" and fresh.stat().st_mode & 0o777 != 0o600


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), max_size=300))
def test_vectorized_varints_match_the_scalar_ones(values: list[int]) -> None:
    from nnupdate.codecs.varint import Reader, uvarint_bytes, write_uvarint

    scalar = bytearray()
    for v in values:
        write_uvarint(scalar, v)
    assert uvarint_bytes(np.array(values, dtype=np.uint64)) == bytes(scalar)
    reader = Reader(bytes(scalar) + b"\x01")
    assert reader.uvarints(len(values)).tolist() == values and reader.remaining == 1


@pytest.mark.parametrize("codec", ["uniform", "ctx", "fp16", "bf16", "raw"])
def test_bfloat16_scalar_keeps_its_shape(codec: str) -> None:
    """A 0-d bfloat16 tensor (alone or in a TGRP group) comes back 0-d: the float32 ->
    bfloat16 rounding used to return shape (1,), so apply changed the model's shapes and
    the fp16 cast refused the tensor."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    g = np.random.default_rng(0)
    base = {"s": np.array(1.5, np.float32).astype(ml_dtypes.bfloat16), "v": g.standard_normal(16).astype(ml_dtypes.bfloat16)}
    new = {"s": np.array(1.625, np.float32).astype(ml_dtypes.bfloat16), "v": (base["v"].astype(np.float32) + 0.1).astype(ml_dtypes.bfloat16)}
    out = nnupdate.apply(base, nnupdate.decode(nnupdate.diff(base, new).encode(codec)))
    assert {k: v.shape for k, v in out.items()} == {"s": (), "v": (16,)}


@pytest.mark.parametrize("codec", ["raw", "raw:combine=xor", "uniform", "ctx"])
def test_apply_returns_bfloat16_typed_and_updates_chain(codec: str) -> None:
    """bfloat16 comes back as ml_dtypes.bfloat16 from every combine (ADD, XOR, ULP,
    REPLACE, KEEP): as uint16 bits it was loaded by value into a bfloat16 model
    (silently wrong weights) and refused as the base of the next round's update."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bf = ml_dtypes.bfloat16
    g = np.random.default_rng(3)
    w0 = g.standard_normal((8, 16)).astype(bf)
    base = {"w": w0, "same": np.ones(3, bf), "gone": np.zeros(2, bf), "inf": np.array([1.0, 2.0], bf)}
    step = {"w": (w0.astype(np.float32) + 0.01 * g.standard_normal((8, 16))).astype(bf), "same": base["same"],
            "added": np.array([0.5, -0.25], bf), "inf": np.array([np.inf, 2.0], bf)}
    first = nnupdate.apply(base, nnupdate.decode(nnupdate.diff(base, step).encode(codec)))
    assert {k: v.dtype for k, v in first.items()} == {k: bf for k in ("w", "same", "added", "inf")}
    assert first["added"].astype(np.float32).tolist() == [0.5, -0.25] and np.isinf(first["inf"][0].astype(np.float32))
    later = {**first, "w": (first["w"].astype(np.float32) * 1.01).astype(bf)}
    second = nnupdate.apply(first, nnupdate.decode(nnupdate.diff(first, later).encode(codec)))
    assert second["w"].dtype == bf
    error = np.linalg.norm(second["w"].astype(np.float64) - later["w"].astype(np.float64))
    assert error <= 0.06 * np.linalg.norm(later["w"].astype(np.float64) - first["w"].astype(np.float64))


def test_torch_bfloat16_model_gets_the_applied_values() -> None:
    torch = pytest.importorskip("torch")
    from nnupdate.adapters import torch as adapter

    model = torch.nn.Linear(6, 4).to(torch.bfloat16)
    base = adapter.from_module(model)
    new = {k: (v.astype(np.float32) + 0.125).astype(v.dtype) for k, v in base.items()}
    applied = nnupdate.apply(base, nnupdate.decode(nnupdate.diff(base, new).encode("raw")))
    model.load_state_dict(adapter.to_state_dict(applied))
    assert torch.equal(model.weight.float(), torch.from_numpy(new["weight"].astype(np.float32)))


LOSSY = ["uniform", "ctx", "ctx:quant=fast", "rd", "m22", "qsgd", "sbc", "topk", "uniform:max_rel_error=0.01"]


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from(["float32", "float16", "bfloat16", "float64"]), st.sampled_from([1e-1, 1e-3, 1e-6]))
def test_reported_error_is_the_applied_models(seed: int, dtype: str, scale: float) -> None:
    """Random small models (a layer, a bias, a scalar, in one float type, deltas from 10%
    to a millionth of the weights): for every lossy codec the error it reports is
    ||apply(base, u) - new|| / ||new - base||, rounding to the type included."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    kind = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    g = np.random.default_rng(seed)
    shapes = {"layer": (int(g.integers(1, 40)), int(g.integers(1, 40))), "bias": (int(g.integers(1, 30)),), "scale": ()}
    base = {k: g.standard_normal(s).astype(kind) for k, s in shapes.items()}
    new = {k: (v.astype(np.float64) + scale * g.standard_normal(v.shape)).astype(kind) for k, v in base.items()}
    update = nnupdate.diff(base, new)
    as64 = {k: v.astype(np.float64) for k, v in new.items()}
    changed = [k for k, c in update.changes.items() if c.combine == Combine.ADD]
    norm = sum(float(np.sum((as64[k] - base[k].astype(np.float64)) ** 2)) for k in changed)
    assume(norm > 0)
    for codec in LOSSY:
        report = nnupdate.encode_with_report(update, codec)
        applied = nnupdate.apply(base, nnupdate.decode(report.data))
        got = {k: dtypes.to_float64(np.asarray(applied[k]).view(np.uint16), "bfloat16") if dtype == "bfloat16" else applied[k].astype(np.float64) for k in changed}
        actual = np.sqrt(sum(float(np.sum((got[k] - as64[k]) ** 2)) for k in changed) / norm)
        assert report.relative_error == pytest.approx(actual, rel=1e-4, abs=1e-9), codec  # float32 skips a rounding below 5e-5
