"""Tuple counts of a bit stream from its suffix order: SP 800-90B 6.3.5 and 6.3.6's input.

``tuple_counts`` gives, for every length ``W``, the count of the most common
``W``-bit tuple and the number of equal pairs among the ``W``-bit tuples, and
the length of the longest repeated substring. Adjacent longest common prefixes
come from sorting 64-bit prefixes when no repeat reaches 64 bits (random data),
else from a full suffix array (prefix doubling) and Kasai's algorithm.

Pure counting, numpy only; ``beacon_verifier.estimators`` turns it into estimates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["Tuples", "tuple_counts"]

Bits = NDArray[np.uint8]


def suffix_array(bits: Bits) -> NDArray[np.int64]:
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


def kasai_lcp(data: bytes, sa: NDArray[np.int64]) -> list[int]:
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


def bit_length(x: NDArray[np.uint64]) -> NDArray[np.int64]:
    """Bit length of each 64-bit word, exactly (frexp on 32-bit halves, which floats hold)."""
    hi = (x >> np.uint64(32)).astype(np.float64)
    lo = (x & np.uint64(0xFFFFFFFF)).astype(np.float64)
    hi_len = np.frexp(hi)[1].astype(np.int64)
    lo_len = np.frexp(lo)[1].astype(np.int64)
    return np.where(hi_len > 0, 32 + hi_len, lo_len)


def _shortkasai_lcp(bits: Bits) -> list[int] | None:
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
    common = 64 - bit_length(ks[1:] ^ ks[:-1])
    common = np.minimum(common, np.minimum(ls[1:], ls[:-1]))
    if common.size and int(common.max()) >= 64:
        return None
    return [0, *common.tolist()]


@dataclass(frozen=True, slots=True)
class Tuples:
    most: list[int]  # most[i]: count of the most common i-tuple (index 0 unused)
    pairs: list[int]  # pairs[W]: sum over W-tuples of C(count, 2)
    longest: int  # length of the longest repeated substring


def tuple_counts(bits: Bits) -> Tuples:
    lcp = _shortkasai_lcp(bits)
    if lcp is not None:
        return tuple_counts_by_length(np.asarray(lcp[1:], dtype=np.int64))
    return tuple_counts_by_intervals(kasai_lcp(bits.tobytes(), suffix_array(bits)))


def tuple_counts_by_length(lcp: NDArray[np.int64]) -> Tuples:
    """``Tuples`` from adjacent LCPs, one pass per length (fast when repeats are short)."""
    longest = int(lcp.max()) if lcp.size else 0
    most = [1] * (longest + 2)
    pairs = [0] * (longest + 2)
    for w in range(1, longest + 1):
        edges = np.flatnonzero(np.diff(np.concatenate(([0], (lcp >= w).astype(np.int8), [0]))))
        sizes = (edges[1::2] - edges[::2]).astype(np.int64) + 1  # a run of k LCPs: k+1 suffixes
        most[w] = int(sizes.max())
        pairs[w] = int((sizes * (sizes - 1) // 2).sum())
    return Tuples(most=most, pairs=pairs, longest=longest)


def tuple_counts_by_intervals(lcp: list[int]) -> Tuples:
    """``Tuples`` from adjacent LCPs by walking the LCP intervals (any repeat length)."""
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
    return Tuples(most=most, pairs=pairs_by_w, longest=longest)
