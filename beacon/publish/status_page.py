"""The status page (``status.html``) and what feeds it, after every published pulse.

``SiteHealthPublisher.published`` is the one call the service makes once a pulse
and its ``status.json`` are out: it counts the pulse in the history
(``beacon.publish.health``), then writes the history, ``status/health.json``
(what every page's status strip reads in the browser), ``status.html`` with its
charts (static SVG, drawn here), and the home page again, all mutable.

The home page is rewritten here because two things are known only now: the
reasons ``status.json`` gives (its strip shows them), and the pulses of the day
before, which the state forgets once that day is archived (so that just after
midnight the home page still lists the last pulses, not one or two).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from beacon_verifier import layout
from beacon_verifier.format import format_timestamp, parse_pulse

from beacon.publish import JSON, Publisher
from beacon.publish.charts import Series, bar_chart, timeline
from beacon.publish.conditional import put_forward
from beacon.publish.health import (
    DAY_MS,
    HEALTH_KEY,
    HISTORY_KEY,
    HOUR_MS,
    Bucket,
    Health,
    HealthHistory,
    gap_rows,
    kinds_in_order,
    load_status,
    site_health,
)
from beacon.publish.pipeline import stored_position
from beacon.publish.site import (
    HTML,
    RECENT_PULSES,
    STATUS_KEY,
    STATUS_PAGE_KEY,
    SiteInfo,
    pulse_page_key,
    render_home,
    render_template,
)
from beacon.state import OutboxItem

__all__ = ["SiteHealthPublisher", "render_status_page"]

#: The figures of ``status.json`` the page lists when present, with their words.
_FIGURES = (
    ("pulsesEmitted", "pulses emitted"),
    ("fallbacks", "pulses from the OS fallback (all time)"),
    ("externalMissing", "pulses without external value (all time)"),
    ("publishRetries", "publish retries"),
    ("outboxLength", "signed pulses waiting to be published"),
    ("entropySource", "configured entropy source"),
    ("lastPulseSource", "entropy of the last pulse"),
    ("lastFallbackReason", "last fallback reason"),
    ("healthTestFailures", "raw batches failing the health tests"),
)


def _utc(ms: int, fmt: str) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime(fmt)


def _latency(value: int | None) -> float:
    """A percentile for a bar, in seconds: 0 when unknown, the last bound doubled beyond it."""
    if value is None:
        return 0
    return 600 if value < 0 else value / 1000


def _latency_text(value: int | None) -> str:
    if value is None:
        return "none"
    return "> 300 s" if value < 0 else f"≤ {value / 1000:g} s"


def _window(
    history: HealthHistory,
    *,
    size_ms: int,
    count: int,
    now_ms: int,
    label_fmt: str,
    label_every: int,
    name: str,
) -> dict[str, Any]:
    """The charts and rows of one window (the last ``count`` buckets of ``size_ms``)."""
    buckets: list[Bucket] = history.series(size_ms=size_ms, count=count, now_ms=now_ms)
    labels = [_utc(b.start_ms, label_fmt) for b in buckets]
    kinds = kinds_in_order(buckets)
    start, end = buckets[0].start_ms, buckets[-1].start_ms + size_ms
    ticks = [(b.start_ms, lab) for i, (b, lab) in enumerate(zip(buckets, labels, strict=True))]
    ticks = [t for i, t in enumerate(ticks) if i % label_every == 0]
    p50 = [b.latency_percentile(0.5) for b in buckets]
    p99 = [b.latency_percentile(0.99) for b in buckets]
    return {
        "name": name,
        "timeline": timeline(
            f"Pulses and gaps over the {name}",
            start_ms=start,
            end_ms=end,
            since_ms=history.since_ms,
            last_ms=history.last[0] if history.last else None,
            gaps=history.gaps,
            ticks=ticks,
        ),
        "pulses": bar_chart(
            f"Pulses published, and pulses missed in gaps, over the {name}",
            labels,
            [
                Series("pulses", [b.pulses for b in buckets]),
                Series("missed", [b.missed for b in buckets]),
            ],
            stacked=True,
            label_every=label_every,
        ),
        "sources": bar_chart(
            f"Entropy source of each pulse over the {name}",
            labels,
            [Series(k, [b.sources.get(k, 0) for b in buckets]) for k in kinds],
            stacked=True,
            label_every=label_every,
        ),
        "kinds": kinds,
        "flags": bar_chart(
            f"Pulses from the OS fallback and pulses without external value over the {name}",
            labels,
            [
                Series("fallbacks", [b.fallbacks for b in buckets]),
                Series("external missing", [b.external_missing for b in buckets]),
            ],
            stacked=False,
            label_every=label_every,
        ),
        "latency": bar_chart(
            f"Publish latency p50 and p99 over the {name} (seconds)",
            labels,
            [Series("p50", [_latency(v) for v in p50]), Series("p99", [_latency(v) for v in p99])],
            stacked=False,
            unit=" s",
            label_every=label_every,
        ),
        "rows": [
            {
                "label": lab,
                "pulses": b.pulses,
                "missed": b.missed,
                "gaps": b.gaps,
                "sources": b.sources,
                "fallbacks": b.fallbacks,
                "external_missing": b.external_missing,
                "p50": _latency_text(a),
                "p99": _latency_text(c),
            }
            for lab, b, a, c in zip(labels, buckets, p50, p99, strict=True)
            if b.pulses or b.missed
        ],
        "totals": {
            "pulses": sum(b.pulses for b in buckets),
            "missed": sum(b.missed for b in buckets),
            "fallbacks": sum(b.fallbacks for b in buckets),
            "external_missing": sum(b.external_missing for b in buckets),
            "sources": {k: sum(b.sources.get(k, 0) for b in buckets) for k in kinds},
        },
    }


def render_status_page(
    site: SiteInfo,
    history: HealthHistory,
    status: dict[str, Any],
    health: Health,
    *,
    now_ms: int,
    latest: OutboxItem | None = None,
) -> tuple[str, bytes]:
    """``status.html``: the strip, the current figures, and charts over 24 hours and 30 days."""
    figures = [
        (words, str(status[key]))
        for key, words in _FIGURES
        if key in status and status[key] is not None and not isinstance(status[key], dict | list)
    ]
    latency = status.get("publishLatency")
    if isinstance(latency, dict) and latency.get("p50Ms") is not None:
        figures.append(
            (
                "publish latency to the store, this process (p50 / p99)",
                f"{latency.get('p50Ms')} ms / {latency.get('p99Ms')} ms",
            )
        )
    windows = [
        _window(
            history,
            size_ms=HOUR_MS,
            count=24,
            now_ms=now_ms,
            label_fmt="%H",
            label_every=3,
            name="last 24 hours",
        ),
        _window(
            history,
            size_ms=DAY_MS,
            count=30,
            now_ms=now_ms,
            label_fmt="%m-%d",
            label_every=5,
            name="last 30 days",
        ),
    ]
    latest_row = None
    if latest is not None:
        latest_row = {
            "time": format_timestamp(latest.time_ms),
            "page": pulse_page_key(latest.chain_index, latest.pulse_index),
            "kind": latest.kind,
        }
    return render_template(
        "status.html",
        STATUS_PAGE_KEY,
        health=health,
        site=site,
        rendered=format_timestamp(now_ms - now_ms % 1000),
        since=None if history.since_ms is None else format_timestamp(history.since_ms),
        latest=latest_row,
        next_due=status.get("nextDue"),
        figures=figures,
        windows=windows,
        gaps=gap_rows(history.gaps, site.period_ms)[:50],
        status_json=STATUS_KEY,
        history_json=HISTORY_KEY,
    )


class SiteHealthPublisher:
    """Keeps the history of one publishing process and writes the status page after each pulse.

    The history is read from the store on first use (so it continues across
    restarts and failovers) and written back after each pulse.
    """

    def __init__(self, site: SiteInfo) -> None:
        self.site = site
        self.history: HealthHistory | None = None
        self._recent: deque[OutboxItem] = deque(maxlen=RECENT_PULSES)

    def _remember(self, item: OutboxItem, recent: Sequence[OutboxItem]) -> list[OutboxItem]:
        """The latest published pulses, newest first: those the state still holds and
        those this process published, each once."""
        self._recent.append(item)
        found = {(i.chain_index, i.pulse_index): i for i in (*self._recent, *recent)}
        ordered = sorted(found.values(), key=lambda i: (i.time_ms, i.chain_index), reverse=True)
        return ordered[:RECENT_PULSES]

    def published(
        self,
        publisher: Publisher,
        item: OutboxItem,
        *,
        now_ms: int,
        max_age: int,
        recent: Sequence[OutboxItem] = (),
        before_write: Callable[[], None] | None = None,
    ) -> None:
        """Count ``item`` (just published, its ``status.json`` written) and rewrite the
        history, ``status/health.json``, ``status.html`` and the home page, which lists
        ``recent`` (published pulses the state holds) and the pulses published before
        by this process. Raises ``PublishError`` when the store fails (the pulse is
        published all the same)."""
        latest = self._remember(item, recent)
        if self.history is None:
            self.history = HealthHistory.from_bytes(publisher.get(HISTORY_KEY))
        latency_ms = now_ms - item.time_ms
        self.history.record(item.pulse, item.kind, latency_ms=latency_ms)
        status = load_status(publisher.get(STATUS_KEY))
        pulse = parse_pulse(item.pulse)
        health = site_health(
            status,
            last_kind=item.kind,
            last_external_code=pulse.external.status_code,
            last_ms=item.time_ms,
            period_ms=self.site.period_ms,
            last_latency_ms=latency_ms,
        )
        # Like `last` and status.json, these only move forward (an instance that lost
        # the lease while paused cannot set them back), and the pages follow `last`.
        position = (item.time_ms, item.chain_index, item.pulse_index)
        check = before_write or (lambda: None)
        check()
        put_forward(
            publisher,
            HISTORY_KEY,
            self.history.to_bytes(),
            behind=lambda stored: _history_behind(stored, position),
            content_type=JSON,
            max_age=0,
        )
        check()
        put_forward(
            publisher,
            HEALTH_KEY,
            health.to_bytes(),
            behind=lambda stored: _health_behind(stored, item.time_ms),
            content_type=JSON,
            max_age=max_age,
        )
        if stored_position(publisher.get(layout.LAST_KEY)) != (item.chain_index, item.pulse_index):
            return  # a later pulse is out: its own pages are (or will be) written
        key, page = render_status_page(
            self.site, self.history, status, health, now_ms=now_ms, latest=item
        )
        check()
        publisher.put_mutable(key, page, content_type=HTML, max_age=max_age)
        top = latest[0]  # never list an older pulse as the latest
        if (top.chain_index, top.pulse_index) == (item.chain_index, item.pulse_index):
            key, page = render_home(self.site, item, latest, refresh_s=max_age, health=health)
            check()
            publisher.put_mutable(key, page, content_type=HTML, max_age=max_age)


def _history_behind(stored: bytes, position: tuple[int, int, int]) -> bool:
    """True when the stored history recorded nothing at or after ``position``."""
    last = HealthHistory.from_bytes(stored).last
    return last is None or tuple(last) < position


def _health_behind(stored: bytes, time_ms: int) -> bool:
    """True when the stored strip is about a pulse before ``time_ms`` (or unreadable)."""
    try:
        last = json.loads(stored).get("lastPulseMs")
    except (ValueError, AttributeError):
        return True
    return not isinstance(last, int) or last < time_ms
