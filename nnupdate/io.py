"""Files: atomic writes, loading, and a cheap summary of a container."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .codecs.presets import Codec
from .format import DEFAULT_LIMITS, Combine, Limits, parse
from .update import Update, decode, encode_with_report

PathLike = str | os.PathLike[str]


def atomic_write(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename.

    A crash leaves either the old file or the new one, never a torn one.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """A temporary file next to ``path`` for a writer that wants a file name (a library's
    ``save_file``, ``torch.save``): on success it is synced and renamed over ``path``, on
    failure removed. The same all-or-nothing as :func:`atomic_write`, without first holding
    the whole file in memory as bytes (a checkpoint of several GB)."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp creates 0600; give the file the mode a plain open() would (or the old
        # file's). After the writer: some replace the file rather than write into it.
        os.chmod(tmp, _mode_for(target))
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _mode_for(target: Path) -> int:
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0o022)
        os.umask(umask)
        return 0o666 & ~umask


def save(path: PathLike, update: Update | bytes, codec: Codec | str = "uniform") -> int:
    """Encode (unless given bytes) and write atomically; returns the number of bytes written."""
    data = update if isinstance(update, (bytes, bytearray)) else encode_with_report(update, codec).data
    atomic_write(path, bytes(data))
    return len(data)


def load(path: PathLike, *, limits: Limits = DEFAULT_LIMITS) -> Update:
    """Read and decode a container file."""
    return decode(Path(path).read_bytes(), limits=limits)


@dataclass
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    combine: str
    role: str
    pipeline: list[dict[str, Any]]
    payload_bytes: int
    #: index of the TGRP record this tensor shares its payload with; None for a TNSR
    group: int | None = None

    @property
    def elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def bits_per_parameter(self) -> float:
        return 8 * self.payload_bytes / self.elements if self.elements and self.combine not in ("KEEP", "REMOVE") else 0.0


@dataclass
class ContainerInfo:
    """What ``nnupdate info`` shows: header fields and per-tensor costs, no decoding."""

    size_bytes: int
    version: str
    kind: str
    round: int
    producer: str
    base_fingerprint: str | None
    metadata: dict[str, str]
    tensors: list[TensorInfo] = field(default_factory=list)
    extra_chunks: list[str] = field(default_factory=list)

    @property
    def coded_parameters(self) -> int:
        return sum(t.elements for t in self.tensors if t.combine not in ("KEEP", "REMOVE"))

    @property
    def bits_per_parameter(self) -> float:
        n = self.coded_parameters
        return 8 * self.size_bytes / n if n else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "size_bytes": self.size_bytes,
            "version": self.version,
            "kind": self.kind,
            "round": self.round,
            "producer": self.producer,
            "base_fingerprint": self.base_fingerprint,
            "metadata": self.metadata,
            "coded_parameters": self.coded_parameters,
            "bits_per_parameter": self.bits_per_parameter,
            "extra_chunks": self.extra_chunks,
            "tensors": [
                {
                    "name": t.name,
                    "dtype": t.dtype,
                    "shape": list(t.shape),
                    "combine": t.combine,
                    "role": t.role,
                    "pipeline": t.pipeline,
                    "payload_bytes": t.payload_bytes,
                    "group": t.group,
                    "bits_per_parameter": t.bits_per_parameter,
                }
                for t in self.tensors
            ],
        }


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        items = value.tolist()
        return items if len(items) <= 16 else f"<{len(items)} values>"
    if isinstance(value, bytes):
        # short byte parameters are values (a kernel shape, a mode), long ones data (a basis)
        return value.hex() if len(value) <= 16 else f"<{len(value)} bytes>"
    return value


def inspect(source: PathLike | bytes) -> ContainerInfo:
    """Header and per-tensor summary (verifies checksums, decodes no payload)."""
    data = source if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    container = parse(data)
    from .codecs.base import stage_class

    h = container.header
    info = ContainerInfo(
        size_bytes=len(data),
        version="{}.{}".format(*container.version) if container.version else "?",
        kind=h.kind.name.lower().replace("_", "-"),
        round=h.round,
        producer=h.producer,
        base_fingerprint=h.base_fingerprint.hex() if h.base_fingerprint else None,
        metadata=dict(h.metadata),
        extra_chunks=[t.decode("ascii") for t, _ in container.extra_chunks],
    )
    for group, r in enumerate(container.tensors):
        pipeline = [
            {"codec": stage_class(s.codec_id).name, "id": s.codec_id, **{k: _jsonable(v) for k, v in s.params.items()}}
            for s in r.stages
        ]
        combine = Combine(r.combine).name
        if not r.members:
            info.tensors.append(TensorInfo(r.name, r.dtype, r.shape, combine, r.role.name.lower(), pipeline, len(r.payload)))
            continue
        # A group's payload is shared; each member is shown with its share by element count.
        total = max(r.size, 1)
        for m in r.members:
            info.tensors.append(
                TensorInfo(
                    m.name, m.dtype, m.shape, combine, m.role.name.lower(), pipeline,
                    len(r.payload) * m.size // total, group=group,
                )
            )
    return info
