#!/usr/bin/env python
"""Rebuild the conformance vectors deterministically.

    python tools/make_conformance.py            # writes conformance/
    python tools/make_conformance.py --check    # rebuilds in memory, fails if any byte differs

Collects ``CASES`` from every module in tools/conformance_cases/ (see its __init__ for
the case API), builds each vector, decodes it, and writes NAME.nnu, NAME.decoded.npz,
NAME.base.npz / NAME.applied.npz (vectors with a base) and manifest.json with SHA-256
sums. A case whose stated expectations (``expected``/``applied``/``error``) do not hold
stops the run: the generator never writes a vector the decoder disagrees with.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

from nnupdate import errors  # noqa: E402
from nnupdate.conformance import (  # noqa: E402
    MANIFEST,
    MANIFEST_FORMAT,
    compare,
    sha256,
    storage_arrays,
    write_npz,
)
from nnupdate.format import parse  # noqa: E402
from nnupdate.update import apply, decode  # noqa: E402


def collect_cases() -> list[tuple[str, Any]]:
    import conformance_cases

    found = []
    for info in sorted(pkgutil.iter_modules(conformance_cases.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"conformance_cases.{info.name}")
        for case in getattr(module, "CASES", []):
            found.append((info.name, case))
    names = [c.name for _, c in found]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SystemExit(f"duplicate conformance case names: {dupes}")
    return found


def build_vector(module: str, case: Any) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(manifest entry, {file name: bytes}) of one case."""
    data = case.build()
    files = {f"{case.name}.nnu": data}
    entry: dict[str, Any] = {
        "name": case.name,
        "module": module,
        "description": case.description,
        "file": f"{case.name}.nnu",
        "file_sha256": sha256(data),
        "error": case.error,
    }
    if case.error:
        wanted = getattr(errors, case.error)
        try:
            decode(data)
        except wanted:
            return entry, files
        except Exception as exc:
            raise SystemExit(f"{case.name}: expected {case.error}, got {type(exc).__name__}: {exc}") from None
        raise SystemExit(f"{case.name}: expected {case.error}, but the file decoded")
    container = parse(data)
    update = decode(data)
    decoded = {n: c.data for n, c in update.changes.items() if c.data is not None}
    if case.expected is not None:
        problem = compare(storage_arrays(case.expected()), decoded)
        if problem:
            raise SystemExit(f"{case.name}: decoded output differs from the stated expectation: {problem}")
    entry.update(
        kind=container.header.kind.name,
        version=list(container.version or ()),
        stages=sorted({s.codec_id for t in container.tensors for s in t.stages}),
        chunks=["HEAD", *(["TNSR"] if container.tensors else []), *(t.decode() for t, _ in container.extra_chunks), "indx", "IEND"],
        tensors=[
            {"name": c.name, "dtype": c.dtype, "shape": list(c.shape), "combine": c.combine.name}
            for c in update.changes.values()
        ],
        decoded=f"{case.name}.decoded.npz",
    )
    files[entry["decoded"]] = write_npz(decoded)
    entry["decoded_sha256"] = sha256(files[entry["decoded"]])
    if case.base is not None:
        base = case.base()
        applied = storage_arrays(apply(base, update))
        if case.applied is not None:
            problem = compare(storage_arrays(case.applied()), applied)
            if problem:
                raise SystemExit(f"{case.name}: applied model differs from the stated expectation: {problem}")
        for key, arrays in (("base", storage_arrays(base)), ("applied", applied)):
            entry[key] = f"{case.name}.{key}.npz"
            files[entry[key]] = write_npz(arrays)
            entry[f"{key}_sha256"] = sha256(files[entry[key]])
    return entry, files


def build_all() -> dict[str, bytes]:
    """Every file of the vector directory, manifest included."""
    files: dict[str, bytes] = {}
    entries = []
    for module, case in collect_cases():
        entry, produced = build_vector(module, case)
        entries.append(entry)
        files.update(produced)
    manifest = {"format": MANIFEST_FORMAT, "vectors": sorted(entries, key=lambda e: e["name"])}
    files[MANIFEST] = (json.dumps(manifest, indent=1, ensure_ascii=False) + "\n").encode("utf-8")
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE.parent / "conformance")
    parser.add_argument("--check", action="store_true", help="compare with --out instead of writing")
    args = parser.parse_args(argv)
    np.seterr(all="ignore")
    files = build_all()
    if args.check:
        bad = [n for n, d in files.items() if not (args.out / n).is_file() or (args.out / n).read_bytes() != d]
        if bad:
            print(f"{len(bad)} files differ from {args.out}: {bad[:5]}", file=sys.stderr)
            return 1
        print(f"{len(files)} files reproduced bit-exactly")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    stale = {p.name for p in args.out.glob("*") if p.suffix in (".nnu", ".npz")} - set(files)
    for name in stale:
        (args.out / name).unlink()
    from nnupdate.io import atomic_write

    for name, data in files.items():
        atomic_write(args.out / name, data)
    print(f"wrote {len(files)} files ({sum(1 for n in files if n.endswith('.nnu'))} vectors) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
