"""The one status builder: what ``status.json`` and ``beacon status`` say.

``state_status`` is the part read from the durable state (counters, the last
fallback's reason), shared by ``status.json`` (written by the publisher after
each pulse) and ``beacon status`` (read from the state of a running or stopped
beacon). ``build_status`` adds what only the running beacon knows.

Other modules add keys with one line in ``build_status`` calling a small
function of their own (``status.update(harvest_status(source))``) and add
reasons to ``status["degraded"]`` (a list of ``{"code", "message"}``, empty
when healthy).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from beacon_verifier.format import format_timestamp

from beacon.drand import ExternalMixer, merge_status
from beacon.entropy import OS_FALLBACK, EntropySource, ReportsPool
from beacon.entropy.harvest import degraded as harvest_degraded
from beacon.errors import EntropyError
from beacon.metrics import Metrics
from beacon.state import State

#: An outbox longer than this many pulses is reported as "publish-lag".
PUBLISH_LAG_PULSES = 2


def state_status(state: State) -> dict[str, Any]:
    """The figures kept in the state: pulses signed, fallbacks, retries, sources."""
    counters = state.counters()
    return {
        "pulsesEmitted": counters.get("pulses", 0),
        # Pulses whose entropy came from the OS, whatever the reason (also a
        # quantum source that could not be set up at all).
        "fallbacks": counters.get(f"source:{OS_FALLBACK}", 0),
        "lastFallbackReason": state.meta("last_fallback_reason"),
        "publishRetries": counters.get("publish_retries", 0),
        "sources": {k.split(":", 1)[1]: v for k, v in counters.items() if k.startswith("source:")},
    }


def build_status(
    state: State,
    *,
    last_ms: int,
    period_ms: int,
    certificate_id: bytes,
    source: EntropySource,
    metrics: Metrics,
    external: ExternalMixer | None = None,
) -> dict[str, Any]:
    """``status.json`` after the pulse at ``last_ms`` was published."""
    status: dict[str, Any] = {
        "lastPulse": format_timestamp(last_ms),
        "nextDue": format_timestamp(last_ms + period_ms),
        "period": period_ms,
        "certificateId": certificate_id.hex(),
        "entropySource": source.name,
        **state_status(state),
    }
    pool: object = None
    if isinstance(source, ReportsPool):
        try:
            pool = source.pool_status()
        except EntropyError as exc:
            pool = {"error": str(exc)}
        status["pool"] = pool
    metrics.set_outbox_length(state.outbox_length())
    if isinstance(pool, Mapping):
        metrics.set_pool(pool)
    status.update(metrics.status())
    degraded: list[dict[str, str]] = []
    if status["outboxLength"] > PUBLISH_LAG_PULSES:
        degraded.append(
            {
                "code": "publish-lag",
                "message": f"{status['outboxLength']} signed pulses are not published yet",
            }
        )
    status["degraded"] = degraded
    # Other modules' keys: one line each below, e.g. status.update(harvest_status(source)).
    degraded.extend(harvest_degraded(status.get("pool")))
    merge_status(status, external)
    return status
