"""Known-answer tests of the SP 800-90B 6.3 estimators (beacon_verifier.estimators).

NIST's figures: tests/vectors/sp800-90b/*.res are NIST's own published outputs of
ea_non_iid on its example files (see the README there). Their inputs are binary
files the vector store does not hold, so each estimator's final step is checked
against NIST's printed intermediate figures, and the counting steps are checked
against a direct transcription of NIST's loops on generated data.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from beacon_verifier import estimators as est
from beacon_verifier import predictors, substrings

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "sp800-90b"
FILES = ["truerand_1bit.res", "biased-random-bits.res"]


def _figures(name: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in (VECTORS / name).read_text().splitlines():
        m = re.match(r"Literal (.+?) Estimate: (.+?) = (\S+)$", line)
        if m:
            out[f"{m[1]}: {m[2]}"] = float(m[3])
    return out


@pytest.mark.parametrize("name", FILES)
def test_final_steps_match_nists_published_figures(name: str) -> None:
    f = _figures(name)
    n = 1_000_000

    def close(ours: float, key: str) -> None:
        assert ours == pytest.approx(f[f"{key}: min entropy"], rel=1e-9, abs=1e-12), key

    close(
        est.most_common_value_estimate(int(f["Most Common Value: Mode count"]), n),
        "Most Common Value",
    )
    close(
        est.collision_estimate(
            f["Collision: X-bar"], f["Collision: sigma-hat"], int(f["Collision: v"])
        ),
        "Collision",
    )
    close(
        est.markov_estimate(
            f["Markov: P_0"],
            f["Markov: P_{0,0}"],
            f["Markov: P_{0,1}"],
            f["Markov: P_{1,0}"],
            f["Markov: P_{1,1}"],
        ),
        "Markov",
    )
    close(
        est.compression_estimate(f["Compression: X-bar"], f["Compression: sigma-hat"], n // 6),
        "Compression",
    )
    close(est.t_tuple_estimate(f["t-Tuple: p-hat_max"], n), "t-Tuple")
    close(est.lrs_estimate(f["LRS: p-hat"], n), "LRS")
    for predictor in (
        "MultiMCW Prediction",
        "Lag Prediction",
        "MultiMMC Prediction",
        "LZ78Y Prediction",
    ):
        close(
            est.prediction_estimate(
                int(f[f"{predictor}: C"]), int(f[f"{predictor}: N"]), int(f[f"{predictor}: r"]) - 1
            ),
            predictor,
        )


def test_the_biased_files_lag_estimate_uses_p_local() -> None:
    # NIST printed P_local = 0.97225067522872544 > P_global' here: the run-length branch.
    f = _figures("biased-random-bits.res")
    ours = est.prediction_estimate(int(f["Lag Prediction: C"]), 999_999, 527 - 1)
    assert 2.0**-ours == pytest.approx(f["Lag Prediction: P_local"], rel=1e-9)


# --- counting steps against NIST's loops, transcribed literally ------------------------


def _nist_lag(s: list[int]) -> tuple[int, int, int]:
    scoreboard = [0] * 128
    winner = high = correct = run = longest = 0
    for i in range(1, len(s)):
        if s[i] == s[i - winner - 1]:
            correct += 1
            run += 1
            longest = max(longest, run)
        else:
            run = 0
        for d in range(min(128, i)):  # offsets newest first, as the ring buffer walks them
            if s[i - d - 1] == s[i]:
                scoreboard[d] += 1
                if scoreboard[d] >= high:
                    winner, high = d, scoreboard[d]
    return correct, len(s) - 1, longest


def _nist_multi_mcw(s: list[int]) -> tuple[int, int, int]:
    windows = (63, 255, 1023, 4095)
    score = [0] * 4
    winner = correct = run = longest = 0

    def frequent(j: int, i: int) -> int:
        w = s[max(0, i - windows[j]) : i]
        return 1 if 2 * sum(w) > len(w) else 0

    for i in range(63, len(s)):
        guesses = [frequent(j, i) for j in range(4)]
        if guesses[winner] == s[i]:
            correct += 1
            run += 1
            longest = max(longest, run)
        else:
            run = 0
        for j in range(4):
            if i >= windows[j] and guesses[j] == s[i]:
                score[j] += 1
                if score[j] >= score[winner]:
                    winner = j
    return correct, len(s) - 63, longest


@pytest.mark.parametrize("p_one", [0.5, 0.7])
def test_vectorised_predictors_count_as_nists_loops(p_one: float) -> None:
    rng = np.random.default_rng(7)
    bits = (rng.random(9000) < p_one).astype(np.uint8)
    bits[3000:3400] = np.tile([0, 1, 1], 134)[:400]  # a stretch the lag predictor catches
    s = bits.tolist()
    assert predictors.lag_counts(bits, chunk=1000) == _nist_lag(s)
    assert predictors.multi_mcw_counts(bits) == _nist_multi_mcw(s)


def _nist_collision(s: list[int]) -> tuple[float, float, int]:
    i = v = 0
    total = 0
    while i < len(s) - 1:
        t = 2 if s[i] == s[i + 1] else 3
        if t == 3 and i >= len(s) - 2:
            break
        v += 1
        total += t * t
        i += t
    x = i / v
    return x, ((total - i * x) / (v - 1)) ** 0.5, v


def _naive_tuples(s: list[int], length: int) -> dict[tuple[int, ...], int]:
    counts: dict[tuple[int, ...], int] = {}
    for i in range(len(s) - length + 1):
        key = tuple(s[i : i + length])
        counts[key] = counts.get(key, 0) + 1
    return counts


def test_suffix_array_counts_match_naive_counting() -> None:
    rng = np.random.default_rng(3)
    bits = (rng.random(3000) < 0.6).astype(np.uint8)
    s = bits.tolist()
    tuples = substrings.tuple_counts(bits)
    for length in range(1, 14):
        counts = _naive_tuples(s, length)
        assert tuples.most[length] == max(counts.values()), length
        assert tuples.pairs[length] == sum(c * (c - 1) // 2 for c in counts.values()), length
    assert max(_naive_tuples(s, tuples.longest).values()) >= 2
    assert max(_naive_tuples(s, tuples.longest + 1).values()) == 1
    assert est._collision_counts(bits) == pytest.approx(_nist_collision(s))


# --- streams that must fail, and one that must not ------------------------------------

SHOTS, QUBITS = 2048, 127


def _random(seed: int = 11) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, SHOTS * QUBITS, dtype=np.uint8)


def test_a_healthy_stream_gets_close_to_nists_figure_for_random_bits() -> None:
    a = est.assess(_random())
    # NIST's tool gives 0.83 on its 1,000,000 random bits (compression is the weakest).
    assert 0.75 < a.min_entropy < 0.95
    assert set(a.estimates) >= {
        "mostCommonValue",
        "collision",
        "markov",
        "compression",
        "tTuple",
        "lrs",
        "multiMcwPrediction",
        "lagPrediction",
    }


def test_a_biased_stream_is_credited_what_its_bias_allows() -> None:
    bits = (np.random.default_rng(5).random(SHOTS * QUBITS) < 0.75).astype(np.uint8)
    a = est.assess(bits)
    assert a.min_entropy < -np.log2(0.75)  # at most the MCV bound, below it with the others
    assert a.estimates["mostCommonValue"] == pytest.approx(-np.log2(0.75), abs=0.01)


def test_qubits_copying_one_bit_per_shot_get_about_zero() -> None:
    shots = np.random.default_rng(2).integers(0, 2, SHOTS, dtype=np.uint8)
    bits = np.repeat(shots, QUBITS)  # shot-major: every qubit of a shot equal
    a = est.assess(bits)
    assert a.estimates["mostCommonValue"] > 0.9  # balanced, so per-bit bias sees nothing
    assert a.min_entropy < 0.02


@pytest.mark.parametrize(
    "pattern",
    [
        np.tile(np.array([0, 1], dtype=np.uint8), SHOTS * QUBITS // 2),
        # a checkerboard: qubit q of shot s is (s + q) % 2
        ((np.arange(SHOTS)[:, None] + np.arange(QUBITS)[None, :]) % 2).astype(np.uint8).reshape(-1),
    ],
    ids=["0101", "checkerboard"],
)
def test_periodic_streams_get_about_zero(pattern: np.ndarray) -> None:
    a = est.assess(np.ascontiguousarray(pattern))
    assert a.min_entropy < 0.01


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        est.assess(np.zeros(100, dtype=np.uint8))
    with pytest.raises(ValueError, match="only 0 and 1"):
        est.assess(np.full(est.MIN_BITS, 2, dtype=np.uint8))


def _nist_multi_mmc(s: list[int], max_entries: int = 100_000) -> tuple[int, int, int]:
    """NIST's binaryMultiMMCPredictionEstimate, transcribed (dicts for its arrays)."""
    depth = 16
    dicts: list[dict[int, list[int]]] = [{} for _ in range(depth)]
    elems = [0] * depth
    score = [0] * depth
    winner = correct = run = longest = 0
    pattern = 0
    for d in range(depth):
        pattern = (pattern << 1) | s[d]
        dicts[d].setdefault(pattern, [0, 0])[s[d + 1]] = 1
        elems[d] = 1
    for i in range(2, len(s)):
        found = False
        current = winner
        pattern = 0
        for d in range(min(depth, i - 1)):
            pattern |= s[i - d - 1] << d
            entry = dicts[d].setdefault(pattern, [0, 0])
            if d == 0 or found:
                prediction, count = (0, entry[0]) if entry[0] > entry[1] else (1, entry[1])
                found = count != 0
            if found:
                if prediction == s[i]:
                    score[d] += 1
                    if score[d] >= score[winner]:
                        winner = d
                    if d == current:
                        correct += 1
                        run += 1
                        longest = max(longest, run)
                elif d == current:
                    run = 0
                if entry[s[i]]:
                    entry[s[i]] += 1
                elif elems[d] < max_entries:
                    entry[s[i]] = 1
                    elems[d] += 1
            elif elems[d] < max_entries:
                entry[s[i]] = 1
                elems[d] += 1
    return correct, len(s) - 2, longest


def _nist_lz78y(s: list[int], max_dictionary: int = 65_536) -> tuple[int, int, int]:
    """NIST's binaryLZ78YPredictionEstimate, transcribed."""
    b = 16
    dicts: list[dict[int, list[int]]] = [{} for _ in range(b)]
    elems = 0
    correct = run = longest = 0
    pattern = 0
    for j in range(b):
        pattern |= s[b - j - 1] << j
        dicts[j].setdefault(pattern, [0, 0])[s[b]] = 1
        elems += 1
    for i in range(b + 1, len(s)):
        have = False
        guess = 2
        best = 0
        full = 0
        for k in range(b):
            full = (full << 1) | s[i - b + k]
        for j in range(b, 0, -1):
            pattern = full & ((1 << j) - 1)
            entry = dicts[j - 1].setdefault(pattern, [0, 0])
            prediction, count = (0, entry[0]) if entry[0] > entry[1] else (1, entry[1])
            if count:
                if count > best:
                    best, have, guess = count, True, prediction
                entry[s[i]] += 1
            elif elems < max_dictionary:
                entry[s[i]] = 1
                elems += 1
        if have and guess == s[i]:
            correct += 1
            run += 1
            longest = max(longest, run)
        else:
            run = 0
    return correct, len(s) - b - 1, longest


@pytest.mark.parametrize(("p_one", "limit"), [(0.5, None), (0.65, None), (0.5, 300)])
def test_vectorised_mmc_and_lz78y_count_as_nists_loops(p_one: float, limit: int | None) -> None:
    rng = np.random.default_rng(13)
    bits = (rng.random(6000) < p_one).astype(np.uint8)
    bits[2000:2600] = np.tile([1, 1, 0, 1, 0], 120)  # repeats for the long contexts
    s = bits.tolist()
    if limit is None:
        assert predictors.multi_mmc_counts(bits) == _nist_multi_mmc(s)
        assert predictors.lz78y_counts(bits) == _nist_lz78y(s)
    else:  # a small dictionary limit exercises NIST's caps on this short stream
        assert predictors.multi_mmc_counts(bits, max_entries=limit) == _nist_multi_mmc(s, limit)
        assert predictors.lz78y_counts(bits, max_dictionary=limit) == _nist_lz78y(s, limit)
