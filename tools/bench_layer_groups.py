"""Where the bits go: ``ctx`` against NNCodec layer group by layer group, at equal error.

The issue-7 benchmark compares whole updates. This one cuts an update into groups of
layers of one kind (1-D tensors; weights of one rank and row length, e.g. ResNet-56's
1x1 and 3x3 convolutions) and, for each group alone, codes it with NNCodec (QP grid,
dependent quantization, ``lambda_scale`` 0 and 1) and with ``ctx`` (dq, with and without
row prediction) at a range of steps, then reports our bytes over NNCodec's lower
envelope at our error. It also reports how far the rows' own eigenbasis, fitted on every
other row and measured on the rest, would concentrate a group's energy beyond what
per-column scales do (bits per value at high rate): the structure row prediction uses.

    python tools/bench_layer_groups.py                       # ResNet-56 fine-tuning diff
    python tools/bench_layer_groups.py --workload transformer-adamw
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))

import bench_vs_nncodec  # noqa: E402
import nncodec_runner  # noqa: E402
import workloads  # noqa: E402

from nnupdate.update import decode, diff, encode_with_report  # noqa: E402

QPS = tuple(range(-44, -31, 2))


def groups(deltas: dict[str, np.ndarray]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, d in deltas.items():
        key = "1-D" if d.ndim <= 1 else f"{d.ndim}-D, rows of {int(np.prod(d.shape[1:]))}"
        out.setdefault(key, []).append(name)
    return out


def held_out_gain(mats: list[np.ndarray]) -> tuple[float, float]:
    """Coding gain (bits/value) of per-column scales and of the eigenbasis of the even
    rows, both measured on the odd rows, averaged over ``mats`` by size (matrices with
    fewer than twice as many rows as columns have too few rows to fit a basis: NaN)."""

    def gain(var: np.ndarray) -> float:
        var = var[var > 0]
        return 0.5 * math.log2(float(np.mean(var)) / math.exp(float(np.mean(np.log(var))))) if var.size else 0.0

    cols = basis = total = 0.0
    for m in mats:
        if m.shape[0] < 2 * m.shape[1]:
            continue  # too few rows to fit a basis of the row length
        fit, test = m[0::2], m[1::2]
        _, _, vt = np.linalg.svd(fit, full_matrices=False)
        cols += gain(np.mean(test**2, axis=0)) * m.size
        basis += gain(np.mean((test @ vt.T) ** 2, axis=0)) * m.size
        total += m.size
    return (cols / total, basis / total) if total else (math.nan, math.nan)


def ours(names: list[str], deltas: dict[str, np.ndarray], base: dict[str, np.ndarray], new: dict[str, np.ndarray], pred: int) -> list[tuple[float, float]]:
    norm = sum(float(np.sum(deltas[k] ** 2)) for k in names)
    points = []
    for qp in QPS:
        for step in (2 ** (qp / 4), 2 ** (qp / 4) * 1.19):
            report = encode_with_report(diff({k: base[k] for k in names}, {k: new[k] for k in names}), f"ctx:step={step},quant=dq,pred={pred}")
            out = decode(report.data)
            err = sum(float(np.sum((np.asarray(out.changes[k].data, np.float64).reshape(deltas[k].shape) - deltas[k]) ** 2)) for k in names)
            points.append((math.sqrt(err / norm), 8.0 * len(report.data)))
    return points


def _num(value: float, digits: int) -> str:
    return "—" if math.isnan(value) else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", default="resnet56-trainable")
    args = ap.parse_args(argv)
    (w,) = workloads.load([args.workload])
    base, new = w.items[0]
    deltas = bench_vs_nncodec._deltas(w.items[0])
    parts = groups(deltas)
    nnc = None
    if nncodec_runner.available():
        configs = [nncodec_runner.NNCodecConfig(qp, True, lam, 0) for qp in QPS for lam in (0.0, 1.0)]
        nnc = nncodec_runner.encode_items([({k: deltas[k].astype(np.float32) for k in names}, configs) for names in parts.values()])
    print("| group | tensors | parameters | column scales, bits/value | row eigenbasis, bits/value | error | ctx (pred=0) / NNCodec | ctx / NNCodec |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for i, (key, names) in enumerate(parts.items()):
        mats = [deltas[k].reshape(deltas[k].shape[0], -1) for k in names if deltas[k].ndim >= 2]
        cols, eig = held_out_gain(mats)
        plain, pred = ours(names, deltas, base, new, 0), ours(names, deltas, base, new, 1)
        norm = sum(float(np.sum(deltas[k] ** 2)) for k in names)
        envelope = []
        if nnc is not None:
            for r in nnc[i]:
                err = sum(float(np.sum((np.asarray(r.reconstructed[k], np.float64).reshape(deltas[k].shape) - deltas[k]) ** 2)) for k in names)
                envelope.append({"err": err, "norm": norm, "bits": 8 * len(r.bitstream)})
        for (e0, b0), (_, b1) in list(zip(sorted(plain), sorted(pred)))[3::4]:
            nb = bench_vs_nncodec.envelope_bits(envelope, e0) if envelope else math.nan
            size = sum(deltas[k].size for k in names)
            print(f"| {key} | {len(names)} | {size} | {_num(cols, 2)} | {_num(eig, 2)} | {e0:.3f} | {_num(b0 / nb, 3)} | {_num(b1 / nb, 3)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
