"""beacon-verify on NIST's own pulses: a local HTTP server on 127.0.0.1 answering NIST's
REST paths (time queries computed like NIST's server) from the vectors, the same pulses
saved in NIST's layout, and hostile servers (errors, oversize, encodings, redirects)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from beacon_verifier import layout, web
from beacon_verifier.errors import FetchError
from beacon_verifier.format import Pulse, parse_pulse

from tests.beacon_proc import run_verify
from tests.conftest import NIST
from tests.unit.test_skiplist import write_nist_layout

pytestmark = pytest.mark.integration

(PEM,) = NIST.glob("*.pem")
PULSES = sorted(
    (parse_pulse((NIST / f"nist_c1_p{p}.json").read_bytes()) for p in (1, 54609, 54610)),
    key=lambda p: p.time_ms,
)
TIME_PATH = re.compile(r"/beacon/2\.0/pulse/time/(?:(previous|next)/)?(\d+)\Z")

Reply = tuple[int, dict[str, str], bytes]


def nist_reply(path: str, *, certificate: bool = True) -> Reply:
    """What NIST's REST API answers for ``path`` over the three vector pulses."""
    by_index = {p.pulse_index: p for p in PULSES}
    found: Pulse | None = None
    if m := re.fullmatch(r"/beacon/2\.0/chain/1/pulse/(\d+)", path):
        found = by_index.get(int(m[1]))
    elif path in ("/beacon/2.0/pulse/last", "/beacon/2.0/chain/1/pulse/last"):
        found = PULSES[-1]
    elif m := TIME_PATH.match(path):
        kind, t = m[1], int(m[2])
        if kind is None:
            found = next((p for p in PULSES if p.time_ms >= t), None)
        elif kind == "previous":
            found = next((p for p in reversed(PULSES) if p.time_ms < t), None)
        else:
            found = next((p for p in PULSES if p.time_ms > t), None)
    elif path == f"/beacon/2.0/certificate/{PEM.stem}" and certificate:
        return 200, {"Content-Type": "application/x-pem-file"}, PEM.read_bytes()
    if found is None:
        return 404, {}, b'{"error":"not found"}'
    return 200, {"Content-Type": "application/json"}, found.raw or b""


class Server:
    """An HTTP server on 127.0.0.1 whose answers come from ``reply(path)``; counts requests."""

    def __init__(self, reply: Callable[[str], Reply]) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                status, headers, body = reply(self.path)
                self.send_response(status)
                headers = {"Content-Length": str(len(body)), **headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def asked(self, fragment: str) -> list[str]:
        return [r for r in self.requests if fragment in r]


@pytest.fixture
def nist() -> Iterator[Server]:
    server = Server(nist_reply)
    yield server
    server.close()


def verify(*args: str | Path) -> tuple[int, str, str]:
    done = run_verify([str(a) for a in args])
    return done.returncode, done.stdout, done.stderr


# --- NIST's REST API ------------------------------------------------------------------------


def test_chain_range_over_nist_rest(nist: Server) -> None:
    code, out, err = verify("chain", nist.url, "--from", "54609", "--to", "54610", "--json")
    assert code == 0, out + err
    report = json.loads(out)
    assert report["pulsesChecked"] == 2 and report["failures"] == [] and report["ok"]
    assert report["outputVariants"] == {"nist": 2}
    assert len(nist.asked("/certificate/")) == 1  # found by certificateId, once
    assert len(nist.requests) < 15


def test_time_queries_use_nist_time_paths(nist: Server) -> None:
    code, out, err = verify("time", nist.url, "2018-08-30T17:43:30Z", "--json")
    assert code == 0, out + err
    doc = json.loads(out)
    assert (doc["pulseIndex"], doc["signature"], doc["ok"]) == (54610, "valid", True)
    asked = [r for r in nist.requests if "/certificate/" not in r and "/entropy/" not in r]
    # No time index on NIST: an hour object and bounds.json are looked for, then
    # pulse/last (for the period) and the time path of the next period boundary
    # answer, and the pulse before the answer proves it.
    assert asked[:5] == [
        "/beacon/2.0/index/hour/2018-08-30T17.json",
        "/beacon/2.0/index/bounds.json",
        "/beacon/2.0/pulse/last",
        "/beacon/2.0/pulse/time/1535651040000",
        "/beacon/2.0/chain/1/pulse/54609",
    ]
    nist.requests.clear()
    code, out, _ = verify("time", nist.url, "1535651010000", "--previous", "--json")
    assert code == 0 and json.loads(out)["pulseIndex"] == 54609
    assert nist.asked("/pulse/time/previous/1535651010000")
    code, out, _ = verify("time", nist.url, "2018-07-23T19:26:00Z", "--next")
    assert code == 0 and "is pulse 1/54609 at 2018-08-30T17:43:00.000Z" in out
    code, _, err = verify("time", nist.url, "2018-08-30T17:44:00Z", "--next")
    assert code == 3 and "no pulse after 2018-08-30T17:44:00.000Z" in err


def test_skiplist_over_nist_rest(nist: Server) -> None:
    code, out, err = verify("skiplist", nist.url, "1", "54610")
    assert code == 0, out + err
    assert "--year--> pulse 1 at 2018-07-23T19:26:00.000Z" in out
    assert out.strip().endswith("on chain 1: VALID")
    pulses = [r for r in nist.requests if "/chain/1/pulse/" in r and not r.endswith("/last")]
    # The path, and the predecessor of NEWER (its full verdict: one GET).
    assert sorted(pulses) == [
        "/beacon/2.0/chain/1/pulse/1",
        "/beacon/2.0/chain/1/pulse/54609",
        "/beacon/2.0/chain/1/pulse/54610",
    ]


def test_pulse_by_url_and_with_source(nist: Server, tmp_path: Path) -> None:
    code, out, _ = verify("pulse", f"{nist.url}/beacon/2.0/chain/1/pulse/54609")
    assert code == 0 and "valid" in out
    loose = tmp_path / "p.json"
    loose.write_bytes((NIST / "nist_c1_p1.json").read_bytes())
    assert verify("pulse", loose, "--source", nist.url)[0] == 0


def test_without_the_certificate_signatures_are_unverifiable_and_the_rest_checked() -> None:
    server = Server(lambda path: nist_reply(path, certificate=False))
    try:
        code, out, _ = verify("chain", server.url, "--from", "54609", "--to", "54610", "--json")
        report = json.loads(out)
        assert code == 1 and report["signaturesUnverifiable"] == 2
        assert report["failures"] == [] and report["outputVariants"] == {"nist": 2}
        code, out, _ = verify("chain", server.url, "--from", "54609", "--to", "54610")
        assert "unverifiable signatures 2; failures 0: INVALID" in out
    finally:
        server.close()


# --- NIST's pulses saved in NIST's layout ---------------------------------------------------


def test_saved_nist_layout(tmp_path: Path) -> None:
    site = write_nist_layout(tmp_path / "nist")
    code, out, err = verify("chain", site, "--json", "--jobs", "2")
    assert code == 1, err
    report = json.loads(out)
    assert report["pulsesChecked"] == 3 and report["failures"] == []
    assert report["missing"] == [[2, 54608]] and report["missingCount"] == 54607
    assert verify("chain", site, "--from", "54609")[0] == 0
    assert verify("skiplist", site, "1", "54610")[0] == 0
    # A static copy answers time queries from its exact time paths and pulse/last.
    code, out, err = verify("time", site, "2018-08-30T17:43:30Z")
    assert code == 0, out + err
    assert "is pulse 1/54610 at 2018-08-30T17:44:00.000Z" in out


# --- hostile servers ------------------------------------------------------------------------


def hostile(answer: Callable[[str], Reply | None]) -> Server:
    """NIST's API, except where ``answer`` says otherwise."""
    return Server(lambda path: answer(path) or nist_reply(path))


def test_transient_errors_are_retried_and_others_are_not() -> None:
    failures = {"n": 0}

    def flaky(path: str) -> Reply | None:
        if path.endswith("/pulse/54609") and failures["n"] < 2:
            failures["n"] += 1
            return 503, {}, b"busy"
        if path.endswith("/pulse/54610"):
            return 403, {}, b"no"
        return None

    server = hostile(flaky)
    try:
        code, out, err = verify("chain", server.url, "--from", "54609", "--to", "54609")
        assert code == 0, out + err
        assert len(server.asked("/chain/1/pulse/54609")) >= 3  # two 503s, then the pulse
        server.requests.clear()
        code, _, err = verify("pulse", f"{server.url}/beacon/2.0/chain/1/pulse/54610")
        assert code == 3 and "HTTP 403" in err and len(err.splitlines()) == 1
        assert len(server.asked("/chain/1/pulse/54610")) == 1  # not retried
    finally:
        server.close()


@pytest.mark.parametrize(
    ("reply", "code", "message"),
    [
        ((200, {}, b"x" * 70_000), 1, "larger than 65536 bytes"),  # an oversized pulse
        ((200, {"Content-Encoding": "gzip"}, b"\x1f\x8b"), 3, "Content-Encoding 'gzip'"),
        ((302, {"Location": "file:///etc/passwd"}, b""), 3, "non-http(s) URL"),
        ((302, {"Location": "ftp://127.0.0.1/x"}, b""), 3, "non-http(s) URL"),
        ((200, {"Content-Length": "5000"}, b"{}"), 3, "cut short (4998 bytes missing)"),
        ((200, {}, b"not json"), 1, "format"),
    ],
)
def test_hostile_answers_end_in_one_line(reply: Reply, code: int, message: str) -> None:
    server = hostile(lambda path: reply if path.endswith("/pulse/54610") else None)
    try:
        got, out, err = verify("chain", server.url, "--from", "54609", "--to", "54610")
        assert got == code, out + err
        assert message in out + err
        assert "Traceback" not in out + err and len(err.strip().splitlines()) <= 1
    finally:
        server.close()


def test_a_server_that_trickles_hits_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    stop = threading.Event()

    class Slow(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            while not stop.is_set():
                try:
                    self.wfile.write(b" ")
                    self.wfile.flush()
                except OSError:
                    return
                stop.wait(0.05)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setattr(web, "HTTP_DEADLINE", 1.0)
    try:
        with pytest.raises(FetchError, match="no complete answer within 1 s"):
            web.http_get(f"http://127.0.0.1:{httpd.server_address[1]}/beacon/2.0/pulse/last")
    finally:
        stop.set()
        httpd.shutdown()
        httpd.server_close()


def test_keys_from_links_never_leave_the_site() -> None:
    with pytest.raises(FetchError, match="unsafe key"):
        web.HttpSource("http://127.0.0.1:9").get("beacon/2.0/../../etc/passwd")
    assert layout.pulse_key(1, 2) == "beacon/2.0/chain/1/pulse/2"
