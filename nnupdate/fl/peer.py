"""NNCodec (Fraunhofer's MPEG NNC codec) as an upstream peer in ``fl compare``: ``nncodec:qp=-32``.

NNCodec pins numpy<2 and its own torch, so it runs in a separate venv through
``tools/nncodec_runner.py`` (a source checkout only; the package does not ship it). Each
round, every client's delta is coded by NNCodec in ONE worker call (its imports are paid
once per round). What crosses is NNCodec's own bitstream, so ``bytes_up`` counts its
length; the server is handed NNCodec's reconstruction (decoded by NNCodec inside the
worker) wrapped losslessly in a .nnu container, so validation and aggregation are the
same code as for every other codec. Error feedback uses the same reconstruction.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .. import dtypes
from ..errors import InputError
from ..format import Combine
from ..update import TensorChange, Update, encode_with_report
from .client import ClientReply, train_update
from .config import FLConfig
from .messages import ClientState
from .server import Assignment

PREFIX = "nncodec"


def is_peer(spec: str) -> bool:
    return spec.strip().split(":", 1)[0] == PREFIX


@dataclasses.dataclass(frozen=True)
class NNCodecOptions:
    qp: int = -32
    dq: bool = True
    lam: float = 0.0


def parse(spec: str) -> NNCodecOptions:
    """``nncodec:qp=-32,dq=1,lam=0`` -> options (qp: NNCodec's QP, step 2^(qp/4); dq: trellis quantization)."""
    _, _, rest = spec.strip().partition(":")
    values: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = item.partition("=")
        try:
            if key == "qp" and sep:
                values["qp"] = int(value)
            elif key == "dq" and sep:
                values["dq"] = value.lower() in ("1", "true", "yes", "on")
            elif key in ("lam", "lambda") and sep:
                values["lam"] = float(value)
            else:
                raise ValueError(item)
        except ValueError:
            raise InputError(f"nncodec: bad option {item!r}; options: qp=INT, dq=0|1, lam=FLOAT") from None
    return NNCodecOptions(**values)


def load_runner() -> Any:
    """tools/nncodec_runner.py of this source checkout, checked to have an NNCodec venv."""
    path = Path(__file__).resolve().parents[2] / "tools" / "nncodec_runner.py"
    if not path.is_file():
        raise InputError("the nncodec peer needs a source checkout with tools/nncodec_runner.py")
    name = "nnupdate_fl_nncodec_runner"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    if not module.available():
        raise InputError("NNCodec venv not found (set NNCODEC_PYTHON or create /work/nncodec-venv; see tools/nncodec_runner.py)")
    return module


def _coded(update: Update) -> dict[str, np.ndarray]:
    """The ADD tensors NNCodec codes, as float32 (scalars as length-1 vectors)."""
    return {
        name: np.asarray(c.data, dtype=np.float32).reshape(-1 if not c.shape else c.shape)
        for name, c in update.changes.items()
        if c.combine == Combine.ADD and c.data is not None
    }


def nncodec_round(config: FLConfig, round: int, plan: list[Assignment], clients: dict[int, ClientState]) -> list[ClientReply]:
    """One round of every selected client, their deltas coded by NNCodec in one worker call."""
    runner = load_runner()
    options = parse(config.codec)
    nn_config = runner.NNCodecConfig(options.qp, options.dq, options.lam)
    replies: list[ClientReply] = []
    pending = []
    for job in plan:
        if job.drop:
            replies.append(ClientReply(job.client, None))
            continue
        state = clients.get(job.client) or ClientState()
        done = train_update(config, job.client, round, state, job.messages)
        clients[job.client] = done.state
        pending.append((job.client, done))
    if not pending:
        return replies
    try:
        results = runner.encode_items([(_coded(done.update), [nn_config]) for _, done in pending])
    except Exception as exc:  # the peer failing must not stall the round
        return replies + [ClientReply(c, None, error=f"nncodec failed: {str(exc)[:300]}") for c, _ in pending]
    for (client, done), (result,) in zip(pending, results):
        update = done.update
        changes: dict[str, TensorChange] = {}
        residual: dict[str, np.ndarray] = {}
        err = norm = 0.0
        for name, change in update.changes.items():
            if change.combine != Combine.ADD or change.data is None:
                changes[name] = change
                continue
            rec = np.asarray(result.reconstructed[name], dtype=np.float64).reshape(change.shape)
            sent = np.asarray(change.data, dtype=np.float64).reshape(change.shape)
            if dtypes.is_float(change.dtype):
                residual[name] = sent - rec
                err += float(np.sum((sent - rec) ** 2))
                norm += float(np.sum(sent * sent))
                data = rec
            else:
                data = np.rint(rec).astype(change.data.dtype)
            changes[name] = TensorChange(name, change.dtype, change.shape, Combine.ADD, data, change.role)
        if config.error_feedback:
            done.state.residual = residual
        wrapped = Update(changes, update.kind, update.base_fingerprint, update.round, update.producer, dict(update.metadata))
        message = encode_with_report(wrapped, "raw").data
        replies.append(
            ClientReply(
                client, message, result.encode_s, done.decode_s + result.decode_s, done.loss,
                float(np.sqrt(err / norm)) if norm > 0 else 0.0, wire_bytes=len(result.bitstream),
            )  # fmt: skip
        )
    return replies
