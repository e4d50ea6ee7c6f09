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

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from beacon_verifier import layout
from beacon_verifier.draw import (
    Manifest,
    draw,
    draw_seed,
    entrant_list_bytes,
    manifest_hash,
    parse_entrant_bytes,
)
from beacon_verifier.errors import DrawError
from beacon_verifier.format import (
    LINK_TYPES,
    STATUS_CERTIFICATE_CHANGED,
    STATUS_CHAIN_END,
    STATUS_CHAIN_START_OR_NO_PRECOMMIT,
    STATUS_GAP,
    Pulse,
    parse_pulse,
    pulse_to_object,
)
from jinja2 import Environment, PackageLoader, StrictUndefined

from beacon.entropy import OS_FALLBACK, QUANTUM_HARDWARE, QUANTUM_SIMULATOR
from beacon.state import OutboxItem

__all__ = [
    "CSS",
    "DAYS_KEY",
    "DAY_PAGE_PREFIX",
    "DRAW_KEY",
    "HOME_KEY",
    "HTML",
    "RECENT_PULSES",
    "STATUS_KEY",
    "STYLE_KEY",
    "VERIFY_KEY",
    "DrawExample",
    "PulseField",
    "SiteInfo",
    "SourceDescription",
    "day_page_key",
    "days_from_keys",
    "describe_source",
    "pulse_fields",
    "pulse_page_key",
    "render_day_page",
    "render_days_page",
    "render_draw_page",
    "render_home",
    "render_pulse_page",
    "render_style",
    "render_verify_page",
    "status_words",
]

HTML = "text/html; charset=utf-8"
CSS = "text/css"

HOME_KEY = "index.html"
VERIFY_KEY = "verify.html"
DRAW_KEY = "draw.html"
DAYS_KEY = "days.html"
STYLE_KEY = "style.css"
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
class DrawExample:
    """The inputs of the fair-draw page's worked example.

    ``entrants`` is the text of an entrant file (one per line); ``output_value``
    stands for the outputValue of the pulse at ``pulse_time_ms``. The page
    computes everything else (hashes, manifest, seed, winners) with
    ``beacon_verifier.draw`` when it is rendered. Raises ``ValueError`` for
    fewer than one winner or an outputValue that is not 64 bytes.
    """

    label: str
    entrants: str
    winners: int
    pulse_time_ms: int
    output_value: bytes
    output_value_origin: str

    def __post_init__(self) -> None:
        if self.winners < 1:
            raise ValueError(f"a draw needs at least one winner, got {self.winners}")
        if len(self.output_value) != hashlib.sha512().digest_size:
            raise ValueError("an outputValue is 64 bytes")


_EXAMPLE_VALUE_TEXT = "an example outputValue"

#: The worked example on the fair-draw page. Its outputValue is made up (and
#: says how), so that the page can be written before any pulse exists.
EXAMPLE_DRAW = DrawExample(
    label="Example: three winners among ten entrants",
    entrants="\n".join(
        (
            "Ada Lovelace",
            "Alan Turing",
            "Grace Hopper",
            "Katherine Johnson",
            "Claude Shannon",
            "Emmy Noether",
            "John von Neumann",
            "Dorothy Vaughan",
            "Hedy Lamarr",
            "Edsger Dijkstra",
        )
    ),
    winners=3,
    pulse_time_ms=1_798_804_800_000,  # 2027-01-01T12:00:00.000Z
    output_value=hashlib.sha512(_EXAMPLE_VALUE_TEXT.encode()).digest(),
    output_value_origin=f'made up for this example: SHA-512 of the text "{_EXAMPLE_VALUE_TEXT}"',
)
#: The beacon the example's manifest names when the site's own URL is not one a
#: manifest accepts (a draw needs a site root it can fetch).
_EXAMPLE_BEACON = "https://beacon.example.org"


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


def _render(template: str, key: str, **context: Any) -> tuple[str, bytes]:
    """Render ``template`` as the page ``key``; ``url(k)`` in it is ``k`` relative to the page."""
    root = "../" * key.count("/")

    def url(target: str) -> str:
        return root + target

    page = ENV.get_template(template).render(
        url=url,
        home_page=HOME_KEY,
        days_page=DAYS_KEY,
        verify_page=VERIFY_KEY,
        draw_page=DRAW_KEY,
        style_sheet=STYLE_KEY,
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
        "page": pulse_page_key(item.chain_index, item.pulse_index),
    }


def render_pulse_page(item: OutboxItem) -> tuple[str, bytes]:
    """The immutable page of one pulse: every field, its source, links, how to verify it.

    Raises ``PulseFormatError`` when ``item.pulse`` is not a well-formed pulse.
    """
    pulse = parse_pulse(item.pulse)
    c, p = item.chain_index, item.pulse_index
    return _render(
        "pulse.html",
        pulse_page_key(c, p),
        pulse=pulse,
        value=pulse.output_value.hex().upper(),
        fields=pulse_fields(item, pulse),
        source=describe_source(item.kind, item.record),
        previous=pulse_page_key(c, p - 1) if p > 1 else None,
        next=None if pulse.status_code & STATUS_CHAIN_END else pulse_page_key(c, p + 1),
        links=[(t, k) for t, k in _link_targets(item, pulse).items() if t != "previous"],
        pulse_json=layout.pulse_key(c, p),
        record_json=layout.entropy_record_key(c, p),
        cosignature_json=None if item.cosignature is None else layout.pq_signature_key(c, p),
        time_json=layout.time_key(pulse.time_ms),
        certificate=layout.certificate_key(pulse.certificate_id.hex()),
        location=pulse.uri or layout.pulse_key(c, p),
    )


def render_home(
    site: SiteInfo, latest: OutboxItem, older: Sequence[OutboxItem], *, refresh_s: int
) -> tuple[str, bytes]:
    """The home page (mutable): the latest pulse, the ones before it, links to the rest.

    ``older`` are published pulses, newest first; only those before ``latest``
    are listed, at most ``RECENT_PULSES`` in all. The page reloads itself after
    ``refresh_s`` plus a margin, when the next pulse should be out.
    """
    pulse = parse_pulse(latest.pulse)
    before = [i for i in older if i.time_ms < latest.time_ms][: RECENT_PULSES - 1]
    return _render(
        "index.html",
        HOME_KEY,
        site=site,
        pulse=pulse,
        value=pulse.output_value.hex().upper(),
        source=describe_source(latest.kind, latest.record),
        page=pulse_page_key(latest.chain_index, latest.pulse_index),
        recent=[_row(i) for i in [latest, *before]],
        refresh=max(1, refresh_s) + REFRESH_MARGIN_S,
        last_json=layout.LAST_KEY,
        status_json=STATUS_KEY,
        certificate=layout.certificate_key(pulse.certificate_id.hex()),
    )


def render_day_page(
    day: date, items: Sequence[OutboxItem], *, pq_archive: bool = False
) -> tuple[str, bytes]:
    """The immutable page of one complete UTC day: each pulse, the day's archive and,
    with ``pq_archive`` (the day has one), its PQ archive."""
    return _render(
        "day.html",
        day_page_key(day),
        day=day.isoformat(),
        pulses=[_row(i) for i in items],
        archive=layout.archive_key(day),
        pq_archive=layout.pq_archive_key(day) if pq_archive else None,
    )


def render_days_page(days: Sequence[date]) -> tuple[str, bytes]:
    """The list of archived days (mutable), newest first."""
    return _render(
        "days.html",
        DAYS_KEY,
        days=[(d.isoformat(), day_page_key(d), layout.archive_key(d)) for d in days],
    )


def render_verify_page(site: SiteInfo, certificate_id: bytes) -> tuple[str, bytes]:
    """The "verify it yourself" page (mutable): what to check and how."""
    return _render(
        "verify.html",
        VERIFY_KEY,
        site=site,
        certificate=layout.certificate_key(certificate_id.hex()),
        certificate_id=certificate_id.hex(),
        last_json=layout.LAST_KEY,
    )


def _example_manifest(site: SiteInfo, example: DrawExample, entrant_bytes: bytes) -> Manifest:
    fields: dict[str, Any] = {
        "chain": 1,
        "pulse_time_ms": example.pulse_time_ms,
        "entrants": hashlib.sha512(entrant_bytes).digest(),
        "entrant_count": len(parse_entrant_bytes(entrant_bytes)),
        "winners": example.winners,
        "label": example.label,
    }
    try:
        return Manifest(beacon=site.site_url, **fields)
    except DrawError:
        return Manifest(beacon=_EXAMPLE_BEACON, **fields)


def render_draw_page(site: SiteInfo, example: DrawExample = EXAMPLE_DRAW) -> tuple[str, bytes]:
    """The "use it for a fair draw" page (mutable), with a worked example.

    The example's manifest, hashes, seed and winners are computed here with
    ``beacon_verifier.draw``, the code ``beacon-verify draw`` runs, so the page
    cannot drift from it. Raises ``DrawError`` when the example's entrants or
    winners do not make a draw.
    """
    entrant_bytes = entrant_list_bytes(example.entrants)
    manifest = _example_manifest(site, example, entrant_bytes)
    manifest_bytes = manifest.to_bytes()
    values = [example.output_value]
    return _render(
        "draw.html",
        DRAW_KEY,
        site=site,
        example=example,
        entrants=parse_entrant_bytes(entrant_bytes),
        entrants_sha512=manifest.entrants.hex(),
        manifest=manifest,
        manifest_text=manifest_bytes.decode("utf-8"),
        manifest_sha512=manifest_hash(manifest_bytes).hex(),
        output_value=example.output_value.hex().upper(),
        seed=draw_seed(manifest_bytes, values).hex(),
        winners=draw(manifest_bytes, entrant_bytes, values),
    )


def render_style() -> tuple[str, bytes]:
    """The one style sheet every page links to."""
    return _render("style.css", STYLE_KEY)
