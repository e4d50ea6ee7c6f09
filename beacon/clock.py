"""The ``Clock`` port. The tick reads it once and passes the time down."""

from __future__ import annotations

import time
from typing import Protocol

from beacon.faults import clock_offset


class Clock(Protocol):
    def now_ms(self) -> int:
        """Unix time in milliseconds (UTC)."""
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


def boundary_at_or_before(time_ms: int, period_ms: int) -> int:
    """The latest period boundary at or before ``time_ms``."""
    return time_ms - time_ms % period_ms
