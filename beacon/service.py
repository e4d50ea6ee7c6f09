"""The running beacon: schedule, tick, entropy one period ahead, publishing from the outbox.

Threads, and why:
- the scheduler thread runs ``tick`` on every period boundary (APScheduler 3,
  UTC, coalesce, misfire grace, one instance at a time). A tick only builds,
  signs and commits: milliseconds. Its timeStamp is the nominal boundary.
- one entropy worker runs the (slow) quantum job for the pulse after next,
  so its value exists one period ahead for the precommitment. A tick never
  waits for it: a job not ready in time, or failing, is replaced by a disclosed
  OS fallback.
- one publisher thread drains the outbox in order, retrying with backoff, so a
  store outage delays publication but never a tick.
- one lease thread renews the publishing lease (``beacon.lease``) while this
  instance is active. Before that, ``acquire_lease`` waits as a standby; after a
  takeover the chain continues from the head found in the store. An instance
  that finds another holding its lease stops without publishing again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from beacon_verifier.format import format_timestamp, parse_pulse

from beacon.clock import Clock, boundary_at_or_before
from beacon.config import Settings
from beacon.drand import ExternalMixer, merge_status
from beacon.entropy import EntropyDraw, EntropySource, ReleasesBatches, ReportsPool
from beacon.entropy.harvest import degraded as harvest_degraded
from beacon.errors import (
    AlreadyPublishedError,
    BeaconError,
    EntropyError,
    HealthTestError,
    LeaseLostError,
    PublishError,
)
from beacon.faults import failpoint
from beacon.lease import Lease, lease_ttl_ms
from beacon.metrics import HEALTH_FAILURES, Metrics
from beacon.publish import JSON, Publisher
from beacon.publish.descriptor import publish_descriptor
from beacon.publish.head import read_store_head
from beacon.publish.pipeline import (
    archive_complete_days,
    publish_batch,
    publish_identity,
    publish_item,
    publish_site_pages,
)
from beacon.publish.site import RECENT_PULSES, STATUS_KEY, SiteInfo
from beacon.publish.status_page import SiteHealthPublisher
from beacon.pulse.builder import BuildError, ChainHead, build_pulse
from beacon.pulse.keys import Signer
from beacon.state import InstanceLock, OutboxItem, State

log = logging.getLogger("beacon")

#: A tick this close before a boundary is for that boundary (timer jitter).
EARLY_FIRE_TOLERANCE_MS = 50

FallbackFactory = Callable[[str], EntropySource]


@dataclass(frozen=True, slots=True)
class PulseSlot:
    """The chain and index of the pulse the next tick will emit."""

    chain_index: int
    pulse_index: int


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
        external: ExternalMixer | None = None,
    ) -> None:
        self.settings = settings
        self.external = external  # the drand mixer (beacon.drand); None: no external
        self.signer = signer
        self.clock = clock
        self.source = source
        self.fallback = fallback
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
        self._entropy = ThreadPoolExecutor(max_workers=1, thread_name_prefix="entropy")
        self._prepared: tuple[PulseSlot, Future[EntropyDraw]] | None = None
        self._current: EntropyDraw | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._done = threading.Event()  # set when no more ticks will happen
        self._fatal: BaseException | None = None
        self._prepare_delay = 0.0  # seconds; set by run(), 0 when ticks are driven directly
        self._publisher_thread: threading.Thread | None = None
        self._lease_thread: threading.Thread | None = None
        self._lease_lost = threading.Event()
        self._drain_deadline = float("inf")
        self.lease = Lease(publisher, self.state.instance_id(), lease_ttl_ms(settings.period_ms))
        self.metrics = Metrics(
            now=lambda: self.clock.now_ms() / 1000,
            counters=self.state.counters(),
            outbox_length=self.state.outbox_length(),
        )
        self._report_lease()

    # --- entropy -------------------------------------------------------------

    def _draw_or_fallback(self, slot: PulseSlot) -> EntropyDraw:
        try:
            return self.source.draw(slot.chain_index, slot.pulse_index)
        except EntropyError as exc:
            self._count_health_failure(exc)
            return self._fallback(slot, f"{self.source.name}: {exc}")

    def _fallback(self, slot: PulseSlot, reason: str) -> EntropyDraw:
        log.warning(
            "pulse %d/%d: entropy from the OS fallback: %s",
            slot.chain_index,
            slot.pulse_index,
            reason,
        )
        self.state.bump("fallbacks")
        self.state.set_meta("last_fallback_reason", reason)
        return self.fallback(reason).draw(slot.chain_index, slot.pulse_index)

    def _prepare(self, slot: PulseSlot) -> None:
        """Start the entropy job for ``slot`` in the background.

        A job still running from an earlier slot (a stuck backend) is not queued
        behind: that slot then gets a disclosed fallback instead.
        """
        previous = self._prepared
        if previous is not None and not previous[1].done():
            self._prepared = None
            return
        future = self._entropy.submit(self._draw_after, slot, self._prepare_delay)
        self._prepared = (slot, future)

    def _draw_after(self, slot: PulseSlot, delay: float) -> EntropyDraw:
        # Let the publisher write the pulse just signed before the job's
        # Python-side work competes with it for the interpreter.
        if delay > 0:
            time.sleep(delay)
        return self.source.draw(slot.chain_index, slot.pulse_index)

    def _take_prepared(self, slot: PulseSlot) -> EntropyDraw:
        """The prepared draw for ``slot``, or a disclosed fallback. Never blocks."""
        prepared = self._prepared
        if prepared is None or prepared[0] != slot:
            return self._fallback(slot, "the entropy source was still busy with an earlier job")
        future = prepared[1]
        if not future.done():
            # Left running; _prepare will not queue behind it.
            return self._fallback(slot, "the entropy job was not finished in time")
        self._prepared = None
        try:
            return future.result()
        except EntropyError as exc:
            self._count_health_failure(exc)
            return self._fallback(slot, f"{self.source.name}: {exc}")
        except Exception as exc:  # a source bug must not stop the beacon
            log.exception("entropy source %s crashed", self.source.name)
            return self._fallback(slot, f"{self.source.name} crashed: {type(exc).__name__}")

    def _count_health_failure(self, exc: EntropyError) -> None:
        if isinstance(exc, HealthTestError):
            self.state.bump(HEALTH_FAILURES)
            self.metrics.health_test_failed()

    # --- the tick ------------------------------------------------------------

    def next_slot(self) -> PulseSlot:
        return self._slot_after(self.state.head())

    def _slot_after(self, head: ChainHead | None) -> PulseSlot:
        if head is None:
            return PulseSlot(self.settings.chain, 1)
        if head.ended:
            return PulseSlot(head.chain_index + 1, 1)
        return PulseSlot(head.chain_index, head.pulse_index + 1)

    def prime(self) -> None:
        """Make sure the next pulse has its entropy and the one after is being prepared.

        The value of the next pulse is normally the stored commitment; after a
        new chain or a lost commitment it is drawn now (that pulse will carry
        statusCode bit 1 if it does not open a precommitment).
        """
        slot = self.next_slot()
        commitment = self.state.commitment()
        if commitment is not None and (commitment.chain_index, commitment.pulse_index) == (
            slot.chain_index,
            slot.pulse_index,
        ):
            self._current = commitment.draw
        else:
            self._current = self._draw_or_fallback(slot)
        self._prepare(PulseSlot(slot.chain_index, slot.pulse_index + 1))

    def tick(self) -> bool:
        """Emit the pulse for the current boundary. Returns False if it waited instead."""
        if self._lease_lost.is_set():
            return False
        now = self.clock.now_ms()
        period = self.settings.period_ms
        boundary = boundary_at_or_before(now, period)
        if boundary + period - now <= EARLY_FIRE_TOLERANCE_MS:
            # The scheduler woke a hair before the boundary: wait for it rather
            # than compute the previous boundary and skip this pulse.
            time.sleep((boundary + period - now) / 1000)
            boundary += period
        head = self.state.head()
        if head is not None and boundary <= head.time_ms:
            log.warning(
                "clock at %s is not past the last pulse %s: waiting",
                format_timestamp(now),
                format_timestamp(head.time_ms),
            )
            return False
        slot = self._slot_after(head)
        if self._current is None:
            self.prime()
        current = self._current
        assert current is not None
        external = None  # round T, waited for at most external_wait_ms (beacon.drand)
        if self.external is not None:
            external = self.external.external_for(slot.chain_index, slot.pulse_index, boundary)
        next_slot = PulseSlot(slot.chain_index, slot.pulse_index + 1)
        next_draw = self._take_prepared(next_slot)
        final = self.state.request("final") is not None
        try:
            built = build_pulse(
                head,
                time_ms=boundary,
                period_ms=period,
                local_random_value=current.local_random_value,
                next_local_random_value=next_draw.local_random_value,
                signer=self.signer,
                base_url=self.settings.site_url,
                new_chain_index=self.settings.chain,
                final=final,
                external=external,
            )
        except BuildError as exc:
            log.error("cannot build pulse %d: %s", slot.pulse_index, exc)
            return False
        failpoint("before-commit")
        self.state.commit_pulse(
            head=built.head,
            pulse=built.data,
            draw=current,
            next_draw=next_draw,
            cosignature=built.cosignature,
        )
        failpoint("after-commit")
        self.metrics.pulse_committed(current.kind)
        log.info(
            "pulse %d/%d %s status %d source %s",
            built.pulse.chain_index,
            built.pulse.pulse_index,
            built.pulse.time_stamp,
            built.pulse.status_code,
            current.kind,
        )
        self._wake.set()
        self.emitted += 1
        if built.head.ended:
            self._current = None
            log.info("chain %d ended with pulse %d", built.pulse.chain_index, slot.pulse_index)
            self.stop()
            return True
        self._current = next_draw
        self._prepare(PulseSlot(slot.chain_index, slot.pulse_index + 2))
        if self.count is not None and self.emitted >= self.count:
            self.stop()
        return True

    # --- publishing ----------------------------------------------------------

    def _publish_loop(self) -> None:
        """The publisher thread. A bug in it stops the beacon (exit 1, outbox kept).

        Ticking on without publishing would pile up pulses nobody sees.
        """
        try:
            self._drain_outbox()
        except Exception as exc:
            log.exception("the publisher crashed; stopping (unpublished pulses stay in the outbox)")
            self._fatal = BeaconError(
                f"the publisher crashed ({type(exc).__name__}); the outbox is kept"
            )
            self.stop()

    def _drain_outbox(self) -> None:
        state = State(self.settings.state_path)
        delay = 0.5
        published_certificate = published_site = False
        site = SiteInfo(
            name=self.settings.name,
            site_url=self.settings.site_url,
            period_ms=self.settings.period_ms,
        )
        site_health = SiteHealthPublisher(site)
        try:
            while True:
                items = state.outbox()
                if not items:
                    if self._done.is_set():
                        return
                    self._wake.wait(timeout=1.0)
                    self._wake.clear()
                    continue
                try:
                    self.lease.ensure()
                    if not published_certificate:
                        publish_identity(self.publisher, self.signer)
                        publish_descriptor(  # what this site promises (issue 22)
                            self.publisher,
                            chain=items[0].chain_index,
                            pulse=items[0].pulse_index,
                            cosigned=self.signer.pq is not None,
                            raw_data=isinstance(self.source, ReleasesBatches),
                            max_age=self._seconds_to_next_boundary(),
                            external_source=None if self.external is None else "drand",
                        )
                        published_certificate = True
                    for item in items:
                        self.lease.ensure()
                        max_age = self._seconds_to_next_boundary()
                        if self.external is not None:  # its drand round, before the pulse
                            self.external.publish(
                                self.publisher, item.chain_index, item.pulse_index
                            )
                        publish_item(
                            self.publisher,
                            item,
                            last_max_age=max_age,
                            site=site,
                            recent=state.recent_published(RECENT_PULSES),
                            on_pulse_stored=partial(self._pulse_stored, item),
                        )
                        failpoint("before-mark-published")
                        state.mark_published(item.seq, item.time_ms)
                        archive_complete_days(self.publisher, state, item.time_ms, max_age=max_age)
                        self._publish_batches(item.chain_index, item.pulse_index)
                        self._write_status(state, item.time_ms)
                        site_health.published(
                            self.publisher,
                            item,
                            now_ms=self.clock.now_ms(),
                            max_age=self._seconds_to_next_boundary(),
                            recent=state.recent_published(RECENT_PULSES),
                        )
                    if not published_site:
                        # After the first pulses rather than before: pulses are waited for.
                        self.lease.ensure()
                        publish_site_pages(
                            self.publisher,
                            site,
                            self.signer.certificate_id,
                            max_age=self._seconds_to_next_boundary(),
                        )
                        published_site = True
                    delay = 0.5
                except LeaseLostError as exc:
                    self._lose_lease(exc)
                    return
                except AlreadyPublishedError as exc:
                    # Different bytes under our key: another writer forked the chain.
                    log.critical("refusing to continue: %s", exc)
                    self._fatal = exc
                    self.stop()
                    return
                except PublishError as exc:
                    state.bump("publish_retries")
                    if time.monotonic() > self._drain_deadline:
                        log.warning("stopping with unpublished pulses kept in the outbox: %s", exc)
                        return
                    log.warning("publish failed, retrying in %.1f s: %s", delay, exc)
                    time.sleep(delay)
                    delay = min(delay * 2, self.settings.publish_retry_max)
        finally:
            state.close()

    def _publish_batches(self, chain_index: int, pulse_index: int) -> None:
        """Publish the raw batches that the pulses published so far have used up."""
        if not isinstance(self.source, ReleasesBatches):
            return
        try:
            batches = self.source.released_batches(chain_index, pulse_index)
            for batch in batches:
                publish_batch(self.publisher, batch)
                self.source.batch_published(batch.batch_id)
                log.info("published raw batch %s", batch.batch_id)
        except EntropyError as exc:  # the pool keeps them; the next pulse tries again
            log.warning("raw batches not published yet: %s", exc)

    def _seconds_to_next_boundary(self) -> int:
        period = self.settings.period_ms
        now = self.clock.now_ms()
        return max(1, (period - now % period) // 1000)

    def _write_status(self, state: State, last_ms: int) -> None:
        counters = state.counters()
        status = {
            "lastPulse": format_timestamp(last_ms),
            "nextDue": format_timestamp(last_ms + self.settings.period_ms),
            "period": self.settings.period_ms,
            "certificateId": self.signer.certificate_id.hex(),
            "entropySource": self.source.name,
            "lastFallbackReason": state.meta("last_fallback_reason"),
            "pulsesEmitted": counters.get("pulses", 0),
            "fallbacks": counters.get("fallbacks", 0),
            "publishRetries": counters.get("publish_retries", 0),
            "sources": {
                k.split(":", 1)[1]: v for k, v in counters.items() if k.startswith("source:")
            },
        }
        if isinstance(self.source, ReportsPool):
            try:
                status["pool"] = self.source.pool_status()
            except EntropyError as exc:
                status["pool"] = {"error": str(exc)}
        status.update(self._metrics_status(state, status.get("pool")))
        status["degraded"] = harvest_degraded(status.get("pool"))
        merge_status(status, self.external)
        self.publisher.put_mutable(
            STATUS_KEY,
            json.dumps(status, indent=2, sort_keys=True).encode() + b"\n",
            content_type=JSON,
            max_age=self._seconds_to_next_boundary(),
        )

    # --- metrics -------------------------------------------------------------

    def _report_lease(self) -> None:
        """Tell the metrics which failover role this process holds, and who is active."""
        self.metrics.set_lease(self.lease.role, self.lease.current_holder)

    def _pulse_stored(self, item: OutboxItem) -> None:
        self.metrics.pulse_stored(
            item.chain_index, item.pulse_index, item.time_ms, self.clock.now_ms()
        )

    def _metrics_status(self, state: State, pool: object) -> dict[str, Any]:
        """Update the figures read from the state and the pool; return them for status.json."""
        self.metrics.set_outbox_length(state.outbox_length())
        if isinstance(pool, Mapping):
            self.metrics.set_pool(pool)
        return self.metrics.status()

    # --- the lease -----------------------------------------------------------

    def acquire_lease(self) -> bool:
        """Wait as a standby until this instance holds the lease; False if stopped first.

        Then make the state continue the chain as published: after a takeover
        (or whenever the store is ahead of this state) from the store's head.
        """
        lease = self.lease
        announced = failing = False
        while True:  # at least one attempt, even when already asked to stop (to drain)
            try:
                if lease.try_acquire():
                    break
                failing = False
                if not announced:
                    log.info(
                        "lease: standby as %s, active is %s", lease.holder, lease.current_holder
                    )
                    announced = True
            except PublishError as exc:
                if not failing:
                    log.warning("lease: cannot read the lease, staying standby: %s", exc)
                    failing = True
            finally:
                self._report_lease()
            if self._stop.wait(lease.poll_interval):
                return False
        while True:
            try:
                self._continue_published_chain()
                return True
            except LeaseLostError as exc:
                self._lose_lease(exc)
                return False
            except PublishError as exc:
                log.warning("lease: cannot read the chain head from the store yet: %s", exc)
            if self._stop.wait(lease.poll_interval):
                return False

    def _continue_published_chain(self) -> None:
        """Adopt the store's chain head unless this state already continues it."""
        self.lease.ensure()
        published = read_store_head(self.publisher, self.settings.chain)
        local = self.state.head()
        taken_from = self.lease.taken_from
        if published is not None and not self._state_continues(local, published):
            dropped = self.state.adopt_head(published)
            self._current = None
            if dropped:
                log.warning("lease: dropped %d unpublished pulses of this instance", dropped)
        if taken_from is None:
            log.info("lease: active as %s", self.lease.holder)
        else:
            head = self.state.head()
            log.info(
                "lease: took over from %s, head is pulse %s",
                taken_from,
                "none" if head is None else f"{head.chain_index}/{head.pulse_index}",
            )

    def _state_continues(self, local: ChainHead | None, published: ChainHead) -> bool:
        """True when this state's head is the published head or a pulse committed after it."""
        if local is None:
            return False
        if (local.chain_index, local.pulse_index) == (published.chain_index, published.pulse_index):
            return local.output_value == published.output_value
        if published.ended:  # a new chain does not link to the old one
            after = (published.chain_index + 1, 1)
        else:
            after = (published.chain_index, published.pulse_index + 1)
        return any(
            (item.chain_index, item.pulse_index) == after
            and (published.ended or self._opens(item.pulse, published.output_value))
            for item in self.state.outbox()
        )

    @staticmethod
    def _opens(pulse: bytes, previous_output: bytes) -> bool:
        links = {link.type: link.value for link in parse_pulse(pulse).list_values}
        return links.get("previous") == previous_output

    def _renew_loop(self) -> None:
        failing = False
        while not self._done.wait(self.lease.renew_interval):
            try:
                self.lease.renew()
                failing = False
            except LeaseLostError as exc:
                self._lose_lease(exc)
                return
            except PublishError as exc:
                if not failing:
                    log.warning("lease: renewal failed, retrying: %s", exc)
                    failing = True

    def _lose_lease(self, exc: LeaseLostError) -> None:
        if self._lease_lost.is_set():
            return
        self._lease_lost.set()
        self._report_lease()
        log.error("lease: lost to %s; stopping", self.lease.current_holder)
        self._fatal = exc
        self.stop()

    # --- lifecycle -----------------------------------------------------------

    def start_background(self) -> bool:
        """Take the lease, prime entropy, start the publisher and lease threads.

        Returns False, having started nothing, when stopped while still standby.
        Waits (at most one period) for the first background job, so the first
        scheduled pulses do not fall back only because the beacon just started;
        not after a takeover, where the chain is already waiting.
        """
        if not self.acquire_lease():
            return False
        self._lease_thread = threading.Thread(target=self._renew_loop, name="lease", daemon=True)
        self._lease_thread.start()
        self.prime()
        if self._prepared is not None and self.lease.taken_from is None:
            try:
                self._prepared[1].exception(timeout=self.settings.period_ms / 1000)
            except TimeoutError:
                pass
        self._publisher_thread = threading.Thread(
            target=self._publish_loop, name="publisher", daemon=True
        )
        self._publisher_thread.start()
        return True

    def stop(self) -> None:
        """Ask the beacon to stop after the current tick (safe from a signal handler)."""
        self._stop.set()

    def run(self) -> None:
        """Run until stopped (``--count``, ``stop``, a signal); drain the outbox; release."""
        self._prepare_delay = min(2.0, self.settings.period_ms / 1000 / 5)
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
        """Stop ticking, let the publisher drain the outbox, release the lock."""
        self._drain_deadline = time.monotonic() + self.settings.publish_retry_max
        self._done.set()
        self._wake.set()
        if self._publisher_thread is not None:
            self._publisher_thread.join()
        if self._lease_thread is not None:
            self._lease_thread.join()
        self._entropy.shutdown(wait=False, cancel_futures=True)
        self.state.close()
        self._lock.release()
