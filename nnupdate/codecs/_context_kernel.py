"""Integer-only kernels of the ``ctx`` stage: a context-adaptive binary range coder.

Everything that decides decoded values or probability states is integer arithmetic
(add, subtract, multiply, shifts, compares) on int64, so every platform decodes the same
bytes to the same levels. spec/CONTEXT.md is the normative description; the names here
follow it.

* Range coder: LZMA's (32-bit range, 33-bit low with carry cache, bytes out MSB first).
* Probabilities: 15-bit estimates of P(bin = 0), two per context, adapted with shifts up
  to 4 and 7 (a fast and a slow counter, as in VVC) that start at 1 and 2 and grow with
  the context's bin count (a young context learns at once); the coder uses their mean.
  The greater-than-k flags are coded with the mean of two contexts' probabilities (local
  neighbourhood, and row x column activity): mixing two context sets beats one product
  set whose contexts would each see too few bins.
* Binarization of a level q: significance, sign, greater-than-k flags k = 1..NGT, then an
  order-0 exp-Golomb remainder with adaptive prefix bins and bypass suffix bits.
* Contexts: the previous two levels of the row, the co-located level of the previous row,
  a running activity of the row and of each column, a per-row skip flag for all-zero
  rows, and for signs a per-column sign accumulator with the current row's agreement
  with it (low-rank updates have sign = row sign x column sign).

The encoder-side rate-distortion quantizer (:func:`rdoq`) runs the same context model in
float cost units; it never touches the decoder's state.
"""

from __future__ import annotations

import numpy as np
from numba import njit

PROB_BITS = 15
PROB_ONE = 1 << PROB_BITS
HALF = PROB_ONE >> 1
TOP = 1 << 24
#: adaptation shifts (fast, slow estimator) of profile 0 (default) and profile 1 (fast),
#: selected by the first bypass bin of the stream
SHIFT_FAST = 4
SHIFT_SLOW = 7
PROFILE_FAST = np.array([4, 3], dtype=np.int64)
PROFILE_SLOW = np.array([7, 6], dtype=np.int64)
MAX_EG_PREFIX = 31
MAX_MAGNITUDE = (1 << 31) - 1
NUM_EG_CTX = 18
#: check bits appended after the last level are the low ``check`` bits of this
CHECK_PATTERN = 0xA5C3F00F
MAX_CHECK = 32

# Context layout (indices into the state array).
CTX_SKIP = 0  # row-coded flag (1 = the row has a nonzero level); 2 contexts: previous row skipped?
CTX_SIG = 2  # 2 (dq quantizer) x 3 (row activity) x 4 (column activity) x 5 (a+b) = 120
CTX_SIGN = 122  # 3 (previous level's sign) x 3 (column sign) x 5 (row agreement) = 45
CTX_SIG2 = 167  # second significance context: 2 (dq quantizer) x 8 (row activity) x 6 (column activity) x 3 (a) = 288
NUM_SIG2 = 288
CTX_GT = 455  # NGT x 8 (local magnitude); then NGT x 8 (row activity) x 4 (column activity)
NUM_GT_CLASSES = 8
NUM_GT2_CLASSES = 32
#: column sign accumulators and the row agreement are clamped to these
COLSIGN_LIMIT = 64
AGREE_LIMIT = 16
#: a context's bin count saturates here: it only sets the adaptation shifts, and from 31
#: bins on they are the profile's own (spec/CONTEXT.md caps it at 255 with the same effect)
MATURE = 31
#: floor(log2(i)) for i = 0..32
_LOG2 = np.array([0] + [i.bit_length() - 1 for i in range(1, 33)], dtype=np.int64)


#: contexts of the exp-Golomb suffix's leading bit: 16 prefix lengths x 3 magnitude classes
NUM_SFX_CTX = 48

# Context classes are read from tables rather than chains of compares: a mispredicted
# branch per class costs more than the L1 load (decode 15% faster, same classes).
#: the row and column activities stay in [0, 15 * 256]; every class boundary on them is a
#: multiple of 8, so a table indexed by ``activity >> 3`` holds the class exactly
MAX_ACTIVITY = 15 * 256


def _class_table(bounds: list[int]) -> np.ndarray:
    """Class of ``activity`` (number of ``bounds`` it reaches) at index ``activity >> 3``."""
    assert all(b % 8 == 0 for b in bounds)
    return np.searchsorted(np.array(bounds), np.arange(MAX_ACTIVITY // 8 + 1) * 8, side="right").astype(np.int64)


#: row activity on a log2 scale: 0 below 8, one class per doubling, 7 from 512
ACT8_CLASS = _class_table([8, 16, 32, 64, 128, 256, 512])
#: row activity class of SIG
SIG_ROW_CLASS = _class_table([16, 128])
#: column activity class of SIG (and of GT's first context set)
COL_CLASS = _class_table([24, 96, 320])
#: column activity class of SIG2
SIG2_COL_CLASS = _class_table([16, 48, 128, 256, 512])
#: local magnitude class 0..7 of the neighbour sum a + b + c (log-spaced), for sums < 32
GT_CLASS = np.array([0, 1, 2, 3, 3, 4, 4, 4] + [5] * 5 + [6] * 8 + [7] * 11, dtype=np.int64)
#: row agreement class 0..4 at index ``agree + AGREE_LIMIT``: < -4, < -1, <= 1, <= 4, above
AGREE_CLASS = np.array([0] * 12 + [1] * 3 + [2] * 3 + [3] * 3 + [4] * 12, dtype=np.int64)


def num_contexts(ngt: int) -> int:
    return CTX_GT + ngt * (NUM_GT_CLASSES + NUM_GT2_CLASSES) + 3 * NUM_EG_CTX + NUM_SFX_CTX


@njit(cache=True, nogil=True)
def num_contexts_jit(ngt: int) -> int:  # pragma: no cover - compiled
    return CTX_GT + ngt * (NUM_GT_CLASSES + NUM_GT2_CLASSES) + 3 * NUM_EG_CTX + NUM_SFX_CTX


@njit(cache=True, inline="always")
def _sfx_ctx(eg_base: int, a: int, b: int, c: int, n: int) -> int:  # pragma: no cover - compiled
    """Context of the suffix bit just below the leading one (prefix length ``n`` >= 1)."""
    s = a + b + c
    e = 0 if s < 13 else (1 if s < 40 else 2)
    return eg_base + 3 * NUM_EG_CTX + 3 * (n if n < 15 else 15) + e


@njit(cache=True, inline="always")
def _sig2_ctx(qz: int, act: int, colact: int, a: int) -> int:  # pragma: no cover - compiled
    """Second significance context: finer row and column activity than SIG, and the last level."""
    return CTX_SIG2 + ((qz * 8 + ACT8_CLASS[act >> 3]) * 6 + SIG2_COL_CLASS[colact >> 3]) * 3 + (a if a < 2 else 2)


@njit(cache=True, inline="always")
def _gt2_base(ngt: int) -> int:  # pragma: no cover - compiled
    return CTX_GT + ngt * NUM_GT_CLASSES


@njit(cache=True, inline="always")
def _eg_base(ngt: int) -> int:  # pragma: no cover - compiled
    return CTX_GT + ngt * (NUM_GT_CLASSES + NUM_GT2_CLASSES)


@njit(cache=True, inline="always")
def _prob(state: np.ndarray, ctx: int) -> int:  # pragma: no cover - compiled
    return (state[ctx, 0] + state[ctx, 1]) >> 1


@njit(cache=True, inline="always")
def _prob_mix(state: np.ndarray, ctx: int, ctx2: int) -> int:  # pragma: no cover - compiled
    """Mean of two contexts' probabilities: two context sets, one bin."""
    return (((state[ctx, 0] + state[ctx, 1]) >> 1) + ((state[ctx2, 0] + state[ctx2, 1]) >> 1)) >> 1


@njit(cache=True, inline="always")
def _adapted(p_fast: int, p_slow: int, count: int, bit: int, fs: int, ss: int) -> tuple[int, int, int]:  # pragma: no cover
    """A context's two estimates and bin count after ``bit``: variable-rate shifts 1 + L and
    2 + L (L = floor(log2(count + 1))), capped by the profile's (fast, slow) shifts, so a
    young context learns at once and a mature one averages over a long window."""
    fast = fs
    slow = ss
    if count < MATURE:
        lg = _LOG2[count + 1]
        if 1 + lg < fast:
            fast = 1 + lg
        if 2 + lg < slow:
            slow = 2 + lg
        count += 1
    # both outcomes computed, one selected: conditional moves, not a branch on the bin
    p_fast = p_fast + ((PROB_ONE - p_fast) >> fast) if bit == 0 else p_fast - (p_fast >> fast)
    p_slow = p_slow + ((PROB_ONE - p_slow) >> slow) if bit == 0 else p_slow - (p_slow >> slow)
    return p_fast, p_slow, count


@njit(cache=True, inline="always")
def _adapt(state: np.ndarray, ctx: int, bit: int, fs: int, ss: int) -> None:  # pragma: no cover - compiled
    """Update context ``ctx`` of ``state`` after ``bit`` (:func:`_adapted` on its row)."""
    state[ctx, 0], state[ctx, 1], state[ctx, 2] = _adapted(state[ctx, 0], state[ctx, 1], state[ctx, 2], bit, fs, ss)


@njit(cache=True, inline="always")
def _act_class8(act: int) -> int:  # pragma: no cover - compiled
    """Row activity on a log2 scale: 0 below 8, then one class per doubling, 7 from 512."""
    return ACT8_CLASS[act >> 3]


@njit(cache=True, inline="always")
def _gt2_ctx(gt2: int, k: int, kk: int, colact: int) -> int:  # pragma: no cover - compiled
    """Second context of greater-than-k flag ``k``: row activity class x column activity vs k."""
    cq = (1 if colact >= 256 * k else 0) + (2 if colact >= 512 * k else 0)
    return gt2 + ((k - 1) * 8 + kk) * 4 + cq


@njit(cache=True, inline="always")
def _sign_ctx(sa: int, colsign: int, agree: int) -> int:  # pragma: no cover - compiled
    """Sign context: previous level's sign x column sign x how this row agrees with the columns.

    Low-rank updates have sign(q[r, i]) = row sign x column sign; the column accumulators
    learn the column signs, the row agreement learns this row's flip.
    """
    pc = 0 if colsign == 0 else (1 if colsign > 0 else 2)
    return CTX_SIGN + (sa * 3 + pc) * 5 + AGREE_CLASS[agree + AGREE_LIMIT]


@njit(cache=True, inline="always")
def _agree_update(agree: int, colsign: int, neg: int) -> int:  # pragma: no cover - compiled
    if colsign == 0:
        return agree
    same = (colsign > 0) == (neg == 0)
    agree += 1 if same else -1
    if agree > AGREE_LIMIT:
        return AGREE_LIMIT
    if agree < -AGREE_LIMIT:
        return -AGREE_LIMIT
    return agree


@njit(cache=True, nogil=True)
def _colsign_update(colsign: np.ndarray, levels: np.ndarray, base: int, rowlen: int, agree: int) -> None:  # pragma: no cover
    """After a coded row: add the row's signs, flipped by its agreement, to the columns."""
    flip = 1 if agree >= 0 else -1
    for i in range(rowlen):
        q = levels[base + i]
        if q != 0:
            v = colsign[i] + (flip if q > 0 else -flip)
            if v > COLSIGN_LIMIT:
                v = COLSIGN_LIMIT
            elif v < -COLSIGN_LIMIT:
                v = -COLSIGN_LIMIT
            colsign[i] = v


@njit(cache=True, inline="always")
def _sig_ctx(a: int, b: int, c: int, act: int) -> int:  # pragma: no cover - compiled
    """``c`` here is the column activity class (0..3), ``act`` the row activity."""
    ab = a + b
    if ab > 4:
        ab = 4
    return CTX_SIG + (SIG_ROW_CLASS[act >> 3] * 4 + c) * 5 + ab


@njit(cache=True, inline="always")
def _dq_next(s: int, parity: int) -> int:  # pragma: no cover - compiled
    """Dependent-quantization state transition (states 0, 1 use Q0; 2, 3 use Q1)."""
    if s == 0:
        return 2 * parity
    if s == 1:
        return 2 - 2 * parity
    if s == 2:
        return 1 + 2 * parity
    return 3 - 2 * parity


@njit(cache=True, inline="always")
def _col_class(colact: int) -> int:  # pragma: no cover - compiled
    return COL_CLASS[colact >> 3]


@njit(cache=True, inline="always")
def _col_update(colact: int, m: int) -> int:  # pragma: no cover - compiled
    v = m if m < 15 else 15
    return colact + ((v * 256 - colact) >> 2)


@njit(cache=True, inline="always")
def _gt_class(a: int, b: int, c: int) -> int:  # pragma: no cover - compiled
    """Local magnitude class 0..7 from the sum of the three neighbours (log-spaced)."""
    s = a + b + c
    return GT_CLASS[s] if s < 32 else 7


@njit(cache=True, inline="always")
def _eg_ctx(eg_base: int, a: int, b: int, c: int, j: int) -> int:  # pragma: no cover - compiled
    """Context of exp-Golomb prefix bin ``j``: 3 local-magnitude classes x 18 positions."""
    s = a + b + c
    e = 0 if s < 13 else (1 if s < 40 else 2)
    return eg_base + e * NUM_EG_CTX + (j if j < NUM_EG_CTX - 1 else NUM_EG_CTX - 1)


@njit(cache=True, inline="always")
def _activity(act: int, m: int) -> int:  # pragma: no cover - compiled
    v = m if m < 15 else 15
    return act + ((v * 256 - act) >> 4)


@njit(cache=True, nogil=True)
def _init_state(nctx: int, fast: int, slow: int) -> np.ndarray:  # pragma: no cover - compiled
    """``nctx`` models at P(0) = 1/2 with bin count 0, plus a last row holding the adaptation shifts."""
    state = np.empty((nctx + 1, 3), dtype=np.int64)
    state[:, 0:2] = HALF
    state[:, 2] = 0
    state[nctx, 0] = fast
    state[nctx, 1] = slow
    return state


# ----------------------------------------------------------------------------- encoder


@njit(cache=True, nogil=True)
def _grow(buf: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    out = np.empty(buf.shape[0] * 2, dtype=np.uint8)
    out[: buf.shape[0]] = buf
    return out


# The encoder binarizes levels into a queue of bins and range-codes the queue in one loop
# (:func:`_code_bins`) whenever it fills. Why: numba reference-counts every array handed
# to an inlined helper (an atomic increment and decrement per call), and coding each bin
# through helpers that took the output buffer and the probability table made those
# atomics the encoder's hottest instructions (perf). Now the per-bin work reads and writes
# the table in one body with scalar-only helpers; the buffer goes to a helper only per
# byte written (a third of a byte per level at 3 bits), the rest once per flush.
#
# A queued bin packs ``bit | (ctx + 1) << 1 | (ctx2 + 1) << 12``: ctx -1 is a bypass bin
# (P(0) = 1/2, no model), ctx2 -1 a bin coded with one context (else the mean of two).

#: bins the queue holds; it is coded whenever fewer than MAX_LEVEL_BINS + 1 places are left
QUEUE_BINS = 1024
#: the most bins one level takes: significance, sign, 16 greater-than flags, an
#: exp-Golomb prefix of up to 31 ones and its zero, the suffix's leading bit, 30 bypass bits
MAX_LEVEL_BINS = 2 + 16 + MAX_EG_PREFIX + 1 + 1 + 30
FLUSH_AT = QUEUE_BINS - MAX_LEVEL_BINS - 1
#: a bin moves the coder's output by at most 2 bytes (probabilities are >= 2**-15)
BIN_ROOM = 2

# The coder's state (low, range, cache, cache_size, pos) lives in local variables threaded
# through these inlined helpers, not in an array: LLVM then keeps it in registers instead
# of reloading it after every store to the probability table (13% faster, same bytes).


@njit(cache=True, inline="always")
def _bin(ctx: int, ctx2: int, bit: int) -> int:  # pragma: no cover - compiled
    return bit | ((ctx + 1) << 1) | ((ctx2 + 1) << 12)


@njit(cache=True, inline="always")
def _shift_low(low: int, cache: int, csize: int, pos: int, buf: np.ndarray) -> tuple[int, int, int, int]:  # pragma: no cover
    if low < 0xFF000000 or low >= (1 << 32):
        carry = low >> 32
        temp = cache
        while True:
            buf[pos] = (temp + carry) & 0xFF
            pos += 1
            temp = 0xFF
            csize -= 1
            if csize == 0:
                break
        cache = (low >> 24) & 0xFF
    return (low & 0x00FFFFFF) << 8, cache, csize + 1, pos


@njit(cache=True, nogil=True)
def _code_bins(
    low: int, rng: int, cache: int, csize: int, pos: int, buf: np.ndarray, state: np.ndarray, queue: np.ndarray, n: int, fs: int, ss: int
) -> tuple[int, int, int, int, int, np.ndarray]:  # pragma: no cover - compiled
    """Range-code the first ``n`` queued bins, adapting their models; ``buf`` is grown first
    if it could run short. Returns the coder state and the (possibly new) buffer."""
    while pos + csize + BIN_ROOM * n + 8 > buf.shape[0]:
        buf = _grow(buf)
    for j in range(n):
        e = queue[j]
        bit = e & 1
        ctx = ((e >> 1) & 2047) - 1
        ctx2 = (e >> 12) - 1
        if ctx < 0:
            p0 = HALF
        elif ctx2 < 0:
            p0 = (state[ctx, 0] + state[ctx, 1]) >> 1
        else:
            p0 = (((state[ctx, 0] + state[ctx, 1]) >> 1) + ((state[ctx2, 0] + state[ctx2, 1]) >> 1)) >> 1
        bound = (rng >> PROB_BITS) * p0
        low = low + bound if bit == 1 else low
        rng = rng - bound if bit == 1 else bound
        while rng < TOP:
            rng <<= 8
            low, cache, csize, pos = _shift_low(low, cache, csize, pos, buf)
        if ctx >= 0:
            state[ctx, 0], state[ctx, 1], state[ctx, 2] = _adapted(state[ctx, 0], state[ctx, 1], state[ctx, 2], bit, fs, ss)
            if ctx2 >= 0:
                state[ctx2, 0], state[ctx2, 1], state[ctx2, 2] = _adapted(state[ctx2, 0], state[ctx2, 1], state[ctx2, 2], bit, fs, ss)
    return low, rng, cache, csize, pos, buf


@njit(cache=True, nogil=True)
def encode(levels: np.ndarray, rows: int, rowlen: int, ngt: int, check: int, dq: int, profile: int) -> np.ndarray:  # pragma: no cover - compiled
    """Range-code ``levels`` (int64, C order, ``rows * rowlen``, |q| <= 2**31-1)."""
    nctx = num_contexts_jit(ngt)
    eg_base = _eg_base(ngt)
    gt2 = _gt2_base(ngt)
    low = 0
    rng = 0xFFFFFFFF
    cache = 0
    csize = 1
    pos = 0
    buf = np.empty(max(1024, (rows * rowlen) // 4), dtype=np.uint8)
    queue = np.empty(QUEUE_BINS, dtype=np.int64)
    queue[0] = _bin(-1, -1, profile)  # the adaptation profile: one bypass bin before the first row
    nq = 1
    state = _init_state(nctx, PROFILE_FAST[profile], PROFILE_SLOW[profile])
    fs = PROFILE_FAST[profile]
    ss = PROFILE_SLOW[profile]
    prev = np.zeros(rowlen, dtype=np.int64)
    colact = np.zeros(rowlen, dtype=np.int64)
    colsign = np.zeros(rowlen, dtype=np.int64)
    prev_skipped = 0
    act = 0
    for r in range(rows):
        base = r * rowlen
        nonzero = 0
        for i in range(rowlen):
            if levels[base + i] != 0:
                nonzero = 1
                break
        skip = 1 - nonzero
        if nq > FLUSH_AT:
            low, rng, cache, csize, pos, buf = _code_bins(low, rng, cache, csize, pos, buf, state, queue, nq, fs, ss)
            nq = 0
        queue[nq] = _bin(CTX_SKIP + prev_skipped, -1, nonzero)
        nq += 1
        prev_skipped = skip
        if skip == 1:
            for i in range(rowlen):
                prev[i] = 0
            continue
        a = 0
        b = 0
        sa = 0
        dqs = 0
        agree = 0
        for i in range(rowlen):
            if nq > FLUSH_AT:
                low, rng, cache, csize, pos, buf = _code_bins(low, rng, cache, csize, pos, buf, state, queue, nq, fs, ss)
                nq = 0
            q = levels[base + i]
            c = prev[i]
            m = q if q >= 0 else -q
            qz = 1 if dqs >= 2 else 0
            queue[nq] = _bin(_sig_ctx(a, b, _col_class(colact[i]), act) + 60 * qz, _sig2_ctx(qz, act, colact[i], a), 1 if m != 0 else 0)
            nq += 1
            if m != 0:
                neg = 1 if q < 0 else 0
                queue[nq] = _bin(_sign_ctx(sa, colsign[i], agree), -1, neg)
                nq += 1
                agree = _agree_update(agree, colsign[i], neg)
                g = CTX_GT + _gt_class(a, b, c)
                kk = _act_class8(act)
                k = 1
                while k <= ngt:
                    flag = 1 if m > k else 0
                    queue[nq] = _bin(g + (k - 1) * NUM_GT_CLASSES, _gt2_ctx(gt2, k, kk, colact[i]), flag)
                    nq += 1
                    if flag == 0:
                        break
                    k += 1
                if m > ngt:
                    v = m - ngt  # >= 1; exp-Golomb of v - 1 codes v's bit length and low bits
                    n = 0
                    while (v >> (n + 1)) != 0:
                        n += 1
                    for j in range(n):
                        queue[nq] = _bin(_eg_ctx(eg_base, a, b, c, j), -1, 1)
                        nq += 1
                    queue[nq] = _bin(_eg_ctx(eg_base, a, b, c, n), -1, 0)
                    nq += 1
                    if n > 0:
                        queue[nq] = _bin(_sfx_ctx(eg_base, a, b, c, n), -1, (v >> (n - 1)) & 1)
                        nq += 1
                    for j in range(n - 2, -1, -1):
                        queue[nq] = _bin(-1, -1, (v >> j) & 1)
                        nq += 1
            sa = 0 if q == 0 else (1 if q > 0 else 2)
            b = a
            a = m
            prev[i] = m
            colact[i] = _col_update(colact[i], m)
            act = _activity(act, m)
            if dq:
                dqs = _dq_next(dqs, m & 1)
        _colsign_update(colsign, levels, base, rowlen, agree)
    if nq > FLUSH_AT:
        low, rng, cache, csize, pos, buf = _code_bins(low, rng, cache, csize, pos, buf, state, queue, nq, fs, ss)
        nq = 0
    for j in range(check - 1, -1, -1):
        queue[nq] = _bin(-1, -1, (CHECK_PATTERN >> j) & 1)
        nq += 1
    low, rng, cache, csize, pos, buf = _code_bins(low, rng, cache, csize, pos, buf, state, queue, nq, fs, ss)
    # Flush: pick the value in [low, low + range) with the most trailing zero bits, emit it,
    # then drop the first byte (always 0) and every trailing zero byte (the decoder reads
    # zeros past the end), so a stream costs only the bytes its interval needs.
    hi = low + rng - 1
    k = 32
    while k > 0:
        v = ((low + (1 << k) - 1) >> k) << k
        if v <= hi:
            low = v
            break
        k -= 1
    while pos + csize + 8 > buf.shape[0]:
        buf = _grow(buf)
    for _ in range(5):
        low, cache, csize, pos = _shift_low(low, cache, csize, pos, buf)
    end = pos
    while end > 1 and buf[end - 1] == 0:
        end -= 1
    return buf[1:end].copy()


# ----------------------------------------------------------------------------- decoder


@njit(cache=True, inline="always")
def _dec_bit(code: int, rng: int, pos: int, data: np.ndarray, p0: int) -> tuple[int, int, int, int]:  # pragma: no cover - compiled
    """One binary decision with P(0) = p0 / 2**PROB_BITS; mirror of the encoder's step in :func:`_code_bins`.

    Returns (bit, code, range, pos); bytes past the end of ``data`` read as zero.
    """
    bound = (rng >> PROB_BITS) * p0
    bit = 1 if code >= bound else 0
    code = code - bound if bit == 1 else code
    rng = rng - bound if bit == 1 else bound
    while rng < TOP:
        rng <<= 8
        code = (code << 8) | (int(data[pos]) if pos < data.shape[0] else 0)
        pos += 1
    return bit, code, rng, pos


@njit(cache=True, inline="always")
def _dec_ctx(
    code: int, rng: int, pos: int, data: np.ndarray, state: np.ndarray, ctx: int, fs: int, ss: int
) -> tuple[int, int, int, int]:  # pragma: no cover - compiled
    bit, code, rng, pos = _dec_bit(code, rng, pos, data, _prob(state, ctx))
    _adapt(state, ctx, bit, fs, ss)
    return bit, code, rng, pos


@njit(cache=True, inline="always")
def _dec_mix(
    code: int, rng: int, pos: int, data: np.ndarray, state: np.ndarray, ctx: int, ctx2: int, fs: int, ss: int
) -> tuple[int, int, int, int]:  # pragma: no cover - compiled
    bit, code, rng, pos = _dec_bit(code, rng, pos, data, _prob_mix(state, ctx, ctx2))
    _adapt(state, ctx, bit, fs, ss)
    _adapt(state, ctx2, bit, fs, ss)
    return bit, code, rng, pos


@njit(cache=True, nogil=True)
def decode(data: np.ndarray, rows: int, rowlen: int, ngt: int, check: int, dq: int, out: np.ndarray) -> int:  # pragma: no cover - compiled
    """Decode the levels into ``out`` (``rows * rowlen``, every element written when the
    stream is sound); returns a status: 0 ok, 2 code >= range, 3 magnitude overflow,
    4 trailing bytes, 5 check bits differ.

    Bytes past the end of ``data`` read as zero (the encoder drops trailing zero bytes).
    """
    size = data.shape[0]
    nctx = num_contexts_jit(ngt)
    eg_base = _eg_base(ngt)
    gt2 = _gt2_base(ngt)
    code = 0
    for j in range(4):
        code = (code << 8) | (int(data[j]) if j < size else 0)
    rng = 0xFFFFFFFF
    pos = 4
    if code >= rng:
        return 2
    profile, code, rng, pos = _dec_bit(code, rng, pos, data, HALF)  # adaptation profile: one bypass bin before the first row
    state = _init_state(nctx, PROFILE_FAST[profile], PROFILE_SLOW[profile])
    fs = PROFILE_FAST[profile]
    ss = PROFILE_SLOW[profile]
    prev = np.zeros(rowlen, dtype=np.int64)
    colact = np.zeros(rowlen, dtype=np.int64)
    colsign = np.zeros(rowlen, dtype=np.int64)
    prev_skipped = 0
    act = 0
    for r in range(rows):
        base = r * rowlen
        coded, code, rng, pos = _dec_ctx(code, rng, pos, data, state, CTX_SKIP + prev_skipped, fs, ss)
        skip = 1 - coded
        prev_skipped = skip
        if skip == 1:
            for i in range(rowlen):
                prev[i] = 0
                out[base + i] = 0
            continue
        a = 0
        b = 0
        sa = 0
        dqs = 0
        agree = 0
        for i in range(rowlen):
            c = prev[i]
            qz = 1 if dqs >= 2 else 0
            ctx = _sig_ctx(a, b, _col_class(colact[i]), act) + 60 * qz
            m = 0
            q = 0
            neg = 0
            sig, code, rng, pos = _dec_mix(code, rng, pos, data, state, ctx, _sig2_ctx(qz, act, colact[i], a), fs, ss)
            if sig == 1:
                neg, code, rng, pos = _dec_ctx(code, rng, pos, data, state, _sign_ctx(sa, colsign[i], agree), fs, ss)
                agree = _agree_update(agree, colsign[i], neg)
                m = 1
                g = CTX_GT + _gt_class(a, b, c)
                kk = _act_class8(act)
                k = 1
                while k <= ngt:
                    flag, code, rng, pos = _dec_mix(code, rng, pos, data, state, g + (k - 1) * NUM_GT_CLASSES, _gt2_ctx(gt2, k, kk, colact[i]), fs, ss)
                    if flag == 0:
                        break
                    m = k + 1
                    k += 1
                if m > ngt:
                    nbits = 0
                    while True:
                        more, code, rng, pos = _dec_ctx(code, rng, pos, data, state, _eg_ctx(eg_base, a, b, c, nbits), fs, ss)
                        if more == 0:
                            break
                        nbits += 1
                        if nbits > MAX_EG_PREFIX:
                            return 3
                    v = 1
                    if nbits > 0:
                        bit, code, rng, pos = _dec_ctx(code, rng, pos, data, state, _sfx_ctx(eg_base, a, b, c, nbits), fs, ss)
                        v = (v << 1) | bit
                    for _ in range(nbits - 1):
                        bit, code, rng, pos = _dec_bit(code, rng, pos, data, HALF)
                        v = (v << 1) | bit
                    m = ngt + v
                    if m > MAX_MAGNITUDE:
                        return 3
                q = -m if neg == 1 else m
            if code >= rng:  # a sound stream keeps code < range; garbage is refused here
                return 2
            out[base + i] = q
            sa = 0 if q == 0 else (1 if q > 0 else 2)
            b = a
            a = m
            prev[i] = m
            colact[i] = _col_update(colact[i], m)
            act = _activity(act, m)
            if dq:
                dqs = _dq_next(dqs, m & 1)
        _colsign_update(colsign, out, base, rowlen, agree)
    got = 0
    for _ in range(check):
        bit, code, rng, pos = _dec_bit(code, rng, pos, data, HALF)
        got = (got << 1) | bit
    if got != (CHECK_PATTERN & ((1 << check) - 1)):
        return 5
    if size > pos or (size > 0 and data[size - 1] == 0):
        return 4
    return 0


# ----------------------------------------------------------------------------- RD quantizer (encoder only)


def bit_cost_table() -> np.ndarray:
    """cost[p0 >> 5] = (bits if 0, bits if 1) for a 15-bit P(0); encoder-side estimate."""
    p = (np.arange(1024, dtype=np.float64) + 0.5) / 1024.0
    return np.stack([-np.log2(p), -np.log2(1.0 - p)], axis=1)


@njit(cache=True, inline="always")
def _cost(state: np.ndarray, table: np.ndarray, ctx: int, bit: int) -> float:  # pragma: no cover - compiled
    return table[((state[ctx, 0] + state[ctx, 1]) >> 1) >> 5, bit]


@njit(cache=True, inline="always")
def _cost_mix(state: np.ndarray, table: np.ndarray, ctx: int, ctx2: int, bit: int) -> float:  # pragma: no cover - compiled
    return table[_prob_mix(state, ctx, ctx2) >> 5, bit]


@njit(cache=True, inline="always")
def _eg_cost(state: np.ndarray, table: np.ndarray, bits: float, v: int, a: int, b: int, c: int, ngt: int) -> float:  # pragma: no cover
    """``bits`` plus the cost of the exp-Golomb remainder ``v`` = m - ngt (>= 1): prefix
    bins, the suffix's leading bit, then one bit per bypass bin."""
    eg_base = _eg_base(ngt)
    n = 0
    while (v >> (n + 1)) != 0:
        n += 1
    for j in range(n):
        bits += _cost(state, table, _eg_ctx(eg_base, a, b, c, j), 1)
    bits += _cost(state, table, _eg_ctx(eg_base, a, b, c, n), 0)
    if n == 0:
        return bits
    return bits + _cost(state, table, _sfx_ctx(eg_base, a, b, c, n), (v >> (n - 1)) & 1) + (n - 1)


@njit(cache=True, inline="always")
def _candidate_costs(
    state: np.ndarray, table: np.ndarray, lo: int, mn: int, neg: int, a: int, b: int, c: int, cc: int, act: int, sg: int, colv: int, ngt: int
) -> tuple[float, float, float]:  # pragma: no cover
    """Bits, in the current state, of the zero level and of magnitudes ``lo`` and ``mn``
    (``lo`` = ``mn`` or ``mn`` - 1; none when ``mn`` = 0; ``sg`` is the sign context).

    One walk prices all three: they share the significance contexts and every
    greater-than flag below ``lo`` (a walk per candidate cost RDOQ 9% more). Each level's
    bins are summed in coding order (significance, sign, flags, remainder)."""
    ctx = _sig_ctx(a, b, cc, act)
    ctx2 = _sig2_ctx(0, act, colv, a)
    zero = _cost_mix(state, table, ctx, ctx2, 0)
    if mn == 0:
        return zero, 0.0, 0.0
    bits = _cost_mix(state, table, ctx, ctx2, 1) + _cost(state, table, sg, neg)
    g = CTX_GT + _gt_class(a, b, c)
    gt2 = _gt2_base(ngt)
    kk = _act_class8(act)
    low = -1.0
    high = -1.0
    k = 1
    while k <= ngt:
        gctx = g + (k - 1) * NUM_GT_CLASSES
        g2ctx = _gt2_ctx(gt2, k, kk, colv)
        if k == lo and lo < mn:  # lo's last flag; mn goes on
            low = bits + _cost_mix(state, table, gctx, g2ctx, 0)
        if k == mn:
            high = bits + _cost_mix(state, table, gctx, g2ctx, 0)
            break
        bits += _cost_mix(state, table, gctx, g2ctx, 1)
        k += 1
    if high < 0.0:  # mn > ngt: its remainder follows all ngt flags set, and so may lo's
        high = _eg_cost(state, table, bits, mn - ngt, a, b, c, ngt)
        if lo < mn and low < 0.0:
            low = _eg_cost(state, table, bits, lo - ngt, a, b, c, ngt)
    return zero, (high if lo == mn else low), high


@njit(cache=True, inline="always")
def _update_level(state: np.ndarray, m: int, neg: int, a: int, b: int, c: int, cc: int, act: int, sg: int, colv: int, ngt: int, fs: int, ss: int) -> None:  # pragma: no cover
    ctx = _sig_ctx(a, b, cc, act)
    _adapt(state, ctx, 1 if m != 0 else 0, fs, ss)
    _adapt(state, _sig2_ctx(0, act, colv, a), 1 if m != 0 else 0, fs, ss)
    if m == 0:
        return
    _adapt(state, sg, neg, fs, ss)
    g = CTX_GT + _gt_class(a, b, c)
    gt2 = _gt2_base(ngt)
    kk = _act_class8(act)
    k = 1
    while k <= ngt:
        flag = 1 if m > k else 0
        _adapt(state, g + (k - 1) * NUM_GT_CLASSES, flag, fs, ss)
        _adapt(state, _gt2_ctx(gt2, k, kk, colv), flag, fs, ss)
        if flag == 0:
            return
        k += 1
    eg_base = _eg_base(ngt)
    v = m - ngt
    n = 0
    while (v >> (n + 1)) != 0:
        n += 1
    for j in range(n):
        _adapt(state, _eg_ctx(eg_base, a, b, c, j), 1, fs, ss)
    _adapt(state, _eg_ctx(eg_base, a, b, c, n), 0, fs, ss)
    if n > 0:
        _adapt(state, _sfx_ctx(eg_base, a, b, c, n), (v >> (n - 1)) & 1, fs, ss)


@njit(cache=True, inline="always")
def _nonzero_candidates(ax: float) -> tuple[int, int]:  # pragma: no cover - compiled
    """``(lo, hi)``: the nonzero magnitudes RDOQ weighs for ``|x| = ax`` (nearest and one
    closer to zero, never below 1); an empty range when the nearest level is 0."""
    mn = int(np.floor(ax + 0.5))
    if mn > MAX_MAGNITUDE:
        mn = MAX_MAGNITUDE
    return (mn - 1 if mn >= 2 else 1), mn


@njit(cache=True, inline="always")
def _next_best(state: np.ndarray, table: np.ndarray, x: float, m: int, neg: int, a: int, c: int, colv: int, act: int, colsign: int, agree: int, ngt: int, lam: float) -> float:  # pragma: no cover
    """Cheapest cost of the next value after choosing magnitude ``m`` here (one-step lookahead).

    The next value's contexts depend on this choice (its neighbours, row activity, sign
    class, row agreement); the model state is taken as is.
    """
    ax = x if x >= 0 else -x
    nneg = 1 if x < 0 else 0
    act2 = _activity(act, m)
    sa2 = 0 if m == 0 else (2 if neg == 1 else 1)
    sg = _sign_ctx(sa2, colsign, agree)
    cc = _col_class(colv)
    lo, mn = _nonzero_candidates(ax)
    zero, low, high = _candidate_costs(state, table, lo, mn, nneg, m, a, c, cc, act2, sg, colv, ngt)
    best = ax * ax + lam * zero
    for k in range(lo, mn + 1):
        d = ax - k
        j = d * d + lam * (high if k == mn else low)
        if j < best:
            best = j
    return best


@njit(cache=True, inline="always")
def _copy(src: np.ndarray, dst: np.ndarray) -> None:  # pragma: no cover - compiled
    """``dst[:] = src`` for 1-D contiguous arrays of one length, as a plain loop: numba's
    slice assignment checks broadcasting per element (9% of RDOQ's time in its per-row
    saves of the model)."""
    for k in range(src.shape[0]):
        dst[k] = src[k]


@njit(cache=True, nogil=True)
def rdoq(scaled: np.ndarray, rows: int, rowlen: int, ngt: int, lam: float, table: np.ndarray, out: np.ndarray, look: int = 1) -> None:  # pragma: no cover
    """Levels (into ``out``) minimising (x - q)^2 + lam * bits, greedily in scan order under the live model.

    ``scaled`` is x / step. Candidates per value: nearest, one closer to zero, and zero.
    Per row, the all-zero row (skip flag) is chosen when it costs less than the row coded.
    Bits come from the same adaptive model the coder runs, so the choice tracks the
    context state the decoder will actually be in.
    """
    nctx = num_contexts_jit(ngt)
    state = _init_state(nctx, SHIFT_FAST, SHIFT_SLOW)
    fs = SHIFT_FAST
    ss = SHIFT_SLOW
    saved = state.copy()
    prev = np.zeros(rowlen, dtype=np.int64)
    colact = np.zeros(rowlen, dtype=np.int64)
    colsign = np.zeros(rowlen, dtype=np.int64)
    saved_col = np.zeros(rowlen, dtype=np.int64)
    prev_skipped = 0
    act = 0
    for r in range(rows):
        base = r * rowlen
        _copy(state.reshape(-1), saved.reshape(-1))  # the row may yet be skipped: keep what to return to
        saved_act = act
        _copy(colact, saved_col)
        zero_dist = 0.0
        for i in range(rowlen):
            zero_dist += scaled[base + i] * scaled[base + i]
        _adapt(state, CTX_SKIP + prev_skipped, 1, fs, ss)
        a = 0
        b = 0
        sa = 0
        agree = 0
        row_cost = _cost(saved, table, CTX_SKIP + prev_skipped, 1) * lam
        any_nz = False
        for i in range(rowlen):
            x = scaled[base + i]
            c = prev[i]
            colv = colact[i]
            cc = _col_class(colv)
            ax = x if x >= 0 else -x
            neg = 1 if x < 0 else 0
            sg = _sign_ctx(sa, colsign[i], agree)
            lo, mn = _nonzero_candidates(ax)
            best_m = 0
            zero, low, high = _candidate_costs(state, table, lo, mn, neg, a, b, c, cc, act, sg, colv, ngt)
            best = ax * ax + lam * zero
            ahead = look == 1 and i + 1 < rowlen and mn == 1  # zero or one: the choice that moves the next contexts most
            total = best
            if ahead:
                total += _next_best(state, table, scaled[base + i + 1], 0, neg, a, prev[i + 1], colact[i + 1], act, colsign[i + 1], agree, ngt, lam)
            for m in range(lo, mn + 1):
                d = ax - m
                j = d * d + lam * (high if m == mn else low)
                t = j
                if ahead:
                    ag2 = _agree_update(agree, colsign[i], neg)
                    t += _next_best(state, table, scaled[base + i + 1], m, neg, a, prev[i + 1], colact[i + 1], act, colsign[i + 1], ag2, ngt, lam)
                if t < total:
                    total = t
                    best = j
                    best_m = m
            row_cost += best
            _update_level(state, best_m, neg, a, b, c, cc, act, sg, colv, ngt, fs, ss)
            q = -best_m if neg == 1 else best_m
            out[base + i] = q
            if best_m != 0:
                any_nz = True
                agree = _agree_update(agree, colsign[i], neg)
            sa = 0 if q == 0 else (1 if q > 0 else 2)
            b = a
            a = best_m
            prev[i] = best_m
            colact[i] = _col_update(colact[i], best_m)
            act = _activity(act, best_m)
        skip_cost = zero_dist + lam * _cost(saved, table, CTX_SKIP + prev_skipped, 0)
        if not any_nz or skip_cost <= row_cost:
            _copy(saved.reshape(-1), state.reshape(-1))
            act = saved_act
            _copy(saved_col, colact)
            _adapt(state, CTX_SKIP + prev_skipped, 0, fs, ss)
            for i in range(rowlen):
                out[base + i] = 0
                prev[i] = 0
            prev_skipped = 1
        else:
            _colsign_update(colsign, out, base, rowlen, agree)
            prev_skipped = 0
