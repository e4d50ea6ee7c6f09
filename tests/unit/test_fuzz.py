"""Mutated and truncated pulse JSON: the parser and the CLI always fail cleanly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from beacon_verifier.cli import main
from beacon_verifier.errors import PulseFormatError
from beacon_verifier.format import parse_pulse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import NIST

RAW = (NIST / "nist_c1_p54610.json").read_bytes()
DOC = json.loads(RAW)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)


def _parse_cleanly(data: bytes) -> None:
    try:
        parse_pulse(data)
    except PulseFormatError as exc:
        assert exc.field and "\n" not in str(exc)


@given(st.integers(0, len(RAW)))
def test_truncations(cut: int) -> None:
    _parse_cleanly(RAW[:cut])


@given(st.lists(st.tuples(st.integers(0, len(RAW) - 1), st.integers(0, 255)), max_size=8))
def test_byte_flips(flips: list[tuple[int, int]]) -> None:
    data = bytearray(RAW)
    for at, value in flips:
        data[at] = value
    _parse_cleanly(bytes(data))


@given(st.sampled_from(sorted(DOC["pulse"])), json_values)
def test_field_replaced_by_any_json(field: str, value: object) -> None:
    doc = json.loads(RAW)
    doc["pulse"][field] = value
    _parse_cleanly(json.dumps(doc).encode())


@given(st.integers(0, 4), st.sampled_from(["uri", "type", "value"]), json_values)
def test_link_field_replaced_by_any_json(i: int, key: str, value: object) -> None:
    doc = json.loads(RAW)
    doc["pulse"]["listValues"][i][key] = value
    _parse_cleanly(json.dumps(doc).encode())


@pytest.fixture(scope="module")
def cert_path() -> Path:
    (path,) = NIST.glob("*.pem")
    return path


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
# RAW ends in "}\n": cutting two bytes or more always leaves invalid JSON.
@given(data=st.binary(max_size=200) | st.integers(0, len(RAW) - 2).map(lambda n: RAW[:n]))
def test_cli_never_tracebacks(
    tmp_path: Path, cert_path: Path, capsys: pytest.CaptureFixture[str], data: bytes
) -> None:
    target = tmp_path / "pulse.json"
    target.write_bytes(data)
    for extra in ([], ["--json"]):
        code = main(["pulse", str(target), "--cert", str(cert_path), *extra])
        assert code in (1, 3)
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        if extra:
            json.loads(out)  # --json output stays machine-readable


def test_cli_exit_codes(
    tmp_path: Path, cert_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = NIST / "nist_c1_p54610.json"
    assert main(["pulse", str(good), "--cert", str(cert_path)]) == 0
    assert main(["pulse", str(tmp_path / "missing.json")]) == 3
    assert main(["pulse"]) == 2
    assert main(["pulse", str(good), "--cert", str(tmp_path / "nocert.pem")]) == 3
    bad_cert = tmp_path / "bad.pem"
    bad_cert.write_bytes(b"garbage")
    assert main(["pulse", str(good), "--cert", str(bad_cert)]) == 1
    tampered = tmp_path / "t.json"
    tampered.write_bytes(
        RAW.replace(
            b'"statusCode": 0,\n    "signatureValue"', b'"statusCode": 2,\n    "signatureValue"'
        )
    )
    assert main(["pulse", str(tampered), "--cert", str(cert_path)]) == 1
    out = capsys.readouterr().out
    assert "pulse 54610: signature failed" in out and "outputValue failed" in out
