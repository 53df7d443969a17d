"""Conformance vectors: the library and the independent reference decoder agree with
them bit for bit, negative vectors are refused, and the generator is reproducible."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from nnupdate.conformance import default_directory, read_npz, run

ROOT = Path(__file__).resolve().parents[1]
VECTORS = default_directory()
sys.path.insert(0, str(ROOT / "tools"))

import make_conformance  # noqa: E402
import reference_decoder as ref  # noqa: E402

MANIFEST = json.loads((VECTORS / "manifest.json").read_text(encoding="utf-8"))
REF_STAGES = {0x0001, 0x0010, 0x0020, 0x0030}


def test_every_vector_passes_the_library_runner() -> None:
    results = run(VECTORS)
    assert results and [r for r in results if not r.passed] == []


def test_core_vectors_cover_chunks_stages_combines_and_types() -> None:
    core = [v for v in MANIFEST["vectors"] if v["module"] == "core" and not v["error"]]
    stages = {s for v in core for s in v["stages"]}
    assert stages >= REF_STAGES
    chunks = {c for v in core for c in v["chunks"]}
    assert {"HEAD", "TNSR", "indx", "IEND"} <= chunks and any(c[0].islower() and c != "indx" for c in chunks)
    combines = {t["combine"] for v in core for t in v["tensors"]}
    assert combines == {"ADD", "REPLACE", "XOR", "KEEP", "REMOVE", "ULP"}
    dtypes = {t["dtype"] for v in core for t in v["tensors"]}
    assert len(dtypes) == 13
    kinds = {v["kind"] for v in core}
    assert {"DELTA", "FULL"} <= kinds
    negatives = [v for v in MANIFEST["vectors"] if v["module"] == "core" and v["error"]]
    assert len(negatives) >= 10


def _ref_tensor(array: np.ndarray) -> ref.Tensor:
    return ref.Tensor(array.dtype.name, tuple(array.shape), array.tobytes())


@pytest.mark.parametrize("entry", MANIFEST["vectors"], ids=lambda e: e["name"])
def test_reference_decoder_agrees(entry: dict) -> None:
    data = (VECTORS / entry["file"]).read_bytes()
    if entry["error"]:
        if entry["module"] != "core":
            pytest.skip("negative vector of a stage the reference decoder does not implement")
        with pytest.raises(ref.RefError):
            ref.decode(data)
        return
    if not set(entry["stages"]) <= REF_STAGES:
        pytest.skip("uses stages specified outside FORMAT.md")
    decoded = ref.decode(data)
    assert [(r.name, r.dtype, list(r.shape), r.combine) for r in decoded.tensors] == [
        (t["name"], t["dtype"], t["shape"], t["combine"]) for t in entry["tensors"]
    ]
    expected = read_npz((VECTORS / entry["decoded"]).read_bytes())
    got = {r.name: r.decoded for r in decoded.tensors if r.decoded is not None}
    assert set(got) == set(expected)
    for name, array in expected.items():
        assert got[name].data == array.tobytes(), name
    if entry.get("base"):
        base = {k: _ref_tensor(v) for k, v in read_npz((VECTORS / entry["base"]).read_bytes()).items()}
        want = read_npz((VECTORS / entry["applied"]).read_bytes())
        applied = ref.apply(base, decoded)
        assert set(applied) == set(want)
        for name, array in want.items():
            assert applied[name].data == array.tobytes() and applied[name].shape == array.shape, name


def test_generator_reproduces_every_byte() -> None:
    files = make_conformance.build_all()
    on_disk = {p.name for p in VECTORS.iterdir() if p.is_file()}
    assert set(files) == on_disk
    for name, data in files.items():
        assert (VECTORS / name).read_bytes() == data, name


def test_runner_detects_a_wrong_expectation(tmp_path: Path) -> None:
    shutil.copytree(VECTORS, tmp_path / "v")
    manifest = json.loads((tmp_path / "v" / "manifest.json").read_text(encoding="utf-8"))
    entry = next(v for v in manifest["vectors"] if v["name"] == "core-uniform-rans")
    decoded = read_npz((tmp_path / "v" / entry["decoded"]).read_bytes())
    name = next(iter(decoded))
    decoded[name] = decoded[name].copy()
    decoded[name].reshape(-1)[0] += 1
    from nnupdate.conformance import sha256, write_npz

    data = write_npz(decoded)
    (tmp_path / "v" / entry["decoded"]).write_bytes(data)
    entry["decoded_sha256"] = sha256(data)
    (tmp_path / "v" / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (tmp_path / "v" / "core-zstd.nnu").write_bytes(b"tampered")
    already = {r.name for r in run(VECTORS) if not r.passed}
    results = {r.name: r for r in run(tmp_path / "v")}
    assert not results["core-uniform-rans"].passed and "differ" in results["core-uniform-rans"].detail
    assert not results["core-zstd"].passed and "SHA-256" in results["core-zstd"].detail
    assert {n for n, r in results.items() if not r.passed} == already | {"core-uniform-rans", "core-zstd"}


@pytest.mark.parametrize("tool, prefix", [("reference_decoder.py", "core-"), ("reference_codecs.py", "codecs-")])
def test_runner_checks_an_external_decoder_through_its_command(tool: str, prefix: str) -> None:
    """spec §11's protocol, driven with the independent decoders written from the spec."""
    results = run(VECTORS, decoder=[sys.executable, str(ROOT / "tools" / tool), "--npz"], only=prefix)
    assert len(results) == len([v for v in MANIFEST["vectors"] if v["name"].startswith(prefix)]) > 20
    assert [r for r in results if not r.passed] == []
    assert any("applied model bit-exact" in r.detail for r in results)


def test_runner_catches_a_wrong_external_decoder(tmp_path: Path) -> None:
    from nnupdate.conformance import check_vector_external

    fake = tmp_path / "fake.py"
    fake.write_text(
        "import sys, time, zipfile\n"
        "mode = sys.argv[1]\n"
        "if mode == 'hang': time.sleep(30)\n"
        "if mode == 'crash': sys.exit(3)\n"
        "for out in sys.argv[3::2]:  # empty .npz files: decodes anything, to nothing\n"
        "    zipfile.ZipFile(out, 'w').close()\n",
        encoding="utf-8",
    )
    vectors = {v["name"]: v for v in MANIFEST["vectors"]}
    positive, negative = vectors["core-uniform-rans"], vectors["core-neg-truncated"]

    def check(entry: dict, mode: str, timeout: float = 60.0):  # type: ignore[no-untyped-def]
        return check_vector_external(VECTORS, entry, [sys.executable, str(fake), mode], timeout)

    assert "names differ" in check(positive, "empty").detail
    assert "decoded it" in check(negative, "empty").detail
    crashed = check(negative, "crash")
    assert not crashed.passed and "status 3" in crashed.detail
    assert "did not finish" in check(positive, "hang", timeout=1.0).detail


def test_tdig_vector_carries_the_digests_of_its_base() -> None:
    """The expected output is tensors only; the tdig body itself is checked here against
    spec/ADAPTERS.md §1 (digests of the referenced base tensors, in name order)."""
    from nnupdate.adapters.namemap import read_tensor_digests, tensor_digest
    from nnupdate.update import decode, referenced_names

    update = decode((VECTORS / "core-tdig.nnu").read_bytes())
    base = read_npz((VECTORS / "core-tdig.base.npz").read_bytes())
    digests = read_tensor_digests(update)
    assert digests is not None and set(digests) == set(referenced_names(update))
    assert all(digests[name] == tensor_digest(base[name]) for name in digests)
