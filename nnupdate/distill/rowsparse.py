"""``rowsparse``: an array→bytes stage for arrays whose rows are mostly all zero.

Made for soft-label deltas (new units minus the reference's): once labels settle, most
rows do not change between rounds. The payload codes a change mask over the rows and
then only the entries of the marked rows, each with its own order-0 rANS model (the
``rans`` stage's bytes), so neither distribution pollutes the other:

    uvarint  length of the mask stream in bytes
    bytes    rans payload of the mask: N symbols in {0, 1}, 1 = row has a nonzero entry
    bytes    rans payload of the K*R entries of the K marked rows, row-major, rows in order

A row is ``prod(shape[1:])`` entries (each element of a 1-D array is a row). The
encoding is canonical: the decoder refuses a marked row that is all zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..codecs.base import ArraySpec, ArrayToBytes, check_integer_symbols, register
from ..codecs.rans import Rans
from ..codecs.varint import Reader, write_uvarint
from ..errors import CodecError


def _rows(spec: ArraySpec) -> tuple[int, int]:
    if not spec.shape:
        return 1, 1
    n = spec.shape[0]
    return n, (spec.size // n if n else 0)


@register
@dataclass(frozen=True)
class RowSparse(ArrayToBytes):
    """Change mask over rows + entries of the changed rows, both order-0 rANS coded."""

    codec_id = 0x0040
    name = "rowsparse"
    lossless = True

    def encode(self, values: np.ndarray, spec: ArraySpec) -> tuple[bytes, RowSparse]:
        symbols = check_integer_symbols(values, self.name)
        n, width = _rows(spec)
        table = symbols.reshape(n, width)
        changed = (table != 0).any(axis=1) if width else np.zeros(n, dtype=bool)
        mask = changed.astype(np.uint8)
        entries = table[changed].reshape(-1)
        coder = Rans()
        mask_bytes, _ = coder.encode(mask, ArraySpec((n,), "uint8"))
        entry_bytes, _ = coder.encode(entries, ArraySpec((entries.size,), "int64"))
        out = bytearray()
        write_uvarint(out, len(mask_bytes))
        return bytes(out) + mask_bytes + entry_bytes, self

    def decode(self, data: bytes, spec: ArraySpec) -> np.ndarray:
        n, width = _rows(spec)
        reader = Reader(data)
        mask_len = reader.uvarint()
        mask_bytes = bytes(reader.take(mask_len))
        entry_bytes = bytes(reader.rest())
        coder = Rans()
        mask = coder.decode(mask_bytes, ArraySpec((n,), "uint8"))
        if mask.size and mask.max() > 1:
            raise CodecError("rowsparse: mask symbols must be 0 or 1")
        rows = np.flatnonzero(mask)
        entries = coder.decode(entry_bytes, ArraySpec((rows.size * width,), spec.dtype)).reshape(rows.size, width)
        if rows.size and not (entries != 0).any(axis=1).all():
            raise CodecError("rowsparse: a row marked changed is all zero")
        out = np.zeros((n, width), dtype=entries.dtype)
        out[rows] = entries
        return out.reshape(spec.shape)

    def max_encoded_size(self, spec: ArraySpec) -> int:
        n, _ = _rows(spec)
        return 16 + Rans().max_encoded_size(ArraySpec((n,), "uint8")) + Rans().max_encoded_size(spec)
