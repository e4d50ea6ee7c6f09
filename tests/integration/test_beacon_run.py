"""`beacon run` as a real process on its defaults: quantum-simulator entropy from real
qiskit-aer jobs, a local site, and a chain that beacon-verify accepts."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from beacon_verifier import layout

from tests.beacon_proc import beacon_running, run_beacon, run_verify

pytestmark = pytest.mark.integration


def test_twenty_pulses_on_defaults_verify_as_one_chain(tmp_path: Path) -> None:
    # Period 2: every period runs a job, the health tests and the SP 800-90B estimators
    # on 260,096 bits (about a second on a loaded core); at period 1 some fall back.
    done = run_beacon(tmp_path, ["run", "--period", "2", "--count", "20"], timeout=240)
    assert done.returncode == 0, done.stderr
    site = tmp_path / "public"
    verified = run_verify(["chain", str(site), "--json"])
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = json.loads(verified.stdout)
    assert report["pulsesChecked"] == 20 and report["failures"] == [] and report["missing"] == []
    assert report["sourceKinds"] == {"quantum-simulator": 20}
    job_ids = {
        json.loads((site / layout.entropy_record_key(1, p)).read_bytes())["jobId"]
        for p in range(1, 21)
    }
    assert len(job_ids) == 20  # a fresh qiskit job for every pulse
    key = tmp_path / "beacon-data" / "signing-key.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "beacon-data" / "state.sqlite").stat().st_mode & 0o777 == 0o600
    # The single pulse command agrees, finding the certificate in the site.
    one = run_verify(["pulse", str(site / layout.pulse_key(1, 7))])
    assert one.returncode == 0, one.stdout + one.stderr
    # Every local job's raw batch is published, and re-running the estimates on the
    # last pulses' batches agrees with their records: simulated, credited 0 bits.
    audited = run_verify(["entropy", str(site), "--from", "15", "--json"])
    assert audited.returncode == 0, audited.stdout + audited.stderr
    pulses = json.loads(audited.stdout)["pulses"]
    assert [p["pulseIndex"] for p in pulses] == list(range(15, 21))
    assert all(p["rawData"] == "re-run" and p["claimedBits"] == 0 for p in pulses)
    assert all(p["claimedPerBit"] == p["estimatedPerBit"] > 0.5 for p in pulses)


def test_status_and_stop_final(tmp_path: Path) -> None:
    env = {"BEACON_ENTROPY_SOURCE": "os", "BEACON_KEY_BITS": "2048"}
    site = tmp_path / "public"
    with beacon_running(tmp_path, ["run", "--period", "1"], env=env) as proc:
        deadline = time.monotonic() + 30
        while not (site / layout.LAST_KEY).exists():
            assert time.monotonic() < deadline
            time.sleep(0.2)
        status = run_beacon(tmp_path, ["status", "--json"], env=env)
        assert status.returncode == 0, status.stderr
        info = json.loads(status.stdout)
        assert info["running"] is True and info["chain"] == 1 and info["lastPulse"] >= 1
        stopped = run_beacon(tmp_path, ["stop", "--final", "--timeout", "20"], env=env)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        # The lock is released last; the interpreter still has to exit after it.
        proc.wait(timeout=30)
    assert proc.returncode == 0
    last = json.loads((site / layout.LAST_KEY).read_bytes())["pulse"]
    assert last["statusCode"] & 8
    assert run_verify(["chain", str(site)]).returncode == 0
    # A new run starts chain 2; nothing may follow the end of chain 1.
    again = run_beacon(tmp_path, ["run", "--period", "1", "--count", "1"], env=env)
    assert again.returncode == 0, again.stderr
    assert json.loads((site / layout.LAST_KEY).read_bytes())["pulse"]["chainIndex"] == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--period", "0.5"], "period must be at least 1 second"),
        (["run", "--count", "0"], "--count must be at least 1"),
        (["stop"], "no beacon is running"),
        (["status"], "no beacon state"),
        (["--config", "missing.toml", "run"], "config file missing.toml does not exist"),
    ],
)
def test_user_mistakes_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    done = run_beacon(tmp_path, args)
    assert done.returncode == 1
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "public").exists()


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    env = {"BEACON_KEY_BITS": "2048"}
    first = run_beacon(tmp_path, ["init"], env=env)
    assert first.returncode == 0, first.stderr
    key = (tmp_path / "beacon-data" / "signing-key.pem").read_bytes()
    again = run_beacon(tmp_path, ["init"], env=env)
    assert again.returncode == 1 and "--force" in again.stderr
    assert (tmp_path / "beacon-data" / "signing-key.pem").read_bytes() == key
    forced = run_beacon(tmp_path, ["init", "--force"], env=env)
    assert forced.returncode == 0 and "new certificate" in forced.stderr
    assert (tmp_path / "beacon-data" / "signing-key.pem").read_bytes() != key
    assert key.decode() not in forced.stdout + forced.stderr
