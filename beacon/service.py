"""The running beacon: schedule and tick; the parts it runs are in their own modules.

Threads, and why:
- the scheduler thread runs ``tick`` on every period boundary (APScheduler 3,
  UTC, coalesce, misfire grace, one instance at a time). A tick plans the
  pulse, stores the plan (``beacon.plan``: one create-only write), signs and
  commits: milliseconds. Its timeStamp is the nominal boundary.
- the entropy prefetcher (``beacon.prefetch``) runs the slow quantum job for
  the pulse after next, so its value exists one period ahead.
- the publication (``beacon.publication``) drains the outbox in order, so a
  slow store delays publication but never a tick.
- the lease keeper (``beacon.leasekeeper``) waits as a standby, then renews the
  publishing lease while this instance is active. Before the first tick,
  start-up reconciliation (``beacon.reconcile``) makes the state and the store
  agree. An instance that finds another holding its lease stops.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from beacon_verifier.format import format_timestamp

from beacon.clock import Clock, boundary_at_or_before
from beacon.config import Settings
from beacon.drand import ExternalMixer
from beacon.entropy import EntropyDraw, EntropySource
from beacon.errors import BeaconError, LeaseLostError, PublishError, TransientPublishError
from beacon.faults import failpoint
from beacon.lease import Lease, lease_ttl_ms
from beacon.leasekeeper import LeaseKeeper
from beacon.metrics import Metrics
from beacon.plan import Plan, PlanStore
from beacon.prefetch import EntropyPrefetcher, FallbackFactory
from beacon.publication import Publication
from beacon.publish import Publisher
from beacon.publish.local import LocalDirPublisher
from beacon.pulse.builder import (
    BuildError,
    ChainHead,
    PulseSlot,
    next_slot,
    plan_pulse,
    sign_pulse,
)
from beacon.pulse.keys import Signer
from beacon.reconcile import describe_store, reconcile
from beacon.state import InstanceLock, State

log = logging.getLogger("beacon")

#: A tick this close before a boundary is for that boundary (timer jitter).
EARLY_FIRE_TOLERANCE_MS = 50
#: How long a stop keeps trying to publish what is still in the outbox.
STOP_DRAIN_S = 3.0

__all__ = ["Beacon", "FallbackFactory", "PulseSlot"]


class Beacon:
    """One beacon process. Use ``run`` (blocking) or drive ``tick`` directly in tests."""

    def __init__(
        self,
        *,
        settings: Settings,
        signer: Signer,
        clock: Clock,
        source: EntropySource,
        fallback: FallbackFactory,
        publisher: Publisher,
        count: int | None = None,
        take_over_chain: bool = False,
        external: ExternalMixer | None = None,
    ) -> None:
        self.settings = settings
        self.external = external  # the drand mixer (beacon.drand); None: no external
        self.take_over_chain = take_over_chain
        self.signer = signer
        self.clock = clock
        self.publisher = publisher
        self.count = count
        self.emitted = 0
        self._lock = InstanceLock(settings.data_dir)
        self._lock.acquire()  # before touching the state: a second process stops here
        try:
            self.state = State(settings.state_path)
        except BaseException:
            self._lock.release()
            raise
        self._current: EntropyDraw | None = None
        self._outbox_full = False
        self._stop = threading.Event()
        self._fatal: BaseException | None = None
        self.metrics = Metrics(
            now=lambda: self.clock.now_ms() / 1000,
            counters=self.state.counters(),
            outbox_length=self.state.outbox_length(),
        )
        lease = Lease(
            publisher,
            self.state.instance_id(),
            lease_ttl_ms(settings.period_ms),
            monotonic=clock.monotonic,
        )
        self.lease_keeper = LeaseKeeper(lease, self.metrics, on_lost=self._fail)
        self.plans = PlanStore(
            publisher,
            lease,
            external,
            where=describe_store(settings),
            on_lost=self.lease_keeper.lose,
            on_fatal=self._fail,
        )
        self.prefetcher = EntropyPrefetcher(
            source=source, fallback=fallback, state=self.state, metrics=self.metrics, clock=clock
        )
        self.publication = Publication(
            settings=settings,
            signer=signer,
            source=source,
            publisher=publisher,
            clock=clock,
            metrics=self.metrics,
            lease=lease,
            on_lease_lost=self.lease_keeper.lose,
            on_fatal=self._fail,
            external=external,
        )

    @property
    def lease(self) -> Lease:
        return self.lease_keeper.lease

    def _fail(self, exc: BaseException) -> None:
        """Stop, and exit 1 with ``exc`` (a lost lease, a fork, a publisher bug)."""
        self._fatal = exc
        self.stop()

    # --- the tick ------------------------------------------------------------

    def next_slot(self) -> PulseSlot:
        return next_slot(self.state.head(), self.settings.chain)

    def prime(self) -> None:
        """Make sure the next pulse has its entropy and the one after is being prepared.

        The value of the next pulse is its plan's when one is saved (``beacon.plan``),
        otherwise the stored commitment; after a new chain or a lost commitment it
        is drawn now (that pulse will carry statusCode bit 1 if it does not open a
        precommitment).
        """
        slot = self.next_slot()
        saved = self.state.plan()
        commitment = self.state.commitment()
        if saved is not None and saved.slot == slot:
            self._current = Plan.from_bytes(saved.data).draw
            if saved.next_draw is not None:
                return  # the plan holds the value after it too
        elif commitment is not None and (commitment.chain_index, commitment.pulse_index) == (
            slot.chain_index,
            slot.pulse_index,
        ):
            self._current = commitment.draw
        else:
            self._current = self.prefetcher.draw_now(slot)
        self.prefetcher.prepare(slot.following())

    def tick(self) -> bool:
        """Emit the pulse for the current boundary. Returns False if it waited instead.

        The pulse is planned (or its saved plan taken up), the plan stored, and
        only then signed and committed (``beacon.plan``).
        """
        if self.lease_keeper.lost:
            return False
        now = self.clock.now_ms()
        period = self.settings.period_ms
        boundary = boundary_at_or_before(now, period)
        if boundary + period - now <= EARLY_FIRE_TOLERANCE_MS:
            # The scheduler woke a hair before the boundary: wait for it rather
            # than compute the previous boundary and skip this pulse.
            self.clock.sleep((boundary + period - now) / 1000)
            boundary += period
        waiting = self.state.outbox_length()
        if waiting >= self.settings.outbox_max:
            if not self._outbox_full:
                log.error(
                    "the outbox holds %d unpublished pulses (outbox_max): not signing until "
                    "the store takes them",
                    waiting,
                )
                self._outbox_full = True
            return False
        if self._outbox_full:
            log.info("the outbox has room again: signing resumes")
            self._outbox_full = False
        head = self.state.head()
        if head is not None and boundary <= head.time_ms:
            log.warning(
                "clock at %s is not past the last pulse %s: waiting",
                format_timestamp(now),
                format_timestamp(head.time_ms),
            )
            return False
        slot = next_slot(head, self.settings.chain)
        try:
            plan, next_draw = self._plan(head, slot, boundary)
        except BuildError as exc:
            log.error("cannot build pulse %d: %s", slot.pulse_index, exc)
            return False
        stored = self.plans.store(plan)
        if stored is None:
            return False
        try:
            built = sign_pulse(head, stored.pulse, self.signer)
        except BuildError as exc:
            # A plan in the store that this key cannot sign as the next pulse: it
            # may have been signed already, so no other pulse may take the index.
            self._fail(
                BeaconError(f"refusing to sign pulse {slot.chain_index}/{slot.pulse_index}: {exc}")
            )
            return False
        failpoint("before-commit")
        self.state.commit_pulse(
            head=built.head,
            pulse=built.data,
            draw=stored.draw,
            next_draw=next_draw,
            cosignature=built.cosignature,
        )
        failpoint("after-commit")
        self.metrics.pulse_committed(stored.kind)
        log.info(
            "pulse %d/%d %s status %d source %s output %s",
            built.pulse.chain_index,
            built.pulse.pulse_index,
            built.pulse.time_stamp,
            built.pulse.status_code,
            stored.kind,
            built.pulse.output_value.hex()[:16],
        )
        self.publication.wake.set()
        self.emitted += 1
        if built.head.ended:
            self._current = None
            log.info("chain %d ended with pulse %d", built.pulse.chain_index, slot.pulse_index)
            self.stop()
            return True
        self._current = next_draw
        self.prefetcher.prepare(slot.following().following())
        if self.count is not None and self.emitted >= self.count:
            self.stop()
        return True

    def _plan(
        self, head: ChainHead | None, slot: PulseSlot, boundary: int
    ) -> tuple[Plan, EntropyDraw]:
        """The plan of pulse ``slot`` and the value its precommitment opens.

        A plan the state already holds for ``slot`` is kept, whatever its time: it
        may be in the store, so it is the only pulse this index may have. Otherwise
        a new plan for ``boundary`` is made and saved.
        """
        saved = self.state.plan()
        if saved is not None and saved.slot == slot:
            plan = Plan.from_bytes(saved.data)
            if plan.pulse.time_ms != boundary:
                log.info(
                    "pulse %d/%d: signing the plan made for %s",
                    slot.chain_index,
                    slot.pulse_index,
                    plan.pulse.time_stamp,
                )
            return plan, saved.next_draw or self.prefetcher.take(slot.following())
        if self._current is None:
            self.prime()
        current = self._current
        assert current is not None
        external = record = None  # round T, waited for at most external_wait_ms (beacon.drand)
        if self.external is not None:
            external, record = self.external.external_for(
                slot.chain_index, slot.pulse_index, boundary
            )
        next_draw = self.prefetcher.take(slot.following())
        unsigned = plan_pulse(
            head,
            time_ms=boundary,
            period_ms=self.settings.period_ms,
            local_random_value=current.local_random_value,
            next_local_random_value=next_draw.local_random_value,
            certificate_id=bytes(self.signer.certificate_id),
            base_url=self.settings.site_url,
            new_chain_index=self.settings.chain,
            final=self.state.request("final") is not None,
            external=external,
        )
        plan = Plan(pulse=unsigned, record=current.record, kind=current.kind, external=record)
        self.state.save_plan(slot.chain_index, slot.pulse_index, plan.to_bytes(), next_draw)
        failpoint("after-plan")
        return plan, next_draw

    # --- lifecycle -----------------------------------------------------------

    def _reconcile(self) -> bool:
        """Start-up reconciliation, retried while the store cannot be read; False if stopped."""
        while True:
            try:
                reconciled = reconcile(
                    publisher=self.publisher,
                    state=self.state,
                    lease=self.lease,
                    settings=self.settings,
                    certificate_id=self.signer.certificate_id,
                    take_over=self.take_over_chain,
                )
                if reconciled.adopted or reconciled.inherited:
                    self._current = None
                return True
            except LeaseLostError as exc:
                self.lease_keeper.lose(exc)
                return False
            except TransientPublishError as exc:
                log.warning("lease: cannot read the chain head from the store yet: %s", exc)
            except PublishError as exc:
                raise PublishError(
                    f"the store {describe_store(self.settings)} fails: {exc}"
                ) from exc
            if self._stop.wait(self.lease.poll_interval):
                return False

    def _remove_stray_temporaries(self) -> None:
        """A local site: delete the temporary files a killed writer left (now we are active)."""
        if isinstance(self.publisher, LocalDirPublisher):
            removed = self.publisher.remove_stray_temporaries()
            if removed:
                log.info("removed %d temporary files left in %s", removed, self.publisher.root)

    def start_background(self) -> bool:
        """Take the lease, reconcile, prime entropy, start the publisher and lease threads.

        Returns False, having started nothing, when stopped while still standby.
        Waits (at most one period) for the first background job, so the first
        scheduled pulses do not fall back only because the beacon just started;
        not after a takeover, where the chain is already waiting.
        """
        try:
            # A store that never answers within a period is as broken as one that refuses.
            if not self.lease_keeper.acquire(
                self._stop, give_up_after=self.settings.period_ms / 1000
            ):
                return False
        except PublishError as exc:
            raise PublishError(f"the store {describe_store(self.settings)} fails: {exc}") from exc
        self._remove_stray_temporaries()
        self.state.set_meta("period_ms", str(self.settings.period_ms))  # for `beacon status`
        if not self._reconcile():
            return False
        self.lease_keeper.start_renewing(self.publication.done)
        self.prime()
        if self.lease.taken_from is None:
            self.prefetcher.wait(timeout=self.settings.period_ms / 1000)
        self.publication.start()
        return True

    def stop(self) -> None:
        """Ask the beacon to stop after the current tick (safe from a signal handler)."""
        self._stop.set()

    def run(self) -> None:
        """Run until stopped (``--count``, ``stop``, a signal); drain the outbox; release."""
        self.prefetcher.delay = min(2.0, self.settings.period_ms / 1000 / 5)
        scheduler = BackgroundScheduler(timezone=UTC)
        try:
            if self.start_background():
                self._tick_on_schedule(scheduler)
        finally:
            if scheduler.running:
                scheduler.shutdown(wait=True)  # lets a tick in progress finish
            self.shutdown()
        if self._fatal is not None:
            raise BeaconError(str(self._fatal))

    def _tick_on_schedule(self, scheduler: BackgroundScheduler) -> None:
        """Tick on every period boundary until stopped."""
        period_s = self.settings.period_ms / 1000
        first = boundary_at_or_before(self.clock.now_ms(), self.settings.period_ms)
        first += self.settings.period_ms
        scheduler.add_job(
            self._safe_tick,
            IntervalTrigger(
                seconds=period_s,
                start_date=datetime.fromtimestamp(first / 1000, tz=UTC),
                timezone=UTC,
            ),
            id="tick",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=max(1, int(period_s // 2)),
        )
        log.info(
            "beacon running: period %.3g s, first pulse at %s, publishing to %s",
            period_s,
            format_timestamp(first),
            self.settings.site_url,
        )
        scheduler.start()
        while not self._stop.wait(timeout=0.5):
            pass

    def _safe_tick(self) -> None:
        if self._stop.is_set():
            return
        try:
            self.tick()
        except BeaconError as exc:
            log.error("tick failed: %s", exc)
        except Exception:
            log.exception("tick crashed")

    def shutdown(self) -> None:
        """Stop ticking, let the publisher drain the outbox (briefly), release the lock.

        Bounded: with the store down, a stop ends within ``STOP_DRAIN_S`` plus a
        second, keeping the unpublished pulses in the outbox.
        """
        self.publication.finish(drain_for=min(self.settings.publish_retry_max, STOP_DRAIN_S))
        self.lease_keeper.join(timeout=1)
        self.prefetcher.shutdown()
        self.state.close()
        self._lock.release()
