"""Chain replay from a site: entropy records, missing pulses, tampering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from beacon_verifier import layout
from beacon_verifier.cli import main

from beacon.config import Settings
from beacon.entropy.os_source import OsSource
from beacon.publish.local import LocalDirPublisher
from beacon.pulse.keys import Signer
from beacon.service import Beacon
from tests.beacon_proc import replay

T0 = 1_800_000_000_000


class Clock:
    now = T0

    def now_ms(self) -> int:
        return self.now


@pytest.fixture
def site(tmp_path: Path, signer: Signer) -> Path:
    settings = Settings(data_dir=tmp_path / "data", out_dir=tmp_path / "site")
    clock = Clock()
    beacon = Beacon(
        settings=settings,
        signer=signer,
        clock=clock,
        source=OsSource("configured"),
        fallback=OsSource,
        publisher=LocalDirPublisher(settings.out_dir),
    )
    beacon.start_background()
    for i in range(6):
        clock.now = T0 + i * 60_000
        if beacon._prepared:
            beacon._prepared[1].exception(timeout=10)
        assert beacon.tick()
    beacon.shutdown()
    return settings.out_dir


def test_clean_site_verifies(site: Path) -> None:
    report = replay(site)
    assert report.ok and report.pulses_checked == 6
    assert report.source_kinds == {"os-fallback": 6}


def test_tampered_entropy_record_is_detected(site: Path) -> None:
    path = site / layout.entropy_record_key(1, 4)
    record = json.loads(path.read_bytes())
    record["reason"] = "quantum, honestly"
    path.write_bytes(json.dumps(record, sort_keys=True, separators=(",", ":")).encode())
    report = replay(site)
    assert [(f.pulse_index, f.check) for f in report.failures] == [(4, "entropy record")]


def test_missing_pulse_is_reported_not_crashed(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (site / layout.pulse_key(1, 3)).unlink()
    report = replay(site)
    assert report.missing == [(3, 3)]
    assert not report.ok
    assert main(["chain", str(site)]) == 1
    assert "pulse 3: missing" in capsys.readouterr().out


def test_swapped_pulse_is_caught(site: Path) -> None:
    a, b = site / layout.pulse_key(1, 2), site / layout.pulse_key(1, 5)
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    checks = {f.check for f in replay(site).failures}
    assert "location" in checks


def test_chain_json_report(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chain", str(site), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["lastIndex"] == 6


def test_not_a_site_is_a_fetch_error(tmp_path: Path) -> None:
    assert main(["chain", str(tmp_path)]) == 3
    assert main(["chain", str(tmp_path / "nope")]) == 3


def test_quantum_record_bits_are_rechecked(tmp_path: Path, signer: Signer) -> None:
    """A quantum record whose quantumValue does not hash its quantumBits is caught,
    even when the operator re-signs a pulse around it (so SHA-512(record) matches)."""
    import hashlib

    from beacon_verifier.errors import ChainError
    from beacon_verifier.format import parse_pulse
    from beacon_verifier.replay import check_entropy_record

    from beacon.entropy import canonical_json

    bits = bytes(range(160))
    record = {
        "version": 1,
        "source": "quantum-simulator",
        "chainIndex": 1,
        "pulseIndex": 1,
        "bitOffsets": {"start": 0, "end": 1280},
        "quantumBits": bits.hex().upper(),
        "quantumValue": hashlib.sha512(bits).hexdigest().upper(),
    }
    from beacon.pulse.builder import build_pulse

    def pulse_for(rec: dict[str, object]) -> object:
        return parse_pulse(
            build_pulse(
                None,
                time_ms=T0,
                period_ms=60_000,
                local_random_value=hashlib.sha512(canonical_json(rec)).digest(),
                next_local_random_value=bytes(64),
                signer=signer,
                base_url="https://b.example",
            ).data
        )

    good = pulse_for(record)
    assert check_entropy_record(good, canonical_json(record)).kind == "quantum-simulator"  # type: ignore[arg-type]
    bad = {**record, "quantumValue": "00" * 64}
    with pytest.raises(ChainError, match="quantumValue"):
        check_entropy_record(pulse_for(bad), canonical_json(bad))  # type: ignore[arg-type]
    short = {**record, "bitOffsets": {"start": 0, "end": 2000}}
    with pytest.raises(ChainError, match="bit range"):
        check_entropy_record(pulse_for(short), canonical_json(short))  # type: ignore[arg-type]
