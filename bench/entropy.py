"""Benchmark the entropy path and print figures (medians of several runs).

    PYTHONPATH=. python bench/entropy.py [--runs N]

Prints seconds per local 127-qubit job (noiseless AerSimulator and the noise of
fake_sherbrooke), health-test and conditioning throughput in Mbit/s, and the
beacon's most-common-value min-entropy estimate of 1 MiB of raw simulator bits
next to NIST's own implementation (the ``sp800-90b`` package, when installed;
it is not a dependency of the beacon). Targets: noiseless job < 1 s, noisy
job < 5 s. The health tests include the SP 800-90B 6.3 estimators over the
whole batch (about one CPU-second per 260,096-bit batch, run in the background
between draws); the 4.4 tests alone and conditioning are timed separately.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

from beacon_verifier.estimators import assess

from beacon.entropy.extract import condition
from beacon.entropy.health import mcv_min_entropy, run_health_tests
from beacon.entropy.qiskit_source import DEFAULT_SHOTS, LocalQuantumSource

MIB_BITS = 8 * 2**20


def median_seconds(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (default 5)")
    args = parser.parse_args(argv)
    runs: int = args.runs

    noiseless = LocalQuantumSource()
    noiseless.harvest()  # warm-up: first job pays for imports and thread pools
    t = median_seconds(noiseless.harvest, runs)
    print(f"local job, noiseless AerSimulator, 127 qubits x {DEFAULT_SHOTS} shots: {t:.3f} s")
    t = median_seconds(lambda: noiseless.draw(1, 1), runs)
    print(f"  full draw (job + health + conditioning + record): {t:.3f} s")

    noisy = LocalQuantumSource(noise_backend="fake_sherbrooke")
    t = median_seconds(noisy.harvest, max(3, runs // 2))
    print(f"local job, noisy fake_sherbrooke, 127 qubits x {DEFAULT_SHOTS} shots: {t:.3f} s")

    bits = noiseless.harvest().bits

    def health_and_condition() -> None:
        result = run_health_tests(bits)
        condition(bits, 0, result.min_entropy)

    reps = runs
    t = median_seconds(health_and_condition, reps)
    print(
        f"health tests + conditioning, {bits.shape[0]}x{bits.shape[1]} batch: "
        f"{bits.size / t / 1e6:.2f} Mbit/s ({t * 1e3:.0f} ms per batch)"
    )
    t = median_seconds(lambda: run_health_tests(bits), reps)
    print(f"  health tests alone: {bits.size / t / 1e6:.2f} Mbit/s ({t:.3f} s per batch)")
    t = median_seconds(lambda: assess(bits.reshape(-1)), reps)
    print(f"  of which SP 800-90B 6.3 estimators: {t:.3f} s per batch")

    shots = math.ceil(MIB_BITS / 127)
    big = LocalQuantumSource(shots=shots).harvest().bits.reshape(-1)[:MIB_BITS]
    ours = mcv_min_entropy(int(big.sum()), big.size)
    print(f"MCV min-entropy of 1 MiB of raw simulator bits: beacon {ours:.6f} bits/bit")
    try:
        import sp800_90b  # type: ignore[import-not-found]
    except ImportError:
        print("  independent estimate: unavailable (pip install sp800-90b)")
    else:
        theirs = sp800_90b.Data(big.tobytes(), 1).h_most_common()
        print(f"  NIST SP800-90B_EntropyAssessment (sp800-90b): {theirs:.6f} bits/bit")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
