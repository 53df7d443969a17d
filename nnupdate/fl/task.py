"""The task plug-in: what model to train on which data.

A task is any importable module (or object) with::

    make_model(seed: int) -> torch.nn.Module
    client_datasets(num_clients: int, *, split: str, alpha: float, seed: int) -> list[(x, y)]
    test_dataset(seed: int) -> (x, y)

and optionally ``local_train(model, x, y, *, epochs, lr, batch_size, seed) -> float`` and
``evaluate(model, x, y) -> (accuracy, loss)``; the defaults below do mini-batch SGD on
cross-entropy, which fits any classifier. The default task is ``nnupdate.tasks.digits``.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any

import numpy as np

from ..errors import InputError

REQUIRED = ("make_model", "client_datasets", "test_dataset")


@lru_cache(maxsize=8)
def load_task(path: str) -> Any:
    """Import ``path`` (``package.module``) and check it offers the task interface."""
    try:
        module = importlib.import_module(path)
    except ImportError as exc:
        raise InputError(f"cannot import task module {path!r}: {exc}") from None
    missing = [name for name in REQUIRED if not callable(getattr(module, name, None))]
    if missing:
        raise InputError(f"task {path!r} lacks {', '.join(missing)}")
    return module


@lru_cache(maxsize=8)
def client_data(path: str, num_clients: int, split: str, alpha: float, seed: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Every client's (x, y), cached: the split is a pure function of its arguments."""
    parts = load_task(path).client_datasets(num_clients, split=split, alpha=alpha, seed=seed)
    if len(parts) != num_clients:
        raise InputError(f"task {path!r} returned {len(parts)} client datasets, expected {num_clients}")
    return tuple((np.asarray(x), np.asarray(y)) for x, y in parts)


@lru_cache(maxsize=8)
def test_data(path: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = load_task(path).test_dataset(seed)
    return np.asarray(x), np.asarray(y)


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread: results then do not depend on the host's core count or engine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def weights_of(model: Any) -> dict[str, np.ndarray]:
    from ..adapters.torch import from_state_dict

    return from_state_dict(model.state_dict())


def load_weights(model: Any, weights: Mapping[str, np.ndarray]) -> Any:
    from ..adapters.torch import to_state_dict

    model.load_state_dict(to_state_dict(weights))
    return model


def default_local_train(model: Any, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float, batch_size: int, seed: int) -> float:
    """``epochs`` passes of plain mini-batch SGD (seeded shuffles); returns the mean loss of the last epoch."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))
    model.train()
    losses: list[float] = []
    for _ in range(epochs):
        losses = []
        order = torch.from_numpy(rng.permutation(len(y)))
        for start in range(0, len(y), batch_size):
            idx = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    return float(np.mean(losses)) if losses else 0.0


def default_evaluate(model: Any, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    import torch
    from torch import nn

    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(np.ascontiguousarray(x)))
        loss = float(nn.functional.cross_entropy(logits, torch.from_numpy(np.ascontiguousarray(y))))
        accuracy = float((logits.argmax(1).numpy() == y).mean())
    return accuracy, loss


def local_train(task: Any, model: Any, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float, batch_size: int, seed: int) -> float:
    fn = getattr(task, "local_train", None) or default_local_train
    return float(fn(model, x, y, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed))


def evaluate(task: Any, weights: Mapping[str, np.ndarray], seed: int, task_path: str) -> tuple[float, float]:
    """(accuracy, loss) of ``weights`` on the task's test set."""
    model = load_weights(task.make_model(seed), weights)
    x, y = test_data(task_path, seed)
    fn = getattr(task, "evaluate", None) or default_evaluate
    with single_thread():
        accuracy, loss = fn(model, x, y)
    return float(accuracy), float(loss)
