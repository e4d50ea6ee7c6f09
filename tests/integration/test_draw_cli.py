"""``beacon-verify draw new|run|check`` as real processes against real local sites.

Each site is written by the beacon's own publication code (certificate, pulses,
time aliases, time index, ``last``) from pulses signed by the beacon's builder,
so the verifier reads exactly what a beacon publishes. Pulses are published in
two steps, as time passes: a draw is announced while only the first three exist.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from beacon_verifier import layout
from beacon_verifier.draw import draw, entrant_list_bytes, parse_manifest, parse_result
from beacon_verifier.format import format_timestamp
from beacon_verifier.timeindex import TimeEntry

from beacon.publish.indexes import build_indexes
from beacon.publish.local import LocalDirPublisher
from beacon.publish.pipeline import publish_identity, publish_item
from beacon.publish.site import SiteInfo
from beacon.pulse.builder import BuiltPulse
from beacon.pulse.keys import Signer
from beacon.state import OutboxItem
from tests.beacon_proc import run_verify
from tests.unit.test_builder import MINUTE, build_chain, ms

pytestmark = pytest.mark.integration

START = ms("2026-03-01T10:00:00")
TIMES = [START + i * MINUTE for i in range(6)]
#: Announced while pulses 1-3 exist; the target is pulse 4 (10:03), the first at or after it.
AT_MS = TIMES[2] + 30_000
AT = "2026-03-01T10:02:30Z"
ENTRANTS = "  Ada Lovelace\r\nAlan Turing\n\nGrace Hopper\nZoë Dubois\n李雷\nEmmy Noether\n"


@pytest.fixture(scope="module")
def chain(signer: Signer) -> list[BuiltPulse]:
    return build_chain(TIMES, signer)


@pytest.fixture(scope="module")
def other_chain(other_signer: Signer) -> list[BuiltPulse]:
    return build_chain(TIMES, other_signer)


def publish(root: Path, signer: Signer, pulses: list[BuiltPulse]) -> None:
    """Publish ``pulses`` to the site at ``root`` as the beacon's publisher does."""
    publisher = LocalDirPublisher(root)
    publish_identity(publisher, signer)
    info = SiteInfo(name="draw test beacon", site_url=root.as_uri(), period_ms=MINUTE)
    recent: list[OutboxItem] = []
    for built in pulses:
        item = OutboxItem(
            seq=built.pulse.pulse_index,
            chain_index=built.pulse.chain_index,
            pulse_index=built.pulse.pulse_index,
            time_ms=built.pulse.time_ms,
            pulse=built.data,
            # The draw reads no entropy record; this one only completes the site's layout.
            record=b'{"source":"os-fallback"}',
            kind="os-fallback",
            links={},
        )
        publish_item(publisher, item, last_max_age=60, site=info, recent=recent)
        # That record does not open the pulse's localRandomValue, and the draw checks
        # the target with all the evidence the site has: the site keeps none.
        (root / layout.entropy_record_key(1, built.pulse.pulse_index)).unlink()
        recent.insert(0, item)


def pulse_file(root: Path, index: int) -> Path:
    return root / layout.pulse_key(1, index)


@pytest.fixture
def site(tmp_path: Path, signer: Signer, chain: list[BuiltPulse]) -> Path:
    """A site with pulses 1-3 (10:00-10:02) published."""
    root = tmp_path / "site"
    publish(root, signer, chain[:3])
    return root


@pytest.fixture
def entrants(tmp_path: Path) -> Path:
    path = tmp_path / "entrants.txt"
    path.write_text(ENTRANTS, encoding="utf-8")
    return path


def run_new(site: Path, entrants: Path, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``beacon-verify draw new`` on ``site`` writing ``out``, with further ``args``."""
    return run_verify(
        [
            "draw",
            "new",
            "--source",
            str(site),
            "--entrants",
            str(entrants),
            "--out",
            str(out),
            *args,
        ]
    )


def new_manifest(site: Path, entrants: Path, out: Path, *extra: str) -> Path:
    """Announce the test draw (3 winners, at AT); the manifest's path."""
    proc = run_new(
        site, entrants, out, "--winners", "3", "--at", AT, "--label", "integration draw", *extra
    )
    assert proc.returncode == 0, proc.stderr
    return out


def one_line_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


# --- draw new ---------------------------------------------------------------------


def test_new_writes_the_manifest_and_prints_its_hash(
    site: Path, entrants: Path, tmp_path: Path
) -> None:
    out = new_manifest(site, entrants, tmp_path / "m.json")
    data = out.read_bytes()
    manifest = parse_manifest(data)
    assert manifest.beacon == site.resolve().as_uri()
    assert (manifest.chain, manifest.pulse_time_ms, manifest.winners) == (1, AT_MS, 3)
    assert manifest.entrants == hashlib.sha512(entrant_list_bytes(ENTRANTS)).digest()
    assert manifest.entrant_count == 6 and manifest.label == "integration draw"
    proc = run_new(
        site,
        entrants,
        tmp_path / "n.json",
        *("--winners", "3", "--at", str(AT_MS), "--label", "integration draw", "--json"),
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["version"] == 1  # the site mixes no drand round: v1 by default
    # The same draw given TIME in Unix ms: the same bytes, the same published hash.
    assert (tmp_path / "n.json").read_bytes() == data
    assert summary["manifestSha512"] == hashlib.sha512(data).hexdigest()
    assert summary["pulseTime"] == format_timestamp(AT_MS)


@pytest.mark.parametrize(
    "at", ["2026-03-01T10:02:00Z", "2026-03-01T10:02:00.000Z", "2026-03-01T09:00:00+00:00"]
)
def test_new_refuses_a_time_whose_pulse_exists(
    site: Path, entrants: Path, tmp_path: Path, at: str
) -> None:
    out = tmp_path / "m.json"
    proc = run_new(site, entrants, out, "--winners", "1", "--at", at)
    assert proc.returncode == 1
    line = one_line_error(proc.stderr)
    assert "already has pulse 1/3 at 2026-03-01T10:02:00.000Z" in line
    assert "pick a later --at" in line
    assert not out.exists()


def test_new_never_overwrites_a_manifest(site: Path, entrants: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    out.write_bytes(b"keep me")
    proc = run_new(site, entrants, out, "--winners", "1", "--at", AT)
    assert proc.returncode == 1
    assert "already exists" in one_line_error(proc.stderr)
    assert out.read_bytes() == b"keep me"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--winners", "7"], 1, "manifest.winners: 7 is outside 1..6"),
        (["--at", "2026-03-01T10:02:30"], 2, "has no time zone"),
        (["--at", "2026-03-01T10:02:30.250Z"], 1, "not on a whole second"),
        (["--at", "tomorrow"], 2, "neither ISO 8601"),
        (["--winners", "two"], 2, "invalid int value"),
    ],
)
def test_new_refuses_bad_input_in_one_line(
    site: Path, entrants: Path, tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    base = {"--winners": "1", "--at": AT}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    flat = [x for pair in base.items() for x in pair]
    out = tmp_path / "m.json"
    proc = run_new(site, entrants, out, *flat)
    assert proc.returncode == code
    assert message in one_line_error(proc.stderr)
    assert not out.exists()


def test_new_refuses_duplicate_entrants(site: Path, tmp_path: Path) -> None:
    path = tmp_path / "dup.txt"
    path.write_text("alice\nbob\n alice \n", encoding="utf-8")
    proc = run_new(site, path, tmp_path / "m.json", "--winners", "1", "--at", AT)
    assert proc.returncode == 1
    assert "duplicate entrant 'alice' (lines 1 and 3)" in one_line_error(proc.stderr)


# --- draw run / check -----------------------------------------------------------------


def test_announce_then_run_then_check(
    site: Path, entrants: Path, tmp_path: Path, signer: Signer, chain: list[BuiltPulse]
) -> None:
    manifest = new_manifest(site, entrants, tmp_path / "m.json")
    run = ["draw", "run", str(manifest), "--entrants", str(entrants)]

    # The target pulse (10:03) does not exist yet: no winners.
    early = run_verify(run)
    assert early.returncode == 1
    line = one_line_error(early.stderr)
    assert "not yet available" in line and "2026-03-01T10:02:30.000Z" in line
    assert early.stdout == ""

    publish(site, signer, chain[3:])  # time passes: pulses 4-6 appear
    expected = draw(
        manifest.read_bytes(), entrant_list_bytes(ENTRANTS), [chain[3].pulse.output_value]
    )
    assert len(expected) == 3

    proc = run_verify(run)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-3:] == [f"{i}. {name}" for i, name in enumerate(expected, 1)]
    assert "pulse 1/4 at 2026-03-01T10:03:00.000Z" in proc.stdout
    assert chain[3].pulse.output_value.hex().upper() in proc.stdout

    as_json = run_verify([*run, "--json"])
    assert as_json.returncode == 0, as_json.stderr
    result = parse_result(as_json.stdout.encode())
    assert list(result.winners) == expected
    assert result.manifest_hash == hashlib.sha512(manifest.read_bytes()).digest()
    assert [(p.chain_index, p.pulse_index) for p in result.pulses] == [(1, 4)]

    result_file = tmp_path / "result.json"
    result_file.write_text(as_json.stdout, encoding="utf-8")
    check = ["draw", "check", str(manifest), "--entrants", str(entrants)]
    ok = run_verify([*check, "--result", str(result_file)])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "VALID" in ok.stdout

    doc = json.loads(as_json.stdout)
    doc["winners"][1] = next(
        e for e in entrant_list_bytes(ENTRANTS).decode().split("\n") if e not in expected
    )
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    bad = run_verify([*check, "--result", str(forged)])
    assert bad.returncode == 1
    assert f"winner 2: computed {expected[1]!r}" in bad.stdout
    assert "INVALID" in bad.stdout
    bad_json = run_verify([*check, "--result", str(forged), "--json"])
    assert bad_json.returncode == 1
    report = json.loads(bad_json.stdout)
    assert report["ok"] is False and len(report["differences"]) == 1


def test_run_with_a_further_beacon_mixes_in_its_pulse(
    site: Path,
    entrants: Path,
    tmp_path: Path,
    signer: Signer,
    other_signer: Signer,
    chain: list[BuiltPulse],
    other_chain: list[BuiltPulse],
) -> None:
    other = tmp_path / "other-site"
    publish(other, other_signer, other_chain[:3])
    manifest = new_manifest(site, entrants, tmp_path / "m.json", "--also", str(other))
    assert [r.beacon for r in parse_manifest(manifest.read_bytes()).also] == [
        other.resolve().as_uri()
    ]
    publish(site, signer, chain[3:])
    run = ["draw", "run", str(manifest), "--entrants", str(entrants), "--json"]
    waiting = run_verify(run)  # the further beacon has no pulse at or after TIME yet
    assert waiting.returncode == 1
    assert str(other) in one_line_error(waiting.stderr)

    publish(other, other_signer, other_chain[3:])
    proc = run_verify(run)
    assert proc.returncode == 0, proc.stderr
    values = [chain[3].pulse.output_value, other_chain[3].pulse.output_value]
    expected = draw(manifest.read_bytes(), entrant_list_bytes(ENTRANTS), values)
    result = parse_result(proc.stdout.encode())
    assert list(result.winners) == expected
    assert [p.output_value for p in result.pulses] == values


def test_entrants_not_matching_the_manifest(
    site: Path, entrants: Path, tmp_path: Path, signer: Signer, chain: list[BuiltPulse]
) -> None:
    manifest = new_manifest(site, entrants, tmp_path / "m.json")
    publish(site, signer, chain[3:])
    other = tmp_path / "other.txt"
    other.write_text(ENTRANTS + "Mallory\n", encoding="utf-8")
    proc = run_verify(["draw", "run", str(manifest), "--entrants", str(other)])
    assert proc.returncode == 1
    line = one_line_error(proc.stderr)
    assert str(other) in line and "does not match the manifest" in line
    assert proc.stdout == ""


def test_bad_manifest_is_refused(site: Path, entrants: Path, tmp_path: Path) -> None:
    manifest = new_manifest(site, entrants, tmp_path / "m.json")
    edited = tmp_path / "edited.json"
    edited.write_bytes(manifest.read_bytes() + b"\n")
    proc = run_verify(["draw", "run", str(edited), "--entrants", str(entrants)])
    assert proc.returncode == 1
    assert "manifest: not in canonical form" in one_line_error(proc.stderr)
    missing = run_verify(["draw", "run", str(tmp_path / "nope.json"), "--entrants", str(entrants)])
    assert missing.returncode == 3
    assert "no such file" in one_line_error(missing.stderr)


def test_tampered_target_pulse_gives_no_winners(
    site: Path, entrants: Path, tmp_path: Path, signer: Signer, chain: list[BuiltPulse]
) -> None:
    manifest = new_manifest(site, entrants, tmp_path / "m.json")
    publish(site, signer, chain[3:])
    target = pulse_file(site, 4)
    doc = json.loads(target.read_bytes())
    lrv = doc["pulse"]["localRandomValue"]
    doc["pulse"]["localRandomValue"] = ("0" if lrv[0] != "0" else "1") + lrv[1:]
    target.write_text(json.dumps(doc, indent=2))
    proc = run_verify(["draw", "run", str(manifest), "--entrants", str(entrants)])
    assert proc.returncode == 1
    line = one_line_error(proc.stderr)
    assert "pulse 1/4" in line and "does not verify" in line and "signature failed" in line
    assert proc.stdout == ""


def test_target_pulse_without_its_certificate_gives_no_winners(
    site: Path, entrants: Path, tmp_path: Path, signer: Signer, chain: list[BuiltPulse]
) -> None:
    manifest = new_manifest(site, entrants, tmp_path / "m.json")
    publish(site, signer, chain[3:])
    (site / layout.certificate_key(signer.certificate_id.hex())).unlink()
    proc = run_verify(["draw", "run", str(manifest), "--entrants", str(entrants)])
    assert proc.returncode == 1
    assert "signature unverifiable" in one_line_error(proc.stderr)


def test_an_index_that_skips_the_target_is_caught(
    site: Path, entrants: Path, tmp_path: Path, signer: Signer, chain: list[BuiltPulse]
) -> None:
    manifest = new_manifest(site, entrants, tmp_path / "m.json")
    publish(site, signer, chain[3:])
    # A host rewrites its (mutable) time index as if pulse 4 did not exist, to use pulse 5.
    entries = [
        TimeEntry(time_ms=b.pulse.time_ms, chain=1, pulse=b.pulse.pulse_index)
        for b in chain
        if b.pulse.pulse_index != 4
    ]
    for key, data in build_indexes(entries).items():
        (site / key).write_bytes(data)
    proc = run_verify(["draw", "run", str(manifest), "--entrants", str(entrants)])
    assert proc.returncode == 1
    line = one_line_error(proc.stderr)
    assert "time index is wrong" in line and "answered pulse 1/5" in line
    assert "the target is pulse 1/4 at 2026-03-01T10:03:00.000Z" in line


def test_a_site_that_cannot_name_the_target_is_a_fetch_error(
    site: Path, entrants: Path, tmp_path: Path, signer: Signer, chain: list[BuiltPulse]
) -> None:
    manifest = new_manifest(site, entrants, tmp_path / "m.json")
    publish(site, signer, chain[3:])
    run = ["draw", "run", str(manifest), "--entrants", str(entrants)]
    shutil.rmtree(site / "beacon/2.0/index")
    # Without a time index, the NIST time path of the period boundary names the target.
    assert run_verify(run).returncode == 0
    shutil.rmtree(site / "beacon/2.0/pulse/time")
    # Nor time paths: walked back from pulse/last, each step proved by its link.
    assert run_verify(run).returncode == 0
    pulse_file(site, 3).unlink()  # and now nothing shows pulse 4 is the first
    proc = run_verify(run)
    assert proc.returncode == 3
    line = one_line_error(proc.stderr)
    assert "cannot be shown to be the first at or after 2026-03-01T10:02:30.000Z" in line
    assert "pulse 1/3, before the answer, is not on the site" in line
    assert proc.stdout == ""
