"""Harvest health: the pool's record of how harvests ended, and what status, metrics and
the log make of a run of failures."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from beacon.entropy import QUANTUM_HARDWARE
from beacon.entropy.harvest import (
    DEGRADED_CODE,
    HarvestAlarm,
    HarvestRecord,
    degraded,
    one_line,
    record_from_rows,
    summary,
)
from beacon.entropy.health import HealthConfig, run_health_tests
from beacon.entropy.pool import FAILED, LOST, EntropyPool, PoolPolicy
from beacon.entropy.record import Provenance
from beacon.metrics import Metrics, prometheus_families

T0 = 1_790_000_000.0
HOUR = 3600.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def harvest(pool: EntropyPool, job_id: str, *, passes: bool = True) -> None:
    """Submit and store a 1024 x 8 batch, passing or failing its health tests."""
    bits = np.random.default_rng(len(job_id)).integers(0, 2, size=(1024, 8), dtype=np.uint8)
    pool.record_submission(job_id, "fake_backend", qubits=tuple(range(8)), shots=1024)
    # RCT cutoff 2 at a claimed 1 bit/bit: any repeated bit fails, as a broken qubit would.
    config = HealthConfig() if passes else HealthConfig(claimed_min_entropy=1.0, alpha_exponent=1)
    health = run_health_tests(bits, config)
    assert health.passed is passes
    provenance = Provenance(
        backend="fake_backend",
        job_id=job_id,
        batch_id=job_id,
        qubits=tuple(range(8)),
        shots=1024,
        harvested_at=pool._clock(),
    )
    pool.add_batch(kind=QUANTUM_HARDWARE, provenance=provenance, bits=bits, health=health)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def pool(tmp_path: Path, clock: Clock) -> EntropyPool:
    return EntropyPool(tmp_path / "pool.db", PoolPolicy(), clock=clock)


# --- the pool's record -------------------------------------------------------------------


def test_a_fresh_pool_has_no_harvest(pool: EntropyPool) -> None:
    assert pool.harvest_record() == HarvestRecord()


def test_failures_in_a_row_count_back_to_the_last_good_harvest(
    pool: EntropyPool, clock: Clock
) -> None:
    harvest(pool, "good")
    clock.now += 10
    pool.record_submission("j-failed", "fake_backend", qubits=(0,), shots=2)
    pool.record_job_end("j-failed", state=FAILED, detail="entropy job failed:\n  boom")
    clock.now += 10
    harvest(pool, "bad-health", passes=False)
    clock.now += 10
    pool.record_submission("j-lost", "fake_backend", qubits=(0,), shots=2)
    pool.record_job_end("j-lost", state=LOST, detail="job not found")
    clock.now += 10
    pool.record_unsubmitted("fake_backend", "cannot submit the entropy job: refused")
    clock.now += 10
    pool.record_submission("j-pending", "fake_backend", qubits=(0,), shots=2)  # not ended

    record = pool.harvest_record()
    assert record.failures == 4
    assert record.last_result == "failed" and record.last_at == T0 + 40
    assert record.last_error == "cannot submit the entropy job: refused"
    assert record.failing_since == T0 + 10

    clock.now += 10
    harvest(pool, "good-again")
    assert pool.harvest_record() == HarvestRecord(
        last_at=T0 + 60, last_result="ok", last_error=None, failures=0, failing_since=None
    )


def test_an_unsubmitted_harvest_costs_no_budget(pool: EntropyPool) -> None:
    pool.record_unsubmitted("fake_backend", "refused")
    assert pool.spent_today() == 0.0
    assert pool.pending_jobs() == []


def test_a_pool_from_before_ended_at_is_upgraded(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "old.db"
    path.touch(mode=0o600)
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE job (job_id TEXT PRIMARY KEY, backend TEXT NOT NULL, submitted_at REAL"
        " NOT NULL, day TEXT NOT NULL, qpu_estimate REAL NOT NULL, qpu_seconds REAL, qubits TEXT"
        " NOT NULL DEFAULT '[]', shots INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL, detail"
        " TEXT NOT NULL DEFAULT '')"
    )
    db.execute(
        "INSERT INTO job VALUES ('old', 'b', ?, '2026-09-21', 10, 1, '[]', 2, 'failed', 'x')",
        (T0 - 5,),
    )
    db.commit()
    db.close()
    pool = EntropyPool(path, PoolPolicy(), clock=clock)
    record = pool.harvest_record()
    assert (record.last_result, record.last_at, record.failures) == ("failed", T0 - 5, 1)


# --- what it means -----------------------------------------------------------------------


def test_record_from_rows_reads_newest_first() -> None:
    rows = [("failed", "e2", 30.0), ("lost", "e1", 20.0), ("ok", "", 10.0), ("failed", "", 5.0)]
    assert record_from_rows(rows) == HarvestRecord(
        last_at=30.0, last_result="failed", last_error="e2", failures=2, failing_since=20.0
    )
    assert record_from_rows([]) == HarvestRecord()


def test_degraded_only_once_failing_after_is_reached() -> None:
    two = HarvestRecord(last_at=1.0, last_result="failed", last_error="boom", failures=2)
    three = HarvestRecord(last_at=1.0, last_result="failed", last_error="boom", failures=3)
    assert degraded(summary(two, 3)) == []
    assert summary(two, 3)["harvestFailing"] is False
    entries = degraded(summary(three, 3))
    assert [e["code"] for e in entries] == [DEGRADED_CODE]
    assert "boom" in entries[0]["message"] and "3 in a row" in entries[0]["message"]
    assert degraded(None) == [] and degraded({"error": "pool unreadable"}) == []


def test_one_line_flattens_and_bounds() -> None:
    assert one_line("ERROR:  [Experiment 0]\n  too big") == "ERROR: [Experiment 0] too big"
    assert len(one_line("x" * 1000)) == 300


def test_the_log_says_it_once_then_hourly_then_once_recovered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    alarm = HarvestAlarm(failing_after=3)
    failing = [
        HarvestRecord(last_at=float(n), last_result="failed", last_error="boom", failures=n)
        for n in range(1, 8)
    ]
    caplog.set_level(logging.INFO, logger="beacon")
    said = [alarm.observe(r, T0 + i * 60) for i, r in enumerate(failing)]
    assert [s is not None for s in said] == [False, False, True, False, False, False, False]
    assert "quantum harvest failing: 3 in a row; last error: boom" in (said[2] or "")
    assert alarm.observe(failing[-1], T0 + 2 * 60 + HOUR - 1) is None
    again = alarm.observe(failing[-1], T0 + 2 * 60 + HOUR)
    assert again is not None and "still failing" in again
    good = HarvestRecord(last_at=1.0, last_result="ok", failures=0)
    assert "recovered" in (alarm.observe(good, T0 + 2 * HOUR) or "")
    assert alarm.observe(good, T0 + 3 * HOUR) is None
    assert len([r for r in caplog.records if "quantum harvest" in r.getMessage()]) == 3


def test_metrics_export_the_harvest_gauges() -> None:
    metrics = Metrics(now=lambda: T0, counters={}, outbox_length=0)
    assert metrics.snapshot().harvest_failing is None
    record = HarvestRecord(last_at=T0, last_result="failed", last_error="boom", failures=4)
    metrics.set_pool({"usableDraws": 0, "batches": {}} | summary(record, 3))
    families = {f.name: f for f in prometheus_families(metrics.snapshot())}
    assert families["beacon_quantum_harvest_failing"].samples[0].value == 1.0
    assert families["beacon_quantum_harvest_consecutive_failures"].samples[0].value == 4
