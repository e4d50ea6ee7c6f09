"""The ``Clock`` port. The tick reads it once and passes the time down."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int:
        """Unix time in milliseconds (UTC)."""
        ...


class SystemClock:
    """The machine's wall clock."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


def boundary_at_or_before(time_ms: int, period_ms: int) -> int:
    """The latest period boundary at or before ``time_ms``."""
    return time_ms - time_ms % period_ms
