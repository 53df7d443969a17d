"""spec/CODECS.md is complete: tools/reference_codecs.py, written from it alone, decodes
every codecs-* conformance vector exactly as the library does, refuses every negative
one, and agrees with the library on freshly encoded random tensors."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nnupdate
from nnupdate.codecs.bitpack import BitPack
from nnupdate.codecs.elias import EliasGammaRLE
from nnupdate.codecs.golomb import GolombRice
from nnupdate.codecs.m22 import M22
from nnupdate.codecs.qsgd import QSGD
from nnupdate.codecs.rans import Rans
from nnupdate.codecs.sbc import SBC
from nnupdate.codecs.topk import TopK
from nnupdate.format import Combine, Container, Header, Role, TensorRecord, UpdateKind, serialize

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import reference_codecs as refc  # noqa: E402

VECTORS = ROOT / "conformance"
MANIFEST = json.loads((VECTORS / "manifest.json").read_text(encoding="utf-8"))
OURS = [v for v in MANIFEST["vectors"] if v["module"] == "codecs"]


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def test_vectors_cover_every_stage() -> None:
    stages = {s for v in OURS for s in v.get("stages", [])}
    assert {0x11, 0x12, 0x13, 0x14, 0x21, 0x22, 0x23} <= stages  # m22 qsgd topk sbc elias golomb bitpack
    assert sum(1 for v in OURS if v["error"]) >= 8


@pytest.mark.parametrize("entry", OURS, ids=lambda e: e["name"])
def test_reference_agrees_on_vectors(entry: dict) -> None:
    data = (VECTORS / entry["file"]).read_bytes()
    if entry["error"]:
        with pytest.raises(refc.RefError):
            refc.decode(data)
        return
    decoded = refc.decode(data)
    expected = _npz(VECTORS / entry["decoded"])
    got = {r.name: r.decoded for r in decoded.tensors if r.decoded is not None}
    assert set(got) == set(expected)
    for name, array in expected.items():
        assert got[name].data == array.tobytes(), name


def _container(values: np.ndarray, stages: list) -> bytes:  # type: ignore[type-arg]
    from nnupdate.codecs import pipeline as pipelines
    from nnupdate.codecs.base import ArraySpec, ArrayToArray

    spec = ArraySpec(values.shape, str(values.dtype))
    prefix = [s for s in stages if isinstance(s, ArrayToArray)]
    tail = [s for s in stages if not isinstance(s, ArrayToArray)]
    symbols, sym_spec, resolved = pipelines.run_array_stages(prefix, values, spec)
    payload, resolved_tail = pipelines.run_tail(tail, symbols, sym_spec)
    rec = TensorRecord("t", str(values.dtype), values.shape, Combine.REPLACE, Role.UNKNOWN,
                       [s.record() for s in resolved + resolved_tail], payload)
    return serialize(Container(Header(UpdateKind.FULL, None, 0, "test", {}), [rec], []))


INT32 = 2**31 - 1
ints = hnp.arrays(np.int32, st.integers(0, 120), elements=st.one_of(st.just(0), st.integers(-40, 40), st.integers(-INT32, INT32)))
floats = hnp.arrays(np.float32, st.integers(1, 120), elements=st.floats(-100, 100, width=32))


@settings(max_examples=30, deadline=None)
@given(x=ints, stage=st.sampled_from([EliasGammaRLE(), GolombRice(), BitPack()]))
def test_reference_agrees_on_random_symbols(x: np.ndarray, stage) -> None:  # type: ignore[no-untyped-def]
    data = _container(x, [stage])
    assert refc.decode(data).tensors[0].decoded.data == nnupdate.decode(data).changes["t"].data.tobytes()


@settings(max_examples=30, deadline=None)
@given(
    x=floats,
    stages=st.sampled_from([
        [M22(7, 2.0), Rans()], [M22(16, 0.0), GolombRice()], [QSGD(3, 16), EliasGammaRLE()], [QSGD(8, 0), BitPack()],
        [TopK(5, 0.0, 6), GolombRice()], [SBC(0.2), GolombRice()], [SBC(0.5), EliasGammaRLE()],
    ]),
)
def test_reference_agrees_on_random_quantized_tensors(x: np.ndarray, stages: list) -> None:  # type: ignore[type-arg]
    if isinstance(stages[0], M22):
        stages = [stages[0].design(x.astype(np.float64)), stages[1]]
    data = _container(x, stages)
    ours = nnupdate.decode(data).changes["t"].data
    assert refc.decode(data).tensors[0].decoded.data == ours.tobytes()
