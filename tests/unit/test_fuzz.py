"""Mutated and truncated pulse JSON: the parser and the CLI always fail cleanly; the fast
parsing path gives exactly what the strict one gives; hostile sites end every command
in one line."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from beacon_verifier import layout
from beacon_verifier.cli import main
from beacon_verifier.errors import PulseFormatError
from beacon_verifier.format import (
    Pulse,
    _checked_pulse,
    _fast_parse,
    _object,
    emit_pulse,
    load_json,
    parse_pulse,
)
from beacon_verifier.timeindex import BOUNDS_KEY, hour_index_key
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beacon.publish.archives import ArchiveItem, build_day_archive
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


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
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


# --- the fast parsing path gives exactly what the strict path gives -----------------------


def _strict(data: bytes) -> Pulse:
    """The field-by-field path alone (what parse_pulse does when the fast path declines)."""
    obj = _object(load_json(data, what="pulse"), "pulse")
    if set(obj) == {"pulse"}:
        obj = _object(obj["pulse"], "pulse")
    return _checked_pulse(obj, bytes(data))


def _same_as_strict(data: bytes) -> None:
    fast = _fast_parse(data)
    try:
        strict = _strict(data)
    except PulseFormatError as exc:
        assert fast is None, "the fast path accepted what the strict path refuses"
        with pytest.raises(PulseFormatError) as info:
            parse_pulse(data)
        assert str(info.value) == str(exc)
        return
    if fast is not None:
        assert fast == strict and fast.raw == strict.raw == data
        assert fast.time_ms == strict.time_ms
    assert parse_pulse(data) == strict


OTHER_RAWS = [(NIST / f"nist_c1_p{p}.json").read_bytes() for p in (1, 54609)]


def _layout(doc: object, *, ensure_ascii: bool = True) -> bytes:
    """``doc`` in the layout the fast path reads (emit_pulse's, NIST's): indented by 2."""
    return json.dumps(doc, indent=2, ensure_ascii=ensure_ascii).encode()


def test_vectors_take_the_fast_path() -> None:
    for raw in (RAW, *OTHER_RAWS):
        pulse = _fast_parse(raw)
        assert pulse is not None
        _same_as_strict(raw)
        # What this beacon writes, with and without a trailing newline.
        assert _fast_parse(emit_pulse(pulse)) == pulse
        assert _fast_parse(emit_pulse(pulse).rstrip()) == pulse
        # Another layout is left to the strict path, which reads it all the same.
        compact = json.dumps(json.loads(raw)["pulse"]).encode()
        assert _fast_parse(compact) is None
        _same_as_strict(compact)


@settings(max_examples=300)
@given(st.sampled_from(sorted(DOC["pulse"])), json_values)
def test_fast_path_field_replaced_by_any_json(field: str, value: object) -> None:
    doc = json.loads(RAW)
    doc["pulse"][field] = value
    _same_as_strict(_layout(doc))


@settings(max_examples=200)
@given(
    st.integers(0, 4),
    st.sampled_from(["uri", "type", "value"]),
    json_values | st.text(alphabet=':\\"é/ 0Aa\t', max_size=12),
)
def test_fast_path_link_field_replaced(i: int, key: str, value: object) -> None:
    doc = json.loads(RAW)
    doc["pulse"]["listValues"][i][key] = value
    _same_as_strict(_layout(doc))


_EDGE_INTS = [0, 1, 2**32 - 1, 2**32, 2**64 - 1, 2**64, -1, 10**19, 10**20, 60000, 59999, True]
_SCALARS = [
    ("cipherSuite",),
    ("period",),
    ("chainIndex",),
    ("pulseIndex",),
    ("statusCode",),
    ("external", "statusCode"),
]


@pytest.mark.parametrize("path", _SCALARS, ids=".".join)
@pytest.mark.parametrize("value", _EDGE_INTS)
def test_fast_path_integer_edges(path: tuple[str, ...], value: int) -> None:
    doc = json.loads(RAW)
    target = doc["pulse"]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    data = _layout(doc)
    _same_as_strict(data)
    try:
        _strict(data)
    except PulseFormatError:
        return
    assert _fast_parse(data) is not None  # accepted in this layout: by the fast path


@settings(max_examples=300)
@given(
    st.sampled_from(["uri", "version", "timeStamp", "link uri"]),
    st.text(alphabet=st.characters(max_codepoint=0x80), max_size=30) | st.none(),
)
def test_fast_path_short_strings(field: str, text: str | None) -> None:
    doc = json.loads(RAW)
    if field == "link uri":
        doc["pulse"]["listValues"][3]["uri"] = text
    else:
        doc["pulse"][field] = text
    _same_as_strict(_layout(doc))


_LINES = RAW.split(b"\n")


@settings(max_examples=300)
@given(
    st.integers(0, len(_LINES) - 1),
    st.integers(0, len(_LINES) - 1),
    st.sampled_from(
        [
            b"",
            b" ",
            b"\t",
            b"\\u0041",
            b":",
            b'"',
            b"\\\\",
            b"\x01",
            b"\x1f",
            b"\x7f",
            b"\xc3\xa9",
            b"\xff",
            b"\n",
            b"\r",
        ]
    ),
    st.integers(0, 200),
)
def test_fast_path_with_duplicated_lines_and_odd_text(
    copy_from: int, insert_at: int, extra: bytes, at: int
) -> None:
    lines = list(_LINES)
    lines.insert(insert_at, lines[copy_from])  # a duplicate key, often
    data = b"\n".join(lines)
    _same_as_strict(data)
    line = lines[min(insert_at, len(lines) - 1)]
    cut = min(at, len(line))
    lines[min(insert_at, len(lines) - 1)] = line[:cut] + extra + line[cut:]
    _same_as_strict(b"\n".join(lines))


@settings(max_examples=200)
@given(
    st.sampled_from(["uri", "version"]),
    st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=30),
    st.booleans(),
)
def test_fast_path_strings_with_colons_unicode_and_escapes(
    field: str, text: str, ensure_ascii: bool
) -> None:
    doc = json.loads(RAW)
    doc["pulse"][field] = text
    _same_as_strict(_layout(doc, ensure_ascii=ensure_ascii))


@pytest.mark.parametrize(
    "odd", [b"\x00", b"\x01", b"\x1f", b"\t", b"\n", b"\x7f", b"\xc3\xa9", b"\xff", b"\\n"]
)
@pytest.mark.parametrize(
    "where",
    [
        b'"uri": "https:',
        b'"version": "Version',
        b'"uri": "https://beacon.nist.gov/beacon/2.0/chain/1/pulse/54609',
    ],
)
def test_fast_path_raw_bytes_inside_strings(odd: bytes, where: bytes) -> None:
    # JSON refuses raw control characters in strings; UTF-8 and escapes are the strict path's.
    assert RAW.count(where) >= 1
    data = RAW.replace(where, where + odd, 1)
    _same_as_strict(data)


@pytest.mark.parametrize(
    "stamp",
    [
        "2018-08-30T17:44:00.000Z",
        "2018-08-30T17:44:00.001Z",  # off the period
        "2018-02-30T00:00:00.000Z",
        "2018-13-01T00:00:00.000Z",
        "0000-01-01T00:00:00.000Z",
        "2018-08-30T24:00:00.000Z",
        "2018-08-30T23:60:00.000Z",
        "2018-08-30T23:59:60.000Z",
        "2016-02-29T23:59:00.000Z",
        "2018-08-30 17:44:00.000Z",
    ],
)
def test_fast_path_timestamps(stamp: str) -> None:
    doc = json.loads(RAW)
    doc["pulse"]["timeStamp"] = stamp
    _same_as_strict(_layout(doc))


_HEX = DOC["pulse"]["outputValue"]


@pytest.mark.parametrize(
    "value",
    [
        _HEX.lower(),
        _HEX[:126] + "  ",  # 128 characters, 63 bytes
        _HEX[:2] + " " + _HEX[2:127],
        "\t" + _HEX[:127],
        _HEX[:127],
        _HEX + "00",
        _HEX[:126] + "\u0661\u0661",  # Arabic-Indic digits
        _HEX[:126] + "0x",
        # Escapes that make the JSON text 128 characters long.
        _HEX[:126] + '"',
        _HEX[:126] + "\\",
        _HEX[:125] + '"A',
    ],
)
@pytest.mark.parametrize("where", ["outputValue", "certificateId", "link", "external", "signature"])
def test_fast_path_hex_edge_cases(value: str, where: str) -> None:
    doc = json.loads(RAW)
    pulse = doc["pulse"]
    if where == "link":
        pulse["listValues"][1]["value"] = value
    elif where == "external":
        pulse["external"]["sourceId"] = value
    elif where == "signature":
        pulse["signatureValue"] = value[:-2] + pulse["signatureValue"][126:]
    else:
        pulse[where] = value
    _same_as_strict(_layout(doc))


_SIGNATURE = DOC["pulse"]["signatureValue"] * 4  # 4096 digits, the most it reads


@pytest.mark.parametrize("tail", ["", '"', "\\", "g"])
def test_fast_path_signatures_of_any_length(tail: str) -> None:
    # It looks first for RSA-4096's 1024 digits before a quote, then for a run up to
    # the quote; at 1002 digits, 1024 bytes end before outputValue's opening quote.
    doc = json.loads(RAW)
    for length in [2, 256, 512, 873, *range(990, 1040), 2048, 4096, 4098]:
        doc["pulse"]["signatureValue"] = _SIGNATURE[: length - len(tail)] + tail
        data = _layout(doc)
        _same_as_strict(data)
        if not tail and length % 2 == 0 and length <= len(_SIGNATURE):
            assert _fast_parse(data) is not None, length


def test_fast_path_refuses_a_duplicate_hidden_by_a_colon() -> None:
    # A second "uri" key adds a colon; taking one away elsewhere must not hide it.
    doubled = RAW.replace(b'"version": ', b'"uri": null,\n    "version": ', 1)
    assert doubled != RAW
    with pytest.raises(PulseFormatError, match="appears twice"):
        parse_pulse(doubled)
    assert _fast_parse(doubled) is None


# --- hostile sites: every command ends in one line, never a traceback ---------------------

_DAY_ARCHIVE = build_day_archive(
    date(2018, 8, 30),
    [
        ArchiveItem(time_ms=1_535_651_040_000, chain=1, pulse=54610, pulse_bytes=RAW),
    ],
)
_HOSTILE_KEYS = [
    layout.LAST_KEY,
    layout.pulse_key(1, 1),
    layout.pulse_key(1, 2),
    layout.entropy_record_key(1, 1),
    layout.SITE_KEY,
    BOUNDS_KEY,
    hour_index_key(1_535_651_040_000),
    layout.archive_key(date(2018, 8, 30)),
]
_hostile_bytes = (
    st.binary(max_size=300)
    | st.sampled_from([RAW, RAW[:-30], _DAY_ARCHIVE, _DAY_ARCHIVE[:-9], b"{}", b"[]", b"null"])
    | st.builds(lambda n: b"[" * n, st.integers(1, 50_000))
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(objects=st.dictionaries(st.sampled_from(_HOSTILE_KEYS), _hostile_bytes, min_size=1))
def test_commands_on_hostile_sites_fail_cleanly(
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
    objects: dict[str, bytes],
) -> None:
    site = tmp_path_factory.mktemp("hostile")
    for key, data in objects.items():
        path = site / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    for args in (
        ["chain", str(site), "--to", "3"],
        ["chain", str(site), "--from", "1", "--to", "2", "--json"],
        ["time", str(site), "2018-08-30T17:44:00Z"],
        ["time", str(site), "1535651040000", "--previous", "--json"],
        ["skiplist", str(site), "1", "2", "--chain", "1"],
    ):
        code = main(args)
        out, err = capsys.readouterr()
        assert code in (0, 1, 3), (args, code, out, err)
        assert "Traceback" not in out + err
        assert len(err.strip().splitlines()) <= 1, err
        if "--json" in args:
            assert isinstance(json.loads(out)["ok"], bool)
