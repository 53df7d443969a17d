"""TGRP groups: small float deltas coded together, decoded and applied per member."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnupdate
from nnupdate.codecs.presets import UniformCodec
from nnupdate.format import parse, read_index, read_tensor
from nnupdate.format.constants import TGRP
from nnupdate.update import GROUP_MAX_ELEMENTS


def _models(seed: int, shapes: dict[str, tuple[int, ...]]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    g = np.random.default_rng(seed)
    base = {n: g.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    new = {n: (v + 0.01 * g.standard_normal(v.shape)).astype(np.float32) for n, v in base.items()}
    return base, new


SHAPES = {
    "conv.weight": (8, 4, 3, 3),
    "conv.bias": (8,),
    "bn.weight": (8,),
    "bn.bias": (8,),
    "bn.running_mean": (8,),
    "fc.weight": (200, 100),
    "fc.bias": (200,),
}


def test_small_deltas_share_one_group_and_apply_per_member() -> None:
    base, new = _models(0, SHAPES)
    update = nnupdate.diff(base, new)
    data = update.encode("uniform:step=0.001")
    container = parse(data)
    groups = [r for r in container.tensors if r.members]
    assert len(groups) == 1
    names = set(groups[0].names)
    # small learned tensors grouped; the large weight and the running statistic are not
    assert {"conv.weight", "conv.bias", "bn.weight", "bn.bias", "fc.bias"} == names
    assert TGRP in data
    out = nnupdate.apply(base, nnupdate.decode(data))
    for name in new:
        assert out[name].shape == new[name].shape and out[name].dtype == new[name].dtype
        if name != "bn.running_mean":
            assert np.abs(out[name].astype(np.float64) - new[name]).max() <= 0.0005 + 1e-6


def test_grouping_saves_bytes_over_one_chunk_per_tensor() -> None:
    base, new = _models(1, {f"layer{i}.bias": (16,) for i in range(40)})
    update = nnupdate.diff(base, new)
    grouped = len(update.encode("uniform:step=0.001"))

    class Ungrouped(UniformCodec):
        groupable = False

    alone = len(nnupdate.encode_with_report(update, Ungrouped(step=0.001)).data)
    assert grouped < 0.6 * alone


def test_lossless_codec_never_groups_and_stays_exact() -> None:
    base, new = _models(2, SHAPES)
    data = nnupdate.diff(base, new).encode("raw")
    assert not any(r.members for r in parse(data).tensors)
    out = nnupdate.apply(base, nnupdate.decode(data))
    assert all(np.array_equal(out[n], new[n]) for n in new)


def test_members_found_through_the_index_and_inspect() -> None:
    base, new = _models(3, SHAPES)
    data = nnupdate.diff(base, new).encode("uniform:step=0.001")
    index = read_index(data)
    assert set(index) == set(new)
    record = read_tensor(data, "bn.bias")
    assert "bn.bias" in record.names and record.members
    info = nnupdate.inspect(data).to_json()
    rows = {t["name"]: t for t in info["tensors"]}
    assert rows["bn.bias"]["group"] is not None and rows["fc.weight"]["group"] is None
    group_rows = [t for t in info["tensors"] if t["group"] == rows["bn.bias"]["group"]]
    assert sum(t["payload_bytes"] for t in group_rows) <= len(record.payload)


def test_float16_and_float32_form_separate_groups() -> None:
    g = np.random.default_rng(4)
    base = {f"a{i}": g.standard_normal(10).astype(np.float32) for i in range(3)}
    base |= {f"h{i}": g.standard_normal(10).astype(np.float16) for i in range(3)}
    new = {n: (v + 0.05).astype(v.dtype) for n, v in base.items()}
    container = parse(nnupdate.diff(base, new).encode("uniform:step=0.01"))
    groups = [r for r in container.tensors if r.members]
    assert sorted(r.dtype for r in groups) == ["float16", "float32"]


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(0, GROUP_MAX_ELEMENTS // 64), min_size=2, max_size=6),
    codec=st.sampled_from(["uniform:step=0.01", "fp16", "qsgd", "sbc:fraction=0.1", "rd:step=0.01"]),
)
def test_group_round_trip_preserves_names_shapes_and_dtypes(sizes: list[int], codec: str) -> None:
    base, new = _models(5, {f"t{i}": (n,) for i, n in enumerate(sizes)})
    out = nnupdate.apply(base, nnupdate.decode(nnupdate.diff(base, new).encode(codec)))
    assert set(out) == set(new)
    for name, value in new.items():
        assert out[name].shape == value.shape and out[name].dtype == value.dtype


def test_truncated_group_is_refused_with_a_format_error() -> None:
    base, new = _models(6, SHAPES)
    data = nnupdate.diff(base, new).encode("uniform:step=0.001")
    start = data.index(TGRP) - 8
    for cut in range(start, start + 60, 3):
        with pytest.raises(nnupdate.NNUpdateError):
            nnupdate.decode(data[:cut])


def test_running_statistics_of_similar_scale_share_a_group_each_within_one_percent() -> None:
    g = np.random.default_rng(4)
    shapes = {f"l{i}.bn.running_{kind}": (16 * (1 + i % 2),) for i in range(6) for kind in ("mean", "var")}
    shapes["fc.weight"] = (64, 32)
    base = {n: g.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    scale = {n: (0.3 if "mean" in n else 2.0) for n in shapes}  # two scales far apart
    new = {n: (v + scale.get(n, 0.01) * g.standard_normal(v.shape)).astype(np.float32) for n, v in base.items()}
    report = nnupdate.encode_with_report(nnupdate.diff(base, new), "uniform")
    groups = [r for r in parse(report.data).tensors if r.members]
    statistic_groups = [r for r in groups if all("running" in m.name for m in r.members)]
    assert statistic_groups and sum(len(r.members) for r in statistic_groups) >= 6
    assert all(m.role == nnupdate.Role.STATISTIC for r in statistic_groups for m in r.members)
    out = nnupdate.apply(base, nnupdate.decode(report.data))
    for name in shapes:
        if "running" in name:  # every member keeps its own 1% target under the shared step
            delta = new[name].astype(np.float64) - base[name]
            err = out[name].astype(np.float64) - new[name]
            assert np.linalg.norm(err) <= 0.01 * np.linalg.norm(delta) * 1.001 + 1e-6
    assert report.relative_error <= 0.05  # statistics stay out of the weights' error


def test_adaptive_codecs_reorder_small_tensors_only_across_scales() -> None:
    """ctx orders small tensors quietest first, but by factor-4 scale classes and stably:
    same-scale members keep the update's order, so the zstd-packed member table of a model
    with thousands of similar small tensors stays as small as uniform's."""
    from nnupdate.codecs.rdoq import CtxCodec
    from nnupdate.update import _plan_groups, _scale_class

    rng = np.random.default_rng(0)
    base = {f"layer{i}.b": np.zeros(10, np.float32) for i in range(3000)}
    base["loud.b"] = np.zeros(10, np.float32)
    new = {k: (rng.normal(size=10) * 0.01).astype(np.float32) for k in base}
    new["loud.b"] = np.full(10, 5.0, np.float32)  # 500x the others: belongs at the end
    update = nnupdate.diff(base, new)
    members = [m for group in _plan_groups(update, CtxCodec(step=1e-3)).values() for m in group]
    assert members[-1].name == "loud.b"
    classes = [_scale_class(m) for m in members]
    assert classes == sorted(classes) and len(set(classes[:-1])) <= 3  # 4x classes span the spread
    for c in set(classes):  # within a class, the update's order
        order = [int(m.name[5:-2]) for m, k in zip(members, classes) if k == c and m.name != "loud.b"]
        assert order == sorted(order)
    ctx = nnupdate.encode_with_report(update, "ctx:max_rel_error=0.05")
    uniform = nnupdate.encode_with_report(update, "uniform:max_rel_error=0.05")
    assert len(ctx.data) < len(uniform.data)


def test_a_group_that_cannot_be_coded_names_its_members() -> None:
    """A step of 1e-9 cannot reach a delta of 1e30 in int32 levels: the error says which
    small tensors were coded as the group, not only the group's internal name."""
    base, new = _models(3, {"a.bias": (8,), "b.bias": (8,), "c.bias": (8,)})
    new["b.bias"][2] += np.float32(1e30)
    with pytest.raises(nnupdate.CodecError, match=r"group of 3 small tensors: a\.bias, b\.bias, c\.bias"):
        nnupdate.encode_with_report(nnupdate.diff(base, new), "uniform:step=1e-9")


def test_fp16_stores_a_delta_beyond_half_precision_in_its_own_type() -> None:
    """One delta of 1e30 used to fail the whole fp16 update; that tensor (here its group)
    is now stored in float32, exactly, and the rest keeps the float16 cast."""
    base, new = _models(4, {"a.bias": (8,), "b.bias": (8,), "fc.weight": (64, 80)})
    new["b.bias"][2] += np.float32(1e30)
    report = nnupdate.encode_with_report(nnupdate.diff(base, new), "fp16")
    pipelines = {t.name.split(" (")[0]: t.pipeline for t in report.tensors}
    assert pipelines["fc.weight"] == "raw(dtype=float16)"
    assert pipelines["group of 2"] == "raw(dtype=float32)"
    out = nnupdate.apply(base, nnupdate.decode(report.data))
    np.testing.assert_array_equal(out["b.bias"], new["b.bias"])
