"""The pulse format against real NIST and INMETRO pulses, and malformed input."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from beacon_verifier.errors import PulseFormatError
from beacon_verifier.format import (
    OutputVariant,
    Pulse,
    certificate_der,
    certificate_id,
    emit_pulse,
    format_timestamp,
    load_json,
    output_value,
    parse_pulse,
    parse_timestamp,
    signing_input,
)

from tests.conftest import INMETRO, NIST


def test_vectors_parse_and_keep_their_bytes(nist_pulses: dict[int, Pulse]) -> None:
    assert sorted(nist_pulses) == [1, 54609, 54610]
    for index, pulse in nist_pulses.items():
        assert pulse.raw == (NIST / f"nist_c1_p{index}.json").read_bytes()
        assert pulse.chain_index == 1


def test_serialization_length_matches_the_spec(nist_pulses: dict[int, Pulse]) -> None:
    for pulse in nist_pulses.values():
        assert pulse.uri is not None
        expected = 748 + len(pulse.uri.encode()) + len(pulse.version.encode())
        assert len(signing_input(pulse)) == expected


def test_serialization_layout_of_pulse_54610(nist_pulses: dict[int, Pulse]) -> None:
    s = signing_input(nist_pulses[54610])
    uri = b"https://beacon.nist.gov/beacon/2.0/chain/1/pulse/54610"
    assert s[:4] == len(uri).to_bytes(4, "big") and s[4 : 4 + len(uri)] == uri
    assert s.endswith(bytes(4))  # u32(statusCode = 0)
    assert nist_pulses[54610].precommitment_value in s


def test_output_values_reproduce(nist_pulses: dict[int, Pulse]) -> None:
    for pulse in nist_pulses.values():
        assert output_value(signing_input(pulse), pulse.signature_value) == pulse.output_value


def test_inmetro_uses_the_length_prefixed_variant(inmetro_pulse: Pulse) -> None:
    s = signing_input(inmetro_pulse)
    assert output_value(s, inmetro_pulse.signature_value) != inmetro_pulse.output_value
    assert (
        output_value(s, inmetro_pulse.signature_value, OutputVariant.INMETRO)
        == inmetro_pulse.output_value
    )


def test_emission_reproduces_nist_bytes_exactly(nist_pulses: dict[int, Pulse]) -> None:
    for pulse in nist_pulses.values():
        assert emit_pulse(pulse) == pulse.raw


def test_bare_object_and_wrapped_object_parse_alike() -> None:
    raw = (NIST / "nist_c1_p54610.json").read_bytes()
    bare = json.dumps(json.loads(raw)["pulse"]).encode()
    assert parse_pulse(bare) == parse_pulse(raw)


def test_certificate_id_is_sha512_of_der(nist_cert_bytes: bytes) -> None:
    (pem_path,) = NIST.glob("*.pem")
    assert certificate_id(nist_cert_bytes).hex() == pem_path.stem
    der = certificate_der(nist_cert_bytes)
    assert certificate_id(der).hex() == pem_path.stem  # DER accepted too


@pytest.mark.parametrize(
    "mangle",
    [
        lambda pem: pem.replace(b"-----\n", b"-----"),  # no break after BEGIN
        lambda pem: pem.replace(b"\n-----END", b"-----END"),  # no break before END
        lambda pem: pem.replace(b"\n", b"\r\n\n"),  # extra breaks everywhere
        lambda pem: b"  \n" + pem.replace(b"\n", b"") + b"\n\n",  # one long line
    ],
)
def test_certificate_pem_is_parsed_leniently(nist_cert_bytes: bytes, mangle: object) -> None:
    (pem_path,) = NIST.glob("*.pem")
    mangled = mangle(nist_cert_bytes)  # type: ignore[operator]
    assert mangled != nist_cert_bytes
    assert certificate_id(mangled).hex() == pem_path.stem


def test_inmetro_certificate_id(inmetro_pulse: Pulse) -> None:
    (pem_path,) = INMETRO.glob("*.pem")
    assert certificate_id(pem_path.read_bytes()) == inmetro_pulse.certificate_id


@pytest.mark.parametrize(
    "data",
    [b"", b"not a certificate", b"-----BEGIN CERTIFICATE-----@@@-----END CERTIFICATE-----"],
)
def test_bad_certificates_raise_format_error(data: bytes) -> None:
    with pytest.raises(PulseFormatError) as info:
        certificate_id(data)
    assert info.value.field == "certificate"


def test_timestamps_round_trip() -> None:
    for text in [
        "2018-08-30T17:44:00.000Z",
        "2026-12-31T23:59:59.999Z",
        "1970-01-01T00:00:00.000Z",
    ]:
        assert format_timestamp(parse_timestamp(text)) == text
    assert parse_timestamp("2018-08-30T17:44:00.000Z") == 1535651040000


# --- malformed input: every case names the field ---------------------------------


def _doc() -> dict[str, object]:
    return json.loads((NIST / "nist_c1_p54610.json").read_bytes())  # type: ignore[no-any-return]


def _with(path: str, value: object, *, delete: bool = False) -> bytes:
    doc = _doc()
    node: object = doc["pulse"]
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]  # type: ignore[index]
    last = parts[-1]
    if delete:
        del node[last]  # type: ignore[attr-defined]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value  # type: ignore[index]
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("cipherSuite", "0", "cipherSuite"),
        ("cipherSuite", True, "cipherSuite"),
        ("period", 0, "period"),
        ("period", 2**32, "period"),
        ("chainIndex", -1, "chainIndex"),
        ("pulseIndex", 2**64, "pulseIndex"),
        ("pulseIndex", 1.5, "pulseIndex"),
        ("statusCode", None, "statusCode"),
        ("version", 2, "version"),
        ("uri", ["x"], "uri"),
        ("certificateId", "ab", "certificateId"),
        ("localRandomValue", "ZZ" * 64, "localRandomValue"),
        ("localRandomValue", "A" * 127, "localRandomValue"),
        ("outputValue", "00" * 65, "outputValue"),
        ("precommitmentValue", 5, "precommitmentValue"),
        ("signatureValue", "", "signatureValue"),
        ("timeStamp", "2018-08-30T17:44:00Z", "timeStamp"),
        ("timeStamp", "2018-08-30T17:44:30.000Z", "timeStamp"),  # not on a boundary
        ("timeStamp", "2018-02-30T17:44:00.000Z", "timeStamp"),
        ("timeStamp", 1535651040000, "timeStamp"),
        ("external", [], "external"),
        ("external.statusCode", "0", "external.statusCode"),
        ("external.value", "00", "external.value"),
        ("listValues", {}, "listValues"),
        ("listValues.1.type", "day", "listValues[1].type"),
        ("listValues.0.value", "00" * 63, "listValues[0].value"),
        ("listValues.2", "x", "listValues[2]"),
    ],
)
def test_malformed_fields_are_named(path: str, value: object, field: str) -> None:
    with pytest.raises(PulseFormatError) as info:
        parse_pulse(_with(path, value))
    assert info.value.field == field


@pytest.mark.parametrize(
    "path",
    [
        "uri",
        "version",
        "timeStamp",
        "external",
        "external.sourceId",
        "listValues.3.uri",
        "outputValue",
        "signatureValue",
    ],
)
def test_missing_fields_are_named(path: str) -> None:
    with pytest.raises(PulseFormatError) as info:
        parse_pulse(_with(path, None, delete=True))
    assert info.value.reason == "missing"
    assert info.value.field.replace("[3]", ".3") == path or info.value.field == path


def test_list_values_must_be_five_in_order() -> None:
    doc = _doc()
    links = doc["pulse"]["listValues"]  # type: ignore[index]
    doc["pulse"]["listValues"] = links[:4]  # type: ignore[index]
    with pytest.raises(PulseFormatError, match="listValues"):
        parse_pulse(json.dumps(doc).encode())
    doc["pulse"]["listValues"] = [links[1], links[0], *links[2:]]  # type: ignore[index]
    with pytest.raises(PulseFormatError, match=re.escape("listValues[0].type")):
        parse_pulse(json.dumps(doc).encode())


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xfe",
        b"[]",
        b'{"pulse": 1}',
        b'{"pulse": {"pulse": {}}}',
        b"NaN",
        b"[" * 100_000,
        b"{" + b" " * 70_000 + b"}",
    ],
)
def test_garbage_raises_format_error(data: bytes) -> None:
    with pytest.raises(PulseFormatError):
        parse_pulse(data)


def test_huge_integer_literal_is_a_format_error() -> None:
    raw = (NIST / "nist_c1_p54610.json").read_bytes()
    huge = raw.replace(b'"pulseIndex": 54610', b'"pulseIndex": ' + b"9" * 5000)
    assert huge != raw
    with pytest.raises(PulseFormatError):
        parse_pulse(huge)


def test_duplicate_keys_are_refused() -> None:
    raw = (NIST / "nist_c1_p54610.json").read_bytes()
    doubled = raw.replace(
        b'"statusCode": 0,\n    "signatureValue"',
        b'"statusCode": 0,\n    "statusCode": 1,\n    "signatureValue"',
    )
    assert doubled != raw
    with pytest.raises(PulseFormatError, match="appears twice"):
        parse_pulse(doubled)


@pytest.mark.parametrize(
    "data", [b'{"a":[1,"x"]}', b' {"a": [1, "x"]}\n', b'\t{"a":[1,"x"]}', b'{"a":[1,"x"]} ']
)
def test_json_is_read_with_or_without_whitespace_around_it(data: bytes) -> None:
    assert load_json(data) == {"a": [1, "x"]}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"a":1}x', "Extra data"),
        (b'{"a":1} {}', "Extra data"),
        (b'{"a":1,"a":2}', "appears twice"),
        (b"", "Expecting value"),
        (b" ", "Expecting value"),
        (b'{"a":NaN}', "NaN is not allowed"),
    ],
)
def test_json_that_is_not_one_strict_value_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(PulseFormatError, match=message):
        load_json(data)


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(PulseFormatError) as info:
        parse_pulse(_with("extra", 1))
    assert info.value.field == "extra"


def test_pem_vector_is_base64_of_der(nist_cert_bytes: bytes) -> None:
    body = b"".join(nist_cert_bytes.split(b"\n")[1:-2])
    assert base64.b64decode(body) == certificate_der(nist_cert_bytes)


def test_vectors_directory_is_inside_the_repository() -> None:
    root = Path(__file__).resolve().parents[2]
    assert NIST.resolve().is_relative_to(root)
