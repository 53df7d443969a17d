"""Q_b, the soft-label simplex quantizer: grid membership, exact unit sums, L1 optimality."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nnupdate.codecs.base import ArraySpec, stage_class
from nnupdate.distill.simplex import SimplexQuantizer, check_units, dequantize, quantize, units_for, units_from_probs
from nnupdate.errors import CodecError


def compositions(total: int, parts: int) -> list[tuple[int, ...]]:
    """Every vector of ``parts`` non-negative integers summing to ``total`` (stars and bars)."""
    out = []
    for bars in itertools.combinations(range(total + parts - 1), parts - 1):
        prev = -1
        row = []
        for b in bars:
            row.append(b - prev - 1)
            prev = b
        row.append(total + parts - 1 - prev - 1)
        out.append(tuple(row))
    return out


def rows(max_classes: int = 5) -> st.SearchStrategy[np.ndarray]:
    """Probability rows, including exact ties and zeros that stress the tie-break."""
    weights = st.one_of(
        st.floats(0, 1, allow_subnormal=False),
        st.sampled_from([0.0, 0.25, 0.5, 1.0, 1 / 3]),
    )
    return st.integers(1, max_classes).flatmap(
        lambda c: hnp.arrays(np.float64, (c,), elements=weights).filter(lambda w: w.sum() > 0).map(lambda w: w / w.sum())
    )


@settings(max_examples=300, deadline=None)
@given(p=rows(), bits=st.integers(1, 3))
def test_l1_optimal_against_brute_force(p: np.ndarray, bits: int) -> None:
    m = units_for(bits)
    u = quantize(p[None, :], bits)[0]
    x = p / p.sum() * m
    cost = np.abs(x - u).sum()
    best = min(np.abs(x - np.array(c)).sum() for c in compositions(m, p.size))
    assert cost <= best + 1e-9
    assert u.sum() == m and u.min() >= 0


@settings(max_examples=100, deadline=None)
@given(
    p=hnp.arrays(np.float64, st.tuples(st.integers(1, 20), st.integers(1, 12)), elements=st.floats(0, 1e6, allow_subnormal=False)).filter(
        lambda a: (a.sum(axis=1) > 0).all()
    ),
    bits=st.integers(1, 16),
)
def test_output_on_grid_with_exact_unit_sums(p: np.ndarray, bits: int) -> None:
    u = quantize(p, bits)
    assert u.dtype == np.int32 and u.shape == p.shape
    assert (u.sum(axis=1) == (1 << bits) - 1).all()
    assert u.min() >= 0
    check_units(u, bits)
    # Each entry is within one unit of its scaled probability (floor or floor + 1).
    x = p / p.sum(axis=1, keepdims=True) * ((1 << bits) - 1)
    assert (np.abs(u - x) < 1 + 1e-9).all()
    # The float32 reconstruction maps back to exactly the same units.
    assert np.array_equal(units_from_probs(dequantize(u, bits), bits), u)


def test_one_bit_is_argmax_with_lowest_index_ties() -> None:
    p = np.array([[0.1, 0.6, 0.3], [0.4, 0.2, 0.4], [1 / 3, 1 / 3, 1 / 3], [0.0, 0.0, 1.0]])
    assert quantize(p, 1).tolist() == [[0, 1, 0], [1, 0, 0], [1, 0, 0], [0, 0, 1]]


def test_tie_break_gives_units_to_lower_indices() -> None:
    # x = (1.5, 1.5) with M = 3: one unit left, equal remainders -> class 0.
    assert quantize(np.array([[0.5, 0.5]]), 2).tolist() == [[2, 1]]
    # x = (0.75,)*4 with M = 3: three units for four equal remainders -> first three.
    assert quantize(np.full((1, 4), 0.25), 2).tolist() == [[1, 1, 1, 0]]


def test_known_values() -> None:
    p = np.array([[0.7, 0.2, 0.1]])
    assert quantize(p, 2).tolist() == [[2, 1, 0]]  # x = (2.1, 0.6, 0.3)
    # x = (10.5, 3, 1.5): floors (10, 3, 1), one unit left, remainders tie at 0.5 -> class 0.
    assert quantize(p, 4).tolist() == [[11, 3, 1]]


def test_bad_units_are_refused() -> None:
    with pytest.raises(CodecError):
        check_units(np.array([[2, 2]]), 2)  # sums to 4, M = 3
    with pytest.raises(CodecError):
        check_units(np.array([[4, -1]]), 2)
    with pytest.raises(CodecError):
        dequantize(np.array([[1, 1]]), 2)
    with pytest.raises(CodecError):
        quantize(np.array([[np.nan, 1.0]]), 2)
    with pytest.raises(CodecError):
        units_for(17)
    with pytest.raises(CodecError):
        units_from_probs(np.array([[0.5, 0.5]]), 2)  # 1.5 units is not on the 2-bit grid


def test_stage_is_registered_and_round_trips() -> None:
    assert stage_class(0x0018) is SimplexQuantizer
    stage = SimplexQuantizer(bits=3)
    spec = ArraySpec((2, 3), "float32")
    units, resolved = stage.encode(np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]]), spec)
    assert resolved.encoded_spec(spec) == ArraySpec((2, 3), "int32")
    assert units.tolist() == [[1, 2, 4], [7, 0, 0]]
    decoded = resolved.decode(units, spec)
    assert decoded.dtype == np.float32
    assert np.array_equal(decoded, (units / 7).astype(np.float32))
    assert SimplexQuantizer.from_params(resolved.params()) == resolved
