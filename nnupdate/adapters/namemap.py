"""Match an update's tensor names to a base that names (or lays out) tensors differently.

``torch.onnx.export`` keeps most parameter names but renames what it transforms
(``onnx::MatMul_170`` is the transpose of a Linear weight, folded by constant folding),
drops what the graph does not use (``num_batches_tracked``), re-creates de-duplicated
initializers as ``Identity`` aliases, and fuses BatchNorm into Conv in eval exports.

Resolution, per update tensor, first hit wins (spec/ADAPTERS.md §3):

1. an explicit map: ``--name-map FILE`` or the map :func:`nnupdate.adapters.onnx.export`
   recorded in the model's metadata;
2. an ``Identity`` alias of an initializer;
3. the exact name (dtype and shape must agree, else :class:`ShapeMismatchError`);
4. for float tensors of 4+ elements only: an unclaimed base tensor of the same dtype
   whose shape is the tensor's shape or, for a matrix, its transpose, *and whose values
   are the update's base values*, checked with the per-tensor digests the encoder stores
   in the ancillary ``tdig`` chunk. Without digests the first same-shape candidate in
   file order is taken and the whole guess must then pass the update's base fingerprint.

Tensors of the base that match by shape but not by value are reported as transformed by
export (folded), never applied; ambiguity lists the candidates. The resolved map is plain
JSON (``format: nnupdate-name-map/1``) a user can save, edit and pass back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BaseMismatchError, FormatError, InputError, ShapeMismatchError
from ..fingerprint import fingerprint, tensor_dtype_name
from ..format import Combine
from ..update import Update, apply, referenced_names

MAP_FORMAT = "nnupdate-name-map/1"
#: ancillary chunk: u8 digest length L, then L bytes per base-referencing tensor in TNSR order
DIGEST_CHUNK = b"tdig"
DIGEST_BYTES = 8
_TRANSPOSE_2D = (1, 0)
#: tensors smaller than this are matched by name (or map) only, never by shape or value
_MIN_MATCH_ELEMENTS = 4
#: error messages list at most this many tensors per kind of problem
_MAX_LISTED = 8


# ----------------------------------------------------------------------------- per-tensor digests


def tensor_digest(array: np.ndarray) -> bytes:
    """First 8 bytes of the base fingerprint of the one-tensor collection ``{"": array}``.

    Name-free, so a tensor can be recognised under any name; dtype and shape included.
    """
    return fingerprint({"": array})[:DIGEST_BYTES]


def attach_tensor_digests(update: Update, base: Mapping[str, np.ndarray]) -> int:
    """Store a digest of every base tensor the update references; returns the chunk's size.

    Costs 8 bytes per referenced tensor (plus 17 bytes of framing) and lets ``apply`` find
    and verify each tensor in a base that renames, transposes or lacks some of them.
    """
    names = _digest_order(update)
    body = bytes([DIGEST_BYTES]) + b"".join(tensor_digest(np.asarray(base[n])) for n in names)
    update.extra_chunks = [c for c in update.extra_chunks if c[0] != DIGEST_CHUNK] + [(DIGEST_CHUNK, body)]
    return len(body)


def _digest_order(update: Update) -> list[str]:
    """Referenced names sorted by their UTF-8 bytes: independent of how the writer laid
    tensors out (grouping reorders them in the file)."""
    return sorted(referenced_names(update), key=lambda n: n.encode("utf-8"))


def read_tensor_digests(update: Update) -> dict[str, bytes] | None:
    """The ``tdig`` digests by tensor name, or None when the update carries none."""
    bodies = [data for kind, data in update.extra_chunks if kind == DIGEST_CHUNK]
    if not bodies:
        return None
    body = bodies[-1]
    names = _digest_order(update)
    if not body or body[0] == 0 or len(body) != 1 + body[0] * len(names):
        raise FormatError(f"tdig chunk holds {len(body)} bytes, not digests for the {len(names)} referenced tensors")
    size = body[0]
    return {name: bytes(body[1 + i * size : 1 + (i + 1) * size]) for i, name in enumerate(names)}


# ----------------------------------------------------------------------------- the map


@dataclass(frozen=True)
class Target:
    """Where one update tensor lives in the base.

    ``source`` is read (None for a tensor the update adds), ``dest`` is written (differs
    from ``source`` for an un-shared alias); the base layout is the update layout
    transposed by ``transpose``.
    """

    source: str | None
    dest: str
    transpose: tuple[int, ...] | None = None
    via: str = "exact"


@dataclass
class NameMap:
    entries: dict[str, Target] = field(default_factory=dict)
    #: update name -> why it has no counterpart in the base and is left out
    skipped: dict[str, str] = field(default_factory=dict)
    #: update name -> same-shape candidates, for tensors matched by shape alone (no digests)
    guesses: dict[str, list[str]] = field(default_factory=dict)
    #: True when every matched tensor was checked by value (digests)
    verified: bool = False

    def notes(self) -> list[str]:
        """Human-readable lines for everything that is not a plain same-name match."""
        lines = []
        for name, t in self.entries.items():
            if t.transpose is not None:
                lines.append(f"{name} -> {t.dest}: transposed {list(t.transpose)} by export ({t.via})")
            elif t.via == "alias":
                lines.append(f"{name}: exported as an Identity alias; un-shared if its value now differs from its source's")
            elif t.dest != name:
                lines.append(f"{name} -> {t.dest} ({t.via})")
        lines.extend(f"{name}: skipped, {reason}" for name, reason in self.skipped.items())
        return lines

    def to_json(self) -> dict[str, Any]:
        tensors: dict[str, Any] = {}
        for name, t in self.entries.items():
            if t.source is None:
                continue
            if t.via == "alias":
                tensors[name] = t.dest  # the Identity output's name resolves to the alias again
            elif t.transpose is None:
                tensors[name] = t.source
            else:
                entry: dict[str, Any] = {"name": t.source}
                if t.transpose is not None:
                    entry["transpose"] = list(t.transpose)
                tensors[name] = entry
        tensors.update({name: None for name in self.skipped})
        return {"format": MAP_FORMAT, "tensors": tensors}


def parse_map(document: Any, origin: str) -> dict[str, tuple[str | None, tuple[int, ...] | None]]:
    """Validate a map document: ``{"format": ..., "tensors": {name: str | {name, transpose} | null}}``."""
    if not isinstance(document, dict) or not isinstance(document.get("tensors"), dict):
        raise InputError(f"{origin}: a name map is a JSON object with a 'tensors' object")
    if document.get("format", MAP_FORMAT) != MAP_FORMAT:
        raise InputError(f"{origin}: unknown name-map format {document.get('format')!r}, expected {MAP_FORMAT!r}")
    out: dict[str, tuple[str | None, tuple[int, ...] | None]] = {}
    for name, entry in document["tensors"].items():
        if entry is None or isinstance(entry, str):
            out[name] = (entry, None)
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise InputError(f"{origin}: entry {name!r} must be a name, null, or {{'name': ..., 'transpose': [...]}}")
        perm = entry.get("transpose")
        if perm is not None and (not isinstance(perm, list) or sorted(perm) != list(range(len(perm)))):
            raise InputError(f"{origin}: entry {name!r} has transpose {perm!r}, not a permutation")
        out[name] = (entry["name"], tuple(perm) if perm is not None else None)
    return out


def load_map_file(path: str | os.PathLike[str]) -> dict[str, tuple[str | None, tuple[int, ...] | None]]:
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: name map file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: name map is not valid JSON ({exc})") from None
    return parse_map(document, str(path))


# ----------------------------------------------------------------------------- resolution


@dataclass(frozen=True)
class Wanted:
    """An update tensor to place: its name, element type, shape and whether it needs a base value."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    needs_base: bool
    droppable: bool  # may be absent from the base (unchanged, removed, or an integer buffer)


def _wanted(update: Update) -> list[Wanted]:
    out = []
    for name, c in update.changes.items():
        needs = c.combine != Combine.REPLACE
        droppable = c.combine in (Combine.KEEP, Combine.REMOVE) or not c.dtype.startswith(("float", "bfloat"))
        out.append(Wanted(name, c.dtype, tuple(c.shape), needs, droppable))
    return out


def _layout(shape: tuple[int, ...], perm: tuple[int, ...] | None) -> tuple[int, ...]:
    return shape if perm is None else tuple(shape[i] for i in perm)


def _to_update_layout(array: np.ndarray, perm: tuple[int, ...] | None) -> np.ndarray:
    return array if perm is None else np.ascontiguousarray(np.transpose(array, np.argsort(perm)))


def _describe(array: np.ndarray) -> str:
    return f"{tensor_dtype_name(array)}{list(array.shape)}"


class _Resolver:
    def __init__(
        self,
        base: Mapping[str, np.ndarray],
        *,
        order: list[str] | None,
        aliases: Mapping[str, str],
        explicit: Mapping[str, tuple[str | None, tuple[int, ...] | None]],
        explicit_via: str,
        strict_explicit: bool,
        digests: Mapping[str, bytes] | None,
        strict: bool = True,
    ) -> None:
        #: False: leave unplaceable tensors out of the map instead of raising (export time)
        self.strict = strict
        self.base = base
        self.order = order or list(base)
        self.aliases = aliases
        self.explicit = explicit
        self.explicit_via = explicit_via
        self.strict_explicit = strict_explicit
        self.digests = digests
        self._digest_cache: dict[tuple[str, tuple[int, ...] | None], bytes] = {}

    def digest_of(self, source: str, perm: tuple[int, ...] | None) -> bytes:
        key = (source, perm)
        if key not in self._digest_cache:
            self._digest_cache[key] = tensor_digest(_to_update_layout(np.asarray(self.base[source]), perm))
        return self._digest_cache[key]

    def _check(self, w: Wanted, source: str, perm: tuple[int, ...] | None, via: str) -> None:
        array = np.asarray(self.base[source])
        if tensor_dtype_name(array) != w.dtype or tuple(array.shape) != _layout(w.shape, perm):
            layout = f" transposed {list(perm)}" if perm is not None else ""
            raise ShapeMismatchError(
                f"{w.name}: the update expects {w.dtype}{list(w.shape)}{layout}, base tensor {source!r} ({via}) is {_describe(array)}"
            )

    def resolve(self, wanted: list[Wanted]) -> NameMap:
        result = NameMap()
        pending: list[Wanted] = []
        claimed: set[str] = set()
        for w in wanted:
            target = self._direct(w, result)
            if target is not None:
                result.entries[w.name] = target
                if target.source is not None and target.via != "alias":
                    claimed.add(target.source)
            elif w.name not in result.skipped:
                pending.append(w)
        problems: list[str] = []
        transformed: list[str] = []
        for w in pending:
            # Integer buffers and tiny tensors are never matched under another name: a
            # count or a scalar can equal a graph constant (a Reshape shape, a 1.0) by
            # chance, and changing that constant would silently corrupt the graph.
            identifiable = w.dtype.startswith(("float", "bfloat")) and int(np.prod(w.shape, dtype=np.int64)) >= _MIN_MATCH_ELEMENTS
            candidates = [
                (name, perm)
                for name in self.order
                if identifiable and name not in claimed and name not in self.aliases
                for perm in self._perms(w, np.asarray(self.base[name]))
            ]
            if self.digests is not None and w.name in self.digests:
                matching = [(n, p) for n, p in candidates if self.digest_of(n, p) == self.digests[w.name]]
            else:
                matching = candidates
            by_value = self.digests is not None and w.name in self.digests
            if len(matching) == 1 or (matching and not by_value):
                # Without digests the first unclaimed candidate in file order is taken (the
                # exporter numbers tensors in graph order); the base fingerprint checks it.
                name, perm = matching[0]
                result.entries[w.name] = Target(name, name, perm, "value digest" if by_value else "shape")
                if not by_value:
                    result.guesses[w.name] = [n for n, _ in matching]
                claimed.add(name)
                continue
            if len(matching) > 1:
                listed = ", ".join(f"{n}{' (transposed)' if p else ''}" for n, p in matching[:8])
                problems.append(f"{w.name} {w.dtype}{list(w.shape)} is ambiguous: candidates {listed}")
            elif w.droppable:
                result.skipped[w.name] = "not in the base (unused by the exported graph)"
            elif candidates:
                listed = ", ".join(n for n, _ in candidates[:4]) + (" ..." if len(candidates) > 4 else "")
                transformed.append(f"{w.name} {w.dtype}{list(w.shape)} (same-shape base tensors {listed} hold other values)")
            elif not w.needs_base:
                result.entries[w.name] = Target(None, w.name, None, "added")
            elif not identifiable:
                problems.append(
                    f"{w.name} {w.dtype}{list(w.shape)} is not in the base under its name, and is too small to be "
                    "recognised by value; map it in a name-map file"
                )
            else:
                problems.append(f"{w.name} {w.dtype}{list(w.shape)} is not in the base (folded or pruned by export?)")
        if not self.strict:
            return self._without_duplicates(result)
        if transformed:
            problems.insert(
                0,
                f"{len(transformed)} tensors have no base tensor with their values, so export transformed them (e.g. "
                "BatchNorm folded into Conv); re-export with do_constant_folding=False, or map them in a name-map file:\n    "
                + "\n    ".join(transformed[:_MAX_LISTED])
                + (f"\n    ... and {len(transformed) - _MAX_LISTED} more" if len(transformed) > _MAX_LISTED else ""),
            )
        if problems:
            shown = problems[: _MAX_LISTED + 1]
            more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
            raise InputError("cannot match update tensors to the base:\n  " + "\n  ".join(shown) + more)
        result.verified = self.digests is not None and not result.guesses
        return self._without_duplicates(result)

    def _without_duplicates(self, result: NameMap) -> NameMap:
        """Refuse (strict) or drop (lenient) two update tensors placed on one base tensor."""
        seen: dict[str, str] = {}
        for name, t in list(result.entries.items()):
            if t.dest in seen:
                if not self.strict:
                    del result.entries[name]
                    continue
                raise InputError(f"name map is ambiguous: {seen[t.dest]!r} and {name!r} both map to base tensor {t.dest!r}")
            seen[t.dest] = name
        return result

    def _direct(self, w: Wanted, result: NameMap) -> Target | None:
        if w.name in self.explicit:
            source, perm = self.explicit[w.name]
            if perm is not None and len(perm) != len(w.shape):
                raise ShapeMismatchError(f"{self.explicit_via}: transpose {list(perm)} of {w.name!r} does not fit its rank {len(w.shape)}")
            if source is None:
                if not w.droppable:
                    raise InputError(
                        f"{self.explicit_via} maps {w.name!r} to nothing, but the update changes it; "
                        "a map may not silently drop a change"
                    )
                result.skipped[w.name] = f"mapped to nothing by the {self.explicit_via}"
                return None
            if source in self.aliases and perm is None:
                origin = source if source in self.base else self.aliases[source]
                if w.needs_base:
                    self._check(w, origin, None, self.explicit_via)
                return Target(origin, source, None, "alias")
            if source in self.base:
                if w.needs_base:
                    self._check(w, source, perm, self.explicit_via)
                return Target(source, source, perm, self.explicit_via)
            raise InputError(f"{self.explicit_via} maps {w.name!r} to {source!r}, which the base does not have")
        if w.name in self.aliases:
            source = w.name if w.name in self.base else self.aliases[w.name]
            if w.needs_base:
                self._check(w, source, None, "Identity alias")
            return Target(source, w.name, None, "alias")
        if w.name in self.base:
            if w.needs_base:
                self._check(w, w.name, None, "same name")
            return Target(w.name, w.name, None, "exact")
        if self.strict_explicit and w.needs_base:
            raise InputError(f"{self.explicit_via} has no entry for {w.name!r} and the base has no tensor of that name")
        if not w.needs_base:
            return Target(None, w.name, None, "added")
        return None

    @staticmethod
    def _perms(w: Wanted, array: np.ndarray) -> list[tuple[int, ...] | None]:
        if tensor_dtype_name(array) != w.dtype:
            return []
        shape = tuple(array.shape)
        perms: list[tuple[int, ...] | None] = []
        if shape == w.shape:
            perms.append(None)
        if len(w.shape) == 2 and w.shape[0] != w.shape[1] and shape == w.shape[::-1]:
            perms.append(_TRANSPOSE_2D)
        return perms



def resolve(
    update: Update,
    base: Mapping[str, np.ndarray],
    name_map: str | os.PathLike[str],
    *,
    base_path: str | os.PathLike[str] | None = None,
) -> NameMap:
    """Match ``update``'s names to ``base`` (``name_map`` is ``"auto"`` or a JSON map file)."""
    info = None
    if base_path is not None and Path(base_path).suffix.lower() == ".onnx":
        from .onnx import graph_info

        info = graph_info(base_path)
    explicit: dict[str, tuple[str | None, tuple[int, ...] | None]] = {}
    via, strict = "export metadata", False
    if str(name_map) != "auto":
        explicit, via, strict = load_map_file(name_map), f"name map {name_map}", True
    elif info is not None and info.name_map:
        explicit = parse_map({"tensors": info.name_map}, f"{base_path} metadata")
    resolver = _Resolver(
        base,
        order=info.order if info else None,
        aliases=info.aliases if info else {},
        explicit=explicit,
        explicit_via=via,
        strict_explicit=strict,
        digests=read_tensor_digests(update),
    )
    return resolver.resolve(_wanted(update))


def resolve_for_export(
    state: Mapping[str, np.ndarray], initializers: Mapping[str, np.ndarray], info: Any
) -> dict[str, Any]:
    """The torch -> ONNX map of a fresh export, matched by value while the torch tensors exist."""
    wanted = [Wanted(n, tensor_dtype_name(a), tuple(a.shape), True, False) for n, a in state.items()]
    resolver = _Resolver(
        initializers,
        order=info.order,
        aliases=info.aliases,
        explicit={},
        explicit_via="export",
        strict_explicit=False,
        digests={n: tensor_digest(np.asarray(a)) for n, a in state.items()},
        strict=False,
    )
    # Tensors export folded or dropped are left out (not mapped to null), so that applying
    # an update that changes them still meets rule 4 and is refused, never dropped.
    return resolver.resolve(wanted).to_json()["tensors"]  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------- applying


@dataclass
class MappedApply:
    """The new base-named tensors and the map that placed them."""

    tensors: dict[str, np.ndarray]
    name_map: NameMap


def apply_with_name_map(
    base_path: str | os.PathLike[str],
    base_tensors: Mapping[str, np.ndarray],
    update: Update,
    name_map: str | os.PathLike[str],
    *,
    force: bool = False,
) -> MappedApply:
    """Apply ``update`` to a base whose tensors carry other names or layouts.

    The base is checked under the update's names: each matched tensor against its stored
    digest when the update has them, and the whole set against the base fingerprint when
    every referenced tensor was found. A base that cannot be verified is refused unless
    ``force``.
    """
    mapping = resolve(update, base_tensors, name_map, base_path=base_path)
    renamed = {
        name: _to_update_layout(np.asarray(base_tensors[t.source]), t.transpose)
        for name, t in mapping.entries.items()
        if t.source is not None
    }
    digests = read_tensor_digests(update)
    if digests is not None and not force:
        wrong = [n for n, d in digests.items() if n in renamed and tensor_digest(renamed[n]) != d]
        if wrong:
            raise BaseMismatchError(
                f"{len(wrong)} base tensors differ from the ones the update was made against, e.g. "
                + ", ".join(f"{n} (base {mapping.entries[n].source!r})" for n in wrong[:4])
            )
    kept = Update(
        {n: c for n, c in update.changes.items() if n not in mapping.skipped},
        update.kind,
        update.base_fingerprint,
        update.round,
        update.producer,
        dict(update.metadata),
        list(update.extra_chunks),
    )
    if mapping.skipped:
        if digests is None and not force:
            raise BaseMismatchError(
                "cannot verify the base: the update's fingerprint covers tensors the base lacks ("
                + ", ".join(list(mapping.skipped)[:4])
                + "); encode with tensor digests (the `nnupdate encode` default) to verify tensor by tensor"
            )
        kept.base_fingerprint = None  # verified tensor by tensor above
    try:
        result = apply(renamed, kept, force=force)
    except BaseMismatchError as exc:
        if mapping.guesses:
            guessed = "; ".join(f"{n} among {c}" for n, c in list(mapping.guesses.items())[:4])
            raise BaseMismatchError(
                f"{exc}; tensors matched by shape alone (ambiguous without digests): {guessed}; "
                "pass --name-map FILE to say which is which"
            ) from None
        raise
    out = {name: np.asarray(value) for name, value in base_tensors.items()}
    for name, change in kept.changes.items():
        target = mapping.entries[name]
        if change.combine == Combine.KEEP:
            continue
        if change.combine == Combine.REMOVE:
            out.pop(target.dest, None)
            continue
        value = result[name]
        out[target.dest] = np.ascontiguousarray(np.transpose(value, target.transpose)) if target.transpose else value
    return MappedApply(out, mapping)


# ----------------------------------------------------------------------------- encoding across formats


def align_names(
    base_path: str | os.PathLike[str],
    base: Mapping[str, np.ndarray],
    new_path: str | os.PathLike[str],
    new: Mapping[str, np.ndarray],
    name_map: str | os.PathLike[str],
) -> dict[str, np.ndarray]:
    """``new`` renamed (and transposed) into ``base``'s names, for ``encode`` across formats.

    The map comes from ``name_map`` (a FILE) or, for ``"auto"``, from the metadata
    :func:`nnupdate.adapters.onnx.export` stored in whichever side is ONNX. Values cannot
    guide the match here (base and new differ by the very update being made), so ``auto``
    without such metadata is refused rather than guessed.
    """
    if str(name_map) == "auto":
        from .onnx import graph_info

        onnx_side = next((p for p in (base_path, new_path) if Path(p).suffix.lower() == ".onnx"), None)
        stored = graph_info(onnx_side).name_map if onnx_side is not None else {}
        if not stored:
            raise InputError(
                "encode --name-map auto needs an ONNX side exported with nnupdate.adapters.onnx.export "
                "(its metadata holds the map); otherwise pass a map FILE (apply --save-name-map writes one)"
            )
        mapping = parse_map({"tensors": stored}, f"{onnx_side} metadata")
    else:
        mapping = load_map_file(name_map)
    targets = {name for name, _ in mapping.values() if name is not None}
    forward = len(targets & set(base)) >= len(set(mapping) & set(base))  # base holds the map's targets
    out: dict[str, np.ndarray] = {}
    consumed: set[str] = set()
    for key, (target, perm) in mapping.items():
        if target is None:
            continue
        source, dest = (key, target) if forward else (target, key)
        if source not in new:
            continue
        value = np.asarray(new[source])
        if perm is not None:
            if len(perm) != value.ndim:
                raise ShapeMismatchError(f"name map: transpose {list(perm)} of {key!r} does not fit rank {value.ndim}")
            value = np.ascontiguousarray(np.transpose(value, perm if forward else np.argsort(perm)))
        out[dest] = value
        consumed.add(source)
    for name, value in new.items():
        if name not in consumed and name not in out:
            out[name] = np.asarray(value)
    return out
