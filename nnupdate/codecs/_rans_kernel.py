"""Integer-only rANS kernels (numba-compiled), the hot loops of the ``rans`` stage.

State: 64-bit, kept in [2**31, 2**63); I/O in 32-bit words; frequencies sum to 2**P
(P <= 20). The encoder walks the symbols backwards so the decoder reads forwards.
See spec/FORMAT.md, "rans", for the normative description.
"""

from __future__ import annotations

import numpy as np
from numba import njit

RANS_L = np.uint64(1 << 31)


@njit(cache=True, nogil=True)
def encode(
    symbols: np.ndarray, freq: np.ndarray, cum: np.ndarray, precision: int, lanes: int
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Returns (final states, words in decoder order). Symbol ``i`` is coded by lane
    ``i mod lanes``; all lanes share one word stream."""
    n = symbols.shape[0]
    words = np.empty(n + 1, dtype=np.uint32)
    count = 0
    states = np.full(lanes, np.uint64(1 << 31), dtype=np.uint64)
    p = np.uint64(precision)
    shift_base = np.uint64(63 - precision)
    mask32 = np.uint64(0xFFFFFFFF)
    for i in range(n - 1, -1, -1):
        lane = i % lanes
        x = states[lane]
        s = symbols[i]
        f = np.uint64(freq[s])
        x_max = f << shift_base
        if x >= x_max:
            words[count] = np.uint32(x & mask32)
            count += 1
            x = x >> np.uint64(32)
        q = x // f
        states[lane] = (q << p) + (x - q * f) + np.uint64(cum[s])
    out = words[:count][::-1].copy()
    return states, out


@njit(cache=True, nogil=True)
def decode(
    state: np.uint64,
    words: np.ndarray,
    n: int,
    freq: np.ndarray,
    cum: np.ndarray,
    bucket: np.ndarray,
    precision: int,
    bucket_bits: int,
) -> tuple[np.ndarray, int, np.uint64]:  # pragma: no cover - compiled
    """Returns (symbols, words consumed, final state); a sound stream ends at state 2**31
    with every word consumed. Reading past the end returns -1 as the word count.

    ``cum`` has alphabet + 1 entries (the last is 2**precision). The symbol of a slot is
    found from ``bucket`` (built here when given empty) (the symbol holding the first slot of each of the
    2**bucket_bits equal slot ranges) plus a short forward scan: a cache-resident
    table instead of a 2**precision-entry one, which is what bounds the speed of this
    state-serial loop.
    """
    out = np.empty(n, dtype=np.int32)
    x = np.uint64(state)
    p = np.uint64(precision)
    mask = np.uint64((1 << precision) - 1)
    shift = np.uint64(precision - bucket_bits)
    if bucket.shape[0] == 0:  # build it here: cheaper than numpy calls for small tensors
        bucket = np.empty(1 << bucket_bits, dtype=np.int32)
        s = 0
        for b in range(1 << bucket_bits):
            start = np.uint64(b) << shift
            while np.uint64(cum[s + 1]) <= start:
                s += 1
            bucket[b] = s
    low = np.uint64(1 << 31)
    pos = 0
    nwords = words.shape[0]
    for i in range(n):
        slot = x & mask
        s = bucket[slot >> shift]
        while np.uint64(cum[s + 1]) <= slot:
            s += 1
        out[i] = s
        x = np.uint64(freq[s]) * (x >> p) + slot - np.uint64(cum[s])
        if x < low:
            if pos >= nwords:
                return out, -1, x
            x = (x << np.uint64(32)) | np.uint64(words[pos])
            pos += 1
    return out, pos, x


#: statuses of :func:`decode_lanes`
OK, TRUNCATED, BAD_STATE, EXHAUSTED, NOT_ENDED = 0, 1, 2, 3, 4


@njit(cache=True, nogil=True)
def decode_lanes(
    data: np.ndarray, pos: int, n: int, lanes: int, freq: np.ndarray, cum: np.ndarray, precision: int, symbol_values: np.ndarray
) -> tuple[np.ndarray, int, int]:  # pragma: no cover - compiled
    """Interleaved decoding of the stream at ``data[pos:]`` (W, the lane states, the words):
    symbol ``i`` from lane ``i mod lanes``, all lanes reading one word sequence.

    Returns (``symbol_values[symbol]`` per element, status, position after the words).
    ``symbol_values`` maps the alphabet to what the caller wants written: the int32
    values ``lo + s``, the indices ``s``, or a step quantizer's float32 reconstructions
    (one lookup, so levels go straight to floats with no integer intermediate). A full
    2**precision slot->symbol table (uint16: the alphabet is at most 4096) replaces the
    search: encoders that use lanes keep precision <= 14, so the table stays in L1, and
    the independent lanes keep several state updates in flight. Reading the header here
    too spares the caller a handful of numpy calls per tensor.
    """
    out = np.empty(n, dtype=symbol_values.dtype)
    size = data.shape[0]
    nwords = np.uint64(0)  # uvarint W
    shift = np.uint64(0)
    while True:
        if pos >= size or shift > np.uint64(56):
            return out, TRUNCATED, pos
        byte = np.uint64(data[pos])
        pos += 1
        nwords |= (byte & np.uint64(0x7F)) << shift
        shift += np.uint64(7)
        if byte < 0x80:
            break
    if nwords > np.uint64(n + 1) or np.uint64(size - pos) < np.uint64(8 * lanes) + np.uint64(4) * nwords:
        return out, TRUNCATED, pos
    xs = np.empty(lanes, dtype=np.uint64)
    low = np.uint64(1 << 31)
    for lane in range(lanes):
        x = np.uint64(0)
        for k in range(8):
            x |= np.uint64(data[pos + 8 * lane + k]) << np.uint64(8 * k)
        if x < low or x >= np.uint64(1 << 63):
            return out, BAD_STATE, pos
        xs[lane] = x
    pos += 8 * lanes
    table = np.empty(1 << precision, dtype=np.uint16)
    for s in range(freq.shape[0]):
        table[cum[s] : cum[s + 1]] = s
    p = np.uint64(precision)
    mask = np.uint64((1 << precision) - 1)
    q = pos  # next word
    end = pos + 4 * int(nwords)
    full = n - n % lanes
    for i in range(0, n, lanes):
        count = lanes if i < full else n - full  # a fixed trip count in the bulk helps LLVM
        for lane in range(count):
            x = xs[lane]
            slot = x & mask
            s = table[slot]
            out[i + lane] = symbol_values[s]
            x = np.uint64(freq[s]) * (x >> p) + slot - np.uint64(cum[s])
            if x < low:
                if q >= end:
                    return out, EXHAUSTED, q
                w = np.uint64(data[q]) | (np.uint64(data[q + 1]) << np.uint64(8))
                w |= (np.uint64(data[q + 2]) << np.uint64(16)) | (np.uint64(data[q + 3]) << np.uint64(24))
                x = (x << np.uint64(32)) | w
                q += 4
            xs[lane] = x
    if q != end:
        return out, NOT_ENDED, q
    for lane in range(lanes):
        if xs[lane] != low:
            return out, NOT_ENDED, q
    return out, OK, q


@njit(cache=True, nogil=True)
def read_uvarints(data: np.ndarray, pos: int, count: int) -> tuple[np.ndarray, int, int]:  # pragma: no cover - compiled
    """``count`` LEB128 values from ``data[pos:]``: (values, new position, status) with
    status 0 ok, 1 data ends inside a varint, 2 longer than 10 bytes or >= 2**64."""
    out = np.empty(count, dtype=np.uint64)
    n = data.shape[0]
    for i in range(count):
        value = np.uint64(0)
        k = 0
        while True:
            if pos >= n:
                return out, pos, 1
            byte = np.uint64(data[pos])
            pos += 1
            if k == 9 and byte > 1:
                return out, pos, 2
            value |= (byte & np.uint64(0x7F)) << np.uint64(7 * k)
            k += 1
            if byte < 0x80:
                break
            if k == 10:
                return out, pos, 2
        out[i] = value
    return out, pos, 0


@njit(cache=True, nogil=True)
def read_model(data: np.ndarray, pos: int, alphabet: int, precision: int) -> tuple[np.ndarray, np.ndarray, int, int, int]:  # pragma: no cover - compiled
    """The frequency table: (freq, cum with alphabet + 1 entries, new position, status,
    number of nonzero frequencies). Status 0 ok; 1 or 2 a malformed varint (as
    :func:`read_uvarints`); 3 the frequencies do not sum to exactly 2**precision."""
    values, pos, status = read_uvarints(data, pos, alphabet)
    freq = np.empty(alphabet, dtype=np.uint32)
    cum = np.zeros(alphabet + 1, dtype=np.uint32)
    if status:
        return freq, cum, pos, status, 0
    total = np.uint64(0)
    limit = np.uint64(1) << np.uint64(precision)
    nonzero = 0
    for s in range(alphabet):
        f = values[s]
        if f > limit:
            return freq, cum, pos, 3, 0
        total += f
        if total > limit:
            return freq, cum, pos, 3, 0
        freq[s] = np.uint32(f)
        cum[s + 1] = np.uint32(total)
        if f:
            nonzero += 1
    if total != limit:
        return freq, cum, pos, 3, 0
    return freq, cum, pos, 0, nonzero


@njit(cache=True, nogil=True)
def write_uvarints(values: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """LEB128 of every (non-negative, < 2**63) value, concatenated, as uint8."""
    out = np.empty(values.shape[0] * 10, dtype=np.uint8)
    pos = 0
    for i in range(values.shape[0]):
        v = np.uint64(values[i])
        while v >= 0x80:
            out[pos] = np.uint8((v & np.uint64(0x7F)) | np.uint64(0x80))
            pos += 1
            v >>= np.uint64(7)
        out[pos] = np.uint8(v)
        pos += 1
    return out[:pos]
