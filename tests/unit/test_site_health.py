"""The site's health: the history behind the status page's charts, and what the strip says."""

from __future__ import annotations

import json

from beacon.publish.charts import Series, bar_chart, timeline
from beacon.publish.health import (
    DAY_MS,
    HOUR_MS,
    Bucket,
    HealthHistory,
    degraded_reasons,
    site_health,
)
from beacon.pulse.keys import Signer
from tests.unit.test_builder import MINUTE, build_chain, ms


def history_of(signer: Signer, times: list[int], kinds: list[str]) -> HealthHistory:
    history = HealthHistory()
    for built, kind in zip(build_chain(times, signer), kinds, strict=True):
        assert history.record(built.data, kind, latency_ms=800)
    return history


def test_history_counts_pulses_sources_and_gaps_per_hour_and_day(signer: Signer) -> None:
    start = ms("2026-03-01T23:58:00")
    times = [start, start + MINUTE, start + 5 * MINUTE, start + 6 * MINUTE]  # gap: 3 missed
    kinds = ["quantum-simulator", "quantum-simulator", "os-fallback", "os-fallback"]
    history = history_of(signer, times, kinds)
    hour_23, hour_00 = start - start % HOUR_MS, start - start % HOUR_MS + HOUR_MS
    assert history.hours[hour_23].pulses == 2 and history.hours[hour_00].pulses == 2
    assert history.hours[hour_00].gaps == 1 and history.hours[hour_00].missed == 3
    assert history.hours[hour_00].fallbacks == 2
    assert history.hours[hour_23].sources == {"quantum-simulator": 2}
    assert sorted(history.days) == [hour_23 - hour_23 % DAY_MS, hour_00]  # the day boundary
    assert history.gaps == [(times[1], times[2])]
    assert history.since_ms == start


def test_a_pulse_is_counted_once_and_the_history_survives_the_store(signer: Signer) -> None:
    start = ms("2026-03-01T10:00:00")
    built = build_chain([start, start + MINUTE], signer)
    history = HealthHistory()
    assert history.record(built[0].data, "quantum-simulator", latency_ms=100)
    assert history.record(built[1].data, "quantum-simulator", latency_ms=200)
    assert not history.record(built[1].data, "quantum-simulator", latency_ms=200)  # a retry
    again = HealthHistory.from_bytes(history.to_bytes())
    assert again.to_bytes() == history.to_bytes()
    assert not again.record(built[0].data, "quantum-simulator", latency_ms=100)
    assert again.hours[start].pulses == 2


def test_an_unreadable_history_starts_afresh() -> None:
    for data in (None, b"not json", b"[]", b'{"version": 99}', b'{"version": 1, "hours": 3}'):
        assert HealthHistory.from_bytes(data).hours == {}


def test_old_buckets_and_gaps_are_dropped(signer: Signer) -> None:
    start = ms("2026-03-01T10:00:00")
    later = start + 40 * DAY_MS
    history = history_of(signer, [start, start + MINUTE * 3, later], ["os-fallback"] * 3)
    assert list(history.hours) == [later] and list(history.days) == [later - later % DAY_MS]
    assert history.gaps == [(start + 3 * MINUTE, later)]  # the gap that ends now stays


def test_latency_percentiles_are_bucket_bounds() -> None:
    bucket = Bucket(start_ms=0)
    assert bucket.latency_percentile(0.5) is None
    for latency in [40] * 98 + [900, 400_000]:
        bucket.add(kind="x", gap=False, missed=0, external_missing=False, latency_ms=latency)
    assert bucket.latency_percentile(0.5) == 50
    assert bucket.latency_percentile(0.99) == 1000
    assert bucket.latency_percentile(1.0) == -1  # beyond the last bound


def test_degraded_reasons_from_status_json_and_the_last_pulse() -> None:
    status = {
        "degraded": [{"code": "quantum-harvest-failing", "message": "jobs fail"}, "junk"],
        "lastPulseSource": "os-fallback",
        "lastFallbackReason": "no job in time",
        "period": 60_000,
    }
    codes = [r.code for r in degraded_reasons(status)]
    assert codes == ["quantum-harvest-failing", "entropy-fallback"]
    # A code status.json lists already is not repeated.
    listed = {"degraded": [{"code": "entropy-fallback", "message": "said by the beacon"}]}
    assert [r.message for r in degraded_reasons(listed, last_kind="os-fallback")] == [
        "said by the beacon"
    ]
    lag = degraded_reasons({"outboxLength": 5})
    assert [r.code for r in lag] == ["publish-lag"] and "5 signed pulses" in lag[0].message
    slow = degraded_reasons({}, last_latency_ms=90_000, period_ms=60_000)
    assert [r.code for r in slow] == ["publish-lag"]
    assert degraded_reasons({}, last_latency_ms=2_000, period_ms=60_000) == []
    missing = degraded_reasons({}, last_kind="quantum-hardware", last_external_code=2)
    assert [r.code for r in missing] == ["external-missing"]


def test_site_health_says_healthy_or_degraded_and_what_the_browser_needs() -> None:
    healthy = site_health({"period": 1000}, last_kind="quantum-simulator", last_ms=5)
    assert healthy.state == "healthy" and healthy.period_ms == 1000
    # Never "quantum entropy" for a simulator's bits.
    assert "simulator" in healthy.summary and "not quantum hardware" in healthy.summary
    hardware = site_health({}, last_kind="quantum-hardware")
    assert hardware.summary == "pulses are on time, with entropy from quantum hardware."
    assert json.loads(healthy.to_bytes()) == {
        "state": "healthy",
        "summary": healthy.summary,
        "degraded": [],
        "lastPulseMs": 5,
        "period": 1000,
    }
    degraded = site_health(None, last_kind="os-fallback", period_ms=60_000)
    assert degraded.state == "degraded" and degraded.reasons[0].code == "entropy-fallback"


def test_charts_escape_their_text_and_draw_one_bar_per_value() -> None:
    hostile = "<script>alert(1)</script>"
    svg = bar_chart(
        hostile,
        ["a", "b", "c"],
        [Series("pulses", [1, 0, 3]), Series(hostile, [2, 2, 0])],
        stacked=True,
    )
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert svg.count("<rect") == 4  # zero values draw nothing
    line = timeline(
        "t", start_ms=0, end_ms=100, since_ms=10, last_ms=90, gaps=[(40, 60)], ticks=[(0, "x")]
    )
    assert line.count('class="gap"') == 1
