"""``nnupdate labels``: encode and decode federated-distillation soft labels.

References: a delta frame is decoded against the previous round's *quantized* labels.
``--reference`` names them either as the ``.npy`` that ``labels decode`` wrote for that
round, or as ``.nnu`` frames: give the chain oldest first (a full frame, then every
delta frame after it), each is decoded against the one before.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from . import EXIT_BASE_MISMATCH, app
from .output import console, emit_json, human_bytes

if TYPE_CHECKING:
    import numpy as np

    from ..distill import QuantizedLabels

labels_app = typer.Typer(help="Soft labels for federated distillation: Q_b quantization and delta frames.", no_args_is_help=True)
app.add_typer(labels_app, name="labels")

ReferenceOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--reference",
        "-r",
        help="Previous round's labels: its decoded .npy, or its .nnu frame chain oldest first (repeat the option).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def _load_npy(path: Path) -> np.ndarray:
    import numpy as np

    from ..errors import InputError

    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise InputError(f"{path}: not a readable .npy array ({exc})") from None


def _refusing_mismatch(func):  # type: ignore[no-untyped-def]
    """Report a wrong/missing reference with exit code 3 but without ``apply``'s --force hint."""
    import functools

    @functools.wraps(func)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        from ..errors import BaseMismatchError

        try:
            return func(*args, **kwargs)
        except BaseMismatchError as exc:
            print(f"nnupdate: error: {exc}", file=sys.stderr)
            raise typer.Exit(EXIT_BASE_MISMATCH) from None

    return wrapper


def _reference(paths: list[Path] | None, bits: int | None) -> QuantizedLabels | None:
    """Resolve ``--reference`` (see module docstring); ``bits`` reads a ``.npy`` reference."""
    from ..distill import QuantizedLabels, decode_quantized
    from ..errors import InputError

    ref: QuantizedLabels | None = None
    for path in paths or []:
        if path.suffix == ".npy":
            if bits is None:
                raise InputError(f"{path}: a .npy reference needs the bit depth (it comes from the frame or --bits)")
            ref = QuantizedLabels.from_probs(_load_npy(path), bits)
        else:
            ref = decode_quantized(path.read_bytes(), ref)
    return ref


def _save_npy(path: Path, array: np.ndarray) -> None:
    import io

    import numpy as np

    from ..io import atomic_write

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    atomic_write(path, buffer.getvalue())


@labels_app.command("encode")
@_refusing_mismatch
def encode(
    probs: Annotated[Path, typer.Argument(metavar="PROBS.npy", help="Float array (samples, classes).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Frame to write (.nnu).")],
    bits: Annotated[int, typer.Option("--bits", "-b", min=1, max=16, help="Q_b bit depth: rows become multiples of 1/(2^b-1).")] = 4,
    reference: ReferenceOpt = None,
    round_: Annotated[int, typer.Option("--round", min=0, help="Round number stored in the header.")] = 0,
    full: Annotated[bool, typer.Option("--full", help="Force a self-contained frame even with a reference.")] = False,
    normalize: Annotated[
        str, typer.Option(help="none: rows must be distributions; softmax: logits; sum: divide by row sums; auto: softmax if negative.")
    ] = "none",
    json_: JsonOpt = False,
) -> None:
    """Quantize soft labels and write a full frame, or a delta frame against --reference when smaller."""
    from ..distill import encode_quantized, frame_info, quantize_labels
    from ..errors import InputError
    from ..io import atomic_write

    modes = {"none": False, "auto": True, "softmax": "softmax", "sum": "sum"}
    if normalize not in modes:
        raise InputError(f"--normalize must be one of {', '.join(modes)}")
    labels = quantize_labels(_load_npy(probs), bits, normalize=modes[normalize], round=round_)  # type: ignore[arg-type]
    ref = None if full else _reference(reference, bits)
    data = encode_quantized(labels, reference=ref, round=round_, full=full)
    atomic_write(output, data)
    info = frame_info(data)
    n, c = labels.shape
    changed = int((labels.units != ref.units).any(axis=1).sum()) if ref is not None and info.frame == "delta" else n
    summary = {
        "output": str(output),
        "frame": info.frame,
        "bits": bits,
        "round": round_,
        "reference_round": info.reference_round,
        "shape": [n, c],
        "changed_rows": changed,
        "bytes": len(data),
        "bits_per_entry": 8 * len(data) / (n * c) if n * c else 0.0,
        "ratio_vs_float32": 4 * n * c / len(data),
    }
    if json_:
        emit_json(summary)
        return
    against = f" against round {info.reference_round} ({changed}/{n} rows changed)" if info.frame == "delta" else ""
    console().print(
        f"wrote [bold]{output}[/] ({human_bytes(len(data))}): {info.frame} frame{against}, {bits}-bit labels {n}x{c}, "
        f"{summary['bits_per_entry']:.3f} bits/entry, {summary['ratio_vs_float32']:.1f}x smaller than float32"
    )


@labels_app.command("decode")
@_refusing_mismatch
def decode(
    frame: Annotated[Path, typer.Argument(metavar="L.nnu")],
    output: Annotated[Path, typer.Option("-o", "--output", help="OUT.npy: float32 quantized probabilities.")],
    reference: ReferenceOpt = None,
    units: Annotated[bool, typer.Option("--units", help="Write the integer units (int32, rows sum to 2^b-1) instead.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Decode a soft-label frame (a delta frame needs --reference) to a .npy array."""
    from ..distill import decode_quantized, frame_info

    data = frame.read_bytes()
    info = frame_info(data)
    ref = _reference(reference, info.bits) if info.frame == "delta" else None
    labels = decode_quantized(data, ref)
    array = labels.units if units else labels.probs
    _save_npy(output, array)
    summary = {"output": str(output), "frame": info.frame, "bits": info.bits, "round": info.round, "shape": list(labels.shape), "dtype": str(array.dtype)}
    if json_:
        emit_json(summary)
        return
    console().print(f"wrote [bold]{output}[/] ({array.dtype} {labels.shape[0]}x{labels.shape[1]}, round {info.round}, {info.frame} frame, {info.bits} bits)")
