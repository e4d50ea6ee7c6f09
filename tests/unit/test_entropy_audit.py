"""`beacon-verify entropy` (beacon_verifier.audit): claims against a re-run on the raw batch."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from beacon_verifier import layout
from beacon_verifier.cli import main
from beacon_verifier.format import canonical_json

from beacon.entropy import QUANTUM_HARDWARE
from beacon.entropy.extract import condition, pack_bits, shot_major
from beacon.entropy.health import run_health_tests
from beacon.entropy.record import Provenance, quantum_record
from beacon.pulse.builder import BuiltPulse, build_pulse
from beacon.pulse.keys import Signer
from tests.unit.test_replay import write_site

SHOTS, QUBITS = 2048, 16
T0 = 1_800_000_000_000


def hardware_record(
    pulse: int, bits: np.ndarray, *, health_from: np.ndarray | None = None
) -> tuple[bytes, bytes]:
    """A hardware record of ``bits`` and the packed batch. ``health_from`` is what a lying
    operator would do: figures from another, healthy batch of the same shape."""
    health = run_health_tests(health_from if health_from is not None else bits)
    packed = pack_bits(shot_major(bits))
    record = quantum_record(
        kind=QUANTUM_HARDWARE,
        chain_index=1,
        pulse_index=pulse,
        provenance=Provenance(
            backend="ibm_torino",
            job_id=f"job{pulse}",
            batch_id=f"job{pulse}",
            qubits=tuple(range(QUBITS)),
            shots=SHOTS,
            harvested_at=T0 / 1000,
        ),
        health=health,
        conditioned=condition(bits, 0, health.min_entropy),
        os_bits=bytes(64),
        batch_sha512=hashlib.sha512(packed).digest(),
        batch_bits=bits.size,
    )
    return canonical_json(record), packed


def site_with(tmp_path: Path, signer: Signer, items: list[tuple[bytes, bytes]]) -> Path:
    chain: list[tuple[BuiltPulse, bytes]] = []
    head = None
    for n, (record, _) in enumerate(items):
        following = items[n + 1][0] if n + 1 < len(items) else b"next"
        built = build_pulse(
            head,
            time_ms=T0 + n * 60_000,
            period_ms=60_000,
            local_random_value=hashlib.sha512(record).digest(),
            next_local_random_value=hashlib.sha512(following).digest(),
            signer=signer,
            base_url="https://b.example",
        )
        chain.append((built, record))
        head = built.head
    root = write_site(tmp_path / "site", chain, signer, archives=False)
    for n, (_, batch) in enumerate(items):
        path = root / layout.batch_key(f"job{n + 1}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(batch)
    return root


def audit(site: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    code = main(["entropy", str(site), "--json", *args])
    return code, json.loads(capsys.readouterr().out)


def fair(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, (SHOTS, QUBITS), dtype=np.uint8)


def test_honest_hardware_records_hold_and_are_re_estimated(
    tmp_path: Path, signer: Signer, capsys: pytest.CaptureFixture[str]
) -> None:
    site = site_with(tmp_path, signer, [hardware_record(1, fair(1)), hardware_record(2, fair(2))])
    code, report = audit(site, capsys)
    assert code == 0, report
    assert report["rerun"] == 2 and "operator" in report["operatorsWord"]
    for pulse in report["pulses"]:
        assert pulse["source"] == "quantum-hardware" and pulse["rawData"] == "re-run"
        assert pulse["claimedBits"] == pulse["estimatedBits"] == 512
        assert pulse["claimedPerBit"] == pulse["estimatedPerBit"] > 0.5


def test_copied_qubits_behind_borrowed_health_figures_are_caught(
    tmp_path: Path, signer: Signer, capsys: pytest.CaptureFixture[str]
) -> None:
    shot_bits = np.random.default_rng(3).integers(0, 2, SHOTS, dtype=np.uint8)
    copied = np.ascontiguousarray(np.repeat(shot_bits[:, None], QUBITS, axis=1))
    site = site_with(
        tmp_path,
        signer,
        [hardware_record(1, fair(1)), hardware_record(2, copied, health_from=fair(9))],
    )
    code, report = audit(site, capsys, "--from", "1", "--to", "2")
    assert code == 1
    good, bad = report["pulses"]
    assert good["ok"] is True
    assert bad["ok"] is False and bad["estimatedBits"] < 50 and bad["claimedBits"] == 512
    text = " ".join(bad["failures"])
    assert "health figures" in text and "credits 512 bits" in text


def test_a_flipped_byte_in_a_raw_batch_is_caught(
    tmp_path: Path, signer: Signer, capsys: pytest.CaptureFixture[str]
) -> None:
    site = site_with(tmp_path, signer, [hardware_record(1, fair(1))])
    path = site / layout.batch_key("job1")
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    code, report = audit(site, capsys)
    assert code == 1
    assert "batchSha512" in " ".join(report["pulses"][0]["failures"])
    assert main(["entropy", str(site)]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_bad_range_is_a_usage_error(tmp_path: Path, signer: Signer) -> None:
    site = site_with(tmp_path, signer, [hardware_record(1, fair(1))])
    assert main(["entropy", str(site), "--from", "3", "--to", "2"]) == 2
    assert main(["entropy", str(site), "--to", "9"]) == 3


def test_an_oversized_raw_batch_is_a_failure_not_a_read(
    tmp_path: Path, signer: Signer, capsys: pytest.CaptureFixture[str]
) -> None:
    site = site_with(tmp_path, signer, [hardware_record(1, fair(1))])
    path = site / layout.batch_key("job1")
    path.write_bytes(path.read_bytes() + bytes(1000))
    code, report = audit(site, capsys)
    assert code == 1
    assert "larger than batchBits" in " ".join(report["pulses"][0]["failures"])
