"""Entropy records: their shape, their bytes, and localRandomValue = SHA-512(record)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from beacon_verifier.format import canonical_json

from beacon.entropy import (
    OS_FALLBACK,
    QUANTUM_HARDWARE,
    QUANTUM_SIMULATOR,
    EntropySource,
)
from beacon.entropy.extract import bits_needed, condition, rederive
from beacon.entropy.health import run_health_tests
from beacon.entropy.os_source import OsSource
from beacon.entropy.record import Provenance, fallback_record, quantum_record, seal
from beacon.errors import EntropyError

OS_BITS = bytes(range(64))
T0 = 1_790_000_000.25  # 2026-09-21T14:13:20.250Z


def provenance(shots: int = 2048, qubits: int = 127) -> Provenance:
    return Provenance(
        backend="aer_simulator",
        job_id="job-1",
        batch_id="batch-1",
        qubits=tuple(range(qubits)),
        shots=shots,
        harvested_at=T0,
    )


def sample_record(kind: str = QUANTUM_SIMULATOR) -> tuple[dict[str, object], np.ndarray]:
    bits = np.random.default_rng(4).integers(0, 2, size=(2048, 127), dtype=np.uint8)
    health = run_health_tests(bits)
    conditioned = condition(bits, 0, health.min_entropy)
    record = quantum_record(
        kind=kind,
        chain_index=1,
        pulse_index=17,
        provenance=provenance(),
        health=health,
        conditioned=conditioned,
        os_bits=OS_BITS,
    )
    return record, bits


def test_quantum_record_fields() -> None:
    record, _bits = sample_record()
    assert record["version"] == 1
    assert record["source"] == QUANTUM_SIMULATOR
    assert record["chainIndex"] == 1 and record["pulseIndex"] == 17
    assert record["jobId"] == "job-1" and record["batchId"] == "batch-1"
    assert record["harvestedAt"] == "2026-09-21T14:13:20.250Z"
    assert record["bitOrder"] == "shot-major"
    offsets = record["bitOffsets"]
    assert isinstance(offsets, dict)
    assert offsets["end"] - offsets["start"] == bits_needed(record["minEntropy"])  # type: ignore[arg-type]
    assert record["osBits"] == OS_BITS.hex().upper()
    health = record["health"]
    assert isinstance(health, dict) and health["passed"] is True


def test_quantum_value_rederives_from_recorded_bits() -> None:
    record, bits = sample_record()
    offsets = record["bitOffsets"]
    assert isinstance(offsets, dict)
    raw = bytes.fromhex(str(record["quantumBits"]))
    count = offsets["end"] - offsets["start"]
    assert rederive(raw, count).hex().upper() == record["quantumValue"]
    flat = bits.reshape(-1)[offsets["start"] : offsets["end"]]
    assert np.packbits(flat).tobytes() == raw


def test_record_hashes_to_local_random_value() -> None:
    record, _ = sample_record(QUANTUM_HARDWARE)
    draw = seal(record)
    assert draw.kind == QUANTUM_HARDWARE
    assert draw.record == canonical_json(record)
    assert draw.local_random_value == hashlib.sha512(draw.record).digest()
    assert json.loads(draw.record) == record
    # Canonical: no whitespace between tokens (strings such as entropyClaim may hold spaces).
    assert draw.record == json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    assert len(draw.record) < 64 * 1024  # what the verifier accepts


def test_refuses_a_failed_batch_and_a_wrong_kind() -> None:
    bits = np.zeros((2048, 127), dtype=np.uint8)
    bits[:, :] = np.random.default_rng(1).integers(0, 2, size=bits.shape)
    bits[:, 0] = 0
    health = run_health_tests(bits)
    conditioned = condition(bits, 0, 0.5)
    common = {
        "chain_index": 1,
        "pulse_index": 1,
        "provenance": provenance(),
        "conditioned": conditioned,
        "os_bits": OS_BITS,
    }
    with pytest.raises(ValueError, match="failed"):
        quantum_record(kind=QUANTUM_SIMULATOR, health=health, **common)  # type: ignore[arg-type]
    good = run_health_tests(np.ascontiguousarray(bits[:, 1:]))
    with pytest.raises(ValueError, match="different batches"):
        quantum_record(kind=QUANTUM_SIMULATOR, health=good, **common)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a quantum"):
        quantum_record(kind=OS_FALLBACK, health=health, **common)  # type: ignore[arg-type]


def test_fallback_record() -> None:
    record = fallback_record(chain_index=2, pulse_index=5, reason="configured", os_bits=OS_BITS)
    assert record == {
        "version": 1,
        "source": OS_FALLBACK,
        "chainIndex": 2,
        "pulseIndex": 5,
        "reason": "configured",
        "quantumMinEntropyBits": 0,
        "entropyClaim": "operating system CSPRNG (not quantum)",
        "osBits": OS_BITS.hex().upper(),
    }
    with pytest.raises(ValueError):
        fallback_record(chain_index=2, pulse_index=5, reason="", os_bits=OS_BITS)
    with pytest.raises(ValueError):
        fallback_record(chain_index=2, pulse_index=5, reason="x", os_bits=OS_BITS[:32])
    with pytest.raises(ValueError):
        fallback_record(chain_index=0, pulse_index=5, reason="x", os_bits=OS_BITS)


def test_os_source_draws_fresh_fallback_records() -> None:
    source = OsSource("quantum source failed: boom")
    a = source.draw(1, 10)
    b = source.draw(1, 11)
    assert a.kind == b.kind == OS_FALLBACK
    doc = json.loads(a.record)
    assert doc["reason"] == "quantum source failed: boom"
    assert len(bytes.fromhex(doc["osBits"])) == 64
    assert a.local_random_value != b.local_random_value


def test_os_source_with_fixed_bytes_is_deterministic() -> None:
    source = OsSource(urandom=lambda n: OS_BITS[:n])
    assert source.draw(1, 3).record == canonical_json(
        fallback_record(chain_index=1, pulse_index=3, reason="configured", os_bits=OS_BITS)
    )


def test_os_source_wraps_os_errors() -> None:
    def broken(n: int) -> bytes:
        raise OSError("no entropy")

    with pytest.raises(EntropyError, match="no entropy"):
        OsSource(urandom=broken).draw(1, 1)


def test_os_source_is_an_entropy_source() -> None:
    source: EntropySource = OsSource()  # checked by mypy against the port
    assert source.name == "os"


def test_simulated_bits_are_credited_no_quantum_entropy() -> None:
    # Issue 22: a simulator's records credited ~0.84 bits per raw bit ("1024 bits").
    record, _ = sample_record(QUANTUM_SIMULATOR)
    assert record["quantumMinEntropyBits"] == 0
    assert record["entropyClaim"] == "simulated (pseudo-random)"
    assert "6.3" in str(record["minEntropyMethod"])
    health = record["health"]
    assert isinstance(health, dict) and "estimators" in health["nonIid"]


def test_hardware_bits_are_credited_by_the_whole_batch_estimate() -> None:
    record, _ = sample_record(QUANTUM_HARDWARE)
    offsets = record["bitOffsets"]
    assert isinstance(offsets, dict)
    per_bit = record["minEntropy"]
    assert isinstance(per_bit, float)
    health = record["health"]
    assert isinstance(health, dict)
    assert per_bit <= health["nonIid"]["minEntropyPerBit"]
    assert record["quantumMinEntropyBits"] == min(
        512, int(per_bit * (offsets["end"] - offsets["start"]))
    )
    assert "operator" in str(record["entropyClaim"])
