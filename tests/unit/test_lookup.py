"""Fetching a pulse by time: NIST's answers from the index or, on a site without one,
from NIST's own time paths; contradictory sites refused."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from beacon_verifier import layout
from beacon_verifier.errors import FetchError
from beacon_verifier.format import Pulse, parse_pulse
from beacon_verifier.lookup import find_by_time, pulse_by_time
from beacon_verifier.timeindex import TimeEntry

from beacon.publish.indexes import build_indexes
from beacon.pulse.keys import Signer
from tests.conftest import NIST
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


# --- sites without a time index: NIST's REST time paths -----------------------------------

NIST_TIME = re.compile(r"beacon/2\.0/pulse/time/(?:(previous|next)/)?(\d+)\Z")


class NistRest(DictSource):
    """NIST's REST API over its three vector pulses: the time paths are computed,
    everything else is looked up (no index objects)."""

    def __init__(self, answer: Callable[[str | None, int], bytes | None] | None = None) -> None:
        raws = [(NIST / f"nist_c1_p{p}.json").read_bytes() for p in (1, 54609, 54610)]
        self.pulses = sorted((parse_pulse(r) for r in raws), key=lambda p: p.time_ms)
        super().__init__({layout.pulse_key(1, p.pulse_index): p.raw or b"" for p in self.pulses})
        self.objects[layout.LAST_KEY] = self.pulses[-1].raw or b""
        self.answer = answer or self.nist_answer

    def nist_answer(self, kind: str | None, t: int) -> bytes | None:
        found: list[Pulse]
        if kind is None:
            found = [p for p in self.pulses if p.time_ms >= t]
        elif kind == "previous":
            found = [p for p in self.pulses if p.time_ms < t][-1:]
        else:
            found = [p for p in self.pulses if p.time_ms > t]
        return found[0].raw if found else None

    def get(self, key: str, *, max_bytes: int = 1 << 20) -> bytes | None:
        self.gets.append(key)
        match = NIST_TIME.match(key)
        if match:
            return self.answer(match[1], int(match[2]))
        return self.objects.get(key)


P1, P54609, P54610 = ms("2018-07-23T19:26:00"), ms("2018-08-30T17:43:00"), ms("2018-08-30T17:44:00")


@pytest.mark.parametrize(
    ("kind", "t", "expected"),
    [
        ("at_or_after", P1 - 1, 1),
        ("at_or_after", P1, 1),
        ("at_or_after", P1 + 1, 54609),
        ("at_or_after", P54610 + 1, None),
        ("previous", P54609, 1),
        ("previous", P54609 + 1, 54609),
        ("previous", P1, None),
        ("next", P54609, 54610),
        ("next", P1 - 1, 1),
        ("next", P54610, None),
    ],
)
def test_without_an_index_nist_time_paths_answer(kind: str, t: int, expected: int | None) -> None:
    source = NistRest()
    pulse = pulse_by_time(source, kind, t)  # type: ignore[arg-type]
    assert (None if pulse is None else pulse.pulse_index) == expected
    # The hour object and bounds.json are asked for (absent), then NIST's paths:
    # pulse/last and pulse/time/{boundary} (previous: its own path first), and the
    # neighbour that proves the answer.
    assert "/index/" in source.gets[0] and source.gets[1].endswith("bounds.json")
    assert len(source.gets) <= 7, source.gets
    if kind != "previous" and expected is not None:
        boundary = -(-(t + (kind == "next")) // 60_000) * 60_000
        assert f"beacon/2.0/pulse/time/{boundary}" in source.gets


def test_a_time_path_that_breaks_the_query_is_refused_or_corrected() -> None:
    liar = NistRest(answer=lambda kind, t: (NIST / "nist_c1_p54610.json").read_bytes())
    with pytest.raises(FetchError, match=r"which is not before 2018-08-30T17:43:00\.000Z"):
        pulse_by_time(liar, "previous", P54609)
    assert pulse_by_time(liar, "previous", P54610 + 1) is not None
    # At or after a time just after pulse 1, the mirror answers 54610: pulse 54609,
    # before it and also after the time, is the answer; the path was wrong.
    answer = find_by_time(liar, "at_or_after", P1 + 1)
    assert answer.pulse is not None and answer.pulse.pulse_index == 54609
    assert answer.index_error is not None and "pulse/time" in answer.index_error
    assert answer.unproved is not None and "54608" in answer.unproved


def test_a_site_with_an_index_never_asks_the_time_paths(site: DictSource) -> None:
    site.gets.clear()
    assert pulse_by_time(site, "next", ms("2026-01-01T14:00:00")) is None
    assert not [k for k in site.gets if "/pulse/time/" in k]
