"""Whether the pool's harvests are working, said in status.json, the metrics and the log.

A pooled source serves draws from bits harvested earlier, so a backend that
stopped delivering does not show in the next pulse: it shows hours later, as
OS-fallback pulses. The pool's job table records every harvest attempt and how
it ended; this module reads that record as a ``HarvestRecord`` and says what it
means:

- ``summary`` gives the keys ``status.json``'s ``pool`` object, ``beacon
  status`` and the metrics read (last harvest, its result and error, failures
  in a row, whether that is ``failing``);
- ``degraded`` gives the ``status.json`` ``degraded`` entry
  (``quantum-harvest-failing``, with the last error) once ``failing_after``
  harvests in a row have failed;
- ``HarvestAlarm`` decides what the log says: one warning when harvests start
  failing, one again every ``repeat_seconds`` while it lasts, one line when
  they recover.

Pure logic: no qiskit, no SQLite, no clock of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Results of one harvest attempt, as recorded by the pool.
OK, FAILED, LOST, REJECTED = "ok", "failed", "lost", "rejected"
#: The ``status.json`` ``degraded`` code for harvests failing in a row.
DEGRADED_CODE = "quantum-harvest-failing"
#: Default failures in a row before harvests count as failing.
DEFAULT_FAILING_AFTER = 3
#: How often the log repeats that harvests are still failing.
REPEAT_SECONDS = 3600.0
#: Longest error text kept in a record or a status (one line).
MAX_ERROR_CHARS = 300

log = logging.getLogger("beacon")


def one_line(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` on one line (whitespace runs collapsed), at most ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@dataclass(frozen=True, slots=True, kw_only=True)
class HarvestRecord:
    """The ended harvest attempts as the pool saw them, newest first.

    ``last_at`` (Unix seconds), ``last_result`` (``ok``, ``failed``, ``lost``
    or ``rejected``) and ``last_error`` describe the newest; ``failures`` is how
    many ended in a row without ``ok``, and ``failing_since`` when the first of
    them ended. All None / 0 before the first harvest has ended.
    """

    last_at: float | None = None
    last_result: str | None = None
    last_error: str | None = None
    failures: int = 0
    failing_since: float | None = None


def record_from_rows(rows: list[tuple[str, str, float]]) -> HarvestRecord:
    """A ``HarvestRecord`` from ``(result, error, ended_at)`` rows, newest first."""
    if not rows:
        return HarvestRecord()
    failures, since = 0, None
    for result, _error, ended_at in rows:
        if result == OK:
            break
        failures, since = failures + 1, ended_at
    result, error, ended_at = rows[0]
    return HarvestRecord(
        last_at=ended_at,
        last_result=result,
        last_error=error or None,
        failures=failures,
        failing_since=since,
    )


def is_failing(record: HarvestRecord, failing_after: int) -> bool:
    """True once ``failing_after`` harvests in a row have failed."""
    return record.failures >= failing_after


def summary(record: HarvestRecord, failing_after: int) -> dict[str, Any]:
    """The record as ``status.json`` ``pool`` keys (camelCase; times in Unix seconds)."""
    last = None
    if record.last_result is not None:
        last = {"at": record.last_at, "result": record.last_result, "error": record.last_error}
    return {
        "lastHarvest": last,
        "consecutiveHarvestFailures": record.failures,
        "harvestFailingAfter": failing_after,
        "harvestFailing": is_failing(record, failing_after),
    }


def degraded(pool: object) -> list[dict[str, str]]:
    """The ``status.json`` ``degraded`` entries a pool status (``summary`` keys) calls for."""
    if not isinstance(pool, Mapping) or pool.get("harvestFailing") is not True:
        return []
    last = pool.get("lastHarvest")
    error = last.get("error") if isinstance(last, Mapping) else None
    failures = pool.get("consecutiveHarvestFailures")
    return [
        {
            "code": DEGRADED_CODE,
            "message": f"quantum harvest failing: {failures} in a row; last error: "
            + (error or "unknown"),
        }
    ]


class HarvestAlarm:
    """What the log says about a run of failing harvests: once, every hour, once recovered.

    ``observe`` is called with the current record after every harvest step;
    it logs (to the ``beacon`` logger) and returns the line it logged, or None.
    """

    def __init__(
        self, failing_after: int = DEFAULT_FAILING_AFTER, repeat_seconds: float = REPEAT_SECONDS
    ) -> None:
        if failing_after < 1:
            raise ValueError(f"failing_after must be >= 1, got {failing_after}")
        self.failing_after = failing_after
        self.repeat_seconds = repeat_seconds
        self._last_said: float | None = None  # when it last said "failing"; None: not failing

    def observe(self, record: HarvestRecord, now: float) -> str | None:
        """Log what ``record`` calls for at Unix time ``now``; return the line, or None."""
        if is_failing(record, self.failing_after):
            if self._last_said is not None and now - self._last_said < self.repeat_seconds:
                return None
            still = "still " if self._last_said is not None else ""
            self._last_said = now
            line = (
                f"quantum harvest {still}failing: {record.failures} in a row; "
                f"last error: {record.last_error or 'unknown'}"
            )
            log.warning("%s", line)
            return line
        if self._last_said is not None and record.last_result == OK:
            self._last_said = None
            line = "quantum harvest recovered: the last harvest succeeded"
            log.warning("%s", line)
            return line
        return None
