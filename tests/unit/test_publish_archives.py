"""Daily archives and PQ day archives: deterministic gzip JSON Lines that keep every
pulse's, record's and co-signature's exact bytes."""

from __future__ import annotations

import gzip
import json
from datetime import date
from pathlib import Path

import pytest
from beacon_verifier.archive import iter_day_archive, iter_pq_archive
from beacon_verifier.errors import FetchError
from hypothesis import given, settings
from hypothesis import strategies as st

from beacon.publish.archives import (
    ARCHIVE_CONTENT_TYPE,
    ArchiveItem,
    archive_key,
    build_day_archive,
    build_pq_archive,
    day_is_complete,
    day_of,
    day_start_ms,
    encode_day_lines,
    encode_pq_lines,
    pq_archive_key,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "nist"
DAY = date(2018, 8, 30)
T0 = day_start_ms(DAY)


def read_day_archive(
    data: bytes, *, max_bytes: int = 64 * 1024 * 1024
) -> list[tuple[bytes, bytes | None]]:
    """What the verifier's reader recovers: (pulse bytes, entropy bytes or None) per line."""
    return [
        (entry.pulse, entry.entropy) for entry in iter_day_archive([data], max_text_bytes=max_bytes)
    ]


def item(
    minute: int,
    pulse: int,
    *,
    chain: int = 1,
    entropy: bytes | None = b"{}",
    cosignature: bytes | None = None,
) -> ArchiveItem:
    return ArchiveItem(
        time_ms=T0 + minute * 60_000,
        chain=chain,
        pulse=pulse,
        pulse_bytes=b'{"pulse":{"pulseIndex":%d}}' % pulse,
        entropy_bytes=entropy,
        cosignature_bytes=cosignature,
    )


def test_keys_days_and_completeness() -> None:
    assert archive_key(DAY) == "beacon/2.0/archive/day/2018-08-30.jsonl.gz"
    assert pq_archive_key(DAY) == "beacon/2.0/archive/day/2018-08-30.pq.jsonl.gz"
    assert ARCHIVE_CONTENT_TYPE == "application/gzip"
    assert T0 == 1535587200000
    assert day_of(T0) == DAY
    assert day_of(T0 - 1) == date(2018, 8, 29)
    assert day_of(T0 + 86_399_999) == DAY
    assert not day_is_complete(DAY, T0 + 86_399_999)
    assert day_is_complete(DAY, T0 + 86_400_000)


def test_real_nist_pulses_keep_their_exact_bytes() -> None:
    raws = [(VECTORS / f"nist_c1_p{p}.json").read_bytes() for p in (54609, 54610)]
    items = [
        ArchiveItem(
            time_ms=T0 + (17 * 60 + 43 + i) * 60_000,
            chain=1,
            pulse=54609 + i,
            pulse_bytes=raw,
            entropy_bytes=None if i else '{"note":"ünïcode ✓"}'.encode(),
        )
        for i, raw in enumerate(raws)
    ]
    archive = build_day_archive(DAY, reversed(items))
    lines = gzip.decompress(archive).split(b"\n")
    assert lines[-1] == b"" and len(lines) == 3
    assert all(line.isascii() for line in lines)
    assert read_day_archive(archive) == [
        (raws[0], '{"note":"ünïcode ✓"}'.encode()),
        (raws[1], None),
    ]


def test_deterministic_and_fixed_header() -> None:
    items = [item(m, m + 1) for m in range(0, 1440, 7)]
    first = build_day_archive(DAY, items)
    assert build_day_archive(DAY, list(reversed(items))) == first
    assert (
        first[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    )  # no mtime, no name, OS unknown
    assert gzip.decompress(first) == encode_day_lines(items)
    assert encode_day_lines(items[:1]) == (
        b'{"pulse":"{\\"pulse\\":{\\"pulseIndex\\":1}}","entropy":"{}"}\n'
    )


def test_order_is_time_then_chain_then_pulse() -> None:
    items = [item(5, 1, chain=2), item(3, 40), item(5, 9, chain=1, entropy=None)]
    got = [p for p, _ in read_day_archive(build_day_archive(DAY, items))]
    assert got == [items[1].pulse_bytes, items[2].pulse_bytes, items[0].pulse_bytes]


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([], "empty day"),
        ([item(-1, 1)], "not on 2018-08-30"),
        ([item(1440, 1)], "not on 2018-08-30"),
        ([item(1, 1), item(2, 1)], "appears twice"),
    ],
)
def test_bad_days_are_refused(items: list[ArchiveItem], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_day_archive(DAY, items)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pulse_bytes": b""}, "non-empty"),
        ({"pulse_bytes": b"\xff"}, "not UTF-8"),
        ({"entropy_bytes": b"\xc3"}, "not UTF-8"),
        ({"chain": 0}, "chain"),
        ({"pulse": True}, "pulse"),
        ({"time_ms": -1}, "time_ms"),
    ],
)
def test_item_validation(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"time_ms": T0, "chain": 1, "pulse": 1, "pulse_bytes": b"{}"}
    fields.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ArchiveItem(**fields)  # type: ignore[arg-type]


@settings(max_examples=50, deadline=None)
@given(
    texts=st.lists(
        st.tuples(
            st.text(min_size=1, alphabet=st.characters(exclude_categories=["Cs"])),
            st.none() | st.text(min_size=1, alphabet=st.characters(exclude_categories=["Cs"])),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_any_utf8_round_trips_exactly(texts: list[tuple[str, str | None]]) -> None:
    items = [
        ArchiveItem(
            time_ms=T0 + i,
            chain=1,
            pulse=i + 1,
            pulse_bytes=p.encode(),
            entropy_bytes=None if e is None else e.encode(),
        )
        for i, (p, e) in enumerate(texts)
    ]
    expected = [(p.encode(), None if e is None else e.encode()) for p, e in texts]
    assert read_day_archive(build_day_archive(DAY, items)) == expected


@pytest.mark.parametrize(
    "data",
    [
        b"not gzip",
        gzip.compress(b'{"pulse":"x","entropy":null}\n')[:-3],
        gzip.compress(b'{"pulse":"x","entropy":null}\n') + b"junk",
        gzip.compress(b'{"pulse":"x","entropy":null}'),
        gzip.compress(b'{"pulse":"x"}\n'),
        gzip.compress(b'{"pulse":1,"entropy":null}\n'),
        gzip.compress(b'{"pulse":"\\ud800","entropy":null}\n'),
        gzip.compress(b"[\n"),
        gzip.compress(b"\n" * (2 * 1024 * 1024)),
    ],
)
def test_reader_rejects_malformed_archives(data: bytes) -> None:
    with pytest.raises(FetchError):
        read_day_archive(data, max_bytes=1024 * 1024)


def cosig(n: int) -> bytes:
    return b'{"keyId":"ab","signature":"%02X","version":1}' % n


def test_cosignatures_are_not_in_the_day_archive() -> None:
    signed = [item(m, m + 1, cosignature=cosig(m)) for m in range(5)]
    plain = [item(m, m + 1) for m in range(5)]
    assert build_day_archive(DAY, signed) == build_day_archive(DAY, plain)
    lines = [json.loads(line) for line in encode_day_lines(signed).splitlines()]
    assert all(set(line) == {"pulse", "entropy"} for line in lines)


def test_pq_archive_exact_lines_in_the_day_archives_order() -> None:
    items = [
        item(5, 1, chain=2, cosignature=cosig(3)),
        item(3, 9, cosignature=cosig(1)),
        item(4, 10),  # not co-signed: no line
        item(5, 40, cosignature='{"note":"ünïcode"}'.encode()),
    ]
    archive = build_pq_archive(DAY, items)
    assert archive is not None
    assert archive[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # as the day archive's
    assert (
        gzip.decompress(archive)
        == encode_pq_lines(items)
        == (
            b'{"chainIndex":1,"pqSignature":"{\\"keyId\\":\\"ab\\",\\"signature\\":\\"01\\",'
            b'\\"version\\":1}","pulseIndex":9}\n'
            b'{"chainIndex":1,"pqSignature":"{\\"note\\":\\"\\u00fcn\\u00efcode\\"}","pulseIndex":40}\n'
            b'{"chainIndex":2,"pqSignature":"{\\"keyId\\":\\"ab\\",\\"signature\\":\\"03\\",'
            b'\\"version\\":1}","pulseIndex":1}\n'
        )
    )
    assert [(e.chain, e.pulse, e.cosignature) for e in iter_pq_archive([archive])] == [
        (1, 9, cosig(1)),
        (1, 40, '{"note":"ünïcode"}'.encode()),
        (2, 1, cosig(3)),
    ]
    # The same pulses in the day archive: the same order.
    pulses = [e.pulse for e in iter_day_archive([build_day_archive(DAY, items)])]
    assert pulses == [items[i].pulse_bytes for i in (1, 2, 3, 0)]


def test_pq_archive_is_deterministic_and_only_for_co_signed_days() -> None:
    items = [item(m, m + 1, cosignature=cosig(m % 256)) for m in range(0, 1440, 7)]
    first = build_pq_archive(DAY, items)
    assert first is not None and build_pq_archive(DAY, list(reversed(items))) == first
    assert build_pq_archive(DAY, [item(1, 1), item(2, 2)]) is None
    with pytest.raises(ValueError, match="appears twice"):
        build_pq_archive(DAY, [item(1, 1, cosignature=cosig(1)), item(2, 1)])
    with pytest.raises(ValueError, match="not on 2018-08-30"):
        build_pq_archive(DAY, [item(1440, 1, cosignature=cosig(1))])
    with pytest.raises(ValueError, match="co-signature of pulse 1/1: not UTF-8"):
        item(1, 1, cosignature=b"\xff")
