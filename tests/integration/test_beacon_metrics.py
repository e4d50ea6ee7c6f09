"""`beacon run` as a real process with its Prometheus endpoint: scraped over HTTP while
it runs, the figures agree with the published site and with status.json; off by
default; misconfiguration is one line and no pulse."""

from __future__ import annotations

import json
import os
import re
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from beacon_verifier import layout
from prometheus_client.parser import text_string_to_metric_families

from beacon.lease import LEASE_KEY
from tests.beacon_proc import ROOT, beacon_running, run_beacon

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
KINDS = ("quantum-hardware", "quantum-simulator", "os-fallback")
FAST = {"BEACON_ENTROPY_SOURCE": "os", "BEACON_KEY_BITS": "2048"}
POOL = {
    "BEACON_ENTROPY_SOURCE": "ibm",
    "BEACON_IBM_CHANNEL": "local",
    "BEACON_IBM_BACKEND": "fake_manila",
    "BEACON_IBM_SHOTS": "1024",
    "BEACON_POOL_LOW_WATER_DRAWS": "2",
    "BEACON_KEY_BITS": "2048",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(pid: int) -> set[tuple[str, int]]:
    """TCP (address, port) pairs the process ``pid`` listens on, from /proc."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                address, port = fields[1].split(":")
                found.add((address, int(port, 16)))
    return found


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def read_status(site: Path) -> bytes | None:
    try:
        return (site / "status.json").read_bytes()
    except FileNotFoundError:
        return None


def published_kinds(site: Path) -> list[str]:
    """The entropy source kind of every published pulse of chain 1, in order."""
    kinds = []
    p = 1
    while (site / layout.pulse_key(1, p)).exists():
        kinds.append(json.loads((site / layout.entropy_record_key(1, p)).read_bytes())["source"])
        p += 1
    return kinds


def check_agreement(got: Samples, status: dict[str, Any], kinds: list[str]) -> None:
    """Prometheus, status.json and the site say the same (at a moment nothing moved)."""
    emitted = {k: got[("beacon_pulses_emitted_total", (("source", k),))] for k in KINDS}
    assert emitted == {k: kinds.count(k) for k in KINDS}
    assert sum(emitted.values()) == status["pulsesEmitted"] == len(kinds)
    assert got[("beacon_publish_latency_seconds_count", ())] == len(kinds)
    assert got[("beacon_publish_latency_seconds_bucket", (("le", "+Inf"),))] == len(kinds)
    assert status["publishLatency"]["count"] == len(kinds)
    assert 0 < got[("beacon_publish_latency_seconds_sum", ())] < 60 * len(kinds)
    assert got[("beacon_outbox_length", ())] == status["outboxLength"] == 0
    last = {k for k in KINDS if got[("beacon_last_pulse_source", (("source", k),))] == 1}
    assert last == {status["lastPulseSource"]} == {kinds[-1]}
    assert got[("beacon_health_test_failures_total", ())] == status["healthTestFailures"]
    holder = status["lease"]["holder"]
    assert status["lease"]["role"] == "active" and re.fullmatch("[0-9a-f]{16}", holder)
    assert got[("beacon_lease_info", (("holder", holder), ("role", "active")))] == 1
    if "pool" in status:
        pool = status["pool"]
        assert got[("beacon_pool_usable_draws", ())] == pool["usableDraws"]
        if pool["oldestUsableAgeSeconds"] is not None:
            age = got[("beacon_pool_oldest_usable_age_seconds", ())]
            assert pool["oldestUsableAgeSeconds"] <= age < pool["oldestUsableAgeSeconds"] + 30
    else:
        assert not any(name.startswith("beacon_pool") for name, _ in got)


@pytest.mark.parametrize(
    ("env", "count", "kind"),
    [({}, 6, "quantum-simulator"), (POOL, 8, "quantum-simulator")],
    ids=["local-simulator", "ibm-local-pool"],
)
def test_scraped_while_running_agrees_with_site_and_status(
    tmp_path: Path, env: dict[str, str], count: int, kind: str
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    args = ["run", "--period", "1", "--count", str(count), "--metrics-port", str(port)]
    site = tmp_path / "public"
    checked = 0
    with beacon_running(tmp_path, args, env=env) as proc:
        seen = None
        deadline = time.monotonic() + 180
        while proc.poll() is None and time.monotonic() < deadline:
            now = read_status(site)
            if now is None or now == seen:
                time.sleep(0.05)
                continue
            seen = now
            # Mid-period, between one pulse's publication and the next tick.
            time.sleep(0.3)
            before = read_status(site)
            try:
                got = scrape(url)
            except OSError:  # the process finished its count and closed the endpoint
                break
            if before is None or read_status(site) != before:
                continue  # a pulse moved meanwhile
            assert listening(proc.pid) == {("0100007F", port)}  # 127.0.0.1, and only there
            check_agreement(got, json.loads(before), published_kinds(site))
            lease = json.loads((site / LEASE_KEY).read_bytes())
            assert json.loads(before)["lease"]["holder"] == lease["holder"]
            checked += 1
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert checked >= 2, err
    final = json.loads((site / "status.json").read_bytes())
    kinds = published_kinds(site)
    assert len(kinds) == count and final["pulsesEmitted"] == count
    assert final["publishLatency"]["count"] == count and final["outboxLength"] == 0
    assert kind in kinds and final["lastPulseSource"] == kinds[-1]
    if env is POOL:
        assert final["pool"]["usableDraws"] >= 0 and "oldestUsableAgeSeconds" in final["pool"]
    else:
        assert "pool" not in final
    with pytest.raises(OSError):
        scrape(url)  # closed with the process


def test_nothing_listens_by_default(tmp_path: Path) -> None:
    with beacon_running(tmp_path, ["run", "--period", "1", "--count", "3"], env=FAST) as proc:
        deadline = time.monotonic() + 60
        while read_status(tmp_path / "public") is None:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        assert listening(proc.pid) == set()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "metrics" not in err.lower()
    # The same figures reach status.json with the endpoint off.
    status = json.loads((tmp_path / "public" / "status.json").read_bytes())
    assert status["publishLatency"]["count"] == 3 and status["outboxLength"] == 0
    assert status["lastPulseSource"] == "os-fallback" and status["healthTestFailures"] == 0


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        (["--metrics-port", "70000"], {}, 1, "metrics_port must be 0 (off) or 1 to 65535"),
        (["--metrics-port", "nine"], {}, 2, "argument --metrics-port: invalid int value"),
        (
            ["--metrics-port", "9464", "--metrics-address", "localhost"],
            {},
            1,
            "metrics_address must be an IP address, got 'localhost'",
        ),
        ([], {"BEACON_METRICS_ADDRESS": "0.0.0.0:9464"}, 1, "metrics_address must be an IP"),
        ([], {"BEACON_METRICS_PORT": "-5"}, 1, "metrics_port must be 0 (off) or 1 to 65535"),
    ],
)
def test_bad_metrics_settings_are_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], code: int, message: str
) -> None:
    done = run_beacon(tmp_path, ["run", "--period", "1", "--count", "1", *args], env=env)
    assert done.returncode == code, done.stderr
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "public").exists() and not (tmp_path / "beacon-data").exists()


def test_missing_prometheus_client_is_one_line_before_anything(tmp_path: Path) -> None:
    # What an installation without the 'metrics' extra looks like to Python's imports.
    shadow = tmp_path / "shadow" / "prometheus_client"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'prometheus_client'\", "
        "name='prometheus_client')\n"
    )
    path = os.pathsep.join([str(shadow.parent), str(ROOT), str(ROOT / "verifier")])
    work = tmp_path / "work"
    work.mkdir()
    done = run_beacon(
        work,
        ["run", "--period", "1", "--count", "1", "--metrics-port", str(free_port())],
        env={**FAST, "PYTHONPATH": path},
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == (
        "beacon: metrics_port is set but prometheus-client is not installed: "
        "pip install 'quantum-beacon[metrics]'"
    )
    assert not (work / "public").exists() and not (work / "beacon-data").exists()


def test_a_metrics_port_in_use_is_one_line_and_no_pulse(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_beacon(
            tmp_path,
            ["run", "--period", "1", "--count", "1", "--metrics-port", str(port)],
            env=FAST,
        )
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if " INFO " not in line]
    assert lines == [
        f"beacon: cannot serve metrics on 127.0.0.1 port {port}: Address already in use"
    ]
    assert not (tmp_path / "public").exists()
    # The lock was released: the next run on the same data directory starts.
    again = run_beacon(tmp_path, ["run", "--period", "1", "--count", "1"], env=FAST)
    assert again.returncode == 0, again.stderr


def test_ipv6_loopback_is_served(tmp_path: Path) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this host")
    port = free_port()
    args = ["run", "--period", "1", "--count", "3", "--metrics-port", str(port)]
    with beacon_running(tmp_path, [*args, "--metrics-address", "::1"], env=FAST) as proc:
        deadline = time.monotonic() + 60
        while read_status(tmp_path / "public") is None:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        got = scrape(f"http://[::1]:{port}/metrics")
        assert got[("beacon_pulses_emitted_total", (("source", "os-fallback"),))] >= 1
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
