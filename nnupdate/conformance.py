"""Conformance runner: decode every reference vector and compare bit for bit.

A vector directory holds ``manifest.json`` and, per vector, ``NAME.nnu`` plus, for
positive vectors, ``NAME.decoded.npz`` (each tensor's decoded data as the pipeline
produces it: deltas, XOR bit patterns, ULP steps or values; bfloat16 as uint16 bits) and, when
the vector has a base, ``NAME.base.npz`` and ``NAME.applied.npz``. Negative vectors
name the error class decoding must raise. Every file's SHA-256 is in the manifest, so
a damaged vector set is reported as such rather than as a decoder bug.
(Layout documented in spec/FORMAT.md, "Conformance".)
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import errors

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "nnupdate-conformance 1"


@dataclass
class Result:
    name: str
    passed: bool
    detail: str


def default_directory() -> Path:
    return Path(__file__).resolve().parent.parent / "conformance"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_npz(arrays: Mapping[str, np.ndarray]) -> bytes:
    """A byte-for-byte reproducible .npz (fixed timestamps, stored, sorted by name).

    ``numpy.savez`` stamps the current time into the zip, so its output differs per run.
    """
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays, key=lambda n: n.encode("utf-8")):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arrays[name]).copy(order="C"), allow_pickle=False, version=(1, 0))
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())
    return out.getvalue()


def read_npz(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def storage_arrays(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Tensors as their stored little-endian element arrays (bfloat16 as uint16)."""
    from .fingerprint import storage_view

    return {name: storage_view(np.asarray(a)) for name, a in tensors.items()}


def compare(expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray]) -> str | None:
    """None when both hold the same names, dtypes, shapes and bytes; else the first difference."""
    if set(expected) != set(actual):
        missing = sorted(set(expected) - set(actual))[:3]
        extra = sorted(set(actual) - set(expected))[:3]
        return f"tensor names differ (missing {missing}, unexpected {extra})"
    for name in sorted(expected):
        e, a = np.asarray(expected[name]), np.asarray(actual[name])
        if e.dtype != a.dtype or e.shape != a.shape:
            return f"{name}: expected {e.dtype}{list(e.shape)}, got {a.dtype}{list(a.shape)}"
        if e.tobytes() != a.tobytes():
            diff = int(np.count_nonzero(e.reshape(-1).view(np.uint8) != a.reshape(-1).view(np.uint8)))
            return f"{name}: {diff} bytes differ"
    return None


def _read_checked(directory: Path, entry: Mapping[str, Any], key: str) -> bytes:
    data = (directory / entry[key]).read_bytes()
    if sha256(data) != entry[f"{key}_sha256"]:
        raise ValueError(f"{entry[key]} does not match its SHA-256 in the manifest")
    return data


def _expected(directory: Path, entry: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None, dict[str, np.ndarray] | None]:
    """The vector's expected decoded tensors, and its base and applied model (None without a base)."""
    expected = read_npz(_read_checked(directory, entry, "decoded"))
    if not entry.get("base"):
        return expected, None, None
    return expected, read_npz(_read_checked(directory, entry, "base")), read_npz(_read_checked(directory, entry, "applied"))


def check_vector(directory: Path, entry: Mapping[str, Any]) -> Result:
    """Decode one vector with this library and compare (or check the refusal of a negative vector)."""
    from .update import apply, decode

    name = entry["name"]
    try:
        data = _read_checked(directory, entry, "file")
    except (OSError, ValueError) as exc:
        return Result(name, False, f"vector file unusable: {exc}")
    if entry.get("error"):
        wanted = getattr(errors, entry["error"], None)
        if not (isinstance(wanted, type) and issubclass(wanted, errors.NNUpdateError)):
            return Result(name, False, f"manifest names unknown error class {entry['error']!r}")
        try:
            decode(data)
        except wanted as exc:
            return Result(name, True, f"refused with {type(exc).__name__}: {exc}")
        except errors.NNUpdateError as exc:
            return Result(name, False, f"expected {entry['error']}, got {type(exc).__name__}: {exc}")
        except Exception as exc:  # a crash is exactly what conformance must catch
            return Result(name, False, f"expected {entry['error']}, crashed with {type(exc).__name__}: {exc}")
        return Result(name, False, f"expected {entry['error']}, but the file decoded")
    try:
        update = decode(data)
    except Exception as exc:
        return Result(name, False, f"decode failed: {type(exc).__name__}: {exc}")
    try:
        expected, base, want = _expected(directory, entry)
    except (OSError, ValueError) as exc:
        return Result(name, False, f"expected output unusable: {exc}")
    combines = {c.name: c.combine.name for c in update.changes.values()}
    want_combines = {t["name"]: t["combine"] for t in entry["tensors"]}
    if combines != want_combines:
        return Result(name, False, "combine modes or tensor list differ from the manifest")
    problem = compare(expected, {n: c.data for n, c in update.changes.items() if c.data is not None})
    if problem:
        return Result(name, False, f"decoded tensors: {problem}")
    detail = f"{len(update.changes)} tensors bit-exact"
    if base is not None and want is not None:
        try:
            applied = storage_arrays(apply(base, update))
        except Exception as exc:
            return Result(name, False, f"apply failed: {type(exc).__name__}: {exc}")
        problem = compare(want, applied)
        if problem:
            return Result(name, False, f"applied model: {problem}")
        detail += ", applied model bit-exact"
    return Result(name, True, detail)


#: the exit status by which an external decoder refuses a file (any other nonzero is a crash)
REFUSED = 1
#: seconds one external decode may take before it counts as a hang
EXTERNAL_TIMEOUT = 120.0


def check_vector_external(directory: Path, entry: Mapping[str, Any], command: Sequence[str], timeout: float = EXTERNAL_TIMEOUT) -> Result:
    """Check a decoder that runs as a command, in any language (spec/FORMAT.md §11).

    It is run as ``COMMAND... FILE.nnu DECODED.npz`` (plus ``BASE.npz APPLIED.npz`` when
    the vector has a base), must write the decoded tensors (and the applied model) as
    .npz and exit 0, or refuse the file by exiting with status 1.
    """
    name = entry["name"]
    try:
        _read_checked(directory, entry, "file")
        expected, base, want = (None, None, None) if entry.get("error") else _expected(directory, entry)
    except (OSError, ValueError) as exc:
        return Result(name, False, f"vector files unusable: {exc}")
    with tempfile.TemporaryDirectory(prefix="nnu-conformance-") as scratch:
        decoded_path, applied_path = Path(scratch) / "decoded.npz", Path(scratch) / "applied.npz"
        args = [*command, str(directory / entry["file"]), str(decoded_path)]
        if base is not None:
            args += [str(directory / entry["base"]), str(applied_path)]
        try:
            done = subprocess.run(args, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return Result(name, False, f"the decoder did not finish within {timeout:g} s")
        except OSError as exc:
            return Result(name, False, f"cannot run the decoder: {exc}")
        said = (done.stderr or done.stdout).decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        if entry.get("error"):
            if done.returncode == REFUSED:
                return Result(name, True, f"refused: {said[0]}")
            verdict = "decoded it" if done.returncode == 0 else f"exited with status {done.returncode}, not {REFUSED}"
            return Result(name, False, f"expected a refusal ({entry['error']}); the decoder {verdict} {said[0]}".rstrip())
        if done.returncode != 0:
            return Result(name, False, f"the decoder exited with status {done.returncode}: {said[0]}")
        try:
            decoded = read_npz(decoded_path.read_bytes())
            applied = read_npz(applied_path.read_bytes()) if base is not None else None
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            return Result(name, False, f"the decoder's output is unreadable: {exc}")
    assert expected is not None
    problem = compare(expected, decoded)
    if problem:
        return Result(name, False, f"decoded tensors: {problem}")
    if want is not None and applied is not None:
        problem = compare(want, applied)
        if problem:
            return Result(name, False, f"applied model: {problem}")
        return Result(name, True, f"{len(decoded)} decoded tensors and the applied model bit-exact")
    return Result(name, True, f"{len(decoded)} decoded tensors bit-exact")


def load_manifest(directory: Path) -> dict[str, Any]:
    manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    if manifest.get("format") != MANIFEST_FORMAT:
        raise errors.InputError(f"{directory / MANIFEST}: not a {MANIFEST_FORMAT} manifest")
    return manifest  # type: ignore[no-any-return]


def run(directory: Path, decoder: Sequence[str] | None = None, only: str = "") -> list[Result]:
    """Check every vector of ``directory`` (those whose name starts with ``only``) with this
    library, or with ``decoder``, a command (:func:`check_vector_external`); an unreadable
    manifest raises InputError."""
    try:
        manifest = load_manifest(directory)
    except (OSError, ValueError) as exc:
        raise errors.InputError(f"cannot read conformance manifest in {directory}: {exc}") from None
    chosen = [entry for entry in manifest["vectors"] if entry["name"].startswith(only)]
    if decoder:
        return [check_vector_external(directory, entry, decoder) for entry in chosen]
    return [check_vector(directory, entry) for entry in chosen]
