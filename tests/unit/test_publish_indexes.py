"""Planning time-index writes: incremental = from scratch, crash-safe order, idempotent."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import pytest
from beacon_verifier.timeindex import (
    BOUNDS_KEY,
    HOUR_MS,
    KINDS,
    MAX_INDEX_GETS,
    TimeEntry,
    hour_index_key,
    lookup,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from beacon.errors import PublishError
from beacon.publish.indexes import build_indexes, plan_index_update, update_indexes
from beacon.publish.local import LocalDirPublisher

MINUTE = 60_000
DAY = 24 * HOUR_MS


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def entry(text: str, pulse: int, chain: int = 1) -> TimeEntry:
    return TimeEntry(time_ms=ms(text), chain=chain, pulse=pulse)


def apply(store: dict[str, bytes], new: TimeEntry) -> list[tuple[str, bytes]]:
    writes = plan_index_update(new, store.get)
    store.update(writes)
    return writes


def brute(kind: str, t: int, entries: list[TimeEntry]) -> TimeEntry | None:
    if kind == "previous":
        before = [e for e in entries if e.time_ms < t]
        return before[-1] if before else None
    if kind == "at_or_after":
        return next((e for e in entries if e.time_ms >= t), None)
    return next((e for e in entries if e.time_ms > t), None)


def test_first_pulse_writes_its_hour_then_the_bounds() -> None:
    store: dict[str, bytes] = {}
    first = entry("2026-11-21T16:35:00", 1)
    writes = apply(store, first)
    assert [key for key, _ in writes] == [
        "beacon/2.0/index/hour/2026-11-21T16.json",
        BOUNDS_KEY,
    ]
    assert store[BOUNDS_KEY] == (
        b'{"version":1,"first":[%d,1,1],"last":[%d,1,1]}\n' % (first.time_ms, first.time_ms)
    )


def test_a_gap_writes_bridges_then_closes_the_old_hour_then_the_bounds() -> None:
    store: dict[str, bytes] = {}
    apply(store, entry("2026-11-21T16:59:00", 1))
    writes = apply(store, entry("2026-11-21T20:01:00", 2))
    assert [key for key, _ in writes] == [
        hour_index_key(ms("2026-11-21T20:00")),
        hour_index_key(ms("2026-11-21T17:00")),
        hour_index_key(ms("2026-11-21T18:00")),
        hour_index_key(ms("2026-11-21T19:00")),
        hour_index_key(ms("2026-11-21T16:00")),
        BOUNDS_KEY,
    ]
    # The next pulse in the same hour touches only that hour and the bounds.
    writes = apply(store, entry("2026-11-21T20:02:00", 3))
    assert [key for key, _ in writes] == [hour_index_key(ms("2026-11-21T20:00")), BOUNDS_KEY]


def test_replanning_an_indexed_pulse_writes_nothing() -> None:
    store: dict[str, bytes] = {}
    pulses = [entry("2026-11-21T16:59:00", 1), entry("2026-11-22T03:00:00", 2)]
    for p in pulses:
        apply(store, p)
    for p in pulses:
        assert plan_index_update(p, store.get) == []


def test_out_of_order_pulse_is_refused() -> None:
    store: dict[str, bytes] = {}
    apply(store, entry("2026-11-21T16:59:00", 2))
    with pytest.raises(PublishError, match="not after the last indexed pulse"):
        plan_index_update(entry("2026-11-21T16:58:00", 1), store.get)


def test_malformed_or_inconsistent_stored_index_is_a_publish_error() -> None:
    store: dict[str, bytes] = {}
    apply(store, entry("2026-11-21T16:59:00", 1))
    broken = dict(store)
    broken[BOUNDS_KEY] = b"{not json"
    with pytest.raises(PublishError, match=r"bounds\.json"):
        plan_index_update(entry("2026-11-21T17:00:00", 2), broken.get)

    missing_hour = dict(store)
    del missing_hour[hour_index_key(ms("2026-11-21T16:00"))]
    with pytest.raises(PublishError, match="inconsistent"):
        plan_index_update(entry("2026-11-21T18:00:00", 2), missing_hour.get)
    with pytest.raises(PublishError, match="inconsistent"):
        plan_index_update(entry("2026-11-21T16:59:30", 2), missing_hour.get)


def test_get_errors_pass_through() -> None:
    def failing(key: str) -> bytes | None:
        raise PublishError(f"store down reading {key}")

    with pytest.raises(PublishError, match="store down"):
        plan_index_update(entry("2026-11-21T16:59:00", 1), failing)


def test_update_through_a_local_publisher_and_resolve_from_files(tmp_path: Path) -> None:
    pub = LocalDirPublisher(tmp_path)
    pulses = [
        entry("2026-11-21T23:58:00", 1),
        entry("2026-11-21T23:59:00", 2),
        entry("2026-11-24T00:01:00", 1, chain=2),
    ]
    counts = [update_indexes(pub, p) for p in pulses]
    assert counts == [2, 2, 2 + 48 + 1]
    assert update_indexes(pub, pulses[-1]) == 0
    assert (tmp_path / "beacon/2.0/index/hour/2026-11-23T12.json").is_file()
    assert lookup("next", ms("2026-11-22T12:00"), pub.get) == pulses[2]
    assert lookup("previous", ms("2026-11-24T00:01"), pub.get) == pulses[1]


# --- properties -------------------------------------------------------------------

gaps = st.one_of(
    st.integers(1, 2 * MINUTE),
    st.integers(HOUR_MS - MINUTE, 4 * HOUR_MS),
    st.integers(DAY - HOUR_MS, 2 * DAY),
)


@st.composite
def pulse_sequences(draw: Callable[..., object]) -> list[TimeEntry]:
    steps = draw(st.lists(gaps, min_size=1, max_size=12))
    assert isinstance(steps, list)
    t = ms("2026-11-21T15:30:00")
    chain, pulse = 1, 1
    out = [TimeEntry(time_ms=t, chain=chain, pulse=pulse)]
    for step in steps:
        t += step
        if draw(st.booleans()) and draw(st.booleans()) and draw(st.booleans()):
            chain, pulse = chain + 1, 1
        else:
            pulse += 1
        out.append(TimeEntry(time_ms=t, chain=chain, pulse=pulse))
    return out


@settings(max_examples=60, deadline=None)
@given(pulses=pulse_sequences())
def test_incremental_equals_from_scratch(pulses: list[TimeEntry]) -> None:
    store: dict[str, bytes] = {}
    for p in pulses:
        apply(store, p)
    assert store == build_indexes(pulses)
    assert build_indexes(reversed(pulses)) == store


def probe_times(entries: list[TimeEntry]) -> list[int]:
    times = {entries[0].time_ms - DAY, entries[-1].time_ms + DAY}
    for e in entries:
        times |= {e.time_ms - 1, e.time_ms, e.time_ms + 1, e.time_ms + HOUR_MS}
    for a, b in pairwise(entries):
        times.add((a.time_ms + b.time_ms) // 2)
    return sorted(times)


@settings(max_examples=40, deadline=None)
@given(pulses=pulse_sequences(), data=st.data())
def test_every_intermediate_state_answers_old_or_new_and_a_crash_resumes(
    pulses: list[TimeEntry], data: st.DataObject
) -> None:
    store: dict[str, bytes] = {}
    for p in pulses[:-1]:
        apply(store, p)
    new = pulses[-1]
    writes = plan_index_update(new, store.get)
    probes = probe_times(pulses)
    for done in range(len(writes) + 1):
        state = dict(store)
        state.update(writes[:done])
        # A reader at any moment gets the answer before or after this pulse, never an error.
        for t in probes:
            for kind in KINDS:
                gets: list[str] = []

                def get(
                    key: str, state: dict[str, bytes] = state, gets: list[str] = gets
                ) -> bytes | None:
                    gets.append(key)
                    return state.get(key)

                found = lookup(kind, t, get)
                assert found in (brute(kind, t, pulses[:-1]), brute(kind, t, pulses))
                assert len(gets) <= MAX_INDEX_GETS
        # A crash after `done` writes: planning again finishes the job.
        resumed = dict(state)
        resumed.update(plan_index_update(new, resumed.get))
        assert resumed == build_indexes(pulses)
    store.update(writes)
    assert plan_index_update(new, store.get) == []
