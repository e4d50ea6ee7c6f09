"""`beacon run` on the IBM path in qiskit-ibm-runtime's local mode, on the 127-qubit
fake_sherbrooke with every qubit and the default shots: the backend the README names.

One beacon run (one 127-qubit harvest) is shared by every assertion about it; the
start-up errors fail before any job runs.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import pytest
from beacon_verifier import layout

from beacon.config import Settings
from beacon.entropy.harvest import degraded as harvest_degraded
from beacon.entropy.health import HealthConfig
from beacon.entropy.ibm_source import IbmQuantumSource, connect
from beacon.entropy.os_source import OsSource
from beacon.entropy.pool import EntropyPool, PoolPolicy
from beacon.entropy.qiskit_source import fake_backend_simulator
from beacon.errors import ConfigError, EntropyError
from beacon.pulse.keys import Signer
from beacon.service import Beacon
from tests.beacon_proc import run_beacon
from tests.unit.test_service import FakeClock

pytestmark = pytest.mark.integration

BACKEND = "fake_sherbrooke"
COUNT = 4
T0_MS = 1_800_000_000_000  # a minute boundary


LOCAL_IBM = {
    "BEACON_ENTROPY_SOURCE": "ibm",
    "BEACON_IBM_CHANNEL": "local",
    "BEACON_IBM_BACKEND": BACKEND,
}


@pytest.fixture(scope="module")
def sherbrooke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """One `beacon run` on fake_sherbrooke; its directory, stderr and `beacon status --json`."""
    cwd = tmp_path_factory.mktemp("sherbrooke")
    done = run_beacon(cwd, ["run", "--period", "2", "--count", str(COUNT)], env=LOCAL_IBM)
    assert done.returncode == 0, done.stderr
    status = run_beacon(cwd, ["status", "--json"], env=LOCAL_IBM)
    assert status.returncode == 0, status.stderr
    return cwd, done.stderr, status.stdout


def test_pulses_draw_from_a_harvested_127_qubit_batch(
    sherbrooke_run: tuple[Path, str, str],
) -> None:
    cwd, stderr, _ = sherbrooke_run
    site = cwd / "public"
    docs = [
        json.loads((site / layout.entropy_record_key(1, p)).read_bytes())
        for p in range(1, COUNT + 1)
    ]
    pooled = [d for d in docs if d["source"] == "quantum-simulator"]
    # A local draw waits for the job it started: the pool is never found empty. (One
    # disclosed fallback for a draw not ready in time is tolerated on a loaded machine.)
    assert not [d for d in docs if "pool is empty" in d.get("reason", "")]
    assert len(pooled) >= COUNT - 1, [d.get("reason") for d in docs]
    for doc in pooled:
        assert doc["backend"] == BACKEND and "batchSha512" in doc
        assert len(doc["qubits"]) == 127 and doc["shots"] == 20_000
    assert "max_memory_mb" not in stderr


def test_status_shows_the_pool_and_the_last_harvest(
    sherbrooke_run: tuple[Path, str, str],
) -> None:
    cwd, _, status_out = sherbrooke_run
    info = json.loads(status_out)
    assert info["poolUsableDraws"] > 0
    assert info["lastHarvestResult"] == "ok" and info["lastHarvestError"] is None
    assert info["lastHarvestAt"].endswith("Z")
    assert info["harvestFailing"] is False and info["consecutiveHarvestFailures"] == 0
    published = json.loads((cwd / "public" / "status.json").read_bytes())
    assert published["degraded"] == []
    assert published["pool"]["lastHarvest"]["result"] == "ok"
    assert published["pool"]["consecutiveHarvestFailures"] == 0


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"BEACON_IBM_BACKEND": "fake_nowhere"}, "no IBM Quantum backend 'fake_nowhere'"),
        (
            {"BEACON_QPU_SECONDS_PER_DAY": "5", "BEACON_JOB_QPU_SECONDS_ESTIMATE": "10"},
            "smaller than one job",
        ),
    ],
)
def test_a_harvest_that_can_never_succeed_stops_run_at_start_up(
    tmp_path: Path, extra: dict[str, str], expected: str
) -> None:
    done = run_beacon(tmp_path, ["run", "--period", "2", "--count", "2"], env=LOCAL_IBM | extra)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("beacon: "), done.stderr
    assert expected in lines[0]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "public").exists()  # nothing published, no pulse on OS bits


@pytest.fixture(scope="module")
def local_service() -> Any:
    return connect("local")


@pytest.fixture(scope="module")
def large_fakes(local_service: Any) -> dict[str, Any]:
    """Every fake backend of >= 100 qubits the installed qiskit-ibm-runtime ships, by name."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return {b.name: b for b in local_service.backends() if b.num_qubits >= 100}


def test_every_large_fake_backend_gets_a_simulation_that_fits(
    large_fakes: dict[str, Any],
) -> None:
    """Readout errors on the stabilizer method for each (cheap to check)."""
    assert {"fake_sherbrooke", "fake_torino", "fake_fez"} <= set(large_fakes)
    for fake in large_fakes.values():
        simulator = fake_backend_simulator(fake)
        assert simulator.options.method == "stabilizer", fake.name
        assert simulator.options.noise_model.noise_instructions == ["measure"], fake.name


def test_the_largest_fake_backend_runs_with_all_its_qubits(
    local_service: Any, large_fakes: dict[str, Any], tmp_path: Path
) -> None:
    largest = max(large_fakes.values(), key=lambda b: (b.num_qubits, b.name))
    assert largest.num_qubits >= 156
    with EntropyPool(tmp_path / "pool.db") as pool:  # the constructor runs a two-shot job
        source = IbmQuantumSource(pool=pool, service=local_service, backend=largest.name)
        assert source.num_qubits == largest.num_qubits == len(source.physical_qubits)


@pytest.mark.parametrize(
    ("qubits", "shots", "expected"),
    [(6, 2048, "ibm_qubits is 6 but fake_manila has 5"), (5, 200, "cannot serve a single draw")],
)
def test_sizes_no_harvest_can_serve_are_config_errors(
    local_service: Any, tmp_path: Path, qubits: int, shots: int, expected: str
) -> None:
    with EntropyPool(tmp_path / "pool.db") as pool, pytest.raises(ConfigError, match=expected):
        IbmQuantumSource(
            pool=pool, service=local_service, backend="fake_manila", qubits=qubits, shots=shots
        )


def test_failing_harvests_are_reported_and_logged_once_then_recovery(
    local_service: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Real local-mode jobs whose batches fail their health tests (a claimed 1 bit/bit with
    a repetition cutoff of 2 rejects every batch), then pass again."""
    pool = EntropyPool(tmp_path / "pool.db", PoolPolicy(low_water_draws=1))
    strict = HealthConfig(claimed_min_entropy=1.0, alpha_exponent=1)
    source = IbmQuantumSource(
        pool=pool, service=local_service, backend="fake_manila", shots=2048, health=strict
    )
    caplog.set_level(logging.INFO, logger="beacon")
    for pulse in range(1, 5):  # each draw runs one job, which is rejected
        with pytest.raises(EntropyError, match="empty"):
            source.draw(1, pulse)
    status = source.pool_status()
    assert status["harvestFailing"] is True and status["consecutiveHarvestFailures"] == 4
    assert status["lastHarvest"]["result"] == "rejected"
    entries = harvest_degraded(status)
    assert [e["code"] for e in entries] == ["quantum-harvest-failing"]
    assert "failed health tests" in entries[0]["message"] or "rejected" in entries[0]["message"]
    said = [r.getMessage() for r in caplog.records if "quantum harvest" in r.getMessage()]
    assert len(said) == 1 and "failing: 3 in a row" in said[0]  # said at the third

    source.health_config = HealthConfig()
    draw = source.draw(1, 5)
    assert json.loads(draw.record)["source"] == "quantum-simulator"
    assert source.pool_status()["harvestFailing"] is False
    assert harvest_degraded(source.pool_status()) == []
    said = [r.getMessage() for r in caplog.records if "quantum harvest" in r.getMessage()]
    assert len(said) == 2 and "recovered" in said[1]


def test_a_running_beacon_publishes_degraded_while_harvests_fail(
    local_service: Any, tmp_path: Path, signer: Signer
) -> None:
    """The service's status.json and metrics, fed by a real local-mode source whose every
    batch is rejected (the strict health config above), ticks driven by a fixed clock."""
    from beacon.publish.local import LocalDirPublisher

    settings = Settings(data_dir=tmp_path / "data", out_dir=tmp_path / "site", period=60)
    strict = HealthConfig(claimed_min_entropy=1.0, alpha_exponent=1)
    pool = EntropyPool(tmp_path / "pool.db", PoolPolicy(low_water_draws=1))
    source = IbmQuantumSource(
        pool=pool,
        service=local_service,
        backend="fake_manila",
        shots=2048,
        health=strict,
        failing_after=2,
    )
    clock = FakeClock(T0_MS)
    beacon = Beacon(
        settings=settings,
        signer=signer,
        clock=clock,
        source=source,
        fallback=OsSource,
        publisher=LocalDirPublisher(settings.out_dir),
    )
    beacon.lease.try_acquire()  # a beacon signs only while it holds the lease
    beacon.prime()
    for i in range(3):
        clock.now = T0_MS + i * 60_000
        beacon.prefetcher.wait(timeout=60)
        assert beacon.tick()
    beacon.start_background()
    beacon.shutdown()
    status = json.loads((settings.out_dir / "status.json").read_bytes())
    assert [d["code"] for d in status["degraded"]] == ["quantum-harvest-failing"]
    assert "rejected" in status["degraded"][0]["message"]
    assert status["pool"]["harvestFailing"] is True
    assert status["pool"]["consecutiveHarvestFailures"] >= 2
    assert beacon.metrics.snapshot().harvest_failing is True
