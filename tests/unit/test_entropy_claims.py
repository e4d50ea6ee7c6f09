"""What an entropy record may claim, checked by every verifier command (beacon_verifier.claims)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from beacon_verifier.entropyrecord import check_entropy_record
from beacon_verifier.errors import ChainError
from beacon_verifier.format import Pulse, canonical_json, parse_pulse

from beacon.pulse.builder import build_pulse
from beacon.pulse.keys import Signer

T0 = 1_790_000_040_000


def pulse_for(record: dict[str, Any], signer: Signer) -> Pulse:
    """A pulse signed around ``record`` (an operator can always do that)."""
    return parse_pulse(
        build_pulse(
            None,
            time_ms=T0,
            period_ms=60_000,
            local_random_value=hashlib.sha512(canonical_json(record)).digest(),
            next_local_random_value=bytes(64),
            signer=signer,
            base_url="https://b.example",
        ).data
    )


def fake_hardware_record(**changes: Any) -> dict[str, Any]:
    """Issue 22's record: quantum-hardware, ibm_torino, a made-up job id, all-zero bits."""
    bits = bytes(160)
    record = {
        "version": 1,
        "source": "quantum-hardware",
        "chainIndex": 1,
        "pulseIndex": 1,
        "backend": "ibm_torino",
        "jobId": "d0madeup00000000000",
        "batchId": "d0madeup00000000000",
        "bitOffsets": {"start": 0, "end": 1280},
        "minEntropy": 0.8,
        "quantumBits": bits.hex().upper(),
        "quantumValue": hashlib.sha512(bits).hexdigest().upper(),
        "osBits": "00" * 64,
    }
    return record | changes


def check(record: dict[str, Any], signer: Signer) -> str:
    return check_entropy_record(pulse_for(record, signer), canonical_json(record)).kind


def test_made_up_hardware_record_with_zero_bits_is_not_valid(signer: Signer) -> None:
    with pytest.raises(ChainError, match="raw batch"):
        check(fake_hardware_record(), signer)


def test_hardware_record_with_constant_bits_fails_even_citing_a_batch(signer: Signer) -> None:
    cited = fake_hardware_record(batchSha512="AB" * 64, batchBits=4096)
    with pytest.raises(ChainError, match="all 0"):
        check(cited, signer)


def test_hardware_record_may_not_credit_more_than_its_bits_hold(signer: Signer) -> None:
    bits = bytes(range(160))
    record = fake_hardware_record(
        quantumBits=bits.hex().upper(),
        quantumValue=hashlib.sha512(bits).hexdigest().upper(),
        batchSha512="AB" * 64,
        batchBits=4096,
        quantumMinEntropyBits=512,
        minEntropy=0.3,  # 0.3 x 1280 bits = 384 bits at most
    )
    with pytest.raises(ChainError, match="credits 512"):
        check(record, signer)
    assert check(record | {"quantumMinEntropyBits": 384}, signer) == "quantum-hardware"


@pytest.mark.parametrize("kind", ["quantum-simulator", "os-fallback"])
def test_simulated_and_os_bits_may_not_be_credited(kind: str, signer: Signer) -> None:
    bits = bytes(range(160))
    record = fake_hardware_record(
        source=kind,
        quantumBits=bits.hex().upper(),
        quantumValue=hashlib.sha512(bits).hexdigest().upper(),
        quantumMinEntropyBits=1024,
    )
    if kind == "os-fallback":
        record = {k: record[k] for k in ("version", "source", "chainIndex", "pulseIndex")}
        record |= {"reason": "configured", "osBits": "00" * 64, "quantumMinEntropyBits": 1}
    with pytest.raises(ChainError, match="0 bits"):
        check(record, signer)
    assert check(record | {"quantumMinEntropyBits": 0}, signer) == kind


def test_reports_say_simulated_in_plain_words() -> None:
    from beacon_verifier.claims import kind_words

    assert kind_words("quantum-simulator").startswith(
        "quantum-simulator (simulated quantum circuit, pseudo-random"
    )
    assert "operator" in kind_words("quantum-hardware")
    assert kind_words("something-new") == "something-new"
