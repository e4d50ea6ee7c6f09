"""`beacon-verify` as a real process on a site laid out by the beacon's own pieces
(pulse and entropy objects, time index, daily archives), in a directory and in a
real S3 server on loopback: chain (with worker processes), time, skiplist and
pulse; reports, progress and exit codes."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from beacon_verifier import layout

from beacon.publish.archives import ArchiveItem, build_day_archive
from beacon.pulse.builder import BuiltPulse
from beacon.pulse.keys import Signer
from tests.beacon_proc import beacon_env, run_verify
from tests.integration.s3server import SeaweedS3Server
from tests.unit.test_builder import MINUTE, ms
from tests.unit.test_replay import build_records_chain, write_site

pytestmark = pytest.mark.integration

# Four days of pulses every 15 minutes, with a gap on the third day: three archives.
TIMES = [ms("2026-05-30T00:00:00") + i * 15 * MINUTE for i in range(4 * 96 - 7)]
TIMES = [t for t in TIMES if not ms("2026-06-01T10:00:00") <= t < ms("2026-06-01T13:00:00")]


@pytest.fixture(scope="module")
def chain(signer: Signer) -> list[tuple[BuiltPulse, bytes]]:
    return build_records_chain(TIMES, signer, period=15 * MINUTE)


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, chain: list[tuple[BuiltPulse, bytes]], signer: Signer
) -> Path:
    return write_site(tmp_path_factory.mktemp("verify") / "site", chain, signer)


def verify(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return run_verify([str(a) for a in args], timeout=300)


def test_chain_from_archives_and_objects(site: Path) -> None:
    assert len(list((site / layout.ARCHIVE_ROOT).iterdir())) == 3
    done = verify("chain", site, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""  # piped: no progress bar
    report = json.loads(done.stdout)
    assert report["ok"] is True
    assert report["pulsesChecked"] == len(TIMES) == report["lastIndex"]
    assert report["sourceKinds"] == {"os-fallback": len(TIMES)}
    assert report["gaps"] == 1 and report["certificateChanges"] == 0
    assert report["failures"] == [] and report["missing"] == [] and report["failureCount"] == 0
    text = verify("chain", site, "--no-archives")
    assert text.returncode == 0
    assert text.stdout.strip().endswith(": VALID")
    assert f"{len(TIMES)} pulses checked (1..{len(TIMES)}); entropy sources: os-fallback" in (
        text.stdout
    )


@pytest.fixture(scope="module")
def broken(
    tmp_path_factory: pytest.TempPathFactory, site: Path, chain: list[tuple[BuiltPulse, bytes]]
) -> Path:
    """The site with a forged pulse in an archive, another in its object, a broken
    archive and missing pulses, spread over the segments --jobs cuts."""
    copy = tmp_path_factory.mktemp("broken") / "site"
    shutil.copytree(site, copy)
    day = date(2026, 5, 30)
    items = []
    for built, record in chain:
        if layout.day_of(built.pulse.time_ms) != day:
            continue
        data = built.data
        if built.pulse.pulse_index == 50:
            data = data.replace(
                b'"statusCode": 0,\n    "signature', b'"statusCode": 4,\n    "signature'
            )
        items.append(
            ArchiveItem(
                time_ms=built.pulse.time_ms,
                chain=1,
                pulse=built.pulse.pulse_index,
                pulse_bytes=data,
                entropy_bytes=record,
            )
        )
    (copy / layout.archive_key(day)).write_bytes(build_day_archive(day, items))
    archive = copy / layout.archive_key(date(2026, 5, 31))
    archive.write_bytes(archive.read_bytes()[:-100])
    # June 2 has no archive (the last day is not complete): its objects are read.
    for index in (290, 291, 340):
        (copy / layout.pulse_key(1, index)).unlink()
    doc = json.loads((copy / layout.pulse_key(1, 330)).read_bytes())
    doc["pulse"]["listValues"][1]["value"] = "00" * 64
    (copy / layout.pulse_key(1, 330)).write_text(json.dumps(doc, indent=2))
    return copy


def test_jobs_give_the_same_report(broken: Path) -> None:
    one = verify("chain", broken, "--json", "--jobs", "1")
    two = verify("chain", broken, "--json", "--jobs", "2")
    three = verify("chain", broken, "--json", "--jobs", "3")
    assert one.returncode == two.returncode == three.returncode == 1, one.stderr + two.stderr
    assert one.stdout == two.stdout == three.stdout
    report = json.loads(one.stdout)
    checks = {(f["pulseIndex"], f["check"]) for f in report["failures"]}
    assert {(50, "signature"), (50, "statusCode"), (330, "hour link"), (330, "signature")} <= (
        checks
    )
    assert any(check == "archive" and 96 < index <= 192 for index, check in checks)
    assert report["missing"] == [[290, 291], [340, 340]] and report["missingCount"] == 3
    assert report["pulsesChecked"] == len(TIMES) - 3


def test_failures_are_listed_with_index_check_expected_and_actual(broken: Path) -> None:
    done = verify("chain", broken, "--jobs", "2")
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert any(
        line.startswith("pulse 330: hour link failed: must be the outputValue of pulse ")
        and "(expected " in line
        and ", got 000000" in line
        for line in lines
    ), lines
    assert "pulses 290..291: missing" in lines and "pulse 340: missing" in lines
    assert lines[-1].endswith("INVALID")


def test_progress_bar_on_a_terminal(site: Path) -> None:
    main_fd, tty_fd = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "beacon_verifier.cli", "chain", str(site)],
            env=beacon_env(),
            stdout=subprocess.PIPE,
            stderr=tty_fd,
            timeout=300,
            check=False,
        )
        os.close(tty_fd)
        shown = b""
        while True:
            try:
                chunk = os.read(main_fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(main_fd)
    assert done.returncode == 0
    assert f"{len(TIMES)}/{len(TIMES)} pulses".encode() in shown and b"[####" in shown


def test_time_queries(site: Path, chain: list[tuple[BuiltPulse, bytes]]) -> None:
    at = verify("time", site, "2026-06-01T10:07:00Z")  # inside the gap
    assert at.returncode == 0, at.stdout + at.stderr
    first_after_gap = next(b.pulse for b, _ in chain if b.pulse.time_ms >= ms("2026-06-01T13:00"))
    assert f"is pulse 1/{first_after_gap.pulse_index} at 2026-06-01T13:00:00.000Z" in at.stdout
    assert "valid (signature, certificateId, outputValue [nist])" in at.stdout
    assert "entropy record: valid (os-fallback (operating system CSPRNG, not quantum))" in at.stdout
    assert json.loads(at.stdout.split("\nthe pulse ")[0])["pulse"]["timeStamp"] == (
        "2026-06-01T13:00:00.000Z"
    )
    before = verify("time", site, str(ms("2026-06-01T13:00:00")), "--previous", "--json")
    doc = json.loads(before.stdout)
    assert before.returncode == 0 and doc["ok"] and doc["timeStamp"] == "2026-06-01T09:45:00.000Z"
    assert doc["signature"] == "valid" and doc["entropySource"] == "os-fallback"
    after = verify("time", site, "2026-06-01T09:45:00Z", "--next", "--json")
    assert json.loads(after.stdout)["timeStamp"] == "2026-06-01T13:00:00.000Z"
    none = verify("time", site, "2030-01-01T00:00:00Z")
    assert none.returncode == 3 and "no pulse at or after 2030-01-01" in none.stderr
    assert len(none.stderr.splitlines()) == 1
    for bad in ("yesterday", "2026-06-01T10:00:00", "-5"):
        usage = verify("time", site, bad)
        assert usage.returncode == 2 and len(usage.stderr.splitlines()) == 1, bad


def test_skiplist_over_days(site: Path) -> None:
    done = verify("skiplist", site, "2", "2026-06-02T20:00:00Z", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert doc["ok"] and doc["older"] == 2 and doc["path"][-1]["pulseIndex"] == 2
    assert {"day", "hour", "previous"} <= {s["via"] for s in doc["path"][1:]}
    assert len(doc["path"]) < doc["newer"] // 10


def test_pulse_with_source_finds_the_certificate(site: Path, tmp_path: Path) -> None:
    loose = tmp_path / "pulse.json"
    loose.write_bytes((site / layout.pulse_key(1, 42)).read_bytes())
    assert verify("pulse", site / layout.pulse_key(1, 42)).returncode == 0  # site root found
    alone = verify("pulse", loose)
    assert alone.returncode == 1 and "signature unverifiable" in alone.stdout
    found = verify("pulse", loose, "--source", site, "--json")
    assert found.returncode == 0 and json.loads(found.stdout)["signature"] == "valid"


def test_exit_codes_and_one_line_errors(site: Path, tmp_path: Path) -> None:
    cases = [
        (("chain", tmp_path / "nowhere"), 3),
        (("chain", tmp_path), 3),  # not a beacon site
        (("chain", site, "--jobs", "0"), 2),
        (("chain", site, "--from", "20", "--to", "10"), 2),
        (("chain", site, "--chain", "2"), 3),
        (("chain", "ftp://example.org/"), 3),
        (("skiplist", site, "5", "5"), 2),
        (("bogus",), 2),
    ]
    for args, code in cases:
        done = verify(*args)
        assert done.returncode == code, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 or code == 2, done.stderr
    failed = verify("chain", tmp_path / "nowhere", "--json")
    assert json.loads(failed.stdout) == {
        "ok": False,
        "exitCode": 3,
        "error": f"could not fetch: {tmp_path / 'nowhere'}: not a directory",
    }


def test_the_same_report_from_s3_with_workers(
    site: Path, s3_running: SeaweedS3Server, key_prefix: str
) -> None:
    client = s3_running.client()
    for path in site.rglob("*"):
        if path.is_file():
            key = f"{key_prefix}/{path.relative_to(site).as_posix()}"
            client.put_object(Bucket=s3_running.bucket, Key=key, Body=path.read_bytes())
    source = f"s3://{s3_running.bucket}/{key_prefix}"
    from_s3 = run_verify(
        ["chain", source, "--json", "--jobs", "2"], timeout=300, env=s3_running.aws_env()
    )
    assert from_s3.returncode == 0, from_s3.stdout + from_s3.stderr
    assert from_s3.stdout == verify("chain", site, "--json").stdout
    one = run_verify(["time", source, "2026-06-01T10:07:00Z", "--json"], env=s3_running.aws_env())
    assert one.returncode == 0 and json.loads(one.stdout)["timeStamp"] == "2026-06-01T13:00:00.000Z"
