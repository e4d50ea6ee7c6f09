"""SP 800-90B health tests and a min-entropy estimate for a batch of raw qubit bits.

Input is one batch of measurements: a C-ordered ``numpy.uint8`` array of shape
``(shots, qubits)`` holding 0 or 1, row ``s`` being shot ``s`` and column ``q``
the classical bit that measured circuit qubit ``q``. Each column is one noise
source (one qubit) and is tested as its own bit stream, in shot order:

- **Repetition count test** (SP 800-90B section 4.4.1): fails a qubit whose
  longest run of identical bits reaches ``C = 1 + ceil(k / H)``, where ``2**-k``
  is the false-alarm probability (``k = 20`` by default) and ``H`` the claimed
  min-entropy per bit.
- **Adaptive proportion test** (section 4.4.2): non-overlapping windows of
  ``W = 1024`` bits; in each, ``B`` counts the bits equal to the window's first
  bit (the first included). A qubit fails when some window has ``B >= C`` with
  ``C = 1 + CRITBINOM(W, 2**-H, 1 - 2**-k)`` as published in 90B (the known
  erratum that only ``W - 1`` bits are random moves ``C`` by at most one).
  The binomial quantile is computed with exact integer arithmetic. A trailing
  partial window is tested too: reaching ``C`` in it is already an alarm.
- **Most-common-value estimate** (section 6.3.1) with its 99 % upper bound
  ``p_u = min(1, p + 2.576 * sqrt(p (1 - p) / (L - 1)))``, ``H = -log2(p_u)``,
  once over the whole batch (shot-major order) and once per qubit. The estimate
  the batch is credited with is the smaller of the whole-batch value and the
  worst qubit's: pooling all qubits would hide qubits biased in opposite
  directions, each of which carries less entropy than the pooled count says.
- **Non-IID estimate** (section 6.3, ``beacon_verifier.estimators``): the
  estimators run once over the whole batch serialized shot-major (``shots x
  qubits`` bits), so that qubits copying each other, or a pattern repeating
  across qubits or shots (0101..., a checkerboard), drive the estimate to
  about 0. A batch too small for the estimators fails (``non-iid-estimate``).
- **Consistency**: the credited estimate (the smallest of the MCV figures and
  the non-IID estimate) must not fall below the claimed ``H`` the cutoffs were
  computed for; a 70 %-biased qubit fails here even when its runs and windows
  stay under the cutoffs, and so does a copied or periodic batch.

Everything here is pure: it takes arrays and numbers, returns values, and does
no I/O. It does not decide what happens to a failing batch; the sources do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray

from beacon_verifier.estimators import MIN_BITS, assess

#: Default claimed min-entropy per raw bit that the cutoffs are computed for.
#: Lower than an ideal qubit's 1 bit on purpose: a draw runs 2 x 127 streams of
#: thousands of bits, and with H = 1 the repetition count test would raise a
#: false alarm on about one healthy draw in four (its 2**-20 is per bit).
DEFAULT_CLAIMED_MIN_ENTROPY = 0.5
#: Default false-alarm probability per test is ``2 ** -DEFAULT_ALPHA_EXPONENT``.
DEFAULT_ALPHA_EXPONENT = 20
#: SP 800-90B's adaptive proportion window for binary samples.
DEFAULT_APT_WINDOW = 1024
#: Estimates are rounded down to this many decimals before anyone uses them, so
#: the value written to a record is exactly the value the extractor used.
ESTIMATE_DECIMALS = 6
#: z for the 99 % upper confidence bound of SP 800-90B section 6.3.1.
_Z99 = 2.576

#: Names of the failures a result can report.
RCT = "repetition-count"
APT = "adaptive-proportion"
MIN_ENTROPY = "min-entropy"
NON_IID = "non-iid-estimate"


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthConfig:
    """What the tests assume: the claimed min-entropy per bit and the alarm rates.

    Raises ``ValueError`` when ``claimed_min_entropy`` is not in (0, 1],
    ``alpha_exponent`` not in [1, 64] or ``apt_window`` is below 2.
    """

    claimed_min_entropy: float = DEFAULT_CLAIMED_MIN_ENTROPY
    alpha_exponent: int = DEFAULT_ALPHA_EXPONENT
    apt_window: int = DEFAULT_APT_WINDOW

    def __post_init__(self) -> None:
        h = self.claimed_min_entropy
        if not (isinstance(h, float | int) and 0.0 < h <= 1.0):
            raise ValueError(f"claimed min-entropy must be in (0, 1], got {h!r}")
        if not 1 <= self.alpha_exponent <= 64:
            raise ValueError(f"alpha exponent must be in [1, 64], got {self.alpha_exponent}")
        if self.apt_window < 2:
            raise ValueError(f"adaptive proportion window must be >= 2, got {self.apt_window}")

    @property
    def rct_cutoff(self) -> int:
        """Repetition count cutoff ``C = 1 + ceil(k / H)``."""
        return rct_cutoff(self.claimed_min_entropy, self.alpha_exponent)

    @property
    def apt_cutoff(self) -> int:
        """Adaptive proportion cutoff ``C = 1 + CRITBINOM(W, 2**-H, 1 - 2**-k)``."""
        return apt_cutoff(self.claimed_min_entropy, self.apt_window, self.alpha_exponent)


def rct_cutoff(min_entropy: float, alpha_exponent: int = DEFAULT_ALPHA_EXPONENT) -> int:
    """SP 800-90B 4.4.1 cutoff: ``1 + ceil(alpha_exponent / min_entropy)``.

    Raises ``ValueError`` when ``min_entropy`` is not positive.
    """
    if not min_entropy > 0:
        raise ValueError(f"min-entropy must be positive, got {min_entropy!r}")
    return 1 + math.ceil(alpha_exponent / min_entropy)


@lru_cache(maxsize=64)
def apt_cutoff(
    min_entropy: float,
    window: int = DEFAULT_APT_WINDOW,
    alpha_exponent: int = DEFAULT_ALPHA_EXPONENT,
) -> int:
    """SP 800-90B 4.4.2 cutoff: ``1 + CRITBINOM(window, 2**-min_entropy, 1 - 2**-alpha_exponent)``.

    CRITBINOM(n, p, a) is the smallest ``k`` with ``P(X <= k) >= a`` for
    ``X ~ Binomial(n, p)``, so the cutoff is the smallest ``c`` with
    ``P(X >= c) <= 2**-alpha_exponent``. The float ``p = 2**-min_entropy`` is
    taken as the exact rational it is and the tail is summed in integers, so
    the comparison with ``alpha`` is exact. Raises ``ValueError`` when
    ``min_entropy`` is not in (0, 1] or ``window`` is below 1.
    """
    if not 0.0 < min_entropy <= 1.0:
        raise ValueError(f"min-entropy must be in (0, 1], got {min_entropy!r}")
    if window < 1:
        raise ValueError(f"window must be positive, got {window}")
    p = Fraction(2.0**-min_entropy)
    num, den = p.numerator, p.denominator
    rest = den - num
    # P(X >= c) * den**window = sum_{j >= c} comb(n, j) num**j rest**(n - j); walk c down from n.
    limit = den**window  # P(X >= c) <= 2**-k  <=>  tail * 2**k <= den**window
    tail = 0
    for c in range(window, -1, -1):
        tail += math.comb(window, c) * num**c * rest ** (window - c)
        if tail << alpha_exponent > limit:
            return c + 1
    return 0  # unreachable: P(X >= 0) = 1 > alpha


def mcv_min_entropy(ones: int, total: int) -> float:
    """SP 800-90B 6.3.1 most-common-value estimate for ``ones`` ones among ``total`` bits.

    Returns ``-log2(p_u)`` with the 99 % upper bound ``p_u``, rounded down to
    ``ESTIMATE_DECIMALS`` decimals. Raises ``ValueError`` when ``total`` is
    below 2 or ``ones`` is outside [0, total].
    """
    if total < 2:
        raise ValueError(f"need at least 2 bits for an estimate, got {total}")
    if not 0 <= ones <= total:
        raise ValueError(f"{ones} ones among {total} bits")
    p_hat = max(ones, total - ones) / total
    p_u = min(1.0, p_hat + _Z99 * math.sqrt(p_hat * (1.0 - p_hat) / (total - 1)))
    return _round_down(-math.log2(p_u))


def _round_down(value: float) -> float:
    scale: int = 10**ESTIMATE_DECIMALS
    # -0.0 from -log2(1.0) becomes 0.0; the floor keeps the estimate conservative.
    return math.floor(value * scale) / scale + 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthResult:
    """The outcome of testing one batch; ``passed`` when ``failures`` is empty.

    Per-qubit tuples are indexed by column (classical bit) of the batch.
    """

    shots: int
    qubits: int
    config: HealthConfig
    rct_cutoff: int
    apt_cutoff: int
    ones: tuple[int, ...]
    max_run: tuple[int, ...]
    apt_max: tuple[int, ...]
    batch_min_entropy: float
    qubit_min_entropy: tuple[float, ...]
    non_iid: dict[str, Any] | None  # ``Assessment.to_dict()`` of the whole stream, if run
    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        """True when no test failed."""
        return not self.failures

    @property
    def non_iid_min_entropy(self) -> float:
        """The whole-stream SP 800-90B 6.3 estimate; 0 when the batch was too small for it."""
        return 0.0 if self.non_iid is None else float(self.non_iid["minEntropyPerBit"])

    @property
    def min_entropy(self) -> float:
        """Min-entropy per raw bit the batch is credited with (bits per bit): the smallest
        of the whole-batch and per-qubit MCV figures and the non-IID estimate."""
        return min(self.batch_min_entropy, *self.qubit_min_entropy, self.non_iid_min_entropy)

    @property
    def bias(self) -> tuple[float, ...]:
        """Fraction of ones per qubit."""
        return tuple(n / self.shots for n in self.ones)

    @property
    def rct_failed_qubits(self) -> tuple[int, ...]:
        """Qubits whose longest run reached the repetition count cutoff."""
        return tuple(q for q, run in enumerate(self.max_run) if run >= self.rct_cutoff)

    @property
    def apt_failed_qubits(self) -> tuple[int, ...]:
        """Qubits with a window whose count reached the adaptive proportion cutoff."""
        return tuple(q for q, b in enumerate(self.apt_max) if b >= self.apt_cutoff)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able form written into entropy records (camelCase keys)."""
        return {
            "passed": self.passed,
            "failures": list(self.failures),
            "claimedMinEntropy": self.config.claimed_min_entropy,
            "alphaExponent": self.config.alpha_exponent,
            "repetitionCount": {
                "cutoff": self.rct_cutoff,
                "maxRun": list(self.max_run),
                "failedQubits": list(self.rct_failed_qubits),
            },
            "adaptiveProportion": {
                "window": self.config.apt_window,
                "cutoff": self.apt_cutoff,
                "maxCount": list(self.apt_max),
                "failedQubits": list(self.apt_failed_qubits),
            },
            "mostCommonValue": {
                "batch": self.batch_min_entropy,
                "worstQubit": min(self.qubit_min_entropy),
                "minEntropy": self.min_entropy,
            },
            "nonIid": self.non_iid,
            "ones": list(self.ones),
        }


def health_from_dict(doc: Mapping[str, Any], *, shots: int) -> HealthResult:
    """Rebuild a ``HealthResult`` from its ``to_dict`` form and the batch's shot count.

    Used to record a stored batch's results again when its bits are drawn
    later. Raises ``ValueError`` when ``doc`` is malformed or inconsistent.
    """
    try:
        config = HealthConfig(
            claimed_min_entropy=float(doc["claimedMinEntropy"]),
            alpha_exponent=int(doc["alphaExponent"]),
            apt_window=int(doc["adaptiveProportion"]["window"]),
        )
        ones = tuple(int(n) for n in doc["ones"])
        result = HealthResult(
            shots=shots,
            qubits=len(ones),
            config=config,
            rct_cutoff=int(doc["repetitionCount"]["cutoff"]),
            apt_cutoff=int(doc["adaptiveProportion"]["cutoff"]),
            ones=ones,
            max_run=tuple(int(n) for n in doc["repetitionCount"]["maxRun"]),
            apt_max=tuple(int(n) for n in doc["adaptiveProportion"]["maxCount"]),
            batch_min_entropy=float(doc["mostCommonValue"]["batch"]),
            qubit_min_entropy=tuple(mcv_min_entropy(n, shots) for n in ones),
            non_iid=doc["nonIid"],
            failures=tuple(str(f) for f in doc["failures"]),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed health result: {exc!r}") from exc
    if result.to_dict() != doc:
        raise ValueError("health result does not match its own figures")
    return result


def check_bits(bits: NDArray[np.uint8]) -> None:
    """Check that ``bits`` is a C-ordered uint8 array of shape (shots >= 2, qubits >= 1) of 0/1.

    Raises ``ValueError`` naming what is wrong.
    """
    if not isinstance(bits, np.ndarray) or bits.dtype != np.uint8:
        raise ValueError("raw bits must be a numpy uint8 array")
    if bits.ndim != 2 or bits.shape[0] < 2 or bits.shape[1] < 1:
        raise ValueError(f"raw bits must have shape (shots >= 2, qubits >= 1), got {bits.shape}")
    if not bits.flags.c_contiguous:
        raise ValueError("raw bits must be C-contiguous (shot-major)")
    if bits.max() > 1:
        raise ValueError("raw bits must hold only 0 and 1")


def _max_runs(bits: NDArray[np.uint8]) -> NDArray[np.int64]:
    """Longest run of identical bits in each column, by change points on one flat stream."""
    shots, qubits = bits.shape
    flat = np.ascontiguousarray(bits.T).reshape(-1)  # qubit-major: one stream after another
    changes = flat[1:] != flat[:-1]
    # A new qubit's stream always starts a new run.
    changes[shots - 1 :: shots] = True
    starts = np.empty(int(np.count_nonzero(changes)) + 1, dtype=np.int64)
    starts[0] = 0
    starts[1:] = np.flatnonzero(changes) + 1
    runs = np.diff(starts, append=flat.size)
    first_run = np.searchsorted(starts, np.arange(qubits, dtype=np.int64) * shots)
    result: NDArray[np.int64] = np.maximum.reduceat(runs, first_run)
    return result


def _apt_max(bits: NDArray[np.uint8], window: int) -> NDArray[np.int64]:
    """Largest adaptive-proportion count ``B`` over the windows of each column."""
    shots, qubits = bits.shape
    full = shots // window
    best = np.zeros(qubits, dtype=np.int64)
    if full:
        windows = bits[: full * window].reshape(full, window, qubits)
        ones = windows.sum(axis=1, dtype=np.int64)
        b = np.where(windows[:, 0, :] == 1, ones, window - ones)
        best = b.max(axis=0)
    tail_len = shots - full * window
    if tail_len:
        tail = bits[full * window :]
        ones_t = tail.sum(axis=0, dtype=np.int64)
        b_t = np.where(tail[0] == 1, ones_t, tail_len - ones_t)
        best = np.maximum(best, b_t)
    return best


def run_health_tests(bits: NDArray[np.uint8], config: HealthConfig | None = None) -> HealthResult:
    """Run the repetition count, adaptive proportion and min-entropy checks on a batch.

    ``bits`` is as described in the module docstring. Never raises for an
    unhealthy batch (the result says so); raises ``ValueError`` when ``bits``
    is malformed (see ``check_bits``).
    """
    cfg = config if config is not None else HealthConfig()
    check_bits(bits)
    shots, qubits = bits.shape
    ones = bits.sum(axis=0, dtype=np.int64)
    max_run = _max_runs(bits)
    apt_max = _apt_max(bits, cfg.apt_window)
    batch_h = mcv_min_entropy(int(ones.sum()), shots * qubits)
    qubit_h = tuple(mcv_min_entropy(int(n), shots) for n in ones)
    non_iid = assess(bits.reshape(-1)).to_dict() if bits.size >= MIN_BITS else None
    rct_c = cfg.rct_cutoff
    apt_c = cfg.apt_cutoff
    failures: list[str] = []
    if int(max_run.max()) >= rct_c:
        failures.append(RCT)
    if int(apt_max.max()) >= apt_c:
        failures.append(APT)
    if min(batch_h, *qubit_h) < cfg.claimed_min_entropy:
        failures.append(MIN_ENTROPY)
    if non_iid is None or float(non_iid["minEntropyPerBit"]) < cfg.claimed_min_entropy:
        failures.append(NON_IID)
    return HealthResult(
        shots=shots,
        qubits=qubits,
        config=cfg,
        rct_cutoff=rct_c,
        apt_cutoff=apt_c,
        ones=tuple(int(n) for n in ones),
        max_run=tuple(int(r) for r in max_run),
        apt_max=tuple(int(b) for b in apt_max),
        batch_min_entropy=batch_h,
        qubit_min_entropy=qubit_h,
        non_iid=non_iid,
        failures=tuple(failures),
    )
