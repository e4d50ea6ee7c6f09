"""``beacon status`` tells the running beacon's next pulse in readable text; a start
removes the temporary files a killed writer left (issue 21, part 5)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from beacon_verifier.format import parse_timestamp

from tests.beacon_proc import beacon_running, run_beacon

pytestmark = pytest.mark.integration

ENV = {"BEACON_ENTROPY_SOURCE": "os", "BEACON_KEY_BITS": "2048"}


def test_status_uses_the_running_period_and_reads_as_text(tmp_path: Path) -> None:
    stray = tmp_path / "public" / "beacon" / "2.0" / ".tmp-0123456789abcdef-last"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"left by a SIGKILL")
    with beacon_running(tmp_path, ["run", "--period", "2"], env=ENV) as proc:
        deadline = time.monotonic() + 60
        while True:  # `status` reads with the default period (60 s), the beacon runs with 2 s
            status = run_beacon(tmp_path, ["status", "--json"], env=ENV)
            info = json.loads(status.stdout) if status.returncode == 0 else {}
            if info.get("lastPulse"):
                break
            assert time.monotonic() < deadline and proc.poll() is None, status.stderr
            time.sleep(0.5)
        due = parse_timestamp(info["nextDue"]) - parse_timestamp(info["lastTimeStamp"])
        assert due == 2000, info
        proc.terminate()
        proc.communicate(timeout=30)
    assert not stray.exists()
    text = run_beacon(tmp_path, ["status"], env=ENV)
    assert text.returncode == 0, text.stderr
    lines = dict(line.split(None, 1) for line in text.stdout.splitlines())
    assert lines["running"].strip() == "no"
    assert lines["nextDue"].strip() == "-"  # nothing is due from a stopped beacon
    assert "None" not in text.stdout and "{" not in text.stdout, text.stdout
    assert "os-fallback" in lines["sources"], text.stdout
