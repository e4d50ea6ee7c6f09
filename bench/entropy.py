"""Benchmark the entropy path and print figures (medians of several runs).

    PYTHONPATH=. python bench/entropy.py [--runs N]

Prints seconds per local 127-qubit job (noiseless AerSimulator and the noise of
fake_sherbrooke), seconds per harvested batch of the IBM path's local mode on
the largest fake backend (all qubits, default shots; job, health tests and
storing the batch in the pool), health-test and conditioning throughput in
Mbit/s, and the
beacon's most-common-value min-entropy estimate of 1 MiB of raw simulator bits
next to NIST's own implementation (the ``sp800-90b`` package, when installed;
it is not a dependency of the beacon). Targets: noiseless job < 1 s, noisy
job < 5 s. The health tests include the SP 800-90B 6.3 estimators over the
whole batch (about one CPU-second per 260,096-bit batch, run in the background
between draws); the 4.4 tests alone and conditioning are timed separately.

``--ibm-only`` prints only the IBM local-mode figure.

Harvest time per batch on the largest fake backend, measured on the 2-core
development machine shared with other jobs (load 4 to 6), qiskit-ibm-runtime
0.51.0, qiskit-aer 0.18.2: fake_pittsburgh (156 qubits, as large as fake_fez,
fake_kingston, fake_marrakesh, fake_aachen and fake_boston), 156 x 20,000
shots = 3.1 Mbit, about 8,650 draws: 3.5 s and 5.1 s per batch (medians of 3,
two runs). Before issue 26 the same harvest on any fake backend of 127 qubits
or more failed (Aer: "a circuit requires more memory than max_memory_mb").
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from beacon_verifier.estimators import assess

from beacon.entropy.extract import condition
from beacon.entropy.health import mcv_min_entropy, run_health_tests
from beacon.entropy.ibm_source import IbmQuantumSource, connect
from beacon.entropy.pool import EntropyPool, PoolPolicy
from beacon.entropy.qiskit_source import DEFAULT_SHOTS, LocalQuantumSource

MIB_BITS = 8 * 2**20


def median_seconds(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ibm_local_harvest(runs: int) -> None:
    """Seconds per harvested batch, IBM local mode, largest fake backend, default settings."""
    service = connect("local")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        largest = max(service.backends(), key=lambda b: (b.num_qubits, b.name))
    with tempfile.TemporaryDirectory() as tmp:
        pool = EntropyPool(Path(tmp) / "pool.db", PoolPolicy(low_water_draws=0))
        source = IbmQuantumSource(pool=pool, service=service, backend=largest.name)
        t = median_seconds(source.harvest_now, runs)
        print(
            f"IBM local mode harvest, {largest.name}, {source.num_qubits} qubits x"
            f" {source.shots} shots ({source.num_qubits * source.shots / 1e6:.1f} Mbit):"
            f" {t:.2f} s per batch; {pool.usable_draws()} draws in the pool"
        )
        pool.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (default 5)")
    parser.add_argument("--ibm-only", action="store_true", help="only the IBM local-mode figure")
    args = parser.parse_args(argv)
    runs: int = args.runs
    ibm_local_harvest(max(3, runs // 2))
    if args.ibm_only:
        return 0

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
