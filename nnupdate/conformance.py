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
import zipfile
from collections.abc import Mapping
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


def check_vector(directory: Path, entry: Mapping[str, Any]) -> Result:
    """Decode one vector and compare (or check the refusal of a negative vector)."""
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
        expected = read_npz(_read_checked(directory, entry, "decoded"))
    except (OSError, ValueError) as exc:
        return Result(name, False, f"expected output unusable: {exc}")
    combines = {c.name: c.combine.name for c in update.changes.values()}
    want_combines = {t["name"]: t["combine"] for t in entry["tensors"]}
    if combines != want_combines:
        return Result(name, False, "combine modes or tensor list differ from the manifest")
    decoded = {n: c.data for n, c in update.changes.items() if c.data is not None}
    problem = compare(expected, decoded)
    if problem:
        return Result(name, False, f"decoded tensors: {problem}")
    detail = f"{len(update.changes)} tensors bit-exact"
    if entry.get("base"):
        try:
            base = read_npz(_read_checked(directory, entry, "base"))
            want = read_npz(_read_checked(directory, entry, "applied"))
        except (OSError, ValueError) as exc:
            return Result(name, False, f"base/applied files unusable: {exc}")
        try:
            applied = storage_arrays(apply(base, update))
        except Exception as exc:
            return Result(name, False, f"apply failed: {type(exc).__name__}: {exc}")
        problem = compare(want, applied)
        if problem:
            return Result(name, False, f"applied model: {problem}")
        detail += ", applied model bit-exact"
    return Result(name, True, detail)


def load_manifest(directory: Path) -> dict[str, Any]:
    manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    if manifest.get("format") != MANIFEST_FORMAT:
        raise errors.InputError(f"{directory / MANIFEST}: not a {MANIFEST_FORMAT} manifest")
    return manifest  # type: ignore[no-any-return]


def run(directory: Path) -> list[Result]:
    """Check every vector of ``directory``; an unreadable manifest raises InputError."""
    try:
        manifest = load_manifest(directory)
    except (OSError, ValueError) as exc:
        raise errors.InputError(f"cannot read conformance manifest in {directory}: {exc}") from None
    return [check_vector(directory, entry) for entry in manifest["vectors"]]
