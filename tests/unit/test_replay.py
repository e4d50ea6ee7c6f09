"""Chain replay from a site: entropy records, missing pulses, tampering, daily archives,
and segments checked apart then joined (what --jobs does) giving the report of one pass."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import random
from collections.abc import Callable, Iterable, Iterator
from datetime import date
from pathlib import Path

import pytest
from beacon_verifier import layout
from beacon_verifier.chain import ChainReport, ChainVerifier
from beacon_verifier.chainread import read_chain
from beacon_verifier.checks import TrustedCertificate
from beacon_verifier.cli import main
from beacon_verifier.core import Policy
from beacon_verifier.descriptor import Promise, SiteDescriptor, encode_descriptor
from beacon_verifier.fetch import LocalSource
from beacon_verifier.format import External, ListValue, Pulse, canonical_json, parse_pulse
from beacon_verifier.replay import replay_chain
from beacon_verifier.timeindex import TimeEntry
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beacon.config import Settings
from beacon.entropy.os_source import OsSource
from beacon.entropy.record import fallback_record
from beacon.publish.archives import ArchiveItem, build_day_archive
from beacon.publish.indexes import build_indexes
from beacon.publish.local import LocalDirPublisher
from beacon.pulse.builder import BuiltPulse, build_pulse
from beacon.pulse.keys import Signer
from beacon.service import Beacon
from tests.beacon_proc import replay
from tests.unit.test_builder import MINUTE, ms
from tests.unit.test_service import FakeClock, wait_prepared

T0 = 1_800_000_000_000


@pytest.fixture
def site(tmp_path: Path, signer: Signer) -> Path:
    settings = Settings(data_dir=tmp_path / "data", out_dir=tmp_path / "site")
    clock = FakeClock(T0)
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
        wait_prepared(beacon)
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

    from beacon_verifier.entropyrecord import check_entropy_record
    from beacon_verifier.errors import ChainError
    from beacon_verifier.format import parse_pulse

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


# --- sites laid out by the beacon's own pieces: objects, index, daily archives ------------

BASE_URL = "https://beacon.example"


def record(n: int) -> bytes:
    """The entropy record of pulse n + 1 (an os-fallback record with stand-in OS bits)."""
    return canonical_json(
        fallback_record(
            chain_index=1,
            pulse_index=n + 1,
            reason="test",
            os_bits=hashlib.sha512(b"os %d" % n).digest(),
        )
    )


def build_records_chain(
    times: Iterable[int],
    signer: Signer,
    *,
    period: int = MINUTE,
    external: Callable[[int], External] | None = None,
) -> list[tuple[BuiltPulse, bytes]]:
    """Pulses at ``times`` whose localRandomValue is SHA-512 of their entropy record;
    pulse ``n`` carries ``external(n)`` when given."""
    out: list[tuple[BuiltPulse, bytes]] = []
    head = None
    for n, t in enumerate(times):
        built = build_pulse(
            head,
            time_ms=t,
            period_ms=period,
            local_random_value=hashlib.sha512(record(n)).digest(),
            next_local_random_value=hashlib.sha512(record(n + 1)).digest(),
            signer=signer,
            base_url=BASE_URL,
            external=None if external is None else external(n),
        )
        out.append((built, record(n)))
        head = built.head
    return out


def archive_item(built: BuiltPulse, record: bytes, pulse_bytes: bytes | None = None) -> ArchiveItem:
    """The archive item of pulse ``built`` of chain 1, with its entropy ``record`` and its
    co-signature (a day line leaves that out); ``pulse_bytes`` instead of its own bytes."""
    return ArchiveItem(
        time_ms=built.pulse.time_ms,
        chain=1,
        pulse=built.pulse.pulse_index,
        pulse_bytes=built.data if pulse_bytes is None else pulse_bytes,
        entropy_bytes=record,
        cosignature_bytes=built.cosignature,
    )


def write_site(
    root: Path,
    chain: list[tuple[BuiltPulse, bytes]],
    signer: Signer,
    *,
    archives: bool = True,
    cosignatures: bool = False,
) -> Path:
    """Lay ``chain`` out as the beacon publishes it: pulse and entropy objects, the
    certificate, the ``last`` pointers, the time index, (with ``archives``) a daily
    archive of every complete UTC day, and the site descriptor promising the entropy
    records (and ``cosignatures``, which the caller writes)."""

    def put(key: str, data: bytes) -> None:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    for built, rec in chain:
        put(layout.pulse_key(1, built.pulse.pulse_index), built.data)
        put(layout.entropy_record_key(1, built.pulse.pulse_index), rec)
    last = chain[-1][0].data
    for key in (layout.LAST_KEY, layout.CHAIN_LAST_LAST_KEY, layout.chain_last_key(1)):
        put(key, last)
    put(layout.certificate_key(signer.certificate_id.hex()), signer.certificate_pem)
    promise = Promise(1, chain[0][0].pulse.pulse_index)
    descriptor = SiteDescriptor(
        entropy_records=promise,
        cosignatures=promise if cosignatures else None,
        daily_archives=archives,
    )
    put(layout.SITE_KEY, encode_descriptor(descriptor))
    entries = [
        TimeEntry(time_ms=b.pulse.time_ms, chain=1, pulse=b.pulse.pulse_index) for b, _ in chain
    ]
    for key, data in build_indexes(entries).items():
        put(key, data)
    if archives:
        last_day = layout.day_of(chain[-1][0].pulse.time_ms)
        days: dict[date, list[ArchiveItem]] = {}
        for built, rec in chain:
            day = layout.day_of(built.pulse.time_ms)
            if day < last_day:
                days.setdefault(day, []).append(archive_item(built, rec))
        for day, items in days.items():
            put(layout.archive_key(day), build_day_archive(day, items))
    return root


class CountingSource(LocalSource):
    """A local site that remembers which keys were read."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.keys: list[str] = []

    def get(self, key: str, *, max_bytes: int = 8 << 20) -> bytes | None:
        self.keys.append(key)
        return super().get(key, max_bytes=max_bytes)

    def stream(self, key: str, *, max_bytes: int) -> Iterator[bytes] | None:
        self.keys.append(key)
        return super().stream(key, max_bytes=max_bytes)


# Three days of pulses every 20 minutes: two complete days have archives.
THREE_DAYS = [ms("2026-03-01T00:00:00") + i * 20 * MINUTE for i in range(3 * 72 - 5)]


@pytest.fixture(scope="module")
def three_days(signer: Signer) -> list[tuple[BuiltPulse, bytes]]:
    return build_records_chain(THREE_DAYS, signer, period=20 * MINUTE)


@pytest.fixture
def archived(tmp_path: Path, three_days: list[tuple[BuiltPulse, bytes]], signer: Signer) -> Path:
    return write_site(tmp_path / "site", three_days, signer)


def failures_of(report: ChainReport) -> list[tuple[int | None, str]]:
    return [(f.pulse_index, f.check) for f in report.failures]


def test_archives_replace_objects_for_complete_days(archived: Path) -> None:
    source = CountingSource(archived)
    report = replay_chain(source)
    assert report.ok, failures_of(report)
    assert report.pulses_checked == len(THREE_DAYS)
    assert report.source_kinds == {"os-fallback": len(THREE_DAYS)}
    objects = {k for k in source.keys if "/chain/1/pulse/" in k or "/entropy/" in k}
    archives = [k for k in source.keys if "/archive/" in k]
    # Days 1 and 2 come from their archives (no PQ archive is asked for: the site does
    # not promise co-signatures); day 3 (not complete) pulse by pulse.
    assert archives == [
        layout.archive_key(date(2026, 3, 1)),
        layout.archive_key(date(2026, 3, 2)),
        layout.archive_key(date(2026, 3, 3)),
    ]
    day3 = [b for b in range(1, len(THREE_DAYS) + 1) if b > 144]
    assert objects == {layout.pulse_key(1, 1)} | {
        k for p in day3 for k in (layout.pulse_key(1, p), layout.entropy_record_key(1, p))
    }


def test_without_pq_checks_no_cosignature_is_read(archived: Path) -> None:
    checked = CountingSource(archived)
    # Not promised: not fetched (no probing), and said.
    unpromised = replay_chain(checked, archives=False)
    assert unpromised.pq_signatures == {"not checked": len(THREE_DAYS)}
    assert not [k for k in checked.keys if "/pq-signature/" in k]
    # Required: fetched, and their absence fails.
    required = replay_chain(checked, archives=False, policy=Policy(require_pq=True))
    assert required.pq_signatures == {"missing": len(THREE_DAYS)} and not required.ok
    assert [k for k in checked.keys if "/pq-signature/" in k]
    source = CountingSource(archived)
    report = replay_chain(source, archives=False, check_pq=False)
    assert report.ok
    assert report.pq_signatures == {"not checked": len(THREE_DAYS)}
    assert not [k for k in source.keys if "/pq-signature/" in k]
    with pytest.raises(ValueError, match="require_pq"):
        replay_chain(source, check_pq=False, policy=Policy(require_pq=True))


def test_without_archives_every_object_is_read(archived: Path) -> None:
    source = CountingSource(archived)
    report = replay_chain(source, archives=False)
    assert report.ok
    assert not [k for k in source.keys if "/archive/" in k]
    assert layout.pulse_key(1, 100) in source.keys


def test_a_broken_archive_is_reported_and_its_day_read_from_objects(archived: Path) -> None:
    path = archived / layout.archive_key(date(2026, 3, 1))
    path.write_bytes(path.read_bytes()[:-40])
    report = replay_chain(LocalSource(archived))
    # Pulses before the damage were read (and verified) as the archive streamed in.
    ((index, check),) = failures_of(report)
    assert check == "archive" and 1 < index <= 72
    assert "archive 2026-03-01" in report.failures[0].detail
    assert "truncated" in report.failures[0].detail
    assert report.pulses_checked == len(THREE_DAYS) and not report.missing


def test_an_archive_lacking_a_pulse_the_site_has_is_reported(
    archived: Path, three_days: list[tuple[BuiltPulse, bytes]]
) -> None:
    day = date(2026, 3, 2)
    items = [
        archive_item(b, r)
        for b, r in three_days
        if layout.day_of(b.pulse.time_ms) == day and b.pulse.pulse_index != 100
    ]
    (archived / layout.archive_key(day)).write_bytes(build_day_archive(day, items))
    report = replay_chain(LocalSource(archived))
    assert failures_of(report) == [(100, "archive")]
    assert "lacks pulse 100" in report.failures[0].detail
    assert report.pulses_checked == len(THREE_DAYS)


def test_a_pulse_altered_in_an_archive_fails_its_checks(
    archived: Path, three_days: list[tuple[BuiltPulse, bytes]]
) -> None:
    day = date(2026, 3, 1)
    items = []
    for b, r in three_days:
        if layout.day_of(b.pulse.time_ms) != day:
            continue
        data = b.data
        if b.pulse.pulse_index == 30:
            data = data.replace(
                b'"statusCode": 0,\n    "signatureValue"', b'"statusCode": 2,\n    "signatureValue"'
            )
            assert data != b.data
        items.append(archive_item(b, r, data))
    (archived / layout.archive_key(day)).write_bytes(build_day_archive(day, items))
    checks = {c for i, c in failures_of(replay_chain(LocalSource(archived))) if i == 30}
    assert {"signature", "outputValue", "statusCode"} <= checks
    assert replay_chain(LocalSource(archived), archives=False).ok  # the objects are fine


def test_an_archive_with_another_days_pulse_is_refused(
    archived: Path, three_days: list[tuple[BuiltPulse, bytes]]
) -> None:
    day = date(2026, 3, 1)
    b, r = three_days[150]  # a pulse of March 2
    items = [
        ArchiveItem(
            time_ms=day_start(day),
            chain=1,
            pulse=b.pulse.pulse_index,
            pulse_bytes=b.data,
            entropy_bytes=r,
        )
    ]
    (archived / layout.archive_key(day)).write_bytes(build_day_archive(day, items))
    report = replay_chain(LocalSource(archived))
    assert failures_of(report) == [(1, "archive")]
    assert "is not of that day" in report.failures[0].detail
    assert report.pulses_checked == len(THREE_DAYS)


def day_start(day: date) -> int:
    return layout.day_start_ms(day)


def test_oversized_objects_are_failures_not_crashes(archived: Path) -> None:
    (archived / layout.pulse_key(1, 150)).write_bytes(b" " * 70_000)
    (archived / layout.entropy_record_key(1, 160)).write_bytes(b" " * 70_000)
    report = replay_chain(LocalSource(archived), archives=False)
    assert failures_of(report) == [(150, "format"), (160, "entropy record")]
    assert "larger than 65536 bytes" in report.failures[0].detail


def test_read_chain_marks_missing_pulses(archived: Path) -> None:
    (archived / layout.pulse_key(1, 200)).unlink()
    slots = list(read_chain(LocalSource(archived), 1, 195, 205))
    assert [(s.index, s.missing) for s in slots] == [(i, i == 200) for i in range(195, 206)]


def test_time_range_and_json_report(archived: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "chain",
            str(archived),
            "--from",
            "2026-03-02T00:00:00Z",
            "--to",
            "2026-03-02T05:59:59Z",
            "--json",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    assert (report["firstIndex"], report["lastIndex"], report["pulsesChecked"]) == (73, 90, 18)
    assert report["failureCount"] == 0 and report["missingCount"] == 0
    assert main(["chain", str(archived), "--from", "2027-01-01T00:00:00Z"]) == 3
    assert "no pulse at or after 2027-01-01" in capsys.readouterr().err
    assert main(["chain", str(archived), "--from", "9", "--to", "3"]) == 2
    assert main(["chain", str(archived), "--to", "2026-03-01T00:00:00"]) == 2  # no zone


# --- checking in segments gives the report of one pass ------------------------------------

# Pulses around hour, day, month and year boundaries, with gaps across them.
BOUNDARIES = [
    ms(t)
    for t in [
        "2026-12-31T22:57:00",
        "2026-12-31T22:58:00",
        "2026-12-31T22:59:00",
        "2026-12-31T23:00:00",
        "2026-12-31T23:01:00",
        "2026-12-31T23:58:00",
        "2026-12-31T23:59:00",
        "2027-01-01T00:00:00",
        "2027-01-01T00:01:00",
        "2027-01-01T00:59:00",
        "2027-01-01T01:00:00",
        "2027-01-01T01:01:00",
        "2027-01-01T03:00:00",
        "2027-01-31T23:59:00",
        "2027-02-01T00:00:00",
        "2027-02-01T00:01:00",
        "2027-02-01T00:02:00",
        "2027-02-02T00:00:00",
        "2027-02-02T00:01:00",
        "2028-01-01T00:00:00",
        "2028-01-01T00:01:00",
        "2028-01-01T01:00:00",
    ]
]


@pytest.fixture(scope="module")
def boundary_pulses(other_signer: Signer) -> list[Pulse]:
    return [parse_pulse(b.data) for b, _ in build_records_chain(BOUNDARIES, other_signer)]


def _flip(value: bytes) -> bytes:
    return bytes([value[0] ^ 1]) + value[1:]


def _tamper(pulse: Pulse, what: int) -> Pulse:
    if what < 5:  # one link
        links = list(pulse.list_values)
        links[what] = ListValue(
            uri=links[what].uri, type=links[what].type, value=_flip(links[what].value)
        )
        return dataclasses.replace(pulse, list_values=tuple(links))
    if what == 5:
        return dataclasses.replace(pulse, output_value=_flip(pulse.output_value))
    return dataclasses.replace(pulse, status_code=pulse.status_code ^ 2)


def _one_pass(
    pulses: list[Pulse | None], lookup: Callable[[bytes], TrustedCertificate | None]
) -> ChainReport:
    verifier = ChainVerifier(certificates=lookup)
    for i, pulse in enumerate(pulses, 1):
        if pulse is None:
            verifier.missing(i, i)
        else:
            verifier.add(pulse)
    return verifier.report


def _in_segments(
    pulses: list[Pulse | None],
    cuts: list[int],
    lookup: Callable[[bytes], TrustedCertificate | None],
) -> ChainReport:
    joined = ChainVerifier(certificates=lookup)
    bounds = [0, *sorted(set(cuts)), len(pulses)]
    for lo, hi in itertools.pairwise(bounds):
        part = ChainVerifier.for_segment(lookup)
        for i in range(lo, hi):
            pulse = pulses[i]
            if pulse is None:
                part.missing(i + 1, i + 1)
            else:
                part.add(pulse)
        joined.join(part.segment())
    return joined.report


def _summary(report: ChainReport) -> tuple[object, ...]:
    return (
        sorted((f.pulse_index or 0, f.describe()) for f in report.failures),
        report.pulses_checked,
        report.gaps,
        report.certificate_changes,
        report.missing,
        report.missing_count,
        report.first_index,
        report.last_index,
        report.variants,
        report.signatures_unverifiable,
        report.failure_count,
    )


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cuts=st.lists(st.integers(1, len(BOUNDARIES) - 1), max_size=6),
    tampered=st.dictionaries(st.integers(0, len(BOUNDARIES) - 1), st.integers(0, 6), max_size=3),
    missing=st.sets(st.integers(0, len(BOUNDARIES) - 1), max_size=3),
)
def test_segments_joined_equal_one_pass(
    boundary_pulses: list[Pulse],
    cert_lookup: Callable[[bytes], TrustedCertificate | None],
    cuts: list[int],
    tampered: dict[int, int],
    missing: set[int],
) -> None:
    pulses: list[Pulse | None] = [
        None if i in missing else _tamper(p, tampered[i]) if i in tampered else p
        for i, p in enumerate(boundary_pulses)
    ]
    one = _one_pass(pulses, cert_lookup)
    assert _summary(_in_segments(pulses, cuts, cert_lookup)) == _summary(one)
    if not tampered and not missing:
        assert one.ok


def test_the_untampered_boundary_chain_has_every_link_checked(
    boundary_pulses: list[Pulse], cert_lookup: Callable[[bytes], TrustedCertificate | None]
) -> None:
    # A wrong year link at 2028-01-01T00:01 (pointing to 2027's first pulse) is caught
    # even when the segment starts right there, two pulses after the link's target.
    pulses: list[Pulse | None] = list(boundary_pulses)
    pulses[20] = _tamper(boundary_pulses[20], 4)
    for cuts in ([], [20], [19], [7, 20]):
        report = _in_segments(pulses, cuts, cert_lookup)
        assert "year link" in {f.check for f in report.failures if f.pulse_index == 21}, cuts


def test_random_cuts_on_a_real_site(archived: Path) -> None:
    rng = random.Random(6)
    whole = replay_chain(LocalSource(archived))
    for _ in range(3):
        lo = rng.randrange(1, 100)
        hi = rng.randrange(lo, len(THREE_DAYS))
        part = replay_chain(LocalSource(archived), first=lo, last=hi)
        assert part.ok and part.pulses_checked == hi - lo + 1
    assert whole.ok
