#!/usr/bin/env python
"""A real federated-distillation (FD) run on scikit-learn's digits, saving every soft label.

Ten clients hold non-IID private shards (class proportions drawn from Dirichlet(alpha))
and share an unlabelled public set. Each client keeps its own MLP across rounds. Per
round every client (1) from round 1 on, distils towards the server's aggregated soft
labels of the previous round on the public set (KL divergence), (2) trains on its
private data (round 0: ``--warmup`` times longer), then (3) predicts soft labels on the public set and sends them. The server
averages them and broadcasts the average (Jeong et al. 2018; Sattler et al., CFD).

With ``--bits B`` the labels really travel as nnupdate soft-label frames (Q_b + delta
coding, both directions) and the models train on what was decoded; the saved labels are
always the exact float32 client outputs so ``tools/bench_labels.py`` can code them any
way it likes.

Output directory::

    round_000.npz ... round_NNN.npz   client_k: (P, 10) float32 exact soft labels; server: the mean
                                      of what the server received (decoded labels with --bits)
    public.npz                        x_public, y_public (for reference only), x_test, y_test
    run.json                          configuration, per-round client accuracies and (with --bits) bytes

Usage: python tools/fd_run.py --out runs/fd [--rounds 30] [--bits 0] [--seed 0]
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from nnupdate.io import atomic_write
from nnupdate.tasks.digits import NUM_CLASSES


def make_mlp(seed: int) -> Any:
    """64-64-10 MLP on flattened 8x8 digits: small enough for 10 clients x 30 rounds on 2 cores."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, NUM_CLASSES))


def dirichlet_split(y: np.ndarray, clients: int, alpha: float, rng: np.random.Generator, min_size: int = 10) -> list[np.ndarray]:
    """Per class, divide its examples among clients in Dirichlet(alpha) proportions (Hsu et al. 2019)."""
    for _ in range(100):
        parts: list[list[int]] = [[] for _ in range(clients)]
        for c in range(NUM_CLASSES):
            idx = rng.permutation(np.flatnonzero(y == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(clients, alpha))) * len(idx)).astype(int)[:-1]
            for k, piece in enumerate(np.split(idx, cuts)):
                parts[k].extend(piece.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.array(sorted(p)) for p in parts]
    raise RuntimeError("could not draw a split with enough examples per client")


def train_ce(model: Any, opt: Any, x: Any, y: Any, steps: int, batch: int, gen: np.random.Generator) -> None:
    import torch
    from torch import nn

    model.train()
    for _ in range(steps):
        idx = torch.from_numpy(gen.choice(len(y), size=min(batch, len(y)), replace=False))
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()


def train_kd(model: Any, opt: Any, x: Any, targets: Any, steps: int, batch: int, gen: np.random.Generator) -> None:
    """Distil towards soft targets: minimise KL(targets || softmax(model))."""
    import torch
    from torch import nn

    model.train()
    for _ in range(steps):
        idx = torch.from_numpy(gen.choice(len(targets), size=min(batch, len(targets)), replace=False))
        opt.zero_grad()
        logp = nn.functional.log_softmax(model(x[idx]), dim=1)
        nn.functional.kl_div(logp, targets[idx], reduction="batchmean").backward()
        opt.step()


def soft_labels(model: Any, x: Any) -> np.ndarray:
    import torch

    model.eval()
    with torch.no_grad():
        return torch.softmax(model(x), dim=1).numpy().astype(np.float32)


def accuracy(model: Any, x: Any, y: np.ndarray) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1).numpy() == y).mean())


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write(path, buffer.getvalue())


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from sklearn.datasets import load_digits

    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    digits = load_digits()
    x_all = (digits.images.astype(np.float32) / 16.0).reshape(-1, 64)
    y_all = digits.target.astype(np.int64)
    order = rng.permutation(len(y_all))
    test, public, private = order[: args.test], order[args.test : args.test + args.public], order[args.test + args.public :]
    shards = dirichlet_split(y_all[private], args.clients, args.alpha, rng)
    x_pub = torch.from_numpy(x_all[public])
    x_test_t = torch.from_numpy(x_all[test])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_npz(out / "public.npz", x_public=x_all[public], y_public=y_all[public], x_test=x_all[test], y_test=y_all[test])

    clients = []
    for k, shard in enumerate(shards):
        model = make_mlp(args.seed * 100 + k)
        opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
        clients.append(
            {
                "model": model,
                "opt": opt,
                "x": torch.from_numpy(x_all[private][shard]),
                "y": torch.from_numpy(y_all[private][shard]),
                "gen": np.random.default_rng(args.seed * 1000 + k),
            }
        )
    coded = args.bits > 0
    if coded:
        from nnupdate.distill import LabelDecoder, LabelEncoder

        up_enc = [LabelEncoder(args.bits, keyframe_interval=args.keyframe) for _ in clients]
        up_dec = [LabelDecoder() for _ in clients]
        down_enc = LabelEncoder(args.bits, keyframe_interval=args.keyframe)
        down_dec = LabelDecoder()  # every client decodes the same broadcast; one copy suffices here
    history: list[dict[str, Any]] = []
    server: np.ndarray | None = None
    started = time.perf_counter()
    for r in range(args.rounds):
        received = []
        labels = {}
        up_bytes = 0
        for k, c in enumerate(clients):
            if server is not None:
                train_kd(c["model"], c["opt"], x_pub, torch.from_numpy(server), args.distill_steps, args.batch, c["gen"])
            steps = args.local_steps * (args.warmup if r == 0 else 1)
            train_ce(c["model"], c["opt"], c["x"], c["y"], steps, args.batch, c["gen"])
            p = soft_labels(c["model"], x_pub)
            labels[f"client_{k}"] = p
            if coded:
                frame = up_enc[k].encode(p, r)
                up_bytes += len(frame)
                received.append(up_dec[k].decode(frame))
            else:
                received.append(p)
        aggregate = np.mean(np.stack(received), axis=0).astype(np.float32)
        labels["server"] = aggregate
        down_bytes = 0
        if coded:
            frame = down_enc.encode(aggregate, r, full=False)
            down_bytes = len(frame)
            server = down_dec.decode(frame)
        else:
            server = aggregate
        save_npz(out / f"round_{r:03d}.npz", **labels)
        accs = [accuracy(c["model"], x_test_t, y_all[test]) for c in clients]
        consensus = float((aggregate.argmax(1) == y_all[public]).mean())
        history.append({"round": r, "client_accuracy": accs, "mean_accuracy": float(np.mean(accs)), "public_consensus_accuracy": consensus, "uplink_bytes": up_bytes, "downlink_bytes": down_bytes})
        if not args.quiet:
            extra = f", uplink {up_bytes} B, downlink {down_bytes} B" if coded else ""
            print(f"round {r:3d}: mean client test accuracy {np.mean(accs):.4f} (min {min(accs):.3f}), aggregate labels right on {consensus:.3f} of public{extra}  [{time.perf_counter() - started:.0f} s]", flush=True)
    summary = {
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "public_size": int(len(public)),
        "test_size": int(len(test)),
        "client_sizes": [int(len(s)) for s in shards],
        "history": history,
        "seconds": time.perf_counter() - started,
    }
    atomic_write(out / "run.json", json.dumps(summary, indent=1).encode())
    return summary


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/fd", help="output directory")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--public", type=int, default=800, help="public (unlabelled) set size")
    p.add_argument("--test", type=int, default=360, help="held-out test set size")
    p.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration of the non-IID split")
    p.add_argument("--local-steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=5, help="round 0 trains local-steps x this")
    p.add_argument("--distill-steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--bits", type=int, default=0, help="0: exact float labels; B: send Q_B frames with delta coding")
    p.add_argument("--keyframe", type=int, default=0, help="with --bits: force a full frame every N rounds (0: never)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    return p


if __name__ == "__main__":
    run(parser().parse_args())
