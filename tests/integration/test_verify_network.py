"""Network audits against real servers on 127.0.0.1: pipelining, GET counts, 429 and
Retry-After, trickled headers, resume after an interruption (docs/verifying-network.md)."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from beacon_verifier import layout
from beacon_verifier.archive import MAX_ARCHIVE_BYTES
from beacon_verifier.cli import main
from beacon_verifier.descriptor import Promise, SiteDescriptor, encode_descriptor
from beacon_verifier.errors import FetchError
from beacon_verifier.external import QUICKNET
from beacon_verifier.format import External
from beacon_verifier.prefetch import STREAMS_AHEAD, PipelinedSource
from beacon_verifier.replay import replay_chain
from beacon_verifier.report import report_as_dict
from beacon_verifier.web import HttpClient, HttpSource

from beacon.pulse.builder import build_pulse
from beacon.pulse.keys import Signer
from tests.unit.test_replay import build_records_chain, write_site

PULSES = 1_600  # two segments of a day's 1,440 pulses each
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z

#: (status, headers, body) or None: serve the file.
Reply = tuple[int, dict[str, str], bytes] | None


@pytest.fixture(scope="module")
def nist_site(tmp_path_factory: pytest.TempPathFactory, other_signer: Signer) -> Path:
    """A chain of ``PULSES`` pulses in NIST's layout: pulses and the certificate only."""
    root = tmp_path_factory.mktemp("nist-site")
    head = None
    data = b""
    for n in range(PULSES):
        built = build_pulse(
            head,
            time_ms=START_MS + n * 60_000,
            period_ms=60_000,
            local_random_value=hashlib.sha512(b"%d" % n).digest(),
            next_local_random_value=hashlib.sha512(b"%d" % (n + 1)).digest(),
            signer=other_signer,
            base_url="https://beacon.example",
        )
        head, data = built.head, built.data
        path = root / layout.pulse_key(1, n + 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    for key in (layout.LAST_KEY, layout.chain_last_key(1)):
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    cert = root / layout.certificate_key(other_signer.certificate_id.hex())
    cert.parent.mkdir(parents=True)
    cert.write_bytes(other_signer.certificate_pem)
    return root


class Site:
    """``root`` over HTTP/1.1 on 127.0.0.1, each answer ``delay`` s late; ``reply(path)``
    may answer instead. Counts GETs by path and the most requests served at once."""

    def __init__(self, root: Path, delay: float = 0.0) -> None:
        self.root = root
        self.delay = delay
        self.reply: Callable[[str], Reply] = lambda path: None
        self.gets: Counter[str] = Counter()
        self.log: list[tuple[float, str, int]] = []  # (answered at, path, status)
        self.arrivals: list[float] = []
        self.inside = self.peak = 0
        lock = threading.Lock()
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                path = self.path.lstrip("/")
                with lock:
                    site.arrivals.append(time.monotonic())
                    site.gets[path] += 1
                    site.inside += 1
                    site.peak = max(site.peak, site.inside)
                try:
                    time.sleep(site.delay)
                    status, headers, body = site.answer(path)
                    with lock:
                        site.log.append((time.monotonic(), path, status))
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                finally:
                    with lock:
                        site.inside -= 1

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def answer(self, path: str) -> tuple[int, dict[str, str], bytes]:
        replied = self.reply(path)
        if replied is not None:
            return replied
        file = self.root / path
        if ".." in path.split("/") or not file.is_file():
            return 404, {}, b""
        return 200, {}, file.read_bytes()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def site(nist_site: Path) -> Iterator[Site]:
    served = Site(nist_site, delay=0.01)
    yield served
    served.close()


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    code = main(["chain", *argv, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_a_nist_site_costs_one_get_per_pulse_with_many_in_flight(
    site: Site, nist_site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = _json(capsys, site.url, "--concurrency", "16")
    assert code == 0 and report["ok"] and report["pulsesChecked"] == PULSES
    pulse_gets = {p: n for p, n in site.gets.items() if "/chain/1/pulse/" in p}
    assert set(pulse_gets) == {layout.pulse_key(1, i) for i in range(1, PULSES + 1)}
    # Each exactly once, but pulse 1: the head check reads it first, to bound how far
    # the claimed head can be from it (siteread.check_head), one GET per audit.
    assert {p: n for p, n in pulse_gets.items() if n != 1} == {layout.pulse_key(1, 1): 2}
    assert site.gets[layout.LAST_KEY] == 1  # where the chain ends
    certificate_gets = [n for p, n in site.gets.items() if "/certificate/" in p]
    assert certificate_gets == [1]
    probes = [p for p in site.gets if "/entropy/" in p or "/pq-" in p or "/archive/" in p]
    assert probes == []
    assert site.peak > 4  # pipelined, not one after another
    _, local = _json(capsys, str(nist_site))
    assert report == local


def test_workers_share_the_concurrency_and_fetch_certificates_once_each(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = _json(capsys, site.url, "--jobs", "2", "--concurrency", "6")
    assert code == 0 and report["pulsesChecked"] == PULSES
    assert site.peak <= 6
    assert sum(n for p, n in site.gets.items() if "/certificate/" in p) <= 2  # one per worker


def test_429_lowers_concurrency_and_retry_after_is_honoured(site: Site) -> None:
    refusals = [0]

    def refuse_some(path: str) -> Reply:
        if "/pulse/" in path and refusals[0] < 4:
            refusals[0] += 1
            return 429, {"Retry-After": "1"}, b"slow down"
        return None

    site.reply = refuse_some
    source = PipelinedSource(HttpSource(site.url, 8), 8)
    keys = [layout.pulse_key(1, i) for i in range(1, 13)]
    source.read_ahead((k, 65536) for k in keys)
    got = [source.get(k) for k in keys]
    assert all(data is not None and b'"pulseIndex":' in data for data in got)
    client = source.inner.client  # type: ignore[attr-defined]
    # Halved to 4 by the burst of 429s; 12 calm answers since grow it by 2 at most.
    assert client.limiter.limit <= 6
    first_refusal = min(t for t, _, status in site.log if status == 429)
    # Requests already sent then are answered (0.3 s of slack for those still on their
    # way under load); no new one comes during the Retry-After; the retries come after.
    quiet = [t for t in site.arrivals if first_refusal + 0.3 < t < first_refusal + 0.9]
    assert quiet == []
    assert any(t >= first_refusal + 0.9 for t in site.arrivals)
    source.close()


def test_a_server_refusing_for_ever_runs_out_of_retries(site: Site) -> None:
    site.reply = lambda path: (503, {"Retry-After": "0"}, b"")
    client = HttpClient(4, sleep=lambda s: None)
    with pytest.raises(FetchError, match="HTTP 503"):
        client.get(f"{site.url}/{layout.pulse_key(1, 1)}")
    assert len(site.log) == client.attempts  # per object: at most `attempts`


def test_trickled_headers_hit_the_deadline() -> None:
    """A server that sends its headers a byte at a time never ends a read timeout."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            for _ in range(600):
                if stop.wait(0.05):
                    return
                try:
                    conn.sendall(b"X")
                except OSError:
                    return

    threading.Thread(target=trickle, daemon=True).start()
    client = HttpClient(1, deadline=1.0, attempts=1)
    started = time.monotonic()
    try:
        with pytest.raises(FetchError, match="no complete answer within 1 s"):
            client.get(f"http://127.0.0.1:{listener.getsockname()[1]}/x")
        assert time.monotonic() - started < 20  # ended by the deadline, not the trickle
    finally:
        stop.set()
        listener.close()


def test_a_slow_server_is_read_with_requests_overlapping(nist_site: Path) -> None:
    slow = Site(nist_site, delay=0.2)
    try:
        source = PipelinedSource(HttpSource(slow.url, 10), 10)
        keys = [layout.pulse_key(1, i) for i in range(1, 31)]
        source.read_ahead((k, 65536) for k in keys)
        assert all(source.get(k) is not None for k in keys)
        assert slow.peak >= 5
        source.close()
    finally:
        slow.close()


def test_resume_after_an_interruption(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "audit.json"
    args = [site.url, "--concurrency", "8", "--resume", str(state)]

    def broken(path: str) -> Reply:
        if "/chain/1/pulse/" in path and path.rsplit("/", 1)[1].isdigit():
            if int(path.rsplit("/", 1)[1]) > 1500:
                return 500, {}, b"down"
        return None

    site.reply = broken
    assert main(["chain", *args]) == 3  # the site failed mid-way
    capsys.readouterr()
    saved = json.loads(state.read_text())
    assert saved["verified"] == 1440  # the first segment, a day of pulses
    assert not list(tmp_path.glob(".audit.json.*"))  # no temporary file left

    site.reply = lambda path: None
    site.gets.clear()
    code, resumed = _json(capsys, *args)
    assert code == 0
    again = [p for p in site.gets if "/pulse/" in p and p.rsplit("/", 1)[1].isdigit()]
    assert sum(1 for p in again if int(p.rsplit("/", 1)[1]) <= 1440) <= 5  # not read again
    _, whole = _json(capsys, site.url)
    assert resumed == whole and resumed["pulsesChecked"] == PULSES
    assert json.loads(state.read_text())["verified"] == PULSES


def test_a_resume_file_of_another_audit_is_refused(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "audit.json"
    assert main(["chain", site.url, "--to", "10", "--resume", str(state)]) == 0
    assert main(["chain", site.url, "--to", "20", "--resume", str(state)]) == 2
    assert "give the same source and range" in capsys.readouterr().err
    state.write_text("{not json")
    assert main(["chain", site.url, "--resume", str(state)]) != 0
    err = capsys.readouterr().err
    assert "not a usable resume file" in err and len(err.splitlines()) == 1


# --- daily archives read ahead: the next day's archive while a day is checked ----------

EVERY_20_MIN = 20 * 60_000
#: Four complete days with their archives (2026-01-01..04) and ten pulses of a fifth.
ARCHIVED = [START_MS + i * EVERY_20_MIN for i in range(4 * 72 + 10)]
DAYS = [date(2026, 1, d) for d in range(1, 6)]


def _round(n: int) -> External:
    """A drand round claimed by pulse ``n`` (statusCode 0)."""
    return External(
        source_id=QUICKNET.source_id,
        status_code=0,
        value=hashlib.sha512(b"round %d" % n).digest(),
    )


@pytest.fixture(scope="module")
def archived_site(tmp_path_factory: pytest.TempPathFactory, other_signer: Signer) -> Path:
    chain = build_records_chain(ARCHIVED, other_signer, period=EVERY_20_MIN)
    return write_site(tmp_path_factory.mktemp("archived") / "site", chain, other_signer)


@pytest.fixture(scope="module")
def drand_site(tmp_path_factory: pytest.TempPathFactory, other_signer: Signer) -> Path:
    """``archived_site`` whose pulses claim drand rounds, each with its round record
    object (not a real round: the verdicts do not matter, what is read does)."""
    root = write_site(
        tmp_path_factory.mktemp("drand") / "site",
        build_records_chain(
            ARCHIVED,
            other_signer,
            period=EVERY_20_MIN,
            external=_round,
        ),
        other_signer,
    )
    promise = Promise(1, 1)
    descriptor = SiteDescriptor(
        entropy_records=promise, external=promise, external_source="drand", daily_archives=True
    )
    (root / layout.SITE_KEY).write_bytes(encode_descriptor(descriptor))
    for t in ARCHIVED:
        (root / layout.external_key(1, t)).parent.mkdir(parents=True, exist_ok=True)
        (root / layout.external_key(1, t)).write_bytes(b'{"round":%d,"statusCode":0}' % t)
    return root


def _served(root: Path, delay: float = 0.01) -> Iterator[Site]:
    served = Site(root, delay=delay)
    yield served
    served.close()


@pytest.fixture
def archived(archived_site: Path) -> Iterator[Site]:
    yield from _served(archived_site)


def _held_until_asked(site: Site, *pairs: tuple[str, str]) -> list[bool]:
    """For each (held, asked): hold the answer to ``held`` until ``asked`` is asked
    for (10 s at most); the list gets whether it was, in the order answered: True
    means ``asked`` was read ahead of ``held``."""
    seen = {asked: threading.Event() for _, asked in pairs}
    waits = dict(pairs)
    out: list[bool] = []

    def reply(path: str) -> Reply:
        if path in seen:
            seen[path].set()
        if path in waits:
            out.append(seen[waits[path]].wait(10))
        return None

    site.reply = reply
    return out


def test_every_days_archive_is_read_once_and_the_audit_equals_the_directorys(
    archived: Site, archived_site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The second day's archive is asked for before the first one is answered.
    ahead = _held_until_asked(archived, (layout.archive_key(DAYS[0]), layout.archive_key(DAYS[1])))
    code, report = _json(capsys, archived.url)
    assert ahead == [True]
    local_code, local = _json(capsys, str(archived_site))
    assert (code, report) == (local_code, local)
    assert code == 0 and report["pulsesChecked"] == len(ARCHIVED)
    archives = {p: n for p, n in archived.gets.items() if "/archive/" in p}
    # The four archives and the fifth day's (absent: its pulses come one by one).
    assert archives == {layout.archive_key(day): 1 for day in DAYS}
    pulses = {p for p in archived.gets if "/chain/1/pulse/" in p}
    assert pulses == {layout.pulse_key(1, i) for i in [1, *range(4 * 72 + 1, len(ARCHIVED) + 1)]}
    # Nothing twice: pulse 1 (the head check) also places the segments on days.
    assert {p: n for p, n in archived.gets.items() if n != 1} == {}


def test_results_are_the_same_with_and_without_reading_ahead(archived: Site) -> None:
    plain = replay_chain(HttpSource(archived.url, 4))
    ahead = PipelinedSource(HttpSource(archived.url, 4), 4)
    try:
        assert report_as_dict(replay_chain(ahead)) == report_as_dict(plain)
    finally:
        ahead.close()
    assert plain.ok and plain.pulses_checked == len(ARCHIVED)


def test_archives_ahead_are_bounded_and_read_back_whole(
    archived: Site, archived_site: Path
) -> None:
    source = PipelinedSource(HttpSource(archived.url, 4), 4)
    keys = [layout.archive_key(day) for day in DAYS[:4]]

    def asked() -> list[str]:
        return [p for p, _ in archived.gets.items() if "/archive/" in p]

    def wait_for(n: int) -> None:
        deadline = time.monotonic() + 30
        while len(asked()) < n and time.monotonic() < deadline:
            time.sleep(0.01)

    try:
        source.stream_ahead((k, MAX_ARCHIVE_BYTES) for k in keys)
        wait_for(STREAMS_AHEAD)
        time.sleep(0.2)  # room for any more to be asked for: none may be
        assert sorted(asked()) == keys[:STREAMS_AHEAD]  # before the reader asked for any
        first = source.stream(keys[0], max_bytes=MAX_ARCHIVE_BYTES)
        assert first is not None and b"".join(first) == (archived_site / keys[0]).read_bytes()
        wait_for(STREAMS_AHEAD + 1)
        time.sleep(0.2)
        assert sorted(asked()) == keys[: STREAMS_AHEAD + 1]  # one taken, one more ahead
        # The reader skips keys[1]: dropped; keys[2] comes from its fetch ahead.
        third = source.stream(keys[2], max_bytes=MAX_ARCHIVE_BYTES)
        assert third is not None and b"".join(third) == (archived_site / keys[2]).read_bytes()
        wait_for(len(keys))
        assert sorted(asked()) == sorted(keys) and set(archived.gets.values()) == {1}
    finally:
        source.close()


@pytest.mark.parametrize("status", [500, 404])
def test_a_next_archive_that_fails_or_is_missing(
    archived: Site, archived_site: Path, status: int, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = layout.archive_key(DAYS[2])
    archived.reply = lambda path: (status, {}, b"down") if path == broken else None
    code = main(["chain", archived.url])
    out = capsys.readouterr().out
    plain = replay_chain(HttpSource(archived.url, 4))
    if status == 500:
        # One line naming the archive; the day is read from its objects instead.
        assert code == 1
        (line,) = [line for line in out.splitlines() if "archive" in line]
        assert f"archive {DAYS[2].isoformat()}: " in line and "HTTP 500" in line
        assert [f.describe() for f in plain.failures] == [line]
    else:
        assert code == 0 and plain.ok  # archives are optional: objects instead
    assert plain.pulses_checked == len(ARCHIVED)
    day3 = {layout.pulse_key(1, i) for i in range(2 * 72 + 1, 3 * 72 + 1)}
    assert day3 <= set(archived.gets)


def test_round_records_of_archived_pulses_are_read_ahead(
    drand_site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Round records are not in the archives: one GET a pulse, many in flight."""
    served = Site(drand_site, delay=0.02)
    rounds = [layout.external_key(1, t) for t in ARCHIVED]
    tail = 4 * 72  # the first pulse of the day without an archive, read one by one
    # The next pulse's record is asked for before the one before it is answered: in
    # an archived day, and in the day read object by object.
    ahead = _held_until_asked(served, (rounds[0], rounds[1]), (rounds[tail], rounds[tail + 1]))
    try:
        _, report = _json(capsys, served.url, "--concurrency", "16")
    finally:
        served.close()
    assert ahead == [True, True]  # many in flight, not one after another
    _, local = _json(capsys, str(drand_site))
    assert report == local
    rounds = {p: n for p, n in served.gets.items() if "/external/" in p}
    assert rounds == {layout.external_key(1, t): 1 for t in ARCHIVED}
    assert "external: round not fetched" not in json.dumps(report)


def test_after_its_reads_ahead_the_source_rests_so_that_workers_fork(archived: Site) -> None:
    """replay forks its workers only from a process running no other thread: the
    read-ahead's threads (and the deadline watchdog's) must be gone once it rests."""

    before = set(threading.enumerate())  # other tests' threads are not this source's

    def ours() -> set[str]:  # the server's threads (one per connection) are not ours
        names = {t.name.split("_")[0] for t in set(threading.enumerate()) - before}
        return names & {"prefetch", "archive", "http-deadlines"}

    source = PipelinedSource(HttpSource(archived.url, 4), 4)
    source.read_ahead([(layout.SITE_KEY, 65536), (layout.LAST_KEY, 65536)])
    source.stream_ahead([(layout.archive_key(DAYS[0]), MAX_ARCHIVE_BYTES)])
    assert source.get(layout.SITE_KEY) is not None
    assert {"prefetch", "archive"} <= ours()
    source.rest()
    assert ours() == set()
    # Reading ahead again afterwards works, with threads made anew.
    source.read_ahead([(layout.LAST_KEY, 65536)])
    assert source.get(layout.LAST_KEY) == (archived.root / layout.LAST_KEY).read_bytes()
    source.close()
