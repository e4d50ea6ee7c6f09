"""Counting for the SP 800-90B 6.3.7 to 6.3.10 predictors on a bit stream, vectorised.

Each ``*_counts`` returns NIST's ``(C, N, longest run of correct predictions)``
for one predictor, exactly as NIST's binary loops count them; the tests compare
them with literal transcriptions of those loops. ``estimators.prediction_estimate``
turns the counts into an estimate.

- Scoreboards (``follow_winner``) are cumulative sums over a span of steps.
- MultiMMC's and LZ78Y's dictionaries are counts per context (``prior_counts``)
  over a stable sort by context, extended by one radix pass per context bit
  (``add_top_bit``), with NIST's dictionary limits applied in NIST's order of
  first occurrence.

Pure counting, numpy only.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["lag_counts", "lz78y_counts", "multi_mcw_counts", "multi_mmc_counts"]

Bits = NDArray[np.uint8]
_LAG_D = 128
_MCW_WINDOWS = (63, 255, 1023, 4095)
_MMC_D = 16
_LZ_B = 16


def longest_run(correct: NDArray[np.bool_]) -> int:
    if not correct.any():
        return 0
    padded = np.concatenate(([0], correct.astype(np.int8), [0]))
    edges = np.flatnonzero(np.diff(padded))
    return int((edges[1::2] - edges[::2]).max())


def follow_winner(
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


def lag_counts(bits: Bits, chunk: int = 8192) -> tuple[int, int, int]:
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
        before, scores, winner = follow_winner(match, scores, winner, last=False)
        idx = np.arange(start, stop, dtype=np.int64)
        correct_parts.append(x[start:stop] == x[idx - (_LAG_D - before)])
    correct = np.concatenate(correct_parts)
    return int(correct.sum()), n - 1, longest_run(correct)


def multi_mcw_counts(bits: Bits) -> tuple[int, int, int]:
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
    before, _, _ = follow_winner(np.ascontiguousarray(match.T), scores, 0, last=True)
    correct = predictions[before, np.arange(idx.size)] == x[idx]
    return int(correct.sum()), n - start, longest_run(correct)


def prior_counts(
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


def add_top_bit(order: NDArray[np.int32], bit: NDArray[np.int32]) -> NDArray[np.int32]:
    """A stable sort by (new top bit, old key) from one by the old key: one radix pass."""
    top = bit[order]
    return np.concatenate((order[top == 0], order[top == 1]))


def multi_mmc_counts(bits: Bits, *, max_entries: int = 100_000) -> tuple[int, int, int]:
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
        order = add_top_bit(order, shifted)
        # occurrences of order d are at i = d+1..n-1 (NIST's start-up adds i = d+1)
        lo = d + 1
        occ = order[order >= lo] - lo
        c, y = ctx[lo:], x[lo:]
        zeros, ones = prior_counts(occ, c, y)
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
    before, _, _ = follow_winner(match, np.zeros(_MMC_D, dtype=np.int64), 0, last=True)
    rows = np.arange(steps.size)
    counted = found[rows, before]
    right = match[rows, before]
    return int(right.sum()), n - 2, longest_run(right[counted])


def lz78y_counts(bits: Bits, *, max_dictionary: int = 65_536) -> tuple[int, int, int]:
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
        order = add_top_bit(order, shifted)
        c = ctx[b:] | (1 << j)  # the leading 1 keeps lengths apart
        zeros, ones = prior_counts(order[order >= b] - b, c, y)
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
    return int(right.sum()), n - b - 1, longest_run(right)
