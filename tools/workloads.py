"""Benchmark workloads made by real training (nothing downloaded), cached as npz.

Each workload is a list of *items*, each a ``(base, new)`` pair of ``{name: float32
array}`` state dicts; a codec is measured on every item and the figures are summed over
items (total bytes / total parameters, sqrt(sum err^2 / sum norm^2)). Three families:

``resnet56-trainable`` / ``resnet56-all``
    ``../shared/data/resnet56_cifar100.pt`` (NNCodec 2's ResNet-56 with bottleneck
    blocks, CIFAR-100) fine-tuned ``RESNET_STEPS`` SGD steps on scikit-learn's digits
    upscaled to 32x32x3. The 100-class head is *reused*: the logits of its first 10
    outputs are the digit classes (so ``fc`` keeps its shape and the diff is a genuine
    checkpoint diff; rows 10..99 only move through weight decay). ``-trainable`` holds
    the weights and biases; ``-all`` adds the BatchNorm running statistics and the
    int64 ``num_batches_tracked`` counters.
``fedavg-early`` / ``fedavg-mid`` / ``fedavg-late``
    FedAvg on the small CNN of :mod:`nnupdate.tasks.digits`, the digits split across
    10 clients by a Dirichlet(alpha=0.5) label split; the updates (client model after
    local training minus the global model it started from, all float tensors of the
    state dict, BatchNorm statistics included) of ``FED_CLIENTS`` clients at an early,
    a middle and a late round.
``transformer-adamw``
    A 4-layer transformer encoder (width 128, 8 row tokens of the 8x8 digits) trained
    with AdamW on digits 0-4, then fine-tuned ``TFM_FINETUNE_STEPS`` AdamW steps on all
    ten classes: the kind of update most fine-tuning produces today (Adam's steps are
    close to sign-like, attention and MLP matrices instead of convolutions). Not one
    of issue 7's workloads; a check that the codecs are not tuned to SGD and CNNs.
``gennorm-b0.5`` / ``gennorm-b1`` / ``gennorm-b2``
    i.i.d. generalized-normal samples (a sanity check where the order-0 model is exact).

Run ``python tools/workloads.py`` to generate (a few minutes on 2 cores) and print a
summary; the benchmark calls :func:`load` which generates on first use.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
RESNET_CHECKPOINT = SHARED / "data" / "resnet56_cifar100.pt"
DEFAULT_CACHE = REPO / ".cache" / "workloads"

#: bump when generation changes, so stale caches are regenerated
VERSION = 1
RESNET_STEPS = 40
RESNET_LR = 0.01
RESNET_WEIGHT_DECAY = 5e-4
FED_CLIENTS_TOTAL = 10
FED_ALPHA = 0.5
FED_ROUNDS = 30
FED_LOCAL_STEPS = 20
FED_LR = 0.05
FED_SNAPSHOTS = {"fedavg-early": 1, "fedavg-mid": 15, "fedavg-late": 30}
FED_CLIENTS = (0, 3, 6)
GENNORM_SHAPE = (256, 512)
TFM_WIDTH = 128
TFM_LAYERS = 4
TFM_PRETRAIN_STEPS = 300
TFM_FINETUNE_STEPS = 30

Item = tuple[dict[str, np.ndarray], dict[str, np.ndarray]]


@dataclass
class Workload:
    """A named list of (base, new) state-dict pairs."""

    name: str
    description: str
    items: list[Item]

    @property
    def num_parameters(self) -> int:
        return sum(int(v.size) for _, new in self.items for v in new.values())

    def float_deltas(self) -> list[dict[str, np.ndarray]]:
        """Per item, the float32 deltas ``new - base`` of the float tensors (what NNCodec is given)."""
        out = []
        for base, new in self.items:
            out.append(
                {
                    k: (new[k].astype(np.float64) - base[k].astype(np.float64)).astype(np.float32)
                    for k in new
                    if new[k].dtype.kind == "f"
                }
            )
        return out


# ----------------------------------------------------------------------------- ResNet-56


def build_resnet56(num_classes: int = 100):  # type: ignore[no-untyped-def]
    """ResNet-56 for CIFAR with bottleneck blocks, matching the checkpoint's keys and shapes.

    Stages of 6 bottleneck blocks (1x1 -> 3x3 -> 1x1, expansion 4) with 16/32/64 planes;
    the first block of each stage has a 1x1 ``downsample``; stride 2 in the 3x3 conv of
    the first block of stages 2 and 3. (6 blocks x 3 layers x 3 stages + stem + fc = 56.)
    """
    import torch
    from torch import nn

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            residual = self.downsample(x) if self.downsample is not None else x
            return self.relu(out + residual)

    class ResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inplanes = 16
            self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            self.relu = nn.ReLU(inplace=True)
            self.layer1 = self._stage(16, 1)
            self.layer2 = self._stage(32, 2)
            self.layer3 = self._stage(64, 2)
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(64 * 4, num_classes)

        def _stage(self, planes: int, stride: int) -> nn.Sequential:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4)
            )
            blocks = [Bottleneck(self.inplanes, planes, stride, downsample)]
            self.inplanes = planes * 4
            blocks += [Bottleneck(self.inplanes, planes, 1, None) for _ in range(5)]
            return nn.Sequential(*blocks)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.relu(self.bn1(self.conv1(x)))
            x = self.layer3(self.layer2(self.layer1(x)))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return ResNet()


def digits_32x32x3(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """sklearn digits upscaled 8x8 -> 32x32 (bilinear), replicated to 3 channels, standardised."""
    import torch

    from nnupdate.tasks.digits import load_arrays

    x, y, _, _ = load_arrays(seed)
    big = torch.nn.functional.interpolate(torch.from_numpy(x), size=(32, 32), mode="bilinear", align_corners=False)
    big = big.repeat(1, 3, 1, 1)
    big = (big - big.mean()) / big.std()
    return big.numpy().astype(np.float32), y


def _state(model) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def make_resnet56(log: Callable[[str], None] = print) -> tuple[Item, Item]:
    """(trainable item, all-tensors item) of the ResNet-56 fine-tuning diff."""
    import torch

    if not RESNET_CHECKPOINT.exists():
        raise FileNotFoundError(f"{RESNET_CHECKPOINT} is missing (the ResNet-56 workload needs ../shared)")
    torch.manual_seed(0)
    state = torch.load(RESNET_CHECKPOINT, weights_only=True, map_location="cpu")
    model = build_resnet56()
    model.load_state_dict(state, strict=True)
    base = _state(model)
    x, y = digits_32x32x3()
    rng = np.random.default_rng(0)
    opt = torch.optim.SGD(model.parameters(), lr=RESNET_LR, momentum=0.9, weight_decay=RESNET_WEIGHT_DECAY)
    model.train()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    started = time.perf_counter()
    for step in range(RESNET_STEPS):
        idx = torch.from_numpy(rng.choice(len(y), size=32, replace=False))
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xt[idx])[:, :10], yt[idx])
        loss.backward()
        opt.step()
        if step % 10 == 9:
            log(f"  resnet56 step {step + 1}/{RESNET_STEPS} loss {float(loss.detach()):.3f} ({time.perf_counter() - started:.0f}s)")
    new = _state(model)
    trainable = {n for n, _ in model.named_parameters()}
    item_trainable = ({k: base[k] for k in trainable}, {k: new[k] for k in trainable})
    return item_trainable, (base, new)


# ----------------------------------------------------------------------------- FedAvg


def dirichlet_split(labels: np.ndarray, clients: int, alpha: float, seed: int = 0) -> list[np.ndarray]:
    """Indices per client: for each class, proportions ~ Dirichlet(alpha) over clients."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(clients)]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cuts = (np.cumsum(rng.dirichlet([alpha] * clients))[:-1] * len(idx)).astype(int)
        for k, chunk in enumerate(np.split(idx, cuts)):
            parts[k].extend(chunk.tolist())
    return [np.array(sorted(p), dtype=np.int64) for p in parts]


def make_fedavg(log: Callable[[str], None] = print) -> dict[str, list[Item]]:
    """Client updates at the rounds of ``FED_SNAPSHOTS`` for the clients in ``FED_CLIENTS``."""
    import torch

    from nnupdate.tasks import digits

    torch.manual_seed(0)
    torch.set_num_threads(1)
    x, y, _, _ = digits.load_arrays(0)
    splits = dirichlet_split(y, FED_CLIENTS_TOTAL, FED_ALPHA)
    model = digits.make_model(0)
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    wanted = {r: name for name, r in FED_SNAPSHOTS.items()}
    out: dict[str, list[Item]] = {name: [] for name in FED_SNAPSHOTS}
    started = time.perf_counter()
    for rnd in range(1, FED_ROUNDS + 1):
        states, weights = [], []
        for k, idx in enumerate(splits):
            if len(idx) == 0:
                continue
            model.load_state_dict(global_state)
            digits.train(model, x[idx], y[idx], steps=FED_LOCAL_STEPS, lr=FED_LR, seed=rnd * 100 + k)
            local = {n: v.detach().clone() for n, v in model.state_dict().items()}
            states.append(local)
            weights.append(len(idx))
            if rnd in wanted and k in FED_CLIENTS:
                base = {n: v.numpy().copy() for n, v in global_state.items() if v.is_floating_point()}
                new = {n: v.numpy().copy() for n, v in local.items() if v.is_floating_point()}
                out[wanted[rnd]].append((base, new))
        w = np.asarray(weights, dtype=np.float64) / sum(weights)
        global_state = {
            n: (sum(float(wi) * s[n].double() for wi, s in zip(w, states)).to(global_state[n].dtype))
            if global_state[n].is_floating_point()
            else states[0][n]
            for n in global_state
        }
        if rnd % 10 == 0:
            model.load_state_dict(global_state)
            acc, _ = digits.evaluate(model, *digits.load_arrays(0)[2:])
            log(f"  fedavg round {rnd}/{FED_ROUNDS} test accuracy {acc:.3f} ({time.perf_counter() - started:.0f}s)")
    return out


# ----------------------------------------------------------------------------- transformer


def make_transformer(log: Callable[[str], None] = print) -> Item:
    """(base, new) of the AdamW fine-tuning of a small transformer classifier."""
    import torch
    from torch import nn

    from nnupdate.tasks import digits

    torch.manual_seed(0)
    torch.set_num_threads(1)

    class RowTransformer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(8, TFM_WIDTH)
            self.position = nn.Parameter(0.02 * torch.randn(8, TFM_WIDTH))
            layer = nn.TransformerEncoderLayer(TFM_WIDTH, 4, 4 * TFM_WIDTH, dropout=0.0, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, TFM_LAYERS, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(TFM_WIDTH)
            self.head = nn.Linear(TFM_WIDTH, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            tokens = self.embed(x.reshape(-1, 8, 8)) + self.position
            return self.head(self.norm(self.encoder(tokens).mean(1)))

    x, y, _, _ = digits.load_arrays(0)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model = RowTransformer()
    rng = np.random.default_rng(0)

    def train(pool: np.ndarray, steps: int, lr: float) -> None:
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
        for _ in range(steps):
            idx = torch.from_numpy(rng.choice(pool, size=64, replace=False))
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()

    started = time.perf_counter()
    train(np.flatnonzero(y < 5), TFM_PRETRAIN_STEPS, 1e-3)
    base = _state(model)
    train(np.arange(len(y)), TFM_FINETUNE_STEPS, 3e-4)
    log(f"  transformer trained ({time.perf_counter() - started:.0f}s)")
    return base, _state(model)


# ----------------------------------------------------------------------------- GenNorm


def gennorm_item(beta: float, seed: int = 0) -> Item:
    from scipy.stats import gennorm

    values = gennorm.rvs(beta, scale=1e-3, size=GENNORM_SHAPE, random_state=seed).astype(np.float32)
    return {"x": np.zeros(GENNORM_SHAPE, np.float32)}, {"x": values}


# ----------------------------------------------------------------------------- registry + cache

DESCRIPTIONS = {
    "resnet56-trainable": "ResNet-56 fine-tuning diff, weights and biases",
    "resnet56-all": "ResNet-56 fine-tuning diff, all tensors (BN stats, int counters)",
    "fedavg-early": f"FedAvg CNN client updates, round {FED_SNAPSHOTS['fedavg-early']}, {len(FED_CLIENTS)} clients",
    "fedavg-mid": f"FedAvg CNN client updates, round {FED_SNAPSHOTS['fedavg-mid']}, {len(FED_CLIENTS)} clients",
    "fedavg-late": f"FedAvg CNN client updates, round {FED_SNAPSHOTS['fedavg-late']}, {len(FED_CLIENTS)} clients",
    "transformer-adamw": "transformer encoder, AdamW fine-tuning diff",
    "gennorm-b0.5": "iid GenNorm beta=0.5",
    "gennorm-b1": "iid GenNorm beta=1 (Laplace)",
    "gennorm-b2": "iid GenNorm beta=2 (Gaussian)",
}
NAMES = tuple(DESCRIPTIONS)
#: the realistic workloads issue 7's targets are stated on
REALISTIC = ("resnet56-trainable", "fedavg-early", "fedavg-mid", "fedavg-late")


#: the constants each workload family is generated from (its cache tag hashes them)
FAMILY_PREFIXES = {"resnet56": ("RESNET_",), "fedavg": ("FED_",), "transformer": ("TFM_",), "gennorm": ("GENNORM_",)}


def _config_tag(name: str) -> str:
    """Hash of VERSION and the constants of ``name``'s family: changing one family's
    settings regenerates that family only."""
    prefixes = next(p for family, p in FAMILY_PREFIXES.items() if name.startswith(family))
    config = {
        k: v
        for k, v in globals().items()
        if (k == "VERSION" or k.startswith(prefixes)) and isinstance(v, (int, float, str, tuple, dict))  # not paths
    }
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _path(cache: Path, name: str) -> Path:
    return cache / f"{name}.{_config_tag(name)}.npz"


def _save(path: Path, items: list[Item]) -> None:
    from nnupdate.io import atomic_write

    arrays: dict[str, np.ndarray] = {}
    for i, (base, new) in enumerate(items):
        for side, tensors in (("base", base), ("new", new)):
            for k, v in tensors.items():
                arrays[f"{i}|{side}|{k}"] = np.ascontiguousarray(v)
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buf.getvalue())


def _load(path: Path) -> list[Item]:
    items: dict[int, Item] = {}
    with np.load(path, allow_pickle=False) as z:
        for key in z.files:
            i, side, name = key.split("|", 2)
            pair = items.setdefault(int(i), ({}, {}))
            pair[0 if side == "base" else 1][name] = z[key]
    return [items[i] for i in sorted(items)]


def _generate(names: Iterable[str], cache: Path, log: Callable[[str], None]) -> None:
    names = list(names)
    if any(n.startswith("resnet56") for n in names):
        log("generating resnet56 workloads (fine-tuning on digits 32x32x3)")
        trainable, everything = make_resnet56(log)
        _save(_path(cache, "resnet56-trainable"), [trainable])
        _save(_path(cache, "resnet56-all"), [everything])
    if any(n.startswith("fedavg") for n in names):
        log("generating fedavg workloads (10 non-IID clients)")
        for name, items in make_fedavg(log).items():
            _save(_path(cache, name), items)
    if "transformer-adamw" in names:
        log("generating the transformer workload (AdamW on digits)")
        _save(_path(cache, "transformer-adamw"), [make_transformer(log)])
    for n in names:
        if n.startswith("gennorm-b"):
            _save(_path(cache, n), [gennorm_item(float(n.removeprefix("gennorm-b")))])


def load(names: Iterable[str] = NAMES, cache: Path | str = DEFAULT_CACHE, log: Callable[[str], None] = print) -> list[Workload]:
    """The named workloads, generated into ``cache`` on first use."""
    cache = Path(cache)
    names = list(names)
    unknown = [n for n in names if n not in DESCRIPTIONS]
    if unknown:
        raise KeyError(f"unknown workloads {unknown}; known: {', '.join(NAMES)}")
    missing = [n for n in names if not _path(cache, n).exists()]
    if missing:
        _generate(missing, cache, log)
    return [Workload(n, DESCRIPTIONS[n], _load(_path(cache, n))) for n in names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=str(DEFAULT_CACHE))
    parser.add_argument("--workloads", default=",".join(NAMES))
    parser.add_argument("--force", action="store_true", help="regenerate even if cached")
    args = parser.parse_args(argv)
    names = [n for n in args.workloads.split(",") if n]
    if args.force:
        for n in names:
            _path(Path(args.cache), n).unlink(missing_ok=True)
    for w in load(names, args.cache):
        deltas = w.float_deltas()
        norm = np.sqrt(sum(float(np.sum(d.astype(np.float64) ** 2)) for item in deltas for d in item.values()))
        zeros = sum(int(np.sum(d == 0)) for item in deltas for d in item.values())
        print(f"{w.name:20s} items={len(w.items)} params={w.num_parameters:>8d} |delta|={norm:.4g} zeros={zeros}  {w.description}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
