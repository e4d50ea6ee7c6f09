"""The drand external check against real quicknet rounds (tests/vectors/drand, provenance there)."""

from __future__ import annotations

import dataclasses
import json

import pytest
from beacon_verifier import external as ext
from beacon_verifier.format import (
    ZERO_EXTERNAL,
    ZERO_HASH,
    External,
    Pulse,
    format_timestamp,
    parse_timestamp,
)

from tests.conftest import VECTORS

pytest.importorskip("pyblst")


def _vectors(name: str) -> tuple[ext.DrandChain, list[dict[str, object]]]:
    doc = json.loads((VECTORS / "drand" / f"{name}.json").read_text())
    return ext.DrandChain.from_info(doc["info"]), doc["rounds"]


QUICKNET, QUICKNET_ROUNDS = _vectors("quicknet")


def _pulse(template: Pulse, chain: ext.DrandChain, round_number: int, external: External) -> Pulse:
    """A pulse at the time of ``round_number`` (period 3 s, as quicknet's) with ``external``."""
    return dataclasses.replace(
        template,
        period=chain.period * 1000,
        time_stamp=format_timestamp(chain.time_of(round_number)),
        external=external,
    )


def _record(chain: ext.DrandChain, round_number: int, signature: bytes) -> bytes:
    return ext.RoundRecord(
        chain_hash=chain.chain_hash,
        round=round_number,
        status_code=0,
        signature=signature,
        relay="https://api.drand.sh",
    ).to_json()


def _valid(template: Pulse, chain: ext.DrandChain, r: dict[str, object]) -> tuple[Pulse, bytes]:
    number, sig = int(str(r["round"])), bytes.fromhex(str(r["signature"]))
    record = ext.RoundRecord.from_json(_record(chain, number, sig))
    return _pulse(template, chain, number, ext.external_of(chain, record)), _record(
        chain, number, sig
    )


def test_pinned_quicknet_matches_the_published_info() -> None:
    assert ext.QUICKNET == QUICKNET
    # quicknet's genesis is a multiple of 3 s: every 3 s-multiple period lands on a round.
    assert QUICKNET.round_at(60_000 * 28_213_440) is not None
    assert QUICKNET.round_at(QUICKNET.time_of(1000)) == 1000
    assert QUICKNET.round_at(QUICKNET.time_of(1000) + 1000) is None


@pytest.mark.parametrize("name", ["quicknet", "walkthrough"])
def test_real_rounds_verify_and_neighbours_do_not(name: str) -> None:
    chain, rounds = _vectors(name)
    for r in rounds:
        number, sig = int(str(r["round"])), bytes.fromhex(str(r["signature"]))
        assert ext.verify_round(chain, number, sig)
        assert not ext.verify_round(chain, number + 1, sig)
        flipped = sig[:-1] + bytes([sig[-1] ^ 1])
        assert not ext.verify_round(chain, number, flipped)


def test_a_quicknet_round_does_not_verify_under_another_key() -> None:
    other, _ = _vectors("walkthrough")
    r = QUICKNET_ROUNDS[0]
    wrong = dataclasses.replace(QUICKNET, public_key=other.public_key)
    assert not ext.verify_round(wrong, int(str(r["round"])), bytes.fromhex(str(r["signature"])))


def test_a_pulse_with_a_real_round_is_valid(nist_pulses: dict[int, Pulse]) -> None:
    template = next(iter(nist_pulses.values()))
    for r in QUICKNET_ROUNDS:
        pulse, record = _valid(template, QUICKNET, r)
        verdict = ext.check_external(pulse, record, QUICKNET)
        assert verdict.verdict == ext.VALID, verdict
        assert verdict.round == r["round"]
        # Without the BLS binding the same pulse is "not checked", never valid.
        unchecked = ext.check_external(pulse, record, QUICKNET, verify_bls=False)
        assert unchecked.verdict == ext.NOT_CHECKED
        assert not unchecked.usable


def test_one_hex_digit_of_the_signature_changed_is_invalid(nist_pulses: dict[int, Pulse]) -> None:
    template = next(iter(nist_pulses.values()))
    pulse, record = _valid(template, QUICKNET, QUICKNET_ROUNDS[0])
    doc = json.loads(record)
    sig = doc["signature"]
    doc["signature"] = sig[:10] + ("0" if sig[10] != "0" else "1") + sig[11:]
    tampered = json.dumps(doc).encode()
    # external.value no longer matches: caught before the pairing
    assert ext.check_external(pulse, tampered, QUICKNET).verdict == ext.INVALID
    # and with external.value recomputed to match, the pairing catches it
    forged = dataclasses.replace(
        pulse,
        external=dataclasses.replace(
            pulse.external, value=ext.external_value(bytes.fromhex(doc["signature"]))
        ),
    )
    verdict = ext.check_external(forged, tampered, QUICKNET)
    assert verdict.verdict == ext.INVALID
    assert "BLS" in verdict.detail or "G1" in verdict.detail or "signature" in verdict.detail


def test_round_must_be_the_round_of_the_timestamp(nist_pulses: dict[int, Pulse]) -> None:
    template = next(iter(nist_pulses.values()))
    pulse, record = _valid(template, QUICKNET, QUICKNET_ROUNDS[0])
    later = dataclasses.replace(
        pulse,
        time_stamp=format_timestamp(QUICKNET.time_of(QUICKNET_ROUNDS[0]["round"] + 1)),  # type: ignore[operator]
    )
    verdict = ext.check_external(later, record, QUICKNET)
    assert verdict.verdict == ext.INVALID
    assert "round" in verdict.detail


def test_source_id_and_missing_codes(nist_pulses: dict[int, Pulse]) -> None:
    template = next(iter(nist_pulses.values()))
    pulse, record = _valid(template, QUICKNET, QUICKNET_ROUNDS[0])
    other = dataclasses.replace(pulse.external, source_id=ext.source_id(b"\1" * 32))
    assert (
        ext.check_external(dataclasses.replace(pulse, external=other), record, QUICKNET).verdict
        == ext.INVALID
    )
    missing = External(source_id=QUICKNET.source_id, status_code=2, value=ZERO_HASH)
    verdict = ext.check_external(dataclasses.replace(pulse, external=missing), None, QUICKNET)
    assert verdict.verdict == ext.MISSING
    assert not verdict.usable
    # a "missing" external that still carries a value is not honest about it
    lying = dataclasses.replace(missing, value=pulse.external.value)
    assert (
        ext.check_external(dataclasses.replace(pulse, external=lying), record, QUICKNET).verdict
        == ext.INVALID
    )
    none = dataclasses.replace(pulse, external=ZERO_EXTERNAL)
    assert ext.check_external(none, None, QUICKNET).verdict == ext.NONE
    # a valid statusCode with no record published
    assert ext.check_external(pulse, None, QUICKNET).verdict == ext.INVALID


def test_source_id_is_sha512_of_the_chain_hash_text() -> None:
    import hashlib

    expected = hashlib.sha512(
        b"drand:52db9ba70e0cc0f6eaf7803dd07447a1f5477735fd3f661792ba94600c84e971"
    ).digest()
    assert ext.QUICKNET.source_id == expected


def test_record_parse_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="round"):
        ext.RoundRecord.from_json(
            b'{"source":"drand","scheme":"bls-unchained-g1-rfc9380","chainHash":"00",'
            b'"round":-1,"statusCode":0,"signature":null}'
        )
    with pytest.raises(ValueError, match="drand"):
        ext.RoundRecord.from_json(b'{"source":"nist"}')


def test_info_hash_covers_genesis_and_period() -> None:
    doc = json.loads((VECTORS / "drand" / "quicknet.json").read_text())["info"]
    assert ext.DrandChain.from_info(doc).computed_hash() == ext.QUICKNET.chain_hash
    for field, value in (("genesis_time", doc["genesis_time"] + 3), ("period", 30)):
        with pytest.raises(ValueError, match="hash does not match"):
            ext.DrandChain.from_info({**doc, field: value})
    with pytest.raises(ValueError, match="schemeID"):
        ext.DrandChain.from_info({**doc, "schemeID": "pedersen-bls-chained"})


def test_a_declared_missing_external_where_no_round_lands_is_missing(
    nist_pulses: dict[int, Pulse],
) -> None:
    """A 1 s beacon on quicknet (3 s) has no round at two boundaries in three: the beacon
    declares those externals missing (statusCode 3), which is no failure of its own."""
    template = next(iter(nist_pulses.values()))
    pulse, _ = _valid(template, QUICKNET, QUICKNET_ROUNDS[0])
    off_round = parse_timestamp(pulse.time_stamp) + 1000
    assert QUICKNET.round_at(off_round) is None
    missing = External(source_id=QUICKNET.source_id, status_code=3, value=ZERO_HASH)
    between = dataclasses.replace(
        pulse, period=1000, time_stamp=format_timestamp(off_round), external=missing
    )
    assert ext.check_external(between, None, QUICKNET).verdict == ext.MISSING
    # Claiming a valid round there is invalid.
    claimed = dataclasses.replace(between, external=pulse.external)
    assert ext.check_external(claimed, None, QUICKNET).verdict == ext.INVALID
