"""`beacon serve` and `beacon run`'s own serving, with clients nobody here wrote.

- the unmodified npm `nist-randomness-beacon` 2.0.4 (only its base URL constant
  changed, ``nist_client.js``) on Debian's node, over a site the beacon made and over
  real NIST pulses laid out as a site; it checks every signature itself;
- CLCERT's ``chain_consistency_version2.py -a`` (vendored in ``tests/clcert``);
- ``curl`` on content types, cache headers, CORS, errors and path escapes;
- the "how to verify" command of a pulse page, pasted as it is;
- the edge function ``deploy/edge/nist-time.mjs`` under node, a static host of the
  site as its bucket and `beacon serve` as its fallback.
"""

from __future__ import annotations

import datetime
import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from beacon_verifier import layout
from beacon_verifier.format import parse_pulse

from beacon.publish.indexes import TimeEntry, build_indexes
from tests.beacon_proc import ROOT, beacon_env, beacon_running, run_beacon, run_verify
from tests.integration.s3server import SeaweedS3Server

pytestmark = pytest.mark.integration

NPM_PACKAGE = "nist-randomness-beacon@2.0.4"
NPM_DIR = ROOT / "build" / "npm-nist-randomness-beacon"
CLIENT_JS = Path(__file__).with_name("nist_client.js")
CLCERT = ROOT / "tests" / "clcert" / "chain_consistency_version2.py"
NIST = ROOT / "tests" / "vectors" / "nist"
FAST = {"BEACON_ENTROPY_SOURCE": "os", "BEACON_KEY_BITS": "2048"}
PULSES = 8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serving(site: Path | str, port: int = 0, env: dict[str, str] | None = None) -> Iterator[str]:
    """``beacon serve SITE --port PORT`` for the block; yields its URL; stops it with SIGTERM."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "beacon.cli", "serve", str(site), "--port", str(port)],
        env=beacon_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once the socket is bound
        match = re.search(r"at (http://\S+/)$", line.strip())
        assert match, line + proc.stderr.read() if proc.stderr else line
        yield match[1]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0  # a clean shutdown
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def pulse_at(site: Path, index: int) -> dict[str, Any]:
    pulse: dict[str, Any] = json.loads((site / layout.pulse_key(1, index)).read_bytes())["pulse"]
    return pulse


def time_ms(site: Path, index: int) -> int:
    return parse_pulse((site / layout.pulse_key(1, index)).read_bytes()).time_ms


# --- a site the beacon made, served by `beacon run` itself ---------------------------


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A site of PULSES pulses from `beacon run`, which served it while running; its port."""
    workdir = tmp_path_factory.mktemp("gateway")
    port = free_port()
    env = {**FAST, "BEACON_SERVE_PORT": str(port)}
    args = ["run", "--period", "1", "--count", str(PULSES), "-q"]
    with beacon_running(workdir, args, env=env) as proc:
        deadline = time.monotonic() + 60
        while True:  # the running beacon answers NIST's paths itself
            try:
                status, _, body = get(f"http://127.0.0.1:{port}/{layout.LAST_KEY}")
            except OSError:
                status = 0
            if status == 200:
                break
            assert time.monotonic() < deadline and proc.poll() is None, "no answer from beacon run"
            time.sleep(0.2)
        assert json.loads(body)["pulse"]["uri"].startswith(f"http://127.0.0.1:{port}/")
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert f"serving the site and its NIST API at http://127.0.0.1:{port}/" in out
    return workdir / "public", port


@pytest.fixture(scope="module")
def gateway(made: tuple[Path, int]) -> Iterator[str]:
    """`beacon serve` over the made site, on the port its base_url names."""
    site, port = made
    with serving(site, port) as url:
        yield url


@pytest.fixture(scope="session")
def npm_client() -> Path:
    """The npm package, installed once under build/ (Debian's node and npm)."""
    if not (NPM_DIR / "node_modules" / "nist-randomness-beacon" / "index.js").exists():
        NPM_DIR.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(NPM_DIR), NPM_PACKAGE],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    return NPM_DIR


def node_client(
    npm_dir: Path, base: str, calls: list[list[Any]]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", str(CLIENT_JS), str(npm_dir), base, json.dumps(calls)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def run_client(npm_dir: Path, base: str, calls: list[list[Any]]) -> list[dict[str, Any]]:
    done = node_client(npm_dir, base, calls)
    assert done.returncode == 0, done.stdout + done.stderr
    results: list[dict[str, Any]] = json.loads(done.stdout)
    return results


def assert_answers(results: list[dict[str, Any]], expected: list[int]) -> None:
    for result, pulse in zip(results, expected, strict=True):
        assert result["ok"], result
        assert (result["chain"], result["pulse"]) == (1, pulse), result


def test_npm_client_over_a_site_the_beacon_made(
    made: tuple[Path, int], gateway: str, npm_client: Path
) -> None:
    site, _ = made
    t3 = time_ms(site, 3)
    calls: list[list[Any]] = [
        ["getMostRecentPulse"],
        ["getClosestPulse", t3 - 333],  # not a pulse's time: the first at or after it
        ["getClosestPulse", t3],
        ["getPreviousPulse", t3],
        ["getPreviousPulse", t3 + 1],
        ["getNextPulse", t3],
        ["getPulseByChainAndPulseIndex", 1, 5],
    ]
    results = run_client(npm_client, f"{gateway}beacon/2.0/", calls)
    assert_answers(results, [PULSES, 3, 3, 2, 3, 4, 5])


def nist_site(root: Path) -> Path:
    """Real NIST pulses (chain 1: 1, 54609, 54610) and certificate laid out as a site,
    with the time index the beacon would write for them."""
    entries = []
    for name in ("nist_c1_p1.json", "nist_c1_p54609.json", "nist_c1_p54610.json"):
        data = (NIST / name).read_bytes()
        pulse = parse_pulse(data)
        entries.append(TimeEntry(time_ms=pulse.time_ms, chain=1, pulse=pulse.pulse_index))
        for key in (layout.pulse_key(1, pulse.pulse_index), layout.time_key(pulse.time_ms)):
            (root / key).parent.mkdir(parents=True, exist_ok=True)
            (root / key).write_bytes(data)
    for key in (layout.LAST_KEY, layout.CHAIN_LAST_LAST_KEY, layout.chain_last_key(1)):
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    for pem in NIST.glob("*.pem"):
        key = layout.certificate_key(pem.stem)
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(pem, root / key)
    for key, body in build_indexes(entries).items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(body)
    return root


def test_npm_client_over_real_nist_pulses(tmp_path: Path, npm_client: Path) -> None:
    site = nist_site(tmp_path / "nist")
    with serving(site) as url:
        calls: list[list[Any]] = [
            ["getMostRecentPulse"],
            # NIST's own example: 17:43:13.225 gives the 17:44 pulse.
            ["getClosestPulse", 1535650993225],
            ["getPreviousPulse", 1535651040000],
            ["getNextPulse", 1535650980000],
            ["getPulseByChainAndPulseIndex", 1, 1],
            ["getClosestPulse", 1532374000000],  # between pulse 1 and 54609 on this site
        ]
        assert_answers(
            run_client(npm_client, f"{url}beacon/2.0/", calls),
            [54610] * 2 + [54609, 54610, 1, 54609],
        )
    # The client does check: a pulse whose outputValue was changed is refused.
    bad = site / layout.pulse_key(1, 54609)
    tampered = json.loads(bad.read_bytes())
    tampered["pulse"]["outputValue"] = "00" * 64
    bad.write_text(json.dumps(tampered, indent=2))
    with serving(site) as url:
        done = node_client(npm_client, f"{url}beacon/2.0/", [["getPreviousPulse", 1535651040000]])
    # 2.0.4 refuses it by crashing ("reject is not a function", its own bug on a
    # failed check) rather than rejecting; either way it never hands the pulse out.
    assert done.returncode != 0 or not json.loads(done.stdout)[0]["ok"], done.stdout


def test_a_broken_site_gets_a_502_never_a_wrong_pulse(tmp_path: Path) -> None:
    site = nist_site(tmp_path / "nist")
    # The index names 54610 for 17:43:13.225, but another pulse is stored there.
    shutil.copy(site / layout.pulse_key(1, 54609), site / layout.pulse_key(1, 54610))
    (site / layout.pulse_key(1, 1)).write_bytes(b"{" + b" " * 70_000 + b"}")  # past the cap
    with serving(site) as url:
        status, headers, body = get(f"{url}{layout.time_key(1535650993225)}")
        assert status == 502 and "not the pulse" in json.loads(body)["message"]
        assert headers["Cache-Control"] == "no-store"
        status, _, body = get(f"{url}{layout.pulse_key(1, 1)}")
        assert status == 502 and "larger than" in json.loads(body)["message"]


def test_clcert_chain_consistency_all_checks(
    made: tuple[Path, int], gateway: str, tmp_path: Path
) -> None:
    def clcert(base: str, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, str(CLCERT), "--organization", "testing", "-v", *args],
            env={**os.environ, "CLCERT_TESTING_BASE_URL": f"{base}beacon/"},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    out = clcert(gateway, "-a")
    assert f"Pulses from #1 to #{PULSES}" in out and "- Previous Values" in out
    assert "Invalid" not in out, out
    # ... and it can fail: the same script on a site where one pulse's hour link is wrong.
    site, _ = made
    copy = shutil.copytree(site, tmp_path / "tampered")
    key = copy / layout.pulse_key(1, 4)
    pulse = json.loads(key.read_bytes())
    pulse["pulse"]["listValues"][1]["value"] = "00" * 64
    key.write_text(json.dumps(pulse, indent=2))
    with serving(copy) as url:
        out = clcert(url, "-p", "--only", "4")
    assert "Invalid First of Hour for Pulse #4" in out, out


def curl(*args: str) -> tuple[int, dict[str, str], bytes]:
    done = subprocess.run(
        ["curl", "-sS", "-D", "-", *args], capture_output=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    return int(lines[0].split()[1]), headers, body


IMMUTABLE = "public, max-age=31536000, immutable"


def test_curl_content_types_cache_and_cors(made: tuple[Path, int], gateway: str) -> None:
    site, _ = made
    certificate_id = pulse_at(site, 1)["certificateId"]
    t3 = time_ms(site, 3)
    cases = [
        # path, status, content type, immutable?
        (layout.LAST_KEY, 200, "application/json", False),
        (layout.CHAIN_LAST_LAST_KEY, 200, "application/json", False),
        (layout.pulse_key(1, 2), 200, "application/json", True),
        (f"{layout.ROOT}/chain/1/pulse/first", 200, "application/json", True),
        (layout.time_key(t3 - 1), 200, "application/json", True),
        (f"{layout.ROOT}/pulse/time/next/{t3}", 200, "application/json", True),
        (f"{layout.ROOT}/pulse/time/previous/{t3}", 200, "application/json", True),
        (layout.certificate_key(certificate_id), 200, "text/plain", True),
        (f"{layout.ROOT}/chain/1", 200, "application/json", False),
        (f"{layout.ROOT}/chain/last", 200, "application/json", False),
        (f"{layout.ROOT}/chain/1/skiplist/1/{PULSES}", 200, "application/json", True),
        (layout.entropy_record_key(1, 2), 200, "application/json", True),
        ("", 200, "text/html", False),
        ("style.css", 200, "text/css", False),
        (f"{layout.ROOT}/index/bounds.json", 200, "application/json", False),
        (f"{layout.ROOT}/chain/1/pulse/{PULSES + 100}", 404, "application/json", False),
        (f"{layout.ROOT}/pulse/time/next/{t3 + 10**9}", 404, "application/json", False),
        ("no/such/thing", 404, "application/json", False),
    ]
    for path, status, content_type, immutable in cases:
        got, headers, body = curl(f"{gateway}{path}")
        assert got == status, (path, got, body[:200])
        assert headers["content-type"].split(";")[0] == content_type, (path, headers)
        assert headers["access-control-allow-origin"] == "*", path
        cache = headers["cache-control"]
        assert (cache == IMMUTABLE) is immutable, (path, cache)
        if not immutable:
            assert re.fullmatch(r"public, max-age=[0-9]+", cache), (path, cache)
        if status == 404:
            assert json.loads(body)["status"] == 404
    # NIST's answer to a time that is no pulse's: the first at or after it.
    _, _, body = curl(f"{gateway}{layout.time_key(t3 - 1)}")
    assert json.loads(body)["pulse"]["pulseIndex"] == 3
    # A browser's preflight, and the API is read-only.
    status, headers, _ = curl("-X", "OPTIONS", f"{gateway}{layout.LAST_KEY}")
    assert status == 204 and "GET" in headers["access-control-allow-methods"]
    status, headers, body = curl("-X", "POST", f"{gateway}{layout.LAST_KEY}")
    assert status == 405 and json.loads(body)["status"] == 405


def test_no_path_leaves_the_site_root(made: tuple[Path, int], gateway: str) -> None:
    site, _ = made
    secret = site.parent / "beacon-data" / "signing-key.pem"
    assert secret.exists()
    for path in (
        "../beacon-data/signing-key.pem",
        "beacon/../../beacon-data/signing-key.pem",
        "%2e%2e/beacon-data/signing-key.pem",
        "beacon/2.0/%2e%2e%2f%2e%2e%2f%2e%2e%2fbeacon-data/signing-key.pem",
        "..%2fbeacon-data%2fsigning-key.pem",
    ):
        status, _, body = curl("--path-as-is", f"{gateway}{path}")
        assert status in (400, 404), (path, status)
        assert b"PRIVATE KEY" not in body


def test_the_verify_command_of_a_pulse_page_works_pasted(
    made: tuple[Path, int], gateway: str
) -> None:
    site, port = made
    page = (site / "html" / "chain" / "1" / "pulse" / "3.html").read_text()
    match = re.search(r"<pre>beacon-verify (pulse \S+)</pre>", page)
    assert match, "no verify command on the pulse page"
    command = html.unescape(match[1]).split()
    assert command[1] == f"http://127.0.0.1:{port}/{layout.pulse_key(1, 3)}"
    done = run_verify(command)
    assert done.returncode == 0, done.stdout + done.stderr
    # So do the commands of the verify page: a pulse and the whole chain, over HTTP.
    block = re.search(
        r"<pre>(beacon-verify pulse .*?)</pre>", (site / "verify.html").read_text(), re.S
    )
    assert block, "no commands on the verify page"
    commands = [html.unescape(line).split()[1:] for line in block[1].splitlines()]
    assert [c[0] for c in commands] == ["pulse", "chain"]
    for args in commands:
        assert args[1].startswith(f"http://127.0.0.1:{port}"), args
        done = run_verify(args)
        assert done.returncode == 0, (args, done.stdout + done.stderr)


def test_beacon_run_refuses_a_taken_port_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_beacon(
            tmp_path, ["run", "--count", "1"], env={**FAST, "BEACON_SERVE_PORT": str(port)}
        )
    assert done.returncode == 1
    assert f"cannot serve on 127.0.0.1:{port}" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "public" / layout.LAST_KEY).exists()
    assert not (tmp_path / "beacon-data").exists()  # refused before any identity was made


def test_beacon_serve_mistakes_are_one_line(tmp_path: Path) -> None:
    for args, message in (
        (["serve", str(tmp_path / "nope")], "not a directory"),
        (["serve", "ftp://x/y"], "unsupported source scheme"),
        (["serve", str(tmp_path), "--port", "70000"], "--port must be 0 to 65535"),
    ):
        done = run_beacon(tmp_path, args)
        assert done.returncode == 1, (args, done.stderr)
        assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_s3_site_exact_objects_direct_and_time_lookups_through_the_gateway(
    tmp_path: Path, s3_running: SeaweedS3Server, key_prefix: str
) -> None:
    """The cloud deployment of docs/gateway.md: exact objects straight from the bucket
    (a CDN in front of it), arbitrary times through `beacon serve s3://...`."""
    env = s3_running.beacon_env(key_prefix)
    done = run_beacon(tmp_path, ["run", "--period", "1", "--count", "4", "-q"], env=env)
    assert done.returncode == 0, done.stderr
    assert "serving" not in done.stdout  # an S3 beacon serves nothing itself
    bucket_url = f"{s3_running.endpoint_url}/{s3_running.bucket}/{key_prefix}"
    status, headers, body = get(f"{bucket_url}/{layout.pulse_key(1, 3)}")
    assert status == 200 and headers["Content-Type"] == "application/json"
    t3 = json.loads(body)["pulse"]["timeStamp"]
    t3_ms = parse_pulse(body).time_ms
    assert get(f"{bucket_url}/{layout.time_key(t3_ms)}")[0] == 200  # exact time: an object
    assert get(f"{bucket_url}/{layout.time_key(t3_ms - 1)}")[0] in (403, 404)  # any other: none
    with serving(f"s3://{s3_running.bucket}/{key_prefix}", env=s3_running.aws_env()) as url:
        for path, pulse in (
            (layout.time_key(t3_ms - 1), 3),
            (f"{layout.ROOT}/pulse/time/previous/{t3_ms}", 2),
            (f"{layout.ROOT}/pulse/time/next/{t3_ms}", 4),
            (layout.LAST_KEY, 4),
        ):
            status, headers, body = get(f"{url}{path}")
            assert status == 200, (path, body)
            assert headers["Content-Type"] == "application/json"
            assert json.loads(body)["pulse"]["pulseIndex"] == pulse, path
        assert json.loads(get(f"{url}{layout.time_key(t3_ms - 1)}")[2])["pulse"]["timeStamp"] == t3
        status, _, _ = get(f"{url}{layout.pulse_key(1, 99)}")
        assert status == 404


@contextmanager
def static_host(site: Path) -> Iterator[str]:
    """The site on a plain static HTTP server (what a bucket website is), 127.0.0.1 only."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=site,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the static host did not start"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


EDGE_JS = Path(__file__).with_name("edge_check.mjs")


def test_edge_function_answers_like_the_gateway(made: tuple[Path, int], gateway: str) -> None:
    site, _ = made
    period = pulse_at(site, 1)["period"]
    first, last = time_ms(site, 1), time_ms(site, PULSES)
    times = [first - 5 * period, first - 1, first, first + 1, last - 1, last, last + 1]
    times += [first + period * k + offset for k in range(1, PULSES - 1) for offset in (-1, 0, 7)]
    paths = [
        f"/{layout.ROOT}/pulse/time/{kind}{t}" for t in times for kind in ("", "previous/", "next/")
    ]
    with static_host(site) as bucket:
        done = subprocess.run(
            ["node", str(EDGE_JS), bucket, gateway.rstrip("/"), str(period), json.dumps(paths)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(done.stdout)
    for result in results:
        status, _, body = get(f"{gateway}{result['path'][1:]}")
        expected = json.loads(body)["pulse"]["pulseIndex"] if status == 200 else None
        assert (result["status"], result["pulse"]) == (status, expected), result
        if result["via"] == "edge":
            assert result["cache"] == IMMUTABLE
    via = [r["via"] for r in results]
    # Inside the chain the bucket's exact objects answer; beyond it, the gateway.
    assert via.count("edge") > len(via) // 2 and "gateway" in via


def test_gateway_in_front_of_a_generic_static_host(made: tuple[Path, int]) -> None:
    """A static host serves pulses as octet-stream and cannot answer time queries;
    `beacon serve http://that-host/` in front of it can."""
    site, _ = made
    t3 = time_ms(site, 3)
    with static_host(site) as host:
        _, headers, _ = get(f"{host}/{layout.pulse_key(1, 3)}")
        assert headers["Content-type"] == "application/octet-stream"
        assert get(f"{host}/{layout.time_key(t3 - 1)}")[0] == 404
        with serving(host) as url:
            status, headers, body = get(f"{url}{layout.time_key(t3 - 1)}")
            assert status == 200 and headers["Content-Type"] == "application/json"
            assert json.loads(body)["pulse"]["pulseIndex"] == 3
            status, headers, _ = get(f"{url}{layout.pulse_key(1, 3)}")
            assert status == 200 and headers["Content-Type"] == "application/json"


def test_daily_archives_stream_whole(tmp_path: Path) -> None:
    day = layout.archive_key(datetime.date(2026, 1, 1))
    data = os.urandom(3 * 1024 * 1024 + 17)  # several 1 MB pieces and a short one
    (tmp_path / day).parent.mkdir(parents=True)
    (tmp_path / day).write_bytes(data)
    with serving(tmp_path) as url:
        status, headers, body = get(f"{url}{day}")
        assert status == 200 and body == data
        assert headers["Content-Type"] == "application/gzip"
        assert headers["Cache-Control"] == IMMUTABLE
        assert get(f"{url}{layout.archive_key(datetime.date(2026, 1, 2))}")[0] == 404
