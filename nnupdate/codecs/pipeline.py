"""Running a tensor's stage list forwards (encode) and backwards (decode)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .. import dtypes
from ..errors import CodecError, FormatError
from ..format import StageRecord
from .base import ArraySpec, ArrayToArray, ArrayToBytes, BytesToBytes, Stage, stage_from_record, stage_key


@dataclass(frozen=True)
class Pipeline:
    """A validated stage list: array→array*, one array→bytes, bytes→bytes*."""

    stages: tuple[Stage, ...]

    def __post_init__(self) -> None:
        kinds = [type(s) for s in self.stages]
        a2b = [i for i, s in enumerate(self.stages) if isinstance(s, ArrayToBytes)]
        if len(a2b) != 1:
            raise FormatError(f"a pipeline needs exactly one array->bytes stage, has {len(a2b)}")
        k = a2b[0]
        if not all(isinstance(s, ArrayToArray) for s in self.stages[:k]) or not all(
            isinstance(s, BytesToBytes) for s in self.stages[k + 1 :]
        ):
            raise FormatError(f"stages out of order: {[c.__name__ for c in kinds]}")

    # cached: a decode asks for these once per tensor, and pipelines repeat across tensors
    @functools.cached_property
    def array_stages(self) -> tuple[ArrayToArray, ...]:
        return tuple(s for s in self.stages if isinstance(s, ArrayToArray))

    @functools.cached_property
    def serializer(self) -> ArrayToBytes:
        return next(s for s in self.stages if isinstance(s, ArrayToBytes))

    @functools.cached_property
    def byte_stages(self) -> tuple[BytesToBytes, ...]:
        return tuple(s for s in self.stages if isinstance(s, BytesToBytes))

    @property
    def lossless(self) -> bool:
        return all(s.lossless for s in self.stages)

    def describe(self) -> str:
        return " | ".join(s.describe() for s in self.stages)


_PIPELINES: dict[tuple[object, ...], Pipeline] = {}


def pipeline_of(records: Sequence[StageRecord]) -> Pipeline:
    """The validated pipeline of stored stage records, memoised (a file's tensors mostly
    share one or two pipelines, and validating one costs more than a small tensor's decode)."""
    keys = tuple(stage_key(r) for r in records)
    if None in keys:
        return Pipeline(tuple(stage_from_record(r) for r in records))
    pipeline = _PIPELINES.get(keys)
    if pipeline is None:
        pipeline = Pipeline(tuple(stage_from_record(r) for r in records))
        if len(_PIPELINES) >= 256:
            _PIPELINES.clear()
        _PIPELINES[keys] = pipeline
    return pipeline


def run_array_stages(stages: Sequence[ArrayToArray], values: np.ndarray, spec: ArraySpec) -> tuple[np.ndarray, ArraySpec, list[Stage]]:
    """Encode through the array→array prefix; returns output, its spec and resolved stages."""
    if dtypes.is_float(spec.dtype) and values.dtype != np.float64:
        values = dtypes.to_float64(values, spec.dtype)
    resolved: list[Stage] = []
    for stage in stages:
        values, done = stage.encode(values, spec)
        resolved.append(done)
        spec = done.encoded_spec(spec)
        if values.shape != spec.shape:
            raise CodecError(f"{stage.name}: produced shape {values.shape}, declared {spec.shape}")
    return values, spec, resolved


def run_tail(tail: Sequence[Stage], values: np.ndarray, spec: ArraySpec) -> tuple[bytes, list[Stage]]:
    """Encode through the tail's lossless array→array stages (a predictor), its array→bytes
    stage and the bytes→bytes stages after it."""
    resolved: list[Stage] = []
    stages = list(tail)
    while isinstance(stages[0], ArrayToArray):
        stage = stages.pop(0)
        assert isinstance(stage, ArrayToArray)
        values, done_a = stage.encode(values, spec)
        spec = stage.encoded_spec(spec)
        resolved.append(done_a)
    serializer, *byte_stages = stages
    assert isinstance(serializer, ArrayToBytes)
    if dtypes.is_float(spec.dtype) and values.dtype != np.float64:
        values = dtypes.to_float64(values, spec.dtype)
    data, done = serializer.encode(values, spec)
    resolved.append(done)
    for stage in byte_stages:
        assert isinstance(stage, BytesToBytes)
        data, done_b = stage.encode(data)
        resolved.append(done_b)
    return data, resolved


def smallest_tail(
    tails: Sequence[Sequence[Stage]], values: np.ndarray, spec: ArraySpec, name: str
) -> tuple[bytes, list[Stage]]:
    """Encode ``values`` through every candidate tail and keep the smallest payload.

    Which entropy stage wins is decided by measured bytes; a tail that cannot code the
    values (CodecError) is skipped, and only if none can is the error raised.
    """
    best: tuple[bytes, list[Stage]] | None = None
    failures = []
    for tail in tails:
        try:
            payload, resolved = run_tail(tail, values, spec)
        except CodecError as exc:
            failures.append(str(exc))
            continue
        if best is None or len(payload) < len(best[0]):
            best = (payload, resolved)
    if best is None:
        raise CodecError(f"{name}: no entropy stage could code it ({'; '.join(failures)})")
    return best


def decode(pipeline: Pipeline, payload: bytes, spec: ArraySpec) -> np.ndarray:
    """Rebuild the array of ``spec`` from ``payload``; every defect raises CodecError."""
    specs = [spec]
    for stage in pipeline.array_stages:
        specs.append(stage.encoded_spec(specs[-1]))
    serializer = pipeline.serializer
    bound = serializer.max_encoded_size(specs[-1])
    data = payload
    for byte_stage in reversed(pipeline.byte_stages):
        data = byte_stage.decode(data, bound)
    if len(pipeline.array_stages) == 1:
        step = pipeline.array_stages[0].scale_step(spec)
        fused = None if step is None else serializer.decode_scaled(data, specs[-1], step)
        if fused is not None:  # levels decoded straight to floats: no integer intermediate
            return fused.reshape(spec.shape)
    values = serializer.decode(data, specs[-1])
    for array_stage, out_spec in zip(reversed(pipeline.array_stages), reversed(specs[:-1])):
        values = array_stage.decode(values, out_spec)
    expected = dtypes.storage_dtype(spec.dtype)
    if values.shape != spec.shape or values.dtype != expected:
        raise CodecError(f"pipeline produced {values.dtype}{values.shape}, expected {spec.dtype}{spec.shape}")
    return values
