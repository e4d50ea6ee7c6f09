"""How many requests a network audit has in flight, and how often it may retry.

Pure logic, shared by every request of one source (``pool.HttpClient``):

- ``Limiter``: at most ``limit`` requests at once. A 429 or 503 halves the limit
  (at most once per ``cooldown`` seconds, so one burst of refusals counts once)
  and may pause every new request until a ``Retry-After`` time; after ``limit``
  answers in a row without one, the limit grows by one again, up to where it started.
- ``RetryBudget``: retries are drawn from one budget for the whole audit. It
  starts with ``initial`` tokens and each successful answer adds ``ratio`` of
  one (at most ``cap``), so a site that fails everywhere costs at most about
  ``initial + ratio * successes`` retries, not three times every request.
- ``backoff`` and ``retry_after``: how long to wait before a retry.
"""

from __future__ import annotations

import email.utils
import random
import threading
import time
from collections.abc import Callable

__all__ = [
    "DEFAULT_CONCURRENCY",
    "MAX_CONCURRENCY",
    "MAX_RETRY_AFTER",
    "Limiter",
    "RetryBudget",
    "backoff",
    "retry_after",
]

#: ``--concurrency`` unless given.
DEFAULT_CONCURRENCY = 64
#: The bound of ``--concurrency``: requests in flight at once to one site.
MAX_CONCURRENCY = 256
#: The longest a ``Retry-After`` is honoured; a longer one is waited for this long.
MAX_RETRY_AFTER = 120.0
_BACKOFF_BASE = 0.25
_BACKOFF_CAP = 10.0


class Limiter:
    """At most ``limit`` holders at once; the limit shrinks on congestion and grows back."""

    def __init__(
        self,
        limit: int,
        *,
        cooldown: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= limit <= MAX_CONCURRENCY:
            raise ValueError(f"concurrency must be 1..{MAX_CONCURRENCY}, got {limit}")
        self.ceiling = limit
        self.limit = limit
        self.active = 0
        self.cooldown = cooldown
        self._clock = clock
        self._last_cut = -float("inf")
        self._calm = 0  # answers without congestion since the limit last changed
        self._paused_until = 0.0
        self._cond = threading.Condition()

    def acquire(self) -> None:
        """Wait for a free place (and for any ``Retry-After`` pause to end), then take it."""
        with self._cond:
            while True:
                wait = self._paused_until - self._clock()
                if wait > 0:
                    self._cond.wait(min(wait, 1.0))
                elif self.active >= self.limit:
                    self._cond.wait(1.0)
                else:
                    self.active += 1
                    return

    def release(self) -> None:
        with self._cond:
            self.active -= 1
            self._cond.notify()

    def congested(self, pause: float | None = None) -> None:
        """A 429/503: halve the limit (once per ``cooldown``), pause ``pause`` s if given."""
        with self._cond:
            now = self._clock()
            if now - self._last_cut >= self.cooldown:
                self.limit = max(1, self.limit // 2)
                self._last_cut = now
            self._calm = 0
            if pause is not None and pause > 0:
                self._paused_until = max(self._paused_until, now + min(pause, MAX_RETRY_AFTER))

    def answered(self) -> None:
        """An answer that was not a refusal: after ``limit`` of them, one more place."""
        with self._cond:
            if self.limit >= self.ceiling:
                return
            self._calm += 1
            if self._calm >= self.limit:
                self._calm = 0
                self.limit += 1
                self._cond.notify()


class RetryBudget:
    """Retries shared by every request of an audit: ``initial`` tokens, plus ``ratio``
    of one per success, at most ``cap``; a retry spends one."""

    def __init__(self, initial: float = 20.0, ratio: float = 0.1, cap: float = 100.0) -> None:
        self.tokens = initial
        self.ratio = ratio
        self.cap = cap
        self._lock = threading.Lock()

    def earn(self) -> None:
        with self._lock:
            self.tokens = min(self.cap, self.tokens + self.ratio)

    def spend(self) -> bool:
        """Take one retry from the budget; False when it is spent."""
        with self._lock:
            if self.tokens < 1:
                return False
            self.tokens -= 1
            return True


def backoff(attempt: int, rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, ...): exponential, full jitter."""
    return float(rng() * min(_BACKOFF_CAP, _BACKOFF_BASE * 2.0**attempt))


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """A ``Retry-After`` header as seconds from now (at most ``MAX_RETRY_AFTER``), or
    None when absent or unreadable. Accepts delta-seconds and HTTP-dates."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, min(when.timestamp() - current, MAX_RETRY_AFTER))
