"""An FL task whose model lives in bfloat16 (for tests/test_fl.py): a small MLP on the digits.

The harness must move, aggregate and apply bfloat16 weights as values; numpy sees
ml_dtypes' bfloat16 as kind "V", not a float, which once sent them down the integer path.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from nnupdate.tasks.digits import client_datasets, test_dataset

__all__ = ["client_datasets", "evaluate", "local_train", "make_model", "test_dataset"]


def make_model(seed: int) -> Any:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)).to(torch.bfloat16)


def local_train(model: Any, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float, batch_size: int, seed: int) -> float:
    torch.manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    inputs, labels = torch.from_numpy(x).to(torch.bfloat16), torch.from_numpy(y)
    loss = torch.zeros(())
    for _ in range(epochs):
        for start in range(0, len(x), batch_size):
            loss = torch.nn.functional.cross_entropy(model(inputs[start : start + batch_size]).float(), labels[start : start + batch_size])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return float(loss.detach())


def evaluate(model: Any, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    with torch.no_grad():
        out = model(torch.from_numpy(x).to(torch.bfloat16)).float()
    return float((out.argmax(1).numpy() == y).mean()), float(torch.nn.functional.cross_entropy(out, torch.from_numpy(y)))
