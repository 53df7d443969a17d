"""The ``lpc`` stage (spec/CONTEXT.md §7): an independent pure-Python implementation
written from the spec is checked against the kernel, bit for bit, in both directions;
round trips are exact; bad parameters and overflowing values are refused."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nnupdate.codecs.base import ArraySpec
from nnupdate.codecs.context import Context
from nnupdate.codecs.lpc import LinearPrediction, block_starts, pack_blocks
from nnupdate.errors import CodecError, FormatError, NNUpdateError


def spec_lpc(values: list[int], rows: int, rowlen: int, order: int, blocks: list[int], forward: bool) -> list[int]:
    """§7 as written: Python floats are binary64 with every operation rounded once."""
    width = min(order, rowlen)
    out = [0] * (rows * rowlen)
    levels = values if forward else out  # the levels: given (encoder) or decoded so far
    first = 0
    for count in blocks or [rows]:
        fac: list[list[float]] = []
        dia: list[float] = []
        for t in range(count):
            base = (first + t) * rowlen
            if t < 4:
                out[base : base + rowlen] = values[base : base + rowlen]
                continue
            if t == 4:
                energy = 0.0
                for i in range(first * rowlen, base):
                    v = float(levels[i])
                    energy = energy + v * v
                delta = 1.0 + 16.0 * energy / float(rowlen)
                dia = [delta] * width
                fac = [[0.0] * rowlen for _ in range(width)]
                for u in range(4):
                    spec_update(levels[(first + u) * rowlen : (first + u + 1) * rowlen], fac, dia)
            acc = [0.0] * rowlen
            for j in range(rowlen):
                p = acc[j]
                pred = round(p) if abs(p) <= 2.0**31 else 0  # round(): ties to even
                x = values[base + j] if forward else values[base + j] + pred
                out[base + j] = x - pred if forward else x
                assert -(2**31) <= out[base + j] < 2**31
                if j < width:
                    e = float(x) - p
                    for i in range(j + 1, rowlen):
                        acc[i] = acc[i] + fac[j][i] * e
            spec_update(levels[base : base + rowlen], fac, dia)
        first += count
    return out


def spec_update(row: list[int], fac: list[list[float]], dia: list[float]) -> None:
    """``update(x)`` of §7: the rank-one update of the factor, on its first W columns."""
    w = [float(v) for v in row]
    a = 1.0
    for j in range(len(dia)):
        p = w[j]
        d = dia[j] + a * p * p
        b = p * a / d
        a = a * dia[j] / d
        dia[j] = d
        for i in range(j + 1, len(w)):
            w[i] = w[i] - p * fac[j][i]
            fac[j][i] = fac[j][i] + b * w[i]


@st.composite
def matrices(draw: st.DrawFn) -> tuple[np.ndarray, int, list[int]]:
    """Integer matrices with row structure (a few shared directions plus noise), or plain
    noise, or huge values; an order and a block split of the rows."""
    rows = draw(st.integers(1, 14))
    rowlen = draw(st.integers(1, 9))
    seed = draw(st.integers(0, 2**32 - 1))
    kind = draw(st.sampled_from(["structured", "noise", "huge", "sparse"]))
    rng = np.random.default_rng(seed)
    if kind == "structured":
        basis = rng.normal(size=(2, rowlen)) * 20
        x = rng.normal(size=(rows, 2)) @ basis + rng.normal(size=(rows, rowlen))
    elif kind == "noise":
        x = rng.laplace(size=(rows, rowlen)) * 5
    elif kind == "huge":
        x = rng.normal(size=(rows, rowlen)) * 2.0**28
    else:
        x = rng.normal(size=(rows, rowlen)) * (rng.random((rows, rowlen)) < 0.1) * 8
    levels = np.clip(np.rint(x), -(2**30), 2**30).astype(np.int64)
    order = draw(st.integers(1, 12))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, rows - 1)), max_size=3))) if rows > 1 else []
    bounds = [0, *cuts, rows]
    blocks = [b - a for a, b in zip(bounds, bounds[1:]) if b > a]
    return levels.reshape(rows, rowlen), order, blocks


def spec_planes(
    values: list[int], rows: int, rowlen: int, order: int, blocks: list[int], planes: int, forward: bool, columns: int = 0
) -> list[int]:
    """§7's planes (plane k of every row as its own matrix) and columns (each block of it
    transposed), put back in place."""
    width = rowlen // planes
    out = [0] * len(values)
    for k in range(planes):
        if not columns:
            index = [t * rowlen + k * width + i for t in range(rows) for i in range(width)]
            for at, v in zip(index, spec_lpc([values[i] for i in index], rows, width, order, blocks, forward)):
                out[at] = v
            continue
        first = 0
        for count in blocks or [rows]:  # block rows first..first+count-1, read column by column
            index = [(first + t) * rowlen + k * width + i for i in range(width) for t in range(count)]
            for at, v in zip(index, spec_lpc([values[i] for i in index], width, count, order, [], forward)):
                out[at] = v
            first += count
    return out


@settings(max_examples=200, deadline=None)
@given(matrices(), st.sampled_from([1, 1, 2, 3]), st.integers(0, 1))
def test_kernel_matches_the_spec_both_ways(case: tuple[np.ndarray, int, list[int]], planes: int, columns: int) -> None:
    levels, order, blocks = case
    levels = np.repeat(levels, planes, axis=1) + np.arange(planes * levels.shape[1]) % 3  # planes alike, not equal
    rows, rowlen = levels.shape
    stage = LinearPrediction(order=order, blocks=pack_blocks(blocks), planes=planes, columns=columns)
    spec = ArraySpec(levels.shape, "int32")
    residuals, resolved = stage.encode(levels, spec)
    flat = [int(v) for v in levels.reshape(-1)]
    expected = spec_planes(flat, rows, rowlen, order, blocks, planes, True, columns)
    assert residuals.reshape(-1).tolist() == expected
    assert resolved.decode(residuals, spec).reshape(-1).tolist() == flat
    assert spec_planes(expected, rows, rowlen, order, blocks, planes, False, columns) == flat


def test_structured_rows_are_predicted_and_cost_less_through_ctx() -> None:
    """Rows near a 3-dimensional subspace: after a few rows the residuals are the noise."""
    rng = np.random.default_rng(7)
    rows, rowlen = 200, 48
    x = rng.normal(size=(rows, 3)) @ rng.normal(size=(3, rowlen)) * 12 + rng.normal(size=(rows, rowlen))
    levels = np.rint(x).astype(np.int64)
    spec = ArraySpec((rows, rowlen), "int32")
    residuals, stage = LinearPrediction().encode(levels, spec)
    assert np.mean(np.abs(residuals[20:])) < 0.2 * np.mean(np.abs(levels[20:]))
    plain, _ = Context().encode(levels, spec)
    predicted, _ = Context().encode(residuals, spec)
    assert len(predicted) < 0.7 * len(plain)
    assert np.array_equal(stage.decode(residuals, spec), levels)


def test_blocks_restart_the_predictor() -> None:
    """Two stacked layers with different subspaces: one block per layer predicts better
    than one block across both, and the first four rows of each block pass through."""
    rng = np.random.default_rng(3)
    a = rng.normal(size=(60, 2)) @ rng.normal(size=(2, 32)) * 10
    b = rng.normal(size=(60, 2)) @ rng.normal(size=(2, 32)) * 10
    levels = np.rint(np.vstack([a, b])).astype(np.int64)
    spec = ArraySpec(levels.shape, "int32")
    split, _ = LinearPrediction(blocks=pack_blocks([60, 60])).encode(levels, spec)
    joined, _ = LinearPrediction().encode(levels, spec)
    assert np.array_equal(split[60:64], levels[60:64])
    assert np.abs(split[64:80]).sum() < np.abs(joined[64:80]).sum()


def test_refusals() -> None:
    spec = ArraySpec((10, 4), "int32")
    levels = np.arange(40, dtype=np.int64).reshape(10, 4)
    with pytest.raises(ValueError):
        LinearPrediction(order=0)
    with pytest.raises(FormatError):
        LinearPrediction.from_params({"order": 257})
    for bad in (pack_blocks([3, 3]), pack_blocks([10, 1]), pack_blocks([0, 10]), b"\x85", b"\xff" * 6):
        with pytest.raises(CodecError):
            LinearPrediction(blocks=bad).decode(levels, spec)
    assert block_starts(pack_blocks([4, 6]), 10).tolist() == [0, 4]
    with pytest.raises(CodecError):  # levels beyond int32
        LinearPrediction().encode(np.full((10, 4), 2**31, dtype=np.int64), spec)
    with pytest.raises(CodecError):  # a decoded level that does not fit the output type
        LinearPrediction().decode(np.full((10, 4), 300, dtype=np.int64), ArraySpec((10, 4), "int8"))
    with pytest.raises(CodecError):  # residuals at the edge plus a prediction overflow int32
        edge = np.tile(np.array([2**31 - 1, 2**31 - 1], dtype=np.int64), (10, 1))
        LinearPrediction().decode(edge, ArraySpec((10, 2), "int32"))
    with pytest.raises(CodecError):  # rows of 4 do not split into 3 planes
        LinearPrediction(planes=3).decode(levels, spec)
    with pytest.raises(FormatError):
        LinearPrediction.from_params({"planes": 65})
    with pytest.raises(FormatError):
        LinearPrediction.from_params({"columns": 2})
    with pytest.raises(CodecError):  # the predictor's factor would be too large to allocate
        LinearPrediction(order=256).decode(np.zeros(5 * 70000, dtype=np.int64), ArraySpec((5, 70000), "int32"))
    assert issubclass(CodecError, NNUpdateError)


def test_short_records_and_one_row_pass_through() -> None:
    for shape in ((4, 7), (1, 30), (0, 5), (3,), (10, 0), (0, 12)):
        levels = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
        spec = ArraySpec(shape, "int32")
        residuals, stage = LinearPrediction().encode(levels, spec)
        assert np.array_equal(residuals, levels)
        assert np.array_equal(stage.decode(residuals, spec), levels)
        residuals, stage = LinearPrediction(columns=1).encode(levels, spec)  # (4, 7): 7 rows of 4, predicted
        assert np.array_equal(stage.decode(residuals, spec), levels)


def test_params_store_only_what_differs_from_the_defaults() -> None:
    assert LinearPrediction().params() == {}
    stage = LinearPrediction(order=8, blocks=pack_blocks([300, 2]), planes=9, columns=1)
    assert stage.params() == {"order": 8, "blocks": b"\xac\x02\x02", "planes": 9, "columns": 1}
    assert LinearPrediction.from_params(stage.params()) == stage


def test_ctx_codec_keeps_the_predictor_where_it_pays() -> None:
    """An update whose matrices have correlated rows (one a stack of 1x1 convolutions,
    grouped) is coded through ``lpc`` and comes out smaller than without it at the same
    error target; the group's predictor restarts at each member."""
    from nnupdate.update import decode, diff, encode_with_report

    rng = np.random.default_rng(11)
    base: dict[str, np.ndarray] = {}
    new: dict[str, np.ndarray] = {}
    for name, shape in (("fc.weight", (96, 64)), ("conv_a.weight", (48, 32, 1, 1)), ("conv_b.weight", (40, 32, 1, 1))):
        rows, cols = shape[0], int(np.prod(shape[1:]))
        delta = rng.normal(size=(rows, 4)) @ rng.normal(size=(4, cols)) + 0.3 * rng.normal(size=(rows, cols))
        base[name] = rng.normal(size=shape).astype(np.float32)
        new[name] = (base[name] + 1e-3 * delta.reshape(shape)).astype(np.float32)
    update = diff(base, new)
    with_pred = encode_with_report(update, "ctx:max_rel_error=0.05,quant=dq")
    without = encode_with_report(update, "ctx:max_rel_error=0.05,quant=dq,pred=0")
    assert "lpc" in " ".join(t.pipeline for t in with_pred.tensors)
    assert len(with_pred.data) < 0.9 * len(without.data)
    assert with_pred.relative_error <= 0.05 and without.relative_error <= 0.05
    out = decode(with_pred.data)
    for name in new:
        got = np.asarray(out.changes[name].data, dtype=np.float64).reshape(new[name].shape)
        err = np.linalg.norm(got - (new[name].astype(np.float64) - base[name])) / np.linalg.norm(new[name].astype(np.float64) - base[name])
        assert err < 0.06
    pipelines = {t.name: t.pipeline for t in with_pred.tensors}
    assert "lpc(blocks=<2>)" in pipelines["group of 2 (conv_a.weight, ...)"]  # one block per member


def test_a_wide_matrix_is_predicted_along_its_columns() -> None:
    """Fewer rows than columns: the codec's predictor runs down the columns, which then
    have more of each other to learn from, and codes the matrix smaller than along rows."""
    from nnupdate.codecs.rdoq import _predictor
    from nnupdate.format import Combine
    from nnupdate.update import TensorChange

    rng = np.random.default_rng(8)
    wide = np.rint(rng.normal(size=(48, 4)) @ rng.normal(size=(4, 160)) * 8 + rng.laplace(size=(48, 160))).astype(np.int64)
    change = TensorChange("w", "float32", (48, 160), Combine.ADD, data=np.zeros((48, 160), np.float32))
    stage = _predictor(change, (48, 160))
    assert stage is not None and stage.columns == 1
    assert _predictor(change, (160, 48)) == LinearPrediction()
    spec = ArraySpec(wide.shape, "int32")
    down, _ = stage.encode(wide, spec)
    along, _ = LinearPrediction().encode(wide, spec)
    assert len(Context().encode(down, spec)[0]) < len(Context().encode(along, spec)[0])


def test_the_encoder_narrows_its_tails_by_a_look_at_the_residuals() -> None:
    """Levels the predictor clearly helps are coded through it alone (its residuals reused,
    not recomputed), levels it cannot help are coded directly, without a second ctx pass."""
    from nnupdate.codecs.lpc import PredictedLevels
    from nnupdate.codecs.rdoq import _narrow_prediction

    rng = np.random.default_rng(5)
    spec = ArraySpec((120, 40), "int32")
    structured = np.rint(rng.normal(size=(120, 3)) @ rng.normal(size=(3, 40)) * 15).astype(np.int64)
    noise = np.rint(rng.laplace(size=(120, 40)) * 4).astype(np.int64)
    predictor, coder = LinearPrediction(), Context()
    (tail,) = _narrow_prediction(predictor, coder, structured, spec)
    assert isinstance(tail[0], PredictedLevels) and tail[1] == coder
    handed, resolved = tail[0].encode(structured, spec)
    assert resolved == predictor and np.array_equal(handed, predictor.encode(structured, spec)[0])
    assert _narrow_prediction(predictor, coder, noise, spec) == ((coder,),)


def test_pred_option_chooses_which_records_may_be_predicted() -> None:
    """pred=1 predicts matrices without a kernel transform (one trellis pass then: a second
    prices levels the coder no longer sees), pred=2 also kernel-transform coefficients,
    one plane per coefficient; pred=0 never."""
    from nnupdate.codecs.rdoq import CtxCodec
    from nnupdate.update import diff

    rng = np.random.default_rng(2)
    base = {"conv.weight": rng.normal(size=(32, 8, 3, 3)).astype(np.float32), "fc.weight": rng.normal(size=(40, 24)).astype(np.float32)}
    smooth = rng.normal(size=(32, 8, 1, 1)) + 0.1 * rng.normal(size=(32, 8, 3, 3))
    new = {"conv.weight": (base["conv.weight"] + 1e-3 * smooth).astype(np.float32), "fc.weight": base["fc.weight"] + np.float32(1e-3)}
    update = diff(base, new)
    for pred, conv_planes, fc_predicted in ((0, None, False), (1, None, True), (2, 9, True)):
        codec = CtxCodec(step=1e-4, quant="dq", pred=pred)
        conv = codec.plan(update.changes["conv.weight"])
        assert conv.prefix[0].params().get("dct") == b"\x03\x03"  # smooth kernels: the DCT is used
        predictors = [t[0] for t in conv.tails if isinstance(t[0], LinearPrediction)]
        assert [p.planes for p in predictors] == ([conv_planes] if conv_planes else [])
        fc = codec.plan(update.changes["fc.weight"])
        assert any(isinstance(t[0], LinearPrediction) for t in fc.tails) == fc_predicted
        assert fc.prefix[0].passes == (1 if pred else 2)  # type: ignore[attr-defined]
    with pytest.raises(ValueError):
        CtxCodec(pred=3)


def test_a_tall_record_whose_first_rows_show_no_gain_is_not_predicted_in_full(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prediction is causal, so its first rows tell: on a tall record of independent values
    only those rows are predicted before the encoder codes the levels directly."""
    from nnupdate.codecs.rdoq import PREDICTION_HEAD_ROWS, _narrow_prediction

    rng = np.random.default_rng(9)
    rows = 4 * PREDICTION_HEAD_ROWS + 100
    noise = np.rint(rng.laplace(size=(rows, 24)) * 4).astype(np.int64)
    structured = np.rint(rng.normal(size=(rows, 2)) @ rng.normal(size=(2, 24)) * 15).astype(np.int64)
    seen: list[int] = []
    encode = LinearPrediction.encode

    def counting(self: LinearPrediction, values: np.ndarray, spec: ArraySpec) -> tuple[np.ndarray, LinearPrediction]:
        seen.append(spec.shape[0])
        return encode(self, values, spec)

    monkeypatch.setattr(LinearPrediction, "encode", counting)
    coder = Context()
    assert _narrow_prediction(LinearPrediction(), coder, noise, ArraySpec(noise.shape, "int32")) == ((coder,),)
    assert seen == [PREDICTION_HEAD_ROWS]
    seen.clear()
    (tail,) = _narrow_prediction(LinearPrediction(), coder, structured, ArraySpec(structured.shape, "int32"))
    assert len(tail) == 2 and seen == [PREDICTION_HEAD_ROWS, rows]


def test_kernel_matches_the_spec_at_the_default_order_on_a_realistic_layer() -> None:
    """Order 64 over rows of 80 (so W < L), two blocks, levels of a few directions plus
    noise: the size the codec runs at, where the factor's columns stop short of the row."""
    rng = np.random.default_rng(12)
    x = rng.normal(size=(36, 5)) @ rng.normal(size=(5, 80)) * 6 + rng.laplace(size=(36, 80)) * 2
    levels = np.rint(x).astype(np.int64)
    stage = LinearPrediction(blocks=pack_blocks([20, 16]))
    residuals, _ = stage.encode(levels, ArraySpec(levels.shape, "int32"))
    flat = [int(v) for v in levels.reshape(-1)]
    assert residuals.reshape(-1).tolist() == spec_lpc(flat, 36, 80, 64, [20, 16], forward=True)
    assert np.abs(residuals[24:]).mean() < 0.8 * np.abs(levels[24:]).mean()  # 16-row block: learning still
