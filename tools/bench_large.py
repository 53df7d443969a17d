"""Large checkpoints through the CLI: wall time and peak memory of encode and apply.

Makes a transformer-shaped pair of checkpoints (``--params`` parameters in 1024-wide
attention and MLP matrices, random weights, a small dense update) as safetensors and
as .pt in a temporary directory, then runs ``nnupdate encode`` and ``nnupdate apply`` on
them as a user would, each in a fresh process, and reports wall seconds and the child's
peak RSS next to the checkpoint's size. What it measures is the whole command (reading,
diff, rate control, coding, writing), not the codec alone.

    python tools/bench_large.py                      # 120M parameters, uniform and ctx:quant=fast
    python tools/bench_large.py --params 30e6 --codecs uniform --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

WIDTH = 1024
#: one layer: q, k, v, o (WIDTH x WIDTH), up and down (2.75 WIDTH), a norm vector
LAYER = 4 * WIDTH * WIDTH + 2 * WIDTH * (11 * WIDTH // 4) + WIDTH
CLI = "import sys; from nnupdate.cli import main; sys.exit(main(sys.argv[1:]))"


def checkpoints(params: float, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    g = np.random.default_rng(seed)
    layers = max(1, round(params / LAYER))
    shapes = {"q": (WIDTH, WIDTH), "k": (WIDTH, WIDTH), "v": (WIDTH, WIDTH), "o": (WIDTH, WIDTH)}
    shapes |= {"up": (11 * WIDTH // 4, WIDTH), "down": (WIDTH, 11 * WIDTH // 4), "norm": (WIDTH,)}
    base = {
        f"model.layers.{i}.{k}.weight": g.standard_normal(s, dtype=np.float32)
        for i in range(layers)
        for k, s in shapes.items()
    }
    new = {k: v + np.float32(1e-3) * g.standard_normal(v.shape, dtype=np.float32) for k, v in base.items()}
    return base, new


def _run(args: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of ``nnupdate *args`` in a fresh process."""
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", CLI, *args], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"nnupdate {' '.join(args)} failed ({child.returncode})")
    return seconds, usage.ru_maxrss / 1024  # KB on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=float, default=120e6)
    parser.add_argument("--codecs", default="uniform,ctx:quant=fast")
    parser.add_argument("--formats", default="safetensors,pt")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    base, new = checkpoints(args.params)
    params = sum(v.size for v in base.values())
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for fmt in args.formats.split(","):
            if fmt == "safetensors":
                from safetensors.numpy import save_file

                save_file(base, str(d / "base.safetensors"))
                save_file(new, str(d / "new.safetensors"))
            else:
                import torch

                torch.save({k: torch.from_numpy(v) for k, v in base.items()}, d / "base.pt")
                torch.save({k: torch.from_numpy(v) for k, v in new.items()}, d / "new.pt")
            size_mb = (d / f"base.{fmt}").stat().st_size / 1e6
            for codec in args.codecs.split(","):
                update = d / "u.nnu"
                enc_s, enc_mb = _run(
                    ["encode", str(d / f"base.{fmt}"), str(d / f"new.{fmt}"), "-o", str(update), "--codec", codec]
                )
                app_s, app_mb = _run(["apply", str(d / f"base.{fmt}"), str(update), "-o", str(d / f"out.{fmt}")])
                row = {
                    "format": fmt, "codec": codec, "params": params, "checkpoint_MB": size_mb,
                    "update_MB": update.stat().st_size / 1e6, "encode_s": enc_s, "apply_s": app_s,
                    "encode_peak_MB": enc_mb, "apply_peak_MB": app_mb,
                }  # fmt: skip
                rows.append(row)
                print(
                    f"{fmt:12s} {codec:18s} {params / 1e6:.0f}M params, checkpoint {size_mb:.0f} MB -> update {row['update_MB']:.1f} MB; "
                    f"encode {enc_s:.1f} s ({enc_mb:.0f} MB peak), apply {app_s:.1f} s ({app_mb:.0f} MB peak)",
                    flush=True,
                )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
