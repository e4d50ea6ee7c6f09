"""The beacon's health as the site shows it: a rolling history, and healthy/degraded/stopped.

The status page draws its charts from a small history the beacon keeps in the
store next to ``status.json`` (``status/history.json``, mutable): per UTC hour
for the last day and per UTC day for the last month, how many pulses came out,
from which entropy source, how many of them lacked their external value, and
their publish latency; plus the gaps (intervals with no pulse) of the last
month. It is fed with every published pulse (``HealthHistory.record``) and read
back from the store after a restart or a failover, so it is the store's, not
one process's.

Publish latency here is from a pulse's timeStamp until the pulse, its pages and
the time index are all published (what a reader waits for), measured when the
status is written; ``status.json``'s ``publishLatency`` is until the store
confirmed the pulse object alone.

``site_health`` decides what the status strip says. Pulse and day pages are
immutable, so the strip on every page is completed in the browser from
``status/health.json`` (written here after each pulse); "stopped" (no pulse for
over two periods) can only be told from the clock, so it is decided in the
browser too (``templates/site.js``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from beacon_verifier.format import STATUS_GAP, format_timestamp, parse_pulse

from beacon.entropy import OS_FALLBACK, QUANTUM_HARDWARE, QUANTUM_SIMULATOR, SOURCE_KINDS

__all__ = [
    "DAY_MS",
    "HEALTH_KEY",
    "HISTORY_KEY",
    "HOUR_MS",
    "LATENCY_BOUNDS_MS",
    "Bucket",
    "Health",
    "HealthHistory",
    "Reason",
    "degraded_reasons",
    "site_health",
]

HISTORY_KEY = "status/history.json"
HEALTH_KEY = "status/health.json"
HISTORY_VERSION = 1
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
#: Hours and days of history kept (one more than shown: the current one is partial).
KEEP_HOURS = 25
KEEP_DAYS = 31
#: Gaps kept (the oldest go first); a gap older than KEEP_DAYS is dropped anyway.
KEEP_GAPS = 500
#: History objects larger than this are refused (and a new history started).
MAX_HISTORY_BYTES = 1024 * 1024
#: Upper bounds (ms) of the latency histogram of each bucket; the last bucket is open.
LATENCY_BOUNDS_MS = (
    50,
    100,
    250,
    500,
    1000,
    2000,
    5000,
    10_000,
    30_000,
    60_000,
    120_000,
    300_000,
)
#: Publish latency of the last pulse above which the beacon is lagging, in periods (the
#: next pulse is due by then).
LAG_PERIODS = 1


@dataclass(slots=True)
class Bucket:
    """What happened in one hour or day."""

    start_ms: int
    pulses: int = 0
    gaps: int = 0
    missed: int = 0  # pulses that a gap closing in this bucket skipped
    sources: dict[str, int] = field(default_factory=dict)
    fallbacks: int = 0
    external_missing: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS_MS) + 1))

    def add(
        self, *, kind: str, gap: bool, missed: int, external_missing: bool, latency_ms: int
    ) -> None:
        self.pulses += 1
        self.gaps += int(gap)
        self.missed += missed
        self.sources[kind] = self.sources.get(kind, 0) + 1
        self.fallbacks += int(kind == OS_FALLBACK)
        self.external_missing += int(external_missing)
        slot = len(LATENCY_BOUNDS_MS)
        for i, bound in enumerate(LATENCY_BOUNDS_MS):
            if latency_ms <= bound:
                slot = i
                break
        self.latency[slot] += 1

    def latency_percentile(self, q: float) -> int | None:
        """The upper bound (ms) of the histogram bucket holding the ``q`` quantile;
        None without samples, -1 when it lies beyond the last bound."""
        total = sum(self.latency)
        if total == 0:
            return None
        need = q * total
        running = 0
        for i, count in enumerate(self.latency):
            running += count
            if running >= need and count:
                return LATENCY_BOUNDS_MS[i] if i < len(LATENCY_BOUNDS_MS) else -1
        return -1

    def to_json(self) -> dict[str, Any]:
        return {
            "start": self.start_ms,
            "pulses": self.pulses,
            "gaps": self.gaps,
            "missed": self.missed,
            "sources": dict(sorted(self.sources.items())),
            "fallbacks": self.fallbacks,
            "externalMissing": self.external_missing,
            "latencyHistogramMs": self.latency,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Bucket:
        """Raises ``ValueError``/``TypeError``/``KeyError`` on a malformed bucket."""
        latency = [int(n) for n in obj["latencyHistogramMs"]]
        if len(latency) != len(LATENCY_BOUNDS_MS) + 1 or min(latency) < 0:
            raise ValueError("latency histogram of the wrong shape")
        sources = {str(k): int(v) for k, v in dict(obj["sources"]).items()}
        return cls(
            start_ms=int(obj["start"]),
            pulses=int(obj["pulses"]),
            gaps=int(obj["gaps"]),
            missed=int(obj["missed"]),
            sources=sources,
            fallbacks=int(obj["fallbacks"]),
            external_missing=int(obj["externalMissing"]),
            latency=latency,
        )


@dataclass(slots=True)
class HealthHistory:
    """Hourly and daily buckets, gaps, and the last pulse recorded (to count each once)."""

    hours: dict[int, Bucket] = field(default_factory=dict)
    days: dict[int, Bucket] = field(default_factory=dict)
    gaps: list[tuple[int, int]] = field(default_factory=list)  # (last pulse before, pulse after)
    since_ms: int | None = None  # the first pulse this history saw
    last: tuple[int, int, int] | None = None  # (time_ms, chain, pulse) of the last recorded

    def record(self, pulse_bytes: bytes, kind: str, *, latency_ms: int) -> bool:
        """Count one published pulse; False (and nothing counted) if it was counted already."""
        pulse = parse_pulse(pulse_bytes)
        key = (pulse.time_ms, pulse.chain_index, pulse.pulse_index)
        if self.last is not None and key <= self.last:
            return False
        t = pulse.time_ms
        missed = 0
        gap = bool(pulse.status_code & STATUS_GAP)
        if self.last is not None and t - self.last[0] > pulse.period:
            gap = True
        if gap and self.last is not None:
            missed = max(0, (t - self.last[0]) // pulse.period - 1)
            self.gaps.append((self.last[0], t))
        external_missing = pulse.external.status_code != 0
        for buckets, size in ((self.hours, HOUR_MS), (self.days, DAY_MS)):
            start = t - t % size
            bucket = buckets.setdefault(start, Bucket(start_ms=start))
            bucket.add(
                kind=kind,
                gap=gap,
                missed=missed,
                external_missing=external_missing,
                latency_ms=max(0, latency_ms),
            )
        if self.since_ms is None:
            self.since_ms = t
        self.last = key
        self._prune(t)
        return True

    def _prune(self, now_ms: int) -> None:
        hour_floor = now_ms - now_ms % HOUR_MS - (KEEP_HOURS - 1) * HOUR_MS
        day_floor = now_ms - now_ms % DAY_MS - (KEEP_DAYS - 1) * DAY_MS
        self.hours = {k: v for k, v in self.hours.items() if k >= hour_floor}
        self.days = {k: v for k, v in self.days.items() if k >= day_floor}
        self.gaps = [g for g in self.gaps if g[1] >= day_floor][-KEEP_GAPS:]

    def series(self, *, size_ms: int, count: int, now_ms: int) -> list[Bucket]:
        """``count`` buckets of ``size_ms`` ending with the one holding ``now_ms`` (empty ones
        filled in), oldest first."""
        source = self.hours if size_ms == HOUR_MS else self.days
        end = now_ms - now_ms % size_ms
        starts = [end - i * size_ms for i in range(count - 1, -1, -1)]
        return [source.get(s) or Bucket(start_ms=s) for s in starts]

    def to_bytes(self) -> bytes:
        obj = {
            "version": HISTORY_VERSION,
            "since": self.since_ms,
            "last": list(self.last) if self.last else None,
            "hours": [b.to_json() for _, b in sorted(self.hours.items())],
            "days": [b.to_json() for _, b in sorted(self.days.items())],
            "gaps": [list(g) for g in self.gaps],
        }
        return json.dumps(obj, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes | None) -> HealthHistory:
        """The history in ``data``; a new, empty one when there is none or it is unreadable
        (the history is a convenience for the charts, never an authority)."""
        if data is None or len(data) > MAX_HISTORY_BYTES:
            return cls()
        try:
            obj = json.loads(data)
            if obj.get("version") != HISTORY_VERSION:
                return cls()
            last = obj.get("last")
            since = obj.get("since")
            return cls(
                hours={b.start_ms: b for b in map(Bucket.from_json, obj["hours"])},
                days={b.start_ms: b for b in map(Bucket.from_json, obj["days"])},
                gaps=[(int(a), int(b)) for a, b in obj["gaps"]],
                since_ms=None if since is None else int(since),
                last=None if last is None else (int(last[0]), int(last[1]), int(last[2])),
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return cls()


# --- healthy, degraded, stopped ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reason:
    """Why the beacon is degraded: a stable code and words for people."""

    code: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Health:
    """What the status strip says: ``state`` is "healthy", "degraded" or "unknown"
    ("stopped" is decided in the browser, from ``last_ms`` and ``period_ms``)."""

    state: str
    reasons: tuple[Reason, ...]
    last_ms: int | None
    period_ms: int | None
    summary: str = "pulses are on time."

    def to_bytes(self) -> bytes:
        obj = {
            "state": self.state,
            "summary": self.summary,
            "degraded": [{"code": r.code, "message": r.message} for r in self.reasons],
            "lastPulseMs": self.last_ms,
            "period": self.period_ms,
        }
        return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def _listed(status: Mapping[str, Any]) -> list[Reason]:
    """The ``degraded`` list of ``status.json`` (entries that are not {code, message} skipped)."""
    found = status.get("degraded")
    reasons = []
    if isinstance(found, list):
        for entry in found:
            if isinstance(entry, Mapping):
                code, message = entry.get("code"), entry.get("message")
                if isinstance(code, str) and code:
                    reasons.append(Reason(code, message if isinstance(message, str) else code))
    return reasons


def degraded_reasons(
    status: Mapping[str, Any],
    *,
    last_kind: str | None = None,
    last_external_code: int | None = None,
    last_latency_ms: int | None = None,
    period_ms: int | None = None,
) -> list[Reason]:
    """Every reason the beacon is degraded, from ``status.json`` and the last pulse.

    ``status.json``'s own ``degraded`` list comes first; then what the page can
    tell itself when that list does not say it: the last pulse's entropy came
    from the OS fallback, its external value is missing, or publishing lags
    (pulses waiting in the outbox, or the last pulse took over a period to publish).
    """
    reasons = _listed(status)
    codes = {r.code for r in reasons}

    def add(code: str, message: str) -> None:
        if code not in codes:
            codes.add(code)
            reasons.append(Reason(code, message))

    kind = last_kind if last_kind is not None else status.get("lastPulseSource")
    if kind == OS_FALLBACK:
        why = status.get("lastFallbackReason")
        add(
            "entropy-fallback",
            "the latest pulse's entropy came from the operating system, not from quantum circuits"
            + (f" ({why})" if isinstance(why, str) and why else ""),
        )
    if last_external_code not in (None, 0):
        add(
            "external-missing",
            f"the latest pulse has no external value (code {last_external_code})",
        )
    outbox = status.get("outboxLength")
    period = period_ms if period_ms is not None else status.get("period")
    if isinstance(outbox, int) and not isinstance(outbox, bool) and outbox > 1:
        add("publish-lag", f"{outbox} signed pulses are waiting to be published")
    elif last_latency_ms is not None and isinstance(period, int) and period > 0:
        if last_latency_ms > period * LAG_PERIODS:
            add(
                "publish-lag",
                f"the latest pulse took {last_latency_ms / 1000:.1f} s to publish"
                f" (a pulse is due every {period / 1000:g} s)",
            )
    return reasons


def site_health(
    status: Mapping[str, Any] | None,
    *,
    last_kind: str | None = None,
    last_external_code: int | None = None,
    last_ms: int | None = None,
    period_ms: int | None = None,
    last_latency_ms: int | None = None,
) -> Health:
    """The strip's state from what is known at render time (``status`` may be absent)."""
    status = status or {}
    period = status.get("period")
    if period_ms is None and isinstance(period, int) and not isinstance(period, bool):
        period_ms = period
    reasons = degraded_reasons(
        status,
        last_kind=last_kind,
        last_external_code=last_external_code,
        last_latency_ms=last_latency_ms,
        period_ms=period_ms,
    )
    kind = last_kind if last_kind is not None else status.get("lastPulseSource")
    return Health(
        state="degraded" if reasons else "healthy",
        reasons=tuple(reasons),
        last_ms=last_ms,
        period_ms=period_ms,
        summary=_SUMMARIES.get(kind if isinstance(kind, str) else "", "pulses are on time."),
    )


#: What a healthy strip says, by the entropy source of the latest pulse: a simulator is
#: never called quantum entropy.
_SUMMARIES = {
    QUANTUM_HARDWARE: "pulses are on time, with entropy from quantum hardware.",
    QUANTUM_SIMULATOR: "pulses are on time; their entropy comes from a quantum circuit"
    " simulator (pseudo-random bits, not quantum hardware) mixed with the operating"
    " system's.",
}


def load_status(data: bytes | None) -> dict[str, Any]:
    """``status.json``'s object, or {} when it is missing or not a JSON object."""
    if data is None or len(data) > MAX_HISTORY_BYTES:
        return {}
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return {}
    return obj if isinstance(obj, dict) else {}


def kinds_in_order(buckets: Iterable[Bucket]) -> list[str]:
    """Source kinds seen in ``buckets``: the known ones in their order, then any other."""
    seen = {k for b in buckets for k in b.sources}
    return [k for k in SOURCE_KINDS if k in seen] + sorted(seen - set(SOURCE_KINDS))


def gap_rows(gaps: Sequence[tuple[int, int]], period_ms: int) -> list[dict[str, Any]]:
    """The gaps, newest first, as the status page lists them."""
    return [
        {
            "after": format_timestamp(a),
            "before": format_timestamp(b),
            "missed": max(0, (b - a) // period_ms - 1),
        }
        for a, b in reversed(gaps)
    ]
