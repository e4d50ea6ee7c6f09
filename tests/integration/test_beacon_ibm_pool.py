"""`beacon run` on the IBM path (qiskit-ibm-runtime's local mode, fake_manila): pooled
batches are drawn pulse by pulse, published once used up, and re-derive every record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from beacon_verifier import layout
from beacon_verifier.batch import check_raw_batch
from beacon_verifier.errors import ChainError

from tests.beacon_proc import beacon_env, run_beacon, run_verify

pytestmark = pytest.mark.integration

COUNT = 14


def test_pooled_batches_are_published_and_rederive(tmp_path: Path) -> None:
    env = beacon_env(
        {
            "BEACON_ENTROPY_SOURCE": "ibm",
            "BEACON_IBM_CHANNEL": "local",
            "BEACON_IBM_BACKEND": "fake_manila",
            "BEACON_IBM_SHOTS": "1024",  # 5 qubits x 1024 shots: a few draws per batch
            "BEACON_POOL_LOW_WATER_DRAWS": "2",
        }
    )
    done = run_beacon(
        tmp_path, ["run", "--period", "1", "--count", str(COUNT)], env=env, timeout=240
    )
    assert done.returncode == 0, done.stderr
    site = tmp_path / "public"
    verified = run_verify(["chain", str(site), "--json"])
    assert verified.returncode == 0, verified.stdout + verified.stderr

    records = {
        p: (site / layout.entropy_record_key(1, p)).read_bytes() for p in range(1, COUNT + 1)
    }
    docs = {p: json.loads(r) for p, r in records.items()}
    pooled = {p: d for p, d in docs.items() if d["source"] == "quantum-simulator"}
    assert len(pooled) >= COUNT // 2, {p: d.get("reason") for p, d in docs.items()}
    for doc in docs.values():
        if doc["source"] == "os-fallback":  # only while the first job runs, and disclosed
            assert "pool is empty" in doc["reason"]
    assert all(d["backend"] == "fake_manila" and "batchSha512" in d for d in pooled.values())

    published = {
        p: (site / layout.batch_key(d["batchId"]))
        for p, d in pooled.items()
        if (site / layout.batch_key(d["batchId"])).exists()
    }
    assert published, "no raw batch was published"
    for p, path in published.items():
        check = check_raw_batch(records[p], path.read_bytes(), pulse_index=p)
        assert check.quantum_value.hex().upper() == docs[p]["quantumValue"]
    assert len({d["batchId"] for d in pooled.values()}) >= 2  # the pool moved on to new jobs
    pool = json.loads((site / "status.json").read_bytes())["pool"]
    assert pool["backend"] == "fake_manila" and pool["batches"].get("exhausted", 0) >= 1
    assert pool["qpuSecondsPerDay"] == 20.0
    tampered = bytearray(next(iter(published.values())).read_bytes())
    tampered[0] ^= 0x80
    with pytest.raises(ChainError, match="batchSha512"):
        check_raw_batch(records[next(iter(published))], bytes(tampered))
