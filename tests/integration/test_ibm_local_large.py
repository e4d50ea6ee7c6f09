"""`beacon run` on the IBM path in qiskit-ibm-runtime's local mode, on the 127-qubit
fake_sherbrooke with every qubit and the default shots: the backend the README names.

One beacon run (one 127-qubit harvest) is shared by every assertion about it; the
start-up errors fail before any job runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from beacon_verifier import layout

from tests.beacon_proc import run_beacon

pytestmark = pytest.mark.integration

BACKEND = "fake_sherbrooke"
COUNT = 4
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


def test_pulses_draw_from_a_harvested_127_qubit_batch(sherbrooke_run: tuple[Path, str, str]):
    cwd, stderr, _ = sherbrooke_run
    site = cwd / "public"
    docs = [
        json.loads((site / layout.entropy_record_key(1, p)).read_bytes())
        for p in range(1, COUNT + 1)
    ]
    pooled = [d for d in docs if d["source"] == "quantum-simulator"]
    # Only the first pulse, drawn before the first job is in, may fall back (disclosed).
    assert len(pooled) >= COUNT - 1, [d.get("reason") for d in docs]
    for doc in pooled:
        assert doc["backend"] == BACKEND and "batchSha512" in doc
        assert len(doc["qubits"]) == 127 and doc["shots"] == 20_000
    assert "max_memory_mb" not in stderr


def test_status_shows_the_pool_and_the_last_harvest(sherbrooke_run: tuple[Path, str, str]):
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
