"""ONNX models <-> ``{initializer name: ndarray}``; the graph itself is never rewritten.

``read`` returns the initializers (external-data models included, their paths confined
to the model's directory). ``write`` copies the ``like`` model and swaps in new
initializer values of identical dtype and shape, so every node, input and attribute
stays as exported. Two things need more than a value swap and are handled explicitly:

* The TorchScript exporter de-duplicates equal initializers and re-creates the other
  names as ``Identity`` nodes (e.g. ``bn.running_var = Identity(bn.weight)`` when both
  are ones). When an alias and its source end up with different values (the update
  changed either one), the ``Identity`` node is replaced by an initializer of the same
  name ("un-sharing"); the consumers of that name are untouched.
* Models above protobuf's 2 GB limit (or whose base stored external data) are written
  with external data: one ``<output name>.data`` file next to the model.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, ShapeMismatchError
from ..io import atomic_write

#: protobuf refuses messages above 2 GiB; stay clear of it with a margin for the graph.
EXTERNAL_DATA_THRESHOLD = 2**31 - 64 * 2**20
#: metadata_props key under which :func:`export` stores the torch -> ONNX name map.
NAME_MAP_KEY = "nnupdate.name_map"


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:  # pragma: no cover - depends on the install
        raise InputError("ONNX is not installed: pip install 'nnupdate[onnx]'") from None
    return onnx


@dataclass
class GraphInfo:
    """What name mapping needs to know about an ONNX model besides its tensor values."""

    #: initializer names in file order (the exporter numbers them in graph order)
    order: list[str] = field(default_factory=list)
    #: ``Identity`` output name -> initializer it aliases
    aliases: dict[str, str] = field(default_factory=dict)
    #: names some node reads (initializers absent from this set are unused)
    used: set[str] = field(default_factory=set)
    #: update name -> {"name": ..., "transpose": [...]} recorded by :func:`export`
    name_map: dict[str, Any] = field(default_factory=dict)


def _check_external_locations(model: Any, path: Path) -> bool:
    """Refuse external-data locations that escape the model's directory; True if any exist."""
    onnx = _onnx()
    root = path.resolve().parent
    found = False
    for tensor in model.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        found = True
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (root / location).resolve()
        if not location or Path(location).is_absolute() or root not in target.parents:
            raise InputError(f"{path}: initializer {tensor.name!r} points outside the model directory ({location!r})")
        if not target.is_file():
            raise InputError(f"{path}: external data file {location!r} of {tensor.name!r} is missing")
    return found


def load_model(path: str | os.PathLike[str]) -> Any:
    """The ``ModelProto`` with external data loaded; a clear :class:`InputError` for anything else."""
    return _load(path)[0]


def _load(path: str | os.PathLike[str]) -> tuple[Any, bool]:
    """The model and whether its initializers were stored as external data."""
    onnx = _onnx()
    from google.protobuf.message import DecodeError

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, OSError, RuntimeError) as exc:
        raise InputError(f"{path}: not an ONNX model ({str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__})") from None
    # Protobuf happily parses many byte strings as a mostly empty message: insist on the
    # fields every exported model has.
    if model.ir_version <= 0 or not model.opset_import or not model.graph.node:
        raise InputError(f"{path}: not an ONNX model (no IR version, opset or graph nodes)")
    external = _check_external_locations(model, path)
    if external:
        try:
            onnx.load_external_data_for_model(model, str(path.resolve().parent))
        except (OSError, ValueError, RuntimeError) as exc:
            raise InputError(f"{path}: cannot load external data ({exc})") from None
    return model, external


def graph_info(path: str | os.PathLike[str], model: Any | None = None) -> GraphInfo:
    """Initializer order, Identity aliases, used names and any stored name map of a model."""
    model = model if model is not None else load_model(path)
    initializers = {t.name for t in model.graph.initializer}
    info = GraphInfo(order=[t.name for t in model.graph.initializer])
    for node in _all_nodes(model.graph):
        info.used.update(node.input)
        if node.op_type == "Identity" and len(node.input) == 1 and node.input[0] in initializers:
            info.aliases[node.output[0]] = node.input[0]
    info.used.update(o.name for o in model.graph.output)
    for prop in model.metadata_props:
        if prop.key == NAME_MAP_KEY:
            try:
                stored = json.loads(prop.value)
            except json.JSONDecodeError:
                raise InputError(f"{path}: metadata {NAME_MAP_KEY!r} is not JSON") from None
            info.name_map = dict(stored.get("tensors", {})) if isinstance(stored, dict) else {}
    return info


def _all_nodes(graph: Any) -> list[Any]:
    """Nodes of ``graph`` and of every subgraph (If/Loop bodies), which may read initializers."""
    onnx = _onnx()
    nodes = []
    for node in graph.node:
        nodes.append(node)
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                nodes.extend(_all_nodes(attribute.g))
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for sub in attribute.graphs:
                    nodes.extend(_all_nodes(sub))
    return nodes


def _to_array(tensor: Any, path: Path) -> np.ndarray:
    from onnx import numpy_helper

    try:
        return np.asarray(numpy_helper.to_array(tensor))
    except (ValueError, TypeError, KeyError) as exc:
        raise InputError(f"{path}: initializer {tensor.name!r} cannot be read ({exc})") from None


def read(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every initializer of the model as a numpy array (external data included).

    ``Identity`` aliases of initializers are listed too, under their own names with their
    source's value, so a de-duplicated export still has one tensor per torch tensor and
    ``write`` can give an alias its own value.
    """
    model = load_model(path)
    tensors = {t.name: _to_array(t, Path(path)) for t in model.graph.initializer}
    for alias, source in graph_info(path, model).aliases.items():
        tensors.setdefault(alias, tensors[source].copy())
    return tensors


def write(path: str | os.PathLike[str], tensors: Mapping[str, np.ndarray], *, like: str | os.PathLike[str] | None = None) -> None:
    """A copy of the ``like`` model whose initializers hold ``tensors``; the graph is kept.

    ``tensors`` must name every initializer to keep; an initializer left out is dropped only
    if no node reads it. A name that is not an initializer must be an ``Identity`` alias of
    one (it is then un-shared); anything else would be a tensor the graph cannot use.
    """
    if like is None or Path(like).suffix.lower() != ".onnx":
        raise InputError(f"{path}: writing an ONNX model needs a base .onnx model to copy the graph from")
    model, external = _load(like)
    info = graph_info(like, model)
    existing = {t.name: t for t in model.graph.initializer}

    unknown = [n for n in tensors if n not in existing and n not in info.aliases]
    if unknown:
        raise InputError(
            f"{path}: the ONNX graph has no initializer {', '.join(map(repr, unknown[:5]))}"
            f"{' ...' if len(unknown) > 5 else ''}; an exported graph cannot use added tensors"
        )
    dropped = [n for n in existing if n not in tensors]
    needed = [n for n in dropped if n in info.used]
    if needed:
        raise InputError(f"{path}: cannot remove initializers the graph reads: {', '.join(map(repr, needed[:5]))}")

    replaced: list[Any] = []
    for tensor in model.graph.initializer:
        if tensor.name not in tensors:
            continue
        replaced.append(_replacement(tensor, tensors[tensor.name], path))
    # An alias must keep its own value: un-share it when it and its source now differ,
    # whether the update changed the alias (given here) or only the source.
    unshared = []
    for alias, source_name in info.aliases.items():
        source = existing[source_name]
        old = _to_array(source, Path(str(like)))
        alias_value = np.asarray(tensors.get(alias, old))
        source_value = np.asarray(tensors.get(source_name, old))
        if _same_bits(alias_value, source_value):
            continue
        replaced.append(_replacement(source, alias_value, path, name=alias))
        unshared.append(alias)
    if unshared:
        keep = [n for n in model.graph.node if not (n.op_type == "Identity" and n.output[0] in unshared)]
        del model.graph.node[:]
        model.graph.node.extend(keep)
    del model.graph.initializer[:]
    model.graph.initializer.extend(replaced)
    _save(model, Path(path), external=external)


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _replacement(original: Any, value: np.ndarray, path: str | os.PathLike[str], *, name: str | None = None) -> Any:
    """A new TensorProto for ``original`` holding ``value`` (same dtype and shape required)."""
    from onnx import helper, numpy_helper

    array = np.asarray(value)
    want_dtype = helper.tensor_dtype_to_np_dtype(original.data_type)
    want_shape = tuple(int(d) for d in original.dims)
    if tuple(array.shape) != want_shape or array.dtype != want_dtype:
        raise ShapeMismatchError(
            f"{path}: initializer {original.name!r} is {want_dtype}{list(want_shape)}, the update gives {array.dtype}{list(array.shape)}"
        )
    return numpy_helper.from_array(np.array(array, order="C", copy=True), name=name or original.name)


def _save(model: Any, path: Path, *, external: bool) -> None:
    """Write atomically; with external data (forced, or above 2 GB) as ``<name>.data`` beside it."""
    onnx = _onnx()
    size = sum(t.ByteSize() for t in model.graph.initializer)
    if not external and size < EXTERNAL_DATA_THRESHOLD:
        atomic_write(path, model.SerializeToString())
        return
    location = path.name + ".data"
    parent = path.resolve().parent
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=parent) as tmp:
        staged = Path(tmp) / path.name
        onnx.save_model(model, str(staged), save_as_external_data=True, all_tensors_to_one_file=True, location=location, size_threshold=0)
        # The data file lands first: a crash in between leaves the old model unreadable
        # against the new data only if both names already existed, never a torn file.
        os.replace(Path(tmp) / location, parent / location)
        os.replace(staged, path)


def export(module: Any, args: tuple[Any, ...], path: str | os.PathLike[str], **kwargs: Any) -> dict[str, Any]:
    """``torch.onnx.export`` (TorchScript exporter) plus a recorded torch -> ONNX name map.

    The map is found by matching each state-dict tensor against the exported initializers
    (exact name, Identity alias, then identical values, possibly transposed) while the
    torch values are at hand, and stored in ``metadata_props[NAME_MAP_KEY]`` so a later
    ``apply --name-map auto`` needs no guessing. Returns the stored map.
    """
    import torch

    from .namemap import resolve_for_export
    from .torch import from_state_dict

    kwargs.setdefault("dynamo", False)
    buffer_path = Path(path)
    torch.onnx.export(module, args, str(buffer_path), **kwargs)
    model = load_model(buffer_path)
    base = {t.name: _to_array(t, buffer_path) for t in model.graph.initializer}
    mapping = resolve_for_export(from_state_dict(module.state_dict()), base, graph_info(buffer_path, model))
    stored = {"format": "nnupdate-name-map/1", "tensors": mapping}
    entry = model.metadata_props.add()
    entry.key = NAME_MAP_KEY
    entry.value = json.dumps(stored, sort_keys=True)
    _save(model, buffer_path, external=False)
    return stored
