#!/usr/bin/env python
"""Soft-label coding benchmark on a real federated-distillation run (issue 5).

Reads the per-client, per-round soft labels written by ``tools/fd_run.py`` (runs it
first if the directory is missing) and codes every client's uplink stream and the
server's broadcast stream with:

* float32 / float16: the raw array bytes (no container),
* Q_b without delta coding: a full ``.nnu`` frame every round (b = 1, 2, 4, 8),
* Q_b with delta coding: ``LabelEncoder`` (first round full, then the smaller of a
  delta frame against the previous round's quantized labels and a full frame).

Every size is ``len()`` of bytes actually produced; every Q_b frame is decoded again
and checked to equal the quantized labels. "payload" excludes the container's fixed
cost (headers, index, checksums, digest), read from the frames with ``inspect``;
"ideal order-0" is the empirical order-0 entropy of the symbols of the best frame
choice (tables excluded), the limit of any static order-0 coder.
Student accuracy: a fresh MLP distilled on the public set from the final round's
labels as a receiver would have them (clients' labels coded uplink, averaged by the
server, the average coded downlink), mean over seeds, vs from the exact float labels.

With ``--loop 1,2,4`` it also re-runs the FD loop with the labels really coded at
those bit depths (``fd_run.py --bits B``, output next to the run as ``<run>_qB``) and
prints the clients' accuracy and the bytes sent.

Usage: python tools/bench_labels.py [--run runs/fd] [--rounds 30] [--loop 1,2,4] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nnupdate.distill import LabelDecoder, LabelEncoder, full_frame, quantize_labels  # noqa: E402
from nnupdate.io import inspect  # noqa: E402

BITS = (1, 2, 4, 8)


def load_run(run: Path, rounds: int) -> tuple[list[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    frames = []
    for r in range(rounds):
        with np.load(run / f"round_{r:03d}.npz", allow_pickle=False) as z:
            frames.append({k: z[k] for k in z.files})
    with np.load(run / "public.npz", allow_pickle=False) as z:
        public = {k: z[k] for k in z.files}
    return frames, public


def payload(frame: bytes) -> int:
    return sum(t.payload_bytes for t in inspect(frame).tensors)


def order0_bits(symbols: np.ndarray) -> float:
    """Empirical order-0 entropy of ``symbols`` times their count: what an ideal static coder spends."""
    if symbols.size == 0:
        return 0.0
    _, counts = np.unique(symbols, return_counts=True)
    p = counts / symbols.size
    return float(-(counts * np.log2(p)).sum())


def ideal_bits(units: np.ndarray, reference: np.ndarray | None) -> float:
    """Ideal order-0 payload bits of the frame choices the encoder has (no model tables counted)."""
    best = order0_bits(units)
    if reference is not None:
        d = units.astype(np.int64) - reference
        changed = (d != 0).any(axis=1)
        best = min(best, order0_bits(d), order0_bits(changed.astype(np.int64)) + order0_bits(d[changed]))
    return best


def code_stream(stream: list[np.ndarray], bits: int, delta: bool) -> dict[str, Any]:
    """Code one link's rounds; returns bytes, payload bytes and the decoded labels per round."""
    enc = LabelEncoder(bits)
    dec = LabelDecoder()
    sizes, payloads, decoded, kinds, ideal = [], [], [], [], []
    previous = None
    for r, probs in enumerate(stream):
        if delta:
            frame = enc.encode(probs, r)
        else:
            frame = full_frame(quantize_labels(probs, bits), round=r)
            dec.reference = None
        out = dec.decode(frame)
        units = quantize_labels(probs, bits).units
        ideal.append(ideal_bits(units, previous if delta else None) / 8)
        previous = units
        expected = quantize_labels(probs, bits).probs
        if not np.array_equal(out, expected):
            raise AssertionError(f"round {r}: decoded labels differ from the quantized ones")
        sizes.append(len(frame))
        payloads.append(payload(frame))
        decoded.append(out)
        kinds.append(inspect(frame).tensors[0].name)
    return {
        "bytes": sizes,
        "payload": payloads,
        "ideal": ideal,
        "decoded": decoded,
        "delta_frames": sum(k == "labels.delta" for k in kinds),
    }


def student_accuracy(x_pub: np.ndarray, targets: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, seeds: int, steps: int) -> float:
    import torch
    from fd_run import accuracy, make_mlp, train_kd

    torch.set_num_threads(1)
    accs = []
    for seed in range(seeds):
        model = make_mlp(10_000 + seed)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        train_kd(model, opt, torch.from_numpy(x_pub), torch.from_numpy(targets.astype(np.float32)), steps, 64, np.random.default_rng(seed))
        accs.append(accuracy(model, torch.from_numpy(x_test), y_test))
    return float(np.mean(accs))


def bench(args: argparse.Namespace) -> dict[str, Any]:
    run = Path(args.run)
    if not (run / "public.npz").exists():
        import fd_run

        print(f"{run} has no FD run; running tools/fd_run.py first ...", file=sys.stderr)
        fd_run.run(fd_run.parser().parse_args(["--out", str(run), "--rounds", str(args.rounds), "--quiet"]))
    frames, public = load_run(run, args.rounds)
    clients = sorted((k for k in frames[0] if k.startswith("client_")), key=lambda k: int(k.split("_")[1]))
    n, c = frames[0][clients[0]].shape
    entries = n * c
    rounds = len(frames)
    links = len(clients)
    x_pub, x_test, y_test = public["x_public"], public["x_test"], public["y_test"]

    def student(targets: np.ndarray) -> float:
        return student_accuracy(x_pub, targets, x_test, y_test, args.seeds, args.student_steps)

    rows: list[dict[str, Any]] = []
    exact_final = np.mean([frames[-1][k] for k in clients], axis=0)
    for name, dtype in (("float32", np.float32), ("float16", np.float16)):
        per_round = len(frames[0][clients[0]].astype(dtype).tobytes())
        cast = lambda p, d=dtype: p.astype(d).astype(np.float32)  # noqa: E731
        final = cast(np.mean([cast(frames[-1][k]) for k in clients], axis=0))
        final = final / final.sum(axis=1, keepdims=True)
        rows.append(
            {
                "scheme": name,
                "uplink_total": per_round * rounds * links,
                "uplink_payload": per_round * rounds * links,
                "downlink_total": per_round * rounds,
                "delta_frames": 0,
                "student_accuracy": student(final),
            }
        )
    for delta in (False, True):
        for bits in BITS:
            up = [code_stream([f[k] for f in frames], bits, delta) for k in clients]
            aggregates = [np.mean([u["decoded"][r] for u in up], axis=0) for r in range(rounds)]
            down = code_stream(aggregates, bits, delta)
            rows.append(
                {
                    "scheme": f"Q{bits} {'delta' if delta else 'independent'}",
                    "bits": bits,
                    "delta": delta,
                    "uplink_total": sum(sum(u["bytes"]) for u in up),
                    "uplink_payload": sum(sum(u["payload"]) for u in up),
                    "uplink_ideal": sum(sum(u["ideal"]) for u in up),
                    "downlink_total": sum(down["bytes"]),
                    "delta_frames": sum(u["delta_frames"] for u in up) + down["delta_frames"],
                    "student_accuracy": student(down["decoded"][-1]),
                }
            )
    independent = {r["bits"]: r for r in rows if r.get("delta") is False}
    for r in rows:
        r["uplink_bits_per_entry"] = 8 * r["uplink_total"] / (entries * rounds * links)
        r["uplink_bytes_per_round"] = r["uplink_total"] / (rounds * links)
        r["downlink_bytes_per_round"] = r["downlink_total"] / rounds
        if r.get("delta"):
            base = independent[r["bits"]]
            r["vs_independent"] = (r["uplink_total"] + r["downlink_total"]) / (base["uplink_total"] + base["downlink_total"])
            r["payload_vs_independent"] = r["uplink_payload"] / base["uplink_payload"]
            r["ideal_vs_independent"] = r["uplink_ideal"] / base["uplink_ideal"]
        if "uplink_ideal" in r:
            r["payload_vs_ideal"] = r["uplink_payload"] / r["uplink_ideal"]
    return {
        "run": str(run),
        "clients": links,
        "rounds": rounds,
        "public_set": n,
        "classes": c,
        "student_exact": student(exact_final),
        "rows": rows,
    }


def print_table(result: dict[str, Any]) -> None:
    print(
        f"soft labels of {result['clients']} clients x {result['rounds']} rounds on a public set of "
        f"{result['public_set']} x {result['classes']} classes ({result['run']}); sizes are bytes written"
    )
    print()
    print(
        "| scheme | bits/entry (uplink) | bytes/round/client | uplink total | downlink bytes/round "
        "| delta / independent (up+down) | payload only | ideal order-0 | payload / ideal | student acc |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in result["rows"]:
        ratio = f"{r['vs_independent']:.3f}" if "vs_independent" in r else ""
        pratio = f"{r['payload_vs_independent']:.3f}" if "payload_vs_independent" in r else ""
        iratio = f"{r['ideal_vs_independent']:.3f}" if "ideal_vs_independent" in r else ""
        vs_ideal = f"{r['payload_vs_ideal']:.3f}" if "payload_vs_ideal" in r else ""
        print(
            f"| {r['scheme']} | {r['uplink_bits_per_entry']:.3f} | {r['uplink_bytes_per_round']:.0f} | {r['uplink_total']} | "
            f"{r['downlink_bytes_per_round']:.0f} | {ratio} | {pratio} | {iratio} | {vs_ideal} | {r['student_accuracy']:.4f} |"
        )
    print()
    print(f"student distilled from the exact float labels: {result['student_exact']:.4f} test accuracy")


def loop_table(run: Path, bits_list: list[int], rounds: int) -> list[dict[str, Any]]:
    """Re-run the FD loop with labels coded at each bit depth (real frames both ways)."""
    import fd_run

    rows = []
    for bits in [0, *bits_list]:
        out = run if bits == 0 else run.with_name(f"{run.name}_q{bits}")
        if not (out / "run.json").exists():
            fd_run.run(fd_run.parser().parse_args(["--out", str(out), "--rounds", str(rounds), "--bits", str(bits), "--quiet"]))
        history = json.loads((out / "run.json").read_text())["history"]
        rows.append(
            {
                "labels": "exact float32" if bits == 0 else f"Q{bits} + delta coding",
                "final_client_accuracy": history[-1]["mean_accuracy"],
                "best_client_accuracy": max(h["mean_accuracy"] for h in history),
                "uplink_bytes": sum(h["uplink_bytes"] for h in history),
                "downlink_bytes": sum(h["downlink_bytes"] for h in history),
            }
        )
    return rows


def print_loop_table(rows: list[dict[str, Any]]) -> None:
    print()
    print("FD with the labels coded inside the loop (clients train on decoded labels):")
    print()
    print("| labels | final mean client acc | best | uplink bytes | downlink bytes |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        up = r["uplink_bytes"] or "(float32, not coded)"
        print(f"| {r['labels']} | {r['final_client_accuracy']:.4f} | {r['best_client_accuracy']:.4f} | {up} | {r['downlink_bytes'] or ''} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/fd", help="directory written by tools/fd_run.py (made if missing)")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--seeds", type=int, default=3, help="student seeds to average")
    p.add_argument("--student-steps", type=int, default=400)
    p.add_argument("--loop", default="", help="comma-separated bit depths: also re-run FD with labels coded in the loop")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    result = bench(args)
    if args.loop:
        result["loop"] = loop_table(Path(args.run), [int(b) for b in args.loop.split(",")], args.rounds)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print_table(result)
        if args.loop:
            print_loop_table(result["loop"])


if __name__ == "__main__":
    main()
