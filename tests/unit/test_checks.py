"""Checks: real NIST pulses verify; any change to a signed byte is caught and named."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from beacon_verifier.chain import ChainVerifier
from beacon_verifier.checks import (
    TrustedCertificate,
    check_pair,
    expected_status_bits,
)
from beacon_verifier.core import Evidence, Verdict, check_pulse
from beacon_verifier.errors import PulseFormatError
from beacon_verifier.format import (
    ZERO_HASH,
    External,
    ListValue,
    OutputVariant,
    Pulse,
)


def verify_pulse(pulse: Pulse, certificate: TrustedCertificate | None) -> Verdict:
    """The one core's verdict on a pulse with its certificate and nothing else."""
    return check_pulse(Evidence(pulse, certificate=certificate))


def _flip(value: bytes, at: int = 0) -> bytes:
    return value[:at] + bytes([value[at] ^ 0x01]) + value[at + 1 :]


def test_real_nist_pulses_verify(
    nist_pulses: dict[int, Pulse], nist_cert: TrustedCertificate
) -> None:
    for pulse in nist_pulses.values():
        report = verify_pulse(pulse, nist_cert)
        assert report.ok, [f.describe() for f in report.failures]
        assert report.output_variant is OutputVariant.NIST


def test_nist_pulse_one_is_a_chain_start(nist_pulses: dict[int, Pulse]) -> None:
    first = nist_pulses[1]
    assert first.status_code == 1
    assert all(lv.value == ZERO_HASH for lv in first.list_values)


def test_nist_consecutive_pair(nist_pulses: dict[int, Pulse]) -> None:
    before, after = nist_pulses[54609], nist_pulses[54610]
    assert after.previous == before.output_value
    assert hashlib.sha512(after.local_random_value).digest() == before.precommitment_value
    assert expected_status_bits(before, after) == 0
    assert check_pair(before, after) == []


def test_inmetro_variant_is_reported_not_failed(
    inmetro_pulse: Pulse, inmetro_cert: TrustedCertificate
) -> None:
    report = verify_pulse(inmetro_pulse, inmetro_cert)
    assert report.ok, [f.describe() for f in report.failures]
    assert report.output_variant is OutputVariant.INMETRO


def _mutations(p: Pulse) -> dict[str, Pulse]:
    """One changed copy of the pulse per signed field, each still well-formed."""
    r = dataclasses.replace
    links = list(p.list_values)
    out = {
        "uri": r(p, uri=(p.uri or "") + "x"),
        "version": r(p, version="Version 2.1"),
        "cipherSuite": r(p, cipher_suite=1),
        "period": r(p, period=30000),
        "certificateId": r(p, certificate_id=_flip(p.certificate_id)),
        "chainIndex": r(p, chain_index=p.chain_index + 1),
        "pulseIndex": r(p, pulse_index=p.pulse_index + 1),
        "timeStamp": r(p, time_stamp="2018-08-30T17:45:00.000Z"),
        "localRandomValue": r(p, local_random_value=_flip(p.local_random_value, 63)),
        "external.sourceId": r(p, external=r(p.external, source_id=_flip(p.external.source_id))),
        "external.statusCode": r(p, external=r(p.external, status_code=1)),
        "external.value": r(p, external=r(p.external, value=_flip(p.external.value, 5))),
        "precommitmentValue": r(p, precommitment_value=_flip(p.precommitment_value)),
        "statusCode": r(p, status_code=p.status_code ^ 2),
    }
    for i, lv in enumerate(links):
        changed = list(links)
        changed[i] = ListValue(uri=lv.uri, type=lv.type, value=_flip(lv.value, 7))
        out[f"listValues[{lv.type}].value"] = r(p, list_values=tuple(changed))
    return out


SIGNED_FIELDS = 19


def test_every_signed_field_is_covered(
    nist_pulses: dict[int, Pulse], nist_cert: TrustedCertificate
) -> None:
    pulse = nist_pulses[54610]
    mutations = _mutations(pulse)
    assert len(mutations) == SIGNED_FIELDS
    for name, changed in mutations.items():
        assert changed != pulse, name
        report = verify_pulse(changed, nist_cert)
        checks = {f.check for f in report.failures}
        assert not report.ok, name
        # The signature no longer covers the bytes, and outputValue no longer hashes them.
        assert "outputValue" in checks, name
        if name == "certificateId":
            assert "certificateId" in checks
        elif name == "cipherSuite":
            assert "cipherSuite" in checks
        else:
            assert "signature" in checks, (name, checks)


def test_unsigned_link_uri_does_not_change_validity(
    nist_pulses: dict[int, Pulse], nist_cert: TrustedCertificate
) -> None:
    pulse = nist_pulses[54610]
    links = list(pulse.list_values)
    links[1] = dataclasses.replace(links[1], uri="https://elsewhere.example/")
    assert verify_pulse(dataclasses.replace(pulse, list_values=tuple(links)), nist_cert).ok


@pytest.mark.parametrize("at", [0, 100, 511])
def test_any_signature_byte_breaks_it(
    nist_pulses: dict[int, Pulse], nist_cert: TrustedCertificate, at: int
) -> None:
    pulse = nist_pulses[54610]
    report = verify_pulse(
        dataclasses.replace(pulse, signature_value=_flip(pulse.signature_value, at)), nist_cert
    )
    assert {f.check for f in report.failures} == {"signature", "outputValue"}
    assert report.signature == "invalid"


def test_output_value_change_is_named(
    nist_pulses: dict[int, Pulse], nist_cert: TrustedCertificate
) -> None:
    pulse = nist_pulses[54609]
    report = verify_pulse(
        dataclasses.replace(pulse, output_value=_flip(pulse.output_value, 9)), nist_cert
    )
    assert [f.check for f in report.failures] == ["outputValue"]
    assert report.failures[0].pulse_index == 54609


def test_another_certificate_fails_certificate_id(
    nist_pulses: dict[int, Pulse], inmetro_cert: TrustedCertificate
) -> None:
    report = verify_pulse(nist_pulses[1], inmetro_cert)
    assert [f.check for f in report.failures] == ["certificateId"]


def test_without_certificate_the_signature_is_unverifiable(
    nist_pulses: dict[int, Pulse],
) -> None:
    report = verify_pulse(nist_pulses[54610], None)
    assert report.signature == "unverifiable"
    assert report.failures == []
    assert not report.ok


# --- pairs: status bits against what the pulses show -----------------------------


def _pair_failures(before: Pulse, after: Pulse) -> set[str]:
    return {f.check for f in check_pair(before, after)}


def test_pair_detects_broken_previous_link(nist_pulses: dict[int, Pulse]) -> None:
    before, after = nist_pulses[54609], nist_pulses[54610]
    links = list(after.list_values)
    links[0] = dataclasses.replace(links[0], value=_flip(links[0].value))
    assert _pair_failures(before, dataclasses.replace(after, list_values=tuple(links))) == {
        "previous link"
    }


def test_pair_detects_unopened_precommitment(nist_pulses: dict[int, Pulse]) -> None:
    before, after = nist_pulses[54609], nist_pulses[54610]
    changed = dataclasses.replace(after, local_random_value=_flip(after.local_random_value))
    assert _pair_failures(before, changed) == {"precommitment"}
    # Declaring it with bit 1 makes the pair consistent.
    assert _pair_failures(before, dataclasses.replace(changed, status_code=1)) == set()


def test_pair_needs_gap_bit_exactly_when_periods_were_missed(
    nist_pulses: dict[int, Pulse],
) -> None:
    before, after = nist_pulses[54609], nist_pulses[54610]
    later = dataclasses.replace(after, time_stamp="2018-08-30T17:46:00.000Z")
    assert _pair_failures(before, later) == {"statusCode"}
    assert _pair_failures(before, dataclasses.replace(later, status_code=2)) == set()
    assert _pair_failures(before, dataclasses.replace(after, status_code=2)) == {"statusCode"}


def test_pair_needs_certificate_change_bit(nist_pulses: dict[int, Pulse]) -> None:
    before, after = nist_pulses[54609], nist_pulses[54610]
    other = dataclasses.replace(after, certificate_id=_flip(after.certificate_id))
    assert _pair_failures(before, other) == {"statusCode"}
    assert _pair_failures(before, dataclasses.replace(other, status_code=4)) == set()


def test_pair_rejects_anything_after_a_chain_end(nist_pulses: dict[int, Pulse]) -> None:
    before, after = nist_pulses[54609], nist_pulses[54610]
    assert "chain end" in _pair_failures(dataclasses.replace(before, status_code=8), after)


def test_pair_rejects_non_consecutive_and_backwards(nist_pulses: dict[int, Pulse]) -> None:
    before, after = nist_pulses[54609], nist_pulses[54610]
    assert _pair_failures(before, nist_pulses[1]) == {"pulseIndex"}
    backwards = dataclasses.replace(after, time_stamp="2018-08-30T17:43:00.000Z")
    assert "timeStamp order" in _pair_failures(before, backwards)
    assert _pair_failures(before, dataclasses.replace(after, chain_index=2)) == {"chainIndex"}


def test_chain_start_must_have_bit_one_and_zero_links(
    nist_pulses: dict[int, Pulse], nist_cert: TrustedCertificate
) -> None:
    first = nist_pulses[1]
    checks = {
        f.check for f in verify_pulse(dataclasses.replace(first, status_code=0), nist_cert).failures
    }
    assert "statusCode" in checks
    links = list(first.list_values)
    links[2] = dataclasses.replace(links[2], value=b"\1" * 64)
    checks = {
        f.check
        for f in verify_pulse(
            dataclasses.replace(first, list_values=tuple(links)), nist_cert
        ).failures
    }
    assert "day link" in checks


def test_chain_verifier_on_real_pair(
    nist_pulses: dict[int, Pulse], nist_cert: TrustedCertificate
) -> None:
    verifier = ChainVerifier(certificates=lambda cid: nist_cert)
    verifier.add(nist_pulses[54609])
    verifier.add(nist_pulses[54610])
    assert verifier.report.ok
    assert verifier.report.pulses_checked == 2


def test_external_zero_object() -> None:
    assert External(source_id=ZERO_HASH, status_code=0, value=ZERO_HASH).value == ZERO_HASH
    with pytest.raises(PulseFormatError):
        External(source_id=b"", status_code=0, value=ZERO_HASH)
