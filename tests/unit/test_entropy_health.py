"""SP 800-90B health tests and the min-entropy estimate on synthetic batches."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from beacon.entropy.health import (
    APT,
    MIN_ENTROPY,
    NON_IID,
    RCT,
    HealthConfig,
    apt_cutoff,
    health_from_dict,
    mcv_min_entropy,
    rct_cutoff,
    run_health_tests,
)

SHOTS, QUBITS = 2048, 127


def fair_batch(seed: int = 7, shots: int = SHOTS, qubits: int = QUBITS) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, size=(shots, qubits), dtype=np.uint8)


def _log_tail(n: int, p: float, c: int) -> float:
    """log P(X >= c) for Binomial(n, p), by lgamma: an independent cross-check."""
    terms = [
        math.lgamma(n + 1)
        - math.lgamma(j + 1)
        - math.lgamma(n - j + 1)
        + j * math.log(p)
        + (n - j) * math.log1p(-p)
        for j in range(c, n + 1)
    ]
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


class TestCutoffs:
    def test_rct_cutoff_formula(self) -> None:
        assert rct_cutoff(1.0) == 21
        assert rct_cutoff(0.5) == 41
        assert rct_cutoff(0.3) == 1 + math.ceil(20 / 0.3)

    def test_apt_cutoff_matches_sp800_90b_table_for_one_bit(self) -> None:
        # SP 800-90B Table 2, binary samples, W = 1024, H = 1: C = 589.
        assert apt_cutoff(1.0, 1024, 20) == 589

    @pytest.mark.parametrize("h", [1.0, 0.8, 0.5, 0.3])
    def test_apt_cutoff_is_the_binomial_critical_value(self, h: float) -> None:
        c = apt_cutoff(h, 1024, 20)
        alpha = math.log(2.0**-20)
        assert _log_tail(1024, 2.0**-h, c) <= alpha < _log_tail(1024, 2.0**-h, c - 1)

    def test_lower_claimed_entropy_means_looser_cutoffs(self) -> None:
        assert apt_cutoff(0.5) > apt_cutoff(0.8) > apt_cutoff(1.0)
        assert rct_cutoff(0.5) > rct_cutoff(1.0)

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"claimed_min_entropy": 0.0},
            {"claimed_min_entropy": 1.5},
            {"alpha_exponent": 0},
            {"apt_window": 1},
        ],
    )
    def test_bad_config_is_refused(self, kwargs: dict[str, float]) -> None:
        with pytest.raises(ValueError):
            HealthConfig(**kwargs)  # type: ignore[arg-type]


class TestMostCommonValue:
    def test_formula(self) -> None:
        p = 0.6
        p_u = p + 2.576 * math.sqrt(p * (1 - p) / 999)
        assert mcv_min_entropy(600, 1000) == pytest.approx(-math.log2(p_u), abs=1e-6)
        assert mcv_min_entropy(400, 1000) == mcv_min_entropy(600, 1000)

    def test_constant_stream_has_zero_entropy(self) -> None:
        assert mcv_min_entropy(0, 500) == 0.0
        assert mcv_min_entropy(500, 500) == 0.0

    def test_rounds_down_to_six_decimals(self) -> None:
        h = mcv_min_entropy(51_234, 100_000)
        assert h == round(h, 6)
        exact = -math.log2(0.51234 + 2.576 * math.sqrt(0.51234 * 0.48766 / 99_999))
        assert exact - 1e-6 < h <= exact

    def test_refuses_nonsense(self) -> None:
        with pytest.raises(ValueError):
            mcv_min_entropy(3, 2)
        with pytest.raises(ValueError):
            mcv_min_entropy(0, 1)


class TestHealthTests:
    def test_fair_batch_passes(self) -> None:
        result = run_health_tests(fair_batch())
        assert result.passed, result.failures
        # The non-IID estimators are conservative: NIST's own tool gives 0.83 on its
        # million random example bits (compression is the weakest estimator there too).
        assert 0.7 < result.min_entropy < 1.0
        assert result.min_entropy == min(
            result.batch_min_entropy, *result.qubit_min_entropy, result.non_iid_min_entropy
        )
        assert result.non_iid is not None and result.non_iid["bits"] == SHOTS * QUBITS
        assert len(result.ones) == len(result.max_run) == len(result.apt_max) == QUBITS

    def test_stuck_qubit_is_caught(self) -> None:
        bits = fair_batch()
        bits[:, 42] = 1
        result = run_health_tests(bits)
        assert not result.passed
        assert RCT in result.failures and APT in result.failures
        assert result.rct_failed_qubits == (42,)
        assert result.apt_failed_qubits == (42,)
        assert result.max_run[42] == SHOTS

    def test_qubit_stuck_for_a_short_while_is_caught_by_repetition_count(self) -> None:
        bits = fair_batch()
        cutoff = HealthConfig().rct_cutoff
        bits[100 : 100 + cutoff, 3] = 0
        result = run_health_tests(bits)
        assert result.failures == (RCT,)
        assert result.rct_failed_qubits == (3,)

    def test_seventy_percent_biased_stream_is_caught(self) -> None:
        bits = fair_batch()
        rng = np.random.default_rng(11)
        biased = np.zeros(SHOTS, dtype=np.uint8)
        biased[: int(0.7 * SHOTS)] = 1
        bits[:, 9] = rng.permutation(biased)
        result = run_health_tests(bits)
        assert not result.passed
        assert MIN_ENTROPY in result.failures
        assert result.bias[9] == pytest.approx(0.7, abs=1e-3)
        assert result.min_entropy < HealthConfig().claimed_min_entropy

    def test_seventy_percent_bias_trips_the_window_test_when_one_bit_is_claimed(self) -> None:
        bits = np.random.default_rng(3).random((SHOTS, 4)) < 0.7
        result = run_health_tests(bits.astype(np.uint8), HealthConfig(claimed_min_entropy=1.0))
        assert APT in result.failures

    def test_opposite_biases_are_not_averaged_away(self) -> None:
        rng = np.random.default_rng(5)
        bits = np.empty((SHOTS, 2), dtype=np.uint8)
        bits[:, 0] = rng.random(SHOTS) < 0.75
        bits[:, 1] = rng.random(SHOTS) < 0.25
        result = run_health_tests(bits)
        assert result.batch_min_entropy > 0.9  # pooled, the batch looks fair
        assert result.min_entropy < 0.5
        assert MIN_ENTROPY in result.failures

    def test_qubits_copying_one_bit_per_shot_fail(self) -> None:
        # Issue 22: every qubit copying one bit per shot passed, credited 0.92-0.96 per bit.
        shot_bits = np.random.default_rng(2).integers(0, 2, SHOTS, dtype=np.uint8)
        bits = np.ascontiguousarray(np.repeat(shot_bits[:, None], QUBITS, axis=1))
        result = run_health_tests(bits)
        assert not result.passed
        assert result.min_entropy < 0.05

    @pytest.mark.parametrize("kind", ["0101", "checkerboard"])
    def test_periodic_batches_fail(self, kind: str) -> None:
        # Issue 22: 0101... and a checkerboard passed per qubit with 0.92-0.96 credited.
        shot, qubit = np.arange(SHOTS)[:, None], np.arange(QUBITS)[None, :]
        pattern = (shot + qubit) % 2 if kind == "checkerboard" else (shot * QUBITS + qubit) % 2
        result = run_health_tests(np.ascontiguousarray(pattern, dtype=np.uint8))
        assert not result.passed
        assert result.min_entropy < 0.05

    def test_a_batch_too_small_for_the_estimators_is_not_credited(self) -> None:
        result = run_health_tests(fair_batch(shots=40, qubits=4))
        assert NON_IID in result.failures
        assert result.non_iid is None and result.min_entropy == 0.0

    def test_to_dict_is_json_and_names_failures(self) -> None:
        bits = fair_batch(qubits=5)
        bits[:, 2] = 0
        doc = run_health_tests(bits).to_dict()
        assert json.loads(json.dumps(doc, allow_nan=False)) == doc
        assert doc["passed"] is False
        assert doc["failures"][:3] == [RCT, APT, MIN_ENTROPY]
        assert doc["repetitionCount"]["failedQubits"] == [2]
        assert doc["adaptiveProportion"]["failedQubits"] == [2]
        assert doc["ones"][2] == 0

    @pytest.mark.parametrize(
        "bad",
        [
            np.zeros((10, 3), dtype=np.int64),
            np.zeros((10,), dtype=np.uint8),
            np.zeros((1, 3), dtype=np.uint8),
            np.full((10, 3), 2, dtype=np.uint8),
            np.zeros((3, 10), dtype=np.uint8).T,
        ],
    )
    def test_malformed_bits_are_refused(self, bad: np.ndarray) -> None:
        with pytest.raises(ValueError):
            run_health_tests(bad)


def _naive_max_run(stream: list[int]) -> int:
    best = run = 1
    for prev, cur in itertools.pairwise(stream):
        run = run + 1 if cur == prev else 1
        best = max(best, run)
    return best


def _naive_apt_max(stream: list[int], window: int) -> int:
    best = 0
    for i in range(0, len(stream), window):
        chunk = stream[i : i + window]
        best = max(best, sum(1 for b in chunk if b == chunk[0]))
    return best


batches = hnp.arrays(
    np.uint8,
    st.tuples(st.integers(2, 60), st.integers(1, 6)),
    elements=st.integers(0, 1),
)


@settings(max_examples=200, deadline=None)
@given(bits=batches, window=st.integers(2, 16))
def test_vectorised_statistics_match_the_sequential_definitions(
    bits: np.ndarray, window: int
) -> None:
    result = run_health_tests(bits, HealthConfig(apt_window=window))
    for q in range(bits.shape[1]):
        stream = [int(b) for b in bits[:, q]]
        assert result.max_run[q] == _naive_max_run(stream)
        assert result.apt_max[q] == _naive_apt_max(stream, window)
        assert result.ones[q] == sum(stream)


def test_result_round_trips_through_its_dict() -> None:
    bits = fair_batch(qubits=9)
    bits[:, 4] = 0
    for batch in (fair_batch(qubits=9), bits):
        result = run_health_tests(batch)
        doc = json.loads(json.dumps(result.to_dict()))
        assert health_from_dict(doc, shots=SHOTS) == result


def test_tampered_dict_is_refused() -> None:
    doc = run_health_tests(fair_batch(qubits=3)).to_dict()
    doc["mostCommonValue"]["minEntropy"] = 0.99
    with pytest.raises(ValueError):
        health_from_dict(doc, shots=SHOTS)
    with pytest.raises(ValueError):
        health_from_dict({"ones": [1]}, shots=SHOTS)
