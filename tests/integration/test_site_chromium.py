"""The static site in a real browser: a real `beacon run`, then headless Chromium (Debian's
`chromium`) on the output directory, from `file://` and from an HTTP server on 127.0.0.1.

Chromium must be installed (``scripts/test`` installs it): without it these tests fail,
they do not skip. Screenshots are kept under ``build/site/`` (CI artifacts, not in git).
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit
from urllib.request import url2pathname

import pytest
from beacon_verifier import layout
from beacon_verifier.format import format_timestamp, parse_pulse

from beacon.entropy import EntropyDraw
from beacon.publish.draw_page import DrawExample, render_draw_page
from beacon.publish.local import LocalDirPublisher
from beacon.publish.pipeline import (
    archive_complete_days,
    publish_identity,
    publish_item,
    publish_site_pages,
)
from beacon.publish.site import (
    DRAW_KEY,
    HOME_KEY,
    STATUS_KEY,
    SiteInfo,
    pulse_page_key,
)
from beacon.publish.status_page import SiteHealthPublisher
from beacon.pulse.keys import Signer
from beacon.state import State
from tests.beacon_proc import ROOT, run_beacon
from tests.unit.test_builder import MINUTE, build_chain
from tests.unit.test_site import os_record, simulator_record

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = ROOT / "build" / "site" / "pulse.png"

# Payloads that change the page title if they ever run as script.
SCRIPT = '<script>document.title="pwned-script"</script>'
IMG = '"><img src=x onerror=document.title=/pwned-img/.source>'
NAME = "<img src=y onerror=document.title=/pwned-name/.source>"  # a certificate CN: <= 64


class Page(HTMLParser):
    """What a dumped DOM holds: title, link targets, element names, text."""

    def __init__(self, dom: str) -> None:
        super().__init__()
        self.dom = dom
        self.title = ""
        self.links: list[tuple[str, dict[str, str | None]]] = []
        self.tags: list[str] = []
        self.text: list[str] = []
        self._in_title = False
        self.feed(dom)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self._in_title = tag == "title"
        found = dict(attrs)
        if tag in ("a", "link") and found.get("href"):
            self.links.append((str(found["href"]), found))

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        self.text.append(data)


class Chromium:
    """Headless Chromium, a fresh profile for every run."""

    def __init__(self, work: Path) -> None:
        if not Path(CHROMIUM).is_file():
            pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (scripts/test does)")
        self.work = work
        self.runs = 0

    def _run(self, url: str, *args: str) -> str:
        self.runs += 1
        profile = self.work / f"profile-{self.runs}"
        done = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                *args,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        shutil.rmtree(profile, ignore_errors=True)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    def dom(self, url: str) -> Page:
        """The page's DOM once loaded, and after a second of (virtual) time for scripts."""
        return self.dom_after(url, budget_ms=1000)

    def dom_after(self, url: str, *, budget_ms: int) -> Page:
        """The page's DOM after ``budget_ms`` of (virtual) time for scripts."""
        return Page(self._run(url, f"--virtual-time-budget={budget_ms}", "--dump-dom"))

    def screenshot(self, url: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        self._run(url, f"--screenshot={path}", "--window-size=1280,2600", "--hide-scrollbars")


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def serve() -> Iterator[Any]:
    """``serve(directory)`` -> the http://127.0.0.1:port/ URL of a static server on it."""
    servers: list[ThreadingHTTPServer] = []

    def start(directory: Path) -> str:
        handler = functools.partial(QuietHandler, directory=str(directory))
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def exists(url: str) -> bool:
    """Whether ``url`` (file: or http:) names an existing file."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return Path(url2pathname(parts.path)).is_file()
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError:
        return False


def broken_links(page: Page, page_url: str) -> list[str]:
    """Targets of the page's links that do not exist (a query string is the page's input)."""
    missing = []
    for href, _ in page.links:
        assert not urlsplit(href).scheme and not href.startswith("/"), href  # relative only
        target = urljoin(page_url, urlsplit(href).path)
        if not exists(target):
            missing.append(target)
    return missing


def page_pulse(site: Path, chain: int, pulse: int) -> bytes:
    return (site / layout.pulse_key(chain, pulse)).read_bytes()


def test_site_works_from_a_directory_and_from_a_static_host(tmp_path: Path, serve: Any) -> None:
    browser = Chromium(tmp_path)
    # Period 2: time for each draw's job, health tests and estimators (pulse 4 must be quantum).
    done = run_beacon(tmp_path, ["run", "--period", "2", "--count", "4"], timeout=240)
    assert done.returncode == 0, done.stderr
    site = tmp_path / "public"
    latest = json.loads((site / layout.LAST_KEY).read_bytes())["pulse"]
    value, c, p = latest["outputValue"], latest["chainIndex"], latest["pulseIndex"]
    assert p == 4
    pulse_page = pulse_page_key(c, p)
    # The beacon wrote its status page and the strip's data after each pulse.
    assert (site / "status.html").is_file() and (site / "status" / "health.json").is_file()
    time.sleep(4.5)  # over two periods (2 s) without a pulse: stopped, as a reader can tell

    for base in (site.as_uri() + "/", serve(site)):
        home = browser.dom(base + HOME_KEY)
        assert 'data-state="stopped"' in home.dom and "Stopped" in "".join(home.text)
        assert value in "".join(home.text)
        assert home.title.startswith("Quantum randomness beacon")
        assert any(attrs.get("rel") == "stylesheet" for _, attrs in home.links)
        assert len(home.links) > 10
        assert broken_links(home, base + HOME_KEY) == []

        page = browser.dom(base + pulse_page)
        assert value in "".join(page.text)
        assert "a simulated quantum circuit (pseudo-random) on" in "".join(page.text)
        # Its next pulse does not exist yet: the link is a time lookup, which says so.
        nexts = [href for href, attrs in page.links if attrs.get("rel") == "next"]
        assert nexts == [
            f"../../../../find.html?next={parse_pulse(page_pulse(site, c, p)).time_ms}"
        ]
        assert broken_links(page, base + pulse_page) == []
        previous = [href for href, attrs in page.links if attrs.get("rel") == "prev"]
        assert previous == ["../../../../" + pulse_page_key(c, p - 1)]

    browser.screenshot(site.as_uri() + "/" + pulse_page, SCREENSHOT)
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert SCREENSHOT.stat().st_size > 20_000


def test_hostile_strings_never_run_in_the_browser(tmp_path: Path, serve: Any) -> None:
    browser = Chromium(tmp_path)
    # The beacon's name (on every page) is hostile; an unknown local_backend is a
    # start-up error now, so hostile fallback reasons are covered by test_site's pages.
    env = {
        "BEACON_ENTROPY_SOURCE": "os",
        "BEACON_NAME": NAME,
        "BEACON_KEY_BITS": "2048",
    }
    done = run_beacon(tmp_path, ["run", "--period", "1", "--count", "2"], env=env, timeout=240)
    assert done.returncode == 0, done.stderr
    site = tmp_path / "public"
    # A draw page whose label and entrants are hostile, written next to the others.
    example = DrawExample(
        label=SCRIPT,
        entrants=f"{IMG}\nAlice\nBob",
        winners=2,
        pulse_time_ms=1_798_804_800_000,
        output_value=bytes(range(64)),
        output_value_origin="a test value",
    )
    key, page = render_draw_page(
        SiteInfo(name=NAME, site_url=site.as_uri(), period_ms=1000), example
    )
    assert key == DRAW_KEY
    (site / DRAW_KEY).write_bytes(page)

    base = serve(site)
    for key, payloads, title in (
        (HOME_KEY, (NAME,), f"{NAME}: latest pulse"),
        ("html/chain/1/pulse/2.html", (), "Pulse 1/2"),
        (DRAW_KEY, (SCRIPT, IMG), f"Use it for a fair draw: {NAME}"),
    ):
        dom = browser.dom(base + key)
        # A payload that ran would have replaced the whole title with pwned-...
        assert dom.title.startswith(title), (key, dom.title)
        assert dom.tags.count("script") == 1 and "img" not in dom.tags, key  # site.js only
        text = "".join(dom.text)
        for payload in payloads:
            assert payload in text, (key, payload)  # shown literally


# --- health at a glance: a site with fallbacks, a gap and a day boundary -------------------

DAY_MS = 86_400_000
WIDTHS = (1280, 375)
#: Loads each page named by ?p= in an iframe 375 px wide (same origin) and writes what it
#: measured into the DOM: the page's scroll width against the viewport, its charts, its strip.
MEASURE = """<!DOCTYPE html><html><body style="margin:0"><p>measuring</p><script>
var pages = new URLSearchParams(location.search).getAll("p"), out = {}, i = 0;
function next() {
  if (i >= pages.length) { document.title = JSON.stringify(out); return; }
  var f = document.createElement("iframe");
  f.style.width = "375px"; f.style.height = "700px"; f.style.border = "0";
  f.onload = function () {
    setTimeout(function () {
      var d = f.contentDocument, strip = d.getElementById("status-strip");
      out[pages[i]] = {
        scrollWidth: d.documentElement.scrollWidth,
        viewport: d.documentElement.clientWidth,
        charts: d.querySelectorAll("svg.chart").length,
        gaps: d.querySelectorAll("svg.chart rect.gap").length,
        strip: strip ? strip.getAttribute("data-state") : null,
        stripText: strip ? strip.textContent : null
      };
      f.remove(); i++; next();
    }, 300);
  };
  f.src = pages[i]; document.body.appendChild(f);
}
next();
</script></body></html>
"""


def shoot(browser: Chromium, url: str, name: str) -> list[Path]:
    """Screenshots of ``url`` at each width, as build/site/{name}-{width}.png."""
    shots = []
    for width in WIDTHS:
        path = ROOT / "build" / "site" / f"{name}-{width}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        browser._run(
            url,
            f"--screenshot={path}",
            f"--window-size={width},{2400 if width > 400 else 3200}",
            "--hide-scrollbars",
            "--virtual-time-budget=2000",
        )
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        shots.append(path)
    return shots


def measure(browser: Chromium, base: str, keys: list[str]) -> dict[str, Any]:
    query = "&".join(f"p={urllib.request.quote(k)}" for k in keys)
    dom = browser.dom_after(f"{base}measure.html?{query}", budget_ms=15_000)
    return dict(json.loads(dom.title))


def build_site(root: Path, state_path: Path, signer: Signer, now_ms: int) -> dict[str, Any]:
    """A site as the beacon's publishing pipeline writes it, from pulses signed at chosen
    times: quantum pulses around a UTC midnight, a gap, then pulses up to a minute from now
    whose entropy (after the first few) came from the OS fallback. Returns its landmarks."""
    now = now_ms - now_ms % MINUTE
    midnight = now - now % DAY_MS
    if now - midnight < 3 * 3_600_000:  # keep the day boundary well inside the last 24 h
        midnight -= DAY_MS
    before = [midnight + n * MINUTE for n in range(-4, 4)]  # 23:56 to 00:03
    after = [now + n * MINUTE for n in range(-5, 2)]  # up to a minute from now
    times = before + after
    draws = [
        EntropyDraw(record=os_record(n + 1, "injected: harvest failed"), kind="os-fallback")
        if n >= len(before) + 3
        else EntropyDraw(record=simulator_record(n + 1), kind="quantum-simulator")
        for n in range(len(times))
    ]
    site = SiteInfo(name="Test beacon", site_url="https://beacon.example", period_ms=MINUTE)
    store = LocalDirPublisher(root)
    state = State(state_path)
    publish_identity(store, signer)
    publish_site_pages(store, site, signer.certificate_id, max_age=60)
    health = SiteHealthPublisher(site)
    for n, built in enumerate(build_chain(times, signer)):
        state.commit_pulse(head=built.head, pulse=built.data, draw=draws[n], next_draw=draws[n])
    for n, item in enumerate(state.outbox()):
        publish_item(store, item, last_max_age=60, site=site, recent=state.recent_published(20))
        state.mark_published(item.seq, item.time_ms)
        archive_complete_days(store, state, item.time_ms, max_age=60)
        status = {  # the service's keys, and a reason another part of the beacon reports
            "lastPulse": format_timestamp(item.time_ms),
            "period": MINUTE,
            "lastPulseSource": item.kind,
            "pulsesEmitted": n + 1,
            "degraded": [{"code": "quantum-harvest-failing", "message": "IBM jobs fail"}]
            if item.kind == "os-fallback"
            else [],
        }
        store.put_mutable(STATUS_KEY, json.dumps(status).encode(), content_type="", max_age=60)
        health.published(store, item, now_ms=item.time_ms + 1200, max_age=60)
    state.close()
    return {"midnight": midnight, "times": times, "gap_pulse": len(before) + 1}


def test_health_at_a_glance_screenshots_and_time_lookup(
    tmp_path: Path, serve: Any, signer: Signer
) -> None:
    browser = Chromium(tmp_path)
    site = tmp_path / "public"
    marks = build_site(site, tmp_path / "state.sqlite", signer, time.time_ns() // 1_000_000)
    midnight, times, gap_pulse = marks["midnight"], marks["times"], marks["gap_pulse"]
    last_index = len(times)
    day = layout.day_of(midnight - 1)
    day_page = f"html/day/{day.isoformat()}.html"
    hour_page = f"html/day/{day.isoformat()}/23.html"
    assert (site / day_page).is_file() and (site / hour_page).is_file()
    gap = parse_pulse(page_pulse(site, 1, gap_pulse))
    assert gap.status_code & 2  # statusCode bit 2: the gap

    base = serve(site)
    # Degraded, with the reasons in words: the one status.json lists, and the fallback.
    home = browser.dom(base + HOME_KEY)
    text = " ".join(" ".join(home.text).split())
    assert 'data-state="degraded"' in home.dom and "Degraded" in text
    assert "IBM jobs fail" in text and "operating system, not from quantum circuits" in text
    assert "OS fallback" in text and "after a gap" in text  # the badges in the table
    # Without scripts (file://, nothing fetched) the home page says it all the same.
    static = browser.dom(site.as_uri() + "/" + HOME_KEY)
    assert 'data-state="degraded"' in static.dom and "IBM jobs fail" in static.dom
    # It lists the pulses of the day before too (archived, so the state forgot them).
    assert any(href == pulse_page_key(1, 1) for href, _ in home.links)
    # An archived pulse page learns the beacon's state from status/health.json.
    old = browser.dom(base + pulse_page_key(1, 2))
    assert 'data-state="degraded"' in old.dom

    status = browser.dom(base + "status.html")
    assert status.dom.count('<svg class="chart') == 10  # 5 charts over 24 h, 5 over 30 days
    assert 'class="gap"' in status.dom  # the gap, on the timelines
    assert "from the OS fallback" in " ".join(status.text)

    # Screenshots at 1280 and 375 px, and nothing wider than a 375 px viewport.
    pages = {
        "home": HOME_KEY,
        "pulse": pulse_page_key(1, gap_pulse),
        "day": day_page,
        "hour": hour_page,
        "status": "status.html",
        "draw": DRAW_KEY,
    }
    for name, key in pages.items():
        for shot in shoot(browser, base + key, name):
            assert shot.stat().st_size > 10_000, shot
    (site / "measure.html").write_text(MEASURE)
    measured = measure(browser, base, list(pages.values()))
    assert set(measured) == set(pages.values())
    for key, found in measured.items():
        # (the viewport is 375 px less the frame's scroll bar)
        assert found["scrollWidth"] <= found["viewport"] and found["viewport"] > 350, (key, found)
        assert found["strip"] == "degraded", (key, found)
    assert measured["status.html"]["charts"] == 10 and measured["status.html"]["gaps"] >= 2

    # The time form: a time inside the gap opens the first pulse after it; a time just
    # before midnight, the first pulse of the new day; "next" the pulse after; the latest
    # pulse has no next yet.
    found = browser.dom(base + f"find.html?at={iso(gap.time_ms - 90_000)}")
    assert found.title.startswith(f"Pulse 1/{gap_pulse} "), found.title
    found = browser.dom(base + f"find.html?at={iso(midnight - 30_000)}")
    assert found.title.startswith(f"Pulse 1/{times.index(midnight) + 1} "), found.title
    found = browser.dom(base + f"find.html?next={gap.time_ms}")
    assert found.title.startswith(f"Pulse 1/{gap_pulse + 1} "), found.title
    newest = browser.dom(base + f"find.html?next={times[-1]}")
    assert 'data-outcome="none"' in newest.dom
    assert 'action="find.html"' in home.dom and 'name="at"' in home.dom
    assert 'action="../../find.html"' in browser.dom(base + day_page).dom
    assert last_index == len(times)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
