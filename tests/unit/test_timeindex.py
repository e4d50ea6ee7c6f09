"""Time lookups from index objects: NIST's answers with at most two index GETs."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import pytest
from beacon_verifier.errors import FetchError
from beacon_verifier.timeindex import (
    BOUNDS_KEY,
    HOUR_MS,
    KINDS,
    MAX_INDEX_GETS,
    Bounds,
    HourIndex,
    Kind,
    TimeEntry,
    encode_bounds,
    encode_hour_index,
    hour_index_key,
    lookup,
    parse_bounds,
    parse_hour_index,
    resolve,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from beacon.publish.indexes import build_indexes

MINUTE = 60_000
DAY = 24 * HOUR_MS


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


class Store:
    """A dict of index objects whose ``get`` counts calls."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.gets: list[str] = []

    def get(self, key: str) -> bytes | None:
        self.gets.append(key)
        return self.objects.get(key)


def chain_of(times: Iterable[int], chain: int = 1, first: int = 1) -> list[TimeEntry]:
    return [TimeEntry(time_ms=t, chain=chain, pulse=first + i) for i, t in enumerate(times)]


def brute(kind: Kind, t: int, entries: list[TimeEntry]) -> TimeEntry | None:
    ordered = sorted(entries)
    if kind == "previous":
        before = [e for e in ordered if e.time_ms < t]
        return before[-1] if before else None
    if kind == "at_or_after":
        return next((e for e in ordered if e.time_ms >= t), None)
    return next((e for e in ordered if e.time_ms > t), None)


def check(entries: list[TimeEntry], store: Store, kind: Kind, t: int) -> TimeEntry | None:
    store.gets.clear()
    found = lookup(kind, t, store.get)
    assert found == brute(kind, t, entries), (kind, t)
    assert 1 <= len(store.gets) <= MAX_INDEX_GETS
    return found


# --- the format, pinned ------------------------------------------------------------


def test_hour_object_bytes_are_pinned() -> None:
    index = HourIndex(
        hour_start=ms("2018-08-30T17:00:00"),
        previous=TimeEntry(time_ms=ms("2018-08-30T16:59:00"), chain=1, pulse=54565),
        pulses=(
            TimeEntry(time_ms=ms("2018-08-30T17:43:00"), chain=1, pulse=54609),
            TimeEntry(time_ms=ms("2018-08-30T17:44:00"), chain=1, pulse=54610),
        ),
        next=None,
    )
    assert index.key == "beacon/2.0/index/hour/2018-08-30T17.json"
    assert encode_hour_index(index) == (
        b'{"version":1,"hourStart":1535648400000,"previous":[1535648340000,1,54565],'
        b'"pulses":[[1535650980000,1,54609],[1535651040000,1,54610]],"next":null}\n'
    )
    assert parse_hour_index(encode_hour_index(index), key=index.key) == index


def test_bounds_bytes_are_pinned() -> None:
    bounds = Bounds(
        first=TimeEntry(time_ms=1535648340000, chain=1, pulse=1),
        last=TimeEntry(time_ms=1535651040000, chain=2, pulse=7),
    )
    assert BOUNDS_KEY == "beacon/2.0/index/bounds.json"
    assert encode_bounds(bounds) == (
        b'{"version":1,"first":[1535648340000,1,1],"last":[1535651040000,2,7]}\n'
    )
    assert parse_bounds(encode_bounds(bounds)) == bounds


def test_hour_keys() -> None:
    assert hour_index_key(0) == "beacon/2.0/index/hour/1970-01-01T00.json"
    assert hour_index_key(ms("2026-11-21T16:35:12.345")) == (
        "beacon/2.0/index/hour/2026-11-21T16.json"
    )
    for bad in (-1, 253_402_300_800_000):
        with pytest.raises(ValueError):
            hour_index_key(bad)


# --- lookups -------------------------------------------------------------------------


def test_nothing_published_yet() -> None:
    store = Store({})
    for kind in KINDS:
        store.gets.clear()
        assert lookup(kind, ms("2026-01-01T00:00:00"), store.get) is None
        assert store.gets == [hour_index_key(ms("2026-01-01T00:00:00")), BOUNDS_KEY]


def test_nist_example_and_lookups_within_an_hour() -> None:
    entries = chain_of([ms("2018-08-30T17:42:00") + i * MINUTE for i in range(3)], first=54608)
    store = Store(build_indexes(entries))
    # NIST: t = 17:43:13.225 gives the 17:44:00 pulse.
    found = check(entries, store, "at_or_after", ms("2018-08-30T17:43:13.225"))
    assert found is not None and (found.pulse, found.time_ms) == (54610, ms("2018-08-30T17:44"))
    assert len(store.gets) == 1
    at = ms("2018-08-30T17:43:00")
    assert resolve("at_or_after", at, store.get) == (1, 54609)  # exactly at a pulse
    assert resolve("previous", at, store.get) == (1, 54608)
    assert resolve("next", at, store.get) == (1, 54610)
    for kind in KINDS:
        for t in (at - 1, at, at + 1, at + MINUTE, at + 2 * MINUTE, at - MINUTE):
            check(entries, store, kind, t)
            assert len(store.gets) == 1  # inside the published hours: one GET


def test_before_the_first_and_after_the_last_pulse() -> None:
    entries = chain_of([ms("2026-11-21T16:00:00"), ms("2026-11-21T16:01:00")])
    store = Store(build_indexes(entries))
    early, late = ms("2026-11-21T14:59:59.999"), ms("2026-11-21T19:00:00")
    assert check(entries, store, "at_or_after", early) == entries[0]
    assert check(entries, store, "next", early) == entries[0]
    assert check(entries, store, "previous", early) is None
    assert len(store.gets) == 2
    assert check(entries, store, "previous", late) == entries[1]
    assert check(entries, store, "at_or_after", late) is None
    assert check(entries, store, "next", late) is None
    assert len(store.gets) == 2
    # Same hour as the first pulse, before it: the hour object answers.
    assert check(entries, store, "previous", ms("2026-11-21T16:00:00")) is None
    assert check(entries, store, "at_or_after", ms("2026-11-21T16:00:00")) == entries[0]
    assert len(store.gets) == 1
    # After the last pulse in its own hour: nothing yet (its next is null).
    assert check(entries, store, "at_or_after", ms("2026-11-21T16:59:00")) is None
    assert check(entries, store, "previous", ms("2026-11-21T16:59:00")) == entries[1]


def test_across_a_multi_hour_gap() -> None:
    entries = chain_of(
        [ms("2026-11-21T16:58:00"), ms("2026-11-21T16:59:00"), ms("2026-11-21T20:05:00")]
    )
    store = Store(build_indexes(entries))
    assert store.objects.keys() >= {hour_index_key(ms(f"2026-11-21T{h}:00")) for h in (17, 18, 19)}
    for t in (
        ms("2026-11-21T16:59:30"),
        ms("2026-11-21T17:00:00"),
        ms("2026-11-21T18:30:00"),
        ms("2026-11-21T19:59:59.999"),
        ms("2026-11-21T20:00:00"),
        ms("2026-11-21T20:05:00"),
    ):
        for kind in KINDS:
            check(entries, store, kind, t)
            assert len(store.gets) == 1
    assert resolve("at_or_after", ms("2026-11-21T18:30"), store.get) == (1, 3)
    assert resolve("previous", ms("2026-11-21T18:30"), store.get) == (1, 2)
    assert resolve("previous", ms("2026-11-21T20:05"), store.get) == (1, 2)


def test_across_a_multi_day_gap_and_a_new_chain() -> None:
    entries = [
        *chain_of([ms("2026-11-21T23:58:00"), ms("2026-11-21T23:59:00")], chain=1, first=500),
        *chain_of([ms("2026-11-25T00:03:00"), ms("2026-11-25T00:04:00")], chain=2),
    ]
    store = Store(build_indexes(entries))
    for t in (
        ms("2026-11-22T00:00:00"),
        ms("2026-11-23T12:00:00"),
        ms("2026-11-24T23:59:59.999"),
        ms("2026-11-25T00:00:00"),
        ms("2026-11-25T00:03:00"),
        ms("2026-11-25T00:03:30"),
    ):
        for kind in KINDS:
            check(entries, store, kind, t)
            assert len(store.gets) == 1
    assert resolve("at_or_after", ms("2026-11-23T12:00"), store.get) == (2, 1)
    assert resolve("previous", ms("2026-11-23T12:00"), store.get) == (1, 501)
    assert resolve("next", ms("2026-11-21T23:59"), store.get) == (2, 1)


def test_times_that_no_hour_object_can_cover() -> None:
    entries = chain_of([ms("2026-11-21T16:00:00")])
    store = Store(build_indexes(entries))
    for t in (-5, -HOUR_MS * 1000, 10**15, 10**20):
        for kind in KINDS:
            check(entries, store, kind, t)


def test_unknown_kind_and_non_int_time() -> None:
    with pytest.raises(ValueError, match="kind"):
        lookup("nearest", 0, Store({}).get)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="t_ms"):
        lookup("next", 1.5, Store({}).get)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="t_ms"):
        lookup("next", True, Store({}).get)


def test_missing_hour_inside_the_bounds_is_reported() -> None:
    entries = chain_of([ms("2026-11-21T16:00:00"), ms("2026-11-21T19:00:00")])
    objects = build_indexes(entries)
    del objects[hour_index_key(ms("2026-11-21T17:30:00"))]
    with pytest.raises(FetchError, match="incomplete"):
        lookup("previous", ms("2026-11-21T17:30:00"), Store(objects).get)


def test_get_errors_pass_through() -> None:
    def failing(key: str) -> bytes | None:
        raise FetchError(f"cannot fetch {key}")

    with pytest.raises(FetchError, match="cannot fetch"):
        lookup("next", 0, failing)


# --- malformed index objects -------------------------------------------------------------

HOUR = ms("2026-11-21T16:00:00")
GOOD = (
    f'{{"version":1,"hourStart":{HOUR},"previous":null,'
    f'"pulses":[[{HOUR},1,1],[{HOUR + MINUTE},1,2]],"next":null}}'
)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[]", "not a JSON object"),
        (b'{"version":2}', "unsupported version"),
        (b'{"version":true}', "unsupported version"),
        (GOOD.replace('"next":null', '"next":NaN').encode(), "NaN"),
        (GOOD.replace('"previous":null,', "").encode(), "'previous' is missing"),
        (GOOD.replace('"version":1', '"version":1,"version":1').encode(), "twice"),
        (GOOD.replace('"pulses":[[', '"pulses":"x","more":[[').encode(), "must be a list"),
        (GOOD.replace('"pulses":[', '"pulses":{"a":').replace("]]", "]}").encode(), "JSON"),
        (GOOD.replace(",1,2]", ",1,1]").encode(), "do not increase"),
        (GOOD.replace('"next":null', f'"next":[{HOUR + HOUR_MS},1,2]').encode(), "do not increase"),
        (GOOD.replace(f"[{HOUR + MINUTE},", f"[{HOUR},").encode(), "do not increase"),
        (
            GOOD.replace(
                f"[[{HOUR},1,1],[{HOUR + MINUTE},1,2]]", f"[[{HOUR + MINUTE},2,1],[{HOUR},1,1]]"
            ).encode(),
            "strictly increasing",
        ),
        (GOOD.replace(",1,2]", ",true,2]").encode(), "integer"),
        (GOOD.replace(",1,2]", ",1,2.0]").encode(), "integer"),
        (GOOD.replace(",1,2]", ",0,2]").encode(), "chain"),
        (GOOD.replace(",1,2]", ",1,2,3]").encode(), "unixMs, chainIndex, pulseIndex"),
        (GOOD.replace(f"[{HOUR + MINUTE},", f"[{HOUR + HOUR_MS},").encode(), "outside"),
        (GOOD.replace('"previous":null', f'"previous":[{HOUR},1,1]').encode(), "not before"),
        (GOOD.replace('"next":null', f'"next":[{HOUR + MINUTE},1,9]').encode(), "not after"),
        (GOOD.replace(f'"hourStart":{HOUR}', f'"hourStart":{HOUR + 1}').encode(), "start"),
        (GOOD.replace(",1,2]", "," + "9" * 5000 + ",2]").encode(), "acceptable"),
        (b"[" * 100_000, "acceptable"),
    ],
)
def test_malformed_hour_objects_raise_fetch_error(data: bytes, message: str) -> None:
    key = hour_index_key(HOUR)
    assert parse_hour_index(GOOD.encode(), key=key).pulses  # the template is good
    with pytest.raises(FetchError, match=message) as caught:
        lookup("at_or_after", HOUR, Store({key: data}).get)
    assert key in str(caught.value)


def test_hour_object_for_another_hour_is_refused() -> None:
    key = hour_index_key(HOUR + HOUR_MS)
    with pytest.raises(FetchError, match="not the hour asked for"):
        lookup("at_or_after", HOUR + HOUR_MS, Store({key: GOOD.encode()}).get)


@pytest.mark.parametrize(
    "data",
    [
        b"{}",
        b'{"version":1,"first":[1,1,1]}',
        b'{"version":1,"first":[5,1,1],"last":[4,1,1]}',
        b'{"version":1,"first":[-1,1,1],"last":[4,1,1]}',
        b'{"version":1,"first":null,"last":[4,1,1]}',
    ],
)
def test_malformed_bounds_raise_fetch_error(data: bytes) -> None:
    with pytest.raises(FetchError, match=r"bounds\.json"):
        lookup("previous", 0, Store({BOUNDS_KEY: data}).get)


def test_parse_functions_never_raise_anything_but_fetch_error() -> None:
    for data in (b"\x00", b"{", b'{"version":1,"hourStart":"x"}', b'"s"', b"1e999"):
        with pytest.raises(FetchError):
            parse_hour_index(data, key="k")
        with pytest.raises(FetchError):
            parse_bounds(data)


# --- property: same answers as brute force, never more than two GETs -----------------------

BASE = ms("2026-11-21T15:47:00")
gaps = st.one_of(
    st.just(MINUTE),
    st.integers(1, 2 * MINUTE),
    st.integers(HOUR_MS - MINUTE, 5 * HOUR_MS),
    st.integers(DAY - HOUR_MS, 3 * DAY),
)


@st.composite
def pulse_sets(draw: Callable[..., object]) -> list[TimeEntry]:
    steps = draw(st.lists(gaps, max_size=25))
    assert isinstance(steps, list)
    start = draw(st.integers(0, DAY))
    assert isinstance(start, int)
    chain, pulse, t = 1, 1, BASE + start
    entries = []
    for i in range(len(steps) + 1):
        entries.append(TimeEntry(time_ms=t, chain=chain, pulse=pulse))
        if i < len(steps):
            t += steps[i]
            if draw(st.integers(0, 9)) == 0:
                chain, pulse = chain + 1, 1
            else:
                pulse += 1
    return entries


@st.composite
def queries(draw: Callable[..., object], entries: list[TimeEntry]) -> int:
    around = st.sampled_from([e.time_ms for e in entries]).flatmap(
        lambda t: st.integers(t - 2, t + 2) | st.integers(t - HOUR_MS, t + HOUR_MS)
    )
    wide = st.integers(entries[0].time_ms - 3 * DAY, entries[-1].time_ms + 3 * DAY)
    value = draw(around | wide)
    assert isinstance(value, int)
    return value


@settings(max_examples=150, deadline=None)
@given(data=st.data(), entries=pulse_sets())
def test_matches_brute_force_with_at_most_two_gets(
    data: st.DataObject, entries: list[TimeEntry]
) -> None:
    store = Store(build_indexes(entries))
    for _ in range(12):
        t = data.draw(queries(entries))
        kind = data.draw(st.sampled_from(KINDS))
        check(entries, store, kind, t)
