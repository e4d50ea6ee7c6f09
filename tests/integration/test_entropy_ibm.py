"""The IBM hardware path end to end, on qiskit-ibm-runtime's local mode: no credentials.

``QiskitRuntimeService(channel="local")`` runs the same executor-sampler jobs
on a fake backend (fake_manila, 5 qubits) with its full noise model, so the
harvest -> health -> pool -> draw path is exercised for real.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from beacon.config import Settings
from beacon.entropy import QUANTUM_SIMULATOR, EntropySource
from beacon.entropy.extract import bits_needed, rederive
from beacon.entropy.ibm_source import IbmQuantumSource, connect
from beacon.entropy.pool import EntropyPool, PoolPolicy
from beacon.errors import ConfigError, EntropyError

SHOTS = 4096  # 5 qubits x 4096 shots = 20,480 bits: about 17 draws per batch


@pytest.fixture(scope="module")
def service() -> Any:
    return connect("local")


def make_source(service: Any, pool: EntropyPool) -> IbmQuantumSource:
    return IbmQuantumSource(pool=pool, service=service, backend="fake_manila", shots=SHOTS)


def test_harvest_then_draw_from_the_pool(service: Any, tmp_path: Path) -> None:
    pool = EntropyPool(tmp_path / "pool.db", PoolPolicy(low_water_draws=0))
    source = make_source(service, pool)
    assert source.kind == QUANTUM_SIMULATOR  # local mode is never reported as hardware
    assert source.harvest_now() == 1
    assert pool.usable_draws() > 10

    docs = [json.loads(source.draw(1, i).record) for i in range(1, 4)]
    assert {d["source"] for d in docs} == {QUANTUM_SIMULATOR}
    assert len({d["jobId"] for d in docs}) == 1  # one job, three draws
    assert {d["backend"] for d in docs} == {"fake_manila"}
    offsets = [(d["bitOffsets"]["start"], d["bitOffsets"]["end"]) for d in docs]
    assert offsets[0][0] == 0
    assert offsets[1][0] == offsets[0][1] and offsets[2][0] == offsets[1][1]
    for d in docs:
        start, end = d["bitOffsets"]["start"], d["bitOffsets"]["end"]
        assert end - start == bits_needed(d["minEntropy"])
        assert (
            rederive(bytes.fromhex(d["quantumBits"]), end - start).hex().upper()
            == (d["quantumValue"])
        )
        assert d["qubits"] == [0, 1, 2, 3, 4] and d["shots"] == SHOTS


def test_low_water_mark_starts_the_next_job(service: Any, tmp_path: Path) -> None:
    pool = EntropyPool(tmp_path / "pool.db", PoolPolicy(low_water_draws=1_000))
    source = make_source(service, pool)
    # Nothing harvested yet: the draw starts a job and, in local mode, waits for it.
    assert json.loads(source.draw(1, 1).record)["source"] == QUANTUM_SIMULATOR
    assert pool.pending_jobs() == [] and pool.summary()["batches"] == {"live": 1}
    draw = source.draw(1, 2)  # served from that batch; another job starts (below 1000)
    assert hashlib.sha512(draw.record).digest() == draw.local_random_value
    assert len(pool.pending_jobs()) == 1
    source.collect(wait=True)
    assert pool.summary()["batches"] == {"live": 2}


def test_spent_budget_stops_harvesting(service: Any, tmp_path: Path) -> None:
    pool = EntropyPool(tmp_path / "pool.db", PoolPolicy(qpu_seconds_per_day=15))
    pool.record_submission("earlier", "fake_manila", qubits=(0,), shots=2)  # 10 s charged today
    source = make_source(service, pool)
    with pytest.raises(EntropyError, match="budget"):
        source.harvest_now()
    decision = source.maintain()
    assert not decision.start and "budget" in decision.reason


def test_a_budget_smaller_than_one_job_is_a_config_error(service: Any, tmp_path: Path) -> None:
    policy = PoolPolicy(qpu_seconds_per_day=5, job_qpu_seconds_estimate=10)
    with pytest.raises(ConfigError, match="smaller than one job"):
        make_source(service, EntropyPool(tmp_path / "pool.db", policy))


def test_job_lost_with_its_process_is_not_waited_for(service: Any, tmp_path: Path) -> None:
    path = tmp_path / "pool.db"
    first = make_source(service, EntropyPool(path, PoolPolicy(low_water_draws=0)))
    job_id = first.start_harvest()
    assert [j.job_id for j in first.pool.pending_jobs()] == [job_id]
    # A restarted beacon (a new source on the same pool file) cannot reach a local job:
    # it is marked lost rather than blocking harvests for ever, and its bits never enter.
    second = make_source(service, EntropyPool(path, PoolPolicy(low_water_draws=0)))
    assert second.collect() == 0
    assert second.pool.pending_jobs() == []
    assert first.collect(wait=True) == 0
    assert second.pool.usable_draws() == 0


def test_ibm_source_satisfies_the_port(service: Any, tmp_path: Path) -> None:
    source: EntropySource = make_source(service, EntropyPool(tmp_path / "pool.db"))
    assert source.name == "qiskit-ibm"


def test_missing_credentials_are_an_entropy_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("QISKIT_IBM_TOKEN", raising=False)
    monkeypatch.delenv("QISKIT_IBM_INSTANCE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no saved account either

    with pytest.raises(EntropyError, match="cannot connect to IBM Quantum"):
        IbmQuantumSource.from_settings(Settings(data_dir=tmp_path / "data"))
