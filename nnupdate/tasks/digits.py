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
