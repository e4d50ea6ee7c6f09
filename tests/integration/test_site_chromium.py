"""The static site in a real browser: a real `beacon run`, then headless Chromium (Debian's
`chromium`) on the output directory, from `file://` and from an HTTP server on 127.0.0.1.

Chromium must be installed (``scripts/test`` installs it): without it these tests fail,
they do not skip. The pulse page's screenshot is kept as ``build/site/pulse.png``.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit
from urllib.request import url2pathname

import pytest
from beacon_verifier import layout

from beacon.publish.site import (
    DRAW_KEY,
    HOME_KEY,
    DrawExample,
    SiteInfo,
    pulse_page_key,
    render_draw_page,
)
from tests.beacon_proc import ROOT, run_beacon

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
        return Page(self._run(url, "--virtual-time-budget=1000", "--dump-dom"))

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


def broken_links(page: Page, page_url: str, *, skip: str | None = None) -> list[str]:
    """Targets of the page's links that do not exist; ``skip`` is one URL allowed to be missing."""
    missing = []
    for href, _ in page.links:
        assert not urlsplit(href).scheme and not href.startswith("/"), href  # relative only
        target = urljoin(page_url, href)
        if target != skip and not exists(target):
            missing.append(target)
    return missing


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

    for base in (site.as_uri() + "/", serve(site)):
        home = browser.dom(base + HOME_KEY)
        assert value in "".join(home.text)
        assert home.title.startswith("Quantum randomness beacon")
        assert any(attrs.get("rel") == "stylesheet" for _, attrs in home.links)
        assert len(home.links) > 10
        assert broken_links(home, base + HOME_KEY) == []

        page = browser.dom(base + pulse_page)
        assert value in "".join(page.text)
        assert "a simulated quantum circuit (pseudo-random) on" in "".join(page.text)
        # Its next pulse does not exist yet: that link alone may not resolve.
        nexts = [href for href, attrs in page.links if attrs.get("rel") == "next"]
        assert nexts == ["../../../../" + pulse_page_key(c, p + 1)]
        next_url = urljoin(base + pulse_page, nexts[0])
        assert not exists(next_url)
        assert broken_links(page, base + pulse_page, skip=next_url) == []
        previous = [href for href, attrs in page.links if attrs.get("rel") == "prev"]
        assert previous == ["../../../../" + pulse_page_key(c, p - 1)]

    browser.screenshot(site.as_uri() + "/" + pulse_page, SCREENSHOT)
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert SCREENSHOT.stat().st_size > 20_000


def test_hostile_strings_never_run_in_the_browser(tmp_path: Path, serve: Any) -> None:
    browser = Chromium(tmp_path)
    # An unknown fake backend makes the beacon fall back to the OS source, and the
    # fallback reason (on every pulse's page) quotes the backend's name.
    env = {
        "BEACON_LOCAL_BACKEND": SCRIPT + IMG,
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
        (HOME_KEY, (NAME, SCRIPT, IMG), f"{NAME}: latest pulse"),
        ("html/chain/1/pulse/2.html", (SCRIPT, IMG), "Pulse 1/2"),
        (DRAW_KEY, (SCRIPT, IMG), f"Use it for a fair draw: {NAME}"),
    ):
        dom = browser.dom(base + key)
        # A payload that ran would have replaced the whole title with pwned-...
        assert dom.title.startswith(title), (key, dom.title)
        assert "script" not in dom.tags and "img" not in dom.tags, key
        text = "".join(dom.text)
        for payload in payloads:
            assert payload in text, (key, payload)  # shown literally
    record = json.loads((site / layout.entropy_record_key(1, 2)).read_bytes())
    assert record["source"] == "os-fallback" and SCRIPT in record["reason"]
