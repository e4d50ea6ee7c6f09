"""The static HTML site: pure rendering of pages from pulses, records and settings.

Every page is rendered from ``templates/`` (shipped as the package
``beacon.templates``) by one jinja2 ``Environment`` with autoescaping on and
``StrictUndefined``, so a string from a pulse or an entropy record (a backend
name, a fallback reason, a uri) can never become markup, and a template that
names a missing variable fails instead of printing nothing.

Each ``render_*`` function returns ``(key, bytes)``; writing them is the
pipeline's job. Keys are relative to the site root (the same for a local
directory and S3), and every link between pages is relative with an explicit
file name, so the site works from any static host and from a directory opened
in a browser (``file://``, where ``dir/`` does not resolve to ``dir/index.html``).
No page loads anything from elsewhere and none needs JavaScript: the home page
reloads itself with ``<meta http-equiv="refresh">``.

Pulse and day pages are immutable: they depend only on the pulses and records
they show (never on settings or the time of rendering), so rendering them again
after a crash gives the same bytes and the store accepts the retry.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from beacon_verifier import layout
from beacon_verifier.external import random_value
from beacon_verifier.format import (
    LINK_TYPES,
    STATUS_CERTIFICATE_CHANGED,
    STATUS_CHAIN_END,
    STATUS_CHAIN_START_OR_NO_PRECOMMIT,
    STATUS_GAP,
    ZERO_HASH,
    Pulse,
    parse_pulse,
    pulse_to_object,
)
from jinja2 import Environment, PackageLoader, StrictUndefined

from beacon.entropy import OS_FALLBACK, QUANTUM_HARDWARE, QUANTUM_SIMULATOR
from beacon.publish.health import HEALTH_KEY, HOUR_MS, Health, site_health
from beacon.state import OutboxItem

__all__ = [
    "CSS",
    "DAYS_KEY",
    "DAY_PAGE_PREFIX",
    "DRAW_KEY",
    "FIND_KEY",
    "HOME_KEY",
    "HTML",
    "JS",
    "RECENT_PULSES",
    "SCRIPT_KEY",
    "STATUS_KEY",
    "STATUS_PAGE_KEY",
    "STYLE_KEY",
    "VERIFY_KEY",
    "PulseField",
    "SiteInfo",
    "SourceDescription",
    "day_page_key",
    "days_from_keys",
    "describe_source",
    "hour_page_key",
    "pulse_fields",
    "pulse_page_key",
    "render_day_pages",
    "render_days_page",
    "render_find_page",
    "render_home",
    "render_pulse_page",
    "render_script",
    "render_style",
    "render_template",
    "render_verify_page",
    "status_words",
]

HTML = "text/html; charset=utf-8"
CSS = "text/css"
JS = "text/javascript; charset=utf-8"

HOME_KEY = "index.html"
VERIFY_KEY = "verify.html"
DRAW_KEY = "draw.html"
DAYS_KEY = "days.html"
STYLE_KEY = "style.css"
SCRIPT_KEY = "site.js"
STATUS_PAGE_KEY = "status.html"
#: The page that finds a pulse by time (``?at=``, ``?t=`` or ``?next=``), with site.js.
FIND_KEY = "find.html"
#: The beacon's status (JSON), written by the service after each pulse.
STATUS_KEY = "status.json"
DAY_PAGE_PREFIX = "html/day/"

#: Pulses listed on the home page.
RECENT_PULSES = 20
#: Seconds the home page waits after the next boundary before reloading, so the
#: pulse of that boundary is published by then.
REFRESH_MARGIN_S = 2

#: The one jinja2 environment of the site: templates from the ``beacon.templates``
#: package, every variable HTML-escaped, any undefined variable an error.
ENV = Environment(
    loader=PackageLoader("beacon.templates", "."),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)

_STATUS_WORDS = (
    (STATUS_CHAIN_START_OR_NO_PRECOMMIT, "does not open a precommitment (first pulse of a chain)"),
    (STATUS_GAP, "gap: more than one period since the previous pulse"),
    (STATUS_CERTIFICATE_CHANGED, "signed with a new certificate"),
    (STATUS_CHAIN_END, "last pulse of its chain"),
)


# --- keys -----------------------------------------------------------------------


def pulse_page_key(chain: int, pulse: int) -> str:
    """``html/chain/{c}/pulse/{p}.html``: the page of one pulse (immutable)."""
    return f"html/chain/{chain}/pulse/{pulse}.html"


def day_page_key(day: date) -> str:
    """``html/day/{YYYY-MM-DD}.html``: the page of one complete UTC day (immutable)."""
    return f"{DAY_PAGE_PREFIX}{day.isoformat()}.html"


def hour_page_key(day: date, hour: int) -> str:
    """``html/day/{YYYY-MM-DD}/{HH}.html``: the pulses of one hour of a complete day (immutable)."""
    return f"{DAY_PAGE_PREFIX}{day.isoformat()}/{hour:02d}.html"


def days_from_keys(keys: Iterable[str]) -> list[date]:
    """The days whose pages are among ``keys`` (from ``publisher.list``), newest first.

    Keys that are not day pages are ignored.
    """
    days = set()
    for key in keys:
        name = key.removeprefix(DAY_PAGE_PREFIX)
        if name == key or not name.endswith(".html"):
            continue
        try:
            days.add(date.fromisoformat(name.removesuffix(".html")))
        except ValueError:
            continue
    return sorted(days, reverse=True)


# --- values -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteInfo:
    """What the mutable pages say about the beacon itself (from the settings).

    Raises ``ValueError`` for an empty name or site URL or a period below 1 ms.
    """

    name: str
    site_url: str
    period_ms: int

    def __post_init__(self) -> None:
        if not self.name or not self.site_url:
            raise ValueError("a site needs a name and a URL")
        if self.period_ms < 1:
            raise ValueError(f"period must be positive, got {self.period_ms} ms")


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceDescription:
    """Where a pulse's entropy came from, in plain words, with the record's details."""

    kind: str
    words: str
    details: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class PulseField:
    """One field of a pulse as shown on its page.

    ``href`` is a site-relative key to link the value to, or None.
    """

    name: str
    value: str
    note: str = ""
    href: str | None = None


# --- plain words --------------------------------------------------------------------


def _record_object(record: bytes) -> Mapping[str, Any]:
    try:
        obj = json.loads(record)
    except (ValueError, UnicodeDecodeError):
        return {}
    return obj if isinstance(obj, dict) else {}


def _text(record: Mapping[str, Any], key: str) -> str:
    value = record.get(key)
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return "unknown"


#: What no verifier can check about a hardware pulse (entropy docs say the same).
OPERATORS_WORD = (
    "that this IBM job id is the job that ran, and that these bits came from that job, "
    "is the operator's word; anyone can re-run the estimates on the published raw batch "
    "(beacon-verify entropy)"
)


def _credited(kind: str, record: Mapping[str, Any]) -> str:
    if kind == QUANTUM_SIMULATOR:
        return "0 bits (simulated, pseudo-random)"
    value = record.get("quantumMinEntropyBits")
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value} bits"
    return "unknown"


def describe_source(kind: str, record: bytes) -> SourceDescription:
    """Say in plain words where the entropy of a pulse came from.

    ``kind`` is the source kind the beacon stored with the pulse; the details
    come from the entropy record. A record that is not a JSON object, or lacks
    a field, is described with "unknown" rather than refused: this is a page,
    and the verifier is what checks records.
    """
    obj = _record_object(record)
    details: list[tuple[str, str]] = [("source kind", kind)]
    if kind in (QUANTUM_SIMULATOR, QUANTUM_HARDWARE):
        backend, job = _text(obj, "backend"), _text(obj, "jobId")
        if kind == QUANTUM_SIMULATOR:
            words = f"a simulated quantum circuit (pseudo-random) on {backend} (job {job})"
        else:
            words = f"IBM Quantum hardware {backend} (job {job}), as the operator states"
        offsets = obj.get("bitOffsets")
        used = "unknown"
        if isinstance(offsets, dict):
            start, end = offsets.get("start"), offsets.get("end")
            if isinstance(start, int) and isinstance(end, int):
                used = f"{end - start} (bits {start} to {end} of the batch)"
        qubits = obj.get("qubits")
        details += [
            ("backend", backend),
            ("job", job),
            ("batch", _text(obj, "batchId")),
            ("measured at", _text(obj, "harvestedAt")),
            ("qubits", str(len(qubits)) if isinstance(qubits, list) else "unknown"),
            ("shots", _text(obj, "shots")),
            ("raw bits used", used),
            ("min-entropy per raw bit", _text(obj, "minEntropy")),
            ("estimate method", _text(obj, "minEntropyMethod")),
            ("quantum min-entropy credited", _credited(kind, obj)),
            ("mixed with", "512 bits from the operating system (osBits)"),
        ]
        if kind == QUANTUM_HARDWARE:
            details.append(("operator's word", OPERATORS_WORD))
        if kind == QUANTUM_SIMULATOR:
            details.append(
                ("note", "a simulator's bits come from a seeded pseudo-random generator")
            )
    elif kind == OS_FALLBACK:
        reason = _text(obj, "reason")
        if reason.startswith("configured"):
            words = f"operating-system randomness ({reason})"
        else:
            words = f"operating-system randomness (fallback: {reason})"
        details.append(("reason", reason))
    else:
        words = f"an unknown kind of source ({kind})"
    return SourceDescription(kind=kind, words=words, details=tuple(details))


def status_words(status_code: int) -> str:
    """The meaning of a statusCode, bit by bit ("normal pulse" for 0)."""
    if status_code == 0:
        return "normal pulse"
    words = [text for bit, text in _STATUS_WORDS if status_code & bit]
    unknown = status_code & ~sum(bit for bit, _ in _STATUS_WORDS)
    if unknown:
        words.append(f"unknown bits {unknown}")
    return "; ".join(words)


def _link_targets(item: OutboxItem, pulse: Pulse) -> dict[str, str]:
    """Page keys of the pulses the skip-list links of ``pulse`` point to."""
    c = item.chain_index
    targets = {t: pulse_page_key(c, p) for t, p in item.links.items() if t in LINK_TYPES}
    if pulse.pulse_index > 1:
        targets["previous"] = pulse_page_key(c, pulse.pulse_index - 1)
    return targets


def pulse_fields(item: OutboxItem, pulse: Pulse) -> list[PulseField]:
    """Every field of the pulse, in NIST order, as shown on its page."""
    obj = pulse_to_object(pulse)
    targets = _link_targets(item, pulse)
    notes = {
        "cipherSuite": "SHA-512 hashing, RSA PKCS#1 v1.5 signatures with SHA-512"
        if pulse.cipher_suite == 0
        else "unknown cipher suite",
        "period": f"{pulse.period / 1000:g} s between pulses",
        "localRandomValue": "SHA-512 of the entropy record",
        "precommitmentValue": "SHA-512 of the next pulse's localRandomValue",
        "statusCode": status_words(pulse.status_code),
        "outputValue": "the beacon value: SHA-512 of the signed bytes and the signature",
    }
    fields: list[PulseField] = []
    for name, value in obj.items():
        if name == "external":
            fields.extend(PulseField(name=f"external.{k}", value=str(v)) for k, v in value.items())
        elif name == "listValues":
            for link in value:
                label = f"listValues.{link['type']}"
                fields.append(
                    PulseField(
                        name=label,
                        value=link["value"],
                        note=f"uri: {link['uri']}",
                        href=targets.get(link["type"]),
                    )
                )
        elif name == "certificateId":
            fields.append(PulseField(name=name, value=value, href=layout.certificate_key(value)))
        else:
            text = "null" if value is None else str(value)
            fields.append(PulseField(name=name, value=text, note=notes.get(name, "")))
    return fields


# --- rendering ------------------------------------------------------------------------


def render_template(
    template: str, key: str, *, health: Health | None = None, **context: Any
) -> tuple[str, bytes]:
    """Render ``template`` as the page ``key``; ``url(k)`` in it is ``k`` relative to the page.

    ``health`` is what the page's status strip says when it is rendered (None on
    immutable pages: their strip is filled in by the browser from ``status/health.json``).
    """
    root = "../" * key.count("/")

    def url(target: str) -> str:
        return root + target

    page = ENV.get_template(template).render(
        url=url,
        root=root,
        home_page=HOME_KEY,
        days_page=DAYS_KEY,
        verify_page=VERIFY_KEY,
        draw_page=DRAW_KEY,
        status_page=STATUS_PAGE_KEY,
        find_page=FIND_KEY,
        style_sheet=STYLE_KEY,
        script=SCRIPT_KEY,
        health_json=HEALTH_KEY,
        health=health,
        **context,
    )
    return key, page.encode("utf-8")


def _row(item: OutboxItem) -> dict[str, Any]:
    """What lists of pulses show of one pulse."""
    pulse = parse_pulse(item.pulse)
    return {
        "chain": item.chain_index,
        "index": item.pulse_index,
        "time": pulse.time_stamp,
        "value": pulse.output_value.hex().upper(),
        "kind": item.kind,
        "fallback": item.kind == OS_FALLBACK,
        "external_missing": pulse.external.status_code != 0,
        "gap": bool(pulse.status_code & STATUS_GAP),
        "page": pulse_page_key(item.chain_index, item.pulse_index),
    }


def _value_to_use(pulse: Pulse) -> str | None:
    """randomValue in hex when the pulse mixed a valid external round (the beacon
    checked its signature before mixing it), else None."""
    external = pulse.external
    if external.status_code != 0 or external.source_id == ZERO_HASH:
        return None
    return random_value(pulse.local_random_value, external.value).hex().upper()


def render_pulse_page(item: OutboxItem) -> tuple[str, bytes]:
    """The immutable page of one pulse: every field, its source, links, how to verify it.

    Raises ``PulseFormatError`` when ``item.pulse`` is not a well-formed pulse.
    """
    pulse = parse_pulse(item.pulse)
    c, p = item.chain_index, item.pulse_index
    return render_template(
        "pulse.html",
        pulse_page_key(c, p),
        pulse=pulse,
        value=pulse.output_value.hex().upper(),
        random_value=_value_to_use(pulse),
        fields=pulse_fields(item, pulse),
        source=describe_source(item.kind, item.record),
        previous=pulse_page_key(c, p - 1) if p > 1 else None,
        # The next pulse does not exist when this immutable page is written: its link
        # is a time lookup, which finds it once it is out.
        next=None if pulse.status_code & STATUS_CHAIN_END else f"{FIND_KEY}?next={pulse.time_ms}",
        links=[(t, k) for t, k in _link_targets(item, pulse).items() if t != "previous"],
        pulse_json=layout.pulse_key(c, p),
        record_json=layout.entropy_record_key(c, p),
        cosignature_json=None if item.cosignature is None else layout.pq_signature_key(c, p),
        time_json=layout.time_key(pulse.time_ms),
        certificate=layout.certificate_key(pulse.certificate_id.hex()),
        location=pulse.uri or layout.pulse_key(c, p),
    )


def render_home(
    site: SiteInfo,
    latest: OutboxItem,
    older: Sequence[OutboxItem],
    *,
    refresh_s: int,
    health: Health | None = None,
) -> tuple[str, bytes]:
    """The home page (mutable): the latest pulse, the ones before it, links to the rest.

    ``older`` are published pulses, newest first; only those before ``latest``
    are listed, at most ``RECENT_PULSES`` in all. The page reloads itself after
    ``refresh_s`` plus a margin, when the next pulse should be out. ``health`` is
    what its status strip says; by default what the latest pulse shows.
    """
    pulse = parse_pulse(latest.pulse)
    before = [i for i in older if i.time_ms < latest.time_ms][: RECENT_PULSES - 1]
    recent = [_row(i) for i in [latest, *before]]
    if health is None:
        health = site_health(
            None,
            last_kind=latest.kind,
            last_external_code=pulse.external.status_code,
            last_ms=latest.time_ms,
            period_ms=site.period_ms,
        )
    return render_template(
        "index.html",
        HOME_KEY,
        health=health,
        site=site,
        fallbacks=sum(r["fallback"] for r in recent),
        external_missing=sum(r["external_missing"] for r in recent),
        pulse=pulse,
        value=pulse.output_value.hex().upper(),
        source=describe_source(latest.kind, latest.record),
        page=pulse_page_key(latest.chain_index, latest.pulse_index),
        recent=recent,
        refresh=max(1, refresh_s) + REFRESH_MARGIN_S,
        last_json=layout.LAST_KEY,
        certificate=layout.certificate_key(pulse.certificate_id.hex()),
    )


def render_day_pages(
    day: date, items: Sequence[OutboxItem], *, pq_archive: bool = False
) -> list[tuple[str, bytes]]:
    """The immutable pages of one complete UTC day: one per hour that has pulses
    (every pulse of the hour), then the day's page (its hours, the day's archive
    and, with ``pq_archive``, its PQ archive). Write them in this order, so the
    day page links only what exists."""
    rows = [_row(i) for i in items]
    by_hour: dict[int, list[dict[str, Any]]] = {}
    for item, row in zip(items, rows, strict=True):
        by_hour.setdefault(item.time_ms // HOUR_MS % 24, []).append(row)
    hours = sorted(by_hour)
    pages = []
    for n, hour in enumerate(hours):
        hour_rows = by_hour[hour]
        pages.append(
            render_template(
                "hour.html",
                hour_page_key(day, hour),
                day=day.isoformat(),
                day_page=day_page_key(day),
                hour=f"{hour:02d}",
                pulses=hour_rows,
                previous=hour_page_key(day, hours[n - 1]) if n else None,
                next=hour_page_key(day, hours[n + 1]) if n + 1 < len(hours) else None,
            )
        )
    summary = [
        {
            "hour": f"{h:02d}",
            "page": hour_page_key(day, h) if h in by_hour else None,
            "pulses": len(by_hour.get(h, ())),
            "fallbacks": sum(r["fallback"] for r in by_hour.get(h, ())),
            "external_missing": sum(r["external_missing"] for r in by_hour.get(h, ())),
        }
        for h in range(24)
    ]
    pages.append(
        render_template(
            "day.html",
            day_page_key(day),
            day=day.isoformat(),
            count=len(rows),
            fallbacks=sum(r["fallback"] for r in rows),
            external_missing=sum(r["external_missing"] for r in rows),
            hours=summary,
            archive=layout.archive_key(day),
            pq_archive=layout.pq_archive_key(day) if pq_archive else None,
        )
    )
    return pages


def render_days_page(days: Sequence[date]) -> tuple[str, bytes]:
    """The list of archived days (mutable), newest first."""
    return render_template(
        "days.html",
        DAYS_KEY,
        days=[(d.isoformat(), day_page_key(d), layout.archive_key(d)) for d in days],
    )


def render_verify_page(site: SiteInfo, certificate_id: bytes) -> tuple[str, bytes]:
    """The "verify it yourself" page (mutable): what to check and how."""
    return render_template(
        "verify.html",
        VERIFY_KEY,
        site=site,
        certificate=layout.certificate_key(certificate_id.hex()),
        certificate_id=certificate_id.hex(),
        last_json=layout.LAST_KEY,
    )


def render_style() -> tuple[str, bytes]:
    """The one style sheet every page links to."""
    return render_template("style.css", STYLE_KEY)


def render_script() -> tuple[str, bytes]:
    """The one script every page loads: the status strip's live state and the time lookup.

    Every page works without it (the strip then says what was known when the page
    was written; only ``find.html`` needs it).
    """
    return render_template("site.js", SCRIPT_KEY)


def render_find_page(site: SiteInfo) -> tuple[str, bytes]:
    """``find.html`` (mutable): opens the pulse at or after a time, or the one after a pulse."""
    return render_template("find.html", FIND_KEY, site=site)
