"""Raw batches: records commit to the whole batch, and the verifier re-derives their values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from beacon_verifier.batch import batch_bits, check_raw_batch, cited_batch
from beacon_verifier.errors import ChainError, PulseFormatError
from hypothesis import given
from hypothesis import strategies as st

from beacon.entropy import QUANTUM_HARDWARE
from beacon.entropy.extract import pack_bits
from beacon.entropy.health import run_health_tests
from beacon.entropy.pool import EntropyPool
from beacon.entropy.record import Provenance, quantum_record, seal


def harvest(tmp_path: Path) -> tuple[EntropyPool, np.ndarray]:
    bits = np.random.default_rng(7).integers(0, 2, size=(1024, 12), dtype=np.uint8)
    provenance = Provenance(
        backend="fake_torino",
        job_id="job-1",
        batch_id="job-1",
        qubits=tuple(range(12)),
        shots=1024,
        harvested_at=1_790_000_000.0,
    )
    pool = EntropyPool(tmp_path / "pool.db", clock=lambda: 1_790_000_100.0)
    pool.add_batch(
        kind=QUANTUM_HARDWARE, provenance=provenance, bits=bits, health=run_health_tests(bits)
    )
    return pool, bits


def record_for(pool: EntropyPool, pulse_index: int) -> bytes:
    pooled = pool.take(1, pulse_index)
    return seal(
        quantum_record(
            kind=pooled.kind,
            chain_index=1,
            pulse_index=pulse_index,
            provenance=pooled.provenance,
            health=pooled.health,
            conditioned=pooled.conditioned,
            os_bits=bytes(64),
            batch_sha512=pooled.batch_sha512,
            batch_bits=pooled.batch_bits,
        )
    ).record


def test_every_record_of_a_batch_rederives_from_the_published_batch(tmp_path: Path) -> None:
    pool, _ = harvest(tmp_path)
    records: list[bytes] = []
    while pool.usable_draws():
        records.append(record_for(pool, len(records) + 1))
    assert len(records) > 2
    assert pool.released_batches(1, len(records) - 1) == []  # the last record is still secret
    [raw] = pool.released_batches(1, len(records))
    for record in records:
        assert cited_batch(record) == "job-1"
        check = check_raw_batch(record, raw.data)
        assert check.quantum_value.hex().upper() == json.loads(record)["quantumValue"]
    starts = [check_raw_batch(r, raw.data).start for r in records]
    assert starts == sorted(set(starts))  # disjoint ranges, in order


def test_a_different_batch_is_refused(tmp_path: Path) -> None:
    pool, bits = harvest(tmp_path)
    record = record_for(pool, 1)
    end = json.loads(record)["bitOffsets"]["end"]
    flipped = bits.reshape(-1).copy()
    flipped[end + 5] ^= 1  # outside the consumed range: the commitment still catches it
    with pytest.raises(ChainError, match="batchSha512"):
        check_raw_batch(record, pack_bits(flipped), pulse_index=1)
    with pytest.raises(ChainError, match="wrong size"):
        check_raw_batch(record, pack_bits(bits.reshape(-1))[:-1])


def test_offsets_that_do_not_condition_to_the_value_are_refused(tmp_path: Path) -> None:
    pool, bits = harvest(tmp_path)
    doc = json.loads(record_for(pool, 1))
    doc["bitOffsets"] = {
        "start": doc["bitOffsets"]["start"] + 1,
        "end": doc["bitOffsets"]["end"] + 1,
    }
    with pytest.raises(ChainError, match="do not condition"):
        check_raw_batch(json.dumps(doc).encode(), pack_bits(bits.reshape(-1)))


def test_a_record_without_a_batch_commitment_is_a_format_error() -> None:
    record = b'{"source":"quantum-simulator","quantumValue":"00"}'
    assert cited_batch(record) is None
    with pytest.raises(PulseFormatError, match="cites no published batch"):
        check_raw_batch(record, b"\x00")


@given(st.data())
def test_bit_slicing_matches_numpy(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 300))
    stream = np.array(data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), np.uint8)
    start = data.draw(st.integers(0, n - 1))
    end = data.draw(st.integers(start + 1, n))
    assert batch_bits(pack_bits(stream), start, end) == pack_bits(stream[start:end])
