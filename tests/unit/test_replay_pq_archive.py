"""Replaying from daily archives with their PQ day archives: co-signatures come from the
PQ archive read in step with the day archive, else from their objects, and the counts
are those of the plain layout whatever the PQ archive lacks or breaks."""

from __future__ import annotations

import gzip
import json
from datetime import date
from pathlib import Path

import pytest
from beacon_verifier import layout, replay, report
from beacon_verifier.chain import ChainReport
from beacon_verifier.core import Policy
from beacon_verifier.fetch import LocalSource
from beacon_verifier.replay import replay_chain

from beacon.publish.archives import ArchiveItem, build_pq_archive
from beacon.pulse.builder import BuiltPulse
from beacon.pulse.keys import Signer
from tests.unit.test_builder import MINUTE
from tests.unit.test_replay import (
    THREE_DAYS,
    CountingSource,
    archive_item,
    build_records_chain,
    failures_of,
    write_site,
)

DAY1, DAY2 = date(2026, 3, 1), date(2026, 3, 2)
PULSES = len(THREE_DAYS)
#: Pulses 1-72 are on March 1, 73-144 on March 2, the rest on March 3 (no archive).
DAY1_PULSES = range(1, 73)


def items_of(chain: list[tuple[BuiltPulse, bytes]], day: date) -> list[ArchiveItem]:
    return [
        archive_item(built, rec)
        for built, rec in chain
        if layout.day_of(built.pulse.time_ms) == day
    ]


@pytest.fixture(scope="module")
def three_days(signer: Signer) -> list[tuple[BuiltPulse, bytes]]:
    return build_records_chain(THREE_DAYS, signer, period=20 * MINUTE)


@pytest.fixture
def cosigned(tmp_path: Path, three_days: list[tuple[BuiltPulse, bytes]], signer: Signer) -> Path:
    """The three days with every pulse's co-signature object, the PQ key document, and
    a PQ archive beside each day archive, as the beacon writes them."""
    assert signer.pq is not None
    root = write_site(tmp_path / "site", three_days, signer, cosignatures=True)
    for built, _ in three_days:
        assert built.cosignature is not None
        (root / layout.pq_signature_key(1, built.pulse.pulse_index)).parent.mkdir(
            parents=True, exist_ok=True
        )
        (root / layout.pq_signature_key(1, built.pulse.pulse_index)).write_bytes(built.cosignature)
    key = root / layout.pq_key_key(signer.pq.key_id.hex())
    key.parent.mkdir(parents=True)
    key.write_bytes(signer.pq.key_document)
    for day in (DAY1, DAY2):
        archive = build_pq_archive(day, items_of(three_days, day))
        assert archive is not None
        (root / layout.pq_archive_key(day)).write_bytes(archive)
    return root


def cosignature_gets(source: CountingSource) -> list[int]:
    return [int(k.rsplit("/", 1)[1]) for k in source.keys if "/pq-signature/" in k]


def pq_lines(root: Path, day: date) -> list[bytes]:
    return gzip.decompress((root / layout.pq_archive_key(day)).read_bytes()).splitlines(True)


def rewrite(root: Path, day: date, lines: list[bytes]) -> None:
    (root / layout.pq_archive_key(day)).write_bytes(gzip.compress(b"".join(lines)))


def same_report(a: ChainReport, b: ChainReport) -> bool:
    return report.report_as_dict(a) == report.report_as_dict(b)


def test_co_signatures_from_pq_archives_count_as_the_plain_layouts(cosigned: Path) -> None:
    plain = replay_chain(LocalSource(cosigned), archives=False, policy=Policy(require_pq=True))
    assert plain.ok and plain.pq_signatures == {"valid": PULSES}
    source = CountingSource(cosigned)
    report = replay_chain(source, policy=Policy(require_pq=True))
    assert same_report(report, plain)
    # Archived days: no co-signature object read; day 3 has no archives: all of its.
    assert cosignature_gets(source) == list(range(145, PULSES + 1))
    assert layout.pq_archive_key(DAY1) in source.keys


def test_without_pq_checks_the_pq_archive_is_never_fetched(cosigned: Path) -> None:
    source = CountingSource(cosigned)
    report = replay_chain(source, check_pq=False)
    assert report.ok and report.pq_signatures == {"not checked": PULSES}
    assert not [k for k in source.keys if "pq" in k]


def test_absent_pq_archive_co_signatures_come_from_objects(cosigned: Path) -> None:
    (cosigned / layout.pq_archive_key(DAY1)).unlink()
    source = CountingSource(cosigned)
    report = replay_chain(source, policy=Policy(require_pq=True))
    assert report.ok, failures_of(report)
    assert report.pq_signatures == {"valid": PULSES}
    assert cosignature_gets(source) == [*DAY1_PULSES, *range(145, PULSES + 1)]


def test_a_hole_in_the_pq_archive_is_filled_from_the_object(cosigned: Path) -> None:
    lines = pq_lines(cosigned, DAY1)
    rewrite(cosigned, DAY1, lines[:9] + lines[10:20] + lines[21:])  # pulses 10 and 21
    source = CountingSource(cosigned)
    report = replay_chain(source, policy=Policy(require_pq=True))
    assert report.ok, failures_of(report)
    assert report.pq_signatures == {"valid": PULSES}
    assert cosignature_gets(source)[:2] == [10, 21]
    assert len(cosignature_gets(source)) == 2 + PULSES - 144


def test_an_altered_co_signature_in_the_pq_archive_is_exactly_that_pulse_invalid(
    cosigned: Path,
) -> None:
    lines = pq_lines(cosigned, DAY2)
    line = json.loads(lines[5])  # pulse 78
    cosignature = json.loads(line["pqSignature"])
    cosignature["signature"] = ("0" if cosignature["signature"][0] != "0" else "1") + cosignature[
        "signature"
    ][1:]
    line["pqSignature"] = json.dumps(cosignature, sort_keys=True, separators=(",", ":"))
    lines[5] = json.dumps(line, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    rewrite(cosigned, DAY2, lines)
    report = replay_chain(LocalSource(cosigned))
    assert report.pq_signatures == {"valid": PULSES - 1, "invalid": 1}
    assert failures_of(report) == [(78, "pq signature")]
    assert replay_chain(LocalSource(cosigned), archives=False).ok  # the object is fine


@pytest.mark.parametrize(
    ("damage", "detail"),
    [
        (lambda data: data[: len(data) // 2], "pq archive 2026-03-01: truncated"),
        (lambda data: data + b"junk", "pq archive 2026-03-01: trailing data"),
        (lambda data: b"not gzip" + data, "pq archive 2026-03-01: not a gzip archive"),
    ],
)
def test_a_broken_pq_archive_is_one_archive_failure_and_objects_fill_in(
    cosigned: Path, damage: object, detail: str
) -> None:
    path = cosigned / layout.pq_archive_key(DAY1)
    path.write_bytes(damage(path.read_bytes()))  # type: ignore[operator]
    report = replay_chain(LocalSource(cosigned), policy=Policy(require_pq=True))
    assert [f.check for f in report.failures] == ["archive"]
    assert report.failures[0].detail.startswith(detail)
    assert report.pq_signatures == {"valid": PULSES}


def test_pq_lines_out_of_order_or_malformed_are_an_archive_failure(cosigned: Path) -> None:
    lines = pq_lines(cosigned, DAY1)
    # Pulse 30 again after pulse 40, with another chain's line between: only the
    # replay, which follows chain 1, can see it.
    other = b'{"chainIndex":2,"pqSignature":"{}","pulseIndex":1}\n'
    rewrite(cosigned, DAY1, [*lines[:40], other, lines[29], *lines[40:]])
    report = replay_chain(LocalSource(cosigned), policy=Policy(require_pq=True))
    assert failures_of(report) == [(41, "archive")]
    assert "pq archive 2026-03-01: line 42: pulse 1/30 after 1/40" in report.failures[0].detail
    assert report.pq_signatures == {"valid": PULSES}

    rewrite(cosigned, DAY1, [*lines[:3], b'{"chainIndex":1}\n', *lines[3:]])
    report = replay_chain(LocalSource(cosigned), policy=Policy(require_pq=True))
    assert failures_of(report) == [(4, "archive")]
    assert report.failures[0].detail.startswith("pq archive 2026-03-01: line 4: expected")
    assert report.pq_signatures == {"valid": PULSES}


def test_ranges_and_segments_give_the_plain_layouts_report(
    cosigned: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = pq_lines(cosigned, DAY1)
    rewrite(cosigned, DAY1, lines[:9] + lines[10:])  # a hole at pulse 10
    for first, last in ((5, 20), (10, 10), (60, 100), (72, 73), (100, PULSES)):
        plain = replay_chain(LocalSource(cosigned), first=first, last=last, archives=False)
        archived = replay_chain(LocalSource(cosigned), first=first, last=last)
        assert same_report(archived, plain), (first, last)
    whole = replay_chain(LocalSource(cosigned))
    monkeypatch.setattr(replay, "SEGMENT_PULSES", 20)  # one segment per day
    assert same_report(replay_chain(LocalSource(cosigned)), whole)
