"""The tick with an injected clock: boundaries, clock going backwards, gaps, chain end,
and disclosed fallback when the entropy source fails or is late."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import pytest
from beacon_verifier import layout
from beacon_verifier.format import parse_pulse

from beacon.config import Settings
from beacon.entropy import EntropyDraw
from beacon.entropy.os_source import OsSource
from beacon.errors import EntropyError, StateError, TransientPublishError
from beacon.publish import Publisher
from beacon.publish.local import LocalDirPublisher
from beacon.pulse.keys import Signer
from beacon.service import Beacon
from beacon.state import State
from tests.beacon_proc import replay

T0 = 1_800_000_000_000  # 2027-01-15T08:00:00Z, a minute boundary


class FakeClock:
    def __init__(self, now_ms: int) -> None:
        self.now = now_ms

    def now_ms(self) -> int:
        return self.now

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        self.now += max(0, round(seconds * 1000))


class FailingSource:
    name = "broken-qpu"

    def draw(self, chain_index: int, pulse_index: int) -> EntropyDraw:
        raise EntropyError("backend offline")


class SlowSource:
    """Answers pulse 1 at once; blocks on later pulses until released (a late job)."""

    name = "slow-qpu"

    def __init__(self) -> None:
        self.release = threading.Event()

    def draw(self, chain_index: int, pulse_index: int) -> EntropyDraw:
        if pulse_index > 1:
            self.release.wait(timeout=10)
        return OsSource(f"slow source answered {pulse_index}").draw(chain_index, pulse_index)


class Flaky(LocalDirPublisher):
    """A local store that refuses every create while ``down``, as a store outage."""

    down = False

    def put_immutable(self, key: str, data: bytes, *, content_type: str) -> None:
        if self.down:
            raise TransientPublishError("connection refused")
        super().put_immutable(key, data, content_type=content_type)


def make(
    tmp_path: Path,
    signer: Signer,
    clock: FakeClock,
    source: object = None,
    publisher: Publisher | None = None,
) -> Beacon:
    settings = Settings(data_dir=tmp_path / "data", out_dir=tmp_path / "site", period=60)
    beacon = Beacon(
        settings=settings,
        signer=signer,
        clock=clock,
        source=source or OsSource("configured"),  # type: ignore[arg-type]
        fallback=OsSource,
        publisher=publisher or LocalDirPublisher(settings.out_dir),
    )
    beacon.lease.try_acquire()  # a beacon signs only while it holds the lease
    return beacon


def wait_prepared(beacon: Beacon) -> None:
    beacon.prefetcher.wait(timeout=10)


def drain(beacon: Beacon) -> None:
    beacon.start_background() if beacon.publication.thread is None else None
    beacon.shutdown()


def pulses(tmp_path: Path) -> list[dict[str, object]]:
    site = tmp_path / "site"
    last = parse_pulse((site / layout.LAST_KEY).read_bytes())
    return [
        json.loads((site / layout.pulse_key(1, p)).read_bytes())["pulse"]
        for p in range(1, last.pulse_index + 1)
    ]


def test_timestamps_are_nominal_boundaries(tmp_path: Path, signer: Signer) -> None:
    clock = FakeClock(T0 + 250)  # the tick runs 250 ms late
    beacon = make(tmp_path, signer, clock)
    beacon.prime()
    for i in range(3):
        clock.now = T0 + i * 60_000 + 250 + i * 7
        wait_prepared(beacon)
        assert beacon.tick()
    drain(beacon)
    stamps = [p["timeStamp"] for p in pulses(tmp_path)]
    assert stamps == [
        "2027-01-15T08:00:00.000Z",
        "2027-01-15T08:01:00.000Z",
        "2027-01-15T08:02:00.000Z",
    ]
    assert replay(tmp_path / "site").ok


def test_clock_going_backwards_makes_it_wait(tmp_path: Path, signer: Signer) -> None:
    clock = FakeClock(T0)
    beacon = make(tmp_path, signer, clock)
    beacon.prime()
    assert beacon.tick()
    wait_prepared(beacon)
    clock.now = T0 - 5 * 60_000  # stepped back five minutes
    assert not beacon.tick()
    clock.now = T0 + 30_000  # same boundary as the last pulse
    assert not beacon.tick()
    clock.now = T0 + 60_000
    assert beacon.tick()
    drain(beacon)
    assert [p["pulseIndex"] for p in pulses(tmp_path)] == [1, 2]
    assert replay(tmp_path / "site").ok


def test_restart_after_downtime_marks_gap_and_opens_commitment(
    tmp_path: Path, signer: Signer
) -> None:
    clock = FakeClock(T0)
    beacon = make(tmp_path, signer, clock)
    beacon.prime()
    beacon.tick()
    wait_prepared(beacon)
    clock.now = T0 + 60_000
    beacon.tick()
    drain(beacon)
    clock.now = T0 + 10 * 60_000  # down for eight periods
    again = make(tmp_path, signer, clock)
    again.prime()
    assert again.tick()
    drain(again)
    third = pulses(tmp_path)[2]
    assert third["statusCode"] == 2  # gap, and the stored precommitment opened
    assert replay(tmp_path / "site").ok


def test_failed_source_falls_back_and_says_so(tmp_path: Path, signer: Signer) -> None:
    clock = FakeClock(T0)
    beacon = make(tmp_path, signer, clock, FailingSource())
    beacon.prime()
    for i in range(3):
        clock.now = T0 + i * 60_000
        wait_prepared(beacon)
        beacon.tick()
    drain(beacon)
    site = tmp_path / "site"
    record = json.loads((site / layout.entropy_record_key(1, 2)).read_bytes())
    assert record["source"] == "os-fallback"
    assert "broken-qpu: backend offline" in record["reason"]
    status = json.loads((site / "status.json").read_bytes())
    assert status["fallbacks"] >= 3 and "backend offline" in status["lastFallbackReason"]
    assert replay(site).source_kinds == {"os-fallback": 3}


def test_late_entropy_job_never_delays_the_tick(tmp_path: Path, signer: Signer) -> None:
    clock = FakeClock(T0)
    slow = SlowSource()
    beacon = make(tmp_path, signer, clock, slow)
    beacon.prime()  # pulse 1 drawn now; the job for pulse 2 blocks in the background
    started = time.monotonic()
    assert beacon.tick()
    for i in (1, 2):
        clock.now = T0 + i * 60_000
        assert beacon.tick()
    assert time.monotonic() - started < 5  # no tick waited for the job
    slow.release.set()
    drain(beacon)
    site = tmp_path / "site"
    reasons = [
        json.loads((site / layout.entropy_record_key(1, p)).read_bytes())["reason"]
        for p in (1, 2, 3)
    ]
    assert reasons[0] == "slow source answered 1"
    assert reasons[1] == "the entropy job was not finished in time"
    assert reasons[2] == "the entropy source was still busy with an earlier job"
    assert replay(site).ok


def test_final_pulse_ends_chain_and_next_run_starts_chain_two(
    tmp_path: Path, signer: Signer
) -> None:
    clock = FakeClock(T0)
    beacon = make(tmp_path, signer, clock)
    beacon.prime()
    beacon.tick()
    beacon.state.set_request("final", "test")
    clock.now = T0 + 60_000
    wait_prepared(beacon)
    beacon.tick()
    drain(beacon)
    assert pulses(tmp_path)[-1]["statusCode"] == 8
    clock.now = T0 + 120_000
    again = make(tmp_path, signer, clock)
    again.prime()
    again.tick()
    drain(again)
    first_of_two = json.loads((tmp_path / "site" / layout.pulse_key(2, 1)).read_bytes())["pulse"]
    assert (first_of_two["chainIndex"], first_of_two["statusCode"]) == (2, 1)


def test_second_instance_is_refused(tmp_path: Path, signer: Signer) -> None:
    first = make(tmp_path, signer, FakeClock(T0))
    with pytest.raises(StateError, match="another beacon"):
        make(tmp_path, signer, FakeClock(T0))
    drain(first)
    make(tmp_path, signer, FakeClock(T0)).shutdown()  # free again once released


def test_a_tick_fired_just_before_the_boundary_is_for_that_boundary(
    tmp_path: Path, signer: Signer
) -> None:
    clock = FakeClock(T0)
    beacon = make(tmp_path, signer, clock)
    beacon.prime()
    assert beacon.tick()
    wait_prepared(beacon)
    clock.now = T0 + 60_000 - 3  # 3 ms early
    assert beacon.tick()
    drain(beacon)
    assert [p["timeStamp"] for p in pulses(tmp_path)] == [
        "2027-01-15T08:00:00.000Z",
        "2027-01-15T08:01:00.000Z",
    ]


def test_time_index_resolves_published_pulses(tmp_path: Path, signer: Signer) -> None:
    from beacon_verifier.fetch import LocalSource
    from beacon_verifier.timeindex import resolve

    clock = FakeClock(T0)
    beacon = make(tmp_path, signer, clock)
    beacon.prime()
    for minutes in (0, 1, 2, 125):  # a gap of two hours after the third pulse
        clock.now = T0 + minutes * 60_000
        wait_prepared(beacon)
        assert beacon.tick()
    drain(beacon)
    source = LocalSource(tmp_path / "site")
    assert resolve("at_or_after", T0 + 61_000, source.get) == (1, 3)
    assert resolve("at_or_after", T0 + 3 * 60_000, source.get) == (1, 4)
    assert resolve("previous", T0 + 100 * 60_000, source.get) == (1, 3)
    assert resolve("next", T0 + 125 * 60_000, source.get) is None


def test_state_file_is_private(tmp_path: Path) -> None:
    from beacon.state import State

    path = tmp_path / "state.sqlite"
    State(path).close()
    assert path.stat().st_mode & 0o777 == 0o600
    path.chmod(0o640)
    with pytest.raises(StateError, match="chmod 600"):
        State(path)


def test_a_crashing_publisher_stops_the_beacon_and_keeps_the_outbox(
    tmp_path: Path, signer: Signer
) -> None:
    class Buggy(LocalDirPublisher):
        def put_immutable(self, key: str, data: bytes, *, content_type: str) -> None:
            if "/plan/" in key:  # the tick's write works; the publisher's do not
                return super().put_immutable(key, data, content_type=content_type)
            raise RuntimeError("a bug")

    beacon = make(tmp_path, signer, FakeClock(T0), publisher=Buggy(tmp_path / "site"))
    beacon.prime()
    assert beacon.tick()
    assert beacon.start_background()
    thread = beacon.publication.thread
    assert thread is not None
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert beacon._stop.is_set()
    assert "publisher crashed (RuntimeError)" in str(beacon._fatal)
    assert beacon.state.outbox_length() == 1
    beacon.shutdown()


def test_a_full_outbox_stops_signing_until_the_store_takes_them(
    tmp_path: Path, signer: Signer, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", out_dir=tmp_path / "site", period=60, outbox_max=2
    )
    beacon = Beacon(
        settings=settings,
        signer=signer,
        clock=FakeClock(T0),
        source=OsSource("configured"),
        fallback=OsSource,
        publisher=LocalDirPublisher(settings.out_dir),
    )
    beacon.lease.try_acquire()
    beacon.prime()
    clock = beacon.clock
    assert isinstance(clock, FakeClock)
    for i in range(2):  # nothing publishes (the publication is not started)
        clock.now = T0 + i * 60_000
        wait_prepared(beacon)
        assert beacon.tick()
    clock.now = T0 + 2 * 60_000
    assert not beacon.tick()
    assert "not signing until the store takes them" in caplog.text
    assert beacon.state.outbox_length() == 2
    drain(beacon)  # the store takes them
    state = State(settings.state_path, readonly=True)
    try:
        assert state.outbox_length() == 0
    finally:
        state.close()


def test_a_plan_the_store_did_not_take_is_signed_as_planned_later(
    tmp_path: Path, signer: Signer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="beacon")
    store = Flaky(tmp_path / "site")
    clock = FakeClock(T0)
    beacon = make(tmp_path, signer, clock, publisher=store)
    beacon.prime()
    wait_prepared(beacon)
    assert beacon.tick()  # pulse 1
    store.down = True
    clock.now = T0 + 60_000
    wait_prepared(beacon)
    assert not beacon.tick()  # planned for T0 + 1 min, not signed
    assert "while the store cannot take its plan" in caplog.text
    planned = beacon.state.plan()
    assert planned is not None and (planned.chain_index, planned.pulse_index) == (1, 2)
    assert beacon.state.head().pulse_index == 1  # type: ignore[union-attr]
    store.down = False
    clock.now = T0 + 3 * 60_000
    assert beacon.tick()  # the plan, with its own time
    assert "signing resumes" in caplog.text
    wait_prepared(beacon)
    clock.now = T0 + 4 * 60_000
    assert beacon.tick()
    drain(beacon)
    stamps = [p["timeStamp"] for p in pulses(tmp_path)]
    assert stamps == [
        "2027-01-15T08:00:00.000Z",
        "2027-01-15T08:01:00.000Z",
        "2027-01-15T08:04:00.000Z",
    ]
    assert [p["statusCode"] for p in pulses(tmp_path)] == [1, 0, 2]
