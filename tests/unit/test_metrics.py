"""The metrics: counting, the status.json figures and their Prometheus rendering agree.

Pure parts with plain inputs; the pool figures from a real pool; the service's
figures from real ticks on an injected clock; the endpoint as a real HTTP server.
"""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from beacon.config import Settings, load_settings
from beacon.entropy import OS_FALLBACK, QUANTUM_HARDWARE, QUANTUM_SIMULATOR, EntropyDraw
from beacon.entropy.health import run_health_tests
from beacon.entropy.os_source import OsSource
from beacon.entropy.pool import EntropyPool, PoolPolicy
from beacon.errors import BeaconError, ConfigError, HealthTestError
from beacon.metrics import (
    HEALTH_FAILURES,
    LATENCY_BUCKETS,
    RECENT_LATENCIES,
    Metrics,
    Snapshot,
    serve,
    status_figures,
)
from beacon.publish.local import LocalDirPublisher
from beacon.pulse.keys import Signer
from beacon.service import Beacon
from tests.unit.test_entropy_pool import Clock, make_batch
from tests.unit.test_service import T0, FakeClock, drain, wait_prepared


def fresh(now: float = 0.0, **counters: int) -> Metrics:
    return Metrics(now=lambda: now, counters=counters, outbox_length=0)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, keyed by name and sorted labels."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            assert isinstance(s, Sample)
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


# --- counting ---------------------------------------------------------------------------


def test_counts_start_from_the_durable_counters() -> None:
    m = Metrics(
        now=lambda: 0.0,
        counters={
            "pulses": 7,
            f"source:{OS_FALLBACK}": 2,
            f"source:{QUANTUM_SIMULATOR}": 5,
            HEALTH_FAILURES: 3,
        },
        outbox_length=4,
    )
    snap = m.snapshot()
    assert snap.pulses_by_source == {QUANTUM_HARDWARE: 0, QUANTUM_SIMULATOR: 5, OS_FALLBACK: 2}
    assert (snap.health_failures, snap.outbox_length, snap.last_source) == (3, 4, None)
    m.pulse_committed(QUANTUM_SIMULATOR)
    m.health_test_failed()
    snap = m.snapshot()
    assert snap.pulses_by_source[QUANTUM_SIMULATOR] == 6
    assert (snap.health_failures, snap.outbox_length, snap.last_source) == (4, 5, QUANTUM_SIMULATOR)
    m.set_outbox_length(0)
    assert m.snapshot().outbox_length == 0


@pytest.mark.parametrize(
    ("delay_ms", "bucket"),
    [(0, 0), (1, 0), (2, 1), (999, 9), (1000, 9), (1001, 10), (60_000, 14), (60_001, 15)],
)
def test_latency_lands_in_the_bucket_whose_bound_is_the_first_at_or_above(
    delay_ms: int, bucket: int
) -> None:
    m = fresh()
    m.pulse_stored(1, 1, T0, T0 + delay_ms)
    counts = m.snapshot().latency_bucket_counts
    assert len(counts) == len(LATENCY_BUCKETS) + 1
    assert counts[bucket] == 1 and sum(counts) == 1


def test_a_pulse_stored_again_after_a_retry_is_counted_once() -> None:
    m = fresh()
    m.pulse_stored(1, 1, T0, T0 + 10)
    m.pulse_stored(1, 1, T0, T0 + 5000)  # the retried publish of the same pulse
    m.pulse_stored(1, 2, T0 + 1000, T0 + 1020)
    m.pulse_stored(2, 1, T0 + 2000, T0 + 2030)  # a new chain counts
    snap = m.snapshot()
    assert snap.latency_count == 3
    assert snap.latency_sum == pytest.approx(0.010 + 0.020 + 0.030)


def test_status_percentiles_cover_the_recent_pulses_and_count_all() -> None:
    m = fresh()
    assert status_figures(m.snapshot())["publishLatency"] == {
        "count": 0,
        "recent": 0,
        "p50Ms": None,
        "p99Ms": None,
    }
    m.pulse_stored(1, 1, T0, T0 + 40)
    assert m.status()["publishLatency"] == {"count": 1, "recent": 1, "p50Ms": 40.0, "p99Ms": 40.0}
    for p in range(2, RECENT_LATENCIES + 102):  # 100 slow, then a window of fast ones
        m.pulse_stored(1, p, T0, T0 + (5000 if p <= 101 else 10 + p % 2))
    figures = m.status()["publishLatency"]
    assert figures["count"] == 1 + 100 + RECENT_LATENCIES
    assert figures["recent"] == RECENT_LATENCIES
    assert 10.0 <= figures["p50Ms"] <= 11.0 and figures["p99Ms"] <= 11.0


def test_lease_role_is_checked_and_reported() -> None:
    m = fresh()
    assert m.status()["lease"] == {"role": "standby", "holder": None}
    m.set_lease("standby", "host-b:4711")
    assert m.status()["lease"] == {"role": "standby", "holder": "host-b:4711"}
    with pytest.raises(ValueError, match="lease role"):
        m.set_lease("leader", None)


def test_pool_figures_come_from_a_real_pool_and_age_goes_on(tmp_path: Path) -> None:
    clock = Clock()
    pool = EntropyPool(tmp_path / "pool.db", PoolPolicy(), clock=clock)
    provenance, bits = make_batch("good", harvested_at=clock.now)
    pool.add_batch(
        kind=QUANTUM_HARDWARE, provenance=provenance, bits=bits, health=run_health_tests(bits)
    )
    provenance, bits = make_batch("bad", harvested_at=clock.now)
    bits[:, 0] = 1  # a stuck qubit: fails the repetition-count test
    pool.add_batch(
        kind=QUANTUM_HARDWARE, provenance=provenance, bits=bits, health=run_health_tests(bits)
    )
    clock.now += 100
    summary = pool.summary()
    assert summary["oldestUsableAgeSeconds"] == pytest.approx(100)
    m = Metrics(now=clock, counters={}, outbox_length=0)
    assert m.snapshot().pool_usable_draws is None
    m.set_pool(summary)
    clock.now += 50
    snap = m.snapshot()
    assert snap.pool_usable_draws == summary["usableDraws"] == pool.usable_draws() > 0
    assert snap.pool_oldest_age == pytest.approx(150)
    assert snap.health_failures == 1  # the rejected batch
    m.set_pool({"error": "database is locked"})  # an unreadable pool keeps the last figures
    assert m.snapshot().pool_usable_draws == summary["usableDraws"]


def test_an_empty_pool_has_no_oldest_batch(tmp_path: Path) -> None:
    pool = EntropyPool(tmp_path / "pool.db", PoolPolicy(), clock=Clock())
    summary = pool.summary()
    assert summary["usableDraws"] == 0 and summary["oldestUsableAgeSeconds"] is None
    m = fresh()
    m.set_pool(summary)
    assert (m.snapshot().pool_usable_draws, m.snapshot().pool_oldest_age) == (0, None)


# --- settings ---------------------------------------------------------------------------


def test_metrics_are_off_and_on_loopback_by_default() -> None:
    s = load_settings(environ={})
    assert (s.metrics_port, s.metrics_address) == (0, "127.0.0.1")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BEACON_METRICS_PORT": "65536"}, "metrics_port must be 0 (off) or 1 to 65535"),
        ({"BEACON_METRICS_PORT": "-1"}, "metrics_port must be 0 (off) or 1 to 65535"),
        ({"BEACON_METRICS_PORT": "nine"}, "metrics_port must be a int"),
        ({"BEACON_METRICS_ADDRESS": "localhost"}, "metrics_address must be an IP address"),
        ({"BEACON_METRICS_ADDRESS": ""}, "metrics_address must be an IP address"),
        ({"BEACON_METRICS_ADDRESS": "127.0.0.1:9100"}, "metrics_address must be an IP address"),
    ],
)
def test_bad_metrics_settings_are_one_line_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=env)
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("address", ["127.0.0.2", "::1", "::", "192.0.2.10"])
def test_any_ip_address_is_accepted(address: str) -> None:
    env = {"BEACON_METRICS_PORT": "9464", "BEACON_METRICS_ADDRESS": address}
    assert load_settings(environ=env).metrics_address == address


# --- the endpoint -----------------------------------------------------------------------


def test_the_endpoint_serves_the_same_snapshot_as_status() -> None:
    m = Metrics(now=lambda: 1000.0, counters={"source:quantum-hardware": 4}, outbox_length=0)
    m.pulse_committed(QUANTUM_HARDWARE)
    m.pulse_stored(1, 5, T0, T0 + 3)
    m.pulse_stored(1, 6, T0, T0 + 700)
    m.set_pool({"usableDraws": 12, "oldestUsableHarvestedAt": 900.0, "batches": {"live": 1}})
    m.set_lease("active", "beacon-a")
    server = serve(m, port=0, address="127.0.0.1")
    try:
        with urllib.request.urlopen(server.url, timeout=10) as response:
            text = response.read().decode()
    finally:
        server.close()
    got = samples(text)
    assert got[("beacon_pulses_emitted_total", (("source", QUANTUM_HARDWARE),))] == 5
    assert got[("beacon_pulses_emitted_total", (("source", OS_FALLBACK),))] == 0
    assert got[("beacon_last_pulse_source", (("source", QUANTUM_HARDWARE),))] == 1
    assert got[("beacon_last_pulse_source", (("source", QUANTUM_SIMULATOR),))] == 0
    assert got[("beacon_outbox_length", ())] == 1
    assert got[("beacon_publish_latency_seconds_count", ())] == 2
    assert got[("beacon_publish_latency_seconds_sum", ())] == pytest.approx(0.703)
    assert got[("beacon_publish_latency_seconds_bucket", (("le", "0.001"),))] == 0
    assert got[("beacon_publish_latency_seconds_bucket", (("le", "0.005"),))] == 1
    assert got[("beacon_publish_latency_seconds_bucket", (("le", "1.0"),))] == 2
    assert got[("beacon_publish_latency_seconds_bucket", (("le", "+Inf"),))] == 2
    assert got[("beacon_pool_usable_draws", ())] == 12
    assert got[("beacon_pool_oldest_usable_age_seconds", ())] == 100
    assert got[("beacon_health_test_failures_total", ())] == 0
    assert got[("beacon_lease_info", (("holder", "beacon-a"), ("role", "active")))] == 1
    status = m.status()
    assert status["outboxLength"] == 1 and status["publishLatency"]["count"] == 2
    assert status["lastPulseSource"] == QUANTUM_HARDWARE


def test_a_port_in_use_is_a_one_line_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BeaconError) as caught:
            serve(fresh(), port=port, address="127.0.0.1")
    assert f"cannot serve metrics on 127.0.0.1 port {port}" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_snapshot_without_pool_renders_no_pool_families() -> None:
    snap = fresh().snapshot()
    assert isinstance(snap, Snapshot) and snap.pool_usable_draws is None
    server = serve(fresh(), port=0, address="127.0.0.1")
    try:
        with urllib.request.urlopen(server.url, timeout=10) as response:
            text = response.read().decode()
    finally:
        server.close()
    assert "beacon_pool" not in text and "beacon_outbox_length 0.0" in text


# --- the service ------------------------------------------------------------------------


class HealthFailsOn:
    """OS-backed draws, except that some pulses' batches fail their health tests."""

    name = "flaky-qpu"

    def __init__(self, failing: set[int]) -> None:
        self.failing = failing

    def draw(self, chain_index: int, pulse_index: int) -> EntropyDraw:
        if pulse_index in self.failing:
            raise HealthTestError(f"job for {pulse_index} failed health tests: rct")
        return OsSource("healthy").draw(chain_index, pulse_index)


def test_the_service_feeds_status_json_and_restarts_from_the_state(
    tmp_path: Path, signer: Signer
) -> None:
    settings = Settings(data_dir=tmp_path / "data", out_dir=tmp_path / "site", period=60)

    def make(clock: FakeClock) -> Beacon:
        beacon = Beacon(
            settings=settings,
            signer=signer,
            clock=clock,
            source=HealthFailsOn({2}),
            fallback=OsSource,
            publisher=LocalDirPublisher(settings.out_dir),
        )
        beacon.lease.try_acquire()  # a beacon signs only while it holds the lease
        return beacon

    clock = FakeClock(T0 + 250)
    beacon = make(clock)
    beacon.prime()
    for i in range(3):
        clock.now = T0 + i * 60_000 + 250
        wait_prepared(beacon)
        assert beacon.tick()
    assert beacon.metrics.snapshot().outbox_length == 3  # nothing published yet
    clock.now = T0 + 2 * 60_000 + 1_500  # the store confirms everything 1.5 s after pulse 3
    drain(beacon)
    status = json.loads((settings.out_dir / "status.json").read_bytes())
    assert status["healthTestFailures"] == 1
    assert status["outboxLength"] == 0
    assert status["lastPulseSource"] == OS_FALLBACK
    assert status["lease"] == {"role": "active", "holder": beacon.lease.holder}
    latency = status["publishLatency"]
    assert (latency["count"], latency["recent"]) == (3, 3)
    assert latency["p50Ms"] == pytest.approx(61_500)  # of 121.5 s, 61.5 s and 1.5 s
    snap = beacon.metrics.snapshot()
    assert snap.latency_bucket_counts[LATENCY_BUCKETS.index(2.5)] == 1
    assert snap.latency_bucket_counts[-1] == 2  # over a minute late: +Inf
    assert status["pulsesEmitted"] == sum(snap.pulses_by_source.values()) == 3

    again = make(FakeClock(T0 + 3 * 60_000))
    try:
        snap = again.metrics.snapshot()
        assert snap.health_failures == 1 and snap.outbox_length == 0
        assert snap.pulses_by_source[OS_FALLBACK] == 3
        assert again.state.counters()[HEALTH_FAILURES] == 1
    finally:
        again.shutdown()
