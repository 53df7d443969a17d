"""Core verbs: encode, apply, decode, info, verify, codecs, conformance, demo."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from . import app
from .output import console, emit_json, human_bytes, library_progress

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]


def _codec_with_overrides(spec: str, step: float | None, max_rel_error: float | None, target_bits: float | None = None, lam: float | None = None):  # type: ignore[no-untyped-def]
    from ..codecs import parse_codec
    from ..errors import InputError

    codec = parse_codec(spec)
    given = (("step", step), ("max_rel_error", max_rel_error), ("target_bits", target_bits), ("lam", lam))
    overrides = {k: v for k, v in given if v is not None}
    fields = {f.name for f in dataclasses.fields(codec)}
    for key in overrides:
        if key not in fields:
            raise InputError(f"codec {codec.name} has no {key.replace('_', '-')} option")
    if "max_rel_error" in overrides and "step" in fields and step is None:
        overrides["step"] = 0.0
    for key in ("target_bits", "lam"):  # a rate flag replaces rate choices made in the codec spec
        if key in overrides:
            overrides.update({k: 0.0 for k in ("step", "target_bits", "lam") if k in fields and k not in overrides})
    try:
        return dataclasses.replace(codec, **overrides)
    except (ValueError, TypeError) as exc:
        raise InputError(f"codec {codec.name}: {exc}") from None


def _parse_meta(items: list[str]) -> dict[str, str]:
    from ..errors import InputError

    meta = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"--meta expects KEY=VALUE, got {item!r}")
        meta[key] = value
    return meta


@app.command()
def encode(
    base: Annotated[Path, typer.Argument(help="Base checkpoint (.pt/.pth/.safetensors/.npz/.onnx).")],
    new: Annotated[Path, typer.Argument(help="New checkpoint, same tensor names.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Update file to write (.nnu).")],
    codec: Annotated[str, typer.Option(help="NAME[:key=value,...]; see `nnupdate codecs`.")] = "uniform",
    step: Annotated[float | None, typer.Option(help="Global quantizer step (overrides the codec's).")] = None,
    max_rel_error: Annotated[float | None, typer.Option(help="Largest step whose relative L2 error stays below E.")] = None,
    target_bits: Annotated[float | None, typer.Option(help="Search the step until the file costs B bits/param (codecs with a target_bits option, e.g. rd).")] = None,
    lam: Annotated[float | None, typer.Option("--lambda", help="Pick the step minimising bytes + LAMBDA * squared error (e.g. rd).")] = None,
    round_: Annotated[int, typer.Option("--round", help="Sequence/round number stored in the header.")] = 0,
    meta: Annotated[list[str] | None, typer.Option(help="KEY=VALUE metadata (repeatable).")] = None,
    tensor_digests: Annotated[
        bool,
        typer.Option(help="Store an 8-byte digest per base tensor so `apply --name-map` can find and verify it in a renamed base (e.g. ONNX)."),
    ] = True,
    name_map: Annotated[
        str | None,
        typer.Option(help="When BASE and NEW name tensors differently (.pt vs .onnx): a JSON map FILE, or auto (ONNX export metadata)."),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Make an update file from two checkpoints and report what it cost and preserved."""
    from .. import adapters
    from ..io import atomic_write
    from ..update import diff, encode_with_report

    chosen = _codec_with_overrides(codec, step, max_rel_error, target_bits, lam)
    base_tensors = adapters.read_tensors(base)
    new_tensors = adapters.read_tensors(new)
    if name_map is not None:
        from ..adapters.namemap import align_names

        new_tensors = align_names(base, base_tensors, new, new_tensors, name_map)
    update = diff(base_tensors, new_tensors, round=round_, metadata=_parse_meta(meta or []))
    digest_bytes = 0
    if tensor_digests:
        from ..adapters.namemap import attach_tensor_digests

        digest_bytes = attach_tensor_digests(update, base_tensors) + 16  # + chunk framing
    with library_progress(not json_):
        report = encode_with_report(update, chosen)
    atomic_write(output, report.data)
    seconds = report.seconds
    float_bytes = 4 * report.coded_parameters
    from ..dtypes import storage_dtype
    from ..format import Combine

    coded = [c for c in update.changes.values() if c.combine not in (Combine.KEEP, Combine.REMOVE)]
    stored_bytes = sum(c.size * storage_dtype(c.dtype).itemsize for c in coded)  # as the checkpoint holds them
    summary = {
        "output": str(output),
        "codec": report.codec,
        "bytes": len(report.data),
        "coded_parameters": report.coded_parameters,
        "bits_per_parameter": report.bits_per_parameter,
        "ratio_vs_float32": float_bytes / len(report.data) if report.data else 0.0,
        "ratio_vs_stored": stored_bytes / len(report.data) if report.data else 0.0,
        "relative_l2_error": report.relative_error,
        "mse": report.mse,
        "statistics_relative_l2_error": report.statistics_relative_error,
        "encode_seconds": seconds,
        "tensors": len(update.changes),
        "records": len(report.tensors),  # TNSR chunks plus TGRP groups
        "tensor_digest_bytes": digest_bytes,
    }
    if json_:
        emit_json(summary)
        return
    console().print(
        f"wrote [bold]{output}[/] ({human_bytes(len(report.data))}, {len(update.changes)} tensors in {len(report.tensors)} records) with {report.codec}\n"
        f"  {summary['bits_per_parameter']:.3f} bits/param, {summary['ratio_vs_float32']:.1f}x smaller than float32"
        + (
            f" ({summary['ratio_vs_stored']:.1f}x than the changed tensors as stored: {', '.join(sorted({c.dtype for c in coded}))})"
            if stored_bytes != float_bytes
            else ""
        )
        + "\n"
        f"  relative L2 error {summary['relative_l2_error']:.4g}, MSE {summary['mse']:.4g}, {seconds:.2f} s"
        + (
            f"\n  running statistics (coded apart): relative L2 error {report.statistics_relative_error:.4g}"
            if any(t.statistic for t in report.tensors)
            else ""
        )
    )


@app.command("apply")
def apply_(
    base: Annotated[Path, typer.Argument(help="Base checkpoint the update was made against.")],
    update_file: Annotated[Path, typer.Argument(metavar="UPDATE", help="The .nnu update.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the new checkpoint (format from suffix).")],
    force: Annotated[bool, typer.Option(help="Apply even if the base fingerprint does not match.")] = False,
    name_map: Annotated[str | None, typer.Option(help="auto or a JSON file mapping update names to base names.")] = None,
    save_name_map: Annotated[
        Path | None, typer.Option(help="Write the resolved name map as editable JSON (for --name-map FILE).")
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Apply an update to its base and write the new checkpoint in the base's format (or OUTPUT's)."""
    import time

    from .. import adapters
    from ..io import load
    from ..update import apply

    start = time.perf_counter()
    with library_progress(not json_):
        update = load(update_file)
    base_tensors = adapters.read_tensors(base)
    notes: list[str] = []
    if name_map is not None:
        from ..adapters.namemap import apply_with_name_map

        mapped = apply_with_name_map(base, base_tensors, update, name_map, force=force)
        result = mapped.tensors
        notes = mapped.name_map.notes()
        for line in [] if json_ else notes:
            console().print(f"  {line}", markup=False)
        if save_name_map is not None:
            import json

            from ..io import atomic_write

            atomic_write(save_name_map, (json.dumps(mapped.name_map.to_json(), indent=2) + "\n").encode())
    else:
        from ..errors import BaseMismatchError

        try:
            result = apply(base_tensors, update, force=force)
        except BaseMismatchError as exc:
            missing = [n for n in update.changes if n not in base_tensors]
            if missing:
                raise BaseMismatchError(f"{exc}; if the base names or lays out tensors differently (an ONNX export), use --name-map auto") from None
            raise
    adapters.write_tensors(output, result, like=base)
    if json_:
        combines: dict[str, int] = {}
        for change in update.changes.values():
            combines[change.combine.name] = combines.get(change.combine.name, 0) + 1
        emit_json(
            {
                "output": str(output),
                "tensors": len(result),
                "changes": combines,
                "base_fingerprint_checked": update.base_fingerprint is not None and not force and name_map is None,
                "name_map_notes": notes,
                "seconds": time.perf_counter() - start,
            }
        )
        return
    console().print(f"wrote [bold]{output}[/] ({len(result)} tensors)")


@app.command()
def decode(
    update_file: Annotated[Path, typer.Argument(metavar="UPDATE")],
    output: Annotated[Path, typer.Option("-o", "--output", help="OUT.npz or OUT.safetensors holding the decoded tensors.")],
    json_: JsonOpt = False,
) -> None:
    """Decode every tensor of an update (deltas, XOR patterns, ULP steps or values, as stored)."""
    from .. import adapters
    from ..io import load

    with library_progress(not json_):
        update = load(update_file)
    arrays = {name: c.data for name, c in update.changes.items() if c.data is not None}
    adapters.write_tensors(output, arrays)
    if json_:
        emit_json(
            {
                "output": str(output),
                "tensors": {n: {"combine": c.combine.name, "dtype": str(arrays[n].dtype)} for n, c in update.changes.items() if n in arrays},
            }
        )
        return
    console().print(f"wrote [bold]{output}[/] ({len(arrays)} tensors)")


@app.command()
def info(update_file: Annotated[Path, typer.Argument(metavar="UPDATE")], json_: JsonOpt = False) -> None:
    """Header and per-tensor shape, pipeline, bytes and bits/param (checks CRCs, decodes nothing)."""
    from ..io import inspect

    summary = inspect(update_file)
    touched: dict[str, list[str]] = {"changed": [], "added": [], "removed": [], "unchanged": []}
    for t in summary.tensors:
        group = {"KEEP": "unchanged", "REMOVE": "removed"}.get(t.combine, "changed")
        if t.combine == "REPLACE" and summary.kind == "delta":
            group = "added"  # diff() stores new tensors (and re-typed ones) as REPLACE
        touched[group].append(t.name)
    if json_:
        emit_json({**summary.to_json(), "touched": touched})
        return
    from rich.table import Table

    out = console()
    out.print(
        f"[bold]{update_file}[/]: nnupdate {summary.version}, kind {summary.kind}, round {summary.round}, "
        f"{human_bytes(summary.size_bytes)}, {summary.bits_per_parameter:.3f} bits/param over {summary.coded_parameters} params"
    )
    if summary.base_fingerprint:
        out.print(f"base fingerprint {summary.base_fingerprint}")
    for key, value in summary.metadata.items():
        out.print(f"  {key} = {value}")
    out.print("touched: " + ", ".join(f"{len(v)} {k}" for k, v in touched.items()))
    table = Table("tensor", "dtype", "shape", "change", "pipeline", "bytes", "bits/param")
    for t in summary.tensors:
        pipeline = " | ".join(_stage_label(s) for s in t.pipeline) or "-"
        table.add_row(t.name, t.dtype, "x".join(map(str, t.shape)) or "scalar", t.combine.lower(), pipeline, str(t.payload_bytes), f"{t.bits_per_parameter:.3f}")
    out.print(table)


@app.command()
def verify(update_file: Annotated[Path, typer.Argument(metavar="UPDATE")]) -> None:
    """Check every checksum and decode every tensor; exit 0 only if all is sound."""
    from ..io import load

    with library_progress(True):
        update = load(update_file)
    console().print(f"{update_file}: OK ({len(update.changes)} tensors decoded, all checksums match)")


@app.command()
def codecs(json_: JsonOpt = False) -> None:
    """List the registered codecs with their options, and the registered stages."""
    from ..codecs import codec_table, registered_stages

    rows = codec_table()
    stages = [{"name": n, "id": c.codec_id, "kind": c.kind.value} for n, c in sorted(registered_stages().items(), key=lambda x: x[1].codec_id)]
    if json_:
        emit_json({"codecs": rows, "stages": stages})
        return
    from rich.table import Table

    table = Table("codec", "lossless", "options (default)", "what it does")
    for row in rows:
        opts = ", ".join(f"{k}={v['default']}" for k, v in row["options"].items())
        table.add_row(row["name"], "yes" if row["lossless"] else "no", opts, row["summary"])
    out = console()
    out.print(table)
    out.print("stages: " + ", ".join(f"{s['name']} ({s['id']:#06x}, {s['kind']})" for s in stages))


@app.command()
def conformance(
    directory: Annotated[Path | None, typer.Argument(help="Vector directory (default: the repository's conformance/).")] = None,
    decoder: Annotated[
        str,
        typer.Option(
            help="Check another decoder instead of this library: a command run as COMMAND FILE.nnu DECODED.npz "
            "[BASE.npz APPLIED.npz] that exits 1 to refuse a file (spec/FORMAT.md §11).",
        ),
    ] = "",
    only: Annotated[str, typer.Option(help="Only the vectors whose name starts with this (e.g. core-).")] = "",
    json_: JsonOpt = False,
) -> None:
    """Decode every reference bitstream and compare with its expected output bit for bit."""
    import shlex

    from ..conformance import default_directory, run

    results = run(directory or default_directory(), shlex.split(decoder), only)
    failed = [r for r in results if not r.passed]
    if json_:
        emit_json([dataclasses.asdict(r) for r in results])
    else:
        for r in results:
            console().print(f"{'[green]PASS[/]' if r.passed else '[red]FAIL[/]'} {r.name}: {r.detail}")
        console().print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    if failed or not results:
        raise typer.Exit(1)


@app.command()
def demo(
    codec: Annotated[str, typer.Option(help="Codec for the update.")] = "uniform",
    steps: Annotated[int, typer.Option(help="Training steps between base and new model.")] = 60,
    json_: JsonOpt = False,
) -> None:
    """Train a small CNN on scikit-learn's digits, encode the update, apply it, report the cost."""
    from ..demo import run_demo

    result = run_demo(codec=codec, steps=steps, progress=not json_)
    if json_:
        emit_json(result)
        return
    out = console()
    out.print(  # soft_wrap: the terminal wraps long lines; rich would cut the codec spec mid-token
        f"digits CNN, {result['parameters']} parameters, {steps} SGD steps from a pretrained base\n"
        f"codec    {result['codec']}\n"
        f"update   {human_bytes(result['bytes'])} = {result['bits_per_parameter']:.3f} bits/param "
        f"({result['ratio_vs_float32']:.1f}x smaller than float32), relative L2 error {result['relative_l2_error']:.4f}\n"
        f"accuracy base {result['accuracy_base']:.4f}, exact new {result['accuracy_exact']:.4f}, "
        f"reconstructed {result['accuracy_reconstructed']:.4f}; logits max |diff| {result['max_logit_diff']:.3g}",
        soft_wrap=True,
    )


def _stage_label(stage: dict[str, object]) -> str:
    """A stage's name, with the kernel transform it applies (``rdoq+dct3x3``, ``dq+basis``)."""
    name = str(stage["codec"])
    dct = stage.get("dct")
    if isinstance(dct, str) and dct:
        return f"{name}+dct" + "x".join(str(b) for b in bytes.fromhex(dct))
    if "basis" in stage:
        return f"{name}+basis"
    return name
