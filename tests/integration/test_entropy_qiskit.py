"""Real local qiskit jobs (qiskit-aer through executor_sampler.Sampler): no mocks."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from beacon.entropy import QUANTUM_SIMULATOR, EntropySource, ReleasesBatches
from beacon.entropy.extract import bits_needed, rederive
from beacon.entropy.health import HealthConfig
from beacon.entropy.qiskit_source import LocalQuantumSource, RejectedBatch
from beacon.errors import EntropyError


@pytest.fixture(scope="module")
def noiseless() -> LocalQuantumSource:
    return LocalQuantumSource()


def test_local_job_makes_a_simulator_record(noiseless: LocalQuantumSource) -> None:
    draw = noiseless.draw(1, 42)
    assert draw.kind == QUANTUM_SIMULATOR
    assert draw.local_random_value == hashlib.sha512(draw.record).digest()
    doc = json.loads(draw.record)
    assert doc["source"] == QUANTUM_SIMULATOR
    assert doc["backend"] == "aer_simulator"
    assert doc["jobId"] and doc["batchId"] == doc["jobId"]
    assert doc["qubits"] == list(range(127)) and doc["shots"] == 2048
    assert doc["health"]["passed"] is True
    start, end = doc["bitOffsets"]["start"], doc["bitOffsets"]["end"]
    assert end - start == bits_needed(doc["minEntropy"])
    assert (
        rederive(bytes.fromhex(doc["quantumBits"]), end - start).hex().upper()
        == (doc["quantumValue"])
    )


def test_local_jobs_publish_their_whole_raw_output() -> None:
    # Issue 22: the local source published only the bits it used.
    source = LocalQuantumSource(qubits=16, shots=1024)
    assert isinstance(source, ReleasesBatches)
    doc = json.loads(source.draw(1, 7).record)
    assert doc["quantumMinEntropyBits"] == 0
    assert doc["entropyClaim"] == "simulated (pseudo-random)"
    assert source.released_batches(1, 6) == []  # pulse 7's record is still secret
    [batch] = source.released_batches(1, 7)
    assert batch.batch_id == doc["batchId"]
    assert len(batch.data) * 8 == doc["batchBits"] == 16 * 1024
    assert hashlib.sha512(batch.data).hexdigest().upper() == doc["batchSha512"]
    source.batch_published(batch.batch_id)
    assert source.released_batches(2, 1) == []


def test_two_draws_are_two_jobs(noiseless: LocalQuantumSource) -> None:
    first = json.loads(noiseless.draw(1, 1).record)
    second = json.loads(noiseless.draw(1, 2).record)
    assert first["jobId"] != second["jobId"]
    assert first["quantumBits"] != second["quantumBits"]
    assert first["osBits"] != second["osBits"]


def test_noisy_fake_backend_draw() -> None:
    source = LocalQuantumSource(noise_backend="fake_sherbrooke", qubits=16, shots=1024)
    assert source.backend_name == "aer_simulator_from(fake_sherbrooke)"
    doc = json.loads(source.draw(3, 4).record)
    assert doc["backend"] == source.backend_name
    assert len(doc["qubits"]) == 16 and doc["shots"] == 1024
    assert doc["health"]["passed"] is True


def test_failed_health_tests_raise_and_keep_the_batch() -> None:
    seen: list[RejectedBatch] = []
    # Claiming a full bit per raw bit cannot pass: the 99 % bound is always below 1.
    strict = HealthConfig(claimed_min_entropy=1.0)
    source = LocalQuantumSource(qubits=8, shots=256, health=strict, on_reject=seen.append)
    with pytest.raises(EntropyError, match="failed health tests") as caught:
        source.draw(1, 1)
    assert "min-entropy" in str(caught.value)
    assert len(source.rejected) == 1 and seen == list(source.rejected)
    rejected = source.rejected[0]
    assert rejected.harvest.bits.shape == (256, 8)
    assert not rejected.health.passed


def test_unknown_fake_backend_is_an_entropy_error() -> None:
    with pytest.raises(EntropyError, match="fake_nowhere"):
        LocalQuantumSource(noise_backend="fake_nowhere")


def test_importing_the_sources_does_not_import_qiskit() -> None:
    code = (
        "import sys, beacon.entropy.qiskit_source, beacon.entropy.os_source, beacon.entropy.pool;"
        "import beacon.entropy.ibm_source;"
        "import beacon.entropy.health, beacon.entropy.extract, beacon.entropy.record;"
        "print(sorted(m for m in sys.modules if m.split('.')[0].startswith('qiskit')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=None
    )
    assert out.stdout.strip() == "[]"


def test_sources_satisfy_the_port(noiseless: LocalQuantumSource) -> None:
    source: EntropySource = noiseless  # checked by mypy against the port
    assert source.name == "qiskit-local"
