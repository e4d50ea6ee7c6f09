"""The publishing lease's logic, on a real directory store and a hand-driven monotonic clock."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from beacon.errors import ConditionFailedError, LeaseLostError, PublishError
from beacon.lease import LEASE_KEY, VALID_FRACTION, Lease, LeaseRecord
from beacon.publish.local import LocalDirPublisher

TTL_MS = 1000


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Unreachable(LocalDirPublisher):
    """A directory store that can be switched off."""

    down = False

    def get_versioned(self, key: str) -> tuple[bytes, str] | None:
        if self.down:
            raise PublishError("store down")
        return super().get_versioned(key)

    def put_if(self, key: str, data: bytes, *, version: str | None) -> str:
        if self.down:
            raise PublishError("store down")
        return super().put_if(key, data, version=version)


@pytest.fixture
def store(tmp_path: Path) -> Unreachable:
    return Unreachable(tmp_path / "site")


def lease(store: LocalDirPublisher, holder: str, clock: Clock) -> Lease:
    return Lease(store, holder, TTL_MS, monotonic=clock)


def holder_of(store: LocalDirPublisher) -> str:
    found = store.get_versioned(LEASE_KEY)
    assert found is not None
    record = LeaseRecord.from_bytes(found[0])
    assert record is not None
    return record.holder


def test_a_free_lease_is_taken_and_a_second_instance_waits(store: Unreachable) -> None:
    clock = Clock()
    a, b = lease(store, "a" * 16, clock), lease(store, "b" * 16, clock)
    assert a.try_acquire() and a.role == "active" and a.valid()
    assert not b.try_acquire() and b.role == "standby"
    assert b.current_holder == "a" * 16
    clock.now += 0.9  # less than a TTL since b first saw this version
    assert not b.try_acquire()
    assert holder_of(store) == "a" * 16


def test_renewals_keep_the_standby_out_and_stopping_them_hands_over(store: Unreachable) -> None:
    clock = Clock()
    a, b = lease(store, "a" * 16, clock), lease(store, "b" * 16, clock)
    assert a.try_acquire()
    for _ in range(10):  # five TTLs of renewals every half TTL
        assert not b.try_acquire()
        clock.now += 0.5
        a.renew()
    assert not b.try_acquire()  # b saw a new version every time
    clock.now += 0.5
    assert not b.try_acquire()
    clock.now += 0.5  # a full TTL with the same version
    assert b.try_acquire() and b.taken_from == "a" * 16
    assert not a.valid()  # a's own deadline passed before b could take over
    with pytest.raises(LeaseLostError):
        a.renew()
    assert a.role == "standby" and a.current_holder == "b" * 16


def test_the_active_stops_trusting_its_lease_before_a_standby_may_take_it(
    store: Unreachable,
) -> None:
    clock = Clock()
    a, b = lease(store, "a" * 16, clock), lease(store, "b" * 16, clock)
    assert a.try_acquire()
    assert not b.try_acquire()  # b first sees the version at the same instant
    clock.now += 1.0 * VALID_FRACTION
    assert not a.valid()
    assert not b.try_acquire()
    clock.now += 1.0 * (1 - VALID_FRACTION)
    assert b.try_acquire()


def test_an_unreachable_store_does_not_hand_the_lease_over(store: Unreachable) -> None:
    clock = Clock()
    a, b = lease(store, "a" * 16, clock), lease(store, "b" * 16, clock)
    assert a.try_acquire()
    assert not b.try_acquire()
    store.down = True
    clock.now += 0.5
    with pytest.raises(PublishError):
        b.try_acquire()
    with pytest.raises(PublishError):
        a.renew()
    clock.now += 30  # a long outage
    assert not a.valid()
    store.down = False
    assert not b.try_acquire()  # counting starts again from here
    a.ensure()  # the version a wrote is still there: renewed
    assert a.valid()
    clock.now += 0.9
    assert not b.try_acquire()


def test_a_restarted_instance_resumes_its_own_lease_at_once(store: Unreachable) -> None:
    clock = Clock()
    assert lease(store, "a" * 16, clock).try_acquire()
    again = lease(store, "a" * 16, clock)
    assert again.try_acquire() and again.taken_from is None
    assert LeaseRecord.from_bytes(store.get(LEASE_KEY) or b"") == LeaseRecord("a" * 16, 2, TTL_MS)


def test_a_renewal_whose_answer_was_lost_is_recognised(store: Unreachable) -> None:
    clock = Clock()
    a = lease(store, "a" * 16, clock)
    assert a.try_acquire()
    # The store applies the renewal but its answer never arrives.
    found = store.get_versioned(LEASE_KEY)
    assert found is not None
    store.put_if(LEASE_KEY, LeaseRecord("a" * 16, 2, TTL_MS).to_bytes(), version=found[1])
    a.renew()  # 412 on the stale version, then our own record is found: still ours
    assert a.role == "active"
    a.renew()


def test_an_unreadable_lease_object_is_taken_over_after_a_ttl(store: Unreachable) -> None:
    clock = Clock()
    store.put_if(LEASE_KEY, b"not json", version=None)
    b = lease(store, "b" * 16, clock)
    assert not b.try_acquire() and b.current_holder == "(unreadable lease)"
    clock.now += 1.0
    assert b.try_acquire()


def test_renew_without_holding_the_lease_is_refused(store: Unreachable) -> None:
    with pytest.raises(LeaseLostError):
        lease(store, "a" * 16, Clock()).renew()


def test_lease_records_round_trip_and_reject_other_shapes() -> None:
    record = LeaseRecord("0123456789abcdef", 7, 60_000)
    assert LeaseRecord.from_bytes(record.to_bytes()) == record
    assert record.to_bytes() == (
        b'{"holder":"0123456789abcdef","sequence":7,"ttlMs":60000,"version":1}'
    )
    for bad in (b"[]", b'{"holder":1,"sequence":1,"ttlMs":1}', b"{", b"x" * 5000):
        assert LeaseRecord.from_bytes(bad) is None


def test_local_put_if_is_atomic_between_racing_writers(tmp_path: Path) -> None:
    store = LocalDirPublisher(tmp_path)
    version = store.put_if(LEASE_KEY, b"start", version=None)
    with pytest.raises(ConditionFailedError):
        store.put_if(LEASE_KEY, b"again", version=None)
    winners: list[int] = []

    def contend(n: int) -> None:
        try:
            store.put_if(LEASE_KEY, f"writer {n}".encode(), version=version)
            winners.append(n)
        except ConditionFailedError:
            pass

    threads = [threading.Thread(target=contend, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1
    assert store.get(LEASE_KEY) == f"writer {winners[0]}".encode()
