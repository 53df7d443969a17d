"""scikit-learn's bundled 8x8 digits with a small CNN: the embedded default task.

Nothing is downloaded: the 1,797 digit images ship inside scikit-learn. Everything is
seeded so runs are reproducible.
"""

from __future__ import annotations

from typing import Any

import numpy as np

NUM_CLASSES = 10


def load_arrays(seed: int = 0, test_fraction: float = 0.25) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test); images as float32 (N, 1, 8, 8) scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(len(y) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def make_model(seed: int = 0) -> Any:
    """A small CNN (about 12K parameters) with BatchNorm, so updates include norm statistics."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, NUM_CLASSES),
    )


def train(model: Any, x: np.ndarray, y: np.ndarray, *, steps: int, lr: float = 0.05, batch_size: int = 32, seed: int = 0, momentum: float = 0.9) -> float:
    """Mini-batch SGD for ``steps`` steps; returns the mean loss of the last 10 steps."""
    import torch
    from torch import nn

    generator = np.random.default_rng(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    losses = []
    for _ in range(steps):
        idx = torch.from_numpy(generator.choice(len(y), size=min(batch_size, len(y)), replace=False))
        optimizer.zero_grad()
        loss = loss_fn(model(xt[idx]), yt[idx])
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses[-10:])) if losses else 0.0


def evaluate(model: Any, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) in eval mode."""
    import torch
    from torch import nn

    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(x))
        loss = float(nn.functional.cross_entropy(logits, torch.from_numpy(y)))
        accuracy = float((logits.argmax(1).numpy() == y).mean())
    return accuracy, loss


def logits(model: Any, x: np.ndarray) -> np.ndarray:
    import torch

    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


# ----------------------------------------------------------------------------- federated splits
#
# The task plug-in interface used by ``nnupdate.fl``: make_model(seed),
# client_datasets(num_clients, split=..., alpha=..., seed=...), test_dataset(seed).


def split_indices(
    y: np.ndarray,
    num_clients: int,
    *,
    split: str = "dirichlet",
    alpha: float = 0.5,
    shards_per_client: int = 2,
    seed: int = 0,
    min_size: int = 8,
) -> list[np.ndarray]:
    """Indices of each client's examples.

    ``iid``: a seeded random partition into equal parts. ``dirichlet``: for every class,
    the class's examples are divided among clients in proportions drawn from
    Dirichlet(alpha) (small alpha = more skew; Hsu et al. 2019); redrawn (bounded) until
    every client holds at least ``min_size`` examples. ``shards``: examples sorted by
    label, cut into ``num_clients * shards_per_client`` shards, each client gets
    ``shards_per_client`` of them (McMahan et al. 2017).
    """
    from ..errors import InputError

    n = len(y)
    if num_clients < 1 or num_clients > n:
        raise InputError(f"num_clients must lie in [1, {n}], got {num_clients}")
    rng = np.random.default_rng(seed)
    if split == "iid":
        return [np.sort(part) for part in np.array_split(rng.permutation(n), num_clients)]
    if split == "shards":
        shards = num_clients * shards_per_client
        if shards > n:
            raise InputError(f"{shards} shards need at least {shards} examples")
        order = np.argsort(y, kind="stable")
        pieces = np.array_split(order, shards)
        assignment = rng.permutation(shards)
        return [
            np.sort(np.concatenate([pieces[s] for s in assignment[c * shards_per_client : (c + 1) * shards_per_client]]))
            for c in range(num_clients)
        ]
    if split != "dirichlet":
        raise InputError(f"unknown split {split!r}; choose iid, dirichlet or shards")
    if not alpha > 0:
        raise InputError(f"Dirichlet alpha must be > 0, got {alpha}")
    floor = min(min_size, n // num_clients)
    parts: list[list[int]] = []
    for _ in range(100):
        parts = [[] for _ in range(num_clients)]
        for label in np.unique(y):
            members = rng.permutation(np.flatnonzero(y == label))
            shares = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(np.int64)
            for client, chunk in enumerate(np.split(members, cuts)):
                parts[client].extend(chunk.tolist())
        if min(len(p) for p in parts) >= floor:
            break
    else:
        raise InputError(f"could not give every client {floor} examples with alpha={alpha}; raise alpha or use fewer clients")
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def client_datasets(
    num_clients: int = 10,
    *,
    split: str = "dirichlet",
    alpha: float = 0.5,
    seed: int = 0,
    shards_per_client: int = 2,
    public: int = 0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The training set divided among ``num_clients`` clients (see :func:`split_indices`).

    ``public > 0`` first sets aside that many training examples as the shared unlabelled
    set of federated distillation (:func:`public_dataset`); the clients split the rest.
    """
    x, y, _, _ = load_arrays(seed=0)
    x, y = x[public:], y[public:]
    parts = split_indices(y, num_clients, split=split, alpha=alpha, shards_per_client=shards_per_client, seed=seed)
    return [(x[p], y[p]) for p in parts]


def public_dataset(size: int, seed: int = 0) -> np.ndarray:
    """The first ``size`` training images, unlabelled: the public set clients label in distillation."""
    x, _, _, _ = load_arrays(seed=0)
    return x[:size]


def test_dataset(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The held-out quarter of digits (the same for every split)."""
    _, _, x, y = load_arrays(seed=0)
    return x, y
