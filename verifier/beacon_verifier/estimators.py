"""SP 800-90B section 6.3 non-IID min-entropy estimators for a stream of bits.

One implementation, shared by the beacon (which credits a batch with the
result) and by ``beacon-verify entropy`` (which re-runs it on the published
raw batch), so producer and auditor cannot drift apart.

The input is one flat stream of 0/1 samples: a batch serialized in shot-major
order (shot 0's qubits, then shot 1's, ...), so that a qubit copying another,
or a pattern repeating across qubits or shots, is a dependency the estimators
see. The estimate of the stream is the smallest of the estimators below, in
bits of min-entropy per bit, as NIST's ``ea_non_iid`` reports it for 1-bit
samples:

====================  =======  ================================================
estimator             section  what it looks for
====================  =======  ================================================
most common value     6.3.1    bias
collision             6.3.2    short repeats
Markov                6.3.3    first-order dependency, 128-bit sequences
compression           6.3.4    6-bit blocks that repeat sooner than chance
t-tuple               6.3.5    over-frequent tuples up to the 35-count limit
LRS                   6.3.6    long repeated substrings (periodic streams)
MultiMCW prediction   6.3.7    local bias in windows of 63 to 4095 bits
lag prediction        6.3.8    the bit 1 to 128 positions back (copies)
MultiMMC prediction   6.3.9    order-1 to order-16 Markov dependence
LZ78Y prediction      6.3.10   contexts of up to 16 bits seen before
====================  =======  ================================================

The predictors are vectorised: scoreboards as cumulative sums, the Markov
and LZ78Y dictionaries as counts per context found by one radix pass per
context length, with NIST's dictionary limits (100,000 entries per MMC order,
65,536 LZ78Y contexts) applied in NIST's order of first occurrence.

Each estimator is split in two: counting over the bits, and the closed-form
or bisection step that turns those counts into an estimate. The second step
is tested against the intermediate figures NIST publishes with its tool
(``tests/vectors/sp800-90b``). ``ZALPHA`` is NIST's 2.5758293035489008.

Needs numpy (the verifier's ``entropy`` extra). Pure: arrays in, numbers out.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "METHOD",
    "Assessment",
    "assess",
    "check_stream",
    "collision_estimate",
    "compression_estimate",
    "lrs_estimate",
    "markov_estimate",
    "most_common_value_estimate",
    "prediction_estimate",
    "t_tuple_estimate",
]

#: Named in every record whose estimate comes from ``assess``.
METHOD = (
    "SP 800-90B 6.3 non-IID estimators 6.3.1-6.3.10 (MCV, collision, Markov, compression,"
    " t-tuple, LRS, MultiMCW, lag, MultiMMC, LZ78Y) over the whole shot-major stream;"
    " minimum of them"
)
#: z for the 99 % bounds, as NIST's tool has it.
ZALPHA = 2.5758293035489008
#: Fewest bits ``assess`` accepts: MultiMCW needs its 4095-bit window and one
#: bit more. The compression estimator needs more than 1000 6-bit blocks (6006
#: bits); on a shorter stream it is left out, as NIST's tool leaves it out.
MIN_BITS = 4096
#: Estimates are rounded down to this many decimals before anyone uses them.
DECIMALS = 6
_T_TUPLE_CUTOFF = 35
_LAG_D = 128
_MCW_WINDOWS = (63, 255, 1023, 4095)
_MMC_D = 16
_LZ_B = 16
_COMPRESSION_D = 1000
_COMPRESSION_B = 6
_LOG_ALPHA = math.log(0.99)

Bits = NDArray[np.uint8]


def _round_down(value: float) -> float:
    scale: int = 10**DECIMALS
    return math.floor(min(max(value, 0.0), 1.0) * scale) / scale + 0.0


def _upper(p: float, n: int) -> float:
    """The 99 % upper bound NIST puts on a proportion ``p`` of ``n`` samples."""
    return min(1.0, p + ZALPHA * math.sqrt(p * (1.0 - p) / (n - 1)))


def _bisect(f: Callable[[float], float], target: float, lo: float, hi: float) -> float:
    """``p`` in (lo, hi) with ``f(p) == target`` for a decreasing ``f``; never evaluates
    ``f`` at the ends (the prediction bound is undefined at p = 1)."""
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if mid in (lo, hi) or hi - lo <= 1e-14 * hi:
            break
        if f(mid) > target:
            lo = mid
        else:
            hi = mid
    return hi


def _solve(f: Callable[[float], float], target: float, lo: float, hi: float) -> float:
    """``p`` in [lo, hi] with ``f(p) == target`` for a decreasing ``f``, to about 1e-14.

    Regula falsi with the Illinois step (a bracketing method: it never leaves
    [lo, hi]), falling back to bisection when the interpolated point is unusable.
    """
    f_lo, f_hi = f(lo) - target, f(hi) - target
    if f_lo <= 0:
        return lo
    if f_hi >= 0:
        return hi
    side = 0
    for _ in range(200):
        if hi - lo <= 1e-14 * hi:
            break
        mid = (lo * f_hi - hi * f_lo) / (f_hi - f_lo)
        if not lo < mid < hi:
            mid = (lo + hi) / 2.0
        f_mid = f(mid) - target
        if f_mid == 0:
            return mid
        if f_mid > 0:
            lo, f_lo = mid, f_mid
            if side == 1:
                f_hi /= 2.0
            side = 1
        else:
            hi, f_hi = mid, f_mid
            if side == -1:
                f_lo /= 2.0
            side = -1
    return hi


# --- 6.3.1 most common value -----------------------------------------------------------


def most_common_value_estimate(mode_count: int, n: int) -> float:
    """6.3.1 from the count of the most common value among ``n`` samples."""
    return -math.log2(_upper(mode_count / n, n))


# --- 6.3.2 collision -------------------------------------------------------------------


def collision_estimate(x_bar: float, sigma: float, v: int) -> float:
    """6.3.2 (binary) from the mean ``x_bar`` and deviation ``sigma`` of ``v`` collision times."""
    x = max(2.0, x_bar - ZALPHA * sigma / math.sqrt(v))
    if x >= 2.5:
        return 1.0
    return -math.log2(0.5 + math.sqrt(1.25 - 0.5 * x))


def _collision_counts(bits: Bits) -> tuple[float, float, int]:
    data = bits.tolist()
    n = len(data)
    i = v = 0
    s = 0
    while i < n - 1:
        if data[i] == data[i + 1]:
            t = 2
        elif i < n - 2:
            t = 3
        else:
            break
        v += 1
        s += t * t
        i += t
    x_bar = i / v
    sigma = math.sqrt((s - i * x_bar) / (v - 1))
    return x_bar, sigma, v


# --- 6.3.3 Markov ----------------------------------------------------------------------


def markov_estimate(p0: float, p00: float, p01: float, p10: float, p11: float) -> float:
    """6.3.3 from ``P_0`` and the transition probabilities ``P_{a,b}`` (0 when ``a`` never
    occurs before the last bit, as in NIST's tool)."""
    p1 = 1.0 - p0
    lg = math.log2
    h = 128.0
    if p00 > 0:
        h = min(h, -lg(p0) - 127 * lg(p00))
    if p01 > 0 and p10 > 0:
        h = min(h, -lg(p0) - 64 * lg(p01) - 63 * lg(p10))
    if p01 > 0 and p11 > 0:
        h = min(h, -lg(p0) - lg(p01) - 126 * lg(p11))
    if p10 > 0 and p00 > 0:
        h = min(h, -lg(p1) - lg(p10) - 126 * lg(p00))
    if p10 > 0 and p01 > 0:
        h = min(h, -lg(p1) - 64 * lg(p10) - 63 * lg(p01))
    if p11 > 0:
        h = min(h, -lg(p1) - 127 * lg(p11))
    return min(h / 128.0, 1.0)


def _markov_counts(bits: Bits) -> tuple[float, float, float, float, float]:
    a, b = bits[:-1], bits[1:]
    c0 = int(np.count_nonzero(a == 0))
    c1 = a.size - c0
    c00 = int(np.count_nonzero((a == 0) & (b == 0)))
    c10 = int(np.count_nonzero((a == 1) & (b == 0)))
    p00, p01 = (c00 / c0, 1.0 - c00 / c0) if c0 else (0.0, 0.0)
    p10, p11 = (c10 / c1, 1.0 - c10 / c1) if c1 else (0.0, 0.0)
    p0 = (c0 + (1 if int(bits[-1]) == 0 else 0)) / bits.size
    return p0, p00, p01, p10, p11


# --- 6.3.4 compression -----------------------------------------------------------------


@lru_cache(maxsize=4)
def _log2_table(num_blocks: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``log2(i)`` and ``i - 1`` for i = 2..num_blocks (the terms of G)."""
    i = np.arange(2, num_blocks + 1, dtype=np.float64)
    return np.log2(i), i - 1.0


def _g(z: float, d: int, num_blocks: int) -> float:
    logs, exponents = _log2_table(num_blocks)
    a = np.zeros_like(logs)
    if z < 1.0:
        # Terms below e**-700 add nothing to a double (NIST's loop stops at its underflow
        # too); computing them would go through slow subnormal arithmetic.
        rate = math.log1p(-z)
        kept = logs.size if rate == 0 else min(logs.size, int(-700.0 / rate) + 1)
        a[:kept] = logs[:kept] * np.exp(exponents[:kept] * rate)
    else:
        a[0] = 0.0  # (1 - z) ** (i - 1) is 0 for every i >= 2
    ad1 = float(a[: d - 1].sum())  # i = 2..d
    mid = a[d - 1 : num_blocks - 2]  # i = d+1..num_blocks-1
    weights = num_blocks - 1.0 - exponents[d - 1 : num_blocks - 2]  # num_blocks - i
    # Not np.dot: BLAS threads make a dot this size slower than a plain sum here.
    first = float((weights * mid).sum()) + (num_blocks - d) * ad1
    total = ad1 + float(mid.sum()) + float(a[-1])
    return z * (z * first + (total - ad1)) / (num_blocks - d)


def _compression_expectation(p: float, num_blocks: int) -> float:
    alphabet = 1 << _COMPRESSION_B
    q = (1.0 - p) / (alphabet - 1)
    d = _COMPRESSION_D
    return _g(p, d, num_blocks) + (alphabet - 1) * _g(q, d, num_blocks)


def compression_estimate(x_bar: float, sigma: float, num_blocks: int) -> float:
    """6.3.4 from the mean and deviation NIST's tool prints and the number of 6-bit blocks."""
    v = num_blocks - _COMPRESSION_D
    x = x_bar - ZALPHA * sigma / math.sqrt(v)
    low = 1.0 / (1 << _COMPRESSION_B)
    if _compression_expectation(low, num_blocks) <= x:
        return 1.0
    p = _solve(lambda q: _compression_expectation(q, num_blocks), x, low, 1.0)
    return min(1.0, -math.log2(p) / _COMPRESSION_B)


def _compression_counts(bits: Bits) -> tuple[float, float, int]:
    b = _COMPRESSION_B
    num_blocks = bits.size // b
    weights = (1 << np.arange(b - 1, -1, -1)).astype(np.int64)
    blocks = bits[: num_blocks * b].reshape(num_blocks, b).astype(np.int64) @ weights
    # dict[block] = 1-based index of the block's last occurrence; 0 when never seen.
    position = np.arange(1, num_blocks + 1, dtype=np.int64)
    order = np.lexsort((position, blocks))
    sorted_blocks = blocks[order]
    previous = np.zeros(num_blocks, dtype=np.int64)
    same = np.empty(num_blocks, dtype=bool)
    same[0] = False
    same[1:] = sorted_blocks[1:] == sorted_blocks[:-1]
    prev_sorted = np.where(same, np.concatenate(([0], position[order][:-1])), 0)
    previous[order] = prev_sorted
    tail = slice(_COMPRESSION_D, num_blocks)
    dist = np.log2((position[tail] - previous[tail]).astype(np.float64))
    v = num_blocks - _COMPRESSION_D
    x_bar = float(dist.sum()) / v
    sigma = 0.5907 * math.sqrt(max(float((dist * dist).sum()) / (v - 1) - x_bar * x_bar, 0.0))
    return x_bar, sigma, num_blocks


# --- 6.3.5 t-tuple and 6.3.6 LRS (one suffix array) -------------------------------------


def t_tuple_estimate(p_hat_max: float, n: int) -> float:
    """6.3.5 from the largest ``P_i ** (1 / i)`` over tuple lengths up to ``t``."""
    return -math.log2(_upper(p_hat_max, n))


def lrs_estimate(p_hat: float, n: int) -> float:
    """6.3.6 from the largest ``P_W ** (1 / W)`` over lengths ``u..v``."""
    return -math.log2(_upper(p_hat, n))


def _suffix_array(bits: Bits) -> NDArray[np.int64]:
    n = bits.size
    rank = bits.astype(np.int64)
    k = 1
    while True:
        second = np.full(n, -1, dtype=np.int64)
        if k < n:
            second[: n - k] = rank[k:]
        sa = np.lexsort((second, rank))
        r1, r2 = rank[sa], second[sa]
        new_group = np.empty(n, dtype=bool)
        new_group[0] = True
        new_group[1:] = (r1[1:] != r1[:-1]) | (r2[1:] != r2[:-1])
        rank = np.empty(n, dtype=np.int64)
        rank[sa] = np.cumsum(new_group) - 1
        if int(rank[sa[-1]]) == n - 1 or k >= n:
            return sa
        k *= 2


def _lcp(data: bytes, sa: NDArray[np.int64]) -> list[int]:
    """Kasai's algorithm: ``lcp[i]`` is the common prefix of suffixes ``sa[i-1]`` and ``sa[i]``."""
    n = len(data)
    order = sa.tolist()
    rank = [0] * n
    for i, s in enumerate(order):
        rank[s] = i
    lcp = [0] * n
    h = 0
    for i in range(n):
        r = rank[i]
        if r == 0:
            h = 0
            continue
        j = order[r - 1]
        while i + h < n and j + h < n and data[i + h] == data[j + h]:
            h += 1
        lcp[r] = h
        if h:
            h -= 1
    return lcp


def _bit_length(x: NDArray[np.uint64]) -> NDArray[np.int64]:
    """Bit length of each 64-bit word, exactly (frexp on 32-bit halves, which floats hold)."""
    hi = (x >> np.uint64(32)).astype(np.float64)
    lo = (x & np.uint64(0xFFFFFFFF)).astype(np.float64)
    hi_len = np.frexp(hi)[1].astype(np.int64)
    lo_len = np.frexp(lo)[1].astype(np.int64)
    return np.where(hi_len > 0, 32 + hi_len, lo_len)


def _short_lcp(bits: Bits) -> list[int] | None:
    """Adjacent LCPs in suffix order by sorting 64-bit prefixes; None when a repeat
    reaches 64 bits (then only the full suffix array sorts the suffixes right)."""
    n = bits.size
    padded = np.concatenate((bits, np.zeros(63, dtype=np.uint8))).astype(np.uint64)
    keys = np.zeros(n, dtype=np.uint64)
    for k in range(64):
        keys |= padded[k : k + n] << np.uint64(63 - k)
    lengths = n - np.arange(n, dtype=np.int64)
    order = np.lexsort((lengths, keys))
    ks, ls = keys[order], lengths[order]
    common = 64 - _bit_length(ks[1:] ^ ks[:-1])
    common = np.minimum(common, np.minimum(ls[1:], ls[:-1]))
    if common.size and int(common.max()) >= 64:
        return None
    return [0, *common.tolist()]


@dataclass(frozen=True, slots=True)
class _Tuples:
    most: list[int]  # most[i]: count of the most common i-tuple (index 0 unused)
    pairs: list[int]  # pairs[W]: sum over W-tuples of C(count, 2)
    longest: int  # length of the longest repeated substring


def _tuple_counts(bits: Bits) -> _Tuples:
    lcp = _short_lcp(bits)
    if lcp is not None:
        return _tuple_counts_by_length(np.asarray(lcp[1:], dtype=np.int64))
    return _tuple_counts_by_intervals(_lcp(bits.tobytes(), _suffix_array(bits)))


def _tuple_counts_by_length(lcp: NDArray[np.int64]) -> _Tuples:
    """``_Tuples`` from adjacent LCPs, one pass per length (fast when repeats are short)."""
    longest = int(lcp.max()) if lcp.size else 0
    most = [1] * (longest + 2)
    pairs = [0] * (longest + 2)
    for w in range(1, longest + 1):
        edges = np.flatnonzero(np.diff(np.concatenate(([0], (lcp >= w).astype(np.int8), [0]))))
        sizes = (edges[1::2] - edges[::2]).astype(np.int64) + 1  # a run of k LCPs: k+1 suffixes
        most[w] = int(sizes.max())
        pairs[w] = int((sizes * (sizes - 1) // 2).sum())
    return _Tuples(most=most, pairs=pairs, longest=longest)


def _tuple_counts_by_intervals(lcp: list[int]) -> _Tuples:
    """``_Tuples`` from adjacent LCPs by walking the LCP intervals (any repeat length)."""
    longest = max(lcp) if len(lcp) > 1 else 0
    best = [1] * (longest + 2)
    diff = [0] * (longest + 3)
    stack: list[tuple[int, int]] = [(0, 0)]  # (lcp value, left boundary) of open intervals
    for i in range(1, len(lcp) + 1):
        cur = lcp[i] if i < len(lcp) else 0
        left = i - 1
        while cur < stack[-1][0]:
            value, left = stack.pop()
            size = i - left
            parent = max(cur, stack[-1][0])
            best[value] = max(best[value], size)
            pairs = size * (size - 1) // 2
            diff[parent + 1] += pairs
            diff[value + 1] -= pairs
        if cur > stack[-1][0]:
            stack.append((cur, left))
    most = best[:]
    for i in range(longest - 1, 0, -1):
        most[i] = max(most[i], most[i + 1])
    running = 0
    pairs_by_w = [0] * (longest + 2)
    for w in range(1, longest + 2):
        running += diff[w]
        pairs_by_w[w] = running
    return _Tuples(most=most, pairs=pairs_by_w, longest=longest)


def _t_tuple_and_lrs(bits: Bits) -> tuple[float, float | None]:
    n = bits.size
    tuples = _tuple_counts(bits)
    t = 0
    while t + 1 <= tuples.longest and tuples.most[t + 1] >= _T_TUPLE_CUTOFF:
        t += 1
    if t == 0:  # every symbol occurs fewer than 35 times: only possible in tiny inputs
        t = 1
    p_max = max(
        (min(tuples.most[i], n) / (n - i + 1)) ** (1.0 / i) for i in range(1, min(t, n) + 1)
    )
    if tuples.longest < 1:
        p_max = max(p_max, max(int(np.count_nonzero(bits)), n - int(np.count_nonzero(bits))) / n)
    t_est = t_tuple_estimate(p_max, n)
    u, v = t + 1, tuples.longest
    if u > v:
        return t_est, None
    p_hat = max((tuples.pairs[w] / math.comb(n - w + 1, 2)) ** (1.0 / w) for w in range(u, v + 1))
    return t_est, lrs_estimate(p_hat, n)


# --- 6.3.7 to 6.3.8 predictors ---------------------------------------------------------


def _prediction_function(p: float, r: int, n: int) -> float:
    q = 1.0 - p
    x = 1.0
    for _ in range(66):
        last = x
        x = 1.0 + q * p**r * x ** (r + 1.0)
        if x - last <= 1e-16 * x:
            break
    return math.log(1.0 - p * x) - math.log((r + 1.0 - r * x) * q) - (n + 1.0) * math.log(x)


def prediction_estimate(correct: int, n: int, longest_run: int) -> float:
    """The common last step of the predictors: ``C`` correct of ``N``, longest run ``r``."""
    p_global = correct / n
    if p_global > 0:
        p_prime = _upper(p_global, n)
    else:
        p_prime = 1.0 - 0.01 ** (1.0 / n)
    p = max(0.5, p_prime)
    r = longest_run + 1
    if p < 1.0 and _prediction_function(p, r, n) > _LOG_ALPHA:
        p = max(p, _bisect(lambda q: _prediction_function(q, r, n), _LOG_ALPHA, p, 1.0))
    return -math.log2(p)


def _longest_run(correct: NDArray[np.bool_]) -> int:
    if not correct.any():
        return 0
    padded = np.concatenate(([0], correct.astype(np.int8), [0]))
    edges = np.flatnonzero(np.diff(padded))
    return int((edges[1::2] - edges[::2]).max())


def _follow_winner(
    match: NDArray[np.bool_], scores: NDArray[np.int64], winner: int, *, last: bool
) -> tuple[NDArray[np.int64], NDArray[np.int64], int]:
    """Scoreboards of the predictors (columns) over a span of steps (rows).

    At each step every predictor that was right scores a point, in NIST's order,
    and one whose score reaches the current leader's takes the lead; that makes
    the leader after a step the last predictor in that order that scored and
    holds the top score (the leader always holds it). ``last`` says whether NIST's
    order is the columns' order (True) or its reverse (False). Returns the leader
    *before* each step, the scores after the span and the leader after it.
    """
    cum = match.astype(np.int32)
    np.add.accumulate(cum, axis=0, out=cum)
    cum += scores[None, :].astype(np.int32)
    top = cum.max(axis=1)
    lead = match & (cum == top[:, None])
    has = lead.any(axis=1)
    columns = match.shape[1]
    pick = columns - 1 - np.argmax(lead[:, ::-1], axis=1) if last else np.argmax(lead, axis=1)
    steps = np.arange(match.shape[0])
    at = np.maximum.accumulate(np.where(has, steps, -1))
    after = np.where(at >= 0, pick[np.maximum(at, 0)], winner).astype(np.int64)
    before = np.concatenate(([winner], after[:-1])).astype(np.int64)
    return before, cum[-1].astype(np.int64), int(after[-1])


def _lag_counts(bits: Bits, chunk: int = 8192) -> tuple[int, int, int]:
    n = bits.size
    x = bits.astype(np.int8)
    # xp[j + D] = x[j]; the sentinel 2 before the stream never matches a bit.
    xp = np.concatenate((np.full(_LAG_D, 2, dtype=np.int8), x))
    # Row i of the view is x[i-D .. i-1]: column c holds the bit at offset d = D-1-c back,
    # so NIST's order (offsets 0, 1, ...) is the columns' reverse.
    windows = np.lib.stride_tricks.sliding_window_view(xp, _LAG_D)
    scores = np.zeros(_LAG_D, dtype=np.int64)
    winner = _LAG_D - 1  # column of offset 0
    correct_parts = []
    for start in range(1, n, chunk):
        stop = min(n, start + chunk)
        match = windows[start:stop] == x[start:stop, None]
        before, scores, winner = _follow_winner(match, scores, winner, last=False)
        idx = np.arange(start, stop, dtype=np.int64)
        correct_parts.append(x[start:stop] == x[idx - (_LAG_D - before)])
    correct = np.concatenate(correct_parts)
    return int(correct.sum()), n - 1, _longest_run(correct)


def _multi_mcw_counts(bits: Bits) -> tuple[int, int, int]:
    n = bits.size
    x = bits.astype(np.int64)
    ones = np.concatenate(([0], np.cumsum(x)))
    start = _MCW_WINDOWS[0]
    idx = np.arange(start, n, dtype=np.int64)
    predictions = np.zeros((len(_MCW_WINDOWS), idx.size), dtype=np.int64)
    match = np.zeros((len(_MCW_WINDOWS), idx.size), dtype=bool)
    for row, w in enumerate(_MCW_WINDOWS):
        lo = np.maximum(idx - w, 0)
        count = ones[idx] - ones[lo]
        predictions[row] = (2 * count > w).astype(np.int64)  # odd windows: no ties
        match[row] = (idx >= w) & (predictions[row] == x[idx])
    scores = np.zeros(len(_MCW_WINDOWS), dtype=np.int64)
    before, _, _ = _follow_winner(np.ascontiguousarray(match.T), scores, 0, last=True)
    correct = predictions[before, np.arange(idx.size)] == x[idx]
    return int(correct.sum()), n - start, _longest_run(correct)


def _prior_counts(
    order: NDArray[np.int32], ctx: NDArray[np.int32], y: NDArray[np.int32]
) -> tuple[NDArray[np.int32], NDArray[np.int32]]:
    """For each occurrence, how often its context was followed by 0 and by 1 before it.

    ``order`` lists the occurrences sorted by context, in time order within one
    context (a stable sort); ``ctx`` and ``y`` are context and follower by time.
    """
    m = order.size
    sc = ctx[order]
    new = np.empty(m, dtype=bool)
    new[:1] = True
    new[1:] = sc[1:] != sc[:-1]
    start = np.maximum.accumulate(np.where(new, np.arange(m), 0))
    z = (y[order] == 0).astype(np.int32)
    cz = np.cumsum(z) - z
    co = np.arange(m, dtype=np.int32) - cz  # occurrences before, minus the zeros
    zeros = np.empty(m, dtype=np.int32)
    ones = np.empty(m, dtype=np.int32)
    zeros[order] = cz - cz[start]
    ones[order] = co - co[start]
    return zeros, ones


def _add_top_bit(order: NDArray[np.int32], bit: NDArray[np.int32]) -> NDArray[np.int32]:
    """A stable sort by (new top bit, old key) from one by the old key: one radix pass."""
    top = bit[order]
    return np.concatenate((order[top == 0], order[top == 1]))


def _multi_mmc_counts(bits: Bits, *, max_entries: int = 100_000) -> tuple[int, int, int]:
    """6.3.9 MultiMMC, binary: order-1..16 Markov predictors, NIST's dictionary limit."""
    n = bits.size
    x = bits.astype(np.int32)
    steps = np.arange(2, n, dtype=np.int32)  # predictions for i = 2..n-1
    found = np.zeros((steps.size, _MMC_D), dtype=bool)
    guess = np.zeros((steps.size, _MMC_D), dtype=np.int8)
    ctx = np.zeros(n, dtype=np.int32)  # the d+1 bits before i, most recent lowest
    order = np.arange(n, dtype=np.int32)  # every i, sorted by ctx (stable)
    chain = np.ones(steps.size, dtype=bool)
    for d in range(_MMC_D):
        shifted = np.zeros(n, dtype=np.int32)
        shifted[d + 1 :] = x[: n - d - 1]
        ctx |= shifted << d
        order = _add_top_bit(order, shifted)
        # occurrences of order d are at i = d+1..n-1 (NIST's start-up adds i = d+1)
        lo = d + 1
        occ = order[order >= lo] - lo
        c, y = ctx[lo:], x[lo:]
        zeros, ones = _prior_counts(occ, c, y)
        first = np.where(y == 0, zeros, ones) == 0  # first of its (context, follower) pair
        admitted = np.zeros(1 << (d + 2), dtype=bool)
        admitted[(c * 2 + y)[np.flatnonzero(first)[:max_entries]]] = True
        zeros = np.where(admitted[c * 2], zeros, 0)
        ones = np.where(admitted[c * 2 + 1], ones, 0)
        start = max(2, d + 2)  # predictions from i = start: occurrence start - lo
        z, o = zeros[start - lo :], ones[start - lo :]
        chain[: start - 2] = False
        chain[start - 2 :] &= np.maximum(z, o) > 0
        found[:, d] = chain
        guess[start - 2 :, d] = np.where(z > o, 0, 1)
    truth = x[steps]
    match = found & (guess == truth[:, None])
    before, _, _ = _follow_winner(match, np.zeros(_MMC_D, dtype=np.int64), 0, last=True)
    rows = np.arange(steps.size)
    counted = found[rows, before]
    right = match[rows, before]
    return int(right.sum()), n - 2, _longest_run(right[counted])


def _lz78y_counts(bits: Bits, *, max_dictionary: int = 65_536) -> tuple[int, int, int]:
    """6.3.10 LZ78Y, binary: contexts of 1..16 bits, NIST's dictionary limit."""
    n = bits.size
    b = _LZ_B
    x = bits.astype(np.int32)
    y = x[b:]  # occurrences at i = B..n-1 (i = B is NIST's start-up)
    step = np.arange(b, n, dtype=np.int64)
    ctx = np.zeros(n, dtype=np.int32)
    order = np.arange(n, dtype=np.int32)
    counts = []
    seqs = []
    keys = []
    for j in range(1, b + 1):
        shifted = np.zeros(n, dtype=np.int32)
        shifted[j:] = x[: n - j]
        ctx |= shifted << (j - 1)  # the j bits before i, most recent lowest
        order = _add_top_bit(order, shifted)
        c = ctx[b:] | (1 << j)  # the leading 1 keeps lengths apart
        zeros, ones = _prior_counts(order[order >= b] - b, c, y)
        counts.append((c, zeros, ones))
        first = np.flatnonzero(zeros + ones == 0)
        # NIST's order: the start-up adds j = 1..B; every later step goes j = B..1
        seqs.append(np.where(step[first] == b, j - 1, (step[first] - b) * b + (b - j)))
        keys.append(c[first])
    admitted = np.zeros(1 << (b + 1), dtype=bool)
    in_order = np.argsort(np.concatenate(seqs), kind="stable")
    admitted[np.concatenate(keys)[in_order][:max_dictionary]] = True
    best = np.zeros(n - b - 1, dtype=np.int32)
    guess = np.zeros(n - b - 1, dtype=np.int32)
    for c, zeros, ones in reversed(counts):  # j = B..1; a strictly larger count wins
        ok = admitted[c[1:]]  # predictions at i = B+1..n-1
        z, o = np.where(ok, zeros[1:], 0), np.where(ok, ones[1:], 0)
        count = np.maximum(z, o)
        better = count > best
        best = np.where(better, count, best)
        guess = np.where(better, np.where(z > o, 0, 1), guess)
    right = (best > 0) & (guess == x[b + 1 :])
    return int(right.sum()), n - b - 1, _longest_run(right)


# --- the assessment --------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Assessment:
    """Every estimator's figure and the minimum, in bits of min-entropy per bit."""

    bits: int
    estimates: dict[str, float]

    @property
    def min_entropy(self) -> float:
        """The smallest estimate, rounded down to ``DECIMALS`` places."""
        return min(self.estimates.values())

    @property
    def weakest(self) -> str:
        """The estimator that gave the smallest figure."""
        return min(self.estimates, key=lambda k: self.estimates[k])

    def to_dict(self) -> dict[str, Any]:
        """JSON form for records and reports (camelCase keys)."""
        return {
            "method": METHOD,
            "bits": self.bits,
            "minEntropyPerBit": self.min_entropy,
            "weakest": self.weakest,
            "estimators": dict(sorted(self.estimates.items())),
        }


def check_stream(bits: Bits) -> None:
    """Raise ``ValueError`` unless ``bits`` is a flat uint8 0/1 array of at least ``MIN_BITS``."""
    if not isinstance(bits, np.ndarray) or bits.dtype != np.uint8 or bits.ndim != 1:
        raise ValueError("the stream must be a flat numpy uint8 array")
    if bits.size < MIN_BITS:
        raise ValueError(f"need at least {MIN_BITS} bits for the estimators, got {bits.size}")
    if bits.size and int(bits.max()) > 1:
        raise ValueError("the stream must hold only 0 and 1")


def assess(bits: Bits) -> Assessment:
    """Run every implemented estimator on a flat 0/1 stream; see the module docstring.

    Raises ``ValueError`` as ``check_stream`` does.
    """
    check_stream(bits)
    n = bits.size
    ones = int(np.count_nonzero(bits))
    estimates = {
        "mostCommonValue": most_common_value_estimate(max(ones, n - ones), n),
        "collision": collision_estimate(*_collision_counts(bits)),
        "markov": markov_estimate(*_markov_counts(bits)),
        "multiMcwPrediction": prediction_estimate(*_multi_mcw_counts(bits)),
        "lagPrediction": prediction_estimate(*_lag_counts(bits)),
        "multiMmcPrediction": prediction_estimate(*_multi_mmc_counts(bits)),
        "lz78yPrediction": prediction_estimate(*_lz78y_counts(bits)),
    }
    if n // _COMPRESSION_B > _COMPRESSION_D:
        estimates["compression"] = compression_estimate(*_compression_counts(bits))
    t_tuple, lrs = _t_tuple_and_lrs(bits)
    estimates["tTuple"] = t_tuple
    if lrs is not None:
        estimates["lrs"] = lrs
    return Assessment(bits=n, estimates={k: _round_down(v) for k, v in estimates.items()})
