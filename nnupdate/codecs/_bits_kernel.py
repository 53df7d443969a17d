"""Integer-only bit-stream kernels (numba-compiled) for the ``elias``, ``golomb`` and ``bitpack`` stages.

Bit order everywhere: bits fill each byte from the least significant bit up, bytes in
stream order (the order of tensorflow-compression's ``BitWriter``). A multi-bit field
of width w is written least significant bit first. The last byte is padded with zero
bits. Decoders never read past the end: a stream that ends early, overlong codes, or
runs that overflow the array return an error code (< 0) that the stage turns into a
:class:`~nnupdate.errors.CodecError`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Error codes returned by decoders (negative "position").
ERR_TRUNCATED = -1  #: the stream ends inside a code
ERR_OVERLONG = -2  #: a gamma prefix longer than 32 bits / a unary run longer than allowed
ERR_OVERRUN = -3  #: a zero run points past the end of the array
ERR_RANGE = -4  #: a decoded magnitude does not fit the declared range


@njit(cache=True, nogil=True)
def _bit_width(v: np.uint64) -> int:  # pragma: no cover - compiled
    n = 0
    while v:
        v >>= np.uint64(1)
        n += 1
    return n


# ----------------------------------------------------------------------------- Elias-gamma RLE


@njit(cache=True, nogil=True)
def elias_rle_encode(values: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """tensorflow-compression ``run_length_gamma_encode``: for every nonzero value,
    gamma(zeros before it + 1), a sign bit (1 = positive), gamma(|value|); a final
    gamma(trailing zeros + 1) when the array ends in zeros; zero padding to a byte."""
    n = values.shape[0]
    out = np.empty(n * 9 + 16, dtype=np.uint8)
    nbytes = 0
    buf = np.uint64(0)
    nbits = 0
    zero_ct = np.uint64(1)
    for i in range(n + 1):
        if i < n:
            v = values[i]
            if v == 0:
                zero_ct += np.uint64(1)
                continue
        elif zero_ct == 1:
            break
        # gamma(zero_ct): w-1 zeros, a one, then the w-1 low bits LSB first
        for which in range(3 if i < n else 1):
            if which == 0:
                g = zero_ct
            elif which == 1:
                # sign bit
                buf |= np.uint64(1 if values[i] > 0 else 0) << np.uint64(nbits)
                nbits += 1
                while nbits >= 8:
                    out[nbytes] = np.uint8(buf & np.uint64(0xFF))
                    nbytes += 1
                    buf >>= np.uint64(8)
                    nbits -= 8
                continue
            else:
                a = values[i]
                g = np.uint64(a if a > 0 else -a)
            w = _bit_width(g)
            nbits += w - 1  # zeros
            while nbits >= 8:
                out[nbytes] = np.uint8(buf & np.uint64(0xFF))
                nbytes += 1
                buf >>= np.uint64(8)
                nbits -= 8
            field = np.uint64(1) | ((g - (np.uint64(1) << np.uint64(w - 1))) << np.uint64(1))
            buf |= field << np.uint64(nbits)
            nbits += w
            while nbits >= 8:
                out[nbytes] = np.uint8(buf & np.uint64(0xFF))
                nbytes += 1
                buf >>= np.uint64(8)
                nbits -= 8
        zero_ct = np.uint64(1)
    if nbits > 0:
        out[nbytes] = np.uint8(buf & np.uint64(0xFF))
        nbytes += 1
    return out[:nbytes].copy()


@njit(cache=True, nogil=True)
def _read_gamma(data: np.ndarray, pos: int, total_bits: int) -> tuple[np.uint64, int]:  # pragma: no cover - compiled
    """Gamma code at bit ``pos``; returns (value, new pos) or (0, error code)."""
    zeros = 0
    while True:
        if pos >= total_bits:
            return np.uint64(0), ERR_TRUNCATED
        bit = (data[pos >> 3] >> (pos & 7)) & 1
        pos += 1
        if bit:
            break
        zeros += 1
        if zeros > 31:
            return np.uint64(0), ERR_OVERLONG
    if pos + zeros > total_bits:
        return np.uint64(0), ERR_TRUNCATED
    value = np.uint64(1) << np.uint64(zeros)
    for j in range(zeros):
        p = pos + j
        if (data[p >> 3] >> (p & 7)) & 1:
            value |= np.uint64(1) << np.uint64(j)
    return value, pos + zeros


@njit(cache=True, nogil=True)
def elias_rle_decode(data: np.ndarray, n: int) -> tuple[np.ndarray, int]:  # pragma: no cover - compiled
    """Inverse of :func:`elias_rle_encode`; returns (values, bits consumed or error code)."""
    out = np.zeros(n, dtype=np.int64)
    total_bits = data.shape[0] * 8
    pos = 0
    i = 0
    while i < n:
        run, pos = _read_gamma(data, pos, total_bits)
        if pos < 0:
            return out, pos
        i += int(run) - 1
        if i == n:
            break
        if i > n:
            return out, ERR_OVERRUN
        if pos >= total_bits:
            return out, ERR_TRUNCATED
        positive = (data[pos >> 3] >> (pos & 7)) & 1
        pos += 1
        mag, pos = _read_gamma(data, pos, total_bits)
        if pos < 0:
            return out, pos
        if mag > np.uint64(0x7FFFFFFF):
            return out, ERR_RANGE
        out[i] = np.int64(mag) if positive else -np.int64(mag)
        i += 1
    return out, pos


# ----------------------------------------------------------------------------- Rice codes


@njit(cache=True, nogil=True)
def rice_encode(u: np.ndarray, k: int, out: np.ndarray, nbytes: int, buf: np.uint64, nbits: int) -> tuple[int, np.uint64, int]:  # pragma: no cover - compiled
    """Append Rice(k) codes of non-negative ``u`` (quotient as q one-bits and a zero, then
    k low bits LSB first) to ``out``; returns the writer state (bytes, buffer, bits)."""
    kk = np.uint64(k)
    mask = (np.uint64(1) << kk) - np.uint64(1)
    cap = out.shape[0]
    for i in range(u.shape[0]):
        if nbytes + 16 > cap:  # capacity guard: report instead of writing out of bounds
            return -1, buf, nbits
        v = np.uint64(u[i])
        q = v >> kk
        # q ones
        while q > np.uint64(0):
            if nbytes + 16 > cap:
                return -1, buf, nbits
            take = q if q < np.uint64(32) else np.uint64(32)
            buf |= ((np.uint64(1) << take) - np.uint64(1)) << np.uint64(nbits)
            nbits += int(take)
            q -= take
            while nbits >= 8:
                out[nbytes] = np.uint8(buf & np.uint64(0xFF))
                nbytes += 1
                buf >>= np.uint64(8)
                nbits -= 8
        nbits += 1  # the terminating zero
        rem = v & mask
        written = 0
        while True:  # the k-bit remainder, at most 32 bits per write (k may reach 62)
            while nbits >= 8:
                out[nbytes] = np.uint8(buf & np.uint64(0xFF))
                nbytes += 1
                buf >>= np.uint64(8)
                nbits -= 8
            if written >= k:
                break
            width = min(32, k - written)
            part = (rem >> np.uint64(written)) & ((np.uint64(1) << np.uint64(width)) - np.uint64(1))
            buf |= part << np.uint64(nbits)
            nbits += width
            written += width
    return nbytes, buf, nbits


@njit(cache=True, nogil=True)
def rice_decode(data: np.ndarray, pos: int, count: int, k: int, limit: np.uint64) -> tuple[np.ndarray, int]:  # pragma: no cover - compiled
    """``count`` Rice(k) codes from bit ``pos``; each value must be <= ``limit``.

    Returns (values, new pos or error code)."""
    out = np.empty(count, dtype=np.uint64)
    total_bits = data.shape[0] * 8
    qlimit = limit >> np.uint64(k)
    for i in range(count):
        q = np.uint64(0)
        while True:
            if pos >= total_bits:
                return out, ERR_TRUNCATED
            bit = (data[pos >> 3] >> (pos & 7)) & 1
            pos += 1
            if not bit:
                break
            q += np.uint64(1)
            if q > qlimit:
                return out, ERR_OVERLONG
        if pos + k > total_bits:
            return out, ERR_TRUNCATED
        r = np.uint64(0)
        for j in range(k):
            p = pos + j
            if (data[p >> 3] >> (p & 7)) & 1:
                r |= np.uint64(1) << np.uint64(j)
        pos += k
        v = (q << np.uint64(k)) | r
        if v > limit:
            return out, ERR_RANGE
        out[i] = v
    return out, pos


# ----------------------------------------------------------------------------- fixed-width packing


@njit(cache=True, nogil=True)
def pack(u: np.ndarray, width: int) -> np.ndarray:  # pragma: no cover - compiled
    """Each value of ``u`` (uint64, < 2**width) in ``width`` bits, LSB first, zero padded:
    bit j of the stream is bit j % 8 of byte j // 8. A byte's worth at a time."""
    n = u.shape[0]
    out = np.zeros((n * width + 7) // 8, dtype=np.uint8)
    pos = 0
    for i in range(n):
        v = u[i]
        left = width
        while left > 0:
            shift = pos & 7
            take = min(8 - shift, left)
            out[pos >> 3] |= np.uint8((v & np.uint64((1 << take) - 1)) << np.uint64(shift))
            v >>= np.uint64(take)
            pos += take
            left -= take
    return out


@njit(cache=True, nogil=True)
def unpack(data: np.ndarray, n: int, width: int) -> np.ndarray:  # pragma: no cover - compiled
    """The inverse of :func:`pack` (``data`` holds at least ceil(n * width / 8) bytes)."""
    out = np.zeros(n, dtype=np.uint64)
    pos = 0
    for i in range(n):
        v = np.uint64(0)
        got = 0
        while got < width:
            shift = pos & 7
            take = min(8 - shift, width - got)
            v |= ((np.uint64(data[pos >> 3]) >> np.uint64(shift)) & np.uint64((1 << take) - 1)) << np.uint64(got)
            got += take
            pos += take
        out[i] = v
    return out
