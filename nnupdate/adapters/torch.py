"""PyTorch state dicts and ``.pt``/``.pth`` files, always loaded with ``weights_only=True``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import InputError
from ..io import atomic_path


def _torch() -> Any:
    try:
        import torch
    except ImportError:  # pragma: no cover - depends on the install
        raise InputError("PyTorch is not installed: pip install 'nnupdate[torch]'") from None
    return torch


def tensor_to_numpy(tensor: Any, copy: bool = True, name: str = "tensor") -> np.ndarray:
    """A detached CPU copy (or, ``copy=False``, a view where the tensor allows it: for
    tensors nobody else holds, such as a file just loaded); bfloat16 becomes ml_dtypes'
    bfloat16 when available, else float32.

    Tensors numpy cannot hold as plain values are refused with a typed error that says what
    to do, where torch would raise a bare TypeError: quantized (qint8 ...), sparse or other
    non-strided layouts, meta tensors (no data), and element types the format has no code
    for (float8, complex).
    """
    torch = _torch()
    if tensor.is_quantized:
        raise InputError(f"{name}: quantized tensor ({tensor.dtype}) is not supported; store .dequantize() or .int_repr()")
    if tensor.layout != torch.strided:
        raise InputError(f"{name}: {tensor.layout} tensors are not supported; store .to_dense()")
    if tensor.is_meta:
        raise InputError(f"{name}: a meta tensor has no data to code")
    tensor = tensor.detach().cpu().resolve_conj().resolve_neg()
    if tensor.dtype == torch.bfloat16:
        try:
            import ml_dtypes

            bits = tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
            return bits.copy() if copy else bits
        except ImportError:
            return tensor.float().numpy()
    try:
        array = tensor.numpy()
    except TypeError:  # float8 and other types numpy lacks
        raise InputError(f"{name}: element type {tensor.dtype} is not supported; cast it to a supported type") from None
    return array.copy() if copy else array


def numpy_to_tensor(array: np.ndarray, copy: bool = True) -> Any:
    """A tensor of ``array``'s values: a copy, or (``copy=False``) sharing its memory when it
    is C-contiguous and writable (a checkpoint about to be saved)."""
    torch = _torch()
    owned = np.array(array, order="C", copy=True) if copy else np.require(array, requirements=("C", "W"))
    if owned.dtype.name == "bfloat16":
        return torch.from_numpy(owned.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(owned)


def from_state_dict(state: Mapping[str, Any], copy: bool = True) -> dict[str, np.ndarray]:
    torch = _torch()
    out = {}
    for name, value in state.items():
        if isinstance(value, torch.Tensor):
            out[name] = tensor_to_numpy(value, copy, name)
    return out


def to_state_dict(tensors: Mapping[str, np.ndarray], copy: bool = True) -> dict[str, Any]:
    return {name: numpy_to_tensor(np.asarray(value), copy) for name, value in tensors.items()}


def from_module(module: Any) -> dict[str, np.ndarray]:
    """Parameters and persistent buffers of a live ``nn.Module``, under ``state_dict`` names."""
    return from_state_dict(module.state_dict())


def apply_to_module(module: Any, update: Any, *, force: bool = False) -> Any:
    """Apply ``update`` to ``module`` in place through ``load_state_dict``; returns ``module``.

    Everything is checked before the first parameter is touched: the base fingerprint, and
    that the new tensors are exactly the module's state-dict keys (an update that adds or
    removes tensors needs a module that has, or lacks, them, e.g. one with LoRA adapters).
    Values are copied into the existing tensors, so dtypes, devices and integer buffers
    stay exact and references held elsewhere (optimizers) see the new values.
    """
    from ..update import apply

    torch = _torch()
    current = from_module(module)
    new = apply(current, update, force=force)
    unexpected = sorted(set(new) - set(current))
    missing = sorted(set(current) - set(new))
    if unexpected or missing:
        raise InputError(
            "the module's tensors differ from the updated set: "
            + (f"not in the module {unexpected[:5]} " if unexpected else "")
            + (f"removed by the update {missing[:5]}" if missing else "")
        )
    reference = module.state_dict()
    with torch.no_grad():
        for name, value in new.items():
            target = reference[name]
            if tuple(target.shape) != tuple(value.shape):
                raise InputError(f"{name}: module tensor is {list(target.shape)}, update gives {list(value.shape)}")
        module.load_state_dict({name: numpy_to_tensor(value) for name, value in new.items()}, strict=True)
    return module


def read(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    torch = _torch()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError...
        raise InputError(f"{path}: not a weights-only PyTorch checkpoint ({str(exc).splitlines()[0][:200]})") from None
    if not isinstance(obj, Mapping):
        raise InputError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return from_state_dict(_state_dict_of(obj, path), copy=False)  # the loaded tensors are ours alone


def _state_dict_of(obj: Mapping[str, Any], path: str | os.PathLike[str]) -> Mapping[str, Any]:
    """The state dict inside a checkpoint: the mapping itself, or its one nested state dict.

    Training checkpoints wrap weights as ``{"model": sd, "optimizer": ..., "epoch": 3}``;
    reading only top-level tensors there would silently yield nothing, so a file with
    several candidate state dicts (``model`` and ``ema``) is refused, naming them.
    """
    torch = _torch()
    if any(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    if isinstance(obj.get("state_dict"), Mapping):
        return obj["state_dict"]  # type: ignore[no-any-return]
    nested = {
        k: v for k, v in obj.items() if isinstance(v, Mapping) and v and all(isinstance(t, torch.Tensor) for t in v.values())
    }
    if len(nested) == 1:
        return next(iter(nested.values()))  # type: ignore[no-any-return]
    if nested:
        raise InputError(f"{path}: holds several state dicts ({', '.join(map(str, nested))}); extract the one to use")
    raise InputError(f"{path}: holds no tensors")


def write(path: str | os.PathLike[str], tensors: Mapping[str, np.ndarray], *, like: object = None) -> None:
    """Save ``tensors`` as a state dict; with ``like`` (the base checkpoint), in that
    checkpoint's structure (:func:`_in_structure_of`)."""
    torch = _torch()
    state: Mapping[str, Any] = to_state_dict(tensors, copy=False)
    if isinstance(like, (str, os.PathLike)) and str(like).lower().endswith((".pt", ".pth")):
        state = _in_structure_of(like, state)
    with atomic_path(path) as tmp:  # torch writes the file itself: no in-memory copy of it
        torch.save(state, tmp)


def _in_structure_of(like: str | os.PathLike[str], state: Mapping[str, Any]) -> Mapping[str, Any]:
    """``state`` where :func:`_state_dict_of` finds the state dict in the checkpoint ``like``,
    the rest of that checkpoint (epoch, optimizer state, non-tensor entries) as it was.

    Why: applying an update to a training checkpoint ``{"model": sd, "epoch": 3, ...}``
    wrote a bare state dict, so the result no longer loaded where the base did. The base
    is memory-mapped, so a plain state dict costs no second copy of its tensors.
    """
    torch = _torch()
    try:
        base = torch.load(like, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # a legacy (non-zip) file cannot be mapped
        base = torch.load(like, map_location="cpu", weights_only=True)
    if not isinstance(base, Mapping):
        return state
    inner = _state_dict_of(base, like)
    merged = dict(state) | {k: v for k, v in inner.items() if not isinstance(v, torch.Tensor) and k not in state}
    if inner is base:
        return merged
    key = next(k for k, v in base.items() if v is inner)
    return {k: (merged if k == key else v) for k, v in base.items()}
