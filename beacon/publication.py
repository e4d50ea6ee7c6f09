"""The publisher thread: every write of every committed pulse, in order.

One thread drains the outbox in order, retrying with backoff, so a slow or
failing store delays publication but never a tick. For each pulse it writes, in this
order: the identity (once per run), the pulse's objects (``publish_item``),
marks it published in the state, archives complete days, publishes used-up raw
batches, then ``status.json`` (``beacon.status.build_status``); and once per
run, after the first pulses, the site's other pages. The lease is checked
before each pulse.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from functools import partial

from beacon.clock import Clock
from beacon.config import Settings
from beacon.drand import ExternalMixer
from beacon.entropy import EntropySource, ReleasesBatches
from beacon.errors import (
    AlreadyPublishedError,
    BeaconError,
    ConditionFailedError,
    EntropyError,
    LeaseLostError,
    PublishError,
    TransientPublishError,
)
from beacon.faults import failpoint
from beacon.lease import Lease
from beacon.metrics import Metrics
from beacon.publish import JSON, Publisher
from beacon.publish.conditional import put_forward
from beacon.publish.descriptor import publish_descriptor
from beacon.publish.pipeline import (
    archive_complete_days,
    publish_batch,
    publish_identity,
    publish_item,
    publish_site_pages,
)
from beacon.publish.site import RECENT_PULSES, STATUS_KEY, SiteInfo
from beacon.publish.status_page import SiteHealthPublisher
from beacon.pulse.keys import Signer
from beacon.reconcile import describe_store
from beacon.state import OutboxItem, State
from beacon.status import build_status

log = logging.getLogger("beacon")


class Publication:
    """Owns the per-pulse write sequence and the thread that runs it.

    ``on_lease_lost`` and ``on_fatal`` tell the beacon to stop (with the error
    kept for the exit status).
    """

    def __init__(
        self,
        *,
        settings: Settings,
        signer: Signer,
        source: EntropySource,
        publisher: Publisher,
        clock: Clock,
        metrics: Metrics,
        lease: Lease,
        on_lease_lost: Callable[[LeaseLostError], None],
        on_fatal: Callable[[BaseException], None],
        external: ExternalMixer | None = None,
    ) -> None:
        self.settings = settings
        self.external = external  # publishes each pulse's drand round record (beacon.drand)
        self.signer = signer
        self.source = source
        self.publisher = publisher
        self.clock = clock
        self.metrics = metrics
        self.lease = lease
        self._on_lease_lost = on_lease_lost
        self._on_fatal = on_fatal
        self.wake = threading.Event()
        self.done = threading.Event()  # set when no more pulses will be committed
        self._finishing = threading.Event()
        self._progress_at = 0.0  # monotonic time of the last pulse published
        self.thread: threading.Thread | None = None
        self._drain_deadline = float("inf")
        self._site = SiteInfo(
            name=settings.name, site_url=settings.site_url, period_ms=settings.period_ms
        )
        self._site_health = SiteHealthPublisher(self._site)

    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, name="publisher", daemon=True)
        self.thread.start()

    def finish(self, drain_for: float) -> None:
        """No more pulses: drain the outbox for at most ``drain_for`` seconds, then return.

        The deadline applies to failures: a drain that keeps publishing goes on.
        One that has made no progress for ``drain_for`` + 1 seconds (a store
        that hangs) is abandoned with its thread; the outbox keeps its pulses.
        """
        self._drain_deadline = self.clock.monotonic() + drain_for
        self._progress_at = self.clock.monotonic()
        self.done.set()
        self._finishing.set()
        self.wake.set()
        if self.thread is None:
            return
        while self.thread.is_alive():
            self.thread.join(timeout=0.1)
            if self.clock.monotonic() - self._progress_at > drain_for + 1:
                log.warning("stopping with a write to the store still in flight")
                return

    def _loop(self) -> None:
        """The thread. A bug in it stops the beacon (exit 1, outbox kept).

        Ticking on without publishing would pile up pulses nobody sees.
        """
        try:
            self._drain()
        except Exception as exc:
            log.exception("the publisher crashed; stopping (unpublished pulses stay in the outbox)")
            self._on_fatal(
                BeaconError(f"the publisher crashed ({type(exc).__name__}); the outbox is kept")
            )

    def _drain(self) -> None:
        state = State(self.settings.state_path)
        delay = 0.5
        published_certificate = published_site = False
        try:
            while True:
                items = state.outbox()
                if not items:
                    if self.done.is_set():
                        return
                    self.wake.wait(timeout=1.0)
                    self.wake.clear()
                    continue
                try:
                    self.lease.ensure()
                    if not published_certificate:
                        publish_identity(self.publisher, self.signer)
                        publish_descriptor(  # what this site promises (docs/site-descriptor.md)
                            self.publisher,
                            chain=items[0].chain_index,
                            pulse=items[0].pulse_index,
                            cosigned=self.signer.pq is not None,
                            raw_data=isinstance(self.source, ReleasesBatches),
                            max_age=self.seconds_to_next_boundary(),
                            external_source=None if self.external is None else "drand",
                        )
                        published_certificate = True
                    for item in items:
                        self.lease.ensure()
                        self._publish_one(state, item)
                    if not published_site:
                        # After the first pulses rather than before: pulses are waited for.
                        self.lease.ensure()
                        publish_site_pages(
                            self.publisher,
                            self._site,
                            self.signer.certificate_id,
                            max_age=self.seconds_to_next_boundary(),
                        )
                        published_site = True
                    delay = 0.5
                except LeaseLostError as exc:
                    self._on_lease_lost(exc)
                    return
                except AlreadyPublishedError as exc:
                    # Different bytes under our key: another writer forked the chain.
                    log.critical("refusing to continue: %s", exc)
                    self._on_fatal(exc)
                    return
                except (TransientPublishError, ConditionFailedError) as exc:
                    state.bump("publish_retries")
                    if self.clock.monotonic() > self._drain_deadline:
                        log.warning("stopping with unpublished pulses kept in the outbox: %s", exc)
                        return
                    log.warning("publish failed, retrying in %.1f s: %s", delay, exc)
                    self._finishing.wait(delay)  # a stop cuts the backoff short
                    delay = min(delay * 2, self.settings.publish_retry_max)
                except PublishError as exc:
                    # Retrying cannot help (no bucket, access denied, Object Lock refused,
                    # not a writable directory): stop now, loudly, keeping the outbox.
                    self._on_fatal(
                        PublishError(f"the store {describe_store(self.settings)} fails: {exc}")
                    )
                    return
        finally:
            state.close()

    def _publish_one(self, state: State, item: OutboxItem) -> None:
        """Every write for one committed pulse, in order."""
        max_age = self.seconds_to_next_boundary()
        if self.external is not None:  # its drand round record, before the pulse
            self.external.publish(self.publisher, item.chain_index, item.pulse_index, item.time_ms)
        publish_item(
            self.publisher,
            item,
            last_max_age=max_age,
            site=self._site,
            recent=state.recent_published(RECENT_PULSES),
            on_pulse_stored=partial(self._pulse_stored, item),
            before_write=self.lease.ensure,
        )
        failpoint("before-mark-published")
        state.mark_published(item.seq, item.time_ms)
        archive_complete_days(self.publisher, state, item.time_ms, max_age=max_age)
        self._publish_batches(item.chain_index, item.pulse_index)
        self._write_status(state, item.time_ms)
        self._site_health.published(
            self.publisher,
            item,
            now_ms=self.clock.now_ms(),
            max_age=self.seconds_to_next_boundary(),
            recent=state.recent_published(RECENT_PULSES),
            before_write=self.lease.ensure,
        )
        self._progress_at = self.clock.monotonic()

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

    def seconds_to_next_boundary(self) -> int:
        period = self.settings.period_ms
        now = self.clock.now_ms()
        return max(1, (period - now % period) // 1000)

    def _write_status(self, state: State, last_ms: int) -> None:
        status = build_status(
            state,
            last_ms=last_ms,
            period_ms=self.settings.period_ms,
            certificate_id=self.signer.certificate_id,
            source=self.source,
            metrics=self.metrics,
            external=self.external,
        )
        self.lease.ensure()
        put_forward(
            self.publisher,
            STATUS_KEY,
            json.dumps(status, indent=2, sort_keys=True).encode() + b"\n",
            behind=partial(_status_behind, status["lastPulse"]),
            content_type=JSON,
            max_age=self.seconds_to_next_boundary(),
        )

    def _pulse_stored(self, item: OutboxItem) -> None:
        self.metrics.pulse_stored(
            item.chain_index, item.pulse_index, item.time_ms, self.clock.now_ms()
        )


def _status_behind(last_pulse: str, stored: bytes) -> bool:
    """True when a stored ``status.json`` is about a pulse before ``last_pulse`` (or unreadable)."""
    try:
        previous = json.loads(stored).get("lastPulse")
    except (ValueError, AttributeError):
        return True
    return not isinstance(previous, str) or previous < last_pulse
