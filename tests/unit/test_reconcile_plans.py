"""Start-up reconciliation and pulse plans: nothing a plan or an older record left
behind may wedge the beacon, and nothing may let this key sign an index twice."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from beacon_verifier import layout
from beacon_verifier.format import STATUS_CHAIN_START_OR_NO_PRECOMMIT, parse_pulse

from beacon.config import Settings
from beacon.entropy.os_source import OsSource
from beacon.lease import LEASE_KEY
from beacon.publish.local import LocalDirPublisher
from beacon.pulse.keys import Signer, init_identity
from beacon.reconcile import StoreConflictError
from beacon.service import Beacon
from tests.unit.test_service import T0, FakeClock, Flaky, wait_prepared

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def key(tmp_path: Path, name: str) -> Signer:
    return init_identity(tmp_path / f"key-{name}", name=name, now=NOW, key_bits=2048)


def beacon(
    tmp_path: Path, data: str, signer: Signer, clock: FakeClock, store: LocalDirPublisher
) -> Beacon:
    settings = Settings(data_dir=tmp_path / data, out_dir=store.root, period=60)
    return Beacon(
        settings=settings,
        signer=signer,
        clock=clock,
        source=OsSource("configured"),
        fallback=OsSource,
        publisher=store,
        take_over_chain=data.endswith("take-over"),
    )


def first_pulse(tmp_path: Path, signer: Signer, clock: FakeClock, store: LocalDirPublisher) -> None:
    """Pulse 1 of ``signer``'s chain, published to ``store`` by the instance at ``a``."""
    a = beacon(tmp_path, "a", signer, clock, store)
    assert a.start_background()
    wait_prepared(a)
    assert a.tick()
    a.shutdown()


def killed(b: Beacon) -> None:
    """As after kill -9: nothing drained, the locks gone with the process."""
    b.prefetcher.wait(timeout=10)
    b.state.close()
    b._lock.release()


def signed_then_killed(b: Beacon) -> None:
    """``b`` signs pulses 1 and 2 (their plans stored, nothing published), then dies."""
    b.lease.try_acquire()
    b.prime()
    assert isinstance(b.clock, FakeClock)
    for i in range(2):
        b.clock.now = T0 + i * 60_000
        wait_prepared(b)
        assert b.tick()
    killed(b)


def test_a_saved_plan_of_a_replaced_key_is_dropped(tmp_path: Path) -> None:
    old, new = key(tmp_path, "old"), key(tmp_path, "new")
    clock, store = FakeClock(T0), Flaky(tmp_path / "site")
    first = beacon(tmp_path, "data", old, clock, store)
    assert first.start_background()
    wait_prepared(first)
    assert first.tick()
    store.down = True  # pulse 2 is planned, never stored
    clock.now = T0 + 60_000
    wait_prepared(first)
    assert not first.tick()
    assert first.state.plan() is not None
    killed(first)
    store.down = False
    # `beacon init --force`: a new key on the same data dir
    second = beacon(tmp_path, "data", new, clock, store)
    assert second.start_background()
    assert second.state.plan() is None
    clock.now = T0 + 2 * 60_000
    wait_prepared(second)
    assert second.tick()
    second.shutdown()
    pulse = parse_pulse((store.root / layout.pulse_key(1, 2)).read_bytes())
    assert pulse.certificate_id == new.certificate_id


def test_take_over_is_refused_where_this_key_already_signed(tmp_path: Path) -> None:
    mine, theirs = key(tmp_path, "mine"), key(tmp_path, "theirs")
    clock, store = FakeClock(T0), LocalDirPublisher(tmp_path / "site")
    signed_then_killed(beacon(tmp_path, "a-take-over", mine, clock, store))
    store.path_for(LEASE_KEY).unlink()  # its lease ran out
    clock.now = T0 + 2 * 60_000
    other = beacon(tmp_path, "y", theirs, clock, store)
    assert other.start_background()
    wait_prepared(other)
    assert other.tick()
    other.shutdown()
    again = beacon(tmp_path, "a-take-over", mine, clock, store)
    try:
        with pytest.raises(StoreConflictError, match="already signed pulses up to 1/2"):
            again.start_background()
    finally:
        again.shutdown()


def test_a_stored_plan_that_does_not_follow_the_head_is_refused(tmp_path: Path) -> None:
    signer = key(tmp_path, "k")
    clock, store = FakeClock(T0), LocalDirPublisher(tmp_path / "site")
    first_pulse(tmp_path, signer, clock, store)
    # A plan for pulse 2 made on another pulse 1 of this key (a restored store, say).
    signed_then_killed(
        beacon(tmp_path, "b", signer, clock, LocalDirPublisher(tmp_path / "elsewhere"))
    )
    plan = next((tmp_path / "elsewhere" / layout.ROOT / "chain/1/plan/2").iterdir())
    target = store.root / layout.ROOT / "chain/1/plan/2" / plan.name
    target.parent.mkdir(parents=True)
    target.write_bytes(plan.read_bytes())
    again = beacon(tmp_path, "a", signer, clock, store)
    try:
        with pytest.raises(StoreConflictError, match="does not follow pulse 1/1"):
            again.start_background()
    finally:
        again.shutdown()


def test_an_entropy_record_left_without_plan_or_pulse_is_inherited(tmp_path: Path) -> None:
    """A beacon of 0.1.0 wrote pulse N's entropy record before the pulse, and stored no
    plan: after an upgrade the next pulse uses that record, so nothing conflicts."""
    signer = key(tmp_path, "k")
    clock, store = FakeClock(T0), LocalDirPublisher(tmp_path / "site")
    first_pulse(tmp_path, signer, clock, store)
    orphan = OsSource("a 0.1.0 beacon").draw(1, 2).record
    store.put_immutable(layout.entropy_record_key(1, 2), orphan, content_type="application/json")
    again = beacon(tmp_path, "a", signer, clock, store)
    assert again.start_background()
    clock.now = T0 + 60_000
    wait_prepared(again)
    assert again.tick()
    again.shutdown()
    assert again._fatal is None
    pulse = parse_pulse((store.root / layout.pulse_key(1, 2)).read_bytes())
    assert (store.root / layout.entropy_record_key(1, 2)).read_bytes() == orphan
    assert pulse.status_code & STATUS_CHAIN_START_OR_NO_PRECOMMIT  # not a's committed value
