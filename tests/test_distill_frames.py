"""Soft-label frames: exact delta round trips, reference refusals, input validation, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nnupdate.cli import main
from nnupdate.codecs.base import ArraySpec
from nnupdate.distill import (
    LabelDecoder,
    LabelEncoder,
    QuantizedLabels,
    decode_labels,
    decode_quantized,
    encode_labels,
    frame_info,
    full_frame,
    quantize_labels,
)
from nnupdate.distill.rowsparse import RowSparse
from nnupdate.errors import BaseMismatchError, CodecError, InputError, NNUpdateError


def dirichlet(rng: np.random.Generator, n: int, c: int, conc: float = 0.3) -> np.ndarray:
    return rng.dirichlet(np.full(c, conc), size=n).astype(np.float32)


@st.composite
def label_sequences(draw: st.DrawFn) -> tuple[int, list[np.ndarray], int]:
    """A few rounds of labels where each round redraws a random subset of rows."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n = draw(st.integers(1, 40))
    c = draw(st.integers(1, 12))
    bits = draw(st.integers(1, 16))
    rounds = draw(st.integers(1, 5))
    probs = dirichlet(rng, n, c)
    seq = [probs]
    for _ in range(rounds - 1):
        probs = probs.copy()
        change = rng.random(n) < draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
        probs[change] = dirichlet(rng, int(change.sum()), c)
        seq.append(probs)
    return bits, seq, draw(st.integers(0, 3))


@settings(max_examples=60, deadline=None)
@given(case=label_sequences())
def test_delta_stream_decodes_exactly(case: tuple[int, list[np.ndarray], int]) -> None:
    bits, seq, keyframe = case
    enc, dec = LabelEncoder(bits, keyframe_interval=keyframe), LabelDecoder()
    for r, probs in enumerate(seq):
        frame = enc.encode(probs, r)
        got = dec.decode_quantized(frame)
        expected = quantize_labels(probs, bits)
        assert np.array_equal(got.units, expected.units)
        assert got.round == r
        out = decode_labels(frame, reference=None if r == 0 else quantize_labels(seq[r - 1], bits, round=r - 1))
        assert out.dtype == np.float32 and np.array_equal(out, expected.probs)
        if keyframe and r % keyframe == 0:
            assert frame_info(frame).frame == "full"


def test_delta_frames_are_small_when_few_rows_change() -> None:
    rng = np.random.default_rng(1)
    p0 = dirichlet(rng, 500, 10)
    p1 = p0.copy()
    p1[:25] = dirichlet(rng, 25, 10)
    ref = quantize_labels(p0, 2, round=7)
    delta = encode_labels(p1, bits=2, reference=ref, round=8)
    full = encode_labels(p1, bits=2, round=8)
    info = frame_info(delta)
    assert info.frame == "delta" and info.reference_round == 7 and info.reference_fingerprint == ref.fingerprint
    assert len(delta) < 0.6 * len(full)
    assert frame_info(encode_labels(p1, bits=2, reference=ref, round=8, full=True)).frame == "full"
    # The reference may also be given as the float32 array an earlier decode returned.
    assert np.array_equal(decode_labels(delta, reference=decode_labels(full_frame(ref))), quantize_labels(p1, 2).probs)


def test_decoding_refuses_missing_or_wrong_reference() -> None:
    rng = np.random.default_rng(2)
    p0 = dirichlet(rng, 50, 6)
    p1 = p0.copy()
    p1[:3] = dirichlet(rng, 3, 6)
    ref = quantize_labels(p0, 3, round=0)
    frame = encode_labels(p1, bits=3, reference=ref, round=1)
    assert frame_info(frame).frame == "delta"
    with pytest.raises(BaseMismatchError, match="delta frame against round 0"):
        decode_labels(frame)
    other = quantize_labels(dirichlet(rng, 50, 6), 3, round=0)
    with pytest.raises(BaseMismatchError, match="fingerprint"):
        decode_labels(frame, reference=other)
    with pytest.raises(BaseMismatchError, match="round"):
        decode_labels(frame, reference=QuantizedLabels(ref.units, 3, round=5))
    with pytest.raises(BaseMismatchError, match="shape"):
        decode_labels(frame, reference=QuantizedLabels(ref.units[:10], 3))
    with pytest.raises(BaseMismatchError, match="bits"):
        decode_labels(frame, reference=quantize_labels(p0, 4))
    with pytest.raises(BaseMismatchError):
        decode_labels(frame, reference=p0)  # the unquantized float labels are not the reference
    assert np.array_equal(decode_labels(frame, reference=ref.probs), quantize_labels(p1, 3).probs)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.array([[0.5, np.nan]]), "NaN"),
        (np.array([[1.2, -0.2]]), "negative"),
        (np.array([[0.5, 0.6]]), "sums to"),
        (np.array([0.5, 0.5]), "shape"),
        (np.ones((2, 2, 2)) / 2, "shape"),
        (np.zeros((3, 0)), "class"),
        (np.array([["a", "b"]]), "float"),
        (np.array([[True, False]]), "float"),
    ],
)
def test_malformed_inputs_get_clear_errors(bad: np.ndarray, match: str) -> None:
    with pytest.raises(InputError, match=match):
        encode_labels(bad, bits=2)


def test_normalize_accepts_logits_and_unnormalised_rows() -> None:
    logits = np.array([[2.0, -1.0, 0.5], [-3.0, -3.0, 0.0]])
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    softmax = e / e.sum(axis=1, keepdims=True)
    for mode in (True, "softmax"):
        assert np.array_equal(decode_labels(encode_labels(logits, bits=6, normalize=mode)), quantize_labels(softmax, 6).probs)
    scores = np.array([[2.0, 1.0, 1.0], [0.0, 0.0, 5.0]])
    for mode in (True, "sum"):
        assert np.array_equal(decode_labels(encode_labels(scores, bits=6, normalize=mode)), quantize_labels(scores / scores.sum(1, keepdims=True), 6).probs)
    with pytest.raises(InputError):
        encode_labels(np.zeros((1, 3)), bits=2, normalize="sum")
    with pytest.raises(InputError):
        encode_labels(scores, bits=2, normalize="bogus")  # type: ignore[arg-type]
    with pytest.raises(InputError):
        encode_labels(softmax, bits=0)
    with pytest.raises(InputError, match="round"):
        encode_labels(softmax, bits=2, round=-1)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 30), width=st.integers(1, 6), density=st.sampled_from([0.0, 0.2, 1.0]))
def test_rowsparse_round_trips(seed: int, n: int, width: int, density: float) -> None:
    rng = np.random.default_rng(seed)
    values = rng.integers(-5, 6, size=(n, width)).astype(np.int32)
    values[rng.random(n) >= density] = 0
    spec = ArraySpec((n, width), "int32")
    data, stage = RowSparse().encode(values, spec)
    out = stage.decode(data, spec)
    assert out.dtype == np.int32 and np.array_equal(out, values)


def test_corrupted_frames_raise_typed_errors() -> None:
    rng = np.random.default_rng(3)
    p0 = dirichlet(rng, 60, 5)
    p1 = p0.copy()
    p1[:6] = dirichlet(rng, 6, 5)
    ref = quantize_labels(p0, 2)
    frames = [encode_labels(p0, bits=2), encode_labels(p1, bits=2, reference=ref)]
    for frame in frames:
        for i in range(0, len(frame), 3):
            broken = bytearray(frame)
            broken[i] ^= 0x5A
            with pytest.raises(NNUpdateError):
                decode_labels(bytes(broken), reference=ref)
        with pytest.raises(NNUpdateError):
            decode_labels(frame[: len(frame) // 2], reference=ref)


def test_rowsparse_refuses_bad_payloads() -> None:
    spec = ArraySpec((4, 3), "int32")
    values = np.array([[0, 0, 0], [1, -1, 0], [0, 0, 0], [0, 2, -2]], dtype=np.int32)
    data, stage = RowSparse().encode(values, spec)
    with pytest.raises(CodecError):
        stage.decode(data[:-1], spec)
    with pytest.raises(CodecError):
        stage.decode(b"\xff" + data[1:], spec)


def test_weight_updates_are_not_soft_labels() -> None:
    import nnupdate

    data = nnupdate.full({"w": np.ones(3, dtype=np.float32)}).encode("raw")
    with pytest.raises(InputError, match="not a soft-label frame"):
        decode_labels(data)


def test_cli_encode_decode_with_reference_chain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(4)
    p0 = dirichlet(rng, 100, 10)
    p1 = p0.copy()
    p1[:10] = dirichlet(rng, 10, 10)
    p2 = p1.copy()
    p2[50:55] = dirichlet(rng, 5, 10)
    for i, p in enumerate((p0, p1, p2)):
        np.save(tmp_path / f"p{i}.npy", p)
    f = [tmp_path / f"l{i}.nnu" for i in range(3)]
    assert main(["labels", "encode", str(tmp_path / "p0.npy"), "-o", str(f[0]), "--bits", "2"]) == 0
    assert main(["labels", "encode", str(tmp_path / "p1.npy"), "-o", str(f[1]), "--bits", "2", "--round", "1", "-r", str(f[0])]) == 0
    chain = ["-r", str(f[0]), "-r", str(f[1])]
    assert main(["labels", "encode", str(tmp_path / "p2.npy"), "-o", str(f[2]), "--bits", "2", "--round", "2", *chain]) == 0
    assert frame_info(f[2].read_bytes()).frame == "delta"
    out = tmp_path / "out.npy"
    assert main(["labels", "decode", str(f[2]), "-o", str(out), *chain]) == 0
    assert np.array_equal(np.load(out, allow_pickle=False), quantize_labels(p2, 2).probs)
    # The decoded .npy of the previous round is a valid reference too.
    prev = tmp_path / "prev.npy"
    assert main(["labels", "decode", str(f[1]), "-o", str(prev), *chain[:2]]) == 0
    assert main(["labels", "decode", str(f[2]), "-o", str(out), "-r", str(prev), "--units"]) == 0
    assert np.array_equal(np.load(out, allow_pickle=False), quantize_labels(p2, 2).units)
    capsys.readouterr()
    # Missing or wrong reference: exit code 3 and a one-line reason.
    assert main(["labels", "decode", str(f[2]), "-o", str(out)]) == 3
    assert main(["labels", "decode", str(f[2]), "-o", str(out), "-r", str(f[0])]) == 3
    assert "fingerprint" in capsys.readouterr().err
    # Unusable inputs: pickled object arrays are never loaded, bad rows are named.
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert main(["labels", "encode", str(tmp_path / "obj.npy"), "-o", str(tmp_path / "x.nnu")]) == 1
    np.save(tmp_path / "logits.npy", rng.normal(size=(5, 4)))
    assert main(["labels", "encode", str(tmp_path / "logits.npy"), "-o", str(tmp_path / "x.nnu")]) == 1
    assert "negative" in capsys.readouterr().err
    assert main(["labels", "encode", str(tmp_path / "logits.npy"), "-o", str(tmp_path / "x.nnu"), "--normalize", "softmax"]) == 0
    assert decode_quantized((tmp_path / "x.nnu").read_bytes()).bits == 4


def test_stream_sends_full_frame_when_public_set_changes() -> None:
    rng = np.random.default_rng(5)
    small, large = dirichlet(rng, 30, 4), dirichlet(rng, 45, 4)
    enc, dec = LabelEncoder(3), LabelDecoder()
    for r, (probs, kind) in enumerate(((small, "full"), (small, "delta"), (large, "full"), (large, "delta"))):
        frame = enc.encode(probs, r)
        assert frame_info(frame).frame == kind
        assert np.array_equal(dec.decode(frame), quantize_labels(probs, 3).probs)


def test_reference_given_as_full_frame_bytes() -> None:
    rng = np.random.default_rng(6)
    p0 = dirichlet(rng, 80, 5)
    p1 = p0.copy()
    p1[:4] = dirichlet(rng, 4, 5)
    first = encode_labels(p0, bits=5, round=0)
    second = encode_labels(p1, bits=5, reference=first, round=1)
    info = frame_info(second)
    assert info.frame == "delta" and info.reference_round == 0
    assert np.array_equal(decode_labels(second, reference=decode_quantized(first)), quantize_labels(p1, 5).probs)
