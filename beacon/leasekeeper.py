"""Keeping the publishing lease: the standby wait, the renewal thread, losing it.

The lease itself (``beacon.lease.Lease``) is the store protocol; this is the
part of the running beacon that drives it. While standby, ``acquire`` polls
until this instance holds the lease; once active, a thread renews it; losing
it (another instance holds it) is reported once, and stops the beacon.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from beacon.errors import LeaseLostError, PublishError, TransientPublishError
from beacon.lease import Lease
from beacon.metrics import Metrics

log = logging.getLogger("beacon")


class LeaseKeeper:
    """Drives ``lease`` for one beacon process; thread-safe.

    ``on_lost`` is called once, with the ``LeaseLostError``, when another
    instance holds the lease. A store that refuses the lease for good (a
    ``PublishError`` that is not transient) ends ``acquire`` with that error:
    a beacon that can never publish must not wait as a standby forever.
    """

    def __init__(
        self,
        lease: Lease,
        metrics: Metrics,
        *,
        on_lost: Callable[[LeaseLostError], None],
    ) -> None:
        self.lease = lease
        self._metrics = metrics
        self._on_lost = on_lost
        self._lost = threading.Event()
        self._thread: threading.Thread | None = None
        self.report()

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def report(self) -> None:
        """Tell the metrics which failover role this process holds, and who is active."""
        self._metrics.set_lease(self.lease.role, self.lease.current_holder)

    def acquire(self, stop: threading.Event, *, give_up_after: float | None = None) -> bool:
        """Wait as a standby until this instance holds the lease; False if stopped first.

        Raises ``PublishError`` when the store refuses the lease for good (not a
        transient failure), or keeps failing for ``give_up_after`` seconds
        without ever answering once.
        """
        lease = self.lease
        announced = failing = answered = False
        started = time.monotonic()
        while True:  # at least one attempt, even when already asked to stop (to drain)
            try:
                if lease.try_acquire():
                    return True
                failing, answered = False, True
                if not announced:
                    log.info(
                        "lease: standby as %s, active is %s", lease.holder, lease.current_holder
                    )
                    announced = True
            except TransientPublishError as exc:
                silent_for = time.monotonic() - started
                if not answered and give_up_after is not None and silent_for >= give_up_after:
                    raise
                if not failing:
                    log.warning("lease: cannot read the lease, staying standby: %s", exc)
                    failing = True
            except PublishError:
                raise
            finally:
                self.report()
            if stop.wait(lease.poll_interval):
                return False

    def start_renewing(self, done: threading.Event) -> None:
        """Renew the lease in a thread until ``done`` is set or the lease is lost."""
        self._thread = threading.Thread(
            target=self._renew_loop, args=(done,), name="lease", daemon=True
        )
        self._thread.start()

    def _renew_loop(self, done: threading.Event) -> None:
        failing = False
        while not done.wait(self.lease.renew_interval):
            try:
                self.lease.renew()
                failing = False
            except LeaseLostError as exc:
                self.lose(exc)
                return
            except PublishError as exc:
                if not failing:
                    log.warning("lease: renewal failed, retrying: %s", exc)
                    failing = True

    def lose(self, exc: LeaseLostError) -> None:
        """Another instance holds the lease: say so once and tell the beacon."""
        if self._lost.is_set():
            return
        self._lost.set()
        self.report()
        log.error("lease: lost to %s; stopping", self.lease.current_holder)
        self._on_lost(exc)

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
