#!/usr/bin/env python
"""Core codecs on the ResNet-56 fine-tune diff: bits/param, error, encode/decode MB/s.

    python tools/bench_core.py [--runs 5] [--json] [--no-nncodec]

The workload is ``resnet56-all`` from tools/workloads.py (../shared ResNet-56 fine-tuned
on digits; generated and cached on first use). Sizes are the bytes of the whole
container (headers included); speeds are MB/s of float32 input (4 bytes per coded
parameter), median of ``--runs`` runs in this one process, after one warm-up run
(numba kernels compiled). The default clock is this process's CPU time, because the
machine is shared and wall time mostly measures the neighbours; ``--clock wall`` for
wall time. The ``-trainable`` rows drop the BatchNorm running statistics and counters,
whose deltas after a domain change dwarf the weight deltas and so set the global step. Encode = ``encode_with_report`` (what ``nnupdate encode``
runs: step search, quantize, entropy-code every candidate tail, measure the error on
the real decode); decode = ``nnupdate.decode`` (parse, CRCs, digest, all stages);
apply = ``nnupdate.apply`` on top of a decoded update.

NNCodec (the peer, run in its own venv through tools/nncodec_runner.py, in this same
run) codes the same trainable deltas at the operating points of our lossy rows: per row,
the QP whose step matches ours (plain quantization) and the QP three below it (dependent
quantization, which doubles the effective step), each with its own relative error and
bits/param beside its speed, so speeds are compared at equal damage. NNCodec times
itself (wall clock, one thread, median of ``--runs``); the ratio column is ours over
NNCodec's at the same row. Ours runs on one thread too (``--threads`` to change it;
nnupdate otherwise codes records on every CPU, see nnupdate/parallel.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import nnupdate  # noqa: E402
from nnupdate.format import Combine  # noqa: E402

CLOCK: Callable[[], float] = time.process_time


def _median_seconds(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        started = CLOCK()
        fn()
        times.append(CLOCK() - started)
    return statistics.median(times)


def level_entropy_bytes(update: nnupdate.Update, step: float) -> float:
    """Order-0 empirical entropy of the uniform levels, per tensor (what an ideal coder with a
    per-tensor static model would reach, model cost excluded)."""
    total = 0.0
    for delta in update.float_deltas():
        levels = np.rint(np.asarray(delta, dtype=np.float64) / step).astype(np.int64)
        _, counts = np.unique(levels, return_counts=True)
        p = counts / counts.sum()
        total += float(-(counts * np.log2(p)).sum()) / 8
    return total


def measure(update: nnupdate.Update, base: dict, codec: str, runs: int) -> dict[str, object]:
    report = nnupdate.encode_with_report(update, codec)
    mb = 4 * report.coded_parameters / 1e6
    enc = _median_seconds(lambda: nnupdate.encode_with_report(update, codec), runs)
    dec = _median_seconds(lambda: nnupdate.decode(report.data), runs)
    decoded = nnupdate.decode(report.data)
    app = _median_seconds(lambda: nnupdate.apply(base, decoded), runs)
    row: dict[str, object] = {
        "codec": report.codec,
        "bytes": len(report.data),
        "bits_per_param": report.bits_per_parameter,
        "rel_l2_error": report.relative_error,
        "encode_MBps": mb / enc,
        "decode_MBps": mb / dec,
        "apply_MBps": mb / app,
    }
    steps = {t.pipeline.split("step=")[1].split(",")[0].split(")")[0] for t in report.tensors if "uniform(step=" in t.pipeline}
    if len(steps) == 1:
        step = float(steps.pop())
        payload = sum(t.payload_bytes for t in report.tensors if t.combine == Combine.ADD and "uniform" in t.pipeline)
        row["entropy_gap_pct"] = 100 * (payload / level_entropy_bytes(update, step) - 1)
    return row


CODECS = [
    "raw",
    "uniform",  # default: max_rel_error=0.05, coder=auto (rans vs zstd by measured bytes)
    "uniform:coder=rans,max_rel_error=0.05",
    "uniform:coder=rans,max_rel_error=0.01",
    "uniform:coder=rans,max_rel_error=0.2",
    "zstd",
    "fp16",
    "bf16",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--codec", action="append", help="codec spec (repeatable); default: the core set")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    parser.add_argument("--no-nncodec", action="store_true", help="skip the NNCodec peer")
    parser.add_argument("--threads", type=int, default=1, help="nnupdate's record threads (NNCodec uses one)")
    args = parser.parse_args(argv)
    os.environ["NNUPDATE_THREADS"] = str(args.threads)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    import workloads

    (workload,) = workloads.load(["resnet56-all"], log=lambda s: print(s, file=sys.stderr))
    base, new = workload.items[0]
    trainable = [k for k in new if "running_" not in k and "num_batches" not in k]
    sets = {
        workload.name: (base, new),
        "resnet56-trainable": ({k: base[k] for k in trainable}, {k: new[k] for k in trainable}),
    }
    results = {}
    for name, (b, n) in sets.items():
        update = nnupdate.diff(b, n)
        results[name] = [measure(update, b, codec, args.runs) for codec in (args.codec or CODECS)]
    peer = [] if args.no_nncodec else nncodec_rows(*sets["resnet56-trainable"], results["resnet56-trainable"], args.runs)
    if args.json:
        print(json.dumps({"clock": args.clock, "runs": args.runs, "results": results, "nncodec": peer}, indent=1))
        return 0
    for name, rows in results.items():
        b, n = sets[name]
        print(f"\n{name}: {sum(v.size for v in n.values())} parameters, {len(n)} tensors; median of {args.runs} runs, {args.clock} clock")
        _table(rows)
    if peer:
        print("\nNNCodec on resnet56-trainable at the same operating points (same run; its own wall-clock timers)")
        print(f"{'our row':32s} {'NNCodec config':28s} {'bits/param':>10s} {'rel.err':>9s} {'enc MB/s':>9s} {'dec MB/s':>9s} {'ours/NNC enc':>12s} {'ours/NNC dec':>12s}")
        for p in peer:
            print(
                f"{p['ours']!s:32.32s} {p['config']:28s} {p['bits_per_param']:10.3f} {p['rel_l2_error']:9.2e} {p['encode_MBps']:9.2f} "
                f"{p['decode_MBps']:9.1f} {p['encode_ratio']:12.1f} {p['decode_ratio']:12.1f}"
            )
    return 0


def nncodec_rows(base: dict, new: dict, ours: list[dict[str, object]], runs: int) -> list[dict[str, object]]:
    """NNCodec at the operating point of each of our ``uniform`` rows (see the module doc)."""
    import math

    import nncodec_runner

    if not nncodec_runner.available():
        print("NNCodec venv not found: no peer rows", file=sys.stderr)
        return []
    deltas = {k: (new[k].astype(np.float64) - base[k].astype(np.float64)).astype(np.float32) for k in new if new[k].dtype.kind == "f"}
    mb = 4 * sum(v.size for v in deltas.values()) / 1e6
    norm = math.sqrt(sum(float(np.sum(d.astype(np.float64) ** 2)) for d in deltas.values()))
    jobs = []
    for row in ours:
        codec = str(row["codec"])
        if not codec.startswith("uniform:step="):
            continue
        qp = round(4 * math.log2(float(codec.split("step=")[1].split(",")[0])))
        for config in (nncodec_runner.NNCodecConfig(qp, False, repeats=runs), nncodec_runner.NNCodecConfig(qp - 3, True, repeats=runs)):
            jobs.append((row, config))
    (results,) = nncodec_runner.encode_items([(deltas, [config for _, config in jobs])])
    out: list[dict[str, object]] = []
    for (row, _), r in zip(jobs, results):
        err = math.sqrt(sum(float(np.sum((r.reconstructed[k].astype(np.float64).reshape(d.shape) - d) ** 2)) for k, d in deltas.items()))
        enc, dec = mb / r.encode_s, mb / r.decode_s
        out.append({
            "ours": f"uniform {float(row['rel_l2_error']):.3f}", "config": r.config.label(),
            "bits_per_param": 8 * len(r.bitstream) / (mb * 1e6 / 4), "rel_l2_error": err / norm,
            "encode_MBps": enc, "decode_MBps": dec,
            "encode_ratio": float(row["encode_MBps"]) / enc, "decode_ratio": float(row["decode_MBps"]) / dec,  # type: ignore[arg-type]
        })
    return out


def _table(rows: list[dict[str, object]]) -> None:
    print(f"{'codec':48s} {'bytes':>9s} {'bits/param':>10s} {'rel.err':>9s} {'enc MB/s':>9s} {'dec MB/s':>9s} {'apply MB/s':>10s} {'H gap %':>8s}")
    for r in rows:
        gap = f"{r['entropy_gap_pct']:8.2f}" if "entropy_gap_pct" in r else f"{'':8s}"
        print(
            f"{r['codec']!s:48.48s} {r['bytes']:9d} {r['bits_per_param']:10.3f} {r['rel_l2_error']:9.2e} "
            f"{r['encode_MBps']:9.1f} {r['decode_MBps']:9.1f} {r['apply_MBps']:10.1f} {gap}"
        )


if __name__ == "__main__":
    sys.exit(main())
