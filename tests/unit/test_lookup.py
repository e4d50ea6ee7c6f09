"""Fetching a pulse by time: NIST's answers from the index, and contradictory sites refused."""

from __future__ import annotations

import pytest
from beacon_verifier import layout
from beacon_verifier.errors import FetchError
from beacon_verifier.lookup import pulse_by_time
from beacon_verifier.timeindex import TimeEntry

from beacon.publish.indexes import build_indexes
from beacon.pulse.keys import Signer
from tests.unit.test_builder import MINUTE, build_chain, ms


class DictSource:
    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.gets: list[str] = []

    def describe(self) -> str:
        return "memory"

    def get(self, key: str, *, max_bytes: int = 1 << 20) -> bytes | None:
        self.gets.append(key)
        return self.objects.get(key)


@pytest.fixture(scope="module")
def site(signer: Signer) -> DictSource:
    # Three pulses, then a two-hour gap, then two more.
    start = ms("2026-01-01T10:58:00")
    times = [start, start + MINUTE, start + 2 * MINUTE]
    times += [start + 3 * 3_600_000, start + 3 * 3_600_000 + MINUTE]
    chain = build_chain(times, signer)
    objects = {layout.pulse_key(b.pulse.chain_index, b.pulse.pulse_index): b.data for b in chain}
    entries = [
        TimeEntry(time_ms=b.pulse.time_ms, chain=1, pulse=b.pulse.pulse_index) for b in chain
    ]
    objects.update(build_indexes(entries))
    return DictSource(objects)


@pytest.mark.parametrize(
    ("kind", "at", "expected"),
    [
        ("at_or_after", "2026-01-01T10:59:00", 2),  # exactly on a pulse
        ("at_or_after", "2026-01-01T10:59:30", 3),  # between pulses
        ("at_or_after", "2026-01-01T09:00:00", 1),  # before the first
        ("at_or_after", "2026-01-01T12:30:00", 4),  # inside the gap
        ("at_or_after", "2026-01-01T14:00:00", None),  # after the last
        ("previous", "2026-01-01T10:59:00", 1),
        ("previous", "2026-01-01T12:30:00", 3),
        ("previous", "2026-01-01T10:58:00", None),
        ("next", "2026-01-01T10:59:00", 3),
        ("next", "2026-01-01T13:58:00", 5),
        ("next", "2026-01-01T13:59:00", None),
    ],
)
def test_nist_answers_with_few_gets(
    site: DictSource, kind: str, at: str, expected: int | None
) -> None:
    site.gets.clear()
    pulse = pulse_by_time(site, kind, ms(at))  # type: ignore[arg-type]
    assert (None if pulse is None else pulse.pulse_index) == expected
    index_gets = [k for k in site.gets if "/index/" in k]
    assert len(index_gets) <= 2


def test_pulse_that_contradicts_the_index_is_refused(site: DictSource) -> None:
    swapped = dict(site.objects)
    swapped[layout.pulse_key(1, 2)] = site.objects[layout.pulse_key(1, 3)]
    with pytest.raises(FetchError, match="not the pulse 1/2"):
        pulse_by_time(DictSource(swapped), "at_or_after", ms("2026-01-01T10:59:00"))


def test_pulse_named_by_the_index_but_missing_is_a_fetch_error(site: DictSource) -> None:
    holed = {k: v for k, v in site.objects.items() if k != layout.pulse_key(1, 4)}
    with pytest.raises(FetchError, match="missing"):
        pulse_by_time(DictSource(holed), "next", ms("2026-01-01T11:30:00"))
