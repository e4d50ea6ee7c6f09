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

The counting of the predictors (``beacon_verifier.predictors``) and of the
tuples behind t-tuple and LRS (``beacon_verifier.substrings``) lives in modules
of its own.

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

from beacon_verifier.predictors import (
    lag_counts,
    lz78y_counts,
    multi_mcw_counts,
    multi_mmc_counts,
)
from beacon_verifier.substrings import tuple_counts

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


# --- 6.3.5 t-tuple and 6.3.6 LRS (counting in beacon_verifier.substrings) ---------------


def t_tuple_estimate(p_hat_max: float, n: int) -> float:
    """6.3.5 from the largest ``P_i ** (1 / i)`` over tuple lengths up to ``t``."""
    return -math.log2(_upper(p_hat_max, n))


def lrs_estimate(p_hat: float, n: int) -> float:
    """6.3.6 from the largest ``P_W ** (1 / W)`` over lengths ``u..v``."""
    return -math.log2(_upper(p_hat, n))


def _t_tuple_and_lrs(bits: Bits) -> tuple[float, float | None]:
    n = bits.size
    tuples = tuple_counts(bits)
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


# --- 6.3.7 to 6.3.10 predictors (counting in beacon_verifier.predictors) ----------------


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
        "multiMcwPrediction": prediction_estimate(*multi_mcw_counts(bits)),
        "lagPrediction": prediction_estimate(*lag_counts(bits)),
        "multiMmcPrediction": prediction_estimate(*multi_mmc_counts(bits)),
        "lz78yPrediction": prediction_estimate(*lz78y_counts(bits)),
    }
    if n // _COMPRESSION_B > _COMPRESSION_D:
        estimates["compression"] = compression_estimate(*_compression_counts(bits))
    t_tuple, lrs = _t_tuple_and_lrs(bits)
    estimates["tTuple"] = t_tuple
    if lrs is not None:
        estimates["lrs"] = lrs
    return Assessment(bits=n, estimates={k: _round_down(v) for k, v in estimates.items()})
