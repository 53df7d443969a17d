"""Conformance case definitions, one module per area (core, codecs, labels, context).

``tools/make_conformance.py`` imports every module in this package and collects its
``CASES`` list. The case API is deliberately small:

    from conformance_cases import Case, build, encode_tensor, reframe

    CASES = [
        Case(
            name="codecs-topk-basic",            # unique file stem; prefix it with your module name
            description="top-k sparsifier + rans on a 1000-value delta",
            build=lambda: some_update.encode("topk:k=100"),   # -> the .nnu bytes
            base=lambda: {"w": np.zeros(1000, np.float32)},   # optional: base for an apply check
        ),
        Case("codecs-bad-k", "k larger than the tensor", build=..., error="CodecError"),
    ]

* ``build()`` returns the container bytes. It must be deterministic: seed every random
  generator (``rng(seed)`` below) and never read the clock.
* ``base()`` (optional) returns the base tensors; the generator then stores them and the
  result of ``apply(base, decode(bytes))``, and ``nnupdate conformance`` re-checks both.
* ``error`` (optional) makes a *negative* vector: the name of the ``nnupdate.errors``
  class ``decode`` must raise (a subclass is accepted). Negative vectors have no
  expected output.
* ``applied()`` (optional, with ``base``) states the result of apply independently
  (lossless vectors: the new model); the generator refuses a vector that does not match.
* ``expected()`` (optional) returns the decoded tensors when you can state them
  independently of the decoder (e.g. lossless cases); the generator refuses to write a
  vector whose decode differs. Without it the expected output is the decoder's output
  at generation time, cross-checked by tests/test_conformance.py with the independent
  reference decoder for core stages.

Helpers: :func:`encode_tensor` codes one array through an explicit stage list (so a
vector can pin a stage instead of letting a codec choose); :func:`build` assembles a
container; :func:`reframe` re-chunks existing bytes (change the version, insert, drop
or corrupt chunks) and recomputes CRCs and the digest, so negative vectors fail for
exactly one reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import crc32c
import numpy as np

from nnupdate.codecs import pipeline as pipelines
from nnupdate.codecs.base import ArraySpec, ArrayToArray, Stage
from nnupdate.format import Combine, Container, Header, Role, TensorRecord, UpdateKind, serialize

SIGNATURE = b"\x89NNU\r\n\x1a\n"


@dataclass(frozen=True)
class Case:
    """One conformance vector: how to build its bytes and what decoding it must give."""

    name: str
    description: str
    build: Callable[[], bytes]
    base: Callable[[], dict[str, np.ndarray]] | None = None
    error: str | None = None
    expected: Callable[[], dict[str, np.ndarray]] | None = None
    applied: Callable[[], dict[str, np.ndarray]] | None = None


def rng(seed: int) -> np.random.Generator:
    """The only random source cases should use (PCG64, stable across numpy versions)."""
    return np.random.Generator(np.random.PCG64(seed))


def encode_tensor(
    name: str,
    values: np.ndarray,
    stages: Sequence[Stage],
    *,
    dtype: str | None = None,
    combine: Combine = Combine.REPLACE,
    role: Role = Role.UNKNOWN,
    pipeline_dtype: str | None = None,
) -> TensorRecord:
    """A TNSR record coding ``values`` through exactly ``stages`` (array stages first).

    ``dtype`` is the tensor's element type (default: ``values``' own); ``pipeline_dtype``
    the type the pipeline produces (XOR: the unsigned type of the same width).
    """
    from nnupdate.fingerprint import tensor_dtype_name

    dtype = dtype or tensor_dtype_name(values)
    shape = tuple(int(d) for d in values.shape)
    spec = ArraySpec(shape, pipeline_dtype or dtype)
    prefix = [s for s in stages if isinstance(s, ArrayToArray)]
    tail = [s for s in stages if not isinstance(s, ArrayToArray)]
    symbols, symbol_spec, resolved = pipelines.run_array_stages(prefix, values, spec)
    payload, resolved_tail = pipelines.run_tail(tail, symbols, symbol_spec)
    return TensorRecord(
        name, dtype, shape, combine, role, [s.record() for s in resolved + resolved_tail], payload
    )


def marker(name: str, dtype: str, shape: tuple[int, ...], combine: Combine, role: Role = Role.UNKNOWN) -> TensorRecord:
    """A KEEP or REMOVE record (no pipeline, no payload)."""
    return TensorRecord(name, dtype, shape, combine, role)


def build(
    tensors: Sequence[TensorRecord],
    *,
    kind: UpdateKind = UpdateKind.DELTA,
    base_fingerprint: bytes | None = None,
    round: int = 0,
    producer: str = "nnupdate-conformance",
    metadata: dict[str, str] | None = None,
    extra_chunks: Sequence[tuple[bytes, bytes]] = (),
) -> bytes:
    """Container bytes from records (the library's own serializer)."""
    header = Header(kind, base_fingerprint, round, producer, dict(metadata or {}))
    return serialize(Container(header, list(tensors), list(extra_chunks)))


def split_chunks(data: bytes) -> tuple[int, int, list[tuple[bytes, bytes]]]:
    """(major, minor, [(type, body), ...]) of a well-formed container, IEND included."""
    major, minor = data[8], data[9]
    pos, chunks = 10, []
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 8], "little")
        ctype = data[pos + 8 : pos + 12]
        chunks.append((ctype, data[pos + 12 : pos + 12 + length]))
        pos += 16 + length
    return major, minor, chunks


def frame(ctype: bytes, body: bytes) -> bytes:
    crc = crc32c.crc32c(body, crc32c.crc32c(ctype))
    return len(body).to_bytes(8, "little") + ctype + body + crc.to_bytes(4, "little")


def uvarint(value: int) -> bytes:
    """Unsigned LEB128 (FORMAT.md §1)."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def reframe(
    data: bytes,
    *,
    major: int | None = None,
    minor: int | None = None,
    edit: Callable[[list[tuple[bytes, bytes]]], list[tuple[bytes, bytes]]] | None = None,
) -> bytes:
    """Rebuild ``data`` with a new version and/or edited chunk list, fixing the index
    offsets, every CRC and the IEND digest so only the intended defect remains.

    ``edit`` receives the chunks without IEND and returns the new list (index chunks
    in it are rewritten with correct offsets of the TNSR chunks that follow).
    """
    old_major, old_minor, chunks = split_chunks(data)
    body_chunks = [c for c in chunks if c[0] != b"IEND"]
    if edit is not None:
        body_chunks = edit(body_chunks)
    out = bytearray(SIGNATURE + bytes([old_major if major is None else major, old_minor if minor is None else minor]))
    offsets: list[tuple[int, int]] = []
    framed = []
    pos = len(out)
    for ctype, body in body_chunks:
        chunk = frame(ctype, body)
        if ctype in (b"TNSR", b"TGRP"):
            offsets.append((pos, len(chunk)))
        framed.append((ctype, chunk))
        pos += len(chunk)
    index_offset = 0
    for ctype, chunk in framed:
        if ctype == b"indx":
            index_offset = len(out)
            entries = bytearray(len(offsets).to_bytes(4, "little"))
            for off, length in offsets:
                entries += uvarint(off) + uvarint(length)
            chunk = frame(b"indx", bytes(entries))
        out += chunk
    digest = hashlib.sha256(bytes(out)).digest()
    out += frame(b"IEND", index_offset.to_bytes(8, "little") + digest)
    return bytes(out)


__all__ = ["Case", "build", "encode_tensor", "frame", "marker", "reframe", "rng", "split_chunks", "uvarint"]
