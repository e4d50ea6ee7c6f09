"""The verifier's readers of day archives and PQ day archives against archives built by
the beacon's writer: exact bytes back, streamed in pieces, and every malformed archive
refused in one line."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from beacon_verifier.archive import (
    MAX_PQ_LINE_BYTES,
    ArchiveEntry,
    PqEntry,
    _Bad,
    _day_entry,
    _pq_fields,
    _quick_day_fields,
    iter_day_archive,
    iter_pq_archive,
)
from beacon_verifier.errors import FetchError, PulseFormatError
from beacon_verifier.format import emit_pulse, parse_pulse
from hypothesis import given, settings
from hypothesis import strategies as st

from beacon.publish.archives import (
    ArchiveItem,
    build_day_archive,
    build_pq_archive,
    day_start_ms,
)

DAY = date(2018, 8, 30)
T0 = day_start_ms(DAY)
VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "nist"
NIST_RAW = [(VECTORS / f"nist_c1_p{p}.json").read_bytes() for p in (54609, 54610)]

no_surrogates = st.characters(exclude_categories=["Cs"])


def archive_of(pairs: list[tuple[bytes, bytes | None]]) -> bytes:
    items = [
        ArchiveItem(time_ms=T0 + i, chain=1, pulse=i + 1, pulse_bytes=p, entropy_bytes=e)
        for i, (p, e) in enumerate(pairs)
    ]
    return build_day_archive(DAY, items)


def read(data: bytes, **kwargs: int) -> list[tuple[bytes, bytes | None]]:
    return [(e.pulse, e.entropy) for e in iter_day_archive([data], name="archive x", **kwargs)]


def test_real_pulses_come_back_byte_for_byte() -> None:
    record = '{"note":"ünïcode ✓ \\" \\n"}'.encode()
    pairs = [(NIST_RAW[0], record), (NIST_RAW[1], None)]
    assert read(archive_of(pairs)) == pairs


COSIG = b'{"keyId":"ab","signature":"CD","version":1}'


def test_co_signatures_go_to_the_pq_archive_and_come_back_from_it() -> None:
    items = [
        ArchiveItem(time_ms=T0, chain=1, pulse=7, pulse_bytes=NIST_RAW[0], cosignature_bytes=COSIG),
        ArchiveItem(time_ms=T0 + 1, chain=1, pulse=8, pulse_bytes=NIST_RAW[1]),
        ArchiveItem(
            time_ms=T0 + 2, chain=2, pulse=1, pulse_bytes=NIST_RAW[1], cosignature_bytes=b"\xc3\xa9"
        ),
    ]
    day = list(iter_day_archive([build_day_archive(DAY, items)]))
    assert [e.pulse for e in day] == [NIST_RAW[0], NIST_RAW[1], NIST_RAW[1]]
    assert [e.entropy for e in day] == [None, None, None]
    pq = build_pq_archive(DAY, items)
    assert pq is not None
    assert list(iter_pq_archive([pq], name="pq archive x")) == [
        PqEntry(line=1, chain=1, pulse=7, cosignature=COSIG),
        PqEntry(line=2, chain=2, pulse=1, cosignature="é".encode()),
    ]
    pieces = [pq[i : i + 7] for i in range(0, len(pq), 7)]
    assert [e.cosignature for e in iter_pq_archive(pieces)] == [COSIG, "é".encode()]


@settings(max_examples=60, deadline=None)
@given(
    texts=st.lists(
        st.tuples(
            st.text(min_size=1, alphabet=no_surrogates),
            st.none() | st.text(min_size=1, alphabet=no_surrogates),
        ),
        min_size=1,
        max_size=6,
    ),
    cut=st.integers(1, 97),
)
def test_any_text_round_trips_in_any_pieces(texts: list[tuple[str, str | None]], cut: int) -> None:
    pairs = [(p.encode(), None if e is None else e.encode()) for p, e in texts]
    data = archive_of(pairs)
    pieces = [data[i : i + cut] for i in range(0, len(data), cut)]
    entries = list(iter_day_archive(pieces))
    assert [(e.pulse, e.entropy) for e in entries] == pairs
    assert [e.line for e in entries] == list(range(1, len(pairs) + 1))


@settings(max_examples=200, deadline=None)
@given(
    pulse=st.text(min_size=1, alphabet=no_surrogates),
    entropy=st.none() | st.text(alphabet=no_surrogates),
    ensure_ascii=st.booleans(),
    compact=st.booleans(),
)
def test_the_quick_line_reader_agrees_with_json(
    pulse: str, entropy: str | None, ensure_ascii: bool, compact: bool
) -> None:
    separators = (",", ":") if compact else (", ", ": ")
    line = json.dumps(
        {"pulse": pulse, "entropy": entropy}, ensure_ascii=ensure_ascii, separators=separators
    )
    expected = (pulse.encode(), None if entropy is None else entropy.encode())
    entry = _day_entry(1, line.encode())
    assert (entry.pulse, entry.entropy) == expected
    # The writer's compact shape takes the quick path; any other, the strict decoder.
    assert _quick_day_fields(line) == ((pulse, entropy) if compact else None)


def _line(pulse: bytes, record: bytes | str | None, *, ensure_ascii: bool = True) -> bytes:
    """A day archive line as the writer shapes it (``record`` may be text a writer
    would never have: any string)."""
    entropy = record.decode() if isinstance(record, bytes) else record
    value = {"pulse": pulse.decode(), "entropy": entropy}
    return json.dumps(value, separators=(",", ":"), ensure_ascii=ensure_ascii).encode()


def _agrees_with_json(line: bytes) -> ArchiveEntry:
    """``_day_entry`` reads exactly what JSON reads, and its pulse is ``parse_pulse``'s."""
    obj = json.loads(line)
    entry = _day_entry(1, line)
    assert entry.pulse == obj["pulse"].encode()
    assert entry.entropy == (None if obj["entropy"] is None else obj["entropy"].encode())
    if entry.parsed is not None:
        assert entry.parsed == parse_pulse(entry.pulse)
        assert entry.parsed.time_ms == parse_pulse(entry.pulse).time_ms
        assert entry.parsed.raw is None  # made only as entry.pulse, when asked for
    return entry


@pytest.mark.parametrize("pulse", NIST_RAW + [emit_pulse(parse_pulse(r)) for r in NIST_RAW])
def test_lines_in_the_writers_shape_are_read_with_their_pulse(pulse: bytes) -> None:
    for record in (b'{"chainIndex":1,"source":"os-fallback"}', None, b""):
        assert _agrees_with_json(_line(pulse, record)).parsed is not None


_HEX = json.loads(NIST_RAW[0])["pulse"]["outputValue"]


@pytest.mark.parametrize(
    "value",
    [
        _HEX[:126] + '"',  # the text of each of these is 128 characters
        _HEX[:126] + "\\",
        _HEX[:125] + '"A',
        _HEX[:126] + "\n",
        _HEX[:127] + "g",
        _HEX[:126] + "  ",
    ],
)
@pytest.mark.parametrize("where", ["outputValue", "link", "external"])
def test_a_hash_that_is_not_hex_is_left_to_the_strict_path(value: str, where: str) -> None:
    doc = json.loads(NIST_RAW[0])
    if where == "link":
        doc["pulse"]["listValues"][2]["value"] = value
    elif where == "external":
        doc["pulse"]["external"]["value"] = value
    else:
        doc["pulse"][where] = value
    entry = _agrees_with_json(_line(json.dumps(doc, indent=2).encode(), None))
    assert entry.parsed is None
    with pytest.raises(PulseFormatError):
        parse_pulse(entry.pulse)


def test_signatures_of_any_length_are_read_with_their_pulse() -> None:
    # The escaped reader looks first for RSA-4096's 1024 digits before an escaped
    # quote, then for a run up to it; 1024 bytes may end at a later quote.
    doc = json.loads(NIST_RAW[0])
    signature = doc["pulse"]["signatureValue"] * 4
    for length in [2, 256, 512, *range(960, 1040, 2), 2048, 4096]:
        doc["pulse"]["signatureValue"] = signature[:length]
        entry = _agrees_with_json(_line(json.dumps(doc, indent=2).encode(), None))
        assert entry.parsed is not None, length


@pytest.mark.parametrize("raw", [b"\x01", b"\t", b"\x1f", b"\x7f", b"\xc3\xa9", b"\\", b'"'])
@pytest.mark.parametrize("into", ["record", "pulse"])
def test_raw_bytes_in_a_line_are_read_as_json_reads_them(raw: bytes, into: str) -> None:
    line = _line(NIST_RAW[0], b'{"source":"os-fallback"}')
    at = line.index(b"os-fallback") if into == "record" else line.index(b"Version")
    line = line[:at] + raw + line[at:]
    try:
        json.loads(line)
    except ValueError:
        with pytest.raises(_Bad):
            _day_entry(1, line)
        return
    _agrees_with_json(line)


@settings(max_examples=300, deadline=None)
@given(
    record=st.none() | st.text(alphabet=st.characters(max_codepoint=0x7F)) | st.text(max_size=8),
    ensure_ascii=st.booleans(),
    where=st.integers(0, len(NIST_RAW[0])),
    insert=st.sampled_from([b"", b"\\", b'"', b"\t", b"\n", b"\x00", b"\xc3\xa9", b" ", b"0"]),
)
def test_the_escaped_pulse_reader_agrees_with_json(
    record: str | None, ensure_ascii: bool, where: int, insert: bytes
) -> None:
    pulse = NIST_RAW[0][:where] + insert + NIST_RAW[0][where:]
    try:
        line = _line(pulse, record, ensure_ascii=ensure_ascii)
    except UnicodeDecodeError:
        return  # not text: no writer puts it in a line
    _agrees_with_json(line)


@settings(max_examples=200, deadline=None)
@given(
    chain=st.integers(1, 2**64 - 1),
    cosignature=st.text(alphabet=no_surrogates),
    pulse=st.integers(1, 2**64 - 1),
    ensure_ascii=st.booleans(),
    compact=st.booleans(),
)
def test_the_quick_pq_line_reader_agrees_with_json(
    chain: int, cosignature: str, pulse: int, ensure_ascii: bool, compact: bool
) -> None:
    obj = {"chainIndex": chain, "pqSignature": cosignature, "pulseIndex": pulse}
    separators = (",", ":") if compact else (", ", ": ")
    line = json.dumps(obj, ensure_ascii=ensure_ascii, separators=separators, sort_keys=True)
    assert _pq_fields(line, line.encode()) == (chain, cosignature, pulse)


def test_entries_stream_before_the_archive_is_read() -> None:
    pairs = [(b'{"pulse":%d}' % i, None) for i in range(20_000)]
    data = archive_of(pairs)
    consumed = []

    def pieces() -> Iterator[bytes]:
        for i in range(0, len(data), 1024):
            consumed.append(i)
            yield data[i : i + 1024]

    entries = iter_day_archive(pieces())
    first = next(entries)
    assert (first.line, first.pulse, first.entropy) == (1, b'{"pulse":0}', None)
    assert len(consumed) < len(data) // 1024 // 4  # far from all of it


def _gz(text: bytes) -> bytes:
    return gzip.compress(text)


LINE = b'{"pulse":"x","entropy":null}\n'


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not gzip at all", "not a gzip archive"),
        (zlib.compress(LINE), "not a gzip archive"),  # zlib, not gzip
        (_gz(LINE)[:-3], "truncated"),
        (_gz(LINE)[:12], "truncated"),
        (b"", "truncated"),
        (_gz(LINE) + b"junk", "trailing data"),
        (_gz(LINE) + _gz(LINE), "trailing data"),  # a second member
        (_gz(LINE.rstrip(b"\n")), "does not end with a newline"),
        (_gz(b""), "no pulses"),
        (_gz(b"\n"), "line 1: not JSON"),
        (_gz(b'{"pulse":"x"}\n'), "line 1: expected"),
        (_gz(b'{"pulse":1,"entropy":null}\n'), "line 1: expected"),
        (_gz(b'{"pulse":"x","entropy":null,"more":1}\n'), "line 1: expected"),
        (_gz(b'{"pulse":"x","entropy":null,"pqSignature":null}\n'), "line 1: expected"),
        # Co-signatures have their own archive now: a day archive line with one is refused.
        (_gz(b'{"pulse":"x","entropy":null,"pqSignature":"{}"}\n'), "line 1: expected"),
        (_gz(b'["x",null]\n'), "line 1: expected"),
        (_gz(b'{"pulse":"x","pulse":"y","entropy":null}\n'), "appears twice"),
        (_gz(b'{"pulse":"x","entropy":NaN}\n'), "NaN is not allowed"),
        (_gz(b'{"pulse":"\\ud800","entropy":null}\n'), "lone surrogate"),
        (_gz(b'{"pulse":"","entropy":null}\n'), "empty pulse"),
        (_gz(b'{"pulse":"\xff","entropy":null}\n'), "not UTF-8"),
        (_gz(LINE + b"[" * 100_000 + b"\n"), "line 2: not JSON"),
        (_gz(b'{"pulse":"x","entropy":"\x01"}\n'), "line 1: not JSON"),  # raw control char
    ],
)
def test_malformed_archives_are_refused_in_one_line(data: bytes, message: str) -> None:
    with pytest.raises(FetchError, match=message) as info:
        read(data)
    assert str(info.value).startswith("archive x: ")
    assert "\n" not in str(info.value)


def test_size_limits() -> None:
    long_line = b'{"pulse":"' + b"a" * 5000 + b'","entropy":null}\n'
    with pytest.raises(FetchError, match="line 2 is longer than 1000 bytes"):
        read(_gz(LINE + long_line), max_line_bytes=1000)
    with pytest.raises(FetchError, match="line 1 is longer than 1000 bytes"):
        read(_gz(b"a" * 5000), max_line_bytes=1000)  # no newline at all
    bomb = _gz(LINE * 100_000)  # 2.9 MB of text in ~9 KB
    assert len(bomb) < 20_000
    with pytest.raises(FetchError, match="larger than 1000000 bytes uncompressed"):
        read(bomb, max_text_bytes=1_000_000)
    huge_pulse = json.dumps({"pulse": "x" * 70_000, "entropy": None}).encode() + b"\n"
    with pytest.raises(FetchError, match="pulse larger than 65536 bytes"):
        read(_gz(huge_pulse))
    huge_record = json.dumps({"pulse": "x", "entropy": "y" * 70_000}).encode() + b"\n"
    with pytest.raises(FetchError, match="entropy record larger than 65536 bytes"):
        read(_gz(huge_record))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_corrupted_archives_fail_cleanly(data: st.DataObject) -> None:
    good = archive_of([(NIST_RAW[0], b"{}"), (NIST_RAW[1], None)])
    mutated = bytearray(good)
    for _ in range(data.draw(st.integers(1, 4))):
        mutated[data.draw(st.integers(0, len(good) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(mutated)))
    try:
        entries = read(bytes(mutated[:cut]))
    except FetchError as exc:
        assert "\n" not in str(exc)
    else:
        assert all(isinstance(p, bytes) and p for p, _ in entries)


def _pq_gz(*lines: bytes) -> bytes:
    return gzip.compress(b"".join(line + b"\n" for line in lines))


def pq_line(chain: int, pulse: int, cosignature: str = "{}") -> bytes:
    obj = {"chainIndex": chain, "pqSignature": cosignature, "pulseIndex": pulse}
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not gzip at all", "not a gzip archive"),
        (_pq_gz(pq_line(1, 1))[:-3], "truncated"),
        (_pq_gz(pq_line(1, 1)) + b"junk", "trailing data"),
        (_pq_gz(pq_line(1, 1)) + _pq_gz(pq_line(1, 2)), "trailing data"),
        (gzip.compress(pq_line(1, 1)), "does not end with a newline"),
        (gzip.compress(b""), "no co-signatures"),
        (_pq_gz(b"{"), "line 1: not JSON"),
        (_pq_gz(pq_line(1, 1), b'{"chainIndex":1,"pulseIndex":2}'), "line 2: expected"),
        (_pq_gz(b'{"chainIndex":1,"pqSignature":null,"pulseIndex":2}'), "line 1: expected"),
        (_pq_gz(b'{"chainIndex":1,"pqSignature":"{}","pulseIndex":2,"x":1}'), "line 1: expected"),
        (_pq_gz(b'{"chainIndex":1,"pqSignature":"{}","pulseIndex":"2"}'), "line 1: chainIndex"),
        (_pq_gz(b'{"chainIndex":true,"pqSignature":"{}","pulseIndex":2}'), "line 1: chainIndex"),
        (_pq_gz(b'{"chainIndex":1,"pqSignature":"{}","pulseIndex":0}'), "line 1: chainIndex"),
        (_pq_gz(b'{"chainIndex":1,"pqSignature":"{}","pulseIndex":2.0}'), "line 1: chainIndex"),
        (_pq_gz(pq_line(1, 2**64)), "line 1: chainIndex"),
        (_pq_gz(pq_line(1, 1, "")), "line 1: empty co-signature"),
        (_pq_gz(pq_line(1, 1, "\ud800")), "line 1: the co-signature holds a lone surrogate"),
        (_pq_gz(pq_line(1, 1, "a" * 17_000)), "line 1: co-signature larger than 16384 bytes"),
        (_pq_gz(b'{"chainIndex":1,"pqSignature":"\x01","pulseIndex":2}'), "line 1: not JSON"),
        (_pq_gz(pq_line(1, 5), pq_line(1, 5)), "line 2: pulse 1/5 after pulse 1/5: not in"),
        (_pq_gz(pq_line(1, 5), pq_line(1, 6), pq_line(1, 4)), "line 3: pulse 1/4 after pulse 1/6"),
        (_pq_gz(pq_line(1, 1), b"x" * (MAX_PQ_LINE_BYTES + 1)), "line 2 is longer than"),
    ],
)
def test_malformed_pq_archives_are_refused_in_one_line(data: bytes, message: str) -> None:
    with pytest.raises(FetchError, match=message) as info:
        list(iter_pq_archive([data], name="pq archive x"))
    assert str(info.value).startswith("pq archive x: ")
    assert "\n" not in str(info.value)


def test_pq_archive_of_a_day_without_co_signatures_is_none() -> None:
    items = [ArchiveItem(time_ms=T0, chain=1, pulse=1, pulse_bytes=NIST_RAW[0])]
    assert build_pq_archive(DAY, items) is None


def test_pq_archive_lines_stream_and_other_chains_may_come_between() -> None:
    lines = [pq_line(1, p) for p in range(1, 3000)] + [pq_line(2, 1), pq_line(1, 3000)]
    data = _pq_gz(*lines)
    entries = iter_pq_archive([data[i : i + 512] for i in range(0, len(data), 512)])
    assert next(entries) == PqEntry(line=1, chain=1, pulse=1, cosignature=b"{}")
    assert [(e.chain, e.pulse) for e in entries][-2:] == [(2, 1), (1, 3000)]
