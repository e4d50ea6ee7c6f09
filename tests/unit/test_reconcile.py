"""Start-up reconciliation's refusals (the accepted paths run as real processes in
tests/integration/test_state_authority.py and test_failover_leftovers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from beacon.config import Settings
from beacon.lease import Lease
from beacon.publish.local import LocalDirPublisher
from beacon.pulse.keys import Signer
from beacon.reconcile import StoreConflictError, reconcile
from beacon.state import State
from tests.unit.test_service import T0, FakeClock, drain, make, wait_prepared


def chain_of(tmp_path: Path, signer: Signer, pulses: int) -> None:
    clock = FakeClock(T0)
    beacon = make(tmp_path, signer, clock)
    beacon.prime()
    for i in range(pulses):
        clock.now = T0 + i * 60_000
        wait_prepared(beacon)
        assert beacon.tick()
    drain(beacon)


def reconcile_on(tmp_path: Path, site: Path, signer: Signer) -> None:
    settings = Settings(data_dir=tmp_path / "data", out_dir=site, period=60)
    store = LocalDirPublisher(site)
    state = State(settings.state_path)
    try:
        lease = Lease(store, state.instance_id(), 60_000)
        assert lease.try_acquire()
        reconcile(
            publisher=store,
            state=state,
            lease=lease,
            settings=settings,
            certificate_id=signer.certificate_id,
        )
    finally:
        state.close()


def test_a_store_behind_what_the_state_still_holds_is_refused(
    tmp_path: Path, signer: Signer
) -> None:
    chain_of(tmp_path, signer, 3)
    state = State(tmp_path / "data" / "state.sqlite")
    state.forget_published_before(T0 + 86_400_000)  # as after the day was archived
    state.close()
    with pytest.raises(StoreConflictError) as caught:
        reconcile_on(tmp_path, tmp_path / "empty", signer)
    message = str(caught.value)
    assert "at pulse none" in message and "signed up to 1/3" in message, message
    assert not (tmp_path / "empty" / "beacon").exists()  # nothing published


def test_a_store_with_another_pulse_where_this_key_published_is_refused(
    tmp_path: Path, signer: Signer
) -> None:
    chain_of(tmp_path, signer, 3)
    other = tmp_path / "other"
    chain_of(other, signer, 2)  # same key, another state: a different 1/1 and 1/2
    (other / "site" / "lease.json").unlink()  # that instance is gone
    with pytest.raises(StoreConflictError, match="already signed and published pulses up to 1/3"):
        reconcile_on(tmp_path, other / "site", signer)
