"""Lossless update coding: XOR of bit patterns + zstd against ULP steps + ctx, measured.

    python tools/bench_lossless.py [--json] [--no-resnet]

Cases: the ResNet-56 fine-tuning diff (``../shared/data``; skipped when absent) stored as
float32, bfloat16 and float16, and a synthetic layer (2048 x 2048, weights of scale 0.02)
moved by Gaussian updates of three sizes and rounded to bfloat16 again, as a bfloat16
fine-tune stores them, and once in float32. Every size is the container written by ``raw:combine=xor``
or ``raw:combine=ulp``; speeds are MB of the tensors' own bytes per second, encode and
decode + apply, best of three, one process.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import nnupdate  # noqa: E402

Tensors = dict[str, np.ndarray]


def _bf16() -> type:
    import ml_dtypes

    return ml_dtypes.bfloat16  # type: ignore[no-any-return]


def synthetic_cases() -> Iterator[tuple[str, Tensors, Tensors]]:
    g = np.random.default_rng(3)
    w = (0.02 * g.standard_normal((2048, 2048))).astype(np.float32)
    for scale in (3e-5, 1e-4, 1e-3):
        moved = w + (scale * g.standard_normal(w.shape)).astype(np.float32)
        yield f"bfloat16 layer, update {scale:g}", {"w": w.astype(_bf16())}, {"w": moved.astype(_bf16())}
    moved = w + (1e-4 * g.standard_normal(w.shape)).astype(np.float32)
    yield "float32 layer, update 0.0001", {"w": w}, {"w": moved}


def resnet_cases() -> Iterator[tuple[str, Tensors, Tensors]]:
    import workloads

    base, new = workloads.load(["resnet56-trainable"], log=lambda s: None)[0].items[0]
    yield "ResNet-56 diff, float32", base, new
    for label, kind in (("bfloat16", _bf16()), ("float16", np.float16)):
        yield f"ResNet-56 diff, {label}", {k: np.asarray(v).astype(kind) for k, v in base.items()}, {
            k: np.asarray(v).astype(kind) for k, v in new.items()
        }


def _best(fn, runs: int = 3) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(base: Tensors, new: Tensors) -> dict[str, dict[str, float]]:
    update = nnupdate.diff(base, new)
    megabytes = sum(np.asarray(v).nbytes for v in new.values()) / 1e6
    out = {}
    for combine in ("xor", "ulp"):
        codec = f"raw:combine={combine}"
        data = update.encode(codec)
        applied = nnupdate.apply(base, nnupdate.decode(data))
        assert all(np.array_equal(applied[k].view(np.uint8), np.asarray(new[k]).view(np.uint8)) for k in new), codec
        out[combine] = {
            "bits_per_param": 8 * len(data) / sum(np.asarray(v).size for v in new.values()),
            "encode_mb_s": megabytes / _best(lambda codec=codec: update.encode(codec)),
            "decode_mb_s": megabytes / _best(lambda data=data: nnupdate.apply(base, nnupdate.decode(data))),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--no-resnet", action="store_true", help="only the synthetic bfloat16 cases")
    args = parser.parse_args()
    cases = list(synthetic_cases())
    if not args.no_resnet:
        try:
            cases += list(resnet_cases())
        except (FileNotFoundError, OSError) as exc:
            print(f"ResNet-56 cases skipped: {exc}", file=sys.stderr)
    results = {name: measure(base, new) for name, base, new in cases}
    if args.json:
        print(json.dumps(results, indent=1))
        return
    print("| case | XOR + zstd bits/param | ULP + ctx bits/param | ratio | enc MB/s (xor / ulp) | dec MB/s (xor / ulp) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        x, u = r["xor"], r["ulp"]
        print(
            f"| {name} | {x['bits_per_param']:.3f} | {u['bits_per_param']:.3f} | {u['bits_per_param'] / x['bits_per_param']:.3f} "
            f"| {x['encode_mb_s']:.0f} / {u['encode_mb_s']:.0f} | {x['decode_mb_s']:.0f} / {u['decode_mb_s']:.0f} |"
        )


if __name__ == "__main__":
    main()
