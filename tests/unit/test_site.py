"""The static HTML site: what the pages say, how they escape, and that their links hold."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, date, datetime
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import jinja2
import pytest
from beacon_verifier import layout
from beacon_verifier.external import random_value
from beacon_verifier.format import (
    External,
    canonical_json,
    format_timestamp,
    parse_pulse,
    pulse_to_object,
)

from beacon.entropy import EntropyDraw
from beacon.entropy.record import fallback_record
from beacon.publish.draw_page import DrawExample, render_draw_page
from beacon.publish.local import LocalDirPublisher
from beacon.publish.pipeline import archive_complete_days, publish_item, publish_site_pages
from beacon.publish.site import (
    DAYS_KEY,
    DRAW_KEY,
    ENV,
    HOME_KEY,
    REFRESH_MARGIN_S,
    SCRIPT_KEY,
    STATUS_KEY,
    STATUS_PAGE_KEY,
    VERIFY_KEY,
    SiteInfo,
    day_page_key,
    days_from_keys,
    describe_source,
    pulse_page_key,
    render_day_pages,
    render_days_page,
    render_home,
    render_pulse_page,
    render_verify_page,
)
from beacon.publish.status_page import SiteHealthPublisher
from beacon.pulse.builder import build_pulse
from beacon.pulse.keys import Signer
from beacon.state import OutboxItem, State
from tests.unit.test_builder import MINUTE, build_chain, ms, value

SITE = SiteInfo(name="Test beacon", site_url="https://beacon.test", period_ms=MINUTE)
VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "draw"

SCRIPT = '<script>document.title="pwned"</script>'
IMG = '"><img src=x onerror=alert(1)>'


def simulator_record(pulse_index: int, *, backend: str = "aer_simulator") -> bytes:
    return canonical_json(
        {
            "version": 1,
            "source": "quantum-simulator",
            "chainIndex": 1,
            "pulseIndex": pulse_index,
            "backend": backend,
            "jobId": f"job-{pulse_index}",
            "batchId": f"batch-{pulse_index}",
            "harvestedAt": "2026-03-01T23:57:59.500Z",
            "qubits": list(range(8)),
            "shots": 2048,
            "bitOrder": "shot-major",
            "bitOffsets": {"start": 0, "end": 1100},
            "minEntropy": 0.93,
            "health": {},
            "quantumBits": "00",
            "quantumValue": "00",
            "osBits": "00",
        }
    )


def os_record(pulse_index: int, reason: str) -> bytes:
    return canonical_json(
        fallback_record(chain_index=1, pulse_index=pulse_index, reason=reason, os_bits=bytes(64))
    )


def committed(
    tmp_path: Path, signer: Signer, times: Sequence[int], records: Sequence[EntropyDraw]
) -> list[OutboxItem]:
    """The outbox items of a chain built at ``times``, committed through the real state."""
    state = State(tmp_path / "state.sqlite")
    for n, built in enumerate(build_chain(times, signer)):
        state.commit_pulse(head=built.head, pulse=built.data, draw=records[n], next_draw=records[n])
    items = state.outbox()
    state.close()
    return items


def sim(n: int) -> EntropyDraw:
    return EntropyDraw(record=simulator_record(n + 1), kind="quantum-simulator")


@pytest.fixture
def items(tmp_path: Path, signer: Signer) -> list[OutboxItem]:
    times = [ms("2026-03-01T23:58:00") + n * MINUTE for n in range(4)]
    return committed(tmp_path, signer, times, [sim(n) for n in range(4)])


class Links(HTMLParser):
    """Every link-like attribute, every element name and every ``on*`` attribute of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.tags: list[str] = []
        self.handlers: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, val in attrs:
            if name in ("href", "src") and val is not None:
                self.urls.append(val)
            if name.startswith("on"):
                self.handlers.append(name)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parsed(page: bytes) -> Links:
    parser = Links()
    parser.feed(page.decode("utf-8"))
    return parser


def flat_fields(obj: dict[str, object]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name, val in obj.items():
        if name == "external":
            assert isinstance(val, dict)
            out += [(f"external.{k}", str(v)) for k, v in val.items()]
        elif name == "listValues":
            assert isinstance(val, list)
            out += [(f"listValues.{link['type']}", link["value"]) for link in val]
        else:
            out.append((name, str(val)))
    return out


# --- pulse pages -------------------------------------------------------------------


def test_pulse_page_shows_every_field_and_links_its_neighbours(items: list[OutboxItem]) -> None:
    item = items[2]
    key, page = render_pulse_page(item)
    assert key == "html/chain/1/pulse/3.html"
    text = page.decode()
    obj = pulse_to_object(parse_pulse(item.pulse))
    fields = flat_fields(obj)
    assert len(fields) == 21  # 13 plain fields, 3 of external, 5 links: every one
    shown = "".join(parsed(page).text)
    for name, val in fields:
        assert f"<th>{name}</th>" in text
        assert val in shown, name
    urls = parsed(page).urls
    up = "../../../../"
    assert up + pulse_page_key(1, 2) in urls  # previous
    # next: a time lookup, since the next pulse does not exist when this page is written
    assert f"{up}find.html?next={item.time_ms}" in urls
    assert up + pulse_page_key(1, 4) not in urls
    for unit, target in item.links.items():  # hour/day/month/year targets
        assert f'<a href="{up}{pulse_page_key(1, target)}">{unit}</a>' in text
    for key_ in (
        layout.pulse_key(1, 3),
        layout.entropy_record_key(1, 3),
        layout.time_key(item.time_ms),
        layout.certificate_key(obj["certificateId"]),  # type: ignore[arg-type]
    ):
        assert up + key_ in urls
    assert f"beacon-verify pulse {obj['uri']}" in text
    assert "a simulated quantum circuit (pseudo-random) on aer_simulator (job job-3)" in text
    assert "fresh quantum circuits" not in text
    assert "Never use them as secret keys" in text


def test_pulse_page_links_its_cosignature_when_it_has_one(
    tmp_path: Path, signer: Signer, items: list[OutboxItem]
) -> None:
    assert signer.pq is not None
    times = [ms("2026-03-01T23:58:00") + n * MINUTE for n in range(2)]
    state = State(tmp_path / "cosigned.sqlite")
    for n, built in enumerate(build_chain(times, signer)):
        assert built.cosignature is not None
        draw = sim(n)
        state.commit_pulse(
            head=built.head,
            pulse=built.data,
            draw=draw,
            next_draw=draw,
            cosignature=built.cosignature,
        )
    cosigned = state.outbox()[1]
    state.close()
    up = "../../../../"
    _, page = render_pulse_page(cosigned)
    assert up + layout.pq_signature_key(1, 2) in parsed(page).urls
    assert "ML-DSA-65 co-signature" in "".join(parsed(page).text)

    plain = items[1]  # committed without a co-signature
    assert plain.cosignature is None
    _, page = render_pulse_page(plain)
    assert not [u for u in parsed(page).urls if "pq-signature" in u]
    assert "co-signature" not in page.decode()


def test_first_and_last_pulses_of_a_chain_have_no_link_beyond_it(
    tmp_path: Path, signer: Signer
) -> None:
    first = build_pulse(
        None,
        time_ms=ms("2026-03-01T10:00:00"),
        period_ms=MINUTE,
        local_random_value=value(0),
        next_local_random_value=value(1),
        signer=signer,
        base_url="https://beacon.test",
    )
    final = build_pulse(
        first.head,
        time_ms=ms("2026-03-01T10:01:00"),
        period_ms=MINUTE,
        local_random_value=value(1),
        next_local_random_value=value(2),
        signer=signer,
        base_url="https://beacon.test",
        final=True,
    )
    state = State(tmp_path / "state.sqlite")
    for n, built in enumerate((first, final)):
        state.commit_pulse(head=built.head, pulse=built.data, draw=sim(n), next_draw=sim(n + 1))
    one, two = state.outbox()
    first_page = render_pulse_page(one)[1].decode()
    assert 'rel="prev"' not in first_page and "first pulse of the chain" in first_page
    assert "None: this is the first pulse of its chain" in first_page
    last_page = render_pulse_page(two)[1].decode()
    assert 'rel="next"' not in last_page and "last pulse of the chain" in last_page
    assert pulse_page_key(1, 3) not in last_page
    assert "last pulse of its chain" in last_page  # statusCode 8 in words


def test_immutable_pages_are_deterministic(items: list[OutboxItem]) -> None:
    assert render_pulse_page(items[1]) == render_pulse_page(items[1])
    day = date(2026, 3, 1)
    assert render_day_pages(day, items[:2]) == render_day_pages(day, items[:2])
    # Nothing of the time of rendering gets in (the pulses are from another day).
    today = datetime.now(UTC).date().isoformat()
    assert today.encode() not in render_pulse_page(items[1])[1]
    for _, page in render_day_pages(day, items[:2]):
        assert today.encode() not in page


def test_day_page_links_its_archives(items: list[OutboxItem]) -> None:
    day = date(2026, 3, 1)
    *hours, (key, plain) = render_day_pages(day, items[:2])
    assert key == day_page_key(day)
    assert [k for k, _ in hours] == ["html/day/2026-03-01/23.html"]
    urls = parsed(plain).urls
    assert "../../" + layout.archive_key(day) in urls
    assert not [u for u in urls if u.endswith(".pq.jsonl.gz")]  # the day has no PQ archive
    cosigned = parsed(render_day_pages(day, items[:2], pq_archive=True)[-1][1]).urls
    assert "../../" + layout.pq_archive_key(day) in cosigned
    assert "../../" + layout.archive_key(day) in cosigned


# --- plain words -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "record", "words"),
    [
        (
            "quantum-simulator",
            simulator_record(1),
            "a simulated quantum circuit (pseudo-random) on aer_simulator (job job-1)",
        ),
        (
            "quantum-hardware",
            simulator_record(1, backend="ibm_torino"),
            "IBM Quantum hardware ibm_torino (job job-1), as the operator states",
        ),
        (
            "os-fallback",
            os_record(1, "the entropy job was not finished in time"),
            "operating-system randomness (fallback: the entropy job was not finished in time)",
        ),
        (
            "os-fallback",
            os_record(1, "configured: entropy_source = os"),
            "operating-system randomness (configured: entropy_source = os)",
        ),
        ("os-fallback", b"not json", "operating-system randomness (fallback: unknown)"),
        ("quantum-simulator", b"[1, 2]", "(pseudo-random) on unknown (job unknown)"),
    ],
)
def test_entropy_source_in_plain_words(kind: str, record: bytes, words: str) -> None:
    assert words in describe_source(kind, record).words


def test_quantum_details_come_from_the_record() -> None:
    details = dict(describe_source("quantum-simulator", simulator_record(5)).details)
    assert details["job"] == "job-5"
    assert details["qubits"] == "8"
    assert details["raw bits used"].startswith("1100 ")
    assert details["min-entropy per raw bit"] == "0.93"
    assert "seeded pseudo-random generator" in details["note"]  # a simulator says so
    assert details["quantum min-entropy credited"].startswith("0 bits")
    hardware = dict(describe_source("quantum-hardware", simulator_record(5)).details)
    assert "note" not in hardware
    # Issue 22: the page may not present hardware bits without saying whose word they are.
    assert "operator's word" in hardware["operator's word"]


# --- escaping ----------------------------------------------------------------------


def assert_inert(page: bytes, *payloads: str) -> None:
    """No payload became markup, and each one is shown as text."""
    found = parsed(page)
    # The one script allowed is the site's own, by URL, with no inline code.
    scripts = [u for u in found.urls if u.endswith(SCRIPT_KEY)]
    assert found.tags.count("script") == len(scripts) == 1
    assert f'<script src="{scripts[0]}" defer></script>'.encode() in page
    assert "img" not in found.tags
    assert found.handlers == []
    assert not any(url.lower().startswith("javascript:") for url in found.urls)
    text = "".join(found.text)
    for payload in payloads:
        assert payload in text
        assert payload.encode() not in page


def test_hostile_record_strings_are_escaped(tmp_path: Path, signer: Signer) -> None:
    times = [ms("2026-03-01T12:00:00") + n * MINUTE for n in range(2)]
    hostile = [
        EntropyDraw(record=simulator_record(1, backend=SCRIPT), kind="quantum-simulator"),
        EntropyDraw(record=os_record(2, IMG), kind="os-fallback"),
    ]
    one, two = committed(tmp_path, signer, times, hostile)
    assert_inert(render_pulse_page(one)[1], SCRIPT)
    assert_inert(render_pulse_page(two)[1], IMG)
    site = SiteInfo(name=SCRIPT, site_url="https://beacon.test", period_ms=MINUTE)
    assert_inert(render_home(site, two, [one], refresh_s=30)[1], SCRIPT, IMG)
    for _, page in render_day_pages(date(2026, 3, 1), [one, two]):
        assert_inert(page)
    assert_inert(render_verify_page(site, b"\x01" * 64)[1], SCRIPT)


def test_a_hostile_pulse_uri_is_text_never_a_link(tmp_path: Path, signer: Signer) -> None:
    built = build_pulse(
        None,
        time_ms=ms("2026-03-01T10:00:00"),
        period_ms=MINUTE,
        local_random_value=value(0),
        next_local_random_value=value(1),
        signer=signer,
        base_url=f"javascript:alert(1)//{IMG}",
    )
    state = State(tmp_path / "state.sqlite")
    state.commit_pulse(head=built.head, pulse=built.data, draw=sim(0), next_draw=sim(1))
    (item,) = state.outbox()
    assert_inert(render_pulse_page(item)[1], f"javascript:alert(1)//{IMG}")


def test_hostile_draw_label_and_entrants_are_escaped() -> None:
    example = DrawExample(
        label=SCRIPT,
        entrants=f"{IMG}\nBob\n{SCRIPT}x",
        winners=2,
        pulse_time_ms=ms("2027-01-01T00:00:00"),
        output_value=bytes(range(64)),
        output_value_origin="a test value",
    )
    assert_inert(render_draw_page(SITE, example)[1], SCRIPT, IMG)


def test_environment_escapes_and_refuses_missing_variables() -> None:
    with pytest.raises(jinja2.UndefinedError, match="'missing' is undefined"):
        ENV.from_string("{{ missing }}").render()
    assert ENV.from_string("{{ x }}").render(x="<b>&") == "&lt;b&gt;&amp;"
    # A real page missing a value fails too, instead of printing nothing.
    with pytest.raises(jinja2.UndefinedError):
        ENV.get_template("days.html").render(url=str)


# --- the home page, days, draws ------------------------------------------------------


def test_home_page_shows_the_latest_pulse_and_reloads_after_the_next_boundary(
    items: list[OutboxItem],
) -> None:
    latest = items[2]
    older = [items[3], items[1], items[0]]  # items[3] is newer: never listed
    key, page = render_home(SITE, latest, older, refresh_s=17)
    assert key == HOME_KEY
    text = page.decode()
    value_hex = json.loads(latest.pulse)["pulse"]["outputValue"]
    assert f'<code class="value" id="latest-value">{value_hex}</code>' in text
    assert f'<meta http-equiv="refresh" content="{17 + REFRESH_MARGIN_S}">' in text
    listed = [u for u in parsed(page).urls if u.startswith("html/chain/")]
    assert listed == [pulse_page_key(1, p) for p in (3, 3, 3, 2, 1)]  # latest 3x, then older
    for target in (STATUS_PAGE_KEY, VERIFY_KEY, DRAW_KEY, DAYS_KEY, layout.LAST_KEY):
        assert target in parsed(page).urls


def test_days_page_lists_day_pages_newest_first() -> None:
    keys = [
        day_page_key(date(2026, 3, 1)),
        "html/day/notes.txt",
        "html/day/2026-13-01.html",
        day_page_key(date(2026, 3, 2)),
    ]
    days = days_from_keys(keys)
    assert days == [date(2026, 3, 2), date(2026, 3, 1)]
    urls = parsed(render_days_page(days)[1]).urls
    assert urls.index(day_page_key(days[0])) < urls.index(day_page_key(days[1]))
    assert layout.archive_key(date(2026, 3, 1)) in urls
    assert "No day is complete yet" in render_days_page([])[1].decode()


def test_draw_page_computes_the_published_test_vector() -> None:
    vector = json.loads((VECTORS / "nist-three-of-ten.json").read_text(encoding="utf-8"))
    manifest = json.loads(vector["manifest"])
    example = DrawExample(
        label=manifest["label"],
        entrants=vector["entrantsFile"],
        winners=manifest["winners"],
        pulse_time_ms=ms(manifest["pulseTime"].removesuffix("Z")),
        output_value=bytes.fromhex(vector["outputValues"][0]),
        output_value_origin="NIST pulse 54610",
    )
    site = SiteInfo(name="NIST", site_url=manifest["beacon"], period_ms=MINUTE)
    page = render_draw_page(site, example)[1]
    text = page.decode()
    assert vector["manifest"] in "".join(parsed(page).text)
    assert vector["manifestSha512"] in text and vector["seed"] in text
    winners = "".join(f"<li>{w}</li>\n" for w in vector["winners"])
    assert f'<ol class="winners" id="draw-winners">\n{winners}</ol>' in text


def test_draw_page_example_names_the_site_or_a_placeholder() -> None:
    assert "file:///srv/beacon" in render_draw_page(
        SiteInfo(name="b", site_url="file:///srv/beacon", period_ms=MINUTE)
    )[1].decode("utf-8")
    # A site URL no manifest accepts still gives a page (the example names a placeholder).
    odd = SiteInfo(name="b", site_url="https://", period_ms=MINUTE)
    assert "https://beacon.example.org" in render_draw_page(odd)[1].decode("utf-8")


# --- the whole site on disk ------------------------------------------------------------


def page_links(root: Path, key: str) -> list[tuple[str, Path]]:
    """The links of page ``key``, each with the file it resolves to."""
    out = []
    for url in parsed((root / key).read_bytes()).urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and not url.startswith("/"), url
        assert not url.endswith("/"), url  # a directory URL does not resolve from file://
        target = PurePosixPath(key).parent / parts.path  # find.html?next=...: the page
        out.append((url, (root / target).resolve()))
    return out


def test_published_site_links_are_relative_and_resolve(tmp_path: Path, signer: Signer) -> None:
    times = [ms("2026-03-01T23:58:00") + n * MINUTE for n in range(4)]
    state = State(tmp_path / "state.sqlite")
    for n, built in enumerate(build_chain(times, signer)):
        state.commit_pulse(head=built.head, pulse=built.data, draw=sim(n), next_draw=sim(n + 1))
    store = LocalDirPublisher(tmp_path / "site")
    store.put_immutable(
        layout.certificate_key(signer.certificate_id.hex()), signer.certificate_pem, content_type=""
    )
    publish_site_pages(store, SITE, signer.certificate_id, max_age=60)
    store.put_mutable(STATUS_KEY, b"{}", content_type="", max_age=60)  # the service's
    health = SiteHealthPublisher(SITE)
    for item in state.outbox():
        publish_item(store, item, last_max_age=60, site=SITE, recent=state.recent_published(20))
        # A retry after a crash renders the same immutable page: the store accepts it.
        publish_item(store, item, last_max_age=60, site=SITE, recent=state.recent_published(20))
        state.mark_published(item.seq, item.time_ms)
        archive_complete_days(store, state, item.time_ms, max_age=60)
        health.published(store, item, now_ms=item.time_ms + 900, max_age=60)
    root = store.root
    day = date(2026, 3, 1)
    assert (root / day_page_key(day)).is_file()  # the day completed at midnight
    assert day_page_key(day) in (root / DAYS_KEY).read_text()
    latest_next = pulse_page_key(1, 5)
    pages = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.html"))
    # home, verify, draw, days, find, status; a day and its one hour; four pulses
    assert len(pages) == 6 + 2 + 4
    assert "html/day/2026-03-01/23.html" in pages
    missing = [
        (page, url)
        for page in pages
        for url, target in page_links(root, page)
        if not target.is_file()
    ]
    assert missing == []
    assert latest_next not in pages
    # The skip-list targets of the pulses after midnight point back into the old day.
    assert format_timestamp(times[0]) in (root / pulse_page_key(1, 1)).read_text()


def test_home_page_keeps_listing_the_last_pulses_after_midnight(
    tmp_path: Path, signer: Signer
) -> None:
    """The state forgets a day's pulses once the day is archived; the home page must not."""
    times = [ms("2026-03-01T23:56:00") + n * MINUTE for n in range(6)]  # 4 before midnight
    state = State(tmp_path / "state.sqlite")
    for n, built in enumerate(build_chain(times, signer)):
        state.commit_pulse(head=built.head, pulse=built.data, draw=sim(n), next_draw=sim(n + 1))
    store = LocalDirPublisher(tmp_path / "site")
    health = SiteHealthPublisher(SITE)
    for item in state.outbox():
        publish_item(store, item, last_max_age=60, site=SITE, recent=state.recent_published(20))
        state.mark_published(item.seq, item.time_ms)
        archive_complete_days(store, state, item.time_ms, max_age=60)
        health.published(
            store,
            item,
            now_ms=item.time_ms + 900,
            max_age=60,
            recent=state.recent_published(20),
        )
    state.close()
    listed = [
        u for u in parsed((store.root / HOME_KEY).read_bytes()).urls if u.startswith("html/chain/")
    ]
    assert listed == [pulse_page_key(1, p) for p in (6, 6, 6, 5, 4, 3, 2, 1)]  # latest 3x
    # The status page's charts are in its bytes (they show with JavaScript off).
    status = (store.root / STATUS_PAGE_KEY).read_bytes()
    assert status.count(b'<svg class="chart') == 10
    assert parsed(status).tags.count("script") == 1  # site.js, for the strip only


def test_pulse_page_names_the_value_to_use_only_with_a_valid_external(
    items: list[OutboxItem], signer: Signer
) -> None:
    lrv = hashlib.sha512(b"record").digest()
    source_id, ext_value = hashlib.sha512(b"drand:chain").digest(), hashlib.sha512(b"sig").digest()

    def page_for(external: External) -> str:
        built = build_pulse(
            None,
            time_ms=items[0].time_ms,
            period_ms=MINUTE,
            local_random_value=lrv,
            next_local_random_value=lrv,
            signer=signer,
            base_url="https://beacon.test",
            external=external,
        )
        return render_pulse_page(dataclasses.replace(items[0], pulse=built.data))[1].decode()

    valid = page_for(External(source_id=source_id, status_code=0, value=ext_value))
    assert "The value to use" in valid
    assert random_value(lrv, ext_value).hex().upper() in valid
    withheld = page_for(External(source_id=source_id, status_code=2, value=bytes(64)))
    assert "The value to use" not in withheld and "external missing" in withheld
    assert random_value(lrv, bytes(64)).hex().upper() not in withheld
