"""The ``Clock`` port: wall time, monotonic time and sleeping, all injectable.

The tick reads the wall clock once and passes the time down; it waits (for a
boundary a hair away) only through ``sleep``, so a test clock sees every wait.
"""

from __future__ import annotations

import time
from typing import Protocol

from beacon.faults import clock_offset


class Clock(Protocol):
    def now_ms(self) -> int:
        """Unix time in milliseconds (UTC)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never steps (deadlines, backoff)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""
        ...


class SystemClock:
    """The machine's wall clock.

    With ``SOAK_FAULT_DIR`` set (fault soak only) it is shifted by the offset
    in that directory's ``clock-offset-ms`` file, to step one instance's clock;
    unset, it reads the wall clock and nothing else.
    """

    def __init__(self) -> None:
        self._offset = clock_offset()

    def now_ms(self) -> int:
        now = time.time_ns() // 1_000_000
        if self._offset is None:
            return now
        return now + self._offset.ms()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


def boundary_at_or_before(time_ms: int, period_ms: int) -> int:
    """The latest period boundary at or before ``time_ms``."""
    return time_ms - time_ms % period_ms
