"""Federated distillation (CFD-style, Sattler et al. 2020; Jeong et al. 2018) over .nnu bytes.

Clients never send weights. Each keeps its own model; per round a selected client
(1) distils towards the server's aggregated soft labels on the shared public set (KL),
(2) trains on its private data, (3) predicts soft labels on the public set and sends them.
The server averages what it decoded and broadcasts the average to every client.

Codec specs in this mode: ``none`` (float32 labels, one lossless .nnu), or
``labels:bits=B[,delta=1]`` — the soft-label codec of :mod:`nnupdate.distill`: Q_B simplex
quantization, coded against the link's previous round (``delta=1``, the CFD delta coding)
or as a full frame every round (``delta=0``). Both directions use the same spec.
Accuracy is the mean test accuracy of the clients' models. In-process engine only;
runs are not checkpointed (client models live in memory).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..errors import InputError, NNUpdateError, UnsupportedError
from .client import train_seed
from .config import FLConfig
from .messages import decode_full, encode_full
from .task import default_evaluate, load_task, local_train, single_thread, test_data

PUBLIC_SIZE = 400


def check_available() -> None:
    try:
        from .. import distill  # noqa: F401
    except ImportError:
        raise UnsupportedError("mode 'distill' needs nnupdate.distill (the soft-label codec)") from None


def parse(spec: str) -> tuple[int, bool]:
    """``none`` -> (0, False); ``labels:bits=B[,delta=0|1]`` -> (B, delta)."""
    name, _, rest = spec.strip().partition(":")
    if name == "none" and not rest:
        return 0, False
    if name != "labels":
        raise InputError(f"mode distill codes soft labels: use 'none' or 'labels:bits=B[,delta=0|1]', not {spec!r}")
    bits, delta = 2, True
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, _, value = item.partition("=")
        try:
            if key == "bits":
                bits = int(value)
            elif key == "delta":
                delta = value.lower() in ("1", "true", "yes", "on")
            else:
                raise ValueError(item)
        except ValueError:
            raise InputError(f"labels: bad option {item!r}; options: bits=INT, delta=0|1") from None
    if bits < 1:
        raise InputError("labels: bits must be >= 1")
    return bits, delta


class _Link:
    """One direction of one link: encoder at the sender, decoder at the receiver."""

    def __init__(self, bits: int, delta: bool) -> None:
        self.bits = bits
        if bits:
            from ..distill import LabelDecoder, LabelEncoder

            self.encoder = LabelEncoder(bits, keyframe_interval=0 if delta else 1)
            self.decoder = LabelDecoder()

    def encode(self, probs: np.ndarray, round: int) -> bytes:
        if not self.bits:
            return encode_full({"labels": probs.astype(np.float32)}, round=round)
        return self.encoder.encode(probs, round)

    def decode(self, data: bytes) -> np.ndarray:
        if not self.bits:
            return decode_full(data)[0]["labels"]
        return np.asarray(self.decoder.decode(data), dtype=np.float32)


def _distil(model: Any, x: np.ndarray, targets: np.ndarray, *, lr: float, batch_size: int, seed: int) -> None:
    """One epoch of KL(targets || softmax(model)) on the public set."""
    import torch
    from torch import nn

    rng = np.random.default_rng(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    xt, tt = torch.from_numpy(x), torch.from_numpy(targets)
    model.train()
    order = torch.from_numpy(rng.permutation(len(x)))
    for start in range(0, len(x), batch_size):
        idx = order[start : start + batch_size]
        optimizer.zero_grad()
        nn.functional.kl_div(nn.functional.log_softmax(model(xt[idx]), dim=1), tt[idx], reduction="batchmean").backward()
        optimizer.step()


def _soft_labels(model: Any, x: np.ndarray) -> np.ndarray:
    import torch

    model.eval()
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(x)), dim=1).numpy().astype(np.float32)


def run_distill(config: FLConfig, on_round: Any = None) -> list[dict[str, Any]]:
    """Rounds of federated distillation; returns records in the rounds.jsonl schema."""
    check_available()
    bits, delta = parse(config.codec)
    task = load_task(config.task)
    if not callable(getattr(task, "public_dataset", None)):
        raise InputError(f"task {config.task!r} has no public_dataset(size, seed) for distillation")
    x_pub = np.asarray(task.public_dataset(PUBLIC_SIZE, config.seed))
    parts = task.client_datasets(config.clients, split=config.split, alpha=config.alpha, seed=config.seed, public=PUBLIC_SIZE)
    x_test, y_test = test_data(config.task, config.seed)
    evaluate = getattr(task, "evaluate", None) or default_evaluate
    with single_thread():
        models = [task.make_model(config.seed * 100 + k) for k in range(config.clients)]
    uplinks = [_Link(bits, delta) for _ in range(config.clients)]
    downlink = _Link(bits, delta)  # every client decodes the same broadcast: one decoder state models them all
    rng = np.random.default_rng(config.seed)
    consensus: np.ndarray | None = None
    history: list[dict[str, Any]] = []
    cum_up = cum_down = 0
    for t in range(1, config.rounds + 1):
        chosen = np.sort(rng.choice(config.clients, size=config.per_round, replace=False))
        drops = rng.random(config.per_round) < config.dropout
        received, rejected, dropped = [], [], []
        bytes_up, encode_s, decode_s, losses = 0, 0.0, 0.0, []
        for k, drop in zip(chosen.tolist(), drops.tolist()):
            if drop:
                dropped.append(k)
                continue
            x, y = parts[k]
            seed = train_seed(config, t, k)
            with single_thread():
                if consensus is not None:
                    _distil(models[k], x_pub, consensus, lr=config.lr, batch_size=config.batch_size, seed=seed + 1)
                losses.append(local_train(task, models[k], x, y, epochs=config.local_epochs, lr=config.lr, batch_size=config.batch_size, seed=seed))
                probs = _soft_labels(models[k], x_pub)
            started = time.perf_counter()
            data = uplinks[k].encode(probs, t)
            encode_s += time.perf_counter() - started
            bytes_up += len(data)
            started = time.perf_counter()
            try:
                received.append(uplinks[k].decode(data))
            except NNUpdateError as exc:
                rejected.append({"client": k, "reason": f"{type(exc).__name__}: {exc}"})
            decode_s += time.perf_counter() - started
        bytes_down = 0
        skipped = len(received) < config.min_updates
        if not skipped:
            aggregate = np.mean(np.stack(received), axis=0).astype(np.float32)
            started = time.perf_counter()
            frame = downlink.encode(aggregate, t)
            encode_s += time.perf_counter() - started
            bytes_down = len(frame) * config.clients  # broadcast to every client
            started = time.perf_counter()
            consensus = downlink.decode(frame)
            decode_s += time.perf_counter() - started
        with single_thread():
            scores = [evaluate(m, x_test, y_test) for m in models]
        cum_up += bytes_up
        cum_down += bytes_down
        record = {
            "config": config.label,
            "round": t,
            "accuracy": float(np.mean([a for a, _ in scores])),
            "loss": float(np.mean([lo for _, lo in scores])),
            "bytes_up": bytes_up,
            "bytes_down": bytes_down,
            "encode_s": encode_s,
            "decode_s": decode_s,
            "selected": chosen.tolist(),
            "valid": len(received),
            "dropped": dropped,
            "rejected": rejected,
            "skipped": skipped,
            "train_loss": float(np.mean(losses)) if losses else None,
            "upstream_rel_error": None,
            "cum_bytes_up": cum_up,
            "cum_bytes_down": cum_down,
        }
        history.append(record)
        if on_round is not None:
            on_round(record)
    return history
