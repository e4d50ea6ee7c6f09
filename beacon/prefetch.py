"""Entropy one period ahead: the prefetcher behind the tick.

One worker thread runs the (slow) quantum job for the pulse after next, so its
value exists one period ahead for the precommitment. The tick never waits for
it: a job not ready in time, or failing, is replaced by a disclosed OS
fallback (counted in the state, its reason kept for ``status.json``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from beacon.clock import Clock
from beacon.entropy import EntropyDraw, EntropySource
from beacon.errors import EntropyError, HealthTestError
from beacon.metrics import HEALTH_FAILURES, Metrics
from beacon.pulse.builder import PulseSlot
from beacon.state import State

log = logging.getLogger("beacon")

FallbackFactory = Callable[[str], EntropySource]


class EntropyPrefetcher:
    """Draws entropy for a slot now (``draw_now``) or ahead (``prepare`` / ``take``).

    ``state`` is used from the thread that calls ``draw_now`` and ``take`` (the
    tick's), never from the worker.
    """

    def __init__(
        self,
        *,
        source: EntropySource,
        fallback: FallbackFactory,
        state: State,
        metrics: Metrics,
        clock: Clock,
    ) -> None:
        self.source = source
        self._fallback_source = fallback
        self._state = state
        self._metrics = metrics
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="entropy")
        self._prepared: tuple[PulseSlot, Future[EntropyDraw]] | None = None
        #: Seconds a background job waits first; set by ``Beacon.run``, 0 when driven directly.
        self.delay = 0.0

    def draw_now(self, slot: PulseSlot) -> EntropyDraw:
        """A draw for ``slot`` from the source, or a disclosed fallback; blocks for the job."""
        try:
            return self.source.draw(slot.chain_index, slot.pulse_index)
        except EntropyError as exc:
            self._count_health_failure(exc)
            return self.fallback(slot, f"{self.source.name}: {exc}")

    def fallback(self, slot: PulseSlot, reason: str) -> EntropyDraw:
        """A disclosed OS-fallback draw for ``slot``, counted in the state."""
        log.warning(
            "pulse %d/%d: entropy from the OS fallback: %s",
            slot.chain_index,
            slot.pulse_index,
            reason,
        )
        self._state.bump("fallbacks")
        self._state.set_meta("last_fallback_reason", reason)
        return self._fallback_source(reason).draw(slot.chain_index, slot.pulse_index)

    def prepare(self, slot: PulseSlot) -> None:
        """Start the entropy job for ``slot`` in the background.

        A job still running from an earlier slot (a stuck backend) is not queued
        behind: that slot then gets a disclosed fallback instead.
        """
        previous = self._prepared
        if previous is not None and not previous[1].done():
            self._prepared = None
            return
        future = self._executor.submit(self._draw_after, slot, self.delay)
        self._prepared = (slot, future)

    def _draw_after(self, slot: PulseSlot, delay: float) -> EntropyDraw:
        # Let the publisher write the pulse just signed before the job's
        # Python-side work competes with it for the interpreter.
        self._clock.sleep(delay)
        return self.source.draw(slot.chain_index, slot.pulse_index)

    def wait(self, timeout: float | None = None) -> None:
        """Wait up to ``timeout`` seconds for the prepared job, if any, to finish."""
        if self._prepared is not None:
            try:
                self._prepared[1].exception(timeout=timeout)
            except TimeoutError:
                pass

    def take(self, slot: PulseSlot) -> EntropyDraw:
        """The prepared draw for ``slot``, or a disclosed fallback. Never blocks."""
        prepared = self._prepared
        if prepared is None or prepared[0] != slot:
            return self.fallback(slot, "the entropy source was still busy with an earlier job")
        future = prepared[1]
        if not future.done():
            # Left running; prepare will not queue behind it.
            return self.fallback(slot, "the entropy job was not finished in time")
        self._prepared = None
        try:
            return future.result()
        except EntropyError as exc:
            self._count_health_failure(exc)
            return self.fallback(slot, f"{self.source.name}: {exc}")
        except Exception as exc:  # a source bug must not stop the beacon
            log.exception("entropy source %s crashed", self.source.name)
            return self.fallback(slot, f"{self.source.name} crashed: {type(exc).__name__}")

    def _count_health_failure(self, exc: EntropyError) -> None:
        if isinstance(exc, HealthTestError):
            self._state.bump(HEALTH_FAILURES)
            self._metrics.health_test_failed()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
