"""The beacon's operational figures: counted in one place, read two ways.

``Metrics`` is fed by the service at a few points (a pulse committed, its pulse
object confirmed by the store, ``status.json`` written) and keeps plain numbers
under a lock, so the cost per pulse is a few additions and one ``bisect``.
``Metrics.status`` renders them for ``status.json``; ``serve`` renders the very
same snapshot for Prometheus through a custom collector on a private registry,
so the two can never disagree. Only ``serve`` needs ``prometheus-client`` (the
optional extra ``metrics``): the figures exist, and reach ``status.json``,
whether or not the endpoint is on.
"""

from __future__ import annotations

import bisect
import importlib
import statistics
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from beacon.entropy import SOURCE_KINDS
from beacon.errors import BeaconError, ConfigError

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client.metrics_core import Metric

#: Upper bounds (seconds) of the publish-latency buckets: 1 ms to a minute.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
#: How many recent publish latencies the percentiles in ``status.json`` cover.
RECENT_LATENCIES = 256
#: Roles a beacon process can hold: one of a failover pair, or alone.
LEASE_ROLES = ("active", "standby")
#: The state counter of batches that failed their health tests when drawn.
HEALTH_FAILURES = "health_failures"
EXTRA_HINT = "pip install 'quantum-beacon[metrics]'"


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """Every figure at one instant; what both ``status.json`` and Prometheus read."""

    pulses_by_source: Mapping[str, int]
    last_source: str | None
    outbox_length: int
    latency_bucket_counts: tuple[int, ...]  # per bucket of LATENCY_BUCKETS, then +Inf
    latency_sum: float
    recent_latencies: tuple[float, ...]
    health_failures: int
    pool_usable_draws: int | None
    pool_oldest_age: float | None  # seconds; None without a pool or a usable batch
    harvest_failures: int | None  # harvests failed in a row; None without a pool
    harvest_failing: bool | None  # as many in a row as harvest_failing_after, or more
    lease_role: str
    lease_holder: str | None

    @property
    def latency_count(self) -> int:
        return sum(self.latency_bucket_counts)


class Metrics:
    """The figures of one beacon process, safe to feed and read from any thread.

    Pulse and health-failure counts start from the durable state counters, so
    they agree with ``pulsesEmitted`` and survive restarts; latencies are this
    process's. ``now`` gives Unix seconds (for the age of the pool's oldest batch).
    """

    def __init__(
        self, *, now: Callable[[], float], counters: Mapping[str, int], outbox_length: int
    ) -> None:
        self._now = now
        self._lock = threading.Lock()
        self._pulses = {kind: counters.get(f"source:{kind}", 0) for kind in SOURCE_KINDS}
        self._last_source: str | None = None
        self._outbox = outbox_length
        self._buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self._latency_sum = 0.0
        self._recent: deque[float] = deque(maxlen=RECENT_LATENCIES)
        self._last_stored: tuple[int, int] | None = None
        self._health_failures = counters.get(HEALTH_FAILURES, 0)
        self._pool_rejected = 0
        self._pool_draws: int | None = None
        self._pool_oldest_at: float | None = None
        self._harvest: tuple[int, bool] | None = None
        self._lease: tuple[str, str | None] = ("standby", None)

    # --- feeding ------------------------------------------------------------------

    def pulse_committed(self, kind: str) -> None:
        """A pulse whose entropy came from ``kind`` is in the chain and the outbox."""
        with self._lock:
            self._pulses[kind] = self._pulses.get(kind, 0) + 1
            self._last_source = kind
            self._outbox += 1

    def pulse_stored(self, chain_index: int, pulse_index: int, time_ms: int, now_ms: int) -> None:
        """The store confirmed the pulse object of ``chain_index``/``pulse_index``.

        Its latency is counted from the pulse's nominal timeStamp ``time_ms``.
        A pulse stored again (a publish retried after a later write failed) is
        counted once.
        """
        key = (chain_index, pulse_index)
        seconds = max(0.0, (now_ms - time_ms) / 1000)
        with self._lock:
            if self._last_stored is not None and key <= self._last_stored:
                return
            self._last_stored = key
            self._buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
            self._latency_sum += seconds
            self._recent.append(seconds)

    def set_outbox_length(self, length: int) -> None:
        """The outbox length as read from the state (pulses not confirmed by the store)."""
        with self._lock:
            self._outbox = length

    def health_test_failed(self) -> None:
        """A freshly drawn batch failed its SP 800-90B health tests."""
        with self._lock:
            self._health_failures += 1

    def set_pool(self, pool: Mapping[str, Any]) -> None:
        """Take the level, oldest batch and rejected batches from a pool's status.

        A status without them (the pool could not be read) keeps the last figures.
        """
        draws = pool.get("usableDraws")
        batches = pool.get("batches")
        failures, failing = pool.get("consecutiveHarvestFailures"), pool.get("harvestFailing")
        with self._lock:
            if isinstance(failures, int) and isinstance(failing, bool):
                self._harvest = (failures, failing)
            if isinstance(draws, int):
                self._pool_draws = draws
                oldest = pool.get("oldestUsableHarvestedAt")
                self._pool_oldest_at = float(oldest) if isinstance(oldest, int | float) else None
            if isinstance(batches, Mapping):
                self._pool_rejected = int(batches.get("rejected", 0))

    def set_lease(self, role: str, holder: str | None) -> None:
        """Which role this process holds, and who holds the lease (None: nobody, or no lease)."""
        if role not in LEASE_ROLES:
            raise ValueError(f"lease role must be one of {', '.join(LEASE_ROLES)}, got {role!r}")
        with self._lock:
            self._lease = (role, holder)

    # --- reading ------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Every figure at this instant."""
        with self._lock:
            oldest = self._pool_oldest_at
            return Snapshot(
                pulses_by_source=dict(self._pulses),
                last_source=self._last_source,
                outbox_length=self._outbox,
                latency_bucket_counts=tuple(self._buckets),
                latency_sum=self._latency_sum,
                recent_latencies=tuple(self._recent),
                # Fresh-job sources raise on a failing batch (counted here); a pool
                # stores it as rejected. One source is configured, so both add up.
                health_failures=self._health_failures + self._pool_rejected,
                pool_usable_draws=self._pool_draws,
                pool_oldest_age=None if oldest is None else max(0.0, self._now() - oldest),
                harvest_failures=None if self._harvest is None else self._harvest[0],
                harvest_failing=None if self._harvest is None else self._harvest[1],
                lease_role=self._lease[0],
                lease_holder=self._lease[1],
            )

    def status(self) -> dict[str, Any]:
        """The figures for ``status.json`` (camelCase; latencies in milliseconds)."""
        return status_figures(self.snapshot())


def status_figures(snap: Snapshot) -> dict[str, Any]:
    """``snap`` as ``status.json`` keys; the pool's figures are already under ``pool``."""
    return {
        "outboxLength": snap.outbox_length,
        "lastPulseSource": snap.last_source,
        "publishLatency": latency_summary(snap),
        "healthTestFailures": snap.health_failures,
        "lease": {"role": snap.lease_role, "holder": snap.lease_holder},
    }


def latency_summary(snap: Snapshot) -> dict[str, Any]:
    """Count of pulses measured, and the median and 99th percentile (ms) of the recent ones."""
    recent = sorted(snap.recent_latencies)
    if len(recent) >= 2:
        cuts = statistics.quantiles(recent, n=100, method="inclusive")
        p50, p99 = cuts[49], cuts[98]
    elif recent:
        p50 = p99 = recent[0]
    else:
        return {"count": 0, "recent": 0, "p50Ms": None, "p99Ms": None}
    return {
        "count": snap.latency_count,
        "recent": len(recent),
        "p50Ms": round(p50 * 1000, 3),
        "p99Ms": round(p99 * 1000, 3),
    }


# --- Prometheus -----------------------------------------------------------------------


def prometheus_families(snap: Snapshot) -> list[Metric]:
    """``snap`` as Prometheus metric families (needs ``prometheus-client``)."""
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        InfoMetricFamily,
    )

    pulses = CounterMetricFamily(
        "beacon_pulses_emitted",
        "Pulses emitted (committed to the chain), by the kind of their entropy source.",
        labels=["source"],
    )
    for kind, count in sorted(snap.pulses_by_source.items()):
        pulses.add_metric([kind], count)
    last = GaugeMetricFamily(
        "beacon_last_pulse_source",
        "1 for the entropy source kind of the last pulse this process emitted, else 0.",
        labels=["source"],
    )
    for kind in SOURCE_KINDS:
        last.add_metric([kind], 1.0 if kind == snap.last_source else 0.0)
    cumulative, buckets = 0, []
    bounds = (*(repr(b) for b in LATENCY_BUCKETS), "+Inf")
    for bound, count in zip(bounds, snap.latency_bucket_counts, strict=True):
        cumulative += count
        buckets.append((bound, float(cumulative)))
    families: list[Metric] = [
        pulses,
        HistogramMetricFamily(
            "beacon_publish_latency_seconds",
            "From a pulse's timeStamp to the store confirming its pulse object.",
            buckets=buckets,
            sum_value=snap.latency_sum,
        ),
        GaugeMetricFamily(
            "beacon_outbox_length",
            "Pulses signed and stored locally, not yet confirmed by the store.",
            value=snap.outbox_length,
        ),
        last,
        CounterMetricFamily(
            "beacon_health_test_failures",
            "Batches of quantum bits that failed their SP 800-90B health tests.",
            value=snap.health_failures,
        ),
        InfoMetricFamily(
            "beacon_lease",
            "The failover role of this process and the lease holder.",
            value={"role": snap.lease_role, "holder": snap.lease_holder or ""},
        ),
    ]
    if snap.pool_usable_draws is not None:
        families.append(
            GaugeMetricFamily(
                "beacon_pool_usable_draws",
                "Pulses the pooled quantum bits can still serve.",
                value=snap.pool_usable_draws,
            )
        )
    if snap.pool_oldest_age is not None:
        families.append(
            GaugeMetricFamily(
                "beacon_pool_oldest_usable_age_seconds",
                "Age of the oldest usable pooled batch (discarded at pool_max_age_hours).",
                value=snap.pool_oldest_age,
            )
        )
    if snap.harvest_failures is not None:
        families.append(
            GaugeMetricFamily(
                "beacon_quantum_harvest_consecutive_failures",
                "Quantum harvests (pool jobs) that failed in a row; 0 after a good one.",
                value=snap.harvest_failures,
            )
        )
        families.append(
            GaugeMetricFamily(
                "beacon_quantum_harvest_failing",
                "1 once harvest_failing_after harvests in a row have failed, else 0.",
                value=1.0 if snap.harvest_failing else 0.0,
            )
        )
    return families


def require_prometheus_client() -> None:
    """Raise ``ConfigError`` (one line, naming the extra) when prometheus-client is missing."""
    try:
        importlib.import_module("prometheus_client")
    except ImportError:
        raise ConfigError(
            f"metrics_port is set but prometheus-client is not installed: {EXTRA_HINT}"
        ) from None


class MetricsServer:
    """The Prometheus endpoint: ``/metrics`` over HTTP, on its own daemon thread."""

    def __init__(self, httpd: WSGIServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread

    @property
    def url(self) -> str:
        host, port = str(self._httpd.server_address[0]), int(self._httpd.server_address[1])
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def serve(metrics: Metrics, *, port: int, address: str) -> MetricsServer:
    """Serve ``metrics`` for Prometheus on ``address``:``port`` from a private registry.

    Raises ``ConfigError`` when prometheus-client is missing and ``BeaconError``
    when the address cannot be bound (in use, not on this host).
    """
    require_prometheus_client()
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.registry import Collector

    class _Collector(Collector):
        def collect(self) -> Iterator[Metric]:
            yield from prometheus_families(metrics.snapshot())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    try:
        httpd, thread = start_http_server(port, addr=address, registry=registry)
    except OSError as exc:
        raise BeaconError(
            f"cannot serve metrics on {address} port {port}: {exc.strerror or exc}"
        ) from None
    return MetricsServer(httpd, thread)
